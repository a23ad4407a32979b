"""
A TCP proxy for HTTP/1.1 between exftp and its S3 endpoint that breaks
things on command: the tests' stand-in for an S3 service that fails.

It runs an asyncio loop in a thread of the test process. It reads each
request (head and C{Content-Length} body; the S3 client neither pipelines
nor sends chunked bodies) and, by the mode in force when the request
arrives, passes it on, answers it with an error itself, resets the
connection or holds it. Answers are copied back byte for byte, so a mode
can also cut or freeze a download in the middle.

Modes:
  - C{pass}: forward everything.
  - C{error}: answer every new request with C{status} (503 SlowDown-like
    C{ServiceUnavailable}, or 500 C{InternalError}) without forwarding it;
    L{FaultProxy.fail_next} does this for a burst of N requests only.
  - C{reset}: reset (RST) every connection as soon as a request arrives.
  - C{stall}: stop moving bytes in either direction, on open connections
    too, until the mode changes.
  - L{FaultProxy.down}: stop listening and reset every connection (the
    endpoint is gone: new connections are refused); L{FaultProxy.up}
    listens on the same port again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")

HOST = "127.0.0.1"
_ERROR_CODES = {500: "InternalError", 502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}
_CHUNK = 64 * 1024


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Connection:
    """One client connection and, once a request is passed, its upstream connection."""

    def __init__(self, proxy: FaultProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.reader = reader
        self.writer = writer
        self.upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.pump: asyncio.Task[None] | None = None

    def reset(self) -> None:
        _reset(self.writer)
        if self.upstream is not None:
            _reset(self.upstream[1])
        if self.pump is not None:
            self.pump.cancel()

    async def serve(self) -> None:
        try:
            while True:
                request = await self._request()
                if request is None:
                    return
                await self.proxy._flowing.wait()
                action = self.proxy._take_action()
                self.proxy.requests.append((request.split(b"\r\n", 1)[0].decode("latin-1"), action))
                if action == "reset":
                    self.reset()
                    return
                if action.startswith("error"):
                    self.writer.write(_error_answer(int(action.split(":")[1])))
                    await self.writer.drain()
                    continue
                await self._forward(request)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self.reset()
            self.proxy._connections.discard(self)

    async def _request(self) -> bytes | None:
        """One whole request (head and body), or C{None} at the end of the connection."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        body = await self.reader.readexactly(length) if length else b""
        return head + body

    async def _forward(self, request: bytes) -> None:
        if self.upstream is None:
            self.upstream = await asyncio.open_connection(*self.proxy.upstream)
            self.pump = asyncio.ensure_future(self._pump(self.upstream[0]))
        self.upstream[1].write(request)
        await self.upstream[1].drain()

    async def _pump(self, upstream: asyncio.StreamReader) -> None:
        """Copy the answers back, unless stalled."""
        try:
            while True:
                data = await upstream.read(_CHUNK)
                if not data:
                    break
                await self.proxy._flowing.wait()
                self.writer.write(data)
                await self.writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            return
        self.writer.close()


def _error_answer(status: int) -> bytes:
    code = _ERROR_CODES.get(status, f"HTTP{status}")
    body = f"<Error><Code>{code}</Code><Message>injected by the fault proxy</Message></Error>".encode()
    head = (
        f"HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


class FaultProxy:
    """
    The proxy, listening on C{HOST} at L{port}, forwarding to C{upstream}.

    @ivar requests: every request seen: its request line and what was done
        (C{pass}, C{error:503}, C{reset}).
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.requests: list[tuple[str, str]] = []
        self.port = 0
        self._mode = "pass"
        self._burst = 0
        self._burst_status = 503
        self._connections: set[_Connection] = set()
        self._server: asyncio.base_events.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._call(self._start())

    @property
    def endpoint(self) -> str:
        """The URL to give exftp as its S3 endpoint."""
        return f"http://{HOST}:{self.port}"

    def _call(self, work: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(10)

    def _in_loop(self, action: Callable[[], None]) -> None:
        async def run() -> None:
            action()

        self._call(run())

    async def _start(self) -> None:
        self._flowing.set()
        await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, HOST, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(self, reader, writer)
        self._connections.add(connection)
        await connection.serve()

    def _take_action(self) -> str:
        if self._burst > 0:
            self._burst -= 1
            return f"error:{self._burst_status}"
        return self._mode

    # Commands (from the test's thread)

    def set_mode(self, mode: str, status: int = 503) -> None:
        """C{pass}, C{error} (with C{status}), C{reset} or C{stall}."""

        def apply() -> None:
            self._mode = f"error:{status}" if mode == "error" else mode
            if mode == "stall":
                self._flowing.clear()
            else:
                self._flowing.set()
            if mode == "reset":
                self._reset_all()

        self._in_loop(apply)

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next C{count} requests with C{status}, then go on as before."""

        def apply() -> None:
            self._burst, self._burst_status = count, status

        self._in_loop(apply)

    def reset_all(self) -> None:
        """Reset every open connection now (the mode stays)."""
        self._in_loop(self._reset_all)

    def _reset_all(self) -> None:
        for connection in list(self._connections):
            connection.reset()

    def down(self) -> None:
        """The endpoint dies: stop listening (connections are refused) and reset every connection."""

        async def apply() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None
            self._reset_all()

        self._call(apply())

    def up(self) -> None:
        """The endpoint is back: listen on the same port again, passing everything."""

        async def apply() -> None:
            self._mode = "pass"
            self._flowing.set()
            if self._server is None:
                await self._listen()

        self._call(apply())

    def count(self, action: str) -> int:
        """How many requests were handled with C{action} (C{pass}, C{reset}, C{error:503}...)."""
        return sum(1 for _, done in list(self.requests) if done == action)

    def close(self) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
