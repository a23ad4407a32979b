"""
Hooks: the JSON document of an event, the bounded queue with its retries
and backoff (on a L{Clock}), and the webhook against a real C{twisted.web}
site on 127.0.0.1.
"""

from __future__ import annotations

import json
from typing import Any

from test_http_auth import Hang, Service, Static, _Site
from test_metrics import ControlSession
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource

from exftp import Action, FTPEvent, FTPFactory
from exftp._hooks import DeliveryFailed, HookQueue, RetryLater, WebhookHook, event_document, load_callable
from exftp.testing import MemoryAuthenticator, MemoryStorage, MemoryStorageFactory


def event(action: Action = Action.UPLOAD, path: str = "/a.txt", ok: bool = True, **details: Any) -> FTPEvent:
    return FTPEvent(
        action=action, ok=ok, reply=226 if ok else 451, username="alice", peer="127.0.0.1", time=1700000000.5,
        path=path, **details,
    )  # fmt: skip


class DocumentTests(SynchronousTestCase):
    def test_fields(self) -> None:
        document = event_document(event(bytes=5, seconds=0.25, binary=False))
        self.assertEqual(
            document,
            {
                "action": "upload", "status": "ok", "reply": 226, "user": "alice", "peer": "127.0.0.1",
                "path": "/a.txt", "destination": None, "bytes": 5, "seconds": 0.25, "binary": False,
                "time": 1700000000.5, "protocol": "ftp",
            },
        )  # fmt: skip
        json.dumps(document)

    def test_failure_and_rename(self) -> None:
        document = event_document(event(Action.RENAME, "/a", ok=False, destination="/b"))
        self.assertEqual((document["status"], document["reply"], document["destination"]), ("failed", 451, "/b"))

    def test_load_callable(self) -> None:
        self.assertIs(load_callable("exftp._hooks.event_document"), event_document)
        with self.assertRaisesRegex(ValueError, "cannot import"):
            load_callable("exftp.no_such_thing")
        with self.assertRaisesRegex(ValueError, "not callable"):
            load_callable("exftp._hooks.__doc__")


class Recorder:
    """A hook that records events; its answers can be scripted."""

    def __init__(self, *answers: Any) -> None:
        self.events: list[FTPEvent] = []
        self.answers = list(answers)

    def __call__(self, event: FTPEvent) -> Any:
        self.events.append(event)
        if self.answers:
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        return None


class QueueTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.log = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def queue(self, hook: Any, **options: Any) -> HookQueue:
        return HookQueue(hook, "test", reactor=self.clock, **options)

    def messages(self, level: LogLevel | None = None) -> list[str]:
        return [formatEvent(e) for e in self.log if level is None or e["log_level"] == level]

    def test_in_order_and_never_from_the_caller(self) -> None:
        hook = Recorder()
        queue = self.queue(hook)
        events = [event(path=f"/{n}") for n in range(3)]
        for each in events:
            queue(each)
        self.assertEqual(hook.events, [])  # the session that emitted them is not held up
        self.clock.advance(0)
        self.assertEqual(hook.events, events)
        self.assertEqual(queue.delivered, 3)

    def test_actions_filter(self) -> None:
        hook = Recorder()
        queue = self.queue(hook, actions=[Action.DOWNLOAD])
        queue(event(Action.UPLOAD))
        queue(event(Action.DOWNLOAD))
        self.clock.advance(0)
        self.assertEqual([e.action for e in hook.events], [Action.DOWNLOAD])

    def test_one_at_a_time(self) -> None:
        running: Deferred[None] = Deferred()
        hook = Recorder(running)
        queue = self.queue(hook)
        queue(event(path="/1"))
        queue(event(path="/2"))
        self.clock.advance(0)
        self.assertEqual(len(hook.events), 1)
        running.callback(None)
        self.clock.advance(0)
        self.assertEqual([e.path for e in hook.events], ["/1", "/2"])

    def test_bounded_queue_drops_and_logs(self) -> None:
        running: Deferred[None] = Deferred()
        queue = self.queue(Recorder(running), max_queue=2)
        for n in range(5):
            queue(event(path=f"/{n}"))
            self.clock.advance(0)
        # One is being delivered, two wait, two were dropped.
        self.assertEqual((len(queue.queue), queue.dropped), (2, 2))
        self.assertEqual(len([m for m in self.messages(LogLevel.warn) if "dropping" in m]), 1)
        running.callback(None)
        self.clock.advance(0)
        self.assertTrue(any("caught up" in m for m in self.messages()))

    def test_retry_with_exponential_backoff(self) -> None:
        hook = Recorder(RetryLater("HTTP 503"), RetryLater("HTTP 503"), RetryLater("HTTP 503"))
        queue = self.queue(hook, backoff=1.0, max_backoff=3.0)
        queue(event())
        self.clock.advance(0)
        self.assertEqual(len(hook.events), 1)
        for delay, attempts in [(1.0, 2), (2.0, 3), (3.0, 4)]:  # doubling, capped at max_backoff
            self.clock.advance(delay - 0.01)
            self.assertEqual(len(hook.events), attempts - 1)
            self.clock.advance(0.01)
            self.assertEqual(len(hook.events), attempts)
        self.assertEqual((queue.delivered, queue.dropped), (1, 0))

    def test_gives_up_after_the_retries(self) -> None:
        hook = Recorder(*[RetryLater("no connection")] * 3)
        queue = self.queue(hook, retries=2)
        queue(event(path="/lost"))
        queue(event(path="/next"))
        self.clock.pump([0, 1, 2])
        self.assertEqual([e.path for e in hook.events], ["/lost"] * 3 + ["/next"])
        self.assertEqual((queue.delivered, queue.dropped), (1, 1))
        self.assertTrue(any("after 3 attempts" in m for m in self.messages(LogLevel.warn)))

    def test_errors_are_logged_and_the_next_event_goes_out(self) -> None:
        hook = Recorder(ValueError("bug in the hook"), fail(DeliveryFailed("HTTP 400")))
        queue = self.queue(hook)
        for n in range(3):
            queue(event(path=f"/{n}"))
        self.clock.advance(0)
        self.assertEqual(len(hook.events), 3)
        self.assertEqual((queue.delivered, queue.dropped), (1, 2))
        failures = [e for e in self.log if e.get("log_failure") is not None]
        self.assertEqual(len(failures), 1)
        failures[0]["log_failure"].trap(ValueError)
        self.assertTrue(any("HTTP 400" in m for m in self.messages(LogLevel.warn)))
        self.flushLoggedErrors(ValueError)

    def test_a_long_queue_of_quick_hooks(self) -> None:
        hook = Recorder()
        queue = self.queue(hook, max_queue=5000)
        for n in range(5000):
            queue(event(path=f"/{n}"))
        self.clock.advance(0)
        self.assertEqual(queue.delivered, 5000)
        self.assertEqual(len(self.clock.getDelayedCalls()), 0)

    def test_async_hooks(self) -> None:
        seen: list[str | None] = []

        async def hook(event: FTPEvent) -> None:
            await succeed(None)
            seen.append(event.path)

        queue = self.queue(hook)
        queue(event(path="/async"))
        self.clock.advance(0)
        self.assertEqual(seen, ["/async"])

    def test_stop_delivers_what_waits(self) -> None:
        hook = Recorder()
        queue = self.queue(hook)
        queue(event())
        stopped = queue.stop(10)
        self.assertNoResult(stopped)
        self.clock.advance(0)
        self.successResultOf(stopped)
        self.assertEqual(len(hook.events), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_gives_up_after_the_timeout(self) -> None:
        hanging: Deferred[None] = Deferred()
        queue = self.queue(Recorder(hanging))
        queue(event(path="/1"))
        queue(event(path="/2"))
        self.clock.advance(0)
        stopped = queue.stop(5)
        self.clock.advance(5)
        self.successResultOf(stopped)
        self.assertEqual(queue.dropped, 2)
        self.assertTrue(any("2 events not delivered" in m for m in self.messages(LogLevel.warn)))

    def test_stop_when_idle(self) -> None:
        self.successResultOf(self.queue(Recorder()).stop(5))


class Inbox(Resource):
    """Records posted JSON documents; answers with the codes it is given, then 200."""

    isLeaf = True

    def __init__(self, *codes: int) -> None:
        super().__init__()
        self.codes = list(codes)
        self.received: list[tuple[str | None, Any]] = []

    def render_POST(self, request: Any) -> bytes:
        self.received.append((request.getHeader("content-type"), json.loads(request.content.read())))
        request.setResponseCode(self.codes.pop(0) if self.codes else 200)
        return b"thanks"


class WebhookTests(TestCase):
    """The webhook against a real site on 127.0.0.1; its timeout on a Clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.root = Resource()
        self.hang = Hang()
        self.root.putChild(b"hang", self.hang)
        self.root.putChild(b"redirect", Static(302, headers={"location": "/inbox"}))
        site = _Site(self.root)
        self.service = Service(self.root, reactor.listenTCP(0, site, interface="127.0.0.1"), site)  # type: ignore[arg-type]
        self.addCleanup(self.service.stop)

    def webhook(self, path: str, **options: Any) -> WebhookHook:
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        client = HTTPClient(Agent(reactor, pool=pool))
        return WebhookHook(self.service.url(path), client=client, reactor=self.clock, **options)

    def inbox(self, *codes: int) -> Inbox:
        inbox = Inbox(*codes)
        self.root.putChild(b"inbox", inbox)
        return inbox

    async def test_posts_the_event_as_json(self) -> None:
        inbox = self.inbox()
        await self.webhook("/inbox")(event(Action.DOWNLOAD, bytes=3))
        [(content_type, document)] = inbox.received
        self.assertEqual(content_type, "application/json")
        self.assertEqual(document, event_document(event(Action.DOWNLOAD, bytes=3)))

    async def test_server_errors_and_throttling_are_retried(self) -> None:
        self.inbox(500, 503, 429, 408)
        hook = self.webhook("/inbox")
        for _ in range(4):
            with self.assertRaises(RetryLater):
                await hook(event())
        await hook(event())

    async def test_other_answers_are_refused_for_good(self) -> None:
        self.inbox(400, 404)
        hook = self.webhook("/inbox")
        for code in (400, 404):
            with self.assertRaisesRegex(DeliveryFailed, f"HTTP {code}"):
                await hook(event())
        with self.assertRaisesRegex(DeliveryFailed, "HTTP 302"):
            await self.webhook("/redirect")(event())  # redirects are not followed

    async def test_no_connection_is_retried(self) -> None:
        closed = reactor.listenTCP(0, _Site(Resource()), interface="127.0.0.1")  # type: ignore[attr-defined]
        port = closed.getHost().port
        await closed.stopListening()
        hook = WebhookHook(f"http://127.0.0.1:{port}/", reactor=reactor)  # type: ignore[arg-type]
        self.addCleanup(hook.close)
        with self.assertRaises(RetryLater):
            await hook(event())

    async def test_timeout_is_retried(self) -> None:
        hook = self.webhook("/hang", timeout=10)
        arrived = self.hang.arrival()
        posting = hook(event())
        await arrived
        self.clock.advance(10)
        with self.assertRaises(RetryLater):
            await posting
        await self.hang.abandoned[0]

    def test_bad_urls(self) -> None:
        for url in ("ftp://example.com/", "not a url", "http://user:pw@example.com/"):
            with self.assertRaises(ValueError):
                WebhookHook(url)


class ReadmeTests(SynchronousTestCase):
    def test_event_example_is_what_a_webhook_gets(self) -> None:
        from test_plugins import readme_blocks

        [text] = readme_blocks("json", "Operating exftp")
        example = json.loads(text)
        self.assertEqual(set(example), set(event_document(event())))
        self.assertEqual(example, event_document(FTPEvent(
            action=Action.UPLOAD, ok=True, reply=226, username="alice", peer="198.51.100.7", time=1700000000.5,
            path="/in/report.csv", bytes=12345, seconds=0.42,
        )))  # fmt: skip


class SessionEventTests(SynchronousTestCase):
    """What hooks receive from a real session (on a memory reactor)."""

    def test_failed_login_event_names_the_user(self) -> None:
        clock = MemoryReactorClock()
        factory = FTPFactory(MemoryAuthenticator({"alice": "secret"}), MemoryStorageFactory(MemoryStorage(clock)),
                             reactor=clock, login_failure_delay=0)  # fmt: skip
        seen: list[FTPEvent] = []
        factory.observers.append(seen.append)
        session = ControlSession(factory)
        session.send("USER alice")
        session.send("PASS wrong")
        [failed] = seen
        self.assertEqual((failed.action, failed.username), (Action.LOGIN_FAILED, "alice"))
