"""
End-to-end fixtures: a real C{twistd exftp} subprocess and real clients.

Each server is started the way the README tells users to start it, with the
working tree on C{PYTHONPATH}; readiness is the C{exftp listening on HOST:PORT}
log line, never a fixed sleep. A server's log is attached to the report of
every failing test that used it, and a test fails when the server logged a
traceback while it ran.
"""

from __future__ import annotations

import ftplib
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
USER, PASSWORD = "alice", "secret"
AUTH = f"memory:{USER}:{PASSWORD}"
#: How long anything that should happen "soon" may take before a test gives up.
DEADLINE = 15.0
_READY = re.compile(r"exftp listening on (?P<host>\S+):(?P<port>\d+)\s*$")
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|Unhandled Error|Unhandled error in Deferred")


def twistd_command() -> list[str]:
    """The command that runs twistd with this interpreter."""
    script = Path(sys.executable).with_name("twistd")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def server_env() -> dict[str, str]:
    """The environment of a server: the working tree first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_twistd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run C{twistd ARGS} to completion (for --help and option errors)."""
    return subprocess.run(
        [*twistd_command(), *args],
        env=server_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class FTPServer:
    """
    One C{twistd -n exftp} subprocess.

    @ivar host: the address it listens on.
    @ivar port: the port it reported in its readiness line.
    @ivar root: the directory it serves (and runs in).
    """

    def __init__(
        self, root: Path, *options: str, listen: str = "tcp:0:interface=127.0.0.1", root_option: bool = True
    ) -> None:
        self.root = root
        self.options = (*(("--root", str(root)) if root_option else ()), *options)
        self.listen = listen
        self.host = ""
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._reader: threading.Thread | None = None

    # Life cycle

    def start(self) -> FTPServer:
        command = [*twistd_command(), "-n", "--pidfile=", "exftp", "--port", self.listen, *self.options]
        self.process = subprocess.Popen(
            command, env=server_env(), cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        try:
            match = self.wait_for_log(_READY, timeout=60)
        except AssertionError:
            self.stop()
            raise
        self.host, self.port = match["host"], int(match["port"])
        return self

    def _read_log(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            with self._changed:
                self._lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_exit(self, timeout: float = DEADLINE) -> int:
        """Wait until the process has exited and its whole log is read; the exit status."""
        assert self.process is not None
        status = self.process.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        return status

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; the exit status."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        return process.returncode

    # The log

    def log(self, start: int = 0) -> str:
        with self._changed:
            return "\n".join(self._lines[start:])

    def log_position(self) -> int:
        with self._changed:
            return len(self._lines)

    def wait_for_log(self, pattern: re.Pattern[str] | str, timeout: float = DEADLINE, start: int = 0) -> re.Match[str]:
        """Wait until a log line from C{start} on matches C{pattern}; the match."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._changed:
            seen = start
            while True:
                for line in self._lines[seen:]:
                    found = regex.search(line)
                    if found:
                        return found
                seen = max(seen, len(self._lines))
                remaining = deadline - time.monotonic()
                exited = self.process is None or self.process.poll() is not None
                if remaining <= 0 or (exited and (self._reader is None or not self._reader.is_alive())):
                    raise AssertionError(
                        f"server log never matched {regex.pattern!r} "
                        f"(exit status {self.process.poll() if self.process else None}):\n{self.log()}"
                    )
                self._changed.wait(min(remaining, 0.2))

    # Clients

    def connect(self, timeout: float = DEADLINE) -> ftplib.FTP:
        """An ftplib client connected (not logged in)."""
        client = ftplib.FTP(timeout=timeout)
        client.connect(self.host, self.port)
        return client

    def login(self, user: str = USER, password: str = PASSWORD, timeout: float = DEADLINE) -> ftplib.FTP:
        """An ftplib client logged in, in binary mode."""
        client = self.connect(timeout)
        client.login(user, password)
        return client

    def control(self, timeout: float = DEADLINE) -> Control:
        """A raw control connection; the greeting is already read."""
        return Control(self.host, self.port, timeout)

    def url(self, path: str = "/", user: str = USER, password: str = PASSWORD) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ftp://{user}:{password}@{host}:{self.port}{path}"


class Control:
    """
    A raw FTP control connection, for looking at replies exactly as sent.

    @ivar greeting: the first reply.
    """

    def __init__(self, host: str, port: int, timeout: float = DEADLINE) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self._buffer = b""
        self.greeting = self.reply()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Control:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, line: str | bytes) -> None:
        data = line.encode() if isinstance(line, str) else line
        self.sock.sendall(data + b"\r\n")

    def _line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(f"connection closed; unterminated bytes: {self._buffer!r}")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line

    def reply(self) -> Reply:
        """Read one (possibly multi-line) reply."""
        first = self._line().decode()
        assert re.match(r"^\d{3}[ -]", first), f"malformed reply line {first!r}"
        code, lines = int(first[:3]), [first]
        if first[3] == "-":
            while True:
                line = self._line().decode()
                lines.append(line)
                if line.startswith(f"{code} "):
                    break
        return Reply(code, lines)

    def cmd(self, line: str | bytes) -> Reply:
        """Send a line and read its reply."""
        self.send(line)
        return self.reply()

    def login(self, user: str = USER, password: str = PASSWORD) -> None:
        assert self.cmd(f"USER {user}").code == 331
        assert self.cmd(f"PASS {password}").code == 230

    def at_eof(self) -> bool:
        """Whether the server closed the connection (nothing more arrives)."""
        if self._buffer:
            return False
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def pasv(self) -> tuple[str, int]:
        """Send PASV; the announced address."""
        reply = self.cmd("PASV")
        assert reply.code == 227, reply
        return parse_227(reply.text)

    def retr(self, path: str, port: int, host: str = "127.0.0.1") -> bytes:
        """C{RETR path} through the passive C{port} already set up: 150, the bytes, 226."""
        with socket.create_connection((host, port), timeout=10) as data:
            reply = self.cmd(f"RETR {path}")
            assert reply.code == 150, reply
            received = read_all(data)
        reply = self.reply()
        assert reply.code == 226, reply
        return received


@dataclass
class Reply:
    """One reply: its code and its lines as sent."""

    code: int
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def parse_227(text: str) -> tuple[str, int]:
    """The address in a 227 reply."""
    found = re.search(r"(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)", text)
    assert found, text
    numbers = [int(n) for n in found.groups()]
    return ".".join(map(str, numbers[:4])), numbers[4] * 256 + numbers[5]


def parse_229(text: str) -> int:
    """The port in a 229 reply."""
    found = re.search(r"\(\|\|\|(\d+)\|\)", text)
    assert found, text
    return int(found.group(1))


def code(error: BaseException) -> int:
    """The reply code carried by an ftplib error."""
    return int(str(error)[:3])


def refused_code(client: ftplib.FTP, line: str) -> int:
    """Send C{line}, which the server must refuse with a 5xx reply; that reply's code."""
    with pytest.raises(ftplib.error_perm) as refused:
        client.sendcmd(line)
    return code(refused.value)


def read_all(sock: socket.socket) -> bytes:
    """Read a (data) connection until the other side closes it."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def port_argument(host: str, port: int) -> str:
    """The argument of C{PORT} naming an IPv4 C{host} and C{port}."""
    return ",".join([*host.split("."), str(port >> 8), str(port & 0xFF)])


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def wait_until(predicate: Callable[[], object], what: str, timeout: float = DEADLINE, interval: float = 0.02) -> None:
    """Poll C{predicate} until it is true; fail after C{timeout} seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def retr_raw(client: ftplib.FTP, command: str, type_: str | None = None) -> bytes:
    """Run a download command and return the exact bytes of the data connection (no TYPE I forced)."""
    if type_ is not None:
        client.voidcmd(f"TYPE {type_}")
    with client.transfercmd(command) as conn:
        data = read_all(conn)
    client.voidresp()
    return data


def stor_raw(client: ftplib.FTP, command: str, data: bytes, type_: str | None = None) -> str:
    """Run an upload command sending exactly C{data} (no TYPE I forced); the final reply."""
    if type_ is not None:
        client.voidcmd(f"TYPE {type_}")
    with client.transfercmd(command) as conn:
        conn.sendall(data)
    return client.voidresp()


def retr_bytes(client: ftplib.FTP, path: str) -> bytes:
    chunks: list[bytes] = []
    client.retrbinary(f"RETR {path}", chunks.append)
    return b"".join(chunks)


def list_lines(client: ftplib.FTP, command: str = "LIST") -> list[str]:
    lines: list[str] = []
    client.retrlines(command, lines.append)
    return lines


def temporary_files(directory: Path) -> list[str]:
    """Upload temporaries the server left anywhere under C{directory}."""
    return [str(p) for p in directory.rglob(".exftp-upload-*")]


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of a process from /proc, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (for --passive-ports)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def ipv6_usable() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
            probe.listen()
            with socket.create_connection(probe.getsockname()[:2], timeout=2):
                pass
    except OSError:
        return False
    return True



def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, source: str) -> None:
    """
    Make a Twisted dropin C{twisted/plugins/MODULE.py} holding C{source}
    visible to the servers started from here on (through C{PYTHONPATH}), as
    a third-party package would ship it.
    """
    plugins = tmp_path / "plugins" / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / f"{module}.py").write_text(source)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "plugins"), os.environ.get("PYTHONPATH", "")]))



class HTTPService:
    """
    A real HTTP server on a free loopback port, served by daemon threads: the
    base of the auth services and webhook receivers the tests run.
    """

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


# Fixtures


@pytest.fixture(scope="session")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., FTPServer]]:
    """
    A factory of servers: C{start_server(*options, root=None, listen=..., root_option=True)}.
    Every server it starts is stopped at the end of the session at the latest.
    """
    servers: list[FTPServer] = []

    def start(
        *options: str, root: Path | None = None, listen: str = "tcp:0:interface=127.0.0.1", root_option: bool = True
    ) -> FTPServer:
        if root is None:
            root = tmp_path_factory.mktemp("root")
        server = FTPServer(root, *options, listen=listen, root_option=root_option)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def server(start_server: Callable[..., FTPServer]) -> Iterator[FTPServer]:
    """The main server: a directory served to alice/secret."""
    main = start_server("--auth", AUTH)
    yield main
    assert main.alive(), f"the main server died during the session:\n{main.log()}"


@dataclass
class Area:
    """A fresh directory inside a server's root, for one test."""

    local: Path
    path: str

    def file(self, name: str, data: bytes) -> Path:
        target = self.local / name
        target.write_bytes(data)
        return target


@pytest.fixture
def area(server: FTPServer, request: pytest.FixtureRequest) -> Area:
    """A directory of its own in the main server's root, e.g. C{/test_x-1a2b3c}."""
    name = re.sub(r"\W", "_", request.node.name)[:60] + "-" + uuid.uuid4().hex[:6]
    local = server.root / name
    local.mkdir()
    return Area(local, "/" + name)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A socket listening on 127.0.0.1 for active-mode data connections."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    sock.settimeout(10)
    yield sock
    sock.close()


@pytest.fixture
def ftp(server: FTPServer) -> Iterator[ftplib.FTP]:
    """An ftplib client logged in to the main server."""
    client = server.login()
    yield client
    client.close()


# Reporting: the server log on failure; server tracebacks fail the test.


def _servers_of(item: pytest.Item) -> Sequence[FTPServer]:
    values = getattr(item, "funcargs", {}).values()
    return [value for value in values if isinstance(value, FTPServer)]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    servers = _servers_of(item)
    item._exftp_log_start = {id(s): s.log_position() for s in servers}  # type: ignore[attr-defined]
    result = yield
    if item.get_closest_marker("server_traceback_expected") is None:
        for server in servers:
            new = server.log(item._exftp_log_start[id(server)])  # type: ignore[attr-defined]
            if _TRACEBACK.search(new):
                pytest.fail(f"the server logged a traceback during this test:\n{new}")
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.failed and call.when == "call":
        starts = getattr(item, "_exftp_log_start", {})
        for server in _servers_of(item):
            text = server.log(starts.get(id(server), 0))
            report.sections.append((f"exftp server log ({server.host}:{server.port}, from test start)", text))
    return report


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "server_traceback_expected: the server may log a traceback in this test")
