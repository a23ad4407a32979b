"""
Logins checked by any C{twisted.cred} checker of user names and passwords,
so that twistd's C{--auth} strings (C{memory:...}, C{file:...}, C{unix}) work.
"""

from __future__ import annotations

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from zope.interface import implementer

from .._errors import LoginFailed
from .._interfaces import IAuthenticator, Session


@implementer(IAuthenticator)
class CredentialsCheckerAuthenticator:
    """
    Adapts an C{ICredentialsChecker} for C{IUsernamePassword}.

    @param checker: the checker, e.g. from C{twisted.cred.strcred.makeChecker}.
    @param read_only: whether its users may only read.
    """

    def __init__(self, checker: ICredentialsChecker, read_only: bool = False) -> None:
        if IUsernamePassword not in checker.credentialInterfaces:
            raise ValueError("The checker must accept user names and passwords.")
        self.checker = checker
        self.read_only = read_only

    def _wants_text(self) -> bool:
        """
        Whether the checker compares text rather than bytes.

        twisted.cred is inconsistent: the in-memory checker of strcred's
        C{memory:} keeps text, file and unix checkers take bytes. Asked at each
        login, as users may be added to an in-memory checker at any time.
        """
        users = getattr(self.checker, "users", None)
        return isinstance(users, dict) and any(isinstance(u, str) for u in users)

    def valid_user(self, username: str) -> Deferred[bool]:
        return succeed(True)

    def login(self, username: str, password: str) -> Deferred[Session]:
        return Deferred.fromCoroutine(self._login(username, password))

    async def _login(self, username: str, password: str) -> Session:
        credentials = (
            UsernamePassword(username, password)  # type: ignore[arg-type]
            if self._wants_text()
            else UsernamePassword(username.encode(), password.encode())
        )
        try:
            avatar_id = await maybeDeferred(self.checker.requestAvatarId, credentials)
        except Exception:
            raise LoginFailed() from None
        name = avatar_id.decode("utf-8", "replace") if isinstance(avatar_id, bytes) else str(avatar_id)
        return Session(name, read_only=self.read_only)

    def authenticated(self, session: Session) -> Deferred[bool]:
        return succeed(True)
