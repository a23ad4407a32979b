"""
Helpers for testing code that uses exftp: in-memory users and storage.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from ._errors import LoginFailed
from ._interfaces import IAuthenticator, Session
from ._paths import VirtualPath
from .storage._memory import MemoryStorage, MemoryStorageFactory
from .storage._readonly import check_permissions

__all__ = ["MemoryAuthenticator", "MemoryStorage", "MemoryStorageFactory"]


@implementer(IAuthenticator)
class MemoryAuthenticator:
    """
    Users and passwords from a mapping.

    @param users: user name to password.
    @param read_only: user names that may only read.
    @param roots: user name to that user's root directory (e.g. C{"/alice"}).
    @param permissions: user name to that user's permission letters (e.g. C{"elr"}).
    """

    def __init__(
        self,
        users: Mapping[str, str],
        read_only: frozenset[str] = frozenset(),
        roots: Mapping[str, str] | None = None,
        permissions: Mapping[str, str] | None = None,
    ) -> None:
        self.users = dict(users)
        self.read_only = read_only
        self.roots = dict(roots or {})
        self.permissions = {user: check_permissions(letters) for user, letters in (permissions or {}).items()}
        #: Every successful login, in order: for assertions.
        self.logins: list[Session] = []
        self._key = secrets.token_bytes(16)

    def _credential(self, password: str | None) -> str | None:
        """A keyed digest of C{password}: sessions (and their reprs in logs) never hold the password."""
        if password is None:
            return None
        return hmac.new(self._key, password.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    def valid_user(self, username: str) -> Deferred[bool]:
        return succeed(username in self.users)

    def login(self, username: str, password: str) -> Deferred[Session]:
        if self.users.get(username) != password:
            return fail(LoginFailed())
        root = self.roots.get(username)
        session = Session(
            username,
            root=VirtualPath.parse(root) if root else None,
            read_only=username in self.read_only,
            permissions=self.permissions.get(username),
            attributes={"credential": self._credential(password)},
        )
        self.logins.append(session)
        return succeed(session)

    def authenticated(self, session: Session) -> Deferred[bool]:
        current = self._credential(self.users.get(session.username))
        held = session.attributes.get("credential")
        return succeed(current is not None and isinstance(held, str) and hmac.compare_digest(current, held))
