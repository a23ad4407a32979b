"""
Sending small writes at once on plain TCP connections.

Twisted's C{transport.write} never sends in the call: it queues the bytes and
asks the reactor to say when the socket is writable, which costs two
C{epoll_ctl} calls and a whole reactor turn per write. For the control
connection's replies (a few dozen bytes each, almost always sent whole) that
is most of the work of a short command; L{write_now} sends them in the call
instead, and falls back to the transport's own write whenever the fast way
does not apply.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp


def _idle_tcp(transport: Any) -> bool:
    """
    Whether C{transport} is a plain (not TLS) TCP connection that is open and
    has nothing queued, so that sending now keeps the bytes in order.
    """
    return (
        type(transport) is tcp.Server
        and bool(transport.connected)
        and not transport.disconnecting
        and not transport.TLS
        and not getattr(transport, "_writeDisconnected", True)
        and not transport.dataBuffer
        and not getattr(transport, "_tempDataBuffer", True)
    )


def write_now(transport: Any, data: bytes) -> None:
    """
    Write C{data} to C{transport}, sending it in the call when the transport is
    an idle plain TCP connection; what the socket does not take at once (and
    everything on other transports: TLS, PROXY-wrapped, test transports) goes
    through C{transport.write}, which also reports a broken connection.
    """
    if data and _idle_tcp(transport):
        try:
            sent = transport.socket.send(data)
        except OSError:
            sent = 0  # full or broken: the transport's own write finds out which
        data = data[sent:]
        if not data:
            return
    transport.write(data)
