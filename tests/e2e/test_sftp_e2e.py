"""
SFTP end to end: OpenSSH's C{sftp} in batch mode (with C{sshpass} for
passwords) and C{scp} against a real C{twistd exftp --sftp} subprocess.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from conftest import AUTH, DEADLINE, PASSWORD, USER, FTPServer

pytestmark = pytest.mark.skipif(
    shutil.which("sftp") is None or shutil.which("sshpass") is None, reason="needs openssh-client and sshpass"
)

_SFTP_READY = re.compile(r"exftp SFTP listening on (?P<host>\S+):(?P<port>\d+)\s*$")
_FINGERPRINT = re.compile(r"SSH host key.*: (?P<fingerprint>ssh-ed25519 SHA256:\S+)")
FAST = ("--login-failure-delay", "0.1")


class SFTPServer:
    """A C{twistd exftp} serving SFTP (and FTP) on port 0."""

    def __init__(self, root: Path, state: Path, *options: str) -> None:
        self.server = FTPServer(root, "--sftp", "tcp:0:interface=127.0.0.1", "--state-dir", str(state), *options)
        self.port = 0

    def start(self) -> SFTPServer:
        self.server.start()
        self.port = int(self.server.wait_for_log(_SFTP_READY)["port"])
        return self

    def stop(self) -> None:
        self.server.stop()

    def fingerprint(self) -> str:
        return self.server.wait_for_log(_FINGERPRINT)["fingerprint"]


def ssh_options(port: int, known_hosts: Path | None = None) -> list[str]:
    return [
        "-o", "StrictHostKeyChecking=" + ("yes" if known_hosts else "no"),
        "-o", f"UserKnownHostsFile={known_hosts or os.devnull}",
        "-o", "LogLevel=ERROR",
        "-o", "ConnectTimeout=10",
        "-P", str(port),
    ]


def sftp_batch(port: int, commands: Sequence[str], cwd: Path, password: str = PASSWORD, user: str = USER,
               extra: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """Run OpenSSH's C{sftp -b -} with a password (through sshpass)."""
    command = ["sshpass", "-p", password, "sftp", "-o", "BatchMode=no", "-o", "PubkeyAuthentication=no",
               "-o", "NumberOfPasswordPrompts=1", *ssh_options(port), *extra, "-b", "-", f"{user}@127.0.0.1"]
    return subprocess.run(command, input="\n".join(commands) + "\n", cwd=cwd, capture_output=True, text=True,
                          timeout=DEADLINE * 4, check=False)


@pytest.fixture
def sftp_server(tmp_path: Path) -> Iterator[SFTPServer]:
    root = tmp_path / "root"
    root.mkdir()
    server = SFTPServer(root, tmp_path / "state", "--auth", AUTH, *FAST).start()
    try:
        yield server
    finally:
        server.stop()


def test_password_login_and_every_basic_verb(sftp_server: SFTPServer, tmp_path: Path) -> None:
    root = sftp_server.server.root
    work = tmp_path / "client"
    work.mkdir()
    payload = os.urandom(3 * 1024 * 1024 + 12345)  # many requests in flight, a short last one
    (work / "up.bin").write_bytes(payload)
    result = sftp_batch(sftp_server.port, [
        "mkdir dir",
        "put up.bin dir/a.bin",
        "ls -l dir",
        "rename dir/a.bin dir/b.bin",
        "get dir/b.bin down.bin",
        "pwd",
    ], work)
    assert result.returncode == 0, result.stderr
    assert "a.bin" in result.stdout
    assert (work / "down.bin").read_bytes() == payload
    assert (root / "dir" / "b.bin").read_bytes() == payload
    assert not (root / "dir" / "a.bin").exists()
    assert "Remote working directory: /" in result.stdout

    result = sftp_batch(sftp_server.port, ["rm dir/b.bin", "rmdir dir"], work)
    assert result.returncode == 0, result.stderr
    assert list(root.iterdir()) == []


def test_wrong_password_is_refused(sftp_server: SFTPServer, tmp_path: Path) -> None:
    result = sftp_batch(sftp_server.port, ["ls"], tmp_path, password="wrong")
    assert result.returncode != 0
    assert "Permission denied" in result.stderr
    sftp_server.server.wait_for_log(r"Login failed for 'alice' from 127\.0\.0\.1")


def test_scp_copies_both_ways(sftp_server: SFTPServer, tmp_path: Path) -> None:
    payload = os.urandom(700_001)
    (tmp_path / "s.bin").write_bytes(payload)
    base = ["sshpass", "-p", PASSWORD, "scp", "-o", "BatchMode=no", "-o", "PubkeyAuthentication=no",
            *ssh_options(sftp_server.port)]
    upload = subprocess.run([*base, str(tmp_path / "s.bin"), f"{USER}@127.0.0.1:/s.bin"], capture_output=True,
                            text=True, timeout=DEADLINE * 4, check=False)
    assert upload.returncode == 0, upload.stderr
    assert (sftp_server.server.root / "s.bin").read_bytes() == payload
    download = subprocess.run([*base, f"{USER}@127.0.0.1:/s.bin", str(tmp_path / "back.bin")], capture_output=True,
                              text=True, timeout=DEADLINE * 4, check=False)
    assert download.returncode == 0, download.stderr
    assert (tmp_path / "back.bin").read_bytes() == payload


def test_shell_and_commands_are_refused(sftp_server: SFTPServer, tmp_path: Path) -> None:
    command = ["sshpass", "-p", PASSWORD, "ssh", "-o", "BatchMode=no", "-o", "PubkeyAuthentication=no", "-T",
               *[o if o != "-P" else "-p" for o in ssh_options(sftp_server.port)], f"{USER}@127.0.0.1", "id"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=DEADLINE * 2, check=False)
    assert result.returncode != 0
    assert "uid=" not in result.stdout
    sftp_server.server.wait_for_log(r"Refused a command for 'alice'")
