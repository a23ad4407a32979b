"""
Helpers for testing code that uses exftp: in-memory users and storage.
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from ._errors import LoginFailed
from ._interfaces import IAuthenticator, Session
from ._paths import VirtualPath
from .storage._memory import MemoryStorage, MemoryStorageFactory

__all__ = ["MemoryAuthenticator", "MemoryStorage", "MemoryStorageFactory"]


@implementer(IAuthenticator)
class MemoryAuthenticator:
    """
    Users and passwords from a mapping.

    @param users: user name to password.
    @param read_only: user names that may only read.
    @param roots: user name to that user's root directory (e.g. C{"/alice"}).
    """

    def __init__(
        self,
        users: Mapping[str, str],
        read_only: frozenset[str] = frozenset(),
        roots: Mapping[str, str] | None = None,
    ) -> None:
        self.users = dict(users)
        self.read_only = read_only
        self.roots = dict(roots or {})
        #: Every successful login, in order: for assertions.
        self.logins: list[Session] = []

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
            attributes={"password": password},
        )
        self.logins.append(session)
        return succeed(session)

    def authenticated(self, session: Session) -> Deferred[bool]:
        return succeed(self.users.get(session.username) == session.attributes.get("password"))
