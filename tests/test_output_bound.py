"""
The control connection's memory stays bounded whatever the client does: a
client that leaves its replies unread stops being read, STAT <directory> is
written a page at a time, and a restart offset past the end of a file is
refused (554) instead of leaving a hole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from twisted.internet import error as internet_error
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import alsoProvides

from exftp import FileInfo, FileKind, FileNotFound, FTPFactory
from exftp._interfaces import IPagedListing
from exftp._paths import VirtualPath
from exftp._protocol import FTPProtocol
from exftp.testing import MemoryAuthenticator, MemoryStorage, MemoryStorageFactory

#: Unsent bytes past which the test transport pauses its producer (as TCP's does at 64 KiB).
BOUND = 65536
#: Entries in the directory that STAT lists, and per page.
ENTRIES, PAGE = 3000, 100


class _UnreadTransport(StringTransport):
    """
    A transport whose client reads nothing until L{read} is called: past
    L{BOUND} unsent bytes it pauses its producer, as a TCP transport does.
    """

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None and len(self.value()) > BOUND:
            self.producer.pauseProducing()

    def read(self) -> bytes:
        """The client reads everything sent so far; the producer is resumed."""
        data = self.value()
        self.clear()
        if self.producer is not None:
            self.producer.resumeProducing()
        return data


class _Session:
    """One control connection on memory parts, whose storage lists page by page."""

    def __init__(self, **options: Any) -> None:
        self.reactor = MemoryReactorClock()
        self.storage = MemoryStorage(self.reactor)
        self.names = [f"a-file-with-a-rather-long-name-{index:05}.txt" for index in range(ENTRIES)]
        for name in self.names:
            self.storage.add_file(f"/many/{name}", b"x")
        self.storage.add_file("/data.bin", b"0123456789")
        auth = MemoryAuthenticator({"alice": "secret"})
        self.factory = FTPFactory(auth, MemoryStorageFactory(self.storage), reactor=self.reactor, **options)
        peer = IPv4Address("TCP", "127.0.0.1", 50000)
        self.proto: FTPProtocol = self.factory.buildProtocol(peer)
        self.transport = _UnreadTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 21), peerAddress=peer)
        self.proto.makeConnection(self.transport)
        self.pages_listed = 0
        self.fail_at_page: int | None = None

    def close(self) -> None:
        """The client goes away (if it has not already): a transfer left waiting is cancelled."""
        if not self.proto.closed.called:
            self.proto.connectionLost(Failure(internet_error.ConnectionDone()))

    def pump(self) -> None:
        for _ in range(20):
            self.reactor.advance(0)

    def send(self, data: bytes) -> None:
        self.proto.dataReceived(data)
        self.pump()

    def lines(self) -> list[str]:
        """The client reads: the reply lines sent since the last read."""
        return [line for line in self.transport.read().decode().split("\r\n") if line]

    def login(self) -> None:
        self.send(b"USER alice\r\nPASS secret\r\n")
        assert self.lines()[-1].startswith("230 "), "login failed"
        storage = self.proto.storage

        async def list_pages(path: VirtualPath) -> AsyncIterator[Sequence[FileInfo]]:
            assert path == VirtualPath.parse("/many"), path
            for start in range(0, ENTRIES, PAGE):
                if self.pages_listed == self.fail_at_page:
                    raise FileNotFound()
                self.pages_listed += 1
                yield [FileInfo(name, FileKind.FILE, 1) for name in self.names[start : start + PAGE]]

        storage.list_pages = list_pages  # type: ignore[union-attr]
        alsoProvides(storage, IPagedListing)

    def read_until_quiet(self) -> list[str]:
        """Read, again and again, until the server sends nothing more."""
        lines: list[str] = []
        while True:
            self.pump()
            more = self.lines()
            if not more:
                return lines
            lines += more


def _replies(lines: list[str]) -> list[tuple[int, int]]:
    """(code, line count) of each reply in C{lines}, checking the multi-line framing."""
    replies: list[tuple[int, int]] = []
    index = 0
    while index < len(lines):
        first = lines[index]
        code, count = int(first[:3]), 1
        if first[3] == "-":
            while not lines[index + count].startswith(f"{code} "):
                assert lines[index + count].startswith(" "), lines[index + count]
                count += 1
            count += 1
        replies.append((code, count))
        index += count
    return replies


class _TestCase(SynchronousTestCase):
    def open_session(self, **options: Any) -> _Session:
        """A new session, closed at the end of the test."""
        session = _Session(**options)
        self.addCleanup(session.close)
        return session


class OutputBoundTests(_TestCase):
    def test_unread_replies_stop_reading(self) -> None:
        """
        Pipelined HELP before login, replies unread: lines are held once a
        bounded amount of output waits, and the socket is no longer read once
        a bounded amount of input waits; each read lets more through, none is
        lost.
        """
        session = self.open_session()
        session.lines()
        data, offered, chunk = b"HELP\r\n" * 20000, 0, 4096
        while offered < len(data) and session.transport.producerState == "producing":
            session.proto.dataReceived(data[offered : offered + chunk])
            offered += chunk
        self.assertEqual(session.transport.producerState, "paused")
        self.assertTrue(session.proto.paused)
        self.assertLess(len(session.transport.value()), BOUND + 4096)
        self.assertLess(offered, BOUND + 2 * chunk + 4096)  # 64 KiB held, and the lines whose replies wait
        lines: list[str] = []
        while offered < len(data) or session.transport.value():
            session.pump()
            lines += session.lines()
            while offered < len(data) and session.transport.producerState == "producing":
                session.proto.dataReceived(data[offered : offered + chunk])
                offered += chunk
        replies = _replies(lines)
        self.assertEqual(replies, [(214, replies[0][1])] * 20000)
        self.assertFalse(session.proto.paused)
        self.assertEqual(session.transport.producerState, "producing")
        session.send(b"NOOP\r\n")
        self.assertEqual(session.lines(), ["200 NOOP ok."])

    def test_a_burst_of_lines_lets_other_sessions_run(self) -> None:
        """However many lines one read brings, a session runs a bounded number of them per reactor turn."""
        session = self.open_session()
        session.lines()
        session.proto.dataReceived(b"NOOP\r\n" * 1000)
        self.assertEqual(len(session.lines()), 100)
        self.assertTrue(session.proto.paused)
        session.pump()
        self.assertEqual(session.lines(), ["200 NOOP ok."] * 900)
        self.assertFalse(session.proto.paused)

    def test_queued_lines_wait_while_output_is_unread(self) -> None:
        """Lines queued behind a command run only as the client reads: in order, none lost."""
        session = self.open_session()
        session.login()
        session.send(b"STAT /many\r\n" + b"SYST\r\nFEAT\r\n" * 20)
        self.assertLess(len(session.transport.value()), BOUND + 16384)
        self.assertLessEqual(len(session.proto._queue), 40)
        lines = session.read_until_quiet()
        codes = [code for code, _count in _replies(lines)]
        self.assertEqual(codes, [213] + [215, 211] * 20)

    def test_stat_directory_is_written_page_by_page(self) -> None:
        """
        A pipelined burst of STAT <directory>: the listing is read from the
        storage only as fast as the client reads the reply.
        """
        session = self.open_session()
        session.login()
        session.send(b"STAT /many\r\n" * 50)
        self.assertLess(len(session.transport.value()), BOUND + 16384)
        self.assertLess(session.pages_listed, ENTRIES // PAGE)  # the first listing is not even read through
        self.assertTrue(session.proto.paused)
        replies = _replies(session.read_until_quiet())
        self.assertEqual(replies, [(213, ENTRIES + 2)] * 50)
        self.assertEqual(session.pages_listed, 50 * ENTRIES // PAGE)

    def test_stat_listing_lines(self) -> None:
        session = self.open_session()
        session.login()
        session.send(b"STAT /many\r\n")
        lines = session.read_until_quiet()
        self.assertEqual(lines[0], "213-Status follows:")
        self.assertTrue(lines[1].startswith(" -rw-r--r--"), lines[1])
        self.assertTrue(lines[1].endswith(" a-file-with-a-rather-long-name-00000.txt"), lines[1])
        self.assertEqual(lines[-1], "213 End of status.")
        self.assertEqual(len(lines), ENTRIES + 2)

    def test_stat_of_a_file_and_of_nothing(self) -> None:
        session = self.open_session()
        session.login()
        session.send(b"STAT data.bin\r\n")
        lines = session.read_until_quiet()
        self.assertEqual([lines[0], lines[-1]], ["213-Status follows:", "213 End of status."])
        self.assertTrue(lines[1].endswith(" data.bin"), lines)
        session.send(b"STAT nothing\r\n")
        self.assertEqual(session.lines()[0][:4], "550 ")

    def test_stat_listing_failing_after_its_first_page(self) -> None:
        """The 213 has begun: it ends as a 213 that says the listing is cut short, then the session goes on."""
        session = self.open_session()
        session.login()
        session.fail_at_page = 2
        session.send(b"STAT /many\r\nNOOP\r\n")
        lines = session.read_until_quiet()
        self.assertEqual(len(lines), 2 * PAGE + 3)
        self.assertTrue(lines[-2].startswith("213 End of status (incomplete: "), lines[-2])
        self.assertEqual(lines[-1], "200 NOOP ok.")

    def test_stat_with_a_path_waits_its_turn(self) -> None:
        """STAT <path> while a command runs is queued (not run at once beside it); STAT alone is answered at once."""
        session = self.open_session()
        session.login()
        session.send(b"PASV\r\n")
        session.lines()
        session.send(b"STOR upload\r\nSTAT /many\r\nSTAT\r\n")
        lines = session.lines()
        self.assertEqual([line[:4] for line in lines if not line.startswith(" ")], ["150 ", "211-", "211 "])
        self.assertEqual(len(session.proto._queue), 1)

    def test_connection_lost_while_waiting_for_the_client_to_read(self) -> None:
        session = self.open_session()
        session.login()
        session.send(b"STAT /many\r\n" * 3)
        self.assertTrue(session.proto.paused)
        session.proto.connectionLost(Failure(internet_error.ConnectionLost()))
        self.assertTrue(session.proto.closed.called)
        self.assertEqual(session.proto._queue, [])

    def test_closing_while_replies_are_unread(self) -> None:
        """
        The idle timeout closes a session that left its replies unread: its
        producer unregistered (a paused one keeps a transport open) and the
        connection aborted, since a graceful close would wait for the client
        to read.
        """
        session = self.open_session(idle_timeout=60)
        session.lines()
        session.send(b"HELP\r\n" * 2000)
        self.assertTrue(session.proto.paused)
        self.assertIsNotNone(session.transport.producer)
        session.reactor.advance(120)
        self.assertTrue(session.transport.disconnected)
        self.assertIsNone(session.transport.producer)

    def test_closing_a_reading_session_is_graceful(self) -> None:
        session = self.open_session(idle_timeout=60)
        session.reactor.advance(120)
        self.assertTrue(session.transport.disconnecting)
        self.assertFalse(session.transport.disconnected)
        self.assertIsNone(session.transport.producer)
        self.assertEqual(session.lines()[-1][:4], "421 ")


class RestartBeyondEndTests(_TestCase):
    """RFC 3659 5.4: a restart offset past the end of the file is 554 for uploads and downloads."""

    def setUp(self) -> None:
        self.session = self.open_session()
        self.session.login()
        self.session.send(b"TYPE I\r\n")
        self.session.lines()

    def command(self, *lines: bytes) -> list[str]:
        self.session.send(b"".join(line + b"\r\n" for line in lines))
        return [line[:4] for line in self.session.lines()]

    def test_stor_past_the_end(self) -> None:
        self.assertEqual(self.command(b"PASV", b"REST 11", b"STOR data.bin"), ["227 ", "350 ", "554 "])
        self.assertEqual(self.session.storage.read_file("/data.bin"), b"0123456789")

    def test_appe_past_the_end(self) -> None:
        self.assertEqual(self.command(b"PASV", b"REST 1000000000", b"APPE data.bin"), ["227 ", "350 ", "554 "])
        self.assertEqual(self.session.storage.read_file("/data.bin"), b"0123456789")

    def test_stor_new_file_with_offset(self) -> None:
        self.assertEqual(self.command(b"PASV", b"REST 5", b"STOR new.bin"), ["227 ", "350 ", "554 "])
        self.assertEqual(self.command(b"SIZE new.bin"), ["550 "])

    def test_retr_past_the_end(self) -> None:
        self.assertEqual(self.command(b"PASV", b"REST 11", b"RETR data.bin"), ["227 ", "350 ", "554 "])
        self.assertEqual(self.command(b"REST 11", b"RETR missing"), ["350 ", "550 "])

    def test_offset_at_the_end_is_accepted(self) -> None:
        self.assertEqual(self.command(b"PASV", b"REST 10", b"STOR data.bin"), ["227 ", "350 ", "150 "])

    def test_offset_is_used_once(self) -> None:
        self.assertEqual(self.command(b"PASV", b"REST 11", b"STOR data.bin"), ["227 ", "350 ", "554 "])
        self.assertEqual(self.command(b"STOR data.bin"), ["150 "])
