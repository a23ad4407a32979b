"""
The factory: configuration shared by every session of one server.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ._defender import Defender
from ._errors import DataConnectionFailed
from ._events import EventObserver, FTPEvent
from ._interfaces import IAuthenticator, IStorageFactory
from ._protocol import FTPProtocol
from ._proxy import IPNetwork
from ._tls import TLSPolicy, TLSSettings

#: Seconds between checks of the sessions' idle timeouts and login deadlines:
#: one timer for the server instead of two per session (one reset per line).
SWEEP_INTERVAL = 1.0

_log = Logger(namespace="exftp")
#: The text of the 421 that refuses a banned address.
BANNED = "Too many failed logins from your address; try again later."
_DEFAULT: Any = object()


class FTPFactory(ServerFactory):
    """
    Builds an L{FTPProtocol} for each control connection.

    @param authenticator: decides who may log in.
    @param storage_factory: gives each logged-in session its storage.
    @param reactor: the reactor; the global one when omitted.
    @param banner: the text of the 220 greeting.
    @param passive_ports: the ports PASV/EPSV may listen on, or C{None} for any.
    @param passive_address: the IPv4 address announced in PASV replies
        (a public or NAT address); C{"connected"} for the address the client
        connected to (a balancer's, from its PROXY header); C{None} for the
        control connection's local address.
    @param trusted_proxies: balancers that forward passive ports: their
        connections to a passive port must start with a PROXY header naming
        the client (see L{exftp._proxy}); others connect as they are.
    @param idle_timeout: seconds without a command before a session is closed (421).
    @param data_timeout: seconds to wait for a data connection.
    @param allow_foreign_addresses: let PORT/EPRT name hosts other than the
        client and privileged ports (FXP); unsafe, off by default (RFC 2577).
    @param max_line_length: the longest command line accepted.
    @param virtual_hosts: host names accepted by HOST (RFC 7151), or C{None}
        to accept any name for the one default host.
    @param max_sessions: control connections allowed at once; more get 421.
    @param max_sessions_per_ip: control connections allowed at once from one address.
    @param max_passive_listeners: passive data ports open at once; more get 425.
    @param max_passive_listeners_per_ip: passive data ports open at once for
        one client address (its share of C{max_passive_listeners}); more get 425.
    @param login_timeout: seconds a connection may take to log in (421 after).
    @param stalled_timeout: seconds without a byte moving after which a
        transfer is aborted (426); 0 disables it.
    @param defender: bans addresses after repeated failed logins; C{None}
        disables it (the default is L{Defender}'s: 20 failures in 10 minutes
        ban for 15 minutes).
    @param tls: the certificate for AUTH TLS (explicit FTPS), or C{None}.
    @param tls_policy: what FTPS requires of clients (TLS before login, PROT P, session reuse).
    @param observers: callables told about every L{FTPEvent} (logins, transfers,
        changes); they must not block. More can be added to C{observers} later.
    @param login_failure_delay: seconds after PASS before a failed login is
        answered (slows password guessing).
    @param max_login_failures: failed logins after which the connection is closed.
    """

    protocol = FTPProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(
        self,
        authenticator: IAuthenticator,
        storage_factory: IStorageFactory,
        *,
        reactor: Any = None,
        banner: str = "exftp ready.",
        passive_ports: range | None = None,
        passive_address: str | None = None,
        idle_timeout: float = 900.0,
        data_timeout: float = 60.0,
        allow_foreign_addresses: bool = False,
        max_line_length: int = 8192,
        virtual_hosts: frozenset[str] | None = None,
        tls: TLSSettings | None = None,
        tls_policy: TLSPolicy | None = None,
        observers: Iterable[EventObserver] = (),
        max_sessions: int = 1000,
        max_sessions_per_ip: int = 50,
        max_passive_listeners: int = 1000,
        max_passive_listeners_per_ip: int = 20,
        login_timeout: float = 60.0,
        stalled_timeout: float = 300.0,
        defender: Defender | None = _DEFAULT,  # type: ignore[assignment]
        login_failure_delay: float = 1.0,
        max_login_failures: int = 3,
        trusted_proxies: Iterable[IPNetwork] = (),
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.reactor = reactor
        self.authenticator = authenticator
        self.storage_factory = storage_factory
        self.banner = banner
        self.passive_ports = passive_ports
        self.passive_address = passive_address
        self.trusted_proxies = tuple(trusted_proxies)
        self.idle_timeout = idle_timeout
        self.data_timeout = data_timeout
        self.allow_foreign_addresses = allow_foreign_addresses
        self.max_line_length = max_line_length
        self.tls = tls
        self.observers: list[EventObserver] = list(observers)
        #: Callables told the code of every reply sent (e.g. to count errors).
        self.reply_observers: list[Callable[[int], None]] = []
        self.tls_policy = tls_policy or TLSPolicy()
        self.virtual_hosts = None if virtual_hosts is None else frozenset(h.lower() for h in virtual_hosts)
        self.login_failure_delay = login_failure_delay
        self.max_login_failures = max_login_failures
        self.max_sessions = max_sessions
        self.max_sessions_per_ip = max_sessions_per_ip
        self.max_passive_listeners = max_passive_listeners
        self.max_passive_listeners_per_ip = max_passive_listeners_per_ip
        self.login_timeout = login_timeout
        self.stalled_timeout = stalled_timeout
        self.defender = Defender() if defender is _DEFAULT else defender
        self.sessions: set[FTPProtocol] = set()
        self._passive_per_address: Counter[str] = Counter()
        self._per_address: Counter[str] = Counter()
        self._sweeper: LoopingCall | None = None

    def admit(self, session: FTPProtocol) -> str | None:
        """
        Register a new control connection, unless a limit or a ban refuses it.

        @return: C{None} when admitted, else the text of the 421 reply.
        """
        address = session.peer_host or ""
        banned = self.ban_refusal(address)
        if banned is not None:
            return banned
        if len(self.sessions) >= self.max_sessions:
            return "Too many connections; try again later."
        if self._per_address[address] >= self.max_sessions_per_ip:
            return "Too many connections from your address; try again later."
        self.sessions.add(session)
        self._per_address[address] += 1
        if self._sweeper is None and (self.idle_timeout or self.login_timeout):
            self._sweeper = LoopingCall(self._sweep)
            self._sweeper.clock = self.reactor
            self._sweeper.start(SWEEP_INTERVAL, now=False)
        return None

    def _sweep(self) -> None:
        """Close the sessions past their idle timeout or login deadline."""
        now = self.reactor.seconds()
        for session in list(self.sessions):
            session.check_deadlines(now)

    def release(self, session: FTPProtocol) -> None:
        """Forget a control connection that L{admit} registered."""
        if session in self.sessions:
            self.sessions.remove(session)
            address = session.peer_host or ""
            self._per_address[address] -= 1
            if self._per_address[address] <= 0:
                del self._per_address[address]
            if not self.sessions and self._sweeper is not None:
                self._sweeper.stop()
                self._sweeper = None

    def ban_refusal(self, address: str | None) -> str | None:
        """
        The text of the 421 that refuses C{address} while the defender bans
        it, else C{None}. Asked when a connection is accepted and again at
        every PASS, so that sessions opened before the ban cannot go on guessing.
        """
        if self.defender is None or address is None:
            return None
        return BANNED if self.defender.is_banned(address, self.reactor.seconds()) else None

    def login_failed(self, address: str | None) -> str | None:
        """
        Tell the defender about a failed login.

        @return: the text of the 421 when this failure got the address
            banned, else C{None}.
        """
        if self.defender is None or address is None:
            return None
        now = self.reactor.seconds()
        if not self.defender.failed(address, now):
            return None
        _log.warn(
            "Banned {address} for {seconds:.0f}s after repeated failed logins; banned now: {bans}",
            address=address,
            seconds=self.defender.ban_seconds,
            bans=sorted(self.defender.banned(now)),
        )
        return BANNED

    def emit(self, event: FTPEvent) -> None:
        """Pass C{event} to every observer; an observer's error is logged, never raised."""
        for observer in list(self.observers):
            try:
                observer(event)
            except Exception:
                _log.failure("Event observer {observer!r} failed", observer=observer)

    @property
    def passive_listeners(self) -> int:
        """The passive data ports open now."""
        return self._passive_per_address.total()

    def open_passive_listener(self, address: str | None) -> Callable[[], None]:
        """
        Count a passive listener for the client at C{address}, within the
        server's limit and that address's share of it.

        @return: the call that counts it down again; only its first call counts.
        @raise DataConnectionFailed: (425) when a limit is reached.
        """
        key = address or ""
        if self.passive_listeners >= self.max_passive_listeners:
            raise DataConnectionFailed("Too many passive connections; try again later.")
        if self._passive_per_address[key] >= self.max_passive_listeners_per_ip:
            raise DataConnectionFailed("Too many passive connections from your address; try again later.")
        self._passive_per_address[key] += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self._passive_per_address[key] -= 1
            if self._passive_per_address[key] <= 0:
                del self._passive_per_address[key]

        return release

    def shutdown(self, grace: float = 0.0) -> Deferred[Any]:
        """
        Close every session with 421.

        @param grace: seconds that running transfers may take to finish
            (idle sessions are closed at once); after it they are aborted.
        @return: a Deferred that fires once every session is closed and its
            clean-up (e.g. aborting an upload) is done.
        """
        sessions = list(self.sessions)
        if sessions:
            _log.info("Closing {count} sessions for shutdown", count=len(sessions))
        for session in sessions:
            session.shutdown(graceful=grace > 0)
        closed: Deferred[Any] = DeferredList([session.closed for session in sessions])
        if grace > 0 and sessions:

            def force() -> None:
                for session in sessions:
                    if not session.closed.called:
                        session.shutdown()

            timer = self.reactor.callLater(grace, force)

            def cancel_force(result: Any) -> Any:
                if timer.active():
                    timer.cancel()
                return result

            closed.addBoth(cancel_force)
        return closed
