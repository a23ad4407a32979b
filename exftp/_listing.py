"""
Directory listings: LIST in the C{ls -l} form vsftpd prints, and NLST.

Pure functions of the entries and an explicit C{now}, so that the same input
always lists the same way.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterable
from functools import lru_cache

from ._entries import FileInfo, FileKind

_SIX_MONTHS = 182 * 24 * 3600
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_TYPE_LETTER = {FileKind.FILE: "-", FileKind.DIRECTORY: "d", FileKind.SYMLINK: "l"}


_MODE_STRINGS: dict[tuple[FileKind, int], str] = {}


def mode_string(info: FileInfo) -> str:
    """The ten-character mode column, e.g. C{drwxr-xr-x}."""
    key = (info.kind, info.permissions & 0o777)
    text = _MODE_STRINGS.get(key)
    if text is None:
        bits = "".join(
            letter if info.permissions & (1 << (8 - index)) else "-" for index, letter in enumerate("rwxrwxrwx")
        )
        text = _MODE_STRINGS[key] = _TYPE_LETTER[info.kind] + bits
    return text


def _gmtime(mtime: float) -> time.struct_time:
    """C{time.gmtime}, with the epoch for times it cannot represent (NaN, far past or future)."""
    try:
        return time.gmtime(mtime)
    except (OverflowError, OSError, ValueError):
        return time.gmtime(0)


def date_string(mtime: float, now: float) -> str:
    """
    The date column, in UTC as C{ls} and vsftpd print it: month, day and
    time of day for times within six months of C{now}, month, day and year
    (after two spaces) otherwise.
    """
    recent = abs(now - mtime) < _SIX_MONTHS
    try:
        # Only the minute (or the day) shows: entries in the same one share a string.
        return _date_text(int(mtime // 60), recent)
    except (OverflowError, ValueError):
        return _date_text(0, recent)


@lru_cache(maxsize=4096)
def _date_text(minute: int, recent: bool) -> str:
    t = _gmtime(minute * 60.0)
    month = _MONTHS[t.tm_mon - 1]
    if recent:
        return f"{month} {t.tm_mday:02d} {t.tm_hour:02d}:{t.tm_min:02d}"
    return f"{month} {t.tm_mday:02d}  {t.tm_year}"


@lru_cache(maxsize=1024)
def _column(text: str) -> str:
    """An owner or group column: eight characters, no spaces or line breaks to confuse parsers."""
    return "".join("_" if ch.isspace() else ch for ch in text[:8] or "?").ljust(8)


def list_line(info: FileInfo, now: float) -> str:
    """One line of a LIST reply, without its line ending."""
    # printf-style: padding ints this way costs a third less than format specs.
    return "%s %4d %s %s %8d %s %s" % (  # noqa: UP031
        mode_string(info),
        info.links,
        _column(info.owner),
        _column(info.group),
        info.size,
        date_string(info.mtime, now),
        info.name,
    )


def _safe(name: str) -> bool:
    """Names with CR or LF could forge lines in a listing; they are left out."""
    return "\r" not in name and "\n" not in name


def format_list(entries: Iterable[FileInfo], now: float) -> bytes:
    """
    A whole LIST reply body, CRLF-terminated lines, UTF-8.

    Names that are not valid Unicode (undecodable bytes on disk) are shown with
    replacement characters rather than failing the whole listing.
    """
    return "".join([f"{list_line(e, now)}\r\n" for e in entries if _safe(e.name)]).encode("utf-8", "replace")


def format_nlst(entries: Iterable[FileInfo]) -> bytes:
    """A whole NLST reply body: bare names."""
    return "".join(e.name + "\r\n" for e in entries if _safe(e.name)).encode("utf-8", "replace")


def format_mdtm(mtime: float) -> str:
    """A time as RFC 3659 C{YYYYMMDDHHMMSS} in UTC."""
    t = _gmtime(mtime)
    return f"{t.tm_year:04d}{t.tm_mon:02d}{t.tm_mday:02d}{t.tm_hour:02d}{t.tm_min:02d}{t.tm_sec:02d}"


#: The RFC 3659 facts this server knows, in the order they are listed.
MLSX_FACTS = ("type", "size", "modify", "perm", "unique", "unix.mode")
_MLSX_TYPES = {FileKind.FILE: "file", FileKind.DIRECTORY: "dir", FileKind.SYMLINK: "OS.unix=symlink"}


def mlsx_line(
    info: FileInfo,
    facts: Iterable[str],
    writable: bool | frozenset[str],
    kind: str | None = None,
    name: str | None = None,
) -> str:
    """
    One RFC 3659 entry: C{fact=value;...; name}, without its line ending.

    @param facts: which of L{MLSX_FACTS} to include.
    @param writable: what the user may do, for the C{perm} fact: C{True}
        everything, C{False} read only, or a set of pyftpdlib permission
        letters (C{elradfmwMT}).
    @param kind: a C{type} value that overrides the entry's own (C{cdir}, C{pdir}).
    @param name: the name to show instead of C{info.name} (e.g. a full path for MLST).
    """
    wanted = facts if isinstance(facts, frozenset) else frozenset(facts)
    values: list[tuple[str, str]] = []
    if "type" in wanted:
        values.append(("type", kind or _MLSX_TYPES[info.kind]))
    if "size" in wanted and info.kind is FileKind.FILE:
        values.append(("size", str(info.size)))
    if "modify" in wanted:
        values.append(("modify", format_mdtm(info.mtime)))
    if "perm" in wanted:
        values.append(("perm", _perm_fact(info.is_directory, writable)))
    if "unique" in wanted and info.unique and _fact_value(info.unique):
        values.append(("unique", info.unique))
    if "unix.mode" in wanted:
        values.append(("unix.mode", f"0{info.permissions:o}"))
    return "".join(f"{fact}={value};" for fact, value in values) + " " + (info.name if name is None else name)


_FACT_SEPARATORS = frozenset("; =")


def _fact_value(text: str) -> bool:
    """Whether C{text} can be a fact's value: printable, without the separators C{;}, C{=} or a space."""
    return text.isprintable() and not _FACT_SEPARATORS.intersection(text)


#: RFC 3659 perm letters and the session permission (pyftpdlib letter) each needs.
_FILE_PERMS = (("r", "r"), ("a", "a"), ("d", "d"), ("f", "f"), ("w", "w"))
_DIRECTORY_PERMS = (("e", "e"), ("l", "l"), ("c", "w"), ("d", "d"), ("f", "f"), ("m", "m"), ("p", "d"))
_EVERYTHING = frozenset("elradfmwMT")
_READ_ONLY = frozenset("elr")


def _perm_fact(directory: bool, writable: bool | frozenset[str]) -> str:
    """The C{perm} fact of an entry for a user with these permissions."""
    if isinstance(writable, bool):
        writable = _EVERYTHING if writable else _READ_ONLY
    table = _DIRECTORY_PERMS if directory else _FILE_PERMS
    return "".join(fact for fact, needed in table if needed in writable)


def format_mlsx_entries(entries: Iterable[FileInfo], facts: Iterable[str], writable: bool | frozenset[str]) -> bytes:
    """MLSD lines for C{entries} (one page of a listing)."""
    facts = frozenset(facts)
    lines = (mlsx_line(e, facts, writable) + "\r\n" for e in entries if _safe(e.name))
    return "".join(lines).encode("utf-8", "replace")


def format_mlsd(
    directory: FileInfo,
    parent: FileInfo | None,
    entries: Iterable[FileInfo],
    facts: Iterable[str],
    writable: bool | frozenset[str],
) -> bytes:
    """A whole MLSD reply body: the directory itself (cdir), its parent (pdir), then its entries."""
    facts = frozenset(facts)
    lines = [mlsx_line(directory, facts, writable, "cdir", ".")]
    if parent is not None:
        lines.append(mlsx_line(parent, facts, writable, "pdir", ".."))
    head = "".join(line + "\r\n" for line in lines).encode("utf-8", "replace")
    return head + format_mlsx_entries(entries, facts, writable)


def parse_mdtm(text: str) -> float:
    """
    Parse an RFC 3659 time C{YYYYMMDDHHMMSS[.sss]} (UTC) into seconds since the epoch.

    @raise ValueError: when the text is not such a time.
    """
    whole, dot, fraction = text.partition(".")
    if not text.isascii() or len(whole) != 14 or not whole.isdigit() or (dot and not fraction.isdigit()):
        raise ValueError(f"not a time value: {text!r}")
    parsed = time.strptime(whole, "%Y%m%d%H%M%S")
    return calendar.timegm(parsed) + (float("0." + fraction) if fraction else 0.0)
