"""
Nothing a client sends may reach outside the served directory: C{..},
absolute paths and symbolic links that lead out, for reads and for writes.
"""

from __future__ import annotations

import contextlib
import ftplib
import io
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import AUTH, FTPServer, code, list_lines, retr_bytes

FAKE_PASSWD = b"this is the served etc/passwd, not the system one\n"
SECRET = b"outside the root\n"


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory next to the served root, which clients must never touch."""
    directory = tmp_path_factory.mktemp("outside")
    (directory / "secret.txt").write_bytes(SECRET)
    return directory


@pytest.fixture(scope="module")
def jail(start_server: Callable[..., FTPServer], tmp_path_factory: pytest.TempPathFactory, outside: Path) -> FTPServer:
    root = tmp_path_factory.mktemp("jail")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_bytes(FAKE_PASSWD)
    (root / "pub").mkdir()
    (root / "pub" / "file.txt").write_bytes(b"inside\n")
    (root / "pub" / "sub").mkdir()
    os.symlink("/etc", root / "etc_link")
    os.symlink("/etc/passwd", root / "passwd_link")
    os.symlink("..", root / "up_link")
    os.symlink(outside, root / "outside_link")
    os.symlink(outside / "secret.txt", root / "secret_link")
    os.symlink("pub", root / "pub_link")  # stays inside: allowed
    return start_server("--auth", AUTH, root=root)


@pytest.fixture
def client(jail: FTPServer) -> Iterator[ftplib.FTP]:
    session = jail.login()
    yield session
    session.close()


def _refused(client: ftplib.FTP, line: str) -> int:
    with pytest.raises(ftplib.error_perm) as refused:
        client.sendcmd(line)
    return code(refused.value)


def _refused_transfer(client: ftplib.FTP, line: str, data: bytes | None = None) -> int:
    """A transfer command that must be refused before any 150."""
    with pytest.raises(ftplib.error_perm) as refused:
        if data is None:
            client.retrbinary(line, lambda chunk: pytest.fail(f"{line} sent data: {chunk[:80]!r}"))
        else:
            client.storbinary(line, io.BytesIO(data))
    return code(refused.value)


@pytest.mark.parametrize("target", ["..", "../..", "/..", "/../..", "/../../..", "./../.", "//..//..", "pub/../../.."])
def test_cwd_dotdot_stays_at_root(client: ftplib.FTP, target: str) -> None:
    with contextlib.suppress(ftplib.error_perm):
        client.cwd(target)
    assert client.pwd() == "/"


def test_cwd_up_from_subdirectory_clamps(client: ftplib.FTP) -> None:
    client.cwd("/pub/sub")
    client.cwd("../../../../..")
    assert client.pwd() == "/"
    client.cwd("/pub/sub")
    client.cwd("../../../../pub")
    assert client.pwd() == "/pub"
    for _ in range(5):
        client.sendcmd("CDUP")
    assert client.pwd() == "/"


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "../../etc/passwd", "../../../../../../etc/passwd", "/../etc/passwd", "//etc//passwd"]
)
def test_absolute_and_dotdot_paths_stay_in_root(client: ftplib.FTP, path: str) -> None:
    client.cwd("/pub/sub")
    assert retr_bytes(client, path) == FAKE_PASSWD


@pytest.mark.parametrize("path", ["/etc/passwd", "../../etc/passwd", "../../../../../etc/passwd", "/etc/hostname"])
def test_system_files_not_reachable(ftp: ftplib.FTP, path: str) -> None:
    # The main server's root has no etc/ directory.
    assert _refused_transfer(ftp, f"RETR {path}") == 550
    assert _refused(ftp, f"SIZE {path}") == 550
    assert ftp.pwd() == "/"


def test_root_listing_shows_outward_links_as_links(client: ftplib.FTP) -> None:
    lines = {line.split(maxsplit=8)[-1].split(" -> ")[0]: line for line in list_lines(client, "LIST /")}
    for name in ("etc_link", "passwd_link", "up_link", "outside_link", "secret_link"):
        assert lines[name].startswith("l"), lines[name]
        # Where it leads is not shown: it is outside the root.
        assert lines[name].endswith(f"{name} -> (outside the root)"), lines[name]
    # A link that stays inside is a link too (issue 18), with its target as the user sees it.
    assert lines["pub_link"].startswith("l"), lines["pub_link"]
    assert " -> " in lines["pub_link"] and "(outside the root)" not in lines["pub_link"], lines["pub_link"]


@pytest.mark.parametrize("link", ["etc_link", "up_link", "outside_link"])
def test_cwd_into_outward_link_refused(client: ftplib.FTP, link: str) -> None:
    assert _refused(client, f"CWD {link}") == 550
    assert client.pwd() == "/"
    assert _refused(client, f"CWD /{link}/") == 550
    assert _refused(client, f"XCWD {link}") == 550
    assert client.pwd() == "/"


@pytest.mark.parametrize("link", ["etc_link", "up_link", "outside_link"])
def test_list_outward_link_refused(client: ftplib.FTP, link: str) -> None:
    for verb in ("LIST", "NLST", "LIST -la"):
        assert _refused_transfer(client, f"{verb} {link}") == 550


@pytest.mark.parametrize(
    "path",
    ["etc_link/passwd", "etc_link/hostname", "passwd_link", "outside_link/secret.txt", "secret_link",
     "/pub/../etc_link/passwd"],
)  # fmt: skip
def test_retr_through_outward_link_refused(client: ftplib.FTP, path: str) -> None:
    assert _refused_transfer(client, f"RETR {path}") == 550
    assert _refused(client, f"SIZE {path}") == 550
    assert _refused(client, f"MDTM {path}") == 550


def test_up_link_does_not_reach_the_outside_directory(client: ftplib.FTP, jail: FTPServer, outside: Path) -> None:
    # up_link -> .. is the directory holding both the root and "outside".
    assert _refused_transfer(client, f"RETR up_link/{outside.name}/secret.txt") == 550
    assert _refused_transfer(client, f"NLST up_link/{outside.name}") == 550
    assert _refused(client, f"CWD up_link/{outside.name}") == 550
    # up_link/<root's own name> is the root itself: no escape, so it may be listed.
    names = client.nlst(f"up_link/{jail.root.name}")
    assert "pub" in {name.rsplit("/", 1)[-1] for name in names}


def test_stor_through_outward_links_refused(client: ftplib.FTP, outside: Path) -> None:
    name = f"exftp-e2e-{uuid.uuid4().hex}"
    try:
        assert _refused_transfer(client, f"STOR etc_link/{name}", b"evil") == 550
        assert _refused_transfer(client, f"STOR outside_link/{name}", b"evil") == 550
        assert _refused_transfer(client, f"STOR up_link/{outside.name}/{name}", b"evil") == 550
        assert _refused_transfer(client, f"APPE outside_link/{name}", b"evil") == 550
    finally:
        leaked = [p for p in (Path("/etc") / name, outside / name) if p.exists()]
        for path in leaked:
            path.unlink()
    assert not leaked
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_overwrite_through_file_link_refused(client: ftplib.FTP, jail: FTPServer, outside: Path) -> None:
    assert _refused_transfer(client, "STOR secret_link", b"overwritten") == 550
    assert _refused_transfer(client, "APPE secret_link", b"appended") == 550
    assert _refused_transfer(client, "STOR outside_link/secret.txt", b"overwritten") == 550
    assert (outside / "secret.txt").read_bytes() == SECRET
    assert os.path.islink(jail.root / "secret_link")


def test_changes_through_outward_links_refused(client: ftplib.FTP, jail: FTPServer, outside: Path) -> None:
    assert _refused(client, "MKD outside_link/newdir") == 550
    assert _refused(client, "DELE outside_link/secret.txt") == 550
    assert _refused(client, "RMD outside_link") == 550
    # Renaming out of the root, or from outside into it.
    with pytest.raises(ftplib.error_perm) as refused:
        client.rename("/pub/file.txt", "/outside_link/stolen.txt")
    assert code(refused.value) == 550
    with pytest.raises(ftplib.error_perm) as refused:
        client.rename("/outside_link/secret.txt", "/pub/secret.txt")
    assert code(refused.value) == 550
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_bytes() == SECRET
    assert (jail.root / "pub" / "file.txt").read_bytes() == b"inside\n"
    assert not (jail.root / "pub" / "secret.txt").exists()


def test_link_inside_root_is_followed(client: ftplib.FTP) -> None:
    client.cwd("pub_link")
    assert client.pwd() == "/pub_link"
    assert retr_bytes(client, "file.txt") == b"inside\n"
    client.cwd("..")
    assert client.pwd() == "/"


@pytest.mark.parametrize("path", ["~", "~root", "~/etc/passwd"])
def test_no_home_expansion(client: ftplib.FTP, path: str) -> None:
    assert _refused(client, f"CWD {path}") == 550
    assert client.pwd() == "/"


def test_forbidden_characters(jail: FTPServer) -> None:
    with jail.control() as control:
        control.login()
        for line in (b"RETR pub/file.txt\x00../../etc/passwd", b"CWD pub\x00", b"MKD a\rb"):
            reply = control.cmd(line)
            assert 500 <= reply.code <= 553, (line, reply)
        assert control.cmd("PWD").lines[0].startswith('257 "/"')


def test_pwd_never_above_root(client: ftplib.FTP) -> None:
    for target in ("..", "/..", "etc_link", "up_link", "../up_link", "pub/../..", "/pub/sub/../../../.."):
        with contextlib.suppress(ftplib.error_perm):
            client.cwd(target)
        pwd = client.pwd()
        assert pwd.startswith("/") and ".." not in pwd and "up_link" not in pwd and "etc_link" not in pwd, pwd
    assert client.pwd() == "/"


@pytest.mark.parametrize("link", ["etc_link", "outside_link", "up_link"])
def test_mlsd_through_outward_link_refused(client: ftplib.FTP, link: str) -> None:
    assert _refused_transfer(client, f"MLSD {link}") == 550
    assert _refused(client, f"MLST {link}/.") == 550


@pytest.mark.parametrize(
    "line",
    ["MLST etc_link/passwd", "MLST secret_link", "XMD5 etc_link/passwd", "XSHA256 outside_link/secret.txt",
     "XCRC secret_link", "HASH passwd_link", "MDTM outside_link/secret.txt"],
)  # fmt: skip
def test_facts_and_digests_through_outward_links_refused(client: ftplib.FTP, line: str) -> None:
    assert _refused(client, line) == 550


def test_metadata_changes_through_outward_links_refused(client: ftplib.FTP, outside: Path) -> None:
    secret = outside / "secret.txt"
    before = os.stat(secret)
    for line in ("SITE CHMOD 777 outside_link/secret.txt", "SITE CHMOD 777 secret_link",
                 "MFMT 20000101000000 outside_link/secret.txt", "MFMT 20000101000000 secret_link"):  # fmt: skip
        with pytest.raises(ftplib.error_perm) as refused:
            client.sendcmd(line)
        assert code(refused.value) in (550, 502), (line, refused.value)
    after = os.stat(secret)
    assert (after.st_mode, after.st_mtime) == (before.st_mode, before.st_mtime)


def test_stou_through_outward_link_refused(client: ftplib.FTP, outside: Path) -> None:
    assert _refused_transfer(client, "STOU outside_link/dropped", b"evil") == 550
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
