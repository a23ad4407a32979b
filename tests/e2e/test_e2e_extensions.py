"""
The commands beyond RFC 959 through real clients: MLSD/MLST (ftplib's
mlsd), MFMT, SITE CHMOD, STOU and the digest commands; and that the
read-only anonymous login refuses the ones that change things.
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import os
import stat
import zlib
from collections.abc import Callable

import pytest
from conftest import Area, FTPServer, code, retr_bytes


def test_feat_lists_extensions(ftp: ftplib.FTP) -> None:
    features = {line.strip().split(" ")[0] for line in ftp.sendcmd("FEAT").splitlines()[1:-1]}
    assert {"MLST", "MFMT", "SIZE", "MDTM", "EPSV"} <= features, features


def test_mlsd_with_ftplib(ftp: ftplib.FTP, area: Area) -> None:
    path = area.file("data.bin", b"12345")
    os.utime(path, (1577934245, 1577934245))
    (area.local / "sub").mkdir()
    entries = dict(ftp.mlsd(area.path))
    assert entries["data.bin"]["type"] == "file"
    assert entries["data.bin"]["size"] == "5"
    assert entries["data.bin"]["modify"].startswith("20200102030405")
    assert entries["sub"]["type"] == "dir"
    names = {name for name, facts in entries.items() if facts["type"] not in ("cdir", "pdir")}
    assert names == {"data.bin", "sub"}
    # Only the facts asked for.
    only = dict(ftp.mlsd(area.path, facts=["type"]))
    assert set(only["data.bin"]) >= {"type"}


def test_mlsd_of_a_file_or_missing_is_refused(ftp: ftplib.FTP, area: Area) -> None:
    area.file("f", b"")
    for target in ("f", "missing"):
        ftp.sendcmd("PASV")
        with pytest.raises(ftplib.error_perm) as refused:
            ftp.sendcmd(f"MLSD {area.path}/{target}")
        assert code(refused.value) in (501, 550), refused.value
        assert ftp.voidcmd("NOOP").startswith("200")


def test_mlst(ftp: ftplib.FTP, area: Area) -> None:
    area.file("f.txt", b"abc")
    reply = ftp.sendcmd(f"MLST {area.path}/f.txt")
    lines = reply.splitlines()
    assert lines[0].startswith("250-") and lines[-1].startswith("250 ")
    assert len(lines) == 3
    facts, _, name = lines[1].strip().partition(" ")
    assert name == f"{area.path}/f.txt"
    parsed = dict(fact.split("=", 1) for fact in facts.rstrip(";").split(";"))
    assert parsed["type"] == "file" and parsed["size"] == "3"


def test_mfmt(ftp: ftplib.FTP, area: Area) -> None:
    # FEAT advertises MFMT, so the file storage must support it.
    path = area.file("f", b"x")
    reply = ftp.sendcmd(f"MFMT 20210304050607 {area.path}/f")
    assert reply.startswith("213")
    assert os.stat(path).st_mtime == 1614834367  # 2021-03-04 05:06:07 UTC
    assert ftp.sendcmd(f"MDTM {area.path}/f") == "213 20210304050607"
    for line in ("MFMT 2021 f", f"MFMT 20210304050607{area.path}/f", "MFMT 20219999999999 f"):
        with pytest.raises(ftplib.error_perm) as refused:
            ftp.sendcmd(line)
        assert code(refused.value) in (501, 550), (line, refused.value)


def test_site_chmod(ftp: ftplib.FTP, area: Area) -> None:
    path = area.file("f", b"x")
    os.chmod(path, 0o644)
    assert ftp.sendcmd(f"SITE CHMOD 600 {area.path}/f").startswith("200")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with pytest.raises(ftplib.error_perm) as refused:
        ftp.sendcmd(f"SITE CHMOD 999 {area.path}/f")
    assert code(refused.value) == 501
    with pytest.raises(ftplib.error_perm) as refused:
        ftp.sendcmd(f"SITE CHMOD 600 {area.path}/missing")
    assert code(refused.value) == 550
    assert ftp.sendcmd("SITE HELP").startswith("214")


def test_stou(ftp: ftplib.FTP, area: Area) -> None:
    ftp.cwd(area.path)
    names = set()
    for content in (b"first", b"second"):
        ftp.voidcmd("TYPE I")
        with ftp.transfercmd("STOU report") as conn:
            conn.sendall(content)
        assert ftp.voidresp().startswith("226")
        names |= set(os.listdir(area.local))
    assert len(names) == 2
    assert sorted((area.local / name).read_bytes() for name in names) == [b"first", b"second"]
    assert all(name.startswith("report") for name in names)


@pytest.mark.parametrize(
    ("command", "digest"),
    [
        ("XMD5", lambda data: hashlib.md5(data).hexdigest()),
        ("XSHA256", lambda data: hashlib.sha256(data).hexdigest()),
        ("XCRC", lambda data: f"{zlib.crc32(data):08x}"),
    ],
)
def test_x_digests(ftp: ftplib.FTP, area: Area, command: str, digest: Callable[[bytes], str]) -> None:
    data = os.urandom(300_000)
    area.file("f", data)
    reply = ftp.sendcmd(f"{command} {area.path}/f")
    assert reply.startswith("250 "), reply
    assert reply[4:].strip().lower() == digest(data)


def test_hash(ftp: ftplib.FTP, area: Area) -> None:
    data = os.urandom(100_000)
    area.file("f", data)
    reply = ftp.sendcmd(f"HASH {area.path}/f")
    assert reply.startswith("213 ")
    algorithm, byte_range, value, name = reply[4:].split(" ", 3)
    assert byte_range == f"0-{len(data)}"
    assert name == "f"
    assert value == hashlib.new(algorithm.replace("-", "").lower(), data).hexdigest()


def test_digest_of_missing_or_directory_550(ftp: ftplib.FTP, area: Area) -> None:
    for line in (f"XMD5 {area.path}/missing", f"HASH {area.path}/missing", f"XSHA256 {area.path}"):
        with pytest.raises(ftplib.error_perm) as refused:
            ftp.sendcmd(line)
        assert code(refused.value) == 550, line


@pytest.fixture(scope="module")
def anonymous(start_server: Callable[..., FTPServer]) -> FTPServer:
    served = start_server()
    (served.root / "pub.txt").write_bytes(b"public")
    return served


def test_anonymous_cannot_change_metadata_or_stou(anonymous: FTPServer) -> None:
    client = anonymous.login("anonymous", "guest@")
    try:
        for line in ("SITE CHMOD 777 /pub.txt", "MFMT 20000101000000 /pub.txt"):
            with pytest.raises(ftplib.error_perm) as refused:
                client.sendcmd(line)
            # Permission denied, or (where the storage cannot do it at all) not implemented.
            assert code(refused.value) in (550, 502), line
        with pytest.raises(ftplib.error_perm) as refused:
            client.storbinary("STOU", io.BytesIO(b"x"))
        assert code(refused.value) == 550
        # Reading facts is fine.
        assert dict(client.mlsd("/"))["pub.txt"]["size"] == "6"
        assert retr_bytes(client, "/pub.txt") == b"public"
    finally:
        client.close()
    assert sorted(p.name for p in anonymous.root.iterdir()) == ["pub.txt"]
    assert stat.S_IMODE(os.stat(anonymous.root / "pub.txt").st_mode) != 0o777
