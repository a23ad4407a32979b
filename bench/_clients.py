"""
The clients: for single-client throughput, one that costs almost nothing
(RETR discards in the kernel with C{MSG_TRUNC}, STOR sends with C{sendfile})
and curl (C), what a user's client sees; Python ftplib in several processes
of threads for the concurrent scenarios.
"""

from __future__ import annotations

import contextlib
import ftplib
import multiprocessing
import queue
import socket
import struct
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

#: Seconds any one socket operation of a Python client may block.
SOCKET_TIMEOUT = 120.0
_CURL_FORMAT = (
    "\n%{size_download} %{size_upload} %{time_pretransfer} %{time_starttransfer} %{time_total} %{response_code}"
)


@dataclass
class CurlResult:
    downloaded: int
    uploaded: int
    pretransfer: float
    total: float
    code: int
    error: str

    @property
    def transfer_seconds(self) -> float:
        """From the transfer command to the end (login and directory changes left out)."""
        return max(self.total - self.pretransfer, 1e-9)


def curl(arguments: list[str], timeout: float) -> CurlResult:
    """Run curl (bounded by C{timeout}) and read its transfer figures."""
    command = ["curl", "-sS", "--max-time", str(int(timeout)), "-w", _CURL_FORMAT, *arguments]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout + 10, check=False)
    except subprocess.TimeoutExpired:
        return CurlResult(0, 0, 0.0, timeout, 0, f"curl timed out after {timeout}s")
    fields = done.stdout.strip().splitlines()[-1].split() if done.stdout.strip() else []
    if len(fields) != 6:
        return CurlResult(0, 0, 0.0, 0.0, 0, f"curl exit {done.returncode}: {done.stderr.strip()[:300]}")
    error = "" if done.returncode == 0 else f"curl exit {done.returncode}: {done.stderr.strip()[:300]}"
    return CurlResult(int(fields[0]), int(fields[1]), float(fields[2]), float(fields[4]), int(fields[5]), error)


#: Seconds to wait for the 220 greeting before connecting again. A server whose
#: listen queue overflowed (vsftpd's holds 32) leaves a connection open that
#: will never be greeted; a real client gives up on it and tries again.
GREETING_TIMEOUT = 10.0
GREETING_ATTEMPTS = 3


def _connect(host: str, port: int, user: str, password: str, retries: list[int] | None = None) -> ftplib.FTP:
    for attempt in range(GREETING_ATTEMPTS):
        ftp = ftplib.FTP()
        try:
            ftp.connect(host, port, timeout=GREETING_TIMEOUT)
        except TimeoutError:
            ftp.close()
            if retries is not None:
                retries[0] += 1
            if attempt + 1 == GREETING_ATTEMPTS:
                raise
            continue
        ftp.timeout = SOCKET_TIMEOUT
        assert ftp.sock is not None
        ftp.sock.settimeout(SOCKET_TIMEOUT)
        ftp.login(user, password)
        return ftp
    raise AssertionError("unreachable")


def _transfer_client(host: str, port: int, user: str, password: str, path: str) -> dict[str, Any]:
    """Login, LIST, RETR C{path}, QUIT; the RETR's own latency is measured."""
    started = time.monotonic()
    retries = [0]
    try:
        ftp = _connect(host, port, user, password, retries)
        try:
            lines: list[str] = []
            ftp.retrlines("LIST", lines.append)
            received = [0]

            def count(block: bytes) -> None:
                received[0] += len(block)

            retr_started = time.monotonic()
            ftp.retrbinary(f"RETR {path}", count, blocksize=256 * 1024)
            retr_seconds = time.monotonic() - retr_started
            ftp.quit()
        finally:
            ftp.close()
    except (OSError, ftplib.Error, EOFError) as error:
        error_text = f"{type(error).__name__}: {error}"
        return {"ok": False, "error": error_text, "end": time.monotonic(), "start": started, "retries": retries[0]}
    return {
        "ok": True, "bytes": received[0], "retr_seconds": retr_seconds, "retr_start": retr_started,
        "listed": len(lines),
        "start": started, "end": time.monotonic(), "retries": retries[0],
    }  # fmt: skip


def _login_client(host: str, port: int, user: str, password: str, count: int) -> dict[str, Any]:
    """Log in and out C{count} times, one after the other."""
    ok, errors, retries = 0, [], [0]
    for _ in range(count):
        try:
            ftp = _connect(host, port, user, password, retries)
            try:
                ftp.quit()
            finally:
                ftp.close()
            ok += 1
        except (OSError, ftplib.Error, EOFError) as error:
            errors.append(f"{type(error).__name__}: {error}")
    return {"ok": ok, "errors": errors[:5], "failed": len(errors), "end": time.monotonic(), "retries": retries[0]}


def _worker(kind: str, threads: int, arguments: tuple[Any, ...], ready: Any, go: Any, results: Any) -> None:
    """One client process: C{threads} threads that start together when C{go} is set."""
    start = threading.Event()
    outputs: list[dict[str, Any]] = []
    lock = threading.Lock()
    target = {"transfer": _transfer_client, "login": _login_client, "small": _small_transfers_client}[kind]

    def run() -> None:
        start.wait()
        output = target(*arguments)
        with lock:
            outputs.append(output)

    pool = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    ready.release()
    if not go.wait(SOCKET_TIMEOUT):
        results.put([])
        return
    start.set()
    deadline = time.monotonic() + 10 * SOCKET_TIMEOUT
    for thread in pool:
        thread.join(max(deadline - time.monotonic(), 0.1))
    with lock:
        results.put(list(outputs))


def run_concurrent(
    kind: str, clients: int, processes: int, arguments: tuple[Any, ...], timeout: float
) -> tuple[float, list[dict[str, Any]]]:
    """
    Run C{clients} client threads spread over C{processes} processes, all
    released at once; return the wall time from release to the last end,
    and every client's result.
    """
    context = multiprocessing.get_context("fork")
    ready, go, results = context.Semaphore(0), context.Event(), context.Queue()
    shares = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    workers = [
        context.Process(target=_worker, args=(kind, share, arguments, ready, go, results), daemon=True)
        for share in shares
        if share
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        if not ready.acquire(timeout=60):
            break
    released = time.monotonic()
    go.set()
    outputs: list[dict[str, Any]] = []
    deadline = released + timeout
    for _ in workers:
        try:
            outputs.extend(results.get(timeout=max(deadline - time.monotonic(), 0.1)))
        except queue.Empty:
            break
    for worker in workers:
        worker.join(5)
        if worker.is_alive():
            worker.kill()
            worker.join(5)
    ends = [output["end"] for output in outputs]
    wall = (max(ends) if ends else time.monotonic()) - released
    return wall, outputs


class IdleSessions:
    """Many logged-in control connections that do nothing."""

    def __init__(self, host: str, port: int, user: str, password: str) -> None:
        self._address = (host, port, user, password)
        self.sessions: list[ftplib.FTP] = []
        self.errors: list[str] = []
        self.retries = [0]

    def _open(self, _: int) -> None:
        try:
            self.sessions.append(_connect(*self._address, self.retries))
        except (OSError, ftplib.Error, EOFError) as error:
            self.errors.append(f"{type(error).__name__}: {error}")

    def open(self, count: int, workers: int = 25) -> None:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(self._open, range(count)))

    def close(self) -> None:
        def quit_one(ftp: ftplib.FTP) -> None:
            with contextlib.suppress(OSError, ftplib.Error, EOFError):
                ftp.quit()
            ftp.close()

        with ThreadPoolExecutor(25) as pool:
            list(pool.map(quit_one, self.sessions))
        self.sessions = []


def early_close(
    host: str, port: int, user: str, password: str, path: str, check_path: str, check_size: int, reset: bool
) -> dict[str, Any]:
    """
    Start RETR C{path}, read 1 MiB, close the data connection (FIN, or RST
    when C{reset}), then check that the session still works: the reply to
    the broken transfer comes, NOOP is answered and C{check_path} downloads whole.
    """
    try:
        ftp = _connect(host, port, user, password)
    except (OSError, ftplib.Error, EOFError) as error:
        return {"ok": False, "error": f"login: {error}"}
    try:
        ftp.voidcmd("TYPE I")
        data = ftp.transfercmd(f"RETR {path}")
        received = 0
        while received < 1024 * 1024:
            block = data.recv(256 * 1024)
            if not block:
                break
            received += len(block)
        if reset:
            data.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        data.close()
        closed = time.monotonic()
        try:
            reply = ftp.getresp()
        except (ftplib.error_temp, ftplib.error_perm) as error:
            reply = str(error)
        reply_seconds = time.monotonic() - closed
        ftp.voidcmd("NOOP")
        got = [0]
        ftp.retrbinary(f"RETR {check_path}", lambda block: got.__setitem__(0, got[0] + len(block)), 256 * 1024)
        ftp.quit()
    except (OSError, ftplib.Error, EOFError) as error:
        return {"ok": False, "error": f"{type(error).__name__}: {error}"}
    finally:
        ftp.close()
    ok = got[0] == check_size and reply[:1] in ("2", "4")
    return {"ok": ok, "reply": reply.strip()[:80], "reply_seconds": reply_seconds, "after_bytes": got[0]}


def timed_listing(host: str, port: int, user: str, password: str, path: str) -> tuple[float, int]:
    """
    Seconds from sending LIST (after PASV) until its 226 has come and every
    byte is in, and the number of lines; the server's work before it
    answers 150 is included (curl's figures would leave it out).
    """
    ftp = _connect(host, port, user, password)
    try:
        ftp.voidcmd("TYPE A")
        started = time.monotonic()
        data = ftp.transfercmd(f"LIST {path}")
        received = bytearray()
        with data:
            while block := data.recv(256 * 1024):
                received += block
        ftp.voidresp()
        seconds = time.monotonic() - started
        ftp.quit()
    finally:
        ftp.close()
    return seconds, received.count(b"\n")


# --- Clients that cost almost nothing (issue 21) -------------------------------------------

#: Bytes asked of the kernel per C{recv}: with C{MSG_TRUNC} it discards them and copies none.
_DISCARD_CHUNK = 4 * 1024 * 1024


@dataclass
class Transfer:
    """One bulk transfer by a zero-copy client: bytes moved and seconds from PASV to the 226."""

    size: int
    seconds: float
    reply: str


def _discard(data: socket.socket) -> int:
    """Read C{data} to its end, letting the kernel drop the bytes (Linux C{MSG_TRUNC} on TCP)."""
    buffer = bytearray(_DISCARD_CHUNK)  # never written: the kernel copies nothing into it
    total = 0
    while received := data.recv_into(buffer, _DISCARD_CHUNK, socket.MSG_TRUNC):
        total += received
    return total


def zero_copy_retr(ftp: ftplib.FTP, path: str) -> Transfer:
    """
    RETR C{path} on a logged-in session with a client that costs almost
    nothing: the bytes are counted and discarded by the kernel, never copied
    to user space. Timed from the PASV to the 226.
    """
    ftp.voidcmd("TYPE I")
    started = time.monotonic()
    with ftp.transfercmd(f"RETR {path}") as data:
        size = _discard(data)
    reply = ftp.voidresp()
    return Transfer(size, time.monotonic() - started, reply)


def zero_copy_stor(ftp: ftplib.FTP, source: str, name: str) -> Transfer:
    """
    STOR the file C{source} as C{name} with C{socket.sendfile} (the kernel
    sends from the page cache). Timed from the PASV to the 226, which a
    server that makes uploads durable sends only after its fsync.
    """
    ftp.voidcmd("TYPE I")
    started = time.monotonic()
    with open(source, "rb") as file, ftp.transfercmd(f"STOR {name}") as data:
        size = data.sendfile(file)
        data.shutdown(socket.SHUT_WR)
    reply = ftp.voidresp()
    return Transfer(size, time.monotonic() - started, reply)


def session(host: str, port: int, user: str, password: str) -> ftplib.FTP:
    """A logged-in ftplib session (bounded timeouts, greeting retried as for the other clients)."""
    return _connect(host, port, user, password)


def close_session(ftp: ftplib.FTP) -> None:
    """QUIT politely, then close whatever is left."""
    with contextlib.suppress(OSError, ftplib.Error, EOFError):
        ftp.quit()
    ftp.close()


class NoopProbe:
    """
    Another session that sends NOOP every C{interval} seconds in a thread,
    recording each reply's round trip: how long one busy transfer makes
    other sessions wait (fairness).
    """

    def __init__(self, ftp: ftplib.FTP, interval: float = 0.01) -> None:
        self._ftp = ftp
        self._interval = interval
        self._stop = threading.Event()
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._ftp.voidcmd("NOOP")
            except (OSError, ftplib.Error, EOFError) as error:
                self.errors.append(f"{type(error).__name__}: {error}")
                return
            self.latencies.append(time.monotonic() - started)
            self._stop.wait(self._interval)

    def __enter__(self) -> NoopProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(SOCKET_TIMEOUT)


def _small_transfers_client(host: str, port: int, user: str, password: str, path: str, count: int) -> dict[str, Any]:
    """Login, LIST, C{count} RETRs of C{path} (each timed), QUIT (scenario 3 of issue 21)."""
    started = time.monotonic()
    retries = [0]
    latencies: list[float] = []
    received = 0
    try:
        ftp = _connect(host, port, user, password, retries)
        try:
            lines: list[str] = []
            ftp.retrlines("LIST", lines.append)
            ftp.voidcmd("TYPE I")
            for _ in range(count):
                retr_started = time.monotonic()
                with ftp.transfercmd(f"RETR {path}") as data:
                    received += _discard(data)
                ftp.voidresp()
                latencies.append(time.monotonic() - retr_started)
            ftp.quit()
        finally:
            ftp.close()
    except (OSError, ftplib.Error, EOFError) as error:
        error_text = f"{type(error).__name__}: {error}"
        return {
            "ok": False, "error": error_text, "refused": refused(error), "end": time.monotonic(),
            "start": started, "retries": retries[0],
        }  # fmt: skip
    return {
        "ok": True, "bytes": received, "latencies": latencies, "listed": len(lines),
        "start": started, "end": time.monotonic(), "retries": retries[0],
    }  # fmt: skip


def refused(error: BaseException) -> bool:
    """
    Whether a failed session was turned away by the server (a 421 or a
    closed or reset connection) rather than timing out: a benchmark that
    reports such sessions as speed measures a limit, not a server.
    """
    if isinstance(error, ftplib.error_temp | ftplib.error_perm):
        return str(error)[:3] in ("421", "425", "530")
    return isinstance(error, ConnectionError | EOFError)
