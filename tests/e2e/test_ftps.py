"""
FTPS end to end: explicit AUTH TLS and implicit TLS, with protected data
connections, against real clients (ftplib, curl, lftp) that verify the
server against a test CA.
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import os
import shutil
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from _certs import PKIFiles, make_pki
from conftest import AUTH, PASSWORD, USER, FTPServer, code, run_twistd

PAYLOAD = os.urandom(300_000)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKIFiles:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def explicit(start_server: Callable[..., FTPServer], pki: PKIFiles) -> FTPServer:
    server = start_server("--auth", AUTH, "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key))
    (server.root / "data.bin").write_bytes(PAYLOAD)
    return server


@pytest.fixture(scope="module")
def strict(start_server: Callable[..., FTPServer], pki: PKIFiles) -> FTPServer:
    return start_server(
        "--auth", AUTH, "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
        "--require-tls", "--require-prot-p", "--require-tls-reuse",
    )


@pytest.fixture(scope="module")
def implicit(start_server: Callable[..., FTPServer], pki: PKIFiles) -> FTPServer:
    server = start_server("--auth", AUTH, listen=f"ssl:0:interface=127.0.0.1:privateKey={pki.server_bundle}")
    (server.root / "data.bin").write_bytes(PAYLOAD)
    return server


def _context(pki: PKIFiles) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca_cert))


class _ReusingFTP_TLS(ftplib.FTP_TLS):
    """FTP_TLS that resumes the control connection's TLS session on data connections."""

    def ntransfercmd(self, cmd: str, rest: int | None = None) -> tuple[object, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:  # type: ignore[attr-defined]
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)  # type: ignore[union-attr]
        return conn, size


def _tls_client(server: FTPServer, pki: PKIFiles, cls: type[ftplib.FTP_TLS] = ftplib.FTP_TLS) -> ftplib.FTP_TLS:
    client = cls(context=_context(pki), timeout=15)
    client.connect(server.host, server.port)
    client.auth()
    client.login(USER, PASSWORD)
    return client


def test_feat_lists_tls(explicit: FTPServer) -> None:
    client = explicit.connect()
    try:
        features = client.sendcmd("FEAT").splitlines()
        assert " AUTH TLS" in features and " PBSZ" in features and " PROT" in features
    finally:
        client.close()


def test_explicit_tls_prot_p_round_trip(explicit: FTPServer, pki: PKIFiles) -> None:
    client = _tls_client(explicit, pki)
    try:
        client.prot_p()
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[union-attr]
        lines: list[str] = []
        client.retrlines("LIST", lines.append)
        assert any(line.endswith(" data.bin") for line in lines)
        received = io.BytesIO()
        client.retrbinary("RETR data.bin", received.write)
        assert received.getvalue() == PAYLOAD
        client.storbinary("STOR up.bin", io.BytesIO(PAYLOAD[::-1]))
        assert (explicit.root / "up.bin").read_bytes() == PAYLOAD[::-1]
    finally:
        client.close()


def test_prot_sequencing(explicit: FTPServer, pki: PKIFiles) -> None:
    client = explicit.connect()
    try:
        with pytest.raises(ftplib.error_perm) as refused:
            client.sendcmd("PBSZ 0")
        assert code(refused.value) == 503
        client_tls = _tls_client(explicit, pki)
        with pytest.raises(ftplib.error_perm) as refused:
            client_tls.sendcmd("PROT P")
        assert code(refused.value) == 503
        assert client_tls.sendcmd("PBSZ 0").startswith("200")
        with pytest.raises(ftplib.error_perm) as refused:
            client_tls.sendcmd("PROT E")
        assert code(refused.value) == 536
        with pytest.raises(ftplib.error_perm) as refused:
            client_tls.sendcmd("CCC")
        assert code(refused.value) == 534
        client_tls.close()
    finally:
        client.close()


def test_clear_data_still_allowed_by_default(explicit: FTPServer, pki: PKIFiles) -> None:
    client = _tls_client(explicit, pki)
    try:
        client.prot_c()
        received = io.BytesIO()
        client.retrbinary("RETR data.bin", received.write)
        assert received.getvalue() == PAYLOAD
    finally:
        client.close()


def test_require_tls_and_prot_p(strict: FTPServer, pki: PKIFiles) -> None:
    plain = strict.connect()
    try:
        with pytest.raises(ftplib.error_perm) as refused:
            plain.login(USER, PASSWORD)
        assert code(refused.value) == 530
    finally:
        plain.close()
    client = _tls_client(strict, pki, _ReusingFTP_TLS)
    try:
        client.prot_c()
        with pytest.raises(ftplib.error_perm) as refused:
            client.retrlines("LIST", lambda line: None)
        assert code(refused.value) == 521
        client.prot_p()
        client.storbinary("STOR strict.bin", io.BytesIO(b"secret bytes"))
        assert (strict.root / "strict.bin").read_bytes() == b"secret bytes"
    finally:
        client.close()


def test_require_session_reuse_refuses_fresh_sessions(strict: FTPServer, pki: PKIFiles) -> None:
    client = _tls_client(strict, pki)  # plain FTP_TLS does not resume the session
    try:
        client.prot_p()
        with pytest.raises((ftplib.error_temp, ftplib.error_perm, ssl.SSLError, OSError)):
            client.retrlines("LIST", lambda line: None)
    finally:
        client.close()
    strict.wait_for_log("did not resume")


def _implicit_client(implicit: FTPServer, pki: PKIFiles) -> ftplib.FTP_TLS:
    """ftplib logged in over implicit TLS: the control connection is TLS from its first byte."""
    raw = _context(pki).wrap_socket(
        __import__("socket").create_connection((implicit.host, implicit.port), timeout=15),
        server_hostname=implicit.host,
    )
    client = ftplib.FTP_TLS(context=_context(pki), timeout=15)
    client.sock = raw
    client.host, client.port = implicit.host, implicit.port
    client.af = raw.family
    client.file = raw.makefile("r", encoding="utf-8")
    client.welcome = client.getresp()
    client.login(USER, PASSWORD, secure=False)
    return client


def test_implicit_tls(implicit: FTPServer, pki: PKIFiles) -> None:
    client = _implicit_client(implicit, pki)
    try:
        client.prot_p()
        received = io.BytesIO()
        client.retrbinary("RETR data.bin", received.write)
        assert received.getvalue() == PAYLOAD
    finally:
        client.close()


def test_implicit_tls_data_is_clear_until_prot_p(implicit: FTPServer, pki: PKIFiles) -> None:
    """
    RFC 4217's default for implicit FTPS too: a client that never sends PROT
    (fsspec's implicit-TLS client) gets its data in clear, not a TLS handshake
    it does not expect.
    """
    client = _implicit_client(implicit, pki)
    try:
        received = io.BytesIO()
        client.retrbinary("RETR data.bin", received.write)  # no PROT: a plain data socket
        assert received.getvalue() == PAYLOAD
    finally:
        client.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_explicit_and_implicit(explicit: FTPServer, implicit: FTPServer, pki: PKIFiles, tmp_path: Path) -> None:
    out = tmp_path / "explicit.bin"
    subprocess.run(
        ["curl", "-sS", "--ssl-reqd", "--cacert", str(pki.ca_cert), "-o", str(out),
         f"ftp://{USER}:{PASSWORD}@{explicit.host}:{explicit.port}/data.bin"],
        check=True, timeout=60,
    )
    assert out.read_bytes() == PAYLOAD
    upload = tmp_path / "up.bin"
    upload.write_bytes(PAYLOAD[:1000])
    subprocess.run(
        ["curl", "-sS", "--ssl-reqd", "--cacert", str(pki.ca_cert), "-T", str(upload),
         f"ftp://{USER}:{PASSWORD}@{explicit.host}:{explicit.port}/curl-up.bin"],
        check=True, timeout=60,
    )
    assert (explicit.root / "curl-up.bin").read_bytes() == PAYLOAD[:1000]
    out = tmp_path / "implicit.bin"
    subprocess.run(
        ["curl", "-sS", "--cacert", str(pki.ca_cert), "-o", str(out),
         f"ftps://{USER}:{PASSWORD}@{implicit.host}:{implicit.port}/data.bin"],
        check=True, timeout=60,
    )
    assert out.read_bytes() == PAYLOAD


@pytest.mark.skipif(shutil.which("lftp") is None, reason="lftp not installed")
def test_lftp_verifies_and_transfers(explicit: FTPServer, pki: PKIFiles, tmp_path: Path) -> None:
    script = (
        f"set ssl:ca-file {pki.ca_cert}; set ftp:ssl-force true; set ftp:ssl-protect-data true; "
        "set ssl:verify-certificate true; set net:max-retries 1; set net:timeout 15; "
        f"open -u {USER},{PASSWORD} ftp://{explicit.host}:{explicit.port}; "
        f"get data.bin -o {tmp_path / 'lftp.bin'}; put {tmp_path / 'lftp.bin'} -o lftp-up.bin; bye"
    )
    result = subprocess.run(["lftp", "-d", "-c", script], timeout=120, capture_output=True, text=True)
    Path("/tmp/lftp-debug.log").write_text(result.stderr + result.stdout)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    assert hashlib.sha256((tmp_path / "lftp.bin").read_bytes()).digest() == hashlib.sha256(PAYLOAD).digest()
    assert (explicit.root / "lftp-up.bin").read_bytes() == PAYLOAD


def test_auth_without_certificate(start_server: Callable[..., FTPServer]) -> None:
    server = start_server("--auth", AUTH)
    client = server.connect()
    try:
        with pytest.raises(ftplib.error_perm) as refused:
            client.sendcmd("AUTH TLS")
        assert code(refused.value) == 502
        assert "AUTH TLS" not in client.sendcmd("FEAT")
    finally:
        client.close()


def test_failed_handshake_closes_only_that_connection(explicit: FTPServer, pki: PKIFiles) -> None:
    import socket

    with socket.create_connection((explicit.host, explicit.port), timeout=15) as sock:
        sock.recv(1024)
        sock.sendall(b"AUTH TLS\r\n")
        assert sock.recv(1024).startswith(b"234")
        sock.sendall(b"this is not a TLS client hello\r\n" * 10)
        sock.settimeout(15)
        try:
            while sock.recv(1024):
                pass
        except OSError:
            pass
    client = _tls_client(explicit, pki)
    assert client.sendcmd("NOOP").startswith("200")
    client.close()


def test_bad_tls_options() -> None:
    result = run_twistd("exftp", "--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key")
    assert result.returncode != 0
    assert "--tls-cert" in result.stderr + result.stdout
    result = run_twistd("exftp", "--require-tls")
    assert result.returncode != 0


def test_certificate_reloaded_on_sighup(
    start_server: Callable[..., FTPServer], tmp_path_factory: pytest.TempPathFactory
) -> None:
    import signal

    first = make_pki(tmp_path_factory.mktemp("first"))
    second = make_pki(tmp_path_factory.mktemp("second"))
    live = tmp_path_factory.mktemp("live")
    cert, key = live / "cert.pem", live / "key.pem"
    shutil.copy(first.server_cert, cert)
    shutil.copy(first.server_key, key)
    server = start_server("--auth", AUTH, "--tls-cert", str(cert), "--tls-key", str(key))
    old_session = _tls_client(server, first)
    shutil.copy(second.server_cert, cert)
    shutil.copy(second.server_key, key)
    start = server.log_position()
    os.kill(server.process.pid, signal.SIGHUP)  # type: ignore[union-attr]
    server.wait_for_log("TLS certificate reloaded", start=start)
    assert old_session.sendcmd("NOOP").startswith("200")  # running sessions keep theirs
    old_session.close()
    _tls_client(server, second).close()  # new sessions get the new certificate
    with pytest.raises(ssl.SSLCertVerificationError):
        _tls_client(server, first)


def test_active_mode_data_connection_is_tls(explicit: FTPServer, pki: PKIFiles) -> None:
    client = _tls_client(explicit, pki)
    try:
        client.prot_p()
        client.set_pasv(False)  # PORT: the server connects out, and is still the TLS server
        received = io.BytesIO()
        client.retrbinary("RETR data.bin", received.write)
        assert received.getvalue() == PAYLOAD
        client.storbinary("STOR active-tls.bin", io.BytesIO(PAYLOAD[:5000]))
        assert (explicit.root / "active-tls.bin").read_bytes() == PAYLOAD[:5000]
    finally:
        client.close()
