"""
Hostile input against a live server (RFC 2577 hardening): a bounded
stateful fuzz run and a connection flood. Afterwards a normal client must
still be served byte-exact, and the server must not have logged a traceback
(the conftest fails any test whose server did).
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import socket
from collections.abc import Callable

import pytest
from conftest import AUTH, PASSWORD, USER, FTPServer, rss_kib

_REPLY = re.compile(rb"^\d{3}[ -]")
_VERBS = [
    "USER", "PASS", "ACCT", "SYST", "NOOP", "FEAT", "HELP", "OPTS", "ABOR", "TYPE", "MODE", "STRU",
    "PWD", "CWD", "CDUP", "MKD", "RMD", "DELE", "RNFR", "RNTO", "LIST", "NLST", "RETR", "STOR", "APPE",
    "REST", "SIZE", "MDTM", "ALLO", "STAT", "STOU", "MLSD", "MLST", "MFMT", "SITE", "HASH", "XCRC",
    "XMD5", "CLNT", "HOST", "AUTH", "PBSZ", "PROT", "CCC", "XPWD", "XCWD", "XMKD", "XRMD", "REIN",
    "SMNT", "FOO", "", "\xff\xf4", "RETR\x00",
]
_PATHS = [
    "", "a", "dir", "dir/sub", "..", "../..", "/../../etc/passwd", "/etc", "~root", "*", "-la", "a b",
    "ünïcødé", "日本語", "x" * 300, "%s%s%n", "a\x00b", "a\rb", ".", "./.", "//", "\\..\\..",
]


def _random_line(rng: random.Random) -> bytes:
    choice = rng.random()
    if choice < 0.08:
        # Garbage bytes (no line feed, so that each line gets one reply).
        return bytes(rng.choice([b for b in range(256) if b != 10]) for _ in range(rng.randrange(1, 40)))
    if choice < 0.10:
        return b"NOOP " + b"A" * rng.randrange(9000, 20000)
    verb = rng.choice(_VERBS)
    if verb == "USER":
        argument = rng.choice([USER, "anonymous", "root", "nobody"])
    elif verb == "PASS":
        argument = rng.choice([PASSWORD, "wrong", ""])
    else:
        argument = rng.choice(_PATHS)
    if verb == "MFMT":
        argument = rng.choice(["20200101000000 ", "9999 ", ""]) + argument
    line = f"{verb.lower() if rng.random() < 0.2 else verb} {argument}".rstrip(" ")
    return line.encode("utf-8", "surrogateescape")


class _Session:
    """A raw control connection that reads one final reply per line sent."""

    def __init__(self, server: FTPServer) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=15)
        self.buffer = b""
        self.final()

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def final(self) -> int:
        """Read replies up to the next final (non-1xx) one; check every line is well-formed."""
        while True:
            first = self.line()
            assert _REPLY.match(first), f"malformed reply {first!r}"
            code = int(first[:3])
            if first[3:4] == b"-":
                while not self.line().startswith(first[:3] + b" "):
                    pass
            if code >= 200:
                return code


def test_stateful_fuzz(start_server: Callable[..., FTPServer]) -> None:
    server = start_server(
        "--auth", AUTH, "--login-failure-delay", "0", "--max-login-failures", "100000", "--ban-threshold", "0",
        "--data-timeout", "2",
    )
    (server.root / "a").write_bytes(b"content of a")
    (server.root / "dir" / "sub").mkdir(parents=True)
    rng = random.Random(2577)
    codes: dict[int, int] = {}
    sent = 0
    while sent < 2000:
        session = _Session(server)
        try:
            for _ in range(100):
                session.sock.sendall(_random_line(rng) + b"\r\n")
                sent += 1
                code = session.final()
                codes[code] = codes.get(code, 0) + 1
        except EOFError:
            pass  # QUIT, or closed after too many failures: start another session
        finally:
            session.sock.close()
    assert sent >= 2000
    assert set(codes) <= set(range(200, 600)), codes
    assert codes.get(500, 0) > 0 and codes.get(530, 0) > 0 and codes.get(550, 0) + codes.get(501, 0) > 0, codes
    # Nothing escaped the root, and a normal client is served byte-exact.
    payload = os.urandom(1_000_000)
    client = server.login()
    try:
        client.storbinary("STOR after-fuzz.bin", io.BytesIO(payload))
        received = io.BytesIO()
        client.retrbinary("RETR after-fuzz.bin", received.write)
        assert hashlib.sha256(received.getvalue()).digest() == hashlib.sha256(payload).digest()
    finally:
        client.close()


def _source_address_usable(address: str) -> bool:
    try:
        with socket.socket() as probe:
            probe.bind((address, 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _source_address_usable("127.0.0.2"), reason="127.0.0.2 not usable as a source address")
def test_connection_flood(start_server: Callable[..., FTPServer]) -> None:
    server = start_server("--auth", AUTH)
    baseline = rss_kib(server.process.pid)  # type: ignore[union-attr]
    flood: list[socket.socket] = []
    refused = 0
    try:
        for index in range(500):
            sock = socket.create_connection((server.host, server.port), timeout=15)
            flood.append(sock)
            if index % 3 == 0:
                sock.sendall(os.urandom(200).replace(b"\n", b"") + b"\r\n")
        for sock in flood:
            greeting = sock.recv(4096)
            assert _REPLY.match(greeting), greeting
            refused += greeting.startswith(b"421")
        assert refused >= 400  # at most --max-sessions-per-ip (50) from one address are served
        # Another address is still served, byte-exact, while the flood holds its connections.
        bystander = socket.create_connection((server.host, server.port), timeout=15, source_address=("127.0.0.2", 0))
        bystander.close()
        import ftplib

        client = ftplib.FTP(timeout=15, source_address=("127.0.0.2", 0))
        client.connect(server.host, server.port)
        client.login(USER, PASSWORD)
        client.storbinary("STOR flood.bin", io.BytesIO(b"still served"))
        received = io.BytesIO()
        client.retrbinary("RETR flood.bin", received.write)
        assert received.getvalue() == b"still served"
        client.quit()
    finally:
        for sock in flood:
            sock.close()
    # Memory comes back down to around the baseline once the flood is gone.
    client = server.login()
    client.voidcmd("NOOP")
    client.quit()
    assert rss_kib(server.process.pid) < baseline + 32 * 1024  # type: ignore[union-attr]
    assert server.alive()
