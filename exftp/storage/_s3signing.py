"""
SigV4 signing of S3 requests, and AWS credentials that never block the reactor.

botocore does the cryptography and walks the standard credential chain
(environment, shared files and profiles, container and instance roles); it
never sends a request here, treq does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeAlias, TypeVar

from botocore.auth import S3SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import RefreshableCredentials  # type: ignore[import-untyped]
from botocore.session import Session as BotocoreSession  # type: ignore[import-untyped]
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

#: The SHA-256 of an empty payload.
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: Payloads up to this size are hashed on the reactor thread; bigger ones in a worker thread.
_INLINE_HASH_LIMIT = 256 * 1024

_T = TypeVar("_T")

#: A request body: bytes, or chunks of bytes sent one after another (as an upload's part).
Payload: TypeAlias = bytes | Sequence[bytes]


def chunks_of(body: Payload | bytearray | memoryview) -> Sequence[bytes]:
    """The chunks of C{body}."""
    if isinstance(body, bytes):
        return (body,)
    if isinstance(body, bytearray | memoryview):
        return (bytes(body),)
    return body


class NoCredentials(Exception):
    """botocore's credential chain found nothing to sign with."""


class Shared(Generic[_T]):
    """
    The result of one Deferred, handed to any number of waiters.

    Awaiting one Deferred from several coroutines loses its result for all
    but the first; each waiter here gets a Deferred of its own.
    """

    def __init__(self, source: Deferred[_T]) -> None:
        self._result: _T | Failure | None = None
        self._done = False
        self._waiters: list[Deferred[_T]] = []
        source.addBoth(self._fire)

    def _fire(self, result: _T | Failure) -> None:
        self._result, self._done = result, True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            self._deliver(waiter)

    def _deliver(self, waiter: Deferred[_T]) -> None:
        if isinstance(self._result, Failure):
            waiter.errback(self._result)
        else:
            waiter.callback(self._result)  # type: ignore[arg-type]

    @property
    def done(self) -> bool:
        """Whether the result is in."""
        return self._done

    def wait(self) -> Deferred[_T]:
        """A new Deferred that fires with the result (at once if it is in)."""
        waiter: Deferred[_T] = Deferred()
        if self._done:
            self._deliver(waiter)
        else:
            self._waiters.append(waiter)
        return waiter


class _PresetPayloadSigner(S3SigV4Auth):  # type: ignore[misc]
    """S3's SigV4, with the payload hash computed beforehand (big bodies are hashed in a thread)."""

    def payload(self, request: AWSRequest) -> str:
        return str(request.context["exftp_payload_sha256"])


def sign(
    credentials: Any,
    region: str,
    method: str,
    url: str,
    headers: Mapping[str, str],
    payload_sha256: str,
) -> dict[str, str]:
    """
    Sign one request.

    @param credentials: botocore frozen credentials (access key, secret, token).
    @param url: the exact URL that will be sent, already percent-encoded.
    @param headers: headers to sign and send; C{Host} is taken from C{url}.
    @param payload_sha256: the hex SHA-256 of the body.
    @return: C{headers} plus C{Authorization}, C{X-Amz-Date},
        C{X-Amz-Content-SHA256} and, for temporary credentials,
        C{X-Amz-Security-Token}.
    """
    request = AWSRequest(method=method, url=url, headers=dict(headers))
    request.context["exftp_payload_sha256"] = payload_sha256
    _PresetPayloadSigner(credentials, "s3", region).add_auth(request)
    return {str(name): str(value) for name, value in request.headers.items()}


def payload_hash(reactor: Any, body: Payload) -> Deferred[str]:
    """The hex SHA-256 of C{body}, computed in the reactor's thread pool when it is big."""
    chunks = chunks_of(body)

    def digest() -> str:
        sha = hashlib.sha256()
        for chunk in chunks:
            sha.update(chunk)
        return sha.hexdigest()

    if sum(map(len, chunks)) <= _INLINE_HASH_LIMIT:
        return succeed(digest())
    return deferToThreadPool(reactor, reactor.getThreadPool(), digest)


class CredentialSource:
    """
    Where signing keys come from: fixed keys, or botocore's standard chain.

    Looking the chain up and refreshing temporary credentials may block
    (files, the instance metadata service, STS), so both run in the
    reactor's thread pool; credentials that are still fresh are returned at once.

    @param reactor: provides the thread pool.
    @param credentials: fixed botocore credentials; the standard chain when omitted.
    @param profile: the shared-config profile for the standard chain.
    """

    def __init__(self, reactor: Any, credentials: Any = None, profile: str | None = None) -> None:
        self._reactor = reactor
        self._credentials = credentials
        self._profile = profile
        self._resolving: Shared[Any] | None = None
        self._refreshing: Shared[Any] | None = None

    def _run(self, function: Callable[[], _T]) -> Deferred[_T]:
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), function)

    def _lookup(self) -> Any:
        credentials = BotocoreSession(profile=self._profile).get_credentials()
        if credentials is None:
            raise NoCredentials("No AWS credentials found (environment, shared files, container or instance role).")
        return credentials

    def frozen(self) -> Deferred[Any]:
        """Credentials to sign one request with (botocore C{ReadOnlyCredentials})."""
        if self._credentials is None:
            return Deferred.fromCoroutine(self._resolve_then_freeze())
        return self._freeze(self._credentials)

    async def _resolve_then_freeze(self) -> Any:
        if self._resolving is None:
            self._resolving = Shared(self._run(self._lookup))
        resolving = self._resolving
        try:
            credentials = await resolving.wait()
        except Exception:
            if self._resolving is resolving:
                self._resolving = None  # try the chain again next time
            raise
        self._credentials = credentials
        return await self._freeze(credentials)

    def _freeze(self, credentials: Any) -> Deferred[Any]:
        if isinstance(credentials, RefreshableCredentials) and credentials.refresh_needed():
            if self._refreshing is None or self._refreshing.done:
                self._refreshing = Shared(self._run(credentials.get_frozen_credentials))
            return self._refreshing.wait()
        try:
            return succeed(credentials.get_frozen_credentials())
        except Exception:
            return fail()
