"""
The users file (C{--users FILE}): parsing, the authenticator, its reload,
its wiring into C{twistd exftp}, and the C{exftp-users} command.
"""

from __future__ import annotations

import io
import ipaddress
import os
import shutil
import signal
import stat
import tempfile
import threading
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from argon2 import PasswordHasher
from test_auth import AuthenticatorContractMixin
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from exftp import IAuthenticator, LoginFailed, Session, UserLimits, UsersAuthenticator, VirtualPath
from exftp._tap import Options, makeService
from exftp._users_cli import main as users_main
from exftp._users_cli import read_password
from exftp.auth._users import SESSION_KEY, _parameters, check_hash, load_users, parse_users
from exftp.testing import MemoryAuthenticator

#: Cheap hashes, so that the tests stay quick (the server takes any cost).
_ARGON2 = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def argon2_hash(password: str) -> str:
    return _ARGON2.hash(password)


def bcrypt_hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


ALICE = argon2_hash("alice-pw")
BOB = bcrypt_hash("bob-pw")


def users_toml(extra: str = "", alice: str = "") -> str:
    return f"""
{extra}
[users.alice]
password = "{ALICE}"
root = "/alice"
{alice}

[users.bob]
password = "{BOB}"
read_only = true
"""


class Counted:
    """Runs password checks synchronously and counts them."""

    def __init__(self) -> None:
        self.checks = 0

    def __call__(self, check: Callable[[], bool]) -> Deferred[bool]:
        self.checks += 1
        return maybeDeferred(check)


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def temporary_file(case: SynchronousTestCase) -> Path:
    """A path in a directory of its own, removed after the test (not in the working directory)."""
    directory = tempfile.mkdtemp(prefix="exftp-users-")
    case.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    return Path(directory) / "users.toml"


# UserLimits and Session


def test_user_limits_default_to_unlimited() -> None:
    assert UserLimits().unlimited
    assert Session("alice").limits == UserLimits()
    assert not UserLimits(quota_bytes=1).unlimited
    assert not UserLimits(allow_from=(ipaddress.ip_network("10.0.0.0/8"),)).unlimited
    assert UserLimits(quota_bytes=0).unlimited  # 0 also means unlimited


def test_session_stays_backward_compatible() -> None:
    session = Session("alice", VirtualPath.parse("/a"), True, frozenset("elr"), {"k": 1})
    assert (session.username, session.read_only, session.attributes) == ("alice", True, {"k": 1})
    assert session.limits.unlimited


@pytest.mark.parametrize(
    "arguments",
    [
        {"quota_bytes": -1},
        {"max_sessions": True},
        {"upload_rate": 1.5},
        {"allow_from": ["10.0.0.0/8"]},
        {"allow_from": ("10.0.0.0/8",)},
    ],
)
def test_user_limits_refuse_bad_values(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        UserLimits(**arguments)


# Parsing


def test_a_complete_entry_is_parsed() -> None:
    document = {
        "fallthrough": False,
        "users": {
            "alice": {
                "password": ALICE,
                "root": "/homes/../alice",
                "permissions": "elr",
                "read_only": True,
                "quota_bytes": 10_000,
                "quota_files": 0,
                "upload_rate": 1000,
                "download_rate": 2000,
                "max_sessions": 2,
                "max_file_size": 500,
                "allow_from": ["192.0.2.0/24", "2001:db8::/32, 198.51.100.7"],
                "disabled": False,
            }
        },
    }
    entry = parse_users(document).users["alice"]
    assert entry.root == VirtualPath.parse("/alice")
    assert entry.permissions == frozenset("elr")
    assert entry.read_only and not entry.disabled
    limits = entry.limits
    assert (limits.quota_bytes, limits.quota_files, limits.upload_rate) == (10_000, None, 1000)
    assert (limits.download_rate, limits.max_sessions, limits.max_file_size) == (2000, 2, 500)
    assert limits.allow_from == tuple(
        ipaddress.ip_network(n) for n in ("192.0.2.0/24", "2001:db8::/32", "198.51.100.7/32")
    )
    assert ALICE not in repr(entry)


def test_the_readme_example_is_a_valid_file() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    example = readme.split("# /etc/exftp/users.toml\n", 1)[1].split("```", 1)[0]
    users = parse_users(tomllib.loads(example)).users
    assert set(users) == {"alice", "bob"}
    assert users["alice"].limits.max_sessions == 4 and len(users["alice"].limits.allow_from) == 2


def test_a_root_of_slash_is_the_whole_storage() -> None:
    assert parse_users({"users": {"a": {"password": ALICE, "root": "/"}}}).users["a"].root is None


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"password": ALICE, "pasword": "x"}, ["users.alice", "'pasword'", "did you mean 'password'"]),
        ({"password": ALICE, "quota": 5}, ["users.alice", "'quota'"]),
        ({}, ["users.alice.password is missing", "exftp-users passwd FILE alice"]),
        ({"password": 5}, ["users.alice.password must be text"]),
        ({"password": "$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g"}, ["users.alice.password", "Argon2id"]),
        ({"password": "$argon2id$nonsense"}, ["users.alice.password", "malformed Argon2id"]),
        ({"password": "$2b$04$short"}, ["users.alice.password", "malformed bcrypt"]),
        ({"password": ALICE, "root": 3}, ["users.alice.root"]),
        ({"password": ALICE, "root": "/a\x00b"}, ["users.alice", "forbidden characters"]),
        ({"password": ALICE, "permissions": "elrX"}, ["users.alice", "unknown permissions 'X'"]),
        ({"password": ALICE, "permissions": ["e"]}, ["users.alice.permissions"]),
        ({"password": ALICE, "read_only": "yes"}, ["users.alice.read_only", "true or false"]),
        ({"password": ALICE, "disabled": 1}, ["users.alice.disabled", "true or false"]),
        ({"password": ALICE, "quota_bytes": -5}, ["users.alice.quota_bytes", ">= 0", "-5"]),
        ({"password": ALICE, "max_sessions": True}, ["users.alice.max_sessions"]),
        ({"password": ALICE, "upload_rate": "1M"}, ["users.alice.upload_rate", "text"]),
        ({"password": ALICE, "allow_from": "10.0.0.0/8"}, ["users.alice.allow_from", "a list"]),
        ({"password": ALICE, "allow_from": ["10.0.0.300"]}, ["users.alice.allow_from", "'10.0.0.300'"]),
    ],
)
def test_problems_name_the_user_and_the_key(table: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ValueError) as raised:
        parse_users({"users": {"alice": table}})
    for word in words:
        assert word in str(raised.value)


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ({"fallthru": True}, ["unknown key 'fallthru'", "fallthrough"]),
        ({"fallthrough": "yes"}, ["fallthrough", "true or false"]),
        ({"users": 3}, ["users", "[users.alice]"]),
        ({"users": {"alice": "x"}}, ["users.alice", "a table"]),
        ({"users": {"": {"password": ALICE}}}, ["user name"]),
        ({"users": {"a\nb": {"password": ALICE}}}, ["control characters"]),
    ],
)
def test_problems_of_the_file_itself(document: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ValueError) as raised:
        parse_users(document)
    for word in words:
        assert word in str(raised.value)


def test_a_plain_text_password_is_refused_without_repeating_it() -> None:
    with pytest.raises(ValueError) as raised:
        parse_users({"users": {"alice": {"password": "hunter2-secret"}}})
    message = str(raised.value)
    assert "plain-text passwords are refused" in message
    assert "exftp-users passwd FILE alice" in message
    assert "hunter2" not in message


@pytest.mark.parametrize("good", [ALICE, BOB, BOB.replace("$2b$", "$2a$"), BOB.replace("$2b$", "$2y$")])
def test_argon2id_and_bcrypt_hashes_are_accepted(good: str) -> None:
    check_hash(good)


def test_load_users_reports_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read it"):
        load_users(str(tmp_path / "missing.toml"))
    with pytest.raises(ValueError, match="not valid TOML"):
        load_users(write(tmp_path / "bad.toml", "[users.alice\n"))
    (tmp_path / "latin.toml").write_bytes(b'# \xe9\n')
    with pytest.raises(ValueError, match="not valid TOML"):
        load_users(str(tmp_path / "latin.toml"))


# The authenticator


class UsersAuthenticatorContractTests(AuthenticatorContractMixin, SynchronousTestCase):
    """The contract every authenticator keeps."""

    good = [("alice", "alice-pw", "alice", False), ("bob", "bob-pw", "bob", True)]
    bad = [("alice", "bob-pw"), ("bob", "alice-pw"), ("carol", "alice-pw"), ("alice", ""), ("ALICE", "alice-pw")]

    def make_authenticator(self) -> IAuthenticator:
        path = temporary_file(self)
        return UsersAuthenticator(write(path, users_toml()), run_in_thread=Counted())


class UsersAuthenticatorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = temporary_file(self)
        self.counted = Counted()
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def make(self, text: str | None = None, fallback: IAuthenticator | None = None) -> UsersAuthenticator:
        write(self.path, users_toml() if text is None else text)
        return UsersAuthenticator(str(self.path), fallback, run_in_thread=self.counted)

    def login(self, users: UsersAuthenticator, name: str, password: str) -> Session:
        session: Session = self.successResultOf(users.login(name, password))
        return session

    def refused(self, users: UsersAuthenticator, name: str, password: str) -> None:
        self.failureResultOf(users.login(name, password), LoginFailed)

    def valid(self, users: UsersAuthenticator, session: Session) -> bool:
        valid: bool = self.successResultOf(users.authenticated(session))
        return valid

    def test_provides_the_interface(self) -> None:
        assert verifyObject(IAuthenticator, self.make())

    def test_the_session_carries_the_entry(self) -> None:
        users = self.make(users_toml(alice='permissions = "elr"\nquota_bytes = 100\nallow_from = ["10.0.0.0/8"]'))
        session = self.login(users, "alice", "alice-pw")
        assert session.root == VirtualPath.parse("/alice")
        assert session.permissions == frozenset("elr")
        assert not session.read_only
        assert session.limits == UserLimits(quota_bytes=100, allow_from=(ipaddress.ip_network("10.0.0.0/8"),))
        assert ALICE not in repr(session)
        assert self.login(users, "bob", "bob-pw").read_only

    def test_unknown_users_cost_a_check_like_known_ones(self) -> None:
        users = self.make(users_toml(extra="", alice="") + f'[users.carol]\npassword = "{argon2_hash("c")}"\n')
        for name in ("alice", "nobody"):
            before = self.counted.checks
            self.refused(users, name, "wrong")
            assert self.counted.checks == before + 1, name
        # The dummy has the parameters most users' hashes have (two Argon2id, one bcrypt).
        dummies = users._dummies
        assert list(dummies) == [_parameters(ALICE)]
        assert _parameters(next(iter(dummies.values()))) == _parameters(ALICE)

    def test_valid_user_does_not_tell_who_exists(self) -> None:
        users = self.make()
        assert self.successResultOf(users.valid_user("nobody")) is True

    def test_bcrypt_refuses_longer_passwords_after_a_full_check(self) -> None:
        exact = "b" * 72
        users = self.make(f'[users.bob]\npassword = "{bcrypt_hash(exact)}"\n')
        assert self.login(users, "bob", exact).username == "bob"
        self.refused(users, "bob", exact + "more")  # bcrypt alone would see only the first 72 bytes
        assert self.counted.checks == 2

    def test_surrogates_in_a_password_are_refused(self) -> None:
        users = self.make()
        self.refused(users, "alice", "\udcff")
        self.refused(users, "bob", "\udcff")

    def test_a_disabled_user_is_refused_with_the_right_password(self) -> None:
        users = self.make(users_toml(alice="disabled = true"))
        self.refused(users, "alice", "alice-pw")
        assert self.counted.checks == 1  # as slow as any other refusal
        assert any("disabled" in formatEvent(event) for event in self.observer)

    def test_a_file_without_users_refuses_everyone(self) -> None:
        users = self.make("")
        self.refused(users, "alice", "alice-pw")

    def test_a_session_ends_when_its_entry_changes(self) -> None:
        users = self.make()
        alice, bob = self.login(users, "alice", "alice-pw"), self.login(users, "bob", "bob-pw")
        write(self.path, users_toml())
        assert users.reload()  # the same entries: sessions go on
        assert self.valid(users, alice) and self.valid(users, bob)
        write(self.path, users_toml(alice='permissions = "elr"'))
        assert users.reload()
        assert not self.valid(users, alice)  # changed settings: log in again to get them
        assert self.valid(users, bob)
        self.login(users, "alice", "alice-pw")

    def test_new_logins_see_a_reloaded_file_at_once(self) -> None:
        users = self.make()
        old = self.login(users, "alice", "alice-pw")
        write(self.path, users_toml().replace(ALICE, argon2_hash("new-pw")))
        assert users.reload()
        self.refused(users, "alice", "alice-pw")
        assert self.login(users, "alice", "new-pw").username == "alice"
        assert not self.valid(users, old)

    def test_removed_and_disabled_users_lose_their_sessions(self) -> None:
        users = self.make()
        alice, bob = self.login(users, "alice", "alice-pw"), self.login(users, "bob", "bob-pw")
        write(self.path, users_toml(alice="disabled = true").split("[users.bob]")[0])
        assert users.reload()
        assert not self.valid(users, alice)
        assert not self.valid(users, bob)

    def test_a_broken_file_on_reload_keeps_the_old_one(self) -> None:
        users = self.make()
        write(self.path, users_toml(alice='pasword = "oops"'))
        assert users.reload() is False
        assert self.login(users, "alice", "alice-pw").username == "alice"
        errors = [formatEvent(e) for e in self.observer if e["log_level"] == LogLevel.error]
        assert any("not reloaded" in text and "pasword" in text for text in errors), errors

    def test_foreign_sessions_are_not_valid(self) -> None:
        users = self.make()
        assert not self.valid(users, Session("alice"))
        other = self.make()
        assert not self.valid(other, self.login(users, "alice", "alice-pw"))
        assert not self.valid(users, Session("alice", attributes={SESSION_KEY: "forged"}))

    def test_fallthrough_needs_a_fallback(self) -> None:
        with pytest.raises(ValueError, match="no --auth"):
            self.make(users_toml(extra="fallthrough = true"))
        users = self.make()
        write(self.path, users_toml(extra="fallthrough = true"))
        assert users.reload() is False

    def test_users_not_in_the_file_fall_through_only_when_the_file_says_so(self) -> None:
        fallback = MemoryAuthenticator({"carol": "carol-pw", "alice": "fallback-pw"})
        closed = self.make(fallback=fallback)
        self.refused(closed, "carol", "carol-pw")  # fallthrough is off by default
        assert self.counted.checks == 1  # ...and carol cost a dummy check
        assert not self.valid(closed, self.successResultOf(fallback.login("carol", "carol-pw")))
        users = self.make(users_toml(extra="fallthrough = true"), fallback=fallback)
        carol = self.login(users, "carol", "carol-pw")
        assert carol.username == "carol" and fallback.logins[-1] is carol
        assert self.successResultOf(users.valid_user("dave")) is False  # the fallback's answer
        assert self.valid(users, carol)
        self.refused(users, "alice", "fallback-pw")  # in the file: the file only

    def test_a_user_added_to_the_file_leaves_the_fallback(self) -> None:
        fallback = MemoryAuthenticator({"carol": "carol-pw"})
        users = self.make(users_toml(extra="fallthrough = true"), fallback=fallback)
        carol = self.login(users, "carol", "carol-pw")
        write(self.path, users_toml(extra="fallthrough = true") + f'[users.carol]\npassword = "{BOB}"\n')
        assert users.reload()
        assert not self.valid(users, carol)
        self.refused(users, "carol", "carol-pw")


class _ThreadReactor:
    """Just enough of a reactor for deferToThreadPool: results are delivered in the worker thread."""

    def __init__(self) -> None:
        self.triggers: list[Callable[[], Any]] = []

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        f(*args)

    def addSystemEventTrigger(self, phase: str, event: str, f: Callable[[], Any]) -> None:
        assert (phase, event) == ("during", "shutdown")
        self.triggers.append(f)


def test_passwords_are_checked_off_the_calling_thread(tmp_path: Path) -> None:
    reactor = _ThreadReactor()
    users = UsersAuthenticator(write(tmp_path / "users.toml", users_toml()), reactor=reactor)
    done = threading.Event()
    results: list[Any] = []
    checked_in: list[str] = []
    original = users._verify

    def spy(check: Callable[[], bool]) -> Deferred[bool]:
        def wrapped() -> bool:
            checked_in.append(threading.current_thread().name)
            return check()

        return original(wrapped)

    users._verify = spy  # type: ignore[method-assign]
    users.login("alice", "alice-pw").addBoth(results.append).addBoth(lambda _: done.set())
    try:
        assert done.wait(30)
        assert isinstance(results[0], Session)
        assert checked_in and checked_in[0] != threading.current_thread().name
    finally:
        for trigger in reactor.triggers:
            trigger()
    assert len(reactor.triggers) == 1  # the pool stops with the reactor


# twistd exftp --users


@pytest.fixture
def restore_sighup() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGHUP)
    yield
    signal.signal(signal.SIGHUP, previous)


def options(*arguments: str, root: Path) -> Options:
    parsed = Options(environ={})
    parsed.parseOptions(["--root", str(root), *arguments])  # no parent: errors are raised, not printed
    parsed.parent = {"syslog": True}  # as under twistd --syslog: makeService opens no log file
    return parsed


def test_the_users_option_builds_the_authenticator(tmp_path: Path) -> None:
    path = write(tmp_path / "users.toml", users_toml())
    parsed = options("--users", path, root=tmp_path)
    assert isinstance(parsed["authenticator"], UsersAuthenticator)
    assert parsed["authenticator"].fallback is None  # alone: no anonymous fallback
    assert parsed["users_authenticator"] is parsed["authenticator"]


def test_the_users_option_beside_auth_falls_through_to_it(tmp_path: Path) -> None:
    path = write(tmp_path / "users.toml", users_toml(extra="fallthrough = true"))
    parsed = options("--users", path, "--auth", "anonymous", root=tmp_path)
    assert parsed["authenticator"].fallback is not None
    with pytest.raises(usage.UsageError, match="no --auth"):
        options("--users", path, root=tmp_path)


def test_the_users_option_comes_from_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path / "users.toml", users_toml())
    config = write(tmp_path / "exftp.toml", f'users = "{path}"\n')
    assert isinstance(options("--config", config, root=tmp_path)["authenticator"], UsersAuthenticator)


def test_without_users_the_default_is_still_anonymous(tmp_path: Path) -> None:
    parsed = options(root=tmp_path)
    assert type(parsed["authenticator"]).__name__ == "AnonymousAuthenticator"
    assert parsed["users_authenticator"] is None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[users.alice]\npassword = "secret"\n', ["--users", "users.alice.password", "plain-text"]),
        (users_toml(alice="quota = 1"), ["--users", "users.alice", "'quota'"]),
    ],
)
def test_a_bad_users_file_is_a_usage_error(tmp_path: Path, text: str, words: list[str]) -> None:
    path = write(tmp_path / "users.toml", text)
    with pytest.raises(usage.UsageError) as raised:
        options("--users", path, root=tmp_path)
    for word in words:
        assert word in str(raised.value)
    assert "\n" not in str(raised.value)


def test_sighup_reloads_the_users_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "users.toml", users_toml())
    parsed = options("--users", path, root=tmp_path)
    installed: list[Any] = []
    monkeypatch.setattr("exftp._tap._on_sighup", lambda reactor, action: installed.append(action))
    top = makeService(parsed)
    assert installed == [top.reload]  # type: ignore[attr-defined]
    assert top.reloads == [parsed["users_authenticator"].reload]  # type: ignore[attr-defined]


def test_sighup_is_handled_with_nothing_to_reload(tmp_path: Path, restore_sighup: None) -> None:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    makeService(options(root=tmp_path))
    assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN, None)


# exftp-users


def run_cli(*arguments: str, stdin: str = "", monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    status = users_main(list(arguments))
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the command hash with cheap parameters (the schemes stay the same)."""
    from exftp import _users_cli

    def quick(password: str, scheme: str = "argon2id") -> str:
        return argon2_hash(password) if scheme == "argon2id" else bcrypt_hash(password)

    monkeypatch.setattr(_users_cli, "hash_password", quick)


def test_cli_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cheap_hashes: None) -> None:
    path = str(tmp_path / "users.toml")
    assert run_cli("add", path, "alice", "--root", "/alice", stdin="pw-a\n", monkeypatch=monkeypatch)[0] == 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    status, _, _ = run_cli("add", path, "bob", "--hash", "bcrypt", "--read-only", "--permissions", "elr",
                           stdin="pw-b\n", monkeypatch=monkeypatch)
    assert status == 0
    status, out, _ = run_cli("list", path, monkeypatch=monkeypatch)
    assert (status, out) == (0, "alice argon2id root=/alice\nbob bcrypt read-only permissions=elr\n")
    assert "$" not in out
    assert load_users(path).users["bob"].password.startswith("$2b$")
    assert run_cli("passwd", path, "alice", stdin="pw-new\r\n", monkeypatch=monkeypatch)[0] == 0
    assert PasswordHasher().verify(load_users(path).users["alice"].password, "pw-new")
    assert run_cli("passwd", path, "bob", stdin="pw-b2\n", monkeypatch=monkeypatch)[0] == 0
    assert bcrypt.checkpw(b"pw-b2", load_users(path).users["bob"].password.encode())  # the scheme is kept
    assert run_cli("passwd", path, "bob", "--hash", "argon2id", stdin="pw-b3\n", monkeypatch=monkeypatch)[0] == 0
    assert load_users(path).users["bob"].password.startswith("$argon2id$")
    assert load_users(path).users["alice"].root == VirtualPath.parse("/alice")  # the rest is kept
    assert run_cli("del", path, "bob", monkeypatch=monkeypatch)[0] == 0
    assert list(load_users(path).users) == ["alice"]
    assert run_cli("list", path, "alice", monkeypatch=monkeypatch)[1] == "alice argon2id root=/alice\n"


def test_cli_keeps_comments_and_the_file_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              cheap_hashes: None) -> None:
    path = tmp_path / "users.toml"
    write(path, "# our users\nfallthrough = false\n" + users_toml(alice="quota_bytes = 5  # small"))
    path.chmod(0o640)
    assert run_cli("passwd", str(path), "bob", stdin="x\n", monkeypatch=monkeypatch)[0] == 0
    text = path.read_text()
    assert "# our users" in text and "quota_bytes = 5  # small" in text and BOB not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["users.toml"]  # no temporary left


@pytest.mark.parametrize(
    ("arguments", "stdin", "words"),
    [
        (("add", "{path}", "alice"), "pw\n", ["exists already"]),
        (("passwd", "{path}", "carol"), "pw\n", ["no user 'carol'"]),
        (("del", "{path}", "carol"), "", ["no user 'carol'"]),
        (("list", "{path}", "carol"), "", ["no user 'carol'"]),
        (("add", "{path}", "carol"), "\n", ["empty"]),
        (("add", "{path}", "carol", "--permissions", "elrX"), "pw\n", ["not changed", "users.carol", "'X'"]),
        (("add", "{path}", "carol", "--root", "/a\x00"), "pw\n", ["not changed", "forbidden"]),
        (("passwd", "{missing}", "alice"), "pw\n", ["no such file"]),
        (("list", "{broken}"), "", ["not valid TOML"]),
    ],
)
def test_cli_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cheap_hashes: None,
                      arguments: tuple[str, ...], stdin: str, words: list[str]) -> None:
    path = write(tmp_path / "users.toml", users_toml())
    before = Path(path).read_text()
    places = {"path": path, "missing": str(tmp_path / "missing.toml"),
              "broken": write(tmp_path / "broken.toml", "[users\n")}
    status, out, err = run_cli(*(a.format(**places) for a in arguments), stdin=stdin, monkeypatch=monkeypatch)
    assert status == 1 and out == ""
    assert err.startswith("exftp-users: ") and err.count("\n") == 1
    for word in words:
        assert word in err
    assert Path(path).read_text() == before


def test_cli_fixes_a_plain_text_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cheap_hashes: None) -> None:
    path = write(tmp_path / "users.toml", '[users.alice]\npassword = "plain"\n')
    assert run_cli("passwd", path, "alice", stdin="pw\n", monkeypatch=monkeypatch)[0] == 0
    assert load_users(path).users["alice"].password.startswith("$argon2id$")


def test_cli_bad_usage_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit) as exited:
        run_cli("rename", "f", "u", monkeypatch=monkeypatch)
    assert exited.value.code == 2


def test_bcrypt_refuses_long_passwords(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "users.toml")
    status, _, err = run_cli("add", path, "alice", "--hash", "bcrypt", stdin="x" * 73 + "\n", monkeypatch=monkeypatch)
    assert status == 1 and "72 bytes" in err
    assert not os.path.exists(path)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_is_asked_twice() -> None:
    answers = iter(["pw", "pw"])
    assert read_password(_Terminal(), lambda prompt: next(answers)) == "pw"
    answers = iter(["pw", "other"])
    with pytest.raises(Exception, match="differ"):
        read_password(_Terminal(), lambda prompt: next(answers))
