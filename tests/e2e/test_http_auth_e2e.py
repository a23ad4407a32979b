"""
HTTP logins end to end: C{twistd exftp --auth webhook:URL} against an auth
service on 127.0.0.1, with ftplib as the client.

The auth service is Python's C{http.server} in a thread of the test process,
answering like an ex_ftp webhook (query parameters C{username} and
C{password_hash}), with per-user JSON settings.
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import json
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from conftest import FTPServer, HTTPService, code, list_lines, retr_bytes, run_twistd

#: user name to (password, JSON settings or None)
USERS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "alice": ("alice-Pw-1", {"root": "/alice"}),
    "bob": ("bob-Pw-2", {"read_only": True}),
    "carol": ("carol-Pw-3", None),
    "dave": ("dave-Pw-4", {"root": "../../dave"}),
    "frank": ("frank-Pw-6", {"root": "/frank", "permissions": "ew"}),
}


class AuthService(HTTPService):
    """
    An ex_ftp-style webhook: 200 (with JSON settings where a user has some)
    when C{password_hash} is the SHA-256 of the user's password, else 403.
    """

    def __init__(self) -> None:
        self.users = {name: entry for name, entry in USERS.items()}
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        #: When set, every request is answered with this status (an outage).
        self.down: int | None = None
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                service.requests.append((url.path, query))
                if service.down is not None:
                    self.send_response(service.down)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                name = query.get("username", [""])[0]
                offered = query.get("password_hash", [""])[0]
                entry = service.users.get(name)
                if entry is None or offered != hashlib.sha256(entry[0].encode()).hexdigest():
                    self.send_response(403)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = b"ok" if entry[1] is None else json.dumps(entry[1]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain" if entry[1] is None else "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._serve(Handler)




@pytest.fixture(scope="module")
def auth_service() -> Iterator[AuthService]:
    service = AuthService()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def hook_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hook-root")
    for name in ["alice", "bob", "dave", "frank"]:
        (root / name).mkdir()
        (root / name / f"{name}.txt").write_bytes(f"{name}'s file\n".encode())
    (root / "top.txt").write_bytes(b"for everyone\n")
    return root


@pytest.fixture(scope="module")
def hook_server(start_server: Callable[..., FTPServer], auth_service: AuthService, hook_root: Path) -> FTPServer:
    """A server whose logins are checked by the webhook."""
    return start_server("--auth", "webhook:" + auth_service.url("/login"), root=hook_root)


def _revalidating_server(start: Callable[..., FTPServer], service: AuthService, root: Path) -> FTPServer:
    """A server that re-checks every command's session at C{/check} (C{authenticated_ttl_ms=0})."""
    return start(
        "--auth", "webhook:" + service.url("/login"),
        "--auth-option", "authenticated_url=" + service.url("/check"),
        "--auth-option", "authenticated_ttl_ms=0",
        root=root,
    )  # fmt: skip


def _login(server: FTPServer, user: str) -> ftplib.FTP:
    return server.login(user, USERS[user][0])


def test_right_and_wrong_passwords(hook_server: FTPServer, auth_service: AuthService) -> None:
    client = hook_server.connect()
    try:
        with pytest.raises(ftplib.error_perm) as refused:
            client.login("carol", "wrong")
        assert code(refused.value) == 530
        assert client.login("carol", USERS["carol"][0]).startswith("230")
        assert "top.txt" in client.nlst()
    finally:
        client.close()
    path, query = auth_service.requests[-1]
    assert path == "/login"
    assert query == {"username": ["carol"], "password_hash": [hashlib.sha256(b"carol-Pw-3").hexdigest()]}


def test_unknown_user_is_refused(hook_server: FTPServer) -> None:
    with pytest.raises(ftplib.error_perm) as refused:
        hook_server.login("mallory", "alice-Pw-1")
    assert code(refused.value) == 530


def test_json_root_keeps_the_user_in_her_folder(hook_server: FTPServer, hook_root: Path) -> None:
    client = _login(hook_server, "alice")
    try:
        assert client.pwd() == "/"
        assert client.nlst() == ["alice.txt"]
        client.cwd("..")
        assert client.pwd() == "/"
        assert retr_bytes(client, "/alice.txt") == b"alice's file\n"
        with pytest.raises(ftplib.error_perm) as missing:
            retr_bytes(client, "/../top.txt")
        assert code(missing.value) == 550
        client.storbinary("STOR new.txt", io.BytesIO(b"written by alice"))
    finally:
        client.close()
    assert (hook_root / "alice" / "new.txt").read_bytes() == b"written by alice"
    assert not (hook_root / "new.txt").exists()


def test_dot_dot_in_a_json_root_stays_under_the_storage(hook_server: FTPServer) -> None:
    client = _login(hook_server, "dave")
    try:
        assert client.nlst() == ["dave.txt"]
    finally:
        client.close()


def test_json_read_only_refuses_stor(hook_server: FTPServer, hook_root: Path) -> None:
    client = _login(hook_server, "bob")
    try:
        assert retr_bytes(client, "/top.txt") == b"for everyone\n"
        with pytest.raises(ftplib.error_perm) as denied:
            client.storbinary("STOR /bob/upload.txt", io.BytesIO(b"nope"))
        assert code(denied.value) == 550
        with pytest.raises(ftplib.error_perm) as denied:
            client.mkd("/bob/sub")
        assert code(denied.value) == 550
    finally:
        client.close()
    assert not (hook_root / "bob" / "upload.txt").exists()


def test_json_permissions_make_an_upload_only_drop_box(hook_server: FTPServer, hook_root: Path) -> None:
    """C{"permissions": "ew"}: change directories and upload, nothing else (pyftpdlib's letters)."""
    client = _login(hook_server, "frank")
    try:
        client.storbinary("STOR dropped.txt", io.BytesIO(b"dropped by frank"))
        denied = []
        for attempt in (
            lambda: retr_bytes(client, "frank.txt"),
            lambda: list_lines(client),
            lambda: client.nlst(),
            lambda: client.delete("frank.txt"),
            lambda: client.rename("frank.txt", "moved.txt"),
            lambda: client.mkd("sub"),
            lambda: client.storbinary("APPE frank.txt", io.BytesIO(b"more")),
        ):
            with pytest.raises(ftplib.error_perm) as refused:
                attempt()
            denied.append(str(refused.value))
        assert all(text.startswith("550 Permission denied") for text in denied), denied
        client.cwd("/")
        assert client.pwd() == "/"
    finally:
        client.close()
    assert (hook_root / "frank" / "dropped.txt").read_bytes() == b"dropped by frank"
    assert (hook_root / "frank" / "frank.txt").read_bytes() == b"frank's file\n"
    assert sorted(path.name for path in (hook_root / "frank").iterdir()) == ["dropped.txt", "frank.txt"]


def test_json_permissions_hide_existence_size_and_time(hook_server: FTPServer) -> None:
    """
    C{"permissions": "ew"}: without C{l}, SIZE, MDTM, MLST and STAT tell
    nothing of a file, and without C{f} RNFR is refused (pyftpdlib's letters).
    """
    client = _login(hook_server, "frank")
    try:
        for line in ("SIZE frank.txt", "MDTM frank.txt", "MLST frank.txt", "STAT frank.txt", "STAT /",
                     "SIZE missing.txt", "RNFR frank.txt"):
            with pytest.raises(ftplib.error_perm) as refused:
                client.sendcmd(line)
            assert str(refused.value).startswith("550 Permission denied"), (line, refused.value)
    finally:
        client.close()


def test_passwords_never_logged(hook_server: FTPServer) -> None:
    start = hook_server.log_position()
    with pytest.raises(ftplib.error_perm):
        hook_server.login("alice", "not-" + USERS["alice"][0])
    _login(hook_server, "alice").close()
    hook_server.wait_for_log("Login of 'alice'", start=start)
    log = hook_server.log()
    for password, _ in [*USERS.values(), ("not-" + USERS["alice"][0], None)]:
        assert password not in log
        assert hashlib.sha256(password.encode()).hexdigest() not in log


@pytest.mark.server_traceback_expected
def test_auth_service_down_refuses_logins(
    start_server: Callable[..., FTPServer], auth_service: AuthService, tmp_path: Path
) -> None:
    """
    A service that cannot be reached: 421 service not available (never an
    open door; 530 before issue 16), and the server keeps running.
    """
    probe = AuthService()
    url = probe.url("/login")
    probe.stop()
    server = start_server("--auth", "webhook:" + url, "--auth-option", "timeout=5", root=tmp_path)
    for _ in range(2):
        with pytest.raises(ftplib.error_temp) as refused:
            server.login("carol", USERS["carol"][0])
        assert code(refused.value) == 421
    assert server.alive()


def test_auth_outage_is_421_and_bans_nobody(start_server: Callable[..., FTPServer], tmp_path: Path) -> None:
    """
    Logins during an outage (HTTP 503) are answered 421 and closed, logged as
    a server problem, and never count toward a ban: with a ban after two
    failures, four logins in the outage leave the address free.
    """
    service = AuthService()
    try:
        server = start_server(
            "--auth", "webhook:" + service.url("/login"),
            "--ban-threshold", "2", "--login-failure-delay", "0",
            root=tmp_path,
        )  # fmt: skip
        start = server.log_position()
        service.down = 503
        for _ in range(4):
            client = server.connect()
            try:
                with pytest.raises(ftplib.error_temp) as outage:
                    client.login("carol", USERS["carol"][0])
                assert code(outage.value) == 421
                assert "Service not available" in str(outage.value)
                with pytest.raises((EOFError, OSError)):
                    client.voidcmd("NOOP")  # the server closed the connection
            finally:
                client.close()
        server.wait_for_log("could not be checked", start=start)
        assert "Banned" not in server.log(start)
        service.down = None
        client = server.login("carol", USERS["carol"][0])
        client.close()
    finally:
        service.stop()


def test_revalidation_outage_keeps_the_session(start_server: Callable[..., FTPServer], tmp_path: Path) -> None:
    """An outage does not end running sessions; a refusal once the service is back does."""
    service = AuthService()
    try:
        server = _revalidating_server(start_server, service, tmp_path)
        client = server.login("carol", USERS["carol"][0])
        try:
            service.down = 500
            assert client.pwd() == "/"
            assert client.nlst() == []
            assert service.requests[-1][0] == "/check"
            service.down = None
            del service.users["carol"]
            with pytest.raises(ftplib.error_temp) as ended:
                client.pwd()
            assert code(ended.value) == 421
        finally:
            client.close()
        server.wait_for_log("Could not re-validate 'carol'")
    finally:
        service.stop()


def test_ban_reaches_sessions_opened_before_it(
    start_server: Callable[..., FTPServer], auth_service: AuthService, tmp_path: Path
) -> None:
    """
    The ban is checked at every PASS: sessions opened before it cannot go on
    guessing (they used to, up to --max-login-failures each), and their PASS
    never reaches the auth service.
    """
    server = start_server(
        "--auth", "webhook:" + auth_service.url("/login"),
        "--ban-threshold", "3", "--login-failure-delay", "0", "--max-login-failures", "10",
        root=tmp_path,
    )  # fmt: skip
    clients = [server.connect() for _ in range(4)]
    guesser, others = clients[0], clients[1:]
    try:
        for attempt in range(2):
            with pytest.raises(ftplib.error_perm) as wrong:
                guesser.login("carol", f"guess-{attempt}")
            assert code(wrong.value) == 530
        with pytest.raises(ftplib.error_temp) as banned:
            guesser.login("carol", "guess-2")
        assert code(banned.value) == 421
        asked = len(auth_service.requests)
        for other in others:
            with pytest.raises(ftplib.error_temp) as refused:
                other.login("carol", USERS["carol"][0])  # even the right password
            assert code(refused.value) == 421
            assert "Too many failed logins" in str(refused.value)
        assert len(auth_service.requests) == asked
        with pytest.raises(ftplib.error_temp):
            server.connect()  # and new connections are refused at once, as before
    finally:
        for client in clients:
            client.close()


def test_stat_of_a_path_while_busy_is_revalidated(
    start_server: Callable[..., FTPServer], auth_service: AuthService, hook_root: Path
) -> None:
    """A revoked user cannot list with STAT <path> while a RETR waits for its data connection."""
    server = _revalidating_server(start_server, auth_service, hook_root)
    auth_service.users["grace"] = ("grace-Pw-7", None)
    try:
        with server.control() as control:
            control.login("grace", "grace-Pw-7")
            control.pasv()
            assert control.cmd("RETR top.txt").code == 150  # busy: no data connection is made
            control.send("STAT /alice")  # waits its turn behind the RETR
            del auth_service.users["grace"]
            control.send("ABOR")
            replies = [control.reply()]
            while replies[-1].code != 421 and len(replies) < 4:
                replies.append(control.reply())
            assert replies[-1].code == 421, replies
            assert all("alice.txt" not in reply.text for reply in replies)
    finally:
        auth_service.users.pop("grace", None)


def test_revoked_user_loses_the_session(
    start_server: Callable[..., FTPServer], auth_service: AuthService, tmp_path: Path
) -> None:
    """With authenticated_ttl_ms=0 every command re-checks the session's own credential."""
    server = _revalidating_server(start_server, auth_service, tmp_path)
    auth_service.users["erin"] = ("erin-Pw-5", None)
    client = server.login("erin", "erin-Pw-5")
    try:
        assert client.pwd() == "/"
        path, query = auth_service.requests[-1]
        assert path == "/check"
        assert query["password_hash"] == [hashlib.sha256(b"erin-Pw-5").hexdigest()]
        del auth_service.users["erin"]
        with pytest.raises(ftplib.error_temp) as ended:
            client.pwd()
        assert code(ended.value) == 421
        path, query = auth_service.requests[-1]
        assert (path, query["username"]) == ("/check", ["erin"])
    finally:
        client.close()


def test_unknown_auth_options_are_a_usage_error() -> None:
    result = run_twistd("exftp", "--auth", "webhook:http://127.0.0.1:9/login", "--auth-option", "colour=blue")
    assert result.returncode != 0
    assert "colour" in result.stdout + result.stderr


def test_list_still_works_for_plain_users(hook_server: FTPServer) -> None:
    client = _login(hook_server, "carol")
    try:
        names = " ".join(list_lines(client))
        assert "alice" in names and "top.txt" in names
    finally:
        client.close()
