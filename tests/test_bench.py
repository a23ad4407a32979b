"""
The benchmark's own clients against a real C{twistd exftp} (started the way
C{bench/run.py} starts it): they must move whole files and time them, or the
benchmark's numbers mean nothing. Small files only: this checks the tools,
not the speed.
"""

from __future__ import annotations

import ftplib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import _clients, _servers

USER, PASSWORD = "bench", "bench-secret"
SIZE = 3 * 1024 * 1024 + 123


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_servers.Exftp]:
    root = tmp_path / "root"
    (root / "upload").mkdir(parents=True)
    (root / "big.bin").write_bytes(os.urandom(SIZE))
    exftp = _servers.Exftp(tmp_path, root, USER, PASSWORD)
    exftp.start()
    try:
        yield exftp
    finally:
        exftp.stop()


def test_zero_copy_retr_counts_every_byte(server: _servers.Exftp) -> None:
    """The RETR client that lets the kernel discard the data still counts all of it, up to the 226."""
    ftp = _clients.session(_servers.HOST, server.port, USER, PASSWORD)
    try:
        result = _clients.zero_copy_retr(ftp, "big.bin")
    finally:
        _clients.close_session(ftp)
    assert result.size == SIZE
    assert result.reply.startswith("226")
    assert result.seconds > 0


def test_zero_copy_stor_stores_the_file_whole(server: _servers.Exftp, tmp_path: Path) -> None:
    """The sendfile STOR client uploads the file byte for byte, and the 226 comes."""
    ftp = _clients.session(_servers.HOST, server.port, USER, PASSWORD)
    try:
        result = _clients.zero_copy_stor(ftp, str(server.root / "big.bin"), "upload/copy.bin")
    finally:
        _clients.close_session(ftp)
    assert result.size == SIZE
    assert result.reply.startswith("226")
    assert (server.root / "upload" / "copy.bin").read_bytes() == (server.root / "big.bin").read_bytes()


def test_small_transfers_client_and_noop_probe(server: _servers.Exftp) -> None:
    """Scenario 3's client makes all its RETRs; the fairness probe records NOOP round trips meanwhile."""
    other = _clients.session(_servers.HOST, server.port, USER, PASSWORD)
    try:
        with _clients.NoopProbe(other) as probe:
            output = _clients._small_transfers_client(_servers.HOST, server.port, USER, PASSWORD, "big.bin", 3)
    finally:
        _clients.close_session(other)
    assert output["ok"], output
    assert output["bytes"] == 3 * SIZE
    assert len(output["latencies"]) == 3
    assert probe.latencies
    assert not probe.errors


def test_a_refused_session_is_reported_as_refused(tmp_path: Path) -> None:
    """A server that turns a session away (421, or closing at once) is a refusal, not a slow client."""
    with socket.socket() as listener:
        listener.bind((_servers.HOST, 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = ftplib.FTP()
        client.sock = socket.create_connection((_servers.HOST, port), timeout=5)
        accepted, _ = listener.accept()
        with accepted:
            accepted.sendall(b"421 Too many connections from your address.\r\n")
        client.file = client.sock.makefile("r", encoding="latin-1")
        with pytest.raises(ftplib.error_temp) as raised:
            client.getresp()
        client.close()
    assert _clients.refused(raised.value)
    assert _clients.refused(ConnectionResetError())
    assert not _clients.refused(TimeoutError())
