"""
A read-only view of any storage.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred, fail
from zope.interface import implementer

from .._errors import PermissionDenied
from .._interfaces import FileInfo, IReadFile, IStorage, IStorageMetadata, IWriteFile, Session, WriteMode
from .._paths import VirtualPath


def _denied() -> Deferred[None]:
    return fail(PermissionDenied("Permission denied: read-only access."))


@implementer(IStorage, IStorageMetadata)
class ReadOnlyStorage:
    """
    Passes reads to the wrapped storage and refuses every change with 550,
    metadata changes (MFMT, SITE CHMOD) included.
    """

    def __init__(self, storage: IStorage) -> None:
        self._storage = storage

    def stat(self, path: VirtualPath) -> Deferred[FileInfo]:
        return self._storage.stat(path)

    def list(self, path: VirtualPath) -> Deferred[Sequence[FileInfo]]:
        return self._storage.list(path)

    def open_read(self, path: VirtualPath, offset: int) -> Deferred[IReadFile]:
        return self._storage.open_read(path, offset)

    def make_directory(self, path: VirtualPath) -> Deferred[None]:
        return _denied()

    def remove_directory(self, path: VirtualPath) -> Deferred[None]:
        return _denied()

    def remove_file(self, path: VirtualPath) -> Deferred[None]:
        return _denied()

    def rename(self, source: VirtualPath, destination: VirtualPath) -> Deferred[None]:
        return _denied()

    def open_write(self, path: VirtualPath, mode: WriteMode, offset: int) -> Deferred[IWriteFile]:
        return _denied()  # type: ignore[return-value]

    def set_mtime(self, path: VirtualPath, mtime: float) -> Deferred[None]:
        return _denied()

    def set_permissions(self, path: VirtualPath, mode: int) -> Deferred[None]:
        return _denied()


def for_session(storage: IStorage, session: Session) -> IStorage:
    """Apply the session's restrictions (read-only) to C{storage}."""
    return ReadOnlyStorage(storage) if session.read_only else storage
