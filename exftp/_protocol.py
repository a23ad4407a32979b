"""
The FTP control connection: decode, parse, check, dispatch, reply.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import secrets
import socket
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from twisted.internet import error as internet_error
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IConsumer, IDelayedCall, IPushProducer
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from . import _listing
from ._commands import Command, format_host_port, parse_command, parse_eprt, parse_host_port, parse_list_argument
from ._coroutines import shielded, start
from ._datachannel import (
    ActiveChannel,
    AsciiReceivingFile,
    AsciiSendingConsumer,
    CountingConsumer,
    DataChannel,
    DataConnection,
    PassiveChannel,
)
from ._errors import (
    BadSequence,
    CommandSyntaxError,
    DataConnectionFailed,
    FileNotFound,
    FTPError,
    IsADirectory,
    LoginFailed,
    NotADirectory,
    NotImplementedCommand,
    ParameterNotSupported,
    PermissionDenied,
    StorageUnavailable,
    TransferAborted,
)
from ._events import Action, FTPEvent
from ._interfaces import (
    FileInfo,
    IFileDescriptorSource,
    IPagedListing,
    IReadFile,
    IStorage,
    IStorageMetadata,
    IWriteFile,
    Session,
    WriteMode,
)
from ._limits import Pacer, SessionLimits, UploadGuard
from ._login import CLOSING, log_in, still_valid
from ._paths import VirtualPath
from ._proxy import CONNECTED, connected_address, unmapped
from ._replies import Reply, format_reply, format_reply_lines, format_reply_opening, quote_path
from ._session import (
    RULES,
    SessionState,
    canonical_verb,
    check,
    refuse_line,
    required_permission,
    revalidates,
)
from ._tls import SameContext, control_context
from ._transport import write_now
from .storage._readonly import refusal
from .storage._streaming import ChunksReader

if TYPE_CHECKING:
    from ._factory import FTPFactory

_CONNECTION_DONE = Failure(internet_error.ConnectionDone())
_log = Logger(namespace="exftp")

Handler = Callable[["FTPProtocol", str], Awaitable[None]]
#: The command registry: verb to handler.
_HANDLERS: dict[str, Handler] = {}
#: Commands handled at once even while another command is running.
_IMMEDIATE = frozenset({"ABOR", "NOOP", "QUIT", "STAT"})
#: The MLST facts a session starts with (shared: one frozenset is 700 bytes).
_ALL_MLST_FACTS = frozenset(_listing.MLSX_FACTS)
#: Lines that may wait while a command runs before reading is paused.
_MAX_QUEUED_LINES = 64
#: Received bytes kept unparsed while command lines are held, before the socket is no longer read.
_MAX_UNREAD = 65536
#: Command lines a session runs in one reactor turn before it lets the other sessions run.
_MAX_BURST = 100


def command(*verbs: str) -> Callable[[Handler], Handler]:
    """Register the decorated coroutine as the handler of C{verbs}."""

    def register(handler: Handler) -> Handler:
        for verb in verbs:
            _HANDLERS[verb] = handler
        return handler

    return register


class _Unexpected(StorageUnavailable):
    """A storage or authenticator raised something that is not an L{FTPError}: a bug, logged in full."""


class _Transfer:
    """The transfer that is running, so that ABOR and disconnects can stop it."""

    def __init__(self, channel: DataChannel, started: float) -> None:
        self.channel = channel
        self.started = started
        self.aborted = False
        self.stalled = False
        self.bytes = 0
        #: What paces this transfer to the user's rate, if anything.
        self.pacer: Pacer | None = None

    def count(self, size: int) -> None:
        """Note that C{size} more bytes moved."""
        self.bytes += size

    def abort(self, stalled: bool = False) -> None:
        """Stop the transfer: its command then replies with L{aborted_error}."""
        self.stalled = self.stalled or stalled
        self.aborted = True
        self.channel.close()

    def aborted_error(self) -> TransferAborted:
        """The error that reports this transfer's end."""
        if self.stalled:
            return TransferAborted("Transfer stalled: no data moved; transfer aborted.")
        return TransferAborted()


@implementer(IPushProducer)
class _OutputGate:
    """
    The control connection's replies as a producer on its own transport: the
    transport pauses it once more than its buffer size (64 KiB on TCP) waits
    unsent, and resumes it when all is sent. While paused, the session reads
    and runs no more commands, so a client that sends and never reads holds
    a bounded amount of the server's memory.
    """

    __slots__ = ("_protocol",)

    def __init__(self, protocol: FTPProtocol) -> None:
        self._protocol = protocol

    def pauseProducing(self) -> None:
        self._protocol.output_full(True)

    def resumeProducing(self) -> None:
        self._protocol.output_full(False)

    def stopProducing(self) -> None:
        pass


def _answered_at_once(line: bytes) -> bool:
    """Whether C{line} is answered while a command runs: ABOR, NOOP, or STAT without a path."""
    verb, _, argument = line.strip().partition(b" ")
    verb = verb.upper().lstrip(b"\xff\xf4\xf2")
    return verb.decode("ascii", "replace") in _IMMEDIATE and not (verb == b"STAT" and argument.strip())


def _urgent_inline(transport: object) -> None:
    """
    Keep TCP urgent data in the command stream (C{SO_OOBINLINE}). A client
    that sends ABOR as urgent data (Telnet IP and Synch; Python's
    C{ftplib.FTP.abort} sends the whole line with C{MSG_OOB}) marks its last
    byte urgent; without this the kernel takes that byte out of the stream,
    the line never ends and the session hangs. The Telnet bytes that come
    inline are dropped by the command parser.
    """
    get_handle = getattr(transport, "getHandle", None)
    handle = get_handle() if get_handle is not None else None
    if isinstance(handle, socket.socket):
        with contextlib.suppress(OSError):
            handle.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)


class FTPProtocol(LineReceiver):
    """
    One FTP control connection.

    Commands run one at a time; lines that arrive meanwhile wait in a short
    queue, except ABOR, NOOP and STAT without a path, which are answered at
    once. Reading stops while the queue is full or the client leaves its
    replies unread (see L{_OutputGate}).
    """

    delimiter = b"\n"
    factory: FTPFactory

    def __init__(self) -> None:
        self.state = SessionState()
        self.session: Session | None = None
        self.storage: IStorage | None = None
        self.cwd = VirtualPath.root()
        self.binary = False
        self.epsv_all = False
        self.login_failures = 0
        self.mlst_facts = _ALL_MLST_FACTS
        self.hash_name = "SHA-256"
        #: Whether the control connection is TLS (AUTH TLS or implicit FTPS).
        self.secure = False
        self.pbsz_done = False
        #: Whether data connections are TLS (PROT P).
        self.protect_data = False
        self.peer_host: str | None = None
        #: The logged-in user's limits (L{exftp._limits}), counted until the connection ends.
        self.limits: SessionLimits | None = None
        #: The size the client announced with ALLO for its next upload.
        self.allocation: int | None = None
        self._channel: DataChannel | None = None
        self._transfer: _Transfer | None = None
        self._busy = False
        # A list, not a deque: an empty deque takes 760 bytes, and at most
        # _MAX_QUEUED_LINES wait here.
        self._queue: list[bytes] = []
        self._running: Deferred[None] | None = None
        self._after_command: list[Deferred[None]] = []
        self._disconnected = False
        self._gate: _OutputGate | None = None
        #: Whether the transport holds more unsent output than it wants.
        self._output_full = False
        #: Fires when the unsent output is written (see L{drained}).
        self._drained: Deferred[None] | None = None
        #: Lines received in this reactor turn, and the call that ends a pause after too many.
        self._burst = 0
        self._yielding: IDelayedCall | None = None
        self._discarding = False
        self._closing = False
        self._control_closing = False
        #: QUIT came while a command ran: close once it is done.
        self._quit_pending = False
        #: When the last command line arrived or the last transfer ended (idle timeout).
        self._last_activity = 0.0
        #: When the connection was made (login deadline).
        self._connected_at = 0.0
        #: Fires when the control connection is gone and its clean-up is done.
        self.closed: Deferred[None] = Deferred()

    # Connection life cycle

    def connectionMade(self) -> None:
        factory = self.factory
        self.MAX_LENGTH = factory.max_line_length
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        self.peer_host = unmapped(getattr(peer, "host", None))
        #: The address the client connected to (IPv4 for IPv4 clients of a dual-stack listener).
        self.local_host = unmapped(getattr(self.transport.getHost(), "host", None)) or ""  # type: ignore[union-attr]
        refusal = factory.admit(self)
        if refusal is not None:
            _log.info("Refused connection from {peer}: {why}", peer=self.peer_host, why=refusal)
            self.reply(Reply.SERVICE_NOT_AVAILABLE, refusal)
            self._disconnected = True
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self._gate = _OutputGate(self)
        self.transport.registerProducer(self._gate, True)  # type: ignore[union-attr]
        if control_context(self.transport) is not None:
            # Implicit FTPS: the control connection speaks TLS from the start;
            # data stays clear until PROT P (RFC 4217's default), as after AUTH TLS.
            self.secure = self.pbsz_done = True
        _urgent_inline(self.transport)
        _log.info("Connection from {peer}", peer=self.peer_host)
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            no_delay(True)  # replies are small and must not wait for Nagle
        self._connected_at = self._last_activity = factory.reactor.seconds()
        self.reply(Reply.SERVICE_READY, factory.banner)

    def check_deadlines(self, now: float) -> None:
        """
        Close the session (421) if it has not logged in within the login
        timeout, or has sent nothing for the idle timeout outside a transfer;
        the factory calls this every L{SWEEP_INTERVAL<exftp._factory.SWEEP_INTERVAL>} seconds.
        """
        if self._disconnected or self._control_closing:
            return
        factory = self.factory
        if factory.login_timeout and not self.state.logged_in and now - self._connected_at >= factory.login_timeout:
            self.reply(Reply.SERVICE_NOT_AVAILABLE, "Login timeout: closing control connection.")
            self._close_control()
        elif factory.idle_timeout and self._transfer is None and now - self._last_activity >= factory.idle_timeout:
            self.timeoutConnection()

    def connectionLost(self, reason: Failure = _CONNECTION_DONE) -> None:
        self._disconnected = True
        if self.session is not None:
            self.emit(Action.LOGOUT, True, Reply.CLOSING_CONTROL_CONNECTION)
        self.factory.release(self)
        if self.limits is not None:
            self.limits.release()
        self._queue.clear()
        self._drained = None  # the running command that waits for it is cancelled below
        if self._yielding is not None and self._yielding.active():
            self._yielding.cancel()
        self._drop_data()
        running = self._running
        if running is not None and not running.called:
            running.cancel()
        if running is not None and not running.called:
            # Cleaning up (aborting an upload) still runs; closed waits for it.
            running.addBoth(lambda _: self.closed.callback(None))
        else:
            self.closed.callback(None)

    def timeoutConnection(self) -> None:
        self.reply(Reply.SERVICE_NOT_AVAILABLE, "Timeout: closing control connection.")
        self._close_control()

    def shutdown(self, graceful: bool = False) -> None:
        """
        Tell the client the server is going away and close (421).

        @param graceful: let a running transfer finish first (its 226 is
            sent, then the 421); otherwise it is aborted (426).
        """
        if graceful and self._transfer is not None:
            self._closing = True
            return
        self._closing = False
        self.reply(Reply.SERVICE_NOT_AVAILABLE, "Server shutting down; closing control connection.")
        self._close_control()

    def quit(self) -> None:
        """
        Close the control connection, at once when no command runs, else as
        soon as the running one (a transfer) is done: a client that waits for
        QUIT's 221 before closing its data connection is answered at once, and
        the transfer still ends as usual (an upload is committed or discarded
        whole), as pyftpdlib does.
        """
        if self._running is None:
            self._close_control()
            return
        self._quit_pending = True
        self._queue.clear()

    def _close_control(self) -> None:
        self._control_closing = True
        self._drop_data()
        if self.transport is not None:
            gate, self._gate = self._gate, None
            if gate is not None:
                # A registered (paused) producer keeps the transport from closing.
                self.transport.unregisterProducer()  # type: ignore[attr-defined]
            if self._output_full:
                # A client that leaves its replies unread would hold the connection open forever.
                self.transport.abortConnection()  # type: ignore[attr-defined]
            else:
                self.transport.loseConnection()

    def reply(self, code: int, text: str | list[str]) -> None:
        """Send a reply (single or multi-line)."""
        if self._write(format_reply(code, text)):
            for observer in self.factory.reply_observers:
                observer(int(code))

    def _write(self, data: bytes) -> bool:
        """Send C{data} unless the control connection is closing; whether it was sent."""
        if self._disconnected or self._control_closing or self.transport is None:
            return False
        write_now(self.transport, data)
        return True

    async def write_paced(self, chunks: AsyncIterator[bytes]) -> None:
        """
        Send C{chunks} (parts of one reply), each once the client has read
        enough of what came before: a long reply is never held whole.
        """
        async for chunk in chunks:
            await self.drained()
            self._write(chunk)

    def drained(self) -> Deferred[None]:
        """Fires once the unsent output is below the transport's buffer size (at once if it is)."""
        if not self._output_full:
            return succeed(None)
        if self._drained is None:
            self._drained = Deferred()
        return self._drained

    def output_full(self, full: bool) -> None:
        """
        The transport's buffer went over (C{full}) or back under its size:
        stop or restart reading and running commands.
        """
        self._output_full = full
        if self._disconnected:
            return
        if not full:
            drained, self._drained = self._drained, None
            if drained is not None:
                drained.callback(None)
            self._run_queued()
        self._update_reading()

    def _update_reading(self) -> None:
        """
        Hold command lines while the client leaves replies unread or the queue
        is full (once held for the queue, until it is empty).
        """
        hold = (
            self._output_full
            or self._yielding is not None
            or len(self._queue) >= _MAX_QUEUED_LINES
            or (self.paused and bool(self._queue))
        )
        if self._disconnected or hold == self.paused:
            return
        if hold:
            self.paused = True  # LineReceiver delivers no more lines
            self._limit_unread()
        else:
            self.resumeProducing()  # reading again, and the held lines delivered

    def _limit_unread(self) -> None:
        """
        While lines are held, stop reading the socket once L{_MAX_UNREAD} bytes
        wait: pipelined commands then wait in the socket, not in memory. Not
        sooner, so that a TLS handshake (which must be read for the replies
        held before it to go out) is never stalled.
        """
        if self.paused and len(self._buffer) > _MAX_UNREAD and self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> Any:
        if not self._busyReceiving:  # a new delivery (one read), not one made while handling a line
            self._burst = 0
        why = super().dataReceived(data)
        self._limit_unread()
        return why

    # Line handling

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        Answer 500 once for an over-long line and drop it, up to its end,
        without buffering it; the lines after it are served as usual.
        """
        if not self._discarding:
            self.reply(Reply.SYNTAX_ERROR, "Command line too long.")
        _overlong, delimiter, rest = line.partition(self.delimiter)
        self._discarding = not delimiter
        if rest:
            # LineReceiver stops after this call; serve the lines that follow soon.
            self._buffer = rest
            self.factory.reactor.callLater(0, self.dataReceived, b"")

    def _count_line(self) -> None:
        """After L{_MAX_BURST} lines in one turn, hold the rest until the next turn: the others run too."""
        self._burst += 1
        if self._burst >= _MAX_BURST and self._yielding is None:
            self._yielding = self.factory.reactor.callLater(0, self._end_burst)
            self._update_reading()

    def _end_burst(self) -> None:
        self._yielding = None
        self._burst = 0
        self._update_reading()

    def lineReceived(self, line: bytes) -> None:
        self._last_activity = self.factory.reactor.seconds()
        self._count_line()
        if self._discarding:
            self._discarding = False
            return
        if self._quit_pending:
            return  # after QUIT nothing more is run
        if self._busy:
            if _answered_at_once(line):
                self._handle(line)
                return
            self._queue.append(line)
            self._update_reading()
            return
        self._handle(line)

    def _handle(self, line: bytes) -> None:
        try:
            cmd = parse_command(line)
        except FTPError as error:
            refuse_line(self.state)
            self.reply(error.reply, error.message)
            return
        verb = canonical_verb(cmd.verb)
        immediate = self._busy
        try:
            check(self.state, verb, cmd.argument)
        except FTPError as error:
            self.reply(error.reply, error.message)
            return
        handler = _HANDLERS.get(verb)
        if handler is None:
            self.reply(Reply.NOT_IMPLEMENTED, f"Command {verb} not implemented.")
            return
        if immediate:
            self._run_immediate(handler, cmd)
            return
        self._busy = True
        running = self._start(handler, cmd)
        if running is None:
            self._next(None)
            return
        self._running = running
        running.addBoth(self._next)

    def _run_immediate(self, handler: Handler, cmd: Command) -> None:
        self._start(handler, cmd)

    def _start(self, handler: Handler, cmd: Command) -> Deferred[None] | None:
        """
        Run a command; C{None} once it is done (most commands finish at once,
        and no Deferred is made for those), else a Deferred for the rest of it.
        An unexpected error is answered 451 either way.
        """
        try:
            running = start(self._run(handler, cmd))
        except Exception:
            self._unexpected(Failure(), cmd)
            return None
        if running is not None:
            running.addErrback(self._unexpected, cmd)
        return running

    async def _still_valid(self) -> bool:
        """
        Ask the authenticator whether the session is still valid (see
        L{exftp._login.still_valid}); when it is not, reply 421 and close.
        """
        session = self.session
        assert session is not None
        valid = await still_valid(self.factory.authenticator, session, self.peer_host)
        if valid:
            return True
        if valid is None:
            text = "Authentication service unavailable; closing control connection."
        else:
            text = "Session is no longer valid; closing control connection."
        self.reply(Reply.SERVICE_NOT_AVAILABLE, text)
        self._close_control()
        return False

    async def _allowed(self, cmd: Command) -> bool:
        """
        Re-validate the session first when the command may reveal or change
        data, even when it is answered while another command runs
        (C{False}: the session ended); then check the command's permission.

        @raise PermissionDenied: the session lacks the permission.
        """
        verb = canonical_verb(cmd.verb)
        if revalidates(verb, cmd.argument) and not await self._still_valid():
            return False
        permission = required_permission(verb, cmd.argument)
        if permission is not None and self.session is not None:
            denied = refusal(self.session, permission.letter, permission.what)
            if denied is not None:
                raise denied
        return True

    async def _run(self, handler: Handler, cmd: Command) -> None:
        try:
            if not await self._allowed(cmd):
                return
            await handler(self, cmd.argument)
        except FTPError as error:
            if isinstance(error, _Unexpected):
                _log.failure("{verb} failed", Failure(error.__cause__), verb=cmd.verb)
            elif not error.client_fault and not isinstance(error, TransferAborted | DataConnectionFailed):
                # A known server-side condition (storage down, disk full): one line, no traceback.
                cause = error.__cause__
                why = f"{error.message} ({type(cause).__name__}: {cause})" if cause is not None else error.message
                _log.warn("{verb} failed: {why}", verb=cmd.verb, why=why)
            self.reply(error.reply, error.message)

    def _unexpected(self, failure: Failure, cmd: Command) -> None:
        if failure.check(CancelledError):
            return None
        _log.failure("Unexpected error handling {verb}", failure, verb=cmd.verb)
        self.reply(Reply.LOCAL_ERROR, "Requested action aborted: local error in processing.")
        return None

    def _next(self, _: object) -> None:
        self._busy = False
        self._running = None
        waiters, self._after_command = self._after_command, []
        for waiter in waiters:
            waiter.callback(None)
        if self._quit_pending:
            self._close_control()
            return
        if self._closing and not self._disconnected:
            self.shutdown()
            return
        self._run_queued()
        self._update_reading()

    def _run_queued(self) -> None:
        """Run the waiting lines, in order, while no command runs and the client reads its replies."""
        while self._queue and not self._busy and not self._disconnected and not self._output_full:
            self._handle(self._queue.pop(0))

    # Helpers for handlers

    def resolve(self, argument: str) -> VirtualPath:
        """The virtual path named by a client argument, relative to the cwd."""
        return self.cwd.resolve(argument)

    @property
    def fs(self) -> IStorage:
        """The logged-in user's storage."""
        assert self.storage is not None
        return self.storage

    async def call(self, method: Callable[..., Deferred[Any]], *args: Any) -> Any:
        """Call a storage or authenticator method, turning unexpected errors into 451."""
        try:
            return await maybeDeferred(method, *args)
        except (FTPError, CancelledError):
            raise
        except Exception as error:
            raise _Unexpected() from error

    def _close_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()

    def _drop_data(self) -> None:
        """Abort the running transfer, if any, and release the prepared data channel."""
        if self._transfer is not None:
            self._transfer.abort()
        self._close_channel()

    def data_protection(self) -> dict[str, Any]:
        """The TLS arguments for a new data channel: protected when PROT P is in force."""
        if not self.protect_data:
            return {}
        require_reuse = self.factory.tls_policy.require_session_reuse
        settings = self.factory.tls
        if settings is not None and not require_reuse:
            return {"tls": settings.data_options}
        # Resuming needs the control connection's own context (implicit FTPS
        # without --tls-cert also lands here).
        context = control_context(self.transport)
        if context is None:
            return {}
        return {"tls": SameContext(context), "require_reuse": require_reuse}

    def _take_channel(self) -> DataChannel:
        if self.factory.tls_policy.require_protected_data and not self.protect_data:
            raise FTPError("Data connections must be protected: use PBSZ 0 and PROT P.",
                           Reply.PROTECTION_LEVEL_REQUIRED)
        channel, self._channel = self._channel, None
        if channel is None:
            raise DataConnectionFailed("Use PORT, PASV, EPRT or EPSV first.")
        if channel.failure is not None:
            raise channel.failure
        return channel

    def _is_ipv6(self) -> bool:
        return ":" in self.local_host

    # Transfers

    def emit(self, action: Action, ok: bool, reply: int, **details: Any) -> None:
        """Tell the factory's event observers what this session did."""
        if not self.factory.observers:
            return  # nobody listens: no event to build (about 5% of a login's work)
        self.factory.emit(
            FTPEvent(
                action=action,
                ok=ok,
                reply=int(reply),
                username=self.session.username if self.session else self.state.username,
                peer=self.peer_host,
                time=self.factory.reactor.seconds(),
                protocol="ftps" if self.secure else "ftp",
                **details,
            )
        )

    @asynccontextmanager
    async def acting(
        self, action: Action, reply: int, path: VirtualPath, destination: VirtualPath | None = None
    ) -> AsyncIterator[None]:
        """Emit an event for the change made in the block, whether it worked or not."""
        target = None if destination is None else str(destination)
        try:
            yield
        except FTPError as error:
            self.emit(action, False, error.reply, path=str(path), destination=target)
            raise
        self.emit(action, True, reply, path=str(path), destination=target)

    @asynccontextmanager
    async def _transferring(
        self, channel: DataChannel, opening: str, action: Action | None, path: str
    ) -> AsyncIterator[_Transfer]:
        """
        Run one transfer on C{channel}: send the 150 reply, suspend the idle
        timeout, watch for a stall, and release the channel at the end.
        """
        transfer = self._transfer = _Transfer(channel, self.factory.reactor.seconds())
        watchdog = self._watch(transfer)
        try:
            self.reply(Reply.FILE_STATUS_OK, opening)
            yield transfer
        except FTPError as error:
            self._transfer_event(action, path, transfer, error.reply)
            raise
        except CancelledError:
            self._transfer_event(action, path, transfer, Reply.TRANSFER_ABORTED)
            raise
        finally:
            if watchdog is not None and watchdog.running:
                watchdog.stop()
            channel.close()
            self._transfer = None
            self._last_activity = self.factory.reactor.seconds()  # idle from the end of the transfer

    def _watch(self, transfer: _Transfer) -> LoopingCall | None:
        """
        Abort C{transfer} when no byte moves for C{stalled_timeout} seconds,
        not counting the time it is held back for the user's rate.
        """
        timeout = self.factory.stalled_timeout
        if not timeout:
            return None
        seen, held = 0, False

        def check() -> None:
            nonlocal seen, held
            was_held, held = held, transfer.pacer is not None and transfer.pacer.pacing
            if transfer.bytes == seen and not held and not was_held:
                _log.info("Transfer for {peer} stalled; aborting it", peer=self.peer_host)
                transfer.abort(stalled=True)
            seen = transfer.bytes

        watchdog = LoopingCall(check)
        watchdog.clock = self.factory.reactor
        watchdog.start(timeout, now=False)
        return watchdog

    async def _connect(self, channel: DataChannel) -> DataConnection:
        try:
            connection = await channel.connection()
            await connection.ready
        except FTPError:
            raise
        except Exception:
            raise DataConnectionFailed() from None
        return connection

    def _transfer_event(self, action: Action | None, path: str, transfer: _Transfer, reply: int) -> None:
        if action is None:
            return  # a listing: not a transfer for xferlog, hooks or the transfer metrics
        seconds = self.factory.reactor.seconds() - transfer.started
        self.emit(action, reply < 400, reply, path=path, bytes=transfer.bytes, seconds=seconds, binary=self.binary)

    def _transferred(self, action: Action | None, description: str, transfer: _Transfer) -> None:
        _log.info(
            "{user} {verb} {path}: {bytes} bytes in {seconds:.3f}s",
            user=self.session.username if self.session else None,
            verb={Action.UPLOAD: "uploaded", Action.DOWNLOAD: "downloaded"}.get(action, "was sent"),  # type: ignore[arg-type]
            path=description,
            bytes=transfer.bytes,
            seconds=self.factory.reactor.seconds() - transfer.started,
        )
        self._transfer_event(action, description, transfer, Reply.CLOSING_DATA_CONNECTION)
        self.reply(Reply.CLOSING_DATA_CONNECTION, "Transfer complete.")

    async def transfer_out(
        self, source: IReadFile, description: str, action: Action | None = Action.DOWNLOAD
    ) -> None:
        """
        Send C{source} over the data connection: 150, the bytes, then 226 or
        426; reported as C{action} (C{None}: a listing, which is no transfer).
        """
        try:
            channel = self._take_channel()
        except FTPError:
            await source.close()
            raise
        size = f" ({source.size} bytes)" if source.size is not None else ""
        mode = "BINARY" if self.binary else "ASCII"
        try:
            opening = f"Opening {mode} mode data connection for {description}{size}."
            async with self._transferring(channel, opening, action, description) as transfer:
                connection = await self._connect(channel)
                connection.sending()
                paced = self.limits is not None and self.limits.rate(upload=False) is not None
                sendable = self.binary and IFileDescriptorSource.providedBy(source) and connection.can_send_file()
                if sendable and not paced:  # sendfile bypasses the producer that pacing pauses
                    file_source: Any = source
                    send = connection.send_file(file_source.fileno(), file_source.offset, transfer.count)
                else:
                    consumer: IConsumer = CountingConsumer(connection.tcp, transfer.count)
                    transfer.pacer = self.limits.pacer(consumer, upload=False) if self.limits is not None else None
                    consumer = transfer.pacer or consumer
                    if not self.binary:
                        consumer = AsciiSendingConsumer(consumer)
                    send = source.send(consumer)
                connection.closed.addCallback(_cancel_unless_done, send)
                try:
                    await send
                except (CancelledError, TransferAborted):
                    raise transfer.aborted_error() from None
                except FTPError as error:
                    if transfer.aborted:
                        raise transfer.aborted_error() from None
                    if error.client_fault:  # e.g. a listing's directory gone after the 150
                        # After a 150, RFC 959 allows 451 for what the server could not finish.
                        raise FTPError(error.message, Reply.LOCAL_ERROR) from error
                    raise  # the storage failed while the client was fine: its own 4xx
                except Exception as error:
                    if transfer.aborted:
                        raise transfer.aborted_error() from None
                    raise _Unexpected() from error
                clean = await connection.close()
                if transfer.aborted or not clean:
                    raise transfer.aborted_error()
        finally:
            await source.close()
        self._transferred(action, description, transfer)

    async def transfer_in(self, target: IWriteFile, description: str, opening: str | None = None) -> None:
        """Receive into C{target}: 150, the bytes, then 226 once stored, or 426."""
        try:
            channel = self._take_channel()
        except FTPError:
            await target.abort()
            raise
        upload: IWriteFile = target if self.binary else AsciiReceivingFile(target)
        mode = "BINARY" if self.binary else "ASCII"
        committed = False
        try:
            opening = opening or f"Opening {mode} mode data connection for {description}."
            async with self._transferring(channel, opening, Action.UPLOAD, description) as transfer:
                connection = await self._connect(channel)
                sink: IConsumer = CountingConsumer(upload, transfer.count)
                transfer.pacer = self.limits.pacer(sink, upload=True) if self.limits is not None else None
                closed = connection.receive(transfer.pacer or sink)
                if transfer.pacer is not None:
                    connection.tcp.bufferSize = transfer.pacer.read_size  # an even pace, not 256 KiB bursts
                clean = await closed
                if isinstance(target, UploadGuard) and target.error is not None:
                    _log.info("Upload of {path} by {user} refused: {why}", path=description,
                              user=self.session.username if self.session else None, why=target.error.message)
                    raise target.error  # 552: past the largest file size or the quota; aborted below
                # A client that dies closes both connections at once: let the
                # control connection's loss be noticed before committing, so
                # a killed client's partial upload is not taken as complete.
                await deferLater(self.factory.reactor, 0)
                if transfer.aborted or not clean or self._disconnected:
                    raise transfer.aborted_error()
                await self.call(upload.finish)
                committed = True
        finally:
            if not committed:
                # The teardown that cancels this transfer must not cancel its clean-up too.
                aborting = shielded(maybeDeferred(upload.abort), f"Aborting upload of {description}")
                try:
                    await aborting
                except CancelledError:
                    pass  # the session is gone; the abort runs on, and a failure is logged
                except Exception:
                    _log.failure("Aborting upload of {path} failed", path=description)
        self._transferred(Action.UPLOAD, description, transfer)

    async def abort_transfer(self) -> bool:
        """
        Stop the running transfer, if any, and wait until its command has
        replied (426), so that ABOR's own reply comes after it.

        @return: whether there was a transfer to stop.
        """
        transfer = self._transfer
        if transfer is None:
            return False
        transfer.abort()
        if self._running is not None:
            waiter: Deferred[None] = Deferred()
            self._after_command.append(waiter)
            await waiter
        return True


def _cancel_unless_done(clean: bool, work: Deferred[Any]) -> bool:
    if not work.called:
        work.cancel()
    return clean


# Access control


def _require_tls(proto: FTPProtocol) -> None:
    if proto.factory.tls_policy.require_tls and not proto.secure:
        proto.state.username = None
        raise LoginFailed("TLS required: use AUTH TLS first.")


@command("USER")
async def _user(proto: FTPProtocol, argument: str) -> None:
    _require_tls(proto)
    if proto.state.logged_in:
        raise LoginFailed("Can't change to another user.")
    proto.state.username = argument
    proto.reply(Reply.USER_NAME_OK, "Please specify the password.")


@command("PASS")
async def _pass(proto: FTPProtocol, argument: str) -> None:
    _require_tls(proto)
    username = proto.state.username
    assert username is not None
    authenticator = proto.factory.authenticator
    try:
        session, storage, proto.limits = await log_in(
            proto.factory, proto, username, lambda: authenticator.login(username, argument),
            on_failure=lambda: proto.emit(Action.LOGIN_FAILED, False, Reply.NOT_LOGGED_IN),
        )
    except CLOSING as refusal:
        proto.reply(refusal.reply, refusal.message)
        proto._close_control()
        return
    finally:
        proto.state.username = None
    proto.session, proto.storage = session, storage
    proto.state.logged_in = True
    proto.emit(Action.LOGIN, True, Reply.USER_LOGGED_IN)
    proto.cwd = VirtualPath.root()
    proto.reply(Reply.USER_LOGGED_IN, "Login successful.")


@command("ACCT")
async def _acct(proto: FTPProtocol, argument: str) -> None:
    proto.reply(Reply.COMMAND_SUPERFLUOUS, "ACCT not needed.")


@command("QUIT")
async def _quit(proto: FTPProtocol, argument: str) -> None:
    proto.reply(Reply.CLOSING_CONTROL_CONNECTION, "Goodbye.")
    proto.quit()


# Informational


@command("NOOP")
async def _noop(proto: FTPProtocol, argument: str) -> None:
    proto.reply(Reply.COMMAND_OK, "NOOP ok.")


@command("SYST")
async def _syst(proto: FTPProtocol, argument: str) -> None:
    proto.reply(Reply.SYSTEM_TYPE, "UNIX Type: L8")


#: Hash algorithms of the HASH command (draft-bryan-ftpext-hash), by their FTP names.
_HASHES: dict[str, Callable[[], Any]] = {
    "SHA-256": hashlib.sha256,
    "SHA-1": hashlib.sha1,
    "MD5": hashlib.md5,
}


def _features(proto: FTPProtocol) -> list[str]:
    mlst = "".join(f"{fact}{'*' if fact in proto.mlst_facts else ''};" for fact in _listing.MLSX_FACTS)
    hashes = ";".join(f"{name}{'*' if name == proto.hash_name else ''}" for name in _HASHES)
    tls = ["AUTH TLS", "PBSZ", "PROT"] if proto.factory.tls is not None or proto.secure else []
    return [
        *tls,
        "CLNT",
        "EPRT",
        "EPSV",
        f"HASH {hashes}",
        "HOST",
        "MDTM",
        *(["MFMT"] if proto.storage is None or IStorageMetadata.providedBy(proto.storage) else []),
        f"MLST {mlst}",
        "PASV",
        "REST STREAM",
        "SIZE",
        "TVFS",
        "UTF8",
    ]


@command("FEAT")
async def _feat(proto: FTPProtocol, argument: str) -> None:
    proto.reply(Reply.SYSTEM_STATUS, ["Features:", *(" " + f for f in _features(proto)), "End"])


@command("OPTS")
async def _opts(proto: FTPProtocol, argument: str) -> None:
    option, _, value = argument.strip().partition(" ")
    option, value = option.upper(), value.strip()
    if option == "UTF8" and value.upper() in ("ON", ""):
        proto.reply(Reply.COMMAND_OK, "Always in UTF8 mode.")
    elif option == "MLST":
        known = {fact.lower(): fact for fact in _listing.MLSX_FACTS}
        chosen = [known[f.lower()] for f in value.split(";") if f.lower() in known]
        proto.mlst_facts = frozenset(chosen)
        proto.reply(Reply.COMMAND_OK, "MLST OPTS " + "".join(f"{f};" for f in chosen))
    elif option == "HASH":
        if not value:
            proto.reply(Reply.COMMAND_OK, proto.hash_name)
        elif value.upper() in _HASHES:
            proto.hash_name = value.upper()
            proto.reply(Reply.COMMAND_OK, proto.hash_name)
        else:
            raise ParameterNotSupported(f"Unknown hash algorithm {value}.")
    else:
        raise ParameterNotSupported(f"Option {option} not understood.")


@command("AUTH")
async def _auth(proto: FTPProtocol, argument: str) -> None:
    mechanism = argument.strip().upper()
    if mechanism not in ("TLS", "SSL", "TLS-C", "TLS-P"):
        raise ParameterNotSupported(f"AUTH {mechanism} not supported; use AUTH TLS.")
    settings = proto.factory.tls
    if settings is None:
        raise NotImplementedCommand("AUTH TLS not available: no certificate configured.")
    if proto.secure:
        raise BadSequence("Already using TLS.")
    proto.reply(Reply.SECURITY_DATA_EXCHANGE_COMPLETE, f"AUTH {mechanism} successful.")
    # Anything the client sent after AUTH in clear text is dropped, so it
    # cannot be injected into the secured session.
    proto.clearLineBuffer()
    proto._queue.clear()
    proto.transport.startTLS(settings.options)  # type: ignore[union-attr]
    proto.output_full(False)  # the TLS layer, a new consumer, pauses the session again if it must
    proto.secure = True
    proto.pbsz_done = proto.protect_data = False
    _log.info("TLS started for {peer}", peer=proto.peer_host)


@command("PBSZ")
async def _pbsz(proto: FTPProtocol, argument: str) -> None:
    if not proto.secure:
        raise BadSequence("PBSZ needs AUTH TLS first.")
    if not argument.strip().isdigit():
        raise CommandSyntaxError("PBSZ needs a number.")
    proto.pbsz_done = True
    proto.reply(Reply.COMMAND_OK, "PBSZ=0")


@command("PROT")
async def _prot(proto: FTPProtocol, argument: str) -> None:
    level = argument.strip().upper()
    if level == "P" and not proto.pbsz_done:
        raise BadSequence("PROT P needs PBSZ first.")
    if level in ("C", "P") and not proto.secure:
        raise BadSequence("PROT needs AUTH TLS first.")
    if level == "P":
        proto.protect_data = True
        proto.reply(Reply.COMMAND_OK, "Protection set to Private.")
    elif level == "C":
        proto.protect_data = False
        proto.reply(Reply.COMMAND_OK, "Protection set to Clear.")
    elif level in ("S", "E"):
        raise FTPError(f"PROT {level} not supported.", Reply.PROTECTION_LEVEL_NOT_SUPPORTED)
    else:
        raise CommandSyntaxError("PROT needs C or P.")


@command("CCC")
async def _ccc(proto: FTPProtocol, argument: str) -> None:
    raise FTPError("CCC not allowed: the control connection stays encrypted.", Reply.REQUEST_DENIED_FOR_POLICY)


@command("CLNT")
async def _clnt(proto: FTPProtocol, argument: str) -> None:
    proto.reply(Reply.COMMAND_OK, "Noted.")


@command("HOST")
async def _host(proto: FTPProtocol, argument: str) -> None:
    if proto.state.logged_in or proto.state.username is not None:
        raise BadSequence("HOST must come before USER.")
    hosts = proto.factory.virtual_hosts
    name = argument.strip().lower()
    if hosts is not None and name not in hosts:
        raise ParameterNotSupported(f"Unknown host {argument.strip()}.")
    proto.reply(Reply.SERVICE_READY, f"Host {argument.strip()} accepted.")


@command("HELP")
async def _help(proto: FTPProtocol, argument: str) -> None:
    verb = argument.strip().upper()
    if verb:
        if canonical_verb(verb) in _HANDLERS:
            proto.reply(Reply.HELP_MESSAGE, f"{verb} is supported.")
            return
        raise CommandSyntaxError(f"Unknown command {verb}.")
    verbs = sorted(_HANDLERS)
    rows = [" " + " ".join(f"{v:<5}" for v in verbs[i : i + 10]) for i in range(0, len(verbs), 10)]
    proto.reply(Reply.HELP_MESSAGE, ["The following commands are recognized.", *rows, "Help OK."])


async def _stat_listing(proto: FTPProtocol, argument: str) -> None:
    """
    STAT <path>: the LIST lines as a 213 reply on the control connection, a
    page at a time as the client reads them, so that neither the listing
    nor the unsent reply is ever held whole.
    """
    now = proto.factory.reactor.seconds()

    def render(page: Sequence[FileInfo]) -> bytes:
        return format_reply_lines(_listing.list_line(e, now) for e in page if _listing._safe(e.name))

    opening = format_reply_opening(Reply.FILE_STATUS, "Status follows:")
    chunks = await _target_chunks(proto, argument, render, opening)  # a 550 or 451 comes before the 213-
    try:
        await proto.write_paced(chunks)
    except FTPError as error:
        # The reply has begun: it must end as a 213, which says the listing is cut short.
        _log.warn("STAT {path} cut short: {why}", path=argument, why=error.message)
        proto.reply(Reply.FILE_STATUS, f"End of status (incomplete: {error.message})")
        return
    proto.reply(Reply.FILE_STATUS, "End of status.")


@command("STAT")
async def _stat(proto: FTPProtocol, argument: str) -> None:
    if argument.strip():
        await _stat_listing(proto, argument)
        return
    user = proto.session.username if proto.session else "?"
    lines = [
        "FTP server status:",
        f" Connected to {proto.peer_host}",
        f" Logged in as {user}",
        f" TYPE: {'BINARY' if proto.binary else 'ASCII'}",
        " Data transfer in progress" if proto._transfer is not None else " No data connection",
        "End of status",
    ]
    proto.reply(Reply.SYSTEM_STATUS, lines)


# Transfer parameters


@command("TYPE")
async def _type(proto: FTPProtocol, argument: str) -> None:
    words = argument.upper().split()
    if words in (["I"], ["L", "8"]):
        proto.binary = True
        proto.reply(Reply.COMMAND_OK, "Switching to Binary mode.")
    elif words and words[0] == "A" and words[1:] in ([], ["N"]):
        proto.binary = False
        proto.reply(Reply.COMMAND_OK, "Switching to ASCII mode.")
    elif words and words[0] in ("A", "E", "L"):
        raise ParameterNotSupported("Type not supported.")
    else:
        raise CommandSyntaxError("Unrecognised TYPE.")


def _single_letter(argument: str, supported: str, known: str, what: str) -> str:
    letter = argument.strip().upper()
    if letter == supported:
        return f"{what} set to {letter}."
    if letter in known:
        raise ParameterNotSupported(f"{what} {letter} not supported.")
    raise CommandSyntaxError(f"Unrecognised {what}.")


@command("MODE")
async def _mode(proto: FTPProtocol, argument: str) -> None:
    proto.reply(Reply.COMMAND_OK, _single_letter(argument, "S", "BCZ", "Mode"))


@command("STRU")
async def _stru(proto: FTPProtocol, argument: str) -> None:
    proto.reply(Reply.COMMAND_OK, _single_letter(argument, "F", "RP", "Structure"))


_ROOT = VirtualPath.root()


@command("ALLO")
async def _allo(proto: FTPProtocol, argument: str) -> None:
    """
    ALLO <size> [R <size>]: the size of the next upload, which is then
    refused at once (552) when it cannot fit the user's limits; storage
    needs no reservation otherwise (202).
    """
    words = argument.split()
    size = int(words[0]) if words and words[0].isascii() and words[0].isdigit() else None
    proto.allocation = size
    limits = proto.limits
    # Checked as a new file: the upload's own check then knows which file it replaces.
    if size is None or limits is None or not await limits.guard(proto.fs, _ROOT, WriteMode.TRUNCATE, 0, size):
        proto.reply(Reply.COMMAND_SUPERFLUOUS, "ALLO not needed.")
        return
    proto.reply(Reply.COMMAND_OK, f"ALLO {size} bytes fits.")


@command("REST")
async def _rest(proto: FTPProtocol, argument: str) -> None:
    text = argument.strip()
    if not text.isdigit():
        raise CommandSyntaxError("REST needs a non-negative number.")
    proto.state.restart_offset = int(text)
    proto.reply(Reply.FILE_ACTION_PENDING, f"Restarting at {text}. Send STOR or RETR.")


# Data connection set-up


async def _passive(proto: FTPProtocol) -> int:
    previous = proto._channel
    proto._close_channel()
    if isinstance(previous, PassiveChannel):
        await previous.released()
    factory = proto.factory
    channel = PassiveChannel(
        factory.reactor,
        proto.peer_host,
        factory.data_timeout,
        trusted_proxies=factory.trusted_proxies,
        **proto.data_protection(),
    )
    # Counted before the port opens and released when it closes, whichever way
    # (connection, timeout, ABOR, new PASV, disconnect): no await in between.
    release = factory.open_passive_listener(proto.peer_host)
    channel.on_stop = release
    try:
        port = channel.listen(proto.local_host, factory.passive_ports)
    except BaseException:
        release()
        raise
    proto._channel = channel
    return port


@command("PASV")
async def _pasv(proto: FTPProtocol, argument: str) -> None:
    if proto.epsv_all:
        raise BadSequence("PASV not allowed after EPSV ALL.")
    configured = proto.factory.passive_address
    address = connected_address(proto.transport) if configured == CONNECTED else configured or proto.local_host
    if ipaddress.ip_address(address).version != 4:
        raise ParameterNotSupported("PASV needs IPv4; use EPSV.")
    port = await _passive(proto)
    proto.reply(Reply.ENTERING_PASSIVE_MODE, f"Entering Passive Mode ({format_host_port(address, port)}).")


@command("EPSV")
async def _epsv(proto: FTPProtocol, argument: str) -> None:
    text = argument.strip().upper()
    if text == "ALL":
        proto.epsv_all = True
        proto.reply(Reply.COMMAND_OK, "EPSV ALL ok.")
        return
    family = "2" if proto._is_ipv6() else "1"
    if text and text != family:
        if text in ("1", "2"):
            proto.reply(Reply.NETWORK_PROTOCOL_NOT_SUPPORTED, f"Network protocol not supported, use ({family}).")
            return
        raise CommandSyntaxError("Unrecognised EPSV argument.")
    port = await _passive(proto)
    proto.reply(Reply.ENTERING_EXTENDED_PASSIVE_MODE, f"Entering Extended Passive Mode (|||{port}|).")


def _active(proto: FTPProtocol, host: str, port: int, ipv6: bool) -> None:
    if proto.epsv_all:
        raise BadSequence("PORT and EPRT are not allowed after EPSV ALL.")
    factory = proto.factory
    if not factory.allow_foreign_addresses:
        try:
            same = ipaddress.ip_address(host) == ipaddress.ip_address(proto.peer_host or "")
        except ValueError:
            same = False
        if not same:
            raise CommandSyntaxError("Rejected: data connections go only to the client's own address.")
        if port < 1024:
            raise CommandSyntaxError("Rejected: data connections to privileged ports are not allowed.")
    proto._close_channel()
    proto._channel = ActiveChannel(
        factory.reactor, host, port, ipv6, proto.local_host, factory.data_timeout, **proto.data_protection()
    )


@command("PORT")
async def _port(proto: FTPProtocol, argument: str) -> None:
    if proto._is_ipv6():
        raise ParameterNotSupported("PORT needs IPv4; use EPRT.")
    host, port = parse_host_port(argument)
    _active(proto, host, port, ipv6=False)
    proto.reply(Reply.COMMAND_OK, "PORT command successful. Consider using PASV.")


@command("EPRT")
async def _eprt(proto: FTPProtocol, argument: str) -> None:
    family, host, port = parse_eprt(argument)
    expected = 2 if proto._is_ipv6() else 1
    if family != expected:
        proto.reply(Reply.NETWORK_PROTOCOL_NOT_SUPPORTED, f"Network protocol not supported, use ({expected}).")
        return
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise CommandSyntaxError("Invalid EPRT address.") from None
    _active(proto, host, port, ipv6=family == 2)
    proto.reply(Reply.COMMAND_OK, "EPRT command successful.")


# Navigation and directories


@command("PWD")
async def _pwd(proto: FTPProtocol, argument: str) -> None:
    proto.reply(Reply.PATHNAME_CREATED, f"{quote_path(str(proto.cwd))} is the current directory.")


async def _change_directory(proto: FTPProtocol, path: VirtualPath) -> None:
    allows = getattr(proto.fs, "allows", None)
    if allows is not None and not allows("e"):
        raise PermissionDenied("Permission denied: you may not change directories.")
    info: FileInfo = await proto.call(proto.fs.stat, path)
    if not info.is_directory:
        raise NotADirectory("Failed to change directory: not a directory.")
    proto.cwd = path
    proto.reply(Reply.FILE_ACTION_OK, "Directory successfully changed.")


@command("CWD")
async def _cwd(proto: FTPProtocol, argument: str) -> None:
    await _change_directory(proto, proto.resolve(argument))


@command("CDUP")
async def _cdup(proto: FTPProtocol, argument: str) -> None:
    await _change_directory(proto, proto.cwd.parent)


@command("MKD")
async def _mkd(proto: FTPProtocol, argument: str) -> None:
    path = proto.resolve(argument)
    async with proto.acting(Action.MKDIR, Reply.PATHNAME_CREATED, path):
        await proto.call(proto.fs.make_directory, path)
    proto.reply(Reply.PATHNAME_CREATED, f"{quote_path(str(path))} created.")


@command("RMD")
async def _rmd(proto: FTPProtocol, argument: str) -> None:
    path = proto.resolve(argument)
    async with proto.acting(Action.RMDIR, Reply.FILE_ACTION_OK, path):
        await proto.call(proto.fs.remove_directory, path)
    if proto.cwd.is_within(path) and not path.is_root:
        proto.cwd = path.parent
    proto.reply(Reply.FILE_ACTION_OK, "Remove directory operation successful.")


@command("DELE")
async def _dele(proto: FTPProtocol, argument: str) -> None:
    path = proto.resolve(argument)
    async with proto.acting(Action.DELETE, Reply.FILE_ACTION_OK, path):
        await proto.call(proto.fs.remove_file, path)
    if proto.limits is not None:
        proto.limits.changed()
    proto.reply(Reply.FILE_ACTION_OK, "Delete operation successful.")


@command("RNFR")
async def _rnfr(proto: FTPProtocol, argument: str) -> None:
    path = proto.resolve(argument)
    await proto.call(proto.fs.stat, path)
    proto.state.rename_from = path
    proto.reply(Reply.FILE_ACTION_PENDING, "Ready for RNTO.")


@command("RNTO")
async def _rnto(proto: FTPProtocol, argument: str) -> None:
    source, proto.state.rename_from = proto.state.rename_from, None
    assert source is not None
    destination = proto.resolve(argument)
    async with proto.acting(Action.RENAME, Reply.FILE_ACTION_OK, source, destination):
        await proto.call(proto.fs.rename, source, destination)
    proto.reply(Reply.FILE_ACTION_OK, "Rename successful.")


@command("SIZE")
async def _size(proto: FTPProtocol, argument: str) -> None:
    info: FileInfo = await proto.call(proto.fs.stat, proto.resolve(argument))
    if info.is_directory:
        raise IsADirectory("Could not get file size: not a regular file.")
    proto.reply(Reply.FILE_STATUS, str(info.size))


@command("MDTM")
async def _mdtm(proto: FTPProtocol, argument: str) -> None:
    info: FileInfo = await proto.call(proto.fs.stat, proto.resolve(argument))
    if info.is_directory:
        raise IsADirectory("Could not get modification time: not a regular file.")
    proto.reply(Reply.FILE_STATUS, _listing.format_mdtm(info.mtime))


# Listings and transfers


async def _listing_target(proto: FTPProtocol, argument: str) -> tuple[VirtualPath, FileInfo]:
    """The path a LIST/NLST names (flags such as C{-la} dropped) and what it is."""
    _flags, target = parse_list_argument(argument)
    path = proto.resolve(target) if target else proto.cwd
    info: FileInfo = await proto.call(proto.fs.stat, path)
    return path, info


async def _pages(proto: FTPProtocol, path: VirtualPath) -> AsyncIterator[Sequence[FileInfo]]:
    """A directory's entries a page at a time: paged where the storage can, else in one page."""
    storage = proto.fs
    if not IPagedListing.providedBy(storage):
        yield await proto.call(storage.list, path)
        return
    pages: AsyncIterator[Sequence[FileInfo]] = storage.list_pages(path)  # type: ignore[attr-defined]
    try:
        async for page in pages:
            yield page
    except (FTPError, CancelledError):
        raise
    except Exception as error:
        raise StorageUnavailable() from error


async def _rendered(
    first: bytes, pages: AsyncIterator[Sequence[FileInfo]], render: Callable[[Sequence[FileInfo]], bytes]
) -> AsyncIterator[bytes]:
    """C{first}, then every further page rendered."""
    yield first
    async for page in pages:
        yield render(page)


async def _listing_chunks(
    proto: FTPProtocol, head: bytes, path: VirtualPath, render: Callable[[Sequence[FileInfo]], bytes]
) -> AsyncIterator[bytes]:
    """
    The listing of C{path} as chunks to send. The first page is read here,
    before any 150, so that a refused or failing listing gets its 550 / 451
    without opening the data connection.
    """
    pages = _pages(proto, path)
    try:
        first = await pages.__anext__()
    except StopAsyncIteration:
        first = []
    return _rendered(head + render(first), pages, render)


async def _target_chunks(
    proto: FTPProtocol, argument: str, render: Callable[[Sequence[FileInfo]], bytes], head: bytes = b""
) -> AsyncIterator[bytes]:
    """What LIST, NLST or STAT sends for C{argument}: C{head}, then a directory's pages or the one file."""
    path, info = await _listing_target(proto, argument)
    if info.is_directory:
        return await _listing_chunks(proto, head, path, render)
    return _rendered(head + render([info]), _no_pages(), render)


async def _send_listing(
    proto: FTPProtocol, argument: str, render: Callable[[Sequence[FileInfo]], bytes], description: str
) -> None:
    chunks = await _target_chunks(proto, argument, render)
    await proto.transfer_out(ChunksReader(chunks), description, action=None)


async def _no_pages() -> AsyncIterator[Sequence[FileInfo]]:
    return
    yield


@command("LIST")
async def _list(proto: FTPProtocol, argument: str) -> None:
    now = proto.factory.reactor.seconds()
    await _send_listing(proto, argument, lambda page: _listing.format_list(page, now), "directory listing")


@command("NLST")
async def _nlst(proto: FTPProtocol, argument: str) -> None:
    await _send_listing(proto, argument, _listing.format_nlst, "file list")


def _writable(proto: FTPProtocol) -> bool | frozenset[str]:
    """What the session may do, for the MLSx C{perm} fact."""
    session = proto.session
    if session is None or session.read_only:
        return False
    return session.permissions if session.permissions is not None else True


@command("MLSD")
async def _mlsd(proto: FTPProtocol, argument: str) -> None:
    path = proto.resolve(argument.strip()) if argument.strip() else proto.cwd
    info: FileInfo = await proto.call(proto.fs.stat, path)
    if not info.is_directory:
        raise CommandSyntaxError("MLSD needs a directory; use MLST for a file.")
    parent = None if path.is_root else await proto.call(proto.fs.stat, path.parent)
    facts, writable = proto.mlst_facts, _writable(proto)
    head = _listing.format_mlsd(info, parent, [], facts, writable)
    chunks = await _listing_chunks(
        proto, head, path, lambda page: _listing.format_mlsx_entries(page, facts, writable)
    )
    await proto.transfer_out(ChunksReader(chunks), "MLSD listing", action=None)


@command("MLST")
async def _mlst(proto: FTPProtocol, argument: str) -> None:
    path = proto.resolve(argument.strip()) if argument.strip() else proto.cwd
    info: FileInfo = await proto.call(proto.fs.stat, path)
    line = _listing.mlsx_line(info, proto.mlst_facts, _writable(proto), name=str(path))
    proto.reply(Reply.FILE_ACTION_OK, [f"Listing {path}", " " + line, "End."])


def _metadata(proto: FTPProtocol, what: str) -> IStorageMetadata:
    storage = proto.fs
    if not IStorageMetadata.providedBy(storage):
        raise NotImplementedCommand(f"{what} is not supported by this storage.")
    return storage  # type: ignore[return-value]


@command("MFMT")
async def _mfmt(proto: FTPProtocol, argument: str) -> None:
    stamp, _, name = argument.strip().partition(" ")
    try:
        mtime = _listing.parse_mdtm(stamp)
    except ValueError:
        raise CommandSyntaxError("MFMT needs YYYYMMDDHHMMSS and a path.") from None
    if not name:
        raise CommandSyntaxError("MFMT needs YYYYMMDDHHMMSS and a path.")
    path = proto.resolve(name)
    await proto.call(_metadata(proto, "MFMT").set_mtime, path, mtime)
    proto.reply(Reply.FILE_STATUS, f"Modify={stamp}; {name}")


_SITE_HELP = ["SITE commands:", " CHMOD <mode> <path>", " HELP", " QUOTA", "End."]


@command("SITE")
async def _site(proto: FTPProtocol, argument: str) -> None:
    sub, _, rest = argument.strip().partition(" ")
    sub = sub.upper()
    if sub == "HELP":
        proto.reply(Reply.HELP_MESSAGE, _SITE_HELP)
    elif sub == "CHMOD":
        mode_text, _, name = rest.strip().partition(" ")
        try:
            mode = int(mode_text, 8)
        except ValueError:
            raise CommandSyntaxError("SITE CHMOD needs an octal mode and a path.") from None
        if not name or not 0 <= mode <= 0o7777:
            raise CommandSyntaxError("SITE CHMOD needs an octal mode and a path.")
        await proto.call(_metadata(proto, "SITE CHMOD").set_permissions, proto.resolve(name), mode)
        proto.reply(Reply.COMMAND_OK, "SITE CHMOD command ok.")
    elif sub == "QUOTA":
        assert proto.limits is not None and proto.session is not None
        letters = proto.session.permissions
        lines = await proto.limits.describe(proto.fs, usage_shown=letters is None or "l" in letters)
        proto.reply(Reply.COMMAND_OK, [*lines, "End."])
    else:
        raise CommandSyntaxError(f"Unknown SITE command {sub}.")


@implementer(IConsumer)
class _DigestConsumer:
    """Feeds everything written to it into a hash function."""

    def __init__(self, update: Callable[[bytes], None]) -> None:
        self._update = update

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self._update(data)


async def _digest(proto: FTPProtocol, argument: str, update: Callable[[bytes], None]) -> tuple[VirtualPath, int]:
    """Stream a file through C{update}; return its path and size."""
    path = proto.resolve(argument.strip().strip('"'))
    source: IReadFile = await proto.call(proto.fs.open_read, path, 0)
    try:
        size = await proto.call(source.send, _DigestConsumer(update))
    finally:
        await source.close()
    return path, int(size)


@command("HASH")
async def _hash(proto: FTPProtocol, argument: str) -> None:
    digest = _HASHES[proto.hash_name]()
    path, size = await _digest(proto, argument, digest.update)
    proto.reply(Reply.FILE_STATUS, f"{proto.hash_name} 0-{size} {digest.hexdigest()} {path.name}")


def _x_digest(factory: Callable[[], Any]) -> Handler:
    async def handler(proto: FTPProtocol, argument: str) -> None:
        digest = factory()
        await _digest(proto, argument, digest.update)
        proto.reply(Reply.FILE_ACTION_OK, digest.hexdigest())

    return handler


class _Crc32:
    """A CRC-32 with the hashlib interface, for XCRC."""

    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes) -> None:
        self._value = zlib.crc32(data, self._value)

    def hexdigest(self) -> str:
        return f"{self._value:08X}"


command("XCRC")(_x_digest(_Crc32))
command("XMD5")(_x_digest(hashlib.md5))
command("XSHA1")(_x_digest(hashlib.sha1))
command("XSHA256")(_x_digest(hashlib.sha256))


@command("STOU")
async def _stou(proto: FTPProtocol, argument: str) -> None:
    base = argument.strip() or "file"
    for _attempt in range(10):
        path = proto.resolve(f"{base}.{secrets.token_hex(4)}")
        try:
            await proto.call(proto.fs.stat, path)
        except FileNotFound:
            break
    else:
        raise StorageUnavailable("Could not find a unique name.")
    proto.state.restart_offset = 0
    await _upload(proto, path, WriteMode.TRUNCATE, 0, opening=f"FILE: {path.name}")


async def _check_restart(proto: FTPProtocol, path: VirtualPath, offset: int, upload: bool) -> None:
    """
    Refuse (554, RFC 3659 5.4) a restart offset beyond the end of C{path}, as
    pyftpdlib does: an upload there would leave a hole (a sparse file that a
    later copy writes out as real zeros). A file an upload would create has
    no bytes yet.
    """
    try:
        info: FileInfo = await proto.call(proto.fs.stat, path)
    except FileNotFound:
        if not upload:
            raise
        size = 0
    else:
        if info.is_directory:
            return  # opening it is refused with its own reply
        size = info.size
    if offset > size:
        raise FTPError(
            f"Requested action not taken: invalid REST parameter ({offset} is past the end of the file, {size}).",
            Reply.INVALID_REST_PARAMETER,
        )


@command("RETR")
async def _retr(proto: FTPProtocol, argument: str) -> None:
    path = proto.resolve(argument)
    offset, proto.state.restart_offset = proto.state.restart_offset, 0
    if offset:
        await _check_restart(proto, path, offset, upload=False)
    source: IReadFile = await proto.call(proto.fs.open_read, path, offset)
    await proto.transfer_out(source, str(path))


async def _store(proto: FTPProtocol, argument: str, mode: WriteMode) -> None:
    path = proto.resolve(argument)
    offset, proto.state.restart_offset = proto.state.restart_offset, 0
    if offset:
        await _check_restart(proto, path, offset, upload=True)
        if mode is WriteMode.TRUNCATE:
            mode = WriteMode.OFFSET
    await _upload(proto, path, mode, offset)


async def _upload(
    proto: FTPProtocol, path: VirtualPath, mode: WriteMode, offset: int, opening: str | None = None
) -> None:
    """Open C{path} for writing and receive it, within the user's largest file size and quota (552)."""
    allocation, proto.allocation = proto.allocation, None
    plan = None if proto.limits is None else await proto.limits.guard(proto.fs, path, mode, offset, allocation)
    target: IWriteFile = await proto.call(proto.fs.open_write, path, mode, offset)
    await proto.transfer_in(target if plan is None else plan.wrap(target), str(path), opening)


@command("STOR")
async def _stor(proto: FTPProtocol, argument: str) -> None:
    await _store(proto, argument, WriteMode.TRUNCATE)


@command("APPE")
async def _appe(proto: FTPProtocol, argument: str) -> None:
    await _store(proto, argument, WriteMode.APPEND)


@command("ABOR")
async def _abor(proto: FTPProtocol, argument: str) -> None:
    if await proto.abort_transfer():
        proto.reply(Reply.CLOSING_DATA_CONNECTION, "ABOR successful.")
        return
    proto._close_channel()
    proto.reply(Reply.DATA_CONNECTION_OPEN, "No transfer to abort.")


assert set(_HANDLERS) <= set(RULES), set(_HANDLERS) - set(RULES)
