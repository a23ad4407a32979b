"""
Data connections: passive listeners, active connections, and the protocol
that carries file bytes between them and the storage.
"""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Callable
from typing import Any, Literal

from OpenSSL import SSL
from twisted.internet import error as internet_error
from twisted.internet import tcp
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IHandshakeListener,
    IListeningPort,
    IProducer,
    IProtocolFactory,
    IWriteDescriptor,
)
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._ascii import AsciiDecoder, AsciiEncoder
from ._errors import DataConnectionFailed, FTPError, TransferAborted
from ._interfaces import IWriteFile
from ._logging import quietly
from ._proxy import IPNetwork, TrustedProxyFactory, unmapped
from ._replies import Reply
from ._tls import session_reused

_CONNECTION_DONE = Failure(internet_error.ConnectionDone())
_log = Logger(namespace="exftp.data")


@implementer(IHandshakeListener)
class DataConnection(Protocol):
    """
    One data connection, optionally protected by TLS (PROT P).

    Reading is paused until L{receive} attaches a consumer, so that bytes a
    client sends early are held by TCP rather than by us. With TLS the
    server is always the TLS server (RFC 4217), whoever opened the TCP
    connection; L{ready} fires once the handshake is done.

    A connection can end before it is ready with nobody waiting for it (the
    command it was opened for was refused, and the client closed it): its
    failure is kept for a later L{ready}, never left unhandled in a Deferred.

    @param tls: the context factory for PROT P, or C{None} for clear text.
    @param server_side_tcp: whether the server accepted the TCP connection
        (passive mode) rather than opened it (active mode).
    @param require_reuse: refuse a handshake that did not resume the control
        connection's TLS session.
    """

    def __init__(self, tls: Any = None, server_side_tcp: bool = True, require_reuse: bool = False) -> None:
        #: Fires with C{True} when the connection closed cleanly, C{False} when it broke.
        self.closed: Deferred[bool] = Deferred()
        #: C{None} until the connection is ready (C{True}) or failed before it was (the failure).
        self._readiness: Literal[True] | Failure | None = None
        self._ready_waiters: list[Deferred[None]] = []
        self._tls = tls
        self._server_side_tcp = server_side_tcp
        self._require_reuse = require_reuse
        self._sink: IConsumer | None = None
        self._early: list[bytes] = []
        self._sending = False
        self._sendfile: _SendfileWriter | None = None
        self._lost = False

    @property
    def ready(self) -> Deferred[None]:
        """
        A new Deferred that fires when the connection can carry data (after
        the TLS handshake), or fails with L{DataConnectionFailed} if it ends
        (or its handshake is refused) first.
        """
        if self._readiness is True:
            return succeed(None)
        if self._readiness is not None:
            return fail(self._readiness)
        waiter: Deferred[None] = Deferred()
        self._ready_waiters.append(waiter)
        return waiter

    def _settle(self, outcome: Literal[True] | Failure) -> None:
        """Record whether the connection became ready (once) and tell those waiting."""
        if self._readiness is not None:
            return
        self._readiness = outcome
        waiters, self._ready_waiters = self._ready_waiters, []
        for waiter in waiters:
            if waiter.called:  # cancelled
                continue
            if outcome is True:
                waiter.callback(None)
            else:
                waiter.errback(outcome)

    @property
    def tcp(self) -> Any:
        """The transport: a TCP connection, which is also a push producer and a consumer."""
        return self.transport

    def connectionMade(self) -> None:
        if self._tls is None:
            self.tcp.pauseProducing()
            self._settle(True)
        else:
            self.tcp.startTLS(self._tls, self._server_side_tcp)

    def handshakeCompleted(self) -> None:
        if self._require_reuse and not session_reused(self.tcp):
            _log.warn("Refused TLS data connection that did not resume the control connection's session")
            refusal = DataConnectionFailed(
                "TLS session of the data connection must resume the control connection's.",
                Reply.NETWORK_PROTOCOL_NOT_SUPPORTED,
            )
            self._settle(Failure(refusal))
            self.abort()
            return
        if self._sink is None and not self._sending:
            self.tcp.pauseProducing()
        self._settle(True)

    def receive(self, sink: IConsumer) -> Deferred[bool]:
        """Feed everything the client sends into C{sink}; fires when the connection closes."""
        self._sink = sink
        early, self._early = self._early, []
        for data in early:
            sink.write(data)
        sink.registerProducer(self.tcp, True)
        # Read up to 256 KiB at a time rather than Twisted's 64 KiB: a quarter
        # of the reactor turns per uploaded byte.
        self.tcp.bufferSize = _RECEIVE_SIZE
        self.tcp.resumeProducing()
        return self.closed

    def sending(self) -> None:
        """
        Use this connection to send: keep reading (TLS needs the client's
        close_notify) but ignore what arrives.
        """
        self._sending = True
        self._early.clear()
        if not self._lost:
            self.tcp.resumeProducing()

    def can_send_file(self) -> bool:
        """Whether L{send_file} may be used: plain TCP (not TLS) where the platform has sendfile."""
        transport = self.transport
        return (
            hasattr(os, "sendfile")
            and isinstance(transport, tcp.Connection)
            and not getattr(transport, "TLS", False)
            and not self._lost
        )

    def send_file(self, file_fd: int, offset: int, on_write: Callable[[int], None]) -> Deferred[int]:
        """
        Send the file from C{offset} to its end with C{os.sendfile}; fires
        with the bytes sent.
        """
        # The writer takes the socket over: the transport must not also be
        # registered with the reactor (plain TCP needs no reads while sending).
        self.tcp.stopReading()
        writer = self._sendfile = _SendfileWriter(self.tcp.reactor, self.tcp.fileno(), file_fd, offset, on_write)
        self.tcp.reactor.addWriter(writer)
        return writer.done

    def dataReceived(self, data: bytes) -> None:
        if self._sink is not None:
            self._sink.write(data)
        elif self._sending:
            return
        else:
            self._early.append(data)
            self.tcp.pauseProducing()

    def connectionLost(self, reason: Failure = _CONNECTION_DONE) -> None:
        self._lost = True
        if self._readiness is None:
            self._settle(Failure(DataConnectionFailed("Data connection closed before it was ready.")))
        if self._sink is not None:
            self._sink.unregisterProducer()
            self._sink = None
        if not self.closed.called:
            clean = self._clean(reason)
            if not clean:
                _log.info("Data connection broke: {why!r}", why=reason.value)
            self.closed.callback(clean)

    def _clean(self, reason: Failure) -> bool:
        """
        Whether the peer ended the connection normally. Like vsftpd (without
        C{strict_ssl_read_eof}), a TLS connection closed without a TLS
        close_notify counts as ended: many clients skip it, and in stream
        mode the end of the data is the end of the connection anyway.
        """
        if reason.check(internet_error.ConnectionDone):
            return True
        if self._tls is None or not reason.check(SSL.Error):
            return False
        # OpenSSL reports the missing close_notify as a SysCallError(-1) or,
        # in OpenSSL 3, as an "unexpected eof while reading" error.
        error = reason.value
        if isinstance(error, SSL.SysCallError):
            return bool(error.args and error.args[0] == -1)
        return "unexpected eof" in str(error).lower()

    def close(self) -> Deferred[bool]:
        """Close after the buffered bytes are sent; fires once closed."""
        if self.transport is not None and not self._lost:
            self.transport.loseConnection()
        return self.closed

    def abort(self) -> None:
        """Close at once, dropping what is unsent."""
        if self._sendfile is not None:
            # Off the reactor before the transport closes the socket (whose
            # descriptor number may then be reused).
            self._sendfile.stop(TransferAborted())
        if self.transport is not None and not self._lost:
            self.tcp.abortConnection()


#: errno values of a send that failed because the client closed or reset the connection.
_PEER_GONE = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ETIMEDOUT, errno.ECONNABORTED})
#: Bytes read from an upload's socket at a time.
_RECEIVE_SIZE = 256 * 1024
#: Bytes one sendfile call sends at most (pyftpdlib's size): a reader on
#: loopback is fed steadily. With 4 MiB calls curl downloaded at 0.63-0.88x of
#: pyftpdlib's rate in bench runs, with 64 KiB at 0.91-1.06x, same server CPU.
_SENDFILE_CALL = 64 * 1024
#: Bytes sent in one writable event at most, so that sessions take turns. One
#: call an event cost 20% more CPU with 200 downloads at once than four.
_SENDFILE_BURST = 4 * _SENDFILE_CALL


@implementer(IWriteDescriptor)
class _SendfileWriter:
    """
    Sends a file on a TCP socket with C{os.sendfile}, each time the reactor
    says the socket is writable; the transport itself is idle meanwhile.
    """

    def __init__(self, reactor: Any, socket_fd: int, file_fd: int, offset: int, on_write: Callable[[int], None]):
        self._reactor = reactor
        self._socket_fd = socket_fd
        self._file_fd = file_fd
        self._offset = offset
        self._on_write = on_write
        self.sent = 0
        self.done: Deferred[int] = Deferred(lambda _: self._stop())
        self._active = True

    def fileno(self) -> int:
        return self._socket_fd

    def logPrefix(self) -> str:
        return "exftp-sendfile"

    def _stop(self) -> None:
        if self._active:
            self._active = False
            self._reactor.removeWriter(self)

    def stop(self, reason: Exception) -> None:
        """Stop sending now; the transfer fails with C{reason} unless it is done."""
        self._stop()
        if not self.done.called:
            self.done.errback(Failure(reason))

    def doWrite(self) -> None:
        burst = 0
        while burst < _SENDFILE_BURST:
            try:
                count = os.sendfile(self._socket_fd, self._file_fd, self._offset, _SENDFILE_CALL)
            except BlockingIOError:
                return None
            except OSError as error:
                self._stop()
                if not self.done.called:
                    # The client went away: an aborted transfer, not a server error.
                    gone = error.errno in _PEER_GONE
                    self.done.errback(Failure(TransferAborted()) if gone else Failure())
                return None
            if count == 0:
                self._stop()
                if not self.done.called:
                    self.done.callback(self.sent)
                return None
            self._offset += count
            self.sent += count
            burst += count
            self._on_write(count)
        return None

    def connectionLost(self, reason: Failure) -> None:
        # The reactor saw the socket hang up or fail: the client is gone.
        self.stop(TransferAborted())


class _QuietPort(tcp.Port):
    """
    A passive data port whose "starting on" and "Port ... Closed" lines,
    which Twisted logs for every port, stay out of exftp's logs: two lines
    per transfer that say nothing an operator needs.
    """

    def startListening(self) -> None:
        quietly(super().startListening)

    def connectionLost(self, reason: Failure) -> None:
        quietly(super().connectionLost, reason)


class _PassiveFactory(Factory):
    """Accepts the first connection from the expected host; others are dropped."""

    noisy = False

    def __init__(self, channel: PassiveChannel) -> None:
        self._channel = channel

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        return self._channel._accept(addr)


class _ActiveFactory(Factory):
    noisy = False

    def __init__(self, channel: DataChannel) -> None:
        self._channel = channel

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        return self._channel._new_connection(server_side_tcp=False)


class DataChannel:
    """
    A data connection that is set up (PASV/PORT) and will be used by one transfer.

    @param tls: the TLS context factory when data is protected (PROT P).
    @param require_reuse: refuse TLS data connections that do not resume
        the control connection's session.
    """

    def __init__(self, tls: Any = None, require_reuse: bool = False) -> None:
        self._tls = tls
        self._require_reuse = require_reuse

    @property
    def failure(self) -> FTPError | None:
        """Why this channel can no longer be used (e.g. its passive port timed out), if so."""
        return None

    def _new_connection(self, server_side_tcp: bool) -> DataConnection:
        return DataConnection(self._tls, server_side_tcp, self._require_reuse)

    def connection(self) -> Deferred[DataConnection]:
        """Fires with the connection once it is established."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the channel (listening port, pending connection)."""
        raise NotImplementedError


class PassiveChannel(DataChannel):
    """
    A listening port waiting for the client to connect.

    Connections from any host other than C{expected_host} are closed and the
    port keeps waiting (no data connection hijack). The port is closed when
    the first good connection arrives, after C{timeout} seconds, or on L{close}.
    Connections from C{trusted_proxies} (balancers that forward passive ports)
    must start with a PROXY header, and the host it names is the one checked.
    """

    def __init__(
        self,
        reactor: Any,
        expected_host: str | None,
        timeout: float,
        tls: Any = None,
        require_reuse: bool = False,
        trusted_proxies: tuple[IPNetwork, ...] = (),
    ) -> None:
        super().__init__(tls, require_reuse)
        self._reactor = reactor
        self._trusted_proxies = trusted_proxies
        self._expected_host = expected_host
        self._timeout = timeout
        self.port: IListeningPort | None = None
        self._connection: DataConnection | None = None
        self._waiters: list[Deferred[DataConnection]] = []
        self._timer: Any = None
        self._failed: FTPError | None = None
        self._stopping: Deferred[None] | None = None
        #: Called once when the listening port closes.
        self.on_stop: Callable[[], None] | None = None

    def listen(self, interface: str, ports: range | None) -> int:
        """
        Listen on a free port of C{ports} (any port when C{None}).

        @return: the port number.
        @raise DataConnectionFailed: when every port in the range is taken.
        """
        candidates: list[int] = [0] if ports is None else list(ports)
        if ports is not None:
            start = random.randrange(len(candidates)) if candidates else 0
            candidates = candidates[start:] + candidates[:start]
        factory: IProtocolFactory = _PassiveFactory(self)
        if self._trusted_proxies:
            factory = TrustedProxyFactory(factory, self._trusted_proxies, self._reactor, require=False)
        for number in candidates:
            try:
                self.port = self._listen(number, factory, interface)
            except internet_error.CannotListenError:
                continue
            self._timer = self._reactor.callLater(self._timeout, self._expire)
            address: Any = self.port.getHost()
            return int(address.port)
        raise DataConnectionFailed("No passive port available; try again later.")

    def _listen(self, number: int, factory: IProtocolFactory, interface: str) -> IListeningPort:
        if isinstance(self._reactor, PosixReactorBase):  # what reactor.listenTCP does, with a quiet port
            port = _QuietPort(number, factory, 1, interface, self._reactor)
            port.startListening()
            return port
        return self._reactor.listenTCP(number, factory, backlog=1, interface=interface)  # type: ignore[no-any-return]

    def _accept(self, addr: IAddress | None) -> DataConnection | None:
        host = unmapped(getattr(addr, "host", None))
        if self._connection is not None or (self._expected_host is not None and host != self._expected_host):
            _log.warn("Refused data connection from {host}: not the control peer.", host=host)
            return None
        self._connection = self._new_connection(server_side_tcp=True)
        self._stop_listening()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            self._reactor.callLater(0, waiter.callback, self._connection)
        return self._connection

    @property
    def failure(self) -> FTPError | None:
        return self._failed if self._connection is None else None

    def _expire(self) -> None:
        self._timer = None
        self._failed = DataConnectionFailed("Data connection timed out.")
        self.close()

    def _stop_listening(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.port is not None:
            stopped: Any = self.port.stopListening()
            self._stopping = stopped if isinstance(stopped, Deferred) else succeed(None)
            self.port = None
            if self.on_stop is not None:
                self.on_stop()

    def released(self) -> Deferred[None]:
        """Fires once the listening port is closed, so that it can be listened on again."""
        stopping, self._stopping = self._stopping, None
        return stopping if stopping is not None else succeed(None)

    def connection(self) -> Deferred[DataConnection]:
        if self._connection is not None:
            return succeed(self._connection)
        if self._failed is not None:
            return fail(self._failed)
        waiter: Deferred[DataConnection] = Deferred()
        self._waiters.append(waiter)
        return waiter

    def close(self) -> None:
        self._failed = self._failed or DataConnectionFailed("Data connection closed.")
        self._stop_listening()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(self._failed)
        if self._connection is not None:
            self._connection.abort()


class ActiveChannel(DataChannel):
    """A connection the server makes to the client's address (PORT/EPRT)."""

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        ipv6: bool,
        bind_host: str | None,
        timeout: float,
        tls: Any = None,
        require_reuse: bool = False,
    ) -> None:
        super().__init__(tls, require_reuse)
        self._reactor = reactor
        self._address = (host, port)
        self._ipv6 = ipv6
        self._bind_host = bind_host
        self._timeout = timeout
        self._connection: DataConnection | None = None
        self._attempt: Deferred[DataConnection] | None = None

    def connection(self) -> Deferred[DataConnection]:
        if self._connection is not None:
            return succeed(self._connection)
        host, port = self._address
        bind = (self._bind_host, 0) if self._bind_host else None
        endpoint_type = TCP6ClientEndpoint if self._ipv6 else TCP4ClientEndpoint
        endpoint = endpoint_type(self._reactor, host, port, timeout=self._timeout, bindAddress=bind)
        attempt: Deferred[Any] = endpoint.connect(_ActiveFactory(self))

        def connected(connection: DataConnection) -> DataConnection:
            self._connection = connection
            return connection

        def failed(failure: Failure) -> DataConnection:
            why = failure.getErrorMessage()
            _log.info("Active data connection to {host}:{port} failed: {why}", host=host, port=port, why=why)
            raise DataConnectionFailed()

        self._attempt = attempt.addCallbacks(connected, failed)
        return self._attempt

    def close(self) -> None:
        if self._attempt is not None and not self._attempt.called:
            self._attempt.cancel()
        if self._connection is not None:
            self._connection.abort()


@implementer(IConsumer)
class AsciiSendingConsumer:
    """Wraps a consumer, converting bare LF to CRLF on the way (TYPE A downloads)."""

    def __init__(self, consumer: IConsumer) -> None:
        self._consumer = consumer
        self._encoder = AsciiEncoder()

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self._consumer.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._consumer.unregisterProducer()

    def write(self, data: bytes) -> None:
        self._consumer.write(self._encoder.encode(data))


@implementer(IWriteFile)
class AsciiReceivingFile:
    """Wraps an upload, converting CRLF to LF on the way (TYPE A uploads)."""

    def __init__(self, upload: IWriteFile) -> None:
        self._upload = upload
        self._decoder = AsciiDecoder()

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self._upload.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._upload.unregisterProducer()

    def write(self, data: bytes) -> None:
        self._upload.write(self._decoder.decode(data))

    def finish(self) -> Deferred[None]:
        tail = self._decoder.flush()
        if tail:
            self._upload.write(tail)
        return self._upload.finish()

    def abort(self) -> Deferred[None]:
        return self._upload.abort()


@implementer(IConsumer)
class CountingConsumer:
    """Passes writes through and counts the bytes (for transfer logs)."""

    def __init__(self, consumer: IConsumer, on_write: Callable[[int], None]) -> None:
        self._consumer = consumer
        self._on_write = on_write

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self._consumer.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._consumer.unregisterProducer()

    def write(self, data: bytes) -> None:
        self._on_write(len(data))
        self._consumer.write(data)
