"""
The server as a process: the twistd plugin and its options, idle timeouts,
shutdown on SIGTERM, and sessions that must not disturb one another.
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import AUTH, DEADLINE, Area, Control, FTPServer, retr_bytes, run_twistd, server_env, twistd_command

# The twistd plugin


def test_twistd_lists_exftp() -> None:
    result = run_twistd("--help")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\s+exftp\s+\S", result.stdout, re.MULTILINE), result.stdout


OPTIONS = ["--port", "--root", "--storage", "--auth", "--passive-ports", "--passive-address", "--idle-timeout",
           "--data-timeout"]  # fmt: skip


def test_exftp_help_documents_every_option() -> None:
    result = run_twistd("exftp", "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for option in OPTIONS:
        # The option's own line: its name then "=" or the column gap, not a mention in another's wrapped text.
        found = re.search(rf"^\s+(?:-\w, )?{option}(?:=|\s{{2,}})\s*(\S.*)$", text, re.MULTILINE)
        assert found, f"{option} is not documented:\n{text}"
        assert len(found.group(1)) > 10, f"{option} has no real description: {found.group(0)!r}"


def _start_and_expect_refusal(tmp_path: Path, *options: str) -> str:
    """
    Start the server with C{options}; it must exit non-zero without serving.
    The combined output.
    """
    command = [*twistd_command(), "-n", "--pidfile=", "exftp", "--port", "tcp:0:interface=127.0.0.1", *options]
    process = subprocess.Popen(
        command, env=server_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = []
    assert process.stdout is not None
    try:
        for line in process.stdout:
            output.append(line)
            if "exftp listening on" in line:
                pytest.fail(f"the server accepted {options} and started:\n{''.join(output)}")
        status = process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = "".join(output)
    assert status != 0, f"exit status 0 for {options}:\n{text}"
    return text


@pytest.mark.parametrize(
    ("options", "mention"),
    [
        (["--storage", "bogus:x"], "--storage"),
        (["--storage", "memory:extra"], "--storage"),
        (["--passive-ports", "5-1"], "--passive-ports"),
        (["--passive-ports", "abc"], "--passive-ports"),
        (["--passive-ports", "0-10"], "--passive-ports"),
        (["--passive-ports", "60000-70000"], "--passive-ports"),
        (["--root", "/nonexistent/exftp-e2e"], "/nonexistent/exftp-e2e"),
        (["--root", ".", "--storage", "memory"], "--storage"),
        (["--auth", "bogus:x"], "--auth"),
        (["--idle-timeout", "soon"], "soon"),
        (["--data-timeout", "later"], "later"),
        (["--idle-timeout", "-1"], "--idle-timeout"),
        (["--data-timeout", "-5"], "--data-timeout"),
        (["--passive-address", "not-an-address"], "--passive-address"),
        (["--passive-address", "::1"], "--passive-address"),
        (["--port", "bogus:1"], "bogus:1"),
        (["--port", "tcp:notaport"], "tcp:notaport"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_bad_options_exit_non_zero_cleanly(tmp_path: Path, options: list[str], mention: str) -> None:
    text = _start_and_expect_refusal(tmp_path, *options)
    assert "Traceback" not in text, text
    assert mention in text, f"the message does not say what is wrong with {mention}:\n{text}"


def test_port_in_use_exits_non_zero_cleanly(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        command = [*twistd_command(), "-n", "--pidfile=", "exftp", "--port", f"tcp:{port}:interface=127.0.0.1"]
        result = subprocess.run(
            command, env=server_env(), cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
        )
    text = result.stdout + result.stderr
    assert result.returncode != 0, text
    assert "Traceback" not in text, text
    assert "cannot listen" in text and str(port) in text, text


def test_memory_storage(start_server: Callable[..., FTPServer]) -> None:
    # --storage memory keeps files in the process: nothing reaches the directory it runs in.
    server = start_server("--storage", "memory", "--auth", AUTH, root_option=False)
    client = server.login()
    try:
        client.mkd("/d")
        client.storbinary("STOR /d/f.bin", io.BytesIO(b"in memory"))
        assert retr_bytes(client, "/d/f.bin") == b"in memory"
        assert client.nlst("/d") in (["f.bin"], ["/d/f.bin"])
    finally:
        client.close()
    assert list(server.root.iterdir()) == []


# Idle timeout


@pytest.fixture(scope="module")
def impatient(start_server: Callable[..., FTPServer]) -> FTPServer:
    return start_server("--auth", AUTH, "--idle-timeout", "1")


def test_idle_session_gets_421_and_is_closed(impatient: FTPServer) -> None:
    with impatient.control() as control:
        control.login()
        reply = control.reply()  # Nothing sent: the next thing from the server is the timeout.
        assert reply.code == 421, reply
        assert control.at_eof()


def test_idle_connection_before_login_gets_421(impatient: FTPServer) -> None:
    with impatient.control() as control:
        assert control.greeting.code == 220
        assert control.reply().code == 421
        assert control.at_eof()


def test_client_that_never_logs_in_gets_421_at_the_login_deadline(start_server: Callable[..., FTPServer]) -> None:
    server = start_server("--auth", AUTH, "--login-timeout", "1")
    client = ftplib.FTP()
    client.connect(server.host, server.port, timeout=10)
    client.sendcmd("USER alice")  # a command, but no login: the deadline still runs
    with pytest.raises(ftplib.error_temp, match="421 Login timeout"):
        client.getresp()
    assert client.sock is not None and client.sock.recv(1) == b""  # and closed
    client.close()


def test_slow_upload_is_not_cut_by_idle_timeout(impatient: FTPServer) -> None:
    # The control connection is silent during a transfer; that is not idleness.
    with impatient.control() as control:
        control.login()
        assert control.cmd("TYPE I").code == 200
        _host, port = control.pasv()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as data:
            assert control.cmd("STOR /slow.bin").code == 150
            for _ in range(5):
                data.sendall(b"x" * 1000)
                time.sleep(0.5)  # pacing a slow client, not waiting for readiness
        assert control.reply().code == 226
    assert (impatient.root / "slow.bin").read_bytes() == b"x" * 5000


# Shutdown


def test_sigterm_sends_421_to_connected_clients(start_server: Callable[..., FTPServer]) -> None:
    server = start_server("--auth", AUTH)
    (server.root / "big.bin").write_bytes(os.urandom(16 * 1024 * 1024))
    with server.control() as logged_in, server.control() as anonymous_peer, server.control() as transferring:
        logged_in.login()
        assert logged_in.cmd("CWD /").code == 250
        transferring.login()
        assert transferring.cmd("TYPE I").code == 200
        _host, port = transferring.pasv()
        data = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        try:
            assert transferring.cmd("RETR /big.bin").code == 150
            assert data.recv(1024)
            server.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            for control in (logged_in, anonymous_peer):
                reply = control.reply()
                assert reply.code == 421, reply
                assert control.at_eof()
            # The interrupted transfer may be reported (426) before the 421.
            reply = transferring.reply()
            if reply.code == 426:
                reply = transferring.reply()
            assert reply.code == 421, reply
            assert transferring.at_eof()
        finally:
            data.close()
    # twistd ends with the signal that stopped it, after a clean shutdown.
    assert server.wait_exit() in (0, -signal.SIGTERM)
    assert "Server Shut Down" in server.log()


def test_sigterm_with_no_sessions(start_server: Callable[..., FTPServer]) -> None:
    server = start_server()
    # One exchange first: the readiness line is logged before twistd runs its reactor and
    # installs its signal handlers, so only now is SIGTERM sure to reach the server's code.
    with server.control() as control:
        assert control.greeting.code == 220
        assert control.cmd("QUIT").code == 221
    server.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    assert server.wait_exit() in (0, -signal.SIGTERM)
    assert "Server Shut Down" in server.log()


# Sessions do not disturb one another


def _start_download(server: FTPServer, path: str) -> tuple[Control, socket.socket]:
    control = server.control()
    control.login()
    assert control.cmd("TYPE I").code == 200
    _host, port = control.pasv()
    data = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    assert control.cmd(f"RETR {path}").code == 150
    return control, data


def _finish_download(control: Control, data: socket.socket, digest: hashlib._Hash) -> str:
    with data:
        while chunk := data.recv(1 << 20):
            digest.update(chunk)
    assert control.reply().code == 226
    return digest.hexdigest()


def test_abusive_sessions_do_not_disturb_a_transfer(server: FTPServer, area: Area) -> None:
    payload = os.urandom(24 * 1024 * 1024)
    area.file("big.bin", payload)
    control, data = _start_download(server, f"{area.path}/big.bin")
    digest = hashlib.sha256(data.recv(65536))
    try:
        # Garbage: binary bytes, invalid UTF-8, Telnet noise, empty lines.
        with server.control() as garbage:
            for line in (b"\x00\x01\x02\xfe", b"\xc3\x28 \xa0\xa1", b"\xff\xfb\x01\xff\xfd\x03", b"", b"   "):
                reply = garbage.cmd(line)
                assert 500 <= reply.code < 600, (line, reply)
            assert garbage.cmd("NOOP").code == 200
        # A line far over the limit: refused; the server may close that connection or carry on.
        with server.control() as huge:
            huge.sock.sendall(b"USER " + b"A" * (1024 * 1024) + b"\r\n")
            try:
                reply = huge.reply()
                assert reply.code in (500, 501), reply
            except (ConnectionResetError, BrokenPipeError, EOFError):
                pass
        # An endless line with no newline at all.
        with server.control() as endless:
            try:
                for _ in range(64):
                    endless.sock.sendall(b"B" * 65536)
                assert endless.reply().code in (500, 501)
            except (ConnectionResetError, BrokenPipeError, EOFError):
                pass
        # A flood of pipelined commands.
        with server.control() as flood:
            flood.sock.sendall(b"NOOP\r\n" * 5000)
            codes = [flood.reply().code for _ in range(5000)]
            assert set(codes) == {200}
        # Meanwhile, another session works normally.
        with server.control() as bystander:
            bystander.login()
            assert bystander.cmd(f"SIZE {area.path}/big.bin").lines == [f"213 {len(payload)}"]
    finally:
        received = _finish_download(control, data, digest)
        control.close()
    assert received == hashlib.sha256(payload).hexdigest()


def test_parallel_transfers_are_independent(server: FTPServer, area: Area) -> None:
    payloads = [os.urandom(3 * 1024 * 1024 + n) for n in range(4)]
    for n, payload in enumerate(payloads):
        area.file(f"p{n}.bin", payload)
    downloads = [_start_download(server, f"{area.path}/p{n}.bin") for n in range(4)]
    # Read them round-robin so that every transfer is in flight at once.
    digests = [hashlib.sha256() for _ in payloads]
    open_ = set(range(4))
    while open_:
        for n in sorted(open_):
            chunk = downloads[n][1].recv(256 * 1024)
            if chunk:
                digests[n].update(chunk)
            else:
                open_.discard(n)
    for n, (control, data) in enumerate(downloads):
        data.close()
        assert control.reply().code == 226
        control.close()
        assert digests[n].hexdigest() == hashlib.sha256(payloads[n]).hexdigest()
