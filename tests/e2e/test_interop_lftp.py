"""
Interop: lftp's C{mirror} of a 200-file tree up and down, times kept, and
C{mirror --continue} resuming downloads and uploads with C{REST}.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from _interop import (
    Run,
    assert_same_files,
    client_env,
    commands_in,
    expected_snapshot,
    make_tree,
    mtimes,
    need,
    run_client,
    set_mtimes,
    transfer_bytes,
    upload_temporaries,
)
from conftest import PASSWORD, USER, Area, FTPServer, wait_until

pytestmark = need("lftp")

#: No TLS, no retries that could hide a failure, no waiting for reconnections.
SETTINGS = (
    "set cmd:fail-exit yes; set cmd:interactive no; set ftp:ssl-allow no; set ftp:passive-mode yes; "
    "set net:max-retries 1; set net:persist-retries 0; set net:timeout 10; set net:reconnect-interval-base 1; "
    "set xfer:use-temp-file no"
)
SENT = "---> "


def lftp_args(server: FTPServer, script: str) -> list[str]:
    # -d: the debug log shows every command sent ("---> ") and reply ("<--- ").
    opening = f"open -u {USER},{PASSWORD} -p {server.port} {server.host}"
    return ["lftp", "-d", "-c", f"{SETTINGS}; {opening}; {script}"]


def lftp(server: FTPServer, script: str, cwd: Path) -> Run:
    return run_client(lftp_args(server, script), cwd=cwd, home=cwd / "home")


def test_mirror_200_files_up_and_down(server: FTPServer, area: Area, tmp_path: Path) -> None:
    """
    C{mirror -R} uploads a 200-file tree (nested, binary, UTF-8 names with
    spaces) byte for byte; C{mirror} brings it back byte for byte, with the
    server's modification times. Four transfers run at once each way.
    """
    files = make_tree(tmp_path / "source", 200)
    expected = expected_snapshot(files)
    run = lftp(server, f"mirror -R --parallel=4 source '{area.path}/tree'", tmp_path)
    assert_same_files(expected, area.local / "tree", "server after mirror -R")
    assert upload_temporaries(area.local) == []
    sent = commands_in(run.log, SENT)
    assert sum(1 for line in sent if line.startswith("STOR ")) == len(files), run.describe()

    names = sorted(files)
    stamps = set_mtimes(area.local / "tree", names, base=1_600_000_000)
    run = lftp(server, f"mirror --parallel=4 '{area.path}/tree' back", tmp_path)
    assert_same_files(expected, tmp_path / "back", "client after mirror")
    assert mtimes(tmp_path / "back", names) == stamps, run.describe()


def test_mirror_up_keeps_times_and_modes(server: FTPServer, area: Area, tmp_path: Path) -> None:
    """
    C{mirror -R} sets each uploaded file's time with C{MFMT} (FEAT lists it)
    and its mode with C{SITE CHMOD}, so the server's copies carry both.
    """
    files = make_tree(tmp_path / "source", 12)
    names = sorted(files)
    stamps = set_mtimes(tmp_path / "source", names, base=1_500_000_000)
    modes = {name: (0o600, 0o640, 0o644, 0o755)[index % 4] for index, name in enumerate(names)}
    for name, mode in modes.items():
        (tmp_path / "source" / name).chmod(mode)
    run = lftp(server, f"mirror -R source '{area.path}/tree'", tmp_path)
    assert_same_files(expected_snapshot(files), area.local / "tree", "server after mirror -R")
    mfmt = [line for line in commands_in(run.log, SENT) if line.startswith("MFMT ")]
    assert len(mfmt) == len(files), run.describe()
    assert mtimes(area.local / "tree", names) == stamps, run.describe()
    assert {name: (area.local / "tree" / name).stat().st_mode & 0o7777 for name in names} == modes, run.describe()


def test_mirror_down_parsing_list_instead_of_mlsd(server: FTPServer, area: Area, tmp_path: Path) -> None:
    """With MLSD off, lftp parses LIST (odd names included) and asks MDTM for times: same bytes, same times."""
    files = make_tree(area.local / "tree", 40)
    names = sorted(files)
    stamps = set_mtimes(area.local / "tree", names, base=1_600_000_000)
    run = lftp(server, f"set ftp:use-mlsd off; mirror '{area.path}/tree' back", tmp_path)
    assert_same_files(expected_snapshot(files), tmp_path / "back", "client after mirror over LIST")
    assert mtimes(tmp_path / "back", names) == stamps, run.describe()
    assert not any(line.startswith("MLSD") for line in commands_in(run.log, SENT)), run.describe()


def _partial_tree(server_dir: Path, size: int) -> dict[str, bytes]:
    files = {"big.bin": os.urandom(size), "small.txt": b"small\n", "sub/other.bin": os.urandom(3000)}
    for name, data in files.items():
        (server_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (server_dir / name).write_bytes(data)
    return files


def test_mirror_continue_resumes_partial_download(server: FTPServer, area: Area, tmp_path: Path) -> None:
    """
    A local copy cut short (as an interrupted download leaves it, newer than
    the remote file) is completed with C{REST <its size>} and C{RETR}: only
    the missing bytes move, and the result is byte-exact.
    """
    remote = area.local / "tree"
    files = _partial_tree(remote, 1_000_003)
    set_mtimes(remote, sorted(files), base=1_600_000_000)
    local = tmp_path / "down"
    local.mkdir()
    have = 300_001
    (local / "big.bin").write_bytes(files["big.bin"][:have])
    start = server.log_position()
    run = lftp(server, f"mirror --continue '{area.path}/tree' down", tmp_path)
    assert_same_files(expected_snapshot(files), local, "client after mirror --continue")
    sent = commands_in(run.log, SENT)
    assert f"REST {have}" in sent, run.describe()
    assert sent[sent.index(f"REST {have}") + 1] == "RETR big.bin", run.describe()
    path = f"{area.path}/tree/big.bin"
    wait_until(lambda: transfer_bytes(server.log(start), "downloaded", path), "the log line")
    assert transfer_bytes(server.log(start), "downloaded", path) == [len(files["big.bin"]) - have]


def test_mirror_continue_resumes_partial_upload(server: FTPServer, area: Area, tmp_path: Path) -> None:
    """
    A server copy cut short (newer than the local file) is completed with
    C{REST <its size>} and C{STOR}: the server writes from that offset and
    the result is byte-exact.
    """
    local = tmp_path / "up"
    files = _partial_tree(local, 1_000_003)
    set_mtimes(local, sorted(files), base=1_500_000_000)
    remote = area.local / "tree"
    remote.mkdir()
    have = 400_000
    (remote / "big.bin").write_bytes(files["big.bin"][:have])
    start = server.log_position()
    run = lftp(server, f"mirror -R --continue up '{area.path}/tree'", tmp_path)
    assert_same_files(expected_snapshot(files), remote, "server after mirror -R --continue")
    assert upload_temporaries(area.local) == []
    sent = commands_in(run.log, SENT)
    assert f"REST {have}" in sent, run.describe()
    assert sent[sent.index(f"REST {have}") + 1] == "STOR big.bin", run.describe()
    path = f"{area.path}/tree/big.bin"
    wait_until(lambda: transfer_bytes(server.log(start), "uploaded", path), "the log line")
    assert transfer_bytes(server.log(start), "uploaded", path) == [len(files["big.bin"]) - have]


def _kill_when(process: subprocess.Popen[bytes], condition: Callable[[], bool], what: str) -> None:
    """SIGKILL C{process} (as a crash or a pulled cable would stop it) once C{condition} holds."""
    try:
        wait_until(condition, what)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)


def test_killed_download_then_mirror_continue(server: FTPServer, area: Area, tmp_path: Path) -> None:
    """
    lftp killed in the middle of a (rate-limited) download leaves a partial
    file; the server carries on, and C{mirror --continue} completes the file
    with REST from where the partial file ends.
    """
    remote = area.local / "tree"
    files = _partial_tree(remote, 4_000_000)
    set_mtimes(remote, sorted(files), base=1_600_000_000)
    local = tmp_path / "down"
    (local / "sub").mkdir(parents=True)
    (tmp_path / "home").mkdir()
    slow = lftp_args(server, f"set net:limit-rate 100000; get '{area.path}/tree/big.bin' -o down/big.bin")
    process = subprocess.Popen(
        slow, cwd=tmp_path, env=client_env(tmp_path / "home"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    partial = local / "big.bin"
    _kill_when(process, lambda: partial.exists() and partial.stat().st_size >= 65536, "a partial download")
    have = partial.stat().st_size
    assert 0 < have < len(files["big.bin"])
    assert partial.read_bytes() == files["big.bin"][:have]

    run = lftp(server, f"mirror --continue '{area.path}/tree' down", tmp_path)
    assert_same_files(expected_snapshot(files), local, "client after mirror --continue")
    assert f"REST {have}" in commands_in(run.log, SENT), run.describe()
    with server.control() as control:  # the server is still serving
        control.login()


def test_killed_upload_then_mirror_continue(server: FTPServer, area: Area, tmp_path: Path) -> None:
    """
    lftp killed in the middle of a (rate-limited) upload: the server leaves
    no temporary file behind, whatever it kept under the real name is a true
    prefix, and C{mirror -R --continue} completes it byte-exact.
    """
    local = tmp_path / "up"
    files = _partial_tree(local, 4_000_000)
    set_mtimes(local, sorted(files), base=1_500_000_000)
    remote = area.local / "tree"
    remote.mkdir()
    (tmp_path / "home").mkdir()
    slow = lftp_args(server, f"set net:limit-rate 100000; put up/big.bin -o '{area.path}/tree/big.bin'")
    process = subprocess.Popen(
        slow, cwd=tmp_path, env=client_env(tmp_path / "home"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    def receiving() -> bool:
        for temporary in upload_temporaries(remote):
            try:
                if os.stat(temporary).st_size >= 65536:
                    return True
            except FileNotFoundError:
                pass
        return False

    _kill_when(process, receiving, "a partial upload on the server")
    wait_until(lambda: not upload_temporaries(remote), "the server to remove its upload temporary")
    kept = remote / "big.bin"
    if kept.exists():
        # In stream mode the end of the data connection is the end of the
        # file, so the server may keep what arrived: only ever a true prefix.
        kept_data = kept.read_bytes()
        assert kept_data == files["big.bin"][: len(kept_data)]

    run = lftp(server, f"mirror -R --continue up '{area.path}/tree'", tmp_path)
    assert_same_files(expected_snapshot(files), remote, "server after mirror -R --continue")
    assert upload_temporaries(remote) == [], run.describe()
