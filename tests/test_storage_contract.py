"""
One contract for every L{IStorage}: the memory storage and the file storage
must behave alike, down to the error classes. A new backend gets the whole
suite by subclassing L{StorageContractMixin}.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IProducer, IPushProducer
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from exftp import (
    AlreadyExists,
    CommandSyntaxError,
    DirectoryNotEmpty,
    FileKind,
    FileNotFound,
    FileStorage,
    FileStorageFactory,
    FTPError,
    InvalidPath,
    IReadFile,
    IsADirectory,
    IStorage,
    IStorageFactory,
    IStorageMetadata,
    IWriteFile,
    MemoryStorage,
    MemoryStorageFactory,
    NotADirectory,
    PermissionDenied,
    ReadOnlyStorage,
    Session,
    StorageUnavailable,
    TransferAborted,
    VirtualPath,
    WriteMode,
)
from exftp.storage._streaming import CHUNK_SIZE

#: More than three chunks, so that reads take several writes and can be paused between them.
BIG = bytes(range(256)) * (3 * CHUNK_SIZE // 256) + b"tail"


def P(text: str) -> VirtualPath:
    return VirtualPath.parse(text)


@implementer(IConsumer)
class RecordingConsumer:
    """
    A consumer that keeps what it is sent and how its producer is registered.

    @ivar on_write: called after each write with the consumer, for tests
        that pause or stop the producer in the middle.
    """

    def __init__(self, on_write: Callable[[RecordingConsumer], None] | None = None) -> None:
        self.data = bytearray()
        self.writes = 0
        self.producer: IProducer | None = None
        self.streaming: bool | None = None
        self.registered: list[Any] = []
        self.unregistered = 0
        self.on_write = on_write

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self.producer, self.streaming = producer, streaming
        self.registered.append(producer)

    def unregisterProducer(self) -> None:
        self.producer = None
        self.unregistered += 1

    def write(self, data: bytes) -> None:
        self.data += data
        self.writes += 1
        if self.on_write is not None:
            self.on_write(self)


async def turns(count: int = 5) -> None:
    """Let the reactor run C{count} times (scheduled calls, thread results)."""
    for _ in range(count):
        await deferLater(reactor, 0, lambda: None)


class StorageContractMixin:
    """
    The behaviour every L{IStorage} promises. Subclasses say how to make the
    storage and how to look at its contents behind its back.
    """

    # The hooks a backend provides.

    def make_storage(self) -> IStorage:
        raise NotImplementedError

    def make_factory(self) -> IStorageFactory:
        """A factory over the same tree as L{make_storage}."""
        raise NotImplementedError

    def seed_file(self, path: str, data: bytes) -> None:
        """Create a file (and its directories) without going through the storage."""
        raise NotImplementedError

    def seed_directory(self, path: str) -> None:
        raise NotImplementedError

    def content(self, path: str) -> bytes | None:
        """A file's bytes, read behind the storage's back, or None if there is no such file."""
        raise NotImplementedError

    async def wait_for_first_write(self, consumer: RecordingConsumer) -> None:
        """Wait for C{consumer}'s first write, where the bytes come over a network (at once by default)."""

    # Helpers.

    def setUp(self) -> None:
        self.storage = self.make_storage()

    async def read(self, path: str, offset: int = 0, storage: IStorage | None = None) -> bytes:
        source = await (storage or self.storage).open_read(P(path), offset)
        consumer = RecordingConsumer()
        try:
            await source.send(consumer)
        finally:
            await source.close()
        return bytes(consumer.data)

    async def upload(
        self,
        path: str,
        chunks: list[bytes],
        mode: WriteMode = WriteMode.TRUNCATE,
        offset: int = 0,
        storage: IStorage | None = None,
    ) -> None:
        target = await (storage or self.storage).open_write(P(path), mode, offset)
        for chunk in chunks:
            target.write(chunk)
        await target.finish()

    async def assertFails(self, deferred: Deferred[Any], error: type[FTPError]) -> FTPError:
        try:
            result = await deferred
        except FTPError as caught:
            self.assertIsInstance(caught, error)  # type: ignore[attr-defined]
            return caught
        raise self.failureException(f"{error.__name__} expected, got {result!r}")  # type: ignore[attr-defined]

    async def names(self, path: str = "/") -> list[str]:
        return [info.name for info in await self.storage.list(P(path))]

    # The contract.

    def test_provides_istorage(self) -> None:
        self.assertTrue(verifyObject(IStorage, self.storage))  # type: ignore[attr-defined]
        self.assertTrue(verifyObject(IStorage, ReadOnlyStorage(self.storage)))  # type: ignore[attr-defined]

    async def test_stat(self) -> None:
        self.seed_file("/dir/file.txt", b"12345")
        root = await self.storage.stat(VirtualPath.root())
        directory = await self.storage.stat(P("/dir"))
        file = await self.storage.stat(P("/dir/file.txt"))
        assert (root.name, root.kind) == ("/", FileKind.DIRECTORY)
        assert (directory.name, directory.kind, directory.is_directory) == ("dir", FileKind.DIRECTORY, True)
        assert (file.name, file.kind, file.size, file.is_directory) == ("file.txt", FileKind.FILE, 5, False)
        assert abs(file.mtime - reactor.seconds()) < 300

    async def test_stat_errors(self) -> None:
        self.seed_file("/file", b"x")
        await self.assertFails(self.storage.stat(P("/missing")), FileNotFound)
        await self.assertFails(self.storage.stat(P("/missing/deeper")), FileNotFound)
        await self.assertFails(self.storage.stat(P("/file/inside")), NotADirectory)

    async def test_list(self) -> None:
        self.seed_file("/b.txt", b"bb")
        self.seed_file("/a.txt", b"a")
        self.seed_directory("/c")
        self.seed_file("/c/nested", b"n")
        entries = await self.storage.list(VirtualPath.root())
        assert [(e.name, e.kind, e.size) for e in entries] == [
            ("a.txt", FileKind.FILE, 1),
            ("b.txt", FileKind.FILE, 2),
            ("c", FileKind.DIRECTORY, 0),
        ]
        assert await self.names("/c") == ["nested"]

    async def test_list_empty_directory(self) -> None:
        self.seed_directory("/empty")
        assert await self.names("/empty") == []

    async def test_list_errors(self) -> None:
        self.seed_file("/file", b"x")
        await self.assertFails(self.storage.list(P("/missing")), FileNotFound)
        await self.assertFails(self.storage.list(P("/file")), NotADirectory)

    async def test_make_directory(self) -> None:
        await self.storage.make_directory(P("/new"))
        await self.storage.make_directory(P("/new/sub"))
        assert (await self.storage.stat(P("/new/sub"))).is_directory
        assert await self.names("/new") == ["sub"]
        assert await self.names("/new/sub") == []

    async def test_make_directory_errors(self) -> None:
        self.seed_file("/file", b"x")
        self.seed_directory("/dir")
        await self.assertFails(self.storage.make_directory(P("/dir")), AlreadyExists)
        await self.assertFails(self.storage.make_directory(P("/file")), AlreadyExists)
        await self.assertFails(self.storage.make_directory(P("/missing/sub")), FileNotFound)
        await self.assertFails(self.storage.make_directory(P("/file/sub")), NotADirectory)
        await self.assertFails(self.storage.make_directory(VirtualPath.root()), PermissionDenied)
        assert self.content("/file") == b"x"

    async def test_remove_directory(self) -> None:
        self.seed_directory("/gone")
        await self.storage.remove_directory(P("/gone"))
        await self.assertFails(self.storage.stat(P("/gone")), FileNotFound)
        assert await self.names() == []

    async def test_remove_directory_errors(self) -> None:
        self.seed_file("/full/file", b"x")
        await self.assertFails(self.storage.remove_directory(P("/full")), DirectoryNotEmpty)
        await self.assertFails(self.storage.remove_directory(P("/full/file")), NotADirectory)
        await self.assertFails(self.storage.remove_directory(P("/missing")), FileNotFound)
        await self.assertFails(self.storage.remove_directory(VirtualPath.root()), PermissionDenied)
        assert self.content("/full/file") == b"x"

    async def test_remove_file(self) -> None:
        self.seed_file("/a", b"x")
        self.seed_file("/b", b"y")
        await self.storage.remove_file(P("/a"))
        assert await self.names() == ["b"]
        assert self.content("/a") is None

    async def test_remove_file_errors(self) -> None:
        self.seed_directory("/dir")
        await self.assertFails(self.storage.remove_file(P("/dir")), IsADirectory)
        await self.assertFails(self.storage.remove_file(P("/missing")), FileNotFound)
        await self.assertFails(self.storage.remove_file(VirtualPath.root()), PermissionDenied)
        assert (await self.storage.stat(P("/dir"))).is_directory

    async def test_rename_file(self) -> None:
        self.seed_file("/a", b"content")
        self.seed_directory("/dir")
        await self.storage.rename(P("/a"), P("/dir/b"))
        assert self.content("/a") is None
        assert self.content("/dir/b") == b"content"

    async def test_rename_replaces_an_existing_file(self) -> None:
        self.seed_file("/a", b"new")
        self.seed_file("/b", b"old")
        await self.storage.rename(P("/a"), P("/b"))
        assert await self.names() == ["b"]
        assert self.content("/b") == b"new"

    async def test_rename_directory_with_contents(self) -> None:
        self.seed_file("/d/sub/f", b"deep")
        await self.storage.rename(P("/d"), P("/e"))
        assert await self.names() == ["e"]
        assert self.content("/e/sub/f") == b"deep"

    async def test_rename_to_itself_changes_nothing(self) -> None:
        self.seed_file("/f", b"same")
        self.seed_directory("/d")
        await self.storage.rename(P("/f"), P("/f"))
        await self.storage.rename(P("/d"), P("/d"))
        assert await self.names() == ["d", "f"]
        assert self.content("/f") == b"same"

    async def test_rename_errors(self) -> None:
        self.seed_file("/d/f", b"x")
        self.seed_directory("/d/sub")
        self.seed_directory("/other")
        self.seed_file("/file", b"y")
        await self.assertFails(self.storage.rename(P("/missing"), P("/x")), FileNotFound)
        await self.assertFails(self.storage.rename(P("/d"), P("/d/sub/d")), InvalidPath)
        await self.assertFails(self.storage.rename(P("/d"), P("/d/inside")), InvalidPath)
        await self.assertFails(self.storage.rename(P("/file"), P("/other")), AlreadyExists)
        await self.assertFails(self.storage.rename(P("/d"), P("/other")), AlreadyExists)
        await self.assertFails(self.storage.rename(P("/d"), P("/file")), AlreadyExists)
        await self.assertFails(self.storage.rename(P("/file"), P("/missing/x")), FileNotFound)
        await self.assertFails(self.storage.rename(VirtualPath.root(), P("/x")), PermissionDenied)
        await self.assertFails(self.storage.rename(P("/file"), VirtualPath.root()), PermissionDenied)
        assert await self.names() == ["d", "file", "other"]
        assert self.content("/file") == b"y"
        assert self.content("/d/f") == b"x"

    async def test_open_read_streams_as_a_push_producer(self) -> None:
        self.seed_file("/big", BIG)
        source = await self.storage.open_read(P("/big"), 0)
        self.assertTrue(verifyObject(IReadFile, source))  # type: ignore[attr-defined]
        assert source.size == len(BIG)
        consumer = RecordingConsumer()
        sent = await source.send(consumer)
        await source.close()
        await source.close()
        assert sent == len(BIG)
        assert bytes(consumer.data) == BIG
        assert consumer.streaming is True
        assert IPushProducer.providedBy(consumer.registered[0])
        assert consumer.writes > 1
        assert consumer.producer is None and consumer.unregistered == 1

    async def test_open_read_at_offsets(self) -> None:
        data = b"0123456789"
        self.seed_file("/f", data)
        for offset in (0, 1, 9, 10, 25):
            source = await self.storage.open_read(P("/f"), offset)
            assert source.size == max(len(data) - offset, 0)
            await source.close()
            assert await self.read("/f", offset) == data[offset:]

    async def test_open_read_at_an_offset_past_the_first_chunk(self) -> None:
        self.seed_file("/big", BIG)
        assert await self.read("/big", CHUNK_SIZE + 3) == BIG[CHUNK_SIZE + 3 :]

    async def test_open_read_empty_file(self) -> None:
        self.seed_file("/empty", b"")
        assert await self.read("/empty") == b""

    async def test_open_read_honours_pause_and_resume(self) -> None:
        self.seed_file("/big", BIG)

        def pause_after_first(consumer: RecordingConsumer) -> None:
            if consumer.writes == 1:
                consumer.producer.pauseProducing()  # type: ignore[attr-defined]

        source = await self.storage.open_read(P("/big"), 0)
        consumer = RecordingConsumer(pause_after_first)
        done = source.send(consumer)
        await self.wait_for_first_write(consumer)
        await turns(10)
        assert consumer.writes == 1
        assert not done.called
        consumer.registered[0].resumeProducing()
        assert await done == len(BIG)
        assert bytes(consumer.data) == BIG
        await source.close()

    async def test_stop_producing_fails_the_send(self) -> None:
        self.seed_file("/big", BIG)

        def stop(consumer: RecordingConsumer) -> None:
            consumer.producer.stopProducing()  # type: ignore[attr-defined]

        source = await self.storage.open_read(P("/big"), 0)
        consumer = RecordingConsumer(stop)
        with self.assertRaises(TransferAborted):  # type: ignore[attr-defined]
            await source.send(consumer)
        await turns()
        assert consumer.writes == 1
        await source.close()

    async def test_close_during_send_fails_the_send(self) -> None:
        self.seed_file("/big", BIG)

        def pause(consumer: RecordingConsumer) -> None:
            consumer.producer.pauseProducing()  # type: ignore[attr-defined]

        source = await self.storage.open_read(P("/big"), 0)
        consumer = RecordingConsumer(pause)
        done = source.send(consumer)
        await turns()
        await source.close()
        with self.assertRaises(TransferAborted):  # type: ignore[attr-defined]
            await done
        assert consumer.unregistered == 1

    async def test_cancelling_the_send_stops_it(self) -> None:
        self.seed_file("/big", BIG)
        source = await self.storage.open_read(P("/big"), 0)
        consumer = RecordingConsumer()
        done = source.send(consumer)
        done.cancel()
        with self.assertRaises(TransferAborted):  # type: ignore[attr-defined]
            await done
        await turns()
        assert consumer.writes == 0
        await source.close()

    async def test_open_read_errors(self) -> None:
        self.seed_directory("/dir")
        self.seed_file("/f", b"x")
        await self.assertFails(self.storage.open_read(P("/dir"), 0), IsADirectory)
        await self.assertFails(self.storage.open_read(VirtualPath.root(), 0), IsADirectory)
        await self.assertFails(self.storage.open_read(P("/missing"), 0), FileNotFound)
        await self.assertFails(self.storage.open_read(P("/f/x"), 0), NotADirectory)
        await self.assertFails(self.storage.open_read(P("/f"), -1), CommandSyntaxError)

    async def test_write_truncate(self) -> None:
        self.seed_file("/f", b"old content that is long")
        target = await self.storage.open_write(P("/f"), WriteMode.TRUNCATE, 0)
        self.assertTrue(verifyObject(IWriteFile, target))  # type: ignore[attr-defined]
        target.write(b"new ")
        target.write(b"")
        target.write(b"bytes")
        await target.finish()
        assert self.content("/f") == b"new bytes"
        assert await self.read("/f") == b"new bytes"
        assert (await self.storage.stat(P("/f"))).size == 9

    async def test_write_new_file(self) -> None:
        self.seed_directory("/d")
        await self.upload("/d/new", [b"x" * 10, BIG])
        assert self.content("/d/new") == b"x" * 10 + BIG
        assert await self.names("/d") == ["new"]

    async def test_write_empty_file(self) -> None:
        await self.upload("/empty", [])
        assert self.content("/empty") == b""

    async def test_write_append(self) -> None:
        self.seed_file("/log", b"line 1\n")
        await self.upload("/log", [b"line 2\n"], WriteMode.APPEND)
        await self.upload("/new-log", [b"first\n"], WriteMode.APPEND)
        assert self.content("/log") == b"line 1\nline 2\n"
        assert self.content("/new-log") == b"first\n"

    async def test_write_at_offset_keeps_the_bytes_before_it(self) -> None:
        self.seed_file("/f", b"0123456789")
        await self.upload("/f", [b"ab"], WriteMode.OFFSET, 4)
        assert self.content("/f") == b"0123ab"

    async def test_write_at_offset_zero(self) -> None:
        self.seed_file("/f", b"0123456789")
        await self.upload("/f", [b"ab"], WriteMode.OFFSET, 0)
        assert self.content("/f") == b"ab"

    async def test_write_past_the_end_fills_with_zeros(self) -> None:
        self.seed_file("/f", b"abc")
        await self.upload("/f", [b"Z"], WriteMode.OFFSET, 6)
        await self.upload("/new", [b"Z"], WriteMode.OFFSET, 3)
        assert self.content("/f") == b"abc\0\0\0Z"
        assert self.content("/new") == b"\0\0\0Z"

    async def test_nothing_visible_before_finish(self) -> None:
        self.seed_file("/existing", b"old")
        fresh = await self.storage.open_write(P("/fresh"), WriteMode.TRUNCATE, 0)
        existing = await self.storage.open_write(P("/existing"), WriteMode.TRUNCATE, 0)
        fresh.write(b"new data")
        existing.write(b"replacement")
        await turns()
        await self.assertFails(self.storage.stat(P("/fresh")), FileNotFound)
        assert await self.names() == ["existing"]
        assert await self.read("/existing") == b"old"
        assert (await self.storage.stat(P("/existing"))).size == 3
        await fresh.finish()
        await existing.finish()
        assert await self.names() == ["existing", "fresh"]
        assert await self.read("/existing") == b"replacement"

    async def test_abort_keeps_the_old_content(self) -> None:
        self.seed_file("/f", b"precious")
        target = await self.storage.open_write(P("/f"), WriteMode.TRUNCATE, 0)
        target.write(b"garbage")
        await target.abort()
        await target.abort()
        assert self.content("/f") == b"precious"
        assert await self.names() == ["f"]

    async def test_abort_of_a_new_file_leaves_nothing(self) -> None:
        target = await self.storage.open_write(P("/new"), WriteMode.APPEND, 0)
        target.write(BIG)
        await target.abort()
        await turns()
        assert await self.names() == []
        assert self.content("/new") is None

    async def test_finish_after_abort_fails(self) -> None:
        target = await self.storage.open_write(P("/new"), WriteMode.TRUNCATE, 0)
        target.write(b"x")
        await target.abort()
        await self.assertFails(target.finish(), StorageUnavailable)
        assert self.content("/new") is None

    async def test_concurrent_uploads_last_finish_wins(self) -> None:
        first = await self.storage.open_write(P("/f"), WriteMode.TRUNCATE, 0)
        second = await self.storage.open_write(P("/f"), WriteMode.TRUNCATE, 0)
        first.write(b"first")
        second.write(b"second")
        await second.finish()
        await first.finish()
        assert self.content("/f") == b"first"

    async def test_open_write_errors(self) -> None:
        self.seed_directory("/dir")
        self.seed_file("/file", b"x")
        await self.assertFails(self.storage.open_write(P("/dir"), WriteMode.TRUNCATE, 0), IsADirectory)
        await self.assertFails(self.storage.open_write(P("/missing/f"), WriteMode.TRUNCATE, 0), FileNotFound)
        await self.assertFails(self.storage.open_write(P("/file/f"), WriteMode.TRUNCATE, 0), NotADirectory)
        await self.assertFails(self.storage.open_write(VirtualPath.root(), WriteMode.TRUNCATE, 0), PermissionDenied)
        await self.assertFails(self.storage.open_write(P("/file"), WriteMode.OFFSET, -5), CommandSyntaxError)
        assert await self.names() == ["dir", "file"]
        assert await self.names("/dir") == []

    async def test_read_only_view_refuses_every_change(self) -> None:
        self.seed_file("/d/f", b"keep")
        view = ReadOnlyStorage(self.storage)
        changes = [
            lambda: view.make_directory(P("/new")),
            lambda: view.remove_directory(P("/d")),
            lambda: view.remove_file(P("/d/f")),
            lambda: view.rename(P("/d/f"), P("/g")),
            lambda: view.open_write(P("/d/f"), WriteMode.TRUNCATE, 0),
            lambda: view.open_write(P("/new"), WriteMode.APPEND, 0),
        ]
        for change in changes:
            await self.assertFails(change(), PermissionDenied)
        assert await self.read("/d/f", storage=view) == b"keep"
        assert [e.name for e in await view.list(P("/d"))] == ["f"]
        assert (await view.stat(P("/d/f"))).size == 4
        assert self.content("/d/f") == b"keep"
        assert await self.names() == ["d"]

    async def test_factory_gives_the_whole_tree_without_a_root(self) -> None:
        self.seed_file("/top", b"t")
        factory = self.make_factory()
        self.assertTrue(verifyObject(IStorageFactory, factory))  # type: ignore[attr-defined]
        for root in (None, VirtualPath.root()):
            storage = await factory.storage_for(Session("u", root=root))
            self.assertTrue(verifyObject(IStorage, storage))  # type: ignore[attr-defined]
            assert [e.name for e in await storage.list(VirtualPath.root())] == ["top"]

    async def test_factory_narrows_to_the_session_root(self) -> None:
        self.seed_file("/home/alice/a.txt", b"alice's")
        self.seed_file("/home/bob/b.txt", b"bob's")
        self.seed_file("/top.txt", b"top")
        storage = await self.make_factory().storage_for(Session("alice", root=P("/home/alice")))
        assert [e.name for e in await storage.list(VirtualPath.root())] == ["a.txt"]
        assert await self.read("/a.txt", storage=storage) == b"alice's"
        for outside in ("/../bob/b.txt", "../../top.txt", "/home/alice/a.txt"):
            await self.assertFails(storage.stat(VirtualPath.root().resolve(outside)), FileNotFound)
        await self.upload("/new", [b"mine"], storage=storage)
        await storage.make_directory(P("/sub"))
        assert self.content("/home/alice/new") == b"mine"
        assert self.content("/new") is None
        await self.assertFails(storage.remove_directory(VirtualPath.root()), PermissionDenied)

    async def test_factory_read_only_session(self) -> None:
        self.seed_file("/home/guest/f", b"read me")
        factory = self.make_factory()
        for root in (None, P("/home/guest")):
            storage = await factory.storage_for(Session("guest", root=root, read_only=True))
            self.assertTrue(verifyObject(IStorage, storage))  # type: ignore[attr-defined]
            name = "/home/guest/f" if root is None else "/f"
            assert await self.read(name, storage=storage) == b"read me"
            await self.assertFails(storage.open_write(P(name), WriteMode.TRUNCATE, 0), PermissionDenied)
            await self.assertFails(storage.remove_file(P(name)), PermissionDenied)
            await self.assertFails(storage.make_directory(P("/x")), PermissionDenied)
        assert self.content("/home/guest/f") == b"read me"

    async def test_factory_refuses_a_missing_or_file_root(self) -> None:
        self.seed_file("/file", b"x")
        factory = self.make_factory()
        for root in ("/missing", "/file", "/file/below"):
            await self.assertFails(factory.storage_for(Session("u", root=P(root))), FileNotFound)


class RealDirectoriesMixin:
    """
    For storages whose directories are things rather than name prefixes
    (unlike S3): an upload belongs to the directory it was opened in.
    """

    async def test_upload_whose_directory_moved_away_fails(self) -> None:
        self.seed_directory("/d")  # type: ignore[attr-defined]
        target = await self.storage.open_write(P("/d/f"), WriteMode.TRUNCATE, 0)  # type: ignore[attr-defined]
        target.write(b"data")
        await self.storage.rename(P("/d"), P("/e"))  # type: ignore[attr-defined]
        await self.assertFails(target.finish(), FileNotFound)  # type: ignore[attr-defined]
        assert await self.names() == ["e"]  # type: ignore[attr-defined]
        assert await self.names("/e") == []  # type: ignore[attr-defined]


class UniqueFactMixin:
    """For storages that name each entry with an RFC 3659 C{unique} fact."""

    async def test_unique_identifies_an_entry(self) -> None:
        self.seed_file("/a", b"x")  # type: ignore[attr-defined]
        self.seed_file("/b", b"x")  # type: ignore[attr-defined]
        self.seed_directory("/d")  # type: ignore[attr-defined]
        storage = self.storage  # type: ignore[attr-defined]
        a, b, d = [(await storage.stat(P(name))).unique for name in ("/a", "/b", "/d")]
        assert a and b and d and len({a, b, d}) == 3
        assert (await storage.stat(P("/a"))).unique == a
        assert {e.name: e.unique for e in await storage.list(VirtualPath.root())} == {"a": a, "b": b, "d": d}
        await storage.rename(P("/a"), P("/d/moved"))
        assert (await storage.stat(P("/d/moved"))).unique == a


class MetadataContractMixin:
    """For storages that also provide L{IStorageMetadata} (MFMT, SITE CHMOD)."""

    def test_provides_istoragemetadata(self) -> None:
        assert verifyObject(IStorageMetadata, self.storage)  # type: ignore[attr-defined]
        assert verifyObject(IStorageMetadata, ReadOnlyStorage(self.storage))  # type: ignore[attr-defined]

    async def test_set_mtime(self) -> None:
        self.seed_file("/d/f", b"x")  # type: ignore[attr-defined]
        await self.storage.set_mtime(P("/d/f"), 1614834367.0)  # type: ignore[attr-defined]
        await self.storage.set_mtime(P("/d"), 1000000000.0)  # type: ignore[attr-defined]
        assert (await self.storage.stat(P("/d/f"))).mtime == 1614834367.0  # type: ignore[attr-defined]
        assert (await self.storage.stat(P("/d"))).mtime == 1000000000.0  # type: ignore[attr-defined]
        assert self.content("/d/f") == b"x"  # type: ignore[attr-defined]

    async def test_set_permissions(self) -> None:
        self.seed_file("/f", b"x")  # type: ignore[attr-defined]
        for mode in (0o600, 0o640, 0o755):
            await self.storage.set_permissions(P("/f"), mode)  # type: ignore[attr-defined]
            assert (await self.storage.stat(P("/f"))).permissions == mode  # type: ignore[attr-defined]

    async def test_upload_keeps_permissions(self) -> None:
        self.seed_file("/f", b"old")  # type: ignore[attr-defined]
        await self.storage.set_permissions(P("/f"), 0o600)  # type: ignore[attr-defined]
        await self.upload("/f", [b"new"])  # type: ignore[attr-defined]
        assert (await self.storage.stat(P("/f"))).permissions == 0o600  # type: ignore[attr-defined]

    async def test_metadata_errors(self) -> None:
        self.seed_file("/f", b"x")  # type: ignore[attr-defined]
        fails = self.assertFails  # type: ignore[attr-defined]
        storage = self.storage  # type: ignore[attr-defined]
        await fails(storage.set_mtime(P("/missing"), 0.0), FileNotFound)
        await fails(storage.set_permissions(P("/missing"), 0o644), FileNotFound)
        await fails(storage.set_mtime(P("/f/x"), 0.0), NotADirectory)
        await fails(storage.set_mtime(VirtualPath.root(), 0.0), PermissionDenied)
        await fails(storage.set_permissions(VirtualPath.root(), 0o700), PermissionDenied)
        for special in (0o4755, 0o2755, 0o1777):
            await fails(storage.set_permissions(P("/f"), special), PermissionDenied)
        await fails(storage.set_permissions(P("/f"), 0o10000), CommandSyntaxError)
        view = ReadOnlyStorage(storage)
        await fails(view.set_mtime(P("/f"), 0.0), PermissionDenied)
        await fails(view.set_permissions(P("/f"), 0o600), PermissionDenied)
        assert (await storage.stat(P("/f"))).permissions & 0o7000 == 0


class MemoryStorageContractTests(
    StorageContractMixin, RealDirectoriesMixin, MetadataContractMixin, UniqueFactMixin, TestCase
):
    """The contract, for L{MemoryStorage}."""

    timeout = 10

    def make_storage(self) -> IStorage:
        self.memory = MemoryStorage(reactor)
        return self.memory

    def make_factory(self) -> IStorageFactory:
        return MemoryStorageFactory(self.memory)

    def seed_file(self, path: str, data: bytes) -> None:
        self.memory.add_file(path, data)

    def seed_directory(self, path: str) -> None:
        node = VirtualPath.root()
        for name in P(path).segments:
            node = node.child(name)
            made = self.memory.make_directory(node)
            made.addErrback(lambda failure: failure.trap(AlreadyExists))
            self.successResultOf(made)

    def content(self, path: str) -> bytes | None:
        try:
            return self.memory.read_file(path)
        except FTPError:
            return None


class FileStorageContractTests(
    StorageContractMixin, RealDirectoriesMixin, MetadataContractMixin, UniqueFactMixin, TestCase
):
    """The contract, for L{FileStorage} on a temporary directory."""

    timeout = 10

    def make_storage(self) -> IStorage:
        self.directory = tempfile.mkdtemp(prefix="exftp-contract-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        return FileStorage(self.directory, reactor)

    def make_factory(self) -> IStorageFactory:
        return FileStorageFactory(self.directory, reactor)

    def local(self, path: str) -> str:
        return os.path.join(self.directory, *P(path).segments)

    def seed_file(self, path: str, data: bytes) -> None:
        local = self.local(path)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        with open(local, "wb") as file:
            file.write(data)

    def seed_directory(self, path: str) -> None:
        os.makedirs(self.local(path), exist_ok=True)

    def content(self, path: str) -> bytes | None:
        try:
            with open(self.local(path), "rb") as file:
                return file.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None


class MemoryStorageClockTests(SynchronousTestCase):
    """L{MemoryStorage} takes its time from the reactor it is given, and needs no other."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.storage = MemoryStorage(self.clock)

    def test_times_come_from_the_reactor(self) -> None:
        self.storage.add_file("/a", b"x")
        self.clock.advance(50)
        self.successResultOf(self.storage.make_directory(P("/d")))
        assert self.successResultOf(self.storage.stat(P("/a"))).mtime == 1000
        assert self.successResultOf(self.storage.stat(P("/d"))).mtime == 1050
        target = self.successResultOf(self.storage.open_write(P("/a"), WriteMode.APPEND, 0))
        self.clock.advance(7)
        target.write(b"y")
        self.successResultOf(target.finish())
        info = self.successResultOf(self.storage.stat(P("/a")))
        assert (info.mtime, info.size) == (1057, 2)

    def test_reads_are_driven_by_the_reactor(self) -> None:
        self.storage.add_file("/big", BIG)
        source = self.successResultOf(self.storage.open_read(P("/big"), 0))
        consumer = RecordingConsumer()
        done = source.send(consumer)
        assert consumer.writes == 0
        self.clock.advance(0)
        assert bytes(consumer.data) == BIG
        assert self.successResultOf(done) == len(BIG)

    def test_add_file_refuses_to_bury_files_or_directories(self) -> None:
        self.storage.add_file("/d/f", b"x")
        with self.assertRaises(NotADirectory):
            self.storage.add_file("/d/f/g", b"y")
        with self.assertRaises(IsADirectory):
            self.storage.add_file("/d", b"y")
        with self.assertRaises(IsADirectory):
            self.storage.add_file("/", b"y")
        assert self.storage.read_file("/d/f") == b"x"

    def test_views_share_the_tree(self) -> None:
        self.storage.add_file("/home/alice/f", b"x")
        view = self.storage.view(P("/home/alice"))
        view.add_file("/g", b"y")
        assert self.storage.read_file("/home/alice/g") == b"y"
        assert [e.name for e in self.successResultOf(view.list(VirtualPath.root()))] == ["f", "g"]
