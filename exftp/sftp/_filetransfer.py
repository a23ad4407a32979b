"""
The SFTP subsystem: Conch's L{ISFTPServer} over one user's L{IStorage}.

Every request is checked against the user's permission letters (the same
table FTP uses) and re-validates the session before the storage is called.
Errors become SFTP status codes with the storage's message. The user's
limits apply as for FTP (L{exftp._limits}): uploads within the largest file
size and the quota, and replies paced to the user's rates.
"""

from __future__ import annotations

import stat as stat_module
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, Protocol, TypeVar

from twisted.conch.interfaces import ISFTPFile, ISFTPServer
from twisted.conch.ssh.common import getNS
from twisted.conch.ssh.filetransfer import (
    FX_FAILURE,
    FX_FILE_ALREADY_EXISTS,
    FX_NO_SUCH_FILE,
    FX_OK,
    FX_OP_UNSUPPORTED,
    FX_PERMISSION_DENIED,
    FXF_APPEND,
    FXF_CREAT,
    FXF_EXCL,
    FXF_READ,
    FXF_TRUNC,
    FXF_WRITE,
    FXP_EXTENDED_REPLY,
    FileTransferBase,
    FileTransferServer,
    SFTPError,
)
from twisted.internet.defer import CancelledError, Deferred, DeferredLock, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .._errors import (
    AlreadyExists,
    FileNotFound,
    FTPError,
    NotImplementedCommand,
    ParameterNotSupported,
    PermissionDenied,
)
from .._events import Action
from .._interfaces import FileInfo, FileKind, IStorage, IStorageMetadata, IWriteFile, Session, WriteMode
from .._limits import SessionLimits, UploadGuard
from .._paths import VirtualPath
from ..storage._readonly import refusal
from ._quiet import QUIET
from ._streams import OrderedWriter, ReadAhead

_log = Logger(namespace="exftp")
_DONE = Failure(ConnectionDone())
_T = TypeVar("_T")

#: The largest READ answered in full, and the largest WRITE (limits@openssh.com). Reads stay
#: small: answers wait in Conch's channel buffer, which grows by concatenation, for the client's
#: window (64 KiB reads moved 100 MB 1.5-2x faster than 256 KiB ones, with less buffered).
MAX_READ = 64 * 1024
MAX_WRITE = 256 * 1024
#: The largest SFTP packet accepted (OpenSSH's own limit); a client announcing more is disconnected.
MAX_PACKET = 256 * 1024 + 1024
#: Files and directories one SFTP session may hold open at once (each may buffer a window).
MAX_HANDLES = 32
#: Permission letters (pyftpdlib's, as for FTP) and what they allow, for refusals.
_LETTERS = {
    "r": "download", "w": "upload", "a": "append", "d": "delete", "f": "rename",
    "m": "create directories", "l": "list directories", "T": "change modification times",
    "M": "change permissions",
}
_TYPE_BITS = {FileKind.FILE: stat_module.S_IFREG, FileKind.DIRECTORY: stat_module.S_IFDIR,
              FileKind.SYMLINK: stat_module.S_IFLNK}
_SIX_MONTHS = 182 * 24 * 3600


class Context(Protocol):
    """What the subsystem needs from its logged-in connection."""

    session: Session
    storage: IStorage
    peer_host: str | None
    #: The user's admitted limits, or C{None} (nothing limited).
    limits: SessionLimits | None
    #: An L{IReactorTime}, to pace replies to the user's rates.
    clock: Any

    def emit(self, action: Action, ok: bool, reply: int, **details: Any) -> None:
        """Tell the event observers what the session did."""

    @property
    def pending(self) -> list[Deferred[Any]]:
        """Clean-ups the connection's end waits for (aborted uploads)."""

    async def still_valid(self) -> bool:
        """Re-validate the session; C{False} once it has been ended."""

    def hold_reading(self, seconds: float) -> None:
        """Read nothing more from the client for C{seconds} (it sends faster than the user's upload rate)."""

    def seconds(self) -> float:
        """The reactor's time."""


def attributes(info: FileInfo) -> dict[str, int]:
    """The SFTP attributes of an entry."""
    mtime = int(info.mtime)
    return {
        "size": info.size,
        "permissions": _TYPE_BITS[info.kind] | (info.permissions & 0o7777),
        "atime": mtime,
        "mtime": mtime,
    }


def long_name(info: FileInfo, now: float) -> str:
    """An C{ls -l} line for READDIR (what OpenSSH's C{ls -l} shows)."""
    mode = stat_module.filemode(_TYPE_BITS[info.kind] | (info.permissions & 0o7777))
    when = time.gmtime(info.mtime)
    recent = now - _SIX_MONTHS < info.mtime <= now + 3600
    stamp = time.strftime("%b %d %H:%M" if recent else "%b %d  %Y", when)
    return f"{mode} {info.links:4d} {info.owner:<8} {info.group:<8} {info.size:8d} {stamp} {info.name}"


def _status(error: FTPError) -> SFTPError:
    """The SFTP status for an exftp error."""
    if isinstance(error, FileNotFound):
        code = FX_NO_SUCH_FILE
    elif isinstance(error, PermissionDenied):
        code = FX_PERMISSION_DENIED
    elif isinstance(error, AlreadyExists):
        code = FX_FILE_ALREADY_EXISTS
    elif isinstance(error, NotImplementedCommand | ParameterNotSupported):
        code = FX_OP_UNSUPPORTED
    else:
        code = FX_FAILURE
    return SFTPError(code, error.message)


async def _answered(what: str, work: Awaitable[_T]) -> _T:
    """Await C{work}, turning exftp errors into SFTP statuses (unexpected ones logged)."""
    try:
        return await work
    except (SFTPError, EOFError, CancelledError):
        raise
    except FTPError as error:
        if not error.client_fault:
            _log.warn("SFTP {what} failed: {why}", what=what, why=error.message)
        raise _status(error) from None
    except Exception:
        _log.failure("SFTP {what} failed", what=what)
        raise SFTPError(FX_FAILURE, "Local error in processing.") from None


def _deferred(what: str, coroutine: Coroutine[Any, Any, _T]) -> Deferred[_T]:
    return Deferred.fromCoroutine(_answered(what, coroutine))


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SFTPError(FX_FAILURE, "File names must be UTF-8.") from None


@implementer(ISFTPFile)
class _ReadFile:
    """A file opened for reading."""

    def __init__(self, server: SFTPServer, path: VirtualPath) -> None:
        self.server = server
        self.path = path
        self.started = server.context.seconds()
        self.reader = ReadAhead(lambda offset: maybeDeferred(server.context.storage.open_read, path, offset))
        self.closed = False

    def readChunk(self, offset: int, length: int) -> Deferred[bytes]:
        async def read() -> bytes:
            data = await self.reader.read(offset, min(length, MAX_READ))
            if not data:
                raise EOFError()
            await self.server.paced(False, len(data))
            return data

        return _deferred("read", read())

    def writeChunk(self, offset: int, data: bytes) -> None:
        raise SFTPError(FX_PERMISSION_DENIED, "File not open for writing.")

    def getAttrs(self) -> Deferred[dict[str, int]]:
        return self.server.getAttrs(str(self.path).encode(), True)

    def setAttrs(self, attrs: dict[str, Any]) -> Deferred[None]:
        return self.server.setAttrs(str(self.path).encode(), attrs)

    def close(self) -> Deferred[None]:
        async def close() -> None:
            if self.closed:
                return
            self.closed = True
            await self.reader.close()
            self.server.transferred(Action.DOWNLOAD, self.path, self.reader.sent, self.started, True)

        return _deferred("close", close())

    def abort(self) -> Deferred[None]:
        """The connection is gone: release the file."""
        return self.close()


@implementer(ISFTPFile)
class _WriteFile:
    """
    A file opened for writing: visible under its name only once closed
    successfully. The upload is opened at the first write (or at once when
    truncating), so that a resumed upload starts at the offset it names.
    """

    def __init__(self, server: SFTPServer, path: VirtualPath, mode: WriteMode, existed: bool) -> None:
        self.server = server
        self.path = path
        self.mode = mode
        self.existed = existed
        self._opening = DeferredLock()
        self.started = server.context.seconds()
        self.writer: OrderedWriter | None = None
        self.failed = False
        #: Why the user's limits refused the upload (past the largest file size or the quota).
        self.refusal: FTPError | None = None
        self.done = False
        #: Attributes set on the handle, applied once the upload is stored.
        self.attributes: dict[str, Any] = {}

    async def open(self, offset: int) -> OrderedWriter:
        """Open the upload, writing from C{offset}."""
        mode = self.mode
        if mode is WriteMode.OFFSET and offset == 0:
            mode = WriteMode.TRUNCATE
        target = await self.server.limited_upload(self.path, mode, offset)
        self.writer = OrderedWriter(target, 0 if mode is WriteMode.APPEND else offset)
        return self.writer

    def writeChunk(self, offset: int, data: bytes) -> Deferred[None]:
        async def write() -> None:
            if self.done or self.failed:
                raise SFTPError(FX_FAILURE, "The upload has failed or is closed.")
            writer = self.writer or await self._first_write(offset)
            # Appends ignore offsets, as POSIX O_APPEND.
            offset_in = writer.position if self.mode is WriteMode.APPEND else offset
            try:
                await writer.write(offset_in, data)
            except Exception:
                self.failed = True
                raise
            self._check_limits(writer.target)
            await self.server.paced(True, len(data))

        return _deferred("write", write())

    def _check_limits(self, target: IWriteFile) -> None:
        """Fail the upload once its guard refused bytes (the file would pass the user's limits)."""
        if isinstance(target, UploadGuard) and target.error is not None:
            self.failed = True
            if self.refusal is None:
                self.refusal = target.error
                _log.info("Upload of {path} by {user} over SFTP refused: {why}", path=str(self.path),
                          user=self.server.context.session.username, why=target.error.message)
            raise _status(target.error)

    async def _first_write(self, offset: int) -> OrderedWriter:
        """Open the upload at the first write's offset (the writes behind it wait)."""
        await self._opening.acquire()
        try:
            return self.writer or await self.open(offset)
        finally:
            self._opening.release()

    def readChunk(self, offset: int, length: int) -> None:
        raise SFTPError(FX_PERMISSION_DENIED, "File not open for reading.")

    def getAttrs(self) -> dict[str, int]:
        size = self.writer.position if self.writer is not None else 0
        return {"size": size, "permissions": stat_module.S_IFREG | 0o644}

    def setAttrs(self, attrs: dict[str, Any]) -> Deferred[None]:
        """Checked now, applied once the upload is stored (the name does not exist before)."""

        async def record() -> None:
            await self.server.check_attributes(attrs)
            size = self.writer.position if self.writer is not None else 0
            if "size" in attrs and attrs["size"] != size:
                raise SFTPError(FX_OP_UNSUPPORTED, "Changing a file's size is not supported.")
            self.attributes.update(attrs)

        return _deferred("fsetstat", record())

    def close(self) -> Deferred[None]:
        return _deferred("close", self._close())

    async def _close(self) -> None:
        if self.done:
            return
        self.done = True
        writer = self.writer
        if writer is None:
            if self.failed or self.existed:
                return  # nothing written: an existing file keeps its content (a resumed upload already complete)
            writer = await self.open(0)  # created empty
        gap = writer.gap()
        if self.failed or gap is not None:
            await writer.target.abort()
            refused = None if self.refusal is None else int(self.refusal.reply)
            self.server.transferred(Action.UPLOAD, self.path, writer.written, self.started, False, refused)
            if self.refusal is not None:
                raise SFTPError(FX_FAILURE, f"Upload not stored: {self.refusal.message}")
            why = f"bytes from offset {gap} never arrived" if gap is not None else "a write failed"
            raise SFTPError(FX_FAILURE, f"Upload not stored: {why}.")
        try:
            await writer.target.finish()
        except BaseException:
            self.server.transferred(Action.UPLOAD, self.path, writer.written, self.started, False)
            await writer.target.abort()
            raise
        self.server.transferred(Action.UPLOAD, self.path, writer.written, self.started, True)
        if self.attributes:
            await self.server.apply_attributes(self.path, self.attributes)

    async def _abort(self) -> None:
        if self.done:
            return
        self.done = True
        if self.writer is not None:
            await self.writer.target.abort()
            self.server.transferred(Action.UPLOAD, self.path, self.writer.written, self.started, False)
        _log.info("Upload of {path} by {user} discarded: the connection ended before the file was closed",
                  path=str(self.path), user=self.server.context.session.username)

    def abort(self) -> Deferred[None]:
        """The connection is gone before CLOSE: discard the upload."""
        return _deferred("abort", self._abort())


class _Directory:
    """An opened directory: its entries, read at OPENDIR."""

    def __init__(self, entries: list[tuple[bytes, bytes, dict[str, int]]]) -> None:
        self.entries = entries

    def __iter__(self) -> Iterator[tuple[bytes, bytes, dict[str, int]]]:
        return iter(self.entries)

    def close(self) -> None:
        self.entries = []


@implementer(ISFTPServer)
class SFTPServer:
    """
    One SFTP session's requests, on the user's storage.

    @ivar context: the logged-in connection.
    """

    def __init__(self, context: Context) -> None:
        self.context = context
        self.avatar = context
        #: Replies held back for the user's rates, cancelled when the subsystem ends.
        self._pacing: set[Deferred[None]] = set()

    # Helpers

    async def _allowed(self, letter: str) -> None:
        """Re-validate the session, then check permission C{letter}."""
        if not await self.context.still_valid():
            raise SFTPError(FX_PERMISSION_DENIED, "Session is no longer valid.")
        denied = refusal(self.context.session, letter, _LETTERS[letter])
        if denied is not None:
            raise _status(denied)

    def _path(self, raw: bytes) -> VirtualPath:
        try:
            return VirtualPath.root().resolve(_text(raw))
        except FTPError as error:
            raise _status(error) from None

    def _call(self, what: str, letter: str, work: Callable[[], Awaitable[_T]]) -> Deferred[_T]:
        async def run() -> _T:
            await self._allowed(letter)
            return await work()

        return _deferred(what, run())

    async def _acting(self, action: Action, path: VirtualPath, call: Callable[[], Deferred[Any]],
                      destination: VirtualPath | None = None) -> None:
        """Run a change and emit its event, whether it worked or not."""
        target = None if destination is None else str(destination)
        try:
            await maybeDeferred(call)
        except FTPError as error:
            self.context.emit(action, False, int(error.reply), path=str(path), destination=target)
            raise
        self.context.emit(action, True, 250, path=str(path), destination=target)

    # Per-user limits (the core's, as for FTP)

    async def limited_upload(self, path: VirtualPath, mode: WriteMode, offset: int) -> IWriteFile:
        """
        Open C{path} for writing within the user's largest file size and
        quota: refused at once (C{SSH_FX_FAILURE}, the core's 552 message)
        when it cannot fit, else guarded so that the write that would pass
        a limit fails and the upload is discarded.
        """
        limits, storage = self.context.limits, self.context.storage
        plan = None if limits is None else await limits.guard(storage, path, mode, offset)
        target: IWriteFile = await maybeDeferred(storage.open_write, path, mode, offset)
        return target if plan is None else plan.wrap(target)

    async def paced(self, upload: bool, size: int) -> None:
        """
        Count C{size} bytes moved against the user's rate for that direction
        (shared with the user's FTP sessions), and hold the reply back as
        long as the rate asks: the client, which waits for replies, slows
        down. An upload also stops reading the connection meanwhile, so that
        a client with more writes in flight than the rate needs cannot pass it.
        """
        limits = self.context.limits
        limiter = None if limits is None else limits.rate(upload)
        wait = 0.0 if limiter is None else limiter.take(size)
        if wait <= 0:
            return
        if upload:
            self.context.hold_reading(wait)
        delay: Deferred[None] = deferLater(self.context.clock, wait, lambda: None)
        self._pacing.add(delay)
        try:
            await delay
        finally:
            self._pacing.discard(delay)

    def stop_pacing(self) -> None:
        """The subsystem ended: drop the replies held back (their requests fail, unanswered)."""
        for delay in list(self._pacing):
            delay.cancel()

    def _changed(self) -> None:
        """Files were removed or replaced outside an upload: the quota's usage is computed again."""
        if self.context.limits is not None:
            self.context.limits.changed()

    def transferred(self, action: Action, path: VirtualPath, size: int, started: float, ok: bool,
                    reply: int | None = None) -> None:
        """Log and emit the end of an upload or download (C{reply}: FTP's code for a refusal, else 226 or 426)."""
        seconds = self.context.seconds() - started
        if ok:
            _log.info("{user} {verb} {path} over SFTP: {bytes} bytes in {seconds:.3f}s",
                      user=self.context.session.username,
                      verb="uploaded" if action is Action.UPLOAD else "downloaded",
                      path=str(path), bytes=size, seconds=seconds)
        self.context.emit(action, ok, reply or (226 if ok else 426), path=str(path), bytes=size, seconds=seconds)

    # ISFTPServer

    def gotVersion(self, otherVersion: int, extData: dict[bytes, bytes]) -> dict[bytes, bytes]:
        return {
            b"posix-rename@openssh.com": b"1",
            b"statvfs@openssh.com": b"2",
            b"fsync@openssh.com": b"1",
            b"limits@openssh.com": b"1",
        }

    def openFile(self, filename: bytes, flags: int, attrs: dict[str, Any]) -> Deferred[ISFTPFile]:
        path = self._path(filename)
        if flags & FXF_READ and flags & FXF_WRITE:
            raise SFTPError(FX_OP_UNSUPPORTED, "Opening a file for reading and writing at once is not supported.")
        if flags & FXF_WRITE:
            return self._open_write(path, flags)
        return self._call("open", "r", lambda: self._open_read(path))

    async def _open_read(self, path: VirtualPath) -> ISFTPFile:
        info = await maybeDeferred(self.context.storage.stat, path)
        if info.is_directory:
            raise SFTPError(FX_FAILURE, "Is a directory.")
        return _ReadFile(self, path)

    def _open_write(self, path: VirtualPath, flags: int) -> Deferred[ISFTPFile]:
        if flags & FXF_APPEND:
            mode, letter = WriteMode.APPEND, "a"
        elif flags & FXF_TRUNC:
            mode, letter = WriteMode.TRUNCATE, "w"
        else:
            mode, letter = WriteMode.OFFSET, "w"

        async def open_write() -> ISFTPFile:
            exists = await self._exists(path)
            if exists and flags & FXF_CREAT and flags & FXF_EXCL:
                raise SFTPError(FX_FILE_ALREADY_EXISTS, "File exists.")
            if not exists and not flags & FXF_CREAT:
                raise SFTPError(FX_NO_SUCH_FILE, "No such file.")
            upload = _WriteFile(self, path, mode, exists)
            if mode is not WriteMode.OFFSET:
                await upload.open(0)
            return upload

        return self._call("open", letter, open_write)

    async def _exists(self, path: VirtualPath) -> bool:
        try:
            info = await maybeDeferred(self.context.storage.stat, path)
        except FileNotFound:
            return False
        if info.is_directory:
            raise SFTPError(FX_FAILURE, "Is a directory.")
        return True

    def removeFile(self, filename: bytes) -> Deferred[None]:
        path = self._path(filename)
        storage = self.context.storage

        async def remove() -> None:
            await self._acting(Action.DELETE, path, lambda: storage.remove_file(path))
            self._changed()

        return self._call("remove", "d", remove)

    def renameFile(self, oldpath: bytes, newpath: bytes) -> Deferred[None]:
        source, destination = self._path(oldpath), self._path(newpath)
        return self._call("rename", "f", lambda: self._rename(source, destination, replace=False))

    async def _rename(self, source: VirtualPath, destination: VirtualPath, replace: bool) -> None:
        if not replace and await self._present(destination):
            # SFTP v3 RENAME does not replace (OpenSSH's server refuses too);
            # posix-rename@openssh.com does.
            raise SFTPError(FX_FAILURE, "Destination exists.")
        storage = self.context.storage
        await self._acting(Action.RENAME, source, lambda: storage.rename(source, destination), destination)
        if replace:
            self._changed()  # a replaced file's bytes are gone

    async def _present(self, path: VirtualPath) -> bool:
        try:
            await maybeDeferred(self.context.storage.stat, path)
        except FileNotFound:
            return False
        return True

    def makeDirectory(self, path: bytes, attrs: dict[str, Any]) -> Deferred[None]:
        target = self._path(path)
        storage = self.context.storage
        return self._call("mkdir", "m",
                          lambda: self._acting(Action.MKDIR, target, lambda: storage.make_directory(target)))

    def removeDirectory(self, path: bytes) -> Deferred[None]:
        target = self._path(path)
        storage = self.context.storage
        return self._call("rmdir", "d",
                          lambda: self._acting(Action.RMDIR, target, lambda: storage.remove_directory(target)))

    def openDirectory(self, path: bytes) -> Deferred[_Directory]:
        target = self._path(path)

        async def listing() -> _Directory:
            storage = self.context.storage
            info = await maybeDeferred(storage.stat, target)
            if not info.is_directory:
                raise SFTPError(FX_FAILURE, "Not a directory.")
            entries = await maybeDeferred(storage.list, target)
            now = self.context.seconds()
            return _Directory([(entry.name.encode("utf-8", "surrogateescape"),
                                long_name(entry, now).encode("utf-8", "surrogateescape"),
                                attributes(entry)) for entry in entries])

        return self._call("opendir", "l", listing)

    def getAttrs(self, path: bytes, followLinks: bool) -> Deferred[dict[str, int]]:
        target = self._path(path)

        async def stat() -> dict[str, int]:
            return attributes(await maybeDeferred(self.context.storage.stat, target))

        return self._call("stat", "l", stat)

    def setAttrs(self, path: bytes, attrs: dict[str, Any]) -> Deferred[None]:
        target = self._path(path)
        return _deferred("setstat", self._set_attributes(target, attrs))

    async def _set_attributes(self, path: VirtualPath, attrs: dict[str, Any], size: int | None = None) -> None:
        """
        Set C{attrs} on C{path}; a size only "changes" to the size the file
        has (C{size}, or the stored one).
        """
        await self.check_attributes(attrs)
        if "size" in attrs:
            if size is None:
                await self._allowed("l")
                size = (await maybeDeferred(self.context.storage.stat, path)).size
            if size != attrs["size"]:
                raise SFTPError(FX_OP_UNSUPPORTED, "Changing a file's size is not supported.")
        await self.apply_attributes(path, attrs)

    async def check_attributes(self, attrs: dict[str, Any]) -> None:
        """
        Refuse attributes that cannot be set, or that the user may not set.
        On a storage that keeps no permissions, every file shows C{0644}:
        "setting" that (as C{scp} does after an upload) changes nothing and
        is accepted, and removed from C{attrs}.
        """
        if not IStorageMetadata.providedBy(self.context.storage) and attrs.get("permissions", 0) & 0o7777 == 0o644:
            del attrs["permissions"]
        unsupported = sorted(set(attrs) - {"size", "permissions", "atime", "mtime"})
        if unsupported:
            raise SFTPError(FX_OP_UNSUPPORTED, f"Setting {', '.join(unsupported)} is not supported.")
        metadata = [("permissions", "M"), ("mtime", "T")]
        if any(name in attrs for name, _ in metadata) and not IStorageMetadata.providedBy(self.context.storage):
            raise SFTPError(FX_OP_UNSUPPORTED, "This storage keeps no modification times or permissions.")
        for name, letter in metadata:
            if name in attrs:
                await self._allowed(letter)

    async def apply_attributes(self, path: VirtualPath, attrs: dict[str, Any]) -> None:
        """Set the permissions and modification time in C{attrs} (already checked)."""
        metadata: Any = self.context.storage
        if "permissions" in attrs:
            wanted = attrs["permissions"] & 0o7777
            current: FileInfo = await maybeDeferred(metadata.stat, path)
            if current.permissions & 0o7777 != wanted:  # the same mode is no change (S3 shows 0644 always)
                await maybeDeferred(metadata.set_permissions, path, wanted)
        if "mtime" in attrs:
            await maybeDeferred(metadata.set_mtime, path, float(attrs["mtime"]))

    def readLink(self, path: bytes) -> None:
        raise SFTPError(FX_OP_UNSUPPORTED, "Symbolic links are not supported.")

    def makeLink(self, linkPath: bytes, targetPath: bytes) -> None:
        raise SFTPError(FX_OP_UNSUPPORTED, "Symbolic links are not supported.")

    def realPath(self, path: bytes) -> bytes:
        return str(self._path(path)).encode("utf-8")

    def extendedRequest(self, extendedName: bytes, extendedData: bytes) -> Deferred[bytes | None]:
        if extendedName == b"posix-rename@openssh.com":
            old, new = getNS(extendedData, 2)[:2]
            source, destination = self._path(old), self._path(new)
            return self._call("rename", "f", lambda: self._none(self._rename(source, destination, replace=True)))
        if extendedName == b"statvfs@openssh.com":
            path = self._path(getNS(extendedData)[0])
            return self._call("statvfs", "l", lambda: self._statvfs(path))
        if extendedName == b"limits@openssh.com":
            return _deferred("limits", self._limits())
        if extendedName == b"hardlink@openssh.com":
            raise SFTPError(FX_OP_UNSUPPORTED, "Hard links are not supported.")
        raise SFTPError(FX_OP_UNSUPPORTED, f"Extension {extendedName.decode('ascii', 'replace')} not supported.")

    @staticmethod
    async def _none(work: Awaitable[None]) -> bytes | None:
        await work
        return None

    async def _limits(self) -> bytes:
        # max packet length, max read, max write, max open handles
        return struct.pack(">4Q", MAX_PACKET, MAX_READ, MAX_WRITE, MAX_HANDLES)

    async def _statvfs(self, path: VirtualPath) -> bytes:
        await maybeDeferred(self.context.storage.stat, path)
        block = 4096
        quota = self.context.session.limits.quota_bytes
        # Usage is not known here: a quota shows as the file system's size;
        # without one, a size so large that no client worries about space.
        blocks = (quota // block) if quota else 2**40 // block
        files = self.context.session.limits.quota_files or 2**32
        fields = (block, block, blocks, blocks, blocks, files, files, files, 0, 0, 255)
        return struct.pack(">11Q", *fields)


class FileTransfer(FileTransferServer):  # type: ignore[misc]
    """
    Conch's SFTP protocol, with what OpenSSH clients need beside it:
    extensions answered with a status (posix-rename, fsync), and uploads
    that a lost connection discards instead of committing.
    """

    _log = QUIET

    def __init__(self, data: bytes | None = None, avatar: Any = None) -> None:
        FileTransferBase.__init__(self)
        self.server = self.client = SFTPServer(avatar)
        self.avatar = avatar
        self.openFiles: dict[bytes, Any] = {}
        self.openDirs: dict[bytes, Any] = {}
        avatar.transfers.add(self)

    def dataReceived(self, data: bytes) -> None:
        """
        Conch's framing, with a bound: a packet that announces more than
        L{MAX_PACKET} bytes ends the subsystem instead of being buffered.
        """
        FileTransferServer.dataReceived(self, data)
        if len(self.buf) >= 4 and struct.unpack("!L", self.buf[:4])[0] > MAX_PACKET:
            _log.warn("SFTP packet of {size} bytes from {user!r} refused; closing the session",
                      size=struct.unpack("!L", self.buf[:4])[0], user=self.avatar.session.username)
            self.buf = b""
            transport: Any = self.transport
            transport.loseConnection()

    def _handles_left(self, request_id: bytes) -> bool:
        """Whether another file or directory may be opened; else refuse the request."""
        if len(self.openFiles) + len(self.openDirs) < MAX_HANDLES:
            return True
        self._sendStatus(request_id, FX_FAILURE, f"Too many open files (at most {MAX_HANDLES}).".encode())
        return False

    def packet_OPEN(self, data: bytes) -> None:
        if self._handles_left(data[:4]):
            FileTransferServer.packet_OPEN(self, data)

    def packet_OPENDIR(self, data: bytes) -> None:
        if self._handles_left(data[:4]):
            FileTransferServer.packet_OPENDIR(self, data)

    def packet_WRITE(self, data: bytes) -> None:
        """
        Conch's WRITE, tolerating bytes after the data as OpenSSH's server
        does (rclone's SFTP library sends the last write of a file in a
        packet padded to the full size).
        """
        request_id = data[:4]
        handle, rest = getNS(data[4:])
        (offset,) = struct.unpack("!Q", rest[:8])
        chunk = getNS(rest[8:])[0]
        if handle not in self.openFiles:
            self._sendStatus(request_id, FX_FAILURE, b"No such handle.")
            return
        writing = maybeDeferred(self.openFiles[handle].writeChunk, offset, chunk)
        writing.addCallback(self._cbStatus, request_id, b"write succeeded")
        writing.addErrback(self._ebStatus, request_id, b"write failed")

    def packet_EXTENDED(self, data: bytes) -> None:
        request_id = data[:4]
        name, rest = getNS(data[4:])
        if name == b"fsync@openssh.com":
            handle = getNS(rest)[0]
            if handle in self.openFiles:
                # Uploads become durable when closed; there is nothing to flush before.
                self._sendStatus(request_id, FX_OK, b"fsync succeeded")
            else:
                self._sendStatus(request_id, FX_FAILURE, b"No such handle.")
            return
        running = maybeDeferred(self.client.extendedRequest, name, rest)
        running.addCallback(self._extended_done, request_id)
        running.addErrback(self._ebStatus, request_id, b"extended " + name + b" failed")

    def _extended_done(self, result: bytes | None, request_id: bytes) -> None:
        if result is None:
            self._sendStatus(request_id, FX_OK, b"request succeeded")
        else:
            self.sendPacket(FXP_EXTENDED_REPLY, request_id + result)

    def connectionLost(self, reason: Failure = _DONE) -> None:
        files = list(self.openFiles.values())
        self.openFiles = {}
        for handle in files:
            aborting = handle.abort()
            aborting.addErrback(lambda failure: _log.failure("Releasing a file failed", failure))
            self.avatar.pending.append(aborting)
        self.avatar.transfers.discard(self)
        self.server.stop_pacing()
        FileTransferServer.connectionLost(self, reason)

