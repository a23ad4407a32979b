"""
Containment that cannot race, through real clients: while sessions upload,
append and download, another session swaps the directory they use for a
link that leads out (RNFR/RNTO) and back. Nothing outside the root is ever
made, changed or read.
"""

from __future__ import annotations

import contextlib
import ftplib
import io
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from conftest import AUTH, FTPServer, temporary_files, wait_until

SECRET = b"outside the root, never to be read\n"
#: Bounds of the test: seconds, and rounds of each worker.
SECONDS = 8.0
ROUNDS = 400


def _snapshot(directory: Path) -> dict[str, tuple[int, float]]:
    return {str(path): (path.lstat().st_size, path.lstat().st_mtime) for path in directory.rglob("*")}


def test_swaps_by_a_second_session_never_let_transfers_out(
    start_server: Callable[..., FTPServer], tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f0").write_bytes(SECRET)
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f0").write_bytes(b"inside\n")
    os.symlink(outside, root / "evil")
    server = start_server("--auth", AUTH, root=root)
    before = _snapshot(outside)
    deadline = time.monotonic() + SECONDS
    done = threading.Event()
    counts = {"swaps": 0, "stored": 0, "read": 0}
    leaked: list[bytes] = []
    errors: list[BaseException] = []

    def swapper() -> None:
        client = server.login()
        try:
            for _ in range(ROUNDS):
                if done.is_set() or time.monotonic() > deadline:
                    break
                for old, new in (("d", "d-real"), ("evil", "d"), ("d", "evil"), ("d-real", "d")):
                    with contextlib.suppress(ftplib.error_perm):
                        client.rename(old, new)
                counts["swaps"] += 1
        finally:
            client.quit()

    def transfers(worker: int) -> None:
        client = server.login()
        try:
            for n in range(ROUNDS):
                if time.monotonic() > deadline:
                    break
                name = f"d/w{worker}-{n % 5}"
                command = "APPE" if n % 2 else "STOR"
                try:
                    client.storbinary(f"{command} {name}", io.BytesIO(b"x" * 4096))
                    counts["stored"] += 1
                except (ftplib.error_perm, ftplib.error_temp):
                    pass
                received = bytearray()
                try:
                    client.retrbinary("RETR d/f0", received.extend)
                    counts["read"] += 1
                except (ftplib.error_perm, ftplib.error_temp):
                    pass
                if SECRET in received:
                    leaked.append(bytes(received))
        finally:
            client.quit()

    def guarded(work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            except BaseException as error:  # reported below, not lost in a thread
                errors.append(error)

        return run

    threads = [threading.Thread(target=guarded(swapper))]
    threads += [threading.Thread(target=guarded(lambda w=w: transfers(w))) for w in range(3)]
    for thread in threads[1:]:
        thread.start()
    threads[0].start()
    for thread in threads[1:]:
        thread.join(SECONDS + 60)
    done.set()
    threads[0].join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert counts["swaps"] > 0 and counts["stored"] > 0 and counts["read"] > 0, counts
    assert leaked == []
    assert _snapshot(outside) == before
    assert temporary_files(root) == []
    assert server.alive()


def _reset(sock: socket.socket) -> None:
    """Close C{sock} with a reset rather than an orderly close."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_resets_during_overwrites_leave_no_trace(start_server: Callable[..., FTPServer], tmp_path: Path) -> None:
    """
    A client that resets the data connection of an overwrite and leaves at
    once: the session's teardown must not cancel the upload's clean-up (no
    failed abort logged), and no temporary file stays.
    """
    root = tmp_path / "root"
    root.mkdir()
    (root / "old.bin").write_bytes(b"old\n")
    server = start_server("--auth", AUTH, root=root)
    start = server.log_position()
    for _ in range(ROUNDS // 20):
        with server.control() as control:
            control.login()
            assert control.cmd("TYPE I").code == 200
            host, port = control.pasv()
            data = socket.create_connection((host, port), timeout=10)
            assert control.cmd("STOR old.bin").code == 150
            data.sendall(b"x" * (3 * 1024 * 1024))  # a batch or more: a write is under way
            _reset(data)
            _reset(control.sock)
    wait_until(lambda: not temporary_files(root), "the temporary files to be removed")
    assert "Aborting upload" not in server.log(start)
    assert "CancelledError" not in server.log(start)
    assert (root / "old.bin").read_bytes() == b"old\n"
    assert server.alive()
