"""
The configuration file of C{twistd exftp --config FILE} (TOML) and the
environment variables that override it.

Every command-line option has a key: its long name with C{_} for C{-}
(C{idle_timeout = 60}, C{require_tls = true}, C{port = ["tcp:21"]}). ex_ftp's
names work too: C{ftp_port} and C{ftp_addr} (one TCP endpoint),
C{server_name} (the banner), C{min_passive_port} and C{max_passive_port},
C{authenticator} and C{authenticator_config}, C{storage_connector} and
C{storage_config}, C{on_transfer_complete}. C{FTP_PORT}, C{FTP_ADDR},
C{MIN_PASSIVE_PORT} and C{MAX_PASSIVE_PORT} override the file.

Wherever text is expected, C{{ env = "NAME" }} takes it from an environment
variable and C{{ file = "PATH" }} from a file (without its final newline),
so that no secret has to be written in the file itself.

Everything here is checked before the server starts: an unknown key or a
value of the wrong type is a L{usage.UsageError} that names the key.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.python import usage

__all__ = ["ENVIRONMENT", "Setting", "config_keys", "load_config", "settings_of"]

TEXT = "text"
INTEGER = "integer"
NUMBER = "number"
FLAG = "flag"
TEXTS = "texts"
TABLE = "table"

#: The environment variables that override the file, and the keys they set.
ENVIRONMENT = {
    "FTP_PORT": "ftp_port",
    "FTP_ADDR": "ftp_addr",
    "MIN_PASSIVE_PORT": "min_passive_port",
    "MAX_PASSIVE_PORT": "max_passive_port",
}

#: ex_ftp's names for settings that also have a command-line name.
_ALIASES = {
    "server_name": "banner",
    "authenticator": "auth",
    "authenticator_config": "auth_option",
    "storage_connector": "storage",
    "on_transfer_complete": "hook",
}

#: Keys that are not options themselves but are turned into one.
_SPECIAL = {"ftp_port", "ftp_addr", "min_passive_port", "max_passive_port", "storage_config"}


@dataclass(frozen=True, slots=True)
class Setting:
    """
    What one configuration key sets.

    @ivar option: the key of the options object that it sets.
    @ivar kind: the value it takes: C{text}, C{integer}, C{number} (an
        integer or a float), C{flag} (a boolean), C{texts} (text or a list
        of texts) or C{table} (of texts, numbers and booleans).
    """

    option: str
    kind: str


def settings_of(options: type[usage.Options], extra: Mapping[str, Setting] | None = None) -> dict[str, Setting]:
    """
    A configuration key for every parameter and flag of an options class.

    @param options: the class; its C{optParameters} coerced by C{int} are
        integers, by C{float} numbers, the others text; its C{optFlags} flags.
    @param extra: keys for options handled by C{opt_*} methods.
    """
    settings: dict[str, Setting] = {}
    for parameter in getattr(options, "optParameters", []):
        name, coerce = parameter[0], parameter[4] if len(parameter) > 4 else None
        kind = INTEGER if coerce is int else NUMBER if coerce is float else TEXT
        settings[name.replace("-", "_")] = Setting(name, kind)
    for flag in getattr(options, "optFlags", []):
        settings[flag[0].replace("-", "_")] = Setting(flag[0], FLAG)
    settings.update(extra or {})
    return settings


class _Problem(Exception):
    """A value that does not fit its key; the message says why."""


def _describe(value: object) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a float", str: "text", list: "a list", dict: "a table"}
    return f"{kind.get(type(value), type(value).__name__)} ({value!r})"


def _text(value: object, environ: Mapping[str, str]) -> str:
    """Text, or text taken from C{{env = NAME}} or C{{file = PATH}}."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((source, where),) = value.items()
        if source == "env" and isinstance(where, str):
            if where not in environ:
                raise _Problem(f"the environment variable {where} is not set")
            return environ[where]
        if source == "file" and isinstance(where, str):
            try:
                with open(where, encoding="utf-8") as handle:
                    return handle.read().removesuffix("\n").removesuffix("\r")
            except (OSError, UnicodeDecodeError) as error:
                raise _Problem(f"cannot read {where}: {error}") from None
    raise _Problem(f'expected text, {{ env = "NAME" }} or {{ file = "PATH" }}, not {_describe(value)}')


def _number(value: object, integer: bool) -> int | float:
    wanted = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, wanted):
        raise _Problem(f"expected {'an integer' if integer else 'a number'}, not {_describe(value)}")
    if value < 0:
        raise _Problem(f"must not be negative, not {value!r}")
    return value if integer else float(value)


def _convert(kind: str, value: object, environ: Mapping[str, str]) -> Any:
    """C{value} as the options object holds it."""
    if kind == TEXT:
        return _text(value, environ)
    if kind in (INTEGER, NUMBER):
        return _number(value, kind == INTEGER)
    if kind == FLAG:
        if not isinstance(value, bool):
            raise _Problem(f"expected true or false, not {_describe(value)}")
        return int(value)
    if kind == TEXTS:
        items = value if isinstance(value, list) else [value]
        return [_text(item, environ) for item in items]
    if kind == TABLE:
        if not isinstance(value, dict):
            raise _Problem(f"expected a table, not {_describe(value)}")
        return {name: _table_value(item, environ) for name, item in value.items()}
    raise AssertionError(kind)


def _table_value(value: object, environ: Mapping[str, str]) -> str:
    """A value inside a table, as the text a command line would give."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return _text(value, environ)


def _port(value: object, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 65535:
        raise _Problem(f"expected a port number {low}-65535, not {_describe(value)}")
    return value


def _escape(text: str) -> str:
    """Text that stays one piece of a C{NAME:A:B} string."""
    return text.replace("\\", "\\\\").replace(":", "\\:")


class _Reader:
    """Turns the parsed file (and the environment) into options, naming the key of every problem."""

    def __init__(self, where: str, settings: Mapping[str, Setting], environ: Mapping[str, str]) -> None:
        self.where = where
        self.settings = settings
        self.environ = environ

    def fail(self, key: str, reason: str) -> usage.UsageError:
        return usage.UsageError(f"{self.where}: {key}: {reason}")

    def convert(self, key: str, check: Callable[[], Any]) -> Any:
        try:
            return check()
        except _Problem as problem:
            raise self.fail(key, str(problem)) from None

    def converted(self, key: str, kind: str, value: object) -> Any:
        """C{value} of C{key} as the options object holds it."""
        return self.convert(key, lambda: _convert(kind, value, self.environ))

    def read(self, document: Mapping[str, Any]) -> dict[str, Any]:
        raw = dict(document)
        self.check_keys(raw)
        for alias, name in _ALIASES.items():
            if alias in raw and name in raw:
                raise self.fail(alias, f"{alias} and {name} are the same setting; give one of them")
            if alias in raw:
                raw[name] = raw.pop(alias)
        self.apply_environment(raw)
        values: dict[str, Any] = {}
        special = {key: raw.pop(key) for key in _SPECIAL if key in raw}
        for key, value in raw.items():
            setting = self.settings[key]
            values[setting.option] = self.converted(key, setting.kind, value)
        self.listen(special, raw, values)
        self.passive_ports(special, raw, values)
        self.storage(special, values)
        self.login_url(values)
        return values

    def check_keys(self, raw: Mapping[str, Any]) -> None:
        known = [*self.settings, *_ALIASES, *_SPECIAL]
        for key in raw:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise self.fail(key, f"unknown key{hint}")

    def apply_environment(self, raw: dict[str, Any]) -> None:
        """Environment variables win over the file; their ports are checked like the file's."""
        for variable, key in ENVIRONMENT.items():
            text = self.environ.get(variable)
            if text is None or text == "":
                continue
            if key == "ftp_addr":
                value: object = text
            else:
                try:
                    value = int(text)
                except ValueError:
                    raise usage.UsageError(f"{variable}={text!r}: expected a port number") from None
            if key in ("ftp_port", "ftp_addr"):
                raw.pop("port", None)
            else:
                raw.pop("passive_ports", None)
            raw[key] = value

    def listen(self, special: dict[str, Any], raw: Mapping[str, Any], values: dict[str, Any]) -> None:
        """C{ftp_port} and C{ftp_addr} become one TCP endpoint."""
        if "ftp_port" not in special and "ftp_addr" not in special:
            return
        if "port" in raw:
            raise self.fail("port", "give either port or ftp_port/ftp_addr, not both")
        port = self.convert("ftp_port", lambda: _port(special.get("ftp_port", 2121)))
        address = self.convert("ftp_addr", lambda: _text(special.get("ftp_addr", "127.0.0.1"), self.environ))
        kind = "tcp6" if ":" in address else "tcp"
        values["ports"] = [f"{kind}:{port}:interface={_escape(address)}"]

    def passive_ports(self, special: dict[str, Any], raw: Mapping[str, Any], values: dict[str, Any]) -> None:
        """C{min_passive_port} and C{max_passive_port} become C{passive-ports}."""
        given = [key for key in ("min_passive_port", "max_passive_port") if key in special]
        if not given:
            return
        if "passive_ports" in raw:
            raise self.fail(given[0], "give either passive_ports or min_passive_port/max_passive_port, not both")
        if len(given) == 1:
            other = "max_passive_port" if given[0] == "min_passive_port" else "min_passive_port"
            raise self.fail(given[0], f"needs {other} too")
        low = self.convert("min_passive_port", lambda: _port(special["min_passive_port"], 1))
        high = self.convert("max_passive_port", lambda: _port(special["max_passive_port"], 1))
        if low > high:
            raise self.fail("min_passive_port", f"{low} is above max_passive_port {high}")
        values["passive-ports"] = f"{low}-{high}"

    def storage(self, special: dict[str, Any], values: dict[str, Any]) -> None:
        """C{storage_config} adds C{:NAME=VALUE} pieces to the storage string."""
        if "storage_config" not in special:
            return
        storage = values.get("storage")
        if storage is None:
            raise self.fail("storage_config", "needs storage_connector (or storage)")
        table = self.converted("storage_config", TABLE, special["storage_config"])
        kind = storage.partition(":")[0]
        if kind in ("file", "memory"):
            raise self.fail("storage_config", f"{kind} storage takes no settings (use storage_connector = 'file:DIR')")
        pieces = [f"{_escape(name)}={_escape(value)}" for name, value in table.items()]
        if pieces:
            values["storage"] = ":".join([storage, *pieces])

    def login_url(self, values: dict[str, Any]) -> None:
        """An C{authenticator_config} C{login_url} goes after C{KIND:}, as on the command line."""
        options = values.get("auth_options")
        if not options or "login_url" not in options:
            return
        auth = values.get("auth")
        if auth is None or ":" in auth:
            raise self.fail("authenticator_config", "login_url needs authenticator = KIND without a URL after it")
        values["auth"] = f"{auth}:{options.pop('login_url')}"


def load_config(
    path: str | None, settings: Mapping[str, Setting], environ: Mapping[str, str]
) -> dict[str, Any]:
    """
    Read a configuration file and the environment.

    @param path: the TOML file, or C{None} for the environment alone.
    @param settings: the keys and what they set (see L{settings_of}).
    @param environ: the environment variables.
    @return: the options to set, by the options object's keys.
    @raise usage.UsageError: for a file that cannot be read or parsed, an
        unknown key or a value that does not fit; the message names the key.
    """
    document: dict[str, Any] = {}
    where = "environment"
    if path is not None:
        where = path
        try:
            with open(path, "rb") as handle:
                document = tomllib.load(handle)
        except OSError as error:
            raise usage.UsageError(f"--config {path}: {error.strerror or error}") from None
        except tomllib.TOMLDecodeError as error:
            raise usage.UsageError(f"--config {path}: not valid TOML: {error}") from None
    return _Reader(where, settings, environ).read(document)


def config_keys(settings: Iterable[str]) -> list[str]:
    """Every key a configuration file may have, sorted (for documentation and tests)."""
    return sorted({*settings, *_ALIASES, *_SPECIAL})
