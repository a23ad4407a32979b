"""
Operating the server as a process: a configuration file, the webhook
received by a real HTTP server, the transfer log, C{/metrics} scraped over
HTTP, JSON logs, SIGTERM during an upload, and a third-party plugin (the
README's example package) found in a temporary directory.
"""

from __future__ import annotations

import ftplib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import conftest
import pytest
from conftest import DEADLINE, USER, FTPServer, code, run_twistd, server_env, temporary_files, wait_until
from prometheus_client.parser import text_string_to_metric_families
from test_plugins import write_readme_package
from test_xferlog import Entry

PASSWORD = "pa55-never-logged"

RECEIVER = """
import json, sys
from twisted.internet import reactor
from twisted.web import resource, server

answers = [int(code) for code in sys.argv[1:]]

class Inbox(resource.Resource):
    isLeaf = True

    def render_POST(self, request):
        body = request.content.read().decode()
        kind = request.getHeader("content-type")
        if answers:
            request.setResponseCode(answers.pop(0))
            print("REFUSED", kind, body, flush=True)
            return b""
        print("EVENT", kind, body, flush=True)
        return b"ok"

site = server.Site(Inbox())
port = reactor.listenTCP(0, site, interface="127.0.0.1")
print("receiver on", port.getHost().port, flush=True)
reactor.run()
"""


class Receiver(FTPServer):
    """
    A C{twisted.web} site in a subprocess that prints every document POSTed
    to it (after refusing the first ones with the given codes).
    """

    def __init__(self, directory: Path, *refusals: int) -> None:
        super().__init__(directory)
        self.refusals = refusals

    def start(self) -> Receiver:
        script = self.root / "receiver.py"
        script.write_text(RECEIVER)
        command = [sys.executable, str(script), *map(str, self.refusals)]
        self.process = subprocess.Popen(command, env=server_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        self.port = int(self.wait_for_log(r"^receiver on (\d+)$")[1])
        return self

    @property
    def url(self) -> str:  # type: ignore[override]
        return f"http://127.0.0.1:{self.port}/events?token=t0ken"

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line.split(" ", 2)[2]) for line in self.log().splitlines() if line.startswith("EVENT ")]


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    receiver = Receiver(tmp_path, 503).start()
    yield receiver
    receiver.stop()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of a /metrics page, by name and labels."""
    with urllib.request.urlopen(url, timeout=DEADLINE) as page:
        text = page.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


CONFIG = """
server_name = "exftp, configured"
authenticator = {{ env = "EXFTP_TEST_AUTH" }}
webhook = "{webhook}"
hook_events = "login,login_failed,logout,upload,download,delete,rename,mkdir,rmdir"
xferlog = "{xferlog}"
metrics = "tcp:0:interface=127.0.0.1"
max_sessions_per_ip = 9
"""


def test_config_webhook_xferlog_metrics(
    start_server: Callable[..., FTPServer], receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "exftp.toml"
    xferlog = tmp_path / "xferlog"
    config.write_text(CONFIG.format(webhook=receiver.url, xferlog=xferlog))
    monkeypatch.setenv("EXFTP_TEST_AUTH", f"memory:{USER}:{PASSWORD}")
    server = start_server("--config", str(config))
    metrics_url = server.wait_for_log(r"exftp metrics at (http://\S+/metrics)")[1]
    before = scrape(metrics_url)
    client = server.connect()
    assert client.getwelcome() == "220 exftp, configured"
    with pytest.raises(ftplib.error_perm):
        client.login(USER, "wrong")
    client.close()
    client = server.login(USER, PASSWORD)
    client.storbinary("STOR up load.txt", io.BytesIO(b"12345"))
    assert server.root.joinpath("up load.txt").read_bytes() == b"12345"
    client.retrbinary("RETR up load.txt", lambda data: None)
    client.rename("up load.txt", "moved.txt")
    client.mkd("dir")
    client.rmd("dir")
    client.delete("moved.txt")
    with pytest.raises(ftplib.error_perm) as missing:
        client.delete("missing.txt")
    assert code(missing.value) == 550
    client.quit()

    # The webhook: every event in order, the first one after a refusal (503) and a retry.
    receiver.wait_for_log(r'^EVENT .*"action": "logout"')
    events = receiver.events()
    assert [(e["action"], e["status"]) for e in events] == [
        ("login_failed", "failed"), ("login", "ok"), ("upload", "ok"), ("download", "ok"), ("rename", "ok"),
        ("mkdir", "ok"), ("rmdir", "ok"), ("delete", "ok"), ("delete", "failed"), ("logout", "ok"),
    ]  # fmt: skip
    upload = events[2]
    assert (upload["user"], upload["path"], upload["bytes"], upload["reply"]) == (USER, "/up load.txt", 5, 226)
    assert upload["peer"] == "127.0.0.1" and upload["binary"] is True
    assert (events[4]["path"], events[4]["destination"]) == ("/up load.txt", "/moved.txt")
    assert events[8]["reply"] == 550
    refused = [line for line in receiver.log().splitlines() if line.startswith("REFUSED")]
    assert len(refused) == 1 and '"login_failed"' in refused[0]
    assert all(" application/json " in line for line in receiver.log().splitlines() if line.startswith("EVENT"))
    assert PASSWORD not in receiver.log() and "wrong" not in receiver.log()

    # The transfer log, field by field.
    wait_until(lambda: xferlog.exists() and len(xferlog.read_text().splitlines()) == 2, "two xferlog lines")
    upload_line, download_line = (Entry.parse(line) for line in xferlog.read_text().splitlines())
    assert (upload_line.direction, upload_line.filename, upload_line.file_size) == ("i", "/up_load.txt", 5)
    assert (upload_line.username, upload_line.remote_host, upload_line.completion_status) == (USER, "127.0.0.1", "c")
    assert (download_line.direction, download_line.transfer_type, download_line.access_mode) == ("o", "b", "r")

    # /metrics: the counters moved.
    after = scrape(metrics_url)

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved("exftp_logins_total", result="ok") == 1
    assert moved("exftp_logins_total", result="failed") == 1
    assert moved("exftp_transfers_total", direction="upload", result="ok") == 1
    assert moved("exftp_transfers_total", direction="download", result="ok") == 1
    assert moved("exftp_transfer_bytes_total", direction="upload") == 5
    assert moved("exftp_operations_total", action="delete", result="failed") == 1
    assert moved("exftp_error_replies_total", code="550") == 1
    assert moved("exftp_error_replies_total", code="530") == 1
    assert moved("exftp_auth_seconds_count", call="login", result="ok") == 1
    assert moved("exftp_storage_seconds_count", call="open_write", result="ok") == 1
    assert after[("exftp_sessions", ())] == 0


def test_listings_are_timed_in_metrics(start_server: Callable[..., FTPServer]) -> None:
    """LIST of a small and of a paged (over 100 entries) directory through ftplib: each is one timed list call."""
    server = start_server("--auth", f"memory:{USER}:{PASSWORD}", "--metrics", "tcp:0:interface=127.0.0.1")
    metrics_url = server.wait_for_log(r"exftp metrics at (http://\S+/metrics)")[1]
    (server.root / "big").mkdir()
    for index in range(150):
        (server.root / "big" / f"f{index:03d}").write_bytes(b"")
    key = ("exftp_storage_seconds_count", (("call", "list"), ("result", "ok")))
    before = scrape(metrics_url).get(key, 0.0)
    client = server.login(USER, PASSWORD)
    assert len(client.nlst("big")) == 150
    assert "big" in client.nlst()
    client.quit()
    assert scrape(metrics_url).get(key, 0.0) - before == 2


JSON_READY = re.compile(
    r'^\{"time": "[^"]+", "level": "info", "message": "exftp listening on (?P<host>[^":]+):(?P<port>\d+)"'
)


def test_json_logs_are_flat_and_never_hold_a_password(
    start_server: Callable[..., FTPServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conftest, "_READY", JSON_READY)
    server = start_server("--auth", f"memory:{USER}:{PASSWORD}", "--log-format", "json")
    client = server.connect()
    with pytest.raises(ftplib.error_perm):
        client.login(USER, "a-wrong-pa55word")
    client.close()
    client = server.login(USER, PASSWORD)
    client.quit()
    server.wait_for_log(r'"message": "Login of \'alice\'')
    lines = server.log().splitlines()
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    for event in events:  # what Vector, Fluent Bit or Loki read without configuration
        assert isinstance(event["time"], str) and event["time"].endswith("Z"), event
        assert event["level"] in ("debug", "info", "warn", "error", "critical"), event
        assert isinstance(event["message"], str) and event["message"], event
        assert isinstance(event["logger"], str) and not any(key.startswith("log_") for key in event), event
    failed = [e for e in events if e["message"].startswith("Login failed")]
    assert failed and failed[0]["user"] == USER and failed[0]["peer"] == "127.0.0.1", events
    assert failed[0]["level"] == "info" and failed[0]["logger"].startswith("exftp"), failed
    assert PASSWORD not in server.log() and "a-wrong-pa55word" not in server.log()


def test_sigterm_during_an_upload_leaves_no_partial_file(start_server: Callable[..., FTPServer]) -> None:
    server = start_server("--auth", f"memory:{USER}:{PASSWORD}", "--shutdown-grace", "1")
    with server.control() as control:
        control.login(USER, PASSWORD)
        assert control.cmd("TYPE I").code == 200
        _host, port = control.pasv()
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as data:
            assert control.cmd("STOR half.bin").code == 150
            data.sendall(b"x" * 100_000)
            wait_until(lambda: temporary_files(server.root), "the upload to reach the disk")
            server.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            # The client never finishes: after the grace period the upload is aborted.
            reply = control.reply()
            if reply.code == 426:
                reply = control.reply()
            assert reply.code == 421, reply
    assert server.wait_exit() in (0, -signal.SIGTERM)
    assert not (server.root / "half.bin").exists()
    assert temporary_files(server.root) == []


def test_bad_config_file_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('ftp_port = "2121"\n')
    result = run_twistd("-n", "--pidfile=", "exftp", "--config", str(config), timeout=30)
    text = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in text, text
    assert "ftp_port" in text and "port number" in text, text


def test_third_party_plugin_in_a_temporary_directory(
    start_server: Callable[..., FTPServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site"
    write_readme_package(package)
    monkeypatch.setenv("PYTHONPATH", str(package))
    listing = run_twistd("exftp", "--help-storage")
    assert listing.returncode == 0 and re.search(r"^\s+dropbox:ARGUMENT\s+upload-only", listing.stdout, re.M), listing
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{USER} {PASSWORD}\n")
    boxes = tmp_path / "boxes"
    (boxes / USER).mkdir(parents=True)
    server = start_server("--auth", f"tokens:{tokens}", "--storage", f"dropbox:{boxes}", root=tmp_path,
                          root_option=False)  # fmt: skip
    client = server.login(USER, PASSWORD)
    try:
        client.storbinary("STOR report.csv", io.BytesIO(b"a,b\n"))
        assert (boxes / USER / "report.csv").read_bytes() == b"a,b\n"
        for command in (lambda: client.retrbinary("RETR report.csv", lambda _: None),
                        lambda: client.storbinary("STOR report.csv", io.BytesIO(b"again")),
                        lambda: client.delete("report.csv")):  # fmt: skip
            with pytest.raises(ftplib.error_perm) as refused:
                command()
            assert code(refused.value) == 550
    finally:
        client.close()
    assert (boxes / USER / "report.csv").read_bytes() == b"a,b\n"


def test_help_documents_the_operations_options() -> None:
    text = run_twistd("exftp", "--help").stdout
    for option in ("--config", "--xferlog", "--metrics", "--log-format", "--hook", "--webhook", "--hook-events",
                   "--hook-queue", "--hook-retries", "--hook-timeout", "--help-storage"):  # fmt: skip
        assert re.search(rf"^\s+{option}=?\s+\S.{{10}}", text, re.MULTILINE), f"{option} is not documented:\n{text}"


def test_events_of_the_shutdown_are_delivered_before_exit(
    start_server: Callable[..., FTPServer], tmp_path: Path
) -> None:
    receiver = Receiver(tmp_path).start()
    try:
        server = start_server("--auth", f"memory:{USER}:{PASSWORD}", "--webhook", receiver.url)
        with server.control() as control:
            control.login(USER, PASSWORD)
            receiver.wait_for_log(r'^EVENT .*"action": "login"')
            server.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            assert control.reply().code == 421
        assert server.wait_exit() in (0, -signal.SIGTERM)
        # The session ended during the shutdown; its logout went out before the process exited.
        receiver.wait_for_log(r'^EVENT .*"action": "logout"')
        assert [event["action"] for event in receiver.events()] == ["login", "logout"]
    finally:
        receiver.stop()


def test_sigusr1_rotates_the_log_file(tmp_path: Path) -> None:
    log = tmp_path / "exftp.log"
    command = [
        *conftest.twistd_command(), "-n", "--pidfile=", "--logfile", str(log), "exftp",
        "--port", "tcp:0:interface=127.0.0.1", "--root", str(tmp_path), "--auth", f"memory:{USER}:{PASSWORD}",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=server_env(), cwd=tmp_path)
    try:

        def logged(pattern: str) -> re.Match[str] | None:
            return re.search(pattern, log.read_text()) if log.exists() else None

        wait_until(lambda: logged(conftest._READY.pattern.rstrip("$")), "the server to listen")
        match = logged(conftest._READY.pattern.rstrip("$"))
        assert match is not None
        port = int(match["port"])
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as first:
            assert first.recv(100).startswith(b"220")
        wait_until(lambda: logged(r"Connection from 127\.0\.0\.1"), "the first connection in the log")
        process.send_signal(signal.SIGUSR1)
        wait_until(lambda: (tmp_path / "exftp.log.1").exists(), "the log to be rotated")
        client = ftplib.FTP()
        client.connect("127.0.0.1", port, timeout=DEADLINE)
        client.login(USER, PASSWORD)
        client.quit()
        wait_until(lambda: logged(rf"Login of '{USER}'"), "the login in the new log")
        rotated = (tmp_path / "exftp.log.1").read_text()
        assert "exftp listening on" in rotated and "Login of" not in rotated
        assert "exftp listening on" not in log.read_text()
    finally:
        process.terminate()
        process.wait(DEADLINE)


def test_a_daemon_cannot_log_to_standard_output(tmp_path: Path) -> None:
    pidfile = tmp_path / "exftp.pid"
    try:
        result = run_twistd(
            "--pidfile", str(pidfile), "--logfile", "-", "exftp",
            "--port", "tcp:0:interface=127.0.0.1", "--root", str(tmp_path), timeout=30,
        )  # fmt: skip
        text = result.stdout + result.stderr
        assert result.returncode != 0 and "a daemon cannot log to standard output" in text, text
        assert "Traceback" not in text
    finally:
        if pidfile.exists():  # the refusal failed and a daemon started: stop it
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
