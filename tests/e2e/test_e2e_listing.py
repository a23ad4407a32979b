"""
LIST and NLST over real data connections: the C{ls -l} format vsftpd prints,
flags, paths, single files.
"""

from __future__ import annotations

import ftplib
import grp
import os
import pwd
import re
import time

import pytest
from conftest import Area, code, list_lines, retr_raw

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: One LIST line, as vsftpd prints it.
_LINE = re.compile(
    r"^(?P<mode>[-dl][-r][-w][-xsS][-r][-w][-xsS][-r][-w][-xtT]) +(?P<links>\d+) (?P<owner>\S+) +(?P<group>\S+) +"
    r"(?P<size>\d+) (?P<month>[A-Z][a-z]{2}) (?P<day>\d\d) (?P<clock>\d\d:\d\d| \d{4}) (?P<name>.+)$"
)


def _parse(line: str) -> re.Match[str]:
    found = _LINE.match(line)
    assert found, f"not an ls -l line: {line!r}"
    return found


def _by_name(lines: list[str]) -> dict[str, re.Match[str]]:
    return {m["name"]: m for m in map(_parse, lines)}


def _ls_names() -> tuple[str, str]:
    return pwd.getpwuid(os.getuid()).pw_name[:8], grp.getgrgid(os.getgid()).gr_name[:8]


def test_list_line_for_recent_file(ftp: ftplib.FTP, area: Area) -> None:
    path = area.file("hello.txt", b"hello\n")
    os.chmod(path, 0o644)
    when = int(time.time()) - 3600
    os.utime(path, (when, when))
    lines = list_lines(ftp, f"LIST {area.path}")
    assert len(lines) == 1
    t = time.gmtime(when)
    owner, group = _ls_names()
    expected = (
        f"-rw-r--r-- {1:4d} {owner:<8} {group:<8} {6:8d} "
        f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:02d} {t.tm_hour:02d}:{t.tm_min:02d} hello.txt"
    )
    assert lines[0] == expected


def test_list_line_for_old_file_shows_year(ftp: ftplib.FTP, area: Area) -> None:
    path = area.file("old.txt", b"x" * 1234567)
    os.chmod(path, 0o600)
    when = 1434326400 + 13 * 3600  # 2015-06-15 13:00 UTC
    os.utime(path, (when, when))
    (found,) = map(_parse, list_lines(ftp, f"LIST {area.path}"))
    assert found["mode"] == "-rw-------"
    assert found["size"] == "1234567"
    assert (found["month"], found["day"], found["clock"]) == ("Jun", "15", " 2015")
    assert found.group(0).endswith(" Jun 15  2015 old.txt")


def test_list_far_future_file_shows_year(ftp: ftplib.FTP, area: Area) -> None:
    path = area.file("future.txt", b"")
    when = int(time.time()) + 400 * 86400
    os.utime(path, (when, when))
    (found,) = map(_parse, list_lines(ftp, f"LIST {area.path}"))
    assert found["clock"] == f" {time.gmtime(when).tm_year}"


def test_list_directory_entries(ftp: ftplib.FTP, area: Area) -> None:
    (area.local / "sub").mkdir()
    os.chmod(area.local / "sub", 0o755)
    area.file("file with spaces.txt", b"abc")
    area.file(".hidden", b"h")
    entries = _by_name(list_lines(ftp, f"LIST -a {area.path}"))
    assert set(entries) == {"sub", "file with spaces.txt", ".hidden"}
    assert entries["sub"]["mode"] == "drwxr-xr-x"
    assert entries["file with spaces.txt"]["size"] == "3"
    assert entries["file with spaces.txt"]["mode"].startswith("-")


def test_list_uses_crlf(ftp: ftplib.FTP, area: Area) -> None:
    area.file("a", b"1")
    area.file("b", b"2")
    for type_ in ("A", "I"):
        body = retr_raw(ftp, f"LIST {area.path}", type_=type_)
        assert body.endswith(b"\r\n")
        assert body.count(b"\r\n") == 2
        assert b"\n" not in body.replace(b"\r\n", b"")


@pytest.mark.parametrize("flags", ["", "-a", "-l", "-la", "-al", "-a -l"])
def test_list_flags_with_and_without_path(ftp: ftplib.FTP, area: Area, flags: str) -> None:
    area.file("visible", b"v")
    (area.local / "dir").mkdir()
    area.file("dir/inner", b"i")
    with_path = _by_name(list_lines(ftp, f"LIST {flags} {area.path}".replace("  ", " ")))
    assert {"visible", "dir"} <= set(with_path)
    assert "inner" not in with_path
    ftp.cwd(area.path)
    without_path = _by_name(list_lines(ftp, f"LIST {flags}".strip()))
    assert set(without_path) == set(with_path)
    inner = _by_name(list_lines(ftp, f"LIST {flags} dir".replace("  ", " ")))
    assert set(inner) == {"inner"}


def test_list_of_a_single_file(ftp: ftplib.FTP, area: Area) -> None:
    area.file("one.bin", b"12345")
    area.file("other.bin", b"")
    lines = list_lines(ftp, f"LIST {area.path}/one.bin")
    assert len(lines) == 1
    found = _parse(lines[0])
    assert found["name"] == "one.bin"
    assert found["size"] == "5"
    assert _parse(list_lines(ftp, f"LIST -l {area.path}/one.bin")[0])["name"] == "one.bin"


def test_list_root_and_cwd(ftp: ftplib.FTP, area: Area) -> None:
    root = _by_name(list_lines(ftp, "LIST"))
    assert area.path.lstrip("/") in root
    assert root[area.path.lstrip("/")]["mode"].startswith("d")
    assert _by_name(list_lines(ftp, "LIST /")).keys() == root.keys()


def test_list_empty_directory(ftp: ftplib.FTP, area: Area) -> None:
    assert list_lines(ftp, f"LIST {area.path}") == []
    assert ftp.nlst(area.path) == []


def test_list_missing_550(ftp: ftplib.FTP, area: Area) -> None:
    ftp.sendcmd("PASV")
    with pytest.raises(ftplib.error_perm) as refused:
        ftp.sendcmd(f"LIST {area.path}/missing")
    assert code(refused.value) == 550
    with pytest.raises(ftplib.error_perm) as refused:
        ftp.sendcmd(f"NLST {area.path}/missing")
    assert code(refused.value) == 550
    assert ftp.voidcmd("NOOP").startswith("200")


def test_big_directory_is_listed_whole_and_in_order(ftp: ftplib.FTP, area: Area) -> None:
    """2,500 entries: more than one of the local storage's pages, in LIST, NLST and MLSD alike."""
    names = [f"f{index:04d}" for index in range(2500)]
    for name in reversed(names):
        (area.local / name).write_bytes(name.encode())
    (area.local / ".exftp-upload-f0000").write_bytes(b"")  # an upload under way is not listed
    listed = [_parse(line) for line in list_lines(ftp, f"LIST {area.path}")]
    assert [m["name"] for m in listed] == names
    assert {m["size"] for m in listed} == {"5"}
    assert _basenames(ftp.nlst(area.path)) == names
    assert [name for name, _facts in ftp.mlsd(area.path)] == [".", "..", *names]


def _basenames(names: list[str]) -> list[str]:
    return sorted(name.rsplit("/", 1)[-1] for name in names)


def test_nlst(ftp: ftplib.FTP, area: Area) -> None:
    area.file("a.txt", b"")
    area.file("b c.txt", b"")
    (area.local / "d").mkdir()
    assert _basenames(ftp.nlst(area.path)) == ["a.txt", "b c.txt", "d"]
    ftp.cwd(area.path)
    assert sorted(ftp.nlst()) == ["a.txt", "b c.txt", "d"]
    assert _basenames(ftp.nlst("d")) == []
    assert _basenames(ftp.nlst("a.txt")) == ["a.txt"]


@pytest.mark.parametrize("flags", ["-a", "-l", "-la"])
def test_nlst_flags(ftp: ftplib.FTP, area: Area, flags: str) -> None:
    area.file("x", b"")
    names = ftp.nlst(flags, area.path)
    assert "x" in _basenames(names), names
    assert not any(name.startswith("-") for name in names)


def test_nlst_is_crlf_names_only(ftp: ftplib.FTP, area: Area) -> None:
    area.file("only", b"data")
    assert retr_raw(ftp, f"NLST {area.path}", type_="A").rsplit(b"/", 1)[-1] == b"only\r\n"


def test_list_path_with_dot_and_dotdot(ftp: ftplib.FTP, area: Area) -> None:
    (area.local / "sub").mkdir()
    area.file("top", b"")
    assert set(_by_name(list_lines(ftp, f"LIST {area.path}/sub/.."))) == {"sub", "top"}
    assert set(_by_name(list_lines(ftp, f"LIST {area.path}/./sub/../."))) == {"sub", "top"}
