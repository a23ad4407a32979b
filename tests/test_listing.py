"""
Tests for LIST and NLST formatting: pure functions of entries and C{now}.
"""

from __future__ import annotations

import calendar
import os
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exftp import FileInfo, FileKind
from exftp._commands import parse_command
from exftp._listing import (
    MLSX_FACTS,
    date_string,
    format_list,
    format_mdtm,
    format_mlsd,
    format_mlsx_entries,
    format_nlst,
    list_line,
    mlsx_line,
    mode_string,
    parse_mdtm,
)

NOW = calendar.timegm((2024, 6, 15, 12, 0, 0))
DAY = 24 * 3600

#: What C{ls -l} style parsers (ftplib, lftp, FileZilla) expect.
_LINE = re.compile(
    r"^[-dl][-r][-w][-x][-r][-w][-x][-r][-w][-x] +\d+ \S+ +\S+ +\d+ "
    r"[A-Z][a-z]{2} \d\d (\d\d:\d\d| \d{4}) (?P<name>.+)$"
)


@pytest.mark.parametrize(
    ("kind", "permissions", "expected"),
    [
        (FileKind.FILE, 0o644, "-rw-r--r--"),
        (FileKind.DIRECTORY, 0o755, "drwxr-xr-x"),
        (FileKind.SYMLINK, 0o777, "lrwxrwxrwx"),
        (FileKind.FILE, 0o000, "----------"),
        (FileKind.FILE, 0o4751, "-rwxr-x--x"),
        (FileKind.FILE, 0o421, "-r---w---x"),
    ],
)
def test_mode_string(kind: FileKind, permissions: int, expected: str) -> None:
    assert mode_string(FileInfo("x", kind, permissions=permissions)) == expected


@pytest.mark.parametrize(
    ("mtime", "expected"),
    [
        (calendar.timegm((2024, 6, 1, 9, 5, 0)), "Jun 01 09:05"),
        (calendar.timegm((2024, 1, 31, 23, 59, 59)), "Jan 31 23:59"),
        (calendar.timegm((2023, 12, 1, 0, 0, 0)), "Dec 01  2023"),
        (calendar.timegm((2019, 3, 9, 10, 0, 0)), "Mar 09  2019"),
        (NOW + 30 * DAY, "Jul 15 12:00"),
        (NOW + 400 * DAY, "Jul 20  2025"),
        (NOW - 182 * DAY + 1, "Dec 16 12:00"),
        (NOW - 182 * DAY, "Dec 16  2023"),
    ],
)
def test_date_string(mtime: float, expected: str) -> None:
    assert date_string(mtime, NOW) == expected


@pytest.mark.parametrize("mtime", [float("nan"), 1e300, -1e300])
def test_dates_that_cannot_be_shown_fall_back_to_the_epoch(mtime: float) -> None:
    assert date_string(mtime, NOW) == "Jan 01  1970"
    assert format_mdtm(mtime) == "19700101000000"


def test_list_line_like_vsftpd() -> None:
    info = FileInfo("notes.txt", FileKind.FILE, 1234, NOW - DAY, 0o644, "alice", "staff", 1)
    assert list_line(info, NOW) == "-rw-r--r--    1 alice    staff        1234 Jun 14 12:00 notes.txt"


def test_list_line_columns_survive_odd_owners() -> None:
    info = FileInfo("f", FileKind.FILE, 1, NOW, 0o600, "a very long owner", "", 3)
    line = list_line(info, NOW)
    assert line == "-rw-------    3 a_very_l ?               1 Jun 15 12:00 f"
    assert _LINE.match(line)


def test_format_list_crlf_terminated_and_skips_unsafe_names() -> None:
    entries = [
        FileInfo("a", FileKind.FILE, 1, NOW),
        FileInfo("evil\r\n-rw-r--r-- 1 x x 0 Jan 01 00:00 fake", FileKind.FILE, 1, NOW),
        FileInfo("dir", FileKind.DIRECTORY, 0, NOW, 0o755, links=2),
    ]
    body = format_list(entries, NOW)
    lines = body.decode().split("\r\n")
    assert lines[-1] == ""
    assert [_LINE.match(line)["name"] for line in lines[:-1]] == ["a", "dir"]  # type: ignore[index]
    assert format_nlst(entries) == b"a\r\ndir\r\n"


def test_names_that_are_not_utf8_are_listed_as_their_bytes() -> None:
    """A name read from disk with surrogateescape goes out as the bytes on disk, in every listing form."""
    entries = [FileInfo("caf\udce9", FileKind.FILE), FileInfo("ok", FileKind.FILE)]
    assert format_nlst(entries) == b"caf\xe9\r\nok\r\n"
    listed = format_list(entries, NOW).split(b"\r\n")
    assert [line.rpartition(b" ")[2] for line in listed] == [b"caf\xe9", b"ok", b""]
    assert format_mlsx_entries(entries, ("type",), False) == b"type=file; caf\xe9\r\ntype=file; ok\r\n"


def test_other_lone_surrogates_are_replaced() -> None:
    """A surrogate that stands for no byte (a storage's odd name) is shown as C{?}, never an error."""
    entries = [FileInfo("a\ud800b", FileKind.FILE), FileInfo("\udc7f\udd00\udce9", FileKind.FILE)]
    assert format_nlst(entries) == b"a?b\r\n??\xe9\r\n"


def test_empty_listing() -> None:
    assert format_list([], NOW) == b""
    assert format_nlst([]) == b""


@pytest.mark.parametrize(
    ("mtime", "expected"),
    [(0, "19700101000000"), (calendar.timegm((2024, 2, 29, 23, 5, 9)), "20240229230509"), (1.9, "19700101000001")],
)
def test_format_mdtm(mtime: float, expected: str) -> None:
    assert format_mdtm(mtime) == expected


_names = st.text(min_size=1, max_size=20).filter(lambda n: n.strip() == n and n.strip())
_infos = st.builds(
    FileInfo,
    name=_names,
    kind=st.sampled_from(list(FileKind)),
    size=st.integers(min_value=0, max_value=2**50),
    mtime=st.floats(min_value=0, max_value=4e9),
    permissions=st.integers(min_value=0, max_value=0o7777),
    owner=st.text(max_size=12),
    group=st.text(max_size=12),
    links=st.integers(min_value=1, max_value=10**6),
)


@given(st.lists(_infos, max_size=5), st.floats(min_value=0, max_value=4e9))
def test_every_listed_line_parses_back(entries: list[FileInfo], now: float) -> None:
    safe = [e for e in entries if "\r" not in e.name and "\n" not in e.name]
    body = format_list(entries, now).decode("utf-8")
    lines = body.split("\r\n")
    assert lines[-1] == ""
    assert len(lines) - 1 == len(safe)
    for line, entry in zip(lines, safe, strict=False):
        match = _LINE.match(line)
        assert match is not None, line
        assert match["name"] == entry.name.encode("utf-8", "replace").decode()


@given(st.lists(_infos, max_size=5))
def test_nlst_is_one_name_per_line(entries: list[FileInfo]) -> None:
    lines = format_nlst(entries).split(b"\r\n")
    assert lines[-1] == b""
    assert all(b"\r" not in line and b"\n" not in line for line in lines)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("19700101000000", 0.0),
        ("20210304050607", 1614834367.0),
        ("20210304050607.250", 1614834367.25),
        ("20240229235959", calendar.timegm((2024, 2, 29, 23, 59, 59))),
    ],
)
def test_parse_mdtm(text: str, expected: float) -> None:
    assert parse_mdtm(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2021030405060",
        "202103040506070",
        "20211304050607",
        "20210230050607",
        "20210304250607",
        "2021030405060x",
        "20210304050607.",
        "20210304050607.5x",
        "\u0662\u0660\u0662\u0661\u0660\u0663\u0660\u0664\u0660\u0665\u0660\u0666\u0660\u0667",
        " 20210304050607",
    ],
)
def test_parse_mdtm_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_mdtm(text)


@given(st.integers(min_value=0, max_value=253402300799))
def test_mdtm_round_trip(seconds: int) -> None:
    assert parse_mdtm(format_mdtm(seconds)) == seconds


def test_mlsx_line() -> None:
    file = FileInfo("a b.txt", FileKind.FILE, 12, 1614834367, 0o640, unique="801g2")
    directory = FileInfo("d", FileKind.DIRECTORY, 0, 0, 0o755)
    link = FileInfo("l", FileKind.SYMLINK, 0, 0, 0o777)
    assert mlsx_line(file, MLSX_FACTS, True) == (
        "type=file;size=12;modify=20210304050607;perm=radfw;unique=801g2;unix.mode=0640; a b.txt"
    )
    assert mlsx_line(file, ("size", "type"), False) == "type=file;size=12; a b.txt"
    assert mlsx_line(file, ("perm",), False) == "perm=r; a b.txt"
    assert mlsx_line(directory, ("type", "size", "perm"), True) == "type=dir;perm=elcdfmp; d"
    assert mlsx_line(directory, ("perm",), False, name="/x/d") == "perm=el; /x/d"
    assert mlsx_line(link, ("type",), False) == "type=OS.unix=symlink; l"
    assert mlsx_line(file, (), False) == " a b.txt"


@pytest.mark.parametrize("unique", ["a;b", "a b", "a=b", "a\r\nb", ""])
def test_mlsx_leaves_out_a_unique_value_that_would_break_the_facts(unique: str) -> None:
    info = FileInfo("f", FileKind.FILE, 1, 0, unique=unique)
    assert mlsx_line(info, ("type", "unique"), False) == "type=file; f"


def test_format_mlsd() -> None:
    here = FileInfo("d", FileKind.DIRECTORY, mtime=0)
    up = FileInfo("/", FileKind.DIRECTORY, mtime=0)
    entries = [
        FileInfo("f", FileKind.FILE, 3, 0),
        FileInfo("bad\nname", FileKind.FILE),
        FileInfo("caf\udce9", FileKind.FILE),
    ]
    body = format_mlsd(here, up, entries, ("type", "size"), False)
    assert body == b"type=cdir; .\r\ntype=pdir; ..\r\ntype=file;size=3; f\r\ntype=file;size=0; caf\xe9\r\n"
    assert format_mlsd(here, None, [], ("type",), False) == b"type=cdir; .\r\n"



#: Names on disk: any bytes but NUL, CR, LF, C{/}, and the Telnet IAC (0xFF), which a client must double.
_disk_names = st.binary(min_size=1, max_size=20).filter(lambda raw: not set(b"\x00\r\n/\xff") & set(raw))


@given(_disk_names)
def test_a_listed_name_sent_back_names_the_same_entry(raw: bytes) -> None:
    """Any bytes on disk (as C{os.listdir} decodes them) are listed as themselves and parse back to the same name."""
    listed = format_nlst([FileInfo(os.fsdecode(raw), FileKind.FILE)])
    assert listed == raw + b"\r\n"
    assert os.fsencode(parse_command(b"RETR " + listed[:-2]).argument) == raw
