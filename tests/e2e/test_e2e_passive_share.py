"""
Each client address gets a bounded share of the passive listeners, so that
one address opening PASV after PASV without connecting cannot leave every
other client with 425 (issue 16). Two addresses on one machine: 127.0.0.1
and 127.0.0.2, both loopback on Linux.
"""

from __future__ import annotations

import contextlib
import ftplib
import socket
from collections.abc import Callable, Iterator

import pytest
from conftest import AUTH, DEADLINE, PASSWORD, USER, Control, FTPServer, retr_bytes, run_twistd, wait_until

OTHER = "127.0.0.2"
#: The server's passive pool in these tests; the default share of one address is 20.
POOL = 30
REFUSED = "425 Too many passive connections from your address; try again later."


def _loopback_alias_usable() -> bool:
    try:
        with socket.socket() as probe:
            probe.bind((OTHER, 0))
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _loopback_alias_usable(), reason=f"{OTHER} is not a local address here")


@contextlib.contextmanager
def _sessions(server: FTPServer, count: int) -> Iterator[list[Control]]:
    """C{count} logged-in raw control connections from 127.0.0.1."""
    with contextlib.ExitStack() as stack:
        controls = []
        for _ in range(count):
            control = stack.enter_context(server.control())
            control.login()
            controls.append(control)
        yield controls


def _from_other_address(server: FTPServer) -> ftplib.FTP:
    """An ftplib client logged in from 127.0.0.2 (its data connections too)."""
    client = ftplib.FTP(timeout=DEADLINE, source_address=(OTHER, 0))
    client.connect(server.host, server.port)
    client.login(USER, PASSWORD)
    return client


def _pasv_replies(controls: list[Control]) -> list[str]:
    return [control.cmd("PASV").lines[0] for control in controls]


def test_one_address_cannot_take_the_whole_pool(start_server: Callable[..., FTPServer]) -> None:
    """
    One address's sessions each send PASV and never connect; with only the
    default share, another address's PASV and download still work.
    """
    server = start_server("--auth", AUTH, "--max-passive-listeners", str(POOL))
    (server.root / "file.txt").write_bytes(b"still served\n")
    with _sessions(server, POOL) as greedy:
        replies = _pasv_replies(greedy)
        other = _from_other_address(server)
        try:
            assert retr_bytes(other, "/file.txt") == b"still served\n"
            assert other.sendcmd("PASV").startswith("227 ")
        finally:
            other.close()
        assert [r[:4] for r in replies] == ["227 "] * 20 + ["425 "] * (POOL - 20), replies
        assert replies[-1] == REFUSED
        # The refused sessions are fine otherwise.
        assert greedy[-1].cmd("NOOP").code == 200


def test_share_comes_back_on_disconnect_and_timeout(start_server: Callable[..., FTPServer]) -> None:
    server = start_server(
        "--auth", AUTH, "--max-passive-listeners-per-ip", "2", "--data-timeout", "2"
    )
    with _sessions(server, 3) as (first, second, third):
        assert [r[:4] for r in _pasv_replies([first, second])] == ["227 ", "227 "]
        assert third.cmd("PASV").lines == [REFUSED]
        # The other address is not affected by this one's share.
        other = _from_other_address(server)
        try:
            assert other.sendcmd("PASV").startswith("227 ")
        finally:
            other.close()
        # A session that goes away gives its listener back...
        first.close()
        wait_until(lambda: third.cmd("PASV").code == 227, "PASV after a disconnect", interval=0.1)
        # ...and so does a listener nobody connects to within --data-timeout.
        replacement = server.control()
        replacement.login()
        try:
            wait_until(lambda: replacement.cmd("PASV").code == 227, "PASV after a data timeout", interval=0.2)
        finally:
            replacement.close()


def test_negative_share_is_refused() -> None:
    result = run_twistd("exftp", "--max-passive-listeners-per-ip", "-1")
    assert result.returncode != 0
    assert "--max-passive-listeners-per-ip -1: must not be negative" in result.stdout + result.stderr
