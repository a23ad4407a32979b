"""
Prometheus metrics, served by C{twisted.web} (the C{metrics} extra:
C{prometheus_client}).

L{Metrics} counts what sessions do from their events, reads the open
sessions and passive ports from the factory, counts error replies by code,
and times every authenticator and storage call through proxies that wrap
the authenticator and the storage factory (so that no backend needs to know).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import directlyProvides, implementer, providedBy

from ._events import Action, FTPEvent
from ._factory import FTPFactory
from ._interfaces import (
    FileInfo,
    IAuthenticator,
    IReadFile,
    IStorage,
    IStorageFactory,
    IWriteFile,
    Session,
    WriteMode,
)
from ._paths import VirtualPath

__all__ = ["Metrics", "MetricsResource", "TimedAuthenticator", "TimedStorage", "TimedStorageFactory"]

_DIRECTIONS = {Action.UPLOAD: "upload", Action.DOWNLOAD: "download"}
_OPERATIONS = frozenset({Action.DELETE, Action.RENAME, Action.MKDIR, Action.RMDIR})


class _Proxy:
    """Forwards what it does not time to the object it wraps, and provides what it provides."""

    def __init__(self, inner: object, histogram: Any, clock: Callable[[], float]) -> None:
        self.inner = inner
        self._histogram = histogram
        self._clock = clock
        directlyProvides(self, providedBy(inner))

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"<timed {self.inner!r}>"

    def _call(self, call: str, *args: Any) -> Deferred[Any]:
        """Call the wrapped object's C{call}, observing how long its Deferred takes."""
        started = self._clock()

        def observe(outcome: Any) -> Any:
            self._observe(call, "failed" if isinstance(outcome, Failure) else "ok", self._clock() - started)
            return outcome

        return maybeDeferred(getattr(self.inner, call), *args).addBoth(observe)

    def _observe(self, call: str, result: str, seconds: float) -> None:
        self._histogram.labels(call=call, result=result).observe(seconds)


@implementer(IAuthenticator)
class TimedAuthenticator(_Proxy):
    """An authenticator that times the calls to another one."""

    def valid_user(self, username: str) -> Deferred[bool]:
        return self._call("valid_user", username)

    def login(self, username: str, password: str) -> Deferred[Session]:
        return self._call("login", username, password)

    def authenticated(self, session: Session) -> Deferred[bool]:
        return self._call("authenticated", session)

    def authorized_keys(self, username: str) -> Deferred[Any]:
        """Timed too; offered only when the wrapped authenticator knows public keys (see L{_Proxy})."""
        return self._call("authorized_keys", username)


@implementer(IStorage)
class TimedStorage(_Proxy):
    """
    A storage that times the calls to another one. It provides what that
    one provides (L{IStorageMetadata} included); the files it opens are the
    other's own.
    """

    def stat(self, path: VirtualPath) -> Deferred[FileInfo]:
        return self._call("stat", path)

    def list(self, path: VirtualPath) -> Deferred[Sequence[FileInfo]]:
        return self._call("list", path)

    def make_directory(self, path: VirtualPath) -> Deferred[None]:
        return self._call("make_directory", path)

    def remove_directory(self, path: VirtualPath) -> Deferred[None]:
        return self._call("remove_directory", path)

    def remove_file(self, path: VirtualPath) -> Deferred[None]:
        return self._call("remove_file", path)

    def rename(self, source: VirtualPath, destination: VirtualPath) -> Deferred[None]:
        return self._call("rename", source, destination)

    def open_read(self, path: VirtualPath, offset: int) -> Deferred[IReadFile]:
        return self._call("open_read", path, offset)

    def open_write(self, path: VirtualPath, mode: WriteMode, offset: int) -> Deferred[IWriteFile]:
        return self._call("open_write", path, mode, offset)

    # IPagedListing, offered only when the wrapped storage provides it.

    async def list_pages(self, path: VirtualPath) -> AsyncIterator[Sequence[FileInfo]]:
        """
        The wrapped storage's pages, timed as one C{list} call: the time spent
        waiting for pages, not the time the pages take to reach the client.
        """
        pages: AsyncIterator[Sequence[FileInfo]] = self.inner.list_pages(path)  # type: ignore[attr-defined]
        spent = 0.0
        while True:
            started = self._clock()
            try:
                page = await pages.__anext__()
            except StopAsyncIteration:
                self._observe("list", "ok", spent + self._clock() - started)
                return
            except BaseException:
                self._observe("list", "failed", spent + self._clock() - started)
                raise
            spent += self._clock() - started
            yield page

    # IStorageMetadata, offered only when the wrapped storage provides it.

    def set_mtime(self, path: VirtualPath, mtime: float) -> Deferred[None]:
        return self._call("set_mtime", path, mtime)

    def set_permissions(self, path: VirtualPath, mode: int) -> Deferred[None]:
        return self._call("set_permissions", path, mode)


@implementer(IStorageFactory)
class TimedStorageFactory(_Proxy):
    """A storage factory whose calls, and the calls to the storages it gives, are timed."""

    def storage_for(self, session: Session) -> Deferred[IStorage]:
        return self._call("storage_for", session).addCallback(self._wrap)

    def _wrap(self, storage: IStorage) -> IStorage:
        return TimedStorage(storage, self._histogram, self._clock)


class MetricsResource(Resource):
    """Serves a registry in the Prometheus text (or OpenMetrics) format, where it is put (paths below are 404)."""

    def __init__(self, registry: Any) -> None:
        super().__init__()
        self.registry = registry

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":  # /metrics/
            return self
        return notFound()  # type: ignore[return-value]

    def render_GET(self, request: Request) -> bytes:
        from prometheus_client.exposition import choose_encoder

        accept = request.getHeader("accept")
        encoder, content_type = choose_encoder(accept or "")
        request.setHeader(b"content-type", content_type.encode("ascii"))
        body: bytes = encoder(self.registry)
        return body


class Metrics:
    """
    The metrics of one server, in a registry of their own.

    Add it to L{FTPFactory.observers}, wrap the authenticator and storage
    factory with L{authenticator} and L{storage_factory} before the factory
    is built, then L{bind} the factory.

    @param registry: a C{prometheus_client.CollectorRegistry}; a new one when omitted.
    @param clock: a monotonic clock for the latency histograms.
    @raise ImportError: when C{prometheus_client} is not installed.
    """

    def __init__(self, registry: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry() if registry is None else registry
        self.clock = clock
        where = self.registry
        self.logins = Counter("exftp_logins", "Login attempts, by result (ok, failed).", ["result"], registry=where)
        self.transfers = Counter(
            "exftp_transfers", "Finished transfers, by direction and result.", ["direction", "result"], registry=where
        )
        self.transfer_bytes = Counter(
            "exftp_transfer_bytes", "Bytes moved by transfers, by direction.", ["direction"], registry=where
        )
        self.operations = Counter(
            "exftp_operations", "Deletes, renames, mkdirs and rmdirs, by action and result.", ["action", "result"],
            registry=where,
        )
        self.events = Counter(
            "exftp_events", "Session events, by protocol (ftp, ftps, sftp), action and result.",
            ["protocol", "action", "result"], registry=where,
        )
        self.error_replies = Counter(
            "exftp_error_replies", "Error replies (4xx, 5xx) sent, by code.", ["code"], registry=where
        )
        self.sessions = Gauge("exftp_sessions", "Control connections open.", registry=where)
        self.passive_ports = Gauge("exftp_passive_ports_in_use", "Passive data ports listening.", registry=where)
        calls = ["call", "result"]
        self.auth_seconds = Histogram(
            "exftp_auth_seconds", "Time taken by authenticator calls, by call and result.", calls, registry=where
        )
        self.storage_seconds = Histogram(
            "exftp_storage_seconds", "Time taken by storage calls, by call and result.", calls, registry=where
        )

    def __call__(self, event: FTPEvent) -> None:
        result = "ok" if event.ok else "failed"
        self.events.labels(protocol=event.protocol, action=event.action.value, result=result).inc()
        if event.action in (Action.LOGIN, Action.LOGIN_FAILED):
            self.logins.labels(result=result).inc()
        elif event.action in _DIRECTIONS:
            direction = _DIRECTIONS[event.action]
            self.transfers.labels(direction=direction, result=result).inc()
            self.transfer_bytes.labels(direction=direction).inc(event.bytes)
        elif event.action in _OPERATIONS:
            self.operations.labels(action=event.action.value, result=result).inc()

    def authenticator(self, authenticator: IAuthenticator) -> IAuthenticator:
        """C{authenticator}, its calls timed."""
        return TimedAuthenticator(authenticator, self.auth_seconds, self.clock)

    def storage_factory(self, storage_factory: IStorageFactory) -> IStorageFactory:
        """C{storage_factory}, its calls and those of its storages timed."""
        return TimedStorageFactory(storage_factory, self.storage_seconds, self.clock)

    def bind(self, factory: FTPFactory) -> None:
        """Observe C{factory}: its events, sessions, passive ports and error replies."""
        if self not in factory.observers:
            factory.observers.append(self)
        self.sessions.set_function(lambda: len(factory.sessions))
        self.passive_ports.set_function(lambda: factory.passive_listeners)
        factory.reply_observers.append(self._count_reply)

    def _count_reply(self, code: int) -> None:
        if code >= 400:
            self.error_replies.labels(code=str(code)).inc()

    def resource(self) -> Resource:
        """
        The metrics page, to serve at C{/metrics} of your own site
        (C{root.putChild(b"metrics", metrics.resource())}); paths below it are 404.
        """
        return MetricsResource(self.registry)

    def site(self) -> Site:
        """A web site with the metrics at C{/metrics} and nothing else (what C{--metrics} serves)."""
        root = _NotFound()
        root.putChild(b"metrics", self.resource())
        site = Site(root)
        site.noisy = False
        return site


class _NotFound(Resource):
    """A resource whose unknown children are 404 pages."""

    def getChild(self, path: bytes, request: Request) -> Resource:
        return notFound()  # type: ignore[return-value]

    def render_GET(self, request: Request) -> bytes:
        return self.getChild(b"", request).render(request)  # type: ignore[no-any-return]

