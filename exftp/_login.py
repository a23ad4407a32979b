"""
Login policy shared by every protocol (FTP's PASS, SFTP's password and
public-key authentication): bans, the failure delay, counting failures,
outages of the authenticator, and wrapping the user's storage.

The protocol only asks for the credentials and tells the client the outcome:
a successful login returns the session and its storage, a refusal is raised
(after the delay) as one of the errors below, each carrying whether the
connection must close.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface

from ._errors import AuthenticationUnavailable, FTPError, LoginFailed
from ._interfaces import IAuthenticator, IStorage, IStorageFactory, Session
from ._limits import Limits, SessionLimits, TooManySessions
from ._replies import Reply

_log = Logger(namespace="exftp")


class LoginPolicy(Protocol):
    """What the login policy needs from the server's configuration (an L{exftp.FTPFactory})."""

    reactor: Any
    authenticator: IAuthenticator
    storage_factory: IStorageFactory
    login_failure_delay: float
    max_login_failures: int
    limits: Limits

    def ban_refusal(self, address: str | None) -> str | None:
        """The refusal's text while C{address} is banned, else C{None}."""

    def login_failed(self, address: str | None) -> str | None:
        """Count a failure of C{address}; the refusal's text when it got banned."""


class Attempts(Protocol):
    """One connection's login attempts (an FTP control connection, an SSH connection)."""

    peer_host: str | None
    login_failures: int


class IPublicKeyAuthenticator(Interface):
    """
    Optional, for an L{exftp.IAuthenticator}: the public keys that may log a
    user in (SSH). The protocol verifies the client's signature; the
    authenticator only names the keys.
    """

    def authorized_keys(username: str) -> Deferred[tuple[Session, Sequence[str]]]:
        """
        The session a public-key login of C{username} gets and the keys (in
        C{authorized_keys} line format) that may log it in.

        @return: a Deferred failing with L{exftp.LoginFailed} for an unknown
            user or one without keys, or with a server-side L{exftp.FTPError}
            when the keys cannot be known now.
        """


class Banned(FTPError):
    """The address is banned (at once, or because of this failure): 421, close."""

    reply = Reply.SERVICE_NOT_AVAILABLE


class LoginUnavailable(AuthenticationUnavailable):
    """The authenticator could not check the login now: 421, close; never counted."""


class TooManyFailures(LoginFailed):
    """This failure used up the connection's attempts: 530, close."""

    default_message = "Login incorrect; too many failures, closing connection."


#: The refusals after which the connection closes.
CLOSING = (Banned, LoginUnavailable, TooManyFailures, TooManySessions)


async def log_in(
    policy: LoginPolicy,
    attempts: Attempts,
    username: str,
    check: Callable[[], Deferred[Session]],
    on_failure: Callable[[], None] = lambda: None,
) -> tuple[Session, IStorage, SessionLimits]:
    """
    Log C{username} in with C{check} (which asks the authenticator about the
    credentials) and build the session's storage.

    A failure is answered only C{login_failure_delay} after the attempt
    started, however quick the check was, so that timing tells nothing about
    which users exist.

    @param on_failure: called once a failure is counted, before the delay.
    @raise Banned: the address is banned; nobody was asked.
    @raise LoginUnavailable: the authenticator could not decide (its
        service is down): not counted, not toward a ban.
    @raise TooManyFailures: refused, and the connection's last attempt.
    @raise TooManySessions: the user has all the sessions allowed (not
        counted as a failure).
    @raise LoginFailed: refused (an address outside the user's
        C{allow_from} too, counted like a wrong password).
    @return: the session, its storage, and its admission to the per-user
        limits, which the caller releases when the session ends.
    """
    peer = attempts.peer_host
    banned = policy.ban_refusal(peer)
    if banned is not None:
        # Sessions opened before the ban stop guessing too; nobody is asked.
        _log.info("Refused login of {user!r} from banned {peer}", user=username, peer=peer)
        raise Banned(banned)
    authenticator = policy.authenticator
    started = policy.reactor.seconds()
    checked = False  # whether the authenticator gave its verdict
    try:
        if not await maybeDeferred(authenticator.valid_user, username):
            raise LoginFailed()
        session: Session = await maybeDeferred(check)
        checked = True
        storage: IStorage = await maybeDeferred(policy.storage_factory.storage_for, session)
        limits = policy.limits.admit(session, peer)  # allow_from: LoginFailed; max_sessions: TooManySessions
    except CancelledError:
        raise
    except TooManySessions:
        await _after_delay(policy, started)
        raise
    except Exception as error:
        if isinstance(error, FTPError) and not error.client_fault:
            # The auth service, or the user's storage after a good password, did not answer:
            # a server problem, never the user's failure.
            await _unavailable(policy, peer, username, error, started, checked)
        await _failed(policy, attempts, username, error, started, on_failure)
        raise AssertionError("unreachable") from None  # both raise
    _log.info("Login of {user!r} from {peer}", user=session.username, peer=peer)
    return session, storage, limits


async def _after_delay(policy: LoginPolicy, started: float) -> None:
    """Wait until C{login_failure_delay} after the attempt started."""
    remaining = started + policy.login_failure_delay - policy.reactor.seconds()
    if remaining > 0:
        await deferLater(policy.reactor, remaining)


async def _unavailable(
    policy: LoginPolicy, peer: str | None, username: str, error: FTPError, started: float, checked: bool
) -> None:
    """
    The authenticator could not check the login (a server-side L{FTPError}
    such as L{AuthenticationUnavailable}): a server problem, logged as such
    and never counted as a failed login or toward a ban, so that an outage
    bans nobody.
    """
    cause = error.__cause__
    why = f"{error.message} ({type(cause).__name__}: {cause})" if cause is not None else error.message
    _log.error("Login of {user!r} from {peer} could not be checked: {why}", user=username, peer=peer, why=why)
    await _after_delay(policy, started)
    what = "your files are not available" if checked else "the authentication service did not answer"
    raise LoginUnavailable(f"Service not available: {what}; closing connection, try again later.")


async def _failed(
    policy: LoginPolicy,
    attempts: Attempts,
    username: str,
    error: Exception,
    started: float,
    on_failure: Callable[[], None],
) -> None:
    """
    A refused login, or one that failed unexpectedly or after the
    authenticator's verdict (the user's storage): counted, then raised.
    """
    attempts.login_failures += 1
    on_failure()
    peer = attempts.peer_host
    banned = policy.login_failed(peer)
    _log.info("Login failed for {user!r} from {peer} ({count} failures)", user=username, peer=peer,
              count=attempts.login_failures)
    if not isinstance(error, FTPError):
        _log.failure("Login error", Failure(error))
    elif not error.client_fault:
        _log.warn("Login of {user!r} could not be completed: {why}", user=username, why=error.message)
    await _after_delay(policy, started)
    if banned is not None:
        raise Banned(banned)
    if attempts.login_failures >= policy.max_login_failures:
        raise TooManyFailures()
    raise LoginFailed()


async def still_valid(authenticator: IAuthenticator, session: Session, peer: str | None) -> bool | None:
    """
    Re-validate C{session} (before a command that may reveal or change data).

    When the authenticator cannot say for now (a server-side L{FTPError}
    such as L{AuthenticationUnavailable}: its service is down), the session
    goes on and the problem is logged: an outage of the auth service must
    not end every running session. A refusal still ends the session once the
    service answers again.

    @return: C{True} to go on; C{False} when the session is no longer
        valid; C{None} when re-validation failed unexpectedly (logged), which
        also ends the session.
    """
    try:
        valid = await maybeDeferred(authenticator.authenticated, session)
    except CancelledError:
        raise
    except FTPError as error:
        if not error.client_fault:
            _log.error("Could not re-validate {user!r} from {peer}, the session goes on: {why}",
                       user=session.username, peer=peer, why=error.message)
            return True
        valid = False
    except Exception:
        _log.failure("Re-validation of {user!r} failed", user=session.username)
        valid = None
    if valid:
        return True
    _log.info("Session of {user!r} from {peer} ended: no longer valid", user=session.username, peer=peer)
    return None if valid is None else False
