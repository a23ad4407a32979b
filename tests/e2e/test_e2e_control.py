"""
The control connection as client libraries use it: ABOR sent as TCP urgent
data (Python's C{ftplib.FTP.abort}), and QUIT while a transfer is open.
"""

from __future__ import annotations

import os
import socket

from conftest import PASSWORD, USER, Area, FTPServer

PAYLOAD = os.urandom(4 * 1024 * 1024)


def test_urgent_abor_while_idle(server: FTPServer) -> None:
    """ftplib sends ABOR with MSG_OOB: the session answers it and goes on."""
    client = server.login(timeout=10)
    try:
        assert client.abort()[:3] in ("225", "226")
        assert client.voidcmd("NOOP").startswith("200")
    finally:
        client.close()


def test_urgent_abor_during_a_download(server: FTPServer, area: Area) -> None:
    area.file("big.bin", PAYLOAD)
    client = server.login(timeout=10)
    try:
        client.voidcmd("TYPE I")
        data = client.transfercmd(f"RETR {area.path}/big.bin")
        data.recv(65536)  # the transfer runs
        reply = client.abort()
        assert reply[:3] in ("225", "226", "426"), reply
        data.close()
        if reply.startswith("426"):
            assert client.getresp()[:3] in ("225", "226")
        assert client.voidcmd("NOOP").startswith("200")
    finally:
        client.close()


def _raw_login(server: FTPServer) -> tuple[socket.socket, socket.SocketIO]:
    control = socket.create_connection((server.host, server.port), timeout=10)
    replies = control.makefile("rb")
    assert replies.readline().startswith(b"220")
    for line, expected in ((f"USER {USER}", b"331"), (f"PASS {PASSWORD}", b"230"), ("TYPE I", b"200")):
        control.sendall(line.encode() + b"\r\n")
        assert replies.readline().startswith(expected)
    return control, replies  # type: ignore[return-value]


def test_quit_during_an_upload_is_answered_at_once(server: FTPServer, area: Area) -> None:
    """
    A client that waits for QUIT's 221 before it closes its data connection
    (PyFilesystem2 does) gets it at once; the upload still completes whole,
    then the server closes the control connection.
    """
    control, replies = _raw_login(server)
    try:
        control.sendall(b"PASV\r\n")
        answer = replies.readline().decode()
        numbers = answer[answer.index("(") + 1 : answer.index(")")].split(",")
        port = int(numbers[4]) * 256 + int(numbers[5])
        data = socket.create_connection((server.host, port), timeout=10)
        control.sendall(f"STOR {area.path}/up.bin\r\n".encode())
        assert replies.readline().startswith(b"150")
        data.sendall(PAYLOAD)
        control.sendall(b"QUIT\r\n")
        assert replies.readline().startswith(b"221")  # before the data connection is closed
        data.close()
        rest = replies.read()  # the server closes once the upload is done
        assert rest.startswith(b"226"), rest
    finally:
        control.close()
    assert (area.local / "up.bin").read_bytes() == PAYLOAD
    assert [p.name for p in area.local.iterdir()] == ["up.bin"]  # no upload temporary left


def test_quit_ends_the_session_when_idle(server: FTPServer) -> None:
    control, replies = _raw_login(server)
    try:
        control.sendall(b"QUIT\r\nNOOP\r\n")
        assert replies.readline().startswith(b"221")
        assert replies.read() == b""
    finally:
        control.close()

