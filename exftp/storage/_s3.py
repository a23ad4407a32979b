"""
Storage in an S3 bucket: AWS S3 or any S3-compatible store (MinIO, Ceph,
GCS interoperability, moto).

Files are objects under a key prefix; a directory is a zero-byte C{name/}
marker object or any object under C{name/}. Uploads stream part by part with
a bounded number of parts in flight, so memory stays about
C{part_size * (parts_in_flight + 1)} per upload, and nothing appears under
the target name until the upload is complete. Downloads stream with
backpressure: the HTTP answer is paused while the FTP client is slow.

Every multipart upload is noted in an upload journal (see L{UploadJournal})
while it is open, so that the uploads a crashed server leaves open can be
found and aborted when it starts again.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import socket
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredSemaphore,
    FirstError,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.interfaces import IConsumer, IDelayedCall, IProducer, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse
from zope.interface import implementer

from .._cleanup import BOOT, RESERVED_PREFIX, CleanupReport, IStorageCleanup, Owner, check_node, judge
from .._errors import (
    AlreadyExists,
    DirectoryNotEmpty,
    FileNotFound,
    FTPError,
    InvalidPath,
    IsADirectory,
    NotADirectory,
    ParameterNotSupported,
    PermissionDenied,
    QuotaExceeded,
    StorageUnavailable,
    TransferAborted,
)
from .._httpclient import LazyReactor
from .._interfaces import (
    FileInfo,
    FileKind,
    IPagedListing,
    IReadFile,
    IStorage,
    IStorageFactory,
    IStorageMetadata,
    IWriteFile,
    Session,
    WriteMode,
)
from .._paths import VirtualPath
from .._startup import ConfigurationError
from ._readonly import for_session
from ._s3client import (
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    GiB,
    KiB,
    MiB,
    ObjectInfo,
    S3Client,
    S3Config,
    S3Error,
    default_http_client,
    discard_body,
    unreachable,
)
from ._s3signing import CredentialSource, Shared
from ._streaming import StreamingReader, check_offset

__all__ = ["S3Config", "S3Storage", "S3StorageFactory", "S3Upload", "UploadJournal", "storage_factory_from_spec"]

_log = Logger(namespace="exftp.s3")

_T = TypeVar("_T")

#: 403 codes that mean exftp itself is misconfigured, not that the user may not.
_CREDENTIAL_ERRORS = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "RequestTimeTooSkewed"}
)
#: Objects copied or deleted at a time when renaming a directory.
_RENAME_CONCURRENCY = 4
#: Objects under a directory without a marker that its time is taken from.
_DIRECTORY_TIME_KEYS = 100
#: Directory times or MFMT notes looked up or removed at a time.
_LOOKUP_CONCURRENCY = 4


def _translate(error: BaseException) -> FTPError:
    """The FTP error that tells the client about an S3 or transport failure."""
    if isinstance(error, FTPError):
        return error
    if isinstance(error, S3Error):
        if error.status == 404:
            return FileNotFound()
        if error.status == 403 and error.code not in _CREDENTIAL_ERRORS:
            return PermissionDenied()
        if error.status == 412:
            return StorageUnavailable("The file changed meanwhile; try again.")
    return StorageUnavailable()


def _translated(error: BaseException) -> FTPError:
    translated = _translate(error)
    if translated is not error and translated.__cause__ is None:
        translated.__cause__ = error
    return translated


async def _translating(work: Coroutine[Any, Any, _T]) -> _T:
    try:
        return await work
    except (FTPError, CancelledError):
        raise
    except Exception as error:
        raise _translate(error) from error


def _run(work: Coroutine[Any, Any, _T]) -> Deferred[_T]:
    return Deferred.fromCoroutine(_translating(work))


def _etag(response: IResponse) -> str | None:
    """The ETag of the object a GET answers with."""
    values = response.headers.getRawHeaders(b"etag")
    return values[0].decode("latin-1") if values else None


def _valid_name(name: str) -> bool:
    try:
        VirtualPath((name,))
    except (FTPError, TypeError):
        return False
    return True


#: The user metadata that holds a modification time set with MFMT (as rclone's C{mtime}).
_MTIME = "mtime"


def _file_info(name: str, info: ObjectInfo, notes: Mapping[str, _Note] | None = None) -> FileInfo:
    """
    A file's entry: its time is the C{mtime} metadata (from HEAD), else a
    note of its MFMT time that still matches it (from a listing), else its
    LastModified.
    """
    mtime = info.mtime
    with suppress(ValueError):
        stored = float(info.metadata.get(_MTIME, mtime))
        mtime = stored if math.isfinite(stored) else mtime
    note = notes.get(name) if notes else None
    if note is not None and note.matches(info):
        mtime = note.mtime
    return FileInfo(name, FileKind.FILE, info.size, mtime, 0o644)


def _directory_info(name: str, mtime: float = 0.0) -> FileInfo:
    return FileInfo(name, FileKind.DIRECTORY, 0, mtime, 0o755, links=2)


#: Where the notes of the times set with MFMT live, under the prefix (see L{_Note}).
MTIMES_FOLDER = RESERVED_PREFIX + "mtimes/"
#: The longest key S3 takes, in bytes.
_MAX_KEY = 1024


@dataclass(frozen=True)
class _Note:
    """
    The time MFMT set on a file, as listings show it without a HEAD per file.

    ListObjectsV2 returns no metadata, and the copy that stores C{mtime} in
    the metadata gives the object a new LastModified. So MFMT also writes an
    empty object C{PREFIX.exftp-upload-mtimes/DIR/NAME@MTIME@SECONDS@ETAG}
    that names the time and the object it was set on (its LastModified in
    whole seconds and its ETag, after the copy). A listing reads the notes
    of its directory (one more ListObjectsV2 per 1,000 notes, alongside the
    first page) and shows the noted time while the object is still the one
    noted: an upload or copy over it makes a new LastModified, and the note
    is ignored (and replaced by the next MFMT, removed by DELE, RNFR and RMD).
    """

    mtime: float
    seconds: int
    etag: str

    def matches(self, info: ObjectInfo) -> bool:
        """Whether C{info} is the object version this note was made for."""
        return int(info.mtime) == self.seconds and info.etag.strip('"') == self.etag

    def key(self, folder: str, name: str) -> str:
        return f"{folder}{name}@{self.mtime:.3f}@{self.seconds}@{self.etag}"

    @classmethod
    def parse(cls, rest: str) -> tuple[str, _Note] | None:
        """The file name and note from a key after its directory's notes folder, or C{None}."""
        name, *fields = rest.rsplit("@", 3)
        if not name or "/" in name or len(fields) != 3 or not fields[1].isdigit():
            return None
        try:
            mtime = float(fields[0])
        except ValueError:
            return None
        if not math.isfinite(mtime):
            return None
        return name, cls(mtime, int(fields[1]), fields[2])


async def _each(items: Iterable[_T], work: Callable[[_T], Awaitable[object]], concurrency: int) -> None:
    """Run C{work} on every item, at most C{concurrency} at a time; the first failure is raised."""
    semaphore = DeferredSemaphore(concurrency)

    async def one(item: _T) -> None:
        await work(item)

    runs = [semaphore.run(one, item) for item in items]
    try:
        await gatherResults(runs, consumeErrors=True)
    except FirstError as error:
        error.subFailure.raiseException()


@implementer(IReadFile, IPushProducer)
class _S3Reader:
    """
    A download: the body of a GET, written into the consumer as it arrives.

    While the consumer is paused the HTTP body is paused too, so TCP
    backpressure reaches S3 and memory stays flat; the little that already
    arrived waits here. A body that breaks, or stalls for C{idle_timeout}
    seconds while not paused, is asked for again from where it broke (with
    C{resume}, at most C{retries} times), else the transfer fails. However
    often it is resumed, the download fails once no byte has come for
    C{deadline} seconds while it was wanted.

    @param resume: asks S3 again for the body from the given number of
        bytes on (of the same object version), within the given seconds,
        or C{None} to never resume.
    """

    def __init__(
        self,
        response: IResponse,
        reactor: Any,
        idle_timeout: float,
        resume: Callable[[int, float], Coroutine[Any, Any, IResponse | None]] | None = None,
        retries: int = 0,
        deadline: float | None = None,
    ) -> None:
        self.size: int | None = None if response.length is UNKNOWN_LENGTH else int(response.length)
        self._response = response
        self._reactor = reactor
        self._idle_timeout = idle_timeout
        self._resume = resume
        self._retries = retries
        self._deadline = idle_timeout if deadline is None else deadline
        #: When the last byte came (or the consumer last wanted more).
        self._progress_at: float = reactor.seconds()
        #: Counts the bodies asked for, so that the rest of a broken one is ignored.
        self._generation = 0
        self._reopening = False
        self._received = 0
        self._consumer: IConsumer | None = None
        self._done: Deferred[int] | None = None
        self._body: Any = None
        self._pending: deque[bytes] = deque()
        self._ending: Failure | None = None
        self._delivered = False
        self._finished = False
        self._paused = False
        self._holding = False
        self._timer: IDelayedCall | None = None
        self._release: IDelayedCall | None = None
        self._sent = 0

    def send(self, consumer: IConsumer) -> Deferred[int]:
        if self._done is not None:
            raise RuntimeError("send() called twice")
        self._consumer = consumer
        self._progress_at = self._reactor.seconds()
        self._done = Deferred(lambda _: self.stopProducing())
        if self._finished:
            self._done.errback(TransferAborted())
            return self._done
        consumer.registerProducer(self, True)
        # Bytes that came with the headers arrive inside deliverBody(); hold
        # them until the next turn, so that send() itself never writes.
        self._holding = True
        self._delivered = True
        self._response.deliverBody(_BodyPump(self, self._generation))
        if self._paused and self._body is not None:
            self._body.pauseProducing()
        self._release = self._reactor.callLater(0, self._stop_holding)
        return self._done

    def _stop_holding(self) -> None:
        self._release = None
        self._holding = False
        self._flush()

    # From the body pump

    def _attached(self, transport: Any, generation: int) -> None:
        if generation == self._generation:
            self._body = transport

    def _data(self, data: bytes, generation: int) -> None:
        if not self._finished and generation == self._generation:
            self._progress_at = self._reactor.seconds()
            self._received += len(data)
            self._pending.append(data)
            self._flush()

    def _ended(self, reason: Failure, generation: int) -> None:
        if not self._finished and generation == self._generation:
            self._ending = reason
            self._flush()

    def _flush(self) -> None:
        """Write what arrived while the consumer wants it; finish once all is written."""
        while self._pending and not (self._paused or self._holding or self._finished):
            data = self._pending.popleft()
            self._sent += len(data)
            assert self._consumer is not None
            self._consumer.write(data)
        if self._finished or self._pending or self._holding:
            return
        if self._ending is not None:
            self._complete(self._ending)
        else:
            self._arm()

    def _complete(self, reason: Failure) -> None:
        if reason.check(ResponseDone) is None or (self.size is not None and self._sent != self.size):
            why = reason.getErrorMessage()
            if not self._try_again(why):
                _log.info("S3 download ended early: {why}", why=why)
                self._fail(StorageUnavailable("Download from storage failed."))
            return
        consumer, done = self._consumer, self._done
        self._stop()
        if consumer is not None:
            consumer.unregisterProducer()
        if done is not None and not done.called:
            done.callback(self._sent)

    # Timeouts

    def _arm(self) -> None:
        self._disarm()
        if not (self._paused or self._finished or self._reopening):
            delay = min(self._idle_timeout, max(0.0, self._left()))
            self._timer = self._reactor.callLater(delay, self._stalled)

    def _left(self) -> float:
        """Seconds until the deadline of a body that makes no progress."""
        return float(self._progress_at + self._deadline - self._reactor.seconds())

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _stalled(self) -> None:
        self._timer = None
        seconds = self._reactor.seconds() - self._progress_at
        if not self._try_again(f"no data for {seconds:.0f} s"):
            _log.info("S3 download stalled: no data for {seconds:.0f} s", seconds=seconds)
            self._fail(StorageUnavailable("Storage stopped sending."))

    # Resuming a body that broke

    def _try_again(self, why: str) -> bool:
        """Ask for the rest of a broken body, if retries are left; whether it does."""
        if self._resume is None or self._retries <= 0 or self._finished or self._left() <= 0:
            return False
        self._retries -= 1
        self._generation += 1
        self._reopening = True
        self._disarm()
        broken, self._body, self._ending = self._body, None, None
        if broken is not None:
            with suppress(Exception):
                broken.stopProducing()
        _log.info(
            "S3 download broke after {count} bytes ({why}); asking for the rest, {left} more tries",
            count=self._received,
            why=why,
            left=self._retries,
        )
        Deferred.fromCoroutine(self._reopen(self._generation))
        return True

    async def _reopen(self, generation: int) -> None:
        assert self._resume is not None
        try:
            response = await self._resume(self._received, self._left())
        except Exception as error:
            if generation == self._generation and not self._finished:
                _log.info("S3 download could not be resumed: {why}", why=str(error))
                self._fail(StorageUnavailable("Download from storage failed."))
            return
        if generation != self._generation or self._finished:
            if response is not None:
                discard_body(response)
            return
        self._reopening = False
        if response is None:  # S3 says nothing is left: only right if nothing more was announced
            if self.size is None:
                self.size = self._received
            self._ending = Failure(ResponseDone())
            self._flush()
            return
        self._response = response
        response.deliverBody(_BodyPump(self, generation))
        if self._paused and self._body is not None:
            self._body.pauseProducing()
        self._flush()

    # Ending

    def _fail(self, error: Exception) -> None:
        done = self._done
        self._stop()
        if done is not None and not done.called:
            done.errback(error)

    def _stop(self) -> None:
        self._disarm()
        if self._release is not None and self._release.active():
            self._release.cancel()
        self._release = None
        self._pending.clear()
        if self._finished:
            return
        self._finished = True
        if not self._delivered:
            self._delivered = True
            discard_body(self._response)
        elif self._body is not None and self._ending is None:
            self._body.stopProducing()

    # IPushProducer

    def pauseProducing(self) -> None:
        self._paused = True
        self._disarm()
        if self._body is not None and not self._finished:
            self._body.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        self._progress_at = self._reactor.seconds()
        if self._body is not None and not self._finished:
            self._body.resumeProducing()
            self._flush()

    def stopProducing(self) -> None:
        self._fail(TransferAborted())

    def close(self) -> Deferred[None]:
        done, consumer = self._done, self._consumer
        if done is not None and not done.called and consumer is not None:
            # Closed in the middle of send(): unhook, and fail the send.
            consumer.unregisterProducer()
        self._fail(TransferAborted())
        return succeed(None)


class _BodyPump(Protocol):
    """Hands a response body to its L{_S3Reader}, telling which of the reader's requests it answers."""

    def __init__(self, reader: _S3Reader, generation: int) -> None:
        self._reader = reader
        self._generation = generation

    def connectionMade(self) -> None:
        self._reader._attached(self.transport, self._generation)

    def dataReceived(self, data: bytes) -> None:
        self._reader._data(data, self._generation)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # noqa: B008
        self._reader._ended(reason, self._generation)


#: Where the upload journal lives, under the configured prefix.
JOURNAL_FOLDER = RESERVED_PREFIX + "journal/"
#: The first wait before trying a failed abort again, and the longest, in seconds.
_ABORT_RETRY_FIRST = 1.0
_ABORT_RETRY_CAP = 60.0
#: Journal entries handled at a time by a clean-up.
_CLEANUP_CONCURRENCY = 4
_ENTRY_NAME = re.compile(r"^([0-9a-f]{8})-([0-9]{1,10})-[0-9a-f]{32}$")


class UploadJournal:
    """
    The multipart uploads that this node has open, one small object each
    under C{PREFIX.exftp-upload-journal/NODE/}.

    S3 lists open multipart uploads (ListMultipartUploads) with their key,
    id and start time, but not their metadata, and every node of a cluster
    usually signs with the same key, so the listing cannot say which
    uploads exftp started, or which node did. The journal can: an entry is
    written once S3 has given the upload its id, and deleted once the upload
    is complete or aborted. Its name says which node, process and process
    start made it, its body names the key and upload id. A clean-up reads the
    journal, never the list of uploads, so uploads that exftp did not start
    are never touched. (A crash in the moment between starting an upload and
    writing its entry leaves an upload that only a bucket lifecycle rule
    C{AbortIncompleteMultipartUpload} removes.)

    An abort that fails (S3 down) is tried again in the background, at once
    when another request to S3 succeeds, else after 1, 2, 4... up to 60
    seconds; its entry stays until then, so a crash meanwhile is covered.
    """

    def __init__(self, client: S3Client, reactor: Any) -> None:
        self._client = client
        self._reactor = reactor
        self.root = client.config.prefix + JOURNAL_FOLDER
        self.node = client.config.node
        self._host = socket.gethostname()
        self._leftovers: dict[str, str] = {}
        self._timer: IDelayedCall | None = None
        self._retrying = False
        self._delay = _ABORT_RETRY_FIRST
        client.on_success = self._s3_answered

    def __repr__(self) -> str:
        return f"s3://{self._client.config.bucket}/{self.root}"

    @property
    def leftovers(self) -> int:
        """Uploads whose abort failed and is to be tried again."""
        return len(self._leftovers)

    def _entry(self, upload_id: str) -> str:
        digest = hashlib.sha256(upload_id.encode("utf-8")).hexdigest()[:32]
        return f"{self.root}{self.node}/{BOOT}-{os.getpid()}-{digest}"

    async def record(self, key: str, upload_id: str) -> None:
        """Note the open upload C{upload_id} of C{key}."""
        body = {
            "key": key,
            "upload_id": upload_id,
            "node": self.node,
            "pid": os.getpid(),
            "boot": BOOT,
            "host": self._host,
        }
        await self._client.put(self._entry(upload_id), json.dumps(body).encode("utf-8"))

    async def forget(self, upload_id: str) -> None:
        """Remove the note of an upload that is complete or aborted (a failure is only logged)."""
        try:
            await self._client.delete(self._entry(upload_id))
        except CancelledError:
            raise
        except Exception as error:
            _log.warn(
                "Could not remove journal entry {entry} ({why}); a clean-up removes it",
                entry=self._entry(upload_id),
                why=str(error),
            )

    def abort_later(self, key: str, upload_id: str) -> None:
        """Abort the upload in the background, as S3 is not answering now (see L{abort})."""
        _log.warn(
            "S3 is not answering: multipart upload {upload_id} of {key} is aborted once it is back",
            upload_id=upload_id,
            key=key,
        )
        self._leftovers[upload_id] = key
        self._schedule()

    async def abort(self, key: str, upload_id: str) -> None:
        """Abort the upload and forget it; when S3 cannot be reached, keep trying in the background."""
        try:
            await self._client.abort_multipart(key, upload_id)
        except CancelledError:
            raise
        except Exception as error:
            _log.warn(
                "Could not abort multipart upload {upload_id} of {key} ({why}); trying again later",
                upload_id=upload_id,
                key=key,
                why=str(error),
            )
            self._leftovers[upload_id] = key
            self._schedule()
            return
        await self.forget(upload_id)

    # Trying failed aborts again

    def _schedule(self) -> None:
        if self._timer is None and not self._retrying and self._leftovers:
            self._timer = self._reactor.callLater(self._delay, self._retry)
            self._delay = min(self._delay * 2, _ABORT_RETRY_CAP)

    def _s3_answered(self) -> None:
        """A request succeeded: S3 is back, so try the failed aborts now."""
        if self._leftovers and not self._retrying:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = self._reactor.callLater(0, self._retry)

    def _retry(self) -> None:
        self._timer = None
        self._retrying = True
        Deferred.fromCoroutine(self._retry_all()).addErrback(
            lambda failure: _log.failure("Trying failed aborts again failed", failure)
        )

    async def _retry_all(self) -> None:
        try:
            for upload_id, key in list(self._leftovers.items()):
                try:
                    await self._client.abort_multipart(key, upload_id)
                except Exception:
                    break
                del self._leftovers[upload_id]
                _log.info("Aborted multipart upload {upload_id} of {key} at last", upload_id=upload_id, key=key)
                await self.forget(upload_id)
            else:
                self._delay = _ABORT_RETRY_FIRST
        finally:
            self._retrying = False
        self._schedule()

    def stop(self) -> None:
        """Stop trying failed aborts again (at shutdown; their entries stay for the next clean-up)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # Cleaning up after crashed nodes

    async def clean_up(self, node: str | None, older_than: float | None) -> CleanupReport:
        """
        Abort the open uploads in the journal that L{judge} lets go: those of
        C{node}, and any older than C{older_than} seconds.
        """
        report = CleanupReport()
        if older_than is None and node is None:
            return report
        folder = self.root if older_than is not None else f"{self.root}{node}/"
        now = self._reactor.seconds()
        doomed: list[tuple[str, str]] = []
        token: str | None = None
        while True:
            page = await self._client.list_page(folder, delimiter=None, token=token)
            for found in page.objects:
                remove, why = judge(self._owner(found.key), now - found.mtime, node, older_than)
                if remove:
                    doomed.append((found.key, why or ""))
                elif why is not None:
                    report.kept.append(f"{found.key} ({why})")
            token = page.next_token
            if token is None:
                break

        async def abort(item: tuple[str, str]) -> None:
            await self._abort_entry(item[0], item[1], report)

        await _each(doomed, abort, _CLEANUP_CONCURRENCY)
        return report

    def _owner(self, entry: str) -> Owner | None:
        node, _, name = entry[len(self.root) :].partition("/")
        found = _ENTRY_NAME.match(name)
        if found is None:
            return None
        return Owner(node=node, pid=int(found[2]), boot=found[1])

    async def _abort_entry(self, entry: str, why: str, report: CleanupReport) -> None:
        """Abort the upload an entry names, then remove the entry."""
        try:
            body = await self._client.get_bytes(entry, 0, 64 * KiB - 1)
            note = json.loads(body)
            key, upload_id = str(note["key"]), str(note["upload_id"])
        except S3Error as error:
            if error.status != 404:  # removed meanwhile: its upload was finished or aborted
                report.failed.append(f"{entry} ({error})")
            return
        except (ValueError, KeyError, TypeError):
            report.failed.append(f"{entry} (unreadable journal entry, removed)")
            await self._client.delete(entry)
            return
        try:
            await self._client.abort_multipart(key, upload_id)
            await self._client.delete(entry)
        except CancelledError:
            raise
        except Exception as error:
            report.failed.append(f"{key} (upload {upload_id}: {error})")
            return
        report.removed.append(f"{key} (multipart upload {upload_id}, {why})")


#: The journal of each client, so that all the storages on one bucket share one.
_JOURNALS: weakref.WeakKeyDictionary[S3Client, UploadJournal] = weakref.WeakKeyDictionary()


def journal_of(client: S3Client, reactor: Any) -> UploadJournal:
    """The upload journal of C{client}'s bucket and prefix."""
    journal = _JOURNALS.get(client)
    if journal is None:
        journal = _JOURNALS[client] = UploadJournal(client, reactor)
    return journal


#: Writes smaller than this are gathered into one chunk of an upload's buffer.
_SMALL_WRITE = 64 * KiB


@implementer(IWriteFile)
class S3Upload:
    """
    An upload to one key: a single PUT when it fits in one part, else a
    multipart upload sent part by part.

    At most C{parts_in_flight} parts are sent at a time; when that many are
    in flight and another full part is buffered, the producer (the data
    connection) is paused until a part is done. So the bytes held are at
    most C{part_size * (parts_in_flight + 1)}, plus whatever single write
    arrived while pausing. The bytes are kept as the chunks that were
    written (small writes gathered into chunks of L{_SMALL_WRITE}), never
    joined: a part is a list of them, hashed and sent as is. Only a write
    that straddles the end of a part is copied, and there are no part-sized
    allocations for the allocator to keep. L{finish} completes the upload;
    L{abort}, or any failure, aborts it, and nothing appears under the key. The producer must
    be a push producer, as the data connection is. A multipart upload is in
    C{journal} while it is open.

    @ivar peak: the most bytes held at once (buffered and in flight).
    @ivar parts_sent: the parts that S3 acknowledged.
    """

    def __init__(
        self,
        client: S3Client,
        key: str,
        metadata: Mapping[str, str],
        part_size: int,
        parts_in_flight: int,
        journal: UploadJournal | None = None,
    ) -> None:
        self._client = client
        self._journal = journal
        self._key = key
        self._metadata = dict(metadata)
        self._part_size = part_size
        self._parts_in_flight = parts_in_flight
        self._chunks: deque[bytes] = deque()
        self._small = bytearray()
        self._buffered = 0
        self._in_flight = 0
        self._in_flight_bytes = 0
        self._tasks: list[Deferred[None]] = []
        self._etags: dict[int, str] = {}
        self._next_part = 1
        self._upload: Shared[str] | None = None
        self._error: FTPError | None = None
        self._producer: IProducer | None = None
        self._paused = False
        self._closed = False
        self._discarded = False
        #: Whether S3 stopped answering: then the abort is not waited for.
        self._unreachable = False
        self.peak = 0
        self.parts_sent = 0

    @property
    def held(self) -> int:
        """The bytes this upload holds now: buffered, and in parts being sent."""
        return self._buffered + self._in_flight_bytes

    # IConsumer

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self._producer = producer
        self._paused = False
        self._flow()

    def unregisterProducer(self) -> None:
        self._producer = None

    def write(self, data: bytes) -> None:
        if self._closed or self._error is not None:
            return
        if not isinstance(data, bytes):
            data = bytes(data)
        if len(data) < _SMALL_WRITE:
            # A bytes object per tiny write would cost more than the bytes.
            self._small += data
            if len(self._small) >= _SMALL_WRITE:
                self._seal_small()
        else:
            self._seal_small()
            self._chunks.append(data)
        self._buffered += len(data)
        self.peak = max(self.peak, self.held)
        self._start_parts()
        self._flow()

    # Parts

    def _start_parts(self) -> None:
        size = self._part_size
        while self._buffered >= size and self._in_flight < self._parts_in_flight and self._error is None:
            self._launch(self._take(size))

    def _take(self, size: int) -> list[bytes]:
        """The first C{size} buffered bytes (or all), as chunks; only a chunk across the end is cut."""
        self._seal_small()
        part: list[bytes] = []
        chunks, taken = self._chunks, 0
        while chunks and taken < size:
            chunk = chunks.popleft()
            room = size - taken
            if len(chunk) > room:
                chunks.appendleft(chunk[room:])
                chunk = chunk[:room]
            part.append(chunk)
            taken += len(chunk)
        self._buffered -= taken
        return part

    def _number(self) -> int | None:
        number = self._next_part
        if number > MAX_PARTS:
            limit = self._part_size * MAX_PARTS
            self._fail(QuotaExceeded(f"File too large: at most {limit} bytes with this part size."))
            return None
        self._next_part += 1
        return number

    def _launch(self, data: list[bytes]) -> None:
        number = self._number()
        if number is None:
            return
        size = sum(map(len, data))
        self._in_flight += 1
        self._in_flight_bytes += size
        self._tasks.append(Deferred.fromCoroutine(self._send_part(number, data, size)))

    async def _send_part(self, number: int, data: list[bytes], size: int) -> None:
        try:
            upload_id = await self._started()
            self._etags[number] = await self._client.upload_part(self._key, upload_id, number, data)
            self.parts_sent += 1
        except Exception as error:
            self._fail(error)
        finally:
            del data
            self._in_flight -= 1
            self._in_flight_bytes -= size
        if not self._closed:
            self._start_parts()
            self._flow()

    def copy_from(self, source: str, length: int, etag: str, largest_part: int = MAX_PART_SIZE) -> None:
        """
        Begin with the first C{length} bytes of the object C{source}, copied
        on the S3 side (UploadPartCopy) as the first parts.

        @param length: at least 5 MiB (S3's smallest part).
        @param etag: the ETag C{source} must still have.
        @param largest_part: the biggest copied part; the bytes are split
            evenly, so every part is at least 5 MiB.
        """
        if self._next_part != 1 or self._buffered:
            raise RuntimeError("copy_from() must come first")
        if length < MIN_PART_SIZE or largest_part < 2 * MIN_PART_SIZE:
            raise ValueError("parts are copied from 5 MiB up, at most largest_part (10 MiB or more) each")
        count = -(-length // largest_part)
        step = -(-length // count)
        for first in range(0, length, step):
            number = self._number()
            if number is None:
                return
            last = min(first + step, length) - 1
            self._tasks.append(Deferred.fromCoroutine(self._copy_part(number, source, first, last, etag)))

    async def _copy_part(self, number: int, source: str, first: int, last: int, etag: str) -> None:
        try:
            upload_id = await self._started()
            self._etags[number] = await self._client.upload_part_copy(
                self._key, upload_id, number, source, first, last, etag
            )
            self.parts_sent += 1
        except Exception as error:
            self._fail(error)

    def _started(self) -> Deferred[str]:
        """The id of the multipart upload, started by the first part that needs it."""
        if self._upload is None:
            self._upload = Shared(Deferred.fromCoroutine(self._create()))
        return self._upload.wait()

    async def _create(self) -> str:
        """Start the multipart upload and note it in the journal (or abort it, if that fails)."""
        upload_id = await self._client.create_multipart(self._key, self._metadata)
        if self._journal is not None:
            try:
                await self._journal.record(self._key, upload_id)
            except Exception as error:
                # An upload that a crash could leave unnoticed is not begun.
                _log.warn(
                    "Could not note multipart upload {upload_id} of {key} in {journal} ({why}); aborting it",
                    upload_id=upload_id,
                    key=self._key,
                    journal=self._journal,
                    why=str(error),
                )
                if unreachable(error):
                    self._journal.abort_later(self._key, upload_id)
                else:
                    await self._journal.abort(self._key, upload_id)
                raise StorageUnavailable() from error
        return upload_id

    # Flow control and failure

    def _flow(self) -> None:
        producer: Any = self._producer
        if producer is None or self._closed:
            return
        if self._buffered >= self._part_size:
            if not self._paused:
                self._paused = True
                producer.pauseProducing()
        elif self._paused:
            self._paused = False
            producer.resumeProducing()

    def _fail(self, error: BaseException) -> None:
        if self._error is not None or self._discarded:
            return
        self._unreachable = unreachable(error)
        translated = _translated(error)
        if isinstance(translated, FileNotFound):  # NoSuchUpload: S3 lost or aborted it
            translated = StorageUnavailable("The storage lost the upload.")
            translated.__cause__ = error
        self._error = translated
        self._drop_buffer()
        if not isinstance(error, CancelledError):
            _log.info("S3 upload of {key} failed: {why}", key=self._key, why=str(error))
        if self._producer is not None:
            self._producer.stopProducing()

    # IWriteFile

    def finish(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._finish())

    async def _finish(self) -> None:
        if self._closed:
            raise StorageUnavailable("Upload already closed.")
        self._closed = True
        try:
            if self._error is not None:
                raise self._error
            if self._upload is None:
                await self._client.put(self._key, self._take(self._buffered), self._metadata)
                return
            if self._buffered:
                self._launch(self._take(self._buffered))
            for task in list(self._tasks):
                await task
            if self._error is not None:
                raise self._error
            upload_id = await self._upload.wait()
            await self._client.complete_multipart(self._key, upload_id, sorted(self._etags.items()))
            if self._journal is not None:
                await self._journal.forget(upload_id)
        except BaseException as error:
            self._unreachable = self._unreachable or unreachable(error)
            await self._discard()
            if isinstance(error, FTPError | CancelledError):
                raise
            raise _translate(error) from error

    def abort(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._abort())

    async def _abort(self) -> None:
        self._closed = True
        await self._discard()

    def _seal_small(self) -> None:
        if self._small:
            self._chunks.append(bytes(self._small))
            self._small = bytearray()

    def _drop_buffer(self) -> None:
        self._chunks.clear()
        self._small = bytearray()
        self._buffered = 0

    async def _discard(self) -> None:
        """Stop the parts in flight and abort the multipart upload, so that no parts are left."""
        if self._discarded:
            return
        self._discarded = True
        self._drop_buffer()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await task
        if self._upload is None:
            return
        try:
            upload_id = await self._upload.wait()
        except Exception:
            return
        if self._journal is not None and self._unreachable:
            # Waiting for an endpoint that does not answer would hold up the reply.
            self._journal.abort_later(self._key, upload_id)
            return
        if self._journal is not None:
            await self._journal.abort(self._key, upload_id)
            return
        try:
            await self._client.abort_multipart(self._key, upload_id)
        except Exception:
            _log.failure(
                "Could not abort multipart upload {upload_id} of {key}; it stays until cleaned up",
                upload_id=upload_id,
                key=self._key,
            )


@implementer(IStorage, IStorageMetadata, IPagedListing)
class S3Storage:
    """
    The objects under one key prefix of a bucket, as a file tree.

    @param client: the bucket's client.
    @param prefix: the key prefix that is this view's root: C{""} or C{"a/b/"}.
    @param reactor: for download timeouts; the global reactor when omitted.
    """

    def __init__(self, client: S3Client, prefix: str = "", reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self._client = client
        self._config = client.config
        self.prefix = prefix
        self._reactor = reactor
        self._journal = journal_of(client, reactor)
        #: Objects up to this size are copied with one CopyObject; above, part by part.
        self.copy_limit = MAX_PART_SIZE
        #: The size of the parts of a multipart copy.
        self.copy_part_size = 1 * GiB
        #: Keys asked for per ListObjectsV2 page.
        self.list_page_size = 1000

    def _key(self, path: VirtualPath) -> str:
        """The key of C{path}; names that exftp keeps for itself name nothing."""
        if any(segment.startswith(RESERVED_PREFIX) for segment in path.segments):
            raise FileNotFound()
        return self.prefix + "/".join(path.segments)

    @staticmethod
    def _creatable(path: VirtualPath) -> None:
        """Refuse to make an entry under a name that exftp keeps for itself."""
        if path.name.startswith(RESERVED_PREFIX):
            raise InvalidPath()

    def _directory_prefix(self, path: VirtualPath) -> str:
        return self.prefix if path.is_root else self._key(path) + "/"

    @property
    def _metadata(self) -> dict[str, str]:
        return {"exftp-node": self._config.node}

    async def _is_directory(self, path: VirtualPath) -> bool:
        """Whether a C{path/} marker or any object under C{path/} exists."""
        if path.is_root:
            return True
        page = await self._client.list_page(self._directory_prefix(path), delimiter=None, max_keys=1)
        return bool(page.objects or page.prefixes)

    async def _require_directory(self, path: VirtualPath) -> None:
        if not await self._is_directory(path):
            raise await self._not_a_directory(path)

    async def _not_a_directory(self, path: VirtualPath) -> FTPError:
        """Why C{path}, which is no directory, cannot be used as one: it is a file, or see L{_missing}."""
        if await self._client.head(self._key(path)) is not None:
            return NotADirectory()
        return await self._missing(path)

    async def _missing(self, path: VirtualPath) -> FTPError:
        """Why C{path} names nothing: a file on the way (L{NotADirectory}) or nothing there."""
        ancestor = path.parent
        while not ancestor.is_root:
            if await self._client.head(self._key(ancestor)) is not None:
                return NotADirectory()
            ancestor = ancestor.parent
        return FileNotFound()

    async def _keep_directory(self, path: VirtualPath) -> None:
        """Make sure C{path} survives the removal of its last entry, with a marker of its own."""
        if path.is_root:
            return
        marker = self._key(path) + "/"
        if await self._client.head(marker) is None:
            await self._client.put(marker, b"", self._metadata)

    # Reading the tree

    def stat(self, path: VirtualPath) -> Deferred[FileInfo]:
        return _run(self._stat(path))

    async def _stat(self, path: VirtualPath) -> FileInfo:
        if path.is_root:
            return _directory_info("/", await self._directory_time(self.prefix) or 0.0)
        found = await self._client.head(self._key(path))
        if found is not None:
            return _file_info(path.name, found)
        when = await self._directory_time(self._directory_prefix(path))
        if when is not None:
            return _directory_info(path.name, when)
        raise await self._missing(path)

    async def _directory_time(self, prefix: str) -> float | None:
        """
        A directory's time: its marker's LastModified, else the newest of the
        first objects under it (one request); C{None} when there is no such directory.
        """
        page = await self._client.list_page(prefix, delimiter=None, max_keys=_DIRECTORY_TIME_KEYS)
        if not page.objects:
            return None
        first = page.objects[0]
        if first.key == prefix:
            return first.mtime
        return max(found.mtime for found in page.objects)

    async def _directory_times(self, prefixes: Sequence[str]) -> list[float]:
        """The times of the directories C{prefixes}, a few requests at a time."""
        semaphore = DeferredSemaphore(_LOOKUP_CONCURRENCY)

        async def one(prefix: str) -> float:
            return await self._directory_time(prefix) or 0.0

        def run(prefix: str) -> Deferred[float]:
            return Deferred.fromCoroutine(one(prefix))

        try:
            return await gatherResults([semaphore.run(run, prefix) for prefix in prefixes], consumeErrors=True)
        except FirstError as error:
            error.subFailure.raiseException()
            raise

    # Times set with MFMT, as listings show them

    def _notes_folder(self, directory: VirtualPath) -> str:
        """Where the MFMT notes of the files in C{directory} are (the same in every session's view)."""
        root = self._config.prefix
        return root + MTIMES_FOLDER + self._directory_prefix(directory)[len(root) :]

    async def _mtime_notes(self, folder: str, name: str | None = None) -> dict[str, _Note]:
        """The MFMT notes in C{folder} (of the file C{name} only, if given), by key."""
        notes: dict[str, _Note] = {}
        token: str | None = None
        while True:
            page = await self._client.list_page(
                folder if name is None else f"{folder}{name}@", token=token, max_keys=self.list_page_size
            )
            for found in page.objects:
                parsed = _Note.parse(found.key[len(folder) :])
                if parsed is not None and name in (None, parsed[0]):
                    notes[found.key] = parsed[1]
            token = page.next_token
            if token is None:
                return notes

    async def _listing_notes(self, directory: VirtualPath) -> dict[str, _Note]:
        """The MFMT notes of the files in C{directory}, by file name."""
        folder = self._notes_folder(directory)
        notes = await self._mtime_notes(folder)
        return {key[len(folder) :].rsplit("@", 3)[0]: note for key, note in notes.items()}

    async def _note_mtime(self, path: VirtualPath, mtime: float) -> None:
        """Note C{mtime} for the object at C{path} as it is now, replacing older notes."""
        found = await self._client.head(self._key(path))
        if found is None:
            return
        key = _Note(mtime, int(found.mtime), found.etag.strip('"')).key(self._notes_folder(path.parent), path.name)
        if len(key.encode("utf-8")) > _MAX_KEY:
            _log.info("No room for the MFMT note of {key}: listings show its upload time", key=found.key)
        else:
            await self._client.put(key, b"", self._metadata)
        await self._forget_mtime(path, keep=key)

    async def _forget_mtime(self, path: VirtualPath, keep: str | None = None) -> None:
        """Remove the notes of C{path}'s MFMT time (but C{keep})."""
        notes = await self._mtime_notes(self._notes_folder(path.parent), path.name)
        await _each([key for key in notes if key != keep], self._client.delete, _LOOKUP_CONCURRENCY)

    def list(self, path: VirtualPath) -> Deferred[Sequence[FileInfo]]:
        return _run(self._list(path))

    async def _list(self, path: VirtualPath) -> Sequence[FileInfo]:
        entries = [info async for page in self.list_pages(path) for info in page]
        entries.sort(key=lambda info: (info.name, info.kind is FileKind.FILE))
        return entries

    async def list_pages(self, path: VirtualPath) -> AsyncIterator[Sequence[FileInfo]]:
        """
        The directory's entries one ListObjectsV2 page at a time (in key
        order), so that a directory of 100,000 objects is never held whole.
        """
        prefix = self._directory_prefix(path)
        noting = Deferred.fromCoroutine(self._listing_notes(path))
        notes: dict[str, _Note] | None = None
        seen = False
        token: str | None = None
        while True:
            try:
                page = await self._client.list_page(prefix, token=token, max_keys=self.list_page_size)
            except BaseException:
                noting.cancel()
                noting.addErrback(lambda _: None)
                raise
            if notes is None:
                notes = await noting
            entries: list[FileInfo] = []
            directories = [
                common
                for common in page.prefixes
                if _valid_name(common[len(prefix) : -1]) and not common[len(prefix) :].startswith(RESERVED_PREFIX)
            ]
            times = await self._directory_times(directories)
            entries.extend(map(_directory_info, (common[len(prefix) : -1] for common in directories), times))
            seen = seen or bool(page.prefixes or page.objects)
            for found in page.objects:
                name = found.key[len(prefix) :]
                if name and _valid_name(name) and not name.startswith(RESERVED_PREFIX):  # "": own marker
                    entries.append(_file_info(name, found, notes))
            if not seen and not path.is_root:
                raise await self._not_a_directory(path)
            if entries:
                entries.sort(key=lambda info: (info.name, info.kind is FileKind.FILE))
                yield entries
            token = page.next_token
            if token is None:
                return

    # Changing the tree

    def make_directory(self, path: VirtualPath) -> Deferred[None]:
        return _run(self._make_directory(path))

    async def _make_directory(self, path: VirtualPath) -> None:
        if path.is_root:
            raise PermissionDenied("Cannot change the root directory.")
        self._creatable(path)
        await self._require_directory(path.parent)
        key = self._key(path)
        if await self._client.head(key) is not None or await self._is_directory(path):
            raise AlreadyExists()
        await self._client.put(key + "/", b"", self._metadata)

    def remove_directory(self, path: VirtualPath) -> Deferred[None]:
        return _run(self._remove_directory(path))

    async def _remove_directory(self, path: VirtualPath) -> None:
        if path.is_root:
            raise PermissionDenied("Cannot remove the root directory.")
        marker = self._key(path) + "/"
        page = await self._client.list_page(marker, delimiter=None, max_keys=2)
        if not page.objects:
            raise await self._not_a_directory(path)
        if any(found.key != marker for found in page.objects):
            raise DirectoryNotEmpty()
        await self._keep_directory(path.parent)
        await self._client.delete(marker)
        notes = await self._mtime_notes(self._notes_folder(path))  # of files removed behind exftp's back
        await _each(notes, self._client.delete, _LOOKUP_CONCURRENCY)

    def remove_file(self, path: VirtualPath) -> Deferred[None]:
        return _run(self._remove_file(path))

    async def _remove_file(self, path: VirtualPath) -> None:
        if path.is_root:
            raise PermissionDenied("Cannot remove the root directory.")
        key = self._key(path)
        if await self._client.head(key) is None:
            if await self._is_directory(path):
                raise IsADirectory()
            raise await self._missing(path)
        await self._keep_directory(path.parent)
        await self._client.delete(key)
        await self._forget_mtime(path)

    def rename(self, source: VirtualPath, destination: VirtualPath) -> Deferred[None]:
        return _run(self._rename(source, destination))

    async def _rename(self, source: VirtualPath, destination: VirtualPath) -> None:
        if source.is_root or destination.is_root:
            raise PermissionDenied("Cannot rename the root directory.")
        self._key(source)
        self._creatable(destination)
        if destination.is_within(source):
            if destination == source:
                await self._stat(source)
                return
            raise InvalidPath("Cannot move a directory into itself.")
        found = await self._client.head(self._key(source))
        if found is None:
            if not await self._is_directory(source):
                raise await self._missing(source)
            await self._rename_directory(source, destination)
            return
        await self._require_directory(destination.parent)
        if await self._is_directory(destination):
            raise AlreadyExists("Destination is a directory.")
        await self._copy(found, self._key(destination))
        await self._keep_directory(source.parent)
        await self._client.delete(found.key)
        await self._forget_mtime(source)
        noted = _file_info(destination.name, found)
        if noted.mtime != found.mtime:  # an MFMT time in the metadata, which the copy kept
            await self._note_mtime(destination, noted.mtime)

    async def _copy(self, found: ObjectInfo, destination: str, metadata: Mapping[str, str] | None = None) -> None:
        """
        Copy an object on the S3 side, in parts above L{copy_limit}.

        @param metadata: new user metadata; the source's when C{None}.
        """
        if found.size <= self.copy_limit:
            await self._client.copy(found.key, destination, found.etag or None, metadata, found.content_type)
            return
        if metadata is None:
            metadata = (await self._client.head(found.key) or found).metadata
        copy = S3Upload(self._client, destination, metadata, self._config.part_size, 1, self._journal)
        copy.copy_from(found.key, found.size, found.etag, self.copy_part_size)
        await copy.finish()

    async def _rename_directory(self, source: VirtualPath, destination: VirtualPath) -> None:
        await self._require_directory(destination.parent)
        target = self._key(destination)
        if await self._client.head(target) is not None or await self._is_directory(destination):
            raise AlreadyExists()
        old, new = self._key(source) + "/", target + "/"
        limit = self._config.rename_limit
        objects: list[ObjectInfo] = []
        token: str | None = None
        while True:
            page = await self._client.list_page(old, delimiter=None, token=token, max_keys=self.list_page_size)
            objects.extend(page.objects)
            if len(objects) > limit:
                raise PermissionDenied(f"Directory too large to rename (more than {limit} objects).")
            token = page.next_token
            if token is None:
                break
        copied: list[str] = []

        async def copy(found: ObjectInfo) -> None:
            target_key = new + found.key[len(old) :]
            await self._copy(found, target_key)
            copied.append(target_key)

        try:
            await _each(objects, copy, _RENAME_CONCURRENCY)
        except BaseException:
            await _each(copied, self._delete_quietly, _RENAME_CONCURRENCY)
            raise
        await self._keep_directory(source.parent)
        await _each([found.key for found in objects], self._client.delete, _RENAME_CONCURRENCY)

    async def _delete_quietly(self, key: str) -> None:
        try:
            await self._client.delete(key)
        except Exception:
            _log.failure("Could not delete {key} while undoing a rename", key=key)

    # Metadata (MFMT, SITE CHMOD)

    def set_mtime(self, path: VirtualPath, mtime: float) -> Deferred[None]:
        return _run(self._set_mtime(path, mtime))

    async def _set_mtime(self, path: VirtualPath, mtime: float) -> None:
        """Keep C{mtime} as the object's C{mtime} metadata: S3 has no settable modification time."""
        if path.is_root:
            raise PermissionDenied("Directories have no modification time here.")
        found = await self._client.head(self._key(path))
        if found is None:
            if await self._is_directory(path):
                raise PermissionDenied("Directories have no modification time here.")
            raise await self._missing(path)
        await self._copy(found, found.key, {**found.metadata, _MTIME: f"{mtime:.3f}"})
        await self._note_mtime(path, mtime)

    def set_permissions(self, path: VirtualPath, mode: int) -> Deferred[None]:
        return fail(ParameterNotSupported("Objects in S3 have no permissions."))

    # Transfers

    def open_read(self, path: VirtualPath, offset: int) -> Deferred[IReadFile]:
        return _run(self._open_read(path, offset))

    async def _open_read(self, path: VirtualPath, offset: int) -> IReadFile:
        check_offset(offset)
        if path.is_root:
            raise IsADirectory()
        try:
            response = await self._client.get_stream(self._key(path), offset)
        except S3Error as error:
            if error.status != 404:
                raise
            if await self._is_directory(path):
                raise IsADirectory() from None
            raise await self._missing(path) from None
        if response is None:
            return StreamingReader(io.BytesIO().read, 0, self._reactor)
        key, etag = self._key(path), _etag(response)

        async def resume(received: int, within: float) -> IResponse | None:
            return await self._client.get_stream(key, offset + received, etag, within)

        config = self._config
        return _S3Reader(
            response,
            self._reactor,
            config.request_timeout,
            resume if etag else None,
            config.retries,
            config.operation_deadline,
        )

    def open_write(self, path: VirtualPath, mode: WriteMode, offset: int) -> Deferred[IWriteFile]:
        return _run(self._open_write(path, mode, offset))

    async def _open_write(self, path: VirtualPath, mode: WriteMode, offset: int) -> IWriteFile:
        check_offset(offset)
        if path.is_root:
            raise PermissionDenied("Cannot write the root directory.")
        self._creatable(path)
        await self._require_directory(path.parent)
        key = self._key(path)
        existing = await self._client.head(key)
        if existing is None and await self._is_directory(path):
            raise IsADirectory()
        size = existing.size if existing is not None else 0
        wanted = {WriteMode.TRUNCATE: 0, WriteMode.APPEND: size, WriteMode.OFFSET: offset}[mode]
        kept = min(wanted, size)
        padding = wanted - kept
        part_size = self._config.part_size
        if padding > part_size:
            raise ParameterNotSupported("Restart offset is beyond the end of the file.")
        upload = S3Upload(self._client, key, self._metadata, part_size, self._config.parts_in_flight, self._journal)
        if existing is not None and kept >= MIN_PART_SIZE:
            upload.copy_from(key, kept, existing.etag)
        elif existing is not None and kept:
            upload.write(await self._client.get_bytes(key, 0, kept - 1, existing.etag or None))
        if padding:
            upload.write(bytes(padding))
        return upload


@implementer(IStorageFactory, IStorageCleanup)
class S3StorageFactory(LazyReactor):
    """
    Gives each session an L{S3Storage} on one bucket, rooted at the
    configured prefix, narrowed to the session's root when the authenticator
    names one (one bucket, many isolated users).

    @param config: the bucket and limits; a missing endpoint and region are
        taken from the standard AWS settings (see L{S3Config.with_environment}).
    @param reactor: the reactor; the global one when omitted.
    @param http_client: a treq C{HTTPClient}; by default one on a pool of
        C{config.max_connections} persistent connections.
    @param credentials: botocore credentials to sign with; by default
        botocore's standard chain, looked up in a thread.
    @param environ: the environment to read settings from; C{os.environ} when omitted.
    """

    def __repr__(self) -> str:
        return f"s3://{self.config.bucket}/{self.config.prefix}"

    @property
    def node(self) -> str:
        """This server's node name (C{config.node})."""
        return self.config.node

    def __init__(
        self,
        config: S3Config,
        *,
        reactor: Any = None,
        http_client: Any = None,
        credentials: Any = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config.with_environment(environ)
        self._reactor = reactor
        self._http = http_client
        self._credentials = credentials
        self._pool: Any = None
        self._client: S3Client | None = None

    @property
    def client(self) -> S3Client:
        """The bucket's client, made on first use."""
        if self._client is None:
            reactor = self.reactor
            http = self._http
            if http is None:
                http, self._pool = default_http_client(reactor, self.config)
            credentials = CredentialSource(reactor, self._credentials, self.config.profile)
            self._client = S3Client(self.config, http, credentials, reactor)
        return self._client

    def storage_for(self, session: Session) -> Deferred[IStorage]:
        return _run(self._storage_for(session))

    async def _storage_for(self, session: Session) -> IStorage:
        storage = S3Storage(self.client, self.config.prefix, self.reactor)
        root = session.root
        if root is not None and not root.is_root:
            if not await storage._is_directory(root):
                raise FileNotFound("Home directory does not exist.")
            storage = S3Storage(self.client, storage._directory_prefix(root), self.reactor)
        return for_session(storage, session)

    def probe_at_start(self) -> str | None:
        """
        Ask S3 once (HeadBucket, botocore's own client, one try of at most 10
        seconds) whether the bucket is there: C{None} when it is, else the
        problem (refused credentials, an endpoint that does not answer),
        which may pass. Blocking: for start-up, before the reactor runs.

        @raise ConfigurationError: the bucket does not exist.
        """
        import botocore.session  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]
        from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

        config = self.config
        addressing = {"virtual": "virtual", "path": "path"}.get(config.addressing, "auto")
        session = botocore.session.Session(profile=config.profile)
        client = session.create_client(
            "s3",
            region_name=config.region,
            endpoint_url=config.endpoint_url,
            config=Config(
                connect_timeout=10, read_timeout=10, retries={"max_attempts": 1}, s3={"addressing_style": addressing}
            ),
        )
        where = config.endpoint_url or f"S3 in {config.region}"
        try:
            client.head_bucket(Bucket=config.bucket)
        except ClientError as error:
            answer = error.response
            status = answer.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = answer.get("Error", {}).get("Code", "")
            if status == 404 or code in ("404", "NoSuchBucket"):
                missing = f"the bucket {config.bucket!r} does not exist at {where} (NoSuchBucket)"
                raise ConfigurationError(missing) from None
            return f"{where} refuses access to the bucket {config.bucket!r} ({status} {code}): check the credentials"
        except (BotoCoreError, OSError) as error:
            return f"{where} does not answer ({type(error).__name__}: {error})"
        finally:
            client.close()
        return None

    def clean_up(self, node: str | None, older_than: float | None) -> Deferred[CleanupReport]:
        """
        Abort the multipart uploads that crashed servers left open: those of
        node C{node} and those started more than C{older_than} seconds ago,
        as the upload journal lists them (see L{UploadJournal}).
        """
        return _run(journal_of(self.client, self.reactor).clean_up(node, older_than))

    def close(self) -> Deferred[None]:
        """Close the idle connections of the default HTTP client (at shutdown)."""
        if self._client is not None:
            journal_of(self._client, self.reactor).stop()
        if self._pool is None:
            return succeed(None)
        closing: Deferred[None] = self._pool.closeCachedConnections()
        return closing


# The --storage s3:... specification

_SIZE = re.compile(r"^(\d+)\s*(|k|kib|m|mib|g|gib)$", re.IGNORECASE)
_MULTIPLIERS = {"": 1, "k": KiB, "kib": KiB, "m": MiB, "mib": MiB, "g": GiB, "gib": GiB}


def _size(text: str) -> int:
    found = _SIZE.match(text.strip())
    if not found:
        raise ValueError(f"expected a size in bytes such as 8388608 or 8MiB, not {text!r}")
    return int(found.group(1)) * _MULTIPLIERS[found.group(2).lower()]


def _integer(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"expected a whole number, not {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number of seconds, not {text!r}") from None
    return value


#: Spec option name: (S3Config field, value parser).
_SPEC_OPTIONS: dict[str, tuple[str, Callable[[str], object]]] = {
    "bucket": ("bucket", str),
    "prefix": ("prefix", str),
    "region": ("region", str),
    "endpoint": ("endpoint_url", str),
    "addressing": ("addressing", str),
    "part_size": ("part_size", _size),
    "parts_in_flight": ("parts_in_flight", _integer),
    "timeout": ("request_timeout", _seconds),
    "deadline": ("deadline", _seconds),
    "retries": ("retries", _integer),
    "rename_limit": ("rename_limit", _integer),
    "max_connections": ("max_connections", _integer),
    "profile": ("profile", str),
    "node": ("node", check_node),
}
_OPTION_NAME = re.compile(r"^[a-z_]+$")


def _split_spec(text: str) -> list[str]:
    """Split at colons, except those escaped with a backslash."""
    tokens, current = [], []
    characters = iter(text)
    for character in characters:
        if character == "\\":
            current.append(next(characters, "\\"))
        elif character == ":":
            tokens.append("".join(current))
            current = []
        else:
            current.append(character)
    tokens.append("".join(current))
    return tokens


def parse_spec(argument: str) -> dict[str, str]:
    """
    Parse C{NAME=VALUE[:NAME=VALUE...]} into a dict.

    A piece without C{=} continues the previous value after a colon, so
    C{endpoint=http://127.0.0.1:9000} needs no escaping; C{\\:} is a literal
    colon anywhere.

    @raise ValueError: for unknown or repeated names and pieces that are not C{NAME=VALUE}.
    """
    options: dict[str, str] = {}
    last: str | None = None
    for token in _split_spec(argument):
        name, equals, value = token.partition("=")
        if equals and _OPTION_NAME.match(name):
            if name not in _SPEC_OPTIONS:
                known = ", ".join(_SPEC_OPTIONS)
                raise ValueError(f"unknown option {name!r} (known: {known})")
            if name in options:
                raise ValueError(f"option {name!r} given twice")
            options[name] = value
            last = name
        elif last is not None:
            options[last] += ":" + token
        else:
            raise ValueError(f"expected NAME=VALUE, not {token!r}")
    return options


def storage_factory_from_spec(
    argument: str, environ: Mapping[str, str] | None = None, node: str | None = None
) -> S3StorageFactory:
    """
    Build an S3 storage factory from the text after C{--storage s3:}:
    C{bucket=NAME[:prefix=P][:region=R][:endpoint=URL][:addressing=path|virtual|auto]
    [:part_size=BYTES][:parts_in_flight=N][:timeout=SECONDS][:deadline=SECONDS][:retries=N]
    [:rename_limit=N][:max_connections=N][:profile=NAME][:node=NAME]}.

    The endpoint, region and credentials otherwise come from the standard AWS
    environment variables and files, so C{AWS_ENDPOINT_URL_S3=http://127.0.0.1:9000
    twistd -n exftp --storage s3:bucket=b} works.

    @param node: the server's node name (C{twistd exftp --node}), unless the
        specification names one.
    @raise ValueError: with a message that names the problem.
    """
    options = parse_spec(argument)
    if not options.get("bucket"):
        raise ValueError("bucket=NAME is required, e.g. s3:bucket=my-bucket")
    if node is not None and options.setdefault("node", node) != node:
        raise ValueError(f"node={options['node']} differs from the server's node name {node}")
    fields: dict[str, Any] = {}
    for name, text in options.items():
        field_name, parse = _SPEC_OPTIONS[name]
        try:
            fields[field_name] = parse(text)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
    config = S3Config(**fields)
    try:
        return S3StorageFactory(config, environ=environ)
    except Exception as error:  # e.g. botocore's ProfileNotFound
        raise ValueError(str(error)) from None
