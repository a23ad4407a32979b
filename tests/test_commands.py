"""
Tests for command-line parsing and the argument grammars of PORT, EPRT and LIST.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exftp import CommandSyntaxError, UnknownCommand
from exftp._commands import (
    Command,
    format_host_port,
    parse_command,
    parse_eprt,
    parse_host_port,
    parse_list_argument,
    strip_telnet,
)

IAC, IP, DM, WILL, DO, DONT, SB, SE = 0xFF, 0xF4, 0xF2, 0xFB, 0xFD, 0xFE, 0xFA, 0xF0


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"NOOP", Command("NOOP")),
        (b"noop", Command("NOOP")),
        (b"NOOP\r\n", Command("NOOP")),
        (b"NOOP\r", Command("NOOP")),
        (b"RETR file.txt", Command("RETR", "file.txt")),
        (b"retr File.TXT", Command("RETR", "File.TXT")),
        (b"STOR my file  with spaces ", Command("STOR", "my file  with spaces ")),
        (b"STOR  leading", Command("STOR", " leading")),
        (b"  USER alice", Command("USER", "alice")),
        (b"USER", Command("USER", "")),
        (b"USER ", Command("USER", "")),
        ("MKD \u00e9t\u00e9".encode(), Command("MKD", "\u00e9t\u00e9")),
        (b"XPWD", Command("XPWD")),
        (b"xsha256 f", Command("XSHA256", "f")),
        (bytes([IAC, IP, IAC, DM]) + b"ABOR\r\n", Command("ABOR")),
        (bytes([IAC, IP]) + b"ABOR", Command("ABOR")),
    ],
)
def test_parse_command(line: bytes, expected: Command) -> None:
    assert parse_command(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        b"RETR a\x00b",
        b"USER a\rb",
        b"USER a\r\nPASS b",
        b"USER caf\xe9",
        b"pass \xfe",
        b"ACCT \xc3",
    ],
)
def test_parse_command_refuses_bad_text(line: bytes) -> None:
    with pytest.raises(CommandSyntaxError) as caught:
        parse_command(line)
    assert caught.value.reply == 501


@pytest.mark.parametrize(
    ("line", "argument"),
    [
        (b"RETR caf\xe9", "caf\udce9"),
        (b"RETR \xfe", "\udcfe"),
        (b"STOR d/na\xefve.bin", "d/na\udcefve.bin"),
        (b"RNTO \xc3\xa9\xc3", "\u00e9\udcc3"),
        (b"MKD \xed\xa0\x80", "\udced\udca0\udc80"),
    ],
)
def test_names_that_are_not_utf8_keep_their_bytes(line: bytes, argument: str) -> None:
    """Bytes that are not UTF-8 stay as surrogateescape surrogates: the OS and the replies give the same bytes back."""
    command = parse_command(line)
    assert command.argument == argument
    assert command.argument.encode("utf-8", "surrogateescape") == line.partition(b" ")[2]


@given(st.binary(max_size=40).filter(lambda data: not set(b"\x00\r\n\xff") & set(data)))
def test_any_bytes_of_a_name_round_trip(name: bytes) -> None:
    command = parse_command(b"DELE " + name)
    assert command.argument.encode("utf-8", "surrogateescape") == name


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"\r\n",
        b"   ",
        b"\xff\xfe\xfd",
        b"\xc3NOOP",
        b"NO\xe9P x",
        b"1RETR x",
        b"RE-R x",
        b"RE_R x",
        b"VERYLONGVERB x",
        "\u00e9T\u00e9 x".encode(),
        b"\tNOOP",
    ],
)
def test_parse_command_refuses_unknown_verbs(line: bytes) -> None:
    with pytest.raises(UnknownCommand) as caught:
        parse_command(line)
    assert caught.value.reply == 500


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"plain", b"plain"),
        (bytes([IAC, IAC]), bytes([IAC])),
        (b"a" + bytes([IAC, IP]) + b"b", b"ab"),
        (bytes([IAC, WILL, 1]) + b"x", b"x"),
        (bytes([IAC, DO, 3, IAC, DONT, 24]) + b"NOOP", b"NOOP"),
        (bytes([IAC, SB, 24, 1, 2, IAC, SE]) + b"NOOP", b"NOOP"),
        (bytes([IAC, SB, 24, 1]), b""),
        (b"x" + bytes([IAC]), b"x"),
        (b"x" + bytes([IAC, WILL]), b"x"),
        (bytes([IAC, 0x41]) + b"B", b"AB"),
    ],
)
def test_strip_telnet(line: bytes, expected: bytes) -> None:
    assert strip_telnet(line) == expected


@given(st.binary().filter(lambda data: 0xFF not in data))
def test_strip_telnet_keeps_lines_without_iac(data: bytes) -> None:
    assert strip_telnet(data) == data


@given(st.binary())
def test_strip_telnet_never_grows_and_doubled_iac_survives(data: bytes) -> None:
    assert len(strip_telnet(data)) <= len(data)
    escaped = data.replace(b"\xff", b"\xff\xff")
    assert strip_telnet(escaped) == data


@given(st.binary(max_size=40))
def test_parse_command_either_parses_or_refuses(line: bytes) -> None:
    try:
        command = parse_command(line)
    except (CommandSyntaxError, UnknownCommand):
        return
    assert command.verb.isascii() and command.verb.isalnum() and command.verb[0].isalpha()
    assert command.verb == command.verb.upper()
    assert 1 <= len(command.verb) <= 8
    assert not set("\x00\r\n").intersection(command.argument)


@given(st.sampled_from(["RETR", "STOR", "MKD"]), st.text().filter(lambda t: not set("\x00\r\n") & set(t)))
def test_parse_command_keeps_arguments_verbatim(verb: str, argument: str) -> None:
    line = f"{verb} {argument}".encode()
    assert parse_command(line) == Command(verb, argument)


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("127,0,0,1,4,1", ("127.0.0.1", 1025)),
        ("  10,0,0,2,0,21  ", ("10.0.0.2", 21)),
        ("192,168,1,1,255,255", ("192.168.1.1", 65535)),
        ("1, 2, 3, 4, 5, 6", ("1.2.3.4", 1286)),
    ],
)
def test_parse_host_port(argument: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(argument) == expected


@pytest.mark.parametrize(
    "argument",
    [
        "",
        "127,0,0,1,4",
        "127,0,0,1,4,1,1",
        "256,0,0,1,4,1",
        "127,0,0,1,4,256",
        "-1,0,0,1,4,1",
        "+127,0,0,1,4,1",
        "1_27,0,0,1,4,1",
        "127,0,0,1,4,\u0661",
        "a,b,c,d,e,f",
        "127.0.0.1,4,1",
        "127,0,0,1,,1",
    ],
)
def test_parse_host_port_refuses(argument: str) -> None:
    with pytest.raises(CommandSyntaxError):
        parse_host_port(argument)


@given(st.ip_addresses(v=4), st.integers(min_value=0, max_value=65535))
def test_host_port_round_trip(address: object, port: int) -> None:
    host = str(address)
    assert parse_host_port(format_host_port(host, port)) == (host, port)


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("|1|127.0.0.1|6446|", (1, "127.0.0.1", 6446)),
        ("|2|::1|5282|", (2, "::1", 5282)),
        ("!2!fe80::1!1!", (2, "fe80::1", 1)),
        (" |1|10.0.0.1|65535| ", (1, "10.0.0.1", 65535)),
    ],
)
def test_parse_eprt(argument: str, expected: tuple[int, str, int]) -> None:
    assert parse_eprt(argument) == expected


@pytest.mark.parametrize(
    "argument",
    [
        "",
        "|||",
        "|1|127.0.0.1|0|",
        "|1|127.0.0.1|65536|",
        "|1||21|",
        "|x|127.0.0.1|21|",
        "|1|127.0.0.1|+21|",
        "|1|127.0.0.1|2_1|",
        "|1|127.0.0.1|21",
        "1|127.0.0.1|21|",
        "|1|127.0.0.1|21|extra|",
        "11127.0.0.11211",
        "a1a127.0.0.1a21a",
        " 1 127.0.0.1 21 ",
    ],
)
def test_parse_eprt_refuses(argument: str) -> None:
    with pytest.raises(CommandSyntaxError):
        parse_eprt(argument)


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("", ("", "")),
        ("-la", ("la", "")),
        ("-l -a", ("la", "")),
        ("-la /pub", ("la", "/pub")),
        ("  -a   docs ", ("a", "docs")),
        ("docs", ("", "docs")),
        ("-", ("", "-")),
        ("-1x", ("", "-1x")),
        ("--", ("", "--")),
        ("-l my dir", ("l", "my dir")),
    ],
)
def test_parse_list_argument(argument: str, expected: tuple[str, str]) -> None:
    assert parse_list_argument(argument) == expected
