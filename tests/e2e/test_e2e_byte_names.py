"""
Names that are not UTF-8 (issue 18): a name on disk in another encoding is
listed as its own bytes, and a client that sends those bytes back (ftplib
with C{encoding="latin-1"}, byte-transparent) fetches, renames and deletes
it; names it makes land on disk as the bytes it sent. S3 keys are UTF-8:
there such a name is refused with 553, never a traceback.
"""

from __future__ import annotations

import ftplib
import io
import os
from collections.abc import Callable, Iterator

import pytest
from _backends import S3, start_backend, stop_check
from conftest import DEADLINE, PASSWORD, USER, Area, FTPServer, code

#: Bytes on disk that are latin-1, not UTF-8.
CAFE = b"caf\xe9.bin"
NAIVE = b"na\xefve.bin"
FOLDER = b"d\xe9j\xe0"


def _wire(name: bytes) -> str:
    """How a latin-1 ftplib client spells C{name}: one character a byte."""
    return name.decode("latin-1")


def _latin1_client(server: FTPServer) -> ftplib.FTP:
    client = ftplib.FTP(encoding="latin-1", timeout=DEADLINE)
    client.connect(server.host, server.port)
    client.login(USER, PASSWORD)
    return client


@pytest.fixture
def latin1(server: FTPServer) -> Iterator[ftplib.FTP]:
    client = _latin1_client(server)
    yield client
    client.close()


def test_a_name_on_disk_that_is_not_utf8_round_trips(latin1: ftplib.FTP, area: Area) -> None:
    """Listed (NLST, LIST, MLSD, STAT) as the bytes on disk; RETR, SIZE, RNFR/RNTO, DELE by those bytes."""
    local = os.fsencode(area.local)
    with open(os.path.join(local, CAFE), "wb") as handle:
        handle.write(b"latin-1 name")
    name = _wire(CAFE)

    assert latin1.nlst(area.path) == [name]
    listed: list[str] = []
    latin1.retrlines(f"LIST {area.path}", listed.append)
    assert len(listed) == 1 and listed[0].endswith(" " + name), listed
    assert [entry for entry, facts in latin1.mlsd(area.path) if facts["type"] == "file"] == [name]
    status = latin1.sendcmd(f"STAT {area.path}")
    assert status.startswith("213") and name in status, status

    latin1.cwd(area.path)
    assert latin1.size(name) == len(b"latin-1 name")
    received = io.BytesIO()
    latin1.retrbinary(f"RETR {name}", received.write)
    assert received.getvalue() == b"latin-1 name"

    latin1.rename(name, _wire(NAIVE))
    assert os.listdir(local) == [NAIVE]
    latin1.delete(_wire(NAIVE))
    assert os.listdir(local) == []


def test_names_a_client_sends_land_as_its_bytes(latin1: ftplib.FTP, area: Area) -> None:
    """STOR and MKD write the client's own bytes; 257 and PWD give them back; RMD removes by them."""
    local = os.fsencode(area.local)
    latin1.storbinary(f"STOR {area.path}/{_wire(NAIVE)}", io.BytesIO(b"stored"))
    created = latin1.sendcmd(f"MKD {area.path}/{_wire(FOLDER)}")
    assert created.startswith(f'257 "{area.path}/{_wire(FOLDER)}"'), created
    assert sorted(os.listdir(local)) == sorted([NAIVE, FOLDER])
    with open(os.path.join(local, NAIVE), "rb") as handle:
        assert handle.read() == b"stored"

    latin1.cwd(f"{area.path}/{_wire(FOLDER)}")
    assert latin1.pwd() == f"{area.path}/{_wire(FOLDER)}"
    latin1.cwd(area.path)
    latin1.rmd(_wire(FOLDER))
    assert os.listdir(local) == [NAIVE]


def test_credentials_must_still_be_utf8(server: FTPServer) -> None:
    """Only names are bytes: a user name that is not UTF-8 is refused with 501."""
    client = ftplib.FTP(encoding="latin-1", timeout=DEADLINE)
    client.connect(server.host, server.port)
    try:
        with pytest.raises(ftplib.error_perm) as refused:
            client.sendcmd("USER caf\xe9")
        assert code(refused.value) == 501
    finally:
        client.close()


@pytest.fixture(scope="module")
def s3_server(start_server: Callable[..., FTPServer]) -> Iterator[FTPServer]:
    backend = start_backend(S3, start_server)
    yield backend.server
    stop_check(backend)


def test_s3_refuses_a_name_that_is_not_utf8_with_553(s3_server: FTPServer) -> None:
    """An S3 key must be UTF-8: STOR, MKD, RETR and RNFR of such a name get 553 and a reason."""
    client = _latin1_client(s3_server)
    try:
        for line in (f"MKD {_wire(FOLDER)}", f"RNFR {_wire(CAFE)}", f"SIZE {_wire(CAFE)}"):
            with pytest.raises(ftplib.error_perm) as refused:
                client.sendcmd(line)
            assert code(refused.value) == 553 and "UTF-8" in str(refused.value), refused.value
        with pytest.raises(ftplib.error_perm) as refused:
            client.storbinary(f"STOR {_wire(NAIVE)}", io.BytesIO(b"x"))
        assert code(refused.value) == 553 and "UTF-8" in str(refused.value), refused.value
        assert client.nlst() == []
    finally:
        client.close()
