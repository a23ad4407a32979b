"""
What a storage says about a directory entry: plain values, so that the
listing formats and every protocol can use them without importing the
interfaces (and with them Twisted).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FileKind(enum.Enum):
    """What a directory entry is."""

    FILE = "file"
    DIRECTORY = "dir"
    SYMLINK = "symlink"

    # Members are singletons compared by identity; Enum's own hash runs Python
    # code, and listings look kinds up in tables once per entry.
    __hash__ = object.__hash__


@dataclass(slots=True)
class FileInfo:
    """
    What a storage knows about one entry.

    Not frozen: storages build one per entry of every listing, and a frozen
    dataclass costs four times as much to build.

    @ivar name: the entry's name (the last path segment).
    @ivar kind: file, directory or symbolic link.
    @ivar size: size in bytes (0 where unknown, e.g. directories).
    @ivar mtime: modification time in seconds since the epoch (UTC).
    @ivar permissions: POSIX mode bits (C{0o644}); without the type bits.
    @ivar owner: owner name to show in listings.
    @ivar group: group name to show in listings.
    @ivar links: link count to show in listings.
    @ivar unique: an identifier that stays the same for the same object
        (RFC 3659 C{unique} fact), or C{None} where the storage has none.
    """

    name: str
    kind: FileKind
    size: int = 0
    mtime: float = 0.0
    permissions: int = 0o644
    owner: str = "ftp"
    group: str = "ftp"
    links: int = 1
    unique: str | None = None

    @property
    def is_directory(self) -> bool:
        """Whether this entry is a directory."""
        return self.kind is FileKind.DIRECTORY
