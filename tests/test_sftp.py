"""
SFTP: the streams (reorder window, read-ahead), the ISFTPServer over a
storage, public keys in the users file and the webhook's answer, and the
SSH credentials checker through the shared login core. Deterministic, on a
Clock and the memory storage.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import tempfile
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.error import ValidPublicKey
from twisted.conch.interfaces import ISFTPServer
from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.filetransfer import (
    FX_FAILURE,
    FX_FILE_ALREADY_EXISTS,
    FX_NO_SUCH_FILE,
    FX_OP_UNSUPPORTED,
    FX_PERMISSION_DENIED,
    FXF_APPEND,
    FXF_CREAT,
    FXF_EXCL,
    FXF_READ,
    FXF_TRUNC,
    FXF_WRITE,
    FXP_HANDLE,
    FXP_INIT,
    FXP_MKDIR,
    FXP_OPEN,
    FXP_OPENDIR,
    FXP_STATUS,
    FXP_WRITE,
    SFTPError,
)
from twisted.conch.ssh.keys import Key
from twisted.cred.credentials import SSHPrivateKey, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from exftp import FileNotFound, LoginFailed, Session, UserLimits
from exftp._defender import Defender
from exftp._events import Action
from exftp._factory import FTPFactory
from exftp._interfaces import FileInfo, FileKind, IWriteFile
from exftp._limits import Limits, SessionLimits
from exftp._login import IPublicKeyAuthenticator
from exftp._paths import VirtualPath
from exftp.auth._http import parse_webhook_settings
from exftp.auth._users import parse_users
from exftp.sftp._auth import Checker
from exftp.sftp._filetransfer import MAX_HANDLES, FileTransfer, SFTPServer, long_name
from exftp.sftp._server import SSHTransport
from exftp.sftp._streams import OrderedWriter
from exftp.storage._memory import MemoryStorage, MemoryStorageFactory
from exftp.testing import MemoryAuthenticator


def _key() -> Key:
    return Key(ed25519.Ed25519PrivateKey.generate())


@implementer(IWriteFile)
class _Sink:
    """An upload target that records what it gets and can pause its producer."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.producer: Any = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.data += data

    def finish(self) -> Deferred[None]:
        raise NotImplementedError

    def abort(self) -> Deferred[None]:
        raise NotImplementedError


def _result(deferred: Deferred[Any]) -> Any:
    results: list[Any] = []
    deferred.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


class OrderedWriterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.sink = _Sink()
        self.writer = OrderedWriter(self.sink, 0, window=100)

    def test_in_order_writes_pass_straight_through(self) -> None:
        _result(self.writer.write(0, b"abc"))
        _result(self.writer.write(3, b"def"))
        self.assertEqual(bytes(self.sink.data), b"abcdef")
        self.assertIsNone(self.writer.gap())

    def test_out_of_order_writes_wait_for_the_gap(self) -> None:
        _result(self.writer.write(3, b"def"))
        _result(self.writer.write(6, b"ghi"))
        self.assertEqual(bytes(self.sink.data), b"")
        self.assertEqual(self.writer.gap(), 0)
        _result(self.writer.write(0, b"abc"))
        self.assertEqual(bytes(self.sink.data), b"abcdefghi")
        self.assertEqual(self.writer.written, 9)

    def test_a_write_beyond_the_window_is_refused(self) -> None:
        with self.assertRaises(SFTPError) as refused:
            self.writer.write(95, b"0123456789")
        self.assertEqual(refused.exception.code, FX_FAILURE)
        self.assertIn("too far ahead", refused.exception.message)

    def test_rewrites_and_overlaps_are_refused(self) -> None:
        _result(self.writer.write(0, b"abc"))
        with self.assertRaises(SFTPError):
            self.writer.write(1, b"x")
        _result(self.writer.write(10, b"0123"))
        with self.assertRaises(SFTPError):
            self.writer.write(8, b"xyz")

    def test_answers_wait_while_the_storage_pauses(self) -> None:
        self.sink.producer.pauseProducing()
        waiting = self.writer.write(0, b"abc")
        self.assertNoResult(waiting)
        self.assertEqual(bytes(self.sink.data), b"abc")  # taken, only the answer waits
        self.sink.producer.resumeProducing()
        self.assertIsNone(self.successResultOf(waiting))


class _NoMetadata:
    """A storage without L{IStorageMetadata}: the memory storage's other methods only."""

    def __init__(self, storage: MemoryStorage) -> None:
        self._storage = storage

    def __getattr__(self, name: str) -> Any:
        if name in ("set_mtime", "set_permissions") or name.startswith("__"):
            raise AttributeError(name)  # nor the memory storage's interface declarations
        return getattr(self._storage, name)


class _Context:
    def __init__(self, storage: Any, session: Session, clock: Clock) -> None:
        self.session = session
        self.storage = storage
        self.peer_host = "192.0.2.1"
        self.events: list[tuple[Action, bool, dict[str, Any]]] = []
        self.valid = True
        self.clock = clock
        self.pending: list[Deferred[Any]] = []
        self.limits: SessionLimits | None = None
        self.held: list[float] = []

    def emit(self, action: Action, ok: bool, reply: int, **details: Any) -> None:
        self.events.append((action, ok, {**details, "reply": reply}))

    async def still_valid(self) -> bool:
        return self.valid

    def seconds(self) -> float:
        return self.clock.seconds()

    def hold_reading(self, seconds: float) -> None:
        self.held.append(seconds)


class ServerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.storage = MemoryStorage(self.clock)
        self.context = _Context(self.storage, Session("alice"), self.clock)
        self.server = SFTPServer(self.context)

    def pump(self, deferred: Deferred[Any]) -> Any:
        for _ in range(50):
            if deferred.called:
                break
            self.clock.advance(0)
        return self.successResultOf(deferred)

    def refused(self, deferred_or_call: Any, code: int) -> str:
        if callable(deferred_or_call):
            try:
                deferred_or_call = deferred_or_call()
            except SFTPError as error:
                self.assertEqual(error.code, code)
                return error.message
        failure = self.failureResultOf(deferred_or_call, SFTPError)
        self.assertEqual(failure.value.code, code, failure.value.message)
        return failure.value.message

    def upload(self, name: bytes, data: bytes, chunk: int = 7) -> None:
        handle = self.pump(self.server.openFile(name, FXF_WRITE | FXF_CREAT | FXF_TRUNC, {}))
        offsets = list(range(0, len(data), chunk))
        for offset in reversed(offsets):  # all out of order: the window puts them right
            self.pump(handle.writeChunk(offset, data[offset:offset + chunk]))
        self.pump(handle.close())

    def download(self, name: bytes, chunk: int = 5) -> bytes:
        handle = self.pump(self.server.openFile(name, FXF_READ, {}))
        got, offset = bytearray(), 0
        while True:
            reading = handle.readChunk(offset, chunk)
            for _ in range(50):
                if reading.called:
                    break
                self.clock.advance(0)
            results: list[Any] = []
            reading.addBoth(results.append)
            if isinstance(results[0], Failure):
                results[0].trap(EOFError)
                break
            got += results[0]
            offset += len(results[0])
        self.pump(handle.close())
        return bytes(got)

    def test_interfaces(self) -> None:
        verifyObject(ISFTPServer, self.server)

    def limit(self, **limits: int) -> None:
        """Give the session the user's C{limits}, admitted by the core."""
        session = Session("alice", limits=UserLimits(**limits))
        self.context.limits = Limits(self.clock).admit(session, self.context.peer_host)

    def settle(self, deferred: Deferred[Any]) -> None:
        for _ in range(50):
            if deferred.called:
                break
            self.clock.advance(0)

    def test_a_write_past_the_largest_file_size_fails_and_keeps_nothing(self) -> None:
        self.upload(b"/kept", b"old!")
        self.limit(max_file_size=10)
        for name in (b"/new", b"/kept"):
            handle = self.pump(self.server.openFile(name, FXF_WRITE | FXF_CREAT | FXF_TRUNC, {}))
            self.pump(handle.writeChunk(0, b"0123456"))
            message = self.refused(handle.writeChunk(7, b"789ab"), FX_FAILURE)
            self.assertEqual(message, "File too large: the largest file allowed is 10 bytes.")
            self.refused(handle.writeChunk(12, b"c"), FX_FAILURE)
            message = self.refused(handle.close(), FX_FAILURE)
            self.assertIn("Upload not stored: File too large", message)
        self.assertEqual([(action, ok, details["reply"]) for action, ok, details in self.context.events][-2:],
                         [(Action.UPLOAD, False, 552), (Action.UPLOAD, False, 552)])
        self.refused(self.server.getAttrs(b"/new", True), FX_NO_SUCH_FILE)
        self.assertEqual(self.download(b"/kept"), b"old!")
        self.upload(b"/fits", b"0123456789")  # exactly the largest size
        self.assertEqual(self.download(b"/fits"), b"0123456789")

    def test_the_quota_refuses_what_does_not_fit_and_a_removal_makes_room(self) -> None:
        self.upload(b"/ten", b"0123456789")
        self.limit(quota_bytes=15)
        handle = self.pump(self.server.openFile(b"/more", FXF_WRITE | FXF_CREAT | FXF_TRUNC, {}))
        message = self.refused(handle.writeChunk(0, b"abcdefgh"), FX_FAILURE)
        self.assertIn("Quota exceeded", message)
        self.refused(handle.close(), FX_FAILURE)
        self.refused(self.server.getAttrs(b"/more", True), FX_NO_SUCH_FILE)
        self.pump(self.server.removeFile(b"/ten"))  # the usage is computed again
        self.upload(b"/more", b"abcdefgh")
        self.assertEqual(self.download(b"/more"), b"abcdefgh")

    def test_appends_count_against_the_quota_and_new_files_against_the_file_quota(self) -> None:
        self.upload(b"/full", b"0123456789")
        self.limit(quota_bytes=10)
        handle = self.pump(self.server.openFile(b"/full", FXF_WRITE | FXF_APPEND | FXF_CREAT, {}))
        self.assertIn("Quota exceeded", self.refused(handle.writeChunk(0, b"x"), FX_FAILURE))
        self.refused(handle.close(), FX_FAILURE)
        self.assertEqual(self.download(b"/full"), b"0123456789")
        self.limit(quota_files=1)  # refused at OPEN: the file could not be created at all
        message = self.refused(self.server.openFile(b"/two", FXF_WRITE | FXF_CREAT | FXF_TRUNC, {}), FX_FAILURE)
        self.assertEqual(message, "Quota exceeded: at most 1 files.")

    def test_write_replies_wait_for_the_upload_rate(self) -> None:
        self.limit(upload_rate=1000)
        handle = self.pump(self.server.openFile(b"/paced", FXF_WRITE | FXF_CREAT | FXF_TRUNC, {}))
        data = os.urandom(3000)  # 3 seconds' worth
        writing = handle.writeChunk(0, data)
        self.settle(writing)
        self.assertEqual(self.context.held, [3.0])  # and the connection is not read meanwhile
        self.clock.advance(2.9)
        self.assertNoResult(writing)
        self.clock.advance(0.2)
        self.successResultOf(writing)
        self.pump(handle.close())
        self.assertEqual(self.download(b"/paced", chunk=64 * 1024), data)

    def test_the_upload_rate_is_shared_with_the_users_ftp_sessions(self) -> None:
        registry = Limits(self.clock)
        session = Session("alice", limits=UserLimits(upload_rate=1000))
        ftp = registry.admit(session, None)
        self.context.limits = registry.admit(session, None)
        limiter = ftp.rate(upload=True)
        assert limiter is not None
        limiter.take(2000)  # an FTP upload of the user's moved 2 seconds' worth
        handle = self.pump(self.server.openFile(b"/shared", FXF_WRITE | FXF_CREAT | FXF_TRUNC, {}))
        writing = handle.writeChunk(0, b"x" * 1000)
        self.settle(writing)
        self.clock.advance(2.9)
        self.assertNoResult(writing)
        self.clock.advance(0.2)
        self.successResultOf(writing)

    def test_read_replies_wait_for_the_download_rate_until_the_subsystem_ends(self) -> None:
        data = os.urandom(5000)
        self.upload(b"/big", data, chunk=1000)
        self.limit(download_rate=1000)
        handle = self.pump(self.server.openFile(b"/big", FXF_READ, {}))
        reading = handle.readChunk(3000, 2000)  # 2 seconds' worth
        self.settle(reading)
        self.clock.advance(1.9)
        self.assertNoResult(reading)
        self.clock.advance(0.2)
        self.assertEqual(self.successResultOf(reading), data[3000:])
        self.assertEqual(self.context.held, [])  # read requests are small: only the replies wait
        held = handle.readChunk(0, 1000)
        self.settle(held)
        self.assertNoResult(held)
        self.server.stop_pacing()
        self.failureResultOf(held, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_upload_then_download_byte_exact(self) -> None:
        data = os.urandom(1000)
        self.upload(b"/f.bin", data)
        self.assertEqual(self.download(b"f.bin"), data)
        self.assertEqual(self.pump(self.server.getAttrs(b"/f.bin", True))["size"], 1000)
        actions = [(action, ok) for action, ok, _ in self.context.events]
        self.assertEqual(actions, [(Action.UPLOAD, True), (Action.DOWNLOAD, True)])

    def test_reads_at_any_offset(self) -> None:
        data = os.urandom(5000)
        self.upload(b"/r", data, chunk=1000)
        handle = self.pump(self.server.openFile(b"/r", FXF_READ, {}))
        for offset, length in [(4000, 100), (10, 20), (30, 5), (100, 50), (4990, 100)]:
            self.assertEqual(self.pump(handle.readChunk(offset, length)), data[offset:offset + length])
        past = handle.readChunk(6000, 10)
        for _ in range(20):
            self.clock.advance(0)
        self.failureResultOf(past, EOFError)
        self.pump(handle.close())

    def test_an_upload_is_visible_only_once_closed(self) -> None:
        handle = self.pump(self.server.openFile(b"/new", FXF_WRITE | FXF_CREAT | FXF_TRUNC, {}))
        self.pump(handle.writeChunk(0, b"partial"))
        self.refused(self.server.getAttrs(b"/new", True), FX_NO_SUCH_FILE)
        self.pump(handle.abort())
        self.refused(self.server.getAttrs(b"/new", True), FX_NO_SUCH_FILE)

    def test_a_gap_at_close_stores_nothing(self) -> None:
        handle = self.pump(self.server.openFile(b"/gap", FXF_WRITE | FXF_CREAT | FXF_TRUNC, {}))
        self.pump(handle.writeChunk(10, b"late"))
        message = self.refused(handle.close(), FX_FAILURE)
        self.assertIn("offset 0 never arrived", message)
        self.refused(self.server.getAttrs(b"/gap", True), FX_NO_SUCH_FILE)

    def test_resumed_upload_and_opens_without_writes(self) -> None:
        self.upload(b"/res", b"0123456789")
        handle = self.pump(self.server.openFile(b"/res", FXF_WRITE, {}))  # reput: no truncation
        self.pump(handle.close())
        self.assertEqual(self.download(b"/res"), b"0123456789")
        handle = self.pump(self.server.openFile(b"/res", FXF_WRITE, {}))
        self.pump(handle.writeChunk(10, b"abc"))
        self.pump(handle.close())
        self.assertEqual(self.download(b"/res"), b"0123456789abc")
        handle = self.pump(self.server.openFile(b"/empty", FXF_WRITE | FXF_CREAT, {}))
        self.pump(handle.close())
        self.assertEqual(self.pump(self.server.getAttrs(b"/empty", True))["size"], 0)
        self.refused(self.server.openFile(b"/absent", FXF_WRITE, {}), FX_NO_SUCH_FILE)

    def test_exclusive_create_of_an_existing_file(self) -> None:
        self.upload(b"/x", b"1")
        self.refused(self.server.openFile(b"/x", FXF_WRITE | FXF_CREAT | FXF_EXCL, {}), FX_FILE_ALREADY_EXISTS)

    def test_read_write_at_once_is_unsupported(self) -> None:
        self.refused(lambda: self.server.openFile(b"/x", FXF_READ | FXF_WRITE, {}), FX_OP_UNSUPPORTED)

    def test_missing_files_and_directories(self) -> None:
        self.refused(self.server.openFile(b"/none", FXF_READ, {}), FX_NO_SUCH_FILE)
        self.refused(self.server.removeFile(b"/none"), FX_NO_SUCH_FILE)
        self.refused(self.server.openDirectory(b"/none"), FX_NO_SUCH_FILE)

    def test_directories_rename_and_listing(self) -> None:
        self.pump(self.server.makeDirectory(b"/d", {}))
        self.upload(b"/d/a", b"abc")
        self.upload(b"/d/b", b"x")
        self.refused(self.server.renameFile(b"/d/a", b"/d/b"), FX_FAILURE)  # v3 rename does not replace
        self.assertIsNone(self.pump(self.server.extendedRequest(
            b"posix-rename@openssh.com", b"\x00\x00\x00\x04/d/a\x00\x00\x00\x04/d/b")))
        listing = self.pump(self.server.openDirectory(b"/d"))
        names = [name for name, _, _ in listing]
        self.assertEqual(names, [b"b"])
        self.assertTrue(next(iter(listing))[1].startswith(b"-rw-r--r--"))
        self.assertEqual(self.download(b"/d/b"), b"abc")
        self.pump(self.server.removeFile(b"/d/b"))
        self.pump(self.server.removeDirectory(b"/d"))
        self.assertEqual(self.server.realPath(b"a/../../b/."), b"/b")

    def test_every_change_needs_its_letter(self) -> None:
        self.upload(b"/f", b"data")
        self.pump(self.server.makeDirectory(b"/d", {}))
        self.context.session = Session("alice", read_only=True)
        denied = FX_PERMISSION_DENIED
        self.refused(self.server.openFile(b"/f", FXF_WRITE | FXF_TRUNC, {}), denied)
        self.refused(self.server.openFile(b"/g", FXF_WRITE | FXF_CREAT, {}), denied)
        self.refused(self.server.removeFile(b"/f"), denied)
        self.refused(self.server.renameFile(b"/f", b"/g"), denied)
        self.refused(self.server.makeDirectory(b"/e", {}), denied)
        self.refused(self.server.removeDirectory(b"/d"), denied)
        self.refused(self.server.setAttrs(b"/f", {"permissions": 0o600}), denied)
        self.refused(self.server.setAttrs(b"/f", {"atime": 1, "mtime": 1}), denied)
        self.assertEqual(self.download(b"/f"), b"data")
        self.context.session = Session("alice", permissions=frozenset("w"))
        self.refused(self.server.openFile(b"/f", FXF_READ, {}), denied)
        self.refused(self.server.getAttrs(b"/f", True), denied)
        self.refused(self.server.openDirectory(b"/"), denied)

    def test_set_mtime_and_permissions(self) -> None:
        self.upload(b"/f", b"data")
        self.pump(self.server.setAttrs(b"/f", {"atime": 5, "mtime": 1_600_000_000, "permissions": 0o100600}))
        attrs = self.pump(self.server.getAttrs(b"/f", True))
        self.assertEqual(attrs["mtime"], 1_600_000_000)
        self.assertEqual(attrs["permissions"] & 0o777, 0o600)
        self.refused(self.server.setAttrs(b"/f", {"uid": 0, "gid": 0}), FX_OP_UNSUPPORTED)
        self.refused(self.server.setAttrs(b"/f", {"size": 1}), FX_OP_UNSUPPORTED)

    def test_storages_without_metadata(self) -> None:
        self.upload(b"/f", b"data")
        self.context.storage = _NoMetadata(self.storage)
        self.refused(self.server.setAttrs(b"/f", {"atime": 1, "mtime": 1}), FX_OP_UNSUPPORTED)
        self.refused(self.server.setAttrs(b"/f", {"permissions": 0o100600}), FX_OP_UNSUPPORTED)
        self.pump(self.server.setAttrs(b"/f", {"permissions": 0o100644}))  # what every file shows: no change
        handle = self.pump(self.server.openFile(b"/g", FXF_WRITE | FXF_CREAT | FXF_TRUNC, {}))
        self.pump(handle.setAttrs({"permissions": 0o644}))  # scp after an upload
        self.pump(handle.close())

    def test_a_session_no_longer_valid_is_refused(self) -> None:
        self.context.valid = False
        self.refused(self.server.openDirectory(b"/"), FX_PERMISSION_DENIED)

    def test_extensions(self) -> None:
        limits = self.pump(self.server.extendedRequest(b"limits@openssh.com", b""))
        self.assertEqual(len(limits), 32)
        self.context.session = Session("alice", limits=UserLimits(quota_bytes=4096 * 10))
        statvfs = self.pump(self.server.extendedRequest(b"statvfs@openssh.com", b"\x00\x00\x00\x01/"))
        self.assertEqual(int.from_bytes(statvfs[16:24], "big"), 10)
        self.refused(lambda: self.server.extendedRequest(b"hardlink@openssh.com", b""), FX_OP_UNSUPPORTED)
        self.refused(lambda: self.server.readLink(b"/x"), FX_OP_UNSUPPORTED)

    def test_long_name(self) -> None:
        line = long_name(FileInfo("n", FileKind.DIRECTORY, size=3, mtime=0, permissions=0o755), 1_700_000_000)
        self.assertEqual(line.split()[0], "drwxr-xr-x")
        self.assertTrue(line.endswith("Jan 01  1970 n"))


class UsersFileKeysTests(SynchronousTestCase):
    def test_authorized_keys_are_read(self) -> None:
        line = _key().public().toString("openssh").decode() + " me@host"
        users = parse_users({"users": {"a": {"password": "$2b$04$" + "a" * 53, "authorized_keys": [line]}}})
        self.assertEqual(users.users["a"].authorized_keys, (line,))

    def test_bad_authorized_keys_are_refused_clearly(self) -> None:
        for bad in ["ssh-ed25519", ["not a key"], [1]]:
            with self.assertRaises(ValueError) as error:
                parse_users({"users": {"a": {"password": "$2b$04$" + "a" * 53, "authorized_keys": bad}}})
            self.assertIn("users.a.authorized_keys", str(error.exception))

    def test_webhook_settings(self) -> None:
        settings = parse_webhook_settings(b'{"authorized_keys": ["ssh-ed25519 AAAA"]}', ["application/json"])
        self.assertEqual(settings.authorized_keys, ("ssh-ed25519 AAAA",))
        with self.assertRaises(ValueError):
            parse_webhook_settings(b'{"authorized_keys": "ssh-ed25519 AAAA"}', ["application/json"])


@implementer(IPublicKeyAuthenticator)
class _KeyedAuthenticator(MemoryAuthenticator):
    def __init__(self, keys: dict[str, list[str]]) -> None:
        super().__init__({"alice": "secret"})
        self.keys = keys

    def authorized_keys(self, username: str) -> Deferred[Any]:
        if username not in self.keys:
            return fail(LoginFailed())
        return succeed((Session(username), self.keys[username]))


class _Connection:
    def __init__(self) -> None:
        self.peer_host = "192.0.2.7"
        self.login_failures = 0
        self.disconnected: list[tuple[int, str]] = []
        self.failed: list[str] = []

    def disconnect(self, code: int, text: str) -> None:
        self.disconnected.append((code, text))

    def login_failed_event(self, username: str) -> None:
        self.failed.append(username)

    def admitted_limits(self, limits: Any) -> None:
        self.limits = limits


class CheckerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.key = _key()
        line = self.key.public().toString("openssh").decode()
        self.factory = FTPFactory(_KeyedAuthenticator({"alice": [line]}), MemoryStorageFactory(),
                                  reactor=self.clock, login_failure_delay=1.0, max_login_failures=3,
                                  defender=Defender(threshold=2))
        self.connection = _Connection()
        self.checker = Checker(self.factory, self.connection)  # type: ignore[arg-type]

    def check(self, credentials: Any) -> Deferred[Any]:
        return self.checker.requestAvatarId(credentials)

    def test_password_login(self) -> None:
        logged_in = self.successResultOf(self.check(UsernamePassword(b"alice", b"secret")))
        self.assertEqual(logged_in.session.username, "alice")

    def test_wrong_password_is_delayed_counted_and_banned(self) -> None:
        refused = self.check(UsernamePassword(b"alice", b"nope"))
        self.assertNoResult(refused)  # the failure delay
        self.clock.advance(1.0)
        self.failureResultOf(refused, UnauthorizedLogin)
        self.assertEqual((self.connection.login_failures, self.connection.failed), (1, ["alice"]))
        second = self.check(UsernamePassword(b"alice", b"nope"))
        self.clock.advance(1.0)
        self.failureResultOf(second)
        self.assertEqual(self.connection.disconnected[0][0], 7)  # banned: service not available
        # Banned: even the right password is refused at once, and nobody is asked.
        self.failureResultOf(self.check(UsernamePassword(b"alice", b"secret")))

    def test_key_query_is_answered_without_counting(self) -> None:
        blob = self.key.public().blob()
        query = self.check(SSHPrivateKey(b"alice", b"ssh-ed25519", blob, None, None))
        self.failureResultOf(query, ValidPublicKey)
        other = _key().public().blob()
        self.failureResultOf(self.check(SSHPrivateKey(b"alice", b"ssh-ed25519", other, None, None)),
                             UnauthorizedLogin)
        self.assertEqual(self.connection.login_failures, 0)

    def test_signed_key_login(self) -> None:
        blob, data = self.key.public().blob(), b"session data"
        signed = SSHPrivateKey(b"alice", b"ssh-ed25519", blob, data, self.key.sign(data))
        self.assertEqual(self.successResultOf(self.check(signed)).session.username, "alice")

    def test_a_bad_signature_is_a_counted_failure(self) -> None:
        blob = self.key.public().blob()
        forged = SSHPrivateKey(b"alice", b"ssh-ed25519", blob, b"session data", _key().sign(b"session data"))
        refused = self.check(forged)
        self.clock.advance(1.0)
        self.failureResultOf(refused, UnauthorizedLogin)
        self.assertEqual(self.connection.login_failures, 1)


class ReadmeTests(SynchronousTestCase):
    """The README's SFTP section: its users file parses, its keys are keys, its options exist."""

    def section(self) -> str:
        text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
        start = text.index("\n### SFTP\n")
        return text[start:text.index("\n### ", start + 1)]

    def test_users_file_example(self) -> None:
        [toml] = re.findall(r"```toml\n(.*?)```", self.section(), re.S)
        users = parse_users(tomllib.loads(toml))
        for line in users.users["alice"].authorized_keys:
            self.assertTrue(Key.fromString(line.encode().rsplit(b" ", 1)[0]).isPublic())

    def test_options_exist(self) -> None:
        from exftp._tap import Options

        names = set(re.findall(r"`--([a-z-]+)", self.section()))
        self.assertLessEqual({"sftp", "host-key", "state-dir"}, names)
        known = {name for name, *_ in Options.optParameters + Options.optFlags}
        known |= {name[4:].replace("_", "-") for name in dir(Options) if name.startswith("opt_")}
        self.assertLessEqual(names, known)
        options = Options(environ={})
        options.parseOptions(["--storage", "memory", "--sftp", "tcp:0", "--state-dir", _temporary(self)])
        self.assertEqual(options["ports"], [])  # SFTP only
        self.assertEqual(len(options["ssh_host_keys"]), 1)


class TooManyFailuresTests(SynchronousTestCase):
    def test_the_last_attempt_disconnects(self) -> None:
        clock = Clock()
        factory = FTPFactory(MemoryAuthenticator({"alice": "secret"}), MemoryStorageFactory(), reactor=clock,
                             login_failure_delay=0.5, max_login_failures=2, defender=None)
        connection = _Connection()
        checker = Checker(factory, connection)  # type: ignore[arg-type]
        for _ in range(2):
            refused = checker.requestAvatarId(UsernamePassword(b"alice", b"wrong"))
            clock.advance(0.5)
            self.failureResultOf(refused)
        self.assertEqual([code for code, _ in connection.disconnected], [14])
        self.assertIn("too many failures", connection.disconnected[0][1])


class FramingTests(SynchronousTestCase):
    """The SFTP protocol object: packet size bound, handle limit, padded writes, aborts on loss."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.context = _Context(MemoryStorage(self.clock), Session("alice"), self.clock)
        self.context.transfers = set()  # type: ignore[attr-defined]
        self.protocol = FileTransfer(avatar=self.context)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(_packet(FXP_INIT, struct.pack("!L", 3)))
        self.transport.clear()

    def replies(self) -> list[tuple[int, bytes]]:
        data, found = self.transport.value(), []
        while data:
            (length,) = struct.unpack("!L", data[:4])
            found.append((data[4], data[5:4 + length]))
            data = data[4 + length:]
        self.transport.clear()
        return found

    def test_an_oversized_packet_closes_the_session(self) -> None:
        self.protocol.dataReceived(struct.pack("!LB", 10 * 1024 * 1024, FXP_WRITE) + b"x" * 1000)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.protocol.buf, b"")

    def test_open_handles_are_limited(self) -> None:
        self.protocol.dataReceived(_packet(FXP_MKDIR, b"\x00\x00\x00\x01" + NS(b"/d") + b"\x00" * 4))
        for number in range(MAX_HANDLES + 1):
            self.protocol.dataReceived(_packet(FXP_OPENDIR, struct.pack("!L", number + 2) + NS(b"/d")))
        kinds = [kind for kind, _ in self.replies()]
        self.assertEqual(kinds.count(FXP_HANDLE), MAX_HANDLES)
        self.assertEqual(kinds[-1], FXP_STATUS)

    def test_padded_write_and_abort_on_connection_loss(self) -> None:
        request = struct.pack("!L", 7) + NS(b"/up") + struct.pack("!L", FXF_WRITE | FXF_CREAT | FXF_TRUNC)
        self.protocol.dataReceived(_packet(FXP_OPEN, request + b"\x00" * 4))
        [(kind, body)] = self.replies()
        self.assertEqual(kind, FXP_HANDLE)
        handle = getNS(body[4:])[0]
        padded = struct.pack("!L", 8) + NS(handle) + struct.pack("!Q", 0) + NS(b"abc") + b"padding"
        self.protocol.dataReceived(_packet(FXP_WRITE, padded))
        [(kind, body)] = self.replies()
        self.assertEqual((kind, struct.unpack("!L", body[4:8])[0]), (FXP_STATUS, 0))
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.context.pending), 1)
        # Discarded, not committed.
        self.failureResultOf(maybeDeferred(self.context.storage.stat, VirtualPath.parse("/up")), FileNotFound)


def _packet(kind: int, payload: bytes) -> bytes:
    return struct.pack("!LB", len(payload) + 1, kind) + payload


class OptionsTests(SynchronousTestCase):
    def parse(self, *arguments: str) -> Any:
        from exftp._tap import Options

        options = Options(environ={})
        options.parseOptions(["--storage", "memory", "--state-dir", self.state, *arguments])
        return options

    def setUp(self) -> None:
        self.state = _temporary(self)

    def refused(self, *arguments: str) -> str:
        from twisted.python.usage import UsageError

        with self.assertRaises(UsageError) as refused:
            self.parse(*arguments)
        return str(refused.exception)

    def test_beside_ftp_and_generated_key_reused(self) -> None:
        first = self.parse("--port", "tcp:0", "--sftp", "tcp:0", "--sftp", "tcp:0")
        self.assertEqual((len(first["ports"]), len(first["sftp_ports"])), (1, 2))
        self.assertTrue(first["ssh_host_key_generated"])
        again = self.parse("--sftp", "tcp:0")
        self.assertFalse(again["ssh_host_key_generated"])
        self.assertEqual(again["ssh_host_keys"][0].public().blob(), first["ssh_host_keys"][0].public().blob())

    def test_haproxy_needs_a_trusted_proxy(self) -> None:
        self.assertIn("--sftp haproxy:tcp:0", self.refused("--sftp", "haproxy:tcp:0"))
        options = self.parse("--sftp", "haproxy:tcp:0", "--trusted-proxy", "127.0.0.1")
        self.assertEqual(options["sftp_ports"], ["haproxy:tcp:0"])

    def test_bad_host_keys(self) -> None:
        public = Path(_temporary(self), "key.pub")
        public.write_bytes(_key().public().toString("openssh"))
        self.assertIn("a public key", self.refused("--sftp", "tcp:0", "--host-key", str(public)))
        self.assertIn("No such file", self.refused("--sftp", "tcp:0", "--host-key", "/nonexistent/key"))
        self.assertIn("is for SFTP", self.refused("--host-key", str(public)))
        private = Path(_temporary(self), "key")
        private.write_bytes(_key().toString("openssh"))
        options = self.parse("--sftp", "tcp:0", "--host-key", str(private))
        self.assertEqual(len(options["ssh_host_keys"]), 1)
        self.assertIn("a second ssh-ed25519", self.refused("--sftp", "tcp:0", "--host-key", str(private),
                                                           "--host-key", str(private)))


def _temporary(test: SynchronousTestCase) -> str:
    """A new directory outside the working tree, removed after C{test}."""
    directory = tempfile.mkdtemp(prefix="exftp-sftp-")
    test.addCleanup(shutil.rmtree, directory, True)
    return directory


class HoldReadingTests(SynchronousTestCase):
    """The SSH connection left unread while an upload is ahead of the user's rate."""

    def setUp(self) -> None:
        self.clock = Clock()
        core = SimpleNamespace(reactor=self.clock, idle_timeout=2, login_timeout=0)
        self.ssh = SSHTransport()
        self.ssh.factory = SimpleNamespace(core=core)
        self.tcp = StringTransport()
        self.ssh.transport = self.tcp
        self.ssh.user = object()  # logged in
        self.disconnected: list[str] = []
        self.ssh.disconnect = lambda code, text: self.disconnected.append(text)  # type: ignore[method-assign]

    def test_a_hold_pauses_reading_and_a_later_one_extends_it(self) -> None:
        self.ssh.hold_reading(2.0)
        self.assertEqual(self.tcp.producerState, "paused")
        self.ssh.hold_reading(1.0)  # ends sooner: changes nothing
        self.clock.advance(1.5)
        self.ssh.hold_reading(3.0)  # ends later: read again at 4.5 s
        self.clock.advance(2.9)
        self.assertEqual(self.tcp.producerState, "paused")
        self.clock.advance(0.2)
        self.assertEqual(self.tcp.producerState, "producing")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_connection_left_unread_is_not_idle(self) -> None:
        self.ssh.hold_reading(5.0)
        self.clock.advance(3)
        self.ssh.check_deadlines(self.clock.seconds())
        self.assertEqual(self.disconnected, [])
        self.clock.advance(2)
        self.ssh.check_deadlines(self.clock.seconds())
        self.assertEqual(self.disconnected, ["Idle timeout."])
