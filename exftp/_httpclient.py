"""
What the HTTP-calling parts (authenticators, webhook hooks) share: a lazily
built treq client on a quiet, cookie-free connection pool, bounded body
reading, URL checks and log-safe descriptions.
"""

from __future__ import annotations

from http.cookiejar import DefaultCookiePolicy

from hyperlink import EncodedURL
from treq.client import HTTPClient
from treq.cookies import IndexableCookieJar
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone, ResponseFailed, _HTTP11ClientFactory
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse


class TooLarge(Exception):
    """The answer body exceeded the bound."""


class _BoundedBody(Protocol):
    """Collects a response body up to C{limit} bytes, then drops the connection."""

    def __init__(self, limit: int, finished: Deferred[bytes]) -> None:
        self.limit = limit
        self.finished = finished
        self.chunks: list[bytes] = []
        self.size = 0
        self.done = False

    def abort(self, reason: Exception | None) -> None:
        """Stop reading: fail with C{reason} (or leave that to a canceller) and drop the connection."""
        if self.done:
            return
        self.done = True
        if reason is not None:
            self.finished.errback(Failure(reason))
        if self.transport is not None:
            # The body's transport is a producer: stopping it drops the connection.
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self.done:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.abort(TooLarge(f"answer larger than {self.limit} bytes"))
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done:
            return
        self.done = True
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self.chunks))
        else:
            self.finished.errback(reason)


def read_body(response: IResponse, limit: int) -> Deferred[bytes]:
    """Read at most C{limit} bytes of C{response}'s body; cancelling drops the connection."""
    finished: Deferred[bytes] = Deferred(lambda _: protocol.abort(None))
    protocol = _BoundedBody(limit, finished)
    response.deliverBody(protocol)
    if response.length is not UNKNOWN_LENGTH and response.length > limit:
        protocol.abort(TooLarge(f"answer of {response.length} bytes, larger than {limit}"))
    return finished


def describe(failure: Failure) -> str:
    """A short reason for a log line (the failures of treq and Agent nest their causes)."""
    error = failure.value
    if isinstance(error, ResponseFailed) and error.reasons:
        return "; ".join(describe(reason) for reason in error.reasons)
    message = failure.getErrorMessage()
    name = type(error).__name__
    return f"{name}: {message}" if message and message != name else name


def cancelled(failure: Failure) -> bool:
    """Whether C{failure} is a cancellation (which Agent wraps in L{ResponseFailed})."""
    if failure.check(CancelledError):
        return True
    error = failure.value
    return isinstance(error, ResponseFailed) and bool(error.reasons) and all(map(cancelled, error.reasons))


def check_url(url: str, name: str) -> str:
    """The normalised http(s) URL, or ValueError."""
    try:
        parsed = EncodedURL.from_text(url)
    except ValueError as error:
        raise ValueError(f"{name}: not a URL: {url!r} ({error})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{name}: expected an http:// or https:// URL with a host, not {url!r}")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise ValueError(f"{name}: not a URL: {url!r} (port out of range)")
    if parsed.userinfo:
        raise ValueError(f"{name}: user names or passwords in the URL are not supported")
    if parsed.fragment:
        raise ValueError(f"{name}: a URL with a #fragment cannot be requested")
    text: str = parsed.to_uri().to_text()
    return text


def redacted(url: str) -> str:
    """The URL without its query string, for logs."""
    return url.partition("?")[0]


class _QuietClientFactory(_HTTP11ClientFactory):
    """The pool's connection factory, without a log line for every connection."""

    noisy = False


def quiet_pool(reactor: IReactorTime, max_per_host: int = 2) -> HTTPConnectionPool:
    """
    A pool of persistent connections whose every new connection does not log
    Twisted's "Starting factory" and "Stopping factory" lines (two routine
    lines per connection: most of a busy server's log otherwise).
    """
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = max_per_host
    pool._factory = _QuietClientFactory
    return pool


def no_cookies() -> IndexableCookieJar:
    """A cookie jar that never stores a cookie."""
    policy = DefaultCookiePolicy()
    policy.set_ok = lambda cookie, request: False  # type: ignore[method-assign]
    policy.return_ok = lambda cookie, request: False  # type: ignore[method-assign]
    return IndexableCookieJar(policy)


class LazyReactor:
    """Uses the reactor it was given, or the global one, looked up on first use."""

    _reactor: IReactorTime | None = None

    @property
    def reactor(self) -> IReactorTime:
        """The reactor for timers and HTTP (the global one unless injected)."""
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor  # type: ignore[assignment]
        assert self._reactor is not None
        return self._reactor


class HTTPUser(LazyReactor):
    """
    Something that calls HTTP services with an injected treq client, or by
    default one on a persistent pool that follows no redirects and keeps no
    cookies (so one user's session cookie can never let another in).
    """

    _client: HTTPClient | None = None
    _pool: HTTPConnectionPool | None = None

    @property
    def client(self) -> HTTPClient:
        """The treq client."""
        if self._client is None:
            pool = self._pool = quiet_pool(self.reactor)
            self._client = HTTPClient(Agent(self.reactor, pool=pool), cookiejar=no_cookies())
        return self._client

    def close(self) -> Deferred[None]:
        """Close the idle connections of the default client's pool (an injected client is left alone)."""
        pool, self._pool = self._pool, None
        return succeed(None) if pool is None else pool.closeCachedConnections()  # type: ignore[no-any-return]
