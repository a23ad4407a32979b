"""
Cleaning up after crashed servers: which leftovers may go (L{judge}), the
sweep of upload temporaries under a file root, the S3 upload journal and its
clean-up on moto, the start-up service and the on-demand command.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_s3_storage import DataConnection, MotoMixin, wait_until
from test_storage_contract import turns
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from exftp import (
    FileNotFound,
    FileStorage,
    FileStorageFactory,
    InvalidPath,
    MemoryStorageFactory,
    StorageUnavailable,
    VirtualPath,
    WriteMode,
)
from exftp._cleanup import (
    BOOT,
    CleanupReport,
    CleanupService,
    IStorageCleanup,
    Owner,
    check_node,
    default_node,
    judge,
)
from exftp.storage._local import TEMPORARY_PREFIX, sweep, temporary_name, temporary_owner
from exftp.storage._s3 import JOURNAL_FOLDER, S3Upload, journal_of, storage_factory_from_spec
from exftp.storage._s3client import S3Config, S3Error

HOUR = 3600.0


def P(text: str) -> VirtualPath:
    return VirtualPath.parse(text)


def dead_pid() -> int:
    """The id of a process that has just exited (and was reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# Which leftovers may go


def test_judge() -> None:
    mine = Owner("n1", os.getpid(), BOOT)
    earlier_run = Owner("n1", dead_pid(), "0badb007")
    same_pid_earlier_run = Owner("n1", os.getpid(), "0badb007")  # a container restarted: same pid
    alive_elsewhere = Owner("n1", os.getppid(), "0badb007")  # another process named n1 on this host
    other = Owner("n2", dead_pid(), "0badb007")
    assert judge(mine, 10 * HOUR, "n1", 0) == (False, None)  # never this very process's
    assert judge(earlier_run, 0, "n1", None) == (True, "left by node n1")
    assert judge(same_pid_earlier_run, 0, "n1", None) == (True, "left by node n1")
    keep, why = judge(alive_elsewhere, 10 * HOUR, "n1", HOUR)
    assert not keep and why == f"process {os.getppid()} of node n1 still runs on this host"
    assert judge(other, 10, "n1", HOUR) == (False, None)
    assert judge(other, 2 * HOUR, "n1", HOUR) == (True, "older than 3600 s")
    assert judge(other, 2 * HOUR, "n1", None) == (False, None)
    assert judge(None, 2 * HOUR, "n1", HOUR) == (True, "older than 3600 s")  # an older exftp's: by age only
    assert judge(None, 10, "n1", HOUR) == (False, None)
    assert judge(earlier_run, 0, None, None) == (False, None)


def test_node_names() -> None:
    assert check_node("web-1.example_2") == "web-1.example_2"
    for bad in ("", "a b", "a/b", "a:b", "x" * 65, "é"):
        with pytest.raises(ValueError):
            check_node(bad)
    node = default_node()
    assert check_node(node) == node
    assert str(os.getpid()) not in node.split("_")  # stable across restarts: no process id


def test_temporary_names_say_who_made_them() -> None:
    name = temporary_name("web-1")
    assert name.startswith(TEMPORARY_PREFIX)
    assert temporary_owner(name) == Owner("web-1", os.getpid(), BOOT)
    assert temporary_name("web-1") != name
    for foreign in (".exftp-upload-0123456789abcdef", ".exftp-upload-x-1-n", "other", TEMPORARY_PREFIX):
        assert temporary_owner(foreign) is None


# The sweep of a file root


class Tree:
    """A directory tree with upload temporaries of several makers."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def file(self, relative: str, age: float = 0.0, data: bytes = b"x") -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if age:
            stamp = time.time() - age
            os.utime(path, (stamp, stamp))
        return path

    def left(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file() or p.is_symlink())


def _leftover(node: str, pid: int, boot: str = "0badb007") -> str:
    return f"{TEMPORARY_PREFIX}{boot}00000000-{pid}-{node}"


def test_sweep_removes_only_what_judge_lets_go(tmp_path: Path) -> None:
    tree = Tree(tmp_path / "root")
    dead = dead_pid()
    earlier = tree.file(f"a/b/{_leftover('n1', dead)}")
    live_elsewhere = tree.file(f"a/{_leftover('n1', os.getppid())}")
    current = tree.file(f"{_leftover('n1', os.getpid(), BOOT)}", age=10 * HOUR)
    other_young = tree.file(f"c/{_leftover('n2', dead)}", age=60)
    other_old = tree.file(f"c/{_leftover('n2', dead)}x", age=10 * HOUR)  # unknown name format, old
    legacy_young = tree.file(f"{TEMPORARY_PREFIX}0123456789abcdef", age=60)
    user_file = tree.file("a/report.txt", age=10 * HOUR)
    look_alike = tree.file(".exftp-uploads-of-mine", age=10 * HOUR)
    reserved_dir_file = tree.file(f"{TEMPORARY_PREFIX}dir/{_leftover('n1', dead)}")
    outside = Tree(tmp_path / "outside").file(_leftover("n1", dead))
    (tree.root / "link").symlink_to(outside.parent)
    (tree.root / f"{TEMPORARY_PREFIX}link").symlink_to(outside)

    report = sweep(str(tree.root), "n1", HOUR, threading.Event())

    assert not earlier.exists() and not other_old.exists()
    for kept in (live_elsewhere, current, other_young, legacy_young, user_file, look_alike, reserved_dir_file, outside):
        assert kept.exists(), kept
    assert (tree.root / f"{TEMPORARY_PREFIX}link").is_symlink()
    assert sorted(report.removed) == sorted(
        [f"a/b/{earlier.name} (left by node n1)", f"c/{other_old.name} (older than 3600 s)"]
    )
    assert report.kept == [f"a/{live_elsewhere.name} (process {os.getppid()} of node n1 still runs on this host)"]
    assert report.failed == [] and report.complete


def test_sweep_stops_at_its_limit_and_when_told(tmp_path: Path) -> None:
    tree = Tree(tmp_path)
    for index in range(10):
        tree.file(f"d{index}/{_leftover('n1', dead_pid())}")
    partial = sweep(str(tmp_path), "n1", None, threading.Event(), limit=5)
    assert not partial.complete and len(partial.removed) < 10
    stopping = threading.Event()
    stopping.set()
    stopped = sweep(str(tmp_path), "n1", None, stopping)
    assert not stopped.complete and stopped.removed == []
    rest = sweep(str(tmp_path), "n1", None, threading.Event())
    assert rest.complete and len(partial.removed) + len(rest.removed) == 10


def test_sweep_reports_what_it_cannot_remove(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stuck = Tree(tmp_path).file(f"ro/{_leftover('n1', dead_pid())}")

    def refuse(path: str, **_: object) -> None:  # dir_fd: the sweep removes by descriptor
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "unlink", refuse)
    report = sweep(str(tmp_path), "n1", None, threading.Event())
    monkeypatch.undo()
    assert report.failed == [f"ro/{stuck.name} (Permission denied)"] and report.removed == []
    assert stuck.exists()


def _temporary_directory(case: TestCase) -> Path:
    """A fresh directory, removed after the test."""
    directory = tempfile.mkdtemp(prefix="exftp-cleanup-")
    case.addCleanup(shutil.rmtree, directory, True)
    return Path(directory)


class FileCleanupTests(TestCase):
    """L{FileStorageFactory.clean_up}, with the reactor's thread pool."""

    def setUp(self) -> None:
        self.root = _temporary_directory(self)
        self.factory = FileStorageFactory(str(self.root), reactor, node="n1")

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IStorageCleanup, self.factory))
        assert self.factory.node == "n1" and repr(self.factory) == f"file:{os.path.realpath(self.root)}"
        assert FileStorageFactory(str(self.root)).node == default_node()
        with self.assertRaises(ValueError):
            FileStorageFactory(str(self.root), node="a b")

    async def test_uploads_of_this_process_are_never_removed(self) -> None:
        storage = FileStorage(str(self.root), reactor, node="n1")
        upload = await storage.open_write(P("/doc"), WriteMode.TRUNCATE, 0)
        upload.write(b"in progress")
        (temporary,) = [p.name for p in self.root.iterdir()]
        assert temporary_owner(temporary) == Owner("n1", os.getpid(), BOOT)
        report = await self.factory.clean_up("n1", 0.0)
        assert report.removed == [] and report.complete
        await upload.finish()
        assert (self.root / "doc").read_bytes() == b"in progress"

    async def test_removes_leftovers_in_a_worker_thread(self) -> None:
        Tree(self.root).file(f"x/{_leftover('n1', dead_pid())}")
        threads: list[str] = []
        real = sweep.__globals__["_sweep_one"]

        def spy(*args: Any) -> None:
            threads.append(threading.current_thread().name)
            real(*args)

        sweep.__globals__["_sweep_one"] = spy
        self.addCleanup(sweep.__globals__.__setitem__, "_sweep_one", real)
        report = await self.factory.clean_up("n1", None)
        assert len(report.removed) == 1 and list(self.root.rglob(f"{TEMPORARY_PREFIX}*")) == []
        assert threads and threads[0] != threading.current_thread().name


class CleanupServiceTests(TestCase):
    async def test_runs_at_start_and_logs_what_it_did(self) -> None:
        root = _temporary_directory(self)
        Tree(root).file(f"a/{_leftover('n1', dead_pid())}")
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        service = CleanupService(FileStorageFactory(str(root), reactor, node="n1"), HOUR)
        service.startService()
        await wait_until(lambda: not list(root.rglob(f"{TEMPORARY_PREFIX}*")), "the leftover to be removed")
        await turns()
        texts = [event["log_format"] for event in events]
        assert "Clean-up of {storage}: removed {count} upload leftovers: {items}" in texts
        (removed,) = [event for event in events if "removed" in event["log_format"]]
        assert removed["count"] == 1 and "left by node n1" in removed["items"]
        assert service.stopService() is None

    def test_storages_without_clean_up_are_left_alone(self) -> None:
        service = CleanupService(MemoryStorageFactory())
        service.startService()
        assert service.stopService() is None

    def test_stopping_cancels_a_running_clean_up(self) -> None:
        @implementer(IStorageCleanup)
        class Slow:
            node = "n1"
            cancelled = False

            def clean_up(self, node: str | None, older_than: float | None) -> Deferred[CleanupReport]:
                return Deferred(lambda _: setattr(self, "cancelled", True))

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        slow = Slow()
        service = CleanupService(slow)
        service.startService()
        stopped = service.stopService()
        assert slow.cancelled and stopped is not None
        self.successResultOf(stopped)
        assert [event["log_level"].name for event in events][-1] == "info"
        assert "stopped: the server is shutting down" in events[-1]["log_format"]


# The S3 upload journal


class JournalTests(MotoMixin, TestCase):
    """The journal on moto: written while a multipart upload is open, read by the clean-up."""

    def setUp(self) -> None:
        super().setUp()
        self.storage = self.s3_storage()
        self.node = self.factory.config.node
        self.journal = JOURNAL_FOLDER

    def entries(self) -> list[str]:
        return [key for key in self.keys() if key.startswith(self.journal)]

    async def big_upload(self, path: str, blocks: int = 6 * 16) -> S3Upload:
        upload = await self.storage.open_write(P(path), WriteMode.TRUNCATE, 0)
        assert isinstance(upload, S3Upload)
        await DataConnection(upload).send(blocks)
        await wait_until(lambda: upload.parts_sent >= 1, "a part in S3")
        return upload

    async def test_an_open_multipart_upload_is_in_the_journal(self) -> None:
        upload = await self.big_upload("/big")
        (entry,) = self.entries()
        assert entry.startswith(f"{self.journal}{self.node}/{BOOT}-{os.getpid()}-")
        (open_upload,) = self.open_uploads()
        note = json.loads(self.get(entry) or b"")
        assert (note["key"], note["upload_id"], note["node"]) == ("big", open_upload["UploadId"], self.node)
        await upload.finish()
        assert self.entries() == [] and self.open_uploads() == []
        assert self.keys() == ["big"]
        aborted = await self.big_upload("/gone")
        assert len(self.entries()) == 1
        await aborted.abort()
        assert self.entries() == [] and self.open_uploads() == []

    async def test_the_journal_is_never_visible(self) -> None:
        await (await self.big_upload("/big")).abort()
        upload = await self.big_upload("/open")
        self.put("dir/file", b"x")
        names = [info.name for info in await self.storage.list(VirtualPath.root())]
        assert names == ["dir"]
        hidden = "/" + JOURNAL_FOLDER.rstrip("/")
        await self.assertFails(self.storage.stat(P(hidden)), FileNotFound)
        await self.assertFails(self.storage.list(P(hidden)), FileNotFound)
        await self.assertFails(self.storage.remove_directory(P(hidden)), FileNotFound)
        await self.assertFails(self.storage.rename(P(hidden), P("/stolen")), FileNotFound)
        for reserved in (hidden, "/dir/.exftp-upload-mine"):
            await self.assertFails(self.storage.make_directory(P(reserved)), InvalidPath)
            await self.assertFails(self.storage.open_write(P(reserved), WriteMode.TRUNCATE, 0), InvalidPath)
            await self.assertFails(self.storage.rename(P("/dir/file"), P(reserved)), InvalidPath)
        await upload.abort()

    def journal_entry(self, node: str, pid: int, boot: str, key: str, upload_id: str, body: bytes | None = None) -> str:
        entry = f"{self.journal}{node}/{boot}-{pid}-{os.urandom(16).hex()}"
        note = {"key": key, "upload_id": upload_id, "node": node, "pid": pid, "boot": boot}
        self.put(entry, json.dumps(note).encode() if body is None else body)
        return entry

    def start_upload(self, key: str) -> str:
        upload_id: str = self.s3.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        return upload_id

    async def test_clean_up_aborts_only_journaled_uploads_it_may(self) -> None:
        dead = dead_pid()
        crashed = self.start_upload("crashed")
        self.journal_entry("n1", dead, "0badb007", "crashed", crashed)
        other = self.start_upload("other")
        self.journal_entry("n2", dead, "0badb007", "other", other)
        self.start_upload("foreign")  # not exftp's: no journal entry
        current = self.start_upload("current")
        self.journal_entry("n1", os.getpid(), BOOT, "current", current)  # this very process's

        report = await self.factory.clean_up("n1", HOUR)
        assert report.removed == [f"crashed (multipart upload {crashed}, left by node n1)"]
        assert report.failed == [] and report.complete
        assert sorted(u["Key"] for u in self.open_uploads()) == ["current", "foreign", "other"]

        report = await self.factory.clean_up(None, 0.0)  # everyone's, whatever their age
        assert report.removed == [f"other (multipart upload {other}, older than 0 s)"]
        assert sorted(u["Key"] for u in self.open_uploads()) == ["current", "foreign"]
        assert len(self.entries()) == 1
        assert (await self.factory.clean_up(None, None)).removed == []

    async def test_clean_up_of_entries_it_cannot_use(self) -> None:
        dead = dead_pid()
        broken = self.journal_entry("n1", dead, "0badb007", "", "", body=b"not json")
        finished = self.journal_entry("n1", dead, "0badb007", "done", "no-such-upload")  # completed before a crash
        report = await self.factory.clean_up("n1", None)
        assert report.failed == [f"{broken} (unreadable journal entry, removed)"]
        assert report.removed == ["done (multipart upload no-such-upload, left by node n1)"]
        assert finished not in self.entries() and self.entries() == []

    async def test_a_failed_abort_is_tried_again_once_s3_answers(self) -> None:
        client = self.factory.client
        real_abort = client.abort_multipart
        failures = [S3Error(503, "ServiceUnavailable")]

        async def flaky_abort(key: str, upload_id: str) -> None:
            if failures:
                raise failures.pop()
            await real_abort(key, upload_id)

        client.abort_multipart = flaky_abort  # type: ignore[method-assign]
        upload = await self.big_upload("/big")
        await upload.abort()
        journal = journal_of(client, reactor)
        assert journal.leftovers == 1 and len(self.open_uploads()) == 1 and len(self.entries()) == 1
        await self.storage.list(VirtualPath.root())  # S3 answers: try again now
        await wait_until(lambda: journal.leftovers == 0, "the abort to be tried again")
        await wait_until(lambda: self.open_uploads() == [] and self.entries() == [], "no upload, no entry")

    async def test_an_upload_that_cannot_be_journaled_is_aborted(self) -> None:
        journal = journal_of(self.factory.client, reactor)

        async def refuse(key: str, upload_id: str) -> None:
            raise S3Error(403, "AccessDenied")

        journal.record = refuse  # type: ignore[method-assign]
        upload = await self.storage.open_write(P("/big"), WriteMode.TRUNCATE, 0)
        connection = DataConnection(upload)
        connection.send(6 * 16)
        await wait_until(lambda: connection.stopped, "the data connection to be stopped")
        await self.assertFails(upload.finish(), StorageUnavailable)
        assert self.open_uploads() == [] and self.keys() == []

    def test_factory_interface_and_node(self) -> None:
        self.assertTrue(verifyObject(IStorageCleanup, self.factory))
        assert self.factory.node == self.factory.config.node == default_node()
        assert repr(self.factory) == f"s3://{self.bucket}/"


def test_node_in_the_s3_spec() -> None:
    environ = {"AWS_REGION": "us-east-1"}
    assert storage_factory_from_spec("bucket=b:node=web-2", environ=environ).node == "web-2"
    assert storage_factory_from_spec("bucket=b", environ=environ, node="web-3").node == "web-3"
    assert storage_factory_from_spec("bucket=b:node=web-3", environ=environ, node="web-3").node == "web-3"
    with pytest.raises(ValueError, match="differs from the server's node name"):
        storage_factory_from_spec("bucket=b:node=web-2", environ=environ, node="web-3")
    with pytest.raises(ValueError, match="node"):
        storage_factory_from_spec("bucket=b:node=a b", environ=environ)
    with pytest.raises(ValueError):
        S3Config("b", node="host:1234")


# The on-demand command


def _command(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exftp._cleanup_cli", *arguments],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_command_without_anything_to_clean(tmp_path: Path) -> None:
    result = _command("--storage", "memory")
    assert result.returncode == 2 and "has nothing to clean up" in result.stdout
    result = _command("--root", str(tmp_path), "--node", "a b")
    assert result.returncode == 2 and "node names are" in result.stderr
    result = _command("--root", str(tmp_path / "missing"))
    assert result.returncode == 2 and "is not a directory" in result.stderr
    result = _command("--root", str(tmp_path))
    assert result.returncode == 0 and "no upload leftovers" in result.stdout


def test_host_name_is_the_default_node() -> None:
    assert default_node() == "".join(c if c.isalnum() or c in "._-" else "_" for c in socket.gethostname())[:64]
