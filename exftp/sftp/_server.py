"""
The SSH server: Conch's transport, authentication and connection services,
with one session channel that offers only the C{sftp} subsystem.

SSH connections register with the server's L{exftp.FTPFactory} like FTP
control connections, so that the session limits, bans, login deadline,
idle timeout and shutdown apply to both protocols alike.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twisted.conch.avatar import ConchUser
from twisted.conch.ssh import connection, factory, session, transport
from twisted.conch.ssh.keys import Key
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._events import Action, FTPEvent
from .._limits import SessionLimits
from .._login import still_valid
from .._proxy import unmapped
from .._replies import Reply
from ._auth import Checker, LoggedIn, Realm, UserAuth
from ._filetransfer import FileTransfer
from ._quiet import QUIET

if TYPE_CHECKING:  # the FTP factory is only the policy's holder here: no FTP code is used
    from .._factory import FTPFactory

_log = Logger(namespace="exftp")
#: RFC 4253 11.1 disconnect reasons.
_TOO_MANY_CONNECTIONS = 12
_BY_APPLICATION = 11


class _Session(session.SSHSession):  # type: ignore[misc]
    """A session channel for the C{sftp} subsystem only: shells, commands, terminals and forwarding are refused."""

    _log = QUIET

    def _refuse(self, what: str) -> int:
        user: Any = self.avatar
        _log.info("Refused {what} for {user!r}: only the sftp subsystem is offered", what=what,
                  user=user.session.username)
        return 0

    def request_shell(self, data: bytes) -> int:
        return self._refuse("a shell")

    def request_exec(self, data: bytes) -> int:
        return self._refuse("a command")

    def request_pty_req(self, data: bytes) -> int:
        return self._refuse("a terminal")

    def request_x11_req(self, data: bytes) -> int:
        return self._refuse("X11 forwarding")

    def request_auth_agent_req_openssh_com(self, data: bytes) -> int:
        return self._refuse("agent forwarding")

    def request_env(self, data: bytes) -> int:
        return 0

    def eofReceived(self) -> None:
        """
        The client is done: report the subsystem's success (C{exit-status 0};
        C{scp} fails without it) and close the channel.
        """
        if self.client is not None and self.conn is not None:
            self.conn.sendRequest(self, b"exit-status", struct.pack(">L", 0))
            self.conn.sendClose(self)
            return
        super().eofReceived()

    def request_window_change(self, data: bytes) -> int:
        return 0


class SFTPUser(ConchUser):  # type: ignore[misc]
    """
    A logged-in SSH connection: the avatar, and the context of its SFTP
    subsystem (session, storage, events, re-validation).
    """

    _log = QUIET

    def __init__(self, logged_in: LoggedIn) -> None:
        super().__init__()
        self.session = logged_in.session
        self.storage = logged_in.storage
        self.ssh: SSHTransport = logged_in.connection
        self.peer_host = self.ssh.peer_host
        self.channelLookup = {b"session": _Session}
        self.subsystemLookup = {b"sftp": FileTransfer}
        #: The running SFTP subsystems (one per session channel).
        self.transfers: set[FileTransfer] = set()
        self.ssh.user = self
        _log.info("SSH login of {user!r} from {peer}", user=self.session.username, peer=self.peer_host)
        self.emit(Action.LOGIN, True, Reply.USER_LOGGED_IN)

    def seconds(self) -> float:
        return float(self.ssh.core.reactor.seconds())

    @property
    def clock(self) -> Any:
        """The server's reactor, to pace replies to the user's rates."""
        return self.ssh.core.reactor

    @property
    def limits(self) -> SessionLimits | None:
        """The user's limits, as admitted at login."""
        return self.ssh.limits

    def hold_reading(self, seconds: float) -> None:
        """Read nothing more from the client for C{seconds}: see L{SSHTransport.hold_reading}."""
        self.ssh.hold_reading(seconds)

    def emit(self, action: Action, ok: bool, reply: int, **details: Any) -> None:
        self.ssh.emit(action, ok, reply, username=self.session.username, **details)

    async def still_valid(self) -> bool:
        """Re-validate the session (as FTP does); when it is no longer valid, disconnect."""
        if await still_valid(self.ssh.core.authenticator, self.session, self.peer_host):
            return True
        self.ssh.disconnect(_BY_APPLICATION, "Session is no longer valid.")
        return False

    @property
    def pending(self) -> list[Deferred[Any]]:
        """Clean-ups the connection's end waits for (aborted uploads)."""
        return self.ssh.pending

    def logout(self) -> None:
        """Conch's logout: nothing to release (the connection's loss does it)."""


class SSHTransport(transport.SSHServerTransport):  # type: ignore[misc]
    """
    One SSH connection, registered with the server's core like an FTP
    control connection (limits, bans, deadlines, shutdown).
    """

    _log = QUIET
    factory: SFTPFactory

    def __init__(self) -> None:
        super().__init__()
        self.peer_host: str | None = None
        self.login_failures = 0
        self.user: SFTPUser | None = None
        self.pending: list[Deferred[Any]] = []
        self.closed: Deferred[None] = Deferred()
        #: The login's admission to the per-user limits, released when the connection ends.
        self.limits: SessionLimits | None = None
        self._held: IDelayedCall | None = None
        self._admitted = False
        self._connected_at = self._last_activity = 0.0
        self._closing = False
        self._disconnecting = False

    @property
    def core(self) -> FTPFactory:
        """The server's configuration and policy."""
        return self.factory.core

    def connectionMade(self) -> None:
        self.peer_host = unmapped(getattr(self.transport.getPeer(), "host", None))  # type: ignore[union-attr]
        self._connected_at = self._last_activity = self.core.reactor.seconds()
        super().connectionMade()
        refusal = self.core.admit(self)  # type: ignore[arg-type]
        if refusal is not None:
            _log.info("Refused SSH connection from {peer}: {why}", peer=self.peer_host, why=refusal)
            self.disconnect(_TOO_MANY_CONNECTIONS, refusal)
            return
        self._admitted = True
        _log.info("SSH connection from {peer}", peer=self.peer_host)

    def dataReceived(self, data: bytes) -> None:
        self._last_activity = self.core.reactor.seconds()
        super().dataReceived(data)

    def disconnect(self, code: int, text: str) -> None:
        """Send SSH_MSG_DISCONNECT with C{text} and close (once)."""
        if not self._disconnecting and self.transport is not None:
            self._disconnecting = True
            self.sendDisconnect(code, text.encode("utf-8"))

    def emit(self, action: Action, ok: bool, reply: int, **details: Any) -> None:
        """Tell the core's event observers what this connection did."""
        if self.core.observers:
            details.setdefault("username", self.user.session.username if self.user else None)
            self.core.emit(FTPEvent(action=action, ok=ok, reply=int(reply), peer=self.peer_host,
                                    time=self.core.reactor.seconds(), protocol="sftp", **details))

    def login_failed_event(self, username: str) -> None:
        self.emit(Action.LOGIN_FAILED, False, Reply.NOT_LOGGED_IN, username=username)

    def check_deadlines(self, now: float) -> None:
        """
        Close the connection past the login timeout, or idle for the idle
        timeout (not while it is left unread for the user's upload rate).
        """
        core = self.core
        if self.user is None and core.login_timeout and now - self._connected_at >= core.login_timeout:
            self.disconnect(_BY_APPLICATION, "Login timeout.")
        elif self._closing and not self._busy():
            self.disconnect(_BY_APPLICATION, "Server shutting down.")
        elif core.idle_timeout and self._held is None and now - self._last_activity >= core.idle_timeout:
            self.disconnect(_BY_APPLICATION, "Idle timeout.")

    def _busy(self) -> bool:
        """Whether an SFTP file is open (a transfer may be running)."""
        return self.user is not None and any(subsystem.openFiles for subsystem in self.user.transfers)

    def shutdown(self, graceful: bool = False) -> None:
        """Disconnect; when C{graceful}, once no file is open (the core forces it after its grace)."""
        if graceful and self._busy():
            self._closing = True
            return
        self.disconnect(_BY_APPLICATION, "Server shutting down.")

    def hold_reading(self, seconds: float) -> None:
        """
        Read nothing more from the client for C{seconds} (an upload ahead of
        the user's rate), or until a hold already running ends if later: a
        client that sends writes without waiting for their replies is then
        slowed down by TCP, as an FTP upload is by its paced data connection.
        """
        held, transport = self._held, IPushProducer(self.transport, None)
        if held is not None:
            if held.getTime() < self.core.reactor.seconds() + seconds:
                held.reset(seconds)
            return
        if transport is None or self._disconnecting:
            return
        transport.pauseProducing()
        self._held = self.core.reactor.callLater(seconds, self._read_again)

    def _read_again(self) -> None:
        self._held = None
        transport = IPushProducer(self.transport, None)
        if transport is not None:
            transport.resumeProducing()

    def admitted_limits(self, limits: SessionLimits) -> None:
        """Keep the login's admission to the per-user limits, released at the end."""
        self.limits = limits

    def connectionLost(self, reason: Failure | None = None) -> None:
        user = self.user
        held, self._held = self._held, None
        if held is not None and held.active():
            held.cancel()
        super().connectionLost(reason)
        limits, self.limits = self.limits, None
        if limits is not None:
            limits.release()
        if self._admitted:
            self.core.release(self)  # type: ignore[arg-type]
        if user is not None:
            self.emit(Action.LOGOUT, True, Reply.CLOSING_CONTROL_CONNECTION)
        pending, self.pending = self.pending, []
        DeferredList(pending).addBoth(lambda _: self.closed.callback(None))


class SFTPFactory(factory.SSHFactory):  # type: ignore[misc]
    """
    Serves SFTP with the authenticator, storage and policy of C{core}.

    @param core: the server's configuration (shared with FTP, if it also
        listens for FTP).
    @param host_keys: the private host keys (one of each type at most).
    """

    protocol = SSHTransport
    noisy = False
    _log = QUIET

    def __init__(self, core: FTPFactory, host_keys: Sequence[Key]) -> None:
        self.core = core
        self.privateKeys = {key.sshType(): key for key in host_keys}
        self.publicKeys = {key.sshType(): key.public() for key in host_keys}
        self.primes: dict[int, list[tuple[int, int]]] | None = None
        self.services = {b"ssh-userauth": UserAuth, b"ssh-connection": _Connection}
        self.realm = Realm(SFTPUser)
        # Only tells userauth which methods exist; each connection gets its own checker.
        self.portal = Portal(self.realm, [Checker(core, None)])

    def getPrimes(self) -> None:
        return None


class _Connection(connection.SSHConnection):  # type: ignore[misc]
    """Conch's connection service, quietly logged."""

    _log = QUIET
