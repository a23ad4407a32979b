"""
Prometheus metrics: counters from events, gauges from the factory, error
replies by code, latency of authenticator and storage calls through timing
proxies (on a fake clock), and the C{/metrics} page over real HTTP.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer
from zope.interface.verify import verifyObject

from exftp import (
    Action,
    FileNotFound,
    FileStorageFactory,
    FTPEvent,
    FTPFactory,
    IAuthenticator,
    IStorage,
    IStorageFactory,
    IStorageMetadata,
    LoginFailed,
    Session,
    VirtualPath,
)
from exftp._interfaces import IPagedListing
from exftp._metrics import Metrics
from exftp.testing import MemoryAuthenticator, MemoryStorage, MemoryStorageFactory


def event(action: Action, ok: bool = True, **details: Any) -> FTPEvent:
    return FTPEvent(action=action, ok=ok, reply=226 if ok else 550, username="alice", peer="127.0.0.1", time=0.0,
                    **details)  # fmt: skip


class Counters:
    """Reads samples of one registry."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def __call__(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


class EventTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.metrics = Metrics()
        self.value = Counters(self.metrics)

    def test_logins(self) -> None:
        self.metrics(event(Action.LOGIN))
        self.metrics(event(Action.LOGIN_FAILED, ok=False))
        self.metrics(event(Action.LOGIN_FAILED, ok=False))
        self.assertEqual(self.value("exftp_logins_total", result="ok"), 1)
        self.assertEqual(self.value("exftp_logins_total", result="failed"), 2)

    def test_transfers_and_bytes_by_direction(self) -> None:
        self.metrics(event(Action.UPLOAD, bytes=100))
        self.metrics(event(Action.UPLOAD, ok=False, bytes=7))
        self.metrics(event(Action.DOWNLOAD, bytes=30))
        self.assertEqual(self.value("exftp_transfers_total", direction="upload", result="ok"), 1)
        self.assertEqual(self.value("exftp_transfers_total", direction="upload", result="failed"), 1)
        self.assertEqual(self.value("exftp_transfers_total", direction="download", result="ok"), 1)
        self.assertEqual(self.value("exftp_transfer_bytes_total", direction="upload"), 107)
        self.assertEqual(self.value("exftp_transfer_bytes_total", direction="download"), 30)

    def test_operations(self) -> None:
        for action in (Action.DELETE, Action.RENAME, Action.MKDIR, Action.RMDIR):
            self.metrics(event(action))
        self.metrics(event(Action.DELETE, ok=False))
        self.metrics(event(Action.LOGOUT))
        self.assertEqual(self.value("exftp_operations_total", action="delete", result="ok"), 1)
        self.assertEqual(self.value("exftp_operations_total", action="delete", result="failed"), 1)
        self.assertEqual(self.value("exftp_operations_total", action="rmdir", result="ok"), 1)

    def test_registries_are_separate(self) -> None:
        self.metrics(event(Action.LOGIN))
        self.assertEqual(Counters(Metrics())("exftp_logins_total", result="ok"), 0)


class _Slow:
    """Answers every call with a Deferred that the test fires."""

    def __init__(self) -> None:
        self.pending: list[Deferred[Any]] = []

    def call(self) -> Deferred[Any]:
        waiting: Deferred[Any] = Deferred()
        self.pending.append(waiting)
        return waiting


@implementer(IAuthenticator)
class SlowAuthenticator(_Slow):
    def valid_user(self, username: str) -> Deferred[bool]:
        return succeed(True)

    def login(self, username: str, password: str) -> Deferred[Session]:
        return self.call()

    def authenticated(self, session: Session) -> Deferred[bool]:
        return self.call()

    def close(self) -> str:
        return "closed"


class ProxyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.metrics = Metrics(clock=self.clock.seconds)
        self.value = Counters(self.metrics)

    def test_authenticator_calls_are_timed(self) -> None:
        inner = SlowAuthenticator()
        timed = self.metrics.authenticator(inner)
        verifyObject(IAuthenticator, timed)
        login = timed.login("alice", "secret")
        self.clock.advance(0.3)
        inner.pending[0].callback(Session("alice"))
        self.assertEqual(self.successResultOf(login), Session("alice"))
        refused = timed.login("alice", "wrong")
        self.clock.advance(2)
        inner.pending[1].errback(LoginFailed())
        self.failureResultOf(refused, LoginFailed)
        self.assertAlmostEqual(self.value("exftp_auth_seconds_sum", call="login", result="ok"), 0.3)
        self.assertEqual(self.value("exftp_auth_seconds_count", call="login", result="failed"), 1)
        self.assertEqual(self.value("exftp_auth_seconds_bucket", call="login", result="ok", le="0.5"), 1)
        self.assertEqual(self.value("exftp_auth_seconds_bucket", call="login", result="failed", le="1.0"), 0)

    def test_cancellation_reaches_the_wrapped_authenticator(self) -> None:
        inner = SlowAuthenticator()
        login = self.metrics.authenticator(inner).login("alice", "secret")
        login.cancel()
        self.assertTrue(inner.pending[0].called)
        self.failureResultOf(login, CancelledError)
        self.assertEqual(self.value("exftp_auth_seconds_count", call="login", result="failed"), 1)

    def test_other_attributes_are_forwarded(self) -> None:
        timed: Any = self.metrics.authenticator(SlowAuthenticator())
        self.assertEqual(timed.close(), "closed")

    def test_storage_calls_are_timed_and_interfaces_kept(self) -> None:
        storage = MemoryStorage(MemoryReactorClock())
        factory = self.metrics.storage_factory(MemoryStorageFactory(storage))
        verifyObject(IStorageFactory, factory)
        view = self.successResultOf(factory.storage_for(Session("alice")))
        verifyObject(IStorage, view)
        self.assertTrue(IStorageMetadata.providedBy(view))
        self.successResultOf(view.make_directory(VirtualPath.parse("/d")))
        self.failureResultOf(view.stat(VirtualPath.parse("/missing")))
        self.assertEqual(self.value("exftp_storage_seconds_count", call="storage_for", result="ok"), 1)
        self.assertEqual(self.value("exftp_storage_seconds_count", call="make_directory", result="ok"), 1)
        self.assertEqual(self.value("exftp_storage_seconds_count", call="stat", result="failed"), 1)

    def test_paged_listings_are_timed_as_list(self) -> None:
        root = tempfile.mkdtemp(prefix="exftp-metrics-")
        self.addCleanup(shutil.rmtree, root, True)
        factory = self.metrics.storage_factory(FileStorageFactory(root, MemoryReactorClock()))
        view: Any = self.successResultOf(factory.storage_for(Session("alice")))
        self.assertTrue(IPagedListing.providedBy(view))

        async def pages(path: str) -> list[list[str]]:
            return [[info.name for info in page] async for page in view.list_pages(VirtualPath.parse(path))]

        self.assertEqual(self.successResultOf(Deferred.fromCoroutine(pages("/"))), [[]])
        self.failureResultOf(Deferred.fromCoroutine(pages("/missing")), FileNotFound)
        self.assertEqual(self.value("exftp_storage_seconds_count", call="list", result="ok"), 1)
        self.assertEqual(self.value("exftp_storage_seconds_count", call="list", result="failed"), 1)

    def test_storage_without_metadata_does_not_claim_it(self) -> None:
        @implementer(IStorageFactory)
        class Plain:
            def storage_for(self, session: Session) -> Deferred[IStorage]:
                return succeed(PlainStorage())

        @implementer(IStorage)
        class PlainStorage:
            pass

        view = self.successResultOf(self.metrics.storage_factory(Plain()).storage_for(Session("alice")))
        self.assertTrue(IStorage.providedBy(view))
        self.assertFalse(IStorageMetadata.providedBy(view))


class ControlSession:
    """One control connection to a factory on a memory reactor."""

    def __init__(self, factory: FTPFactory) -> None:
        self.reactor = factory.reactor
        peer = IPv4Address("TCP", "127.0.0.1", 50000)
        self.proto = factory.buildProtocol(peer)
        self.transport = StringTransport(peerAddress=peer)
        self.proto.makeConnection(self.transport)

    def send(self, line: str) -> str:
        """Send a command line; the replies it got."""
        self.transport.clear()
        self.proto.dataReceived(line.encode() + b"\r\n")
        for _ in range(20):
            self.reactor.advance(0)
        return self.transport.value().decode()


def timed_session(metrics: Metrics) -> ControlSession:
    """A session with a server whose authenticator and storage are timed by C{metrics}."""
    reactor = MemoryReactorClock()
    auth = metrics.authenticator(MemoryAuthenticator({"alice": "secret"}))
    storage = metrics.storage_factory(MemoryStorageFactory(MemoryStorage(reactor)))
    factory = FTPFactory(auth, storage, reactor=reactor, login_failure_delay=0)
    metrics.bind(factory)
    return ControlSession(factory)


class SessionTests(SynchronousTestCase):
    def test_a_session(self) -> None:
        metrics = Metrics()
        value = Counters(metrics)
        session = timed_session(metrics)
        self.assertEqual(value("exftp_sessions"), 1)
        session.send("USER alice")
        self.assertTrue(session.send("PASS wrong").startswith("530"))
        session.send("USER alice")
        self.assertTrue(session.send("PASS secret").startswith("230"))
        self.assertTrue(session.send("MKD /d").startswith("257"))
        self.assertTrue(session.send("DELE /missing").startswith("550"))
        self.assertTrue(session.send("BOGUS").startswith("500"))
        self.assertEqual(value("exftp_logins_total", result="ok"), 1)
        self.assertEqual(value("exftp_logins_total", result="failed"), 1)
        self.assertEqual(value("exftp_operations_total", action="mkdir", result="ok"), 1)
        self.assertEqual(value("exftp_operations_total", action="delete", result="failed"), 1)
        self.assertEqual(value("exftp_error_replies_total", code="530"), 1)
        self.assertEqual(value("exftp_error_replies_total", code="550"), 1)
        self.assertEqual(value("exftp_error_replies_total", code="500"), 1)
        self.assertEqual(value("exftp_auth_seconds_count", call="login", result="ok"), 1)
        self.assertEqual(value("exftp_auth_seconds_count", call="login", result="failed"), 1)
        self.assertEqual(value("exftp_storage_seconds_count", call="make_directory", result="ok"), 1)
        self.assertTrue(session.send("PASV").startswith("227"))
        self.assertEqual(value("exftp_passive_ports_in_use"), 1)
        session.proto.connectionLost()
        self.assertEqual(value("exftp_sessions"), 0)


class PageTests(TestCase):
    """/metrics over HTTP on 127.0.0.1."""

    async def test_scrape(self) -> None:
        metrics = Metrics()
        metrics(event(Action.UPLOAD, bytes=42))
        port = reactor.listenTCP(0, metrics.site(), interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}"
        response = await treq.get(url + "/metrics", persistent=False)
        self.assertEqual(response.code, 200)
        self.assertTrue(response.headers.getRawHeaders("content-type")[0].startswith("text/plain"))
        families = {f.name: f for f in text_string_to_metric_families(await response.text())}
        [sample] = [s for s in families["exftp_transfer_bytes"].samples if s.name.endswith("_total")]
        self.assertEqual((sample.labels, sample.value), ({"direction": "upload"}, 42))
        openmetrics = await treq.get(url + "/metrics", headers={"accept": "application/openmetrics-text"},
                                     persistent=False)  # fmt: skip
        self.assertTrue(openmetrics.headers.getRawHeaders("content-type")[0].startswith("application/openmetrics"))
        self.assertTrue((await openmetrics.text()).rstrip().endswith("# EOF"))
        missing = await treq.get(url + "/other", persistent=False)
        self.assertEqual(missing.code, 404)
        await missing.content()

    async def test_resource_served_at_metrics_of_an_applications_own_site(self) -> None:
        """The README's way: the application's root holds C{metrics.resource()} at C{/metrics}."""
        metrics = Metrics()
        metrics(event(Action.DOWNLOAD, bytes=7))
        root = Resource()
        root.putChild(b"metrics", metrics.resource())
        site = Site(root)
        site.noisy = False
        port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}"
        for path in ("/metrics", "/metrics/"):
            response = await treq.get(url + path, persistent=False)
            self.assertEqual(response.code, 200, path)
            self.assertIn('exftp_transfer_bytes_total{direction="download"} 7.0', await response.text())
        below = await treq.get(url + "/metrics/other", persistent=False)
        self.assertEqual(below.code, 404)
        await below.content()
