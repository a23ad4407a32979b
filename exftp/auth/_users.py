"""
Virtual users from a TOML file: C{twistd exftp --users FILE}.

One table per user, with a password hash (never the password itself)::

    fallthrough = false           # users not in the file may try --auth

    [users.alice]
    password = "$argon2id$v=19$m=65536,t=3,p=4$..."
    root = "/alice"
    quota_bytes = 10_000_000_000
    allow_from = ["192.0.2.0/24"]

Everything is checked when the file is loaded: an unknown key, a value of
the wrong type or a password that is not an Argon2id or bcrypt hash is a
L{ValueError} that names the user and the key. Passwords are checked in a
small pool of threads, and a user who is not in the file costs a check
against a dummy hash, so that timing tells nothing about who exists.
"""

from __future__ import annotations

import difflib
import re
import secrets
import threading
import tomllib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from .._errors import LoginFailed
from .._interfaces import IAuthenticator, Session, UserLimits
from .._limits import LIMIT_KEYS, parse_limits, value_kind
from .._login import IPublicKeyAuthenticator
from .._paths import VirtualPath
from ..storage._readonly import check_permissions
from ._http import parse_root

__all__ = ["UserEntry", "UsersAuthenticator", "UsersFile", "hash_password", "load_users", "parse_users"]

_log = Logger(namespace="exftp.auth.users")

#: The key in L{Session.attributes} that marks a session as one of the file's.
SESSION_KEY = "exftp.users"
#: Threads that check passwords at once (each Argon2id check takes 64 MiB).
VERIFY_THREADS = 2

ARGON2_PREFIX = "$argon2id$"
_BCRYPT = re.compile(r"\$2[aby]\$(?P<cost>\d\d)\$[./A-Za-z0-9]{53}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_INSTALL = "pip install 'exftp[users]'"

_TOP_KEYS = ("fallthrough", "users")
_KEYS = ("password", "root", "permissions", "read_only", "disabled", "authorized_keys", *LIMIT_KEYS)
#: The key types an C{authorized_keys} line may name (what Conch verifies).
_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa",
              "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")


@dataclass(frozen=True, slots=True)
class UserEntry:
    """
    One user of the file.

    @ivar name: the user name (the table's key).
    @ivar password: the Argon2id or bcrypt hash.
    @ivar root: the user's home inside the storage, or C{None} for all of it.
    @ivar read_only: whether the user may only read.
    @ivar permissions: pyftpdlib's letters, or C{None} for everything.
    @ivar limits: quotas, rates and the rest, for the core to enforce.
    @ivar disabled: whether logins are refused.
    @ivar authorized_keys: public keys (C{authorized_keys} lines) that may
        log the user in over SFTP.
    """

    name: str
    password: str = field(repr=False)
    root: VirtualPath | None = None
    read_only: bool = False
    permissions: frozenset[str] | None = None
    limits: UserLimits = field(default_factory=UserLimits)
    disabled: bool = False
    authorized_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UsersFile:
    """
    The contents of a users file.

    @ivar users: the entries by user name.
    @ivar fallthrough: whether users not in the file go to the other
        authenticator (C{--auth}).
    @ivar typical_hash: a hash with the parameters most users' hashes have,
        which the check of a user not in the file costs as much as; C{None}
        without users.
    """

    users: Mapping[str, UserEntry]
    fallthrough: bool = False
    typical_hash: str | None = field(default=None, repr=False)


def _typical_hash(users: Mapping[str, UserEntry]) -> str | None:
    """A hash with the parameters most of C{users}' hashes have."""
    kinds = Counter(_parameters(entry.password) for entry in users.values())
    if not kinds:
        return None
    common = kinds.most_common(1)[0][0]
    return next(entry.password for entry in users.values() if _parameters(entry.password) == common)


# Hashes


def _parameters(hashed: str) -> str:
    """What decides a hash's cost: its scheme and parameters, without salt and digest."""
    if hashed.startswith(ARGON2_PREFIX):
        return hashed.rsplit("$", 2)[0]
    return hashed[:7]


def check_hash(hashed: str, user: str = "USER") -> None:
    """
    Check that C{hashed} is an Argon2id or bcrypt hash this server can verify.

    @param user: whose it is, for the hint in the message.
    @raise ValueError: saying what is wrong, without repeating the value
        (it may be a password written in plain text).
    """
    if hashed.startswith(ARGON2_PREFIX):
        try:
            from argon2 import extract_parameters
        except ImportError:
            raise ValueError(f"an Argon2id hash needs argon2-cffi: {_INSTALL}") from None
        try:
            extract_parameters(hashed)
        except ValueError:
            raise ValueError("malformed Argon2id hash") from None
        return
    if hashed.startswith(("$2a$", "$2b$", "$2y$")):
        try:
            import bcrypt  # noqa: F401
        except ImportError:
            raise ValueError(f"a bcrypt hash needs bcrypt: {_INSTALL}") from None
        if not _BCRYPT.fullmatch(hashed):
            raise ValueError("malformed bcrypt hash")
        return
    if hashed.startswith("$argon2"):
        raise ValueError("only Argon2id hashes ($argon2id$...) are accepted, not Argon2i or Argon2d")
    raise ValueError(
        "not an Argon2id ($argon2id$...) or bcrypt ($2b$...) hash; plain-text passwords are refused "
        f"(set one with: exftp-users passwd FILE {user})"
    )


def verify_password(hashed: str, password: str) -> bool:
    """Whether C{password} matches C{hashed} (a checked hash); slow on purpose, run it in a thread."""
    secret = password.encode("utf-8", "surrogatepass")
    if hashed.startswith(ARGON2_PREFIX):
        from argon2 import PasswordHasher
        from argon2.exceptions import InvalidHashError, VerificationError

        try:
            return PasswordHasher().verify(hashed, secret)
        except (VerificationError, InvalidHashError):
            return False
    import bcrypt

    # bcrypt takes at most 72 bytes: a longer password is refused, after a
    # check as slow as any other, so that its length tells nothing.
    return bcrypt.checkpw(secret[:72], hashed.encode("ascii")) and len(secret) <= 72


def hash_password(password: str, scheme: str = "argon2id") -> str:
    """
    Hash C{password} with C{argon2id} (argon2-cffi's defaults) or C{bcrypt} (cost 12).

    @raise ValueError: for an unknown scheme, a missing library, or a
        password bcrypt cannot take (more than 72 bytes).
    """
    if scheme == "argon2id":
        try:
            from argon2 import PasswordHasher
        except ImportError:
            raise ValueError(f"argon2id needs argon2-cffi: {_INSTALL}") from None
        return PasswordHasher().hash(password)
    if scheme == "bcrypt":
        try:
            import bcrypt
        except ImportError:
            raise ValueError(f"bcrypt needs bcrypt: {_INSTALL}") from None
        secret = password.encode("utf-8")
        if len(secret) > 72:
            raise ValueError("bcrypt takes at most 72 bytes of password; use argon2id")
        return bcrypt.hashpw(secret, bcrypt.gensalt(12)).decode("ascii")
    raise ValueError(f"unknown hash scheme {scheme!r} (use argon2id or bcrypt)")


def _dummy_like(hashed: str) -> str:
    """A hash of a random password that costs as much to check as C{hashed}."""
    secret = secrets.token_urlsafe(16)
    if hashed.startswith(ARGON2_PREFIX):
        from argon2 import PasswordHasher, extract_parameters

        return PasswordHasher.from_parameters(extract_parameters(hashed)).hash(secret)
    import bcrypt

    return bcrypt.hashpw(secret.encode(), bcrypt.gensalt(int(hashed[4:6]))).decode("ascii")


# The file


def _unknown(keys: Any, known: tuple[str, ...], where: str) -> None:
    """Refuse keys that are not in C{known}, suggesting the closest one."""
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(known)})"
            raise ValueError(f"{where}: unknown key {key!r}{hint}")


def _flag(table: Mapping[str, Any], key: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{where}.{key}: expected true or false, not {value_kind(value)}")
    return value


def _entry(name: str, table: object) -> UserEntry:
    """One user's entry from its table."""
    where = f"users.{name}"
    if not name or _CONTROL.search(name):
        raise ValueError(f"{where!r}: a user name must be non-empty, without control characters")
    if not isinstance(table, dict):
        raise ValueError(f"{where}: expected a table ([users.{name}]), not {value_kind(table)}")
    _unknown(table, _KEYS, where)
    password = table.get("password")
    if not isinstance(password, str):
        missing = "is missing" if password is None else f"must be text, not {value_kind(password)}"
        raise ValueError(f"{where}.password {missing} (set it with: exftp-users passwd FILE {name})")
    try:
        check_hash(password, name)
    except ValueError as error:
        raise ValueError(f"{where}.password: {error}") from None
    root, letters = table.get("root"), table.get("permissions")
    if root is not None and not isinstance(root, str):
        raise ValueError(f"{where}.root: expected text such as \"/{name}\", not {value_kind(root)}")
    if letters is not None and not isinstance(letters, str):
        raise ValueError(f'{where}.permissions: expected letters such as "elr", not {value_kind(letters)}')
    try:
        path = None if root is None else parse_root(root)
        permissions = None if letters is None else check_permissions(letters)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    return UserEntry(
        name,
        password,
        root=path,
        read_only=_flag(table, "read_only", where),
        permissions=permissions,
        limits=parse_limits(table, f"{where}."),
        disabled=_flag(table, "disabled", where),
        authorized_keys=_authorized_keys(table.get("authorized_keys", []), where),
    )


def _authorized_keys(value: object, where: str) -> tuple[str, ...]:
    """The C{authorized_keys} list: lines such as C{"ssh-ed25519 AAAA... comment"}."""
    if not isinstance(value, list) or not all(isinstance(line, str) for line in value):
        raise ValueError(f'{where}.authorized_keys: expected a list of keys such as "ssh-ed25519 AAAA...", '
                         f"not {value_kind(value)}")
    for number, line in enumerate(value, 1):
        fields = line.split()
        if not any(kind in _KEY_TYPES and index + 1 < len(fields) for index, kind in enumerate(fields)):
            raise ValueError(f"{where}.authorized_keys[{number}]: not a public key line "
                             f"(expected one of {', '.join(_KEY_TYPES[:5])}... then the key)")
    return tuple(value)


def parse_users(document: Mapping[str, Any]) -> UsersFile:
    """
    Read a parsed users file.

    @raise ValueError: naming the user and key of the first problem.
    """
    _unknown(document, _TOP_KEYS, "the file")
    fallthrough = document.get("fallthrough", False)
    if not isinstance(fallthrough, bool):
        raise ValueError(f"fallthrough: expected true or false, not {value_kind(fallthrough)}")
    tables = document.get("users", {})
    if not isinstance(tables, dict):
        raise ValueError(f"users: expected tables such as [users.alice], not {value_kind(tables)}")
    users = {name: _entry(name, table) for name, table in tables.items()}
    return UsersFile(users, fallthrough, _typical_hash(users))


def load_users(path: str) -> UsersFile:
    """
    Read and check the users file at C{path}.

    @raise ValueError: when it cannot be read, is not TOML, or has a problem.
    """
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as error:
        raise ValueError(f"cannot read it: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"not valid TOML: {error}") from None
    except UnicodeDecodeError:
        raise ValueError("not valid TOML: not UTF-8") from None
    return parse_users(document)


# The authenticator


@dataclass(frozen=True, slots=True)
class _Stamp:
    """What a session of the file's keeps: who made it, and the entry it was made from."""

    owner: object
    entry: UserEntry


@implementer(IAuthenticator, IPublicKeyAuthenticator)
class UsersAuthenticator:
    """
    Logins checked against a users file; see the module's description.

    A user in the file is checked against the file only. A user who is not
    goes to C{fallback} when the file says C{fallthrough = true}, and is
    refused otherwise. L{reload} reads the file again (on SIGHUP); a session
    stays valid while its user's entry is unchanged, and ends at its next
    re-validation once the entry changed, was disabled or was removed, so
    that the next login gets the new settings.

    @param path: the TOML file.
    @param fallback: the authenticator for users not in the file, if any.
    @param reactor: for the verification threads; the global reactor,
        looked up on first use, when omitted.
    @param run_in_thread: runs one password check off the reactor thread;
        by default a pool of L{VERIFY_THREADS} threads.
    @raise ValueError: when the file has a problem, or sets C{fallthrough}
        without a C{fallback}.
    """

    def __init__(
        self,
        path: str,
        fallback: IAuthenticator | None = None,
        *,
        reactor: Any = None,
        run_in_thread: Callable[[Callable[[], bool]], Deferred[bool]] | None = None,
    ) -> None:
        self.path = path
        self.fallback = fallback
        self._reactor = reactor
        self._run_in_thread = run_in_thread
        self._pool: ThreadPool | None = None
        self._dummies: dict[str, str] = {}
        self._dummies_lock = threading.Lock()
        self.users = self._load()

    def __repr__(self) -> str:
        return f"<UsersAuthenticator {self.path}>"

    def _load(self) -> UsersFile:
        users = load_users(self.path)
        if users.fallthrough and self.fallback is None:
            raise ValueError("fallthrough = true, but there is no --auth to fall through to")
        return users

    def reload(self) -> bool:
        """Read the file again; keep the old one (and log why) when the new one has a problem."""
        try:
            users = self._load()
        except ValueError as error:
            _log.error("Users file {path} not reloaded, keeping the old one: {why}", path=self.path, why=str(error))
            return False
        self.users = users
        _log.info("Users file {path} reloaded: {count} users", path=self.path, count=len(users.users))
        return True

    def _falls_through(self, users: UsersFile, username: str) -> bool:
        return users.fallthrough and self.fallback is not None and username not in users.users

    # IAuthenticator

    def valid_user(self, username: str) -> Deferred[bool]:
        """C{True} for everyone the file decides about, so that nobody learns who exists."""
        users = self.users
        if self._falls_through(users, username):
            assert self.fallback is not None
            return maybeDeferred(self.fallback.valid_user, username)
        return succeed(True)

    def login(self, username: str, password: str) -> Deferred[Session]:
        users = self.users
        if self._falls_through(users, username):
            assert self.fallback is not None
            return maybeDeferred(self.fallback.login, username, password)
        return Deferred.fromCoroutine(self._login(users, username, password))

    async def _login(self, users: UsersFile, username: str, password: str) -> Session:
        entry = users.users.get(username)
        if entry is None:
            typical = users.typical_hash
            if typical is not None:  # as slow as a user's check (a file without users has none to hide)
                await self._verify(lambda: verify_password(self._dummy(typical), password))
            raise LoginFailed()
        if not await self._verify(lambda: verify_password(entry.password, password)):
            raise LoginFailed()
        if entry.disabled:
            _log.info("Login of {user!r} refused: disabled in the users file", user=username)
            raise LoginFailed()
        return self._session(entry)

    def _session(self, entry: UserEntry) -> Session:
        return Session(
            entry.name,
            root=entry.root,
            read_only=entry.read_only,
            permissions=entry.permissions,
            attributes={SESSION_KEY: _Stamp(self, entry)},
            limits=entry.limits,
        )

    def authorized_keys(self, username: str) -> Deferred[tuple[Session, Sequence[str]]]:
        """
        The session and public keys of a user of the file (refused when it
        has none or is disabled); a user who falls through is asked of
        C{fallback}, when it knows about keys.
        """
        users = self.users
        if self._falls_through(users, username):
            if not IPublicKeyAuthenticator.providedBy(self.fallback):
                return fail(LoginFailed())
            return maybeDeferred(self.fallback.authorized_keys, username)  # type: ignore[union-attr]
        entry = users.users.get(username)
        if entry is None or entry.disabled or not entry.authorized_keys:
            return fail(LoginFailed())
        return succeed((self._session(entry), entry.authorized_keys))

    def authenticated(self, session: Session) -> Deferred[bool]:
        """
        Whether the session's entry is still the same in the file (or, for a
        user who fell through, whether C{fallback} still says yes).
        """
        users = self.users
        stamp = session.attributes.get(SESSION_KEY)
        if isinstance(stamp, _Stamp) and stamp.owner is self:
            current = users.users.get(session.username)
            same = current is stamp.entry or current == stamp.entry
            return succeed(current is not None and same and not current.disabled)
        if not self._falls_through(users, session.username):
            return succeed(False)
        assert self.fallback is not None
        return maybeDeferred(self.fallback.authenticated, session)

    # Threads

    def _dummy(self, typical: str) -> str:
        """The dummy hash for users not in the file, made once for each kind of hash (in a thread)."""
        key = _parameters(typical)
        with self._dummies_lock:
            if key not in self._dummies:
                self._dummies[key] = _dummy_like(typical)
            return self._dummies[key]

    def _verify(self, check: Callable[[], bool]) -> Deferred[bool]:
        if self._run_in_thread is not None:
            return self._run_in_thread(check)
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        if self._pool is None:
            self._pool = ThreadPool(0, VERIFY_THREADS, "exftp-users")
            self._pool.start()
            self._reactor.addSystemEventTrigger("during", "shutdown", self._pool.stop)
        result: Deferred[bool] = deferToThreadPool(self._reactor, self._pool, check)
        return result
