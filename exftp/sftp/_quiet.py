"""A logger for Conch's classes, which log every packet at info level."""

from __future__ import annotations

from twisted.logger import ILogObserver, LogEvent, Logger, LogLevel, globalLogPublisher
from zope.interface import provider

#: Conch's routine lines that are not problems (a client's normal disconnect is logged as an error).
_ROUTINE = ("Got remote error",)


@provider(ILogObserver)
def _problems_only(event: LogEvent) -> None:
    """Pass on Conch's warnings, errors and tracebacks; exftp logs what else matters itself."""
    if event.get("log_failure") is None:
        if event.get("log_level", LogLevel.info) < LogLevel.warn:
            return
        if str(event.get("log_format", "")).startswith(_ROUTINE):
            return
    globalLogPublisher(event)


#: Set as C{_log} on the Conch classes exftp uses.
QUIET = Logger(namespace="twisted.conch", observer=_problems_only)
