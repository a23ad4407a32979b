"""
The C{exftp-users} command: manage a users file (C{twistd exftp --users
FILE}) without editing password hashes by hand.

    exftp-users add FILE USER [--hash bcrypt] [--root DIR] [--permissions elr] [--read-only]
    exftp-users passwd FILE USER [--hash argon2id|bcrypt]
    exftp-users del FILE USER
    exftp-users list FILE [USER]

The password is asked for twice on a terminal, or read from the first line
of standard input otherwise (for scripts). The file keeps its comments and
layout; it is replaced atomically, keeping its mode (0600 for a new file),
and only when the server would accept the result. Send the server SIGHUP to
load it.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import IO, Any

from .auth._users import ARGON2_PREFIX, UserEntry, hash_password, parse_users

__all__ = ["main"]


class _Failure(Exception):
    """A problem to report on one line and exit 1 with."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exftp-users",
        description="Manage the users file of twistd exftp --users FILE. Passwords are read from standard "
        "input when it is not a terminal. Send the server SIGHUP afterwards to load the file.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="add|passwd|del|list")
    hashing = argparse.ArgumentParser(add_help=False)
    hashing.add_argument("--hash", choices=("argon2id", "bcrypt"),
                         help="the password hash (default: argon2id for add, the user's current one for passwd)")
    add = commands.add_parser("add", parents=[hashing], help="add a user, asking for the password")
    add.add_argument("--root", help="the user's home inside the storage, e.g. /alice")
    add.add_argument("--permissions", help="pyftpdlib's permission letters, e.g. elr")
    add.add_argument("--read-only", action="store_true", help="the user may only read")
    commands.add_parser("passwd", parents=[hashing], help="set a user's password")
    commands.add_parser("del", help="remove a user")
    show = commands.add_parser("list", help="list the users (or one user's settings), without hashes")
    for command in (add, *(commands.choices[name] for name in ("passwd", "del"))):
        command.add_argument("file", metavar="FILE")
        command.add_argument("user", metavar="USER")
    show.add_argument("file", metavar="FILE")
    show.add_argument("user", metavar="USER", nargs="?")
    return parser


def read_password(stdin: IO[str], ask: Callable[[str], str] = getpass.getpass) -> str:
    """
    The new password: asked twice on a terminal, else the first line of C{stdin}.

    @raise _Failure: when it is empty or the two answers differ.
    """
    if stdin.isatty():
        password = ask("New password: ")
        if password != ask("Again: "):
            raise _Failure("the passwords differ")
    else:
        password = stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        raise _Failure("the password is empty")
    return password


def _load(path: str, create: bool) -> Any:
    """The file as a style-keeping TOML document (an empty one if it does not exist and C{create})."""
    import tomlkit
    from tomlkit.exceptions import ParseError

    try:
        with open(path, encoding="utf-8") as handle:
            return tomlkit.parse(handle.read())
    except FileNotFoundError:
        if create:
            return tomlkit.document()
        raise _Failure(f"{path}: no such file") from None
    except OSError as error:
        raise _Failure(f"{path}: {error.strerror or error}") from None
    except (ParseError, UnicodeDecodeError) as error:
        raise _Failure(f"{path}: not valid TOML: {error}") from None


def _users(document: Any, path: str) -> Any:
    """The document's C{users} table, made when missing."""
    import tomlkit

    if "users" not in document:
        document["users"] = tomlkit.table(is_super_table=True)
    users = document["users"]
    if not isinstance(users, dict):
        raise _Failure(f"{path}: users is not a table")
    return users


def _save(document: Any, path: str) -> None:
    """Check the document as the server would, then replace the file with it atomically."""
    import tomlkit

    try:
        parse_users(document.unwrap())
    except ValueError as error:
        raise _Failure(f"{path}: not changed, the server would refuse it: {error}") from None
    text = tomlkit.dumps(document)
    try:
        owner: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        owner = None
    mode = 0o600 if owner is None else owner.st_mode & 0o7777
    directory = os.path.dirname(os.path.abspath(path))
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=".exftp-users-", dir=directory)
    except OSError as error:
        raise _Failure(f"{path}: {error.strerror or error}") from None
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        if owner is not None and os.geteuid() == 0:
            os.chown(temporary, owner.st_uid, owner.st_gid)
        os.replace(temporary, path)
    except OSError as error:
        raise _Failure(f"{path}: {error.strerror or error}") from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _describe(entry: UserEntry) -> str:
    """One user's line in C{list}: the name and the settings that are set, never the hash."""
    parts = [entry.name, "argon2id" if entry.password.startswith(ARGON2_PREFIX) else "bcrypt"]
    if entry.disabled:
        parts.append("disabled")
    if entry.root is not None:
        parts.append(f"root={entry.root}")
    if entry.read_only:
        parts.append("read-only")
    if entry.permissions is not None:
        parts.append("permissions=" + "".join(sorted(entry.permissions)))
    limits = entry.limits
    for name in ("quota_bytes", "quota_files", "upload_rate", "download_rate", "max_sessions", "max_file_size"):
        if getattr(limits, name) is not None:
            parts.append(f"{name}={getattr(limits, name)}")
    if limits.allow_from:
        parts.append("allow_from=" + ",".join(str(network) for network in limits.allow_from))
    return " ".join(parts)


def run(arguments: argparse.Namespace, stdin: IO[str], stdout: IO[str]) -> None:
    """Carry out one parsed command; L{_Failure} for a problem."""
    path, name = arguments.file, arguments.user
    if arguments.command == "list":
        document = _load(path, create=False)
        try:
            users = parse_users(document.unwrap()).users
        except ValueError as error:
            raise _Failure(f"{path}: {error}") from None
        if name is not None and name not in users:
            raise _Failure(f"{path}: no user {name!r}")
        for entry in users.values():
            if name is None or entry.name == name:
                stdout.write(_describe(entry) + "\n")
        return
    document = _load(path, create=arguments.command == "add")
    users = _users(document, path)
    if arguments.command == "add":
        if name in users:
            raise _Failure(f"{path}: user {name!r} exists already (use passwd to change the password)")
        import tomlkit

        table = tomlkit.table()
        table["password"] = hash_password(read_password(stdin), arguments.hash or "argon2id")
        for key, value in (("root", arguments.root), ("permissions", arguments.permissions)):
            if value is not None:
                table[key] = value
        if arguments.read_only:
            table["read_only"] = True
        users[name] = table
    elif name not in users:
        raise _Failure(f"{path}: no user {name!r}")
    elif not isinstance(users[name], dict):
        raise _Failure(f"{path}: users.{name} is not a table")
    elif arguments.command == "passwd":
        current = users[name].get("password")
        kept = "bcrypt" if isinstance(current, str) and current.startswith("$2") else "argon2id"
        users[name]["password"] = hash_password(read_password(stdin), arguments.hash or kept)
    else:
        del users[name]
    _save(document, path)
    stdout.write(f"{path}: {arguments.command} {name}: done; send SIGHUP to the server to load it\n")


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: 0 on success, 1 for a problem (said on standard error), 2 for bad usage."""
    arguments = _parser().parse_args(argv)
    try:
        run(arguments, sys.stdin, sys.stdout)
    except (_Failure, ValueError) as error:
        sys.stderr.write(f"exftp-users: {error}\n")
        return 1
    except ImportError as error:
        sys.stderr.write(f"exftp-users: needs {error.name}: pip install 'exftp[users]'\n")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
