"""
The machinery of the chaos test (L{test_chaos}): a model of what each
session's directory may hold, and sessions that act on it at random over raw
FTP control connections, noting every reply that breaks the model.

A session owns one directory and is its only writer, so after every reply it
knows which contents each of its names may have: a set, because a failure
can leave an operation's outcome open (an S3 request whose answer was lost
may still have been carried out). An upload that did not send its whole
payload must never show under its name, whatever happened; one that sent it
all may (its 226 may have been lost). A name whose outcome stays open while
the session cannot tell (the connection broke before the final reply) is
I{tainted}: no longer used in the round, and only checked once it settled.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from conftest import DEADLINE, Control, FTPServer, Reply, parse_227

#: A name's content, or C{None} for no such file.
Content = bytes | None
#: The names a session uses inside its directory.
NAMES = ("a.bin", "b.bin", "c.bin", "d.bin")
#: What every listing and reply must never show.
RESERVED = ".exftp-upload"
#: Replies that end an ABOR'ed transfer (426, 45x...) before the ABOR's own 225/226.
_ABOR_DONE = (225, 226)


class Lost(Exception):
    """The session's control connection broke, or the session ended it on purpose."""


def reset(sock: socket.socket | None) -> None:
    """Close C{sock} with an RST instead of a FIN (a vanished client)."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


@dataclass
class Model:
    """
    What one session's directory may hold.

    @ivar directory: the directory as the session's user sees it, e.g. C{/s3}.
    @ivar stored: where it is in the storage, relative to its root, e.g. C{alice/s3}.
    @ivar names: for each name ever used, every content it may have.
    @ivar tainted: names whose outcome the session could not learn this round.
    """

    directory: str
    stored: str
    names: dict[str, set[Content]] = field(default_factory=dict)
    tainted: set[str] = field(default_factory=set)

    def may(self, name: str) -> set[Content]:
        return self.names.setdefault(name, {None})

    def path(self, name: str) -> str:
        return f"{self.directory}/{name}"

    def settle(self, found: dict[str, bytes]) -> list[str]:
        """
        Check what the storage holds against the model; what is wrong. Then
        the model becomes exactly that (the open outcomes are decided).
        """
        problems = []
        for name in sorted(set(found) | set(self.names)):
            actual = found.get(name)
            allowed = self.may(name)
            if actual not in allowed:
                problems.append(
                    f"{self.stored}/{name}: holds {_describe(actual)}, "
                    f"but may only hold {', '.join(sorted(map(_describe, allowed)))}"
                )
            self.names[name] = {actual}
        self.tainted.clear()
        return problems


def _describe(content: Content) -> str:
    if content is None:
        return "nothing"
    return f"{len(content)} bytes ({hashlib.sha256(content).hexdigest()[:8]})"


def is_prefix(data: bytes, allowed: set[Content]) -> bool:
    """Whether C{data} is the beginning of one of the C{allowed} contents."""
    return any(content is not None and content.startswith(data) for content in allowed)


@dataclass
class Plan:
    """What the sessions of a round do: their weights and sizes, by storage."""

    #: Op name to weight.
    weights: dict[str, int]
    #: Returns an upload size for a random source.
    size: Callable[[random.Random], int]
    #: Paths that lead out of the root (through links); every transfer through them must be refused.
    escapes: tuple[str, ...] = ()
    #: The commands tried on them.
    escape_verbs: tuple[str, ...] = ("STOR", "RETR", "LIST", "APPE")


class Session(threading.Thread):
    """
    One client: logs in (again after every lost connection) and runs random
    operations on its directory until C{deadline}, then quits.
    """

    def __init__(
        self,
        server: FTPServer,
        user: str,
        password: str,
        model: Model,
        rng: random.Random,
        plan: Plan,
        deadline: float,
        problems: list[str],
    ) -> None:
        super().__init__(daemon=True, name=f"chaos {model.stored}")
        self.server = server
        self.user = user
        self.password = password
        self.model = model
        self.rng = rng
        self.plan = plan
        self.deadline = deadline
        self.problems = problems
        self.control: Control | None = None
        self.done: list[str] = []
        #: The last commands and replies, for the report of a problem.
        self.trail: deque[str] = deque(maxlen=12)

    # Bookkeeping

    def problem(self, what: str) -> None:
        trail = "".join(f"\n    {line}" for line in self.trail)
        self.problems.append(f"{self.model.stored} ({self.user}): {what}{trail}")

    def _cmd(self, line: str) -> Reply:
        self.trail.append(f"> {line}")
        self._ctl().send(line)
        return self._reply()

    def _reply(self) -> Reply:
        reply = self._ctl().reply()
        self.trail.append(f"< {reply.text}")
        return reply

    def run(self) -> None:
        try:
            while time.monotonic() < self.deadline:
                if self.control is None and not self._login():
                    time.sleep(0.1)
                    continue
                op = self.rng.choices(list(self.plan.weights), list(self.plan.weights.values()))[0]
                self.done.append(op)
                self.trail.append(f"({op})")
                try:
                    getattr(self, "op_" + op)()
                except (OSError, EOFError, Lost):
                    self._drop()
            if self.control is not None:
                with contextlib.suppress(OSError, EOFError):
                    self.control.cmd("QUIT")
        except Exception as error:
            self.problem(f"the session failed: {error!r}")
        finally:
            self._drop()

    def _login(self) -> bool:
        try:
            control = self.server.control(timeout=DEADLINE)
        except OSError as error:
            self.problem(f"cannot connect: {error}")
            return False
        try:
            user = control.cmd(f"USER {self.user}")
            answer = control.cmd(f"PASS {self.password}") if user.code == 331 else user
            if answer.code != 230:
                if answer.code != 421:  # the auth service is down: try again
                    self.problem(f"login answered {answer.text!r}")
                control.close()
                return False
            if control.cmd("TYPE I").code != 200:
                raise Lost
        except (OSError, EOFError, Lost):
            reset(control.sock)
            return False
        self.control = control
        return True

    def _drop(self) -> None:
        control, self.control = self.control, None
        if control is not None:
            self.trail.append("(control connection reset)")
            reset(control.sock)

    def _ctl(self) -> Control:
        if self.control is None:
            raise Lost
        return self.control

    def _data(self, command: str) -> tuple[socket.socket | None, Reply]:
        """PASV, connect, send C{command}: the data connection (if 150) and the reply."""
        reply = self._cmd("PASV")
        if reply.code != 227:
            return None, reply
        _host, port = parse_227(reply.text)
        data = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        reply = self._cmd(command)
        if reply.code not in (125, 150):
            data.close()
            return None, reply
        return data, reply

    def _abort(self, data: socket.socket) -> None:
        """ABOR the transfer on C{data} (urgent, as RFC 959 4.1.3 says), then drop the data connection."""
        control = self._ctl()
        control.sock.sendall(b"\xff\xf4\xff\xf2", socket.MSG_OOB)
        self.trail.append("> ABOR (urgent)")
        control.send("ABOR")
        # One final reply for the transfer command and one for ABOR, in either order: ABOR
        # waits for a running transfer's 426, but answers 225 at once when the command is past
        # its transfer (still committing or aborting the upload). The server closes the data
        # connection; the client's side goes after the replies, as a client's should.
        replies = [self._reply(), self._reply()]
        reset(data)
        if 226 not in [r.code for r in replies] and 225 not in [r.code for r in replies]:
            self.problem(f"ABOR: no 225/226 among {[r.text for r in replies]}")

    def _vanish(self, data: socket.socket) -> None:
        """The client is gone: both connections reset (the control one by L{run})."""
        reset(data)
        raise Lost

    def _usable(self, *, present: bool) -> str:
        """A name not tainted; with C{present}, one that may exist (when there is one)."""
        names = [n for n in NAMES if n not in self.model.tainted]
        if present:
            existing = [n for n in names if self.model.may(n) != {None}]
            names = existing or names
        return self.rng.choice(names)

    # Operations

    def op_stor(self) -> None:
        self._stor("complete")

    def op_stor_abort(self) -> None:
        self._stor("abort")

    def op_stor_vanish(self) -> None:
        self._stor("vanish")

    def _stor(self, mode: str) -> None:
        name = self._usable(present=False)
        payload = self.rng.randbytes(self.plan.size(self.rng))
        data, reply = self._data(f"STOR {self.model.path(name)}")
        if data is None:
            self._refused(reply, "STOR")
            return
        allowed = self.model.may(name)
        if mode != "complete":
            part = payload[: self.rng.randrange(len(payload))] if payload else b""
            with contextlib.suppress(OSError):
                data.sendall(part)
            self.trail.append(f"(sent {len(part)} of {len(payload)} bytes; {mode})")
            # Whatever happens now, the whole payload never reached the server.
            if mode == "abort":
                self._abort(data)
                return
            if self.rng.random() < 0.5:  # the data connection first, then (after its reply) the control
                reset(data)
                if self._reply().code == 226:
                    self.problem(f"STOR {name}: 226 for an upload whose data connection was reset")
            self._vanish(data)
        sent = True
        try:
            data.sendall(payload)
            data.shutdown(socket.SHUT_WR)
        except OSError:
            sent = False
        data.close()
        self.trail.append(f"(sent {len(payload)} bytes and the end)" if sent else "(sending failed)")
        try:
            reply = self._reply()
        except (OSError, EOFError):
            if sent:  # it may still be committed after this session is gone
                allowed.add(payload)
                self.model.tainted.add(name)
            raise
        if reply.code == 226:
            if not sent:
                self.problem(f"STOR {name}: 226 though the client could not send the whole payload")
            self.model.names[name] = {payload}
        elif sent:
            allowed.add(payload)  # the server may have failed only after storing it (S3: a lost answer)

    def op_retr(self) -> None:
        self._retr("complete")

    def op_retr_abort(self) -> None:
        self._retr("abort")

    def op_retr_vanish(self) -> None:
        self._retr("vanish")

    def _retr(self, mode: str) -> None:
        name = self._usable(present=True)
        allowed = set(self.model.may(name))
        data, reply = self._data(f"RETR {self.model.path(name)}")
        if data is None:
            if reply.code == 550 and None not in allowed:
                self.problem(f"RETR {name}: 550 though it exists: {reply.text!r}")
            elif reply.code < 400:
                self.problem(f"RETR {name}: unexpected {reply.text!r}")
            return
        if None in allowed and len(allowed) == 1:
            self.problem(f"RETR {name}: 150 for a file that cannot exist")
        received = bytearray()
        with contextlib.suppress(OSError):
            while len(received) < (1 << 30):
                chunk = data.recv(1 << 16)
                if not chunk:
                    break
                received += chunk
                if mode != "complete" and self.rng.random() < 0.3:
                    break
        if not is_prefix(bytes(received), allowed):
            self.problem(f"RETR {name}: received {len(received)} bytes that begin no content it may have")
        if mode == "abort":
            self._abort(data)
            return
        if mode == "vanish":
            self._vanish(data)
        data.close()
        reply = self._reply()
        if reply.code == 226 and bytes(received) not in allowed:
            self.problem(f"RETR {name}: 226 after {len(received)} bytes, which are not a whole content it may have")

    def op_list(self) -> None:
        verb = self.rng.choice(["LIST -a", "NLST", "MLSD"])
        data, reply = self._data(f"{verb} {self.model.directory}")
        if data is None:
            if reply.code < 400:
                self.problem(f"{verb}: unexpected {reply.text!r}")
            return
        received = _read_all(data)
        reply = self._reply()
        text = received.decode("utf-8", "replace")
        if RESERVED in text:
            self.problem(f"{verb} shows a reserved name: {text!r}")
        if reply.code != 226:
            return
        listed = {_listed_name(verb, line) for line in text.splitlines() if line.strip()}
        listed -= {".", ".."}
        for name in NAMES:
            if name in self.model.tainted:
                continue
            allowed = self.model.may(name)
            if name in listed and allowed == {None}:
                self.problem(f"{verb} lists {name}, which cannot exist")
            if name not in listed and None not in allowed:
                self.problem(f"{verb} does not list {name}, which exists")
        stray = listed - set(NAMES)
        if stray:
            self.problem(f"{verb} lists names no one made: {sorted(stray)}")

    def op_list_root(self) -> None:
        """A listing of the whole root with hidden names: never a temporary."""
        data, _reply = self._data("LIST -a /")
        if data is None:
            return
        received = _read_all(data)
        self._reply()
        if RESERVED.encode() in received:
            self.problem(f"LIST -a / shows a reserved name: {bytes(received)!r}")

    def op_rename(self) -> None:
        source = self._usable(present=True)
        target = self._usable(present=False)
        if source == target:
            return
        first = self._cmd(f"RNFR {self.model.path(source)}")
        from_allowed, to_allowed = self.model.may(source), self.model.may(target)
        if first.code != 350:
            if first.code == 550 and None not in from_allowed:
                self.problem(f"RNFR {source}: 550 though it exists: {first.text!r}")
            return
        try:
            second = self._cmd(f"RNTO {self.model.path(target)}")
        except (OSError, EOFError):
            to_allowed |= from_allowed
            from_allowed.add(None)
            self.model.tainted |= {source, target}
            raise
        if second.code == 250:
            if from_allowed == {None}:
                self.problem(f"RNTO {target}: 250 for a source that cannot exist")
            self.model.names[target] = {c for c in from_allowed if c is not None} or {None}
            self.model.names[source] = {None}
        elif second.code >= 400 and second.code != 550:
            # A failure may come after a copy (S3) or its source's deletion: any mix.
            to_allowed |= from_allowed
            from_allowed.add(None)

    def op_dele(self) -> None:
        name = self._usable(present=True)
        allowed = self.model.may(name)
        try:
            reply = self._cmd(f"DELE {self.model.path(name)}")
        except (OSError, EOFError):
            allowed.add(None)
            self.model.tainted.add(name)
            raise
        if reply.code == 250:
            self.model.names[name] = {None}
        elif reply.code == 550 and None not in allowed:
            self.problem(f"DELE {name}: 550 though it exists: {reply.text!r}")
        elif reply.code >= 400:
            allowed.add(None)

    def op_relogin(self) -> None:
        """QUIT, and log in again with the next operation."""
        reply = self._cmd("QUIT")
        if reply.code != 221:
            self.problem(f"QUIT: {reply.text!r}")
        control, self.control = self._ctl(), None
        control.close()

    def op_escape(self) -> None:
        """A transfer out of the root (through a link, or clamped ..): never started."""
        if not self.plan.escapes:
            return
        target = self.rng.choice(self.plan.escapes)
        verb = self.rng.choice(self.plan.escape_verbs)
        data, reply = self._data(f"{verb} {target}")
        if data is not None:
            self.problem(f"{verb} {target}: started ({reply.text!r}), out of the root")
            self._vanish(data)
        if reply.code < 400:
            self.problem(f"{verb} {target}: {reply.text!r}")

    def _refused(self, reply: Reply, verb: str) -> None:
        if reply.code < 400:
            self.problem(f"{verb}: unexpected {reply.text!r}")


def _read_all(data: socket.socket) -> bytes:
    """What arrives until the server closes (or resets: a listing that failed) the data connection."""
    received = bytearray()
    with contextlib.suppress(OSError):
        while chunk := data.recv(1 << 16):
            received += chunk
    data.close()
    return bytes(received)


def _listed_name(verb: str, line: str) -> str:
    if verb == "MLSD":
        return line.split("; ", 1)[-1].strip()
    if verb == "NLST":
        return line.rsplit("/", 1)[-1].strip()
    return line.split(None, 8)[-1].strip()


def run_sessions(sessions: list[Session], timeout: float) -> list[str]:
    """Start every session, wait for all; the names of those that did not end in time."""
    for session in sessions:
        session.start()
    end = time.monotonic() + timeout
    for session in sessions:
        session.join(max(0.0, end - time.monotonic()))
    return [session.name for session in sessions if session.is_alive()]
