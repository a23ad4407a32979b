"""
Interop: Python's ftplib and ftputil — MLSD facts against the disk, REST
downloads and uploads, renames, MFMT — and FEAT honesty: every feature FEAT
lists is exercised here and its effect checked on disk.
"""

from __future__ import annotations

import calendar
import ftplib
import hashlib
import io
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _interop import assert_same_files, expected_snapshot, make_tree, snapshot, whole_minute_in_past
from conftest import DEADLINE, PASSWORD, USER, Area, FTPServer, code, parse_229, read_all, retr_bytes

# A time well in the past, as MDTM/MFMT/MLSD write it, and as seconds since the epoch.
STAMP, STAMP_SECONDS = "20200102030405", calendar.timegm((2020, 1, 2, 3, 4, 5))


def mdtm_text(seconds: float) -> str:
    """A time as RFC 3659 writes it (UTC, whole seconds)."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(int(seconds)))


def write(path: Path, data: bytes, mtime: int | None = None, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mode is not None:
        path.chmod(mode)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


# ftplib: MLSD


def test_mlsd_facts_match_the_disk(ftp: ftplib.FTP, area: Area) -> None:
    """
    Every MLSD entry's facts agree with C{os.stat}: type, size, modify (UTC),
    unix.mode, and perm for a user who may write; cdir and pdir come first.
    """
    write(area.local / "plain.bin", os.urandom(1234), mtime=STAMP_SECONDS, mode=0o640)
    write(area.local / "ünï 日本 🙂.txt", b"", mtime=STAMP_SECONDS + 61, mode=0o600)
    (area.local / "a dir").mkdir(mode=0o750)
    os.utime(area.local / "a dir", (STAMP_SECONDS - 3600,) * 2)

    entries = list(ftp.mlsd(area.path))
    kinds = [facts["type"] for _, facts in entries]
    assert kinds[:2] == ["cdir", "pdir"], entries
    listed = {name: facts for name, facts in entries if facts["type"] in ("file", "dir")}
    assert sorted(listed) == sorted(os.listdir(area.local))
    for name, facts in listed.items():
        info = (area.local / name).stat()
        is_dir = (area.local / name).is_dir()
        assert facts["type"] == ("dir" if is_dir else "file"), (name, facts)
        assert facts["modify"] == mdtm_text(info.st_mtime), (name, facts)
        assert facts["unix.mode"] == f"0{info.st_mode & 0o7777:o}", (name, facts)
        if is_dir:
            assert "size" not in facts or int(facts["size"]) >= 0
            assert set("elcm") <= set(facts["perm"]), (name, facts)
        else:
            assert int(facts["size"]) == info.st_size, (name, facts)
            assert set("radfw") <= set(facts["perm"]), (name, facts)
    cdir = entries[0][1]
    assert cdir["modify"] == mdtm_text(area.local.stat().st_mtime)


def test_mlsd_with_chosen_facts(ftp: ftplib.FTP, area: Area) -> None:
    """C{mlsd(facts=...)} sends OPTS MLST; the entries then carry exactly those facts."""
    write(area.local / "f.bin", b"12345")
    entries = dict(ftp.mlsd(area.path, facts=["type", "size"]))
    assert entries["f.bin"] == {"type": "file", "size": "5"}
    entries = dict(ftp.mlsd(area.path, facts=["modify"]))
    assert set(entries["f.bin"]) == {"modify"}


# ftplib: REST


@pytest.mark.parametrize("offset", [0, 1, 65535, 65536, 500_000, 999_999, 1_000_000])
def test_rest_download(ftp: ftplib.FTP, area: Area, offset: int) -> None:
    """C{retrbinary(rest=N)} gets exactly the bytes from N on."""
    data = os.urandom(1_000_000)
    write(area.local / "r.bin", data)
    chunks: list[bytes] = []
    ftp.retrbinary(f"RETR {area.path}/r.bin", chunks.append, rest=offset)
    assert b"".join(chunks) == data[offset:]


def test_rest_upload_resumes_a_partial_file(ftp: ftplib.FTP, area: Area) -> None:
    """C{storbinary(rest=N)} writes from N on; a cut-short upload completes byte-exact."""
    data = os.urandom(700_000)
    write(area.local / "u.bin", data[:250_000])
    ftp.storbinary(f"STOR {area.path}/u.bin", io.BytesIO(data[250_000:]), rest=250_000)
    assert (area.local / "u.bin").read_bytes() == data


# ftplib: rename


def test_rename_file_and_directory(ftp: ftplib.FTP, area: Area) -> None:
    """RNFR/RNTO (350 then 250) move files, across directories and to UTF-8 names, and directories."""
    data = os.urandom(4321)
    write(area.local / "a.bin", data)
    (area.local / "src dir" / "deep").mkdir(parents=True)
    write(area.local / "src dir" / "deep" / "x.txt", b"x")
    (area.local / "target").mkdir()

    assert ftp.sendcmd(f"RNFR {area.path}/a.bin").startswith("350")
    assert ftp.sendcmd(f"RNTO {area.path}/target/ünï 日本.bin").startswith("250")
    ftp.rename(f"{area.path}/src dir", f"{area.path}/target/moved dir")
    assert sorted(os.listdir(area.local)) == ["target"]
    assert (area.local / "target" / "ünï 日本.bin").read_bytes() == data
    assert (area.local / "target" / "moved dir" / "deep" / "x.txt").read_bytes() == b"x"


def test_rename_errors(ftp: ftplib.FTP, area: Area) -> None:
    """RNTO without RNFR is 503; RNFR of a missing file is 550; nothing changes on disk."""
    write(area.local / "stay.bin", b"stay")
    with pytest.raises(ftplib.error_perm) as refused:
        ftp.sendcmd(f"RNTO {area.path}/moved.bin")
    assert code(refused.value) == 503
    with pytest.raises(ftplib.error_perm) as refused:
        ftp.sendcmd(f"RNFR {area.path}/missing.bin")
    assert code(refused.value) == 550
    assert os.listdir(area.local) == ["stay.bin"]


# ftplib: MFMT and MDTM


def test_mfmt_sets_the_mtime_on_disk(ftp: ftplib.FTP, area: Area) -> None:
    """C{MFMT YYYYMMDDHHMMSS path} (213) changes the file's mtime on disk; MDTM and MLST read it back."""
    write(area.local / "ünï t.bin", b"data")
    reply = ftp.sendcmd(f"MFMT {STAMP} {area.path}/ünï t.bin")
    assert reply.startswith("213") and f"Modify={STAMP};" in reply, reply
    assert (area.local / "ünï t.bin").stat().st_mtime == STAMP_SECONDS
    assert ftp.sendcmd(f"MDTM {area.path}/ünï t.bin") == f"213 {STAMP}"
    assert f"modify={STAMP};" in ftp.sendcmd(f"MLST {area.path}/ünï t.bin")


def test_mdtm_reads_the_disk(ftp: ftplib.FTP, area: Area) -> None:
    write(area.local / "m.bin", b"m", mtime=STAMP_SECONDS)
    assert ftp.sendcmd(f"MDTM {area.path}/m.bin") == f"213 {STAMP}"


# ftputil


try:
    with warnings.catch_warnings():
        # ftputil 5 warns at import about its future default encoding; ours is explicit.
        warnings.simplefilter("ignore", DeprecationWarning)
        import ftputil
        import ftputil.session
except ImportError:  # pragma: no cover - CI installs it
    ftputil = None

needs_ftputil = pytest.mark.skipif(ftputil is None, reason="ftputil is not installed (pip install ftputil)")


@pytest.fixture
def host(server: FTPServer) -> Iterator[Any]:
    factory = ftputil.session.session_factory(port=server.port, encoding="UTF-8", use_passive_mode=True)
    with ftputil.FTPHost(server.host, USER, PASSWORD, session_factory=factory) as connected:
        connected.set_time_shift(0.0)  # the server lists times in UTC
        yield connected


@needs_ftputil
def test_ftputil_upload_walk_stat_download(host: Any, area: Area, tmp_path: Path) -> None:
    """
    ftputil uploads a tree (makedirs + upload), walks it as the disk has it,
    stats sizes and times (LIST-precise), and downloads it byte for byte.
    """
    files = make_tree(tmp_path / "source", 40)
    remote = f"{area.path}/tree"
    for name in sorted(files):
        directory = os.path.dirname(f"{remote}/{name}")
        host.makedirs(directory, exist_ok=True)
        host.upload(str(tmp_path / "source" / name), f"{remote}/{name}")
    assert_same_files(expected_snapshot(files), area.local / "tree", "server after ftputil upload")

    walked = {
        os.path.relpath(f"{top}/{name}", remote)
        for top, _dirs, names in host.walk(remote)
        for name in names
    }
    assert walked == set(files)

    stamp = whole_minute_in_past()
    for index, name in enumerate(sorted(files)):
        os.utime(area.local / "tree" / name, (stamp - 60 * index,) * 2)
    host.stat_cache.clear()
    for index, name in enumerate(sorted(files)):
        info = host.stat(f"{remote}/{name}")
        assert info.st_size == len(files[name]), name
        assert info.st_mtime == stamp - 60 * index, name
        assert host.path.isfile(f"{remote}/{name}")

    for name in sorted(files):
        target = tmp_path / "back" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        host.download(f"{remote}/{name}", str(target))
    assert snapshot(tmp_path / "back") == expected_snapshot(files)


@needs_ftputil
def test_ftputil_open_rest_rename_remove(host: Any, area: Area) -> None:
    """ftputil's C{open(rest=N)}, C{rename}, C{remove} and C{rmtree} do what the disk then shows."""
    data = os.urandom(300_000)
    write(area.local / "file.bin", data)
    with host.open(f"{area.path}/file.bin", "rb", rest=123_456) as remote_file:
        assert remote_file.read() == data[123_456:]
    with host.open(f"{area.path}/written ü.bin", "wb") as remote_file:
        remote_file.write(data[:1000])
    assert (area.local / "written ü.bin").read_bytes() == data[:1000]

    host.rename(f"{area.path}/file.bin", f"{area.path}/renamed.bin")
    assert (area.local / "renamed.bin").read_bytes() == data
    host.remove(f"{area.path}/renamed.bin")
    make_tree(area.local / "doomed", 12)
    host.rmtree(f"{area.path}/doomed")
    assert sorted(os.listdir(area.local)) == ["written ü.bin"]


# FEAT honesty: every feature FEAT lists is exercised, with its effect checked.


def features(client: ftplib.FTP) -> dict[str, str]:
    """FEAT's features: name to parameters (RFC 2389 framing: one feature per line, after a space)."""
    reply = client.sendcmd("FEAT")
    lines = reply.splitlines()
    assert lines[0].startswith("211-") and lines[-1].startswith("211 "), reply
    found = {}
    for line in lines[1:-1]:
        assert line.startswith(" "), f"feature line without its leading space: {line!r}"
        name, _, parameters = line.strip().partition(" ")
        found[name.upper()] = parameters
    return found


Exercise = Callable[[FTPServer, Area, ftplib.FTP, str], None]
EXERCISES: dict[str, Exercise] = {}


def exercise(name: str) -> Callable[[Exercise], Exercise]:
    def register(function: Exercise) -> Exercise:
        EXERCISES[name] = function
        return function

    return register


@exercise("CLNT")
def _clnt(server: FTPServer, area: Area, client: ftplib.FTP, parameters: str) -> None:
    assert client.sendcmd("CLNT interop-test/1.0").startswith("200")


@exercise("HOST")
def _host(server: FTPServer, area: Area, client: ftplib.FTP, parameters: str) -> None:
    fresh = server.connect()
    try:
        assert fresh.sendcmd(f"HOST {server.host}").startswith("220")
        fresh.login(USER, PASSWORD)
        write(area.local / "h.bin", b"host")
        assert retr_bytes(fresh, f"{area.path}/h.bin") == b"host"
        with pytest.raises(ftplib.error_perm) as refused:
            fresh.sendcmd(f"HOST {server.host}")
        assert code(refused.value) == 503
    finally:
        fresh.close()


@exercise("PASV")
def _pasv(server: FTPServer, area: Area, client: ftplib.FTP, parameters: str) -> None:
    data = os.urandom(100_000)
    write(area.local / "p.bin", data)
    client.set_pasv(True)
    assert retr_bytes(client, f"{area.path}/p.bin") == data


@exercise("EPSV")
def _epsv(server: FTPServer, area: Area, client: ftplib.FTP, parameters: str) -> None:
    data = os.urandom(100_000)
    write(area.local / "e.bin", data)
    client.voidcmd("TYPE I")
    port = parse_229(client.sendcmd("EPSV"))
    with socket.create_connection((server.host, port), timeout=DEADLINE) as connection:
        client.sendcmd(f"RETR {area.path}/e.bin")
        received = read_all(connection)
    client.voidresp()
    assert received == data


@exercise("EPRT")
def _eprt(server: FTPServer, area: Area, client: ftplib.FTP, parameters: str) -> None:
    data = os.urandom(100_000)
    write(area.local / "a.bin", data)
    client.voidcmd("TYPE I")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(DEADLINE)
        assert client.sendcmd(f"EPRT |1|127.0.0.1|{listener.getsockname()[1]}|").startswith("200")
        client.sendcmd(f"RETR {area.path}/a.bin")
        connection, _ = listener.accept()
        with connection:
            connection.settimeout(DEADLINE)
            received = read_all(connection)
        client.voidresp()
        assert received == data

        assert client.sendcmd(f"EPRT |1|127.0.0.1|{listener.getsockname()[1]}|").startswith("200")
        client.sendcmd(f"STOR {area.path}/up.bin")
        connection, _ = listener.accept()
        with connection:
            connection.sendall(data[::-1])
        client.voidresp()
    assert (area.local / "up.bin").read_bytes() == data[::-1]


@exercise("HASH")
def _hash(server: FTPServer, area: Area, client: ftplib.FTP, parameters: str) -> None:
    data = os.urandom(200_001)
    write(area.local / "h a.bin", data)
    algorithms = [name.rstrip("*") for name in parameters.split(";") if name]
    assert algorithms, parameters
    by_name = {"SHA-256": hashlib.sha256, "SHA-1": hashlib.sha1, "MD5": hashlib.md5, "SHA-512": hashlib.sha512}
    for name in algorithms:
        assert name in by_name, f"FEAT lists hash {name}, which this test does not know"
        assert client.sendcmd(f"OPTS HASH {name}").startswith("200")
        reply = client.sendcmd(f"HASH {area.path}/h a.bin")
        expected = by_name[name](data).hexdigest()
        assert reply.split()[:4] == ["213", name, f"0-{len(data)}", expected], (name, reply)


@exercise("MDTM")
def _mdtm(server: FTPServer, area: Area, client: ftplib.FTP, parameters: str) -> None:
    write(area.local / "m.bin", b"m", mtime=STAMP_SECONDS)
    assert client.sendcmd(f"MDTM {area.path}/m.bin") == f"213 {STAMP}"


@exercise("MFMT")
def _mfmt(server: FTPServer, area: Area, client: ftplib.FTP, parameters: str) -> None:
    write(area.local / "t.bin", b"t")
    assert client.sendcmd(f"MFMT {STAMP} {area.path}/t.bin").startswith("213")
    assert (area.local / "t.bin").stat().st_mtime == STAMP_SECONDS


@exercise("MLST")
def _mlst(server: FTPServer, area: Area, client: ftplib.FTP, parameters: str) -> None:
    listed = [fact.rstrip("*").lower() for fact in parameters.split(";") if fact]
    enabled = {fact.rstrip("*").lower() for fact in parameters.split(";") if fact.endswith("*")}
    write(area.local / "one.bin", b"1" * 10, mtime=STAMP_SECONDS, mode=0o640)
    write(area.local / "two.bin", b"2" * 20, mtime=STAMP_SECONDS, mode=0o640)
    entries = dict(client.mlsd(area.path))
    for name in ("one.bin", "two.bin"):
        info = (area.local / name).stat()
        facts = entries[name]
        assert set(facts) == enabled, f"MLSD of {name} gives {sorted(facts)}; FEAT enables {sorted(enabled)}"
        expected = {"type": "file", "size": str(info.st_size), "modify": mdtm_text(info.st_mtime),
                    "unix.mode": f"0{info.st_mode & 0o7777:o}"}  # fmt: skip
        for fact, value in expected.items():
            if fact in enabled:
                assert facts[fact] == value, (name, fact, facts)
    if "unique" in enabled:
        assert entries["one.bin"]["unique"] != entries["two.bin"]["unique"]
        assert dict(client.mlsd(area.path))["one.bin"]["unique"] == entries["one.bin"]["unique"]
    reply = client.sendcmd(f"MLST {area.path}/one.bin")
    assert f" {area.path}/one.bin" in reply and "size=10;" in reply, reply
    for fact in listed:
        # Each fact can be chosen alone with OPTS MLST, and then is the only one given.
        assert client.sendcmd(f"OPTS MLST {fact};").startswith("200")
        assert set(dict(client.mlsd(area.path))["one.bin"]) == {fact}, fact


@exercise("REST")
def _rest(server: FTPServer, area: Area, client: ftplib.FTP, parameters: str) -> None:
    assert parameters.upper() == "STREAM", parameters
    data = os.urandom(300_000)
    write(area.local / "r.bin", data)
    chunks: list[bytes] = []
    client.retrbinary(f"RETR {area.path}/r.bin", chunks.append, rest=100_000)
    assert b"".join(chunks) == data[100_000:]
    write(area.local / "s.bin", data[:100_000])
    client.storbinary(f"STOR {area.path}/s.bin", io.BytesIO(data[100_000:]), rest=100_000)
    assert (area.local / "s.bin").read_bytes() == data


@exercise("SIZE")
def _size(server: FTPServer, area: Area, client: ftplib.FTP, parameters: str) -> None:
    write(area.local / "z.bin", os.urandom(54_321))
    client.voidcmd("TYPE I")
    assert client.size(f"{area.path}/z.bin") == 54_321


@exercise("TVFS")
def _tvfs(server: FTPServer, area: Area, client: ftplib.FTP, parameters: str) -> None:
    write(area.local / "a" / "b" / "c.bin", b"tvfs")
    client.cwd(f"{area.path}/a/b")
    assert client.pwd() == f"{area.path}/a/b"
    client.cwd("../b/../..")
    assert client.pwd() == area.path
    assert retr_bytes(client, "a/b/c.bin") == b"tvfs"
    assert retr_bytes(client, f"{area.path}/a/b/c.bin") == b"tvfs"
    client.cwd("/")


@exercise("UTF8")
def _utf8(server: FTPServer, area: Area, client: ftplib.FTP, parameters: str) -> None:
    assert client.sendcmd("OPTS UTF8 ON").startswith("200")
    name = "ünï cødé 日本語 🙂.bin"
    client.storbinary(f"STOR {area.path}/{name}", io.BytesIO(b"utf8"))
    assert os.listdir(os.fsencode(area.local)) == [name.encode("utf-8")]
    assert client.nlst(area.path) in ([name], [f"{area.path}/{name}"])
    assert retr_bytes(client, f"{area.path}/{name}") == b"utf8"


def test_feat_lists_only_exercised_features(ftp: ftplib.FTP) -> None:
    """Whatever FEAT adds must come with an exercise here (so that it is known to work)."""
    listed = features(ftp)
    unexercised = sorted(set(listed) - set(EXERCISES))
    assert not unexercised, f"FEAT lists features nothing exercises: {unexercised}"


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_feat_feature_works(server: FTPServer, area: Area, ftp: ftplib.FTP, name: str) -> None:
    """Each feature FEAT lists does what it says, checked on disk."""
    listed = features(ftp)
    if name not in listed:
        pytest.skip(f"FEAT does not list {name}")
    EXERCISES[name](server, area, ftp, listed[name])
