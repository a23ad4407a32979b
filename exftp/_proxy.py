"""
The PROXY protocol (v1 and v2) from trusted load balancers only.

Behind HAProxy (C{send-proxy} or C{send-proxy-v2}) every connection starts
with a header naming the real client. Twisted's C{haproxy:} endpoint reads
it, but not in a way an FTP server can use: it believes the header from
anyone who connects, and it connects the wrapped protocol before the header
has arrived, so a server that speaks first (the C{220} greeting) sees the
balancer's address. It also reports the balancer's frontend address from
C{getHost}, where the server would then try to bind passive listeners.

Here the header is accepted only from configured networks (everyone else is
dropped unread), and the FTP protocol is built only once the header has been
read, with the client's address as its peer. C{getHost} stays the node's own
address; what the client connected to is L{connected_address}. The PROXY
layer sits outside TLS, because on the wire the header comes first: so
C{haproxy:ssl:...} (implicit FTPS) works too.

The header parser (L{parse_header}) and encoders are pure functions.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IHandshakeListener,
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

_log = Logger(namespace="exftp.proxy")
_CONNECTION_DONE = Failure(ConnectionDone())

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The endpoint prefix whose listeners expect a PROXY header.
PREFIX = "haproxy:"
#: The endpoint kinds that may follow L{PREFIX}.
PROXIED_KINDS = ("tcp", "tcp6", "ssl")
#: The C{--passive-address} value that means "the address the client connected to".
CONNECTED = "connected"
#: Seconds a trusted balancer may take to send the header.
HEADER_TIMEOUT = 10.0

V1_SIGNATURE = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: The longest v1 header, CRLF included (the specification's limit).
V1_MAX_LENGTH = 107
_V2_FIXED = 16
_V2_TCP4, _V2_TCP6 = 0x11, 0x21
_V2_ADDRESSES = {_V2_TCP4: (4, 12), _V2_TCP6: (16, 36)}
#: v2 families without a TCP address for us: UNSPEC, UDP over IPv4 and IPv6, UNIX stream and datagram.
_V2_OTHER_FAMILIES = frozenset({0x00, 0x12, 0x22, 0x31, 0x32})


# The header, sans I/O


class InvalidProxyHeader(ValueError):
    """The bytes are not a PROXY protocol header (or not one we accept)."""


@dataclass(frozen=True)
class ProxyHeader:
    """
    What a PROXY header says about a connection.

    @ivar version: 1 or 2.
    @ivar source: the client's address and port, or C{None} when the header
        names none (v1 C{UNKNOWN}, v2 C{LOCAL} such as a balancer's health
        check, or an address family other than TCP over IPv4/IPv6): then the
        connection's own addresses stand, as the specification says.
    @ivar destination: the address and port the client connected to (the
        balancer's frontend), or C{None} together with C{source}.
    """

    version: int
    source: tuple[IPAddress, int] | None = None
    destination: tuple[IPAddress, int] | None = None

    def __post_init__(self) -> None:
        if (self.source is None) != (self.destination is None):
            raise ValueError("source and destination go together")
        if self.source is not None and self.destination is not None:
            if self.source[0].version != self.destination[0].version:
                raise ValueError("source and destination must be of one address family")
            for _, port in (self.source, self.destination):
                if not 0 <= port <= 65535:
                    raise ValueError(f"port {port} out of range")


def parse_header(data: bytes) -> tuple[ProxyHeader, int] | None:
    """
    Parse the PROXY header at the start of C{data}.

    @return: the header and the number of bytes it took, or C{None} when
        C{data} is a valid beginning of a header that is not complete yet.
    @raise InvalidProxyHeader: when C{data} cannot start a valid header. A
        first byte that fits neither version is enough to decide.
    """
    if data[:1] == V2_SIGNATURE[:1]:
        return _parse_v2(data)
    if data[:1] == V1_SIGNATURE[:1]:
        return _parse_v1(data)
    if data:
        raise InvalidProxyHeader("not a PROXY header")
    return None


def _parse_v1(data: bytes) -> tuple[ProxyHeader, int] | None:
    if not data.startswith(V1_SIGNATURE[: len(data)]):
        raise InvalidProxyHeader("not a PROXY header")
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= V1_MAX_LENGTH or b"\n" in data:
            raise InvalidProxyHeader("v1 header without CRLF within 107 bytes")
        return None
    fields = data[:end].split(b" ")
    if fields[:1] != [b"PROXY"] or len(fields) < 2:
        raise InvalidProxyHeader("v1 header without a protocol")
    if fields[1] == b"UNKNOWN":
        return ProxyHeader(1), end + 2
    if len(fields) != 6 or fields[1] not in (b"TCP4", b"TCP6"):
        raise InvalidProxyHeader("v1 header must be PROXY TCP4|TCP6 SRC DST SPORT DPORT")
    version = 4 if fields[1] == b"TCP4" else 6
    source = _v1_address(fields[2], version), _v1_port(fields[4])
    destination = _v1_address(fields[3], version), _v1_port(fields[5])
    return ProxyHeader(1, source, destination), end + 2


def _v1_address(text: bytes, version: int) -> IPAddress:
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidProxyHeader(f"v1 header with a bad address {text[:40]!r}") from None
    if address.version != version:
        raise InvalidProxyHeader(f"v1 header with an IPv{address.version} address for TCP{version}")
    return address


def _v1_port(text: bytes) -> int:
    if not (text.isdigit() and len(text) <= 5 and (text == b"0" or not text.startswith(b"0"))):
        raise InvalidProxyHeader(f"v1 header with a bad port {text[:10]!r}")
    port = int(text)
    if port > 65535:
        raise InvalidProxyHeader(f"v1 header with a bad port {port}")
    return port


def _parse_v2(data: bytes) -> tuple[ProxyHeader, int] | None:
    signature = data[: len(V2_SIGNATURE)]
    if not V2_SIGNATURE.startswith(signature):
        raise InvalidProxyHeader("not a PROXY header")
    if len(data) >= 13:
        version, command = data[12] >> 4, data[12] & 0x0F
        if version != 2 or command > 1:
            raise InvalidProxyHeader(f"v2 header with version {version}, command {command}")
    if len(data) < _V2_FIXED:
        return None
    family = data[13]
    (length,) = struct.unpack("!H", data[14:16])
    total = _V2_FIXED + length
    if len(data) < total:
        return None
    if data[12] & 0x0F == 0:  # LOCAL: the balancer speaking for itself; the family is to be ignored
        return ProxyHeader(2), total
    if family in _V2_OTHER_FAMILIES:
        return ProxyHeader(2), total
    if family not in _V2_ADDRESSES:
        raise InvalidProxyHeader(f"v2 header with an unknown family 0x{family:02x}")
    size, needed = _V2_ADDRESSES[family]
    if length < needed:
        raise InvalidProxyHeader(f"v2 header too short for its addresses ({length} < {needed})")
    block = data[_V2_FIXED : _V2_FIXED + needed]
    make = ipaddress.IPv4Address if size == 4 else ipaddress.IPv6Address
    source_port, destination_port = struct.unpack("!HH", block[2 * size :])
    source = make(block[:size]), source_port
    destination = make(block[size : 2 * size]), destination_port
    return ProxyHeader(2, source, destination), total


def encode_v1(header: ProxyHeader) -> bytes:
    """The v1 (text) form of C{header}."""
    if header.source is None or header.destination is None:
        return b"PROXY UNKNOWN\r\n"
    (source, source_port), (destination, destination_port) = header.source, header.destination
    family = f"TCP{source.version}"
    return f"PROXY {family} {source} {destination} {source_port} {destination_port}\r\n".encode("ascii")


def encode_v2(header: ProxyHeader, tlvs: bytes = b"") -> bytes:
    """The v2 (binary) form of C{header}, followed by C{tlvs} (type-length-value extensions, ignored here)."""
    if header.source is None or header.destination is None:
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", len(tlvs)) + tlvs
    (source, source_port), (destination, destination_port) = header.source, header.destination
    family = _V2_TCP4 if source.version == 4 else _V2_TCP6
    block = source.packed + destination.packed + struct.pack("!HH", source_port, destination_port) + tlvs
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(block)) + block


# Trusted networks


def parse_networks(texts: Iterable[str]) -> tuple[IPNetwork, ...]:
    """
    Parse networks and addresses (C{10.0.0.0/8}, C{192.0.2.7}, C{2001:db8::/32});
    each text may hold several, separated by commas.

    @raise ValueError: naming the text that is not a network.
    """
    networks: list[IPNetwork] = []
    for text in texts:
        for piece in filter(None, (part.strip() for part in text.split(","))):
            try:
                networks.append(ipaddress.ip_network(piece, strict=False))
            except ValueError:
                raise ValueError(f"{piece!r} is not an IP address or network (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def _plain(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (C{::ffff:192.0.2.1}) as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(host: str | None, networks: Sequence[IPNetwork]) -> bool:
    """Whether C{host} (a connection's peer) is in one of C{networks}."""
    if host is None:
        return False
    try:
        address = _plain(ipaddress.ip_address(host.partition("%")[0]))
    except ValueError:
        return False
    return any(address in network for network in networks)


def _twisted_address(address: IPAddress, port: int) -> IPv4Address | IPv6Address:
    plain = _plain(address)
    if isinstance(plain, ipaddress.IPv4Address):
        return IPv4Address("TCP", str(plain), port)
    return IPv6Address("TCP", str(plain), port)


# The protocol and factory


@implementer(IHandshakeListener)
class ProxyProtocol(ProtocolWrapper):
    """
    Reads the PROXY header from a trusted balancer, then builds the real
    protocol with the client's address and hands it the rest of the stream.

    Until then nothing is built, so a server that speaks first does not
    speak to the balancer, and a connection that closes without a header
    (a balancer's TCP health check) leaves no trace. A bad header, or none
    within the factory's C{header_timeout}, drops the connection. When TLS
    starts on the connection (AUTH TLS, PROT P), the end of the handshake is
    passed on to the real protocol if it listens for it.

    @ivar header: the header, once read.
    """

    factory: TrustedProxyFactory

    def __init__(self, factory: TrustedProxyFactory, balancer: IAddress | None) -> None:
        super().__init__(factory, None)  # type: ignore[arg-type]
        self.header: ProxyHeader | None = None
        self._balancer = balancer
        self._buffer = b""
        self._timer: Any = None
        self._dropped = False

    def logPrefix(self) -> str:
        return "ProxyProtocol"

    def makeConnection(self, transport: Any) -> None:
        # As ProtocolWrapper does, except connecting the wrapped protocol: that waits for the header.
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)

    def connectionMade(self) -> None:
        self._timer = self.factory.reactor.callLater(self.factory.header_timeout, self._timed_out)

    def dataReceived(self, data: bytes) -> None:
        if self.wrappedProtocol is not None:
            self.wrappedProtocol.dataReceived(data)
            return
        if self._dropped:
            return
        self._buffer += data
        try:
            parsed = parse_header(self._buffer)
        except InvalidProxyHeader as error:
            self._drop("Dropped connection from balancer {balancer}: {why}", why=str(error))
            return
        if parsed is None:
            return
        self.header, used = parsed
        rest, self._buffer = self._buffer[used:], b""
        self._cancel_timer()
        wrapped = self.factory.wrappedFactory.buildProtocol(self.getPeer())
        if wrapped is None:
            self._dropped = True
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self.wrappedProtocol = wrapped
        wrapped.makeConnection(self)
        if rest and not (self.disconnecting or getattr(self.transport, "disconnecting", False)):
            wrapped.dataReceived(rest)

    def handshakeCompleted(self) -> None:
        listener = IHandshakeListener(self.wrappedProtocol, None)
        if listener is not None:
            listener.handshakeCompleted()

    def _timed_out(self) -> None:
        self._timer = None
        self._drop(
            "Dropped connection from balancer {balancer}: no PROXY header within {seconds}s "
            "(does the balancer send it, e.g. HAProxy's send-proxy-v2?)",
            seconds=self.factory.header_timeout,
        )

    def _drop(self, text: str, **fields: Any) -> None:
        self._dropped = True
        self._buffer = b""
        self._cancel_timer()
        _log.warn(text, balancer=getattr(self._balancer, "host", self._balancer), **fields)
        self.transport.abortConnection()  # type: ignore[union-attr]

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def connectionLost(self, reason: Failure = _CONNECTION_DONE) -> None:
        self._cancel_timer()
        self.factory.unregisterProtocol(self)
        wrapped, self.wrappedProtocol = self.wrappedProtocol, None  # type: ignore[assignment]
        if wrapped is not None:
            wrapped.connectionLost(reason)

    def getPeer(self) -> IAddress:
        """The client's address from the header, else the connection's peer."""
        if self.header is not None and self.header.source is not None:
            return _twisted_address(*self.header.source)
        return self.transport.getPeer()  # type: ignore[union-attr,no-any-return]

    @property
    def destination(self) -> IAddress | None:
        """The address the client connected to (the balancer's frontend), if the header names it."""
        if self.header is not None and self.header.destination is not None:
            return _twisted_address(*self.header.destination)
        return None


class TrustedProxyFactory(WrappingFactory):
    """
    Wraps a factory so that its connections start with a PROXY header from
    a trusted balancer.

    @param wrapped: the factory of the real protocol (the FTP factory, or a
        TLS factory around it).
    @param trusted: the balancers' networks; only their connections may
        carry a header.
    @param reactor: for the header timeout.
    @param header_timeout: seconds a balancer may take to send the header.
    @param require: what happens to connections from anyone else: when
        C{True} (control listeners) they are dropped unread; when C{False}
        (e.g. passive data ports that clients may reach directly and a
        balancer may forward to) they are served as they are, under their
        own address.
    """

    noisy = False

    def __init__(
        self,
        wrapped: IProtocolFactory,
        trusted: Sequence[IPNetwork],
        reactor: Any,
        header_timeout: float = HEADER_TIMEOUT,
        require: bool = True,
    ) -> None:
        super().__init__(wrapped)
        self.trusted = tuple(trusted)
        self.reactor = reactor
        self.header_timeout = header_timeout
        self.require = require

    def logPrefix(self) -> str:
        return "TrustedProxyFactory"

    def buildProtocol(self, addr: IAddress | None) -> Any:
        """A L{ProxyProtocol} for a trusted balancer; the real protocol or C{None} (dropped) for others."""
        host = getattr(addr, "host", None)
        if is_trusted(host, self.trusted):
            return ProxyProtocol(self, addr)
        if not self.require:
            return self.wrappedFactory.buildProtocol(addr)
        _log.info("Dropped connection from {peer}: not a trusted proxy", peer=host)
        return None


# Endpoints


class _ProxiedListeningReactor:
    """
    A reactor for one endpoint's C{listen}: its TCP listeners get the PROXY
    layer outermost, and its TLS listeners are TCP listeners with the PROXY
    layer outside TLS. Any other kind of listener is refused.
    """

    def __init__(self, reactor: Any, trusted: Sequence[IPNetwork], header_timeout: float) -> None:
        self._reactor = reactor
        self._trusted = trusted
        self._header_timeout = header_timeout

    def listenTCP(self, port: int, factory: IProtocolFactory, backlog: int = 50, interface: str = "") -> Any:
        proxied = TrustedProxyFactory(factory, self._trusted, self._reactor, self._header_timeout)
        return self._reactor.listenTCP(port, proxied, backlog, interface)

    def listenSSL(
        self, port: int, factory: IProtocolFactory, contextFactory: Any, backlog: int = 50, interface: str = ""
    ) -> Any:
        return self.listenTCP(port, TLSMemoryBIOFactory(contextFactory, False, factory), backlog, interface)

    def __getattr__(self, name: str) -> Any:
        if name.startswith(("listen", "adopt")):
            raise AttributeError(f"{PREFIX} supports only {', '.join(PROXIED_KINDS)} listeners")
        return getattr(self._reactor, name)


@implementer(IStreamServerEndpoint)
class TrustedProxyEndpoint:
    """
    A server endpoint whose connections must start with a PROXY header from
    a trusted balancer (see L{TrustedProxyFactory}).

    @param reactor: the reactor.
    @param description: the endpoint under the PROXY layer, e.g.
        C{tcp:2121:interface=10.0.0.5} or C{ssl:990:privateKey=key.pem}.
    @param trusted: the balancers' networks.
    @param header_timeout: seconds a balancer may take to send the header.
    """

    def __init__(
        self, reactor: Any, description: str, trusted: Sequence[IPNetwork], header_timeout: float = HEADER_TIMEOUT
    ) -> None:
        kind = description.partition(":")[0]
        if kind not in PROXIED_KINDS:
            raise ValueError(f"only {', '.join(PROXIED_KINDS)} endpoints can follow {PREFIX}")
        if not trusted:
            raise ValueError("give the balancers' addresses that may send PROXY headers (--trusted-proxy)")
        proxied = _ProxiedListeningReactor(reactor, tuple(trusted), header_timeout)
        self._endpoint = serverFromString(proxied, description)

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        return self._endpoint.listen(protocolFactory)  # type: ignore[no-any-return]


def server_endpoint(
    reactor: Any, description: str, trusted: Sequence[IPNetwork] = (), header_timeout: float = HEADER_TIMEOUT
) -> IStreamServerEndpoint:
    """
    The server endpoint for a C{--port} string: C{haproxy:...} is a
    L{TrustedProxyEndpoint} for C{trusted} (never Twisted's own C{haproxy:},
    which trusts everyone); anything else is Twisted's C{serverFromString}.

    @raise ValueError: for a C{haproxy:} string without trusted networks or
        over an endpoint kind other than C{tcp}, C{tcp6} or C{ssl}.
    """
    if description.startswith(PREFIX):
        return TrustedProxyEndpoint(reactor, description[len(PREFIX) :], trusted, header_timeout)
    return serverFromString(reactor, description)  # type: ignore[no-any-return]


def connected_address(transport: Any) -> str:
    """
    The address the client connected to: the balancer's frontend address from
    the PROXY header, else the control connection's local address (IPv4 for
    IPv4 clients of a dual-stack listener).

    For PASV behind a balancer that forwards each node's passive ports (and
    answers on several addresses).
    """
    current = transport
    for _ in range(4):  # the PROXY layer is at most under TLS
        if isinstance(current, ProxyProtocol):
            destination: Any = current.destination
            if destination is not None:
                return str(destination.host)
            break
        current = getattr(current, "transport", None)
        if current is None:
            break
    host = str(transport.getHost().host)
    try:
        return str(_plain(ipaddress.ip_address(host)))
    except ValueError:
        return host


def unmapped(host: str | None) -> str | None:
    """
    The IPv4 address inside an IPv4-mapped IPv6 address (C{::ffff:1.2.3.4}),
    as dual-stack listeners report IPv4 clients; other addresses unchanged.
    """
    if host is None or not host.startswith("::ffff:"):
        return host
    try:
        mapped = ipaddress.IPv6Address(host).ipv4_mapped
    except ValueError:
        return host
    return host if mapped is None else str(mapped)
