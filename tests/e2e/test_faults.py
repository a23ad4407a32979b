"""
Fault injection: a file arrives completely or not at all, whatever breaks —
the server process (SIGKILL), the disk (full, read-only, over quota), the S3
endpoint (error bursts, resets, stalls, gone), the auth service, or the
client (stops sending or reading without closing).

Each test checks that nothing partial is visible under the real name, that no
multipart upload stays open, that the server still serves a normal session
afterwards, and that its log says what happened. S3 is moto's server, reached
directly or through L{_faultproxy.FaultProxy}; everything is on loopback.
"""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import io
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import _moto
import pytest
from _faultproxy import FaultProxy
from conftest import (
    AUTH,
    DEADLINE,
    PASSWORD,
    USER,
    FTPServer,
    HTTPService,
    code,
    install_plugin,
    list_lines,
    retr_bytes,
    server_env,
    temporary_files,
    wait_until,
)

from exftp._cleanup import default_node

MiB = 1024 * 1024
OLD = b"the old content, which must survive\n"
JOURNAL = ".exftp-upload-journal/"
#: Log lines that mean an error was not handled.
_UNHANDLED = re.compile(r"Unhandled Error|Unhandled error in Deferred")


def _wired() -> bool:
    """Whether C{twistd exftp} has the clean-up options (--node, --cleanup-age, --cleanup)."""
    from exftp._tap import Options

    return "cleanup-age=" in Options().longOpt


needs_wiring = pytest.mark.skipif(
    not _wired(), reason="twistd exftp has no start-up clean-up yet (exftp/_tap.py wiring of issue 11)"
)


def block(index: int) -> bytes:
    """1 MiB of test data that differs for every index."""
    return hashlib.sha256(index.to_bytes(8, "big")).digest() * (MiB // 32)


def _reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class RawTransfer:
    """A logged-in raw control connection and a passive data connection, transfer command sent (150)."""

    def __init__(self, server: FTPServer, command: str, user: str = USER, password: str = PASSWORD) -> None:
        self.control = server.control()
        self.control.login(user, password)
        assert self.control.cmd("TYPE I").code == 200
        _host, port = self.control.pasv()
        self.data = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        opening = self.control.cmd(command)
        assert opening.code == 150, opening

    def send_blocks(self, first: int, count: int) -> None:
        for index in range(first, first + count):
            self.data.sendall(block(index))

    def send_until_refused(self, first: int, limit: int = 400) -> None:
        """Keep sending until the server closes the data connection (or C{limit} MiB)."""
        try:
            for index in range(first, first + limit):
                self.data.sendall(block(index))
        except OSError:
            return
        raise AssertionError(f"the server took {limit} MiB without closing the data connection")

    def close(self) -> None:
        self.data.close()
        self.control.close()


def _complete(upload: RawTransfer, first: int, count: int) -> None:
    """Send the rest of an upload and close it; it must succeed (226)."""
    upload.send_blocks(first, count)
    upload.data.close()
    assert upload.control.reply().code == 226
    upload.control.close()


def _unhandled(server: FTPServer) -> None:
    assert not _UNHANDLED.search(server.log()), server.log()


def _serves(server: FTPServer, directory: str = "/") -> None:
    """A normal session: upload, list, download, delete; no reserved name is ever listed."""
    data = os.urandom(300_000)
    name = f"{directory.rstrip('/')}/after-{os.urandom(3).hex()}.bin"
    with server.login() as client:
        client.storbinary(f"STOR {name}", io.BytesIO(data))
        listing = list_lines(client, f"LIST -a {directory}")
        assert name.rsplit("/", 1)[1] in " ".join(listing)
        assert ".exftp-upload" not in " ".join(listing), listing
        assert retr_bytes(client, name) == data
        client.delete(name)


def _written(root: Path) -> int:
    """The bytes in the biggest upload temporary under C{root}."""
    sizes = [0]
    for name in temporary_files(root):
        with contextlib.suppress(FileNotFoundError):
            sizes.append(os.path.getsize(name))
    return max(sizes)


def _cleanup_command(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the on-demand clean-up (C{exftp-cleanup}) to completion."""
    return subprocess.run(
        [sys.executable, "-m", "exftp._cleanup_cli", *arguments],
        env=env or server_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# The server process is killed (file storage)


@needs_wiring
def test_sigkill_mid_upload_keeps_old_content_and_restart_removes_the_temporary(
    start_server: Callable[..., FTPServer], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    target = root / "sub" / "big.bin"
    target.write_bytes(OLD)
    server = start_server("--auth", AUTH, root=root)
    upload = RawTransfer(server, "STOR /sub/big.bin")  # a 200 MiB upload, of which 48 MiB are sent
    upload.send_blocks(0, 48)
    wait_until(lambda: _written(root) >= 32 * MiB, "32 MiB in the temporary file", timeout=30)
    assert ".exftp-upload" not in " ".join(_listing(server, "/sub"))
    server.process.kill()  # type: ignore[union-attr]
    server.wait_exit()
    upload.close()

    assert target.read_bytes() == OLD
    (leftover,) = temporary_files(root)
    assert Path(leftover).name.endswith(f"-{default_node()}"), leftover

    restarted = start_server("--auth", AUTH, root=root)
    wait_until(lambda: temporary_files(root) == [], "the start-up clean-up to remove the temporary file")
    restarted.wait_for_log(rf"removed 1 upload leftovers: sub/\.exftp-upload-\S+ \(left by node {default_node()}\)")
    assert target.read_bytes() == OLD
    _serves(restarted, "/sub")
    assert sorted(p.name for p in (root / "sub").iterdir()) == ["big.bin"]
    _unhandled(restarted)


def _listing(server: FTPServer, path: str) -> list[str]:
    with server.login() as client:
        return list_lines(client, f"LIST -a {path}")


def test_cleanup_command_removes_only_a_dead_servers_temporaries(
    start_server: Callable[..., FTPServer], tmp_path: Path
) -> None:
    """C{exftp-cleanup}: the killed server's temporary goes; nothing that is not a dead server's."""
    root = tmp_path / "root"
    root.mkdir()
    server = start_server("--auth", AUTH, root=root)
    upload = RawTransfer(server, "STOR /new.bin")
    upload.send_blocks(0, 4)
    wait_until(lambda: _written(root) >= 4 * MiB, "4 MiB in the temporary file")
    server.process.kill()  # type: ignore[union-attr]
    server.wait_exit()
    upload.close()
    (killed,) = temporary_files(root)
    node = default_node()
    live = root / f".exftp-upload-0000000000000000-{os.getpid()}-{node}"  # this test process still runs
    other = root / ".exftp-upload-0000000000000000-1-another-node"  # another node's, recent
    look_alike = root / ".exftp-uploaded-by-someone"  # not exftp's
    reserved_dir = root / ".exftp-upload-dir"  # exftp makes no directories
    for path in (live, other, look_alike):
        path.write_bytes(b"x")
    reserved_dir.mkdir()

    result = _cleanup_command("--root", str(root))
    assert result.returncode == 0, result.stdout + result.stderr
    assert not Path(killed).exists()
    assert f"removed 1 upload leftovers: {Path(killed).name} (left by node {node})" in result.stdout
    assert f"process {os.getpid()} of node {node} still runs on this host" in result.stdout
    assert live.exists() and other.exists() and look_alike.exists() and reserved_dir.is_dir()
    assert not (root / "new.bin").exists()

    old = time.time() - 3600
    os.utime(other, (old, old))
    result = _cleanup_command("--root", str(root), "--node", "", "--older-than", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not other.exists() and live.exists()
    assert "(older than 60 s)" in result.stdout


# The server process is killed (S3)


class Bucket:
    """A fresh bucket on the shared moto server, seen through boto3."""

    def __init__(self, moto: _moto.MotoServer) -> None:
        self.moto = moto
        self.name = moto.new_bucket()
        self.s3 = moto.s3()

    def head(self, key: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.s3.head_object(Bucket=self.name, Key=key)
        except self.s3.exceptions.ClientError:
            return None
        return found

    def get(self, key: str) -> bytes:
        data: bytes = self.s3.get_object(Bucket=self.name, Key=key)["Body"].read()
        return data

    def keys(self, prefix: str = "") -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.name, Prefix=prefix)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def uploads(self, key: str | None = None) -> list[dict[str, Any]]:
        found = self.s3.list_multipart_uploads(Bucket=self.name).get("Uploads", [])
        return [upload for upload in found if key is None or upload["Key"] == key]

    def parts(self, key: str) -> int:
        for upload in self.uploads(key):
            listed = self.s3.list_parts(Bucket=self.name, Key=key, UploadId=upload["UploadId"])
            return len(listed.get("Parts", []))
        return 0

    def journal(self) -> list[str]:
        return self.keys(JOURNAL)


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """A fresh bucket, with the AWS variables of servers started in the test pointing at moto."""
    moto = _moto.shared_server()
    moto.patch_environment(monkeypatch)
    return Bucket(moto)


def _s3_server(start_server: Callable[..., FTPServer], bucket: Bucket, *extra: str, spec: str = "") -> FTPServer:
    storage = f"s3:bucket={bucket.name}:part_size=5MiB{spec}"
    return start_server("--storage", storage, "--auth", AUTH, *extra, root_option=False)


@needs_wiring
def test_sigkill_mid_s3_upload_restart_aborts_only_its_own_leftover(
    start_server: Callable[..., FTPServer], bucket: Bucket
) -> None:
    node = default_node()
    bucket.s3.put_object(Bucket=bucket.name, Key="big.bin", Body=OLD)
    foreign = bucket.s3.create_multipart_upload(Bucket=bucket.name, Key="foreign.bin")["UploadId"]
    other = _s3_server(start_server, bucket, spec=":node=other-node")
    in_flight = RawTransfer(other, "STOR /theirs.bin")
    in_flight.send_blocks(0, 6)
    wait_until(lambda: bucket.parts("theirs.bin") >= 1, "a part of the other node's upload")

    server = _s3_server(start_server, bucket)
    upload = RawTransfer(server, "STOR /big.bin")  # a 200 MiB upload, of which 24 MiB are sent
    upload.send_blocks(0, 24)
    wait_until(lambda: bucket.parts("big.bin") >= 2, "two parts in S3")
    assert [key for key in bucket.journal() if f"/{node}/" in key]
    server.process.kill()  # type: ignore[union-attr]
    server.wait_exit()
    upload.close()
    assert bucket.get("big.bin") == OLD
    assert len(bucket.uploads("big.bin")) == 1

    restarted = _s3_server(start_server, bucket)
    wait_until(lambda: bucket.uploads("big.bin") == [], "the start-up clean-up to abort the upload")
    restarted.wait_for_log(rf"removed 1 upload leftovers: big\.bin \(multipart upload \S+, left by node {node}\)")
    assert bucket.get("big.bin") == OLD
    assert [u["UploadId"] for u in bucket.uploads("foreign.bin")] == [foreign]
    assert len(bucket.uploads("theirs.bin")) == 1

    _complete(in_flight, 6, 2)  # the other node's upload was never disturbed
    assert bucket.get("theirs.bin") == b"".join(block(i) for i in range(8))
    _serves(restarted)
    assert bucket.journal() == []
    assert [u["Key"] for u in bucket.uploads()] == ["foreign.bin"]
    _unhandled(restarted)


def test_cleanup_command_aborts_a_dead_nodes_s3_uploads_only(
    start_server: Callable[..., FTPServer], bucket: Bucket
) -> None:
    foreign = bucket.s3.create_multipart_upload(Bucket=bucket.name, Key="foreign.bin")["UploadId"]
    live = _s3_server(start_server, bucket, spec=":node=live-node")
    in_flight = RawTransfer(live, "STOR /live.bin")
    in_flight.send_blocks(0, 6)
    ghost = _s3_server(start_server, bucket, spec=":node=ghost-node")
    upload = RawTransfer(ghost, "STOR /ghost.bin")
    upload.send_blocks(0, 12)
    wait_until(lambda: bucket.parts("ghost.bin") >= 1 and bucket.parts("live.bin") >= 1, "parts of both uploads")
    ghost.process.kill()  # type: ignore[union-attr]
    ghost.wait_exit()
    upload.close()

    result = _cleanup_command("--storage", f"s3:bucket={bucket.name}", "--node", "ghost-node")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"removed 1 upload leftovers: ghost\.bin \(multipart upload \S+, left by node ghost-node\)",
                     result.stdout), result.stdout  # fmt: skip
    assert bucket.uploads("ghost.bin") == [] and bucket.head("ghost.bin") is None
    assert [u["UploadId"] for u in bucket.uploads("foreign.bin")] == [foreign]
    assert len(bucket.uploads("live.bin")) == 1
    _complete(in_flight, 6, 1)
    assert bucket.journal() == []


# The disk is full, over quota, or read-only


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs (needs root and mount; skipped elsewhere, where the injected errors still test this)."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True, check=False)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def _store_too_much(server: FTPServer, path: str, mib: int) -> int:
    """Upload C{mib} MiB (more than fits); the final reply code."""
    upload = RawTransfer(server, f"STOR {path}")
    upload.send_until_refused(0, mib)
    upload.data.close()
    reply = upload.control.reply()
    assert upload.control.cmd("PWD").code == 257  # the session goes on
    upload.close()
    return reply.code


def test_disk_full_is_452_and_leaves_nothing(start_server: Callable[..., FTPServer], small_disk: Path) -> None:
    keep = small_disk / "keep.bin"
    keep.write_bytes(OLD)
    server = start_server("--auth", AUTH, root=small_disk)
    try:
        assert _store_too_much(server, "/huge.bin", 32) == 452
        assert _store_too_much(server, "/keep.bin", 32) == 452
        server.wait_for_log(r"Writing the upload to \S+ failed \(No space left on device\)")
        wait_until(lambda: temporary_files(small_disk) == [], "the temporary files to be removed")
        assert not (small_disk / "huge.bin").exists()
        assert keep.read_bytes() == OLD
        _serves(server)  # the space is free again

        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
        with server.login() as client:
            with pytest.raises(ftplib.error_perm) as refused:
                client.storbinary("STOR /new.bin", io.BytesIO(b"data"))
            assert code(refused.value) == 550 and "Read-only file system" in str(refused.value)
            assert retr_bytes(client, "/keep.bin") == OLD
        server.wait_for_log(r"Cannot start the upload to \S+: Read-only file system")
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
        _serves(server)
        _unhandled(server)
    finally:
        server.stop()  # it runs in the mount point


#: A storage plugin for twistd whose uploads fail after 1 MiB with the errno named by EXFTP_TEST_ERRNO.
_FAULTY_DISK_PLUGIN = """
import errno
import os

from exftp import FileStorageFactory, StoragePlugin
from exftp.storage import _local

_original = _local._FileWriter._write_all
_errno = getattr(errno, os.environ["EXFTP_TEST_ERRNO"])


def _write_all(self, chunks, size):
    self.written = getattr(self, "written", 0) + size
    if self.written > 1024 * 1024:
        raise OSError(_errno, os.strerror(_errno))
    _original(self, chunks, size)


_local._FileWriter._write_all = _write_all
faulty = StoragePlugin("faulty", "files under DIR; each upload fails after 1 MiB", FileStorageFactory)
"""


@pytest.mark.parametrize(
    ("name", "reply", "logged"), [("EDQUOT", 552, "Disk quota exceeded"), ("ENOSPC", 452, "No space left on device")]
)
def test_injected_disk_errors_mid_upload(
    start_server: Callable[..., FTPServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    reply: int,
    logged: str,
) -> None:
    """Over quota (552) or disk full (452) where no small file system can be mounted: nothing is left."""
    install_plugin(tmp_path, monkeypatch, "exftp_faulty_disk_test", _FAULTY_DISK_PLUGIN)
    monkeypatch.setenv("EXFTP_TEST_ERRNO", name)
    root = tmp_path / "root"
    root.mkdir()
    (root / "keep.bin").write_bytes(OLD)
    server = start_server("--storage", f"faulty:{root}", "--auth", AUTH, root_option=False)
    assert _store_too_much(server, "/keep.bin", 16) == reply
    server.wait_for_log(rf"Writing the upload to \S+keep\.bin failed \({logged}\)")
    wait_until(lambda: temporary_files(root) == [], "the temporary file to be removed")
    assert (root / "keep.bin").read_bytes() == OLD
    with server.login() as client:
        client.storbinary("STOR /small.bin", io.BytesIO(b"fits"))
    assert (root / "small.bin").read_bytes() == b"fits"
    _unhandled(server)


#: A storage plugin whose directory listings fail (ENOENT, as if the directory went) from the entry "f1000" on.
_FAULTY_LISTING_PLUGIN = """
import errno
import os

from exftp import FileStorageFactory, StoragePlugin
from exftp.storage import _local

_original = _local._entries


def _entries(directory, names, inside):
    if "f1000" in names:
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
    return _original(directory, names, inside)


_local._entries = _entries
faulty_listing = StoragePlugin("faulty_listing", "files under DIR; listings fail from f1000", FileStorageFactory)
"""


def test_listing_that_fails_after_its_150_is_451(
    start_server: Callable[..., FTPServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big directory fails between two pages: the client gets the first page, then 451, and goes on."""
    install_plugin(tmp_path, monkeypatch, "exftp_faulty_listing_test", _FAULTY_LISTING_PLUGIN)
    root = tmp_path / "root"
    (root / "big").mkdir(parents=True)
    for index in range(1500):
        (root / "big" / f"f{index:04d}").write_bytes(b"")
    server = start_server("--storage", f"faulty_listing:{root}", "--auth", AUTH, root_option=False)
    with server.login() as client:
        client.voidcmd("TYPE A")
        received = bytearray()
        with client.transfercmd("NLST /big") as data, contextlib.suppress(ConnectionResetError):
            while block := data.recv(65536):  # the server may reset the connection it cannot finish
                received += block
        with pytest.raises(ftplib.error_temp) as failed:
            client.voidresp()
        assert code(failed.value) == 451, failed.value
        names = [line.rsplit("/", 1)[-1] for line in received.decode().splitlines()]
        assert names == [f"f{index:04d}" for index in range(len(names))] and len(names) <= 1000, names[-3:]
        assert client.voidcmd("NOOP").startswith("200")
    _serves(server)
    _unhandled(server)


# The S3 endpoint fails


@pytest.fixture
def proxy(bucket: Bucket) -> Iterator[FaultProxy]:
    host, port = bucket.moto.endpoint.rsplit("//", 1)[1].split(":")
    faulty = FaultProxy((host, int(port)))
    yield faulty
    faulty.close()


@pytest.fixture
def faulty_s3(start_server: Callable[..., FTPServer], bucket: Bucket, proxy: FaultProxy) -> FTPServer:
    """A server whose S3 endpoint is the fault proxy: 2 retries, 2 s per request."""
    spec = f":endpoint={proxy.endpoint}:addressing=path:retries=2:timeout=2"
    return _s3_server(start_server, bucket, "--stalled-timeout", "30", spec=spec)


def _recovered(server: FTPServer, bucket: Bucket) -> None:
    """No open upload or journal entry is left, and a normal session works."""
    _serves(server)  # a request that succeeds also lets failed aborts be tried again
    wait_until(lambda: bucket.uploads() == [], "no open multipart upload")
    wait_until(lambda: bucket.journal() == [], "an empty upload journal")
    _unhandled(server)


def test_s3_error_bursts_are_retried(faulty_s3: FTPServer, bucket: Bucket, proxy: FaultProxy) -> None:
    data = b"".join(block(i) for i in range(12))
    upload = RawTransfer(faulty_s3, "STOR /burst.bin")
    upload.send_blocks(0, 6)
    wait_until(lambda: bucket.parts("burst.bin") >= 1, "a part in S3")
    proxy.fail_next(2, 503)  # fewer than the retries
    upload.send_blocks(6, 6)
    upload.data.close()
    assert upload.control.reply().code == 226
    upload.close()
    proxy.fail_next(2, 500)
    with faulty_s3.login() as client:
        assert retr_bytes(client, "/burst.bin") == data
    assert proxy.count("error:503") == 2 and proxy.count("error:500") == 2
    faulty_s3.wait_for_log(r"S3 \w+ \S+ failed \(503 ServiceUnavailable: injected by the fault proxy\); try 1 of 2")
    faulty_s3.wait_for_log(r"S3 GET \S+ failed \(500 InternalError: injected by the fault proxy\); try 1 of 2")
    _recovered(faulty_s3, bucket)


def test_s3_errors_mid_upload_are_451_and_no_object(faulty_s3: FTPServer, bucket: Bucket, proxy: FaultProxy) -> None:
    bucket.s3.put_object(Bucket=bucket.name, Key="doc.bin", Body=OLD)
    upload = RawTransfer(faulty_s3, "STOR /doc.bin")
    upload.send_blocks(0, 6)
    wait_until(lambda: bucket.parts("doc.bin") >= 1, "a part in S3")
    proxy.set_mode("error", 503)
    upload.send_until_refused(6)
    assert upload.control.reply().code == 451
    assert upload.control.cmd("PWD").code == 257
    upload.close()
    assert bucket.get("doc.bin") == OLD
    faulty_s3.wait_for_log(r"S3 upload of doc\.bin failed: 503 ServiceUnavailable")
    faulty_s3.wait_for_log(r"Could not abort multipart upload \S+ of doc\.bin .*trying again later")
    assert len(bucket.uploads("doc.bin")) == 1  # S3 is down: it stays, and is in the journal
    assert len(bucket.journal()) == 1
    proxy.set_mode("pass")
    _recovered(faulty_s3, bucket)
    faulty_s3.wait_for_log(r"Aborted multipart upload \S+ of doc\.bin at last")
    assert bucket.get("doc.bin") == OLD


def test_s3_endpoint_gone_mid_upload_then_back(faulty_s3: FTPServer, bucket: Bucket, proxy: FaultProxy) -> None:
    upload = RawTransfer(faulty_s3, "STOR /gone.bin")
    upload.send_blocks(0, 6)
    wait_until(lambda: bucket.parts("gone.bin") >= 1, "a part in S3")
    proxy.down()
    upload.send_until_refused(6)
    assert upload.control.reply().code == 451
    upload.close()
    with faulty_s3.login() as client:  # while it is gone: 451, and the session goes on
        with pytest.raises(ftplib.error_temp) as unavailable:
            client.size("/anything")
        assert code(unavailable.value) == 451
        client.voidcmd("NOOP")
    assert bucket.head("gone.bin") is None
    faulty_s3.wait_for_log(r"S3 \w+ \S+ failed \(.*(refused|Connection).*\); try 2 of 2")
    proxy.up()
    _recovered(faulty_s3, bucket)
    assert bucket.head("gone.bin") is None


def test_s3_stall_mid_upload_is_451(faulty_s3: FTPServer, bucket: Bucket, proxy: FaultProxy) -> None:
    upload = RawTransfer(faulty_s3, "STOR /stalled.bin")
    upload.send_blocks(0, 6)
    wait_until(lambda: bucket.parts("stalled.bin") >= 1, "a part in S3")
    proxy.set_mode("stall")
    upload.send_until_refused(6)
    assert upload.control.reply().code == 451
    upload.close()
    faulty_s3.wait_for_log(r"S3 upload of stalled\.bin failed")
    proxy.set_mode("pass")
    _recovered(faulty_s3, bucket)
    assert bucket.head("stalled.bin") is None


#: What issue 16 asks of a stalled endpoint on the default settings: the transfer ends within this.
_STALL_LIMIT = 90.0


def _fails_in_time(client: ftplib.FTP, stalled: float, verb: str) -> None:
    """The transfer's reply is 451 or 426, within L{_STALL_LIMIT} of the stall."""
    with pytest.raises((ftplib.error_temp, ftplib.error_perm)) as failed:
        client.voidresp()
    took = time.monotonic() - stalled
    assert code(failed.value) in (426, 451), failed.value
    assert took < _STALL_LIMIT, f"the stalled {verb} took {took:.0f} s"


@pytest.fixture
def default_s3(start_server: Callable[..., FTPServer], bucket: Bucket, proxy: FaultProxy) -> FTPServer:
    """A server whose S3 endpoint is the fault proxy, on the default timeout, retries and deadline."""
    return _s3_server(start_server, bucket, spec=f":endpoint={proxy.endpoint}:addressing=path")


def test_s3_stall_on_the_defaults_ends_an_ftplib_stor_in_90_s_and_the_upload_is_aborted_after(
    default_s3: FTPServer, bucket: Bucket, proxy: FaultProxy
) -> None:
    """
    With the default timeout, retries and deadline, an endpoint that takes
    requests and answers nothing fails a STOR (451 or 426) within 90 s of
    the stall, a part being in flight; once it answers again the multipart
    upload is aborted and its journal entry removed, without a new request.
    (Before the deadline: 5 tries of 60 s for the part, then as many for
    the abort before the reply, about 600 s.)
    """
    server = default_s3
    with server.login(timeout=_STALL_LIMIT + 60) as client:
        data = client.transfercmd("STOR /stalled.bin")
        data.settimeout(_STALL_LIMIT + 60)
        data.sendall(b"".join(block(i) for i in range(6)))
        wait_until(lambda: bucket.parts("stalled.bin") >= 1, "a part in S3")
        proxy.set_mode("stall")
        stalled = time.monotonic()
        with contextlib.suppress(OSError):  # the server stops reading, then drops the connection
            for index in range(6, 40):
                data.sendall(block(index))
            data.close()
        _fails_in_time(client, stalled, "STOR")
        data.close()
        proxy.set_mode("pass")
        assert client.voidcmd("NOOP").startswith("200")
    wait_until(lambda: bucket.uploads() == [], "no open multipart upload", timeout=150)
    wait_until(lambda: bucket.journal() == [], "an empty upload journal")
    assert bucket.head("stalled.bin") is None
    server.wait_for_log(r"S3 is not answering: multipart upload \S+ of stalled\.bin is aborted once it is back")
    _unhandled(server)


def test_s3_stall_on_the_defaults_ends_an_ftplib_retr_in_90_s(
    default_s3: FTPServer, bucket: Bucket, proxy: FaultProxy
) -> None:
    """
    A download whose body stops mid-way on the default settings ends (451
    or 426) within 90 s of the stall, its resumption included. (Before the
    deadline: 60 s without a byte, then up to 4 resumptions of 5 tries of
    60 s each.)
    """
    data = _big_object(bucket, "big.bin", 24)
    with default_s3.login(timeout=_STALL_LIMIT + 60) as client:
        sock = client.transfercmd("RETR /big.bin")
        sock.settimeout(_STALL_LIMIT + 60)
        received = b""
        while len(received) < MiB:
            chunk = sock.recv(MiB)
            assert chunk, "the download ended early"
            received += chunk
        proxy.set_mode("stall")
        stalled = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(MiB):
                received += chunk
        sock.close()
        _fails_in_time(client, stalled, "RETR")
        assert len(received) < len(data)
        proxy.set_mode("pass")
        assert retr_bytes(client, "/big.bin") == data
    default_s3.wait_for_log(r"S3 download (stalled|could not be resumed)")
    _unhandled(default_s3)


def _big_object(bucket: Bucket, key: str, mib: int) -> bytes:
    data = b"".join(block(i) for i in range(mib))
    bucket.s3.put_object(Bucket=bucket.name, Key=key, Body=data)
    return data


def _retr_until(server: FTPServer, path: str, count: int) -> tuple[RawTransfer, bytes]:
    """Start a download and read its first C{count} bytes."""
    download = RawTransfer(server, f"RETR {path}")
    received = b""
    while len(received) < count:
        chunk = download.data.recv(MiB)
        assert chunk, "the download ended early"
        received += chunk
    return download, received


def _read_rest(download: RawTransfer) -> bytes:
    chunks = []
    try:
        while chunk := download.data.recv(MiB):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("fault", "reply", "logged"),
    [
        ("reset", 226, r"S3 download broke after \d+ bytes \(.*\); asking for the rest"),
        ("down", 451, r"S3 download could not be resumed"),
        ("stall", 451, r"S3 download broke after \d+ bytes \(no data for 2 s\)"),
    ],
)
def test_s3_fails_mid_download(
    faulty_s3: FTPServer, bucket: Bucket, proxy: FaultProxy, fault: str, reply: int, logged: str
) -> None:
    """A connection reset is resumed where it broke; an endpoint gone or stalled for good is 426."""
    data = _big_object(bucket, "big.bin", 24)
    download, first = _retr_until(faulty_s3, "/big.bin", MiB)
    {"reset": proxy.reset_all, "down": proxy.down, "stall": lambda: proxy.set_mode("stall")}[fault]()
    rest = _read_rest(download)
    assert download.control.reply().code == reply
    if reply == 226:
        assert first + rest == data
    else:
        assert len(first + rest) < len(data)
    assert download.control.cmd("NOOP").code == 200
    download.close()
    faulty_s3.wait_for_log(logged)
    proxy.up()
    with faulty_s3.login() as client:
        assert retr_bytes(client, "/big.bin") == data
    _recovered(faulty_s3, bucket)


# The auth service fails during re-validation


class AuthService(HTTPService):
    """
    An ex_ftp-style webhook for every user whose password is C{USER-pw}:
    200, or 403 for another password. Users in C{stalled} get no answer
    until they are taken out; L{stop} makes the service unreachable.
    """

    def __init__(self) -> None:
        self.stalled: set[str] = set()
        self.released = threading.Event()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                name = query.get("username", [""])[0]
                while name in service.stalled and not service.released.wait(0.05):
                    pass
                good = hashlib.sha256(f"{name}-pw".encode()).hexdigest()
                status = 200 if query.get("password_hash", [""])[0] == good else 403
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._serve(Handler)


    def stop(self) -> None:
        self.released.set()
        super().stop()


@pytest.fixture
def auth_service() -> Iterator[AuthService]:
    service = AuthService()
    yield service
    service.stop()


@pytest.fixture
def revalidating(start_server: Callable[..., FTPServer], auth_service: AuthService, tmp_path: Path) -> FTPServer:
    """A server that re-validates every command of every session, giving the service 1 s."""
    return start_server(
        "--auth", "webhook:" + auth_service.url("/login"),
        "--auth-option", "authenticated_url=" + auth_service.url("/check"),
        "--auth-option", "authenticated_ttl_ms=0",
        "--auth-option", "timeout=1",
        root=tmp_path,
    )  # fmt: skip


def test_auth_service_stalls_for_one_session(revalidating: FTPServer, auth_service: AuthService) -> None:
    """
    The stalled session waits for the deadline, then goes on: an outage ends
    no running session (issue 16; it used to end with 421). Another session
    meanwhile works fully.
    """
    erin = revalidating.control()
    erin.login("erin", "erin-pw")
    assert erin.cmd("TYPE I").code == 200
    auth_service.stalled.add("erin")
    erin.send("MKD /erin-dir")  # waits for the stalled re-validation
    with revalidating.login("frank", "frank-pw") as frank:
        frank.storbinary("STOR /frank.bin", io.BytesIO(b"frank's"))
        assert retr_bytes(frank, "/frank.bin") == b"frank's"
    done = erin.reply()
    assert done.code == 257, done
    auth_service.stalled.clear()
    assert erin.cmd("PWD").code == 257
    erin.close()
    assert (revalidating.root / "erin-dir").is_dir()
    revalidating.wait_for_log(r"service \S+/check unusable while checking 'erin': no answer within 1 s")
    revalidating.wait_for_log(r"Could not re-validate 'erin' from \S+, the session goes on")
    with revalidating.login("frank", "frank-pw") as frank:
        assert "frank.bin" in frank.nlst()
    _unhandled(revalidating)


def test_auth_service_dies_mid_session(revalidating: FTPServer, auth_service: AuthService) -> None:
    """
    A transfer in progress completes; the sessions go on (an outage ends none,
    issue 16; they used to get 421); nobody new gets in (421); the server lives on.
    """
    upload = RawTransfer(revalidating, "STOR /during.bin", "frank", "frank-pw")
    upload.send_blocks(0, 2)
    idle = revalidating.control()
    idle.login("erin", "erin-pw")
    auth_service.stop()
    assert idle.cmd("PWD").code == 257
    idle.close()
    upload.send_blocks(2, 2)
    upload.data.close()
    assert upload.control.reply().code == 226  # it began before the failure
    assert upload.control.cmd("PWD").code == 257
    upload.close()
    assert (revalidating.root / "during.bin").read_bytes() == b"".join(block(i) for i in range(4))
    revalidating.wait_for_log(r"service \S+/check unusable while checking 'erin': .*refused")
    revalidating.wait_for_log(r"Could not re-validate 'erin' from \S+, the session goes on")
    with pytest.raises(ftplib.error_temp) as refused:  # nobody gets in while it is down
        revalidating.login("frank", "frank-pw")
    assert code(refused.value) == 421
    assert revalidating.alive()
    _unhandled(revalidating)


# The client stops sending or reading without closing


@pytest.fixture
def watchful(start_server: Callable[..., FTPServer], tmp_path: Path) -> FTPServer:
    return start_server("--auth", AUTH, "--stalled-timeout", "1", root=tmp_path)


def test_client_stops_sending_mid_upload(watchful: FTPServer) -> None:
    (watchful.root / "doc.bin").write_bytes(OLD)
    upload = RawTransfer(watchful, "STOR /doc.bin")
    upload.send_blocks(0, 2)  # then nothing, and no FIN: a pulled cable
    aborted = upload.control.reply()
    assert aborted.code == 426 and "stalled" in aborted.text, aborted
    assert upload.control.cmd("PWD").code == 257
    upload.close()
    wait_until(lambda: temporary_files(watchful.root) == [], "the temporary file to be removed")
    assert (watchful.root / "doc.bin").read_bytes() == OLD
    watchful.wait_for_log(r"Transfer for \S+ stalled; aborting it")
    _serves(watchful)
    _unhandled(watchful)


def test_client_stops_reading_mid_download(watchful: FTPServer) -> None:
    (watchful.root / "big.bin").write_bytes(b"".join(block(i) for i in range(32)))
    download = RawTransfer(watchful, "RETR /big.bin")
    download.data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    download.data.recv(64 * 1024)  # then reads no more
    aborted = download.control.reply()
    assert aborted.code == 426 and "stalled" in aborted.text, aborted
    assert download.control.cmd("NOOP").code == 200
    _reset(download.data)
    download.control.close()
    watchful.wait_for_log(r"Transfer for \S+ stalled; aborting it")
    _serves(watchful)


def test_client_stops_sending_mid_s3_upload(start_server: Callable[..., FTPServer], bucket: Bucket) -> None:
    server = _s3_server(start_server, bucket, "--stalled-timeout", "1")
    upload = RawTransfer(server, "STOR /cut.bin")
    upload.send_blocks(0, 7)
    wait_until(lambda: bucket.parts("cut.bin") >= 1, "a part in S3")
    aborted = upload.control.reply()
    assert aborted.code == 426, aborted
    upload.close()
    wait_until(lambda: bucket.uploads() == [], "the multipart upload to be aborted")
    assert bucket.head("cut.bin") is None and bucket.journal() == []
    _serves(server)
    _unhandled(server)


# Helpers that the tests above rely on


def test_the_fault_proxy_passes_fails_and_resets(bucket: Bucket, proxy: FaultProxy) -> None:
    """The proxy itself: what the tests above assume of it."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=proxy.endpoint,
        region_name=_moto.REGION,
        aws_access_key_id=bucket.moto.access_key,
        aws_secret_access_key=bucket.moto.secret_key,
        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
    )
    client.put_object(Bucket=bucket.name, Key="k", Body=b"v")
    proxy.fail_next(1, 503)
    with pytest.raises(client.exceptions.ClientError) as failed:
        client.head_object(Bucket=bucket.name, Key="k")
    assert "503" in str(failed.value)
    assert client.get_object(Bucket=bucket.name, Key="k")["Body"].read() == b"v"
    proxy.set_mode("reset")
    with pytest.raises(Exception):  # noqa: B017 - botocore's connection errors have no common base
        client.head_object(Bucket=bucket.name, Key="k")
    proxy.set_mode("pass")
    assert client.head_object(Bucket=bucket.name, Key="k")["ContentLength"] == 1
    assert proxy.count("reset") == 1 and proxy.count("error:503") == 1
