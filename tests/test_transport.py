"""
write_now: replies go out in the call on an idle plain TCP connection, and
the transport's own (queued) write keeps the byte order everywhere else.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, StringTransport

from exftp._transport import write_now


@pytest.fixture
def pair() -> Iterator[tuple[tcp.Server, socket.socket, MemoryReactor]]:
    """A Twisted TCP server transport on a real loopback connection, and the client's socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname(), timeout=5)
    accepted, address = listener.accept()
    listener.close()
    accepted.setblocking(False)
    reactor = MemoryReactor()
    transport = tcp.Server(accepted, Protocol(), address, None, 1, reactor)
    yield transport, client, reactor
    client.close()
    accepted.close()


def _received(client: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = client.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_idle_connection_sends_in_the_call(pair: tuple[tcp.Server, socket.socket, MemoryReactor]) -> None:
    transport, client, reactor = pair
    write_now(transport, b"220 ready\r\n")
    # Arrived without a reactor turn, and the transport never asked for one.
    assert _received(client, 11) == b"220 ready\r\n"
    assert transport not in reactor.writers


def test_queued_bytes_keep_their_order(pair: tuple[tcp.Server, socket.socket, MemoryReactor]) -> None:
    transport, client, reactor = pair
    transport.write(b"first ")
    write_now(transport, b"second")
    assert transport in reactor.writers  # both wait for the writable event
    client.setblocking(False)
    with pytest.raises(BlockingIOError):
        client.recv(100)
    client.setblocking(True)
    transport.doWrite()
    assert _received(client, 12) == b"first second"


def test_what_the_socket_refuses_is_queued(pair: tuple[tcp.Server, socket.socket, MemoryReactor]) -> None:
    transport, client, reactor = pair
    block = b"x" * 65536
    sent = 0
    while transport not in reactor.writers:  # until the socket buffers are full
        write_now(transport, block)
        sent += len(block)
    write_now(transport, b"end")
    received = bytearray()
    while len(received) < sent + 3:
        if transport.dataBuffer or transport._tempDataBuffer:
            transport.doWrite()
        received += client.recv(1 << 20)
    assert bytes(received) == block * (sent // len(block)) + b"end"


def test_closing_connection_is_left_to_twisted(pair: tuple[tcp.Server, socket.socket, MemoryReactor]) -> None:
    transport, client, reactor = pair
    transport.loseConnection()
    write_now(transport, b"late")  # not sent at once: Twisted's write decides, as before
    assert transport in reactor.writers
    client.setblocking(False)
    with pytest.raises(BlockingIOError):
        client.recv(100)


def test_other_transports_use_their_own_write() -> None:
    transport = StringTransport()
    write_now(transport, b"331 password\r\n")
    assert transport.value() == b"331 password\r\n"
