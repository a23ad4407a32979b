"""
Byte-exact round trips of awkward sizes, and a file larger than 100 MiB
streamed through a server whose memory is watched while it happens.
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import AUTH, Area, FTPServer, retr_bytes, rss_kib, sha256_file

KiB, MiB = 1024, 1024 * 1024


@pytest.mark.parametrize(
    "size", [0, 1, 2, 64 * KiB - 1, 64 * KiB, 64 * KiB + 1, 256 * KiB - 1, 256 * KiB + 1, 3 * MiB + 17]
)
@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
def test_round_trip(ftp: ftplib.FTP, area: Area, size: int, passive: bool) -> None:
    data = os.urandom(size)
    ftp.set_pasv(passive)
    reply = ftp.storbinary(f"STOR {area.path}/blob", io.BytesIO(data), blocksize=7919)
    assert reply.startswith("226")
    assert (area.local / "blob").read_bytes() == data
    assert ftp.size(f"{area.path}/blob") == size
    assert retr_bytes(ftp, f"{area.path}/blob") == data


def test_all_byte_values_and_line_endings(ftp: ftplib.FTP, area: Area) -> None:
    data = bytes(range(256)) * 3 + b"\r\n\r\r\n\n\n\r\xff\xff\xf4\xf2"
    ftp.storbinary(f"STOR {area.path}/bytes", io.BytesIO(data))
    assert (area.local / "bytes").read_bytes() == data
    assert retr_bytes(ftp, f"{area.path}/bytes") == data


@pytest.mark.parametrize("name", ["spaces in name.txt", "ünïcødé-名前.bin", "semi;colon#hash%25.txt", "  lead"])
def test_awkward_names(ftp: ftplib.FTP, area: Area, name: str) -> None:
    ftp.storbinary(f"STOR {area.path}/{name}", io.BytesIO(name.encode()))
    assert (area.local / name).read_bytes() == name.encode()
    assert retr_bytes(ftp, f"{area.path}/{name}") == name.encode()
    assert name in ftp.nlst(area.path) or f"{area.path}/{name}" in ftp.nlst(area.path)


def test_many_sequential_transfers_one_session(ftp: ftplib.FTP, area: Area) -> None:
    for n in range(15):
        data = os.urandom(n * 97)
        ftp.storbinary(f"STOR {area.path}/f{n}", io.BytesIO(data))
        assert retr_bytes(ftp, f"{area.path}/f{n}") == data
    assert len(ftp.nlst(area.path)) == 15


@pytest.fixture(scope="module")
def big_server(start_server: Callable[..., FTPServer]) -> FTPServer:
    """A server of its own, so that its memory figures belong to this test only."""
    return start_server("--auth", AUTH)


class _RSSSampler(threading.Thread):
    """Samples a process's VmRSS until stopped; the peak in KiB."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.samples = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            self.samples += 1
            self._done.wait(0.01)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak


def _random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 * MiB))
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def _reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+); whether it worked."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


def test_large_file_is_streamed(big_server: FTPServer, tmp_path: Path) -> None:
    size = 100 * MiB + 4099
    source, copy = tmp_path / "big.bin", tmp_path / "copy.bin"
    digest = _random_file(source, size)
    pid = big_server.pid
    client = big_server.login(timeout=120)
    try:
        # Warm up: imports, the thread pool and buffers of a transfer each way.
        warm = os.urandom(4 * MiB)
        client.storbinary("STOR warm.bin", io.BytesIO(warm))
        assert retr_bytes(client, "warm.bin") == warm
        baseline = rss_kib(pid)
        reset = _reset_peak(pid)
        sampler = _RSSSampler(pid)
        sampler.start()
        try:
            with open(source, "rb") as upload:
                assert client.storbinary("STOR big.bin", upload, blocksize=MiB).startswith("226")
            with open(copy, "wb") as download:
                assert client.retrbinary("RETR big.bin", download.write, blocksize=MiB).startswith("226")
        finally:
            peak = sampler.stop()
        high_water = rss_kib(pid, "VmHWM")
    finally:
        client.close()
    assert sha256_file(big_server.root / "big.bin") == digest
    assert copy.stat().st_size == size
    assert sha256_file(copy) == digest
    assert sampler.samples > 0
    if reset:
        peak = max(peak, high_water)
    growth_mib = (peak - baseline) / KiB
    assert growth_mib < 64, (
        f"server RSS grew by {growth_mib:.1f} MiB over its idle {baseline / KiB:.1f} MiB while moving "
        f"{size / MiB:.0f} MiB: the file is buffered, not streamed"
    )
