"""
The log observers that C{twistd exftp} gives twistd: text lines exactly as
twistd writes them, or JSON, and rotation of a log file on SIGUSR1. Both
leave out the routine messages of what runs L{quietly} (Twisted's lines for
every passive data port).

twistd's own text observer formats the timestamp of every event anew (a
time-zone lookup and an C{strftime}) and the text with a pure-Python
C{string.Formatter}; a server that logs each connection and login does that
thousands of times a second. This one formats each second once and the text
with C{str.format_map}, leaving to Twisted what only Twisted formats.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import IO, Any, TypeVar

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogEvent,
    LogLevel,
    PredicateResult,
    formatEventAsClassicLogText,
    formatTime,
    jsonFileLogObserver,
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


def log_observer(out: IO[str], log_format: str) -> ILogObserver:
    """The observer for C{--log-format} (C{text} or C{json}) writing to C{out}."""
    observer = jsonFileLogObserver(out, "") if log_format == "json" else text_observer(out)
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
