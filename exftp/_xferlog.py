"""
The transfer log in the xferlog format of wu-ftpd, vsftpd and ProFTPD.

One line a finished (or broken) upload or download, fourteen fields
separated by single spaces, the first of which (the date, as C{ctime}
writes it) contains spaces itself::

    Mon Jan  2 15:04:05 2006 1 127.0.0.1 5 /in/a.txt b _ i r alice ftp 0 * c

transfer-time (whole seconds, at least 1), remote-host, file-size (bytes
moved), filename, transfer-type (C{a} ASCII, C{b} binary),
special-action-flag (C{_}: none), direction (C{o} outgoing, C{i} incoming),
access-mode (C{a} anonymous, C{r} real user), username, service-name
(C{ftp}), authentication-method (C{0}: none), authenticated-user-id (C{*}:
none) and completion-status (C{c} complete, C{i} incomplete). White space
and control characters in names become C{_}, so that every line splits on
spaces. Passwords are never written (wu-ftpd logged an anonymous user's
e-mail password; exftp logs the user name).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import IO

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ._events import Action, FTPEvent
from .auth._simple import ANONYMOUS_NAMES

__all__ = ["TransferLog", "xferlog_line"]

_log = Logger(namespace="exftp.xferlog")
_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f]")
_DIRECTIONS = {Action.UPLOAD: "i", Action.DOWNLOAD: "o"}


def _field(text: str | None, empty: str) -> str:
    """One field without spaces; C{empty} when there is nothing."""
    return _UNSAFE.sub("_", text) if text else empty


def xferlog_line(event: FTPEvent, localtime: Callable[[float], time.struct_time] = time.localtime) -> str | None:
    """
    The xferlog line (without its newline) of a transfer event, or C{None}
    for events that are not transfers.

    @param localtime: turns the event's time into the local time written.
    """
    direction = _DIRECTIONS.get(event.action)
    if direction is None:
        return None
    username = event.username or ""
    fields = [
        time.asctime(localtime(event.time)),
        str(max(1, round(event.seconds))),
        _field(event.peer, "-"),
        str(event.bytes),
        _field(event.path, "-"),
        "b" if event.binary else "a",
        "_",
        direction,
        "a" if username.lower() in ANONYMOUS_NAMES else "r",
        _field(username, "*"),
        event.protocol,  # service name: ftp, ftps or sftp
        "0",
        "*",
        "c" if event.ok else "i",
    ]
    return " ".join(fields)


class TransferLog:
    """
    An event observer that appends xferlog lines to a file.

    Lines are buffered and written out at least every C{flush_interval}
    seconds, so that a slow disk cannot hold up the reactor for long.

    @param path: the file; created if needed, always appended to.
    @param reactor: for the flush timer; the global reactor when omitted.
    @param flush_interval: seconds between writes of buffered lines.
    @param localtime: turns event times into the local time written.
    @raise OSError: when the file cannot be opened.
    """

    def __init__(
        self,
        path: str,
        *,
        reactor: IReactorTime | None = None,
        flush_interval: float = 1.0,
        localtime: Callable[[float], time.struct_time] = time.localtime,
    ) -> None:
        self.path = path
        self.localtime = localtime
        self._file: IO[str] | None = self._open()
        self._dirty = False
        self._flusher = LoopingCall(self.flush)
        if reactor is not None:
            self._flusher.clock = reactor
        self._flusher.start(flush_interval, now=False)

    def _open(self) -> IO[str]:
        return open(self.path, "a", encoding="utf-8", errors="backslashreplace", newline="\n")

    def __call__(self, event: FTPEvent) -> None:
        line = xferlog_line(event, self.localtime)
        if line is None or self._file is None:
            return
        try:
            self._file.write(line + "\n")
        except OSError:
            _log.failure("Cannot write the transfer log {path}", path=self.path)
            return
        self._dirty = True

    def flush(self) -> None:
        """Write the buffered lines out."""
        if self._file is None or not self._dirty:
            return
        self._dirty = False
        try:
            self._file.flush()
        except OSError:
            _log.failure("Cannot write the transfer log {path}", path=self.path)

    def reopen(self) -> None:
        """Close and reopen the file (after it was rotated, e.g. on SIGHUP)."""
        if self._file is None:
            return
        self.flush()
        try:
            reopened = self._open()
        except OSError:
            _log.failure("Cannot reopen the transfer log {path}; still writing to the old file", path=self.path)
            return
        self._file.close()
        self._file = reopened

    def close(self) -> None:
        """Write the buffered lines out and close the file."""
        if self._flusher.running:
            self._flusher.stop()
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None
