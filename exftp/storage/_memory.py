"""
A storage kept in memory: for tests, demos and users' own test suites.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IProducer, IReactorTime
from zope.interface import implementer

from .._errors import (
    AlreadyExists,
    DirectoryNotEmpty,
    FileNotFound,
    FTPError,
    InvalidPath,
    IsADirectory,
    NotADirectory,
    PermissionDenied,
    StorageUnavailable,
)
from .._interfaces import (
    FileInfo,
    FileKind,
    IReadFile,
    IStorage,
    IStorageFactory,
    IStorageMetadata,
    IWriteFile,
    Session,
    WriteMode,
)
from .._paths import VirtualPath
from ._readonly import for_session
from ._streaming import StreamingReader, check_offset, check_permissions

#: Numbers the nodes, for the RFC 3659 C{unique} fact.
_serial = itertools.count(1)


@dataclass
class _Node:
    directory: bool
    data: bytes = b""
    mtime: float = 0.0
    children: dict[str, _Node] = field(default_factory=dict)
    permissions: int | None = None
    unique: str = field(default_factory=lambda: f"m{next(_serial):x}")

    def info(self, name: str) -> FileInfo:
        if self.directory:
            mode = 0o755 if self.permissions is None else self.permissions
            return FileInfo(name, FileKind.DIRECTORY, 0, self.mtime, mode, links=2, unique=self.unique)
        mode = 0o644 if self.permissions is None else self.permissions
        return FileInfo(name, FileKind.FILE, len(self.data), self.mtime, mode, unique=self.unique)


def _guard(method: Callable[..., object]) -> Callable[..., Deferred]:  # type: ignore[type-arg]
    """Turn a synchronous method into one that returns a Deferred."""

    def wrapper(*args: object) -> Deferred:  # type: ignore[type-arg]
        try:
            return succeed(method(*args))
        except FTPError as error:
            return fail(error)

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


@implementer(IWriteFile)
class _MemoryWriter:
    def __init__(self, commit: Callable[[bytes], None], initial: bytes) -> None:
        self._buffer = io.BytesIO(initial)
        self._buffer.seek(0, io.SEEK_END)
        self._commit = commit
        self._producer: IProducer | None = None
        self._done = False

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._producer = None

    def write(self, data: bytes) -> None:
        if not self._done:
            self._buffer.write(data)

    def finish(self) -> Deferred[None]:
        if self._done:
            return fail(StorageUnavailable("Upload already closed."))
        self._done = True
        try:
            self._commit(self._buffer.getvalue())
        except FTPError as error:
            return fail(error)
        return succeed(None)

    def abort(self) -> Deferred[None]:
        self._done = True
        return succeed(None)


@implementer(IStorage, IStorageMetadata)
class MemoryStorage:
    """
    A file tree held in memory.

    Views made with L{view} share the tree, so a test can log in as several
    users and see the same files.
    """

    def __init__(
        self,
        reactor: IReactorTime | None = None,
        *,
        _root: _Node | None = None,
        _base: VirtualPath | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor  # type: ignore[assignment]
        self._reactor: IReactorTime = reactor  # type: ignore[assignment]
        self._root = _root or _Node(True, mtime=self._now())
        self._base = _base if _base is not None else VirtualPath.root()

    def _now(self) -> float:
        return self._reactor.seconds()

    def view(self, base: VirtualPath) -> MemoryStorage:
        """A storage showing only C{base} (which must exist) as its root."""
        return MemoryStorage(self._reactor, _root=self._root, _base=self._absolute(base))

    def _absolute(self, path: VirtualPath) -> VirtualPath:
        return VirtualPath(self._base.segments + path.segments)

    def _node(self, path: VirtualPath) -> _Node:
        node = self._root
        for name in self._absolute(path).segments:
            if not node.directory:
                raise NotADirectory()
            try:
                node = node.children[name]
            except KeyError:
                raise FileNotFound() from None
        return node

    def _parent(self, path: VirtualPath) -> _Node:
        if path.is_root:
            raise PermissionDenied("Cannot change the root directory.")
        parent = self._node(path.parent)
        if not parent.directory:
            raise NotADirectory()
        return parent

    def add_file(self, path: str, data: bytes) -> None:
        """
        Create or replace a file, creating its directories: a set-up helper for tests.

        @raise NotADirectory: when a file stands where a directory is needed.
        @raise IsADirectory: when C{path} is a directory.
        """
        target = VirtualPath.parse(path)
        if target.is_root:
            raise IsADirectory()
        node = self._node(VirtualPath.root())
        for name in target.parent.segments:
            node = node.children.setdefault(name, _Node(True, mtime=self._now()))
            if not node.directory:
                raise NotADirectory()
        existing = node.children.get(target.name)
        if existing is not None and existing.directory:
            raise IsADirectory()
        node.children[target.name] = _Node(False, data, self._now())

    def read_file(self, path: str) -> bytes:
        """Return a file's content: a check helper for tests."""
        node = self._node(VirtualPath.parse(path))
        if node.directory:
            raise IsADirectory()
        return node.data

    @_guard
    def stat(self, path: VirtualPath) -> FileInfo:
        return self._node(path).info(path.name or "/")

    @_guard
    def list(self, path: VirtualPath) -> Sequence[FileInfo]:
        node = self._node(path)
        if not node.directory:
            raise NotADirectory()
        return [child.info(name) for name, child in sorted(node.children.items())]

    @_guard
    def make_directory(self, path: VirtualPath) -> None:
        parent = self._parent(path)
        if path.name in parent.children:
            raise AlreadyExists()
        parent.children[path.name] = _Node(True, mtime=self._now())

    @_guard
    def remove_directory(self, path: VirtualPath) -> None:
        parent = self._parent(path)
        node = self._node(path)
        if not node.directory:
            raise NotADirectory()
        if node.children:
            raise DirectoryNotEmpty()
        del parent.children[path.name]

    @_guard
    def remove_file(self, path: VirtualPath) -> None:
        parent = self._parent(path)
        if self._node(path).directory:
            raise IsADirectory()
        del parent.children[path.name]

    @_guard
    def rename(self, source: VirtualPath, destination: VirtualPath) -> None:
        source_parent = self._parent(source)
        node = self._node(source)
        target_parent = self._parent(destination)
        if destination == source:
            return
        if node.directory and destination.is_within(source):
            raise InvalidPath("Cannot move a directory into itself.")
        existing = target_parent.children.get(destination.name)
        if existing is not None and existing.directory:
            raise AlreadyExists("Destination is a directory.")
        if existing is not None and node.directory:
            raise AlreadyExists("Destination exists.")
        del source_parent.children[source.name]
        target_parent.children[destination.name] = node

    @_guard
    def open_read(self, path: VirtualPath, offset: int) -> IReadFile:
        check_offset(offset)
        node = self._node(path)
        if node.directory:
            raise IsADirectory()
        stream = io.BytesIO(node.data)
        stream.seek(offset)
        return StreamingReader(stream.read, max(len(node.data) - offset, 0), self._reactor)

    @_guard
    def open_write(self, path: VirtualPath, mode: WriteMode, offset: int) -> IWriteFile:
        check_offset(offset)
        parent = self._parent(path)
        existing = parent.children.get(path.name)
        if existing is not None and existing.directory:
            raise IsADirectory()
        old = existing.data if existing is not None else b""
        initial = {
            WriteMode.TRUNCATE: b"",
            WriteMode.APPEND: old,
            WriteMode.OFFSET: old[:offset].ljust(offset, b"\0"),
        }[mode]

        def commit(data: bytes) -> None:
            # Look the directory up again: it may have been moved or removed
            # during the upload, and then the data must not vanish silently.
            parent = self._parent(path)
            current = parent.children.get(path.name)
            if current is not None and current.directory:
                raise IsADirectory()
            kept = current.permissions if current is not None else None
            parent.children[path.name] = _Node(False, data, self._now(), permissions=kept)

        return _MemoryWriter(commit, initial)

    @_guard
    def set_mtime(self, path: VirtualPath, mtime: float) -> None:
        self._parent(path)
        self._node(path).mtime = mtime

    @_guard
    def set_permissions(self, path: VirtualPath, mode: int) -> None:
        check_permissions(mode)
        self._parent(path)
        self._node(path).permissions = mode


@implementer(IStorageFactory)
class MemoryStorageFactory:
    """Gives every session a view of one shared L{MemoryStorage}."""

    def __init__(self, storage: MemoryStorage | None = None) -> None:
        self.storage = storage if storage is not None else MemoryStorage()

    def storage_for(self, session: Session) -> Deferred[IStorage]:
        view = self.storage
        if session.root is not None and not session.root.is_root:
            try:
                home = self.storage._node(session.root)
            except FTPError:
                home = None
            if home is None or not home.directory:
                return fail(FileNotFound("Home directory does not exist."))
            view = self.storage.view(session.root)
        return succeed(for_session(view, session))
