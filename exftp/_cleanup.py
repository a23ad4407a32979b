"""
Cleaning up after servers that died: the upload leftovers a crash leaves
behind (temporary files, open multipart uploads) and whose they are.

Every leftover names the node that made it, the process id and a token of
the process's start (L{BOOT}). A node's name is stable across restarts (the
host name by default), so a node that starts again finds what its earlier
run left. Several servers sharing one storage need names of their own.

A leftover is removed when it is

  - the node's own, from an earlier run: never this very process's, and
    never one of a process of the same name that still runs on this host;
  - or, whoever made it, older than a configurable age.

Anything exftp did not make is never touched.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface

from ._errors import StorageUnavailable

__all__ = [
    "BOOT",
    "DEFAULT_MAX_AGE",
    "RESERVED_PREFIX",
    "CleanupReport",
    "CleanupService",
    "IStorageCleanup",
    "Owner",
    "check_node",
    "clean_up_now",
    "default_node",
    "judge",
]

_log = Logger(namespace="exftp.cleanup")

#: This process's start token: tells its own uploads from an earlier run's.
BOOT = secrets.token_hex(4)
#: Names starting with this are exftp's own (upload temporaries, the S3
#: upload journal): never listed, and refused to clients.
RESERVED_PREFIX = ".exftp-upload-"
#: Leftovers of other nodes older than this (seconds) are removed: a week.
DEFAULT_MAX_AGE = 7 * 24 * 3600.0
#: Names of leftovers listed one by one in the log; the rest are counted.
_NAMED_IN_LOG = 20

_NODE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def check_node(name: str) -> str:
    """
    Accept a node name: 1 to 64 letters, digits, C{.}, C{_} or C{-}.

    @raise ValueError: for anything else.
    """
    if not _NODE.match(name):
        raise ValueError(f"node names are 1 to 64 of A-Z a-z 0-9 . _ -, not {name!r}")
    return name


def default_node() -> str:
    """This host's name, made a valid node name: stable across restarts."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())[:64]
    return name or "exftp"


@dataclass(frozen=True)
class Owner:
    """
    Who made a leftover.

    @ivar node: the node's name.
    @ivar pid: the process id on the node's host.
    @ivar boot: the process's start token (L{BOOT} of that process).
    """

    node: str
    pid: int
    boot: str


def _runs(pid: int) -> bool:
    """Whether a process with this id runs on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it runs, as another user
    return True


def judge(owner: Owner | None, age: float, node: str | None, older_than: float | None) -> tuple[bool, str | None]:
    """
    Whether a leftover may go.

    @param owner: who made it, or C{None} when that is unknown (a leftover
        of an older exftp); such a leftover goes only by age.
    @param age: seconds since it was made or last written.
    @param node: the node whose leftovers go whatever their age, or C{None}.
    @param older_than: the age from which anyone's leftover goes, or C{None}.
    @return: C{(True, why)} to remove it; C{(False, why)} to keep it for a
        reason worth logging; C{(False, None)} to keep it quietly.
    """
    if owner is not None and owner.boot == BOOT:
        return False, None
    if owner is not None and node is not None and owner.node == node:
        if owner.pid != os.getpid() and _runs(owner.pid):
            return False, f"process {owner.pid} of node {node} still runs on this host"
        return True, f"left by node {node}"
    if older_than is not None and age >= older_than:
        return True, f"older than {older_than:g} s"
    return False, None


@dataclass
class CleanupReport:
    """
    What one clean-up did.

    @ivar removed: each leftover removed, with why.
    @ivar kept: leftovers of this node kept because their process still runs.
    @ivar failed: leftovers that could not be removed, with why.
    @ivar complete: C{False} when the clean-up stopped early (shutdown, or
        more entries than it may look at).
    """

    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    complete: bool = True

    def merge(self, other: CleanupReport) -> None:
        """Add what C{other} did to this report."""
        self.removed += other.removed
        self.kept += other.kept
        self.failed += other.failed
        self.complete = self.complete and other.complete


def _named(items: Sequence[str]) -> str:
    shown = "; ".join(items[:_NAMED_IN_LOG])
    more = len(items) - _NAMED_IN_LOG
    return shown + (f"; and {more} more" if more > 0 else "")


def log_report(report: CleanupReport, storage: object) -> None:
    """Tell the log what a clean-up did, in a few lines."""
    for items, level, what in (
        (report.removed, LogLevel.info, "removed {count} upload leftovers"),
        (
            report.kept,
            LogLevel.warn,
            "kept {count} leftovers of a process that still runs "
            "(give each server sharing a storage its own node name)",
        ),
        (report.failed, LogLevel.warn, "could not remove {count} leftovers"),
    ):
        if items:
            _log.emit(
                level,
                "Clean-up of {storage}: " + what + ": {items}",
                storage=storage,
                count=len(items),
                items=_named(items),
            )
    if not report.complete:
        _log.warn("Clean-up of {storage} stopped before it had looked at everything", storage=storage)
    if not (report.removed or report.kept or report.failed) and report.complete:
        _log.info("Clean-up of {storage}: no upload leftovers", storage=storage)


class IStorageCleanup(Interface):
    """
    Optional, for an L{exftp.IStorageFactory}: removes the upload leftovers
    of servers that died (see L{judge} for which).
    """

    node = Attribute("This server's node name (str), written on every upload leftover it may leave.")

    def clean_up(node: str | None, older_than: float | None) -> Deferred[CleanupReport]:
        """
        Remove the leftovers of node C{node} and those older than C{older_than} seconds.

        Runs off the reactor thread or asynchronously; cancelling the
        Deferred stops it soon (with an incomplete report).
        """


class CleanupService(Service):
    """
    Cleans up after crashed servers when the server starts, without holding
    up its start: the storage factory's own leftovers and those older than
    C{older_than} seconds. Does nothing for storages without L{IStorageCleanup}.

    @param storage_factory: the storage factory, before any wrapping proxy.
    @param older_than: the age from which any node's leftovers go, or C{None}.
    """

    name = "exftp-cleanup"

    def __init__(self, storage_factory: object, older_than: float | None = DEFAULT_MAX_AGE) -> None:
        self.storage_factory = storage_factory
        self.older_than = older_than
        self._running: Deferred[Any] | None = None

    def startService(self) -> None:
        super().startService()
        factory = self.storage_factory
        if not IStorageCleanup.providedBy(factory):
            return
        node: str = factory.node  # type: ignore[attr-defined]
        _log.info(
            "Cleaning up upload leftovers of node {node} (and of any node older than {age}) in {storage}",
            node=node,
            age="never" if self.older_than is None else f"{self.older_than:g} s",
            storage=factory,
        )
        running: Deferred[Any] = maybeDeferred(factory.clean_up, node, self.older_than)  # type: ignore[attr-defined]
        running.addCallbacks(log_report, self._failed, callbackArgs=(factory,))
        self._running = running

    def _failed(self, failure: Failure) -> None:
        if failure.check(CancelledError):
            _log.info("Clean-up of {storage} stopped: the server is shutting down", storage=self.storage_factory)
            return
        if failure.check(StorageUnavailable):
            # The storage does not answer (said at start, see exftp._startup): one line, no traceback.
            cause = getattr(failure.value, "__cause__", None)
            why = f"{type(cause).__name__}: {cause}" if cause is not None else failure.getErrorMessage()
            _log.error("Clean-up of {storage} could not run: {why}", storage=self.storage_factory, why=why)
            return
        _log.failure("Clean-up of {storage} failed", failure, storage=self.storage_factory)

    def stopService(self) -> Deferred[Any] | None:
        super().stopService()
        running, self._running = self._running, None
        if running is None or running.called:
            return None
        running.cancel()
        return running


def clean_up_now(storage_factory: object, node: str | None, older_than: float | None) -> NoReturn:
    """
    Clean up once, logging to standard output, and exit: status 0 when
    everything it looked at is fine, 1 when something could not be removed,
    2 when the storage cannot be cleaned up. For C{twistd exftp --cleanup}
    and C{exftp-cleanup}; runs the global reactor, so call it before twistd does.
    """
    from twisted.internet.task import react
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
    if not IStorageCleanup.providedBy(storage_factory):
        _log.error("{storage} has nothing to clean up", storage=storage_factory)
        raise SystemExit(2)

    async def run(reactor: Any) -> None:
        report: CleanupReport = await maybeDeferred(storage_factory.clean_up, node, older_than)  # type: ignore[attr-defined]
        log_report(report, storage_factory)
        if report.failed or not report.complete:
            raise SystemExit(1)

    react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
    raise SystemExit(0)  # react() exits by itself; this is for type checkers
