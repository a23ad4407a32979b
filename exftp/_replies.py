"""
FTP reply codes (RFC 959 section 4.2) and their framing on the wire.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum


class Reply(IntEnum):
    """Reply codes, named after RFC 959 section 4.2 and its extensions (RFC 2228, 2428, 4217)."""

    RESTART_MARKER = 110
    SERVICE_READY_IN_MINUTES = 120
    DATA_CONNECTION_ALREADY_OPEN = 125
    FILE_STATUS_OK = 150

    COMMAND_OK = 200
    COMMAND_SUPERFLUOUS = 202
    SYSTEM_STATUS = 211
    DIRECTORY_STATUS = 212
    FILE_STATUS = 213
    HELP_MESSAGE = 214
    SYSTEM_TYPE = 215
    SERVICE_READY = 220
    CLOSING_CONTROL_CONNECTION = 221
    DATA_CONNECTION_OPEN = 225
    CLOSING_DATA_CONNECTION = 226
    ENTERING_PASSIVE_MODE = 227
    ENTERING_EXTENDED_PASSIVE_MODE = 229
    USER_LOGGED_IN = 230
    SECURITY_DATA_EXCHANGE_COMPLETE = 234
    FILE_ACTION_OK = 250
    PATHNAME_CREATED = 257

    USER_NAME_OK = 331
    NEED_ACCOUNT = 332
    FILE_ACTION_PENDING = 350

    SERVICE_NOT_AVAILABLE = 421
    NEED_SECURITY_RESOURCE = 431
    CANT_OPEN_DATA_CONNECTION = 425
    TRANSFER_ABORTED = 426
    FILE_ACTION_NOT_TAKEN = 450
    LOCAL_ERROR = 451
    INSUFFICIENT_STORAGE = 452

    SYNTAX_ERROR = 500
    SYNTAX_ERROR_IN_ARGUMENTS = 501
    NOT_IMPLEMENTED = 502
    BAD_SEQUENCE = 503
    NOT_IMPLEMENTED_FOR_PARAMETER = 504
    PROTECTION_LEVEL_REQUIRED = 521
    NETWORK_PROTOCOL_NOT_SUPPORTED = 522
    NOT_LOGGED_IN = 530
    REQUEST_DENIED_FOR_POLICY = 534
    PROTECTION_LEVEL_NOT_SUPPORTED = 536
    FILE_UNAVAILABLE = 550
    PAGE_TYPE_UNKNOWN = 551
    EXCEEDED_STORAGE_ALLOCATION = 552
    FILE_NAME_NOT_ALLOWED = 553
    #: RFC 3659 5.4 (after RFC 1123 4.1.3.4): a restart offset the file cannot be repositioned to.
    INVALID_REST_PARAMETER = 554


def _clean(text: str) -> str:
    """Keep CR and LF out of a reply so that no text can forge extra lines."""
    return text.replace("\r", " ").replace("\n", " ")


def _check_code(code: int) -> None:
    if not 100 <= code <= 599:
        raise ValueError(f"Not a reply code: {code!r}")


def format_reply(code: int, text: str | Iterable[str]) -> bytes:
    """
    Frame a reply as RFC 959 single-line or multi-line text, UTF-8 encoded.

    A multi-line reply repeats the code on its last line; body lines are
    indented so that no client mistakes one for the end. Text that cannot be
    encoded (lone surrogates from undecodable file names) is replaced, never
    an error.

    @raise ValueError: when C{code} is not a three-digit reply code.
    """
    _check_code(code)
    lines = [text] if isinstance(text, str) else list(text)
    lines = [_clean(line) for line in lines] or [""]
    if len(lines) == 1:
        return f"{code} {lines[0]}\r\n".encode("utf-8", "replace")
    last = f"{code} {lines[-1]}\r\n".encode("utf-8", "replace")
    return format_reply_opening(code, lines[0]) + format_reply_lines(lines[1:-1]) + last


def format_reply_opening(code: int, text: str) -> bytes:
    """
    The first line of a multi-line reply sent in parts: then its middle lines
    (L{format_reply_lines}), then its end, a single-line L{format_reply}.

    @raise ValueError: when C{code} is not a three-digit reply code.
    """
    _check_code(code)
    return f"{code}-{_clean(text)}\r\n".encode("utf-8", "replace")


def format_reply_lines(lines: Iterable[str]) -> bytes:
    """Middle lines of a multi-line reply, each indented so that none can end it."""
    body = []
    for line in lines:
        line = _clean(line)
        body.append(line if line.startswith(" ") else " " + line)
        body.append("\r\n")
    return "".join(body).encode("utf-8", "replace")


def quote_path(path: str) -> str:
    """Quote a path for a 257 reply: wrapped in double quotes, inner quotes doubled."""
    return '"' + path.replace('"', '""') + '"'
