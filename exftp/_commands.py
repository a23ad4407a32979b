"""
Parsing of command lines: bytes from the control connection to L{Command}.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import CommandSyntaxError, UnknownCommand
from ._paths import is_unicode

_IAC = 0xFF
_SE, _SB, _WILL, _DONT = 0xF0, 0xFA, 0xFB, 0xFE


@dataclass(frozen=True, slots=True)
class Command:
    """
    One command from the client.

    @ivar verb: the upper-cased verb, e.g. C{"RETR"}.
    @ivar argument: the rest of the line, or C{""}.
    """

    verb: str
    argument: str = ""


def strip_telnet(line: bytes) -> bytes:
    """
    Remove Telnet IAC sequences (RFC 854) that clients send around ABOR.

    C{IAC IAC} stands for a literal 0xFF byte; C{IAC} followed by a command
    byte is dropped with it, and so is the option byte after C{WILL}, C{WONT},
    C{DO} and C{DONT}; a subnegotiation C{IAC SB ... IAC SE} is dropped whole;
    a lone C{IAC} is dropped.
    """
    if _IAC not in line:
        return line
    out = bytearray()
    i = 0
    while i < len(line):
        byte = line[i]
        following = line[i + 1] if i + 1 < len(line) else None
        if byte != _IAC:
            out.append(byte)
            i += 1
        elif following == _IAC:
            out.append(_IAC)
            i += 2
        elif following == _SB:
            end = line.find(bytes((_IAC, _SE)), i + 2)
            i = len(line) if end < 0 else end + 2
        elif following is not None and _WILL <= following <= _DONT:
            i += 3
        elif following is not None and following >= 0xF0:
            i += 2
        else:
            i += 1
    return bytes(out)


#: Verbs whose argument is text, not a name: credentials must be UTF-8.
_TEXT_ONLY = frozenset({"USER", "PASS", "ACCT"})


def parse_command(line: bytes) -> Command:
    """
    Parse one line (without its CRLF) into a L{Command}.

    The verb is case-insensitive; the argument keeps its case and inner spaces
    (file names may contain them), only the single separating space is removed.
    The line is UTF-8 (RFC 2640), but bytes that are not are kept as
    C{surrogateescape} surrogates: a name in another encoding reaches the
    storage as the client's own bytes (C{os.fsencode} writes them back), and
    replies send them back unchanged (L{exftp._replies.WIRE_ERRORS}).

    @raise CommandSyntaxError: for a NUL or CR inside the line (RFC 959 allows
        neither in an argument), or credentials that are not UTF-8.
    @raise UnknownCommand: for an empty line or a verb that is not 1 to 8 letters.
    """
    line = strip_telnet(line).rstrip(b"\r\n")
    if b"\x00" in line or b"\r" in line or b"\n" in line:
        raise CommandSyntaxError("Command contains forbidden characters.")
    text = line.decode("utf-8", "surrogateescape")
    verb, _, argument = text.lstrip(" ").partition(" ")
    if not verb:
        raise UnknownCommand("Empty command.")
    if not verb.isascii() or not verb.isalnum() or not verb[0].isalpha() or len(verb) > 8:
        raise UnknownCommand("Command not understood.")
    verb = verb.upper()
    if verb in _TEXT_ONLY and not is_unicode(argument):
        raise CommandSyntaxError("Command is not valid UTF-8.")
    return Command(verb, argument)


def _decimal(text: str) -> int | None:
    """A number written with ASCII digits only (C{int} would also take C{+1}, C{1_0} and other scripts)."""
    if not text or len(text) > 10 or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def parse_host_port(argument: str) -> tuple[str, int]:
    """
    Parse a PORT argument C{h1,h2,h3,h4,p1,p2}.

    @raise CommandSyntaxError: when it is malformed.
    """
    parts = argument.strip().split(",")
    numbers = [n for n in (_decimal(p.strip()) for p in parts) if n is not None and n <= 255]
    if len(parts) != 6 or len(numbers) != 6:
        raise CommandSyntaxError("Invalid PORT argument.")
    host = ".".join(str(n) for n in numbers[:4])
    return host, numbers[4] * 256 + numbers[5]


def format_host_port(host: str, port: int) -> str:
    """Format an IPv4 address and port as in a 227 reply: C{h1,h2,h3,h4,p1,p2}."""
    return ",".join([*host.split("."), str(port >> 8), str(port & 0xFF)])


def parse_eprt(argument: str) -> tuple[int, str, int]:
    """
    Parse an EPRT argument C{|proto|address|port|} (RFC 2428).

    @return: the protocol family number (1 IPv4, 2 IPv6), address and port.
    @raise CommandSyntaxError: when it is malformed.
    """
    argument = argument.strip()
    if len(argument) < 4:
        raise CommandSyntaxError("Invalid EPRT argument.")
    delimiter = argument[0]
    if not "!" <= delimiter <= "~" or delimiter.isalnum():
        raise CommandSyntaxError("Invalid EPRT delimiter.")
    fields = argument.split(delimiter)
    if len(fields) != 5 or fields[0] or fields[4]:
        raise CommandSyntaxError("Invalid EPRT argument.")
    family, port = _decimal(fields[1]), _decimal(fields[3])
    if family is None or port is None or not 0 < port < 65536 or not fields[2]:
        raise CommandSyntaxError("Invalid EPRT argument.")
    return family, fields[2], port


def parse_list_argument(argument: str) -> tuple[str, str]:
    """
    Split the C{-la} style flags that clients send to LIST and NLST from the path.

    @return: the flags (letters only, without dashes) and the path.
    """
    flags = ""
    rest = argument.strip()
    while rest.startswith("-") and len(rest) > 1:
        word, _, remainder = rest.partition(" ")
        if not word[1:].isalpha():
            break
        flags += word[1:]
        rest = remainder.lstrip()
    return flags, rest
