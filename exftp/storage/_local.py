"""
Storage on the local file system, rooted at a directory.

No path can leave the root: virtual paths cannot express C{..}, and every
path is resolved beneath the root by the same system calls that act on it
(L{exftp.storage._beneath}), so a directory swapped for a link meanwhile
cannot redirect them. Disk work runs in a bounded pool of its own
(L{exftp.storage._pool}). Uploads go to a hidden
temporary file next to the target and are renamed into place only once
complete and flushed to disk. A temporary file names the node and process
that made it, so that the ones a crash leaves behind are removed at the
next start (L{FileStorageFactory.clean_up}).
"""

from __future__ import annotations

import contextlib
import errno
import grp
import itertools
import os
import pwd
import re
import secrets
import stat as stat_module
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache, wraps
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IProducer, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .._cleanup import (
    BOOT,
    RESERVED_PREFIX,
    CleanupReport,
    IStorageCleanup,
    Owner,
    check_node,
    default_node,
    judge,
)
from .._errors import (
    AlreadyExists,
    CommandSyntaxError,
    DirectoryNotEmpty,
    FileNotFound,
    FTPError,
    InsufficientStorage,
    InvalidPath,
    IsADirectory,
    NotADirectory,
    PermissionDenied,
    QuotaExceeded,
    StorageUnavailable,
)
from .._httpclient import LazyReactor
from .._interfaces import (
    FileInfo,
    FileKind,
    IFileDescriptorSource,
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
from ._beneath import Found, LeadsOutside, open_root, walk
from ._pool import DEFAULT_THREADS, StoragePool, shared_pool
from ._readonly import for_session
from ._streaming import CHUNK_SIZE, StreamingReader, check_offset, check_permissions

#: Prefix of the temporary files that hold uploads in progress; never listed.
TEMPORARY_PREFIX = RESERVED_PREFIX
#: A temporary file's name after the prefix: start token and random part, process id, node.
_TEMPORARY_NAME = re.compile(r"^([0-9a-f]{8})[0-9a-f]{8}-([0-9]{1,10})-([A-Za-z0-9._-]{1,64})$")
#: Directory entries the start-up clean-up looks at, at most.
SWEEP_LIMIT = 10_000_000
#: Upload bytes gathered before they are handed to a worker thread: one
#: thread hand-off per 64 KiB read costs more CPU than the write itself.
_BATCH = 1024 * 1024
#: Seconds a smaller batch waits for more bytes before it is written anyway.
_BATCH_DELAY = 0.01
#: Upload bytes after which their write-back to disk is started.
_WRITE_BEHIND = 16 * 1024 * 1024
#: Buffers in one writev at most (Linux's IOV_MAX).
_IOV_MAX = 1024
#: Unwritten upload bytes above which the data connection is paused.
_HIGH_WATER = 4 * 1024 * 1024
#: Bytes of an old file copied in one C{copy_file_range} call when resuming
#: or appending; a session that has gone stops the copy between two calls.
_COPY_CHUNK = 64 * 1024 * 1024
#: Whether a descriptor opened with C{O_PATH} can be changed through /proc.
_PROC_FD = os.path.isdir("/proc/self/fd")

_ERRNO_ERRORS: dict[int, type[FTPError]] = {
    errno.ENOENT: FileNotFound,
    errno.EACCES: PermissionDenied,
    errno.EPERM: PermissionDenied,
    errno.EROFS: PermissionDenied,
    errno.ENOTDIR: NotADirectory,
    errno.EISDIR: IsADirectory,
    errno.EEXIST: AlreadyExists,
    errno.ENOTEMPTY: DirectoryNotEmpty,
    errno.ENOSPC: InsufficientStorage,
    errno.EDQUOT: QuotaExceeded,
    errno.ENAMETOOLONG: InvalidPath,
    errno.EINVAL: InvalidPath,
    errno.ELOOP: PermissionDenied,
}

#: Errors that say what is wrong with the client's path, not with the server.
_PATH_ERRORS = frozenset(
    {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.EINVAL, errno.ELOOP}
)

_T = TypeVar("_T")
_log = Logger(namespace="exftp.file")


def temporary_name(node: str) -> str:
    """A fresh name for an upload's temporary file, naming this process and C{node}."""
    return f"{TEMPORARY_PREFIX}{BOOT}{secrets.token_hex(4)}-{os.getpid()}-{node}"


def temporary_owner(name: str) -> Owner | None:
    """Who made the temporary file C{name}, or C{None} when its name does not say."""
    found = _TEMPORARY_NAME.match(name[len(TEMPORARY_PREFIX) :]) if name.startswith(TEMPORARY_PREFIX) else None
    if found is None:
        return None
    return Owner(node=found[3], pid=int(found[2]), boot=found[1])


def storage_error(error: OSError) -> FTPError:
    """Translate an C{OSError} into the FTP error that describes it."""
    kind = _ERRNO_ERRORS.get(error.errno or 0, StorageUnavailable)
    message = "Read-only file system." if error.errno == errno.EROFS else None
    return kind(message)


def _deferred(method: Callable[..., _T]) -> Callable[..., Deferred[_T]]:
    """Run a synchronous method, returning its result or its error as a Deferred."""

    @wraps(method)
    def wrapper(*args: Any) -> Deferred[_T]:
        try:
            return succeed(method(*args))
        except OSError as error:
            return fail(storage_error(error))
        except FTPError as error:
            return fail(error)

    return wrapper


def _settled(
    work: Deferred[_T], orphan: Callable[[_T | Failure], object], stopping: threading.Event | None = None
) -> Deferred[_T]:
    """
    Follow C{work}, a job in a worker thread that cannot be stopped.

    Cancelling the returned Deferred leaves C{work} alone (but sets
    C{stopping}, so that a job not started yet never starts and a long one
    stops early); its result, when it comes, goes to C{orphan} so that what
    the job made (a descriptor, a temporary file) can be released instead
    of leaking.
    """
    follower: Deferred[_T] = Deferred(None if stopping is None else lambda _: stopping.set())

    def deliver(result: _T | Failure) -> None:
        if follower.called:
            orphan(result)
        elif isinstance(result, Failure):
            follower.errback(result)
        else:
            follower.callback(result)

    work.addBoth(deliver)
    return follower


def _shielded(work: Deferred[None], what: str) -> Deferred[None]:
    """
    Follow C{work}, clean-up that must run to its end: cancelling the
    returned Deferred stops the waiting (it fires with C{None}), not the
    work, whose failure is then logged here.
    """
    follower: Deferred[None] = Deferred(lambda waiting: waiting.callback(None))

    def deliver(result: Failure | None) -> None:
        if isinstance(result, Failure) and not follower.called:
            follower.errback(result)
        elif not follower.called:
            follower.callback(None)
        elif isinstance(result, Failure):
            _log.failure("{what} failed", result, what=what)

    work.addBoth(deliver)
    return follower


@lru_cache(maxsize=256)
def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@lru_cache(maxsize=256)
def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


#: Entries read in one worker-thread job by L{FileStorage.list_pages}.
_LIST_PAGE = 1000
#: Directories of up to this many names are listed on the reactor thread.
_LIST_INLINE = 100


def _visible(names: Iterable[str]) -> list[str]:
    """C{names} sorted, without the hidden upload files."""
    return sorted(name for name in names if not name.startswith(TEMPORARY_PREFIX))


def _rest_of(scan: Any, first: list[str]) -> list[str]:
    """
    C{first} and the names C{scan} (an C{os.scandir} iterator, which this
    closes) has not given yet, sorted and visible: run in a worker thread,
    which alone uses C{scan} from then on.
    """
    with scan:
        return _visible(first + [entry.name for entry in scan])


def _later_page(
    directory: int, recheck: Callable[[], None], names: Sequence[str], follow: Callable[[str], os.stat_result]
) -> list[FileInfo]:
    """
    L{_entries} for a page read after the listing began: C{recheck} first
    refuses a directory that has become a link out meanwhile.
    """
    recheck()
    return _entries(directory, names, follow)


def _entries(directory: int, names: Sequence[str], follow: Callable[[str], os.stat_result]) -> list[FileInfo]:
    """
    The entries of C{names} in the open C{directory}: links that lead
    outside the root (C{follow} raises L{LeadsOutside}) as links, others as
    what they lead to; names gone since they were listed are left out.
    """
    entries = []
    for name in names:
        try:
            result = os.stat(name, dir_fd=directory, follow_symlinks=False)
            if stat_module.S_ISLNK(result.st_mode):
                try:
                    result = follow(name)
                except LeadsOutside:
                    entries.append(_info(name, result, FileKind.SYMLINK))
                    continue
        except (OSError, FTPError):
            continue
        entries.append(_info(name, result))
    return entries


def _info(name: str, result: os.stat_result, kind: FileKind | None = None) -> FileInfo:
    mode = result.st_mode
    if kind is None:
        kind = FileKind.DIRECTORY if stat_module.S_ISDIR(mode) else FileKind.FILE
    # Positional: this runs once per entry of every listing.
    return FileInfo(
        name,
        kind,
        result.st_size if kind is FileKind.FILE else 0,
        result.st_mtime,
        stat_module.S_IMODE(mode),
        _user_name(result.st_uid),
        _group_name(result.st_gid),
        result.st_nlink,
        "%xg%x" % (result.st_dev, result.st_ino),  # noqa: UP031 (a third cheaper than an f-string)
    )


def _open_regular(found: Found) -> int:
    """
    Open the entry C{found} for reading without blocking on FIFOs or devices.

    @raise IsADirectory: for a directory.
    @raise PermissionDenied: for anything else that is not a regular file.
    """
    fd = found.open(os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if stat_module.S_ISDIR(mode):
            raise IsADirectory()
        if not stat_module.S_ISREG(mode):
            raise PermissionDenied("Not a regular file.")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


@implementer(IFileDescriptorSource)
class _FileReader(StreamingReader):
    """A local file: streamed in chunks, or sent by the data connection with sendfile."""

    def __init__(self, handle: Any, offset: int, size: int, reactor: IReactorTime) -> None:
        super().__init__(handle.read, size, reactor, handle.close)
        self._handle = handle
        self.offset = offset

    def fileno(self) -> int:
        return int(self._handle.fileno())


@dataclass
class _Upload:
    """
    An upload's temporary file C{fd}, named C{temporary} in the open
    C{directory} where it replaces C{target} once complete; C{shown} is
    the target as logs name it, and C{in_place} tells whether the target's
    path still leads to that directory.
    """

    fd: int
    directory: int
    temporary: str
    target: str
    shown: str
    in_place: Callable[[_Upload], bool]

    def close_fd(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def release(self) -> tuple[str, OSError] | None:
        """
        Close both descriptors and remove the temporary file (in a worker thread).

        @return: C{None}, or the file and why it could not be removed, for
            L{_log_kept} to tell on the reactor thread.
        """
        with contextlib.suppress(OSError):
            self.close_fd()
        directory, self.directory = self.directory, -1
        if directory < 0:
            return None
        try:
            os.unlink(self.temporary, dir_fd=directory)
        except FileNotFoundError:
            pass
        except OSError as error:
            return os.path.join(os.path.dirname(self.shown), self.temporary), error
        finally:
            os.close(directory)
        return None


@implementer(IWriteFile)
class _FileWriter:
    """
    Writes an upload to a temporary file in a worker thread.

    Writes are queued and flushed in batches off the reactor thread; above
    C{_HIGH_WATER} queued bytes the data connection is paused, so a slow disk
    slows the client instead of filling memory.

    A write in a worker thread cannot be stopped; cancelling L{finish} or
    L{abort} only stops waiting for it, and the descriptor is closed only once
    no thread uses it any more.
    """

    def __init__(self, upload: _Upload, run: Callable[..., Deferred[Any]], clock: IReactorTime) -> None:
        self._upload = upload
        self._fd = upload.fd
        self._clock = clock
        self._timer: Any = None
        self._target = upload.shown
        self._run = run
        self._queue: list[bytes] = []
        self._queued = 0
        self._unflushed = 0
        self._writing: Deferred[None] | None = None
        self._error: FTPError | None = None
        self._producer: IProducer | None = None
        self._paused = False
        self._closed = False

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._producer = None

    def write(self, data: bytes) -> None:
        if self._closed or self._error is not None:
            return
        self._queue.append(data)
        self._queued += len(data)
        if self._queued > _HIGH_WATER and not self._paused and IPushProducer.providedBy(self._producer):
            self._paused = True
            self._producer.pauseProducing()  # type: ignore[union-attr]
        if self._writing is None:
            self._flush_or_wait()

    def _flush_or_wait(self) -> None:
        """Hand the queue to a thread once it is a batch (or reading is paused), else shortly."""
        if self._queued >= _BATCH or self._paused:
            self._flush()
        elif self._timer is None:
            self._timer = self._clock.callLater(_BATCH_DELAY, self._flush_late)

    def _flush_late(self) -> None:
        self._timer = None
        if self._writing is None and self._queue and not self._closed:
            self._flush()

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _flush(self) -> None:
        self._cancel_timer()
        batch, self._queue = self._queue, []
        size, self._queued = self._queued, 0
        self._writing = self._run(self._write_all, batch, size)
        self._writing.addCallbacks(self._written, self._failed)

    def _write_all(self, chunks: list[bytes], size: int) -> None:
        # One writev of the chunks as they came from the socket: joining them
        # first copied every uploaded byte once more (as much CPU as reading it).
        views = [memoryview(chunk) for chunk in chunks]
        while views:
            written = os.writev(self._fd, views[:_IOV_MAX])
            while views and written >= len(views[0]):
                written -= len(views.pop(0))
            if views and written:
                views[0] = views[0][written:]
        self._unflushed += size
        if self._unflushed >= _WRITE_BEHIND and hasattr(os, "posix_fadvise"):
            # Start writing back what is written so far without waiting for
            # it (Linux starts write-back of dirty pages on DONTNEED), so that
            # the fsync in finish() only waits for the tail of the upload.
            self._unflushed = 0
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def _written(self, _: None) -> None:
        self._writing = None
        if self._queue and not self._closed:
            self._flush_or_wait()
        elif self._paused and self._producer is not None:
            self._paused = False
            self._producer.resumeProducing()  # type: ignore[attr-defined]

    def _failed(self, failure: Failure) -> None:
        self._writing = None
        self._queue.clear()
        error = failure.value
        self._error = storage_error(error) if isinstance(error, OSError) else StorageUnavailable()
        _log.warn(
            "Writing the upload to {target} failed ({why}); the upload is discarded",
            target=self._target,
            why=_describe(error),
        )
        if self._producer is not None:
            self._producer.stopProducing()

    async def _drain(self) -> None:
        """Wait until no write is running (without cancelling the one that is)."""
        while self._writing is not None:
            waiter: Deferred[None] = Deferred()
            self._writing.addBoth(_fire, waiter)
            await waiter

    def finish(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._finish())

    async def _finish(self) -> None:
        if self._closed:
            raise StorageUnavailable("Upload already closed.")
        await self._drain()
        if self._queue and self._error is None:
            self._flush()
            await self._drain()
        if self._error is not None:
            await self.abort()
            raise self._error
        self._closed = True
        try:
            await _settled(self._run(self._commit), self._commit_orphaned)
        except OSError as error:
            _log.warn(
                "Storing the upload to {target} failed ({why}); the upload is discarded",
                target=self._target,
                why=_describe(error),
            )
            _log_kept(await self._run(self._discard))
            raise storage_error(error) from None

    def _commit_orphaned(self, result: object) -> None:
        if isinstance(result, Failure):
            self._run(self._discard).addCallback(_log_kept)

    def _commit(self) -> None:
        upload = self._upload
        try:
            os.fsync(upload.fd)
        finally:
            upload.close_fd()
        if not upload.in_place(upload):  # the directory moved or went: as if it were gone
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
        # By the directory's descriptor, held since the upload began: should
        # a name on the way change after that check, the file still lands in
        # that directory, inside the root.
        os.rename(upload.temporary, upload.target, src_dir_fd=upload.directory, dst_dir_fd=upload.directory)
        directory, upload.directory = upload.directory, -1
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _discard(self) -> tuple[str, OSError] | None:
        return self._upload.release()

    def abort(self) -> Deferred[None]:
        # The teardown that asks for an abort may cancel its own wait: the
        # temporary file is removed all the same.
        return _shielded(Deferred.fromCoroutine(self._abort()), f"Discarding the upload to {self._target}")

    async def _abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._cancel_timer()
        self._queue.clear()
        await self._drain()
        _log_kept(await self._run(self._discard))


def _fire(result: Failure | None, waiter: Deferred[None]) -> Failure | None:
    """Fire C{waiter} (unless it was cancelled) and pass C{result} on unchanged."""
    if not waiter.called:
        waiter.callback(None)
    return result


@implementer(IStorage, IStorageMetadata, IPagedListing)
class FileStorage:
    """
    The directory tree under C{root}, as one user sees it.

    @param root: the directory that becomes C{/}.
    @param reactor: used for scheduling reads; the global reactor when omitted.
    @param node: this server's node name, written in the names of upload
        temporaries; this host's name when omitted.
    @param pool: the threads that do this storage's disk work; one shared
        by the storages of C{reactor} when omitted.
    """

    def __init__(
        self, root: str, reactor: Any = None, node: str | None = None, pool: StoragePool | None = None
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self._reactor: IReactorTime = reactor
        self._pool = shared_pool(reactor) if pool is None else pool
        self.root = os.path.realpath(root)
        self.node = default_node() if node is None else check_node(node)

    def _run(self, function: Callable[..., _T], *args: Any, stopping: threading.Event | None = None) -> Deferred[_T]:
        return self._pool.run(function, *args, stopping=stopping)

    @contextlib.contextmanager
    def _root_fd(self) -> Iterator[int]:
        fd = open_root(self.root)
        try:
            yield fd
        finally:
            os.close(fd)

    def _walk(self, segments: Sequence[str], follow_last: bool = True) -> Found:
        with self._root_fd() as root_fd:
            return walk(self.root, root_fd, segments, follow_last)

    def _existing(self, path: VirtualPath) -> Found:
        """
        Where C{path} is, its links followed inside the root (it may not
        exist). A link out is refused; what lies beyond one is not found.
        """
        try:
            return self._walk(path.segments)
        except LeadsOutside:
            try:
                self._walk(path.segments, follow_last=False).close()
            except LeadsOutside:
                raise FileNotFound() from None
            raise

    def _entry(self, path: VirtualPath, creating: bool = False) -> Found:
        """
        The entry C{path} itself, to change it: its directory's links are
        followed inside the root; the entry, if a link, is not, and must
        not lead out of it.

        @param creating: whether C{path} is to be made, so that a reserved
            name is refused as a name rather than reported missing.
        """
        if path.is_root:
            raise PermissionDenied("Cannot change the root directory.")
        if path.name.startswith(TEMPORARY_PREFIX):
            raise InvalidPath() if creating else FileNotFound()
        found = self._walk(path.segments, follow_last=False)
        try:
            if stat_module.S_ISLNK(found.lstat().st_mode):
                self._walk(path.segments).close()
        except LeadsOutside:
            found.close()
            raise
        except (OSError, FTPError):
            pass  # missing, or a link to nothing: the act itself tells
        return found

    def _follower(self, directory: VirtualPath) -> Callable[[str], os.stat_result]:
        """What a link named in C{directory} leads to, as L{_entries} asks."""

        def follow(name: str) -> os.stat_result:
            with self._walk((*directory.segments, name)) as found:
                return found.lstat()

        return follow

    def _directory(self, path: VirtualPath) -> int:
        """A descriptor of the directory C{path}, for listing it."""
        with self._existing(path) as found:
            return found.open(os.O_RDONLY | os.O_DIRECTORY)

    @_deferred
    def stat(self, path: VirtualPath) -> FileInfo:
        with self._existing(path) as found:
            return _info(path.name or "/", found.lstat())

    @_deferred
    def list(self, path: VirtualPath) -> Sequence[FileInfo]:
        directory = self._directory(path)
        try:
            return _entries(directory, _visible(os.listdir(directory)), self._follower(path))
        finally:
            os.close(directory)

    async def list_pages(self, path: VirtualPath) -> AsyncIterator[Sequence[FileInfo]]:
        """
        The entries in name order. The first L{_LIST_INLINE} names are read
        here; a directory with more is read on in a worker thread, then
        L{_LIST_PAGE} entries at a time in worker threads, each page sent as it
        is read, so that a directory of 100,000 files, or a slow disk, does not
        hold up the other sessions. Smaller ones are read at once (a thread
        hand-off per LIST cost 1 ms of CPU with 200 sessions busy).

        The directory is read through one descriptor from start to end.
        """
        try:
            directory = self._directory(path)
        except OSError as error:
            raise storage_error(error) from None
        running: list[Deferred[Any]] = []
        try:
            scan = os.scandir(directory)
            try:
                first = [entry.name for entry in itertools.islice(scan, _LIST_INLINE + 1)]
            except BaseException:
                scan.close()
                raise
            follow = self._follower(path)
            if len(first) <= _LIST_INLINE:
                scan.close()
                yield _entries(directory, _visible(first), follow)
                return
            running[:] = [self._run(_rest_of, scan, first)]
            names = await _settled(running[0], _ignore)
            recheck = self._rechecker(path)
            for start in range(0, len(names), _LIST_PAGE):
                page = names[start : start + _LIST_PAGE]
                running[:] = [self._run(_later_page, directory, recheck, page, follow)]
                yield await _settled(running[0], _ignore)
        except OSError as error:
            raise storage_error(error) from None
        finally:
            # A page still being read in a thread uses the descriptor: close it after.
            if running and not running[0].called:
                running[0].addBoth(lambda _: os.close(directory))
            else:
                os.close(directory)

    def _home(self, path: VirtualPath) -> str:
        """The real local path of the directory C{path}, to root a session's own storage at."""
        with self._existing(path) as found:
            fd = found.open(os.O_PATH | os.O_DIRECTORY)
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)

    def _in_place(self, path: VirtualPath) -> Callable[[_Upload], bool]:
        """A check that C{path} still leads to the file an upload will replace."""

        def in_place(upload: _Upload) -> bool:
            try:
                with self._walk(path.segments) as found:
                    here, there = os.fstat(found.parent), os.fstat(upload.directory)
                    return found.name == upload.target and (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
            except (OSError, FTPError):
                return False

        return in_place

    def _rechecker(self, path: VirtualPath) -> Callable[[], None]:
        """A check that C{path} still names a directory inside the root."""

        def recheck() -> None:
            with self._existing(path) as found:
                if not stat_module.S_ISDIR(found.lstat().st_mode):
                    raise NotADirectory()

        return recheck

    @_deferred
    def make_directory(self, path: VirtualPath) -> None:
        with self._entry(path, creating=True) as found:
            os.mkdir(found.name, dir_fd=found.parent)

    @_deferred
    def remove_directory(self, path: VirtualPath) -> None:
        with self._entry(path) as found:
            if stat_module.S_ISLNK(found.lstat().st_mode):
                raise NotADirectory()
            os.rmdir(found.name, dir_fd=found.parent)

    @_deferred
    def remove_file(self, path: VirtualPath) -> None:
        with self._entry(path) as found:
            if stat_module.S_ISDIR(found.lstat().st_mode):
                raise IsADirectory()
            os.unlink(found.name, dir_fd=found.parent)

    @_deferred
    def rename(self, source: VirtualPath, destination: VirtualPath) -> None:
        with self._entry(source) as old:
            moving_directory = stat_module.S_ISDIR(old.lstat().st_mode)
            with self._entry(destination, creating=True) as new:
                if destination == source:
                    return
                if moving_directory and destination.is_within(source):
                    raise InvalidPath("Cannot move a directory into itself.")
                try:
                    replaced: int | None = new.lstat().st_mode
                except FileNotFoundError:
                    replaced = None
                if replaced is not None and stat_module.S_ISDIR(replaced):
                    raise AlreadyExists("Destination is a directory.")
                if moving_directory and replaced is not None:
                    raise AlreadyExists("Destination exists.")
                os.rename(old.name, new.name, src_dir_fd=old.parent, dst_dir_fd=new.parent)

    @_deferred
    def open_read(self, path: VirtualPath, offset: int) -> IReadFile:
        check_offset(offset)
        with self._existing(path) as found:
            handle = os.fdopen(_open_regular(found), "rb", buffering=0)
        try:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(offset)
        except BaseException:
            handle.close()
            raise
        return _FileReader(handle, offset, max(size - offset, 0), self._reactor)

    @_deferred
    def set_mtime(self, path: VirtualPath, mtime: float) -> None:
        with self._existing_entry(path) as found:
            try:
                times = (found.lstat().st_atime, mtime)
                # Not through a link: one swapped in since the walk gets the change.
                os.utime(found.name, times, dir_fd=found.parent, follow_symlinks=False)
            except (OverflowError, ValueError):
                raise CommandSyntaxError("Time out of range.") from None

    @_deferred
    def set_permissions(self, path: VirtualPath, mode: int) -> None:
        check_permissions(mode)
        with self._existing_entry(path) as found:
            if not _PROC_FD:  # pragma: no cover - Linux has /proc
                fd = found.open(os.O_RDONLY | os.O_NONBLOCK)
                try:
                    os.fchmod(fd, mode)
                finally:
                    os.close(fd)
                return
            # An O_PATH descriptor needs no permission to open, and the
            # kernel changes exactly the file it holds.
            fd = found.open(os.O_PATH)
            try:
                if stat_module.S_ISLNK(os.fstat(fd).st_mode):
                    raise PermissionDenied()
                os.chmod(f"/proc/self/fd/{fd}", mode)
            finally:
                os.close(fd)

    def _existing_entry(self, path: VirtualPath) -> Found:
        """An entry (not the root) whose metadata may change; links are followed."""
        if path.is_root:
            raise PermissionDenied("Cannot change the root directory.")
        found = self._walk(path.segments)  # a link out on the way is refused, never looked beyond
        try:
            found.lstat()  # ENOENT, ENOTDIR as FTP errors
        except BaseException:
            found.close()
            raise
        return found

    def open_write(self, path: VirtualPath, mode: WriteMode, offset: int) -> Deferred[IWriteFile]:
        try:
            check_offset(offset)
            if path.is_root:
                raise PermissionDenied("Cannot change the root directory.")
            if path.name.startswith(TEMPORARY_PREFIX):
                raise InvalidPath()
            if any(name.startswith(TEMPORARY_PREFIX) for name in path.segments):
                raise FileNotFound()
        except FTPError as error:
            return fail(error)
        return Deferred.fromCoroutine(self._open_write(path, mode, offset))

    async def _open_write(self, path: VirtualPath, mode: WriteMode, offset: int) -> IWriteFile:
        shown = os.path.join(self.root, *path.segments)
        stopping = threading.Event()
        try:
            upload = await _settled(
                self._run(self._create, path, shown, mode, offset, stopping, stopping=stopping),
                self._orphaned_upload,
                stopping,
            )
        except OSError as error:
            if error.errno not in _PATH_ERRORS:
                _log.warn("Cannot start the upload to {target}: {why}", target=shown, why=_describe(error))
            raise storage_error(error) from None
        return _FileWriter(upload, self._run, self._reactor)

    def _orphaned_upload(self, result: _Upload | Failure) -> None:
        """Release the temporary file of an C{open_write} that was cancelled."""
        if not isinstance(result, Failure):
            self._run(result.release).addCallback(_log_kept)

    def _create(
        self, path: VirtualPath, shown: str, mode: WriteMode, offset: int, stopping: threading.Event
    ) -> _Upload:
        """
        Make the temporary file for an upload to C{path} (in a worker
        thread), next to the file it replaces: a link inside the root is
        followed; the directory stays open until the upload ends.
        """
        with self._walk(path.segments) as found:
            if found.name == "." or found.name.startswith(TEMPORARY_PREFIX):
                raise IsADirectory() if found.name == "." else InvalidPath()
            directory = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=found.parent)
        upload = _Upload(-1, directory, temporary_name(self.node), found.name, shown, self._in_place(path))
        try:
            # 0o666 lets the kernel apply the umask: no process-wide umask juggling
            # in a thread. An existing target's permissions are copied below.
            upload.fd = os.open(
                upload.temporary,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o666,
                dir_fd=directory,
            )
            _prepare(upload, mode, offset, stopping)
        except BaseException:
            upload.release()
            raise
        return upload


def _ignore(_: object) -> None:
    """Nothing to release: what a cancelled job made goes with it."""


def _log_kept(kept: tuple[str, OSError] | None) -> None:
    """Log a temporary file that could not be removed (it waits for the next start-up clean-up)."""
    if kept is not None:
        temporary, error = kept
        _log.warn(
            "Could not remove the temporary file {temporary} ({why}); the next start-up clean-up removes it",
            temporary=temporary,
            why=_describe(error),
        )


def _describe(error: BaseException | None) -> str:
    """An error in a few words: C{No space left on device} rather than a repr."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _prepare(upload: _Upload, mode: WriteMode, offset: int, stopping: threading.Event) -> None:
    """Give the temporary file the target's permissions and, to resume or append, its old bytes."""
    fd = upload.fd
    try:
        old = _open_regular(Found(upload.directory, upload.target))
    except FileNotFoundError:
        if mode is WriteMode.OFFSET and offset:
            os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
        return
    try:
        os.fchmod(fd, stat_module.S_IMODE(os.fstat(old).st_mode))
        if mode is WriteMode.TRUNCATE:
            return
        limit = None if mode is WriteMode.APPEND else offset
        copied = _copy(old, fd, limit, stopping)
        if limit is not None and copied < limit:
            os.ftruncate(fd, limit)
            os.lseek(fd, limit, os.SEEK_SET)
    finally:
        os.close(old)


def _copy(source: int, target: int, limit: int | None, stopping: threading.Event) -> int:
    """
    Copy C{source} into C{target} from their positions, C{limit} bytes or to
    the end: in the kernel (a reflink where the file system shares blocks),
    in chunks, stopping early once C{stopping} is set.

    @return: the bytes copied.
    """
    copied = 0
    in_kernel = hasattr(os, "copy_file_range")
    while limit is None or copied < limit:
        if stopping.is_set():
            raise OSError(errno.ECANCELED, os.strerror(errno.ECANCELED))
        if in_kernel:
            want = _COPY_CHUNK if limit is None else min(_COPY_CHUNK, limit - copied)
            try:
                count = os.copy_file_range(source, target, want)
            except OSError as error:
                if error.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF):
                    raise
                in_kernel = False  # both positions are where the copy stopped: go on by hand
                continue
        else:
            want = CHUNK_SIZE if limit is None else min(CHUNK_SIZE, limit - copied)
            chunk = os.read(source, want)
            view = memoryview(chunk)
            while view:
                view = view[os.write(target, view) :]
            count = len(chunk)
        if not count:
            break
        copied += count
    return copied


@implementer(IStorageFactory, IStorageCleanup)
class FileStorageFactory(LazyReactor):
    """
    Gives each session a L{FileStorage} on C{root}, narrowed to the session's
    own root directory when the authenticator names one.

    @param node: this server's node name, written in the names of upload
        temporaries; this host's name when omitted. Servers that share a
        directory tree need names of their own.
    @ivar sweep_limit: the most directory entries L{clean_up} looks at.
    """

    def __init__(self, root: str, reactor: Any = None, node: str | None = None, threads: int = DEFAULT_THREADS) -> None:
        self.root = os.path.realpath(root)
        self._reactor = reactor
        self.node = default_node() if node is None else check_node(node)
        self.sweep_limit = SWEEP_LIMIT
        self._whole: FileStorage | None = None
        self._threads = threads
        self._pool: StoragePool | None = None

    @property
    def pool(self) -> StoragePool:
        """The threads of this factory's storages: apart from the reactor's, which logins use."""
        if self._pool is None:
            self._pool = StoragePool(self.reactor, self._threads)
        return self._pool

    def __repr__(self) -> str:
        return f"file:{self.root}"

    def storage_for(self, session: Session) -> Deferred[IStorage]:
        if self._whole is None:
            # One for every session: it holds nothing of a session's own.
            self._whole = FileStorage(self.root, self.reactor, self.node, self.pool)
        base = self._whole
        if session.root is not None and not session.root.is_root:
            try:
                local = base._home(session.root)
            except FTPError as error:
                return fail(error)
            except OSError as error:
                missing = error.errno in _PATH_ERRORS
                return fail(FileNotFound("Home directory does not exist.") if missing else storage_error(error))
            base = FileStorage(local, self.reactor, self.node, self.pool)
        return succeed(for_session(base, session))

    def clean_up(self, node: str | None, older_than: float | None) -> Deferred[CleanupReport]:
        """
        Remove the upload temporaries that crashed servers left anywhere
        under the root: those of C{node}, and any not written to for
        C{older_than} seconds (see L{exftp._cleanup.judge}).

        The tree is walked in a worker thread, without following links, at
        most L{sweep_limit} entries; cancelling stops the walk.
        """
        stopping = threading.Event()
        walking = self.pool.run(sweep, self.root, node, older_than, stopping, self.sweep_limit)
        result: Deferred[CleanupReport] = Deferred(lambda _: stopping.set())
        walking.chainDeferred(result)
        return result


def sweep(
    root: str, node: str | None, older_than: float | None, stopping: threading.Event, limit: int = SWEEP_LIMIT
) -> CleanupReport:
    """
    Remove upload temporaries under C{root} that L{judge} lets go (in a worker thread).

    Only regular files whose names start with L{TEMPORARY_PREFIX} are
    removed; links are not followed, and directories with that prefix are
    left alone (exftp makes none).

    @param stopping: set to stop the walk early.
    @param limit: the most directory entries to look at.
    """
    root = os.path.realpath(root)
    report = CleanupReport()
    now = time.time()
    pending: list[tuple[str, ...]] = [()]
    seen = 0
    while pending:
        if stopping.is_set():
            report.complete = False
            break
        below = pending.pop()
        try:
            # By descriptors, never following a link: a directory swapped for
            # one meanwhile cannot lead the sweep outside the root.
            directory = _open_below(root, below)
        except OSError:
            continue  # gone meanwhile, or not readable: nothing of ours can be in it
        try:
            with os.scandir(directory) as scan:
                for entry in scan:
                    seen += 1
                    if seen > limit:
                        report.complete = False
                        return report
                    try:
                        if entry.name.startswith(TEMPORARY_PREFIX):
                            if entry.is_file(follow_symlinks=False):
                                _sweep_one(directory, entry, below, node, older_than, now, report)
                        elif entry.is_dir(follow_symlinks=False):
                            pending.append((*below, entry.name))
                    except OSError:
                        continue
        finally:
            os.close(directory)
    return report


def _open_below(root: str, names: tuple[str, ...]) -> int:
    """A readable descriptor of the directory C{names} below C{root}, no link followed on the way."""
    fd = open_root(root)
    try:
        for name in names:
            following = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = following
        return os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)


def _sweep_one(
    directory: int,
    entry: os.DirEntry[str],
    below: tuple[str, ...],
    node: str | None,
    older_than: float | None,
    now: float,
    report: CleanupReport,
) -> None:
    """Remove one temporary file if L{judge} lets it go."""
    age = now - entry.stat(follow_symlinks=False).st_mtime
    remove, why = judge(temporary_owner(entry.name), age, node, older_than)
    name = os.path.join(*below, entry.name)
    if not remove:
        if why is not None:
            report.kept.append(f"{name} ({why})")
        return
    try:
        os.unlink(entry.name, dir_fd=directory)
    except FileNotFoundError:
        return
    except OSError as error:
        report.failed.append(f"{name} ({_describe(error)})")
        return
    report.removed.append(f"{name} ({why})")
