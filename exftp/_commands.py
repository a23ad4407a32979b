"""
Parsing of command lines: bytes from the control connection to L{Command}.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import CommandSyntaxError

_IAC = 0xFF


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
    byte is dropped with it; a lone C{IAC} is dropped.
    """
    if _IAC not in line:
        return line
    out = bytearray()
    i = 0
    while i < len(line):
        byte = line[i]
        if byte != _IAC:
            out.append(byte)
            i += 1
        elif i + 1 < len(line) and line[i + 1] == _IAC:
            out.append(_IAC)
            i += 2
        elif i + 1 < len(line) and line[i + 1] >= 0xF0:
            i += 2
        else:
            i += 1
    return bytes(out)


def parse_command(line: bytes) -> Command:
    """
    Parse one line (without its CRLF) into a L{Command}.

    The verb is case-insensitive; the argument keeps its case and inner spaces
    (file names may contain them), only the single separating space is removed.

    @raise CommandSyntaxError: for an empty line or text that is not UTF-8.
    """
    line = strip_telnet(line).rstrip(b"\r\n")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandSyntaxError("Command is not valid UTF-8.") from None
    verb, _, argument = text.lstrip(" ").partition(" ")
    if not verb:
        raise CommandSyntaxError("Empty command.")
    if not verb.isascii() or not verb.isalpha() or len(verb) > 8:
        raise CommandSyntaxError("Malformed command.")
    return Command(verb.upper(), argument)


def parse_host_port(argument: str) -> tuple[str, int]:
    """
    Parse a PORT argument C{h1,h2,h3,h4,p1,p2}.

    @raise CommandSyntaxError: when it is malformed.
    """
    parts = argument.strip().split(",")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise CommandSyntaxError("Invalid PORT argument.") from None
    if len(numbers) != 6 or any(not 0 <= n <= 255 for n in numbers):
        raise CommandSyntaxError("Invalid PORT argument.")
    host = ".".join(str(n) for n in numbers[:4])
    return host, numbers[4] * 256 + numbers[5]


def format_host_port(host: str, port: int) -> str:
    """Format an IPv4 address and port as in a 227 reply: C{h1,h2,h3,h4,p1,p2}."""
    return ",".join(host.split(".") + [str(port >> 8), str(port & 0xFF)])


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
    fields = argument.split(delimiter)
    if len(fields) != 5 or fields[0] or fields[4]:
        raise CommandSyntaxError("Invalid EPRT argument.")
    try:
        family, port = int(fields[1]), int(fields[3])
    except ValueError:
        raise CommandSyntaxError("Invalid EPRT argument.") from None
    if not 0 < port < 65536 or not fields[2]:
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
