"""
Which command is allowed when: the rules of an FTP session as a table.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ._errors import (
    BadSequence,
    CommandSyntaxError,
    FTPError,
    NotLoggedIn,
    UnknownCommand,
)
from ._paths import VirtualPath


class Access(enum.Enum):
    """Who may send a command."""

    ANYONE = "anyone"
    LOGGED_IN = "logged in"


class Argument(enum.Enum):
    """Whether a command takes an argument."""

    NONE = "none"
    OPTIONAL = "optional"
    REQUIRED = "required"


@dataclass(frozen=True, slots=True)
class Rule:
    """How one verb may be used."""

    access: Access
    argument: Argument


_A, _L = Access.ANYONE, Access.LOGGED_IN
_NO, _OPT, _REQ = Argument.NONE, Argument.OPTIONAL, Argument.REQUIRED

#: Every verb the server understands, after aliases are resolved.
RULES: dict[str, Rule] = {
    "USER": Rule(_A, _REQ),
    "PASS": Rule(_A, _OPT),
    "ACCT": Rule(_A, _REQ),
    "QUIT": Rule(_A, _NO),
    "NOOP": Rule(_A, _NO),
    "SYST": Rule(_A, _NO),
    "FEAT": Rule(_A, _NO),
    "HELP": Rule(_A, _OPT),
    "OPTS": Rule(_A, _REQ),
    "ABOR": Rule(_A, _NO),
    "TYPE": Rule(_L, _REQ),
    "MODE": Rule(_L, _REQ),
    "STRU": Rule(_L, _REQ),
    "PASV": Rule(_L, _NO),
    "EPSV": Rule(_L, _OPT),
    "PORT": Rule(_L, _REQ),
    "EPRT": Rule(_L, _REQ),
    "PWD": Rule(_L, _NO),
    "CWD": Rule(_L, _REQ),
    "CDUP": Rule(_L, _NO),
    "MKD": Rule(_L, _REQ),
    "RMD": Rule(_L, _REQ),
    "DELE": Rule(_L, _REQ),
    "RNFR": Rule(_L, _REQ),
    "RNTO": Rule(_L, _REQ),
    "LIST": Rule(_L, _OPT),
    "NLST": Rule(_L, _OPT),
    "RETR": Rule(_L, _REQ),
    "STOR": Rule(_L, _REQ),
    "APPE": Rule(_L, _REQ),
    "REST": Rule(_L, _REQ),
    "SIZE": Rule(_L, _REQ),
    "MDTM": Rule(_L, _REQ),
    "ALLO": Rule(_L, _OPT),
    "STAT": Rule(_L, _OPT),
    "STOU": Rule(_L, _OPT),
    "MLSD": Rule(_L, _OPT),
    "MLST": Rule(_L, _OPT),
    "MFMT": Rule(_L, _REQ),
    "SITE": Rule(_L, _REQ),
    "HASH": Rule(_L, _REQ),
    "XCRC": Rule(_L, _REQ),
    "XMD5": Rule(_L, _REQ),
    "XSHA1": Rule(_L, _REQ),
    "XSHA256": Rule(_L, _REQ),
    "CLNT": Rule(_A, _OPT),
    "AUTH": Rule(_A, _REQ),
    "PBSZ": Rule(_A, _REQ),
    "PROT": Rule(_A, _REQ),
    "CCC": Rule(_A, _NO),
    "HOST": Rule(_A, _REQ),
}

#: Logged-in verbs that, without an argument, tell only about the session
#: itself (STAT: its status), so they skip re-validation and need no permission.
_SESSION_ONLY_WITHOUT_ARGUMENT = frozenset({"STAT"})


@dataclass(frozen=True, slots=True)
class Permission:
    """
    A permission a command needs: one of pyftpdlib's letters.

    @ivar letter: the letter (C{e l r a d f m w M T}).
    @ivar what: what it allows, for the refusal ("you may not I{what}").
    """

    letter: str
    what: str


_CWD = Permission("e", "change directories")
_LIST = Permission("l", "list directories")
_READ = Permission("r", "download")

#: The permission each verb needs (pyftpdlib's letters: C{l} covers every
#: command that tells what exists, how big and how old; C{f} both halves of
#: a rename). Checked before the storage is called.
PERMISSIONS: dict[str, Permission] = {
    "CWD": _CWD,
    "CDUP": _CWD,
    **dict.fromkeys(["LIST", "NLST", "STAT", "MLSD", "MLST", "SIZE", "MDTM"], _LIST),
    **dict.fromkeys(["RETR", "HASH", "XCRC", "XMD5", "XSHA1", "XSHA256"], _READ),
    "APPE": Permission("a", "append"),
    **dict.fromkeys(["DELE", "RMD"], Permission("d", "delete")),
    **dict.fromkeys(["RNFR", "RNTO"], Permission("f", "rename")),
    "MKD": Permission("m", "create directories"),
    **dict.fromkeys(["STOR", "STOU"], Permission("w", "upload")),
    "SITE CHMOD": Permission("M", "change permissions"),
    "MFMT": Permission("T", "change modification times"),
}

#: Old or alternative spellings (RFC 775 X-commands).
ALIASES: dict[str, str] = {
    "XPWD": "PWD",
    "XCWD": "CWD",
    "XCUP": "CDUP",
    "XMKD": "MKD",
    "XRMD": "RMD",
}


@dataclass(slots=True)
class SessionState:
    """
    What the session rules depend on.

    @ivar username: the name from USER, waiting for PASS.
    @ivar logged_in: whether PASS succeeded.
    @ivar rename_from: the path named by RNFR, waiting for RNTO.
    @ivar restart_offset: the offset from REST, for the next RETR, STOR or APPE.
    """

    username: str | None = None
    logged_in: bool = False
    rename_from: VirtualPath | None = None
    restart_offset: int = 0


def canonical_verb(verb: str) -> str:
    """Resolve an alias such as C{XPWD} to its verb."""
    return ALIASES.get(verb, verb)


def check(state: SessionState, verb: str, argument: str) -> None:
    """
    Check that C{verb} with C{argument} may be sent now, and forget a
    pending RNFR unless this is its RNTO (even when the command is refused:
    RNTO must immediately follow RNFR).

    A REST offset is kept until a transfer uses it, as vsftpd and pyftpdlib
    do: clients such as ftplib and lftp send PASV or TYPE between REST and RETR.

    @raise FTPError: the reply that refuses the command.
    """
    rename_from, state.rename_from = state.rename_from, None
    rule = RULES.get(verb)
    if rule is None:
        raise UnknownCommand(f"Command {verb} not understood.")
    if rule.access is Access.LOGGED_IN and not state.logged_in:
        raise NotLoggedIn()
    if rule.argument is Argument.REQUIRED and not argument.strip():
        raise CommandSyntaxError(f"{verb} needs an argument.")
    if rule.argument is Argument.NONE and argument.strip():
        raise CommandSyntaxError(f"{verb} takes no argument.")
    if verb == "PASS" and (state.username is None or state.logged_in):
        raise BadSequence("Login with USER first." if not state.logged_in else "Already logged in.")
    if verb == "RNTO":
        if rename_from is None:
            raise BadSequence("RNFR required first.")
        state.rename_from = rename_from


def revalidates(verb: str, argument: str) -> bool:
    """
    Whether the session must be re-validated before C{verb} runs: every
    logged-in command that may reveal or change data (plain STAT, the
    session's own status, does not), including one answered while another
    command is busy.
    """
    rule = RULES.get(verb)
    if rule is None or rule.access is not Access.LOGGED_IN:
        return False
    return bool(argument.strip()) or verb not in _SESSION_ONLY_WITHOUT_ARGUMENT


def required_permission(verb: str, argument: str) -> Permission | None:
    """The permission C{verb} with C{argument} needs, if any (SITE by its sub-command)."""
    if verb in _SESSION_ONLY_WITHOUT_ARGUMENT and not argument.strip():
        return None
    if verb == "SITE":
        verb = "SITE " + argument.strip().partition(" ")[0].upper()
    return PERMISSIONS.get(verb)


def refuse_line(state: SessionState) -> None:
    """
    Note a line refused before it was a command (not UTF-8, a NUL, no verb):
    it still comes between RNFR and RNTO, so the RNFR is forgotten, as
    L{check} forgets it for a refused command.
    """
    state.rename_from = None


def check_or_error(state: SessionState, verb: str, argument: str) -> FTPError | None:
    """Like L{check}, returning the refusal instead of raising it."""
    try:
        check(state, verb, argument)
    except FTPError as error:
        return error
    return None
