"""
The data channel: a passive port range, the announced passive address, the
data-connection timeout, who PORT may name, and IPv6.
"""

from __future__ import annotations

import contextlib
import ftplib
import io
import os
import socket
from collections.abc import Callable

import pytest
from conftest import (
    AUTH,
    Control,
    FTPServer,
    code,
    free_port,
    ipv6_usable,
    parse_227,
    parse_229,
    port_argument,
    read_all,
    refused_code,
    retr_bytes,
    wait_until,
)

# One passive port


def _one_port_server(start_server: Callable[..., FTPServer], content: bytes, *options: str) -> FTPServer:
    """A server with a single passive port (its C{passive_port}) serving C{/file.txt}."""
    port = free_port()
    served = start_server("--auth", AUTH, "--passive-ports", f"{port}-{port}", *options)
    served.passive_port = port  # type: ignore[attr-defined]
    (served.root / "file.txt").write_bytes(content)
    return served


@pytest.fixture(scope="module")
def one_port(start_server: Callable[..., FTPServer]) -> FTPServer:
    return _one_port_server(start_server, b"through the only port\n")


def test_single_passive_port_is_exclusive(one_port: FTPServer) -> None:
    port = one_port.passive_port  # type: ignore[attr-defined]
    with one_port.control() as first, one_port.control() as second:
        first.login()
        second.login()
        assert first.cmd("TYPE I").code == 200
        assert first.pasv() == ("127.0.0.1", port)
        # The only port is taken: the second session is told so, and carries on.
        busy = second.cmd("PASV")
        assert busy.code == 425, busy
        assert second.cmd("NOOP").code == 200
        assert second.cmd("EPSV").code == 425
        assert second.cmd("PWD").code == 257
        # The first session uses its port.
        assert first.retr("/file.txt", port) == b"through the only port\n"
        # Now the port is free again, for either session.
        assert second.pasv() == ("127.0.0.1", port)
        assert second.cmd("TYPE I").code == 200
        assert second.retr("/file.txt", port) == b"through the only port\n"


def test_single_passive_port_reused_by_one_session(one_port: FTPServer) -> None:
    client = one_port.login()
    try:
        for _ in range(5):
            assert retr_bytes(client, "/file.txt") == b"through the only port\n"
        # A PASV that is replaced by another PASV gives its port back at once.
        for _ in range(3):
            assert parse_227(client.sendcmd("PASV"))[1] == one_port.passive_port  # type: ignore[attr-defined]
        assert retr_bytes(client, "/file.txt") == b"through the only port\n"
    finally:
        client.close()


def test_passive_ports_are_not_logged(one_port: FTPServer) -> None:
    """Twisted's "starting on" and "Port ... Closed" lines for each passive port stay out of the log."""
    start = one_port.log_position()
    client = one_port.login()
    try:
        assert retr_bytes(client, "/file.txt") == b"through the only port\n"
    finally:
        client.close()
    one_port.wait_for_log("downloaded /file.txt", start=start)
    log = one_port.log(start)
    assert str(one_port.passive_port) not in log, log  # type: ignore[attr-defined]
    assert "starting on" not in log and "Closed" not in log, log


def test_passive_port_freed_when_session_quits(one_port: FTPServer) -> None:
    port = one_port.passive_port  # type: ignore[attr-defined]
    with one_port.control() as first, one_port.control() as second:
        first.login()
        second.login()
        assert first.pasv()[1] == port
        assert first.cmd("QUIT").code == 221
        assert first.at_eof()

        def second_gets_port() -> bool:
            reply = second.cmd("PASV")
            assert reply.code in (227, 425), reply
            return reply.code == 227

        wait_until(second_gets_port, "the quitting session's passive port to be freed")


def test_passive_connection_from_the_wrong_host_is_refused(one_port: FTPServer) -> None:
    # The data port accepts only the control connection's address; 127.0.0.2 is someone else.
    port = one_port.passive_port  # type: ignore[attr-defined]
    with one_port.control() as control:
        control.login()
        assert control.cmd("TYPE I").code == 200
        assert control.pasv()[1] == port
        intruder = socket.socket()
        intruder.bind(("127.0.0.2", 0))
        intruder.settimeout(10)
        try:
            intruder.connect(("127.0.0.1", port))
            with contextlib.suppress(ConnectionResetError):
                assert intruder.recv(1) == b""
        except OSError:
            pass
        finally:
            intruder.close()
        # The rightful client still gets its data.
        assert control.retr("/file.txt", port) == b"through the only port\n"


# The data-connection timeout


@pytest.fixture(scope="module")
def quick_data_timeout(start_server: Callable[..., FTPServer]) -> FTPServer:
    return _one_port_server(start_server, b"late\n", "--data-timeout", "1")


def test_unused_pasv_times_out_and_port_is_reused(quick_data_timeout: FTPServer) -> None:
    port = quick_data_timeout.passive_port  # type: ignore[attr-defined]
    with quick_data_timeout.control() as idle, quick_data_timeout.control() as other:
        idle.login()
        other.login()
        assert idle.pasv()[1] == port
        # Nobody connects; once the data timeout passes, the port is free for another session.
        wait_until(lambda: other.cmd("PASV").code == 227, "the unused passive port to be released", interval=0.1)
        # The first session's channel is gone: its transfer cannot start (425, perhaps after a 150).
        reply = idle.cmd("RETR /file.txt")
        if reply.code == 150:
            reply = idle.reply()
        assert reply.code == 425, reply
        assert idle.cmd("NOOP").code == 200
        # And the second session's channel works (a fresh one, so that its own second is not used up).
        assert other.pasv()[1] == port
        assert other.retr("/file.txt", port).replace(b"\r\n", b"\n") == b"late\n"


def test_transfer_waiting_for_a_connection_times_out(quick_data_timeout: FTPServer) -> None:
    with quick_data_timeout.control() as control:
        control.login()
        port = control.pasv()[1]
        # RETR before connecting: 150, then 425 once the data timeout passes.
        assert control.cmd("RETR /file.txt").code == 150
        assert control.reply().code == 425
        assert control.cmd("NOOP").code == 200
        # The port was released.
        assert control.pasv()[1] == port


# The announced passive address


@pytest.fixture(scope="module")
def nat(start_server: Callable[..., FTPServer]) -> FTPServer:
    served = start_server("--auth", AUTH, "--passive-address", "203.0.113.5")
    (served.root / "file.txt").write_bytes(b"x")
    return served


def test_passive_address_in_227(nat: FTPServer) -> None:
    # Only the reply text is checked: 203.0.113.5 is never contacted.
    with nat.control() as control:
        control.login()
        reply = control.cmd("PASV")
        assert reply.code == 227
        assert "(203,0,113,5," in reply.text
        host, port = parse_227(reply.text)
        assert host == "203.0.113.5" and 0 < port < 65536
        # EPSV names no address, and works over the control connection's address.
        port = parse_229(control.cmd("EPSV").text)
        assert control.retr("/file.txt", port) == b"x"


# Active mode: whom PORT may name


def test_port_to_own_address(ftp: ftplib.FTP, listener: socket.socket) -> None:
    ftp.storbinary("STOR /port-own.txt", io.BytesIO(b"active"))
    port = listener.getsockname()[1]
    assert ftp.sendcmd(f"PORT {port_argument('127.0.0.1', port)}").startswith("200")
    assert ftp.sendcmd("RETR /port-own.txt").startswith("150")
    data, peer = listener.accept()
    with data:
        assert peer[0] == "127.0.0.1"
        assert read_all(data) == b"active"
    assert ftp.voidresp().startswith("226")
    ftp.delete("/port-own.txt")


def test_port_to_another_address_refused(ftp: ftplib.FTP) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.2", 0))
        other.listen(1)
        port = other.getsockname()[1]
        assert refused_code(ftp, f"PORT {port_argument('127.0.0.2', port)}") == 501
        assert refused_code(ftp, f"EPRT |1|127.0.0.2|{port}|") == 501
        # No data channel was set up.
        with pytest.raises(ftplib.error_temp) as refused:
            ftp.sendcmd("LIST")
        assert code(refused.value) == 425


@pytest.mark.parametrize("port", [1, 21, 80, 1023])
def test_port_to_privileged_port_refused(ftp: ftplib.FTP, port: int) -> None:
    assert refused_code(ftp, f"PORT {port_argument('127.0.0.1', port)}") == 501
    assert refused_code(ftp, f"EPRT |1|127.0.0.1|{port}|") == 501
    with pytest.raises(ftplib.error_temp) as refused:
        ftp.sendcmd("LIST")
    assert code(refused.value) == 425


def test_port_to_closed_port_425(ftp: ftplib.FTP) -> None:
    port = free_port()
    ftp.storbinary("STOR /closed-port.txt", io.BytesIO(b"x"))
    assert ftp.sendcmd(f"PORT {port_argument('127.0.0.1', port)}").startswith("200")
    with pytest.raises(ftplib.error_temp) as failed:
        reply = ftp.sendcmd("RETR /closed-port.txt")
        # A server may first say 150 and then fail.
        assert reply.startswith("150")
        ftp.voidresp()
    assert code(failed.value) == 425
    assert ftp.voidcmd("NOOP").startswith("200")
    ftp.delete("/closed-port.txt")


# IPv6


@pytest.fixture(scope="module")
def ipv6(start_server: Callable[..., FTPServer]) -> FTPServer:
    if not ipv6_usable():
        pytest.skip("::1 is not usable here")
    served = start_server("--auth", AUTH, listen=r"tcp6:0:interface=\:\:1")
    assert served.host == "::1"
    return served


@pytest.mark.parametrize("passive", [True, False], ids=["EPSV", "EPRT"])
def test_ipv6_transfers(ipv6: FTPServer, passive: bool) -> None:
    client = ipv6.login()
    try:
        assert client.af == socket.AF_INET6
        client.set_pasv(passive)
        data = os.urandom(123_457)
        name = f"/v6-{'epsv' if passive else 'eprt'}.bin"
        assert client.storbinary(f"STOR {name}", io.BytesIO(data)).startswith("226")
        assert retr_bytes(client, name) == data
        assert name.lstrip("/") in client.nlst("/")
        assert (ipv6.root / name.lstrip("/")).read_bytes() == data
    finally:
        client.close()


def test_ipv6_rejects_ipv4_commands(ipv6: FTPServer) -> None:
    with Control(ipv6.host, ipv6.port) as control:
        control.login()
        assert control.cmd("EPSV 1").code == 522
        reply = control.cmd("EPSV 2")
        assert reply.code == 229
        assert 500 <= control.cmd("PASV").code < 600
        assert 500 <= control.cmd("PORT 127,0,0,1,200,1").code < 600
        assert control.cmd("EPRT |1|127.0.0.1|51200|").code == 522
        assert control.cmd("NOOP").code == 200


def test_ipv6_eprt_to_other_address_refused(ipv6: FTPServer) -> None:
    with Control(ipv6.host, ipv6.port) as control:
        control.login()
        assert control.cmd("EPRT |2|::2|51200|").code == 501
        assert control.cmd("EPRT |2|::1|80|").code == 501
