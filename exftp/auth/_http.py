"""
Logins checked by the user's own HTTP service: Basic, Digest, Bearer and webhook.

The requests have the shapes of ex_ftp's authenticators and take the same
configuration keys (C{login_url}, C{login_method}, C{authenticated_url},
C{authenticated_method}, C{authenticated_ttl_ms}, C{password_hash_type}), so
that an auth service written for ex_ftp works unchanged. Unlike ex_ftp:

  - re-validation sends the session's own credential, never the user name
    alone, at most once per TTL for each session;
  - redirects are not followed, answers larger than 64 KiB are refused, and
    every check has a deadline;
  - the default HTTP client keeps no cookies, so that one user's answer
    cannot authenticate another user's request.

HTTP 200 means yes; a 4xx (401, 403, 404...) means no (L{exftp.LoginFailed});
anything else (no connection, timeout, 5xx, 408, 429, redirects, other 2xx,
oversized or unusable answers) raises L{AuthenticationUnavailable}: the
server answers that PASS with 421 and does not count it as a failed login,
and a session whose re-validation meets it goes on (asked again a TTL later).
Passwords, tokens and password hashes never appear in logs or errors.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import secrets
from collections import OrderedDict
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import URI
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from zope.interface import implementer

from .._errors import AuthenticationUnavailable, FTPError, InvalidPath, LoginFailed
from .._httpclient import HTTPUser, TooLarge, cancelled, check_url, describe, read_body, redacted
from .._interfaces import IAuthenticator, Session, UserLimits
from .._limits import parse_limits
from .._login import IPublicKeyAuthenticator
from .._paths import VirtualPath
from .._startup import probe_url
from ..storage._readonly import check_permissions
from ._digest import DigestChallenge, authorization, choose_digest

__all__ = [
    "HTTP_AUTHENTICATORS",
    "AuthenticationUnavailable",
    "BearerAuthenticator",
    "HTTPBasicAuthenticator",
    "HTTPDigestAuthenticator",
    "WebhookAuthenticator",
    "WebhookSettings",
    "authenticator_from_spec",
    "parse_webhook_settings",
]

_T = TypeVar("_T")
_log = Logger(namespace="exftp.auth.http")

#: Seconds that one login or re-validation may take, all requests included.
DEFAULT_TIMEOUT = 10.0
#: Milliseconds during which a session counts as validated after a check.
DEFAULT_TTL_MS = 60_000
#: The largest answer body read from the service, in bytes.
MAX_BODY = 64 * 1024

#: The key in L{Session.attributes} of the session's credential and TTL state.
SESSION_KEY = "exftp.http_auth"

_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VISIBLE = re.compile(r"[\x21-\x7e]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Status codes that say "try again later" although they are 4xx.
_TRANSIENT = frozenset({408, 429})


@dataclass(frozen=True, slots=True, repr=False)
class _Credential:
    """What a session proves itself with: a password, a token or a password hash."""

    username: str
    secret: str

    def __repr__(self) -> str:
        return f"<credential of {self.username!r}>"


class _Validation:
    """
    One session's credential and when the service last confirmed it; kept in
    the session's L{Session.attributes} under L{SESSION_KEY}, so that nothing
    is shared between sessions.
    """

    def __init__(self, owner: object, credential: _Credential, checked_at: float) -> None:
        self.owner = owner
        self.credential = credential
        self.checked_at = checked_at
        self.revoked = False
        self.pending: Deferred[bool] | None = None
        self.waiters: list[Deferred[bool]] = []

    def __repr__(self) -> str:
        return f"<validation of {self.credential.username!r}>"


@dataclass(frozen=True, slots=True)
class _Answer:
    """An HTTP answer, its body already read (within the bound)."""

    code: int
    headers: Headers
    body: bytes

    def header(self, name: bytes) -> list[str]:
        values: Sequence[bytes] = self.headers.getRawHeaders(name, [])
        return [value.decode("latin-1") for value in values]


def _check_method(method: str, name: str) -> str:
    if not isinstance(method, str) or not _METHOD.fullmatch(method):
        raise ValueError(f"{name}: not an HTTP method: {method!r}")
    return method.upper()


@implementer(IAuthenticator)
class _HTTPAuthenticator(HTTPUser):
    """
    What the four authenticators share: configuration, requests, the
    deadline, answer classification and per-session re-validation.

    @param login_url: the http(s) URL asked at login.
    @param login_method: its HTTP method.
    @param authenticated_url: the URL asked to re-validate a session, or
        C{None} to never re-validate (then L{authenticated} is always C{True}).
    @param authenticated_method: its HTTP method.
    @param authenticated_ttl_ms: how long a confirmation holds for a session
        (0: re-validate on every call).
    @param timeout: seconds one login or re-validation may take in all.
    @param client: the treq client; by default one on a persistent
        connection pool that keeps no cookies (an injected client should
        keep none either, see L{exftp._httpclient.no_cookies}).
    @param reactor: for deadlines, TTLs and the default client; the global
        reactor, looked up on first use, when omitted.
    @param max_body: the largest answer body read, in bytes.
    @raise ValueError: for a bad URL, method, TTL or timeout.
    """

    #: The name of the kind in C{--auth KIND:URL} and in logs.
    kind: ClassVar[str] = ""
    #: The C{--auth-option} keys this kind takes beyond the common ones.
    extra_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        login_url: str,
        *,
        login_method: str = "GET",
        authenticated_url: str | None = None,
        authenticated_method: str = "GET",
        authenticated_ttl_ms: int = DEFAULT_TTL_MS,
        timeout: float = DEFAULT_TIMEOUT,
        client: HTTPClient | None = None,
        reactor: IReactorTime | None = None,
        max_body: int = MAX_BODY,
    ) -> None:
        self.login_url = check_url(login_url, "login_url")
        self.login_method = _check_method(login_method, "login_method")
        self.authenticated_url = (
            None if authenticated_url is None else check_url(authenticated_url, "authenticated_url")
        )
        self.authenticated_method = _check_method(authenticated_method, "authenticated_method")
        ttl = authenticated_ttl_ms
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
            raise ValueError(f"authenticated_ttl_ms: expected a whole number >= 0, not {authenticated_ttl_ms!r}")
        self.authenticated_ttl_ms = authenticated_ttl_ms
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < math.inf:
            raise ValueError(f"timeout: expected a number of seconds > 0, not {timeout!r}")
        self.timeout = float(timeout)
        if max_body < 0:
            raise ValueError(f"max_body: expected a number of bytes >= 0, not {max_body!r}")
        self.max_body = max_body
        self._client = client
        self._reactor = reactor

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {redacted(self.login_url)}>"

    def probe_at_start(self) -> str | None:
        """
        Ask C{login_url} once, without credentials, whether the service
        answers at all (any HTTP status will do): the problem, or C{None}.
        Blocking: for start-up, before the reactor runs.
        """
        return probe_url(self.login_url, min(self.timeout, 10.0))

    # IAuthenticator

    def valid_user(self, username: str) -> Deferred[bool]:
        """Always C{True}: no request is made, and nobody learns which users exist."""
        return succeed(True)

    def login(self, username: str, password: str) -> Deferred[Session]:
        """Ask the service at C{login_url}; a L{Session} on HTTP 200."""
        return self._deadline(self._login(username, password), "login", username)

    async def _login(self, username: str, password: str) -> Session:
        started = self.reactor.seconds()
        credential = self._credential(username, password)
        answer = await self._check(self.login_url, self.login_method, credential)
        return self._session(credential, answer, _Validation(self, credential, started))

    def authenticated(self, session: Session) -> Deferred[bool]:
        """
        Whether the session's credential still holds: C{True} without a
        request within C{authenticated_ttl_ms} of the last confirmation (or
        when no C{authenticated_url} is configured), else asks the service at
        C{authenticated_url} with that same credential. Once refused, a
        session stays refused. Fails with L{AuthenticationUnavailable} when
        the service gives no usable answer; the session is then not asked
        about again for C{authenticated_ttl_ms}, so that an outage costs each
        session one failed check per TTL, not one per command.
        """
        if self.authenticated_url is None:
            return succeed(True)
        state = session.attributes.get(SESSION_KEY)
        if not isinstance(state, _Validation) or state.owner is not self or state.revoked:
            return succeed(False)
        now = self.reactor.seconds()
        if state.pending is None and (now - state.checked_at) * 1000 < self.authenticated_ttl_ms:
            return succeed(True)
        waiter: Deferred[bool] = Deferred(lambda d: self._forget_waiter(state, d))
        state.waiters.append(waiter)
        if state.pending is None:
            check = self._deadline(self._revalidate(state, now), "re-validation", state.credential.username)
            state.pending = check
            check.addBoth(self._revalidated, state, now)
        return waiter

    async def _revalidate(self, state: _Validation, started: float) -> bool:
        assert self.authenticated_url is not None
        try:
            await self._check(self.authenticated_url, self.authenticated_method, state.credential)
        except LoginFailed:
            state.revoked = True
            return False
        state.checked_at = started
        return True

    def _revalidated(self, result: bool | Failure, state: _Validation, started: float) -> None:
        state.pending = None
        if isinstance(result, Failure) and result.check(AuthenticationUnavailable):
            state.checked_at = started  # an outage: ask again a TTL later
        waiters, state.waiters = state.waiters, []
        for waiter in waiters:
            if waiter.called:
                continue
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def _forget_waiter(self, state: _Validation, waiter: Deferred[bool]) -> None:
        if waiter in state.waiters:
            state.waiters.remove(waiter)
        if not state.waiters and state.pending is not None:
            state.pending.cancel()

    # What each kind defines

    def _credential(self, username: str, password: str) -> _Credential:
        """The credential to send, or L{LoginFailed} when it cannot be sent at all."""
        return _Credential(username, password)

    async def _check(self, url: str, method: str, credential: _Credential) -> _Answer:
        """Ask the service; the answer when it says yes, else L{LoginFailed} or L{AuthenticationUnavailable}."""
        raise NotImplementedError

    def _session(self, credential: _Credential, answer: _Answer, state: _Validation) -> Session:
        """The session for a successful login."""
        return Session(credential.username, attributes={SESSION_KEY: state})

    # Shared machinery

    async def _request(
        self, method: str, url: str, headers: Mapping[str, str], params: Mapping[str, str] | None = None
    ) -> _Answer:
        fields: dict[bytes | str, bytes | str] = {}
        for name, value in headers.items():
            fields[name] = value
        response: IResponse = await self.client.request(
            method,
            url,
            headers=fields,
            params=dict(params) if params else None,
            allow_redirects=False,
            unbuffered=True,
            reactor=self.reactor,  # type: ignore[arg-type]  # only for treq's own timeout, unused
        )
        body = await read_body(response, self.max_body)
        return _Answer(response.code, response.headers, body)

    def _accept(self, answer: _Answer, url: str, username: str) -> _Answer:
        """C{answer} if it is HTTP 200; else refuse or report the service unusable."""
        if answer.code == 200:
            return answer
        if 400 <= answer.code < 500 and answer.code not in _TRANSIENT:
            _log.info(
                "{kind} service {url} refused {user!r}: HTTP {code}",
                kind=self.kind,
                url=redacted(url),
                user=username,
                code=answer.code,
            )
            raise LoginFailed()
        raise self._unavailable(url, username, f"HTTP {answer.code}")

    def _unavailable(self, url: str, username: str, reason: str) -> AuthenticationUnavailable:
        _log.warn(
            "{kind} service {url} unusable while checking {user!r}: {reason}",
            kind=self.kind,
            url=redacted(url),
            user=username,
            reason=reason,
        )
        return AuthenticationUnavailable()

    def _deadline(self, work: Coroutine[Any, Any, _T], what: str, username: str) -> Deferred[_T]:
        """
        Run C{work} within C{timeout} seconds; turn everything but
        L{FTPError}s and outside cancellation into L{AuthenticationUnavailable}.
        """
        running = Deferred.fromCoroutine(work)
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            running.cancel()

        timer = self.reactor.callLater(self.timeout, expire)

        def settle(result: _T | Failure) -> _T | Failure:
            if timer.active():
                timer.cancel()
            if not isinstance(result, Failure):
                return result
            url = self.login_url if what == "login" else self.authenticated_url or ""
            if expired:
                raise self._unavailable(url, username, f"no answer within {self.timeout:g} s")
            if result.check(FTPError, CancelledError):
                return result
            if cancelled(result):
                return Failure(CancelledError())
            if result.check(TooLarge):
                raise self._unavailable(url, username, result.getErrorMessage())
            raise self._unavailable(url, username, describe(result))

        running.addBoth(settle)
        return running


@implementer(IAuthenticator)
class HTTPBasicAuthenticator(_HTTPAuthenticator):
    """
    HTTP Basic (RFC 7617): C{login_method} to C{login_url} with
    C{Authorization: Basic base64(user:password)} (UTF-8). HTTP 200 = success.

    User names with C{:} and credentials with control characters cannot be
    sent and are refused without a request.
    """

    kind = "http-basic"

    def _credential(self, username: str, password: str) -> _Credential:
        if ":" in username or _CONTROL.search(username) or _CONTROL.search(password):
            raise LoginFailed()
        return _Credential(username, password)

    async def _check(self, url: str, method: str, credential: _Credential) -> _Answer:
        pair = f"{credential.username}:{credential.secret}".encode()
        header = "Basic " + base64.b64encode(pair).decode("ascii")
        answer = await self._request(method, url, {"Authorization": header})
        return self._accept(answer, url, credential.username)


@implementer(IAuthenticator)
class BearerAuthenticator(_HTTPAuthenticator):
    """
    The FTP password is a token: C{login_method} to C{login_url} with
    C{Authorization: Bearer <password>} (RFC 6750). HTTP 200 = success.

    The service sees only the token, not the user name: the FTP user name is
    taken as given. Tokens must be visible ASCII without spaces.
    """

    kind = "bearer"

    def _credential(self, username: str, password: str) -> _Credential:
        if not _VISIBLE.fullmatch(password):
            raise LoginFailed()
        return _Credential(username, password)

    async def _check(self, url: str, method: str, credential: _Credential) -> _Answer:
        answer = await self._request(method, url, {"Authorization": "Bearer " + credential.secret})
        return self._accept(answer, url, credential.username)


@implementer(IAuthenticator)
class HTTPDigestAuthenticator(_HTTPAuthenticator):
    """
    HTTP Digest (RFC 7616): an unauthenticated C{login_method} request to
    C{login_url} must be answered 401 with a Digest challenge; the strongest
    one offered (SHA-512-256, SHA-256, MD5, each also as C{-sess}) with
    C{qop=auth} is answered in a second request. HTTP 200 = success.

    A fresh challenge is fetched for every check; if the server repeats a
    nonce, the nonce count goes up. A 401 with C{stale=true} is retried once
    with the new nonce. A service that answers the unauthenticated request
    with anything but 401 is unusable (it would let anyone in).
    """

    kind = "http-digest"
    #: How many nonces to remember the count of.
    NONCES = 1024

    def __init__(self, login_url: str, **options: Any) -> None:
        super().__init__(login_url, **options)
        self._nonce_counts: OrderedDict[str, int] = OrderedDict()

    def _next_count(self, nonce: str) -> int:
        count = self._nonce_counts.pop(nonce, 0) + 1
        self._nonce_counts[nonce] = count
        while len(self._nonce_counts) > self.NONCES:
            self._nonce_counts.popitem(last=False)
        return count

    def _challenge(self, answer: _Answer, url: str, username: str) -> DigestChallenge:
        challenge = choose_digest(answer.header(b"www-authenticate"))
        if challenge is None:
            reason = "no supported Digest challenge (qop=auth; MD5, SHA-256 or SHA-512-256)"
            raise self._unavailable(url, username, reason)
        return challenge

    async def _check(self, url: str, method: str, credential: _Credential) -> _Answer:
        first = await self._request(method, url, {})
        if first.code != 401:
            reason = f"HTTP {first.code} to a request without credentials, instead of 401 and a challenge"
            raise self._unavailable(url, credential.username, reason)
        challenge = self._challenge(first, url, credential.username)
        target = URI.fromBytes(url.encode("ascii")).originForm.decode("ascii")
        for attempt in range(2):
            header = authorization(
                challenge,
                username=credential.username,
                password=credential.secret,
                method=method,
                uri=target,
                nc=self._next_count(challenge.nonce),
                cnonce=secrets.token_urlsafe(24),
            )
            answer = await self._request(method, url, {"Authorization": header})
            if answer.code == 401 and attempt == 0:
                again = choose_digest(answer.header(b"www-authenticate"))
                if again is not None and again.stale:
                    challenge = again
                    continue
            return self._accept(answer, url, credential.username)
        raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """
    Per-user settings from a webhook's JSON answer.

    @ivar root: the user's root inside the storage, or C{None} for all of it.
    @ivar read_only: whether the user may only read.
    @ivar permissions: pyftpdlib-style permission letters, or C{None} for all.
    @ivar document: the whole JSON object, for custom storage factories.
    @ivar limits: the user's quotas, rates and other limits (unlimited by default).
    @ivar authorized_keys: public keys (C{authorized_keys} lines) that may
        log the user in over SFTP.
    """

    root: VirtualPath | None = None
    read_only: bool = False
    permissions: frozenset[str] | None = None
    document: Mapping[str, Any] | None = None
    limits: UserLimits = field(default_factory=UserLimits)
    authorized_keys: tuple[str, ...] = ()


def _is_json(content_types: list[str]) -> bool:
    if not content_types:
        return False
    media = content_types[-1].partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def parse_webhook_settings(body: bytes, content_types: list[str]) -> WebhookSettings:
    """
    Read the settings of a webhook's HTTP 200 answer.

    Only an answer with C{Content-Type: application/json} (or
    C{application/*+json}) carries settings; any other is plain success.
    The JSON must be an object; its members C{root} (string), C{read_only}
    (boolean), C{permissions} (a string of pyftpdlib's letters
    C{elradfmwMT}), C{authorized_keys} (a list of public key lines, for
    SFTP) and the limits of the users file (C{quota_bytes},
    C{quota_files}, C{upload_rate}, C{download_rate}, C{max_sessions},
    C{max_file_size}: whole numbers, 0 for unlimited; C{allow_from}: a list
    of networks) are used, any may be absent or null, and
    other members are ignored (but kept in L{WebhookSettings.document}).
    A C{root} is resolved like a client path, so C{..} cannot leave the
    storage.

    @raise ValueError: when the JSON is invalid or a member has the wrong type.
    """
    if not _is_json(content_types):
        return WebhookSettings()
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("the answer is not valid JSON") from None
    if not isinstance(document, dict):
        raise ValueError(f"the JSON answer must be an object, not {type(document).__name__}")
    root = document.get("root")
    path: VirtualPath | None = None
    if root is not None:
        if not isinstance(root, str):
            raise ValueError(f'"root" must be a string, not {type(root).__name__}')
        path = parse_root(root)
    read_only = document.get("read_only")
    if read_only is not None and not isinstance(read_only, bool):
        raise ValueError(f'"read_only" must be true or false, not {type(read_only).__name__}')
    letters = document.get("permissions")
    permissions: frozenset[str] | None = None
    if letters is not None:
        if not isinstance(letters, str):
            raise ValueError(f'"permissions" must be a string, not {type(letters).__name__}')
        try:
            permissions = check_permissions(letters)
        except ValueError as error:
            raise ValueError(f'"permissions": {error}') from None
    keys = document.get("authorized_keys")
    if keys is not None and (not isinstance(keys, list) or not all(isinstance(key, str) for key in keys)):
        raise ValueError(f'"authorized_keys" must be a list of strings, not {type(keys).__name__}')
    return WebhookSettings(path, bool(read_only), permissions, document, parse_limits(document), tuple(keys or ()))


def parse_root(root: str) -> VirtualPath | None:
    """
    A user's root inside the storage, resolved like a client path (so C{..}
    cannot leave the storage); C{None} for the whole storage.

    @raise ValueError: when it holds forbidden characters.
    """
    try:
        path = VirtualPath.parse(root)
    except InvalidPath:
        raise ValueError('"root" holds forbidden characters') from None
    return None if path.is_root else path


#: The secret of a public-key lookup: no C{password_hash} is sent (a password login always sends one).
_KEY_LOOKUP = ""


@implementer(IAuthenticator, IPublicKeyAuthenticator)
class WebhookAuthenticator(_HTTPAuthenticator):
    """
    ex_ftp's webhook: C{login_method} to C{login_url} with the query
    parameters C{username} and C{password_hash} (the lowercase hex digest of
    the UTF-8 password with C{password_hash_type}, default C{sha256}, any
    fixed-length hashlib algorithm; C{sha} means SHA-1 as in Erlang).
    HTTP 200 = success. Re-validation sends the same two parameters to
    C{authenticated_url}.

    Beyond ex_ftp, a JSON answer to the login may set the user's settings
    (see L{parse_webhook_settings}), for example::

        {"root": "/alice", "read_only": true, "quota_bytes": 1000000000}

    The session then gets C{root}, C{read_only}, its limits, and the whole object in
    C{Session.attributes["webhook"]}. An answer that declares JSON but is
    not valid, or has members of the wrong type, fails the login with
    L{AuthenticationUnavailable} (421, a server problem) and is logged.

    For an SFTP public-key login the webhook is called with C{username}
    only (no C{password_hash}); its HTTP 200 JSON answer lists the user's
    C{authorized_keys}, and the SSH server checks the client's key and
    signature against them. Such an answer is never a password success.
    """

    kind = "webhook"
    extra_options = frozenset({"password_hash_type"})

    def __init__(self, login_url: str, *, password_hash_type: str = "sha256", **options: Any) -> None:
        super().__init__(login_url, **options)
        self.password_hash_type = check_hash_type(password_hash_type)

    def _credential(self, username: str, password: str) -> _Credential:
        digest = hashlib.new(self.password_hash_type, password.encode("utf-8")).hexdigest()
        return _Credential(username, digest)

    async def _check(self, url: str, method: str, credential: _Credential) -> _Answer:
        params = {"username": credential.username}
        if credential.secret != _KEY_LOOKUP:
            params["password_hash"] = credential.secret
        answer = await self._request(method, url, {}, params)
        return self._accept(answer, url, credential.username)

    def authorized_keys(self, username: str) -> Deferred[tuple[Session, Sequence[str]]]:
        """Ask the webhook for the user's session and public keys (no C{password_hash} sent)."""
        return self._deadline(self._authorized_keys(username), "public-key lookup", username)

    async def _authorized_keys(self, username: str) -> tuple[Session, Sequence[str]]:
        started = self.reactor.seconds()
        credential = _Credential(username, _KEY_LOOKUP)
        answer = await self._check(self.login_url, self.login_method, credential)
        session = self._session(credential, answer, _Validation(self, credential, started))
        keys = session.attributes.get("authorized_keys", ())
        if not keys:
            raise LoginFailed()
        return session, keys

    def _session(self, credential: _Credential, answer: _Answer, state: _Validation) -> Session:
        try:
            settings = parse_webhook_settings(answer.body, answer.header(b"content-type"))
        except ValueError as error:
            raise self._unavailable(self.login_url, credential.username, f"unusable settings: {error}") from None
        attributes: dict[str, Any] = {SESSION_KEY: state}
        if settings.document is not None:
            attributes["webhook"] = settings.document
        if settings.authorized_keys:
            attributes["authorized_keys"] = settings.authorized_keys
        return Session(
            credential.username,
            root=settings.root,
            read_only=settings.read_only,
            permissions=settings.permissions,
            attributes=attributes,
            limits=settings.limits,
        )


def check_hash_type(name: str) -> str:
    """The hashlib name for a C{password_hash_type}, or ValueError."""
    if not isinstance(name, str):
        raise ValueError(f"password_hash_type: expected a hashlib algorithm name, not {name!r}")
    algorithm = "sha1" if name.lower() == "sha" else name.lower()
    try:
        hashlib.new(algorithm).hexdigest()
    except ValueError:
        raise ValueError(f"password_hash_type: unknown hash algorithm {name!r}") from None
    except TypeError:
        raise ValueError(f"password_hash_type: {name!r} has no fixed digest length") from None
    return algorithm


#: The authenticators by the kind named in C{--auth KIND:URL}.
HTTP_AUTHENTICATORS: Mapping[str, type[_HTTPAuthenticator]] = {
    cls.kind: cls
    for cls in (HTTPBasicAuthenticator, HTTPDigestAuthenticator, BearerAuthenticator, WebhookAuthenticator)
}

_COMMON_OPTIONS = frozenset(
    {"login_method", "authenticated_url", "authenticated_method", "authenticated_ttl_ms", "timeout"}
)


def _parse_ttl(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"authenticated_ttl_ms: expected a whole number of milliseconds >= 0, not {text!r}")
    return int(text)


def _parse_timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise ValueError(f"timeout: expected a number of seconds > 0, not {text!r}")
    return seconds


def authenticator_from_spec(
    kind: str,
    url: str,
    options: Mapping[str, str],
    *,
    client: HTTPClient | None = None,
    reactor: IReactorTime | None = None,
) -> IAuthenticator:
    """
    Build an HTTP authenticator from C{--auth KIND:URL} and its options.

    @param kind: C{http-basic}, C{http-digest}, C{bearer} or C{webhook}.
    @param url: the C{login_url} (http or https).
    @param options: the other keys by their ex_ftp names, as text:
        C{login_method}, C{authenticated_url}, C{authenticated_method},
        C{authenticated_ttl_ms}, C{timeout} (seconds), and for C{webhook}
        C{password_hash_type}.
    @raise ValueError: for an unknown kind or key, or a bad value.
    """
    cls = HTTP_AUTHENTICATORS.get(kind)
    if cls is None:
        raise ValueError(f"unknown HTTP authenticator {kind!r}; use one of {', '.join(HTTP_AUTHENTICATORS)}")
    allowed = _COMMON_OPTIONS | cls.extra_options
    unknown = sorted(set(options) - allowed)
    if unknown:
        hint = " (login_url is the URL after KIND:)" if "login_url" in unknown else ""
        raise ValueError(f"{kind}: unknown option(s) {', '.join(unknown)}{hint}; known: {', '.join(sorted(allowed))}")
    if not url:
        raise ValueError(f"{kind}: a login URL is required, as in {kind}:https://auth.example.com/login")
    arguments: dict[str, Any] = {}
    for key, value in options.items():
        if key == "authenticated_ttl_ms":
            arguments[key] = _parse_ttl(value)
        elif key == "timeout":
            arguments[key] = _parse_timeout(value)
        else:
            arguments[key] = value
    authenticator: IAuthenticator = cls(url, client=client, reactor=reactor, **arguments)
    return authenticator
