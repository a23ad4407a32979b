"""
A push producer that streams a readable source into a consumer.

Shared by the storages whose reads are quick and local (memory, disk).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer, IPushProducer, IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from .._errors import CommandSyntaxError, PermissionDenied, TransferAborted
from .._interfaces import IReadFile

#: Bytes read and written at a time.
CHUNK_SIZE = 256 * 1024
#: Chunks written in one go before yielding to the reactor.
_BURST = 16


def check_offset(offset: int) -> None:
    """
    Refuse an offset that no file has.

    @raise CommandSyntaxError: when C{offset} is negative.
    """
    if offset < 0:
        raise CommandSyntaxError("Offset must not be negative.")


def check_permissions(mode: int) -> int:
    """
    Refuse a SITE CHMOD mode that is not plain permission bits.

    Set-user-ID, set-group-ID and sticky bits are refused: on a server that
    runs as root they would let an FTP user plant a set-user-ID program.

    @return: C{mode}, when acceptable.
    @raise CommandSyntaxError: for a mode out of range.
    @raise PermissionDenied: for the special bits.
    """
    if not 0 <= mode <= 0o7777:
        raise CommandSyntaxError("Mode out of range.")
    if mode & 0o7000:
        raise PermissionDenied("Set-user-ID, set-group-ID and sticky bits are not allowed.")
    return mode


@implementer(IReadFile, IPushProducer)
class StreamingReader:
    """
    An L{IReadFile} that reads C{CHUNK_SIZE} blocks from a callable.

    It writes while the consumer has not paused it and yields to the reactor
    between bursts, so one fast download cannot starve other sessions.
    """

    def __init__(
        self,
        read: Callable[[int], bytes],
        size: int | None,
        reactor: IReactorTime,
        release: Callable[[], None] = lambda: None,
    ) -> None:
        self.size = size
        self._read = read
        self._release = release
        self._reactor = reactor
        self._consumer: IConsumer | None = None
        self._done: Deferred[int] | None = None
        self._paused = False
        self._scheduled = False
        self._sent = 0
        self._closed = False

    def send(self, consumer: IConsumer) -> Deferred[int]:
        if self._done is not None:
            raise RuntimeError("send() called twice")
        self._consumer = consumer
        self._done = Deferred(lambda d: self.stopProducing())
        consumer.registerProducer(self, True)
        self._schedule()
        return self._done

    def _schedule(self) -> None:
        if not self._scheduled and not self._paused and self._done is not None:
            self._scheduled = True
            self._reactor.callLater(0, self._produce)

    def _produce(self) -> None:
        self._scheduled = False
        if self._closed or self._paused or self._consumer is None:
            return
        try:
            for _ in range(_BURST):
                data = self._read(CHUNK_SIZE)
                if not data:
                    self._finish()
                    return
                self._sent += len(data)
                self._consumer.write(data)
                if self._paused or self._closed:
                    return
        except Exception:
            failure = Failure()
            self._consumer.unregisterProducer()
            self._fail(failure)
            return
        self._schedule()

    def _release_once(self) -> None:
        if not self._closed:
            self._closed = True
            self._release()

    def _finish(self) -> None:
        consumer, done = self._consumer, self._done
        self._release_once()
        if consumer is not None:
            consumer.unregisterProducer()
        if done is not None and not done.called:
            done.callback(self._sent)

    def _fail(self, reason: Failure | None = None) -> None:
        done = self._done
        self._release_once()
        if done is not None and not done.called:
            done.errback(reason or Failure(TransferAborted()))

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._schedule()

    def stopProducing(self) -> None:
        self._fail()

    def close(self) -> Deferred[None]:
        if not self._closed:
            self._release_once()
            done, consumer = self._done, self._consumer
            if done is not None and not done.called:
                # Closed in the middle of send(): unhook and fail it rather
                # than leave its Deferred waiting for ever.
                if consumer is not None:
                    consumer.unregisterProducer()
                done.errback(Failure(TransferAborted()))
        return succeed(None)


@implementer(IReadFile, IPushProducer)
class ChunksReader:
    """
    An L{IReadFile} over an asynchronous iterator of byte chunks (such as a
    directory listing formatted page by page as the pages arrive).

    It writes a chunk, then waits while the consumer is paused, so that no
    more than one chunk is held beyond what the consumer buffers.
    """

    size = None

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._consumer: IConsumer | None = None
        self._resumed: Deferred[None] | None = None
        self._stopped = False

    def send(self, consumer: IConsumer) -> Deferred[int]:
        if self._consumer is not None:
            raise RuntimeError("send() called twice")
        self._consumer = consumer
        consumer.registerProducer(self, True)
        return Deferred.fromCoroutine(self._pump(consumer))

    async def _pump(self, consumer: IConsumer) -> int:
        sent = 0
        try:
            async for chunk in self._chunks:
                while self._resumed is not None and not self._stopped:
                    await self._resumed
                if self._stopped:
                    raise TransferAborted()
                consumer.write(chunk)
                sent += len(chunk)
        finally:
            consumer.unregisterProducer()
        return sent

    def pauseProducing(self) -> None:
        if self._resumed is None:
            self._resumed = Deferred()

    def resumeProducing(self) -> None:
        resumed, self._resumed = self._resumed, None
        if resumed is not None:
            resumed.callback(None)

    def stopProducing(self) -> None:
        self._stopped = True
        self.resumeProducing()

    def close(self) -> Deferred[None]:
        """Stop, and close the iterator (releasing what it holds) unless it is running now."""
        self._stopped = True
        self.resumeProducing()
        if self._consumer is None:
            aclose = getattr(self._chunks, "aclose", None)
            if aclose is not None:
                return Deferred.fromCoroutine(aclose())
        return succeed(None)
