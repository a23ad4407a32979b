"""
Hypothesis properties of the sans-IO cores that meet client input first:
the path resolver (L{exftp.VirtualPath}) and the command-line parser.

For any input, either the documented client error (with its reply code) or
a well-formed value; never another exception.
"""

from __future__ import annotations

import posixpath
from random import Random

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from exftp import FTPError, InvalidPath, Reply, VirtualPath
from exftp._commands import (
    Command,
    parse_command,
    parse_eprt,
    parse_host_port,
    parse_list_argument,
    strip_telnet,
)
from exftp._session import RULES
from exftp.storage._local import FileStorage

_FORBIDDEN = "\x00\r\n"

# Paths

#: Pieces of client text; the ones a resolver can get wrong are over-represented.
_piece = st.one_of(
    st.sampled_from(["", ".", "..", "...", "/", "//", "./", "../", "/..", "a", "é", "日本", " ", "~", "\\", "\t"]),
    st.sampled_from(list(_FORBIDDEN)),
    st.text(max_size=5),
)
#: Any client text: slashes, dots, unicode, and now and then NUL, CR or LF.
_any_text = st.lists(_piece, max_size=10).map("".join)
#: Client text that the resolver must accept.
_clean_text = _any_text.map(lambda text: "".join(c for c in text if c not in _FORBIDDEN))
#: Working directories reached by resolving clean text from the root.
_cwds = _clean_text.map(VirtualPath.root().resolve)


def _well_formed(path: VirtualPath) -> None:
    """Absolute, normalised, no C{.}/C{..}/empty segment, and its text is its identity."""
    text = str(path)
    assert text.startswith("/")
    assert posixpath.normpath(text) == text
    assert all(name not in ("", ".", "..") and "/" not in name for name in path.segments)
    assert not set(_FORBIDDEN).intersection(text)
    assert path.is_within(VirtualPath.root())


@given(_cwds, _any_text)
def test_resolve_rejects_with_553_or_yields_a_well_formed_path(cwd: VirtualPath, text: str) -> None:
    try:
        result = cwd.resolve(text)
    except InvalidPath as error:
        assert set(_FORBIDDEN).intersection(text), f"{text!r} refused: {error.message}"
        assert error.reply == Reply.FILE_NAME_NOT_ALLOWED
        return
    assert not set(_FORBIDDEN).intersection(text)
    _well_formed(result)


@given(_cwds, _cwds, _clean_text)
def test_resolution_is_idempotent_and_independent_of_the_cwd(cwd: VirtualPath, other: VirtualPath, text: str) -> None:
    result = cwd.resolve(text)
    assert result.resolve(str(result)) == result
    assert other.resolve(str(result)) == result
    assert result.resolve("") == result == result.resolve(".")
    assert VirtualPath.root().resolve(str(result)) == VirtualPath(result.segments)


@given(_cwds, _clean_text.filter(bool), _clean_text.filter(lambda text: not text.startswith("/")))
def test_resolving_in_two_steps_is_resolving_the_joined_text(cwd: VirtualPath, first: str, then: str) -> None:
    assert cwd.resolve(first).resolve(then) == cwd.resolve(first + "/" + then)


@given(_cwds, st.lists(_clean_text, max_size=6))
def test_walking_up_never_passes_the_root(cwd: VirtualPath, steps: list[str]) -> None:
    # A client that sends CWD after CWD, each with whatever text it likes.
    here = cwd
    for step in steps:
        here = here.resolve(step)
        _well_formed(here)
        assert here.resolve("..") == here.parent
        assert here.resolve("..").is_within(VirtualPath.root())
    assert len(here.resolve("../" * (len(here.segments) + 3)).segments) == 0


@given(_cwds, _clean_text, st.text(min_size=1, max_size=6))
def test_child_and_parent_agree_with_resolve(cwd: VirtualPath, text: str, name: str) -> None:
    here = cwd.resolve(text)
    try:
        child = here.child(name)
    except InvalidPath:
        assert name in (".", "..") or set("/" + _FORBIDDEN).intersection(name)
        return
    assert child.parent == here
    assert child.is_within(here) and not here.is_within(child)
    assert here.resolve(name) == child


@given(_cwds, _cwds, _clean_text)
def test_a_users_root_is_never_left(user_root: VirtualPath, cwd: VirtualPath, text: str) -> None:
    """
    A session with its own root sees paths below it: whatever it resolves,
    the local path the file storage joins stays inside that root.
    """
    server_root = "/srv/ftp"
    local_root = posixpath.join(server_root, *user_root.segments)
    storage = FileStorage(local_root, reactor=Clock(), node="test")
    path = cwd.resolve(text)
    try:
        local = storage._local(path)
    except FTPError:
        return  # a name the storage keeps for itself (upload temporaries)
    assert posixpath.normpath(local) == local
    assert local == storage.root or local.startswith(storage.root + "/")
    assert local[len(storage.root) :] == ("" if path.is_root else str(path))


# Commands

_VERBS = sorted(RULES)
_IAC_SEQUENCES = [b"\xff\xf4", b"\xff\xf2", b"\xff\xfb\x01", b"\xff\xfd\x03", b"\xff\xfa\x18\x01\xff\xf0", b"\xff"]
#: Lines shaped like commands: a known or made-up verb, then any bytes.
_lines = st.builds(
    lambda verb, space, rest: verb + space + rest,
    st.one_of(st.sampled_from(_VERBS).map(str.encode), st.binary(max_size=10)),
    st.sampled_from([b"", b" ", b"  ", b"\t"]),
    st.one_of(
        st.binary(max_size=30),
        st.text(max_size=20).map(str.encode),
        st.lists(st.sampled_from([b"a", b"\r", b"\n", b"\x00", b"\xc3", b"\xa9", *_IAC_SEQUENCES]), max_size=8).map(
            b"".join
        ),
    ),
)


@given(_lines)
def test_any_line_is_a_command_or_a_client_error(line: bytes) -> None:
    try:
        command = parse_command(line)
    except FTPError as error:
        assert error.client_fault
        assert error.reply in (Reply.SYNTAX_ERROR, Reply.SYNTAX_ERROR_IN_ARGUMENTS), error.reply
        assert error.message and not set(_FORBIDDEN).intersection(error.message)
        return
    assert command.verb == command.verb.upper() and command.verb.isascii() and command.verb.isalnum()
    assert 1 <= len(command.verb) <= 8 and command.verb[0].isalpha()
    assert not set(_FORBIDDEN).intersection(command.argument)


_arguments = st.text(max_size=20).filter(lambda text: not set(_FORBIDDEN).intersection(text))


@given(st.sampled_from(_VERBS), _arguments, st.randoms(use_true_random=False))
def test_commands_round_trip_in_any_case(verb: str, argument: str, random: Random) -> None:
    spelled = "".join(c.lower() if random.random() < 0.5 else c for c in verb)
    line = f"{spelled} {argument}".encode() if argument else spelled.encode()
    assert parse_command(line) == Command(verb, argument)
    # The line ending is not part of the command.
    assert parse_command(line + b"\r\n") == Command(verb, argument.rstrip("\r\n"))


_inserts = st.lists(st.tuples(st.integers(0, 60), st.sampled_from(_IAC_SEQUENCES[:-1])))


@given(st.sampled_from(_VERBS), _arguments, _inserts)
def test_telnet_commands_anywhere_are_ignored(verb: str, argument: str, inserts: list[tuple[int, bytes]]) -> None:
    line = f"{verb} {argument}".encode()  # UTF-8 never holds the IAC byte 0xFF
    pieces = [line[i : i + 1] for i in range(len(line))]
    for position, sequence in inserts:
        pieces.insert(position % (len(pieces) + 1), sequence)
    noisy = b"".join(pieces)
    assert strip_telnet(noisy) == line
    assert parse_command(noisy) == parse_command(line)


@given(st.text(max_size=40))
def test_port_arguments_parse_or_are_refused_with_501(argument: str) -> None:
    try:
        host, port = parse_host_port(argument)
    except FTPError as error:
        assert error.reply == Reply.SYNTAX_ERROR_IN_ARGUMENTS
        return
    assert 0 <= port <= 65535
    assert parse_host_port(f"{host.replace('.', ',')},{port >> 8},{port & 0xFF}") == (host, port)


_delimiters = st.sampled_from([c for c in map(chr, range(0x21, 0x7F)) if not c.isalnum()])


@given(
    _delimiters,
    st.one_of(
        st.tuples(st.just(1), st.ip_addresses(v=4).map(str)),
        st.tuples(st.just(2), st.ip_addresses(v=6).map(str)),
    ),
    st.integers(1, 65535),
)
def test_eprt_round_trips(delimiter: str, family_host: tuple[int, str], port: int) -> None:
    family, host = family_host
    if delimiter in host:
        return  # ":" or "." cannot delimit an address that contains it
    argument = delimiter.join(["", str(family), host, str(port), ""])
    assert parse_eprt(argument) == (family, host, port)


@given(st.text(max_size=30))
def test_eprt_arguments_parse_or_are_refused_with_501(argument: str) -> None:
    try:
        family, host, port = parse_eprt(argument)
    except FTPError as error:
        assert error.reply == Reply.SYNTAX_ERROR_IN_ARGUMENTS
        return
    assert 0 < port < 65536 and family >= 0 and host


@given(st.text(max_size=30))
def test_list_flags_are_letters_and_the_path_is_the_rest(argument: str) -> None:
    flags, path = parse_list_argument(argument)
    assert flags == "" or flags.isalpha()
    assert argument.strip().endswith(path)
    assert path == path.lstrip()
