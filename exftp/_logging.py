"""
The log observers that C{twistd exftp} gives twistd: text lines exactly as
twistd writes them, or flat JSON objects that log shippers read as they
are, and rotation of a log file on SIGUSR1. Both
leave out the routine messages of what runs L{quietly} (Twisted's lines for
every passive data port).

twistd's own text observer formats the timestamp of every event anew (a
time-zone lookup and an C{strftime}) and the text with a pure-Python
C{string.Formatter}; a server that logs each connection and login does that
thousands of times a second. This one formats each second once and the text
with C{str.format_map}, leaving to Twisted what only Twisted formats.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any, TypeVar

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogEvent,
    LogLevel,
    PredicateResult,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
)
from twisted.python import log as legacy_log
from twisted.python.logfile import LogFile
from zope.interface import implementer

_T = TypeVar("_T")

#: The legacy log context key that marks a routine message as one to leave out.
_QUIET = "exftp_quiet"


def quietly(function: Callable[..., _T], *args: Any) -> _T:
    """
    Call C{function}, leaving out of exftp's logs the routine (below warning)
    messages it logs through Twisted's legacy C{log.msg}, such as a port's
    "starting on" and "Port ... Closed" lines.
    """
    return legacy_log.callWithContext({_QUIET: True}, function, *args)  # type: ignore[no-any-return]


_DROP: PredicateResult = PredicateResult.no
_PASS: PredicateResult = PredicateResult.maybe


@implementer(ILogFilterPredicate)
class _Loud:
    """Drops routine events logged L{quietly}; keeps everything else, errors among them."""

    def __call__(self, event: LogEvent) -> PredicateResult:
        if event.get(_QUIET) and not event.get("isError") and event.get("log_level", LogLevel.info) < LogLevel.warn:
            return _DROP
        return _PASS


class _SecondClock:
    """C{formatTime} for second-resolution stamps, formatting each second once."""

    def __init__(self) -> None:
        self._second: int | None = None
        self._text = "-"

    def __call__(self, when: float | None) -> str:
        if when is None:
            return formatTime(when)
        second = int(when)
        if second != self._second:
            self._second, self._text = second, formatTime(when)
        return self._text


def _system(event: LogEvent) -> str:
    """The C{[SYSTEM]} part of a line: C{log_system}, else C{NAMESPACE#LEVEL}."""
    system = event.get("log_system")
    if system is not None:
        return str(system)
    level = event.get("log_level")
    return f"{event.get('log_namespace', '-')}#{'-' if level is None else level.name}"


def text_observer(out: IO[str]) -> ILogObserver:
    """Classic twistd text lines (C{TIME [SYSTEM] TEXT}, tracebacks included) written to C{out}."""
    clock = _SecondClock()

    def line(event: LogEvent) -> str | None:
        log_format = event.get("log_format")
        if type(log_format) is str and "log_failure" not in event and "log_flattened" not in event:
            # str.format_map formats what Twisted's own formatter does (a
            # pure-Python string.Formatter, most of the cost of a line); what
            # it cannot (a "{callable()}" field, a missing key) is left to
            # Twisted, which also describes an event it cannot format.
            try:
                text = log_format.format_map(event)
            except Exception:
                pass
            else:
                if not text:
                    return None
                return f"{clock(event.get('log_time'))} [{_system(event)}] {text}".replace("\n", "\n\t") + "\n"
        return formatEventAsClassicLogText(event, formatTime=clock)

    return FileLogObserver(out, line)


#: The keys of a JSON line that exftp writes itself; an event's own field of that name gets a C{field_} prefix.
_RESERVED = frozenset({"time", "level", "message", "logger", "system", "error", "traceback"})
#: Keys of Twisted's legacy log events (those with C{isError}) that repeat what the C{log_*} keys say.
_LEGACY = frozenset({"message", "format", "isError", "system", "time", "why", "failure", "printed"})


def _timestamp(when: float) -> str:
    """RFC 3339 in UTC with milliseconds: C{2026-12-08T00:32:49.123Z}."""
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _message(event: LogEvent) -> str:
    """The event's text, as the text format writes it (legacy C{message} tuples included)."""
    if "log_format" in event:
        return formatEvent(event)
    return " ".join(str(part) for part in event.get("message", ()))


def _own_fields(event: LogEvent) -> dict[str, Any]:
    """The event's own fields (C{user}, C{peer}...), without Twisted's bookkeeping."""
    bookkeeping = _LEGACY if "isError" in event else ()
    return {
        f"field_{key}" if key in _RESERVED else key: value
        for key, value in event.items()
        if isinstance(key, str) and not key.startswith("log_") and key not in bookkeeping and key != _QUIET
    }


def _text_of(value: object) -> str:
    """A value JSON cannot hold, as text."""
    try:
        return str(value)
    except Exception:
        return object.__repr__(value)


def json_record(event: LogEvent) -> dict[str, Any] | None:
    """
    One flat object for a log event: C{time} (RFC 3339, UTC), C{level}
    (C{debug}, C{info}, C{warn}, C{error}, C{critical}), C{message} (the
    formatted text), C{logger} (the namespace), C{system} when Twisted names
    one, C{error} and C{traceback} for a failure, and the event's own fields.
    C{None} for an event without text or failure (the text format leaves
    those out too).
    """
    message = _message(event)
    failure = event.get("log_failure")
    if not message and failure is None:
        return None
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": _timestamp(event["log_time"]) if "log_time" in event else None,
        "level": "error" if level is None and event.get("isError") else getattr(level, "name", "info"),
        "message": message,
        "logger": event.get("log_namespace", "-"),
    }
    if event.get("log_system") is not None:
        record["system"] = str(event["log_system"])
    if failure is not None:
        record["error"] = _text_of(failure.getErrorMessage())
        record["traceback"] = failure.getTraceback()
    record.update(_own_fields(event))
    return record


def json_line(event: LogEvent) -> str | None:
    """L{json_record} as one line of JSON; a field JSON cannot hold is written as its text."""
    record = json_record(event)
    if record is None:
        return None
    try:
        return json.dumps(record, default=_text_of, allow_nan=False) + "\n"
    except (TypeError, ValueError):  # a non-text key, a cycle, NaN
        plain = {key: v if v is None or isinstance(v, str | int | bool) else _text_of(v) for key, v in record.items()}
        return json.dumps(plain) + "\n"


def log_observer(out: IO[str], log_format: str = "text") -> ILogObserver:
    """
    The observer for C{--log-format}, writing to C{out}: C{text} (twistd's
    lines) or C{json} (one L{json_record} a line); either leaves out the
    routine messages logged L{quietly}.
    """
    observer = FileLogObserver(out, json_line) if log_format == "json" else text_observer(out)
    return FilteringLogObserver(observer, [_Loud()])


def rotate_on_sigusr1(reactor: Any, out: IO[str]) -> None:
    """
    Rotate C{out} on SIGUSR1 when it is a twistd log file, as twistd does for
    the log files it opens itself (unless something else handles SIGUSR1).
    """
    if isinstance(out, LogFile) and not signal.getsignal(signal.SIGUSR1):

        def handler(signum: int, frame: Any) -> None:
            reactor.callFromThread(out.rotate)

        signal.signal(signal.SIGUSR1, handler)
