"""
The C{twistd exftp} command: options and the service they build.
"""

from __future__ import annotations

import getopt
import ipaddress
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from typing import IO, Any

from twisted.application import service
from twisted.cred import strcred
from twisted.cred.credentials import IUsernamePassword
from twisted.python import usage
from twisted.python.logfile import LogFile

from ._cleanup import DEFAULT_MAX_AGE, check_node, clean_up_now, default_node
from ._config import FLAG, INTEGER, NUMBER, Setting, load_config, settings_of
from ._events import Action
from ._hooks import WebhookHook, load_callable
from ._httpclient import redacted
from ._interfaces import IAuthenticator, IStorageFactory
from ._logging import log_observer, rotate_on_sigusr1
from ._plugins import authenticator_plugins, storage_plugins
from ._proxy import CONNECTED, PREFIX, IPNetwork, parse_networks, server_endpoint
from ._service import DEFAULT_PORT, Config, build_service
from ._startup import ConfigurationError, check_at_start
from ._tls import TLSSettings
from .auth._cred import CredentialsCheckerAuthenticator
from .auth._http import _COMMON_OPTIONS, HTTP_AUTHENTICATORS, authenticator_from_spec
from .auth._simple import AnonymousAuthenticator, NoAuthAuthenticator, PassthroughAuthenticator
from .auth._users import UsersAuthenticator
from .storage._local import FileStorageFactory
from .storage._memory import MemoryStorageFactory

_AUTHENTICATORS: dict[str, Callable[[], IAuthenticator]] = {
    "anonymous": AnonymousAuthenticator,
    "noauth": NoAuthAuthenticator,
    "passthrough": PassthroughAuthenticator,
}

#: The built-in authenticators for --help-auth: how to name them, and what they do.
_AUTHENTICATOR_HELP = [
    ("anonymous", "users anonymous and ftp, any password, read-only (the default)"),
    ("noauth", "any user name and password, full access (tests, trusted networks)"),
    ("passthrough", "any user but root, any password, full access"),
    ("http-basic:URL", "HTTP Basic against your service (--auth-option for more)"),
    ("http-digest:URL", "HTTP Digest (RFC 7616) against your service"),
    ("bearer:URL", "the password is a bearer token checked by your service"),
    ("webhook:URL", "username and password_hash query parameters to your service"),
]

#: The built-in storages for --help-storage.
_STORAGE_HELP = [
    ("file:DIR", "the directory tree under DIR (the default: the current directory)"),
    ("memory", "an in-memory tree, for demos and tests"),
    ("s3:bucket=NAME[:prefix=P]...", "S3 and compatibles (needs exftp[s3]; see the README)"),
]


def _built(kind: str, what: str, build: Callable[[], Any], interface: Any) -> Any:
    """Call a plugin's C{build}; its ValueError or OSError, or a wrong result, is a usage error."""
    try:
        built = build()
    except (ValueError, OSError) as error:
        raise usage.UsageError(f"--{what} {kind}: {error}") from None
    if not interface.providedBy(built):
        raise usage.UsageError(
            f"--{what} {kind}: the plugin built {built!r}, which does not provide {interface.__name__}"
        )
    return built


def make_authenticator(spec: str, options: Mapping[str, str] | None = None) -> IAuthenticator:
    """
    Build an authenticator from an C{--auth} string: C{anonymous},
    C{noauth}, C{passthrough}, an HTTP authenticator C{KIND:URL} (KIND one
    of L{HTTP_AUTHENTICATORS}, configured further by C{options}), any
    C{twisted.cred.strcred} checker string (C{memory:alice:secret},
    C{file:/etc/ftp.passwd}, C{unix}), or C{NAME:ARGUMENT} for an installed
    L{exftp.IAuthenticatorPlugin}.

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
    except strcred.InvalidAuthType:
        plugin = authenticator_plugins().get(kind)
        if plugin is None:
            raise usage.UsageError(
                f"--auth {spec}: unknown authenticator {kind!r}; use anonymous, noauth, passthrough, "
                f"{', '.join(f'{name}:URL' for name in HTTP_AUTHENTICATORS)}, a twisted.cred checker such as "
                "memory:USER:PASSWORD or file:PATH, or an installed plugin's NAME:ARG "
                "(twistd exftp --help-auth lists them)"
            ) from None
        authenticator: IAuthenticator = _built(kind, "auth", lambda: plugin.build(argument), IAuthenticator)
        return authenticator
    except strcred.InvalidAuthArgumentString as error:
        raise usage.UsageError(f"--auth {spec}: {error}") from None
    try:
        return CredentialsCheckerAuthenticator(checker)
    except ValueError:
        raise usage.UsageError(f"--auth {spec}: this checker does not check user names and passwords") from None


def make_storage_factory(spec: str, node: str | None = None) -> IStorageFactory:
    """
    Build a storage factory from a C{--storage} string: C{file:DIR},
    C{memory}, C{s3:bucket=NAME[:prefix=P][:region=R]...}, or
    C{NAME:ARGUMENT} for an installed L{exftp.IStoragePlugin}.

    @raise usage.UsageError: when the string names nothing usable.
    """
    kind, _, argument = spec.partition(":")
    if kind == "s3":
        from .storage._s3 import storage_factory_from_spec

        try:
            return storage_factory_from_spec(argument, node=node)
        except ValueError as error:
            raise usage.UsageError(f"--storage s3: {error}") from None
    if kind == "file":
        directory = argument or "."
        if not os.path.isdir(directory):
            raise usage.UsageError(f"--storage {spec}: {directory} is not a directory")
        return FileStorageFactory(directory, node=node)
    if kind == "memory" and not argument:
        return MemoryStorageFactory()
    plugin = None if kind == "memory" else storage_plugins().get(kind)
    if plugin is None:
        raise usage.UsageError(
            f"--storage {spec}: unknown storage (use file:DIR, memory, s3:bucket=NAME or an installed plugin; "
            "twistd exftp --help-storage lists them)"
        )
    storage_factory: IStorageFactory = _built(kind, "storage", lambda: plugin.build(argument), IStorageFactory)
    return storage_factory


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


#: Numeric options that must be more than 0; every other numeric option must be 0 or more.
_POSITIVE = ("hook-timeout", "hook-queue")


#: What a numeric option expects, by the function that converts it.
_EXPECTED = {float: "a number, such as 60 or 0.5", int: "a whole number, such as 10"}


class _NamedCoerce(usage.CoerceParameter):
    """Converts an option's value; a value that does not convert is an error naming the option."""

    def dispatch(self, parameterName: str, value: str | None) -> None:
        try:
            super().dispatch(parameterName, value)
        except usage.UsageError:
            expected = _EXPECTED.get(self.coerce, "another value")
            raise usage.UsageError(f"--{parameterName} {value}: expected {expected}") from None


class _ParseOnly:
    """Stands in for the reactor while endpoint strings are only parsed, never listened on."""


def check_endpoint(description: str, option: str = "--port", trusted_proxies: Sequence[IPNetwork] = ()) -> None:
    """
    Check that C{description} is a server endpoint string, without listening.

    @param option: the option that gave it, for the message.
    @param trusted_proxies: the balancers a C{haproxy:} endpoint trusts.
    @raise usage.UsageError: when Twisted cannot parse it, or it is a
        C{haproxy:} endpoint without C{trusted_proxies}.
    """
    try:
        server_endpoint(_ParseOnly(), description, trusted_proxies)
    except Exception as error:
        raise usage.UsageError(f"{option} {description}: {error}") from None


def check_ipv4(address: str) -> None:
    """
    Check that C{address} is an IPv4 address (PASV can only announce IPv4).

    @raise usage.UsageError: when it is not.
    """
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        raise usage.UsageError(f"--passive-address {address}: must be an IPv4 address") from None


def parse_actions(text: str) -> frozenset[Action]:
    """
    Parse C{--hook-events}: comma-separated action names (C{upload,download}).

    @raise usage.UsageError: for a name that is not an action.
    """
    actions = set()
    for name in filter(None, (part.strip() for part in text.split(","))):
        try:
            actions.add(Action(name))
        except ValueError:
            known = ", ".join(action.value for action in Action)
            raise usage.UsageError(f"--hook-events {name}: not an event (use {known})") from None
    if not actions:
        raise usage.UsageError("--hook-events: name at least one event")
    return frozenset(actions)


def _table(rows: Sequence[tuple[str, str]], output: IO[str]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, description in rows:
        output.write(f"  {name.ljust(width)}  {description}\n")


def _help(output: IO[str], option: str, builtins: Sequence[tuple[str, str]], plugins: Mapping[str, Any]) -> None:
    """List exftp's own choices for C{--option}, then the installed plugins."""
    output.write(f"Usage: --{option} NAME[:ARGUMENT]\n\nexftp:\n")
    _table(builtins, output)
    if plugins:
        output.write("\nInstalled plugins:\n")
        _table([(f"{name}:ARGUMENT", plugin.description) for name, plugin in sorted(plugins.items())], output)


#: Configuration keys for the options that C{opt_*} methods handle (see L{exftp._config}).
_EXTRA_SETTINGS = {
    "port": Setting("ports", "texts"),
    "auth": Setting("auth", "text"),
    "auth_option": Setting("auth_options", "table"),
    "hook": Setting("hooks", "texts"),
    "webhook": Setting("webhooks", "texts"),
    "trusted_proxy": Setting("trusted_proxies", "texts"),
    "sftp": Setting("sftp_ports", "texts"),
    "host_key": Setting("host_key_files", "texts"),
}

#: Command-line options that override other configuration settings than their own (or none).
_OVERRIDES = {
    "root": {"root", "storage"},
    "storage": {"root", "storage"},
    "auth": {"auth", "auth_options"},
    "auth-option": set(),
    "tls-cert": {"tls-cert", "tls-key"},
    "tls-key": {"tls-cert", "tls-key"},
}


class Options(usage.Options, strcred.AuthOptionMixin):
    """
    Command-line options of C{twistd exftp}.

    @param environ: the environment variables that override the
        configuration file (C{FTP_PORT}...); C{os.environ} when omitted.
    """

    synopsis = "[options]"
    longdesc = (
        "Run the exftp FTP server. By default it listens on 127.0.0.1:2121, serves the "
        "current directory and allows anonymous read-only logins. Every option can also "
        "be set in a TOML file given with --config; the command line overrides it."
    )
    supportedInterfaces = [IUsernamePassword]

    optParameters = [
        ["root", "r", None, "Serve this directory (shorthand for --storage file:DIR)."],
        ["storage", "s", None, "Storage: file:DIR, memory, s3:bucket=NAME[:prefix=P] or a plugin's "
         "NAME:ARG. Default: file:<cwd>."],
        ["passive-ports", None, None, "Port range for passive data connections, e.g. 40000-40100."],
        ["passive-address", None, None, "IPv4 address to announce in PASV replies (public/NAT address), or "
         "'connected': the address the client connected to (a balancer's, from its PROXY header)."],
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
        ["max-file-size", None, 0, "Largest upload in bytes for users whose own limits set none (0: any).", int],
        ["upload-rate", None, 0, "Bytes per second of each user's uploads, all its sessions together, for "
         "users whose own limits set none (0: unlimited).", int],
        ["download-rate", None, 0, "The same for downloads (0: unlimited).", int],
        ["max-passive-listeners", None, 1000, "Passive data ports open at once.", int],
        ["max-passive-listeners-per-ip", None, 20, "Passive data ports open at once for one address.", int],
        ["ban-threshold", None, 20, "Failed logins from one address within --ban-window that ban it (0: off).", int],
        ["ban-window", None, 600.0, "Seconds over which failed logins are counted for a ban.", float],
        ["ban-time", None, 900.0, "Seconds a banned address is refused.", float],
        ["config", None, None, "TOML configuration file; command-line options override it."],
        ["users", None, None, "TOML file of virtual users with password hashes (managed with exftp-users); "
         "beside --auth, the file decides for its users. Reloaded on SIGHUP."],
        ["xferlog", None, None, "Append a transfer log in the xferlog format (wu-ftpd, vsftpd) to this file."],
        ["metrics", None, None, "Serve Prometheus metrics at /metrics on this endpoint, e.g. "
         "tcp:9100:interface=127.0.0.1 (needs exftp[metrics])."],
        ["log-format", None, "text", "Log as text, or as json (one JSON object a line)."],
        ["hook-events", None, None, "Events sent to hooks, comma-separated: login, login_failed, logout, "
         "upload, download, delete, rename, mkdir, rmdir. Default: all."],
        ["hook-queue", None, 1000, "Events that may wait for each hook; more are dropped (logged).", int],
        ["hook-retries", None, 5, "Retries of a failed hook call or webhook post, with backoff from 1 s.", int],
        ["node", None, None, "This server's name among the servers that share its storage; the same "
         "across restarts. Default: the host name."],
        ["cleanup-age", None, DEFAULT_MAX_AGE, "At start, also remove any server's upload leftovers older "
         "than this many seconds (0: only this node's).", float],
        ["hook-timeout", None, 10.0, "Seconds one webhook post may take; at shutdown, waiting events get as long.",
         float],
        ["state-dir", None, None, "Directory for state kept across restarts (the generated SSH host key). "
         "Default: $STATE_DIRECTORY, else $XDG_STATE_HOME/exftp, else ~/.local/state/exftp."],
    ]
    optFlags = [
        ["allow-foreign-addresses", None, "Allow PORT/EPRT to other hosts and low ports (FXP; unsafe)."],
        ["require-tls", None, "Refuse USER/PASS before AUTH TLS (needs --tls-cert, or an ssl: port)."],
        ["require-prot-p", None, "Refuse transfers unless the data connection is protected (PROT P)."],
        ["require-tls-reuse", None, "Refuse TLS data connections that do not resume the control session."],
        ["cleanup", None, "Remove the upload leftovers of --node (which must not be running) and those "
         "older than --cleanup-age, then exit."],
    ]

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.environ = os.environ if environ is None else environ
        self["ports"] = []
        self["auth"] = None  # anonymous, unless --users is given
        self["auth_options"] = {}
        self["hooks"] = []
        self["webhooks"] = []
        self["trusted_proxies"] = []
        self["sftp_ports"] = []
        self["host_key_files"] = []
        self._command_line_auth_options: set[str] = set()
        for name, dispatch in self._dispatch.items():
            if isinstance(dispatch, usage.CoerceParameter):
                self._dispatch[name] = _NamedCoerce(self, dispatch.coerce)

    # The configuration file

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Apply the configuration file and the environment, then the command
        line over them. Under twistd, an error is printed on standard error
        with a pointer to C{--help} (not after the whole help, on standard
        output, as twistd would) and exits with status 1.
        """
        try:
            self._parse(options)
        except usage.UsageError as error:
            if self.parent is None:  # called from Python: the caller handles it
                raise
            sys.stderr.write(f"twistd exftp: error: {error}\nRun 'twistd exftp --help' for the options.\n")
            raise SystemExit(1) from None

    def _parse(self, options: Sequence[str] | None) -> None:
        arguments = list(sys.argv[1:] if options is None else options)
        given = self._command_line_names(arguments)
        settings = settings_of(Options, _EXTRA_SETTINGS)
        values = load_config(given.get("config"), settings, self.environ)
        overridden: set[str] = set()
        for name in given:
            setting = settings.get(name.replace("-", "_"))
            overridden |= _OVERRIDES.get(name, {name if setting is None else setting.option})
        for key, value in values.items():
            if key not in overridden:
                self[key] = value
        super().parseOptions(arguments)

    def _command_line_names(self, arguments: list[str]) -> dict[str, str]:
        """The long names of the options on the command line, with their (last) values."""
        try:
            found, _ = getopt.getopt(arguments, self.shortOpt, self.longOpt)
        except getopt.GetoptError:
            return {}  # parseOptions reports it
        names: dict[str, str] = {}
        for option, value in found:
            name = option.lstrip("-")
            names[self.synonyms.get(name, name)] = value
        return names

    # Options handled by methods

    def opt_port(self, spec: str) -> None:
        """
        Listen on this Twisted endpoint (repeatable), e.g. tcp:2121 or
        ssl:990:privateKey=key.pem. Default: tcp:2121:interface=127.0.0.1
        """
        self["ports"].append(spec)

    opt_p = opt_port

    def opt_sftp(self, spec: str) -> None:
        """
        Serve SFTP on this Twisted endpoint (repeatable), e.g. tcp:2222 or
        haproxy:tcp:2222; beside the FTP ports, or instead of them when no --port is given.
        """
        self["sftp_ports"].append(spec)

    def opt_host_key(self, path: str) -> None:
        """
        SSH host key file (repeatable: Ed25519, ECDSA, RSA; unencrypted). Default: an Ed25519
        key generated once into --state-dir.
        """
        self["host_key_files"].append(path)

    def opt_auth(self, spec: str) -> None:  # type: ignore[override]
        """
        Who may log in: anonymous (default, read-only), noauth, passthrough, http-basic:URL,
        http-digest:URL, bearer:URL, webhook:URL, a twisted.cred string such as
        memory:alice:secret, file:PATH or unix, or a plugin's NAME:ARG (see --help-auth).
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
        if key in self._command_line_auth_options:
            raise usage.UsageError(f"--auth-option {key}: given twice")
        self._command_line_auth_options.add(key)
        self["auth_options"][key] = value

    def opt_hook(self, name: str) -> None:
        """
        Call this Python callable (dotted name: package.module.function) with every event (repeatable).
        """
        self["hooks"].append(name)

    def opt_webhook(self, url: str) -> None:
        """
        POST every event as JSON to this http(s) URL (repeatable); retried with backoff.
        """
        self["webhooks"].append(url)

    def opt_trusted_proxy(self, network: str) -> None:
        """
        A load balancer's address or network (repeatable, or comma-separated), e.g. 10.0.0.0/8:
        only it may connect to haproxy: ports, and its PROXY header names the client.
        """
        self["trusted_proxies"].append(network)

    def opt_help_auth(self) -> None:
        """
        Show every authenticator: exftp's own, installed plugins and twisted.cred checkers.
        """
        checkers = [(f.authType, f.argStringFormat) for f in self._checkerFactoriesForOptHelpAuth()]
        _help(self.authOutput, "auth", _AUTHENTICATOR_HELP, authenticator_plugins())
        self.authOutput.write("\ntwisted.cred checkers (--help-auth-type NAME for more):\n")
        _table(sorted(checkers), self.authOutput)
        raise SystemExit(0)

    def opt_help_auth_type(self, name: str) -> None:
        """
        Show how to use one authenticator: exftp's own, a plugin's or a twisted.cred checker's.
        """
        out = self.authOutput
        described = dict(_AUTHENTICATOR_HELP)
        kind = next((spec for spec in described if spec.partition(":")[0] == name), None)
        plugin = authenticator_plugins().get(name)
        if kind is not None:
            out.write(f"Usage: --auth {kind}\n\n  {described[kind]}\n")
            if name in HTTP_AUTHENTICATORS:
                options = sorted(_COMMON_OPTIONS | HTTP_AUTHENTICATORS[name].extra_options)
                out.write(f"\n  --auth-option KEY=VALUE (repeatable), KEY one of: {', '.join(options)}\n")
        elif plugin is not None and name not in {f.authType for f in self._checkerFactoriesForOptHelpAuth()}:
            out.write(f"Usage: --auth {name}:ARGUMENT\n\n  {plugin.description}\n")
        else:
            try:
                super().opt_help_auth_type(name)
            except usage.UsageError:
                raise usage.UsageError(
                    f"--help-auth-type {name}: unknown authenticator (twistd exftp --help-auth lists them)"
                ) from None
        raise SystemExit(0)

    def opt_version(self) -> None:
        """
        Show exftp's version (and Twisted's and Python's), then exit.
        """
        from twisted import copyright

        from . import __version__

        print(f"exftp {__version__} (Twisted {copyright.version}, Python {sys.version.split()[0]})")
        raise SystemExit(0)

    def opt_help_storage(self) -> None:
        """
        Show every storage: exftp's own and installed plugins.
        """
        _help(self.authOutput, "storage", _STORAGE_HELP, storage_plugins())
        raise SystemExit(0)

    # Checking

    def postOptions(self) -> None:
        if self["root"] and self["storage"]:
            raise usage.UsageError("Use either --root or --storage, not both.")
        storage = self["storage"] or f"file:{self['root'] or os.getcwd()}"
        if self["node"] is not None:
            try:
                check_node(self["node"])
            except ValueError as error:
                raise usage.UsageError(f"--node: {error}") from None
        self["storage_factory"] = make_storage_factory(storage, self["node"])
        self["authenticator"] = make_authenticator(self["auth"] or "anonymous", self["auth_options"])
        self["users_authenticator"] = None
        if self["users"] is not None:
            fallback = self["authenticator"] if self["auth"] is not None else None
            try:
                self["users_authenticator"] = UsersAuthenticator(self["users"], fallback)
            except ValueError as error:
                raise usage.UsageError(f"--users {self['users']}: {error}") from None
            self["authenticator"] = self["users_authenticator"]
        self["passive_range"] = parse_port_range(self["passive-ports"]) if self["passive-ports"] else None
        if not self["ports"] and not self["sftp_ports"]:
            self["ports"] = [DEFAULT_PORT]
        try:
            self["trusted_networks"] = parse_networks(self["trusted_proxies"])
        except ValueError as error:
            raise usage.UsageError(f"--trusted-proxy: {error}") from None
        for description in self["ports"]:
            check_endpoint(description, trusted_proxies=self["trusted_networks"])
        self._check_sftp()
        if self["trusted_networks"] and not any(d.startswith(PREFIX) for d in self["ports"] + self["sftp_ports"]):
            raise usage.UsageError("--trusted-proxy is for haproxy: ports, e.g. --port haproxy:tcp:2121")
        if self["passive-address"] not in (None, CONNECTED):
            check_ipv4(self["passive-address"])
        if bool(self["tls-cert"]) != bool(self["tls-key"]):
            raise usage.UsageError("--tls-cert and --tls-key go together")
        self["tls"] = None
        if self["tls-cert"]:
            try:
                self["tls"] = TLSSettings(self["tls-cert"], self["tls-key"], bool(self["require-tls-reuse"]))
            except ValueError as error:
                raise usage.UsageError(f"--tls-cert: {error}") from None
        implicit = any(d.removeprefix(PREFIX).startswith("ssl:") for d in self["ports"])
        if (self["require-tls"] or self["require-prot-p"]) and self["tls"] is None and not implicit:
            raise usage.UsageError("--require-tls and --require-prot-p need --tls-cert/--tls-key or an ssl: port")
        for name in _NON_NEGATIVE:
            if self[name] < 0:
                raise usage.UsageError(f"--{name} {self[name]}: must not be negative")
        self._check_operations()
        if self["cleanup"]:
            node = getattr(self["storage_factory"], "node", None) or self["node"] or default_node()
            clean_up_now(self["storage_factory"], node, self["cleanup-age"] or None)

    def _check_sftp(self) -> None:
        """Check the SFTP endpoints and load (or generate) the host keys."""
        self["ssh_host_keys"] = []
        if not self["sftp_ports"]:
            if self["host_key_files"]:
                raise usage.UsageError("--host-key is for SFTP: add --sftp tcp:2222")
            return
        try:
            from .sftp import default_state_dir, host_keys
        except ImportError as error:
            raise usage.UsageError(f"--sftp needs Twisted Conch: pip install 'exftp[sftp]' ({error})") from None
        for description in self["sftp_ports"]:
            check_endpoint(description, "--sftp", self["trusted_networks"])
        state_dir = self["state-dir"] or default_state_dir(self.environ)
        try:
            self["ssh_host_keys"], self["ssh_host_key_generated"] = host_keys(self["host_key_files"], state_dir)
        except ValueError as error:
            raise usage.UsageError(f"--host-key: {error}") from None

    def _check_operations(self) -> None:
        """Check the hooks, the transfer log, the metrics endpoint and the log format."""
        for name in _POSITIVE:
            if self[name] <= 0:
                raise usage.UsageError(f"--{name} {self[name]}: must be more than 0")
        self["hook_actions"] = parse_actions(self["hook-events"]) if self["hook-events"] is not None else None
        for name in self["hooks"]:
            try:
                load_callable(name)
            except ValueError as error:
                raise usage.UsageError(f"--hook {name}: {error}") from None
        for url in self["webhooks"]:
            try:
                WebhookHook(url)
            except ValueError as error:
                raise usage.UsageError(f"--webhook {redacted(url)}: {error}") from None
        if self["xferlog"] is not None:
            try:
                open(self["xferlog"], "a").close()
            except OSError as error:
                raise usage.UsageError(f"--xferlog {self['xferlog']}: {error.strerror or error}") from None
        if self["metrics"] is not None:
            check_endpoint(self["metrics"], "--metrics")
            try:
                import prometheus_client  # noqa: F401
            except ImportError:
                raise usage.UsageError(
                    "--metrics needs prometheus_client: python3 -m pip install 'exftp[metrics]'"
                ) from None
        if self["log-format"] not in ("text", "json"):
            raise usage.UsageError(f"--log-format {self['log-format']}: use text or json")
        if self["log-format"] == "json" and self._twistd_option("syslog"):
            raise usage.UsageError("--log-format json cannot be sent to syslog; use --logfile")
        if self._twistd_option("logfile") == "-" and not self._twistd_option("nodaemon"):
            # twistd's own refusal, which it no longer reaches once exftp gives it the log observer.
            raise usage.UsageError("a daemon cannot log to standard output: use -n, or --logfile FILE")

    def _twistd_option(self, name: str) -> Any:
        """An option of twistd itself (C{logfile}, C{nodaemon}...), or C{None} outside twistd."""
        parent = getattr(self, "parent", None)
        return None if parent is None else parent.get(name)

    def log_file(self) -> IO[str]:
        """Where twistd would write its log: standard output, or its --logfile."""
        logfile = self._twistd_option("logfile")
        if logfile == "-" or (not logfile and (self._twistd_option("nodaemon") or not hasattr(self, "parent"))):
            return sys.stdout
        return LogFile.fromFullPath(logfile or "twistd.log")  # type: ignore[no-any-return]


#: Numeric options that must be 0 or more.
_NON_NEGATIVE = tuple(
    setting.option
    for setting in settings_of(Options).values()
    if setting.kind in (INTEGER, NUMBER) and setting.option not in _POSITIVE
)


def _on_sighup(reactor: Any, action: Callable[[], None]) -> None:
    """Run C{action} in the reactor on SIGHUP (reload the TLS certificate, reopen the transfer log)."""

    def handler(signum: int, frame: Any) -> None:
        reactor.callFromThread(action)

    signal.signal(signal.SIGHUP, handler)


def config_from_options(options: Options) -> Config:
    """The L{Config} that parsed options describe."""
    plain: dict[str, Any] = {
        name: bool(options[setting.option]) if setting.kind == FLAG else options[setting.option]
        for name, setting in _PLAIN.items()
    }
    return Config(
        authenticator=options["authenticator"],
        storage_factory=options["storage_factory"],
        ports=tuple(options["ports"]),
        passive_ports=options["passive_range"],
        trusted_proxies=tuple(options["trusted_networks"]),
        hooks=tuple(load_callable(name) for name in options["hooks"]),
        webhooks=tuple(options["webhooks"]),
        hook_events=options["hook_actions"],
        sftp_ports=tuple(options["sftp_ports"]),
        ssh_host_keys=tuple(options["ssh_host_keys"]),
        **plain,
    )


#: The options that are a L{Config} field as they are (flags as booleans), by the field's name.
_PLAIN = {
    field.name: setting
    for field in fields(Config)
    if (setting := settings_of(Options).get(field.name)) is not None
    and field.name not in ("passive_ports", "hook_events")
}


def makeService(options: Options) -> service.MultiService:
    """Build the exftp service tree from parsed options, with twistd's log observer and signal handlers."""
    config = config_from_options(options)
    from twisted.internet import reactor as global_reactor

    try:
        check_at_start(global_reactor, storage=config.storage_factory, auth=config.authenticator)
    except ConfigurationError as error:
        sys.stderr.write(f"twistd exftp: error: {error}\n")
        raise SystemExit(1) from None
    top = build_service(config)
    reactor = top.factory.reactor
    if not options._twistd_option("syslog"):  # text to syslog stays twistd's own
        out = options.log_file()
        top.log_observer = log_observer(out, options["log-format"])
        rotate_on_sigusr1(reactor, out)
    _on_sighup(reactor, top.reload)  # a server never dies of SIGHUP, even with nothing to reload
    return top

