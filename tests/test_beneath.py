"""
Containment that cannot race: a directory swapped for a link that leads out,
between the moment a path is checked and the moment it is used, must not
let anything be made, changed or read outside the root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from test_storage_contract import RecordingConsumer
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from exftp import FileStorage, FTPError, VirtualPath, WriteMode
from exftp.storage._beneath import LeadsOutside, open_root, walk
from exftp.storage._local import TEMPORARY_PREFIX, sweep


def P(text: str) -> VirtualPath:
    return VirtualPath.parse(text)


class _Tree:
    """A root and, next to it, a directory nothing may touch."""

    def make_tree(self, case: SynchronousTestCase) -> None:
        base = tempfile.mkdtemp(prefix="exftp-beneath-")
        case.addCleanup(shutil.rmtree, base, True)
        self.root = os.path.realpath(os.path.join(base, "root"))
        self.outside = os.path.join(base, "outside")
        os.mkdir(self.root)
        os.mkdir(self.outside)
        with open(os.path.join(self.outside, "secret.txt"), "wb") as file:
            file.write(b"top secret")
        self.outside_before = self.snapshot()

    def local(self, path: str) -> str:
        return os.path.join(self.root, *P(path).segments)

    def snapshot(self) -> dict[str, tuple[int, int, float]]:
        """Every entry outside the root with its size, mode and mtime."""
        found = {}
        for directory, names, files in os.walk(self.outside):
            for name in names + files:
                status = os.lstat(os.path.join(directory, name))
                found[os.path.join(directory, name)] = (status.st_size, status.st_mode, status.st_mtime)
        return found

    def swap_for_link_out(self, path: str) -> None:
        """Move the directory C{path} aside (inside the root) and put a link to the outside in its place."""
        os.rename(self.local(path), self.local(path) + "-moved")
        os.symlink(self.outside, self.local(path))


class WalkTests(SynchronousTestCase, _Tree):
    """L{walk} follows links inside the root and refuses those that lead out."""

    def setUp(self) -> None:
        self.make_tree(self)
        os.makedirs(self.local("/a/b"))
        with open(self.local("/a/b/f"), "wb") as file:
            file.write(b"f")
        os.symlink("../../a", self.local("/a/b/up"))
        os.symlink(self.root + "/a/b", self.local("/absolute"))
        os.symlink("../outside", self.local("/out"))
        os.symlink("b/../../..", self.local("/a/climb"))
        os.symlink("../../" + os.path.basename(self.root) + "/a", self.local("/a/back-in"))
        os.symlink("loop2", self.local("/loop1"))
        os.symlink("loop1", self.local("/loop2"))
        os.symlink("/etc", self.local("/etc"))
        self.fd = open_root(self.root)
        self.addCleanup(os.close, self.fd)

    def found(self, path: str, follow_last: bool = True) -> tuple[os.stat_result, str]:
        with walk(self.root, self.fd, P(path).segments, follow_last) as found:
            return os.fstat(found.parent), found.name

    def test_links_inside_are_followed(self) -> None:
        b = os.stat(self.local("/a/b"))
        for path in ("/a/b/f", "/absolute/f", "/a/b/up/b/f"):
            parent, name = self.found(path)
            assert (parent.st_ino, name) == (b.st_ino, "f")
        parent, name = self.found("/absolute")
        assert (parent.st_ino, name) == (os.stat(self.local("/a")).st_ino, "b")
        # Up out of the root and straight back in by its own name: still inside.
        parent, name = self.found("/a/back-in/b/f")
        assert (parent.st_ino, name) == (b.st_ino, "f")
        with self.assertRaises(LeadsOutside):
            self.found("/a/climb/outside")

    def test_the_last_link_is_kept_when_asked(self) -> None:
        parent, name = self.found("/absolute", follow_last=False)
        assert (parent.st_ino, name) == (os.stat(self.root).st_ino, "absolute")

    def test_links_out_are_refused(self) -> None:
        for path in ("/out", "/out/secret.txt", "/a/climb", "/etc/passwd"):
            with self.assertRaises(LeadsOutside):
                self.found(path)

    def test_loops_end(self) -> None:
        with self.assertRaises(OSError):
            self.found("/loop1")

    def test_reserved_names_are_not_found(self) -> None:
        from exftp import FileNotFound

        with self.assertRaises(FileNotFound):
            self.found("/" + TEMPORARY_PREFIX + "x")

    def test_a_root_reached_through_a_link_is_refused(self) -> None:
        link = self.root + "-link"
        os.symlink(self.root, link)
        with self.assertRaises(OSError):
            open_root(link)

    def test_descriptors_are_released(self) -> None:
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(20):
            for path in ("/a/b/f", "/a/b/up/b/f", "/absolute/missing"):
                self.found(path)
            for path in ("/out/secret.txt", "/a/climb"):
                with self.assertRaises(LeadsOutside):
                    self.found(path)
        assert len(os.listdir("/proc/self/fd")) == before


class SweepRaceTests(SynchronousTestCase, _Tree):
    """The start-up clean-up walks the tree by descriptors too."""

    def setUp(self) -> None:
        self.make_tree(self)
        os.mkdir(self.local("/x"))
        # Someone else's leftover-looking file, outside: old enough to go, were it inside.
        self.bait = os.path.join(self.outside, TEMPORARY_PREFIX + "00000000deadbeef-1-elsewhere")
        with open(self.bait, "wb") as file:
            file.write(b"not ours")
        self.outside_before = self.snapshot()

    def test_a_directory_swapped_for_a_link_after_it_was_listed_is_not_followed(self) -> None:
        tree = self

        class SwapOnSecondLook:
            looks = 0

            def is_set(self) -> bool:
                # The sweep looks before each directory: after listing the
                # root (which named "x" a directory), "x" becomes a link out.
                self.looks += 1
                if self.looks == 2:
                    tree.swap_for_link_out("/x")
                return False

        report = sweep(self.root, None, 0.0, SwapOnSecondLook())  # type: ignore[arg-type]
        assert report.removed == []
        assert os.path.exists(self.bait)
        assert self.snapshot() == self.outside_before


class RaceTests(TestCase, _Tree):
    """The check and the act are the same system calls: nothing to swap in between."""

    timeout = 20

    def setUp(self) -> None:
        self.make_tree(self)
        os.mkdir(self.local("/d"))
        with open(self.local("/d/old.txt"), "wb") as file:
            file.write(b"inside")
        self.storage = FileStorage(self.root, reactor)

    def swap_before_the_thread_runs(self, path: str) -> None:
        """Swap C{path} for a link out just before the storage's next job goes to a worker thread."""
        real: Callable[..., Deferred[Any]] = self.storage._run
        swapped = []

        def swapping(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
            if not swapped:
                swapped.append(True)
                self.swap_for_link_out(path)
            return real(function, *args, **kwargs)

        self.storage._run = swapping  # type: ignore[method-assign]

    async def upload(self, path: str, mode: WriteMode, data: bytes) -> None:
        try:
            target = await self.storage.open_write(P(path), mode, 0)
            target.write(data)
            await target.finish()
        except FTPError:
            pass

    async def test_stor_into_a_directory_swapped_while_waiting_for_a_thread(self) -> None:
        self.swap_before_the_thread_runs("/d")
        await self.upload("/d/planted.txt", WriteMode.TRUNCATE, b"planted")
        assert self.snapshot() == self.outside_before
        assert not os.path.exists(os.path.join(self.outside, "planted.txt"))

    async def test_appe_of_a_file_swapped_while_waiting_for_a_thread(self) -> None:
        self.swap_before_the_thread_runs("/d")
        await self.upload("/d/secret.txt", WriteMode.APPEND, b" leaked")
        assert self.snapshot() == self.outside_before
        for name in os.listdir(self.root):
            assert name in ("d", "d-moved")
        assert [n for n in os.listdir(self.local("/d-moved")) if n.startswith(TEMPORARY_PREFIX)] == []

    async def test_commit_after_a_swap_stays_inside(self) -> None:
        target = await self.storage.open_write(P("/d/new.txt"), WriteMode.TRUNCATE, 0)
        target.write(b"new")
        self.swap_for_link_out("/d")
        with self.assertRaises(FTPError):
            await target.finish()
        assert self.snapshot() == self.outside_before
        assert sorted(os.listdir(self.local("/d-moved"))) == ["old.txt"]

    async def test_reads_of_a_file_swapped_after_the_walk_stay_inside(self) -> None:
        source = await self.storage.open_read(P("/d/old.txt"), 0)
        self.swap_for_link_out("/d")
        consumer = RecordingConsumer()
        await source.send(consumer)
        await source.close()
        assert bytes(consumer.data) == b"inside"


class StressTests(TestCase, _Tree):
    """
    Uploads, renames and link swaps at once, from real threads: bounded in
    count and time, and nothing outside the root is ever made or changed.
    """

    timeout = 60
    ROUNDS = 300
    SECONDS = 10.0

    def setUp(self) -> None:
        self.make_tree(self)
        os.mkdir(self.local("/d"))
        self.storage = FileStorage(self.root, reactor)

    async def test_uploads_renames_and_swaps(self) -> None:
        stop = threading.Event()
        deadline = time.monotonic() + self.SECONDS
        swaps = [0]

        def swapper() -> None:
            # Swap /d for a link out and back, as fast as it goes.
            d, aside = self.local("/d"), self.local("/d-real")
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    os.rename(d, aside)
                    os.symlink(self.outside, d)
                    os.unlink(d)
                    os.rename(aside, d)
                    swaps[0] += 1
                except OSError:
                    pass

        thread = threading.Thread(target=swapper, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 5)
        self.addCleanup(stop.set)
        done = 0
        try:
            for index in range(self.ROUNDS):
                if time.monotonic() > deadline:
                    break
                uploads = [self.upload(f"/d/f{index}-{n}", n) for n in range(4)]
                for upload in uploads:
                    await upload
                await self.quietly(self.storage.rename(P(f"/d/f{index}-0"), P(f"/d/g{index}")))
                await self.quietly(self.storage.make_directory(P(f"/d/m{index}")))
                await self.quietly(self.storage.set_permissions(P(f"/d/f{index}-1"), 0o600))
                await self.quietly(self.storage.set_mtime(P(f"/d/f{index}-2"), 0.0))
                await self.quietly(self.storage.remove_file(P(f"/d/f{index}-3")))
                done += 1
        finally:
            stop.set()
        thread.join(5)
        assert done > 0 and swaps[0] > 0
        assert self.snapshot() == self.outside_before

    async def quietly(self, work: Deferred[Any]) -> None:
        with contextlib.suppress(FTPError):
            await work

    async def upload(self, path: str, n: int) -> None:
        mode = WriteMode.APPEND if n % 2 else WriteMode.TRUNCATE
        try:
            target = await self.storage.open_write(P(path), mode, 0)
        except FTPError:
            return
        target.write(b"x" * 100)
        try:
            await target.finish()
        except FTPError:
            await target.abort()
