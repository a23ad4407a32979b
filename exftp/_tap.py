"""
The C{twistd exftp} command: options and the service they build.
"""

from __future__ import annotations

import ipaddress
import os
import signal
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application import service
from twisted.cred import strcred
from twisted.cred.credentials import IUsernamePassword
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactor
from twisted.logger import Logger
from twisted.python import usage

from ._defender import Defender
from ._factory import FTPFactory
from ._interfaces import IAuthenticator, IStorageFactory
from ._tls import TLSPolicy, TLSSettings
from .auth._cred import CredentialsCheckerAuthenticator
from .auth._http import HTTP_AUTHENTICATORS, authenticator_from_spec
from .auth._simple import AnonymousAuthenticator, NoAuthAuthenticator, PassthroughAuthenticator
from .storage._local import FileStorageFactory
from .storage._memory import MemoryStorageFactory

_log = Logger(namespace="exftp")

DEFAULT_PORT = "tcp:2121:interface=127.0.0.1"

_AUTHENTICATORS: dict[str, Callable[[], IAuthenticator]] = {
    "anonymous": AnonymousAuthenticator,
    "noauth": NoAuthAuthenticator,
    "passthrough": PassthroughAuthenticator,
}


def make_authenticator(spec: str, options: Mapping[str, str] | None = None) -> IAuthenticator:
    """
    Build an authenticator from an C{--auth} string: C{anonymous},
    C{noauth}, C{passthrough}, an HTTP authenticator C{KIND:URL} (KIND one
    of L{HTTP_AUTHENTICATORS}, configured further by C{options}), or any
    C{twisted.cred.strcred} checker string (C{memory:alice:secret},
    C{file:/etc/ftp.passwd}, C{unix}).

    @raise usage.UsageError: when the string names nothing usable.
    """
    options = options or {}
    kind, _, argument = spec.partition(":")
    if kind in HTTP_AUTHENTICATORS:
        try:
            return authenticator_from_spec(kind, argument, options)
        except ValueError as error:
            raise usage.UsageError(f"--auth {kind}: {error}") from None
    if options:
        raise usage.UsageError(f"--auth-option is only for the HTTP authenticators, not {kind}")
    if spec in _AUTHENTICATORS:
        return _AUTHENTICATORS[spec]()
    try:
        checker = strcred.makeChecker(spec)
    except (strcred.InvalidAuthType, strcred.InvalidAuthArgumentString) as error:
        raise usage.UsageError(f"--auth {spec}: {error}") from None
    if IUsernamePassword not in checker.credentialInterfaces:
        raise usage.UsageError(f"--auth {spec}: this checker does not check user names and passwords")
    return CredentialsCheckerAuthenticator(checker)


def make_storage_factory(spec: str) -> IStorageFactory:
    """
    Build a storage factory from a C{--storage} string: C{file:DIR},
    C{memory} or C{s3:bucket=NAME[:prefix=P][:region=R]...}.

    @raise usage.UsageError: when the string names nothing usable.
    """
    kind, _, argument = spec.partition(":")
    if kind == "s3":
        from .storage._s3 import storage_factory_from_spec

        try:
            return storage_factory_from_spec(argument)
        except ValueError as error:
            raise usage.UsageError(f"--storage s3: {error}") from None
    if kind == "file":
        directory = argument or "."
        if not os.path.isdir(directory):
            raise usage.UsageError(f"--storage {spec}: {directory} is not a directory")
        return FileStorageFactory(directory)
    if kind == "memory" and not argument:
        return MemoryStorageFactory()
    raise usage.UsageError(f"--storage {spec}: unknown storage (use file:DIR, memory or s3:bucket=NAME)")


def parse_port_range(text: str) -> range:
    """Parse C{40000-40100} (inclusive) into a range of ports."""
    low, sep, high = text.partition("-")
    try:
        first, last = int(low), int(high if sep else low)
    except ValueError:
        raise usage.UsageError(f"--passive-ports {text}: expected LOW-HIGH") from None
    if not 1 <= first <= last <= 65535:
        raise usage.UsageError(f"--passive-ports {text}: ports must be 1-65535, LOW <= HIGH")
    return range(first, last + 1)


#: Numeric options that must be 0 or more.
_NON_NEGATIVE = (
    "idle-timeout",
    "data-timeout",
    "login-failure-delay",
    "max-login-failures",
    "login-timeout",
    "shutdown-grace",
    "stalled-timeout",
    "max-sessions",
    "max-sessions-per-ip",
    "max-passive-listeners",
    "ban-threshold",
    "ban-window",
    "ban-time",
)


def check_endpoint(description: str) -> None:
    """
    Check that C{description} is a server endpoint string, without listening.

    @raise usage.UsageError: when Twisted cannot parse it.
    """
    try:
        endpoints.serverFromString(MemoryReactor(), description)
    except Exception as error:
        raise usage.UsageError(f"--port {description}: {error}") from None


def check_ipv4(address: str) -> None:
    """
    Check that C{address} is an IPv4 address (PASV can only announce IPv4).

    @raise usage.UsageError: when it is not.
    """
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        raise usage.UsageError(f"--passive-address {address}: must be an IPv4 address") from None


class Options(usage.Options, strcred.AuthOptionMixin):
    """Command-line options of C{twistd exftp}."""

    synopsis = "[options]"
    longdesc = (
        "Run the exftp FTP server. By default it listens on 127.0.0.1:2121, serves the "
        "current directory and allows anonymous read-only logins."
    )
    supportedInterfaces = [IUsernamePassword]

    optParameters = [
        ["root", "r", None, "Serve this directory (shorthand for --storage file:DIR)."],
        ["storage", "s", None, "Storage: file:DIR, memory or s3:bucket=NAME[:prefix=P]. Default: file:<cwd>."],
        ["passive-ports", None, None, "Port range for passive data connections, e.g. 40000-40100."],
        ["passive-address", None, None, "IPv4 address to announce in PASV replies (public/NAT address)."],
        ["idle-timeout", None, 900.0, "Seconds of control-connection inactivity before 421 (0: never).", float],
        ["data-timeout", None, 60.0, "Seconds to wait for a data connection.", float],
        ["banner", None, "exftp ready.", "Greeting text of the 220 reply."],
        ["tls-cert", None, None, "PEM certificate (chain may follow) for AUTH TLS; reloaded on SIGHUP."],
        ["tls-key", None, None, "PEM private key for --tls-cert."],
        ["login-failure-delay", None, 1.0, "Seconds before a failed login is answered.", float],
        ["max-login-failures", None, 3, "Failed logins after which the connection is closed.", int],
        ["shutdown-grace", None, 10.0, "Seconds running transfers may take to finish on shutdown.", float],
        ["login-timeout", None, 60.0, "Seconds a client may take to log in.", float],
        ["stalled-timeout", None, 300.0, "Seconds without data moving before a transfer is aborted (0: never).", float],
        ["max-sessions", None, 1000, "Control connections allowed at once.", int],
        ["max-sessions-per-ip", None, 50, "Control connections allowed at once from one address.", int],
        ["max-passive-listeners", None, 1000, "Passive data ports open at once.", int],
        ["ban-threshold", None, 20, "Failed logins from one address within --ban-window that ban it (0: off).", int],
        ["ban-window", None, 600.0, "Seconds over which failed logins are counted for a ban.", float],
        ["ban-time", None, 900.0, "Seconds a banned address is refused.", float],
    ]
    optFlags = [
        ["allow-foreign-addresses", None, "Allow PORT/EPRT to other hosts and low ports (FXP; unsafe)."],
        ["require-tls", None, "Refuse USER/PASS before AUTH TLS (needs --tls-cert, or an ssl: port)."],
        ["require-prot-p", None, "Refuse transfers unless the data connection is protected (PROT P)."],
        ["require-tls-reuse", None, "Refuse TLS data connections that do not resume the control session."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["ports"] = []
        self["auth"] = "anonymous"
        self["auth_options"] = {}

    def opt_port(self, spec: str) -> None:
        """
        Listen on this Twisted endpoint (repeatable), e.g. tcp:2121 or
        ssl:990:privateKey=key.pem. Default: tcp:2121:interface=127.0.0.1
        """
        self["ports"].append(spec)

    opt_p = opt_port

    def opt_auth(self, spec: str) -> None:  # type: ignore[override]
        """
        Who may log in: anonymous (default, read-only), noauth, passthrough, http-basic:URL,
        http-digest:URL, bearer:URL, webhook:URL, or a twisted.cred string such as
        memory:alice:secret, file:PATH or unix.
        """
        self["auth"] = spec

    def opt_auth_option(self, setting: str) -> None:
        """
        KEY=VALUE for an HTTP authenticator (repeatable): login_method,
        authenticated_url, authenticated_method, authenticated_ttl_ms,
        password_hash_type, timeout.
        """
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise usage.UsageError(f"--auth-option {setting}: expected KEY=VALUE")
        if key in self["auth_options"]:
            raise usage.UsageError(f"--auth-option {key}: given twice")
        self["auth_options"][key] = value

    def postOptions(self) -> None:
        if self["root"] and self["storage"]:
            raise usage.UsageError("Use either --root or --storage, not both.")
        storage = self["storage"] or f"file:{self['root'] or os.getcwd()}"
        self["storage_factory"] = make_storage_factory(storage)
        self["authenticator"] = make_authenticator(self["auth"], self["auth_options"])
        self["passive_range"] = parse_port_range(self["passive-ports"]) if self["passive-ports"] else None
        if not self["ports"]:
            self["ports"] = [DEFAULT_PORT]
        for description in self["ports"]:
            check_endpoint(description)
        if self["passive-address"] is not None:
            check_ipv4(self["passive-address"])
        if bool(self["tls-cert"]) != bool(self["tls-key"]):
            raise usage.UsageError("--tls-cert and --tls-key go together")
        self["tls"] = None
        if self["tls-cert"]:
            try:
                self["tls"] = TLSSettings(self["tls-cert"], self["tls-key"])
            except ValueError as error:
                raise usage.UsageError(f"--tls-cert: {error}") from None
        implicit = any(d.startswith("ssl:") for d in self["ports"])
        if (self["require-tls"] or self["require-prot-p"]) and self["tls"] is None and not implicit:
            raise usage.UsageError("--require-tls and --require-prot-p need --tls-cert/--tls-key or an ssl: port")
        for name in _NON_NEGATIVE:
            if self[name] < 0:
                raise usage.UsageError(f"--{name} {self[name]}: must not be negative")


class _ListeningService(service.Service):
    """Listens on one endpoint and logs the address it got (port 0 included)."""

    def __init__(self, description: str, factory: FTPFactory) -> None:
        self.description = description
        self.factory = factory
        self._port: Any = None

    def startService(self) -> None:
        super().startService()
        endpoint = endpoints.serverFromString(self.factory.reactor, self.description)
        failures: list[Any] = []
        endpoint.listen(self.factory).addCallbacks(self._listening, failures.append)
        if failures:
            reason = failures[0].getErrorMessage()
            raise SystemExit(f"exftp: cannot listen on {self.description}: {reason}")

    def _listening(self, port: Any) -> None:
        self._port = port
        address = port.getHost()
        # Announce readiness once the reactor runs (and its signal handlers are in place).
        self.factory.reactor.callWhenRunning(
            _log.info, "exftp listening on {host}:{port}", host=address.host, port=address.port
        )

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._port is not None:
            return self._port.stopListening()  # type: ignore[no-any-return]
        return None


class _ShutdownService(service.Service):
    """On stop, lets transfers finish for a while, sends 421 to every session and waits for them to close."""

    def __init__(self, factory: FTPFactory, grace: float) -> None:
        self.factory = factory
        self.grace = grace

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        return self.factory.shutdown(self.grace)


def _reload_on_sighup(reactor: Any, settings: TLSSettings) -> None:
    """Reload the TLS certificate on SIGHUP; running sessions keep theirs."""

    def handler(signum: int, frame: Any) -> None:
        reactor.callFromThread(settings.reload)

    signal.signal(signal.SIGHUP, handler)


def makeService(options: Options) -> service.MultiService:
    """Build the exftp service tree from parsed options."""
    factory = FTPFactory(
        options["authenticator"],
        options["storage_factory"],
        banner=options["banner"],
        passive_ports=options["passive_range"],
        passive_address=options["passive-address"],
        idle_timeout=options["idle-timeout"],
        data_timeout=options["data-timeout"],
        allow_foreign_addresses=bool(options["allow-foreign-addresses"]),
        login_failure_delay=options["login-failure-delay"],
        max_login_failures=options["max-login-failures"],
        login_timeout=options["login-timeout"],
        stalled_timeout=options["stalled-timeout"],
        max_sessions=options["max-sessions"],
        max_sessions_per_ip=options["max-sessions-per-ip"],
        max_passive_listeners=options["max-passive-listeners"],
        tls=options["tls"],
        tls_policy=TLSPolicy(
            require_tls=bool(options["require-tls"]),
            require_protected_data=bool(options["require-prot-p"]),
            require_session_reuse=bool(options["require-tls-reuse"]),
        ),
        defender=Defender(options["ban-threshold"], options["ban-window"], options["ban-time"])
        if options["ban-threshold"] > 0
        else None,
    )
    if options["tls"] is not None:
        _reload_on_sighup(factory.reactor, options["tls"])
    top = service.MultiService()
    _ShutdownService(factory, options["shutdown-grace"]).setServiceParent(top)
    for description in options["ports"]:
        _ListeningService(description, factory).setServiceParent(top)
    return top
