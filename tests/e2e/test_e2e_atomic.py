"""
Uploads are atomic: while one runs, the real name is absent or keeps its old
content; an upload that is cut off leaves nothing behind; the temporary file
is never visible to clients.
"""

from __future__ import annotations

import ftplib
import io
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Area, FTPServer, code, list_lines, retr_bytes, temporary_files, wait_until

PREFIX = ".exftp-upload-"
OLD = b"the old content, which must survive\n"


def _reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN (SO_LINGER 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _received(directory: Path, count: int) -> bool:
    """Whether a temporary file in C{directory} already holds C{count} bytes."""
    for name in temporary_files(directory):
        try:
            if os.path.getsize(name) >= count:
                return True
        except FileNotFoundError:
            pass
    return False


def _visible_names(server: FTPServer, path: str) -> set[str]:
    """What another session sees in C{path}, through NLST and LIST -a."""
    observer = server.login()
    try:
        names = {name.rsplit("/", 1)[-1] for name in observer.nlst(path)}
        names |= {line.split(maxsplit=8)[-1] for line in list_lines(observer, f"LIST -a {path}")}
        return names
    finally:
        observer.close()


@pytest.fixture
def uploader(server: FTPServer) -> Iterator[ftplib.FTP]:
    client = server.login()
    client.voidcmd("TYPE I")
    yield client
    client.close()


@pytest.mark.parametrize("existing", [False, True], ids=["new", "replacing"])
def test_target_untouched_while_upload_runs(
    server: FTPServer, area: Area, uploader: ftplib.FTP, existing: bool
) -> None:
    target = area.local / "target.bin"
    if existing:
        target.write_bytes(OLD)
    first, rest = os.urandom(300_000), os.urandom(200_000)
    with uploader.transfercmd(f"STOR {area.path}/target.bin") as conn:
        conn.sendall(first)
        wait_until(lambda: _received(area.local, len(first)), "the first part to be written")
        if existing:
            assert target.read_bytes() == OLD
        else:
            assert not target.exists()
        names = _visible_names(server, area.path)
        assert not any(name.startswith(PREFIX) for name in names), names
        assert ("target.bin" in names) is existing
        conn.sendall(rest)
    assert uploader.voidresp().startswith("226")
    assert target.read_bytes() == first + rest
    assert temporary_files(area.local) == []


@pytest.mark.parametrize("command", ["STOR", "APPE"])
def test_reset_data_connection_keeps_old_content(area: Area, uploader: ftplib.FTP, command: str) -> None:
    target = area.file("target.bin", OLD)
    conn = uploader.transfercmd(f"{command} {area.path}/target.bin")
    half = os.urandom(400_000)
    conn.sendall(half)
    wait_until(lambda: _received(area.local, len(half)), "the first part to be written")
    _reset(conn)
    with pytest.raises((ftplib.error_temp, ftplib.error_perm)) as failed:
        uploader.voidresp()
    assert code(failed.value) in (426, 451), failed.value
    wait_until(lambda: temporary_files(area.local) == [], "the temporary file to be removed")
    assert target.read_bytes() == OLD
    # The session goes on.
    assert retr_bytes(uploader, f"{area.path}/target.bin") == OLD


def test_reset_new_file_leaves_nothing(area: Area, uploader: ftplib.FTP) -> None:
    conn = uploader.transfercmd(f"STOR {area.path}/never.bin")
    conn.sendall(os.urandom(100_000))
    wait_until(lambda: _received(area.local, 100_000), "the first part to be written")
    _reset(conn)
    with pytest.raises((ftplib.error_temp, ftplib.error_perm)):
        uploader.voidresp()
    wait_until(lambda: temporary_files(area.local) == [], "the temporary file to be removed")
    assert list(area.local.iterdir()) == []


@pytest.mark.parametrize("how", ["reset", "close"])
def test_control_connection_lost_mid_upload(server: FTPServer, area: Area, how: str) -> None:
    target = area.file("target.bin", OLD)
    client = server.login()
    client.voidcmd("TYPE I")
    conn = client.transfercmd(f"STOR {area.path}/target.bin")
    try:
        conn.sendall(os.urandom(250_000))
        wait_until(lambda: _received(area.local, 250_000), "the first part to be written")
        client.file.close()
        if how == "reset":
            _reset(client.sock)
        else:
            client.sock.close()
        wait_until(lambda: temporary_files(area.local) == [], "the temporary file to be removed")
        assert target.read_bytes() == OLD
        assert [p.name for p in area.local.iterdir()] == ["target.bin"]
        # With its session gone, the server must also close the data connection.
        conn.settimeout(5)
        try:
            while conn.recv(65536):
                pass
        except ConnectionResetError:
            pass
        except TimeoutError:
            pytest.fail("the server kept the data connection open after the control connection was lost")
    finally:
        _reset(conn)


def test_both_connections_reset_mid_upload(server: FTPServer, area: Area) -> None:
    target = area.file("target.bin", OLD)
    client = server.login()
    client.voidcmd("TYPE I")
    conn = client.transfercmd(f"STOR {area.path}/target.bin")
    conn.sendall(os.urandom(250_000))
    wait_until(lambda: _received(area.local, 250_000), "the first part to be written")
    _reset(client.sock)
    client.file.close()
    _reset(conn)
    wait_until(lambda: temporary_files(area.local) == [], "the temporary file to be removed")
    assert target.read_bytes() == OLD
    # The server is still fine.
    check = server.login()
    assert retr_bytes(check, f"{area.path}/target.bin") == OLD
    check.close()


def test_abor_mid_upload(server: FTPServer, area: Area) -> None:
    target = area.file("target.bin", OLD)
    with server.control() as control:
        control.login()
        assert control.cmd("TYPE I").code == 200
        _host, port = control.pasv()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as data:
            assert control.cmd(f"STOR {area.path}/target.bin").code == 150
            data.sendall(os.urandom(200_000))
            wait_until(lambda: _received(area.local, 200_000), "the first part to be written")
            control.sock.sendall(b"\xff\xf4\xff\xf2", socket.MSG_OOB)
            control.send("ABOR")
            assert control.reply().code == 426
            assert control.reply().code == 226
        wait_until(lambda: temporary_files(area.local) == [], "the temporary file to be removed")
        assert target.read_bytes() == OLD
        assert control.cmd("NOOP").code == 200


def test_temporary_names_are_off_limits(server: FTPServer, area: Area, uploader: ftplib.FTP) -> None:
    with uploader.transfercmd(f"STOR {area.path}/target.bin") as conn:
        conn.sendall(b"x" * 100_000)
        wait_until(lambda: _received(area.local, 100_000), "the first part to be written")
        (temporary,) = (Path(p).name for p in temporary_files(area.local))
        other = server.login()
        try:
            for line in (f"RETR {area.path}/{temporary}", f"SIZE {area.path}/{temporary}",
                         f"DELE {area.path}/{temporary}", f"RNFR {area.path}/{temporary}"):  # fmt: skip
                with pytest.raises(ftplib.error_perm) as refused:
                    if line.startswith("RETR"):
                        other.retrbinary(line, lambda _: None)
                    else:
                        other.sendcmd(line)
                assert code(refused.value) == 550, line
            # Nor can a client create or clobber such a name.
            with pytest.raises(ftplib.error_perm) as refused:
                other.storbinary(f"STOR {area.path}/{temporary}", io.BytesIO(b"clobber"))
            assert code(refused.value) in (550, 553)
            with pytest.raises(ftplib.error_perm):
                other.sendcmd(f"MKD {area.path}/{PREFIX}dir")
        finally:
            other.close()
        conn.sendall(b"y")
    assert uploader.voidresp().startswith("226")
    assert (area.local / "target.bin").read_bytes() == b"x" * 100_000 + b"y"
    assert temporary_files(area.local) == []


def test_concurrent_uploads_to_one_name_do_not_mix(server: FTPServer, area: Area) -> None:
    first, second = server.login(), server.login()
    try:
        a, b = os.urandom(500_000), os.urandom(600_000)
        for client in (first, second):
            client.voidcmd("TYPE I")
        conn_a = first.transfercmd(f"STOR {area.path}/same.bin")
        conn_b = second.transfercmd(f"STOR {area.path}/same.bin")
        conn_a.sendall(a[:250_000])
        conn_b.sendall(b[:300_000])
        conn_a.sendall(a[250_000:])
        conn_b.sendall(b[300_000:])
        conn_a.close()
        assert first.voidresp().startswith("226")
        assert (area.local / "same.bin").read_bytes() == a
        conn_b.close()
        assert second.voidresp().startswith("226")
        assert (area.local / "same.bin").read_bytes() == b
    finally:
        first.close()
        second.close()
    assert temporary_files(area.local) == []
