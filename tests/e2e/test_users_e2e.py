"""
The users file end to end: C{exftp-users} writes it, a real C{twistd exftp
--users FILE} serves it to ftplib and curl, and SIGHUP reloads it.
"""

from __future__ import annotations

import ftplib
import io
import os
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest
from conftest import REPO, FTPServer, code, list_lines, run_twistd, server_env

FAST = ("--login-failure-delay", "0.1")


def users_command() -> list[str]:
    """The installed C{exftp-users} console script, or the module it runs."""
    script = Path(sys.executable).with_name("exftp-users")
    return [str(script)] if script.exists() else [sys.executable, "-m", "exftp._users_cli"]


def exftp_users(*arguments: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run C{exftp-users ARGUMENTS}, the password (if any) on standard input."""
    return subprocess.run(
        [*users_command(), *arguments],
        input="" if password is None else password + "\n",
        env=server_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def added(path: Path, user: str, password: str, *options: str) -> None:
    result = exftp_users("add", str(path), user, *options, password=password)
    assert result.returncode == 0, result.stderr


def refused_login(server: FTPServer, user: str, password: str) -> int:
    client = server.connect()
    try:
        with pytest.raises(ftplib.error_perm) as refused:
            client.login(user, password)
        return code(refused.value)
    finally:
        client.close()


def hup(server: FTPServer, expected: str) -> None:
    """Send SIGHUP and wait for the server to log C{expected} about it."""
    start = server.log_position()
    os.kill(server.pid, signal.SIGHUP)
    server.wait_for_log(expected, start=start)
    assert server.alive()


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    """alice (Argon2id, home /alice) and bob (bcrypt, may only list and read)."""
    path = tmp_path / "users.toml"
    added(path, "alice", "alice-pw", "--root", "/alice")
    added(path, "bob", "bob-pw", "--hash", "bcrypt", "--permissions", "elr")
    return path


@pytest.fixture
def users_server(start_server: Callable[..., FTPServer], users_file: Path, tmp_path: Path) -> FTPServer:
    root = tmp_path / "root"
    (root / "alice").mkdir(parents=True)
    (root / "shared.txt").write_bytes(b"for everyone\n")
    return start_server("--users", str(users_file), *FAST, root=root)


def test_argon2_login_gets_its_root(users_server: FTPServer) -> None:
    client = users_server.login("alice", "alice-pw")
    try:
        assert client.pwd() == "/"
        client.storbinary("STOR hello.txt", io.BytesIO(b"hi alice\n"))
        assert list_lines(client, "NLST") == ["hello.txt"]  # not shared.txt: her root is /alice
    finally:
        client.close()
    assert (users_server.root / "alice" / "hello.txt").read_bytes() == b"hi alice\n"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_bcrypt_login_through_curl_gets_its_permissions(users_server: FTPServer, tmp_path: Path) -> None:
    base = ["curl", "--silent", "--show-error", "--max-time", "60", "--noproxy", "*", "--user", "bob:bob-pw"]
    url = f"ftp://127.0.0.1:{users_server.port}/"
    listing = subprocess.run([*base, "--list-only", url], capture_output=True, text=True, timeout=90, check=False)
    assert listing.returncode == 0, listing.stderr
    assert "shared.txt" in listing.stdout.split()
    got = subprocess.run([*base, url + "shared.txt"], capture_output=True, timeout=90, check=False)
    assert got.stdout == b"for everyone\n"
    source = tmp_path / "up.txt"
    source.write_bytes(b"no")
    upload = subprocess.run([*base, "--upload-file", str(source), url + "up.txt"],
                            capture_output=True, text=True, timeout=90, check=False)  # fmt: skip
    assert upload.returncode != 0 and "550" in upload.stderr
    assert not (users_server.root / "up.txt").exists()


def test_wrong_passwords_and_unknown_users_get_530(users_server: FTPServer) -> None:
    assert refused_login(users_server, "alice", "bob-pw") == 530
    assert refused_login(users_server, "bob", "wrong") == 530
    assert refused_login(users_server, "nobody", "alice-pw") == 530
    assert refused_login(users_server, "anonymous", "x") == 530  # --users alone: no anonymous


def test_sighup_reloads_the_file(users_server: FTPServer, users_file: Path) -> None:
    running = users_server.login("alice", "alice-pw")
    bob = users_server.login("bob", "bob-pw")
    try:
        changed = exftp_users("passwd", str(users_file), "alice", password="new-pw")
        assert changed.returncode == 0, changed.stderr
        hup(users_server, r"Users file .* reloaded: 2 users")
        assert refused_login(users_server, "alice", "alice-pw") == 530
        users_server.login("alice", "new-pw").close()
        assert bob.sendcmd("NOOP").startswith("200")  # an unchanged user keeps the session
        with pytest.raises(ftplib.error_temp) as ended:  # a changed one must log in again
            running.sendcmd("PWD")
        assert code(ended.value) == 421
    finally:
        running.close()
        bob.close()


def test_a_broken_file_on_reload_keeps_the_old_one(users_server: FTPServer, users_file: Path) -> None:
    good = users_file.read_text()
    users_file.write_text(good + '\n[users.carol]\npassword = "plain text"\n')
    try:
        hup(users_server, r"Users file .* not reloaded, keeping the old one: users\.carol\.password")
        users_server.login("alice", "alice-pw").close()
        assert refused_login(users_server, "carol", "plain text") == 530
    finally:
        users_file.write_text(good)


def test_a_plain_text_password_is_refused_at_start(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    path.write_text('[users.alice]\npassword = "hunter2"\n')
    result = run_twistd("exftp", "--users", str(path))
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "--users" in line and "alice" in line]
    assert len(lines) == 1, result.stdout + result.stderr
    assert "users.alice.password" in lines[0] and "plain-text passwords are refused" in lines[0]
    assert "hunter2" not in result.stdout + result.stderr


def test_fallthrough_to_auth_only_when_the_file_says_so(start_server: Callable[..., FTPServer],
                                                         users_file: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "alice").mkdir(parents=True)
    server = start_server("--users", str(users_file), "--auth", "memory:carol:carol-pw:alice:other", *FAST, root=root)
    assert refused_login(server, "carol", "carol-pw") == 530
    users_file.write_text("fallthrough = true\n" + users_file.read_text())
    hup(server, r"Users file .* reloaded")
    server.login("carol", "carol-pw").close()
    assert refused_login(server, "alice", "other") == 530  # in the file: the file only


def test_sighup_without_anything_to_reload_does_not_kill_the_server(start_server: Callable[..., FTPServer]) -> None:
    server = start_server("--auth", "memory:alice:secret")
    hup(server, "SIGHUP received: nothing to reload")
    server.login().close()


def test_exftp_users_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    added(path, "alice", "one", "--read-only")
    added(path, "bob", "two", "--hash", "bcrypt")
    assert exftp_users("add", str(path), "bob", password="again").returncode == 1
    listed = exftp_users("list", str(path))
    assert listed.stdout == "alice argon2id read-only\nbob bcrypt\n"
    assert exftp_users("passwd", str(path), "bob", password="three").returncode == 0
    assert exftp_users("del", str(path), "alice").returncode == 0
    assert exftp_users("list", str(path)).stdout == "bob bcrypt\n"  # passwd keeps the scheme
    failed = exftp_users("del", str(path), "alice")
    assert failed.returncode == 1 and failed.stderr == f"exftp-users: {path}: no user 'alice'\n"
    empty = exftp_users("passwd", str(path), "bob", password="")
    assert empty.returncode == 1 and "empty" in empty.stderr
    assert "three" not in path.read_text()
    stored = tomllib.loads(path.read_text())["users"]["bob"]["password"]
    assert bcrypt.checkpw(b"three", stored.encode())
