"""
Hooks: tell your own code or an HTTP service what sessions did.

A hook is an event observer of L{FTPFactory} (see L{exftp.FTPEvent}) that
never holds up the session: events wait in a bounded queue and are handed
to the hook one at a time, in order, from the reactor. A webhook posts each
event as JSON; a failed post is retried with exponential backoff; events
that do not fit in the queue, or cannot be delivered, are logged and dropped.
No event carries a password.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.reflect import namedAny

from ._events import Action, FTPEvent
from ._httpclient import HTTPUser, LazyReactor, check_url, describe, read_body, redacted

__all__ = [
    "DeliveryFailed",
    "HookQueue",
    "RetryLater",
    "WebhookHook",
    "event_document",
    "load_callable",
]

_log = Logger(namespace="exftp.hooks")

#: The largest webhook answer read (and then ignored), in bytes.
_MAX_ANSWER = 64 * 1024
#: HTTP status codes that mean "try again later" although they are 4xx.
_TRANSIENT = frozenset({408, 425, 429})


class RetryLater(Exception):
    """A delivery failed in a way that may succeed later (no connection, timeout, 5xx)."""


class DeliveryFailed(Exception):
    """A delivery was refused for good (e.g. HTTP 400); the event is dropped."""


def event_document(event: FTPEvent) -> dict[str, Any]:
    """
    The JSON object that describes C{event} to a webhook.

    C{status} is C{"ok"} or C{"failed"}; C{reply} is the FTP reply code the
    client got; C{time} is seconds since the epoch.
    """
    return {
        "action": event.action.value,
        "status": "ok" if event.ok else "failed",
        "reply": event.reply,
        "user": event.username,
        "peer": event.peer,
        "path": event.path,
        "destination": event.destination,
        "bytes": event.bytes,
        "seconds": event.seconds,
        "binary": event.binary,
        "time": event.time,
        "protocol": event.protocol,
    }


def load_callable(name: str) -> Callable[[FTPEvent], object]:
    """
    The callable named by a dotted name, such as C{mypackage.hooks.uploaded}.

    @raise ValueError: when it cannot be imported or is not callable.
    """
    try:
        function = namedAny(name)
    except Exception as error:
        raise ValueError(f"cannot import {name}: {error}") from None
    if not callable(function):
        raise ValueError(f"{name} is not callable")
    hook: Callable[[FTPEvent], object] = function
    return hook


class HookQueue(LazyReactor):
    """
    An event observer that hands events to a hook in order, from a bounded queue.

    Call it with events (add it to L{FTPFactory.observers}); it returns at
    once. The hook is called with one event at a time and may return a
    Deferred or be an C{async def}; while it runs, further events wait.

    @param hook: called with each event. Raising (or failing with)
        L{RetryLater} retries it after a delay; any other error drops the
        event (logged).
    @param name: names the hook in logs.
    @param reactor: for the retry delays; the global reactor when omitted.
    @param actions: the actions to deliver; all when C{None}.
    @param max_queue: events that may wait at once; more are dropped (logged).
    @param retries: how often a failed delivery is retried before the event is dropped.
    @param backoff: the first retry delay in seconds; it doubles each time.
    @param max_backoff: the longest retry delay in seconds.
    """

    def __init__(
        self,
        hook: Callable[[FTPEvent], object],
        name: str,
        *,
        reactor: IReactorTime | None = None,
        actions: Iterable[Action] | None = None,
        max_queue: int = 1000,
        retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
    ) -> None:
        self.hook = hook
        self.name = name
        self._reactor = reactor
        self.actions = None if actions is None else frozenset(actions)
        self.max_queue = max_queue
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.queue: deque[FTPEvent] = deque()
        #: Events dropped because the queue was full or delivery failed.
        self.dropped = 0
        #: Events delivered.
        self.delivered = 0
        self._full = False
        self._scheduled = False
        self._current: Deferred[None] | None = None
        self._idle: list[Deferred[None]] = []

    def __repr__(self) -> str:
        return f"<HookQueue {self.name}>"

    def __call__(self, event: FTPEvent) -> None:
        if self.actions is not None and event.action not in self.actions:
            return
        if len(self.queue) >= self.max_queue:
            self.dropped += 1
            if not self._full:
                self._full = True
                _log.warn("Hook {hook}: {count} events waiting; dropping new events", hook=self.name,
                          count=len(self.queue))
            return
        self.queue.append(event)
        self._schedule()

    def _schedule(self) -> None:
        """Go on in the next reactor turn: never inside the session that emitted an event, never recursively."""
        if self._current is None and not self._scheduled:
            self._scheduled = True
            self.reactor.callLater(0, self._next)

    def _next(self) -> None:
        self._scheduled = False
        if self._current is not None:
            return
        if not self.queue:
            if self._full:
                self._full = False
                _log.info("Hook {hook} caught up; {dropped} events dropped so far", hook=self.name,
                          dropped=self.dropped)
            waiters, self._idle = self._idle, []
            for waiter in waiters:
                waiter.callback(None)
            return
        event = self.queue.popleft()
        current = self._current = Deferred.fromCoroutine(self._deliver(event))
        current.addErrback(self._cancelled)
        current.addBoth(self._done)

    def _cancelled(self, failure: Failure) -> None:
        failure.trap(CancelledError)
        self.dropped += 1

    def _done(self, _: object) -> None:
        self._current = None
        self._schedule()

    def _delay(self, attempt: int) -> float:
        return float(min(self.max_backoff, self.backoff * 2**attempt))

    async def _deliver(self, event: FTPEvent) -> None:
        action = event.action.value
        for attempt in range(self.retries + 1):
            try:
                await maybeDeferred(self.hook, event)
            except CancelledError:
                raise
            except RetryLater as error:
                if attempt == self.retries:
                    _log.warn("Hook {hook}: {action} event dropped after {tries} attempts: {why}",
                              hook=self.name, action=action, tries=attempt + 1, why=error)
                    self.dropped += 1
                    return
                delay = self._delay(attempt)
                _log.info("Hook {hook}: {action} event not delivered ({why}); retrying in {delay:g}s",
                          hook=self.name, action=action, why=error, delay=delay)
                await deferLater(self.reactor, delay)
            except DeliveryFailed as error:
                _log.warn("Hook {hook}: {action} event refused: {why}", hook=self.name, action=action, why=error)
                self.dropped += 1
                return
            except Exception:
                _log.failure("Hook {hook} failed on a {action} event", hook=self.name, action=action)
                self.dropped += 1
                return
            else:
                self.delivered += 1
                return

    def idle(self) -> Deferred[None]:
        """A Deferred that fires once every queued event has been handled."""
        if self._current is None and not self.queue:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idle.append(waiter)
        return waiter

    def stop(self, timeout: float) -> Deferred[None]:
        """
        Let the queued events go out for at most C{timeout} seconds, then
        give up on the rest (logged).
        """
        finished = self.idle()
        if finished.called:
            return finished

        def expire() -> None:
            left = len(self.queue) + (self._current is not None)
            self.dropped += len(self.queue)
            self.queue.clear()
            _log.warn("Hook {hook}: {count} events not delivered at shutdown", hook=self.name, count=left)
            if self._current is not None:
                self._current.cancel()

        timer = self.reactor.callLater(timeout, expire)

        def settle(result: None) -> None:
            if timer.active():
                timer.cancel()
            return result

        return finished.addBoth(settle)


class WebhookHook(HTTPUser):
    """
    Posts events to an HTTP service as JSON (see L{event_document}).

    A 2xx answer delivers the event. No connection, a timeout, a 5xx, 408,
    425 or 429 raise L{RetryLater}; any other answer (redirects are not
    followed) raises L{DeliveryFailed}.

    @param url: the http(s) URL to post to.
    @param timeout: seconds one post may take.
    @param client: the treq client; by default one on a persistent
        connection pool of C{reactor}, keeping no cookies.
    @param reactor: for the timeout and the default client; the global
        reactor when omitted.
    @raise ValueError: for a URL that is not http(s).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        client: HTTPClient | None = None,
        reactor: IReactorTime | None = None,
    ) -> None:
        self.url = check_url(url, "webhook")
        self.timeout = timeout
        self._client = client
        self._reactor = reactor

    def __repr__(self) -> str:
        return f"<WebhookHook {redacted(self.url)}>"

    def __call__(self, event: FTPEvent) -> Deferred[None]:
        posting = Deferred.fromCoroutine(self._post(event))
        posting.addTimeout(self.timeout, self.reactor)  # type: ignore[arg-type]
        return posting.addErrback(self._classify)

    async def _post(self, event: FTPEvent) -> None:
        body = json.dumps(event_document(event)).encode("utf-8")
        headers: dict[bytes | str, bytes | str] = {"content-type": "application/json", "user-agent": "exftp"}
        response = await self.client.post(
            self.url,
            data=body,
            headers=headers,
            allow_redirects=False,
            unbuffered=True,
        )
        code: int = response.code
        try:
            # Read the answer so that the connection can be reused; what it says is ignored.
            await read_body(response, _MAX_ANSWER)
        except CancelledError:
            raise
        except Exception:
            pass
        if 200 <= code < 300:
            return
        if code >= 500 or code in _TRANSIENT:
            raise RetryLater(f"HTTP {code}")
        raise DeliveryFailed(f"HTTP {code} from {redacted(self.url)}")

    def _classify(self, failure: Failure) -> Failure:
        if failure.check(DeliveryFailed, RetryLater, CancelledError):
            return failure
        return Failure(RetryLater(describe(failure)))
