"""
The README's commands, run as written: the quick start, the daemon with a
umask, and the programmer example (exftp.Config and build_service) driven
by ftplib, scraped over HTTP and stopped with SIGTERM.
"""

from __future__ import annotations

import ftplib
import io
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from _commands import Command, code_blocks, replace_once, with_twistd
from conftest import DEADLINE, PASSWORD, USER, server_env, wait_until
from prometheus_client.parser import text_string_to_metric_families

TEST_COMMAND = "python3 -m pip install -c .ci/constraints.txt '.[test,lint,typing]' && python3 -m pytest"


def test_quick_start_serves_the_directory_and_leaves_no_pid_file(tmp_path: Path) -> None:
    venv, start, tests = code_blocks("## Quick start")
    assert venv == "python3 -m venv .venv && . .venv/bin/activate"
    assert tests == TEST_COMMAND
    install, _, server = start.partition(" && ")
    assert install == "python3 -m pip install ."
    (tmp_path / "shared.txt").write_text("hello\n")
    (tmp_path / ".git").mkdir()
    # The README's command as written; only the port is moved off 2121 (FTP_PORT), which others may hold.
    command = Command(tmp_path, with_twistd(shlex.split(server)), {"FTP_PORT": "0"}).start()
    try:
        assert command.host == "127.0.0.1"
        listing = subprocess.run(
            ["curl", "-sS", "--max-time", str(DEADLINE), f"ftp://127.0.0.1:{command.port}/"],
            capture_output=True, text=True, timeout=DEADLINE * 2, check=True,
        ).stdout  # fmt: skip
        assert "shared.txt" in listing and ".git" in listing, listing  # all of it, as the README warns
        assert not (tmp_path / "twistd.pid").exists()
    finally:
        assert command.stop() in (0, -signal.SIGTERM)


@pytest.mark.parametrize(("umask", "mode"), [(True, 0o644), (False, 0o600)])
def test_daemon_with_a_umask_makes_readable_uploads(tmp_path: Path, umask: bool, mode: int) -> None:
    (block,) = [b for b in code_blocks("### Running it as a service") if b.startswith("twistd --umask")]
    start, stop = block.replace("\\\n", " ").splitlines()
    (tmp_path / "srv").mkdir()
    (tmp_path / "passwd").write_text(f"{USER}:{PASSWORD}\n")
    paths = {"/run/exftp.pid": str(tmp_path / "exftp.pid"), "/var/log/exftp/exftp.log": str(tmp_path / "exftp.log"),
             "/srv/ftp": str(tmp_path / "srv"), "/etc/exftp/passwd": str(tmp_path / "passwd")}  # fmt: skip
    start = replace_once(start, paths if umask else {**paths, "--umask 022 ": ""})
    env = {**server_env(), "FTP_PORT": "0"}
    daemon = subprocess.run(with_twistd(shlex.split(start)), env=env, cwd=tmp_path, timeout=60, check=False,
                            capture_output=True, text=True)  # fmt: skip
    assert daemon.returncode == 0, daemon
    log = tmp_path / "exftp.log"
    try:
        wait_until(lambda: log.exists() and "exftp listening on" in log.read_text(), "the daemon to listen", 60)
        port = int(re.findall(r"exftp listening on \S+:(\d+)", log.read_text())[0])
        with ftplib.FTP() as client:
            client.connect("127.0.0.1", port, timeout=DEADLINE)
            client.login(USER, PASSWORD)
            client.storbinary("STOR upload.bin", io.BytesIO(b"data"))
        assert stat.S_IMODE((tmp_path / "srv" / "upload.bin").stat().st_mode) == mode
    finally:
        pid = int((tmp_path / "exftp.pid").read_text())
        kill = replace_once(stop, {"/run/exftp.pid": paths["/run/exftp.pid"]})
        subprocess.run(["sh", "-c", kill], check=True, timeout=DEADLINE)
        wait_until(lambda: not _alive(pid), "the daemon to exit on SIGTERM", 30)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_programmer_example(tmp_path: Path) -> None:
    (example,) = code_blocks("## Using it from Python")
    assert "exftp._" not in example and "exftp.testing" not in example  # public names only
    (tmp_path / "srv").mkdir()
    (tmp_path / "passwd").write_text(f"{USER}:{PASSWORD}\n")
    script = replace_once(example, {
        '"/etc/exftp/passwd"': repr(str(tmp_path / "passwd")),
        '"/srv/ftp"': repr(str(tmp_path / "srv")),
        '"tcp:2121:interface=127.0.0.1"': '"tcp:0:interface=127.0.0.1"',
        '"/var/log/exftp/xferlog"': repr(str(tmp_path / "xferlog")),
        '"tcp:9100:interface=127.0.0.1"': '"tcp:0:interface=127.0.0.1"',
    })  # fmt: skip
    (tmp_path / "app.py").write_text(script)
    app = Command(tmp_path, [sys.executable, str(tmp_path / "app.py")]).start()
    try:
        metrics = app.wait_for_log(r"exftp metrics at (http://\S+/metrics)")[1]
        with app.login() as client:
            client.storbinary("STOR report.csv", io.BytesIO(b"a,b\n"))
            assert (tmp_path / "srv" / "report.csv").read_bytes() == b"a,b\n"
        with urllib.request.urlopen(metrics, timeout=DEADLINE) as page:
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(page.read().decode())
                for s in family.samples
            }
        assert samples[("exftp_transfers_total", (("direction", "upload"), ("result", "ok")))] == 1
    finally:
        status = app.stop(timeout=30)
    assert status == 0, app.log()
    assert re.search(r" /report\.csv b _ i r alice ftp 0 \* c$", (tmp_path / "xferlog").read_text(), re.M)
    assert "Traceback" not in app.log(), app.log()
