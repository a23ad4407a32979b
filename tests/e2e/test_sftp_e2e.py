"""
SFTP end to end: OpenSSH's C{sftp} in batch mode (with C{sshpass} for
passwords) and C{scp} against a real C{twistd exftp --sftp} subprocess.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from conftest import AUTH, DEADLINE, PASSWORD, USER, FTPServer, wait_until

pytestmark = pytest.mark.skipif(
    shutil.which("sftp") is None or shutil.which("sshpass") is None, reason="needs openssh-client and sshpass"
)

_SFTP_READY = re.compile(r"exftp SFTP listening on (?P<host>\S+):(?P<port>\d+)\s*$")
_FINGERPRINT = re.compile(r"SSH host key: (?P<fingerprint>ssh-ed25519 SHA256:\S+)")
FAST = ("--login-failure-delay", "0.1")


class SFTPServer:
    """A C{twistd exftp} serving SFTP (and FTP) on port 0."""

    def __init__(self, root: Path, state: Path, *options: str, sftp: str = "tcp:0:interface=127.0.0.1",
                 root_option: bool = True) -> None:
        self.server = FTPServer(root, "--sftp", sftp, "--state-dir", str(state), *options, root_option=root_option)
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


# Public keys, policy, restarts


def keypair(directory: Path, name: str = "id_ed25519") -> tuple[Path, str]:
    """A new Ed25519 key pair (no passphrase): the private key's path and the public key line."""
    path = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(path)], check=True,
                   timeout=DEADLINE)
    return path, (directory / f"{name}.pub").read_text().strip()


def sftp_with_key(port: int, key: Path, commands: Sequence[str], cwd: Path, user: str = USER,
                  known_hosts: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run C{sftp -b -} with a private key only (no password)."""
    command = ["sftp", "-o", "BatchMode=yes", "-o", "PasswordAuthentication=no", "-o", "IdentitiesOnly=yes",
               "-o", "IdentityAgent=none", "-i", str(key), *ssh_options(port, known_hosts), "-b", "-",
               f"{user}@127.0.0.1"]
    return subprocess.run(command, input="\n".join(commands) + "\n", cwd=cwd, capture_output=True, text=True,
                          timeout=DEADLINE * 4, check=False)


def users_file(path: Path, **entries: dict[str, object]) -> Path:
    """A users file (TOML) whose users all have the password L{PASSWORD}."""
    from exftp.auth._users import hash_password

    hashed = hash_password(PASSWORD, "bcrypt")
    lines = []
    for name, settings in entries.items():
        lines.append(f"[users.{name}]")
        lines.append(f'password = "{hashed}"')
        for key, value in settings.items():
            if isinstance(value, bool):
                lines.append(f"{key} = {str(value).lower()}")
            elif isinstance(value, int):
                lines.append(f"{key} = {value}")
            elif isinstance(value, list):
                lines.append(f"{key} = [" + ", ".join(f'"{item}"' for item in value) + "]")
            else:
                lines.append(f'{key} = "{value}"')
    path.write_text("\n".join(lines) + "\n")
    return path


def start(tmp_path: Path, *options: str) -> SFTPServer:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    return SFTPServer(root, tmp_path / "state", *options).start()


def test_public_key_login_from_the_users_file(tmp_path: Path) -> None:
    key, public = keypair(tmp_path)
    other, _ = keypair(tmp_path, "other")
    users = users_file(tmp_path / "users.toml", alice={"authorized_keys": [public]}, bob={})
    server = start(tmp_path, "--users", str(users), *FAST)
    try:
        payload = os.urandom(1_000_003)
        (tmp_path / "k.bin").write_bytes(payload)
        result = sftp_with_key(server.port, key, ["put k.bin", "get k.bin back.bin"], tmp_path)
        assert result.returncode == 0, result.stderr
        assert (server.server.root / "k.bin").read_bytes() == payload
        assert (tmp_path / "back.bin").read_bytes() == payload
        # A key that is not listed, and a user without keys, are refused.
        assert sftp_with_key(server.port, other, ["ls"], tmp_path).returncode != 0
        assert sftp_with_key(server.port, key, ["ls"], tmp_path, user="bob").returncode != 0
        # Passwords still work for everyone in the file.
        assert sftp_batch(server.port, ["ls"], tmp_path, user="bob").returncode == 0
    finally:
        server.stop()


def test_read_only_user_is_refused_every_write(tmp_path: Path) -> None:
    users = users_file(tmp_path / "users.toml", reader={"read_only": True})
    root = tmp_path / "root"
    root.mkdir()
    (root / "dir").mkdir()
    (root / "file.txt").write_text("keep")
    (tmp_path / "up.txt").write_text("new")
    server = start(tmp_path, "--users", str(users), *FAST)
    try:
        for verb in ["put up.txt new.txt", "put up.txt file.txt", "mkdir made", "rm file.txt",
                     "rename file.txt moved.txt", "rmdir dir", "chmod 600 file.txt", "ln -s file.txt link"]:
            result = sftp_batch(server.port, [verb], tmp_path, user="reader")
            assert result.returncode != 0, verb
            assert "denied" in result.stderr.lower() or "unsupported" in result.stderr.lower(), (verb, result.stderr)
        assert sorted(p.name for p in root.iterdir()) == ["dir", "file.txt"]
        assert (root / "file.txt").read_text() == "keep"
        result = sftp_batch(server.port, ["get file.txt got.txt"], tmp_path, user="reader")
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "got.txt").read_text() == "keep"
    finally:
        server.stop()


def test_brute_force_is_slowed_then_banned(tmp_path: Path) -> None:
    server = start(tmp_path, "--auth", AUTH, "--login-failure-delay", "0.5", "--ban-threshold", "3")
    try:
        for _ in range(3):
            began = time.monotonic()
            assert sftp_batch(server.port, ["ls"], tmp_path, password="guess").returncode != 0
            assert time.monotonic() - began >= 0.5
        server.server.wait_for_log(r"Banned 127\.0\.0\.1")
        # Banned: the right password no longer gets in, nor does a new connection.
        result = sftp_batch(server.port, ["ls"], tmp_path)
        assert result.returncode != 0
    finally:
        server.stop()


def test_host_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    server = start(tmp_path, "--auth", AUTH, *FAST)
    try:
        first = server.fingerprint()
        assert "Generated a new SSH host key" in server.server.log()
        known = tmp_path / "known_hosts"
        scan = subprocess.run(["ssh-keyscan", "-p", str(server.port), "-t", "ed25519", "127.0.0.1"],
                              capture_output=True, text=True, timeout=DEADLINE, check=False)
        assert "ssh-ed25519" in scan.stdout, scan.stderr
        known.write_text(scan.stdout)
    finally:
        server.stop()
    assert (tmp_path / "state" / "ssh_host_ed25519_key").stat().st_mode & 0o077 == 0
    server = start(tmp_path, "--auth", AUTH, *FAST)
    try:
        assert server.fingerprint() == first
        assert "Generated a new SSH host key" not in server.server.log()
        # A client that knew the key from the first run (now on another port) trusts the second.
        known.write_text(re.sub(r"\]:\d+", f"]:{server.port}", known.read_text()))
        command = ["sshpass", "-p", PASSWORD, "sftp", "-o", "BatchMode=no", "-o", "PubkeyAuthentication=no",
                   *ssh_options(server.port, known), "-b", "-", f"{USER}@127.0.0.1"]
        result = subprocess.run(command, input="ls\n", capture_output=True, text=True, timeout=DEADLINE * 2,
                                check=False)
        assert result.returncode == 0, result.stderr
    finally:
        server.stop()


def test_events_carry_the_protocol(tmp_path: Path) -> None:
    xferlog = tmp_path / "xferlog"
    server = start(tmp_path, "--auth", AUTH, *FAST, "--xferlog", str(xferlog),
                   "--metrics", "tcp:0:interface=127.0.0.1")
    try:
        metrics = server.server.wait_for_log(r"exftp metrics at (?P<url>http://\S+/metrics)")["url"]
        (tmp_path / "e.txt").write_text("event")
        result = sftp_batch(server.port, ["put e.txt", "get e.txt back.txt"], tmp_path)
        assert result.returncode == 0, result.stderr

        def logged() -> bool:
            return xferlog.exists() and len(xferlog.read_text().splitlines()) == 2

        wait_until(logged, "two xferlog lines")
        for line in xferlog.read_text().splitlines():
            fields = line.split()
            assert fields[-4] == "sftp" and fields[-1] == "c", line
        with urllib.request.urlopen(metrics, timeout=DEADLINE) as answer:
            text = answer.read().decode()
        assert 'exftp_events_total{action="upload",protocol="sftp",result="ok"} 1.0' in text
        assert 'exftp_events_total{action="login",protocol="sftp",result="ok"} 1.0' in text
    finally:
        server.stop()
