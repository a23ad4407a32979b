"""
One contract for every built-in L{IAuthenticator}, plus what is particular
to each. A new authenticator gets the suite by subclassing
L{AuthenticatorContractMixin}.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from twisted.cred import strcred
from twisted.cred.checkers import ICredentialsChecker, InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import ISSHPrivateKey
from twisted.internet.defer import Deferred
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from exftp import (
    AnonymousAuthenticator,
    CredentialsCheckerAuthenticator,
    IAuthenticator,
    LoginFailed,
    NoAuthAuthenticator,
    PassthroughAuthenticator,
    Session,
    VirtualPath,
)
from exftp.testing import MemoryAuthenticator

#: (user name, password, the session's user name, read_only)
Login = tuple[str, str, str, bool]


class AuthenticatorContractMixin:
    """
    What every authenticator promises. Subclasses give the authenticator, the
    logins it accepts and those it refuses.
    """

    #: Credentials the authenticator must accept, with the session it must give.
    good: list[Login] = []
    #: Credentials it must refuse.
    bad: list[tuple[str, str]] = []

    def make_authenticator(self) -> IAuthenticator:
        raise NotImplementedError

    def setUp(self) -> None:
        self.authenticator = self.make_authenticator()

    def result(self, deferred: Deferred[Any]) -> Any:
        return self.successResultOf(deferred)  # type: ignore[attr-defined]

    def login(self, username: str, password: str) -> Session:
        return self.result(self.authenticator.login(username, password))  # type: ignore[no-any-return]

    def test_provides_iauthenticator(self) -> None:
        assert verifyObject(IAuthenticator, self.authenticator)

    def test_the_contract_has_cases(self) -> None:
        assert self.good and self.bad

    def test_good_logins_give_sessions(self) -> None:
        for username, password, name, read_only in self.good:
            session = self.login(username, password)
            assert isinstance(session, Session)
            assert (session.username, session.read_only) == (name, read_only), (username, session)
            assert session.root is None or isinstance(session.root, VirtualPath)

    def test_bad_logins_fail_with_login_failed(self) -> None:
        for username, password in self.bad:
            failure = self.authenticator.login(username, password)
            error = self.failureResultOf(failure).value  # type: ignore[attr-defined]
            assert isinstance(error, LoginFailed), (username, error)
            assert error.reply == 530

    def test_valid_user_answers_a_boolean_for_good_users(self) -> None:
        for username, *_ in self.good:
            assert self.result(self.authenticator.valid_user(username)) is True

    def test_valid_user_is_a_boolean(self) -> None:
        for username, _ in self.bad:
            assert self.result(self.authenticator.valid_user(username)) in (True, False)

    def test_own_sessions_stay_authenticated(self) -> None:
        for username, password, *_ in self.good:
            session = self.login(username, password)
            assert self.result(self.authenticator.authenticated(session)) is True

    def test_sessions_are_independent(self) -> None:
        sessions = [self.login(username, password) for username, password, *_ in self.good]
        assert len({id(session) for session in sessions}) == len(sessions)
        for session, (_, _, name, _) in zip(sessions, self.good, strict=True):
            assert session.username == name


class AnonymousAuthenticatorTests(AuthenticatorContractMixin, SynchronousTestCase):
    good = [
        ("anonymous", "guest@example.com", "anonymous", True),
        ("ftp", "", "ftp", True),
        ("Anonymous", "x", "anonymous", True),
    ]
    bad = [("alice", "secret"), ("root", ""), ("anonymous2", "x"), ("", "")]

    def make_authenticator(self) -> IAuthenticator:
        return AnonymousAuthenticator()

    def test_valid_user_only_for_anonymous_names(self) -> None:
        assert self.result(self.authenticator.valid_user("FTP")) is True
        assert self.result(self.authenticator.valid_user("alice")) is False

    def test_writable_when_asked(self) -> None:
        session = self.successResultOf(AnonymousAuthenticator(read_only=False).login("ftp", ""))
        assert session.read_only is False

    def test_a_named_session_is_not_anonymous(self) -> None:
        assert self.result(self.authenticator.authenticated(Session("alice"))) is False


class NoAuthAuthenticatorTests(AuthenticatorContractMixin, SynchronousTestCase):
    good = [("alice", "anything", "alice", False), ("root", "", "root", False), ("Bob", "x", "Bob", False)]
    bad: list[tuple[str, str]] = []

    def make_authenticator(self) -> IAuthenticator:
        return NoAuthAuthenticator()

    def test_the_contract_has_cases(self) -> None:
        # noauth refuses nobody: there is no bad login to try.
        assert self.good and not self.bad

    def test_creating_one_logs_a_warning(self) -> None:
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        NoAuthAuthenticator()
        warnings = [e for e in observer if e["log_level"] is LogLevel.warn]
        assert len(warnings) == 1
        assert "FULL access" in warnings[0]["log_format"]


class PassthroughAuthenticatorTests(AuthenticatorContractMixin, SynchronousTestCase):
    good = [("alice", "whatever", "alice", False), ("Root", "", "Root", False)]
    bad = [("root", "toor"), ("root", "")]

    def make_authenticator(self) -> IAuthenticator:
        return PassthroughAuthenticator()

    def test_root_is_not_a_valid_user(self) -> None:
        assert self.result(self.authenticator.valid_user("root")) is False
        assert self.result(self.authenticator.authenticated(Session("root"))) is False


class MemoryAuthenticatorTests(AuthenticatorContractMixin, SynchronousTestCase):
    good = [
        ("alice", "secret", "alice", False),
        ("guest", "guest", "guest", True),
        ("zo\u00eb", "p\u00e4ss", "zo\u00eb", False),
    ]
    bad = [("alice", "wrong"), ("alice", ""), ("Alice", "secret"), ("nobody", "secret"), ("guest", "secret")]

    def make_authenticator(self) -> IAuthenticator:
        self.memory = MemoryAuthenticator(
            {"alice": "secret", "guest": "guest", "zo\u00eb": "p\u00e4ss"},
            read_only=frozenset({"guest"}),
            roots={"alice": "/home/alice"},
        )
        return self.memory

    def test_roots(self) -> None:
        assert self.login("alice", "secret").root == VirtualPath.parse("/home/alice")
        assert self.login("guest", "guest").root is None

    def test_logins_are_recorded(self) -> None:
        self.login("alice", "secret")
        self.failureResultOf(self.authenticator.login("alice", "nope"), LoginFailed)
        assert [s.username for s in self.memory.logins] == ["alice"]

    def test_a_changed_password_ends_old_sessions(self) -> None:
        session = self.login("alice", "secret")
        self.memory.users["alice"] = "changed"
        assert self.result(self.authenticator.authenticated(session)) is False
        del self.memory.users["alice"]
        assert self.result(self.authenticator.authenticated(session)) is False

    def test_valid_user(self) -> None:
        assert self.result(self.authenticator.valid_user("nobody")) is False

    def test_sessions_do_not_hold_the_password(self) -> None:
        session = self.login("alice", "secret")
        assert "secret" not in repr(session)
        assert "secret" not in repr(dict(session.attributes))

    def test_a_forged_session_is_not_authenticated(self) -> None:
        for attributes in ({}, {"credential": "0" * 64}, {"password": "secret"}):
            forged = Session("alice", attributes=attributes)
            assert self.result(self.authenticator.authenticated(forged)) is False


class MemoryCheckerTests(AuthenticatorContractMixin, SynchronousTestCase):
    """C{--auth memory:alice:secret}: a checker that keeps text."""

    good = [("alice", "secret", "alice", False), ("bob", "p\u00e4ss", "bob", False)]
    bad = [("alice", "wrong"), ("alice", ""), ("carol", "secret"), ("ALICE", "secret")]

    def make_authenticator(self) -> IAuthenticator:
        return CredentialsCheckerAuthenticator(strcred.makeChecker("memory:alice:secret:bob:p\u00e4ss"))

    def test_read_only(self) -> None:
        authenticator = CredentialsCheckerAuthenticator(strcred.makeChecker("memory:alice:secret"), read_only=True)
        assert self.successResultOf(authenticator.login("alice", "secret")).read_only is True


class FileCheckerTests(AuthenticatorContractMixin, SynchronousTestCase):
    """C{--auth file:PATH}: a checker that works in bytes."""

    good = [("alice", "secret", "alice", False), ("zo\u00eb", "p\u00e4ss", "zo\u00eb", False)]
    bad = [("alice", "wrong"), ("alice", "secret "), ("carol", "x"), ("", "")]

    def make_authenticator(self) -> IAuthenticator:
        handle, path = tempfile.mkstemp(prefix="exftp-passwd-")
        self.addCleanup(os.unlink, path)
        with os.fdopen(handle, "wb") as file:
            file.write("alice:secret\nzo\u00eb:p\u00e4ss\n".encode())
        return CredentialsCheckerAuthenticator(strcred.makeChecker(f"file:{path}"))


@implementer(ICredentialsChecker)
class _KeysOnly:
    credentialInterfaces = (ISSHPrivateKey,)

    def requestAvatarId(self, credentials: object) -> Deferred[bytes]:
        raise NotImplementedError


@implementer(ICredentialsChecker)
class _Broken:
    """A checker that fails in an unexpected way."""

    credentialInterfaces = strcred.makeChecker("memory:a:b").credentialInterfaces

    def requestAvatarId(self, credentials: object) -> Deferred[bytes]:
        raise RuntimeError("database on fire")


class CredentialsCheckerEdgeTests(SynchronousTestCase):
    def test_refuses_checkers_without_passwords(self) -> None:
        with self.assertRaises(ValueError):
            CredentialsCheckerAuthenticator(_KeysOnly())

    def test_users_added_to_an_empty_memory_checker_later(self) -> None:
        checker = InMemoryUsernamePasswordDatabaseDontUse()
        authenticator = CredentialsCheckerAuthenticator(checker)
        self.failureResultOf(authenticator.login("late", "pw"), LoginFailed)
        checker.addUser("late", "pw")
        assert self.successResultOf(authenticator.login("late", "pw")).username == "late"

    def test_memory_checker_with_bytes(self) -> None:
        checker = InMemoryUsernamePasswordDatabaseDontUse()
        checker.users = {b"bytes": b"pw"}
        authenticator = CredentialsCheckerAuthenticator(checker)
        assert self.successResultOf(authenticator.login("bytes", "pw")).username == "bytes"
        self.failureResultOf(authenticator.login("bytes", "nope"), LoginFailed)

    def test_unexpected_checker_errors_refuse_the_login(self) -> None:
        authenticator = CredentialsCheckerAuthenticator(_Broken())
        self.failureResultOf(authenticator.login("a", "b"), LoginFailed)
