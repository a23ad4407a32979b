"""
Restricted views of any storage: per-session permissions and read-only access.

Permissions use pyftpdlib's letters: C{e} change directory, C{l} list,
C{r} retrieve, C{a} append, C{d} delete, C{f} rename, C{m} make directory,
C{w} store, C{M} change mode, C{T} change modification time. As in
pyftpdlib, C{l} covers every command that tells what exists, how big and how
old (LIST, NLST, STAT, MLSD, MLST, SIZE, MDTM), and C{f} covers RNFR as well
as RNTO (see L{exftp._session.PERMISSIONS}).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail
from zope.interface import alsoProvides, implementer

from .._errors import NotImplementedCommand, PermissionDenied
from .._interfaces import (
    FileInfo,
    IPagedListing,
    IReadFile,
    IStorage,
    IStorageMetadata,
    IWriteFile,
    Session,
    WriteMode,
)
from .._paths import VirtualPath

#: Every permission letter.
ALL_PERMISSIONS = frozenset("elradfmwMT")
#: What read-only users may do.
READ_ONLY_PERMISSIONS = frozenset("elr")


def check_permissions(letters: str) -> frozenset[str]:
    """
    Parse a permission string such as C{"elr"}.

    @raise ValueError: for letters that are not permissions.
    """
    unknown = set(letters) - ALL_PERMISSIONS
    if unknown:
        raise ValueError(f"unknown permissions {''.join(sorted(unknown))!r} (use letters of {'elradfmwMT'!r})")
    return frozenset(letters)


@implementer(IStorage, IStorageMetadata)
class RestrictedStorage:
    """
    Passes what C{allowed} permits to the wrapped storage and refuses the
    rest with 550. Listing needs C{l}, reading C{r}; C{e} (CWD) is checked
    by the protocol through L{allows}.
    """

    def __init__(self, storage: IStorage, allowed: frozenset[str]) -> None:
        self._storage = storage
        self.allowed = allowed
        if IPagedListing.providedBy(storage):
            alsoProvides(self, IPagedListing)

    def allows(self, letter: str) -> bool:
        """Whether permission C{letter} is granted."""
        return letter in self.allowed

    def _do(self, letter: str, what: str, call: Any, *args: Any) -> Any:
        if letter not in self.allowed:
            return fail(PermissionDenied(f"Permission denied: you may not {what}."))
        return call(*args)

    def stat(self, path: VirtualPath) -> Deferred[FileInfo]:
        return self._storage.stat(path)

    def list(self, path: VirtualPath) -> Deferred[Sequence[FileInfo]]:
        return self._do("l", "list directories", self._storage.list, path)  # type: ignore[no-any-return]

    async def list_pages(self, path: VirtualPath) -> AsyncIterator[Sequence[FileInfo]]:
        """The wrapped storage's pages (when it lists page by page), if listing is allowed."""
        if "l" not in self.allowed:
            raise PermissionDenied("Permission denied: you may not list directories.")
        pages: AsyncIterator[Sequence[FileInfo]] = self._storage.list_pages(path)  # type: ignore[attr-defined]
        async for page in pages:
            yield page

    def open_read(self, path: VirtualPath, offset: int) -> Deferred[IReadFile]:
        return self._do("r", "download", self._storage.open_read, path, offset)  # type: ignore[no-any-return]

    def make_directory(self, path: VirtualPath) -> Deferred[None]:
        return self._do("m", "create directories", self._storage.make_directory, path)  # type: ignore[no-any-return]

    def remove_directory(self, path: VirtualPath) -> Deferred[None]:
        return self._do("d", "delete", self._storage.remove_directory, path)  # type: ignore[no-any-return]

    def remove_file(self, path: VirtualPath) -> Deferred[None]:
        return self._do("d", "delete", self._storage.remove_file, path)  # type: ignore[no-any-return]

    def rename(self, source: VirtualPath, destination: VirtualPath) -> Deferred[None]:
        return self._do("f", "rename", self._storage.rename, source, destination)  # type: ignore[no-any-return]

    def open_write(self, path: VirtualPath, mode: WriteMode, offset: int) -> Deferred[IWriteFile]:
        letter, what = ("a", "append") if mode is WriteMode.APPEND else ("w", "upload")
        return self._do(letter, what, self._storage.open_write, path, mode, offset)  # type: ignore[no-any-return]

    def _metadata(self, letter: str, what: str, method: str, *args: Any) -> Deferred[None]:
        if letter in self.allowed and not IStorageMetadata.providedBy(self._storage):
            return fail(NotImplementedCommand(f"{what} is not supported by this storage."))
        return self._do(letter, what, lambda: getattr(self._storage, method)(*args))  # type: ignore[no-any-return]

    def set_mtime(self, path: VirtualPath, mtime: float) -> Deferred[None]:
        return self._metadata("T", "change modification times", "set_mtime", path, mtime)

    def set_permissions(self, path: VirtualPath, mode: int) -> Deferred[None]:
        return self._metadata("M", "change permissions", "set_permissions", path, mode)


class ReadOnlyStorage(RestrictedStorage):
    """Passes reads to the wrapped storage and refuses every change with 550."""

    def __init__(self, storage: IStorage) -> None:
        super().__init__(storage, READ_ONLY_PERMISSIONS)

    def _do(self, letter: str, what: str, call: Any, *args: Any) -> Any:
        if letter not in self.allowed:
            return fail(PermissionDenied("Permission denied: read-only access."))
        return call(*args)


def granted(session: Session) -> frozenset[str]:
    """The permission letters C{session} holds (read-only wins over C{permissions})."""
    if session.read_only:
        return READ_ONLY_PERMISSIONS
    return ALL_PERMISSIONS if session.permissions is None else session.permissions


def refusal(session: Session, letter: str, what: str) -> PermissionDenied | None:
    """
    The 550 that refuses an action needing permission C{letter} (that
    allows to I{what}), or C{None} when C{session} holds it. The same
    refusal as the restricted storages', checked by the protocol before any
    storage is called, so a storage that applies no restriction opens no hole.
    """
    if letter in granted(session):
        return None
    if session.read_only:
        return PermissionDenied("Permission denied: read-only access.")
    return PermissionDenied(f"Permission denied: you may not {what}.")


def for_session(storage: IStorage, session: Session) -> IStorage:
    """Apply the session's restrictions (read-only, permissions) to C{storage}."""
    if session.read_only:
        return ReadOnlyStorage(storage)
    if session.permissions is not None and session.permissions != ALL_PERMISSIONS:
        return RestrictedStorage(storage, session.permissions)
    return storage
