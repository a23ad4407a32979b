"""
SSH authentication through exftp's authenticators and login policy.

A twisted.cred checker per SSH connection asks the shared login core
(L{exftp._login}), so that passwords and public keys get the same failure
delay, counting, bans and outage handling as FTP's PASS. The realm builds
the avatar from the logged-in session.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.conch import error as conch_error
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh import userauth
from twisted.conch.ssh.keys import BadKeyError, Key
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey, IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from zope.interface import implementer

from .._errors import FTPError, LoginFailed
from .._interfaces import IStorage, Session
from .._login import CLOSING, Attempts, IPublicKeyAuthenticator, LoginPolicy, log_in
from ._quiet import QUIET

_log = Logger(namespace="exftp")
#: SSH_DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE and SSH_DISCONNECT_SERVICE_NOT_AVAILABLE (RFC 4253 11.1).
NO_MORE_AUTH_METHODS = 14
SERVICE_NOT_AVAILABLE = 7


@dataclass(frozen=True)
class LoggedIn:
    """The avatar id of a successful login: the session and its storage."""

    session: Session
    storage: IStorage
    connection: Any


class Connection(Attempts, Protocol):
    """What the checker needs of its SSH connection."""

    def disconnect(self, code: int, text: str) -> None:
        """Send SSH_MSG_DISCONNECT and close."""

    def login_failed_event(self, username: str) -> None:
        """Emit the failed login's event."""

    def admitted_limits(self, limits: Any) -> None:
        """Keep the login's admission to the per-user limits, released when the connection ends."""


def authorized(lines: Sequence[str], blob: bytes) -> bool:
    """Whether the public key C{blob} is among C{lines} (C{authorized_keys} format)."""
    for line in lines:
        try:
            if Key.fromString(_key_part(line).encode()).blob() == blob:
                return True
        except (BadKeyError, ValueError, IndexError):
            _log.warn("Ignoring an authorized key that cannot be read: {line!r}", line=line[:40])
    return False


def _key_part(line: str) -> str:
    """The C{type base64} part of an C{authorized_keys} line (options and comments dropped)."""
    fields = line.split()
    for index, field in enumerate(fields):
        if field.startswith(("ssh-", "ecdsa-", "sk-")) and index + 1 < len(fields):
            return f"{field} {fields[index + 1]}"
    raise ValueError("no key type")


@implementer(ICredentialsChecker)
class Checker:
    """
    Checks SSH passwords and public keys of one connection.

    @param policy: the login policy (the server's L{exftp.FTPFactory}).
    @param connection: the SSH connection, or C{None} in the template
        portal that only tells which methods exist.
    """

    credentialInterfaces = (IUsernamePassword, ISSHPrivateKey)

    def __init__(self, policy: LoginPolicy, connection: Connection | None) -> None:
        self.policy = policy
        self.connection = connection

    def requestAvatarId(self, credentials: Any) -> Deferred[LoggedIn]:  # type: ignore[override]
        return Deferred.fromCoroutine(self._check(credentials))

    async def _check(self, credentials: Any) -> LoggedIn:
        connection = self.connection
        assert connection is not None
        try:
            username = credentials.username.decode("utf-8")
        except UnicodeDecodeError:
            raise UnauthorizedLogin("user names are UTF-8") from None
        authenticator = self.policy.authenticator
        if ISSHPrivateKey.providedBy(credentials):
            key: Any = credentials
            if key.signature is None:
                await self._query(username, key.blob)
            check: Callable[[], Deferred[Session]] = lambda: Deferred.fromCoroutine(  # noqa: E731
                self._signed(username, key))
        else:
            password = credentials.password.decode("utf-8", "surrogateescape")
            check = lambda: authenticator.login(username, password)  # noqa: E731
        try:
            session, storage, limits = await log_in(self.policy, connection, username, check,
                                                    on_failure=lambda: connection.login_failed_event(username))
        except CLOSING as refusal:
            connection.disconnect(SERVICE_NOT_AVAILABLE if refusal.reply == 421 else NO_MORE_AUTH_METHODS,
                                  refusal.message)
            raise conch_error.IgnoreAuthentication() from None
        except LoginFailed:
            raise UnauthorizedLogin() from None
        connection.admitted_limits(limits)
        return LoggedIn(session, storage, connection)

    async def _keys(self, username: str) -> tuple[Session, Sequence[str]]:
        """The user's session and authorized keys; refused without them."""
        authenticator = self.policy.authenticator
        if not IPublicKeyAuthenticator.providedBy(authenticator):
            raise LoginFailed("Public keys are not accepted here.")
        result: tuple[Session, Sequence[str]] = await maybeDeferred(authenticator.authorized_keys, username)
        return result

    async def _query(self, username: str, blob: bytes) -> None:
        """
        A client asking whether a key would do (no signature): answered
        without counting a failure, so that a client offering several keys
        is not locked out before its right one.
        """
        connection = self.connection
        assert connection is not None
        if self.policy.ban_refusal(connection.peer_host) is None:
            try:
                _, keys = await self._keys(username)
            except FTPError:
                keys = ()
            if authorized(keys, blob):
                raise conch_error.ValidPublicKey()
        raise UnauthorizedLogin()

    async def _signed(self, username: str, credentials: Any) -> Session:
        """The session for a signed public-key login, once the key is authorized and the signature checks."""
        session, keys = await self._keys(username)
        if not authorized(keys, credentials.blob):
            raise LoginFailed()
        try:
            key = Key.fromString(credentials.blob)
        except BadKeyError:
            raise LoginFailed() from None
        if not key.verify(credentials.signature, credentials.sigData):
            raise LoginFailed()
        return session


class UserAuth(userauth.SSHUserAuthServer):  # type: ignore[misc]
    """
    Conch's user authentication with exftp's policy: no delay or attempt
    limit of its own (the login core has them), the server's login timeout,
    and a portal whose checker knows this connection.
    """

    passwordDelay = 0
    _log = QUIET
    attemptsBeforeDisconnect = 1000

    def serviceStarted(self) -> None:
        ssh: Any = self.transport
        factory = ssh.factory
        self.clock = factory.core.reactor
        self.loginTimeout = factory.core.login_timeout or 10 * 365 * 86400
        super().serviceStarted()
        self.portal = Portal(factory.realm, [Checker(factory.core, ssh)])


@implementer(IRealm)
class Realm:
    """Builds the avatar of a logged-in SSH connection."""

    def __init__(self, avatar: Callable[[LoggedIn], Any]) -> None:
        self.avatar = avatar

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> tuple[Any, Any, Callable[[], None]]:
        if IConchUser not in interfaces:
            raise NotImplementedError("only SSH users")
        avatar = self.avatar(avatarId)
        return IConchUser, avatar, avatar.logout
