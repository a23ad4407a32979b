"""
Policy is the core's, not the backend's: a storage plugin that applies no
restriction of its own (its C{storage_for} ignores the session) is still
read-only for a read-only user, through every verb that writes, and still
bound by a user's permission letters.
"""

from __future__ import annotations

import ftplib
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import FTPServer, code

#: A storage plugin whose storage_for hands every session the whole, unrestricted directory.
_CARELESS_PLUGIN = """
from twisted.internet.defer import succeed
from zope.interface import implementer

from exftp import FileStorage, IStorageFactory, StoragePlugin


@implementer(IStorageFactory)
class CarelessFactory:
    def __init__(self, root):
        self.root = root

    def storage_for(self, session):
        return succeed(FileStorage(self.root))  # no read-only view, no permissions: the core's job


careless = StoragePlugin("careless", "files under DIR, restrictions left to the core", CarelessFactory)
"""

OLD = b"old content\n"


@pytest.fixture
def careless(
    start_server: Callable[..., FTPServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FTPServer, Path]]:
    plugins = tmp_path / "plugins" / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "exftp_careless_test.py").write_text(_CARELESS_PLUGIN)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "plugins"), os.environ.get("PYTHONPATH", "")]))
    root = tmp_path / "root"
    (root / "dir").mkdir(parents=True)
    (root / "keep.txt").write_bytes(OLD)
    server = start_server("--storage", f"careless:{root}", "--auth", "anonymous", root_option=False)
    yield server, root


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {
        str(path.relative_to(root)): path.read_bytes() if path.is_file() else None for path in sorted(root.rglob("*"))
    }


#: Every command that changes the storage, as an anonymous (read-only) user sends it.
_WRITES: list[Callable[[ftplib.FTP], object]] = [
    lambda ftp: ftp.storbinary("STOR new.txt", io.BytesIO(b"x")),
    lambda ftp: ftp.storbinary("STOR keep.txt", io.BytesIO(b"x")),
    lambda ftp: ftp.storbinary("APPE keep.txt", io.BytesIO(b"x")),
    lambda ftp: ftp.storbinary("STOU", io.BytesIO(b"x")),
    lambda ftp: ftp.delete("keep.txt"),
    lambda ftp: ftp.mkd("made"),
    lambda ftp: ftp.rmd("dir"),
    lambda ftp: ftp.sendcmd("RNFR keep.txt"),
    lambda ftp: ftp.sendcmd("RNTO moved.txt"),
    lambda ftp: ftp.sendcmd("SITE CHMOD 777 keep.txt"),
    lambda ftp: ftp.sendcmd("MFMT 20200101000000 keep.txt"),
]


@pytest.mark.parametrize("write", _WRITES, ids=[
    "STOR-new", "STOR-over", "APPE", "STOU", "DELE", "MKD", "RMD", "RNFR", "RNTO", "SITE-CHMOD", "MFMT"])
def test_read_only_user_cannot_write_through_a_careless_plugin(
    careless: tuple[FTPServer, Path], write: Callable[[ftplib.FTP], object]
) -> None:
    server, root = careless
    before = _snapshot(root)
    with server.login("anonymous", "guest@example.com") as client:
        with pytest.raises(ftplib.Error) as refused:
            write(client)
        assert code(refused.value) in (550, 503), refused.value  # RNTO without an accepted RNFR: 503
        assert client.voidcmd("NOOP").startswith("200")  # the session goes on
    assert _snapshot(root) == before


def test_read_only_user_still_reads_through_a_careless_plugin(careless: tuple[FTPServer, Path]) -> None:
    server, _root = careless
    with server.login("anonymous", "guest@example.com") as client:
        received = io.BytesIO()
        client.retrbinary("RETR keep.txt", received.write)
        assert received.getvalue() == OLD
        assert "keep.txt" in client.nlst()
