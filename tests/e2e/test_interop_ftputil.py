"""
Interop: ftputil, the operations its users call, against a real C{twistd
exftp}, on a directory and on S3 (moto): upload/download of trees, listdir,
stat, walk, makedirs/rmtree/rename/remove, chmod, the C{*_if_newer} pair,
C{synchronize_times}, partial reads, and symbolic links (which ftputil learns
about from LIST's C{l} entries: C{walk} must not descend into a linked
directory). What lands is checked in the storage, behind the server's back.

What fails, and why, is in L{EXPECTED}.
"""

from __future__ import annotations

import ftplib
import os
import ssl
import stat
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import _backends
import pytest
from _backends import BACKENDS, FILE, S3, Backend, bug, cannot
from _certs import make_pki
from _interop import make_tree
from conftest import PASSWORD, USER, FTPServer

with warnings.catch_warnings():
    # ftputil 5 warns at import about its future default encoding; ours is explicit.
    warnings.simplefilter("ignore", DeprecationWarning)
    ftputil = pytest.importorskip("ftputil", reason="ftputil is not installed (pip install ftputil)")
    session_factory = pytest.importorskip("ftputil.session").session_factory

#: How long one FTP operation may take before the test fails (a hang, not slowness).
TIMEOUT = 10


class _FTP(ftplib.FTP):
    """ftplib's client with a timeout (ftputil's sessions are made without one)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, timeout=TIMEOUT, **kwargs)


class _FTP_TLS(ftplib.FTP_TLS):
    """ftplib's TLS client with a timeout; it does not check the test certificate."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, timeout=TIMEOUT, **kwargs)


_SYMLINKS_IN_S3 = "S3 has no symbolic links"
_SYMLINKS_AS_TARGETS = (
    "a link inside the root is listed as what it leads to (storage/_local.py _entries follows it with os.stat), "
    "so clients cannot tell it is a link"
)
#: Tests that fail against exftp, by name: the root cause of each, and where.
EXPECTED: _backends.Expectations = {
    "test_chmod": cannot("S3 objects have no permission bits", S3),
    "test_walk_does_not_descend_into_linked_directories": (
        bug(_SYMLINKS_AS_TARGETS, FILE),
        cannot(_SYMLINKS_IN_S3, S3),
    ),
    "test_lstat_and_stat_of_links": (bug(_SYMLINKS_AS_TARGETS, FILE), cannot(_SYMLINKS_IN_S3, S3)),
    "test_link_leading_outside_the_root": (
        bug(
            "LIST writes a link as 'l... name' without ' -> target' (FileInfo has no target; _listing.list_line): "
            "ftputil's stat and walk raise TypeError on it",
            FILE,
        ),
        cannot(_SYMLINKS_IN_S3, S3),
    ),
    "test_broken_link_is_listed": (
        bug(
            "a link whose target is missing is left out of listings (storage/_local.py _entries skips it)",
            FILE,
        ),
        cannot(_SYMLINKS_IN_S3, S3),
    ),
}


@pytest.fixture(scope="module", params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, start_server: Callable[..., FTPServer], tmp_path_factory: Any
) -> Iterator[Backend]:
    """Each storage in turn: one server for the module, offering AUTH TLS."""
    pki = make_pki(tmp_path_factory.mktemp("pki"))
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
    path = backend.fresh_directory()
    yield path
    backend.remove(path)


def connect(server: FTPServer, base_class: type[ftplib.FTP] = _FTP, **options: Any) -> Any:
    """An FTPHost logged in to C{server}, with UTF-8 paths, passive mode, and times in UTC."""
    factory = session_factory(
        base_class=base_class, port=server.port, encoding="UTF-8", use_passive_mode=True, **options
    )
    connected = ftputil.FTPHost(server.host, USER, PASSWORD, session_factory=factory)
    connected.set_time_shift(0.0)  # the server lists times in UTC
    return connected


@pytest.fixture
def host(exftp: FTPServer) -> Iterator[Any]:
    with connect(exftp) as connected:
        yield connected


def local_file(backend: Backend, path: str) -> Path:
    """Where a path of the server is on disk (file storage only)."""
    assert backend.local is not None
    return backend.local / path.lstrip("/")


def test_upload_walk_download_a_tree(host: Any, backend: Backend, area: str, tmp_path: Path) -> None:
    """makedirs + upload a tree with UTF-8 names; walk sees it as it is; download brings it back."""
    files = make_tree(tmp_path / "up", 24)
    for name in sorted(files):
        host.makedirs(os.path.dirname(f"{area}/t/{name}"), exist_ok=True)
        host.upload(str(tmp_path / "up" / name), f"{area}/t/{name}")
    for name, data in files.items():
        assert backend.read(f"{area}/t/{name}") == data, name
    walked = {
        os.path.relpath(f"{top}/{name}", f"{area}/t") for top, _dirs, names in host.walk(f"{area}/t") for name in names
    }
    assert walked == set(files)
    for name, data in files.items():
        target = tmp_path / "down" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        host.download(f"{area}/t/{name}", str(target))
        assert target.read_bytes() == data, name


def test_listdir_and_stat(host: Any, backend: Backend, area: str) -> None:
    backend.write(f"{area}/a.bin", b"a" * 4321)
    host.mkdir(f"{area}/d")
    host.stat_cache.clear()
    assert sorted(host.listdir(area)) == ["a.bin", "d"]
    info = host.stat(f"{area}/a.bin")
    assert stat.S_ISREG(info.st_mode) and info.st_size == 4321
    assert abs(info.st_mtime - time.time()) < 3600, "listed as written within the last hour"
    assert stat.S_ISDIR(host.stat(f"{area}/d").st_mode)
    assert host.path.isfile(f"{area}/a.bin") and host.path.isdir(f"{area}/d")
    assert host.path.getsize(f"{area}/a.bin") == 4321
    assert not host.path.exists(f"{area}/nothing")
    with pytest.raises(ftputil.error.PermanentError):
        host.stat(f"{area}/nothing")


def test_makedirs_rename_remove_rmtree(host: Any, backend: Backend, area: str) -> None:
    host.makedirs(f"{area}/a/b/c")
    with host.open(f"{area}/a/b/c/f.bin", "wb") as remote:
        remote.write(b"f" * 1000)
    host.rename(f"{area}/a/b", f"{area}/moved ü")
    host.rename(f"{area}/moved ü/c/f.bin", f"{area}/f2.bin")
    assert backend.read(f"{area}/f2.bin") == b"f" * 1000
    assert sorted(host.listdir(area)) == ["a", "f2.bin", "moved ü"]
    assert host.listdir(f"{area}/moved ü") == ["c"]
    with pytest.raises(ftputil.error.PermanentError):
        host.rmdir(f"{area}/moved ü")  # not empty
    host.rmdir(f"{area}/a")
    host.remove(f"{area}/f2.bin")
    host.rmtree(f"{area}/moved ü")
    assert host.listdir(area) == []
    assert backend.read(f"{area}/f2.bin") is None


def test_chmod(host: Any, backend: Backend, area: str) -> None:
    """C{chmod} (SITE CHMOD) sets the permission bits on disk, and LIST then shows them."""
    backend.write(f"{area}/m.bin", b"m")
    host.chmod(f"{area}/m.bin", 0o640)
    assert stat.S_IMODE(local_file(backend, f"{area}/m.bin").stat().st_mode) == 0o640
    host.stat_cache.clear()
    assert stat.S_IMODE(host.stat(f"{area}/m.bin").st_mode) == 0o640
    host.chmod(f"{area}/m.bin", 0o604)
    assert stat.S_IMODE(local_file(backend, f"{area}/m.bin").stat().st_mode) == 0o604


def test_if_newer_and_synchronize_times(host: Any, backend: Backend, area: str, tmp_path: Path) -> None:
    """
    C{synchronize_times} finds no shift (LIST times are UTC); C{upload_if_newer}
    uploads once, then not again; C{download_if_newer} likewise.
    """
    host.chdir(area)
    host.synchronize_times()
    assert abs(host.time_shift()) < 60
    host.set_time_shift(0.0)
    source = tmp_path / "n.bin"
    source.write_bytes(b"newer")
    os.utime(source, (time.time() - 7200,) * 2)
    assert host.upload_if_newer(str(source), f"{area}/n.bin") is True
    assert backend.read(f"{area}/n.bin") == b"newer"
    host.stat_cache.clear()
    assert host.upload_if_newer(str(source), f"{area}/n.bin") is False
    target = tmp_path / "back.bin"
    assert host.download_if_newer(f"{area}/n.bin", str(target)) is True
    assert target.read_bytes() == b"newer"
    # LIST gives the minute: ftputil transfers when in doubt, so the local copy must be clearly newer.
    os.utime(target, (time.time() + 120,) * 2)
    assert host.download_if_newer(f"{area}/n.bin", str(target)) is False


def test_partial_read_then_more_work(host: Any, backend: Backend, area: str) -> None:
    """Closing a file after reading part of it (426 or 226 from the server) leaves the session usable."""
    data = os.urandom(3_000_000)
    backend.write(f"{area}/big.bin", data)
    with host.open(f"{area}/big.bin", "rb") as remote:
        assert remote.read(10_000) == data[:10_000]
    with host.open(f"{area}/big.bin", "rb", rest=2_999_000) as remote:
        assert remote.read() == data[2_999_000:]
    assert host.listdir(area) == ["big.bin"]


def test_tls_session(exftp: FTPServer, backend: Backend, area: str) -> None:
    """Over FTP_TLS (AUTH TLS, then PROT P): upload, listdir, stat and download through protected data."""
    data = os.urandom(200_000)
    with connect(exftp, _FTP_TLS) as secure:
        with secure.open(f"{area}/s.bin", "wb") as remote:
            remote.write(data)
        assert secure.listdir(area) == ["s.bin"]
        assert secure.stat(f"{area}/s.bin").st_size == len(data)
        with secure.open(f"{area}/s.bin", "rb") as remote:
            assert remote.read() == data
    assert backend.read(f"{area}/s.bin") == data


def test_tls_without_prot(exftp: FTPServer, backend: Backend, area: str) -> None:
    """AUTH TLS without PBSZ/PROT: the control connection is protected, data connections are clear (RFC 4217)."""
    data = os.urandom(100_000)
    with connect(exftp, _FTP_TLS, encrypt_data_channel=False) as secure:
        assert isinstance(secure._session.sock, ssl.SSLSocket)
        with secure.open(f"{area}/c.bin", "wb") as remote:
            remote.write(data)
        assert secure.listdir(area) == ["c.bin"]
        with secure.open(f"{area}/c.bin", "rb") as remote:
            assert remote.read() == data
    assert backend.read(f"{area}/c.bin") == data


def _links(backend: Backend, area: str) -> None:
    """In C{area}: real/f.txt, a link to real, a link to real/f.txt and a dangling link."""
    real = local_file(backend, f"{area}/real")
    real.mkdir()
    (real / "f.txt").write_bytes(b"target file")
    os.symlink("real", local_file(backend, f"{area}/linked dir"))
    os.symlink("real/f.txt", local_file(backend, f"{area}/linked file"))
    os.symlink("missing", local_file(backend, f"{area}/dangling"))


def test_walk_does_not_descend_into_linked_directories(host: Any, backend: Backend, area: str) -> None:
    _links(backend, area)
    walked = list(host.walk(area))
    assert [top for top, _dirs, _names in walked] == [area, f"{area}/real"], walked
    assert host.path.islink(f"{area}/linked dir")


def test_lstat_and_stat_of_links(host: Any, backend: Backend, area: str) -> None:
    """C{lstat} sees the link itself; C{stat} follows it to its target."""
    _links(backend, area)
    assert stat.S_ISLNK(host.lstat(f"{area}/linked file").st_mode)
    assert host.stat(f"{area}/linked file").st_size == len(b"target file")
    assert stat.S_ISLNK(host.lstat(f"{area}/linked dir").st_mode)
    assert stat.S_ISDIR(host.stat(f"{area}/linked dir").st_mode)


def test_broken_link_is_listed(host: Any, backend: Backend, area: str) -> None:
    _links(backend, area)
    assert "dangling" in host.listdir(area)
    assert stat.S_ISLNK(host.lstat(f"{area}/dangling").st_mode)
    assert not host.path.exists(f"{area}/dangling")


def test_link_leading_outside_the_root(host: Any, backend: Backend, area: str, tmp_path: Path) -> None:
    """A link out of the root is shown as a link that walk does not follow, and nothing of what it leads to."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_bytes(b"secret")
    local_file(backend, f"{area}/real").mkdir()
    os.symlink(tmp_path / "outside", local_file(backend, f"{area}/out"))
    walked = list(host.walk(area))
    assert [top for top, _dirs, _names in walked] == [area, f"{area}/real"], walked
    assert sorted(walked[0][1] + walked[0][2]) == ["out", "real"]
    assert host.path.islink(f"{area}/out")
    assert "secret.txt" not in str(walked)
