"""
The factory: configuration shared by every session of one server.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger

from ._interfaces import IAuthenticator, IStorageFactory
from ._protocol import FTPProtocol

_log = Logger(namespace="exftp")


class FTPFactory(ServerFactory):
    """
    Builds an L{FTPProtocol} for each control connection.

    @param authenticator: decides who may log in.
    @param storage_factory: gives each logged-in session its storage.
    @param reactor: the reactor; the global one when omitted.
    @param banner: the text of the 220 greeting.
    @param passive_ports: the ports PASV/EPSV may listen on, or C{None} for any.
    @param passive_address: the IPv4 address announced in PASV replies
        (a public or NAT address), or C{None} for the control connection's.
    @param idle_timeout: seconds without a command before a session is closed (421).
    @param data_timeout: seconds to wait for a data connection.
    @param allow_foreign_addresses: let PORT/EPRT name hosts other than the
        client and privileged ports (FXP); unsafe, off by default (RFC 2577).
    @param max_line_length: the longest command line accepted.
    @param virtual_hosts: host names accepted by HOST (RFC 7151), or C{None}
        to accept any name for the one default host.
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
        login_failure_delay: float = 1.0,
        max_login_failures: int = 3,
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
        self.idle_timeout = idle_timeout
        self.data_timeout = data_timeout
        self.allow_foreign_addresses = allow_foreign_addresses
        self.max_line_length = max_line_length
        self.virtual_hosts = None if virtual_hosts is None else frozenset(h.lower() for h in virtual_hosts)
        self.login_failure_delay = login_failure_delay
        self.max_login_failures = max_login_failures
        self.sessions: set[FTPProtocol] = set()

    def shutdown(self) -> Deferred[Any]:
        """
        Send 421 to every session and close them.

        @return: a Deferred that fires once every control connection is closed.
        """
        sessions = list(self.sessions)
        for session in sessions:
            session.shutdown()
        if sessions:
            _log.info("Closing {count} sessions for shutdown", count=len(sessions))
        return DeferredList([session.closed for session in sessions])
