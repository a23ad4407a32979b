"""
The PROXY protocol from trusted balancers: the header parser (tables,
Hypothesis, and a cross-check with Twisted's parsers), the trusted-network
checks, the wrapping protocol on memory transports, and the C{haproxy:}
endpoints on a memory reactor.
"""

from __future__ import annotations

import inspect
import ipaddress
from pathlib import Path
from typing import Any

import pytest
from _certs import make_pki
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import EventLoggingObserver, MemoryReactor, MemoryReactorClock, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from exftp import FTPFactory
from exftp._datachannel import DataConnection
from exftp._proxy import (
    HEADER_TIMEOUT,
    V1_MAX_LENGTH,
    V2_SIGNATURE,
    InvalidProxyHeader,
    ProxyHeader,
    ProxyProtocol,
    TrustedProxyEndpoint,
    TrustedProxyFactory,
    _ProxiedListeningReactor,
    connected_address,
    encode_v1,
    encode_v2,
    is_trusted,
    parse_header,
    parse_networks,
    server_endpoint,
)
from exftp.testing import MemoryAuthenticator, MemoryStorage, MemoryStorageFactory

BALANCER = IPv4Address("TCP", "10.0.0.2", 40000)
NODE = IPv4Address("TCP", "10.0.0.5", 2121)
TRUSTED = parse_networks(["10.0.0.0/30"])


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def tcp(source: str, source_port: int, destination: str, destination_port: int, version: int = 2) -> ProxyHeader:
    return ProxyHeader(version, (ip(source), source_port), (ip(destination), destination_port))


CLIENT_HEADER = tcp("198.51.100.7", 51000, "203.0.113.9", 21)
#: Whether the core takes PROXY headers on passive ports and can announce the
#: address the client connected to (layout 2); see the issue 10 report.
LAYOUT_2 = "trusted_proxies" in inspect.signature(FTPFactory).parameters
needs_layout_2 = pytest.mark.xfail(
    not LAYOUT_2, strict=True, reason="the core does not take PROXY headers on passive ports yet"
)


# The parser


@pytest.mark.parametrize(
    ("data", "header"),
    [
        (b"PROXY TCP4 198.51.100.7 203.0.113.9 51000 21\r\n", tcp("198.51.100.7", 51000, "203.0.113.9", 21, 1)),
        (b"PROXY TCP6 2001:db8::7 2001:db8::9 0 65535\r\n", tcp("2001:db8::7", 0, "2001:db8::9", 65535, 1)),
        (b"PROXY UNKNOWN\r\n", ProxyHeader(1)),
        (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", ProxyHeader(1)),
        (
            V2_SIGNATURE + b"\x21\x11\x00\x0c" + bytes([198, 51, 100, 7, 203, 0, 113, 9]) + b"\xc7\x38\x00\x15",
            tcp("198.51.100.7", 51000, "203.0.113.9", 21),
        ),
        (V2_SIGNATURE + b"\x20\x00\x00\x00", ProxyHeader(2)),  # LOCAL: a health check
        (V2_SIGNATURE + b"\x20\x11\x00\x0c" + bytes(12), ProxyHeader(2)),  # LOCAL ignores its block
        (V2_SIGNATURE + b"\x21\x00\x00\x00", ProxyHeader(2)),  # UNSPEC
        (V2_SIGNATURE + b"\x21\x31\x00\xd8" + bytes(216), ProxyHeader(2)),  # UNIX stream
        (V2_SIGNATURE + b"\x21\x12\x00\x0c" + bytes(12), ProxyHeader(2)),  # UDP over IPv4
    ],
)
def test_parse_valid(data: bytes, header: ProxyHeader) -> None:
    assert parse_header(data + b"220 rest") == (header, len(data))


def test_parse_v2_skips_tlvs() -> None:
    tlvs = b"\x05\x00\x04abcd" + b"\x04" + b"\x00\x03" + b"\x00" * 3  # UNIQUE_ID, NOOP
    data = encode_v2(CLIENT_HEADER, tlvs)
    assert parse_header(data + b"USER") == (CLIENT_HEADER, len(data))


@pytest.mark.parametrize(
    "data",
    [
        b"USER alice\r\n",
        b"GET / HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00",  # a TLS ClientHello
        b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 hello 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 ::1 ::2 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 abc 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 021 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        b"PROXY TCP4 \xff\xfe 5.6.7.8 1 2\r\n",
        b"PROXY\r\n",
        b"PROXY " + b"x" * (V1_MAX_LENGTH - 6),
        V2_SIGNATURE[:5] + b"X",
        V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12),  # version 1 in a v2 header
        V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12),  # command 2
        V2_SIGNATURE + b"\x21\x41\x00\x0c" + bytes(12),  # unknown family
        V2_SIGNATURE + b"\x21\x11\x00\x08" + bytes(8),  # too short for two IPv4 addresses and ports
        V2_SIGNATURE + b"\x21\x21\x00\x0c" + bytes(12),  # too short for IPv6
    ],
)
def test_parse_invalid(data: bytes) -> None:
    with pytest.raises(InvalidProxyHeader):
        parse_header(data)


@pytest.mark.parametrize(
    "data",
    [encode_v1(CLIENT_HEADER), encode_v2(CLIENT_HEADER), encode_v2(CLIENT_HEADER, b"\x04\x00\x02xx")],
)
def test_every_beginning_waits_for_more(data: bytes) -> None:
    for end in range(len(data)):
        assert parse_header(data[:end]) is None, data[:end]
    assert parse_header(data) == (CLIENT_HEADER if data[:1] != b"P" else _as_v1(CLIENT_HEADER), len(data))


def _as_v1(header: ProxyHeader) -> ProxyHeader:
    return ProxyHeader(1, header.source, header.destination)


def test_the_longest_v1_header_is_accepted() -> None:
    line = b"PROXY UNKNOWN " + b"x" * (V1_MAX_LENGTH - 16) + b"\r\n"
    assert len(line) == V1_MAX_LENGTH
    assert parse_header(line) == (ProxyHeader(1), V1_MAX_LENGTH)
    with pytest.raises(InvalidProxyHeader):
        parse_header(b"PROXY UNKNOWN " + b"x" * (V1_MAX_LENGTH - 15) + b"\r\n")


def test_header_fields_must_agree() -> None:
    with pytest.raises(ValueError, match="family"):
        ProxyHeader(2, (ip("1.2.3.4"), 1), (ip("::1"), 2))
    with pytest.raises(ValueError, match="together"):
        ProxyHeader(2, (ip("1.2.3.4"), 1), None)
    with pytest.raises(ValueError, match="range"):
        ProxyHeader(2, (ip("1.2.3.4"), 1), (ip("1.2.3.5"), 65536))


_ports = st.integers(min_value=0, max_value=65535)
_v4 = st.ip_addresses(v=4)
_v6 = st.ip_addresses(v=6)
_versions = st.sampled_from([1, 2])


def _addressed(addresses: st.SearchStrategy[Any]) -> st.SearchStrategy[ProxyHeader]:
    return st.builds(
        lambda version, source, destination: ProxyHeader(version, source, destination),
        _versions,
        st.tuples(addresses, _ports),
        st.tuples(addresses, _ports),
    )


_headers = st.one_of(_addressed(_v4), _addressed(_v6), st.builds(ProxyHeader, _versions))


def _encode(header: ProxyHeader) -> bytes:
    return encode_v1(header) if header.version == 1 else encode_v2(header)


@given(_headers, st.binary(max_size=64))
def test_round_trip(header: ProxyHeader, rest: bytes) -> None:
    data = _encode(header)
    assert parse_header(data + rest) == (header, len(data))


@given(_headers.filter(lambda header: header != ProxyHeader(1)))
def test_twisted_reads_our_encodings_alike(header: ProxyHeader) -> None:
    # (Twisted refuses "PROXY UNKNOWN\r\n", which the specification allows.)
    data = _encode(header)
    info, rest = (V1Parser() if header.version == 1 else V2Parser()).feed(data)
    assert rest == b""
    assert info is not None
    if header.source is None or header.destination is None:
        assert info.source is None
        return
    seen = [(ip(address.host), address.port) for address in (info.source, info.destination)]  # type: ignore[attr-defined]
    assert seen == [header.source, header.destination]


@given(st.binary(max_size=300))
def test_any_bytes_give_a_header_more_or_invalid(data: bytes) -> None:
    try:
        parsed = parse_header(data)
    except InvalidProxyHeader:
        return
    if parsed is not None:
        assert 0 < parsed[1] <= len(data)


@given(_headers, st.binary(min_size=1, max_size=40))
def test_anything_but_a_header_prefix_is_refused_at_once(header: ProxyHeader, garbage: bytes) -> None:
    data = _encode(header)
    if data.startswith(garbage) or garbage.startswith(data):
        return
    if garbage[:1] not in (b"P", b"\r"):
        with pytest.raises(InvalidProxyHeader):
            parse_header(garbage)


# Trusted networks


def test_parse_networks() -> None:
    assert parse_networks(["10.0.0.0/8, 192.0.2.7", "2001:db8::/32", ""]) == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.7/32"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert parse_networks(["10.1.2.3/8"]) == (ipaddress.ip_network("10.0.0.0/8"),)
    with pytest.raises(ValueError, match="'balancer' is not an IP address"):
        parse_networks(["10.0.0.1,balancer"])


@pytest.mark.parametrize(
    ("host", "trusted"),
    [
        ("10.0.0.1", True),
        ("10.0.0.4", False),
        ("::ffff:10.0.0.2", True),  # a dual-stack listener's view of an IPv4 balancer
        ("2001:db8::1", True),
        ("2001:db9::1", False),
        ("fe80::1%eth0", False),
        ("balancer.example", False),
        (None, False),
    ],
)
def test_is_trusted(host: str | None, trusted: bool) -> None:
    assert is_trusted(host, parse_networks(["10.0.0.0/30", "2001:db8::/32"])) is trusted


# The protocol on memory transports


class _Recorder(Protocol):
    def __init__(self, addr: Any) -> None:
        self.addr = addr
        self.received = b""
        self.made = False
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost = reason


class _RecordingFactory(Factory):
    def __init__(self, refuse: bool = False) -> None:
        self.built: list[_Recorder] = []
        self.refuse = refuse

    def buildProtocol(self, addr: Any) -> _Recorder | None:
        if self.refuse:
            return None
        protocol = _Recorder(addr)
        self.built.append(protocol)
        return protocol


class _Connection:
    """One connection to a L{TrustedProxyFactory} over a memory transport."""

    def __init__(self, wrapped: Any, peer: Any = BALANCER, require: bool = True) -> None:
        self.reactor = MemoryReactorClock()
        self.factory = TrustedProxyFactory(wrapped, TRUSTED, self.reactor, require=require)
        self.transport = StringTransport(hostAddress=NODE, peerAddress=peer)
        self.protocol = self.factory.buildProtocol(peer)
        if self.protocol is not None:
            self.protocol.makeConnection(self.transport)

    def lose(self) -> None:
        self.protocol.connectionLost(Failure(Exception("gone")))


@pytest.fixture
def events() -> Any:
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    yield observer
    globalLogPublisher.removeObserver(observer)


def _texts(events: Any) -> list[str]:
    return [formatEvent(event) for event in events if event.get("log_namespace") == "exftp.proxy"]


def test_the_protocol_is_built_after_the_header_with_the_client_address() -> None:
    wrapped = _RecordingFactory()
    connection = _Connection(wrapped)
    assert isinstance(connection.protocol, ProxyProtocol)
    assert wrapped.built == []
    data = encode_v2(CLIENT_HEADER) + b"USER alice\r\n"
    for index in range(len(data) - 4):
        connection.protocol.dataReceived(data[index : index + 1])
    assert [p.addr for p in wrapped.built] == [IPv4Address("TCP", "198.51.100.7", 51000)]
    connection.protocol.dataReceived(data[-4:])
    (built,) = wrapped.built
    assert built.made and built.received == b"USER alice\r\n"
    assert built.transport.getPeer() == IPv4Address("TCP", "198.51.100.7", 51000)
    # The node's own address stays, for binding passive and active data connections...
    assert built.transport.getHost() == NODE
    # ...and what the client connected to is kept apart.
    assert connection.protocol.destination == IPv4Address("TCP", "203.0.113.9", 21)
    assert connected_address(built.transport) == "203.0.113.9"
    connection.protocol.dataReceived(b"PASS secret\r\n")
    assert built.received == b"USER alice\r\nPASS secret\r\n"
    connection.lose()
    assert built.lost is not None
    assert connection.reactor.getDelayedCalls() == []


def test_v1_headers_and_ipv6_clients() -> None:
    wrapped = _RecordingFactory()
    connection = _Connection(wrapped)
    connection.protocol.dataReceived(b"PROXY TCP6 2001:db8::7 2001:db8::9 51000 21\r\n")
    assert wrapped.built[0].addr == IPv6Address("TCP", "2001:db8::7", 51000)


def test_ipv4_mapped_clients_are_ipv4() -> None:
    wrapped = _RecordingFactory()
    connection = _Connection(wrapped)
    connection.protocol.dataReceived(encode_v2(tcp("::ffff:198.51.100.7", 51000, "::ffff:203.0.113.9", 21)))
    assert wrapped.built[0].addr == IPv4Address("TCP", "198.51.100.7", 51000)
    assert connected_address(connection.protocol) == "203.0.113.9"


def test_a_local_header_keeps_the_balancer_address() -> None:
    wrapped = _RecordingFactory()
    connection = _Connection(wrapped)
    connection.protocol.dataReceived(encode_v2(ProxyHeader(2)))
    assert wrapped.built[0].addr == BALANCER
    assert connection.protocol.destination is None
    assert connected_address(connection.protocol) == NODE.host


def test_untrusted_peers_are_dropped_unread(events: Any) -> None:
    wrapped = _RecordingFactory()
    connection = _Connection(wrapped, peer=IPv4Address("TCP", "198.51.100.7", 51000))
    assert connection.protocol is None
    assert wrapped.built == []
    assert _texts(events) == ["Dropped connection from 198.51.100.7: not a trusted proxy"]


def test_untrusted_peers_connect_directly_when_not_required() -> None:
    wrapped = _RecordingFactory()
    client = IPv4Address("TCP", "198.51.100.7", 51000)
    connection = _Connection(wrapped, peer=client, require=False)
    assert isinstance(connection.protocol, _Recorder)
    assert connection.protocol.addr == client


def test_trusted_peers_must_send_a_header_even_when_not_required() -> None:
    wrapped = _RecordingFactory()
    connection = _Connection(wrapped, require=False)
    assert isinstance(connection.protocol, ProxyProtocol)
    connection.protocol.dataReceived(encode_v1(CLIENT_HEADER))
    assert wrapped.built[0].addr == IPv4Address("TCP", "198.51.100.7", 51000)


@pytest.mark.parametrize("data", [b"USER alice\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 x 1\r\n", V2_SIGNATURE + b"\x13"])
def test_bad_headers_abort_the_connection(events: Any, data: bytes) -> None:
    wrapped = _RecordingFactory()
    connection = _Connection(wrapped)
    connection.protocol.dataReceived(data)
    connection.protocol.dataReceived(b"more")
    assert connection.transport.disconnecting
    assert wrapped.built == []
    assert connection.reactor.getDelayedCalls() == []
    (text,) = _texts(events)
    assert text.startswith("Dropped connection from balancer 10.0.0.2: ")
    connection.lose()


def test_no_header_in_time_aborts_the_connection(events: Any) -> None:
    wrapped = _RecordingFactory()
    connection = _Connection(wrapped)
    connection.protocol.dataReceived(b"PROXY TCP4 ")
    connection.reactor.advance(HEADER_TIMEOUT - 0.1)
    assert not connection.transport.disconnecting
    connection.reactor.advance(0.1)
    assert connection.transport.disconnecting
    assert wrapped.built == []
    assert "no PROXY header within 10.0s" in _texts(events)[0]


def test_a_health_check_leaves_no_trace(events: Any) -> None:
    wrapped = _RecordingFactory()
    connection = _Connection(wrapped)
    connection.lose()
    assert wrapped.built == []
    assert connection.reactor.getDelayedCalls() == []
    assert _texts(events) == []


def test_a_refusing_factory_closes_the_connection() -> None:
    connection = _Connection(_RecordingFactory(refuse=True))
    connection.protocol.dataReceived(encode_v2(CLIENT_HEADER))
    assert connection.transport.disconnecting
    connection.lose()


@implementer(IHandshakeListener)
class _TLSRecorder(_Recorder):
    handshakes = 0

    def handshakeCompleted(self) -> None:
        self.handshakes += 1


class _TLSRecordingFactory(_RecordingFactory):
    def buildProtocol(self, addr: Any) -> _Recorder | None:
        protocol = _TLSRecorder(addr)
        self.built.append(protocol)
        return protocol


def test_tls_handshakes_reach_the_protocol() -> None:
    # startTLS on the connection puts TLS under the PROXY layer, which must pass the news on.
    wrapped = _TLSRecordingFactory()
    connection = _Connection(wrapped)
    assert IHandshakeListener.providedBy(connection.protocol)
    connection.protocol.dataReceived(encode_v2(CLIENT_HEADER))
    connection.protocol.handshakeCompleted()
    assert [p.handshakes for p in wrapped.built] == [1]  # type: ignore[attr-defined]
    plain = _Connection(_RecordingFactory())
    plain.protocol.dataReceived(encode_v2(CLIENT_HEADER))
    plain.protocol.handshakeCompleted()  # nobody listens: nothing happens


def test_the_factory_starts_and_stops_the_wrapped_one() -> None:
    wrapped = _RecordingFactory()
    factory = TrustedProxyFactory(wrapped, TRUSTED, MemoryReactorClock())
    factory.doStart()
    assert wrapped.numPorts == 1
    factory.doStop()
    assert wrapped.numPorts == 0


def test_connected_address_without_a_balancer() -> None:
    assert connected_address(StringTransport(hostAddress=NODE)) == NODE.host
    dual_stack = IPv6Address("TCP", "::ffff:10.0.0.5", 2121)
    assert connected_address(StringTransport(hostAddress=dual_stack)) == NODE.host


def test_connected_address_under_tls() -> None:
    connection = _Connection(_RecordingFactory())
    connection.protocol.dataReceived(encode_v1(CLIENT_HEADER))

    class _TLSLayer:
        transport = connection.protocol

        def getHost(self) -> Any:
            return NODE

    assert connected_address(_TLSLayer()) == "203.0.113.9"


# The FTP server behind the PROXY layer


class _FTP:
    """An FTP factory on memory parts behind a L{TrustedProxyFactory}."""

    def __init__(self, **options: Any) -> None:
        self.reactor = MemoryReactorClock()
        storage = MemoryStorageFactory(MemoryStorage(self.reactor))
        auth = MemoryAuthenticator({"alice": "secret"})
        self.ftp = FTPFactory(auth, storage, reactor=self.reactor, **options)
        self.factory = TrustedProxyFactory(self.ftp, TRUSTED, self.reactor)

    def connect(self, header: ProxyHeader = CLIENT_HEADER, rest: bytes = b"") -> tuple[Any, StringTransport]:
        transport = StringTransport(hostAddress=NODE, peerAddress=BALANCER)
        protocol = self.factory.buildProtocol(BALANCER)
        protocol.makeConnection(transport)
        assert transport.value() == b""  # nothing is said to the balancer before the header
        protocol.dataReceived(encode_v2(header) + rest)
        for _ in range(20):
            self.reactor.advance(0)
        return protocol, transport


def test_ftp_sees_the_client_and_binds_data_ports_on_the_node() -> None:
    server = _FTP(login_failure_delay=0)
    _, transport = server.connect(rest=b"USER alice\r\nPASS secret\r\nPASV\r\nPORT 203,0,113,9,200,1\r\n")
    for _ in range(20):
        server.reactor.advance(0)
    replies = transport.value().decode().splitlines()
    assert replies[0].startswith("220 ")
    (session,) = server.ftp.sessions
    assert session.peer_host == "198.51.100.7"
    # PASV listens on, and by default announces, the node's own address, not the balancer's frontend.
    assert replies[3].startswith("227 ") and "(10,0,0,5," in replies[3]
    assert server.reactor.tcpServers[-1][3] == "10.0.0.5"
    # PORT to the balancer's frontend is a bounce: the client is 198.51.100.7.
    assert replies[4].startswith("50"), replies


@needs_layout_2
def test_pasv_can_announce_the_address_the_client_connected_to() -> None:
    server = _FTP(login_failure_delay=0, passive_address="connected")
    _, transport = server.connect(rest=b"USER alice\r\nPASS secret\r\nPASV\r\n")
    for _ in range(20):
        server.reactor.advance(0)
    replies = transport.value().decode().splitlines()
    assert replies[3].startswith("227 ") and "(203,0,113,9," in replies[3], replies
    assert server.reactor.tcpServers[-1][3] == "10.0.0.5"


def _data_connection(port_factory: Any, peer: Any, header: ProxyHeader | None) -> tuple[Any, StringTransport]:
    transport = StringTransport(hostAddress=NODE, peerAddress=peer)
    protocol = port_factory.buildProtocol(peer)
    if protocol is not None:
        protocol.makeConnection(transport)
        if header is not None:
            protocol.dataReceived(encode_v2(header))
    return protocol, transport


@needs_layout_2
def test_passive_ports_take_proxy_headers_from_the_balancer() -> None:
    server = _FTP(login_failure_delay=0, trusted_proxies=TRUSTED)
    server.connect(rest=b"USER alice\r\nPASS secret\r\nPASV\r\n")
    port_factory = server.reactor.tcpServers[-1][1]
    # Through the balancer, a header that names anyone but the client is refused (no port theft)...
    thief, thief_transport = _data_connection(port_factory, BALANCER, tcp("198.51.100.99", 1, "203.0.113.9", 30000))
    assert thief.wrappedProtocol is None and thief_transport.disconnecting
    # ...as is a connection without a header...
    _, silent = _data_connection(port_factory, BALANCER, None)
    server.reactor.advance(HEADER_TIMEOUT)
    assert silent.disconnecting
    # ...and one that names the client is the data connection.
    good, _ = _data_connection(port_factory, BALANCER, tcp("198.51.100.7", 2, "203.0.113.9", 30000))
    assert isinstance(good.wrappedProtocol, DataConnection)
    assert good.wrappedProtocol.transport.getPeer().host == "198.51.100.7"


@needs_layout_2
def test_passive_ports_still_take_the_client_directly() -> None:
    server = _FTP(login_failure_delay=0, trusted_proxies=TRUSTED)
    server.connect(rest=b"USER alice\r\nPASS secret\r\nPASV\r\n")
    port_factory = server.reactor.tcpServers[-1][1]
    stranger, _ = _data_connection(port_factory, IPv4Address("TCP", "198.51.100.99", 1), None)
    assert stranger is None
    client, _ = _data_connection(port_factory, IPv4Address("TCP", "198.51.100.7", 2), None)
    assert isinstance(client, DataConnection)


def test_limits_count_clients_not_the_balancer() -> None:
    server = _FTP(max_sessions_per_ip=1)
    server.connect(header=tcp("198.51.100.7", 1, "203.0.113.9", 21))
    _, second = server.connect(header=tcp("198.51.100.8", 1, "203.0.113.9", 21))
    assert second.value().startswith(b"220 ")
    _, third = server.connect(header=tcp("198.51.100.8", 2, "203.0.113.9", 21), rest=b"USER alice\r\n")
    assert third.value().startswith(b"421 ")
    assert third.value().count(b"\r\n") == 1  # what followed the header on a refused connection is not read


# Endpoints


def _listened(description: str, reactor: MemoryReactor | None = None) -> tuple[Any, Factory]:
    reactor = reactor or MemoryReactor()
    factory = _RecordingFactory()
    server_endpoint(reactor, description, TRUSTED).listen(factory)
    return reactor.tcpServers[-1], factory


def test_haproxy_tcp_endpoints_are_trusted_proxy_listeners() -> None:
    (port, proxied, backlog, interface), factory = _listened("haproxy:tcp:2121:interface=10.0.0.5:backlog=7")
    assert (port, backlog, interface) == (2121, 7, "10.0.0.5")
    assert isinstance(proxied, TrustedProxyFactory) and proxied.wrappedFactory is factory
    assert proxied.trusted == TRUSTED
    (port, proxied, _, interface), _ = _listened("haproxy:tcp6:2121:interface=\\:\\:1")
    assert (port, interface) == (2121, "::1")
    assert isinstance(proxied, TrustedProxyFactory)


def test_haproxy_ssl_endpoints_read_the_header_before_tls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    reactor = MemoryReactor()
    (port, proxied, _, interface), factory = _listened(
        f"haproxy:ssl:990:interface=10.0.0.5:privateKey={pki.server_bundle}", reactor
    )
    assert reactor.sslServers == []
    assert (port, interface) == (990, "10.0.0.5")
    assert isinstance(proxied, TrustedProxyFactory)
    assert isinstance(proxied.wrappedFactory, TLSMemoryBIOFactory)
    assert proxied.wrappedFactory.wrappedFactory is factory


def test_other_endpoints_are_twisteds() -> None:
    (port, factory, _, _), wrapped = _listened("tcp:2121")
    assert port == 2121 and factory is wrapped


@pytest.mark.parametrize(
    ("description", "trusted", "message"),
    [
        ("haproxy:tcp:2121", (), "--trusted-proxy"),
        ("haproxy:unix:/run/ftp.sock", TRUSTED, "only tcp, tcp6, ssl"),
        ("haproxy:systemd:domain=INET:index=0", TRUSTED, "only tcp, tcp6, ssl"),
    ],
)
def test_refused_haproxy_endpoints(description: str, trusted: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        server_endpoint(MemoryReactor(), description, trusted)


def test_no_listener_can_sneak_past_the_proxy_layer() -> None:
    reactor = MemoryReactor()
    proxied = _ProxiedListeningReactor(reactor, TRUSTED, HEADER_TIMEOUT)
    for name in ("listenUNIX", "listenUDP", "adoptStreamPort"):
        with pytest.raises(AttributeError, match="supports only tcp, tcp6, ssl"):
            getattr(proxied, name)
    assert proxied.connectTCP == reactor.connectTCP


def test_the_endpoint_listens_through_the_proxy_layer() -> None:
    reactor = MemoryReactor()
    TrustedProxyEndpoint(reactor, "tcp:2121", TRUSTED, header_timeout=3).listen(_RecordingFactory())
    proxied = reactor.tcpServers[0][1]
    assert isinstance(proxied, TrustedProxyFactory) and proxied.header_timeout == 3
