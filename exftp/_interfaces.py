"""
The two extension points of exftp: who may log in, and where files live.

Every method returns a L{Deferred}. Implementations are free to write them as
C{async def} and return C{Deferred.fromCoroutine(...)}.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from zope.interface import Attribute, Interface

from ._entries import FileInfo as FileInfo  # re-exported: where storages have always found them
from ._entries import FileKind as FileKind
from ._paths import VirtualPath

#: An IPv4 or IPv6 network, as in L{UserLimits.allow_from}.
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The fields of L{UserLimits} that are counts or sizes.
_LIMIT_NUMBERS = ("quota_bytes", "quota_files", "upload_rate", "download_rate", "max_sessions", "max_file_size")


@dataclass(frozen=True, slots=True)
class UserLimits:
    """
    What one user may use, for the core to enforce; C{None} or 0 means
    unlimited, and the default is unlimited everything.

    @ivar quota_bytes: the most bytes the user's root may hold.
    @ivar quota_files: the most files the user's root may hold.
    @ivar upload_rate: bytes per second for the user's uploads, all of the
        user's sessions together.
    @ivar download_rate: the same for downloads.
    @ivar max_sessions: how many sessions of the user may run at once.
    @ivar max_file_size: the largest single upload, in bytes.
    @ivar allow_from: the networks the user may log in from; empty for
        anywhere.
    @raise ValueError: for a negative number, or one that is not an integer.
    """

    quota_bytes: int | None = None
    quota_files: int | None = None
    upload_rate: int | None = None
    download_rate: int | None = None
    max_sessions: int | None = None
    max_file_size: int | None = None
    allow_from: tuple[IPNetwork, ...] = ()

    def __post_init__(self) -> None:
        for name in _LIMIT_NUMBERS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name}: expected a whole number >= 0, not {value!r}")
        if not isinstance(self.allow_from, tuple) or not all(
            isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network) for network in self.allow_from
        ):
            raise ValueError(f"allow_from: expected a tuple of ipaddress networks, not {self.allow_from!r}")

    @property
    def unlimited(self) -> bool:
        """Whether nothing at all is limited."""
        return not self.allow_from and not any(getattr(self, name) for name in _LIMIT_NUMBERS)


@dataclass(frozen=True, slots=True)
class Session:
    """
    The value an L{IAuthenticator} returns for a successful login.

    @ivar username: who logged in.
    @ivar root: a sub-directory of the storage that becomes this user's root,
        or C{None} for the whole storage.
    @ivar read_only: whether the user may only read.
    @ivar permissions: what the user may do, as pyftpdlib's letters
        (C{e} cwd, C{l} list, C{r} retrieve, C{a} append, C{d} delete,
        C{f} rename, C{m} mkdir, C{w} store, C{M} chmod, C{T} set mtime),
        or C{None} for everything.
    @ivar attributes: anything else the authenticator wants to keep with the
        session (tokens for re-validation, permissions, quotas); kept out of
        C{repr()} since it may hold credentials. Mutable holders placed here
        are how an authenticator keeps per-session state (the session itself
        is frozen and not hashable).
    @ivar limits: the user's quotas, rates and other limits (unlimited by
        default), which the core enforces.
    """

    username: str
    root: VirtualPath | None = None
    read_only: bool = False
    permissions: frozenset[str] | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict, repr=False)
    limits: UserLimits = field(default_factory=UserLimits)


class IAuthenticator(Interface):
    """
    Decides who may log in.

    Implementations must not cache results across sessions by user name
    alone: each session carries its own credentials in its L{Session}.
    """

    def valid_user(username: str) -> Deferred[bool]:
        """
        Cheap check whether C{username} can possibly log in.

        The client is never told the answer (USER always gets 331); a
        C{False} only lets the server refuse PASS without further work.
        """

    def login(username: str, password: str) -> Deferred[Session]:
        """
        Check the credentials.

        @return: a Deferred firing with the session value, or failing with
            L{exftp.LoginFailed} (or any error, which also refuses the login
            and counts as a failed login), or with
            L{exftp.AuthenticationUnavailable} (any server-side L{exftp.FTPError})
            when the credentials cannot be checked now: answered 421, never
            counted as a failed login or toward a ban.
        """

    def authenticated(session: Session) -> Deferred[bool]:
        """
        Re-validate a session that logged in earlier; C{False} ends it. A
        server-side L{exftp.FTPError} (such as L{exftp.AuthenticationUnavailable})
        means "cannot say now": the session goes on and the failure is logged.
        """


class IReadFile(Interface):
    """A file opened for reading at some offset."""

    size = Attribute("The number of bytes that L{send} will write, or None if unknown.")

    def send(consumer: IConsumer) -> Deferred[int]:
        """
        Stream the contents into C{consumer} with backpressure.

        The file registers itself as a streaming producer of C{consumer}, stops
        writing while paused, and unregisters when done. If the consumer calls
        C{stopProducing} the Deferred fails.

        @return: a Deferred firing with the number of bytes written.
        """

    def close() -> Deferred[None]:
        """Release the file; safe to call more than once and at any time."""


class IFileDescriptorSource(Interface):
    """
    An L{IReadFile} whose bytes are a regular file from C{offset} to its end,
    so that a plain TCP data connection can send it with C{os.sendfile}.
    """

    offset = Attribute("Where in the file the transfer starts.")

    def fileno() -> int:
        """The file's descriptor, open for reading until L{IReadFile.close}."""


class IWriteFile(IConsumer):
    """
    A file opened for writing: a consumer of the uploaded bytes.

    The storage may pause the registered producer (the data connection) when
    it cannot keep up. Nothing is visible under the target name until
    L{finish} has succeeded.
    """

    def finish() -> Deferred[None]:
        """
        Commit the upload: flush, make durable, then make it visible.

        @return: a Deferred firing once the data is durably stored.
        """

    def abort() -> Deferred[None]:
        """Discard the upload; the target keeps its previous content, if any."""


class WriteMode(enum.Enum):
    """How L{IStorage.open_write} treats existing content."""

    TRUNCATE = "truncate"
    APPEND = "append"
    OFFSET = "offset"


class IStorage(Interface):
    """
    One user's view of a file tree.

    Paths are L{VirtualPath} values, absolute within the view and already
    free of C{..}. Failures are L{exftp.FTPError} subclasses such as
    L{exftp.FileNotFound} or L{exftp.PermissionDenied}.
    """

    def stat(path: VirtualPath) -> Deferred[FileInfo]:
        """Describe one entry (the root included)."""

    def list(path: VirtualPath) -> Deferred[Sequence[FileInfo]]:
        """List a directory's entries, without C{.} and C{..}."""

    def make_directory(path: VirtualPath) -> Deferred[None]:
        """Create a directory; its parent must exist."""

    def remove_directory(path: VirtualPath) -> Deferred[None]:
        """Remove an empty directory; fail with L{exftp.DirectoryNotEmpty} otherwise."""

    def remove_file(path: VirtualPath) -> Deferred[None]:
        """Delete a file."""

    def rename(source: VirtualPath, destination: VirtualPath) -> Deferred[None]:
        """Rename a file or directory, replacing a destination file."""

    def open_read(path: VirtualPath, offset: int) -> Deferred[IReadFile]:
        """Open a file for reading, starting at byte C{offset}."""

    def open_write(path: VirtualPath, mode: WriteMode, offset: int) -> Deferred[IWriteFile]:
        """
        Open a file for writing.

        @param mode: replace the content, append to it, or write from
            C{offset} (keeping the bytes before it).
        """


class IStorageMetadata(Interface):
    """
    Optional: a storage that can change an entry's metadata (MFMT, SITE CHMOD).

    The protocol offers those commands only for storages that provide it.
    """

    def set_mtime(path: VirtualPath, mtime: float) -> Deferred[None]:
        """Set the modification time (seconds since the epoch, UTC)."""

    def set_permissions(path: VirtualPath, mode: int) -> Deferred[None]:
        """Set the POSIX permission bits (e.g. C{0o644})."""


class IPagedListing(Interface):
    """
    Optional: a storage that lists big directories a page at a time (an
    object store's paginated listing), so that a LIST of a huge directory
    streams to the client instead of being held in memory whole.
    """

    def list_pages(path: VirtualPath) -> AsyncIterator[Sequence[FileInfo]]:
        """
        The entries of the directory C{path}, page by page, in the order
        they should be listed; C{..} and C{.} excluded.

        Iterating fails like L{IStorage.list} (e.g. L{exftp.FileNotFound}).
        """


class IStorageFactory(Interface):
    """Gives each logged-in session its own L{IStorage}."""

    def storage_for(session: Session) -> Deferred[IStorage]:
        """Build the storage view for C{session} (its root, its permissions)."""
