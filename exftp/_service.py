"""
What C{twistd exftp} runs, built from a L{Config} value: for applications
that compose exftp into their own Twisted service tree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IProtocolFactory
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized

from ._cleanup import DEFAULT_MAX_AGE, CleanupService
from ._defender import Defender
from ._events import Action, FTPEvent
from ._factory import FTPFactory
from ._hooks import HookQueue, WebhookHook
from ._httpclient import redacted
from ._interfaces import IAuthenticator, IStorageFactory, UserLimits
from ._proxy import IPNetwork, server_endpoint
from ._tls import TLSPolicy, TLSSettings
from ._xferlog import TransferLog

__all__ = ["DEFAULT_PORT", "Config", "ServerService", "build_service"]

_log = Logger(namespace="exftp")

#: Where exftp listens unless told otherwise.
DEFAULT_PORT = "tcp:2121:interface=127.0.0.1"

#: Endpoint kinds whose listen backlog exftp raises from Twisted's 50.
_BACKLOG_KINDS = ("tcp:", "tcp6:", "ssl:")
#: The listen backlog given to those endpoints unless the string sets one.
DEFAULT_BACKLOG = 1024


def with_backlog(description: str) -> str:
    """
    Add C{backlog=1024} to a TCP or SSL endpoint string (also behind a
    C{haproxy:} prefix) that sets none, so that a burst of clients is queued
    rather than dropped (Twisted's default is 50).
    """
    inner = description.removeprefix("haproxy:")
    if not inner.startswith(_BACKLOG_KINDS) or "backlog=" in inner:
        return description
    return f"{description}:backlog={DEFAULT_BACKLOG}"


@dataclass(frozen=True, kw_only=True)
class Config:
    """
    Everything C{twistd exftp} is told, as one value: each field is the
    command-line option of the same name (C{idle_timeout} is
    C{--idle-timeout}), with the same default, already parsed.

    @ivar authenticator: who may log in (C{--auth}).
    @ivar storage_factory: where files live (C{--storage}, C{--root}).
    @ivar ports: Twisted server endpoint strings to listen on (C{--port}).
    @ivar passive_ports: the passive data ports, or C{None} for any free port.
    @ivar trusted_proxies: the balancers whose PROXY headers C{haproxy:} ports believe.
    @ivar tls_cert: PEM certificate (and chain) for AUTH TLS; with C{tls_key}.
    @ivar cleanup_age: at start, remove any node's upload leftovers older than
        this many seconds (0: only this node's own).
    @ivar xferlog: append a transfer log to this file.
    @ivar metrics: serve Prometheus metrics at C{/metrics} on this endpoint
        (needs C{prometheus_client}).
    @ivar hooks: callables given every event (C{--hook}).
    @ivar webhooks: URLs every event is POSTed to (C{--webhook}).
    @ivar hook_events: the actions hooks and webhooks get, or C{None} for all.
    @ivar max_file_size: the largest upload, in bytes, of users whose own
        limits set none (0: any size); likewise C{upload_rate} and
        C{download_rate}, in bytes per second for all of a user's sessions.
    @ivar sftp_ports: Twisted server endpoint strings to serve SFTP on
        (C{--sftp}; needs C{exftp[sftp]}).
    @ivar ssh_host_keys: the SSH host keys (Conch C{Key}s), needed with C{sftp_ports}.
    """

    authenticator: IAuthenticator
    storage_factory: IStorageFactory
    ports: Sequence[str] = (DEFAULT_PORT,)
    banner: str = "exftp ready."
    passive_ports: range | None = None
    passive_address: str | None = None
    idle_timeout: float = 900.0
    data_timeout: float = 60.0
    login_failure_delay: float = 1.0
    max_login_failures: int = 3
    login_timeout: float = 60.0
    stalled_timeout: float = 300.0
    max_sessions: int = 1000
    max_sessions_per_ip: int = 50
    max_passive_listeners: int = 1000
    max_file_size: int = 0
    upload_rate: int = 0
    download_rate: int = 0
    max_passive_listeners_per_ip: int = 20
    ban_threshold: int = 20
    ban_window: float = 600.0
    ban_time: float = 900.0
    allow_foreign_addresses: bool = False
    trusted_proxies: Sequence[IPNetwork] = ()
    tls_cert: str | None = None
    tls_key: str | None = None
    require_tls: bool = False
    require_prot_p: bool = False
    require_tls_reuse: bool = False
    shutdown_grace: float = 10.0
    cleanup_age: float = DEFAULT_MAX_AGE
    xferlog: str | None = None
    metrics: str | None = None
    hooks: Sequence[Callable[[FTPEvent], object]] = ()
    webhooks: Sequence[str] = ()
    hook_events: frozenset[Action] | None = None
    hook_queue: int = 1000
    hook_retries: int = 5
    hook_timeout: float = 10.0
    sftp_ports: Sequence[str] = ()
    ssh_host_keys: Sequence[Any] = ()


class ServerService(service.MultiService):
    """
    The service tree of one exftp server (see L{build_service}).

    @ivar factory: the L{FTPFactory} every port serves.
    @ivar metrics: the L{exftp.Metrics}, when C{Config.metrics} is set.
    @ivar log_observer: when set before the service joins a twistd
        application, twistd's log observer.
    """

    def __init__(self, factory: FTPFactory, metrics: Any = None) -> None:
        super().__init__()
        self.factory = factory
        self.metrics = metrics
        self.log_observer: ILogObserver | None = None
        self.reloads: list[Callable[[], object]] = []

    def reload(self) -> None:
        """
        Reload the TLS certificate, reopen the transfer log (after it was
        rotated) and reload an authenticator that has a C{reload()} method
        (the users file); C{twistd exftp} does this on SIGHUP.
        """
        if not self.reloads:
            _log.info("SIGHUP received: nothing to reload")
        for action in self.reloads:
            try:
                action()
            except Exception:
                _log.failure("Reloading {action!r} failed", action=action)

    def setServiceParent(self, parent: Any) -> None:
        if self.log_observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self.log_observer)
        super().setServiceParent(parent)


class ListeningService(service.Service):
    """Listens on one endpoint and logs the address it got (port 0 included)."""

    def __init__(
        self,
        description: str,
        factory: IProtocolFactory,
        reactor: Any,
        announcement: str = "exftp listening on {host}:{port}",
        trusted_proxies: Sequence[IPNetwork] = (),
    ) -> None:
        self.description = description
        self.factory = factory
        self.reactor = reactor
        self.trusted_proxies = trusted_proxies
        self.announcement = announcement
        self._port: Any = None

    def startService(self) -> None:
        super().startService()
        endpoint = server_endpoint(self.reactor, self.description, self.trusted_proxies)
        failures: list[Any] = []
        endpoint.listen(self.factory).addCallbacks(self._listening, failures.append)
        if failures:
            reason = failures[0].getErrorMessage()
            raise SystemExit(f"exftp: cannot listen on {self.description}: {reason}")

    def _listening(self, port: Any) -> None:
        self._port = port
        address = port.getHost()
        # Announce readiness once the reactor runs (and its signal handlers are in place).
        self.reactor.callWhenRunning(_log.info, self.announcement, host=address.host, port=address.port)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._port is not None:
            return self._port.stopListening()  # type: ignore[no-any-return]
        return None


class _ShutdownService(service.Service):
    """
    On stop, lets transfers finish for a while, sends 421 to every session
    and waits for them to close; then runs the clean-ups (hooks deliver what
    is left, the transfer log is written out).
    """

    def __init__(self, factory: FTPFactory, grace: float, cleanups: Sequence[Callable[[], Any]] = ()) -> None:
        self.factory = factory
        self.grace = grace
        self.cleanups = list(cleanups)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        closed = self.factory.shutdown(self.grace)
        return closed.addBoth(lambda _: DeferredList([self._clean_up(cleanup) for cleanup in self.cleanups]))

    @staticmethod
    def _clean_up(cleanup: Callable[[], Any]) -> Deferred[Any]:
        """Run one clean-up; its failure is logged."""
        running = maybeDeferred(cleanup)
        return running.addErrback(lambda failure: _log.failure("Clean-up {c!r} failed", failure, c=cleanup))


def _name_of(hook: Callable[..., object]) -> str:
    """A hook's dotted name, for the log."""
    name = getattr(hook, "__qualname__", None)
    return f"{getattr(hook, '__module__', '?')}.{name}" if name else repr(hook)


def _hook_queues(config: Config, reactor: Any) -> tuple[list[HookQueue], list[Callable[[], Any]]]:
    """The hook queues that C{config} asks for, and their clean-ups (deliver what is left, close)."""
    settings = {
        "reactor": reactor,
        "actions": config.hook_events,
        "max_queue": config.hook_queue,
        "retries": config.hook_retries,
    }
    queues: list[HookQueue] = []
    cleanups: list[Callable[[], Any]] = []
    for hook in config.hooks:
        queue = HookQueue(hook, _name_of(hook), **settings)
        queues.append(queue)
        cleanups.append(partial(queue.stop, config.hook_timeout))
    for url in config.webhooks:
        webhook = WebhookHook(url, timeout=config.hook_timeout, reactor=reactor)
        queue = HookQueue(webhook, redacted(url), **settings)
        queues.append(queue)
        cleanups.append(partial(_stop_webhook, queue, webhook, config.hook_timeout))
    return queues, cleanups


def _stop_webhook(queue: HookQueue, webhook: WebhookHook, timeout: float) -> Deferred[None]:
    """Let a webhook's queue deliver what is left, then close its connections."""
    return queue.stop(timeout).addBoth(lambda _: webhook.close())


def _factory(
    config: Config, authenticator: IAuthenticator, storage_factory: IStorageFactory, reactor: Any
) -> FTPFactory:
    """The FTP factory that C{config} describes."""
    tls = None
    if config.tls_cert is not None or config.tls_key is not None:
        if config.tls_cert is None or config.tls_key is None:
            raise ValueError("tls_cert and tls_key go together")
        tls = TLSSettings(config.tls_cert, config.tls_key, config.require_tls_reuse)
    return FTPFactory(
        authenticator,
        storage_factory,
        reactor=reactor,
        banner=config.banner,
        passive_ports=config.passive_ports,
        passive_address=config.passive_address,
        idle_timeout=config.idle_timeout,
        data_timeout=config.data_timeout,
        allow_foreign_addresses=config.allow_foreign_addresses,
        login_failure_delay=config.login_failure_delay,
        max_login_failures=config.max_login_failures,
        login_timeout=config.login_timeout,
        stalled_timeout=config.stalled_timeout,
        max_sessions=config.max_sessions,
        max_sessions_per_ip=config.max_sessions_per_ip,
        max_passive_listeners=config.max_passive_listeners,
        max_passive_listeners_per_ip=config.max_passive_listeners_per_ip,
        trusted_proxies=config.trusted_proxies,
        default_limits=UserLimits(
            max_file_size=config.max_file_size or None,
            upload_rate=config.upload_rate or None,
            download_rate=config.download_rate or None,
        ),
        tls=tls,
        tls_policy=TLSPolicy(
            require_tls=config.require_tls,
            require_protected_data=config.require_prot_p,
            require_session_reuse=config.require_tls_reuse,
        ),
        defender=Defender(config.ban_threshold, config.ban_window, config.ban_time)
        if config.ban_threshold > 0
        else None,
    )


def build_service(config: Config, reactor: Any = None) -> ServerService:
    """
    Build exactly what C{twistd exftp} runs: the FTP ports, graceful
    shutdown (C{shutdown_grace}), clean-up of upload leftovers, hooks and
    webhooks, the transfer log and the metrics endpoint. Add it to your
    application (C{setServiceParent}) or start it (C{startService}); stop it
    to shut down gracefully. Logging is the application's: see
    L{exftp.log_observer}. No signal handler is installed; call
    L{ServerService.reload} on SIGHUP if you want twistd's behaviour.

    @param reactor: the reactor; the global one when omitted.
    @raise ValueError: for a TLS certificate that cannot be loaded.
    @raise ImportError: for C{metrics} without C{prometheus_client}.
    """
    authenticator, storage_factory = config.authenticator, config.storage_factory
    metrics = None
    if config.metrics is not None:
        from ._metrics import Metrics

        metrics = Metrics()
        authenticator = metrics.authenticator(authenticator)
        storage_factory = metrics.storage_factory(storage_factory)
    factory = _factory(config, authenticator, storage_factory, reactor)
    reactor = factory.reactor
    top = ServerService(factory, metrics)
    if factory.tls is not None:
        top.reloads.append(factory.tls.reload)
    reload_users = getattr(config.authenticator, "reload", None)
    if reload_users is not None:
        top.reloads.append(reload_users)  # the users file (--users)
    cleanups: list[Callable[[], Any]] = []
    if config.xferlog is not None:
        transfer_log = TransferLog(config.xferlog, reactor=reactor)
        factory.observers.append(transfer_log)
        cleanups.append(transfer_log.close)
        top.reloads.append(transfer_log.reopen)
    close_storage = getattr(config.storage_factory, "close", None)
    if close_storage is not None:
        cleanups.append(close_storage)  # e.g. the S3 connection pool and its background aborts
    queues, hook_cleanups = _hook_queues(config, reactor)
    factory.observers.extend(queues)
    cleanups.extend(hook_cleanups)
    _ShutdownService(factory, config.shutdown_grace, cleanups).setServiceParent(top)
    CleanupService(config.storage_factory, config.cleanup_age or None).setServiceParent(top)
    for description in config.ports:
        proxies = config.trusted_proxies
        ListeningService(with_backlog(description), factory, reactor, trusted_proxies=proxies).setServiceParent(top)
    _sftp_services(config, factory, top)
    if metrics is not None and config.metrics is not None:
        metrics.bind(factory)
        announcement = "exftp metrics at http://{host}:{port}/metrics"
        ListeningService(config.metrics, metrics.site(), reactor, announcement).setServiceParent(top)
    return top


def _sftp_services(config: Config, factory: FTPFactory, top: ServerService) -> None:
    """Serve SFTP on C{config.sftp_ports} with the FTP server's policy; log the host keys' fingerprints."""
    if not config.sftp_ports:
        return
    from .sftp import SFTPFactory, fingerprint

    if not config.ssh_host_keys:
        raise ValueError("sftp_ports need ssh_host_keys")
    reactor = factory.reactor
    sftp = SFTPFactory(factory, config.ssh_host_keys)
    for key in config.ssh_host_keys:
        reactor.callWhenRunning(_log.info, "SSH host key: {fingerprint}", fingerprint=fingerprint(key))
    for description in config.sftp_ports:
        ListeningService(
            with_backlog(description), sftp, reactor, "exftp SFTP listening on {host}:{port}",
            trusted_proxies=config.trusted_proxies,
        ).setServiceParent(top)
