"""
Per-user limits over SFTP, end to end: OpenSSH's C{sftp -b} against a real
C{twistd exftp --sftp --users FILE}. Uploads past the largest file size or
the quota fail and keep nothing; transfers are paced to the user's rates.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from paramiko.sftp import CMD_WRITE, int64
from test_sftp_e2e import FAST, SFTPServer, sftp_batch, users_file
from test_sftp_interop import connect

MiB = 1024 * 1024
RATE = 4 * MiB
PACED = 16 * MiB


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SFTPServer]:
    base = tmp_path_factory.mktemp("sftp-limits")
    root = base / "root"
    for name in ("small", "quota", "pace"):
        (root / name).mkdir(parents=True)
    users = users_file(
        base / "users.toml",
        small={"root": "/small", "max_file_size": MiB},
        quota={"root": "/quota", "quota_bytes": 2 * MiB},
        pace={"root": "/pace", "upload_rate": RATE, "download_rate": RATE},
    )
    running = SFTPServer(root, base / "state", "--users", str(users), *FAST).start()
    try:
        yield running
    finally:
        running.stop()


def _refused_put(server: SFTPServer, user: str, local: Path, remote: str) -> str:
    result = sftp_batch(server.port, [f"put {local.name} {remote}"], local.parent, user=user)
    assert result.returncode != 0, result.stdout
    return result.stderr


def test_a_put_past_the_largest_file_size_fails_and_keeps_nothing(server: SFTPServer, tmp_path: Path) -> None:
    home = server.server.root / "small"
    (home / "old.bin").write_bytes(b"unchanged")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(MiB + 1))
    for remote in ("new.bin", "old.bin"):
        _refused_put(server, "small", big, remote)
    server.server.wait_for_log(r"Upload of /old\.bin by small over SFTP refused: File too large")
    assert sorted(path.name for path in home.iterdir()) == ["old.bin"]  # no partial or temporary file
    assert (home / "old.bin").read_bytes() == b"unchanged"
    fits = tmp_path / "fits.bin"
    fits.write_bytes(os.urandom(MiB))
    result = sftp_batch(server.port, ["put fits.bin"], tmp_path, user="small")
    assert result.returncode == 0, result.stderr
    assert (home / "fits.bin").read_bytes() == fits.read_bytes()


def test_a_put_past_the_quota_fails_and_keeps_nothing(server: SFTPServer, tmp_path: Path) -> None:
    home = server.server.root / "quota"
    first = tmp_path / "first.bin"
    first.write_bytes(os.urandom(1536 * 1024))
    result = sftp_batch(server.port, ["put first.bin"], tmp_path, user="quota")
    assert result.returncode == 0, result.stderr
    second = tmp_path / "second.bin"
    second.write_bytes(os.urandom(MiB))
    _refused_put(server, "quota", second, "second.bin")
    _refused_put(server, "quota", second, "other.bin")
    server.server.wait_for_log(r"Upload of /second\.bin by quota over SFTP refused: Quota exceeded")
    assert sorted(path.name for path in home.iterdir()) == ["first.bin"]
    assert (home / "first.bin").read_bytes() == first.read_bytes()
    # A removal over SFTP makes room again.
    result = sftp_batch(server.port, ["rm first.bin", "put second.bin"], tmp_path, user="quota")
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in home.iterdir()) == ["second.bin"]


def test_put_and_get_are_paced_to_the_users_rates(server: SFTPServer, tmp_path: Path) -> None:
    """16 MiB at 4 MiB/s: about 4 s each way (generous bounds for a loaded machine)."""
    payload = os.urandom(PACED)
    (tmp_path / "paced.bin").write_bytes(payload)
    started = time.monotonic()
    result = sftp_batch(server.port, ["put paced.bin", "get paced.bin back.bin"], tmp_path, user="pace")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "back.bin").read_bytes() == payload
    log = server.server
    upload = float(log.wait_for_log(rf"pace uploaded /paced\.bin over SFTP: {PACED} bytes in ([\d.]+)s")[1])
    download = float(log.wait_for_log(rf"pace downloaded /paced\.bin over SFTP: {PACED} bytes in ([\d.]+)s")[1])
    print(f"\nSFTP paced at {RATE // MiB} MiB/s: 16 MiB up in {upload:.2f}s, down in {download:.2f}s")
    assert 3.0 <= upload <= 6.0, (upload, download)
    assert 3.0 <= download <= 6.0, (upload, download)
    assert elapsed >= upload + download


def test_a_client_that_does_not_wait_for_replies_is_paced_too(server: SFTPServer) -> None:
    """
    A client may send writes without waiting for their replies (here
    paramiko's request layer, 16 MiB of writes sent at once): the server
    stops reading the connection while the upload is ahead of the rate, so
    that sending takes seconds, not the loopback's fraction of one (the
    buffers in between take a few MiB at once).
    """
    piece = os.urandom(32 * 1024)
    client = connect(server, user="pace")
    try:
        remote = client.open("pipelined.bin", "wb")
        started = time.monotonic()
        for offset in range(0, PACED, len(piece)):
            client._async_request(type(None), CMD_WRITE, remote.handle, int64(offset), piece)
        sent = time.monotonic() - started
        remote.close()  # reads every reply, then the close's
        stored = time.monotonic() - started
    finally:
        client.close()
    print(f"\nunanswered writes, 16 MiB at {RATE // MiB} MiB/s: sent in {sent:.2f}s, stored in {stored:.2f}s")
    assert sent >= 2.0, sent
    assert 3.0 <= stored <= 6.0, stored
    assert (server.server.root / "pace" / "pipelined.bin").read_bytes() == piece * (PACED // len(piece))
