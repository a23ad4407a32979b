"""
Deterministic tests of the control protocol: reply codes and sequencing.

Everything runs on a L{MemoryReactorClock} with L{StringTransport}s; data
connections are built from the factory the protocol gave to C{listenTCP} or
C{connectTCP}, so no socket is opened.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import error as internet_error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from exftp import FileNotFound, FTPFactory, Session, StorageUnavailable
from exftp._datachannel import DataConnection
from exftp.testing import MemoryAuthenticator, MemoryStorage, MemoryStorageFactory

CLIENT = "127.0.0.1"


class _Reactor(MemoryReactorClock):
    """A memory reactor whose listenTCP refuses ports listed in C{busy}."""

    def __init__(self) -> None:
        super().__init__()
        self.busy: set[int] = set()

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        if port in self.busy:
            raise internet_error.CannotListenError(interface, port, OSError("in use"))
        return super().listenTCP(port, factory, backlog, interface)


class _Client:
    """One control connection to a server built on memory parts."""

    def __init__(
        self,
        ipv6: bool = False,
        mapped: bool = False,
        same_server: _Client | None = None,
        address: str = CLIENT,
        **options: Any,
    ) -> None:
        """
        @param same_server: another client whose server (reactor, storage,
            users and factory) this one connects to, as a second session.
        @param address: the client's IPv4 address.
        """
        if same_server is not None:
            self.reactor, self.storage = same_server.reactor, same_server.storage
            self.auth, self.factory = same_server.auth, same_server.factory
        else:
            self.reactor = _Reactor()
            self.storage = MemoryStorage(self.reactor)
            self.auth = MemoryAuthenticator(
                {"alice": "secret", "reader": "pw", "dropbox": "pw", "lister": "pw"},
                read_only=frozenset({"reader"}),
                permissions={"dropbox": "ew", "lister": "l"},
            )
            self.factory = FTPFactory(self.auth, MemoryStorageFactory(self.storage), reactor=self.reactor, **options)
        port = 50000 + len(self.factory.sessions)
        if mapped:
            host, peer = IPv6Address("TCP", f"::ffff:{CLIENT}", 21), IPv6Address("TCP", f"::ffff:{CLIENT}", port)
        elif ipv6:
            host, peer = IPv6Address("TCP", "::1", 21), IPv6Address("TCP", "::1", port)
        else:
            host, peer = IPv4Address("TCP", CLIENT, 21), IPv4Address("TCP", address, port)
        self.proto = self.factory.buildProtocol(peer)
        self.transport = StringTransport(hostAddress=host, peerAddress=peer)
        self.proto.makeConnection(self.transport)

    def pump(self) -> None:
        for _ in range(50):
            self.reactor.advance(0)

    def replies(self) -> list[str]:
        """The reply lines sent since the last call."""
        text = self.transport.value().decode()
        self.transport.clear()
        return [line for line in text.split("\r\n") if line]

    def send(self, line: str | bytes) -> list[str]:
        self.replies()
        data = line if isinstance(line, bytes) else line.encode()
        self.proto.dataReceived(data + b"\r\n")
        self.pump()
        return self.replies()

    def login(self, user: str = "alice", password: str = "secret") -> None:
        self.send(f"USER {user}")
        assert self.send(f"PASS {password}")[-1].startswith("230"), "login failed"

    def passive(self) -> Any:
        """Send PASV and return the factory the server listens with."""
        reply = self.send("PASV")
        assert reply[-1].startswith("227"), reply
        return self.reactor.tcpServers[-1][1]

    def connect(self, factory: Any, host: str = CLIENT) -> tuple[DataConnection, StringTransport]:
        """Make the data connection a client would make."""
        peer = IPv4Address("TCP", host, 40001)
        proto = factory.buildProtocol(peer)
        transport = StringTransport(hostAddress=IPv4Address("TCP", CLIENT, 40000), peerAddress=peer)
        proto.makeConnection(transport)
        self.pump()
        return proto, transport

    def open_data(self) -> tuple[DataConnection, StringTransport]:
        """PASV, then the data connection to it."""
        return self.connect(self.passive())

    def download(self, command: str) -> tuple[list[str], bytes]:
        """Run a RETR/LIST-like C{command}: all its replies and the bytes sent on the data connection."""
        proto, transport = self.open_data()
        first = self.send(command)
        self.pump()
        _close(proto)
        self.pump()
        return first + self.replies(), transport.value()

    def upload(self, command: str, payload: bytes, clean: bool = True) -> list[str]:
        """Run a STOR-like C{command} sending C{payload}: the codes of all its replies."""
        proto, transport = self.open_data()
        first = self.send(command)
        assert transport.producerState == "producing", transport.producerState
        proto.dataReceived(payload)
        _close(proto, clean)
        self.pump()
        return [r[:4] for r in first + self.replies()]


def _close(proto: DataConnection, clean: bool = True) -> None:
    reason = internet_error.ConnectionDone() if clean else internet_error.ConnectionLost()
    proto.connectionLost(Failure(reason))


class GreetingAndLoginTests(SynchronousTestCase):
    def test_greeting(self) -> None:
        client = _Client(banner="Hello there.")
        self.assertEqual(client.replies(), ["220 Hello there."])

    def test_user_always_331(self) -> None:
        client = _Client()
        self.assertEqual(client.send("USER nobody")[0][:4], "331 ")
        self.assertEqual(client.send("USER alice")[0][:4], "331 ")

    def test_login(self) -> None:
        client = _Client()
        client.send("USER alice")
        self.assertEqual(client.send("PASS secret"), ["230 Login successful."])
        self.assertEqual(client.auth.logins[0].username, "alice")

    def _fail_login(self, client: _Client, user: str, password: str) -> tuple[list[str], list[str]]:
        """Send a failing login; return the replies before and after the delay."""
        client.send(f"USER {user}")
        early = client.send(f"PASS {password}")
        client.reactor.advance(client.factory.login_failure_delay)
        client.pump()
        return early, client.replies()

    def test_wrong_password_and_unknown_user_look_alike(self) -> None:
        client = _Client()
        wrong = self._fail_login(client, "alice", "nope")
        unknown = self._fail_login(client, "nobody", "secret")
        self.assertEqual(wrong, ([], ["530 Login incorrect."]))
        self.assertEqual(wrong, unknown)

    def test_disconnect_after_too_many_failures(self) -> None:
        client = _Client(max_login_failures=2)
        self._fail_login(client, "alice", "1")
        self.assertFalse(client.transport.disconnecting)
        _early, late = self._fail_login(client, "alice", "2")
        self.assertEqual(late[0][:4], "530 ")
        self.assertTrue(client.transport.disconnecting)

    def test_good_login_after_a_failure(self) -> None:
        client = _Client()
        self._fail_login(client, "alice", "wrong")
        client.login()

    def test_revoked_session_ends(self) -> None:
        client = _Client()
        client.login()
        self.assertEqual(client.send("PWD")[0][:4], "257 ")
        client.auth.users["alice"] = "changed"
        self.assertEqual(client.send("PWD")[0][:4], "421 ")
        self.assertTrue(client.transport.disconnecting)

    def test_revalidation_error_ends_session(self) -> None:
        client = _Client()
        client.login()

        def broken(session: Session) -> Deferred[bool]:
            return fail(RuntimeError("auth service down"))

        client.auth.authenticated = broken  # type: ignore[method-assign]
        self.assertEqual(client.send("PWD")[0][:4], "421 ")
        self.flushLoggedErrors(RuntimeError)

    def test_pass_without_user(self) -> None:
        self.assertEqual(_Client().send("PASS x")[0][:4], "503 ")

    def test_commands_need_login(self) -> None:
        client = _Client()
        for line in ("PWD", "CWD /", "LIST", "RETR a", "STOR a", "PASV", "MKD x", "TYPE I"):
            self.assertEqual(client.send(line)[0][:4], "530 ", line)

    def test_verbs_are_case_insensitive(self) -> None:
        client = _Client()
        client.send("user alice")
        self.assertEqual(client.send("pAsS secret")[0][:4], "230 ")
        self.assertEqual(client.send("pwd"), ['257 "/" is the current directory.'])

    def test_unknown_and_malformed(self) -> None:
        client = _Client()
        client.login()
        self.assertEqual(client.send("FOO")[0][:4], "500 ")
        self.assertEqual(client.send("")[0][:4], "500 ")
        self.assertEqual(client.send("FROBNICATE")[0][:4], "500 ")
        self.assertEqual(client.send("CWD")[0][:4], "501 ")
        self.assertEqual(client.send("PWD extra")[0][:4], "501 ")
        self.assertEqual(client.send(b"RETR \xff\xfe")[0][:4], "501 ")

    def test_no_user_change_after_login(self) -> None:
        client = _Client()
        client.login()
        self.assertEqual(client.send("USER reader")[0][:4], "530 ")

    def test_acct_syst_noop_quit(self) -> None:
        client = _Client()
        self.assertEqual(client.send("SYST"), ["215 UNIX Type: L8"])
        self.assertEqual(client.send("NOOP")[0][:4], "200 ")
        self.assertEqual(client.send("ACCT x")[0][:4], "202 ")
        self.assertEqual(client.send("QUIT")[0][:4], "221 ")
        self.assertTrue(client.transport.disconnecting)

    def test_too_long_line(self) -> None:
        client = _Client(max_line_length=100)
        self.assertEqual(client.send("NOOP " + "x" * 200), ["500 Command line too long."])
        self.assertFalse(client.transport.disconnecting)
        self.assertEqual(client.send("SYST"), ["215 UNIX Type: L8"])

    def test_too_long_line_in_pieces_is_never_buffered(self) -> None:
        client = _Client(max_line_length=100)
        client.replies()
        for _ in range(50):
            client.proto.dataReceived(b"A" * 1000)
            self.assertLessEqual(len(client.proto._buffer), 1100)
        client.proto.dataReceived(b"tail\r\nSYST\r\n")
        client.pump()
        self.assertEqual(client.replies(), ["500 Command line too long.", "215 UNIX Type: L8"])

    def test_too_long_line_followed_by_a_command_in_one_write(self) -> None:
        client = _Client(max_line_length=100)
        client.replies()
        client.proto.dataReceived(b"USER " + b"A" * 500 + b"\r\nNOOP\r\n")
        client.pump()
        self.assertEqual(client.replies(), ["500 Command line too long.", "200 NOOP ok."])


class ParameterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.client = _Client()
        self.client.login()

    def test_type(self) -> None:
        for argument, code in (("I", "200"), ("A", "200"), ("A N", "200"), ("L 8", "200"), ("E", "504"), ("Q", "501")):
            self.assertEqual(self.client.send(f"TYPE {argument}")[0][:3], code, argument)

    def test_mode_and_stru(self) -> None:
        self.assertEqual(self.client.send("MODE S")[0][:3], "200")
        self.assertEqual(self.client.send("MODE B")[0][:3], "504")
        self.assertEqual(self.client.send("MODE X")[0][:3], "501")
        self.assertEqual(self.client.send("STRU F")[0][:3], "200")
        self.assertEqual(self.client.send("STRU R")[0][:3], "504")

    def test_feat_lists_features(self) -> None:
        reply = self.client.send("FEAT")
        self.assertEqual(reply[0], "211-Features:")
        self.assertIn(" EPSV", reply)
        self.assertIn(" SIZE", reply)
        self.assertEqual(reply[-1], "211 End")


class DirectoryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.client = _Client()
        self.client.storage.add_file("/docs/readme.txt", b"hello")
        self.client.login()

    def test_cwd_pwd_cdup(self) -> None:
        self.assertEqual(self.client.send("CWD docs")[0][:4], "250 ")
        self.assertEqual(self.client.send("PWD"), ['257 "/docs" is the current directory.'])
        self.assertEqual(self.client.send("CDUP")[0][:4], "250 ")
        self.assertEqual(self.client.send("XPWD"), ['257 "/" is the current directory.'])

    def test_cwd_cannot_leave_root(self) -> None:
        self.assertEqual(self.client.send("CWD ../../..")[0][:4], "250 ")
        self.assertEqual(self.client.send("PWD"), ['257 "/" is the current directory.'])

    def test_cwd_missing_or_file(self) -> None:
        self.assertEqual(self.client.send("CWD nope")[0][:4], "550 ")
        self.assertEqual(self.client.send("CWD docs/readme.txt")[0][:4], "550 ")

    def test_mkd_rmd(self) -> None:
        self.assertEqual(self.client.send("MKD new dir"), ['257 "/new dir" created.'])
        self.assertEqual(self.client.send("MKD new dir")[0][:4], "550 ")
        self.assertEqual(self.client.send("XRMD new dir")[0][:4], "250 ")
        self.assertEqual(self.client.send("RMD docs")[0][:4], "550 ")
        self.assertEqual(self.client.storage.read_file("/docs/readme.txt"), b"hello")

    def test_quoted_path(self) -> None:
        self.assertEqual(self.client.send('MKD a"b'), ['257 "/a""b" created.'])

    def test_dele_and_rename(self) -> None:
        self.assertEqual(self.client.send("RNFR docs/readme.txt")[0][:4], "350 ")
        self.assertEqual(self.client.send("RNTO /moved.txt")[0][:4], "250 ")
        self.assertEqual(self.client.storage.read_file("/moved.txt"), b"hello")
        self.assertEqual(self.client.send("RNTO again")[0][:4], "503 ")
        self.assertEqual(self.client.send("DELE moved.txt")[0][:4], "250 ")
        self.assertEqual(self.client.send("DELE moved.txt")[0][:4], "550 ")

    def test_size_and_mdtm(self) -> None:
        self.assertEqual(self.client.send("SIZE docs/readme.txt"), ["213 5"])
        self.assertEqual(self.client.send("SIZE docs")[0][:4], "550 ")
        self.assertEqual(len(self.client.send("MDTM docs/readme.txt")[0]), len("213 YYYYMMDDHHMMSS"))

    def test_read_only_user(self) -> None:
        client = _Client()
        client.storage.add_file("/docs/readme.txt", b"hello")
        client.login("reader", "pw")
        denied = ["550 Permission denied: read-only access."]
        self.assertEqual(client.send("MKD x"), denied)
        # Refused for the permission, not for want of a data connection: no 150, nothing written.
        client.open_data()
        self.assertEqual(client.send("STOR x"), denied)
        self.assertEqual(client.send("DELE docs/readme.txt"), denied)
        self.assertRaises(FileNotFound, client.storage.read_file, "/x")
        self.assertEqual(client.storage.read_file("/docs/readme.txt"), b"hello")
        self.assertEqual(client.send("SIZE docs/readme.txt"), ["213 5"])


class DataChannelSetupTests(SynchronousTestCase):
    def test_pasv_reply_uses_passive_address_and_range(self) -> None:
        client = _Client(passive_address="203.0.113.5", passive_ports=range(40000, 40001))
        client.login()
        self.assertEqual(client.send("PASV"), ["227 Entering Passive Mode (203,0,113,5,156,64)."])
        port, _factory, _backlog, interface = client.reactor.tcpServers[-1]
        self.assertEqual((port, interface), (40000, CLIENT))

    def test_pasv_range_exhausted(self) -> None:
        client = _Client(passive_ports=range(40000, 40002))
        client.reactor.busy.update({40000, 40001})
        client.login()
        self.assertEqual(client.send("PASV")[0][:4], "425 ")
        self.assertEqual(client.factory.passive_listeners, 0)  # counted only while a port is open
        self.assertEqual(client.send("NOOP")[0][:4], "200 ")

    def test_epsv(self) -> None:
        client = _Client(passive_ports=range(40000, 40001))
        client.login()
        self.assertEqual(client.send("EPSV"), ["229 Entering Extended Passive Mode (|||40000|)."])
        self.assertEqual(client.send("EPSV 2")[0][:4], "522 ")
        self.assertEqual(client.send("EPSV ALL")[0][:4], "200 ")
        self.assertEqual(client.send("PASV")[0][:4], "503 ")
        self.assertEqual(client.send("PORT 127,0,0,1,200,10")[0][:4], "503 ")

    def test_ipv6_control_connection(self) -> None:
        client = _Client(ipv6=True)
        client.login()
        self.assertEqual(client.send("PASV")[0][:4], "504 ")
        self.assertEqual(client.send("EPSV")[0][:4], "229 ")
        self.assertEqual(client.send("EPRT |2|::1|50001|")[0][:4], "200 ")
        self.assertEqual(client.send("EPRT |1|127.0.0.1|50001|")[0][:4], "522 ")

    def test_port_bounce_refused(self) -> None:
        client = _Client()
        client.login()
        self.assertEqual(client.send("PORT 10,0,0,9,200,10")[0][:4], "501 ")
        self.assertEqual(client.send("PORT 127,0,0,1,0,21")[0][:4], "501 ")
        self.assertEqual(client.send("EPRT |1|10.0.0.9|50001|")[0][:4], "501 ")
        self.assertEqual(client.send("PORT 127,0,0,1,200,10")[0][:4], "200 ")
        self.assertEqual(client.send("PORT 1,2,3")[0][:4], "501 ")

    def test_port_foreign_allowed_when_configured(self) -> None:
        client = _Client(allow_foreign_addresses=True)
        client.login()
        self.assertEqual(client.send("PORT 10,0,0,9,200,10")[0][:4], "200 ")

    def test_passive_connection_from_other_host_refused(self) -> None:
        client = _Client()
        client.login()
        factory = client.passive()
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "10.9.9.9", 1234)))
        self.assertIsInstance(factory.buildProtocol(IPv4Address("TCP", CLIENT, 1234)), DataConnection)

    def test_passive_timeout(self) -> None:
        client = _Client(data_timeout=5)
        client.storage.add_file("/f", b"x")
        client.login()
        client.passive()
        client.reactor.advance(6)
        reply = client.send("RETR f")
        self.assertEqual(reply, ["425 Data connection timed out."])


class TransferTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.client = _Client()
        self.client.storage.add_file("/data.bin", bytes(range(256)) * 1000)
        self.client.storage.add_file("/text.txt", b"one\ntwo\n")
        self.client.login()
        self.client.send("TYPE I")

    def test_retr(self) -> None:
        replies, data = self.client.download("RETR data.bin")
        self.assertEqual([r[:4] for r in replies], ["150 ", "226 "])
        self.assertEqual(data, bytes(range(256)) * 1000)

    def test_retr_with_rest(self) -> None:
        self.assertEqual(self.client.send("REST 1000")[0][:4], "350 ")
        _replies, data = self.client.download("RETR data.bin")
        self.assertEqual(data, (bytes(range(256)) * 1000)[1000:])

    def test_rest_is_used_once(self) -> None:
        self.client.send("REST 1000")
        self.client.download("RETR data.bin")
        _replies, data = self.client.download("RETR data.bin")
        self.assertEqual(len(data), 256000)

    def test_rest_needs_a_number(self) -> None:
        self.assertEqual(self.client.send("REST x")[0][:4], "501 ")

    def test_retr_missing_file_no_150(self) -> None:
        self.client.passive()
        self.assertEqual([r[:4] for r in self.client.send("RETR missing")], ["550 "])

    def test_retr_without_data_channel(self) -> None:
        self.assertEqual([r[:4] for r in self.client.send("RETR data.bin")], ["425 "])
        self.assertEqual([r[:4] for r in self.client.send("LIST")], ["425 "])

    def test_retr_ascii_converts_line_endings(self) -> None:
        self.client.send("TYPE A")
        _replies, data = self.client.download("RETR text.txt")
        self.assertEqual(data, b"one\r\ntwo\r\n")

    def test_retr_broken_connection(self) -> None:
        proto, transport = self.client.open_data()
        self.client.replies()
        self.client.proto.dataReceived(b"RETR data.bin\r\n")
        self.assertIsNotNone(transport.producer)
        _close(proto, clean=False)
        self.client.pump()
        self.assertEqual([r[:4] for r in self.client.replies()], ["150 ", "426 "])
        self.assertEqual(self.client.send("NOOP")[0][:4], "200 ")

    def test_list(self) -> None:
        self.client.storage.add_file("/docs/a.txt", b"12345")
        replies, data = self.client.download("LIST -la")
        self.assertEqual([r[:4] for r in replies], ["150 ", "226 "])
        lines = data.decode().split("\r\n")
        self.assertEqual([line.split()[-1] for line in lines if line], ["data.bin", "docs", "text.txt"])
        self.assertTrue(lines[1].startswith("drwxr-xr-x"))
        self.assertTrue(lines[0].startswith("-rw-r--r--    1 ftp      ftp        256000 "))

    def test_list_of_a_file_and_nlst(self) -> None:
        _replies, data = self.client.download("LIST text.txt")
        self.assertEqual(data.decode().split()[-1], "text.txt")
        _replies, data = self.client.download("NLST")
        self.assertEqual(data, b"data.bin\r\ntext.txt\r\n")

    def test_list_missing(self) -> None:
        self.client.passive()
        self.assertEqual([r[:4] for r in self.client.send("LIST nope")], ["550 "])

    def test_stor(self) -> None:
        self.assertEqual(self.client.upload("STOR new.bin", b"\x00\r\n\xff"), ["150 ", "226 "])
        self.assertEqual(self.client.storage.read_file("/new.bin"), b"\x00\r\n\xff")

    def test_stor_ascii(self) -> None:
        self.client.send("TYPE A")
        self.client.upload("STOR new.txt", b"a\r\nb\r\n")
        self.assertEqual(self.client.storage.read_file("/new.txt"), b"a\nb\n")

    def test_appe(self) -> None:
        self.client.upload("APPE text.txt", b"three\n")
        self.assertEqual(self.client.storage.read_file("/text.txt"), b"one\ntwo\nthree\n")

    def test_broken_stor_keeps_old_content(self) -> None:
        self.assertEqual(self.client.upload("STOR text.txt", b"partial", clean=False), ["150 ", "426 "])
        self.assertEqual(self.client.storage.read_file("/text.txt"), b"one\ntwo\n")

    def test_stor_into_missing_directory(self) -> None:
        self.client.passive()
        self.assertEqual([r[:4] for r in self.client.send("STOR nodir/x")], ["550 "])

    def test_abor_during_transfer(self) -> None:
        proto, transport = self.client.open_data()
        self.client.send("STOR slow.bin")
        proto.dataReceived(b"some")
        self.client.proto.dataReceived(b"\xff\xf4\xffABOR\r\n")
        self.assertTrue(transport.disconnected)
        _close(proto, clean=False)
        self.client.pump()
        self.assertEqual([r[:4] for r in self.client.replies()], ["426 ", "226 "])
        self.assertRaises(FileNotFound, self.client.storage.read_file, "/slow.bin")

    def test_abor_idle(self) -> None:
        self.assertEqual(self.client.send("ABOR")[0][:4], "225 ")

    def test_commands_wait_for_transfer(self) -> None:
        proto, _transport = self.client.open_data()
        self.client.send("STOR queued.bin")
        self.client.proto.dataReceived(b"PWD\r\n")
        self.assertEqual(self.client.replies(), [])
        _close(proto)
        self.client.pump()
        self.assertEqual([r[:4] for r in self.client.replies()], ["226 ", "257 "])

    def test_active_mode(self) -> None:
        self.assertEqual(self.client.send("PORT 127,0,0,1,200,10")[0][:4], "200 ")
        first = self.client.send("RETR text.txt")
        host, port, factory, _timeout, bind = self.client.reactor.tcpClients[-1]
        self.assertEqual((host, port, bind), (CLIENT, 200 * 256 + 10, (CLIENT, 0)))
        proto = factory.buildProtocol(IPv4Address("TCP", CLIENT, port))
        transport = StringTransport()
        proto.makeConnection(transport)
        self.client.pump()
        _close(proto)
        self.client.pump()
        self.assertEqual([r[:4] for r in first + self.client.replies()], ["150 ", "226 "])
        self.assertEqual(transport.value(), b"one\ntwo\n")

    def test_active_mode_connection_refused(self) -> None:
        self.client.send("PORT 127,0,0,1,200,10")
        first = self.client.send("RETR text.txt")
        connector = self.client.reactor.connectors[-1]
        factory = self.client.reactor.tcpClients[-1][2]
        factory.clientConnectionFailed(connector, Failure(internet_error.ConnectionRefusedError()))
        self.client.pump()
        self.assertEqual([r[:4] for r in first + self.client.replies()], ["150 ", "425 "])


class _BrokenStorageFactory:
    def storage_for(self, session: Session) -> Deferred[Any]:
        return fail(StorageUnavailable())


class RobustnessTests(SynchronousTestCase):
    def test_idle_timeout(self) -> None:
        client = _Client(idle_timeout=30)
        client.login()
        client.replies()
        client.reactor.advance(31)
        self.assertEqual(client.replies()[0][:4], "421 ")
        self.assertTrue(client.transport.disconnecting)

    def test_idle_timeout_counts_from_the_last_command(self) -> None:
        client = _Client(idle_timeout=30)
        client.login()
        client.reactor.advance(20)
        self.assertEqual(client.send("NOOP")[0][:4], "200 ")
        client.reactor.advance(25)  # 45 s after login, 25 s after the NOOP
        self.assertEqual(client.replies(), [])
        self.assertFalse(client.transport.disconnecting)
        client.reactor.advance(6)
        self.assertEqual(client.replies()[0][:4], "421 ")

    def test_one_timer_for_all_sessions_and_none_once_they_are_gone(self) -> None:
        first = _Client(idle_timeout=30, login_timeout=10)
        others = [_Client(same_server=first) for _ in range(3)]
        self.assertEqual(len(first.reactor.getDelayedCalls()), 1)
        for client in [first, *others]:
            client.proto.connectionLost(Failure(internet_error.ConnectionDone()))
        self.assertEqual(first.reactor.getDelayedCalls(), [])

    def test_shutdown_sends_421(self) -> None:
        client = _Client()
        client.login()
        client.replies()
        done = client.factory.shutdown()
        self.assertEqual(client.replies()[0][:4], "421 ")
        self.assertNoResult(done)
        client.proto.connectionLost(Failure(internet_error.ConnectionDone()))
        self.successResultOf(done)

    def test_unexpected_storage_error_is_451_and_logged(self) -> None:
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        client = _Client()
        client.login()

        def explode(path: Any) -> Deferred[Any]:
            raise RuntimeError("boom")

        client.proto.storage.stat = explode  # type: ignore[union-attr]
        reply = client.send("SIZE x")
        self.assertEqual(reply, ["451 Requested action aborted: local error in processing."])
        self.assertNotIn("boom", "".join(reply))
        self.assertTrue(any(event.get("log_failure") is not None for event in observer))
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(client.send("NOOP")[0][:4], "200 ")

    def test_storage_factory_failure_refuses_login(self) -> None:
        """
        The password was right but the user's storage does not answer: a
        server problem (421, closed), not the user's failed login (it was
        530 and counted toward a ban: found by the chaos test).
        """
        client = _Client(login_failure_delay=0)
        client.factory.storage_factory = _BrokenStorageFactory()
        client.send("USER alice")
        reply = client.send("PASS secret")
        self.assertEqual(reply[0][:4], "421 ", reply)
        self.assertEqual(client.proto.login_failures, 0)
        self.assertTrue(client.transport.disconnecting)
        self.flushLoggedErrors()

    def test_disconnect_during_upload_aborts_it(self) -> None:
        client = _Client()
        client.login()
        proto, _transport = client.open_data()
        client.send("STOR gone.bin")
        proto.dataReceived(b"data")
        client.proto.connectionLost(Failure(internet_error.ConnectionLost()))
        client.pump()
        self.assertRaises(FileNotFound, client.storage.read_file, "/gone.bin")
        self.assertNotIn(client.proto, client.factory.sessions)


class ModernCommandTests(SynchronousTestCase):
    """RFC 2389/3659/7151 and the hash commands."""

    def setUp(self) -> None:
        self.client = _Client()
        self.client.storage.add_file("/dir/a.txt", b"hello world")
        self.client.login()
        self.client.send("TYPE I")

    def test_feat_is_honest(self) -> None:
        features = [line.strip() for line in self.client.send("FEAT")[1:-1]]
        self.assertIn("MLST type*;size*;modify*;perm*;unique*;unix.mode*;", features)
        self.assertIn("HASH SHA-256*;SHA-1;MD5", features)
        self.assertIn("REST STREAM", features)
        for feature in features:
            verb = feature.split()[0]
            if verb not in ("REST", "TVFS", "UTF8"):
                self.assertNotEqual(self.client.send(f"HELP {verb}")[0][:4], "501 ", verb)

    def test_mlst(self) -> None:
        reply = self.client.send("MLST dir/a.txt")
        self.assertEqual(reply[0], "250-Listing /dir/a.txt")
        facts, name = reply[1][1:].rsplit(" ", 1)
        self.assertEqual(name, "/dir/a.txt")
        parsed = dict(item.split("=", 1) for item in facts.rstrip(";").split(";"))
        self.assertEqual(parsed["type"], "file")
        self.assertEqual(parsed["size"], "11")
        self.assertEqual(parsed["perm"], "radfw")
        self.assertEqual(parsed["unix.mode"], "0644")
        self.assertEqual(len(parsed["modify"]), 14)
        self.assertEqual(reply[-1], "250 End.")

    def test_opts_mlst_selects_facts(self) -> None:
        self.assertEqual(self.client.send("OPTS MLST type;size;bogus;"), ["200 MLST OPTS type;size;"])
        reply = self.client.send("MLST dir")
        self.assertEqual(reply[1], " type=dir; /dir")

    def test_mlsd(self) -> None:
        replies, data = self.client.download("MLSD dir")
        self.assertEqual([r[:4] for r in replies], ["150 ", "226 "])
        lines = data.decode().split("\r\n")
        self.assertTrue(lines[0].startswith("type=cdir;"))
        self.assertTrue(lines[0].endswith(" ."))
        self.assertTrue(lines[1].startswith("type=pdir;"))
        self.assertTrue(lines[2].startswith("type=file;size=11;"))
        self.assertTrue(lines[2].endswith(" a.txt"))

    def test_mlsd_of_a_file(self) -> None:
        self.client.passive()
        self.assertEqual(self.client.send("MLSD dir/a.txt")[0][:4], "501 ")

    def test_read_only_perm(self) -> None:
        client = _Client()
        client.storage.add_file("/f", b"")
        client.login("reader", "pw")
        self.assertIn("perm=r;", client.send("MLST f")[1])
        self.assertIn("perm=el;", client.send("MLST /")[1])

    def test_hash(self) -> None:
        import hashlib

        self.assertEqual(
            self.client.send("HASH dir/a.txt"),
            [f"213 SHA-256 0-11 {hashlib.sha256(b'hello world').hexdigest()} a.txt"],
        )
        self.assertEqual(self.client.send("OPTS HASH MD5"), ["200 MD5"])
        self.assertEqual(self.client.send("HASH dir/a.txt")[0].split()[3], hashlib.md5(b"hello world").hexdigest())
        self.assertEqual(self.client.send("OPTS HASH CRC-99")[0][:4], "504 ")
        self.assertEqual(self.client.send("HASH nope")[0][:4], "550 ")

    def test_x_hashes(self) -> None:
        import hashlib
        import zlib

        self.assertEqual(self.client.send("XMD5 dir/a.txt"), ["250 " + hashlib.md5(b"hello world").hexdigest()])
        self.assertEqual(self.client.send('XSHA256 "dir/a.txt"'), ["250 " + hashlib.sha256(b"hello world").hexdigest()])
        self.assertEqual(self.client.send("XCRC dir/a.txt"), [f"250 {zlib.crc32(b'hello world'):08X}"])

    def test_stou(self) -> None:
        proto, _transport = self.client.open_data()
        first = self.client.send("STOU report")
        self.assertTrue(first[0].startswith("150 FILE: report."), first)
        name = first[0].split("FILE: ")[1]
        proto.dataReceived(b"unique")
        _close(proto)
        self.client.pump()
        self.assertEqual(self.client.replies()[0][:4], "226 ")
        self.assertEqual(self.client.storage.read_file("/" + name), b"unique")

    def test_stat_path(self) -> None:
        reply = self.client.send("STAT dir")
        self.assertEqual(reply[0], "213-Status follows:")
        self.assertTrue(reply[1].startswith(" -rw-r--r--") or reply[1].startswith("-rw-r--r--"))
        self.assertTrue(reply[1].endswith(" a.txt"))
        self.assertEqual(reply[-1], "213 End of status.")
        self.assertEqual(self.client.send("STAT nope")[0][:4], "550 ")

    def test_site(self) -> None:
        self.assertEqual(self.client.send("SITE HELP")[0][:4], "214-")
        self.assertEqual(self.client.send("SITE FOO")[0][:4], "501 ")
        self.assertEqual(self.client.send("SITE CHMOD xyz dir/a.txt")[0][:4], "501 ")

    def test_clnt_and_host(self) -> None:
        client = _Client(virtual_hosts=frozenset({"ftp.example.com"}))
        self.assertEqual(client.send("CLNT lftp 4.9")[0][:4], "200 ")
        self.assertEqual(client.send("HOST other.example")[0][:4], "504 ")
        self.assertEqual(client.send("HOST FTP.example.com")[0][:4], "220 ")
        client.login()
        self.assertEqual(client.send("HOST ftp.example.com")[0][:4], "503 ")

    def test_host_default(self) -> None:
        self.assertEqual(_Client().send("HOST anything")[0][:4], "220 ")


class HardeningTests(SynchronousTestCase):
    """Limits, timeouts and the defender (RFC 2577)."""

    def test_pipelined_commands_in_order_with_bounded_queue(self) -> None:
        client = _Client()
        client.storage.add_file("/f", b"x")
        client.login()
        proto, _transport = client.open_data()
        client.replies()
        client.proto.dataReceived(b"STOR g\r\n" + b"".join(b"SIZE f\r\n" for _ in range(1000)))
        self.assertLessEqual(len(client.proto._queue), 1000)
        self.assertTrue(client.proto.paused)
        _close(proto)
        client.pump()
        replies = client.replies()
        self.assertEqual(replies[:2], ["150 Opening ASCII mode data connection for /g.", "226 Transfer complete."])
        self.assertEqual(replies[2:], ["213 1"] * 1000)
        self.assertFalse(client.proto.paused)

    def test_session_limits(self) -> None:
        client = _Client(max_sessions_per_ip=1)
        second = client.factory.buildProtocol(IPv4Address("TCP", CLIENT, 50001))
        transport = StringTransport(peerAddress=IPv4Address("TCP", CLIENT, 50001))
        second.makeConnection(transport)
        self.assertEqual(transport.value(), b"421 Too many connections from your address; try again later.\r\n")
        self.assertTrue(transport.disconnecting)
        second.connectionLost(Failure(internet_error.ConnectionDone()))
        self.assertEqual(len(client.factory.sessions), 1)
        client.proto.connectionLost(Failure(internet_error.ConnectionDone()))
        self.assertEqual(client.factory.sessions, set())

    def test_total_session_limit(self) -> None:
        client = _Client(max_sessions=1)
        other = client.factory.buildProtocol(IPv4Address("TCP", "10.1.1.1", 50001))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.1.1.1", 50001))
        other.makeConnection(transport)
        self.assertTrue(transport.value().startswith(b"421 Too many connections;"))

    def test_login_timeout(self) -> None:
        client = _Client(login_timeout=10)
        client.replies()
        client.reactor.advance(11)
        self.assertEqual(client.replies(), ["421 Login timeout: closing control connection."])
        self.assertTrue(client.transport.disconnecting)

    def test_login_timeout_cancelled_by_login(self) -> None:
        client = _Client(login_timeout=10)
        client.login()
        client.reactor.advance(11)
        self.assertEqual(client.send("NOOP")[0][:4], "200 ")

    def test_defender_bans_across_sessions(self) -> None:
        from exftp._defender import Defender

        defender = Defender(threshold=3, window_seconds=60, ban_seconds=100)
        client = _Client(defender=defender, max_login_failures=10, login_failure_delay=0)
        for _ in range(2):
            client.send("USER alice")
            self.assertEqual(client.send("PASS bad")[0][:4], "530 ")
        client.send("USER alice")
        self.assertEqual(client.send("PASS bad")[0][:4], "421 ")
        self.assertTrue(client.transport.disconnecting)
        again = client.factory.buildProtocol(IPv4Address("TCP", CLIENT, 50002))
        transport = StringTransport(peerAddress=IPv4Address("TCP", CLIENT, 50002))
        again.makeConnection(transport)
        self.assertTrue(transport.value().startswith(b"421 Too many failed logins"))
        client.reactor.advance(101)
        later = client.factory.buildProtocol(IPv4Address("TCP", CLIENT, 50003))
        transport = StringTransport(peerAddress=IPv4Address("TCP", CLIENT, 50003))
        later.makeConnection(transport)
        self.assertTrue(transport.value().startswith(b"220 "))

    def test_passive_listener_limit(self) -> None:
        client = _Client(max_passive_listeners=1)
        client.login()
        client.passive()
        self.assertEqual(client.factory.passive_listeners, 1)
        # A second PASV of the same session replaces its listener.
        self.assertEqual(client.send("PASV")[0][:4], "227 ")
        self.assertEqual(client.factory.passive_listeners, 1)
        # The limit is the server's: another session is refused while the listener is open...
        other = _Client(same_server=client)
        other.login()
        self.assertEqual(other.send("PASV"), ["425 Too many passive connections; try again later."])
        self.assertEqual(client.factory.passive_listeners, 1)
        client.send("ABOR")
        self.assertEqual(client.factory.passive_listeners, 0)
        # ...and served once it is closed.
        self.assertEqual(other.send("PASV")[0][:4], "227 ")
        self.assertEqual(client.factory.passive_listeners, 1)

    def test_passive_listener_share_per_address(self) -> None:
        """
        One address holds at most its share of passive listeners, so another
        address still gets one; each way a listener ends gives its share back.
        """
        first = _Client(max_passive_listeners=10, max_passive_listeners_per_ip=2, data_timeout=30)
        greedy = [first, *(_Client(same_server=first) for _ in range(4))]
        for client in greedy:
            client.login()
        listening = [greedy[0].passive(), greedy[1].passive()]
        # A second PASV of the same session replaces its listener: still two.
        listening[1] = greedy[1].passive()
        refused = "425 Too many passive connections from your address; try again later."
        self.assertEqual(greedy[2].send("PASV"), [refused])
        self.assertEqual(greedy[2].send("EPSV"), [refused])
        other = _Client(same_server=first, address="127.0.0.2")
        other.login()
        self.assertEqual(other.send("PASV")[0][:4], "227 ")
        self.assertEqual(first.factory.passive_listeners, 3)
        # The data connection arrives: the port closes and the share is back.
        greedy[0].connect(listening[0])
        self.assertEqual(first.factory.passive_listeners, 2)
        self.assertEqual(greedy[2].send("PASV")[0][:4], "227 ")
        # ABOR, a disconnect and the data timeout give theirs back too.
        greedy[2].send("ABOR")
        self.assertEqual(greedy[3].send("PASV")[0][:4], "227 ")
        greedy[3].proto.connectionLost(Failure(internet_error.ConnectionDone()))
        self.assertEqual(greedy[4].send("EPSV")[0][:4], "229 ")
        self.assertEqual(greedy[2].send("PASV"), [refused])
        first.reactor.advance(31)
        self.assertEqual(first.factory.passive_listeners, 0)
        self.assertEqual(greedy[2].send("PASV")[0][:4], "227 ")

    def test_stalled_transfer_is_aborted(self) -> None:
        client = _Client(stalled_timeout=30)
        client.login()
        proto, _transport = client.open_data()
        client.send("STOR slow")
        proto.dataReceived(b"a")
        client.reactor.advance(31)
        self.assertEqual(client.replies(), [])
        client.reactor.advance(30)
        _close(proto, clean=False)
        client.pump()
        self.assertEqual(client.replies(), ["426 Transfer stalled: no data moved; transfer aborted."])
        self.assertRaises(FileNotFound, client.storage.read_file, "/slow")


class TLSCommandTests(SynchronousTestCase):
    """FTPS commands on a server without a certificate, and their sequencing."""

    def test_auth_without_certificate(self) -> None:
        client = _Client()
        self.assertEqual(client.send("AUTH TLS")[0][:4], "502 ")
        self.assertEqual(client.send("AUTH KERBEROS")[0][:4], "504 ")
        self.assertNotIn(" AUTH TLS", client.send("FEAT"))

    def test_pbsz_and_prot_need_tls(self) -> None:
        client = _Client()
        self.assertEqual(client.send("PBSZ 0")[0][:4], "503 ")
        self.assertEqual(client.send("PROT P")[0][:4], "503 ")
        self.assertEqual(client.send("PROT C")[0][:4], "503 ")
        self.assertEqual(client.send("CCC")[0][:4], "534 ")

    def test_require_tls_refuses_clear_logins(self) -> None:
        from exftp._tls import TLSPolicy

        client = _Client(tls_policy=TLSPolicy(require_tls=True))
        self.assertEqual(client.send("USER alice"), ["530 TLS required: use AUTH TLS first."])
        self.assertEqual(client.send("PASS secret")[0][:4], "503 ")


class GracefulShutdownTests(SynchronousTestCase):
    def test_running_transfer_finishes_before_421(self) -> None:
        client = _Client()
        client.login()
        proto, _transport = client.open_data()
        client.send("STOR last.bin")
        done = client.factory.shutdown(grace=30)
        self.assertEqual(client.replies(), [])
        proto.dataReceived(b"complete")
        _close(proto)
        client.pump()
        self.assertEqual(
            client.replies(), ["226 Transfer complete.", "421 Server shutting down; closing control connection."]
        )
        self.assertEqual(client.storage.read_file("/last.bin"), b"complete")
        client.proto.connectionLost(Failure(internet_error.ConnectionDone()))
        self.successResultOf(done)

    def test_transfer_aborted_after_grace(self) -> None:
        client = _Client()
        client.login()
        proto, _transport = client.open_data()
        client.send("STOR slow.bin")
        proto.dataReceived(b"part")
        client.factory.shutdown(grace=30)
        client.reactor.advance(31)
        _close(proto, clean=False)
        client.pump()
        self.assertEqual([r[:4] for r in client.replies()], ["421 "])
        self.assertRaises(FileNotFound, client.storage.read_file, "/slow.bin")


class KilledClientTests(SynchronousTestCase):
    def test_client_killed_mid_upload_keeps_old_content(self) -> None:
        """Data EOF and control loss together (a killed client) is not a finished upload."""
        client = _Client()
        client.storage.add_file("/f.bin", b"old content")
        client.login()
        proto, _transport = client.open_data()
        client.send("STOR f.bin")
        proto.dataReceived(b"partial")
        _close(proto)
        client.proto.connectionLost(Failure(internet_error.ConnectionDone()))
        client.pump()
        self.assertEqual(client.storage.read_file("/f.bin"), b"old content")

    def test_feat_hides_mfmt_without_metadata_support(self) -> None:
        client = _Client()
        client.login()
        self.assertIn(" MFMT", client.send("FEAT"))
        client.proto.storage = object()  # type: ignore[assignment]
        self.assertNotIn(" MFMT", client.send("FEAT"))


class PermissionTests(SynchronousTestCase):
    """Per-session permissions (pyftpdlib letters) checked by every verb."""

    def test_upload_only_drop_box(self) -> None:
        client = _Client()
        client.storage.add_file("/in/a.txt", b"secret")
        client.login("dropbox", "pw")
        self.assertEqual(client.send("CWD in")[0][:4], "250 ")
        proto, _transport = client.open_data()
        self.assertEqual(client.send("STOR new.txt")[0][:4], "150 ")
        proto.dataReceived(b"dropped")
        _close(proto)
        client.pump()
        self.assertEqual(client.storage.read_file("/in/new.txt"), b"dropped")
        for line in ("RETR a.txt", "LIST", "NLST", "MLSD", "APPE a.txt", "DELE a.txt", "MKD d", "RMD x",
                     "RNFR a.txt", "MFMT 20200101000000 a.txt", "SITE CHMOD 600 a.txt"):
            client.passive()
            reply = client.send(line)
            # Refused for the permission (RMD x would be a 550 for a missing directory too).
            self.assertEqual(len(reply), 1, line)
            self.assertTrue(reply[0].startswith("550 Permission denied: you may not "), (line, reply))
        self.assertEqual(client.send("RNTO b.txt")[0][:4], "503 ")  # RNFR itself was refused (issue 16)
        self.assertEqual(client.storage.read_file("/in/a.txt"), b"secret")
        self.assertRaises(FileNotFound, client.storage.read_file, "/in/b.txt")
        self.assertRaises(FileNotFound, client.storage.read_file, "/in/d")

    def test_mlst_perm_fact_follows_permissions(self) -> None:
        client = _Client()
        client.storage.add_file("/in/a.txt", b"x")
        client.auth.permissions["dropbox"] = frozenset("elw")  # MLST needs l (issue 16)
        client.login("dropbox", "pw")
        self.assertIn("perm=w;", client.send("MLST in/a.txt")[1])
        self.assertIn("perm=elc;", client.send("MLST in")[1])

    def test_no_cwd_without_e(self) -> None:
        client = _Client()
        client.storage.add_file("/in/a.txt", b"x")
        client.login("lister", "pw")
        self.assertEqual(client.send("CWD in"), ["550 Permission denied: you may not change directories."])
        self.assertEqual(client.send("SIZE in/a.txt"), ["213 1"])


class DualStackTests(SynchronousTestCase):
    def test_ipv4_client_of_a_dual_stack_listener(self) -> None:
        """IPv4 clients seen as ::ffff:a.b.c.d get PASV, PORT and their data connections."""
        client = _Client(mapped=True, passive_ports=range(40000, 40001))
        client.login()
        self.assertEqual(client.proto.peer_host, CLIENT)
        self.assertEqual(client.send("PASV"), ["227 Entering Passive Mode (127,0,0,1,156,64)."])
        factory = client.reactor.tcpServers[-1][1]
        self.assertEqual(client.reactor.tcpServers[-1][3], CLIENT)
        self.assertIsInstance(factory.buildProtocol(IPv4Address("TCP", CLIENT, 1234)), DataConnection)
        self.assertEqual(client.send("PORT 127,0,0,1,200,10")[0][:4], "200 ")
        self.assertEqual(client.send("EPRT |1|127.0.0.1|50001|")[0][:4], "200 ")


class PagedListingTests(SynchronousTestCase):
    """Storages that list page by page (IPagedListing) stream LIST/NLST/MLSD."""

    def _client(
        self, pages: list[list[str]], fail_first: bool = False, fail_at: int | None = None
    ) -> tuple[_Client, list[int]]:
        from zope.interface import alsoProvides

        from exftp import FileInfo, FileKind
        from exftp._interfaces import IPagedListing

        client = _Client()
        client.storage.add_file("/big/placeholder", b"")
        client.login()
        fetched: list[int] = []

        async def list_pages(path: Any) -> Any:
            for number, names in enumerate(pages):
                if fail_first or number == fail_at:
                    raise FileNotFound()
                fetched.append(number)
                yield [FileInfo(name, FileKind.FILE, 1) for name in names]

        storage = client.proto.storage
        storage.list_pages = list_pages  # type: ignore[union-attr]
        alsoProvides(storage, IPagedListing)
        return client, fetched

    def test_pages_are_streamed_in_order(self) -> None:
        client, fetched = self._client([["a", "b"], ["c"], ["d", "e"]])
        proto, transport = client.open_data()
        first = client.send("NLST big")
        _close(proto)
        client.pump()
        self.assertEqual([r[:4] for r in first + client.replies()], ["150 ", "226 "])
        self.assertEqual(transport.value(), b"a\r\nb\r\nc\r\nd\r\ne\r\n")
        self.assertEqual(fetched, [0, 1, 2])

    def test_mlsd_pages(self) -> None:
        client, _fetched = self._client([["a"], ["b"]])
        proto, transport = client.open_data()
        client.send("MLSD big")
        _close(proto)
        client.pump()
        names = [line.rsplit(" ", 1)[1] for line in transport.value().decode().split("\r\n") if line]
        self.assertEqual(names, [".", "..", "a", "b"])

    def test_a_page_failing_after_the_150_ends_the_transfer_with_an_error(self) -> None:
        client, _fetched = self._client([["a"], ["b"], ["c"]], fail_at=1)
        _proto, transport = client.open_data()
        first = client.send("NLST big")
        client.pump()
        replies = [r[:4] for r in first + client.replies()]
        self.assertEqual(replies[0], "150 ")
        self.assertEqual(len(replies), 2)
        self.assertEqual(replies[1], "451 ")  # RFC 959: a 5xx is no reply to a transfer under way
        self.assertEqual(transport.value(), b"a\r\n")
        self.assertEqual(client.send("NOOP")[0][:4], "200 ")

    def test_failing_first_page_is_550_before_150(self) -> None:
        client, _fetched = self._client([["a"]], fail_first=True)
        client.passive()
        self.assertEqual([r[:4] for r in client.send("LIST big")], ["550 "])


class _SlowAbort:
    """An upload whose abort takes time: it ends when the test says so."""

    def __init__(self, upload: Any) -> None:
        self._upload = upload
        self.cancelled = False
        self.aborting: Deferred[None] = Deferred(lambda _: setattr(self, "cancelled", True))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._upload, name)

    def abort(self) -> Deferred[None]:
        return self.aborting


class CleanupTests(SynchronousTestCase):
    def test_teardown_does_not_cancel_an_uploads_abort(self) -> None:
        """
        The client drops both connections mid-upload: the session's teardown
        cancels the STOR while it awaits its upload's abort. The abort runs
        on to its end, and no failure is logged (it was logged as critical).
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        client = _Client()
        client.login()
        uploads: list[_SlowAbort] = []
        open_write = client.storage.open_write

        def slow(*args: Any) -> Deferred[Any]:
            return open_write(*args).addCallback(lambda upload: uploads.append(_SlowAbort(upload)) or uploads[-1])

        client.storage.open_write = slow  # type: ignore[method-assign]
        data, _transport = client.connect(client.passive())
        assert client.send("STOR f.bin")[0].startswith("150")
        data.dataReceived(b"partial")
        data.connectionLost(Failure(internet_error.ConnectionLost()))  # the data connection broke
        client.pump()
        client.proto.connectionLost(Failure(internet_error.ConnectionLost()))  # and the control one
        client.pump()
        [upload] = uploads
        self.assertFalse(upload.cancelled)
        upload.aborting.callback(None)
        client.pump()
        self.assertTrue(client.proto.closed.called)
        self.assertEqual([e for e in observer if e["log_level"].name in ("critical", "error")], [])
