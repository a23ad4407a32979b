"""
Authenticators that need no outside service: anonymous, noauth, passthrough.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from .._errors import LoginFailed
from .._interfaces import IAuthenticator, Session

_log = Logger(namespace="exftp.auth")

#: The user names that anonymous FTP accepts (RFC 1635).
ANONYMOUS_NAMES = frozenset({"anonymous", "ftp"})


@implementer(IAuthenticator)
class AnonymousAuthenticator:
    """
    Anonymous FTP: users C{anonymous} and C{ftp} with any password, read-only
    unless C{read_only=False}. The default of C{twistd exftp}.
    """

    def __init__(self, read_only: bool = True) -> None:
        self.read_only = read_only

    def valid_user(self, username: str) -> Deferred[bool]:
        return succeed(username.lower() in ANONYMOUS_NAMES)

    def login(self, username: str, password: str) -> Deferred[Session]:
        if username.lower() not in ANONYMOUS_NAMES:
            return fail(LoginFailed())
        return succeed(Session(username.lower(), read_only=self.read_only))

    def authenticated(self, session: Session) -> Deferred[bool]:
        return succeed(session.username in ANONYMOUS_NAMES)


@implementer(IAuthenticator)
class NoAuthAuthenticator:
    """
    Anyone, any password, full access (ex_ftp's NoAuth). Only for trusted
    networks and tests; a warning is logged when it is created.
    """

    def __init__(self) -> None:
        _log.warn("noauth authenticator in use: ANY user name and password gets FULL access.")

    def valid_user(self, username: str) -> Deferred[bool]:
        return succeed(True)

    def login(self, username: str, password: str) -> Deferred[Session]:
        return succeed(Session(username))

    def authenticated(self, session: Session) -> Deferred[bool]:
        return succeed(True)


@implementer(IAuthenticator)
class PassthroughAuthenticator:
    """Any user except C{root}, any password (ex_ftp's PassthroughAuth)."""

    def valid_user(self, username: str) -> Deferred[bool]:
        return succeed(username != "root")

    def login(self, username: str, password: str) -> Deferred[Session]:
        if username == "root":
            return fail(LoginFailed())
        return succeed(Session(username))

    def authenticated(self, session: Session) -> Deferred[bool]:
        return succeed(session.username != "root")
