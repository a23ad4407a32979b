"""
A client that pipelines commands and never reads the replies: the server stops
reading its commands once a little output waits, so its memory stays bounded
and the other sessions are served throughout.
"""

from __future__ import annotations

import ftplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from _certs import PKIFiles, make_pki
from conftest import AUTH, DEADLINE, Control, FTPServer, rss_kib

#: How much the server's RSS may grow under one attack (KiB).
_GROWTH_LIMIT = 16 * 1024
#: How long another session's NOOP may take during an attack (seconds).
_NOOP_LIMIT = 1.0
#: Files in the directory the STAT attack lists.
_FILES = 3000


class _NoopProbe(threading.Thread):
    """Another session sending NOOP over and over; the slowest answer, in seconds."""

    def __init__(self, client: ftplib.FTP) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.slowest = 0.0
        self.answered = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            started = time.monotonic()
            try:
                self.client.voidcmd("NOOP")
            except (OSError, ftplib.Error):
                self.slowest = float("inf")  # no answer within the client's timeout
                return
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.answered += 1
            self._done.wait(0.05)

    def stop(self) -> None:
        self._done.set()
        self.join(DEADLINE)


@contextmanager
def _probing(server: FTPServer) -> Iterator[_NoopProbe]:
    client = server.login()
    probe = _NoopProbe(client)
    probe.start()
    try:
        yield probe
    finally:
        probe.stop()
        client.close()


def _push(sock: socket.socket, payload: bytes, stall: float = 2.0) -> int:
    """
    Send as much of C{payload} as the server takes, never reading; stop once
    it has taken nothing for C{stall} seconds. The bytes sent.
    """
    sock.settimeout(stall)
    sent = 0
    view = memoryview(payload)
    while sent < len(payload):
        try:
            sent += sock.send(view[sent : sent + 65536])
        except TimeoutError:
            break
    return sent


def _settled_rss(server: FTPServer, probe: _NoopProbe) -> int:
    """The server's RSS once it has done what it read: the most over a few samples after NOOPs."""
    highest = 0
    for _ in range(5):
        answered = probe.answered
        deadline = time.monotonic() + DEADLINE
        while probe.answered <= answered + 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        highest = max(highest, rss_kib(server.pid))
    return highest


def _read_to(sock: socket.socket, marker: bytes) -> None:
    received = b""
    while marker not in received:
        chunk = sock.recv(4096)
        assert chunk, received
        received += chunk


Attack = Callable[[socket.socket, PKIFiles], tuple[socket.socket, bytes]]


def _help_flood(sock: socket.socket, pki: PKIFiles) -> tuple[socket.socket, bytes]:
    """Before login: 4 MiB of HELP, each answered with a multi-line reply."""
    return sock, b"HELP\r\n" * (4 * 1024 * 1024 // 6)


def _help_flood_over_tls(sock: socket.socket, pki: PKIFiles) -> tuple[socket.socket, bytes]:
    """The same after AUTH TLS: the TLS layer sits between the session and its socket."""
    sock.sendall(b"AUTH TLS\r\n")
    _read_to(sock, b"234 ")
    secured = ssl.create_default_context(cafile=str(pki.ca_cert)).wrap_socket(sock, server_hostname="127.0.0.1")
    return secured, b"HELP\r\n" * (4 * 1024 * 1024 // 6)


def _stat_flood(sock: socket.socket, pki: PKIFiles) -> tuple[socket.socket, bytes]:
    """After login: STAT of a directory of a few thousand files, again and again."""
    sock.sendall(b"USER alice\r\nPASS secret\r\n")
    _read_to(sock, b"\r\n230 ")
    return sock, b"STAT /many\r\n" * 4000


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKIFiles:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def lone_server(
    start_server: Callable[..., FTPServer], tmp_path_factory: pytest.TempPathFactory, pki: PKIFiles
) -> FTPServer:
    """A server of its own (so that its memory figures are this test's), with a big directory."""
    root = tmp_path_factory.mktemp("memory")
    many = root / "many"
    many.mkdir()
    for index in range(_FILES):
        (many / f"file-with-a-longish-name-{index:05}.txt").write_bytes(b"x")
    tls = ("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key))
    return start_server("--auth", AUTH, *tls, root=root)


@pytest.mark.parametrize(
    "attack", [_help_flood, _help_flood_over_tls, _stat_flood], ids=["help-before-login", "help-tls", "stat-directory"]
)
def test_pipelined_commands_never_read(lone_server: FTPServer, pki: PKIFiles, attack: Attack) -> None:
    server = lone_server
    # Warm up: imports, caches and the thread pool that a HELP and a big STAT use.
    warm = server.login()
    warm.sendcmd("HELP")
    assert warm.sendcmd("STAT /many").startswith("213")
    warm.quit()
    with _probing(server) as probe:
        baseline = _settled_rss(server, probe)
        sock = socket.create_connection((server.host, server.port), timeout=DEADLINE)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            assert sock.recv(4096).startswith(b"220")
            sock, payload = attack(sock, pki)
            sent = _push(sock, payload)
            after = _settled_rss(server, probe)
        finally:
            sock.close()
        slowest = probe.slowest
    growth = after - baseline
    assert server.alive()
    assert growth < _GROWTH_LIMIT, (
        f"server RSS grew by {growth / 1024:.1f} MiB (from {baseline / 1024:.1f} MiB) after the client sent "
        f"{sent} bytes of commands and read no reply"
    )
    assert slowest < _NOOP_LIMIT, f"another session's NOOP took {slowest:.2f}s during the attack"


def test_held_replies_all_arrive_in_order(lone_server: FTPServer) -> None:
    """Replies held while the client did not read all arrive once it reads, in order; then it is served as usual."""
    count = 20000
    with Control(lone_server.host, lone_server.port) as control:
        sender = threading.Thread(target=control.sock.sendall, args=(b"HELP\r\n" * count + b"NOOP\r\n",))
        sender.start()
        try:
            replies = [control.reply() for _ in range(count + 1)]
        finally:
            sender.join(DEADLINE)
        assert [reply.code for reply in replies] == [214] * count + [200]
        assert all(reply.lines == replies[0].lines for reply in replies[:count])
        assert control.cmd("SYST").code == 215
