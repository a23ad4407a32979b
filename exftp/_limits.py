"""
Per-user limits (L{UserLimits}), enforced the same way for every protocol.

The protocol asks L{Limits.admit} once a login is authenticated (allowed
networks, sessions per user), and wraps its transfers: L{Pacer} paces bytes
to the user's rate through the producer/consumer path, L{UploadGuard}
refuses an upload (552) once it passes the largest file size or the quota.
Usage for quotas is computed from the storage itself by L{QuotaTracker},
cached, and updated by this node's own uploads.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer, IDelayedCall, IProducer, IPushProducer
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._errors import FileNotFound, FTPError, LoginFailed
from ._interfaces import FileInfo, FileKind, IPagedListing, IStorage, IWriteFile, Session, UserLimits, WriteMode
from ._paths import VirtualPath
from ._proxy import is_trusted, parse_networks
from ._replies import Reply

__all__ = [
    "LIMIT_KEYS",
    "Limits",
    "Pacer",
    "QuotaExceeded",
    "QuotaTracker",
    "RateLimiter",
    "SessionLimits",
    "TooManySessions",
    "UploadGuard",
    "parse_limits",
]

_log = Logger(namespace="exftp.limits")

#: Seconds of unused rate a user may save up and then spend at once.
BURST_SECONDS = 0.05
#: The smallest burst, so that one read of the data connection fits.
MIN_BURST = 64 * 1024
#: The bounds of the bytes read at a time from a paced upload's socket.
MIN_READ, MAX_READ = 16 * 1024, 256 * 1024
#: Seconds a computed usage is trusted before it is computed again from the
#: storage (other nodes, other tools may change it meanwhile).
USAGE_TTL = 300.0
#: Entries a usage computation reads at most; past it, the usage is what was
#: counted so far (and a warning is logged).
MAX_WALK_ENTRIES = 1_000_000
#: Entries a usage computation reads before it lets the reactor run other work.
WALK_SLICE = 1000

_OVER_QUOTA = "Quota exceeded: the upload does not fit in your storage allocation."


class QuotaExceeded(FTPError):
    """An upload would pass the user's quota or largest file size (RFC 959: 552)."""

    reply = Reply.EXCEEDED_STORAGE_ALLOCATION
    default_message = "Exceeded storage allocation."


class TooManySessions(FTPError):
    """The user has as many sessions as allowed (421: the client may retry later)."""

    reply = Reply.SERVICE_NOT_AVAILABLE
    default_message = "Too many sessions for this user; try again later."


#: The keys of a user's limits in a users file or a webhook's JSON answer.
LIMIT_NUMBERS = tuple(field.name for field in dataclasses.fields(UserLimits) if field.name != "allow_from")
LIMIT_KEYS = (*LIMIT_NUMBERS, "allow_from")


def value_kind(value: object) -> str:
    """What C{value} is, in words for an error message ("an integer", "text")."""
    return {bool: "a boolean", int: "an integer", float: "a float", str: "text", list: "a list", dict: "a table"}.get(
        type(value), type(value).__name__
    )


def parse_limits(table: Mapping[str, Any], where: str = "") -> UserLimits:
    """
    A user's limits from a users file's table or a webhook's JSON object:
    whole numbers >= 0 (0 or absent: unlimited), C{allow_from} a list of
    networks; other keys are ignored.

    @param where: what to name a key by in a message, before the key (C{"users.alice."}).
    @raise ValueError: naming the key that has a wrong value.
    """
    numbers: dict[str, int | None] = {}
    for key in LIMIT_NUMBERS:
        value = table.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            shown = value if isinstance(value, int | float) else value_kind(value)
            raise ValueError(f"{where}{key}: expected a whole number >= 0 (0: unlimited), not {shown}")
        numbers[key] = value or None
    texts = table.get("allow_from")
    texts = [] if texts is None else texts
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise ValueError(f'{where}allow_from: expected a list of networks such as ["192.0.2.0/24"]')
    try:
        networks = parse_networks(texts)
    except ValueError as error:
        raise ValueError(f"{where}allow_from: {error}") from None
    return UserLimits(**numbers, allow_from=networks)


def with_defaults(limits: UserLimits, defaults: UserLimits) -> UserLimits:
    """C{limits}, with each number it leaves unlimited taken from C{defaults}."""
    changes = {
        field.name: getattr(defaults, field.name)
        for field in dataclasses.fields(UserLimits)
        if field.name != "allow_from" and not getattr(limits, field.name) and getattr(defaults, field.name)
    }
    return dataclasses.replace(limits, **changes) if changes else limits


class RateLimiter:
    """
    A token bucket shared by all of one user's transfers in one direction.

    Bytes are taken as they move and may put the bucket in debt; the debt
    says how long the mover must pause.

    @param rate: bytes per second.
    @param clock: an L{IReactorTime}.
    """

    def __init__(self, rate: int, clock: Any) -> None:
        self.rate = rate
        self._clock = clock
        self._level = 0.0
        self._stamp = clock.seconds()

    def take(self, size: int) -> float:
        """Count C{size} bytes moved; the seconds to wait before moving more (0: none)."""
        now = self._clock.seconds()
        burst = max(self.rate * BURST_SECONDS, MIN_BURST)
        self._level = min(burst, self._level + (now - self._stamp) * self.rate) - size
        self._stamp = now
        return 0.0 if self._level >= 0 else -self._level / self.rate


@implementer(IConsumer, IPushProducer)
class Pacer:
    """
    A consumer that paces a streaming producer to a L{RateLimiter}: it
    pauses the producer while the limiter is in debt and resumes it (by a
    timer, never by sleeping) when the debt is paid; the consumer's own
    pauses (a full socket or a slow storage) still pass through.

    @param consumer: where the bytes go.
    @param limiter: the user's limiter for this direction.
    @param clock: an L{IReactorTime}, for the resume timer.
    """

    def __init__(self, consumer: IConsumer, limiter: RateLimiter, clock: Any) -> None:
        self._consumer = consumer
        self._limiter = limiter
        self._clock = clock
        self._producer: IProducer | None = None
        self._held = False  # the consumer asked for a pause
        self._paced: IDelayedCall | None = None
        self._paused = False

    @property
    def pacing(self) -> bool:
        """Whether the producer is held back for the rate now (so a stall watchdog should wait)."""
        return self._paced is not None

    @property
    def read_size(self) -> int:
        """How much to read from a paced socket at a time: about a tenth of a second's worth."""
        return max(MIN_READ, min(MAX_READ, self._limiter.rate // 10))

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        if not streaming:  # a pull producer is asked for each write: nothing to pause
            self._consumer.registerProducer(producer, False)
            return
        self._producer = producer
        self._consumer.registerProducer(self, True)

    def unregisterProducer(self) -> None:
        self._cancel()
        self._producer = None
        self._consumer.unregisterProducer()

    def write(self, data: bytes) -> None:
        self._consumer.write(data)
        wait = self._limiter.take(len(data))
        if wait > 0 and self._paced is None and self._producer is not None:
            self._paced = self._clock.callLater(wait, self._paid)
            self._update()

    def _paid(self) -> None:
        self._paced = None
        wait = self._limiter.take(0)  # another session of the user may have spent meanwhile
        if wait > 0:
            self._paced = self._clock.callLater(wait, self._paid)
        self._update()

    def _cancel(self) -> None:
        if self._paced is not None and self._paced.active():
            self._paced.cancel()
        self._paced = None

    def _update(self) -> None:
        producer = self._producer
        paused = self._held or self._paced is not None
        if producer is None or paused == self._paused:
            return
        self._paused = paused
        if paused:
            producer.pauseProducing()  # type: ignore[attr-defined]
        else:
            producer.resumeProducing()  # type: ignore[attr-defined]

    # IPushProducer, toward the consumer

    def pauseProducing(self) -> None:
        self._held = True
        self._update()

    def resumeProducing(self) -> None:
        self._held = False
        self._update()

    def stopProducing(self) -> None:
        self._cancel()
        if self._producer is not None:
            self._producer.stopProducing()


@dataclasses.dataclass(slots=True)
class Usage:
    """What a user's root holds: bytes and files."""

    bytes: int = 0
    files: int = 0


class QuotaTracker:
    """
    The usage of one root, computed from its storage, cached for
    L{USAGE_TTL} seconds, and kept up to date by this node's uploads.

    @param clock: an L{IReactorTime}.
    """

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._usage: Usage | None = None
        self._computed_at = 0.0
        self._computing: list[Deferred[Usage]] | None = None
        #: Bytes charged by uploads still running (see L{UploadGuard}).
        self.pending = 0

    def invalidate(self) -> None:
        """Mark the cached usage stale (e.g. after a deletion): the next L{usage} computes it again."""
        self._computed_at = float("-inf")

    def room(self, quota_bytes: int, own: int) -> int:
        """
        The bytes an upload that has charged C{own} bytes may still add
        under C{quota_bytes}: what neither the stored files (as last
        computed) nor the other running uploads take.
        """
        stored = self._usage.bytes if self._usage is not None else 0
        return quota_bytes - stored - (self.pending - own)

    def usage(self, storage: IStorage) -> Deferred[Usage]:
        """
        The root's usage, computed from C{storage} (the user's view) when
        not cached. One walk at a time: sessions that ask meanwhile wait for
        it, and one that goes away (its Deferred cancelled) stops nobody else's.
        """
        if self._usage is not None and self._clock.seconds() - self._computed_at < USAGE_TTL:
            return succeed(self._usage)
        waiter: Deferred[Usage] = Deferred()
        if self._computing is None:
            self._computing = [waiter]
            walk = Deferred.fromCoroutine(walk_usage(storage, self._clock))
            walk.addBoth(self._walked)
        else:
            self._computing.append(waiter)
        return waiter

    def _walked(self, result: Usage | Failure) -> None:
        waiting, self._computing = self._computing or [], None
        if isinstance(result, Usage):
            self._usage, self._computed_at = result, self._clock.seconds()
        for waiter in waiting:
            if waiter.called:  # cancelled by its session meanwhile
                continue
            if isinstance(result, Usage):
                waiter.callback(result)
            else:
                waiter.errback(result)

    def add(self, size: int, files: int) -> None:
        """Count a committed change of this node's (bytes may be negative)."""
        if self._usage is not None:
            self._usage.bytes = max(0, self._usage.bytes + size)
            self._usage.files = max(0, self._usage.files + files)


async def walk_usage(storage: IStorage, clock: Any) -> Usage:
    """
    Add up the files under C{storage}'s root, one directory at a time,
    through the storage's paged listing where it has one (big directories
    are then read off the reactor thread), at most L{MAX_WALK_ENTRIES}
    entries; every L{WALK_SLICE} entries the reactor (C{clock}) runs the
    other sessions' work, so that a big tree holds nobody up.
    """
    usage = Usage()
    pending = [VirtualPath.root()]
    seen = 0
    while pending:
        directory = pending.pop()
        for page in await _pages(storage, directory):
            for entry in page:
                if entry.is_directory:
                    pending.append(directory.child(entry.name))
                elif entry.kind is FileKind.FILE:
                    usage.bytes += entry.size
                    usage.files += 1
            before, seen = seen, seen + len(page)
            if seen >= MAX_WALK_ENTRIES:
                _log.warn("Usage walk stopped after {count} entries; quota counts only those", count=seen)
                return usage
            if seen // WALK_SLICE != before // WALK_SLICE:
                await deferLater(clock, 0, lambda: None)
    return usage


async def _pages(storage: IStorage, directory: VirtualPath) -> list[Sequence[FileInfo]]:
    if IPagedListing.providedBy(storage):
        return [page async for page in storage.list_pages(directory)]  # type: ignore[attr-defined]
    entries: Sequence[FileInfo] = await storage.list(directory)
    return [entries]


@implementer(IWriteFile)
class UploadGuard:
    """
    An upload that may not pass the user's largest file size or quota: the
    bytes that would pass are never written, C{error} is set (552) and the
    producer (the data connection) is stopped; the caller then aborts the
    upload, so nothing is kept. On L{finish} the quota's usage is updated.

    @param upload: the storage's upload.
    @param start: the offset the upload writes from.
    @param kept: the bytes of the old file that stay (0 when it is replaced).
    @param existing: the old file's size, or C{None} when there is none.
    @param max_size: the largest file size, or C{None}.
    @param quota: the root's tracker, or C{None} without a quota.
    @param quota_bytes: the byte quota, or C{None}.
    """

    def __init__(
        self,
        upload: IWriteFile,
        *,
        start: int,
        kept: int,
        existing: int | None,
        max_size: int | None,
        quota: QuotaTracker | None = None,
        quota_bytes: int | None = None,
    ) -> None:
        self._upload = upload
        self._start, self._kept, self._existing = start, kept, existing
        self._max_size, self._quota, self._quota_bytes = max_size, quota, quota_bytes
        self._written = 0
        self._charged = 0
        self._producer: IProducer | None = None
        self.error: QuotaExceeded | None = None

    @property
    def size(self) -> int:
        """The file's size once this upload is committed."""
        return max(self._kept, self._start + self._written)

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self._producer = producer
        self._upload.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._producer = None
        self._upload.unregisterProducer()

    def write(self, data: bytes) -> None:
        if self.error is not None:
            return
        self._written += len(data)
        size = self.size
        if self._max_size is not None and size > self._max_size:
            self._refuse(f"File too large: the largest file allowed is {self._max_size} bytes.")
            return
        if self._quota is not None:
            growth = size - (self._existing or 0)
            if self._quota_bytes and growth > self._quota.room(self._quota_bytes, self._charged):
                self._refuse(_OVER_QUOTA)
                return
            if growth > self._charged:
                self._quota.pending += growth - self._charged
                self._charged = growth
        self._upload.write(data)

    def _refuse(self, message: str) -> None:
        self.error = QuotaExceeded(message)
        self._written = 0
        if self._producer is not None:
            self._producer.stopProducing()

    def _uncharge(self) -> None:
        if self._quota is not None:
            self._quota.pending -= self._charged
            self._charged = 0

    def finish(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._finish())

    async def _finish(self) -> None:
        try:
            await self._upload.finish()
        finally:
            self._uncharge()
        if self._quota is not None:
            self._quota.add(self.size - (self._existing or 0), 1 if self._existing is None else 0)

    def abort(self) -> Deferred[None]:
        self._uncharge()
        return self._upload.abort()


class SessionLimits:
    """
    The limits of one admitted session: its user's effective L{UserLimits},
    shared rate limiters and quota tracker; L{release} when the session ends.
    """

    def __init__(self, registry: Limits, session: Session, limits: UserLimits) -> None:
        self._registry = registry
        self.username = session.username
        self.root = str(session.root or VirtualPath.root())
        self.limits = limits
        self._released = False

    def release(self) -> None:
        """Count the session out; only the first call counts."""
        if not self._released:
            self._released = True
            self._registry._release(self)

    def rate(self, upload: bool) -> RateLimiter | None:
        """The user's shared limiter for uploads or downloads, or C{None} when unlimited."""
        rate = self.limits.upload_rate if upload else self.limits.download_rate
        return self._registry._limiter(self.username, upload, rate) if rate else None

    def pacer(self, consumer: IConsumer, upload: bool) -> Pacer | None:
        """C{consumer} paced to the user's rate for that direction, or C{None} when there is none."""
        limiter = self.rate(upload)
        return None if limiter is None else Pacer(consumer, limiter, self._registry.clock)

    @property
    def quota(self) -> QuotaTracker | None:
        """The tracker of the user's root, or C{None} without a quota."""
        if not (self.limits.quota_bytes or self.limits.quota_files):
            return None
        return self._registry._tracker(self.root)

    async def guard(
        self, storage: IStorage, path: VirtualPath, mode: WriteMode, offset: int, size_hint: int | None = None
    ) -> UploadGuardPlan | None:
        """
        Check an upload before it starts, against the quota (with its size
        when known, from ALLO) and the number of files.

        @return: how to guard it, or C{None} when nothing limits it.
        @raise QuotaExceeded: (552) when it cannot fit.
        """
        limits = self.limits
        tracker = self.quota
        if tracker is None and not limits.max_file_size:
            return None
        existing = await _size_of(storage, path)
        kept = 0 if mode is WriteMode.TRUNCATE else existing or 0
        start = kept if mode is WriteMode.APPEND else offset
        if size_hint is not None and limits.max_file_size and max(kept, start + size_hint) > limits.max_file_size:
            raise QuotaExceeded(f"File too large: the largest file allowed is {limits.max_file_size} bytes.")
        if tracker is not None:
            usage = await tracker.usage(storage)
            if limits.quota_files and existing is None and usage.files >= limits.quota_files:
                raise QuotaExceeded(f"Quota exceeded: at most {limits.quota_files} files.")
            growth = max(kept, start + (size_hint or 0)) - (existing or 0)
            if limits.quota_bytes and growth > tracker.room(limits.quota_bytes, 0):
                raise QuotaExceeded(_OVER_QUOTA)
        return UploadGuardPlan(start, kept, existing, limits.max_file_size, tracker, limits.quota_bytes)

    def changed(self) -> None:
        """Something outside an upload changed the user's files (a deletion): compute usage again."""
        tracker = self.quota
        if tracker is not None:
            tracker.invalidate()

    async def describe(self, storage: IStorage, usage_shown: bool = True) -> list[str]:
        """
        Lines that show the user's usage and limits (SITE QUOTA).

        @param usage_shown: whether to show what the root holds (not to a
            user who may not list it, such as an upload-only drop box).
        """
        limits, tracker = self.limits, self.quota
        usage = await tracker.usage(storage) if tracker is not None and usage_shown else None
        lines = [f"Limits of {self.username}:"]
        if tracker is not None and usage is None:
            lines.append(f"Bytes: at most {_of(limits.quota_bytes)}")
            lines.append(f"Files: at most {_of(limits.quota_files)}")
        elif usage is not None:
            lines.append(f"Bytes used: {usage.bytes} of {_of(limits.quota_bytes)}")
            lines.append(f"Files used: {usage.files} of {_of(limits.quota_files)}")
        else:
            lines.append("Quota: unlimited")
        lines += [
            f"Largest file: {_of(limits.max_file_size)}",
            f"Upload rate: {_of(limits.upload_rate)}",
            f"Download rate: {_of(limits.download_rate)}",
            f"Sessions: {self._registry.sessions(self.username)} of {_of(limits.max_sessions)}",
        ]
        if limits.allow_from:
            lines.append("Allowed from: " + ", ".join(str(network) for network in limits.allow_from))
        return lines


def _of(value: int | None) -> str:
    return str(value) if value else "unlimited"


@dataclasses.dataclass(frozen=True, slots=True)
class UploadGuardPlan:
    """What L{SessionLimits.guard} found out: wrap the upload with L{wrap}."""

    start: int
    kept: int
    existing: int | None
    max_size: int | None
    quota: QuotaTracker | None
    quota_bytes: int | None

    def wrap(self, upload: IWriteFile) -> UploadGuard:
        """C{upload}, guarded."""
        return UploadGuard(
            upload,
            start=self.start,
            kept=self.kept,
            existing=self.existing,
            max_size=self.max_size,
            quota=self.quota,
            quota_bytes=self.quota_bytes,
        )


async def _size_of(storage: IStorage, path: VirtualPath) -> int | None:
    """The size of the file at C{path}, or C{None} when there is none."""
    try:
        info: FileInfo = await storage.stat(path)
    except FileNotFound:
        return None
    return None if info.is_directory else info.size


class Limits:
    """
    The per-user registry of one server (shared by its protocols): sessions
    counted per user, one rate limiter per user and direction, one quota
    tracker per root.

    @param clock: an L{IReactorTime}.
    @param defaults: the server-wide limits (C{--max-file-size},
        C{--upload-rate}, C{--download-rate}) for users whose own leave them unlimited.
    """

    def __init__(self, clock: Any, defaults: UserLimits | None = None) -> None:
        self.clock = clock
        self.defaults = defaults or UserLimits()
        self._sessions: Counter[str] = Counter()
        self._limiters: dict[tuple[str, bool], RateLimiter] = {}
        self._trackers: dict[str, QuotaTracker] = {}

    def admit(self, session: Session, address: str | None) -> SessionLimits:
        """
        Admit an authenticated session, and count it.

        @param address: the client's address.
        @raise LoginFailed: (530) when C{address} is not in the user's
            C{allow_from}: a failed login like a wrong password, so that it
            tells nothing about the password.
        @raise TooManySessions: (421) when the user has C{max_sessions} already.
        """
        limits = with_defaults(session.limits, self.defaults)
        if limits.allow_from and not is_trusted(address, limits.allow_from):
            _log.info(
                "Login of {user!r} refused from {peer}: not in its allow_from", user=session.username, peer=address
            )
            raise LoginFailed()
        name = session.username
        if limits.max_sessions and self._sessions[name] >= limits.max_sessions:
            _log.info("Login of {user!r} refused: {count} sessions already", user=name, count=self._sessions[name])
            raise TooManySessions()
        self._sessions[name] += 1
        return SessionLimits(self, session, limits)

    def sessions(self, username: str) -> int:
        """How many admitted sessions C{username} has now."""
        return self._sessions[username]

    def _release(self, admitted: SessionLimits) -> None:
        name = admitted.username
        self._sessions[name] -= 1
        if self._sessions[name] <= 0:
            del self._sessions[name]
            self._limiters.pop((name, True), None)
            self._limiters.pop((name, False), None)
        if not self._sessions:  # usage is computed again from the storage by the next session
            self._trackers.clear()

    def _limiter(self, username: str, upload: bool, rate: int) -> RateLimiter:
        limiter = self._limiters.get((username, upload))
        if limiter is None:
            limiter = self._limiters[username, upload] = RateLimiter(rate, self.clock)
        limiter.rate = rate  # the newest session's settings win
        return limiter

    def _tracker(self, root: str) -> QuotaTracker:
        tracker = self._trackers.get(root)
        if tracker is None:
            tracker = self._trackers[root] = QuotaTracker(self.clock)
        return tracker
