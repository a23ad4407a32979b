"""
Tests for the session rules table: which command is allowed when.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exftp import BadSequence, CommandSyntaxError, FTPError, NotLoggedIn, UnknownCommand, VirtualPath
from exftp._session import (
    ALIASES,
    PERMISSIONS,
    RULES,
    Access,
    Argument,
    SessionState,
    canonical_verb,
    check,
    check_or_error,
    required_permission,
    revalidates,
)
from exftp.storage._readonly import ALL_PERMISSIONS

_ANYONE = sorted(verb for verb, rule in RULES.items() if rule.access is Access.ANYONE and verb != "PASS")
_LOGGED_IN = sorted(verb for verb, rule in RULES.items() if rule.access is Access.LOGGED_IN)


def _argument_for(verb: str) -> str:
    """An argument that the verb's grammar accepts."""
    return "" if RULES[verb].argument is Argument.NONE else "x"


def _logged_in() -> SessionState:
    return SessionState(logged_in=True)


def test_rules_cover_the_rfc_959_minimum() -> None:
    # RFC 959 section 5.1: the minimum implementation.
    assert {"USER", "QUIT", "PORT", "TYPE", "MODE", "STRU", "RETR", "STOR", "NOOP"} <= set(RULES)
    assert all(canonical in RULES for canonical in ALIASES.values())


@pytest.mark.parametrize(("alias", "verb"), [("XPWD", "PWD"), ("XCUP", "CDUP"), ("XMKD", "MKD"), ("RETR", "RETR")])
def test_canonical_verb(alias: str, verb: str) -> None:
    assert canonical_verb(alias) == verb


@pytest.mark.parametrize("verb", _LOGGED_IN)
def test_logged_in_commands_refused_before_login(verb: str) -> None:
    state = SessionState(username="alice")
    with pytest.raises(NotLoggedIn) as caught:
        check(state, verb, _argument_for(verb))
    assert caught.value.reply == 530


@pytest.mark.parametrize("verb", _ANYONE)
def test_anyone_commands_allowed_before_login(verb: str) -> None:
    check(SessionState(), verb, _argument_for(verb))


@pytest.mark.parametrize("verb", sorted(RULES))
def test_argument_grammar(verb: str) -> None:
    state = SessionState(username="u", logged_in=verb != "PASS", rename_from=VirtualPath.parse("/a"))
    kind = RULES[verb].argument
    if kind is Argument.REQUIRED:
        for empty in ("", "   "):
            with pytest.raises(CommandSyntaxError):
                check(state, verb, empty)
    if kind is Argument.NONE:
        with pytest.raises(CommandSyntaxError):
            check(state, verb, "surplus")
        check(state, verb, "  ")


@pytest.mark.parametrize("verb", ["XYZ", "SMNT", "REIN", "xpwd", ""])
def test_unknown_commands(verb: str) -> None:
    with pytest.raises(UnknownCommand) as caught:
        check(_logged_in(), verb, "")
    assert caught.value.reply == 500


def test_unknown_beats_not_logged_in() -> None:
    assert isinstance(check_or_error(SessionState(), "BOGUS", ""), UnknownCommand)


def test_pass_needs_user_first() -> None:
    with pytest.raises(BadSequence) as caught:
        check(SessionState(), "PASS", "secret")
    assert caught.value.reply == 503
    check(SessionState(username="alice"), "PASS", "secret")
    check(SessionState(username="alice"), "PASS", "")


def test_pass_after_login_is_a_bad_sequence() -> None:
    with pytest.raises(BadSequence, match="Already logged in"):
        check(SessionState(username="alice", logged_in=True), "PASS", "x")


def test_rnto_needs_rnfr() -> None:
    with pytest.raises(BadSequence) as caught:
        check(_logged_in(), "RNTO", "b")
    assert caught.value.reply == 503


def test_rnto_right_after_rnfr_keeps_the_source() -> None:
    source = VirtualPath.parse("/a")
    state = SessionState(logged_in=True, rename_from=source)
    check(state, "RNTO", "b")
    assert state.rename_from == source


@pytest.mark.parametrize(
    ("verb", "argument"),
    [("NOOP", ""), ("PWD", ""), ("RNFR", "c"), ("BOGUS", ""), ("RNTO", ""), ("TYPE", "")],
)
def test_any_other_command_forgets_rnfr_even_when_refused(verb: str, argument: str) -> None:
    state = SessionState(logged_in=True, rename_from=VirtualPath.parse("/a"))
    check_or_error(state, verb, argument)
    assert state.rename_from is None
    with pytest.raises(BadSequence):
        check(state, "RNTO", "b")


@pytest.mark.parametrize("verb", ["PASV", "TYPE", "PORT", "SIZE", "NOOP", "RETR", "STOR", "APPE", "REST"])
def test_rest_offset_waits_for_the_transfer(verb: str) -> None:
    # ftplib and lftp send PASV or TYPE between REST and RETR; the transfer
    # handler, not the rules, takes the offset.
    state = SessionState(logged_in=True, restart_offset=100)
    check(state, verb, _argument_for(verb))
    assert state.restart_offset == 100


def test_check_or_error_returns_the_refusal() -> None:
    state = SessionState()
    error = check_or_error(state, "RETR", "x")
    assert isinstance(error, NotLoggedIn)
    assert check_or_error(state, "USER", "alice") is None


@given(
    st.lists(
        st.tuples(st.sampled_from([*sorted(RULES), "BOGUS"]), st.sampled_from(["", "x", "  "])),
        max_size=12,
    )
)
def test_no_logged_in_command_passes_without_login(commands: list[tuple[str, str]]) -> None:
    state = SessionState()
    for verb, argument in commands:
        error = check_or_error(state, verb, argument)
        if verb in RULES and RULES[verb].access is Access.LOGGED_IN:
            assert isinstance(error, FTPError)
        if verb == "USER" and error is None:
            state.username = argument
    assert not state.logged_in


# Re-validation and permissions (issue 16)


@pytest.mark.parametrize("verb", _LOGGED_IN)
def test_every_logged_in_command_with_an_argument_revalidates(verb: str) -> None:
    assert revalidates(verb, "x")


@pytest.mark.parametrize("verb", [*_ANYONE, "PASS"])
def test_commands_open_to_anyone_do_not_revalidate(verb: str) -> None:
    """NOOP, ABOR, QUIT...: nothing of the user's data is revealed or changed."""
    assert not revalidates(verb, "")
    assert not revalidates(verb, "x")


def test_stat_revalidates_only_with_a_path() -> None:
    """Plain STAT tells the session's own status; STAT <path> lists."""
    assert not revalidates("STAT", "")
    assert not revalidates("STAT", "  ")
    assert revalidates("STAT", "/secret")
    assert required_permission("STAT", "") is None
    assert required_permission("STAT", "/secret") == PERMISSIONS["LIST"]


@pytest.mark.parametrize("verb", ["LIST", "NLST", "STAT", "MLSD", "MLST", "SIZE", "MDTM"])
def test_l_covers_everything_that_tells_what_exists(verb: str) -> None:
    """pyftpdlib's letters: C{l} for every command that reveals existence, size or time."""
    permission = required_permission(verb, "x")
    assert permission is not None and permission.letter == "l"


def test_rename_needs_f_on_both_halves() -> None:
    assert [required_permission(verb, "x").letter for verb in ("RNFR", "RNTO")] == ["f", "f"]  # type: ignore[union-attr]


def test_site_permissions_by_sub_command() -> None:
    assert required_permission("SITE", "chmod 600 a").letter == "M"  # type: ignore[union-attr]
    assert required_permission("SITE", "HELP") is None


def test_permission_letters_are_pyftpdlibs() -> None:
    assert {p.letter for p in PERMISSIONS.values()} == ALL_PERMISSIONS
    assert set(PERMISSIONS) - {"SITE CHMOD"} <= set(RULES)
