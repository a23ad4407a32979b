"""
The S3 storage against a real S3 endpoint: moto's server with signature
checking on (see L{_moto}), and boto3 as the independent view of what landed.

Also: retries and signing on an in-memory HTTP stub with a fake clock, the
URL and C{--storage s3:} specification parsers, and whole FTP sessions on
the S3 storage through L{exftp.FTPFactory} and ftplib.
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any, TypeVar

import _moto
from botocore.credentials import Credentials, RefreshableCredentials
from botocore.exceptions import ClientError
from test_storage_contract import P, RecordingConsumer, StorageContractMixin, turns
from treq.client import HTTPClient
from treq.testing import RequestTraversalAgent
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface import implementer
from zope.interface.verify import verifyObject

from exftp import (
    DirectoryNotEmpty,
    FileKind,
    FileNotFound,
    FTPError,
    FTPFactory,
    IsADirectory,
    IStorage,
    IStorageFactory,
    IStorageMetadata,
    IWriteFile,
    ParameterNotSupported,
    PermissionDenied,
    Session,
    StorageUnavailable,
    VirtualPath,
    WriteMode,
)
from exftp.storage._s3 import (
    S3Config,
    S3Storage,
    S3StorageFactory,
    S3Upload,
    parse_spec,
    storage_factory_from_spec,
)
from exftp.storage._s3client import MiB, S3Client, S3Error
from exftp.storage._s3signing import CredentialSource
from exftp.testing import MemoryAuthenticator

_T = TypeVar("_T")

KiB = 1024
#: The size of the writes of the stand-in data connection (a TCP read is at most this).
CHUNK = 64 * KiB
#: How long anything that should happen soon may take.
DEADLINE = 30.0


def block(index: int) -> bytes:
    """A 64 KiB block of test data that differs for every index."""
    return hashlib.sha256(index.to_bytes(8, "big")).digest() * (CHUNK // 32)


def blocks_digest(count: int, tail: int = 0) -> str:
    digest = hashlib.sha256()
    for index in range(count):
        digest.update(block(index))
    digest.update(block(count)[:tail])
    return digest.hexdigest()


async def wait_until(predicate: Callable[[], object], what: str) -> None:
    """Let the reactor run until C{predicate} holds (polling, never a fixed sleep)."""
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.01, lambda: None)


@implementer(IPushProducer)
class DataConnection:
    """
    Stands in for the FTP data connection: writes 64 KiB blocks into an
    upload while it is not paused, a few per reactor turn.
    """

    def __init__(self, upload: IWriteFile) -> None:
        self.upload = upload
        self.index = 0
        self.paused = False
        self.pauses = 0
        self.stopped = False
        self._target = 0
        self._tail = 0
        self._sending: Deferred[None] | None = None
        upload.registerProducer(self, True)

    def send(self, count: int, tail: int = 0) -> Deferred[None]:
        """Send blocks up to number C{count} (and C{tail} bytes of the next); fires when all are written."""
        self._target, self._tail = count, tail
        self._sending = Deferred()
        reactor.callLater(0, self._produce)
        return self._sending

    def _produce(self) -> None:
        for _ in range(8):
            if self.paused or self.stopped or self._sending is None:
                return
            if self.index >= self._target:
                if self._tail:
                    self.upload.write(block(self.index)[: self._tail])
                    self._tail = 0
                sending, self._sending = self._sending, None
                sending.callback(None)
                return
            self.upload.write(block(self.index))
            self.index += 1
        reactor.callLater(0, self._produce)

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False
        reactor.callLater(0, self._produce)

    def stopProducing(self) -> None:
        self.stopped = True


class PartGate:
    """Holds back each part of the uploads of a client until the test releases its number."""

    def __init__(self, client: S3Client) -> None:
        self._real = client.upload_part
        self._gates: dict[int, Deferred[None]] = {}
        self._all = False
        client.upload_part = self._upload_part  # type: ignore[method-assign]

    def _gate(self, number: int) -> Deferred[None]:
        return self._gates.setdefault(number, Deferred())

    async def _upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        if not self._all:
            await self._gate(number)
        return await self._real(key, upload_id, number, data)

    def release(self, *numbers: int) -> None:
        for number in numbers:
            gate = self._gate(number)
            if not gate.called:
                gate.callback(None)

    def release_all(self) -> None:
        self._all = True
        self.release(*self._gates)


class MotoMixin:
    """A fresh bucket on the shared moto server, and an S3 storage factory on it."""

    part_size = 5 * MiB
    parts_in_flight = 2

    def setUp(self) -> None:
        self.moto = _moto.shared_server()
        self.bucket = self.moto.new_bucket()
        self.s3 = self.moto.s3()
        self.factory = self.make_s3_factory()
        super().setUp()  # type: ignore[misc]

    def make_s3_factory(self, credentials: Any = "moto", **options: Any) -> S3StorageFactory:
        settings: dict[str, Any] = {
            "region": _moto.REGION,
            "endpoint_url": self.moto.endpoint,
            "part_size": self.part_size,
            "parts_in_flight": self.parts_in_flight,
            "retries": 1,
            **options,
        }
        if credentials == "moto":
            credentials = Credentials(self.moto.access_key, self.moto.secret_key)
        factory = S3StorageFactory(
            S3Config(self.bucket, **settings), reactor=reactor, credentials=credentials, environ={}
        )
        factory.client.backoff_base = 0.01
        self.addCleanup(factory.close)  # type: ignore[attr-defined]
        return factory

    def s3_storage(self, factory: S3StorageFactory | None = None, prefix: str = "") -> S3Storage:
        return S3Storage((factory or self.factory).client, prefix, reactor)

    async def assertFails(self, deferred: Deferred[Any], error: type[FTPError]) -> FTPError:
        try:
            result = await deferred
        except FTPError as caught:
            self.assertIsInstance(caught, error)  # type: ignore[attr-defined]
            return caught
        raise self.failureException(f"{error.__name__} expected, got {result!r}")  # type: ignore[attr-defined]

    # Looking behind the storage's back

    def put(self, key: str, data: bytes = b"") -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)

    def get(self, key: str) -> bytes | None:
        try:
            body: bytes = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError:
            return None
        return body

    def head(self, key: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError:
            return None
        return found

    def keys(self) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket)
        return [item["Key"] for item in listed.get("Contents", [])]

    def open_uploads(self) -> list[dict[str, Any]]:
        uploads: list[dict[str, Any]] = self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        return uploads


class S3StorageContractTests(MotoMixin, StorageContractMixin, TestCase):
    """The storage contract, for L{S3Storage} on moto."""

    def make_storage(self) -> IStorage:
        return self.s3_storage()

    def make_factory(self) -> IStorageFactory:
        return self.factory

    def seed_file(self, path: str, data: bytes) -> None:
        self.put(path.lstrip("/"), data)

    def seed_directory(self, path: str) -> None:
        self.put(path.strip("/") + "/")

    def content(self, path: str) -> bytes | None:
        return self.get(path.lstrip("/"))

    async def wait_for_first_write(self, consumer: RecordingConsumer) -> None:
        await wait_until(lambda: consumer.writes >= 1, "the first bytes")


class S3SemanticsTests(MotoMixin, TestCase):
    """What S3 makes hard: exact names, directories, listings, renames."""

    def setUp(self) -> None:
        super().setUp()
        self.storage = self.s3_storage()

    async def names(self, path: str = "/") -> list[tuple[str, FileKind]]:
        return [(info.name, info.kind) for info in await self.storage.list(P(path))]

    async def test_stat_is_exact_never_a_prefix_match(self) -> None:
        self.put("a.txt", b"12345")
        self.put("ab/c", b"x")
        self.put("a b", b"y")
        for missing in ("/a", "/a.tx", "/a.txt.", "/ab/"[:-1] + "c"):
            await self.assertFails(self.storage.stat(P(missing)), FileNotFound)
        await self.assertFails(self.storage.open_read(P("/a"), 0), FileNotFound)
        await self.assertFails(self.storage.remove_file(P("/a")), FileNotFound)
        await self.assertFails(self.storage.list(P("/a")), FileNotFound)
        await self.assertFails(self.storage.rename(P("/a"), P("/z")), FileNotFound)
        assert (await self.storage.stat(P("/a.txt"))).size == 5
        assert (await self.storage.stat(P("/ab"))).kind is FileKind.DIRECTORY
        assert (await self.storage.stat(P("/a b"))).size == 1
        assert sorted(self.keys()) == ["a b", "a.txt", "ab/c"]

    async def test_make_directory_writes_a_zero_byte_marker(self) -> None:
        await self.storage.make_directory(P("/d"))
        marker = self.head("d/")
        assert marker is not None and marker["ContentLength"] == 0
        assert marker["Metadata"] == {"exftp-node": self.factory.config.node}
        assert self.keys() == ["d/"]
        # A new session (a new storage) still sees it: the marker persists.
        assert (await self.s3_storage().stat(P("/d"))).is_directory

    async def test_listing_merges_markers_and_prefixes(self) -> None:
        for key in ("d/", "d/x", "d/sub/", "d/sub/y", "d/implicit/z", "top"):
            self.put(key, b"data" if not key.endswith("/") else b"")
        assert await self.names() == [("d", FileKind.DIRECTORY), ("top", FileKind.FILE)]
        assert await self.names("/d") == [
            ("implicit", FileKind.DIRECTORY),
            ("sub", FileKind.DIRECTORY),
            ("x", FileKind.FILE),
        ]
        assert await self.names("/d/sub") == [("y", FileKind.FILE)]
        assert await self.names("/d/implicit") == [("z", FileKind.FILE)]

    async def test_listing_pages_through_continuation_tokens(self) -> None:
        expected = []
        for index in range(7):
            self.put(f"f{index}", b"x")
            self.put(f"d{index}/inner", b"y")
            expected += [(f"d{index}", FileKind.DIRECTORY), (f"f{index}", FileKind.FILE)]
        self.put("d0/", b"")
        self.storage.list_page_size = 3
        assert await self.names() == sorted(expected)

    async def test_list_pages_streams_one_listing_page_at_a_time(self) -> None:
        from exftp._interfaces import IPagedListing

        assert IPagedListing.providedBy(self.storage)
        for index in range(10):
            self.put(f"big/f{index:02d}", b"x")
        self.storage.list_page_size = 4
        pages = [[info.name for info in page] async for page in self.storage.list_pages(P("/big"))]
        assert pages == [["f00", "f01", "f02", "f03"], ["f04", "f05", "f06", "f07"], ["f08", "f09"]]
        try:
            async for _page in self.storage.list_pages(P("/missing")):
                pass
        except FileNotFound:
            pass
        else:
            raise AssertionError("listing a missing directory did not fail")

    async def test_listing_skips_keys_that_are_not_ftp_names(self) -> None:
        for key in ("odd//x", "dir/./y", "dir/fine"):
            self.put(key, b"x")
        assert await self.names() == [("dir", FileKind.DIRECTORY), ("odd", FileKind.DIRECTORY)]
        assert await self.names("/dir") == [("fine", FileKind.FILE)]
        assert await self.names("/odd") == []

    async def test_removing_the_last_file_keeps_the_directory(self) -> None:
        self.put("d/only", b"x")
        await self.storage.remove_file(P("/d/only"))
        assert self.keys() == ["d/"]
        assert (await self.storage.stat(P("/d"))).is_directory
        await self.storage.remove_directory(P("/d"))
        assert self.keys() == []

    async def test_remove_directory_only_when_empty(self) -> None:
        self.put("d/", b"")
        self.put("d/sub/", b"")
        await self.assertFails(self.storage.remove_directory(P("/d")), DirectoryNotEmpty)
        await self.storage.remove_directory(P("/d/sub"))
        assert self.keys() == ["d/"]
        await self.storage.remove_directory(P("/d"))
        assert self.keys() == []

    async def test_delete_is_exact_and_fails_when_absent(self) -> None:
        self.put("a.txt", b"x")
        await self.assertFails(self.storage.remove_file(P("/a")), FileNotFound)
        await self.storage.remove_file(P("/a.txt"))
        await self.assertFails(self.storage.remove_file(P("/a.txt")), FileNotFound)
        assert self.keys() == []

    async def test_rename_directory_moves_every_object_and_marker(self) -> None:
        for key in ("d/", "d/a", "d/sub/", "d/sub/b", "d/implicit/c", "other"):
            self.put(key, key.encode())
        await self.storage.rename(P("/d"), P("/e"))
        assert sorted(self.keys()) == ["e/", "e/a", "e/implicit/c", "e/sub/", "e/sub/b", "other"]
        assert self.get("e/sub/b") == b"d/sub/b"

    async def test_rename_directory_beyond_the_limit_is_refused(self) -> None:
        storage = self.s3_storage(self.make_s3_factory(rename_limit=2))
        for key in ("d/a", "d/b", "d/c"):
            self.put(key, b"x")
        await self.assertFails(storage.rename(P("/d"), P("/e")), PermissionDenied)
        assert sorted(self.keys()) == ["d/a", "d/b", "d/c"]

    async def test_rename_of_a_big_file_copies_part_by_part(self) -> None:
        data = os.urandom(12 * MiB)
        self.put("big", data)
        self.storage.copy_limit = 5 * MiB
        self.storage.copy_part_size = 10 * MiB
        await self.storage.rename(P("/big"), P("/moved"))
        assert self.keys() == ["moved"]
        assert self.get("moved") == data
        head = self.head("moved")
        assert head is not None and head["ETag"].endswith('-2"')
        assert self.open_uploads() == []

    async def test_rename_keeps_metadata(self) -> None:
        upload = await self.storage.open_write(P("/f"), WriteMode.TRUNCATE, 0)
        upload.write(b"data")
        await upload.finish()
        await self.storage.rename(P("/f"), P("/g"))
        moved = self.head("g")
        assert moved is not None and moved["Metadata"] == {"exftp-node": self.factory.config.node}

    async def test_modification_time_is_kept_as_metadata(self) -> None:
        self.put("f", b"content")
        self.put("d/", b"")
        self.assertTrue(verifyObject(IStorageMetadata, self.storage))
        await self.storage.set_mtime(P("/f"), 1234567890.5)
        assert (await self.storage.stat(P("/f"))).mtime == 1234567890.5
        head = self.head("f")
        assert head is not None and head["Metadata"]["mtime"] == "1234567890.500"
        assert self.get("f") == b"content"
        await self.storage.rename(P("/f"), P("/g"))
        assert (await self.storage.stat(P("/g"))).mtime == 1234567890.5
        await self.assertFails(self.storage.set_mtime(P("/missing"), 0), FileNotFound)
        await self.assertFails(self.storage.set_mtime(P("/d"), 0), PermissionDenied)
        await self.assertFails(self.storage.set_permissions(P("/g"), 0o600), ParameterNotSupported)

    def last_modified(self, key: str) -> float:
        head = self.head(key)
        assert head is not None
        return float(head["LastModified"].timestamp())

    async def listed(self, path: str = "/") -> dict[str, float]:
        return {info.name: info.mtime for info in await self.storage.list(P(path))}

    async def test_listings_show_the_mfmt_time(self) -> None:
        """LIST and MLSD show what MDTM shows, from a note per file: no HEAD per entry."""
        self.put("d/f", b"content")
        self.put("d/g", b"other")
        await self.storage.set_mtime(P("/d/f"), 1234567890.5)
        heads = []
        real_head = self.storage._client.head

        async def head(key: str) -> Any:
            heads.append(key)
            return await real_head(key)

        self.storage._client.head = head  # type: ignore[method-assign]
        listed = await self.listed("/d")
        assert listed == {"f": 1234567890.5, "g": self.last_modified("d/g")}
        assert heads == []
        view = S3Storage(self.factory.client, "d/", reactor)  # a session rooted at /d sees the same
        assert {info.name: info.mtime for info in await view.list(VirtualPath.root())} == listed
        self.storage._client.head = real_head  # type: ignore[method-assign]
        assert (await self.storage.stat(P("/d/f"))).mtime == 1234567890.5
        # A second MFMT replaces the note; the notes are never listed.
        await self.storage.set_mtime(P("/d/f"), 1600000000.0)
        assert (await self.listed("/d"))["f"] == 1600000000.0
        assert [key.rsplit("@", 3)[0] for key in self.keys() if key.startswith(".exftp-upload-mtimes/")] == [
            ".exftp-upload-mtimes/d/f"
        ]
        # A rename carries the time, and leaves no note behind.
        await self.storage.rename(P("/d/f"), P("/d/h"))
        assert await self.listed("/d") == {"g": self.last_modified("d/g"), "h": 1600000000.0}
        assert [key for key in self.keys() if key.startswith(".exftp-upload-mtimes/d/f@")] == []

    async def test_an_upload_over_a_file_with_a_mfmt_time_shows_its_own(self) -> None:
        self.put("f", b"old")
        await self.storage.set_mtime(P("/f"), 1234567890.0)
        upload = await self.storage.open_write(P("/f"), WriteMode.TRUNCATE, 0)
        upload.write(b"new content")
        await upload.finish()
        assert await self.listed() == {"f": self.last_modified("f")}
        assert (await self.storage.stat(P("/f"))).mtime == self.last_modified("f")
        # Written behind exftp's back, with the same content: a new LastModified still tells.
        await self.storage.set_mtime(P("/f"), 1234567890.0)
        await deferLater(reactor, 1.1, lambda: None)
        self.put("f", b"new content")
        assert await self.listed() == {"f": self.last_modified("f")}

    async def test_dele_and_rmd_remove_the_notes(self) -> None:
        self.put("d/", b"")
        self.put("d/f", b"x")
        await self.storage.set_mtime(P("/d/f"), 1234567890.0)
        with self.assertRaises(DirectoryNotEmpty):
            await self.storage.remove_directory(P("/d"))
        await self.storage.remove_file(P("/d/f"))
        assert self.keys() == ["d/"]
        self.put("d/g", b"y")
        await self.storage.set_mtime(P("/d/g"), 1234567890.0)
        self.s3.delete_object(Bucket=self.bucket, Key="d/g")  # behind exftp's back: the note stays
        await self.storage.remove_directory(P("/d"))
        assert self.keys() == []

    async def test_directories_show_their_marker_time_else_their_newest_object(self) -> None:
        await self.storage.make_directory(P("/made"))
        self.put("implicit/a", b"a")
        self.put("implicit/deeper/b", b"b")
        marker, newest = self.last_modified("made/"), self.last_modified("implicit/deeper/b")
        assert marker > 0 and newest > 0
        assert (await self.storage.stat(P("/made"))).mtime == marker
        assert (await self.storage.stat(P("/implicit"))).mtime == max(newest, self.last_modified("implicit/a"))
        listed = await self.listed()
        assert listed == {"made": marker, "implicit": max(newest, self.last_modified("implicit/a"))}
        assert (await self.storage.stat(VirtualPath.root())).mtime > 0

    async def test_session_prefix_isolates_users(self) -> None:
        factory = self.make_s3_factory(prefix="/users/")
        self.put("users/alice/", b"")
        self.put("users/bob/secret", b"bob's")
        self.put("users/alice/a.txt", b"alice's")
        alice = await factory.storage_for(Session("alice", root=P("/alice")))
        assert [info.name for info in await alice.list(VirtualPath.root())] == ["a.txt"]
        await alice.make_directory(P("/new"))
        await self.assertFails(alice.stat(P("/bob")), FileNotFound)
        whole = await factory.storage_for(Session("admin"))
        assert sorted(info.name for info in await whole.list(VirtualPath.root())) == ["alice", "bob"]
        assert "users/alice/new/" in self.keys()


class S3UploadTests(MotoMixin, TestCase):
    """Uploads: single PUT, multipart with bounded memory, abort, append."""

    def setUp(self) -> None:
        super().setUp()
        self.storage = self.s3_storage()

    async def test_small_upload_is_one_put(self) -> None:
        upload = await self.storage.open_write(P("/small"), WriteMode.TRUNCATE, 0)
        self.assertTrue(verifyObject(IWriteFile, upload))
        DataConnection(upload)
        upload.write(b"x" * (self.part_size - 1))
        await upload.finish()
        head = self.head("small")
        assert head is not None and "-" not in head["ETag"]
        assert head["Metadata"] == {"exftp-node": self.factory.config.node}
        assert self.open_uploads() == []

    async def test_parts_are_cut_from_the_written_chunks(self) -> None:
        """
        Writes of 3 MiB + 1 byte straddle the 5 MiB parts: every part but the
        last is exactly 5 MiB, the written chunks reach the part unjoined
        (only those across a boundary are cut), and the object is the bytes
        written; small writes (here memoryviews) are gathered into 64 KiB chunks.
        """
        sent: list[list[int]] = []
        real = self.factory.client.upload_part

        async def upload_part(key: str, upload_id: str, number: int, data: Sequence[bytes]) -> str:
            sent.append([len(chunk) for chunk in data])
            return await real(key, upload_id, number, data)

        self.factory.client.upload_part = upload_part  # type: ignore[method-assign]
        upload = await self.storage.open_write(P("/cut"), WriteMode.TRUNCATE, 0)
        DataConnection(upload)
        writes = [bytes([index]) * (3 * MiB + 1) for index in range(4)]
        for data in writes:
            upload.write(data)
        await upload.finish()
        assert sent == [[3 * MiB + 1, 2 * MiB - 1], [MiB + 2, 3 * MiB + 1, MiB - 3], [2 * MiB + 4]]
        assert self.get("cut") == b"".join(writes)
        assert upload.held == 0

        # Small writes are gathered into 64 KiB chunks (a bytes object per 4 KiB would cost more).
        sent.clear()
        upload = await self.storage.open_write(P("/small-writes"), WriteMode.TRUNCATE, 0)
        DataConnection(upload)
        small = [bytes([index % 256]) * 4096 for index in range(5 * 256 + 1)]
        for data in small:
            upload.write(memoryview(data))
        await upload.finish()
        assert sent == [[64 * 1024] * 80, [4096]]
        assert self.get("small-writes") == b"".join(small)

    async def test_multipart_upload_with_bounded_memory(self) -> None:
        """
        28 MiB + 100 bytes in 5 MiB parts, two in flight: the data connection
        is paused at the bound, the upload never holds more than
        C{part_size * (parts_in_flight + 1)} plus the one write that arrived
        while pausing, and parts are in S3 while the data still arrives.
        """
        gate = PartGate(self.factory.client)
        self.addCleanup(gate.release_all)
        upload = await self.storage.open_write(P("/big"), WriteMode.TRUNCATE, 0)
        assert isinstance(upload, S3Upload)
        connection = DataConnection(upload)
        held: list[int] = []
        real_write = upload.write

        def write(data: bytes) -> None:
            real_write(data)
            held.append(upload.held)

        upload.write = write  # type: ignore[method-assign]
        bound = self.part_size * (self.parts_in_flight + 1)
        total_blocks = 28 * 16
        sent = connection.send(total_blocks, tail=100)

        # Parts 1 and 2 are held back: the data connection must stop at the bound.
        await wait_until(lambda: connection.paused, "the data connection to be paused")
        assert bound <= upload.held <= bound + CHUNK, upload.held
        assert self.head("big") is None and self.parts_in_s3("big") == 0

        # Let two parts through: they land while the client still has bytes to send.
        gate.release(1, 2)
        await wait_until(lambda: upload.parts_sent == 2 and connection.paused, "two parts, then the bound again")
        assert self.parts_in_s3("big") == 2
        assert connection.index < total_blocks, "the client should still be sending"
        assert self.head("big") is None, "visible before finish"

        gate.release_all()
        await sent
        upload.unregisterProducer()
        await upload.finish()

        assert max(held) <= bound + CHUNK, (max(held), bound)
        assert upload.peak <= bound + CHUNK
        assert connection.pauses >= 2
        assert upload.held == 0
        head = self.head("big")
        assert head is not None and head["ETag"].endswith('-6"')
        assert head["ContentLength"] == 28 * MiB + 100
        assert head["Metadata"] == {"exftp-node": self.factory.config.node}
        body = self.get("big")
        assert body is not None and hashlib.sha256(body).hexdigest() == blocks_digest(total_blocks, 100)
        assert self.open_uploads() == []

    def parts_in_s3(self, key: str) -> int:
        for upload in self.open_uploads():
            if upload["Key"] == key:
                listed = self.s3.list_parts(Bucket=self.bucket, Key=key, UploadId=upload["UploadId"])
                return len(listed.get("Parts", []))
        return 0

    async def test_abort_leaves_no_object_and_no_open_upload(self) -> None:
        self.put("keep", b"old content")
        for key in ("new", "keep"):
            upload = await self.storage.open_write(P("/" + key), WriteMode.TRUNCATE, 0)
            assert isinstance(upload, S3Upload)
            connection = DataConnection(upload)
            await connection.send(11 * 16)
            await wait_until(lambda upload=upload: upload.parts_sent >= 1, "a part in S3")  # type: ignore[misc]
            assert len(self.open_uploads()) == 1
            await upload.abort()
            await upload.abort()
            upload.write(b"ignored")
            assert self.open_uploads() == []
            await self.assertFails(upload.finish(), StorageUnavailable)
        assert self.keys() == ["keep"]
        assert self.get("keep") == b"old content"

    async def test_failed_part_stops_the_data_connection_and_aborts(self) -> None:
        upload = await self.storage.open_write(P("/lost"), WriteMode.TRUNCATE, 0)
        assert isinstance(upload, S3Upload)
        connection = DataConnection(upload)
        await connection.send(6 * 16)
        await wait_until(lambda: upload.parts_sent >= 1, "a part in S3")
        (open_upload,) = self.open_uploads()
        self.s3.abort_multipart_upload(Bucket=self.bucket, Key="lost", UploadId=open_upload["UploadId"])
        connection.send(12 * 16)
        await wait_until(lambda: connection.stopped, "the data connection to be stopped")
        await self.assertFails(upload.finish(), StorageUnavailable)
        assert self.open_uploads() == []
        assert self.keys() == []

    async def test_append_copies_a_big_object_on_the_s3_side(self) -> None:
        base = os.urandom(6 * MiB + 7)
        self.put("log", base)
        upload = await self.storage.open_write(P("/log"), WriteMode.APPEND, 0)
        upload.write(b"appended")
        assert isinstance(upload, S3Upload) and upload.held == len(b"appended")
        await upload.finish()
        assert self.get("log") == base + b"appended"
        head = self.head("log")
        assert head is not None and head["ETag"].endswith('-2"')

    async def test_append_to_a_small_object_sends_it_again(self) -> None:
        self.put("log", b"line 1\n")
        upload = await self.storage.open_write(P("/log"), WriteMode.APPEND, 0)
        upload.write(b"line 2\n")
        await upload.finish()
        assert self.get("log") == b"line 1\nline 2\n"
        head = self.head("log")
        assert head is not None and "-" not in head["ETag"]

    async def test_restart_offset_in_a_big_object(self) -> None:
        base = os.urandom(7 * MiB)
        self.put("f", base)
        offset = 5 * MiB + 12345
        upload = await self.storage.open_write(P("/f"), WriteMode.OFFSET, offset)
        upload.write(b"resumed")
        await upload.finish()
        assert self.get("f") == base[:offset] + b"resumed"

    async def test_restart_offset_far_past_the_end_is_refused(self) -> None:
        self.put("f", b"abc")
        with self.assertRaises(FTPError):
            await self.storage.open_write(P("/f"), WriteMode.OFFSET, 3 + self.part_size + 1)
        assert self.get("f") == b"abc"


class S3DownloadTests(MotoMixin, TestCase):
    """Downloads stream with backpressure."""

    async def test_paused_download_holds_back_the_http_body(self) -> None:
        data = os.urandom(8 * MiB)
        self.put("big", data)
        storage = self.s3_storage()
        source = await storage.open_read(P("/big"), 0)
        assert source.size == len(data)

        def pause(consumer: RecordingConsumer) -> None:
            consumer.producer.pauseProducing()  # type: ignore[union-attr]

        consumer = RecordingConsumer(pause)
        done = source.send(consumer)
        await wait_until(lambda: consumer.writes >= 1, "the first bytes")
        await turns(50)
        assert consumer.writes == 1
        assert len(consumer.data) < 1 * MiB
        pending = sum(len(chunk) for chunk in source._pending)  # type: ignore[attr-defined]
        assert pending <= 256 * KiB, pending
        consumer.on_write = None
        consumer.registered[0].resumeProducing()
        assert await done == len(data)
        assert bytes(consumer.data) == data
        await source.close()

    async def test_restart_offset_is_a_range_request(self) -> None:
        data = os.urandom(3 * MiB)
        self.put("f", data)
        source = await self.s3_storage().open_read(P("/f"), 2 * MiB + 1)
        assert source.size == MiB - 1
        consumer = RecordingConsumer()
        await source.send(consumer)
        assert bytes(consumer.data) == data[2 * MiB + 1 :]


class S3ErrorTests(MotoMixin, TestCase):
    """What the client is told when S3 says no, or is not there."""

    async def test_a_wrong_signature_is_refused(self) -> None:
        self.put("f", b"x")
        factory = self.make_s3_factory(credentials=Credentials(self.moto.access_key, "not-the-secret"))
        storage = self.s3_storage(factory)
        error = await self.assertFails(storage.list(VirtualPath.root()), StorageUnavailable)
        assert isinstance(error.__cause__, S3Error) and error.__cause__.code == "SignatureDoesNotMatch"

    async def test_access_denied_is_permission_denied(self) -> None:
        self.put("f", b"readable")
        reader = Credentials(*self.moto.reader_key)
        storage = self.s3_storage(self.make_s3_factory(credentials=reader))
        assert (await storage.stat(P("/f"))).size == 8
        await self.assertFails(storage.make_directory(P("/d")), PermissionDenied)
        await self.assertFails(storage.remove_file(P("/f")), PermissionDenied)
        upload = await storage.open_write(P("/g"), WriteMode.TRUNCATE, 0)
        upload.write(b"refused")
        await self.assertFails(upload.finish(), PermissionDenied)
        assert self.keys() == ["f"]

    async def test_unreachable_endpoint_is_storage_unavailable(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        factory = self.make_s3_factory(endpoint_url=f"http://127.0.0.1:{port}", retries=2)
        storage = self.s3_storage(factory)
        await self.assertFails(storage.stat(P("/f")), StorageUnavailable)
        await self.assertFails(storage.list(VirtualPath.root()), StorageUnavailable)

    async def test_missing_bucket_is_storage_unavailable_or_missing(self) -> None:
        factory = self.make_s3_factory()
        storage = S3Storage(factory.client, "", reactor)
        self.s3.delete_bucket(Bucket=self.bucket)
        with self.assertRaises(FTPError):
            await storage.list(VirtualPath.root())


class S3LogTests(MotoMixin, TestCase):
    """The default HTTP client's connections log nothing routine."""

    async def test_new_connections_log_no_factory_lines(self) -> None:
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        storage = self.s3_storage(self.make_s3_factory(max_connections=3))
        self.put("f", b"x")
        # Concurrent requests need new connections, each made by the pool's factory.
        await gatherResults([storage.stat(P("/f")) for _ in range(6)])
        texts = [formatEvent(event) for event in observer]
        assert not [text for text in texts if "factory" in text.lower()], texts


class S3CredentialTests(MotoMixin, TestCase):
    """Credentials from botocore's standard chain, looked up and refreshed off the reactor thread."""

    def isolate_environment(self, **variables: str) -> None:
        saved = dict(os.environ)
        self.addCleanup(lambda: (os.environ.clear(), os.environ.update(saved)))
        for name in list(os.environ):
            if name.startswith("AWS_"):
                del os.environ[name]
        os.environ.update(
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            AWS_CONFIG_FILE=os.devnull,
            AWS_EC2_METADATA_DISABLED="true",
            **variables,
        )

    async def test_environment_credentials_looked_up_in_a_thread(self) -> None:
        self.isolate_environment(AWS_ACCESS_KEY_ID=self.moto.access_key, AWS_SECRET_ACCESS_KEY=self.moto.secret_key)
        threads: list[threading.Thread] = []
        original = CredentialSource._lookup

        def lookup(source: CredentialSource) -> Any:
            threads.append(threading.current_thread())
            return original(source)

        self.patch(CredentialSource, "_lookup", lookup)
        self.put("f", b"x")
        storage = self.s3_storage(self.make_s3_factory(credentials=None))
        assert (await storage.stat(P("/f"))).size == 1
        assert (await storage.stat(P("/f"))).size == 1
        assert len(threads) == 1 and threads[0] is not threading.main_thread()

    async def test_no_credentials_is_storage_unavailable(self) -> None:
        self.isolate_environment()
        storage = self.s3_storage(self.make_s3_factory(credentials=None))
        with self.assertRaises(StorageUnavailable):
            await storage.stat(P("/f"))

    async def test_refreshable_credentials_refresh_in_a_thread(self) -> None:
        threads: list[threading.Thread] = []

        def metadata(minutes: int) -> dict[str, Any]:
            expiry = datetime.now(UTC) + timedelta(minutes=minutes)
            return {
                "access_key": self.moto.access_key,
                "secret_key": self.moto.secret_key,
                "token": None,
                "expiry_time": expiry.isoformat(),
            }

        def refresh() -> dict[str, Any]:
            threads.append(threading.current_thread())
            return metadata(60)

        credentials = RefreshableCredentials.create_from_metadata(metadata(1), refresh, "test")
        self.put("f", b"x")
        storage = self.s3_storage(self.make_s3_factory(credentials=credentials))
        assert (await storage.stat(P("/f"))).size == 1
        assert (await storage.stat(P("/f"))).size == 1
        assert len(threads) == 1 and threads[0] is not threading.main_thread()


class S3FTPSessionTests(MotoMixin, TestCase):
    """Whole FTP sessions on the S3 storage: exftp.FTPFactory on the real reactor, ftplib in a thread."""

    def setUp(self) -> None:
        super().setUp()
        self.ftp_factory = FTPFactory(MemoryAuthenticator({"alice": "secret"}), self.factory, reactor=reactor)
        self.listening = reactor.listenTCP(0, self.ftp_factory, interface="127.0.0.1")
        self.addCleanup(self.listening.stopListening)
        self.addCleanup(self.ftp_factory.shutdown)

    def session(self, work: Callable[[ftplib.FTP], _T]) -> Deferred[_T]:
        port = self.listening.getHost().port

        def run() -> _T:
            with ftplib.FTP() as client:
                client.connect("127.0.0.1", port, timeout=DEADLINE)
                client.login("alice", "secret")
                return work(client)

        return deferToThread(run)

    async def test_commands(self) -> None:
        self.put("a.txt", b"not a")

        def work(client: ftplib.FTP) -> dict[str, Any]:
            seen: dict[str, Any] = {}
            client.mkd("d")
            client.storbinary("STOR d/hello.txt", io.BytesIO(b"hello world"))
            seen["size"] = client.size("d/hello.txt")
            for missing in ("SIZE a", "SIZE d/hello", "DELE a", "RETR a", "CWD a.txt"):
                try:
                    client.sendcmd(missing)
                    seen[missing] = "200"
                except ftplib.error_perm as error:
                    seen[missing] = str(error)[:3]
            seen["nlst"] = sorted(client.nlst("d"))
            seen["list"] = []
            client.retrlines("LIST", seen["list"].append)
            chunks: list[bytes] = []
            client.retrbinary("RETR d/hello.txt", chunks.append, rest=6)
            seen["rest"] = b"".join(chunks)
            client.storbinary("APPE d/hello.txt", io.BytesIO(b"!"))
            client.rename("d/hello.txt", "d/renamed.txt")
            client.cwd("d")
            seen["pwd"] = client.pwd()
            client.cwd("/")
            try:
                client.rmd("d")
            except ftplib.error_perm as error:
                seen["rmd"] = str(error)[:3]
            client.delete("d/renamed.txt")
            client.rmd("d")
            client.quit()
            return seen

        seen = await self.session(work)
        assert seen["size"] == 11
        assert [seen[c] for c in ("SIZE a", "SIZE d/hello", "DELE a", "RETR a", "CWD a.txt")] == ["550"] * 5
        assert seen["nlst"] in (["d/hello.txt"], ["hello.txt"])
        assert [line.split()[-1] for line in seen["list"]] == ["a.txt", "d"]
        assert seen["rest"] == b"world"
        assert seen["pwd"] == "/d"
        assert seen["rmd"] == "550"
        assert self.keys() == ["a.txt"]

    async def test_multipart_parts_land_while_the_client_sends(self) -> None:
        """A 21 MiB STOR: parts are in S3 before the client has sent everything; 226 once complete."""

        def work(client: ftplib.FTP) -> tuple[str, int]:
            client.voidcmd("TYPE I")
            with client.transfercmd("STOR big") as data:
                for index in range(11 * 16):
                    data.sendall(block(index))
                parts = self.wait_for_parts("big", 1)
                assert self.head("big") is None, "visible before the upload completed"
                for index in range(11 * 16, 21 * 16):
                    data.sendall(block(index))
            return client.voidresp(), parts

        reply, parts = await self.session(work)
        assert reply.startswith("226")
        assert parts >= 1
        body = self.get("big")
        assert body is not None and hashlib.sha256(body).hexdigest() == blocks_digest(21 * 16)
        head = self.head("big")
        assert head is not None and head["ETag"].endswith('-5"')
        assert self.open_uploads() == []

    async def test_killed_upload_leaves_no_object_and_no_open_upload(self) -> None:
        def work(client: ftplib.FTP) -> str:
            client.voidcmd("TYPE I")
            data = client.transfercmd("STOR killed")
            for index in range(11 * 16):
                data.sendall(block(index))
            self.wait_for_parts("killed", 1)
            data.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            data.close()  # a reset, as when the client dies
            try:
                return client.getresp()
            except ftplib.Error as error:
                return str(error)

        reply = await self.session(work)
        assert reply[:3] in ("426", "451"), reply
        await wait_until(lambda: self.open_uploads() == [], "the multipart upload to be aborted")
        assert self.keys() == []

    def wait_for_parts(self, key: str, count: int) -> int:
        """In the client's thread: poll S3 until the upload of C{key} has C{count} parts."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            for upload in self.open_uploads():
                if upload["Key"] == key:
                    listed = self.s3.list_parts(Bucket=self.bucket, Key=key, UploadId=upload["UploadId"])
                    if len(listed.get("Parts", [])) >= count:
                        return len(listed["Parts"])
            time.sleep(0.02)
        raise AssertionError(f"no {count} parts of {key} in S3")


# Without S3: retries, signing, URLs, specifications.


class FakeS3(Resource):
    """Answers requests from a script of (status, body), the last answer repeating; keeps the requests."""

    isLeaf = True

    def __init__(self, *answers: tuple[int, bytes]) -> None:
        super().__init__()
        self.answers = list(answers)
        self.requests: list[tuple[bytes, bytes, dict[bytes, bytes], bytes]] = []

    def render(self, request: Request) -> bytes:
        headers = {name.lower(): values[0] for name, values in request.requestHeaders.getAllRawHeaders()}
        assert request.content is not None
        self.requests.append((request.method, request.uri, headers, request.content.read()))
        status, body = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        request.setResponseCode(status)
        return body


SLOW_DOWN = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"


class RetryTests(SynchronousTestCase):
    """Retries with backoff, on a fake clock and an in-memory HTTP stub."""

    def client(self, resource: FakeS3, retries: int = 3) -> tuple[S3Client, RequestTraversalAgent, Clock]:
        clock = Clock()
        stub = RequestTraversalAgent(resource)
        config = S3Config("bucket", region="eu-west-1", endpoint_url="http://s3.test", retries=retries)
        credentials = CredentialSource(clock, Credentials("AKID", "SECRET"))
        return S3Client(config, HTTPClient(stub), credentials, clock, Random(4)), stub, clock

    def drive(self, work: Any, stub: RequestTraversalAgent, clock: Clock) -> Deferred[Any]:
        done = Deferred.fromCoroutine(work)
        for _ in range(200):
            stub.flush()
            if done.called:
                break
            clock.advance(0.5)
        return done

    def test_slow_down_is_retried_with_backoff(self) -> None:
        resource = FakeS3((503, SLOW_DOWN), (503, SLOW_DOWN), (200, b""))
        client, stub, clock = self.client(resource)
        found = self.successResultOf(self.drive(client.head("key"), stub, clock))
        assert found is not None and found.key == "key"
        assert len(resource.requests) == 3
        assert clock.seconds() > 0

    def test_gives_up_after_the_retries(self) -> None:
        resource = FakeS3((500, b"<Error><Code>InternalError</Code></Error>"))
        client, stub, clock = self.client(resource, retries=2)
        failure = self.failureResultOf(self.drive(client.put("key", b"data"), stub, clock), S3Error)
        assert failure.value.code == "InternalError"
        assert len(resource.requests) == 3

    def test_client_errors_are_not_retried(self) -> None:
        resource = FakeS3((403, b"<Error><Code>AccessDenied</Code></Error>"))
        client, stub, clock = self.client(resource)
        failure = self.failureResultOf(self.drive(client.delete("key"), stub, clock), S3Error)
        assert (failure.value.status, failure.value.code) == (403, "AccessDenied")
        assert len(resource.requests) == 1

    def test_error_inside_a_200_is_retried(self) -> None:
        resource = FakeS3(
            (200, b"<?xml version='1.0'?><Error><Code>InternalError</Code></Error>"),
            (200, b"<CompleteMultipartUploadResult><ETag>x</ETag></CompleteMultipartUploadResult>"),
        )
        client, stub, clock = self.client(resource)
        self.successResultOf(self.drive(client.complete_multipart("k", "id", [(2, '"b"'), (1, '"a"')]), stub, clock))
        assert len(resource.requests) == 2
        body = resource.requests[0][3]
        assert body.index(b"<PartNumber>1</PartNumber>") < body.index(b"<PartNumber>2</PartNumber>")
        assert b"<ETag>&quot;a&quot;</ETag>" in body or b'<ETag>"a"</ETag>' in body

    def test_requests_are_signed_with_the_payload_hash(self) -> None:
        resource = FakeS3((200, b""))
        client, stub, clock = self.client(resource)
        self.successResultOf(self.drive(client.put("dir/a b+c", b"payload", {"exftp-node": "n1"}), stub, clock))
        ((method, uri, headers, body),) = resource.requests
        assert (method, uri, body) == (b"PUT", b"/bucket/dir/a%20b%2Bc", b"payload")
        assert headers[b"x-amz-content-sha256"] == hashlib.sha256(b"payload").hexdigest().encode()
        assert headers[b"x-amz-meta-exftp-node"] == b"n1"
        authorization = headers[b"authorization"].decode()
        assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKID/")
        assert "/eu-west-1/s3/aws4_request" in authorization
        assert "x-amz-meta-exftp-node" in authorization

    def test_chunked_payloads_are_hashed_and_sent_whole_on_every_try(self) -> None:
        resource = FakeS3((500, b"<Error><Code>InternalError</Code></Error>"), (200, b""))
        client, stub, clock = self.client(resource)
        chunks = [b"a" * 100_000, b"", b"b" * 3, b"c" * 150_000]  # bigger and smaller than a slice; hashed inline
        self.successResultOf(self.drive(client.put("key", chunks), stub, clock))
        whole = b"".join(chunks)
        assert [request[3] for request in resource.requests] == [whole, whole]
        digest = hashlib.sha256(whole).hexdigest().encode()
        assert [request[2][b"x-amz-content-sha256"] for request in resource.requests] == [digest, digest]

    def test_oversized_answers_are_refused(self) -> None:
        resource = FakeS3((200, b"<ListBucketResult>" + b" " * (17 * MiB) + b"</ListBucketResult>"))
        client, stub, clock = self.client(resource, retries=0)
        self.failureResultOf(self.drive(client.list_page("p/"), stub, clock))


class URLTests(SynchronousTestCase):
    def url(self, key: str | None, **options: Any) -> str:
        config = S3Config(options.pop("bucket", "my-bucket"), **options)
        return S3Client(config, None, None, None).url(key)  # type: ignore[arg-type]

    def test_addressing(self) -> None:
        assert self.url("k", region="eu-west-1") == "https://my-bucket.s3.eu-west-1.amazonaws.com/k"
        assert self.url(None, region="eu-west-1") == "https://my-bucket.s3.eu-west-1.amazonaws.com/"
        assert self.url("k", bucket="with.dots") == "https://s3.us-east-1.amazonaws.com/with.dots/k"
        assert self.url("k", endpoint_url="http://127.0.0.1:9000") == "http://127.0.0.1:9000/my-bucket/k"
        assert self.url(None, endpoint_url="http://127.0.0.1:9000/") == "http://127.0.0.1:9000/my-bucket"
        virtual = self.url("k", endpoint_url="https://minio.example:9000", addressing="virtual")
        assert virtual == "https://my-bucket.minio.example:9000/k"
        path = self.url("k", addressing="path", region="eu-west-1")
        assert path == "https://s3.eu-west-1.amazonaws.com/my-bucket/k"

    def test_keys_are_percent_encoded(self) -> None:
        url = self.url("dir/a b+c&d?é~", endpoint_url="http://h")
        assert url == "http://h/my-bucket/dir/a%20b%2Bc%26d%3F%C3%A9~"


class ConfigTests(SynchronousTestCase):
    def test_validation(self) -> None:
        for bad in (
            {"bucket": ""},
            {"bucket": "a/b"},
            {"bucket": "b", "part_size": 5 * MiB - 1},
            {"bucket": "b", "part_size": 6 * 1024 * MiB},
            {"bucket": "b", "parts_in_flight": 0},
            {"bucket": "b", "addressing": "dns"},
            {"bucket": "b", "prefix": "a/../b"},
            {"bucket": "b", "endpoint_url": "ftp://host"},
            {"bucket": "b", "retries": -1},
        ):
            with self.assertRaises(ValueError, msg=str(bad)):
                S3Config(**bad)

    def test_prefix_is_normalised(self) -> None:
        assert S3Config("b", prefix="/a/b/").prefix == "a/b/"
        assert S3Config("b", prefix="/").prefix == ""

    def test_endpoint_and_region_from_the_environment(self) -> None:
        config = S3Config("b")
        both = {"AWS_ENDPOINT_URL_S3": "http://s3:1", "AWS_ENDPOINT_URL": "http://all:2", "AWS_REGION": "eu-west-3"}
        resolved = config.with_environment(both)
        assert (resolved.endpoint_url, resolved.region) == ("http://s3:1", "eu-west-3")
        general = config.with_environment({"AWS_ENDPOINT_URL": "http://all:2", "AWS_DEFAULT_REGION": "ap-south-1"})
        assert (general.endpoint_url, general.region) == ("http://all:2", "ap-south-1")
        ignored = config.with_environment({**both, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"})
        assert ignored.endpoint_url is None
        explicit = S3Config("b", endpoint_url="http://mine:3", region="r").with_environment(both)
        assert (explicit.endpoint_url, explicit.region) == ("http://mine:3", "r")


class SpecTests(SynchronousTestCase):
    """The text after C{--storage s3:}."""

    def test_full_spec(self) -> None:
        factory = storage_factory_from_spec(
            "bucket=b:prefix=ftp/root:region=eu-west-1:endpoint=http://127.0.0.1:9000:addressing=path"
            ":part_size=16MiB:parts_in_flight=2:timeout=30:retries=5:deadline=40:rename_limit=50:max_connections=4",
            environ={},
        )
        self.assertTrue(verifyObject(IStorageFactory, factory))
        config = factory.config
        assert (config.bucket, config.prefix, config.region) == ("b", "ftp/root/", "eu-west-1")
        assert (config.endpoint_url, config.addressing) == ("http://127.0.0.1:9000", "path")
        assert (config.part_size, config.parts_in_flight) == (16 * MiB, 2)
        assert (config.request_timeout, config.retries, config.rename_limit, config.max_connections) == (30, 5, 50, 4)
        assert config.operation_deadline == 40

    def test_minimal_spec_takes_the_environment(self) -> None:
        factory = storage_factory_from_spec(
            "bucket=b", environ={"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000", "AWS_DEFAULT_REGION": "us-west-2"}
        )
        assert (factory.config.endpoint_url, factory.config.region) == ("http://127.0.0.1:9000", "us-west-2")
        assert factory.config.part_size == 8 * MiB and factory.config.parts_in_flight == 4

    def test_escaped_colons(self) -> None:
        assert parse_spec(r"bucket=b:prefix=a\:b") == {"bucket": "b", "prefix": "a:b"}
        assert parse_spec("bucket=b:endpoint=https://h:443/x") == {"bucket": "b", "endpoint": "https://h:443/x"}
        assert parse_spec("bucket=b:part_size=5242880")["part_size"] == "5242880"

    def test_errors(self) -> None:
        for spec, message in (
            ("", "expected NAME=VALUE"),
            ("prefix=p", "bucket=NAME is required"),
            ("bucket=", "bucket=NAME is required"),
            ("mybucket", "expected NAME=VALUE"),
            ("bucket=b:colour=blue", "unknown option 'colour'"),
            ("bucket=b:bucket=c", "given twice"),
            ("bucket=b:part_size=1MiB", "part_size must be between"),
            ("bucket=b:part_size=lots", "part_size: expected a size"),
            ("bucket=b:parts_in_flight=-1", "parts_in_flight: expected a whole number"),
            ("bucket=b:addressing=dns", "addressing must be"),
            ("bucket=b:endpoint=localhost", "endpoint must be"),
            ("bucket=b:timeout=soon", "timeout: expected a number"),
            ("bucket=b:deadline=0", "deadline must be a positive number"),
            ("bucket=b:deadline=inf", "deadline must be a positive number"),
        ):
            with self.assertRaises(ValueError, msg=spec) as caught:
                storage_factory_from_spec(spec, environ={"AWS_REGION": "us-east-1"})
            assert message in str(caught.exception), (spec, str(caught.exception))


class ReaderInterfaceTests(MotoMixin, TestCase):
    async def test_is_a_directory_and_missing(self) -> None:
        self.put("d/", b"")
        storage = self.s3_storage()
        with self.assertRaises(IsADirectory):
            await storage.open_read(P("/d"), 0)
        with self.assertRaises(FileNotFound):
            await storage.open_read(P("/e"), 0)
