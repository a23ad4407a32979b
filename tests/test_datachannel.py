"""
Tests for L{exftp._datachannel.DataConnection}: when it is ready, and what
becomes of a connection that ends before it is.
"""

from __future__ import annotations

import gc
from typing import Any

from twisted.internet import error as internet_error
from twisted.internet.defer import Deferred
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from exftp import DataConnectionFailed
from exftp._datachannel import DataConnection


class _TLSTransport(StringTransport):
    """A transport that records C{startTLS} instead of handshaking."""

    tls: Any = None

    def startTLS(self, contextFactory: Any, normal: bool = True) -> None:
        self.tls = contextFactory


def _tls_connection() -> DataConnection:
    """A PROT P data connection whose TCP is up and whose handshake has not happened."""
    connection = DataConnection(tls=object())
    connection.makeConnection(_TLSTransport())
    return connection


def _lose(connection: DataConnection) -> None:
    connection.connectionLost(Failure(internet_error.ConnectionDone()))


class ReadyTests(SynchronousTestCase):
    def test_clear_text_is_ready_at_once(self) -> None:
        connection = DataConnection()
        connection.makeConnection(StringTransport())
        self.assertIsNone(self.successResultOf(connection.ready))

    def test_ready_after_the_handshake_for_every_waiter(self) -> None:
        connection = _tls_connection()
        first, second = connection.ready, connection.ready
        self.assertNoResult(first)
        connection.handshakeCompleted()
        self.assertIsNone(self.successResultOf(first))
        self.assertIsNone(self.successResultOf(second))
        self.assertIsNone(self.successResultOf(connection.ready))

    def test_closed_before_the_handshake_fails_the_waiters(self) -> None:
        connection = _tls_connection()
        waiting = connection.ready
        _lose(connection)
        self.failureResultOf(waiting, DataConnectionFailed)

    def test_a_cancelled_waiter_is_skipped(self) -> None:
        connection = _tls_connection()
        cancelled, waiting = connection.ready, connection.ready
        cancelled.cancel()
        self.failureResultOf(cancelled)
        connection.handshakeCompleted()
        self.assertIsNone(self.successResultOf(waiting))

    def test_closed_before_ready_with_nobody_waiting_leaves_no_unhandled_error(self) -> None:
        """
        ftplib opens the data connection before RETR; when RETR is refused
        (550) it closes it before the TLS handshake. Nothing waits for that
        connection: its failure must not end up in an unhandled Deferred.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        connection = _tls_connection()
        _lose(connection)
        closed: Deferred[bool] = connection.closed
        del connection
        gc.collect()
        self.assertTrue(self.successResultOf(closed))
        self.assertEqual([event for event in events if "log_failure" in event], [])

    def test_a_late_waiter_learns_of_the_failure(self) -> None:
        connection = _tls_connection()
        _lose(connection)
        self.failureResultOf(connection.ready, DataConnectionFailed)
