"""
Per-user limits (L{exftp._limits}): the registry, the pacer, the upload
guard and the usage walk on their own, then through the FTP protocol on
memory parts.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

from test_protocol import _Client, _close
from twisted.internet import error
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from exftp import FileNotFound, LoginFailed, Session, UserLimits, _limits
from exftp._interfaces import IWriteFile
from exftp._limits import (
    BURST_SECONDS,
    MIN_BURST,
    USAGE_TTL,
    WALK_SLICE,
    Limits,
    Pacer,
    QuotaExceeded,
    QuotaTracker,
    RateLimiter,
    TooManySessions,
    UploadGuard,
    Usage,
    parse_limits,
    walk_usage,
    with_defaults,
)
from exftp.auth._http import parse_webhook_settings
from exftp.storage._streaming import CHUNK_SIZE
from exftp.testing import MemoryStorage


@implementer(IPushProducer)
class _Producer:
    def __init__(self) -> None:
        self.paused = False
        self.stopped = False
        self.pauses = 0

    def pauseProducing(self) -> None:
        assert not self.paused, "paused twice"
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        assert self.paused, "resumed while producing"
        self.paused = False

    def stopProducing(self) -> None:
        self.stopped = True


@implementer(IWriteFile)
class _Sink:
    """A consumer and upload that keeps what it gets."""

    def __init__(self) -> None:
        self.data = b""
        self.producer: Any = None
        self.finished = self.aborted = False

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.data += data

    def finish(self) -> Deferred[None]:
        self.finished = True
        return succeed(None)

    def abort(self) -> Deferred[None]:
        self.aborted = True
        return succeed(None)


def _session(name: str = "alice", **limits: Any) -> Session:
    return Session(name, limits=UserLimits(**limits))


class RegistryTests(SynchronousTestCase):
    def test_defaults_fill_only_what_the_user_leaves_unlimited(self) -> None:
        defaults = UserLimits(max_file_size=100, upload_rate=10, download_rate=20)
        mine = with_defaults(UserLimits(upload_rate=5, quota_bytes=7), defaults)
        self.assertEqual(mine, UserLimits(upload_rate=5, quota_bytes=7, max_file_size=100, download_rate=20))

    def test_max_sessions_counts_per_user_and_releases(self) -> None:
        limits = Limits(Clock())
        first = limits.admit(_session(max_sessions=2), "192.0.2.1")
        limits.admit(_session(max_sessions=2), "192.0.2.1")
        self.assertRaises(TooManySessions, limits.admit, _session(max_sessions=2), "192.0.2.1")
        limits.admit(_session("bob", max_sessions=2), "192.0.2.1")  # another user is not counted with alice
        first.release()
        first.release()  # only the first release counts
        self.assertEqual(limits.sessions("alice"), 1)
        limits.admit(_session(max_sessions=2), "192.0.2.1")
        self.assertEqual(limits.sessions("alice"), 2)

    def test_allow_from_refuses_other_addresses_as_a_failed_login(self) -> None:
        limits = Limits(Clock())
        session = _session(allow_from=(ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("2001:db8::/32")))
        limits.admit(session, "192.0.2.9")
        limits.admit(session, "2001:db8::1")
        limits.admit(session, "::ffff:192.0.2.9")
        for address in ("198.51.100.1", "2001:db9::1", None):
            self.assertRaises(LoginFailed, limits.admit, session, address)
        self.assertEqual(limits.sessions("alice"), 3)  # the refused ones are not counted

    def test_one_limiter_per_user_and_direction(self) -> None:
        limits = Limits(Clock())
        one = limits.admit(_session(upload_rate=10, download_rate=20), None)
        two = limits.admit(_session(upload_rate=10, download_rate=20), None)
        bob = limits.admit(_session("bob", upload_rate=10), None)
        self.assertIs(one.rate(upload=True), two.rate(upload=True))
        self.assertIsNot(one.rate(upload=True), one.rate(upload=False))
        self.assertIsNot(one.rate(upload=True), bob.rate(upload=True))
        self.assertIsNone(bob.rate(upload=False))


class PacerTests(SynchronousTestCase):
    def test_limiter_debt_is_the_wait(self) -> None:
        clock = Clock()
        limiter = RateLimiter(1000, clock)
        self.assertEqual(limiter.take(500), 0.5)
        clock.advance(0.5)
        self.assertEqual(limiter.take(0), 0.0)
        clock.advance(3600)  # idle time saves up only a short burst
        burst = max(1000 * BURST_SECONDS, MIN_BURST)
        self.assertAlmostEqual(limiter.take(int(burst) + 1000), 1.0)

    def test_pauses_the_producer_until_the_debt_is_paid(self) -> None:
        clock = Clock()
        sink, producer = _Sink(), _Producer()
        pacer = Pacer(sink, RateLimiter(MIN_BURST, clock), clock)
        verifyObject(IConsumer, pacer)
        pacer.registerProducer(producer, True)
        self.assertIs(sink.producer, pacer)
        pacer.write(b"x" * MIN_BURST * 2)
        self.assertTrue(producer.paused)
        clock.advance(1.9)
        self.assertTrue(producer.paused)
        clock.advance(0.2)
        self.assertFalse(producer.paused)
        self.assertEqual(len(sink.data), MIN_BURST * 2)

    def test_consumer_pause_holds_through_the_pacing(self) -> None:
        clock = Clock()
        sink, producer = _Sink(), _Producer()
        pacer = Pacer(sink, RateLimiter(MIN_BURST, clock), clock)
        pacer.registerProducer(producer, True)
        pacer.write(b"x" * MIN_BURST * 2)
        pacer.pauseProducing()  # the socket is full as well
        clock.advance(5)
        self.assertTrue(producer.paused)  # the consumer still wants it paused
        pacer.resumeProducing()
        self.assertFalse(producer.paused)
        self.assertEqual(producer.pauses, 1)

    def test_sessions_of_one_user_share_the_rate(self) -> None:
        clock = Clock()
        limiter = RateLimiter(MIN_BURST, clock)
        producers = [_Producer(), _Producer()]
        pacers = [Pacer(_Sink(), limiter, clock) for _ in producers]
        for pacer, producer in zip(pacers, producers, strict=True):
            pacer.registerProducer(producer, True)
        moved, seconds = 0, 20
        for _ in range(seconds * 10):
            for pacer, producer in zip(pacers, producers, strict=True):
                if not producer.paused:
                    pacer.write(b"x" * 16384)
                    moved += 16384
            clock.advance(0.1)
        self.assertLess(abs(moved / seconds - MIN_BURST), MIN_BURST * 0.1)

    def test_unregister_cancels_the_timer(self) -> None:
        clock = Clock()
        pacer = Pacer(_Sink(), RateLimiter(MIN_BURST, clock), clock)
        pacer.registerProducer(_Producer(), True)
        pacer.write(b"x" * MIN_BURST * 2)
        pacer.unregisterProducer()
        self.assertEqual(clock.getDelayedCalls(), [])


class GuardTests(SynchronousTestCase):
    def test_max_file_size_stops_and_keeps_nothing_past_it(self) -> None:
        sink, producer = _Sink(), _Producer()
        guard = UploadGuard(sink, start=0, kept=0, existing=None, max_size=10)
        verifyObject(IWriteFile, guard)
        guard.registerProducer(producer, True)
        guard.write(b"0123456789")
        self.assertIsNone(guard.error)
        guard.write(b"x")
        self.assertIsInstance(guard.error, QuotaExceeded)
        self.assertEqual(guard.error.reply if guard.error else None, 552)
        self.assertTrue(producer.stopped)
        guard.write(b"more")
        self.assertEqual(sink.data, b"0123456789")

    def test_append_counts_the_existing_bytes(self) -> None:
        sink = _Sink()
        guard = UploadGuard(sink, start=8, kept=8, existing=8, max_size=10)
        guard.write(b"12")
        self.assertIsNone(guard.error)
        guard.write(b"3")
        self.assertIsNotNone(guard.error)

    def test_quota_charges_running_uploads_and_commits(self) -> None:
        clock = Clock()
        storage = MemoryStorage(clock)
        tracker = QuotaTracker(clock)
        self.successResultOf(tracker.usage(storage))
        one = UploadGuard(_Sink(), start=0, kept=0, existing=None, max_size=None, quota=tracker, quota_bytes=10)
        two = UploadGuard(_Sink(), start=0, kept=0, existing=None, max_size=None, quota=tracker, quota_bytes=10)
        one.write(b"123456")
        two.write(b"1234")
        self.assertIsNone(two.error)
        two.write(b"5")  # together they would pass the quota
        self.assertIsNotNone(two.error)
        self.successResultOf(two.abort())
        self.assertEqual(tracker.pending, 6)
        self.successResultOf(one.finish())
        self.assertEqual(tracker.pending, 0)
        usage = self.successResultOf(tracker.usage(storage))
        self.assertEqual((usage.bytes, usage.files), (6, 1))

    def test_overwrite_counts_only_the_growth(self) -> None:
        tracker = QuotaTracker(Clock())
        tracker._usage = Usage(bytes=8, files=1)  # as computed from the storage
        guard = UploadGuard(_Sink(), start=0, kept=0, existing=8, max_size=None, quota=tracker, quota_bytes=10)
        guard.write(b"0123456789")  # replaces the 8 bytes: 10 in all
        self.assertIsNone(guard.error)
        guard.write(b"x")
        self.assertIsNotNone(guard.error)


class UsageTests(SynchronousTestCase):
    def test_one_walk_for_all_and_a_cancelled_waiter_stops_nobody(self) -> None:
        clock = Clock()
        storage = MemoryStorage(clock)
        for index in range(WALK_SLICE + 1):  # long enough to wait for the reactor once
            storage.add_file(f"/f{index}", b"x")
        tracker = QuotaTracker(clock)
        gone, waiting = tracker.usage(storage), tracker.usage(storage)
        gone.cancel()
        self.failureResultOf(gone).trap(CancelledError)
        clock.advance(0)
        usage = self.successResultOf(waiting)
        self.assertEqual(usage.files, WALK_SLICE + 1)
        self.assertIs(self.successResultOf(tracker.usage(storage)), usage)  # cached
        clock.advance(USAGE_TTL)
        self.assertNoResult(tracker.usage(storage))  # computed again once it is old

    def test_walk_counts_files_in_every_directory(self) -> None:
        clock = Clock()
        storage = MemoryStorage(clock)
        storage.add_file("/a", b"12345")
        storage.add_file("/d/e/f", b"123")
        usage = self.successResultOf(Deferred.fromCoroutine(walk_usage(storage, clock)))
        self.assertEqual((usage.bytes, usage.files), (8, 2))

    def test_walk_lets_the_reactor_run_and_is_bounded(self) -> None:
        clock = Clock()
        storage = MemoryStorage(clock)
        for index in range(WALK_SLICE + 5):
            storage.add_file(f"/d{index % 3}/f{index}", b"x")
        walking = Deferred.fromCoroutine(walk_usage(storage, clock))
        self.assertNoResult(walking)  # it waits for the reactor's next turn
        clock.advance(0)
        usage = self.successResultOf(walking)
        self.assertEqual((usage.bytes, usage.files), (WALK_SLICE + 5, WALK_SLICE + 5))
        self.patch(_limits, "MAX_WALK_ENTRIES", 10)
        usage = self.successResultOf(Deferred.fromCoroutine(walk_usage(storage, clock)))
        self.assertLess(usage.files, WALK_SLICE)


# Through the protocol


def _limited(client: _Client, **limits: Any) -> _Client:
    """Give every login of C{client}'s server these limits."""
    original = client.auth.login

    def login(username: str, password: str) -> Deferred[Session]:
        logged_in: Deferred[Session] = original(username, password)
        return logged_in.addCallback(lambda session: dataclasses.replace(session, limits=UserLimits(**limits)))

    client.auth.login = login  # type: ignore[method-assign]
    return client


class ProtocolTests(SynchronousTestCase):
    def _pass(self, client: _Client, user: str = "alice", password: str = "secret") -> list[str]:
        client.send(f"USER {user}")
        early = client.send(f"PASS {password}")
        client.reactor.advance(client.factory.login_failure_delay)
        client.pump()
        return early + client.replies()

    def test_max_sessions_421_and_released_on_disconnect(self) -> None:
        first = _limited(_Client(), max_sessions=1)
        first.login()
        second = _Client(same_server=first)
        replies = self._pass(second)
        self.assertEqual([r[:4] for r in replies], ["421 "])
        self.assertTrue(second.transport.disconnecting)
        self.assertEqual(second.proto.login_failures, 0)  # not a failed login
        first.proto.connectionLost(Failure(error.ConnectionDone()))
        third = _Client(same_server=first)
        third.login()

    def test_allow_from_530_after_the_delay_like_a_wrong_password(self) -> None:
        client = _limited(_Client(), allow_from=(ipaddress.ip_network("198.51.100.0/24"),))
        client.send("USER alice")
        self.assertEqual(client.send("PASS secret"), [])  # nothing before the delay
        client.reactor.advance(client.factory.login_failure_delay)
        client.pump()
        self.assertEqual(client.replies(), ["530 Login incorrect."])
        self.assertEqual(client.proto.login_failures, 1)
        self.assertEqual(client.factory.limits.sessions("alice"), 0)

    def test_max_file_size_552_and_nothing_kept(self) -> None:
        client = _limited(_Client(), max_file_size=10)
        client.login()
        client.send("TYPE I")
        client.storage.add_file("/old", b"old")
        self.assertEqual(client.upload("STOR old", b"x" * 11), ["150 ", "552 "])
        self.assertEqual(client.storage.read_file("/old"), b"old")
        self.assertEqual(client.upload("STOR new", b"x" * 11), ["150 ", "552 "])
        self.assertRaises(FileNotFound, client.storage.read_file, "/new")
        self.assertEqual(client.upload("STOR new", b"x" * 10), ["150 ", "226 "])

    def test_global_max_file_size(self) -> None:
        client = _Client(default_limits=UserLimits(max_file_size=4))
        client.login()
        self.assertEqual(client.upload("STOR f", b"12345"), ["150 ", "552 "])

    def test_quota_files_refused_before_the_transfer(self) -> None:
        client = _limited(_Client(), quota_files=1)
        client.storage.add_file("/one", b"1")
        client.login()
        self.assertEqual(client.send("STOR two")[0][:4], "552 ")
        self.assertEqual(client.upload("STOR one", b"replaced"), ["150 ", "226 "])  # no new file

    def test_quota_bytes_with_allo_and_site_quota(self) -> None:
        client = _limited(_Client(), quota_bytes=10)
        client.storage.add_file("/six", b"123456")
        client.login()
        self.assertEqual(client.send("ALLO 5")[0][:4], "552 ")
        self.assertEqual(client.send("ALLO 4")[0][:4], "200 ")
        self.assertEqual(client.upload("STOR f", b"12345"), ["150 ", "552 "])
        self.assertRaises(FileNotFound, client.storage.read_file, "/f")
        self.assertEqual(client.upload("STOR f", b"1234"), ["150 ", "226 "])
        quota = client.send("SITE QUOTA")
        self.assertIn(" Bytes used: 10 of 10", quota)
        self.assertIn(" Files used: 2 of unlimited", quota)
        self.assertEqual(client.send("DELE six")[0][:4], "250 ")
        self.assertIn(" Bytes used: 4 of 10", client.send("SITE QUOTA"))

    def test_site_quota_hides_usage_from_a_drop_box(self) -> None:
        client = _limited(_Client(), quota_bytes=10)
        client.storage.add_file("/secret", b"123")
        client.login("dropbox", "pw")  # permissions "ew": may not learn what exists
        quota = client.send("SITE QUOTA")
        self.assertIn(" Bytes: at most 10", quota)
        self.assertFalse([line for line in quota if "used" in line], quota)

    def test_site_quota_without_limits(self) -> None:
        client = _Client()
        client.login()
        self.assertEqual(client.send("ALLO 100")[0][:4], "202 ")
        self.assertIn(" Quota: unlimited", client.send("SITE QUOTA"))


class ProtocolPacingTests(SynchronousTestCase):
    def test_upload_socket_paused_while_over_the_rate(self) -> None:
        client = _limited(_Client(), upload_rate=MIN_BURST)
        client.login()
        client.send("TYPE I")
        proto, transport = client.open_data()
        self.assertEqual(client.send("STOR paced")[0][:4], "150 ")
        proto.dataReceived(b"x" * MIN_BURST * 3)  # three seconds' worth
        self.assertEqual(transport.producerState, "paused")
        client.reactor.advance(2.9)
        self.assertEqual(transport.producerState, "paused")
        client.reactor.advance(0.2)
        self.assertEqual(transport.producerState, "producing")
        _close(proto)
        client.pump()
        self.assertEqual(client.replies()[-1][:4], "226 ")
        self.assertEqual(len(client.storage.read_file("/paced")), MIN_BURST * 3)

    def test_download_paced(self) -> None:
        client = _limited(_Client(), download_rate=MIN_BURST)
        client.storage.add_file("/f", b"y" * CHUNK_SIZE * 3)
        client.login()
        client.send("TYPE I")
        proto, transport = client.open_data()
        client.send("RETR f")
        self.assertEqual(len(transport.value()), CHUNK_SIZE)  # one chunk, then paused for its time
        client.reactor.advance(CHUNK_SIZE / MIN_BURST - 0.1)
        self.assertEqual(len(transport.value()), CHUNK_SIZE)
        for _ in range(200):
            client.reactor.advance(0.1)
        self.assertEqual(len(transport.value()), CHUNK_SIZE * 3)
        _close(proto)
        client.pump()
        self.assertEqual(client.replies()[-1][:4], "226 ")

    def test_a_paced_upload_is_not_a_stalled_one(self) -> None:
        client = _limited(_Client(stalled_timeout=10), upload_rate=MIN_BURST)
        client.login()
        client.send("TYPE I")
        proto, transport = client.open_data()
        client.send("STOR slow")
        self.assertEqual(transport.bufferSize, 16 * 1024)  # small reads: an even pace
        proto.dataReceived(b"x" * MIN_BURST * 30)  # 30 s of the rate at once
        for _ in range(29):
            client.reactor.advance(1)
        self.assertEqual(client.replies(), [])  # held back for the rate, not stalled
        client.reactor.advance(1.1)
        self.assertEqual(transport.producerState, "producing")
        _close(proto)
        client.pump()
        self.assertEqual(client.replies()[-1][:4], "226 ")

    def test_a_paced_upload_that_then_stalls_is_aborted(self) -> None:
        client = _limited(_Client(stalled_timeout=10), upload_rate=MIN_BURST)
        client.login()
        client.send("TYPE I")
        proto, _transport = client.open_data()
        client.send("STOR slow")
        proto.dataReceived(b"x" * MIN_BURST * 15)
        for _ in range(40):  # paced for 15 s, then nothing comes for 25 s
            client.reactor.advance(1)
        _close(proto, clean=False)  # the watchdog closed it
        client.pump()
        self.assertEqual(client.replies(), ["426 Transfer stalled: no data moved; transfer aborted."])
        self.assertRaises(FileNotFound, client.storage.read_file, "/slow")


class ParseTests(SynchronousTestCase):
    JSON = ["application/json"]

    def test_webhook_answer_sets_the_limits(self) -> None:
        body = b'{"quota_bytes": 10, "max_sessions": 0, "upload_rate": null, "allow_from": ["192.0.2.0/24"]}'
        settings = parse_webhook_settings(body, self.JSON)
        self.assertEqual(
            settings.limits, UserLimits(quota_bytes=10, allow_from=(ipaddress.ip_network("192.0.2.0/24"),))
        )
        self.assertEqual(parse_webhook_settings(b"{}", self.JSON).limits, UserLimits())

    def test_webhook_answer_with_bad_limits_is_refused_with_the_key(self) -> None:
        for body, key in [
            (b'{"quota_bytes": -1}', "quota_bytes"),
            (b'{"max_file_size": 1.5}', "max_file_size"),
            (b'{"max_sessions": true}', "max_sessions"),
            (b'{"allow_from": "10.0.0.0/8"}', "allow_from"),
            (b'{"allow_from": ["not a network"]}', "allow_from"),
        ]:
            with self.assertRaises(ValueError) as raised:
                parse_webhook_settings(body, self.JSON)
            self.assertTrue(str(raised.exception).startswith(key), str(raised.exception))

    def test_users_file_names_user_and_key(self) -> None:
        with self.assertRaises(ValueError) as raised:
            parse_limits({"download_rate": "fast"}, "users.alice.")
        self.assertEqual(
            str(raised.exception), "users.alice.download_rate: expected a whole number >= 0 (0: unlimited), not text"
        )
