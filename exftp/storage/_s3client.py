"""
A small S3 client on treq: the requests the S3 storage needs, signed with
SigV4, retried with bounded exponential backoff and jitter, parsed with
C{xml.etree} under a size limit.

Everything here is asynchronous; nothing blocks the reactor thread.
"""

from __future__ import annotations

import math
import os
import random
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn
from urllib.parse import quote, unquote_plus, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from twisted.internet import error as internet_error
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.interfaces import IConsumer
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web._newclient import RequestNotSent
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    PartialDownloadError,
    RequestTransmissionFailed,
    ResponseFailed,
)
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer

from .._cleanup import check_node, default_node
from .._httpclient import quiet_pool, read_body
from ._s3signing import EMPTY_SHA256, CredentialSource, NoCredentials, Payload, chunks_of, payload_hash, sign

_log = Logger(namespace="exftp.s3")

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
#: S3's smallest part (all but the last part of a multipart upload).
MIN_PART_SIZE = 5 * MiB
#: S3's biggest part, single PUT and single CopyObject.
MAX_PART_SIZE = 5 * GiB
#: S3's most parts in one multipart upload.
MAX_PARTS = 10_000
#: The largest XML answer read (a page of 1,000 long keys is well below).
_MAX_XML = 16 * MiB
#: Bytes of a request body handed to the connection at a time.
_BODY_SLICE = 64 * KiB
#: The largest error body read.
_MAX_ERROR_BODY = 64 * KiB

#: Error codes worth another try, whatever the status.
_RETRYABLE_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling", "RequestTimeTooSkewed"}
)
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
#: Transport failures worth another try.
def _timed_out(result: object, timeout: float) -> NoReturn:
    """A try that took its whole time is a timeout, whatever the cancelled request failed with."""
    raise TimeoutError(f"no answer within {timeout:g} s")


def _cancelled(error: BaseException) -> bool:
    """
    Whether C{error} is a request its caller cancelled: Twisted's HTTP client
    fails a cancelled request with a L{ResponseFailed} holding a
    L{CancelledError}, which looks transient and must not be retried.
    """
    reasons = getattr(error, "reasons", None) if isinstance(error, ResponseFailed) else None
    return any(reason.check(CancelledError) for reason in reasons or ())


_TRANSIENT: tuple[type[BaseException], ...] = (
    internet_error.ConnectError,
    internet_error.ConnectionLost,
    internet_error.ConnectionClosed,
    ResponseFailed,
    RequestNotSent,
    RequestTransmissionFailed,
    PartialDownloadError,
    TimeoutError,
)
#: Seconds an S3 operation may take with its retries, unless configured:
#: with the FTP reply that follows, a stalled endpoint fails a transfer
#: within 90 seconds.
DEFAULT_DEADLINE = 75.0
_ADDRESSING = ("auto", "path", "virtual")
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_DNS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Config:
    """
    Where and how the S3 storage keeps its files.

    @ivar bucket: the bucket.
    @ivar prefix: the key prefix that is the FTP root (C{""} for the whole bucket).
    @ivar region: the signing region; from the AWS configuration when C{None},
        else C{us-east-1}.
    @ivar endpoint_url: e.g. C{http://127.0.0.1:9000} (MinIO, Ceph, moto);
        from C{AWS_ENDPOINT_URL_S3} or C{AWS_ENDPOINT_URL} when C{None},
        else AWS itself.
    @ivar addressing: C{path} (C{host/bucket/key}), C{virtual}
        (C{bucket.host/key}) or C{auto}: virtual on AWS for DNS-safe
        names, path-style for other endpoints.
    @ivar part_size: bytes per multipart part, and the largest single PUT
        (5 MiB to 5 GiB). Memory per upload is about
        C{part_size * (parts_in_flight + 1)}.
    @ivar parts_in_flight: parts of one upload sent at the same time.
    @ivar request_timeout: seconds one request may take (for downloads: until the
        answer starts, then between bytes while the client is reading).
    @ivar retries: further tries of a request after a 5xx, SlowDown or a
        connection failure, with exponential backoff and jitter.
    @ivar deadline: seconds one S3 operation may take, its retries and
        backoff included (for downloads: a body that makes no progress),
        so that an endpoint that accepts connections and answers nothing
        fails the transfer in time; C{None} for L{DEFAULT_DEADLINE}, or
        C{request_timeout} when that is longer.
    @ivar rename_limit: the most objects a directory rename moves.
    @ivar max_connections: persistent connections kept open to the endpoint.
    @ivar profile: the AWS shared-config profile for credentials and region.
    @ivar node: this server's node name (1 to 64 of C{A-Za-z0-9._-}; the
        host name by default), stored as C{x-amz-meta-exftp-node} on the
        objects it creates and in the journal of its multipart uploads. It
        must stay the same across restarts, and differ between servers that
        share a bucket (see L{exftp._cleanup}).
    """

    bucket: str
    prefix: str = ""
    region: str | None = None
    endpoint_url: str | None = None
    addressing: str = "auto"
    part_size: int = 8 * MiB
    parts_in_flight: int = 4
    request_timeout: float = 60.0
    retries: int = 4
    deadline: float | None = None
    rename_limit: int = 1000
    max_connections: int = 10
    profile: str | None = None
    node: str = field(default_factory=default_node)

    def __post_init__(self) -> None:
        if not _BUCKET.match(self.bucket):
            raise ValueError(f"invalid bucket name {self.bucket!r}")
        segments = [s for s in self.prefix.split("/") if s]
        if any(s in (".", "..") for s in segments) or "//" in self.prefix.strip("/"):
            raise ValueError(f"invalid prefix {self.prefix!r}: empty, '.' or '..' segments")
        object.__setattr__(self, "prefix", "".join(s + "/" for s in segments))
        if self.addressing not in _ADDRESSING:
            raise ValueError(f"addressing must be path, virtual or auto, not {self.addressing!r}")
        if not MIN_PART_SIZE <= self.part_size <= MAX_PART_SIZE:
            raise ValueError(f"part_size must be between 5 MiB ({MIN_PART_SIZE}) and 5 GiB, not {self.part_size}")
        if self.parts_in_flight < 1:
            raise ValueError("parts_in_flight must be at least 1")
        if self.request_timeout <= 0:
            raise ValueError("request_timeout must be positive")
        if self.retries < 0:
            raise ValueError("retries must not be negative")
        if self.deadline is not None and not 0 < self.deadline < math.inf:
            raise ValueError("deadline must be a positive number of seconds")
        if self.rename_limit < 1:
            raise ValueError("rename_limit must be at least 1")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        check_node(self.node)
        if self.endpoint_url is not None:
            parts = urlsplit(self.endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
                raise ValueError(f"endpoint must be an http:// or https:// URL, not {self.endpoint_url!r}")

    @property
    def operation_deadline(self) -> float:
        """The seconds one operation may take, retries included (see C{deadline})."""
        if self.deadline is not None:
            return self.deadline
        return max(DEFAULT_DEADLINE, self.request_timeout)

    def with_environment(self, environ: Mapping[str, str] | None = None) -> S3Config:
        """
        Fill the endpoint and region from the standard AWS settings.

        The endpoint comes from C{AWS_ENDPOINT_URL_S3} or C{AWS_ENDPOINT_URL}
        (unless C{AWS_IGNORE_CONFIGURED_ENDPOINT_URLS} is true); the region
        from C{AWS_REGION}, C{AWS_DEFAULT_REGION}, the shared config file
        (through botocore), else C{us-east-1}. May read files: call it
        before the reactor runs.
        """
        env = os.environ if environ is None else environ
        endpoint = self.endpoint_url
        ignore = env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true"
        if endpoint is None and not ignore:
            endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
        region = self.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        if not region:
            from botocore.session import Session as BotocoreSession  # type: ignore[import-untyped]

            region = BotocoreSession(profile=self.profile).get_config_variable("region") or "us-east-1"
        return replace(self, endpoint_url=endpoint, region=region)


@dataclass(frozen=True)
class ObjectInfo:
    """
    One object: its key, size, modification time and ETag; from HEAD also
    its content type and user metadata (C{x-amz-meta-*}, names in lower case).
    """

    key: str
    size: int
    mtime: float
    etag: str = ""
    content_type: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ListPage:
    """One page of ListObjectsV2: objects, common prefixes, and the token for the next page."""

    objects: Sequence[ObjectInfo]
    prefixes: Sequence[str]
    next_token: str | None


class S3Error(Exception):
    """
    S3 answered with an error.

    @ivar status: the HTTP status (200 for errors S3 reports in a 200 body).
    @ivar code: S3's error code, e.g. C{NoSuchKey}, C{SlowDown}.
    """

    def __init__(self, status: int, code: str, message: str = "") -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"{status} {code}: {message}" if message else f"{status} {code}")

    @property
    def retryable(self) -> bool:
        """Whether another try may succeed."""
        return self.status in _RETRYABLE_STATUS or self.code in _RETRYABLE_CODES


class S3Unreachable(Exception):
    """The endpoint could not be reached, or kept failing, after every retry or past the deadline."""


def unreachable(error: BaseException | None) -> bool:
    """Whether C{error}, or what caused it, says that the endpoint is not answering."""
    while error is not None:
        if isinstance(error, S3Unreachable):
            return True
        error = error.__cause__
    return False


@implementer(IBodyProducer)
class _Body:
    """
    A request body that is all in memory, written in slices as the
    connection takes them, so that the transport never holds a second copy
    of a whole part.
    """

    def __init__(self, data: Payload) -> None:
        self._chunks = deque(chunks_of(data))
        self.length = sum(map(len, self._chunks))
        self._consumer: IConsumer | None = None
        self._done: Deferred[None] | None = None
        self._offset = 0
        self._paused = False
        self._stopped = False

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        self._done = Deferred()
        self._write()
        return self._done

    def _write(self) -> None:
        chunks = self._chunks
        while not (self._paused or self._stopped) and chunks:
            chunk = chunks[0]
            piece = chunk[self._offset : self._offset + _BODY_SLICE]  # the chunk itself when it is small
            self._offset += len(piece)
            if self._offset >= len(chunk):
                chunks.popleft()
                self._offset = 0
            if piece:
                assert self._consumer is not None
                self._consumer.write(piece)
        if not chunks and not self._stopped and self._done is not None and not self._done.called:
            self._release()
            self._done.callback(None)

    def _release(self) -> None:
        # The connection, cached by the pool, keeps its last request and so
        # this producer: let go of the bytes (a retry makes a new producer).
        self._chunks = deque()
        self._consumer = None

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._write()

    def stopProducing(self) -> None:
        # The Deferred of startProducing must then never fire.
        self._stopped = True
        self._release()


def discard_body(response: IResponse) -> None:
    """Drop a response body without reading it (closing its connection)."""

    class _Drop(Protocol):
        def connectionMade(self) -> None:
            self.transport.stopProducing()  # type: ignore[union-attr]

    response.deliverBody(_Drop())


def _parse_xml(body: bytes) -> ElementTree.Element:
    try:
        return ElementTree.fromstring(body)
    except ElementTree.ParseError as error:
        raise S3Error(200, "MalformedXML", f"unreadable answer from S3: {error}") from None


def _text(element: ElementTree.Element, tag: str, default: str = "") -> str:
    found = element.findtext("{*}" + tag)
    if found is None:
        found = element.findtext(tag)
    return default if found is None else found


def _error_from(status: int, body: bytes) -> S3Error:
    code, message = "", ""
    if body:
        try:
            root = ElementTree.fromstring(body)
            code, message = _text(root, "Code"), _text(root, "Message")
        except ElementTree.ParseError:
            pass
    if not code:
        code = {403: "AccessDenied", 404: "NotFound", 412: "PreconditionFailed"}.get(status, f"HTTP{status}")
    return S3Error(status, code, message)


def _iso_time(text: str) -> float:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def _http_time(text: str | None) -> float:
    if not text:
        return 0.0
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError):
        return 0.0


def _header(response: IResponse, name: str) -> str | None:
    values = response.headers.getRawHeaders(name.encode("ascii"))
    return values[0].decode("latin-1") if values else None


def _metadata_headers(metadata: Mapping[str, str]) -> dict[str, str]:
    return {f"x-amz-meta-{name}": value for name, value in metadata.items()}


class S3Client:
    """
    The S3 requests of one bucket.

    @param config: the bucket, endpoint and limits (endpoint and region resolved).
    @param http: a treq C{HTTPClient}.
    @param credentials: where signing keys come from.
    @param reactor: for timeouts, backoff and the hashing thread pool.
    @param rng: the source of backoff jitter.
    """

    def __init__(
        self,
        config: S3Config,
        http: Any,
        credentials: CredentialSource,
        reactor: Any,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._http = http
        self._credentials = credentials
        self._reactor = reactor
        self._random = rng or random.Random()
        self._region = config.region or "us-east-1"
        self._base, self._bucket_path = self._base_url(config)
        #: Backoff base and ceiling, in seconds.
        self.backoff_base = 0.1
        self.backoff_cap = 5.0
        #: Called after every request that S3 answered with success (the
        #: upload journal retries its failed aborts then).
        self.on_success: Callable[[], None] | None = None

    @staticmethod
    def _base_url(config: S3Config) -> tuple[str, str]:
        """The URL that keys are appended to, and the path that names the bucket itself."""
        region = config.region or "us-east-1"
        endpoint = config.endpoint_url or f"https://s3.{region}.amazonaws.com"
        parts = urlsplit(endpoint)
        path = parts.path.rstrip("/")
        addressing = config.addressing
        if addressing == "auto":
            dns_safe = _DNS_BUCKET.match(config.bucket) is not None
            addressing = "virtual" if config.endpoint_url is None and dns_safe else "path"
        if addressing == "virtual":
            return f"{parts.scheme}://{config.bucket}.{parts.netloc}{path}", "/"
        return f"{parts.scheme}://{parts.netloc}{path}/{quote(config.bucket, safe='')}", ""

    def url(self, key: str | None, query: Iterable[tuple[str, str]] = ()) -> str:
        """The URL of C{key} (or of the bucket, for C{None}) with a query."""
        path = "/" + quote(key, safe="/~") if key is not None else self._bucket_path
        text = "&".join(f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}" for name, value in query)
        return self._base + path + ("?" + text if text else "")

    # The request machinery

    async def request(
        self,
        method: str,
        key: str | None,
        *,
        query: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        body: Payload | None = None,
        limit: int = _MAX_XML,
        stream: bool = False,
        error_in_body: bool = False,
        within: float | None = None,
    ) -> tuple[IResponse, bytes]:
        """
        Send a request, retrying transient failures until the deadline.

        Each try may take C{request_timeout} seconds, and all of them with
        their backoff at most C{within} seconds, or the configured deadline.

        @param body: the payload of a PUT or POST, whole or in chunks.
        @param limit: the largest body read from a successful answer.
        @param stream: return as soon as a successful answer starts, without
            reading its body (the caller must read or discard it).
        @param error_in_body: the answer may be a 200 holding an C{<Error>}
            (CopyObject, UploadPartCopy, CompleteMultipartUpload).
        @param within: a shorter deadline, in seconds from now.
        @return: the response and its body (C{b""} when streaming).
        @raise S3Error: S3 refused, or kept failing.
        @raise S3Unreachable: the endpoint kept failing at the transport level.
        """
        url = self.url(key, query)
        digest = EMPTY_SHA256 if not body else await payload_hash(self._reactor, body)
        allowed = self.config.operation_deadline if within is None else min(within, self.config.operation_deadline)
        deadline = self._reactor.seconds() + allowed
        attempt = 0
        while True:
            left = deadline - self._reactor.seconds()
            try:
                if left <= 0:
                    raise TimeoutError(f"no answer within {allowed:g} s")
                one = Deferred.fromCoroutine(
                    self._attempt(method, url, dict(headers or {}), body, digest, limit, stream, error_in_body)
                )
                answer = await one.addTimeout(
                    min(self.config.request_timeout, left), self._reactor, onTimeoutCancel=_timed_out
                )
                if self.on_success is not None:
                    self.on_success()
                return answer
            except S3Error as error:
                if not error.retryable or attempt >= self.config.retries or self._past(deadline):
                    raise
                why: object = error
            except NoCredentials as error:
                raise S3Unreachable(str(error)) from error
            except _TRANSIENT as error:
                if _cancelled(error):  # the caller gave up: no retry, nothing left running
                    raise CancelledError() from error
                if attempt >= self.config.retries or self._past(deadline):
                    raise S3Unreachable(f"{method} {url}: {error}") from error
                why = error
            delay = self._random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**attempt))
            delay = min(delay, max(0.0, deadline - self._reactor.seconds()))
            attempt += 1
            _log.info(
                "S3 {method} {url} failed ({why}); try {attempt} of {retries} in {delay:.2f}s",
                method=method,
                url=url,
                why=str(why),
                attempt=attempt,
                retries=self.config.retries,
                delay=delay,
            )
            await deferLater(self._reactor, delay)

    def _past(self, deadline: float) -> bool:
        return bool(self._reactor.seconds() >= deadline)

    async def _attempt(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: Payload | None,
        digest: str,
        limit: int,
        stream: bool,
        error_in_body: bool,
    ) -> tuple[IResponse, bytes]:
        credentials = await self._credentials.frozen()
        signed = sign(credentials, self._region, method, url, headers, digest)
        producer = _Body(body or b"") if method in ("PUT", "POST") or body else None
        response: IResponse = await self._http.request(
            method,
            url,
            headers={name: [value] for name, value in signed.items()},
            data=producer,
            unbuffered=True,
            allow_redirects=False,
        )
        if response.code >= 300:
            error_body = b"" if method == "HEAD" else await read_body(response, _MAX_ERROR_BODY)
            raise _error_from(response.code, error_body)
        if stream:
            return response, b""
        data = await read_body(response, limit)
        if error_in_body and data:
            root = _parse_xml(data)
            if root.tag.rpartition("}")[2] == "Error":
                raise _error_from(200, data)
        return response, data

    # Objects

    async def head(self, key: str) -> ObjectInfo | None:
        """The object C{key}, or C{None} when there is none."""
        try:
            response, _ = await self.request("HEAD", key)
        except S3Error as error:
            if error.status == 404:
                return None
            raise
        length = _header(response, "Content-Length") or "0"
        metadata = {}
        for name, values in response.headers.getAllRawHeaders():
            lower = name.decode("latin-1").lower()
            if lower.startswith("x-amz-meta-") and values:
                metadata[lower[len("x-amz-meta-") :]] = values[0].decode("latin-1")
        return ObjectInfo(
            key,
            int(length) if length.isdigit() else 0,
            _http_time(_header(response, "Last-Modified")),
            _header(response, "ETag") or "",
            _header(response, "Content-Type"),
            metadata,
        )

    async def get_stream(
        self, key: str, offset: int = 0, etag: str | None = None, within: float | None = None
    ) -> IResponse | None:
        """
        Start downloading C{key} from byte C{offset}.

        @param etag: the ETag the object must still have (to resume a download).
        @param within: a deadline shorter than the configured one (seconds).
        @return: the response, whose body the caller reads or discards; or
            C{None} when C{offset} is at or past the end of the object.
        @raise S3Error: with status 404 when there is no such object, 412
            when it no longer has C{etag}.
        """
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        if etag:
            headers["If-Match"] = etag
        try:
            response, _ = await self.request(
                "GET",
                key,
                query=[("response-content-encoding", "identity")],
                headers=headers,
                stream=True,
                within=within,
            )
        except S3Error as error:
            if error.status == 416:
                return None
            raise
        return response

    async def get_bytes(self, key: str, first: int, last: int, etag: str | None = None) -> bytes:
        """Bytes C{first} to C{last} (inclusive) of C{key}, if it still has ETag C{etag}."""
        headers = {"Range": f"bytes={first}-{last}"}
        if etag:
            headers["If-Match"] = etag
        _, data = await self.request("GET", key, headers=headers, limit=last - first + 1)
        return data

    async def put(self, key: str, data: Payload, metadata: Mapping[str, str] | None = None) -> str:
        """Store C{data} (bytes or chunks of them) as C{key}; its ETag."""
        response, _ = await self.request("PUT", key, headers=_metadata_headers(metadata or {}), body=data)
        return _header(response, "ETag") or ""

    async def delete(self, key: str) -> None:
        """Delete C{key} (S3 answers success whether or not it existed)."""
        await self.request("DELETE", key)

    def _copy_source(self, key: str) -> str:
        return quote(f"{self.config.bucket}/{key}", safe="/~")

    async def copy(
        self,
        source: str,
        destination: str,
        etag: str | None = None,
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> None:
        """
        Copy one object of at most 5 GiB on the server side.

        @param metadata: the copy's user metadata; the source's when C{None}.
        @param content_type: the copy's content type, with new C{metadata}.
        """
        headers = {"x-amz-copy-source": self._copy_source(source)}
        if etag:
            headers["x-amz-copy-source-if-match"] = etag
        if metadata is not None:
            headers["x-amz-metadata-directive"] = "REPLACE"
            headers.update(_metadata_headers(metadata))
            if content_type:
                headers["Content-Type"] = content_type
        await self.request("PUT", destination, headers=headers, error_in_body=True)

    # Listing

    async def list_page(
        self,
        prefix: str,
        *,
        delimiter: str | None = "/",
        token: str | None = None,
        max_keys: int = 1000,
    ) -> ListPage:
        """One page of the keys under C{prefix} (ListObjectsV2)."""
        query = [("list-type", "2"), ("prefix", prefix), ("encoding-type", "url"), ("max-keys", str(max_keys))]
        if delimiter:
            query.append(("delimiter", delimiter))
        if token:
            query.append(("continuation-token", token))
        _, data = await self.request("GET", None, query=query)
        root = _parse_xml(data)
        encoded = _text(root, "EncodingType") == "url"

        def decode(text: str) -> str:
            return unquote_plus(text) if encoded else text

        objects = [
            ObjectInfo(
                decode(_text(item, "Key")),
                int(_text(item, "Size", "0") or 0),
                _iso_time(_text(item, "LastModified")),
                _text(item, "ETag"),
            )
            for item in root.iterfind("{*}Contents")
        ]
        prefixes = [decode(_text(item, "Prefix")) for item in root.iterfind("{*}CommonPrefixes")]
        truncated = _text(root, "IsTruncated").lower() == "true"
        next_token = _text(root, "NextContinuationToken") or None
        return ListPage(objects, prefixes, next_token if truncated else None)

    # Multipart uploads

    async def create_multipart(self, key: str, metadata: Mapping[str, str] | None = None) -> str:
        """Start a multipart upload of C{key}; its upload id."""
        _, data = await self.request(
            "POST", key, query=[("uploads", "")], headers=_metadata_headers(metadata or {}), body=b""
        )
        upload_id = _text(_parse_xml(data), "UploadId")
        if not upload_id:
            raise S3Error(200, "MalformedXML", "no UploadId in CreateMultipartUpload answer")
        return upload_id

    async def upload_part(self, key: str, upload_id: str, number: int, data: Payload) -> str:
        """Send part C{number} (bytes or chunks of them); its ETag."""
        response, _ = await self.request(
            "PUT", key, query=[("partNumber", str(number)), ("uploadId", upload_id)], body=data
        )
        etag = _header(response, "ETag")
        if not etag:
            raise S3Error(200, "MissingETag", f"no ETag for part {number}")
        return etag

    async def upload_part_copy(
        self, key: str, upload_id: str, number: int, source: str, first: int, last: int, etag: str | None = None
    ) -> str:
        """Make part C{number} from bytes C{first}..C{last} of the object C{source}; its ETag."""
        headers = {"x-amz-copy-source": self._copy_source(source), "x-amz-copy-source-range": f"bytes={first}-{last}"}
        if etag:
            headers["x-amz-copy-source-if-match"] = etag
        _, data = await self.request(
            "PUT",
            key,
            query=[("partNumber", str(number)), ("uploadId", upload_id)],
            headers=headers,
            error_in_body=True,
        )
        part_etag = _text(_parse_xml(data), "ETag")
        if not part_etag:
            raise S3Error(200, "MissingETag", f"no ETag for copied part {number}")
        return part_etag

    async def complete_multipart(self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]) -> None:
        """Assemble the parts (sorted by number) into the object C{key}."""
        rows = "".join(
            f"<Part><PartNumber>{number}</PartNumber><ETag>{escape(etag)}</ETag></Part>"
            for number, etag in sorted(parts)
        )
        body = f"<CompleteMultipartUpload>{rows}</CompleteMultipartUpload>".encode()
        await self.request(
            "POST",
            key,
            query=[("uploadId", upload_id)],
            headers={"Content-Type": "application/xml"},
            body=body,
            error_in_body=True,
        )

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Discard a multipart upload and its parts (already gone is fine)."""
        try:
            await self.request("DELETE", key, query=[("uploadId", upload_id)])
        except S3Error as error:
            if error.status != 404:
                raise


def default_http_client(reactor: Any, config: S3Config) -> tuple[Any, HTTPConnectionPool]:
    """
    A treq C{HTTPClient} on a pool of persistent connections.

    @return: the client and its pool (close the pool's cached connections on shutdown).
    """
    from treq.client import HTTPClient

    pool = quiet_pool(reactor, config.max_connections)
    agent = Agent(reactor, pool=pool, connectTimeout=config.request_timeout)
    return HTTPClient(agent), pool
