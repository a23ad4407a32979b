"""
What happened in a session, for hooks, transfer logs and metrics.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass


class Action(enum.Enum):
    """The kinds of L{FTPEvent}."""

    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    LOGOUT = "logout"
    UPLOAD = "upload"
    DOWNLOAD = "download"
    DELETE = "delete"
    RENAME = "rename"
    MKDIR = "mkdir"
    RMDIR = "rmdir"


@dataclass(frozen=True, slots=True)
class FTPEvent:
    """
    One thing a session did, whether it worked or not.

    @ivar action: what was done.
    @ivar ok: whether it succeeded (for transfers: 226 was sent).
    @ivar reply: the reply code the client got.
    @ivar username: the user, if known (never a password).
    @ivar peer: the client's address.
    @ivar path: the virtual path acted on, if any.
    @ivar destination: the new path of a rename.
    @ivar bytes: bytes moved by a transfer.
    @ivar seconds: how long a transfer took.
    @ivar time: when it ended, seconds since the epoch.
    @ivar binary: whether a transfer was TYPE I.
    @ivar protocol: C{ftp}, C{ftps} (a TLS control connection) or C{sftp}.
    """

    action: Action
    ok: bool
    reply: int
    username: str | None
    peer: str | None
    time: float
    path: str | None = None
    destination: str | None = None
    bytes: int = 0
    seconds: float = 0.0
    binary: bool = True
    protocol: str = "ftp"


#: Something that wants to hear about events; it must not block and should not raise.
EventObserver = Callable[[FTPEvent], None]
