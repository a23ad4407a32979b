"""
Directory listings: LIST in the C{ls -l} form vsftpd prints, and NLST.

Pure functions of the entries and an explicit C{now}, so that the same input
always lists the same way.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from ._interfaces import FileInfo, FileKind

_SIX_MONTHS = 182 * 24 * 3600
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_TYPE_LETTER = {FileKind.FILE: "-", FileKind.DIRECTORY: "d", FileKind.SYMLINK: "l"}


def mode_string(info: FileInfo) -> str:
    """The ten-character mode column, e.g. C{drwxr-xr-x}."""
    bits = "".join(
        letter if info.permissions & (1 << (8 - index)) else "-"
        for index, letter in enumerate("rwxrwxrwx")
    )
    return _TYPE_LETTER[info.kind] + bits


def date_string(mtime: float, now: float) -> str:
    """
    The date column: C{Mon dd HH:MM} for times within six months of C{now},
    C{Mon dd  YYYY} otherwise (as C{ls} and vsftpd print it, in UTC).
    """
    t = time.gmtime(mtime)
    month = _MONTHS[t.tm_mon - 1]
    if abs(now - mtime) < _SIX_MONTHS:
        return f"{month} {t.tm_mday:02d} {t.tm_hour:02d}:{t.tm_min:02d}"
    return f"{month} {t.tm_mday:02d}  {t.tm_year}"


def list_line(info: FileInfo, now: float) -> str:
    """One line of a LIST reply, without its line ending."""
    return (
        f"{mode_string(info)} {info.links:4d} {info.owner[:8]:<8} {info.group[:8]:<8} "
        f"{info.size:8d} {date_string(info.mtime, now)} {info.name}"
    )


def _safe(name: str) -> bool:
    """Names with CR or LF could forge lines in a listing; they are left out."""
    return "\r" not in name and "\n" not in name


def format_list(entries: Iterable[FileInfo], now: float) -> bytes:
    """A whole LIST reply body, CRLF-terminated lines, UTF-8."""
    return "".join(list_line(e, now) + "\r\n" for e in entries if _safe(e.name)).encode()


def format_nlst(entries: Iterable[FileInfo]) -> bytes:
    """A whole NLST reply body: bare names."""
    return "".join(e.name + "\r\n" for e in entries if _safe(e.name)).encode()


def format_mdtm(mtime: float) -> str:
    """A time as RFC 3659 C{YYYYMMDDHHMMSS} in UTC."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(mtime))
