"""
SFTP reads and writes at offsets over exftp's streaming files.

SFTP clients keep many READ and WRITE requests in flight, each naming its
offset; exftp's storages stream (L{IReadFile} is a push producer,
L{IWriteFile} a consumer). L{OrderedWriter} feeds writes to the upload in
order through a bounded reorder window; L{ReadAhead} serves reads from one
sequential stream with a bounded read-ahead buffer, reopening it to seek.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.conch.ssh.filetransfer import FX_FAILURE, SFTPError
from twisted.internet.defer import CancelledError, Deferred, DeferredLock, succeed
from twisted.internet.interfaces import IConsumer, IProducer, IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from .._interfaces import IReadFile, IWriteFile

#: How far ahead of the upload's position writes may arrive (bytes buffered at most).
REORDER_WINDOW = 8 * 1024 * 1024
#: How much a download reads ahead of the client's requests.
READ_AHEAD = 4 * 1024 * 1024


@implementer(IPushProducer)
class OrderedWriter:
    """
    Writes to C{target} in offset order, whatever order the writes come in.

    Writes ahead of the position wait in a window of at most C{window}
    bytes; one beyond it, one that overlaps another, or one that rewrites
    bytes already written is refused (C{SSH_FX_FAILURE}) rather than
    buffered. While the storage pauses the upload, the writes' answers wait,
    so that the client stops sending.

    @ivar position: the offset of the next byte the target expects.
    """

    def __init__(self, target: IWriteFile, start: int, window: int = REORDER_WINDOW) -> None:
        self.target = target
        self.position = start
        self.window = window
        self.written = 0
        self._pending: dict[int, bytes] = {}
        self._pending_bytes = 0
        self._paused = False
        self._waiting: list[Deferred[None]] = []
        target.registerProducer(self, True)

    def write(self, offset: int, data: bytes) -> Deferred[None]:
        """Accept C{data} at C{offset}; fires once it may be acknowledged."""
        end = offset + len(data)
        if not data:
            return succeed(None)
        if offset < self.position:
            raise SFTPError(FX_FAILURE, f"Write at offset {offset} rewrites bytes already written "
                            f"(the upload is at {self.position}); not supported.")
        if end - self.position > self.window:
            raise SFTPError(FX_FAILURE, f"Write at offset {offset} is too far ahead of the upload "
                            f"(at {self.position}; at most {self.window} bytes may wait out of order).")
        for start, chunk in self._pending.items():
            if start < end and offset < start + len(chunk):
                raise SFTPError(FX_FAILURE, f"Write at offset {offset} overlaps another write.")
        self._pending[offset] = data
        self._pending_bytes += len(data)
        while self.position in self._pending:
            chunk = self._pending.pop(self.position)
            self._pending_bytes -= len(chunk)
            self.position += len(chunk)
            self.written += len(chunk)
            self.target.write(chunk)
        if not self._paused:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiting.append(waiter)
        return waiter

    def gap(self) -> int | None:
        """The offset of the first missing byte when writes are still waiting, else C{None}."""
        return self.position if self._pending else None

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(None)

    def stopProducing(self) -> None:
        self._pending.clear()
        self.resumeProducing()


@implementer(IConsumer)
class _Sink:
    """Receives one opened stream's bytes for its L{ReadAhead}."""

    def __init__(self, owner: ReadAhead) -> None:
        self.owner = owner
        self.producer: IPushProducer | None = None
        self.paused = False

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self.producer = IPushProducer(producer)

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        if self.owner.sink is self:
            self.owner.received(data)

    def pause(self) -> None:
        if self.producer is not None and not self.paused:
            self.paused = True
            self.producer.pauseProducing()

    def resume(self) -> None:
        if self.producer is not None and self.paused:
            self.paused = False
            self.producer.resumeProducing()


class ReadAhead:
    """
    Serves reads at offsets from a sequential stream.

    Reads are served one at a time, in the order they came. A read at the
    stream's position (or a little ahead: the bytes between are skipped) is
    served from the buffer; any other offset reopens the stream there.

    @param opener: opens the file at an offset.
    """

    def __init__(self, opener: Callable[[int], Deferred[IReadFile]], limit: int = READ_AHEAD) -> None:
        self._open = opener
        self.limit = limit
        self.sink: _Sink | None = None
        self._source: IReadFile | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._position = 0
        self._eof = False
        self._error: Failure | None = None
        self._arrived: Deferred[None] | None = None
        self._lock = DeferredLock()
        self.sent = 0

    async def read(self, offset: int, length: int) -> bytes:
        """Up to C{length} bytes at C{offset}; fewer only at the end of the file, C{b""} past it."""
        await self._lock.acquire()
        try:
            return await self._read(offset, length)
        finally:
            self._lock.release()

    async def _read(self, offset: int, length: int) -> bytes:
        if self._source is None or not self._position <= offset <= self._position + self._buffered + self.limit:
            await self._reopen(offset)
        while self._position < offset:
            if self._buffered:
                self._take(offset - self._position)
            else:
                if self._eof:
                    return b""
                await self._more()
        while self._buffered < length and not self._eof:
            await self._more()
        data = self._take(length)
        self.sent += len(data)
        return data

    def _take(self, length: int) -> bytes:
        """Remove and return up to C{length} buffered bytes."""
        pieces = []
        while length > 0 and self._chunks:
            chunk = self._chunks.popleft()
            if len(chunk) > length:
                chunk, rest = chunk[:length], chunk[length:]
                self._chunks.appendleft(rest)
            pieces.append(chunk)
            length -= len(chunk)
        data = b"".join(pieces)
        self._buffered -= len(data)
        self._position += len(data)
        if self.sink is not None and self._buffered < self.limit:
            self.sink.resume()
        return data

    async def _more(self) -> None:
        """Wait for more bytes, the end of the stream, or its failure."""
        if self._error is not None:
            self._error.raiseException()
        assert self.sink is not None
        self.sink.resume()
        self._arrived = Deferred()
        await self._arrived
        if self._error is not None:
            self._error.raiseException()

    def received(self, data: bytes) -> None:
        """Bytes from the stream."""
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered >= self.limit and self.sink is not None:
            self.sink.pause()
        self._wake()

    def _wake(self) -> None:
        arrived, self._arrived = self._arrived, None
        if arrived is not None:
            arrived.callback(None)

    def _ended(self, sink: _Sink, failure: Failure | None) -> None:
        if self.sink is not sink:
            return
        if failure is None:
            self._eof = True
        elif not failure.check(CancelledError):
            self._error = failure
        self._wake()

    async def _reopen(self, offset: int) -> None:
        await self._stop()
        self._chunks.clear()
        self._buffered = 0
        self._position = offset
        self._eof = False
        self._error = None
        self._source = source = await self._open(offset)
        sink = self.sink = _Sink(self)
        sending = source.send(sink)
        sending.addCallbacks(lambda _: self._ended(sink, None), lambda failure: self._ended(sink, failure))

    async def _stop(self) -> None:
        source, sink = self._source, self.sink
        self._source = self.sink = None
        if sink is not None and sink.producer is not None:
            sink.producer.stopProducing()
        if source is not None:
            await source.close()

    async def close(self) -> None:
        """Stop reading and release the file."""
        await self._stop()
