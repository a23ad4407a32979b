"""
HTTP authentication challenges and the client side of Digest (RFC 7616), without I/O.

L{parse_challenges} reads C{WWW-Authenticate} values (RFC 7235 section 4.1:
several challenges per value, quoted strings with escapes, token68);
L{choose_digest} picks the strongest Digest challenge this module can answer;
L{authorization} computes the C{Authorization} value for it.

Strings taken from the server (realm, nonce, opaque) are the header bytes
decoded as ISO-8859-1, so that they hash and echo back byte for byte; user
names and passwords are hashed as UTF-8.
"""

from __future__ import annotations

import hashlib
import re
import string
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "Challenge",
    "DigestChallenge",
    "authorization",
    "choose_digest",
    "digest_response",
    "parse_challenges",
]

_TCHAR = frozenset("!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters)
#: An unquoted parameter value: a token, leniently with the token68 characters
#: C{/} and C{=} that some servers leave unquoted in nonces.
_VALUE_CHAR = _TCHAR | frozenset("/=")
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_WHITESPACE = " \t"

#: Digest algorithms by their RFC 7616 name (upper case, without C{-sess}):
#: the hashlib name and a strength rank (higher is stronger).
_HASHES: dict[str, tuple[str, int]] = {
    name: spec
    for name, spec in {"MD5": ("md5", 1), "SHA-256": ("sha256", 2), "SHA-512-256": ("sha512_256", 3)}.items()
    if spec[0] in hashlib.algorithms_available
}
_SESS = "-SESS"


@dataclass(frozen=True, slots=True)
class Challenge:
    """
    One challenge of a C{WWW-Authenticate} header.

    @ivar scheme: the auth-scheme, lower case (C{"digest"}, C{"basic"}).
    @ivar params: the auth-params, names in lower case, values unquoted.
    @ivar token68: the token68 form instead of params (as in C{Negotiate abc==}).
    """

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)
    token68: str | None = None


class _Scanner:
    """A cursor over one header value."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip(self, characters: str) -> bool:
        """Skip any of C{characters}; whether a comma was among them."""
        comma = False
        while self.pos < len(self.text) and self.text[self.pos] in characters:
            comma = comma or self.text[self.pos] == ","
            self.pos += 1
        return comma

    def run(self, allowed: frozenset[str]) -> str | None:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in allowed:
            self.pos += 1
        return self.text[start : self.pos] or None

    def quoted(self) -> str:
        """Read a quoted-string (the cursor is on its opening quote); its unescaped content."""
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\":
                if self.pos + 1 >= len(self.text):
                    break
                out.append(self.text[self.pos + 1])
                self.pos += 2
            elif char == '"':
                self.pos += 1
                return "".join(out)
            else:
                out.append(char)
                self.pos += 1
        raise ValueError("unterminated quoted string")


def parse_challenges(value: str) -> list[Challenge]:
    """
    Parse one C{WWW-Authenticate} header value into its challenges.

    @raise ValueError: when the value is malformed; nothing else is raised,
        whatever the text.
    """
    scanner = _Scanner(value)
    challenges: list[Challenge] = []
    while True:
        comma = scanner.skip(_WHITESPACE + ",")
        if scanner.at_end():
            return challenges
        if challenges and not comma:
            raise ValueError(f"expected ',' between challenges at offset {scanner.pos}")
        scheme = scanner.run(_TCHAR)
        if scheme is None:
            raise ValueError(f"expected an auth-scheme at offset {scanner.pos}")
        challenges.append(_parse_rest(scanner, scheme.lower()))


def _parse_rest(scanner: _Scanner, scheme: str) -> Challenge:
    """Parse what follows an auth-scheme: a token68, auth-params or nothing."""
    if scanner.peek() not in (" ", "\t"):
        return Challenge(scheme)
    scanner.skip(_WHITESPACE)
    text = scanner.text
    found = _TOKEN68.match(text, scanner.pos)
    if found is not None:
        after = _Scanner(text)
        after.pos = found.end()
        after.skip(_WHITESPACE)
        if after.at_end() or after.peek() == ",":
            scanner.pos = after.pos
            return Challenge(scheme, token68=found.group())
    params: dict[str, str] = {}
    while True:
        mark = scanner.pos
        if params:
            scanner.skip(_WHITESPACE + ",")
        name = scanner.run(_TCHAR)
        if name is None:
            scanner.pos = mark
            break
        scanner.skip(_WHITESPACE)
        if scanner.peek() != "=":
            # The name is the scheme of the next challenge.
            scanner.pos = mark
            break
        scanner.pos += 1
        scanner.skip(_WHITESPACE)
        item = scanner.quoted() if scanner.peek() == '"' else scanner.run(_VALUE_CHAR)
        if item is None:
            raise ValueError(f"expected a value for {name!r} at offset {scanner.pos}")
        key = name.lower()
        if key in params:
            raise ValueError(f"parameter {name!r} given twice")
        params[key] = item
        scanner.skip(_WHITESPACE)
        if not scanner.at_end() and scanner.peek() != ",":
            raise ValueError(f"expected ',' at offset {scanner.pos}")
    return Challenge(scheme, params)


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """
    A Digest challenge this module can answer.

    @ivar realm: the protection space.
    @ivar nonce: the server's nonce.
    @ivar algorithm: the algorithm as the server spelled it (echoed back).
    @ivar hash_name: the hashlib name of its hash function.
    @ivar session: whether it is a C{-sess} algorithm.
    @ivar opaque: the value to echo, if any.
    @ivar userhash: whether the server accepts a hashed user name.
    @ivar stale: whether the server says the previous nonce expired.
    """

    realm: str
    nonce: str
    algorithm: str = "MD5"
    hash_name: str = "md5"
    session: bool = False
    opaque: str | None = None
    userhash: bool = False
    stale: bool = False

    @property
    def strength(self) -> int:
        """The rank of the hash function: higher is stronger."""
        return next(rank for name, rank in _HASHES.values() if name == self.hash_name)


def as_digest(challenge: Challenge) -> DigestChallenge | None:
    """
    The Digest challenge in C{challenge}, or C{None} when it is not Digest
    or asks for what this module does not do (no C{qop=auth}, unknown
    algorithm, no realm or nonce).
    """
    params = challenge.params
    if challenge.scheme != "digest" or "realm" not in params or "nonce" not in params:
        return None
    qops = {qop.strip().lower() for qop in params.get("qop", "").split(",")}
    if "auth" not in qops:
        return None
    algorithm = params.get("algorithm", "MD5")
    name = algorithm.upper()
    session = name.endswith(_SESS)
    if session:
        name = name[: -len(_SESS)]
    if name not in _HASHES:
        return None
    return DigestChallenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=algorithm,
        hash_name=_HASHES[name][0],
        session=session,
        opaque=params.get("opaque"),
        userhash=params.get("userhash", "").lower() == "true",
        stale=params.get("stale", "").lower() == "true",
    )


def choose_digest(header_values: Iterable[str]) -> DigestChallenge | None:
    """
    The strongest Digest challenge among C{WWW-Authenticate} values (SHA-512-256
    over SHA-256 over MD5; among equals, the first offered), or C{None}.

    Malformed values are skipped.
    """
    best: DigestChallenge | None = None
    for value in header_values:
        try:
            challenges = parse_challenges(value)
        except ValueError:
            continue
        for challenge in challenges:
            digest = as_digest(challenge)
            if digest is not None and (best is None or digest.strength > best.strength):
                best = digest
    return best


def _hex(hash_name: str, *parts: bytes) -> str:
    return hashlib.new(hash_name, b":".join(parts)).hexdigest()


def _server_bytes(text: str) -> bytes:
    return text.encode("latin-1", "replace")


def digest_response(
    challenge: DigestChallenge, *, username: str, password: str, method: str, uri: str, nc: int, cnonce: str
) -> str:
    """The C{response} value of RFC 7616 section 3.4.1 for C{qop=auth}."""
    h = challenge.hash_name
    nonce, cnonce_bytes = _server_bytes(challenge.nonce), cnonce.encode("ascii")
    ha1 = _hex(h, username.encode("utf-8"), _server_bytes(challenge.realm), password.encode("utf-8"))
    if challenge.session:
        ha1 = _hex(h, ha1.encode("ascii"), nonce, cnonce_bytes)
    ha2 = _hex(h, method.encode("ascii"), uri.encode("ascii"))
    return _hex(h, ha1.encode("ascii"), nonce, b"%08x" % nc, cnonce_bytes, b"auth", ha2.encode("ascii"))


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _printable_ascii(text: str) -> bool:
    return all(" " <= char <= "~" for char in text)


def authorization(
    challenge: DigestChallenge, *, username: str, password: str, method: str, uri: str, nc: int, cnonce: str
) -> str:
    """
    The C{Authorization} header value answering C{challenge}.

    @param uri: the request-target exactly as sent (path and query).
    @param nc: how many requests this client has made with this nonce, this one included.
    @param cnonce: a fresh client nonce (printable ASCII without quotes).
    """
    response = digest_response(
        challenge, username=username, password=password, method=method, uri=uri, nc=nc, cnonce=cnonce
    )
    if challenge.userhash:
        user = "username=" + _quote(_hex(challenge.hash_name, username.encode("utf-8"), _server_bytes(challenge.realm)))
    elif _printable_ascii(username):
        user = "username=" + _quote(username)
    else:
        user = "username*=UTF-8''" + urllib.parse.quote(username, safe="!#$&+-.^_`|~")
    fields = [
        user,
        "realm=" + _quote(challenge.realm),
        "uri=" + _quote(uri),
        "algorithm=" + challenge.algorithm,
        "nonce=" + _quote(challenge.nonce),
        f"nc={nc:08x}",
        "cnonce=" + _quote(cnonce),
        "qop=auth",
        "response=" + _quote(response),
    ]
    if challenge.opaque is not None:
        fields.append("opaque=" + _quote(challenge.opaque))
    if challenge.userhash:
        fields.append("userhash=true")
    return "Digest " + ", ".join(fields)
