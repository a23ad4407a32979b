"""
The HTTP authenticators against real HTTP services on loopback.

Each test starts a C{twisted.web} site on 127.0.0.1 port 0 in the test's own
reactor: Twisted's own Basic and Digest (MD5) guards, a Digest service written
here independently of L{exftp.auth._digest} (SHA-256, SHA-512-256, C{-sess}),
and resources that hang, fail, redirect in a loop or send too much. Deadlines
and TTLs run on an injected L{Clock}, so that no test waits or measures time.
The sans-IO Digest module is also checked against the RFC 7616 (and RFC 2617)
example vectors and with Hypothesis.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from treq.client import HTTPClient
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet import reactor as _global_reactor
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.protocol import connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import server
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.guard import BasicCredentialFactory, DigestCredentialFactory, HTTPAuthSessionWrapper
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource, Resource
from zope.interface import implementer
from zope.interface.verify import verifyObject

from exftp import IAuthenticator, LoginFailed, Session, VirtualPath
from exftp._httpclient import no_cookies
from exftp.auth._digest import (
    Challenge,
    DigestChallenge,
    authorization,
    choose_digest,
    digest_response,
    parse_challenges,
)
from exftp.auth._http import (
    SESSION_KEY,
    AuthenticationUnavailable,
    BearerAuthenticator,
    HTTPBasicAuthenticator,
    HTTPDigestAuthenticator,
    WebhookAuthenticator,
    _HTTPAuthenticator,
    authenticator_from_spec,
    parse_webhook_settings,
)

#: A password that must never show up in a log line or an error.
#: The global reactor, which trial runs (untyped: it provides many interfaces).
reactor: Any = _global_reactor

SECRET = "Sup3r-Secret-Pa55"
SECRET_SHA256 = hashlib.sha256(SECRET.encode()).hexdigest()
REALM = "exftp-test"


# The RFC vectors and the challenge parser (no I/O)


class DigestVectorTests(SynchronousTestCase):
    """The client computation reproduces the RFCs' worked examples."""

    # RFC 7616 section 3.9.1
    CHALLENGES = (
        'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS", '
        'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    ARGS: Mapping[str, Any] = {
        "username": "Mufasa",
        "password": "Circle of Life",
        "method": "GET",
        "uri": "/dir/index.html",
        "nc": 1,
        "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    }

    def test_rfc7616_sha256_is_chosen_and_answered(self) -> None:
        challenge = choose_digest([self.CHALLENGES])
        assert challenge is not None
        self.assertEqual(challenge.algorithm, "SHA-256")
        self.assertEqual(
            authorization(challenge, **self.ARGS),
            'Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", '
            'algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, '
            'cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, '
            'response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", '
            'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"',
        )

    def test_rfc7616_md5(self) -> None:
        md5 = choose_digest([self.CHALLENGES.split(", Digest ")[1].join(["Digest ", ""])])
        assert md5 is not None
        self.assertEqual(md5.algorithm, "MD5")
        self.assertEqual(digest_response(md5, **self.ARGS), "8ca523f5e9506fed4657c9700eebdbec")

    def test_rfc7616_userhash_sha512_256(self) -> None:
        """Section 3.9.2, with the corrected values of erratum 4897."""
        challenge = choose_digest(
            [
                'Digest realm="api@example.org", qop="auth", algorithm=SHA-512-256, '
                'nonce="5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK", '
                'opaque="HRPCssKJSGjCrkzDg8OhwpzCiGPChXYjwrI2QmXDnsOS", charset=UTF-8, userhash=true'
            ]
        )
        assert challenge is not None
        value = authorization(
            challenge,
            username="J\u00e4s\u00f8n Doe",
            password="Secret, or not?",
            method="GET",
            uri="/doe.json",
            nc=1,
            cnonce="NTg6RKcb9boFIAS3KrFK9BGeh+iDa/sm6jUMp2wds69v",
        )
        self.assertIn('username="793263caabb707a56211940d90411ea4a575adeccb7e360aeb624ed06ece9b0b"', value)
        self.assertIn('response="3798d4131c277846293534c3edc11bd8a5e4cdcbff78b05db9d95eeb1cec68a5"', value)
        self.assertTrue(value.endswith(", userhash=true"))

    def test_rfc2617(self) -> None:
        challenge = choose_digest(
            [
                'Digest realm="testrealm@host.com", qop="auth,auth-int", '
                'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
            ]
        )
        assert challenge is not None
        response = digest_response(
            challenge,
            username="Mufasa",
            password="Circle Of Life",
            method="GET",
            uri="/dir/index.html",
            nc=1,
            cnonce="0a4f113b",
        )
        self.assertEqual(response, "6629fae49393a05397450978507c4ef1")

    def test_user_names_are_quoted_or_encoded(self) -> None:
        challenge = DigestChallenge(realm="r", nonce="n")
        args: dict[str, Any] = {"password": "p", "method": "GET", "uri": "/", "nc": 2, "cnonce": "c"}
        self.assertIn('username="a\\"b\\\\c"', authorization(challenge, username='a"b\\c', **args))
        self.assertIn("username*=UTF-8''J%C3%A4s%C3%B8n%20Doe,", authorization(challenge, username="Jäsøn Doe", **args))
        self.assertIn(" nc=00000002,", authorization(challenge, username="u", **args))
        self.assertNotIn("opaque", authorization(challenge, username="u", **args))


class ChallengeParserTests(SynchronousTestCase):
    """WWW-Authenticate values as RFC 7235 section 4.1 writes them, and as servers really send them."""

    def test_several_challenges_in_one_value(self) -> None:
        value = (
            'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple", Negotiate abc+/==, Bare'
        )
        self.assertEqual(
            parse_challenges(value),
            [
                Challenge("newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}),
                Challenge("basic", {"realm": "simple"}),
                Challenge("negotiate", token68="abc+/=="),
                Challenge("bare"),
            ],
        )

    def test_spacing_case_and_empty_elements(self) -> None:
        value = ' ,DIGEST  Realm = "r" ,, NONCE=abc/def== ,qop="auth-int , AUTH", , '
        self.assertEqual(
            parse_challenges(value),
            [Challenge("digest", {"realm": "r", "nonce": "abc/def==", "qop": "auth-int , AUTH"})],
        )
        self.assertEqual(parse_challenges(""), [])
        self.assertEqual(parse_challenges(" , "), [])

    def test_twisted_style(self) -> None:
        """Twisted's guard: lower-case scheme, quoted algorithm, qop without spaces."""
        challenge = choose_digest(['digest nonce="abc", qop="auth", realm="r", algorithm="md5", opaque="o"'])
        self.assertEqual(challenge, DigestChallenge("r", "abc", algorithm="md5", hash_name="md5", opaque="o"))

    def test_malformed(self) -> None:
        for value in [
            'Digest realm="unterminated',
            'Digest realm="a" nonce="b"',
            'Digest realm="a", nonce=',
            'Digest realm="a", realm="b"',
            "Digest foo bar",
            '"quoted" scheme',
            'Digest realm="a\\',
        ]:
            with self.assertRaises(ValueError, msg=value):
                parse_challenges(value)

    def test_choice(self) -> None:
        offers = [
            'Digest realm="r", nonce="1", qop="auth", algorithm=MD5',
            'Basic realm="r"',
            'Digest realm="r", nonce="2", qop="auth", algorithm=SHA-256-sess, '
            'Digest realm="r", nonce="3", qop="auth", algorithm=SHA-256',
            'Digest realm="r", nonce="4", qop="auth-int", algorithm=SHA-512-256',
            'Digest realm="r", nonce="5", qop="auth", algorithm=SHA3-512',
            'Digest realm="r", nonce="6", qop="auth", algorithm=SHA-512-256, stale="unterminated',
        ]
        chosen = choose_digest(offers)
        assert chosen is not None
        self.assertEqual((chosen.nonce, chosen.algorithm, chosen.session), ("2", "SHA-256-sess", True))
        self.assertIsNone(
            choose_digest(['Basic realm="r"', 'Digest realm="r", nonce="1"', 'Digest nonce="1", qop="auth"'])
        )
        stale = choose_digest(['Digest realm="r", nonce="1", qop="auth", stale=TRUE, userhash="true"'])
        assert stale is not None
        self.assertTrue(stale.stale and stale.userhash)

    @given(st.text(max_size=200))
    def test_any_text_parses_or_raises_value_error(self, text: str) -> None:
        with contextlib.suppress(ValueError):
            parse_challenges(text)
        choose_digest([text])

    @given(
        st.lists(
            st.tuples(
                st.from_regex(r"[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,10}", fullmatch=True),
                st.dictionaries(
                    st.from_regex(r"[a-z0-9!#$%&'*+.^_`|~-]{1,10}", fullmatch=True),
                    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=20),
                    max_size=4,
                ),
            ),
            max_size=4,
        )
    )
    def test_quoted_round_trip(self, challenges: list[tuple[str, dict[str, str]]]) -> None:
        def quote(text: str) -> str:
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

        value = ", ".join(
            scheme + ("" if not params else " " + ", ".join(f"{k}={quote(v)}" for k, v in params.items()))
            for scheme, params in challenges
        )
        parsed = parse_challenges(value)
        self.assertEqual(parsed, [Challenge(scheme.lower(), params) for scheme, params in challenges])


class WebhookSettingsTests(SynchronousTestCase):
    """The JSON a webhook may answer with (no I/O)."""

    JSON = ["application/json; charset=utf-8"]

    def test_settings(self) -> None:
        settings = parse_webhook_settings(b'{"root": "/alice", "read_only": true, "quota": 5}', self.JSON)
        self.assertEqual(settings.root, VirtualPath.parse("/alice"))
        self.assertTrue(settings.read_only)
        self.assertEqual(settings.document, {"root": "/alice", "read_only": True, "quota": 5})

    def test_permissions(self) -> None:
        settings = parse_webhook_settings(b'{"permissions": "elrw"}', self.JSON)
        self.assertEqual(settings.permissions, frozenset("elrw"))
        self.assertIsNone(parse_webhook_settings(b'{"permissions": null}', self.JSON).permissions)
        for body in [b'{"permissions": "elrX"}', b'{"permissions": ["e"]}']:
            with self.assertRaises(ValueError):
                parse_webhook_settings(body, self.JSON)

    def test_defaults_and_nulls(self) -> None:
        for body in [
            b"{}",
            b'{"root": null, "read_only": null}',
            b'{"root": "/", "read_only": false}',
            b'{"root": ""}',
        ]:
            settings = parse_webhook_settings(body, self.JSON)
            self.assertEqual((settings.root, settings.read_only), (None, False), body)

    def test_roots_stay_inside_the_storage(self) -> None:
        for root, expected in [("../../etc", "/etc"), ("/a/../../b/./c", "/b/c"), ("alice", "/alice"), ("/..", None)]:
            settings = parse_webhook_settings(json.dumps({"root": root}).encode(), self.JSON)
            self.assertEqual(settings.root, None if expected is None else VirtualPath.parse(expected), root)

    def test_other_content_types_carry_no_settings(self) -> None:
        for types in [[], ["text/plain"], ["text/json"], ["application/jsonp"]]:
            self.assertEqual(parse_webhook_settings(b'{"root": "/x"}', types).root, None)
        self.assertEqual(
            parse_webhook_settings(b'{"root": "/x"}', ["Application/Problem+JSON"]).root, VirtualPath.parse("/x")
        )

    def test_refused(self) -> None:
        for body in [
            b"",
            b"{",
            b"[]",
            b'"ok"',
            b"null",
            b'{"root": 5}',
            b'{"root": ["/a"]}',
            b'{"root": "/a\\u0000b"}',
            b'{"read_only": "true"}',
            b'{"read_only": 1}',
            b"[" * 100_000,
            b"\xff\xfe{",
        ]:
            with self.assertRaises(ValueError, msg=body[:30]):
                parse_webhook_settings(body, self.JSON)


# A real HTTP service on loopback


@dataclass
class Seen:
    """One request as the service saw it."""

    method: str
    uri: str
    path: str
    args: dict[str, list[str]]
    authorization: str | None
    cookie: str | None


class _Channel(HTTPChannel):
    """An HTTP connection that its site can find and close."""

    site: _Site

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.channels[self] = Deferred()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        lost = self.site.channels.pop(self, None)
        if lost is not None:
            lost.callback(None)


class _Site(server.Site):
    protocol = _Channel  # type: ignore[assignment]

    def __init__(self, resource: IResource) -> None:
        super().__init__(resource)
        self.channels: dict[_Channel, Deferred[None]] = {}
        self.noisy = False

    def log(self, request: Any) -> None:
        pass


class Root(Resource):
    """Records every request, then serves its children."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Seen] = []

    def getChildWithDefault(self, path: bytes, request: Any) -> Any:
        seen = Seen(
            method=request.method.decode(),
            uri=request.uri.decode(),
            path=request.path.decode(),
            args={k.decode(): [v.decode() for v in vs] for k, vs in request.args.items()},
            authorization=request.getHeader("authorization"),
            cookie=request.getHeader("cookie"),
        )
        self.seen.append(seen)
        return super().getChildWithDefault(path, request)

    def count(self, path: str) -> int:
        return sum(1 for seen in self.seen if seen.path == path)


class Static(Resource):
    """Always the same answer."""

    isLeaf = True

    def __init__(self, code: int = 200, body: bytes = b"", headers: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.code, self.body, self.headers = code, body, dict(headers or {})

    def render(self, request: Any) -> bytes:
        request.setResponseCode(self.code)
        for name, value in self.headers.items():
            request.setHeader(name, value)
        return self.body


class Chunked(Resource):
    """A 200 of unknown length (chunked), C{size} bytes."""

    isLeaf = True

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def render(self, request: Any) -> int:
        request.setHeader("content-type", "application/json")
        for _ in range(self.size // 65536):
            request.write(b" " * 65536)
        request.finish()
        return server.NOT_DONE_YET


class Hang(Resource):
    """Never answers (or sends headers and a little of the body, then nothing)."""

    isLeaf = True

    def __init__(self, partial: bool = False) -> None:
        super().__init__()
        self.partial = partial
        #: for each request, fires when its connection is gone
        self.abandoned: list[Deferred[None]] = []
        self._arrivals: list[Deferred[None]] = []

    def arrival(self) -> Deferred[None]:
        """Fires once the next request is being held."""
        arrived: Deferred[None] = Deferred()
        self._arrivals.append(arrived)
        return arrived

    def render(self, request: Any) -> int:
        if self.partial:
            request.setHeader("content-length", "1000")
            request.write(b"{")
        gone: Deferred[None] = Deferred()
        request.notifyFinish().addBoth(lambda _: gone.callback(None))
        self.abandoned.append(gone)
        arrivals, self._arrivals = self._arrivals, []
        for arrival in arrivals:
            reactor.callLater(0, arrival.callback, None)
        return server.NOT_DONE_YET


class Bearer(Resource):
    isLeaf = True

    def __init__(self, tokens: set[str]) -> None:
        super().__init__()
        self.tokens = tokens

    def render(self, request: Any) -> bytes:
        header = request.getHeader("authorization") or ""
        ok = header.startswith("Bearer ") and header[7:] in self.tokens
        request.setResponseCode(200 if ok else 401)
        return b""


class Webhook(Resource):
    """ex_ftp's webhook: C{username} and C{password_hash} query parameters."""

    isLeaf = True

    def __init__(self, users: dict[str, str], hash_type: str = "sha256") -> None:
        super().__init__()
        self.users = users
        self.hash_type = hash_type
        #: user name to (content type, body) of the 200 answer
        self.answers: dict[str, tuple[str, bytes]] = {}

    def render(self, request: Any) -> bytes:
        name = request.args.get(b"username", [b""])[0].decode()
        offered = request.args.get(b"password_hash", [b""])[0].decode()
        password = self.users.get(name)
        if password is None or offered != hashlib.new(self.hash_type, password.encode()).hexdigest():
            request.setResponseCode(403)
            return b"no"
        content_type, body = self.answers.get(name, ("text/plain", b"ok"))
        request.setHeader("content-type", content_type)
        return body


class SetsCookie(Resource):
    """Basic auth that hands out a session cookie on success (which must never be sent back)."""

    isLeaf = True

    def __init__(self, users: dict[str, str]) -> None:
        super().__init__()
        self.users = users

    def render(self, request: Any) -> bytes:
        header = request.getHeader("authorization") or ""
        user, _, password = base64.b64decode(header[6:]).decode().partition(":") if header else ("", "", "")
        if request.getHeader("cookie") == "session=alice" or self.users.get(user) == password:
            request.addCookie("session", user, path="/")
            return b"ok"
        request.setResponseCode(401)
        return b""


_FIELD = re.compile(r'([a-z]+)=("(?:[^"\\]|\\.)*"|[^,\s]+)')


class DigestService(Resource):
    """
    RFC 7616 Digest on the server side, written independently of the client:
    checks every field, the nonce count, the opaque and the full request-URI.
    """

    isLeaf = True
    HASHES: Mapping[str, str] = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}

    def __init__(
        self, users: dict[str, str], offers: list[str], *, reuse_nonce: bool = False, stale_first: bool = False
    ) -> None:
        super().__init__()
        self.users = users
        self.offers = offers
        self.reuse_nonce = reuse_nonce
        self.stale_first = stale_first
        self.opaque = secrets.token_hex(8)
        self.counts: dict[str, int] = {}
        #: (user, algorithm, nc) of each accepted request
        self.accepted: list[tuple[str, str, int]] = []
        self.problems: list[str] = []
        self._nonce = secrets.token_urlsafe(12)

    def _challenge(self, request: Any, stale: bool = False) -> bytes:
        if not self.reuse_nonce:
            self._nonce = secrets.token_urlsafe(12)
        self.counts.setdefault(self._nonce, 0)
        for algorithm in self.offers:
            value = f'Digest realm="{REALM}", qop="auth", algorithm={algorithm}, '
            value += f'nonce="{self._nonce}", opaque="{self.opaque}"'
            request.responseHeaders.addRawHeader(
                b"www-authenticate", (value + (", stale=true" if stale else "")).encode()
            )
        request.setResponseCode(401)
        return b""

    def _refuse(self, request: Any, problem: str) -> bytes:
        self.problems.append(problem)
        return self._challenge(request)

    def render(self, request: Any) -> bytes:
        header = request.getHeader("authorization")
        if header is None or not header.startswith("Digest "):
            return self._challenge(request)
        fields = {
            name: re.sub(r"\\(.)", r"\1", value[1:-1]) if value.startswith('"') else value
            for name, value in _FIELD.findall(header)
        }
        algorithm = fields.get("algorithm", "")
        nonce, nc, cnonce = fields.get("nonce", ""), fields.get("nc", ""), fields.get("cnonce", "")
        if self.stale_first:
            self.stale_first = False
            self.counts.pop(nonce, None)
            return self._challenge(request, stale=True)
        if algorithm not in self.offers:
            return self._refuse(request, f"algorithm {algorithm!r} was not offered")
        if nonce not in self.counts or not re.fullmatch("[0-9a-f]{8}", nc) or int(nc, 16) <= self.counts[nonce]:
            return self._refuse(request, f"bad nonce or nonce count {nonce!r} {nc!r}")
        if (
            fields.get("qop") != "auth"
            or not cnonce
            or fields.get("opaque") != self.opaque
            or fields.get("realm") != REALM
        ):
            return self._refuse(request, f"bad fields {fields}")
        if fields.get("uri") != request.uri.decode():
            return self._refuse(request, f"uri {fields.get('uri')!r} is not the request-URI {request.uri!r}")
        user = fields.get("username", "")
        password = self.users.get(user)
        if password is None:
            return self._refuse(request, f"unknown user {user!r}")
        base = algorithm.removesuffix("-sess")

        def h(text: str) -> str:
            return hashlib.new(self.HASHES[base], text.encode()).hexdigest()

        ha1 = h(f"{user}:{REALM}:{password}")
        if algorithm.endswith("-sess"):
            ha1 = h(f"{ha1}:{nonce}:{cnonce}")
        ha2 = h(f"{request.method.decode()}:{request.uri.decode()}")
        if fields.get("response") != h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"):
            return self._refuse(request, f"wrong response for {user!r}")
        self.counts[nonce] = int(nc, 16)
        self.accepted.append((user, algorithm, int(nc, 16)))
        return b"welcome"


@implementer(IRealm)
class _Realm:
    def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: Any) -> Any:
        return IResource, Static(200, b"welcome"), lambda: None


def twisted_guard(factory: Any, users: dict[str, str]) -> tuple[IResource, InMemoryUsernamePasswordDatabaseDontUse]:
    """Twisted's own HTTP authentication in front of a 200; its checker (user names as bytes), to revoke users."""
    checker = InMemoryUsernamePasswordDatabaseDontUse()
    for user, password in users.items():
        checker.addUser(user.encode(), password.encode())
    portal = Portal(_Realm(), [checker])
    return HTTPAuthSessionWrapper(portal, [factory]), checker


@dataclass
class Service:
    """A site on 127.0.0.1, port 0."""

    root: Root
    port: Any
    site: _Site

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}{path}"

    async def stop(self) -> None:
        lost = list(self.site.channels.values())
        for channel in list(self.site.channels):
            transport: Any = channel.transport
            transport.abortConnection()
        await gatherResults(lost)
        await self.port.stopListening()


class HTTPAuthTestCase(TestCase):
    """Starts a service and builds authenticators against it, cleaning up both."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.root = Root()
        self.basic, self.basic_users = twisted_guard(BasicCredentialFactory(REALM), {"alice": SECRET, "bob": "bob-pw"})
        self.root.putChild(b"basic", self.basic)
        self.root.putChild(b"basic-recheck", twisted_guard(BasicCredentialFactory(REALM), {"alice": SECRET})[0])
        self.twisted_md5, self.md5_users = twisted_guard(
            DigestCredentialFactory(b"md5", REALM.encode()), {"alice": SECRET}
        )
        self.root.putChild(b"digest-twisted", self.twisted_md5)
        self.root.putChild(
            b"digest-twisted-sess",
            twisted_guard(DigestCredentialFactory(b"md5-sess", REALM.encode()), {"alice": SECRET})[0],
        )
        self.digest = DigestService({"alice": SECRET, "bob": "bob-pw"}, ["MD5", "SHA-256"])
        self.root.putChild(b"digest", self.digest)
        self.bearer = Bearer({"token-alice", SECRET})
        self.root.putChild(b"bearer", self.bearer)
        self.webhook = Webhook({"alice": SECRET, "bob": "bob-pw", "Jäsøn Doe": "pw"})
        self.root.putChild(b"hook", self.webhook)
        self.root.putChild(b"ok", Static(200, b"ok"))
        self.root.putChild(b"open", Static(200, b"anyone"))
        self.root.putChild(b"forbidden", Static(403))
        self.root.putChild(b"missing", Static(404))
        self.root.putChild(b"busy", Static(429))
        self.root.putChild(b"error", Static(500, b"oops"))
        self.root.putChild(b"unavailable", Static(503))
        self.root.putChild(b"loop", Static(302, headers={"location": "/loop"}))
        self.root.putChild(b"huge", Static(200, b"x" * (1 << 20), {"content-type": "application/json"}))
        self.root.putChild(b"huge-chunked", Chunked(1 << 20))
        self.hang = Hang()
        self.root.putChild(b"hang", self.hang)
        self.hang_body = Hang(partial=True)
        self.root.putChild(b"hang-body", self.hang_body)
        self.root.putChild(b"cookie", SetsCookie({"alice": SECRET, "bob": "bob-pw"}))
        site = _Site(self.root)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.service = Service(self.root, port, site)
        self.addCleanup(self.service.stop)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def url(self, path: str) -> str:
        return self.service.url(path)

    def client(self) -> HTTPClient:
        """A treq client on the real reactor, closed after the test."""
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        return HTTPClient(Agent(reactor, pool=pool), cookiejar=no_cookies())

    def make(self, cls: type[_HTTPAuthenticator], path: str, **options: Any) -> Any:
        """
        An authenticator for C{path} whose deadlines and TTLs run on
        C{self.clock} (HTTP on the real reactor).
        """
        options.setdefault("reactor", self.clock)
        options.setdefault("client", self.client())
        authenticator = cls(self.url(path), **options)
        verifyObject(IAuthenticator, authenticator)
        return authenticator

    async def refused(self, d: Deferred[Any]) -> None:
        with self.assertRaises(LoginFailed):
            await d

    async def unavailable(self, d: Deferred[Any]) -> AuthenticationUnavailable:
        with self.assertRaises(AuthenticationUnavailable) as caught:
            await d
        self.assertEqual(caught.exception.reply, 421)
        error: AuthenticationUnavailable = caught.exception
        self.assertNotIn(SECRET, str(error))
        return error

    def assertNoSecretsLogged(self, *secrets_: str) -> None:
        for event in self.events:
            text = formatEvent(event) + repr(event)
            for secret in (SECRET, *secrets_):
                self.assertNotIn(secret, text)

    def tearDown(self) -> None:
        self.assertNoSecretsLogged(SECRET_SHA256)


ALL_KINDS: list[type[_HTTPAuthenticator]] = [
    HTTPBasicAuthenticator,
    HTTPDigestAuthenticator,
    BearerAuthenticator,
    WebhookAuthenticator,
]


class BasicTests(HTTPAuthTestCase):
    """http-basic against Twisted's own Basic guard."""

    async def test_login(self) -> None:
        auth = self.make(HTTPBasicAuthenticator, "/basic")
        self.assertTrue(await auth.valid_user("anyone"))
        session = await auth.login("alice", SECRET)
        self.assertEqual((session.username, session.root, session.read_only), ("alice", None, False))
        self.assertEqual(
            self.root.seen[-1].authorization, "Basic " + base64.b64encode(f"alice:{SECRET}".encode()).decode()
        )
        self.assertNotIn(SECRET, repr(session))

    async def test_wrong_password_and_unknown_user(self) -> None:
        auth = self.make(HTTPBasicAuthenticator, "/basic")
        await self.refused(auth.login("alice", "wrong"))
        await self.refused(auth.login("mallory", SECRET))

    async def test_unsendable_credentials_make_no_request(self) -> None:
        auth = self.make(HTTPBasicAuthenticator, "/basic")
        await self.refused(auth.login("al:ice", SECRET))
        await self.refused(auth.login("alice", "pass\x00word"))
        self.assertEqual(self.root.seen, [])

    async def test_utf8(self) -> None:
        self.basic_users.addUser("jäsøn".encode(), "pässwörd".encode())
        auth = self.make(HTTPBasicAuthenticator, "/basic")
        self.assertEqual((await auth.login("jäsøn", "pässwörd")).username, "jäsøn")

    async def test_post(self) -> None:
        auth = self.make(HTTPBasicAuthenticator, "/basic", login_method="post")
        await auth.login("alice", SECRET)
        self.assertEqual(self.root.seen[-1].method, "POST")

    async def test_no_cookies_are_kept(self) -> None:
        """A cookie given to alice must not authenticate bob's next request."""
        auth = HTTPBasicAuthenticator(self.url("/cookie"), reactor=reactor)
        self.addCleanup(auth.close)
        await auth.login("alice", SECRET)
        await self.refused(auth.login("bob", "wrong"))
        self.assertEqual([seen.cookie for seen in self.root.seen], [None, None])

    async def test_cookie_service_is_a_real_threat(self) -> None:
        """The control: an ordinary treq client (it keeps cookies) lets bob in as alice."""
        pool = HTTPConnectionPool(reactor)
        self.addCleanup(pool.closeCachedConnections)
        auth = HTTPBasicAuthenticator(
            self.url("/cookie"), reactor=reactor, client=HTTPClient(Agent(reactor, pool=pool))
        )
        await auth.login("alice", SECRET)
        await auth.login("bob", "wrong")
        self.assertEqual(self.root.seen[-1].cookie, "session=alice")


class DigestTests(HTTPAuthTestCase):
    """http-digest against Twisted's guard (MD5) and the independent service (SHA-256 and more)."""

    async def test_twisted_md5(self) -> None:
        auth = self.make(HTTPDigestAuthenticator, "/digest-twisted")
        session = await auth.login("alice", SECRET)
        self.assertEqual(session.username, "alice")
        await self.refused(auth.login("alice", "wrong"))
        self.assertEqual(self.root.count("/digest-twisted"), 4)
        self.assertIsNone(self.root.seen[0].authorization)
        self.assertTrue(self.root.seen[1].authorization.startswith("Digest "))  # type: ignore[union-attr]

    async def test_twisted_md5_sess(self) -> None:
        auth = self.make(HTTPDigestAuthenticator, "/digest-twisted-sess")
        session = await auth.login("alice", SECRET)
        self.assertEqual(session.username, "alice")
        answered = [seen.authorization for seen in self.root.seen if seen.authorization]
        self.assertTrue(answered and "algorithm=md5-sess" in answered[0].lower().replace('"', ""), answered)
        await self.refused(auth.login("alice", "wrong"))

    async def test_sha256_preferred_over_md5(self) -> None:
        auth = self.make(HTTPDigestAuthenticator, "/digest")
        await auth.login("alice", SECRET)
        await auth.login("bob", "bob-pw")
        await self.refused(auth.login("bob", SECRET))
        self.assertEqual(self.digest.accepted, [("alice", "SHA-256", 1), ("bob", "SHA-256", 1)])

    async def test_each_algorithm(self) -> None:
        for algorithm in ["MD5", "MD5-sess", "SHA-256", "SHA-256-sess", "SHA-512-256", "SHA-512-256-sess"]:
            self.digest.offers = [algorithm]
            auth = self.make(HTTPDigestAuthenticator, "/digest")
            await auth.login("alice", SECRET)
            await self.refused(auth.login("alice", "wrong"))
            self.assertEqual(self.digest.accepted[-1], ("alice", algorithm, 1))
        self.assertEqual(len(self.digest.problems), 6)  # only the wrong passwords

    async def test_request_uri_with_query(self) -> None:
        auth = self.make(HTTPDigestAuthenticator, "/digest?tenant=a%20b&x=%C3%A4&flag")
        await auth.login("alice", SECRET)
        self.assertEqual(self.digest.problems, [])
        self.assertIn('uri="/digest?tenant=a%20b&x=%C3%A4&flag"', self.root.seen[-1].authorization)

    async def test_nonce_count_rises_when_the_nonce_is_reused(self) -> None:
        self.digest.reuse_nonce = True
        auth = self.make(HTTPDigestAuthenticator, "/digest")
        for _ in range(3):
            await auth.login("alice", SECRET)
        self.assertEqual([nc for _, _, nc in self.digest.accepted], [1, 2, 3])

    async def test_stale_nonce_is_retried_once(self) -> None:
        self.digest.stale_first = True
        auth = self.make(HTTPDigestAuthenticator, "/digest")
        await auth.login("alice", SECRET)
        self.assertEqual(self.root.count("/digest"), 3)
        self.assertEqual(self.digest.accepted, [("alice", "SHA-256", 1)])

    async def test_a_service_without_a_challenge_is_unusable(self) -> None:
        for path in ["/open", "/basic", "/forbidden", "/error"]:
            auth = self.make(HTTPDigestAuthenticator, path)
            await self.unavailable(auth.login("alice", SECRET))
        self.assertTrue(all(seen.authorization is None for seen in self.root.seen))

    async def test_unsupported_challenges(self) -> None:
        self.digest.offers = ["SHA3-512"]
        auth = self.make(HTTPDigestAuthenticator, "/digest")
        await self.unavailable(auth.login("alice", SECRET))
        self.assertEqual(self.root.count("/digest"), 1)


class BearerTests(HTTPAuthTestCase):
    async def test_token(self) -> None:
        auth = self.make(BearerAuthenticator, "/bearer")
        session = await auth.login("whoever", "token-alice")
        self.assertEqual(session.username, "whoever")
        self.assertEqual(self.root.seen[-1].authorization, "Bearer token-alice")
        await self.refused(auth.login("whoever", "token-mallory"))

    async def test_unsendable_tokens_make_no_request(self) -> None:
        auth = self.make(BearerAuthenticator, "/bearer")
        for token in ["", "two words", "caf\u00e9", "tab\there"]:
            await self.refused(auth.login("u", token))
        self.assertEqual(self.root.seen, [])


class WebhookTests(HTTPAuthTestCase):
    async def test_login(self) -> None:
        auth = self.make(WebhookAuthenticator, "/hook")
        session = await auth.login("alice", SECRET)
        self.assertEqual((session.username, session.root, session.read_only), ("alice", None, False))
        self.assertNotIn("webhook", session.attributes)
        seen = self.root.seen[-1]
        self.assertEqual(seen.method, "GET")
        self.assertEqual(seen.args, {"username": ["alice"], "password_hash": [SECRET_SHA256]})
        self.assertIsNone(seen.authorization)
        await self.refused(auth.login("alice", "wrong"))
        await self.refused(auth.login("mallory", SECRET))

    async def test_parameters_are_encoded_and_appended(self) -> None:
        auth = self.make(WebhookAuthenticator, "/hook?tenant=t1", login_method="POST")
        await auth.login("Jäsøn Doe", "pw")
        seen = self.root.seen[-1]
        self.assertEqual(seen.method, "POST")
        self.assertEqual(seen.args["tenant"], ["t1"])
        self.assertEqual(seen.args["username"], ["Jäsøn Doe"])

    async def test_hash_types(self) -> None:
        for configured, hashlib_name in [
            ("sha512", "sha512"),
            ("SHA3_256", "sha3_256"),
            ("md5", "md5"),
            ("sha", "sha1"),
        ]:
            self.webhook.hash_type = hashlib_name
            auth = self.make(WebhookAuthenticator, "/hook", password_hash_type=configured)
            await auth.login("alice", SECRET)
            self.assertEqual(
                self.root.seen[-1].args["password_hash"], [hashlib.new(hashlib_name, SECRET.encode()).hexdigest()]
            )

    async def test_json_settings(self) -> None:
        self.webhook.answers["alice"] = ("application/json", b'{"root": "/alice", "read_only": true, "quota_mb": 10}')
        self.webhook.answers["bob"] = ("application/json; charset=utf-8", b'{"root": "../../../etc/../bob"}')
        auth = self.make(WebhookAuthenticator, "/hook")
        alice = await auth.login("alice", SECRET)
        self.assertEqual((alice.root, alice.read_only), (VirtualPath.parse("/alice"), True))
        self.assertEqual(alice.attributes["webhook"], {"root": "/alice", "read_only": True, "quota_mb": 10})
        bob = await auth.login("bob", "bob-pw")
        self.assertEqual((bob.root, bob.read_only), (VirtualPath.parse("/bob"), False))

    async def test_unusable_json_refuses_and_is_logged(self) -> None:
        auth = self.make(WebhookAuthenticator, "/hook")
        for body in [b"not json", b'{"root": 7}', b'{"read_only": "yes"}', b"[1]"]:
            self.webhook.answers["alice"] = ("application/json", body)
            await self.unavailable(auth.login("alice", SECRET))
        problems = [formatEvent(e) for e in self.events if "unusable settings" in formatEvent(e)]
        self.assertEqual(len(problems), 4)

    async def test_text_answers_carry_no_settings(self) -> None:
        self.webhook.answers["alice"] = ("text/plain", b'{"root": "/alice"}')
        session = await self.make(WebhookAuthenticator, "/hook").login("alice", SECRET)
        self.assertIsNone(session.root)


class RevalidationTests(HTTPAuthTestCase):
    """authenticated(): per session, at most once per TTL, with the session's own credential."""

    async def test_without_authenticated_url(self) -> None:
        auth = self.make(HTTPBasicAuthenticator, "/basic")
        session = await auth.login("alice", SECRET)
        self.clock.advance(10**9)
        self.assertTrue(await auth.authenticated(session))
        self.assertEqual(self.root.count("/basic"), 1)

    async def test_ttl_and_revocation_for_each_kind(self) -> None:
        for cls, path, user, password, revoke in [
            (HTTPBasicAuthenticator, "/basic", "alice", SECRET, lambda: self.basic_users.users.pop(b"alice")),
            (HTTPDigestAuthenticator, "/digest", "alice", SECRET, lambda: self.digest.users.pop("alice")),
            (BearerAuthenticator, "/bearer", "alice", "token-alice", lambda: self.bearer.tokens.discard("token-alice")),
            (WebhookAuthenticator, "/hook", "alice", SECRET, lambda: self.webhook.users.pop("alice")),
        ]:
            self.root.seen.clear()
            auth = self.make(cls, path, authenticated_url=self.url(path), authenticated_ttl_ms=60_000)
            session = await auth.login(user, password)
            logins = len(self.root.seen)
            self.clock.advance(59)
            self.assertTrue(await auth.authenticated(session))
            self.assertEqual(len(self.root.seen), logins, "no request within the TTL")
            self.clock.advance(1)
            self.assertTrue(await auth.authenticated(session))
            self.assertEqual(len(self.root.seen), 2 * logins, "one check after the TTL")
            login, recheck = self.root.seen[logins - 1], self.root.seen[-1]
            if cls is HTTPDigestAuthenticator:
                self.assertIn('username="alice"', recheck.authorization or "")
            else:
                self.assertEqual((recheck.authorization, recheck.args), (login.authorization, login.args))
            revoke()
            self.clock.advance(30)
            self.assertTrue(await auth.authenticated(session), "still within the TTL of the last check")
            self.clock.advance(30)
            self.assertFalse(await auth.authenticated(session), auth.kind)
            checks = len(self.root.seen)
            self.clock.advance(3600)
            self.assertFalse(await auth.authenticated(session), "a refused session stays refused")
            self.assertEqual(len(self.root.seen), checks)

    async def test_webhook_recheck_carries_the_password_hash(self) -> None:
        """ex_ftp re-checks with the user name alone; a USER command must never be enough."""
        self.root.putChild(b"recheck", Webhook({"alice": SECRET}))
        auth = self.make(
            WebhookAuthenticator,
            "/hook",
            authenticated_url=self.url("/recheck"),
            authenticated_method="POST",
            authenticated_ttl_ms=0,
        )
        session = await auth.login("alice", SECRET)
        self.assertTrue(await auth.authenticated(session))
        seen = self.root.seen[-1]
        self.assertEqual((seen.path, seen.method), ("/recheck", "POST"))
        self.assertEqual(seen.args, {"username": ["alice"], "password_hash": [SECRET_SHA256]})

    async def test_sessions_are_checked_separately(self) -> None:
        """Two sessions of one user, logged in with different passwords: each is re-checked with its own."""
        auth = self.make(
            HTTPBasicAuthenticator, "/basic", authenticated_url=self.url("/basic"), authenticated_ttl_ms=1000
        )
        old = await auth.login("alice", SECRET)
        self.basic_users.users[b"alice"] = b"new-password"
        new = await auth.login("alice", "new-password")
        self.clock.advance(1)
        self.assertFalse(await auth.authenticated(old))
        self.assertTrue(await auth.authenticated(new))

    async def test_foreign_sessions_are_refused(self) -> None:
        auth = self.make(HTTPBasicAuthenticator, "/basic", authenticated_url=self.url("/basic"))
        other = self.make(HTTPBasicAuthenticator, "/basic", authenticated_url=self.url("/basic"))
        session = await other.login("alice", SECRET)
        self.assertFalse(await auth.authenticated(session))
        self.assertFalse(await auth.authenticated(Session("alice", attributes={SESSION_KEY: "forged"})))

    async def test_concurrent_checks_share_one_request(self) -> None:
        auth = self.make(HTTPBasicAuthenticator, "/basic", authenticated_url=self.url("/basic"), authenticated_ttl_ms=0)
        session = await auth.login("alice", SECRET)
        first, second = auth.authenticated(session), auth.authenticated(session)
        self.assertEqual(await gatherResults([first, second]), [True, True])
        self.assertEqual(self.root.count("/basic"), 2)

    async def test_unavailable_service_is_not_revocation(self) -> None:
        auth = self.make(HTTPBasicAuthenticator, "/basic", authenticated_url=self.url("/error"), authenticated_ttl_ms=0)
        session = await auth.login("alice", SECRET)
        await self.unavailable(auth.authenticated(session))
        auth.authenticated_url = self.url("/basic")
        self.assertTrue(await auth.authenticated(session))

    async def test_outage_is_asked_about_again_a_ttl_later(self) -> None:
        """A failed check is not repeated for every command: once per TTL per session (issue 16)."""
        auth = self.make(
            HTTPBasicAuthenticator, "/basic", authenticated_url=self.url("/error"), authenticated_ttl_ms=60_000
        )
        session = await auth.login("alice", SECRET)
        self.clock.advance(60)
        await self.unavailable(auth.authenticated(session))
        self.assertEqual(self.root.count("/error"), 1)
        self.clock.advance(59)
        self.assertTrue(await auth.authenticated(session), "within the TTL of the failed check")
        self.assertEqual(self.root.count("/error"), 1)
        self.clock.advance(1)
        await self.unavailable(auth.authenticated(session))
        self.assertEqual(self.root.count("/error"), 2)
        auth.authenticated_url = self.url("/basic")
        self.clock.advance(60)
        self.basic_users.users.pop(b"alice")
        self.assertFalse(await auth.authenticated(session), "a refusal after the outage still ends the session")

    async def test_cancelled_check_stops_the_request(self) -> None:
        auth = self.make(HTTPBasicAuthenticator, "/basic", authenticated_url=self.url("/hang"), authenticated_ttl_ms=0)
        session = await auth.login("alice", SECRET)
        arrived = self.hang.arrival()
        check = auth.authenticated(session)
        await arrived
        check.cancel()
        await self.hang.abandoned[0]
        self.failureResultOf(check, CancelledError)


class BadServiceTests(HTTPAuthTestCase):
    """Down, slow, failing, redirecting and flooding services, for every kind."""

    async def test_refusals(self) -> None:
        for cls in ALL_KINDS:
            for path in ["/forbidden", "/missing"]:
                if cls is HTTPDigestAuthenticator:
                    continue  # no challenge: unusable, tested in DigestTests
                await self.refused(self.make(cls, path).login("alice", SECRET))

    async def test_down(self) -> None:
        probe = reactor.listenTCP(0, _Site(Root()), interface="127.0.0.1")
        port = probe.getHost().port
        await probe.stopListening()
        for cls in ALL_KINDS:
            auth = cls(f"http://127.0.0.1:{port}/login", reactor=self.clock, client=self.client())
            await self.unavailable(auth.login("alice", SECRET))
        self.assertTrue(any("ConnectionRefused" in formatEvent(e) for e in self.events))

    async def test_errors_redirects_and_floods(self) -> None:
        for cls in ALL_KINDS:
            for path in ["/error", "/unavailable", "/busy", "/loop", "/huge", "/huge-chunked"]:
                self.root.seen.clear()
                await self.unavailable(self.make(cls, path).login("alice", SECRET))
                self.assertEqual(len(self.root.seen), 1, f"{cls.kind} {path}: redirects are not followed")

    async def test_slow(self) -> None:
        for cls in ALL_KINDS:
            for hang in [self.hang, self.hang_body]:
                path = "/hang" if hang is self.hang else "/hang-body"
                auth = self.make(cls, path, timeout=5)
                arrived = hang.arrival()
                login = auth.login("alice", SECRET)
                await arrived
                self.assertNoResult(login)
                self.clock.advance(5)
                await self.unavailable(login)
                await hang.abandoned[-1]  # the connection was dropped
        self.assertTrue(any("no answer within 5 s" in formatEvent(e) for e in self.events))

    async def test_other_logins_go_on_while_one_hangs(self) -> None:
        slow = self.make(WebhookAuthenticator, "/hang")
        arrived = self.hang.arrival()
        stuck = slow.login("alice", SECRET)
        await arrived
        fast = self.make(WebhookAuthenticator, "/hook")
        self.assertEqual((await fast.login("alice", SECRET)).username, "alice")
        self.assertNoResult(stuck)
        stuck.cancel()
        self.failureResultOf(stuck, CancelledError)
        await self.hang.abandoned[-1]

    async def test_default_timeout_and_client(self) -> None:
        auth = WebhookAuthenticator(self.url("/hook"))
        self.addCleanup(auth.close)
        self.assertEqual(auth.timeout, 10.0)
        self.assertEqual((await auth.login("alice", SECRET)).username, "alice")


class SpecTests(SynchronousTestCase):
    """authenticator_from_spec: what C{--auth KIND:URL --auth-option KEY=VALUE} builds."""

    def test_kinds(self) -> None:
        for kind, cls in [
            ("http-basic", HTTPBasicAuthenticator),
            ("http-digest", HTTPDigestAuthenticator),
            ("bearer", BearerAuthenticator),
            ("webhook", WebhookAuthenticator),
        ]:
            auth = authenticator_from_spec(kind, "https://auth.example.com/login?x=1", {})
            self.assertIsInstance(auth, cls)
            verifyObject(IAuthenticator, auth)
            assert isinstance(auth, _HTTPAuthenticator)
            self.assertEqual(
                (auth.login_url, auth.login_method, auth.authenticated_url, auth.authenticated_ttl_ms, auth.timeout),
                ("https://auth.example.com/login?x=1", "GET", None, 60_000, 10.0),
            )

    def test_options(self) -> None:
        auth = authenticator_from_spec(
            "webhook",
            "http://127.0.0.1:8080/login",
            {
                "login_method": "post",
                "authenticated_url": "http://127.0.0.1:8080/check",
                "authenticated_method": "HEAD",
                "authenticated_ttl_ms": "0",
                "password_hash_type": "sha512",
                "timeout": "2.5",
            },
        )
        assert isinstance(auth, WebhookAuthenticator)
        self.assertEqual(
            (auth.login_method, auth.authenticated_url, auth.authenticated_method, auth.authenticated_ttl_ms),
            ("POST", "http://127.0.0.1:8080/check", "HEAD", 0),
        )
        self.assertEqual((auth.password_hash_type, auth.timeout), ("sha512", 2.5))

    def test_errors(self) -> None:
        cases: list[tuple[str, str, dict[str, str], str]] = [
            ("ldap", "http://h/", {}, "unknown HTTP authenticator 'ldap'"),
            ("webhook", "", {}, "a login URL is required"),
            ("webhook", "ftp://h/", {}, "http:// or https://"),
            ("webhook", "file:///etc/passwd", {}, "http:// or https://"),
            ("webhook", "localhost:8080/login", {}, "http:// or https://"),
            ("webhook", "http:///nohost", {}, "http:// or https://"),
            ("webhook", "http://h:99999/", {}, "not a URL"),
            ("webhook", "http://user:pw@h/", {}, "user names or passwords in the URL"),
            ("webhook", "http://h/#frag", {}, "fragment"),
            ("http-basic", "http://h/", {"password_hash_type": "md5"}, "unknown option(s) password_hash_type"),
            ("http-basic", "http://h/", {"login_url": "http://h/"}, "login_url is the URL after KIND:"),
            ("bearer", "http://h/", {"ttl": "5"}, "unknown option(s) ttl"),
            ("bearer", "http://h/", {"login_method": "GE T"}, "login_method: not an HTTP method"),
            ("bearer", "http://h/", {"authenticated_method": ""}, "authenticated_method: not an HTTP method"),
            ("bearer", "http://h/", {"authenticated_url": "gopher://h/"}, "authenticated_url"),
            ("bearer", "http://h/", {"authenticated_ttl_ms": "-1"}, "authenticated_ttl_ms"),
            ("bearer", "http://h/", {"authenticated_ttl_ms": "1.5"}, "authenticated_ttl_ms"),
            ("bearer", "http://h/", {"timeout": "0"}, "timeout"),
            ("bearer", "http://h/", {"timeout": "nan"}, "timeout"),
            ("bearer", "http://h/", {"timeout": "inf"}, "timeout"),
            ("bearer", "http://h/", {"timeout": "soon"}, "timeout"),
            ("webhook", "http://h/", {"password_hash_type": "rot13"}, "unknown hash algorithm 'rot13'"),
            ("webhook", "http://h/", {"password_hash_type": "shake_128"}, "no fixed digest length"),
        ]
        for kind, url, options, message in cases:
            with self.assertRaises(ValueError, msg=(kind, url, options)) as caught:
                authenticator_from_spec(kind, url, options)
            self.assertIn(message, str(caught.exception))

    def test_no_reactor_needed_to_configure(self) -> None:
        auth = HTTPDigestAuthenticator("http://h/")
        self.assertIsNone(auth._reactor)
        self.assertEqual(repr(WebhookAuthenticator("http://h/login?key=k")), "<WebhookAuthenticator http://h/login>")
