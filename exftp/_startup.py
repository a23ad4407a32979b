"""
Start-up checks: before C{twistd exftp} serves anything, ask the storage and
the authenticator once whether they answer.

A configuration error (a bucket that does not exist) stops the server with
one clear line and exit status 1. A problem that may pass (refused
credentials, an endpoint or auth service that does not answer) is logged as
one clear error line, the server starts anyway (transfers get 451, logins
421 meanwhile), and is logged again once the problem is gone.

A storage factory or authenticator takes part by having a
C{probe_at_start() -> str | None} method: blocking, called before the reactor
runs (and, while it reports a problem, every L{RECHECK} seconds in a thread).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

__all__ = ["RECHECK", "ConfigurationError", "check_at_start", "probe_url"]

_log = Logger(namespace="exftp")

#: Seconds between two checks of something that did not answer at start.
RECHECK = 10.0


class ConfigurationError(ValueError):
    """What was configured cannot work (it will not pass by waiting)."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None  # a redirect is an answer; it is never followed


def probe_url(url: str, timeout: float) -> str | None:
    """
    Whether an HTTP service answers at C{url} (any status is an answer):
    C{None}, else why not. Sends no credentials.
    """
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, method="GET"), timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # 401, 404, 500...: the service is there
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        return f"{url.split('?')[0]} does not answer ({type(reason).__name__}: {reason})"


def check_at_start(reactor: Any, **parts: object) -> None:
    """
    Probe each of C{parts} (by role: C{storage=..., auth=...}) that can be
    probed; log what does not answer and watch it until it does.

    @raise ConfigurationError: from a probe, for what cannot work.
    """
    for role, part in parts.items():
        probe = getattr(part, "probe_at_start", None)
        if probe is None:
            continue
        try:
            problem = probe()
        except ConfigurationError as error:
            raise ConfigurationError(f"--{role}: {error}") from None
        if problem is not None:
            _log.error("The {role} does not work yet, exftp starts anyway: {problem}", role=role, problem=problem)
            _watch(reactor, role, probe)


def _watch(reactor: Any, role: str, probe: Any) -> None:
    """Run C{probe} in a thread every L{RECHECK} seconds until it finds nothing wrong, then say so."""

    def check() -> Any:
        return deferToThread(probe).addCallbacks(answered, lambda failure: None)

    def answered(problem: str | None) -> None:
        if problem is None and loop.running:
            loop.stop()
            _log.info("The {role} works again", role=role)

    loop = LoopingCall(check)
    loop.clock = reactor
    reactor.callWhenRunning(loop.start, RECHECK, now=False)
