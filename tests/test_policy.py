"""
Login and access policy in the core (issue 16): re-validation of every
command that reveals or changes data, the ban at every PASS, pyftpdlib's
permission letters for the commands that tell what exists, and auth outages
answered 421 without counting as failed logins.

Deterministic: memory reactor, memory storage, L{StringTransport}s.
"""

from __future__ import annotations

from typing import Any

from test_protocol import _Client
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from exftp import AuthenticationUnavailable, FTPEvent, Session
from exftp._defender import Defender
from exftp._events import Action
from exftp.testing import MemoryStorage


class _Counting:
    """Wraps an authenticator's C{login} to count the calls."""

    def __init__(self, client: _Client) -> None:
        self.calls = 0
        self._login = client.auth.login
        client.auth.login = self  # type: ignore[method-assign]

    def __call__(self, username: str, password: str) -> Deferred[Session]:
        self.calls += 1
        return self._login(username, password)


def _busy(test: SynchronousTestCase, client: _Client) -> None:
    """Start a RETR that waits for its data connection: the session stays busy until the test ends."""
    test.addCleanup(client.proto.connectionLost)
    client.storage.add_file("/f.txt", b"data")
    client.passive()
    reply = client.send("RETR f.txt")
    assert [r[:4] for r in reply] == ["150 "], reply
    assert client.proto._busy


class RevalidationTests(SynchronousTestCase):
    def test_stat_of_a_path_while_busy_is_revalidated(self) -> None:
        """
        A revoked user cannot list with STAT while another command runs: the
        STAT waits its turn, then is re-validated like any other command.
        """
        client = _Client()
        client.storage.add_file("/secret/plans.txt", b"x")
        client.login()
        _busy(self, client)
        client.auth.users["alice"] = "changed"
        self.assertEqual(client.send("STAT /secret"), [])
        reply = client.send("ABOR")
        self.assertIn("421 ", [line[:4] for line in reply], reply)
        self.assertNotIn("plans.txt", "".join(reply))
        self.assertTrue(client.transport.disconnecting)

    def test_stat_of_a_path_while_busy_still_answers_a_valid_user(self) -> None:
        client = _Client()
        client.storage.add_file("/secret/plans.txt", b"x")
        client.login()
        _busy(self, client)
        self.assertEqual(client.send("STAT /secret"), [])
        reply = client.send("ABOR")
        self.assertIn("213-", [line[:4] for line in reply], reply)
        self.assertIn("plans.txt", "".join(reply))

    def test_plain_stat_and_noop_while_busy_stay_immediate(self) -> None:
        """The session's own status reveals no data: answered without asking the authenticator."""
        client = _Client()
        client.login()
        _busy(self, client)
        asked: list[Session] = []

        def authenticated(session: Session) -> Deferred[bool]:
            asked.append(session)
            return Deferred()  # would never answer

        client.auth.authenticated = authenticated  # type: ignore[method-assign]
        self.assertEqual(client.send("STAT")[0][:4], "211-")
        self.assertEqual(client.send("NOOP")[0][:4], "200 ")
        self.assertEqual(asked, [])

    def test_outage_during_revalidation_keeps_the_session(self) -> None:
        """The auth service down: the command runs, the problem is logged as an error."""
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        client = _Client()
        client.login()
        client.auth.authenticated = lambda session: fail(AuthenticationUnavailable())  # type: ignore[method-assign]
        self.assertEqual(client.send("PWD")[0][:4], "257 ")
        self.assertFalse(client.transport.disconnecting)
        errors = [e for e in observer if e["log_level"] is LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIn("re-validate", errors[0]["log_format"])

    def test_refusal_after_an_outage_still_ends_the_session(self) -> None:
        client = _Client()
        client.login()
        client.auth.authenticated = lambda session: fail(AuthenticationUnavailable())  # type: ignore[method-assign]
        self.assertEqual(client.send("PWD")[0][:4], "257 ")
        client.auth.authenticated = lambda session: succeed(False)  # type: ignore[method-assign]
        self.assertEqual(client.send("PWD")[0][:4], "421 ")
        self.assertTrue(client.transport.disconnecting)


class BanAtPassTests(SynchronousTestCase):
    def _server(self) -> _Client:
        return _Client(defender=Defender(threshold=3), login_failure_delay=0, max_login_failures=100)

    def _fail(self, client: _Client) -> list[str]:
        client.send("USER alice")
        return client.send("PASS wrong")

    def test_sessions_opened_before_the_ban_stop_guessing(self) -> None:
        guesser = self._server()
        others = [_Client(same_server=guesser) for _ in range(3)]
        counting = _Counting(guesser)
        self.assertEqual(self._fail(guesser), ["530 Login incorrect."])
        self.assertEqual(self._fail(others[0]), ["530 Login incorrect."])
        self.assertEqual(self._fail(guesser)[0][:4], "421 ")  # the third failure bans 127.0.0.1
        calls = counting.calls
        for other in others[1:]:
            other.send("USER alice")
            reply = other.send("PASS secret")  # even the right password
            self.assertEqual(reply, ["421 Too many failed logins from your address; try again later."])
            self.assertTrue(other.transport.disconnecting)
        self.assertEqual(counting.calls, calls, "a banned address never reaches the authenticator")
        self.assertIsNone(others[1].proto.session)

    def test_unbanned_sessions_log_in(self) -> None:
        client = self._server()
        self._fail(client)
        client.login()


class _StorageFactoryWithoutRestrictions:
    """A storage factory that applies no permissions: the core must still refuse."""

    def __init__(self, storage: MemoryStorage) -> None:
        self.storage = storage

    def storage_for(self, session: Session) -> Deferred[Any]:
        return succeed(self.storage)


class PermissionTests(SynchronousTestCase):
    """pyftpdlib's letters: C{l} for everything that tells what exists; C{f} for RNFR."""

    REVEALING = ("SIZE in/a.txt", "MDTM in/a.txt", "MLST in/a.txt", "MLST", "STAT in/a.txt", "STAT in",
                 "LIST in/a.txt", "NLST in/a.txt")

    def _dropbox(self, restricted: bool = True) -> _Client:
        """User C{dropbox}: permissions C{ew}."""
        client = _Client()
        client.storage.add_file("/in/a.txt", b"secret")
        if not restricted:
            client.factory.storage_factory = _StorageFactoryWithoutRestrictions(client.storage)
        client.login("dropbox", "pw")
        return client

    def test_no_size_time_or_existence_without_l(self) -> None:
        client = self._dropbox()
        for line in self.REVEALING:
            reply = client.send(line)
            self.assertEqual(reply, ["550 Permission denied: you may not list directories."], line)
        # Missing and present files look alike.
        self.assertEqual(client.send("SIZE in/none.txt"), client.send("SIZE in/a.txt"))

    def test_plain_stat_needs_no_permission(self) -> None:
        self.assertEqual(self._dropbox().send("STAT")[0][:4], "211-")

    def test_rnfr_needs_f(self) -> None:
        client = self._dropbox()
        self.assertEqual(client.send("RNFR in/a.txt"), ["550 Permission denied: you may not rename."])
        self.assertEqual(client.send("RNFR in/none.txt"), ["550 Permission denied: you may not rename."])

    def test_read_only_users_may_not_rename(self) -> None:
        client = _Client()
        client.storage.add_file("/a.txt", b"x")
        client.login("reader", "pw")
        self.assertEqual(client.send("RNFR a.txt"), ["550 Permission denied: read-only access."])
        self.assertEqual(client.send("SIZE a.txt"), ["213 1"])

    def test_listing_permission_allows_them(self) -> None:
        client = _Client()
        client.storage.add_file("/in/a.txt", b"secret")
        client.login("lister", "pw")
        self.assertEqual(client.send("SIZE in/a.txt"), ["213 6"])
        self.assertEqual(client.send("MDTM in/a.txt")[0][:4], "213 ")
        self.assertEqual(client.send("MLST in/a.txt")[0][:4], "250-")
        self.assertEqual(client.send("STAT in")[0][:4], "213-")
        self.assertEqual(client.send("RNFR in/a.txt"), ["550 Permission denied: you may not rename."])

    def test_the_core_refuses_even_when_the_storage_does_not(self) -> None:
        """Policy runs before storage: a storage factory that forgets the restrictions opens no hole."""
        client = self._dropbox(restricted=False)
        for line in (*self.REVEALING, "RETR in/a.txt", "DELE in/a.txt", "RNFR in/a.txt", "MKD d",
                     "APPE in/a.txt", "SITE CHMOD 600 in/a.txt", "MFMT 20200101000000 in/a.txt", "HASH in/a.txt"):
            client.passive()
            reply = client.send(line)
            self.assertEqual(len(reply), 1, line)
            self.assertTrue(reply[0].startswith("550 Permission denied: you may not "), (line, reply))
        self.assertEqual(client.storage.read_file("/in/a.txt"), b"secret")
        self.assertEqual(client.send("CWD in")[0][:4], "250 ")


class AuthOutageTests(SynchronousTestCase):
    """An auth service that cannot answer: 421, logged as a server problem, never a failed login."""

    def _down(self, client: _Client, error: Exception | None = None) -> None:
        def login(username: str, password: str) -> Deferred[Session]:
            return fail(error or AuthenticationUnavailable())

        client.auth.login = login  # type: ignore[method-assign]

    def test_outage_answers_421_and_closes(self) -> None:
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        client = _Client(login_failure_delay=0)
        self._down(client)
        client.send("USER alice")
        reply = client.send("PASS secret")
        self.assertEqual(len(reply), 1)
        self.assertTrue(reply[0].startswith("421 Service not available"), reply)
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(client.proto.login_failures, 0)
        self.assertTrue(any(e["log_level"] is LogLevel.error and "could not be checked" in e["log_format"]
                            for e in observer))
        self.assertNotIn("secret", repr([dict(e) for e in observer]))

    def test_outage_counts_toward_no_ban(self) -> None:
        """With a ban after one failure, ten outages later the address still logs in."""
        events: list[FTPEvent] = []
        first = _Client(defender=Defender(threshold=1), login_failure_delay=0, observers=[events.append])
        self._down(first)
        for _ in range(10):
            client = _Client(same_server=first)
            client.send("USER alice")
            self.assertEqual(client.send("PASS secret")[0][:4], "421 ")
        self.assertEqual(first.factory.defender.banned(first.reactor.seconds()), {})  # type: ignore[union-attr]
        self.assertNotIn(Action.LOGIN_FAILED, [e.action for e in events])
        del first.auth.login  # the service is back
        _Client(same_server=first).login()

    def test_outage_is_answered_after_the_login_delay(self) -> None:
        client = _Client(login_failure_delay=1.0)
        self._down(client)
        client.send("USER alice")
        self.assertEqual(client.send("PASS secret"), [])
        client.reactor.advance(1.0)
        client.pump()
        self.assertEqual(client.replies()[0][:4], "421 ")

    def test_valid_user_outage_is_421_too(self) -> None:
        client = _Client(login_failure_delay=0)
        client.auth.valid_user = lambda username: fail(AuthenticationUnavailable())  # type: ignore[method-assign]
        client.send("USER alice")
        self.assertEqual(client.send("PASS secret")[0][:4], "421 ")

    def test_refusals_still_count(self) -> None:
        client = _Client(defender=Defender(threshold=2), login_failure_delay=0)
        client.send("USER alice")
        self.assertEqual(client.send("PASS wrong"), ["530 Login incorrect."])
        client.send("USER alice")
        self.assertEqual(client.send("PASS wrong")[0][:4], "421 ")  # banned
        self.assertEqual(client.proto.login_failures, 2)

    def test_unexpected_errors_still_refuse_and_count(self) -> None:
        """An authenticator that fails with anything but a server-side FTPError refuses (as the interface says)."""
        client = _Client(login_failure_delay=0)
        self._down(client, RuntimeError("bug"))
        client.send("USER alice")
        self.assertEqual(client.send("PASS secret"), ["530 Login incorrect."])
        self.assertEqual(client.proto.login_failures, 1)
        self.flushLoggedErrors(RuntimeError)
