"""
Interop: fsspec's FTP filesystem (C{fsspec.implementations.ftp}) against a
real C{twistd exftp}, on a directory and on S3 (moto): the operations its
users call (pipe/cat, put/get, ls/info, mkdir/rm/mv, find/walk, open for
reading and writing), in the clear and over TLS. What lands is checked in
the storage itself, behind the server's back.

What fails, and why, is in L{EXPECTED}.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import _backends
import pytest
from _backends import BACKENDS, FILE, S3, Backend, bug, cannot
from _certs import PKIFiles, make_pki
from conftest import AUTH, PASSWORD, USER, FTPServer

ftp_module = pytest.importorskip("fsspec.implementations.ftp", reason="fsspec is not installed (pip install fsspec)")
FTPFileSystem = ftp_module.FTPFileSystem

#: How long one FTP operation of the client may take before the test fails (a hang, not slowness).
TIMEOUT = 10

#: Tests that fail against exftp, by name: the root cause of each, and where.
EXPECTED: _backends.Expectations = {
    "test_name_that_is_not_utf8": (
        bug(
            "names that are not UTF-8 are listed with '?' for their bytes (encode 'replace'); commands must be UTF-8",
            FILE,
        ),
        cannot("S3 keys are UTF-8: a name that is not cannot be stored", S3),
    ),
    "test_upload_a_name_that_is_not_utf8": (
        bug("a command line that is not UTF-8 is refused (501, _commands.parse_command decodes strictly)", FILE),
        cannot("S3 keys are UTF-8: a name that is not cannot be stored", S3),
    ),
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKIFiles:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest, start_server: Callable[..., FTPServer], pki: PKIFiles) -> Iterator[Backend]:
    """Each storage in turn: one server for the module, offering AUTH TLS."""
    tls = ("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key))
    started = _backends.start_backend(request.param, start_server, *tls)
    yield started
    _backends.stop_check(started)


@pytest.fixture(autouse=True)
def _expectation(request: pytest.FixtureRequest, backend: Backend) -> None:
    _backends.apply_expectation(request, request.function.__name__, backend.kind, EXPECTED)


@pytest.fixture
def exftp(backend: Backend) -> FTPServer:
    """The server under test (named so that its log is checked for tracebacks)."""
    return backend.server


@pytest.fixture
def area(backend: Backend) -> Iterator[str]:
    """A fresh, empty directory on the server, e.g. C{/t-1a2b3c4d}."""
    path = backend.fresh_directory()
    yield path
    backend.remove(path)


def connect(server: FTPServer, **options: Any) -> Any:
    """A new FTPFileSystem logged in to C{server} (never one of fsspec's cached instances)."""
    return FTPFileSystem(server.host, server.port, USER, PASSWORD, timeout=TIMEOUT, skip_instance_cache=True, **options)


@pytest.fixture
def fs(exftp: FTPServer) -> Iterator[Any]:
    client = connect(exftp)
    yield client
    client.ftp.close()


def names(fs: Any, path: str) -> list[str]:
    """The paths C{ls} lists in C{path} (fsspec's C{detail=False} gives bare names for FTP, its own quirk)."""
    return sorted(entry["name"] for entry in fs.ls(path, detail=True))


def local_tree(root: Path) -> dict[str, bytes]:
    """A few files in nested directories, with UTF-8 names; relative path to contents."""
    files = {
        "top.bin": os.urandom(70_000),
        "empty.txt": b"",
        "sub/ünï 日本.txt": b"unicode name\r\n",
        "sub/deeper/d.bin": os.urandom(3_000),
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def test_pipe_and_cat(fs: Any, backend: Backend, area: str) -> None:
    """C{pipe_file} stores exactly the bytes; C{cat_file} reads them back, whole and from an offset."""
    data = os.urandom(200_001)
    fs.pipe_file(f"{area}/p.bin", data)
    assert backend.read(f"{area}/p.bin") == data
    assert fs.cat_file(f"{area}/p.bin") == data
    assert fs.cat_file(f"{area}/p.bin", start=150_000) == data[150_000:]
    with pytest.raises(FileNotFoundError):
        fs.cat_file(f"{area}/missing.bin")


def test_put_and_get_a_tree(fs: Any, backend: Backend, area: str, tmp_path: Path) -> None:
    """C{put(recursive=True)} uploads a tree as it is; C{get(recursive=True)} brings it back byte for byte."""
    files = local_tree(tmp_path / "up")
    fs.put(str(tmp_path / "up") + "/", f"{area}/tree", recursive=True)
    for name, data in files.items():
        assert backend.read(f"{area}/tree/{name}") == data, name
    fs.invalidate_cache()
    fs.get(f"{area}/tree/", str(tmp_path / "down") + "/", recursive=True)
    for name, data in files.items():
        assert (tmp_path / "down" / name).read_bytes() == data, name


def test_put_file_and_get_file(fs: Any, backend: Backend, area: str, tmp_path: Path) -> None:
    data = os.urandom(1_000_003)
    (tmp_path / "one.bin").write_bytes(data)
    fs.put_file(str(tmp_path / "one.bin"), f"{area}/one.bin")
    assert backend.read(f"{area}/one.bin") == data
    fs.get_file(f"{area}/one.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == data


def test_ls_and_info(fs: Any, backend: Backend, area: str) -> None:
    """C{ls} (from MLSD) names every entry with its type and size; C{info} finds files and directories."""
    backend.write(f"{area}/a.bin", b"a" * 1234)
    backend.write(f"{area}/ünï.txt", b"")
    fs.mkdir(f"{area}/d")
    listed = {entry["name"]: entry for entry in fs.ls(area, detail=True)}
    assert set(listed) == {f"{area}/a.bin", f"{area}/ünï.txt", f"{area}/d"}
    assert (listed[f"{area}/a.bin"]["type"], listed[f"{area}/a.bin"]["size"]) == ("file", 1234)
    assert (listed[f"{area}/ünï.txt"]["type"], listed[f"{area}/ünï.txt"]["size"]) == ("file", 0)
    assert listed[f"{area}/d"]["type"] == "directory"
    assert fs.info(f"{area}/a.bin")["size"] == 1234
    assert fs.isdir(f"{area}/d") and fs.isfile(f"{area}/a.bin")
    assert fs.size(f"{area}/a.bin") == 1234
    with pytest.raises(FileNotFoundError):
        fs.info(f"{area}/nothing")
    assert not fs.exists(f"{area}/nothing")


def test_mkdir_rm_rmdir(fs: Any, backend: Backend, area: str) -> None:
    """C{makedirs}, C{mkdir} with parents, C{rm(recursive=True)} and C{rmdir} change what the server lists."""
    fs.makedirs(f"{area}/a/b/c")
    fs.mkdir(f"{area}/x/y")
    fs.pipe_file(f"{area}/a/b/c/f.bin", b"f")
    fs.pipe_file(f"{area}/a/g.bin", b"g")
    assert fs.isdir(f"{area}/a/b/c") and fs.isdir(f"{area}/x/y")
    with pytest.raises(FileExistsError):
        fs.makedirs(f"{area}/a/b")
    fs.rm(f"{area}/a", recursive=True)
    fs.rmdir(f"{area}/x/y")
    fs.invalidate_cache()
    assert names(fs, area) == [f"{area}/x"]
    assert backend.read(f"{area}/a/g.bin") is None
    fs.rmdir(f"{area}/x")
    fs.invalidate_cache()
    assert names(fs, area) == []


def test_mv_file_and_directory(fs: Any, backend: Backend, area: str) -> None:
    data = os.urandom(5000)
    fs.makedirs(f"{area}/src/inner")
    fs.pipe_file(f"{area}/src/inner/f.bin", data)
    fs.pipe_file(f"{area}/lone.bin", data[::-1])
    fs.mkdir(f"{area}/dst")
    fs.mv(f"{area}/lone.bin", f"{area}/dst/moved ü.bin")
    fs.mv(f"{area}/src", f"{area}/dst/src2")
    fs.invalidate_cache()
    assert names(fs, area) == [f"{area}/dst"]
    assert backend.read(f"{area}/dst/moved ü.bin") == data[::-1]
    assert backend.read(f"{area}/dst/src2/inner/f.bin") == data
    assert fs.cat_file(f"{area}/dst/src2/inner/f.bin") == data


def test_find_and_walk(fs: Any, area: str, tmp_path: Path) -> None:
    """C{find} and C{walk} see the whole tree that was uploaded, no more."""
    files = local_tree(tmp_path / "up")
    fs.put(str(tmp_path / "up") + "/", f"{area}/t", recursive=True)
    fs.invalidate_cache()
    assert set(fs.find(f"{area}/t")) == {f"{area}/t/{name}" for name in files}
    walked = {(root, tuple(sorted(dirs)), tuple(sorted(names))) for root, dirs, names in fs.walk(f"{area}/t")}
    assert walked == {
        (f"{area}/t", ("sub",), ("empty.txt", "top.bin")),
        (f"{area}/t/sub", ("deeper",), ("ünï 日本.txt",)),
        (f"{area}/t/sub/deeper", (), ("d.bin",)),
    }
    assert fs.du(f"{area}/t") == sum(map(len, files.values()))


def test_open_read_whole(fs: Any, backend: Backend, area: str) -> None:
    data = os.urandom(300_000)
    backend.write(f"{area}/r.bin", data)
    with fs.open(f"{area}/r.bin", "rb") as remote:
        assert remote.read() == data


def test_open_read_a_range(fs: Any, backend: Backend, area: str) -> None:
    """
    A read from the middle of a file: fsspec fetches a block from REST N on,
    then stops the transfer with ABOR (sent as urgent data) and goes on.
    """
    data = os.urandom(1_000_000)
    backend.write(f"{area}/r.bin", data)
    with fs.open(f"{area}/r.bin", "rb", block_size=65536) as remote:
        remote.seek(300_000)
        assert remote.read(1000) == data[300_000:301_000]
        remote.seek(900_000)
        assert remote.read(1000) == data[900_000:901_000]
    assert fs.cat_file(f"{area}/r.bin", start=999_000) == data[999_000:]


def test_open_write_in_blocks(fs: Any, backend: Backend, area: str) -> None:
    """A file written through C{open("wb")} in blocks (each a C{REST N; STOR}) holds every byte once."""
    data = os.urandom(200_000)
    with fs.open(f"{area}/w.bin", "wb", block_size=65536) as remote:
        for start in range(0, len(data), 30_000):
            remote.write(data[start : start + 30_000])
    assert backend.read(f"{area}/w.bin") == data


def test_explicit_tls(exftp: FTPServer, backend: Backend, area: str, tmp_path: Path) -> None:
    """C{tls=True}: AUTH TLS, then PROT P; transfers and listings go through protected data connections."""
    client = connect(exftp, tls=True)
    try:
        data = os.urandom(150_000)
        client.pipe_file(f"{area}/s.bin", data)
        assert backend.read(f"{area}/s.bin") == data
        assert client.cat_file(f"{area}/s.bin") == data
        assert names(client, area) == [f"{area}/s.bin"]
    finally:
        client.ftp.close()


def test_implicit_tls_without_prot(
    backend: Backend, start_server: Callable[..., FTPServer], pki: PKIFiles, tmp_path: Path
) -> None:
    """
    C{tls="tls"} (implicit FTPS): fsspec never sends PBSZ/PROT, so its data
    connections are in the clear, which RFC 4217 makes the default.
    """
    if backend.kind != FILE:
        pytest.skip("TLS does not depend on the storage: tried on file storage only")
    server = start_server("--auth", AUTH, listen=f"ssl:0:interface=127.0.0.1:privateKey={pki.server_bundle}")
    (server.root / "i.bin").write_bytes(b"implicit" * 1000)
    client = connect(server, tls="tls")
    try:
        assert client.cat_file("/i.bin") == b"implicit" * 1000
        assert names(client, "/") == ["/i.bin"]
    finally:
        client.ftp.close()


def test_name_that_is_not_utf8(exftp: FTPServer, backend: Backend, area: str) -> None:
    """
    A file whose name on disk is not UTF-8 is listed, and a byte-transparent
    client (encoding latin-1) downloads it by the name it was shown.
    """
    assert backend.local is not None
    raw = os.fsencode(backend.local / area.lstrip("/")) + b"/caf\xe9.bin"
    with open(raw, "wb") as handle:
        handle.write(b"latin-1 name")
    client = connect(exftp, encoding="latin-1")
    try:
        listed = names(client, area)
        assert listed == [f"{area}/caf\xe9.bin"]
        assert client.cat_file(listed[0]) == b"latin-1 name"
    finally:
        client.ftp.close()


def test_upload_a_name_that_is_not_utf8(exftp: FTPServer, backend: Backend, area: str) -> None:
    """A byte-transparent client stores a name in its own (latin-1) bytes, as it sent them."""
    client = connect(exftp, encoding="latin-1")
    try:
        client.pipe_file(f"{area}/na\xefve.bin", b"sent as latin-1")
    finally:
        client.ftp.close()
    assert backend.local is not None
    directory = os.fsencode(backend.local / area.lstrip("/"))
    assert os.listdir(directory) == [b"na\xefve.bin"]
