"""
L{FileStorage} beyond the common contract: staying inside the root whatever
links say, hidden and atomic uploads, backpressure, and errno mapping.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from test_storage_contract import RecordingConsumer, turns
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPullProducer, IPushProducer
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer, implementer_only

from exftp import (
    AlreadyExists,
    DirectoryNotEmpty,
    FileKind,
    FileNotFound,
    FileStorage,
    FileStorageFactory,
    FTPError,
    InsufficientStorage,
    InvalidPath,
    IsADirectory,
    NotADirectory,
    PermissionDenied,
    QuotaExceeded,
    StorageUnavailable,
    VirtualPath,
    WriteMode,
)
from exftp._interfaces import IPagedListing, Session
from exftp._listing import format_list
from exftp.storage import _local
from exftp.storage._local import TEMPORARY_PREFIX, storage_error
from exftp.storage._pool import StoragePool


def P(text: str) -> VirtualPath:
    return VirtualPath.parse(text)


async def eventually(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait until C{predicate} holds (worker threads take their time), at most C{seconds}."""
    deadline = reactor.seconds() + seconds
    while not predicate() and reactor.seconds() < deadline:
        await deferLater(reactor, 0.005, lambda: None)


@implementer(IPushProducer)
class FakePushProducer:
    """Records what its consumer asks of it."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def pauseProducing(self) -> None:
        self.events.append("pause")

    def resumeProducing(self) -> None:
        self.events.append("resume")

    def stopProducing(self) -> None:
        self.events.append("stop")


@implementer_only(IPullProducer)
class FakePullProducer(FakePushProducer):
    """A pull producer: it has no pauseProducing to call."""


def _open_descriptors_under(directory: str) -> list[str]:
    """The files under C{directory} that this process has open."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith(directory + os.sep):
            found.append(target)
    return found


class FileStorageTestCase(TestCase):
    timeout = 10

    def setUp(self) -> None:
        base = tempfile.mkdtemp(prefix="exftp-local-")
        self.addCleanup(shutil.rmtree, base, True)
        self.root = os.path.join(base, "root")
        self.outside = os.path.join(base, "outside")
        os.mkdir(self.root)
        os.mkdir(self.outside)
        self.write_local(os.path.join(self.outside, "secret.txt"), b"top secret")
        self.storage = FileStorage(self.root, reactor)

    def local(self, path: str) -> str:
        return os.path.join(self.root, *P(path).segments)

    def write_local(self, local: str, data: bytes) -> None:
        os.makedirs(os.path.dirname(local), exist_ok=True)
        with open(local, "wb") as file:
            file.write(data)

    def read_local(self, local: str) -> bytes:
        with open(local, "rb") as file:
            return file.read()

    def temporaries(self, directory: str | None = None) -> list[str]:
        return [n for n in os.listdir(directory or self.root) if n.startswith(TEMPORARY_PREFIX)]

    async def assertFails(self, deferred: Deferred[Any], *errors: type[FTPError]) -> FTPError:
        try:
            result = await deferred
        except FTPError as caught:
            self.assertIsInstance(caught, errors)
            return caught
        raise self.failureException(f"{errors} expected, got {result!r}")

    async def read(self, path: str, offset: int = 0) -> bytes:
        source = await self.storage.open_read(P(path), offset)
        consumer = RecordingConsumer()
        await source.send(consumer)
        await source.close()
        return bytes(consumer.data)


class SymbolicLinkTests(FileStorageTestCase):
    """No link inside the root leads a user out of it."""

    def setUp(self) -> None:
        super().setUp()
        os.symlink(self.outside, self.local("/out-dir"))
        os.symlink(os.path.join(self.outside, "secret.txt"), self.local("/out-file"))
        os.symlink("../outside", self.local("/relative-out"))
        os.symlink("/etc", self.local("/etc"))
        os.symlink(os.path.join(self.outside, "not-yet"), self.local("/dangling-out"))

    async def test_links_out_cannot_be_read(self) -> None:
        for path in ("/out-file", "/out-dir/secret.txt", "/relative-out/secret.txt", "/etc/passwd"):
            await self.assertFails(self.storage.open_read(P(path), 0), PermissionDenied, FileNotFound)
            await self.assertFails(self.storage.stat(P(path)), PermissionDenied, FileNotFound)
        await self.assertFails(self.storage.stat(P("/out-dir/missing")), FileNotFound)

    async def test_links_out_cannot_be_listed_into(self) -> None:
        for path in ("/out-dir", "/relative-out", "/etc"):
            await self.assertFails(self.storage.list(P(path)), PermissionDenied, FileNotFound)

    async def test_links_out_are_listed_as_links_without_their_targets_details(self) -> None:
        entries = {e.name: e for e in await self.storage.list(VirtualPath.root())}
        assert {name: e.kind for name, e in entries.items()} == {
            "out-dir": FileKind.SYMLINK,
            "out-file": FileKind.SYMLINK,
            "relative-out": FileKind.SYMLINK,
            "etc": FileKind.SYMLINK,
            "dangling-out": FileKind.SYMLINK,
        }
        assert entries["out-file"].size == 0

    async def test_links_out_cannot_be_written_through(self) -> None:
        for path, mode in [
            ("/out-file", WriteMode.TRUNCATE),
            ("/out-file", WriteMode.APPEND),
            ("/out-dir/secret.txt", WriteMode.TRUNCATE),
            ("/out-dir/new.txt", WriteMode.TRUNCATE),
            ("/relative-out/new.txt", WriteMode.TRUNCATE),
            ("/dangling-out", WriteMode.TRUNCATE),
        ]:
            await self.assertFails(self.storage.open_write(P(path), mode, 0), PermissionDenied)
        await self.assertFails(self.storage.make_directory(P("/out-dir/newdir")), PermissionDenied)
        await self.assertFails(self.storage.remove_file(P("/out-dir/secret.txt")), PermissionDenied)
        await self.assertFails(self.storage.rename(P("/out-dir/secret.txt"), P("/mine")), PermissionDenied)
        self.write_local(self.local("/inside"), b"x")
        await self.assertFails(self.storage.rename(P("/inside"), P("/out-dir/planted")), PermissionDenied)
        assert sorted(os.listdir(self.outside)) == ["secret.txt"]
        assert self.read_local(os.path.join(self.outside, "secret.txt")) == b"top secret"
        assert self.temporaries() == []

    async def test_links_out_cannot_have_their_metadata_changed(self) -> None:
        secret = os.path.join(self.outside, "secret.txt")
        os.chmod(secret, 0o644)
        before = os.stat(secret).st_mtime
        for path in ("/out-file", "/out-dir/secret.txt"):
            await self.assertFails(self.storage.set_permissions(P(path), 0o777), PermissionDenied)
            await self.assertFails(self.storage.set_mtime(P(path), 0.0), PermissionDenied)
        assert stat.S_IMODE(os.stat(secret).st_mode) == 0o644
        assert os.stat(secret).st_mtime == before

    async def test_link_loop_is_refused_not_a_server_error(self) -> None:
        os.symlink("loop-b", self.local("/loop-a"))
        os.symlink("loop-a", self.local("/loop-b"))
        await self.assertFails(self.storage.stat(P("/loop-a")), PermissionDenied, FileNotFound)

    async def test_links_inside_work(self) -> None:
        self.write_local(self.local("/real/file.txt"), b"real data")
        os.symlink("real/file.txt", self.local("/alias"))
        os.symlink(self.local("/real"), self.local("/dir-alias"))
        assert await self.read("/alias") == b"real data"
        assert await self.read("/dir-alias/file.txt") == b"real data"
        info = await self.storage.stat(P("/alias"))
        assert (info.kind, info.size) == (FileKind.FILE, 9)
        assert [e.name for e in await self.storage.list(P("/dir-alias"))] == ["file.txt"]
        listed = {e.name: e.kind for e in await self.storage.list(VirtualPath.root())}
        assert listed["alias"] is FileKind.FILE
        assert listed["dir-alias"] is FileKind.DIRECTORY

    async def test_upload_through_a_link_inside_updates_its_target(self) -> None:
        self.write_local(self.local("/real.txt"), b"one\n")
        os.symlink("real.txt", self.local("/alias"))
        target = await self.storage.open_write(P("/alias"), WriteMode.APPEND, 0)
        target.write(b"two\n")
        await target.finish()
        assert os.path.islink(self.local("/alias"))
        assert self.read_local(self.local("/real.txt")) == b"one\ntwo\n"

    async def test_a_linked_root_is_resolved(self) -> None:
        self.write_local(self.local("/f"), b"via link")
        link = os.path.join(os.path.dirname(self.root), "root-link")
        os.symlink(self.root, link)
        self.storage = FileStorage(link, reactor)
        assert await self.read("/f") == b"via link"
        assert [e.name for e in await self.storage.list(P("/out-dir/.."))] == sorted(os.listdir(self.root))


class TemporaryFileTests(FileStorageTestCase):
    """Uploads in progress are hidden and never half-visible."""

    async def test_upload_in_progress_is_hidden_and_not_addressable(self) -> None:
        self.write_local(self.local("/doc"), b"old")
        target = await self.storage.open_write(P("/doc"), WriteMode.TRUNCATE, 0)
        target.write(b"new content")
        await turns()
        [temporary] = self.temporaries()
        assert self.read_local(self.local("/doc")) == b"old"
        assert [e.name for e in await self.storage.list(VirtualPath.root())] == ["doc"]
        hidden = P("/" + temporary)
        await self.assertFails(self.storage.stat(hidden), FileNotFound)
        await self.assertFails(self.storage.open_read(hidden, 0), FileNotFound)
        await self.assertFails(self.storage.remove_file(hidden), FileNotFound)
        await self.assertFails(self.storage.rename(hidden, P("/stolen")), FileNotFound)
        await self.assertFails(self.storage.open_write(hidden, WriteMode.APPEND, 0), InvalidPath)
        await target.finish()
        assert self.read_local(self.local("/doc")) == b"new content"
        assert self.temporaries() == []

    async def test_reserved_names_cannot_be_made(self) -> None:
        self.write_local(self.local("/f"), b"x")
        name = P("/" + TEMPORARY_PREFIX + "mine")
        await self.assertFails(self.storage.make_directory(name), InvalidPath)
        await self.assertFails(self.storage.open_write(name, WriteMode.TRUNCATE, 0), InvalidPath)
        await self.assertFails(self.storage.rename(P("/f"), name), InvalidPath)
        await self.assertFails(self.storage.list(P("/" + TEMPORARY_PREFIX + "dir")), FileNotFound)
        assert os.listdir(self.root) == ["f"]

    async def test_abort_removes_the_temporary_file(self) -> None:
        self.write_local(self.local("/sub/doc"), b"keep")
        target = await self.storage.open_write(P("/sub/doc"), WriteMode.APPEND, 0)
        target.write(b"more" * 1000)
        await target.abort()
        assert self.temporaries(self.local("/sub")) == []
        assert self.read_local(self.local("/sub/doc")) == b"keep"
        assert _open_descriptors_under(self.root) == []

    async def test_cancelled_open_write_leaves_nothing_behind(self) -> None:
        self.write_local(self.local("/big"), b"x" * (2 * 1024 * 1024))
        opening = self.storage.open_write(P("/big"), WriteMode.APPEND, 0)
        opening.cancel()
        self.failureResultOf(opening)
        await eventually(lambda: not self.temporaries() and not _open_descriptors_under(self.root))
        assert self.temporaries() == []
        assert _open_descriptors_under(self.root) == []

    async def test_cancelled_finish_then_abort_leaves_nothing_behind(self) -> None:
        target = await self.storage.open_write(P("/new"), WriteMode.TRUNCATE, 0)
        for _ in range(20):
            target.write(b"y" * 65536)
        finishing = target.finish()
        finishing.cancel()
        self.failureResultOf(finishing)
        await target.abort()
        assert not os.path.exists(self.local("/new"))
        assert self.temporaries() == []
        assert _open_descriptors_under(self.root) == []

    async def test_finish_twice_fails_the_second_time(self) -> None:
        target = await self.storage.open_write(P("/f"), WriteMode.TRUNCATE, 0)
        target.write(b"once")
        await target.finish()
        await self.assertFails(target.finish(), StorageUnavailable)
        target.write(b"ignored")
        await target.abort()
        assert self.read_local(self.local("/f")) == b"once"

    async def test_commit_failure_is_reported_and_cleaned_up(self) -> None:
        os.mkdir(self.local("/d"))
        target = await self.storage.open_write(P("/d/f"), WriteMode.TRUNCATE, 0)
        target.write(b"data")
        await turns()
        shutil.rmtree(self.local("/d"))
        await self.assertFails(target.finish(), FileNotFound, StorageUnavailable)
        assert os.listdir(self.root) == []
        assert _open_descriptors_under(self.root) == []


class PermissionTests(FileStorageTestCase):
    async def test_new_upload_gets_the_umask_default(self) -> None:
        umask = os.umask(0o027)
        self.addCleanup(os.umask, umask)
        target = await self.storage.open_write(P("/new"), WriteMode.TRUNCATE, 0)
        await target.finish()
        assert stat.S_IMODE(os.stat(self.local("/new")).st_mode) == 0o640

    async def test_replacing_a_file_keeps_its_permissions(self) -> None:
        self.write_local(self.local("/private"), b"old")
        os.chmod(self.local("/private"), 0o600)
        target = await self.storage.open_write(P("/private"), WriteMode.TRUNCATE, 0)
        target.write(b"new")
        await target.finish()
        assert stat.S_IMODE(os.stat(self.local("/private")).st_mode) == 0o600


class SpecialFileTests(FileStorageTestCase):
    async def test_fifo_is_refused_without_blocking(self) -> None:
        os.mkfifo(self.local("/pipe"))
        await self.assertFails(self.storage.open_read(P("/pipe"), 0), PermissionDenied)
        await self.assertFails(self.storage.open_write(P("/pipe"), WriteMode.APPEND, 0), PermissionDenied)
        assert self.temporaries() == []

    async def test_undecodable_names_are_listed(self) -> None:
        with open(os.path.join(os.fsencode(self.root), b"caf\xe9"), "wb") as file:
            file.write(b"x")
        [entry] = await self.storage.list(VirtualPath.root())
        assert entry.name == "caf\udce9"
        assert format_list([entry], 0).endswith(b" caf?\r\n")


class EntryTests(FileStorageTestCase):
    async def test_entries_carry_what_stat_says(self) -> None:
        self.write_local(self.local("/a.txt"), b"12345")
        os.chmod(self.local("/a.txt"), 0o4640)
        os.mkdir(self.local("/sub"))
        os.link(self.local("/a.txt"), self.local("/b.txt"))
        a, b, sub = await self.storage.list(VirtualPath.root())
        st = os.stat(self.local("/a.txt"))
        assert (a.name, a.kind, a.size, a.permissions, a.links, a.mtime) == (
            "a.txt",
            FileKind.FILE,
            5,
            0o4640,
            2,
            st.st_mtime,
        )
        assert a.unique == f"{st.st_dev:x}g{st.st_ino:x}" == b.unique  # hard links are one object
        assert (sub.kind, sub.size, sub.permissions & 0o700) == (FileKind.DIRECTORY, 0, 0o700)
        assert sub.unique not in (None, a.unique)
        assert await self.storage.stat(P("/a.txt")) == a


class PagedListingTests(FileStorageTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.names = [f"f{index:04d}" for index in range(2 * _local._LIST_PAGE + 5)]
        for name in reversed(self.names):
            self.write_local(self.local("/big/" + name), b"x")
        self.write_local(self.local(f"/big/{TEMPORARY_PREFIX}up"), b"")

    async def pages(self, path: str) -> list[list[str]]:
        return [[info.name for info in page] async for page in self.storage.list_pages(P(path))]

    async def test_pages_in_name_order(self) -> None:
        assert IPagedListing.providedBy(self.storage)
        pages = await self.pages("/big")
        assert [len(page) for page in pages] == [_local._LIST_PAGE, _local._LIST_PAGE, 5]
        assert [name for page in pages for name in page] == self.names
        assert [info.name for info in await self.storage.list(P("/big"))] == self.names

    async def test_big_directories_are_read_in_worker_threads(self) -> None:
        threads: list[threading.Thread] = []

        def recorded(real: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any) -> Any:
                threads.append(threading.current_thread())
                return real(*args)

            return call

        self.patch(_local, "_entries", recorded(_local._entries))
        self.patch(_local, "_rest_of", recorded(_local._rest_of))
        await self.pages("/big")
        assert len(threads) == 4  # the rest of the names, then three pages
        assert threading.main_thread() not in threads
        # A small directory costs no thread hand-off.
        for index in range(_local._LIST_INLINE):
            self.write_local(self.local(f"/small/{index}"), b"")
        assert len((await self.pages("/small"))[0]) == _local._LIST_INLINE
        assert threads[4:] == [threading.main_thread()]

    async def test_entries_gone_between_pages_are_left_out(self) -> None:
        listed: list[str] = []
        async for page in self.storage.list_pages(P("/big")):
            listed += [info.name for info in page]
            if len(listed) == _local._LIST_PAGE:
                os.remove(self.local("/big/f1500"))
        assert listed == [name for name in self.names if name != "f1500"]

    async def test_a_directory_that_becomes_a_link_out_between_pages_is_refused(self) -> None:
        pages = self.storage.list_pages(P("/big"))
        assert len(await pages.__anext__()) == _local._LIST_PAGE
        os.rename(self.local("/big"), self.local("/moved"))
        os.symlink(self.outside, self.local("/big"))
        with self.assertRaises(PermissionDenied):
            await pages.__anext__()

    async def test_failures_are_ftp_errors(self) -> None:
        for path, error in [("/missing", FileNotFound), ("/big/f0000", NotADirectory)]:
            with self.assertRaises(error):
                await self.pages(path)
        os.symlink(self.outside, self.local("/out"))
        with self.assertRaises(PermissionDenied):
            await self.pages("/out")


class BackpressureTests(FileStorageTestCase):
    """A slow disk pauses the data connection instead of filling memory."""

    def setUp(self) -> None:
        super().setUp()
        self.patch(_local, "_HIGH_WATER", 1024)

    async def test_pauses_above_the_high_water_mark_and_resumes_when_drained(self) -> None:
        target = await self.storage.open_write(P("/up"), WriteMode.TRUNCATE, 0)
        producer = FakePushProducer()
        target.registerProducer(producer, True)
        target.write(b"a" * 10)  # goes to a thread at once
        target.write(b"b" * 600)  # queued behind it
        assert producer.events == []
        target.write(b"c" * 600)  # queued: over the mark
        assert producer.events == ["pause"]
        target.write(b"d" * 600)
        assert producer.events == ["pause"]
        await eventually(lambda: producer.events != ["pause"])
        assert producer.events == ["pause", "resume"]
        target.unregisterProducer()
        await target.finish()
        assert self.read_local(self.local("/up")) == b"a" * 10 + b"b" * 600 + b"c" * 600 + b"d" * 600

    async def test_pull_producers_are_not_paused(self) -> None:
        target = await self.storage.open_write(P("/up"), WriteMode.TRUNCATE, 0)
        producer = FakePullProducer()
        target.registerProducer(producer, False)
        target.write(b"a")
        target.write(b"b" * 4096)
        await target.finish()
        assert "pause" not in producer.events
        assert self.read_local(self.local("/up")) == b"a" + b"b" * 4096

    async def test_short_writes_keep_every_byte_in_order(self) -> None:
        real_writev = os.writev

        def short_writev(fd: int, buffers: list[Any]) -> int:
            # A file system that takes at most 1,000 bytes per call.
            return real_writev(fd, [b"".join(bytes(buffer) for buffer in buffers)[:1000]])

        self.patch(_local.os, "writev", short_writev)
        chunks = [os.urandom(size) for size in (1, 2500, 0, 4096, 999)]
        target = await self.storage.open_write(P("/short"), WriteMode.TRUNCATE, 0)
        for chunk in chunks:
            target.write(chunk)
        await target.finish()
        assert self.read_local(self.local("/short")) == b"".join(chunks)

    async def test_write_error_stops_the_producer_and_fails_finish(self) -> None:
        def no_space(self: Any, chunks: list[bytes], size: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(_local._FileWriter, "_write_all", no_space)
        self.write_local(self.local("/f"), b"old")
        target = await self.storage.open_write(P("/f"), WriteMode.TRUNCATE, 0)
        producer = FakePushProducer()
        target.registerProducer(producer, True)
        target.write(b"data")
        await self.assertFails(target.finish(), InsufficientStorage)
        assert producer.events == ["stop"]
        assert self.read_local(self.local("/f")) == b"old"
        assert self.temporaries() == []


class ErrnoMappingTests(SynchronousTestCase):
    def test_table(self) -> None:
        table = {
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
            errno.ELOOP: PermissionDenied,
            errno.EIO: StorageUnavailable,
        }
        for number, kind in table.items():
            error = storage_error(OSError(number, os.strerror(number)))
            assert type(error) is kind, (errno.errorcode[number], error)
        assert storage_error(OSError(errno.EROFS, "x")).message == "Read-only file system."
        assert type(storage_error(OSError("no errno"))) is StorageUnavailable

    def test_server_faults_are_4xx(self) -> None:
        assert not storage_error(OSError(errno.EIO, "x")).client_fault
        assert not storage_error(OSError(errno.ENOSPC, "x")).client_fault
        assert storage_error(OSError(errno.ENOENT, "x")).client_fault

    def test_real_errors_through_the_storage(self) -> None:
        root = tempfile.mkdtemp(prefix="exftp-errno-")
        self.addCleanup(shutil.rmtree, root, True)
        with open(os.path.join(root, "file"), "wb") as file:
            file.write(b"x")
        storage = FileStorage(root, reactor)
        # A file where a directory is expected: ENOTDIR from the kernel.
        assert isinstance(self.failureResultOf(storage.stat(P("/file/x"))).value, NotADirectory)
        assert isinstance(self.failureResultOf(storage.list(P("/file"))).value, NotADirectory)
        assert isinstance(self.failureResultOf(storage.make_directory(P("/file/x"))).value, NotADirectory)
        # A name longer than NAME_MAX: ENAMETOOLONG.
        assert isinstance(self.failureResultOf(storage.make_directory(P("/" + "n" * 300))).value, InvalidPath)
        # A non-empty directory: ENOTEMPTY.
        os.mkdir(os.path.join(root, "full"))
        os.mkdir(os.path.join(root, "full", "child"))
        assert isinstance(self.failureResultOf(storage.remove_directory(P("/full"))).value, DirectoryNotEmpty)


class ShieldedAbortTests(FileStorageTestCase):
    """The teardown that asks for an abort may stop waiting for it, not stop it."""

    async def test_cancelled_abort_still_removes_the_temporary_file(self) -> None:
        self.write_local(self.local("/old.bin"), b"old")
        release = threading.Event()
        real = _local._FileWriter._write_all

        def slow(writer: Any, chunks: list[bytes], size: int) -> None:
            release.wait(10)
            real(writer, chunks, size)

        self.patch(_local._FileWriter, "_write_all", slow)
        target = await self.storage.open_write(P("/old.bin"), WriteMode.TRUNCATE, 0)
        target.write(b"x" * (2 * 1024 * 1024))  # a batch: a write is running in a thread
        aborting = target.abort()
        aborting.cancel()
        assert self.successResultOf(aborting) is None  # no CancelledError for the teardown to log
        release.set()
        await eventually(lambda: not self.temporaries() and not _open_descriptors_under(self.root))
        assert self.temporaries() == []
        assert _open_descriptors_under(self.root) == []
        assert self.read_local(self.local("/old.bin")) == b"old"


class PoolTests(FileStorageTestCase):
    """Disk work has threads of its own, and work nobody waits for does not start."""

    def setUp(self) -> None:
        super().setUp()
        self.pool = StoragePool(reactor, threads=1)
        self.storage = FileStorage(self.root, reactor, pool=self.pool)
        self.release = threading.Event()
        self.addCleanup(self.release.set)

    def occupy(self) -> Deferred[bool]:
        """Keep the pool's only thread busy until C{self.release} is set."""
        return self.pool.run(self.release.wait, 10)

    async def test_a_busy_storage_pool_leaves_the_reactors_free(self) -> None:
        busy = self.occupy()
        assert await deferToThread(lambda: "looked up") == "looked up"  # as a host-name lookup would
        assert not busy.called
        self.release.set()
        assert await busy is True

    async def test_an_upload_cancelled_while_queued_never_starts(self) -> None:
        created: list[VirtualPath] = []
        real = FileStorage._create

        def recording(storage: FileStorage, path: VirtualPath, *args: Any) -> Any:
            created.append(path)
            return real(storage, path, *args)

        self.patch(FileStorage, "_create", recording)
        busy = self.occupy()
        opening = self.storage.open_write(P("/queued"), WriteMode.TRUNCATE, 0)
        opening.cancel()
        self.failureResultOf(opening)
        self.release.set()
        await busy
        await self.pool.run(lambda: None)  # every job queued before has had its turn
        assert created == []
        assert os.listdir(self.root) == []

    async def test_a_factorys_storages_share_its_pool(self) -> None:
        factory = FileStorageFactory(self.root, reactor, node="n1", threads=3)
        assert factory.pool.threads == 3
        storage = await factory.storage_for(Session("u", None))
        assert isinstance(storage, FileStorage) and storage._pool is factory.pool
        os.makedirs(self.local("/homes/u"))
        os.symlink("homes/u", self.local("/u-link"))
        os.symlink(self.outside, self.local("/out"))
        home = await factory.storage_for(Session("u", P("/u-link")))
        assert isinstance(home, FileStorage) and home.root == self.local("/homes/u")
        for missing in ("/out", "/nothing", "/homes/u/" + TEMPORARY_PREFIX + "x"):
            self.failureResultOf(factory.storage_for(Session("u", P(missing))), PermissionDenied, FileNotFound)
        with self.assertRaises(ValueError):
            StoragePool(reactor, threads=0)


class CopyTests(SynchronousTestCase):
    """Resuming or appending copies the old bytes in the kernel, in chunks that can be stopped."""

    def setUp(self) -> None:
        directory = tempfile.mkdtemp(prefix="exftp-copy-")
        self.addCleanup(shutil.rmtree, directory, True)
        self.data = os.urandom(100_000)
        with open(os.path.join(directory, "old"), "wb") as file:
            file.write(self.data)
        self.source = os.open(os.path.join(directory, "old"), os.O_RDONLY)
        self.target = os.open(os.path.join(directory, "new"), os.O_RDWR | os.O_CREAT)
        self.addCleanup(os.close, self.source)
        self.addCleanup(os.close, self.target)
        self.patch(_local, "_COPY_CHUNK", 4096)

    def copied(self) -> bytes:
        return os.pread(self.target, len(self.data) + 1, 0)

    def test_copies_all_or_a_prefix(self) -> None:
        assert _local._copy(self.source, self.target, None, threading.Event()) == len(self.data)
        assert self.copied() == self.data
        os.lseek(self.source, 0, os.SEEK_SET)
        os.ftruncate(self.target, 0)
        os.lseek(self.target, 0, os.SEEK_SET)
        assert _local._copy(self.source, self.target, 10_000, threading.Event()) == 10_000
        assert self.copied() == self.data[:10_000]

    def test_stops_between_chunks_once_asked(self) -> None:
        stopping = threading.Event()
        calls = []
        real = os.copy_file_range

        def counting(source: int, target: int, count: int) -> int:
            calls.append(count)
            if len(calls) == 3:
                stopping.set()  # the session went while the third chunk was copied
            return real(source, target, count)

        self.patch(_local.os, "copy_file_range", counting)
        with self.assertRaises(OSError) as stopped:
            _local._copy(self.source, self.target, None, stopping)
        assert stopped.exception.errno == errno.ECANCELED
        assert calls == [4096, 4096, 4096]

    def test_falls_back_to_reading_and_writing(self) -> None:
        def unsupported(source: int, target: int, count: int) -> int:
            raise OSError(errno.EXDEV, "cross-device")

        self.patch(_local.os, "copy_file_range", unsupported)
        assert _local._copy(self.source, self.target, None, threading.Event()) == len(self.data)
        assert self.copied() == self.data
