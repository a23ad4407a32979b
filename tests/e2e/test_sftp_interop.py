"""
SFTP interop and storages end to end: rclone's sftp backend, lftp's
C{sftp://}, paramiko as a library client; S3 (moto) byte for byte; an
interrupted upload leaves nothing behind on file and S3 storage; public keys
from a webhook.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import _moto
import paramiko
import pytest
from conftest import AUTH, DEADLINE, PASSWORD, USER, HTTPService, temporary_files, wait_until
from test_sftp_e2e import FAST, SFTPServer, keypair, sftp_batch, sftp_with_key, start

MiB = 1024 * 1024


def connect(server: SFTPServer, user: str = USER, password: str = PASSWORD) -> paramiko.SFTPClient:
    transport = paramiko.Transport(("127.0.0.1", server.port))
    transport.connect(username=user, password=password)
    client = paramiko.SFTPClient.from_transport(transport)
    assert client is not None
    return client


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[SFTPServer]:
    server = start(tmp_path, "--auth", AUTH, *FAST)
    yield server
    server.stop()


def test_paramiko(file_server: SFTPServer) -> None:
    root = file_server.server.root
    payload = os.urandom(2 * MiB + 1)
    client = connect(file_server)
    try:
        client.mkdir("/p")
        with client.open("/p/a.bin", "wb") as upload:
            upload.set_pipelined(True)
            upload.write(payload)
        assert (root / "p" / "a.bin").read_bytes() == payload
        assert client.stat("/p/a.bin").st_size == len(payload)
        with client.open("/p/a.bin", "rb") as download:
            download.seek(MiB)
            assert download.read(1000) == payload[MiB:MiB + 1000]
            download.seek(0)
            assert download.read() == payload
        client.utime("/p/a.bin", (1_500_000_000, 1_500_000_000))
        assert int((root / "p" / "a.bin").stat().st_mtime) == 1_500_000_000
        client.posix_rename("/p/a.bin", "/p/b.bin")
        assert client.listdir("/p") == ["b.bin"]
    finally:
        client.get_channel().get_transport().close()


def test_interrupted_upload_leaves_nothing(file_server: SFTPServer) -> None:
    client = connect(file_server)
    upload = client.open("/cut.bin", "wb")
    upload.set_pipelined(True)
    upload.write(os.urandom(3 * MiB))
    upload.flush()
    start = file_server.server.log_position()
    client.get_channel().get_transport().sock.close()  # the client dies: no CLOSE
    file_server.server.wait_for_log("discarded: the connection ended before the file was closed", start=start)
    root = file_server.server.root
    assert not (root / "cut.bin").exists()
    assert temporary_files(root) == []


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SFTPServer, Any, str]]:
    moto = _moto.shared_server()
    bucket = moto.new_bucket()
    tmp = tmp_path_factory.mktemp("s3sftp")
    with pytest.MonkeyPatch.context() as patch:
        moto.patch_environment(patch)
        root = tmp / "root"
        root.mkdir()
        server = SFTPServer(root, tmp / "state", "--storage", f"s3:bucket={bucket}", "--auth", AUTH, *FAST,
                            root_option=False).start()
    yield server, moto.s3(), bucket
    server.stop()


def test_s3_byte_exact(s3_server: tuple[SFTPServer, Any, str], tmp_path: Path) -> None:
    server, s3, bucket = s3_server
    payload = os.urandom(17 * MiB + 5)  # three parts of the multipart upload
    (tmp_path / "big.bin").write_bytes(payload)
    result = sftp_batch(server.port, ["mkdir s", "put big.bin s/big.bin", "get s/big.bin back.bin", "ls -l s"],
                        tmp_path)
    assert result.returncode == 0, result.stderr
    stored = s3.get_object(Bucket=bucket, Key="s/big.bin")["Body"].read()
    assert hashlib.sha256(stored).digest() == hashlib.sha256(payload).digest()
    assert (tmp_path / "back.bin").read_bytes() == payload


def test_s3_interrupted_upload_leaves_nothing(s3_server: tuple[SFTPServer, Any, str]) -> None:
    server, s3, bucket = s3_server
    client = connect(server)
    upload = client.open("/cut.bin", "wb")
    upload.set_pipelined(True)
    upload.write(os.urandom(9 * MiB))  # past the first part
    upload.flush()
    start = server.server.log_position()
    client.get_channel().get_transport().sock.close()
    server.server.wait_for_log("discarded: the connection ended", start=start)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="cut.bin")
    assert listed.get("KeyCount", 0) == 0

    def no_uploads() -> bool:
        uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return not [u for u in uploads if u["Key"] == "cut.bin"]

    wait_until(no_uploads, "the multipart upload aborted")


def _run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=DEADLINE * 6, check=False,
                          env={**os.environ, "HOME": str(cwd), **env})


def test_rclone(file_server: SFTPServer, tmp_path: Path) -> None:
    obscured = _run(["rclone", "obscure", PASSWORD], tmp_path).stdout.strip()
    remote = (f":sftp,host=127.0.0.1,port={file_server.port},user={USER},pass={obscured},"
              f"shell_type=none,disable_hashcheck=true:")
    source = tmp_path / "tree"
    (source / "sub").mkdir(parents=True)
    (source / "a.bin").write_bytes(os.urandom(300_000))
    (source / "sub" / "b.txt").write_text("b" * 1000)
    flags = ["--retries", "1", "--low-level-retries", "1", "--config", str(tmp_path / "none.conf")]
    root = file_server.server.root
    copied = _run(["rclone", "copy", str(source), remote + "up", *flags], tmp_path)
    assert copied.returncode == 0, copied.stderr
    assert (root / "up" / "a.bin").read_bytes() == (source / "a.bin").read_bytes()
    checked = _run(["rclone", "check", "--download", str(source), remote + "up", *flags], tmp_path)
    assert checked.returncode == 0, checked.stderr
    moved = _run(["rclone", "moveto", remote + "up/a.bin", remote + "up/c.bin", *flags], tmp_path)
    assert moved.returncode == 0, moved.stderr
    assert sorted(p.name for p in (root / "up").iterdir()) == ["c.bin", "sub"]
    purged = _run(["rclone", "purge", remote + "up", *flags], tmp_path)
    assert purged.returncode == 0, purged.stderr
    assert not (root / "up").exists()


def test_lftp(file_server: SFTPServer, tmp_path: Path) -> None:
    payload = os.urandom(500_000)
    (tmp_path / "l.bin").write_bytes(payload)
    script = (
        'set sftp:connect-program "ssh -a -x -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null";'
        "set net:max-retries 1; set net:timeout 20;"
        f"open -u {USER},{PASSWORD} -p {file_server.port} sftp://127.0.0.1;"
        "mkdir l; put l.bin -o l/l.bin; get l/l.bin -o back.bin; mv l/l.bin l/m.bin; cls l; bye"
    )
    result = _run(["lftp", "-c", script], tmp_path)
    assert result.returncode == 0, result.stderr
    assert (file_server.server.root / "l" / "m.bin").read_bytes() == payload
    assert (tmp_path / "back.bin").read_bytes() == payload
    assert "m.bin" in result.stdout


class KeyWebhook(HTTPService):
    """A webhook answering key lookups (no password_hash) with the user's keys, passwords by their hash."""

    def __init__(self, keys: dict[str, list[str]]) -> None:
        self.requests: list[dict[str, list[str]]] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                service.requests.append(query)
                name = query.get("username", [""])[0]
                offered = query.get("password_hash")
                if offered is None and name in keys:
                    # A naive service: 200 to any request without a hash.
                    self.answer(200, {"authorized_keys": keys[name], "root": f"/{name}"})
                elif offered == [hashlib.sha256(PASSWORD.encode()).hexdigest()]:
                    self.answer(200, {"root": f"/{name}"})
                else:
                    self.answer(403, None)

            def answer(self, code: int, document: dict[str, Any] | None) -> None:
                body = b"" if document is None else json.dumps(document).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._serve(Handler)
        self.login_url = self.url("/login")


def test_webhook_public_keys(tmp_path: Path) -> None:
    key, public = keypair(tmp_path)
    webhook = KeyWebhook({"alice": [public]})
    (tmp_path / "root" / "alice").mkdir(parents=True)
    server = start(tmp_path, "--auth", f"webhook:{webhook.login_url}", *FAST)
    try:
        (tmp_path / "w.txt").write_text("webhook")
        result = sftp_with_key(server.port, key, ["put w.txt"], tmp_path)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "root" / "alice" / "w.txt").read_text() == "webhook"
        assert all("password_hash" not in query for query in webhook.requests)
        # A password login always sends the hash: the key answer is no password success.
        webhook.requests.clear()
        assert sftp_batch(server.port, ["ls"], tmp_path, password="anything").returncode != 0
        assert webhook.requests and all("password_hash" in query for query in webhook.requests)
        assert sftp_batch(server.port, ["ls"], tmp_path).returncode == 0
    finally:
        server.stop()
        webhook.stop()


def test_per_address_limit_and_login_deadline(tmp_path: Path) -> None:
    server = start(tmp_path, "--auth", AUTH, *FAST, "--max-sessions-per-ip", "1", "--login-timeout", "1")
    try:
        held = connect(server)
        refused = sftp_batch(server.port, ["ls"], tmp_path)
        assert refused.returncode != 0
        server.server.wait_for_log(r"Refused SSH connection from 127\.0\.0\.1: Too many connections from your address")
        held.get_channel().get_transport().close()
        wait_until(lambda: sftp_batch(server.port, ["ls"], tmp_path).returncode == 0, "a session once the other left")
        # A connection that never logs in is closed at the login deadline.
        with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE) as idle:
            received = b""
            while chunk := idle.recv(4096):
                received += chunk
        assert received.startswith(b"SSH-2.0-")
    finally:
        server.stop()


def test_s3_scp_and_attributes(s3_server: tuple[SFTPServer, Any, str], tmp_path: Path) -> None:
    """scp sets the uploaded file's mode (0644, what S3 shows: no change); S3 keeps times, not modes."""
    server, s3, bucket = s3_server
    payload = os.urandom(100_001)
    local = tmp_path / "scp.bin"
    local.write_bytes(payload)
    local.chmod(0o644)
    command = ["sshpass", "-p", PASSWORD, "scp", "-o", "BatchMode=no", "-o", "PubkeyAuthentication=no",
               "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={os.devnull}", "-P", str(server.port),
               str(local), f"{USER}@127.0.0.1:/scp.bin"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=DEADLINE * 4, check=False)
    assert result.returncode == 0, result.stderr
    assert s3.get_object(Bucket=bucket, Key="scp.bin")["Body"].read() == payload
    client = connect(server)
    try:
        client.utime("/scp.bin", (1_500_000_000, 1_500_000_000))  # kept as the object's metadata
        assert client.stat("/scp.bin").st_mtime == 1_500_000_000
        with pytest.raises(OSError, match="no permissions"):
            client.chmod("/scp.bin", 0o600)
    finally:
        client.get_channel().get_transport().close()


def test_behind_a_balancer_the_client_address_counts(tmp_path: Path) -> None:
    """C{--sftp haproxy:...}: the PROXY header names the client, for logs, limits and bans."""
    root = tmp_path / "root"
    root.mkdir()
    server = SFTPServer(root, tmp_path / "state", "--auth", AUTH, *FAST, "--trusted-proxy", "127.0.0.1/32",
                        sftp="haproxy:tcp:0:interface=127.0.0.1").start()
    try:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE)
        sock.sendall(b"PROXY TCP4 198.51.100.9 127.0.0.1 50000 22\r\n")
        transport = paramiko.Transport(sock)
        transport.connect(username=USER, password=PASSWORD)
        client = paramiko.SFTPClient.from_transport(transport)
        assert client is not None and client.listdir("/") == []
        transport.close()
        server.server.wait_for_log(r"Login of 'alice' from 198\.51\.100\.9")
        # Without the header the connection is not served.
        with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE) as direct:
            direct.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
            try:
                answer = direct.recv(4096)
            except ConnectionResetError:
                answer = b""  # dropped
            assert not answer.startswith(b"SSH-2.0-")
    finally:
        server.stop()


def test_shutdown_closes_sftp_sessions(tmp_path: Path) -> None:
    server = start(tmp_path, "--auth", AUTH, *FAST, "--shutdown-grace", "5")
    client = connect(server)
    try:
        assert client.listdir("/") == []
        assert server.server.stop(timeout=DEADLINE) in (0, -signal.SIGTERM)  # not killed
        assert "Closing 1 sessions for shutdown" in server.server.log()
        transport = client.get_channel().get_transport()
        wait_until(lambda: not transport.is_active(), "the client to see the disconnect")
    finally:
        client.get_channel().get_transport().close()
