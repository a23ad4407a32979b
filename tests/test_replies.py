"""
Tests for reply codes, their framing on the wire, and the errors that carry them.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

import exftp
import exftp._errors
from exftp import FTPError, Reply
from exftp._replies import format_reply, format_reply_lines, format_reply_opening, quote_path

_codes = st.sampled_from(list(Reply))
_texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (Reply.COMMAND_OK, "ok", b"200 ok\r\n"),
        (220, "", b"220 \r\n"),
        (550, "a\r\nfake 230 line", b"550 a  fake 230 line\r\n"),
        (550, "a\nb\rc", b"550 a b c\r\n"),
        (257, '"/caf\u00e9" created.', '257 "/caf\u00e9" created.\r\n'.encode()),
        (211, ["only"], b"211 only\r\n"),
        (211, [], b"211 \r\n"),
        (211, ["Features:", " UTF8", "End"], b"211-Features:\r\n UTF8\r\n211 End\r\n"),
        (211, ["a", "211 forged", "b"], b"211-a\r\n 211 forged\r\n211 b\r\n"),
        (214, ["a", "plain", ""], b"214-a\r\n plain\r\n214 \r\n"),
        (214, ["a", "", "end"], b"214-a\r\n \r\n214 end\r\n"),
        (211, iter(["first", "last"]), b"211-first\r\n211 last\r\n"),
    ],
)
def test_format_reply(code: int, text: str | list[str], expected: bytes) -> None:
    assert format_reply(code, text) == expected


def test_names_that_are_not_utf8_go_back_as_their_bytes() -> None:
    """Surrogateescape surrogates (a name the client sent, or one on disk) become their bytes again."""
    assert format_reply(257, '"/caf\udce9" created.') == b'257 "/caf\xe9" created.\r\n'
    assert format_reply(213, ["Status of caf\udce9:", " f\udcef", "End"]) == (
        b"213-Status of caf\xe9:\r\n f\xef\r\n213 End\r\n"
    )
    assert format_reply_opening(211, "\udcc3") + format_reply_lines(["\udca9"]) == b"211-\xc3\r\n \xa9\r\n"


def test_other_lone_surrogates_are_replaced() -> None:
    assert format_reply(550, "bad \ud800 \udc7f name") == b"550 bad ? ? name\r\n"


@pytest.mark.parametrize("code", [0, 99, 600, 1000, -200])
def test_format_reply_refuses_codes_that_are_not_three_digits(code: int) -> None:
    with pytest.raises(ValueError, match="Not a reply code"):
        format_reply(code, "x")


@given(_codes, _texts)
def test_single_line_framing(code: Reply, text: str) -> None:
    wire = format_reply(code, text)
    assert wire.endswith(b"\r\n")
    assert wire.count(b"\r") == 1 and wire.count(b"\n") == 1
    assert wire.decode().startswith(f"{int(code)} ")


@given(_codes, st.lists(_texts, min_size=2, max_size=6))
def test_multi_line_framing(code: Reply, lines: list[str]) -> None:
    wire = format_reply(code, lines)
    assert wire.endswith(b"\r\n")
    body = wire.decode()[:-2].split("\r\n")
    assert all("\r" not in line and "\n" not in line for line in body)
    assert len(body) == len(lines)
    assert body[0].startswith(f"{int(code)}-")
    expected_last = lines[-1].replace("\r", " ").replace("\n", " ")
    assert body[-1] == f"{int(code)} {expected_last}"
    # No line but the last may look like the end of the reply (RFC 959 4.2).
    ending = re.compile(rf"^{int(code)} ")
    assert [i for i, line in enumerate(body) if ending.match(line)] == [len(body) - 1]
    # Clients read body lines verbatim: the text (less the indent) is kept.
    for original, sent in zip(lines[1:-1], body[1:-1], strict=True):
        assert sent.lstrip(" ") == original.replace("\r", " ").replace("\n", " ").lstrip(" ")


def test_reply_codes_are_rfc_values() -> None:
    assert Reply.SERVICE_READY == 220
    assert Reply.FILE_ACTION_PENDING == 350
    assert Reply.NOT_LOGGED_IN == 530
    assert Reply.FILE_NAME_NOT_ALLOWED == 553
    assert all(100 <= code <= 599 for code in Reply)
    assert len({int(code) for code in Reply}) == len(Reply)


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/", '"/"'), ("/a b", '"/a b"'), ('/say "hi"', '"/say ""hi"""'), ('"', '""""')],
)
def test_quote_path(path: str, expected: str) -> None:
    assert quote_path(path) == expected


@given(st.text())
def test_quote_path_can_be_unquoted(path: str) -> None:
    quoted = quote_path(path)
    assert quoted[0] == quoted[-1] == '"'
    assert quoted[1:-1].replace('""', '"') == path


_ERROR_REPLIES = {
    "CommandSyntaxError": 501,
    "UnknownCommand": 500,
    "NotImplementedCommand": 502,
    "BadSequence": 503,
    "ParameterNotSupported": 504,
    "NotLoggedIn": 530,
    "LoginFailed": 530,
    "InvalidPath": 553,
    "FileNotFound": 550,
    "PermissionDenied": 550,
    "NotADirectory": 550,
    "IsADirectory": 550,
    "AlreadyExists": 550,
    "DirectoryNotEmpty": 550,
    "InsufficientStorage": 452,
    "QuotaExceeded": 552,
    "StorageUnavailable": 451,
    "TransferAborted": 426,
    "DataConnectionFailed": 425,
    "AuthenticationUnavailable": 421,
}


@pytest.mark.parametrize(("name", "code"), sorted(_ERROR_REPLIES.items()))
def test_errors_carry_their_reply(name: str, code: int) -> None:
    kind = getattr(exftp, name)
    error = kind()
    assert isinstance(error, FTPError)
    assert error.reply == code
    assert error.client_fault is (code >= 500)
    assert error.message == kind.default_message
    assert str(error) == error.message
    assert kind("custom").message == "custom"


def test_every_core_error_is_in_the_table() -> None:
    core = {
        name
        for name, value in vars(exftp._errors).items()
        if isinstance(value, type) and issubclass(value, FTPError) and value is not FTPError
    }
    assert core == set(_ERROR_REPLIES)


def test_an_error_can_carry_another_reply() -> None:
    error = exftp.PermissionDenied("No.", Reply.FILE_NAME_NOT_ALLOWED)
    assert error.reply == 553
    assert exftp.PermissionDenied().reply == 550
