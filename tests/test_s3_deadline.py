"""
An S3 endpoint that accepts requests and answers nothing, on the default
settings, with a fake clock: every operation ends by its deadline (retries
included), downloads that stop moving end too, and an upload's abort is
left to the journal, which makes it once the endpoint answers again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.credentials import Credentials
from test_storage_contract import RecordingConsumer
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone, ResponseNeverReceived
from twisted.web.http_headers import Headers
from zope.interface import implementer

from exftp import StorageUnavailable
from exftp.storage._s3 import S3Upload, _S3Reader, journal_of
from exftp.storage._s3client import DEFAULT_DEADLINE, MiB, S3Client, S3Config, S3Unreachable
from exftp.storage._s3signing import CredentialSource

#: What the issue asks: a stalled endpoint ends a transfer within this, on the defaults.
LIMIT = 90.0


class _SyncPool:
    """Runs "threaded" work at once (payload hashing), so that a fake clock drives everything."""

    def callInThreadWithCallback(self, on_result: Callable[[bool, object], None], work: Callable[[], object]) -> None:
        on_result(True, work())


class FakeReactor(Clock):
    """A clock with the thread pool and C{callFromThread} that S3 hashing needs."""

    def getThreadPool(self) -> _SyncPool:
        return _SyncPool()

    def callFromThread(self, function: Callable[..., object], *args: object) -> None:
        function(*args)


class _Transport:
    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class FakeResponse:
    """A response whose body is C{body}, ending unless C{endless}."""

    def __init__(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None, endless: bool = False):
        self.code = code
        self.body = body
        self.endless = endless
        self.length = len(body) if not endless else 10 * MiB
        self.headers = Headers({name: [value] for name, value in (headers or {}).items()})

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(_Transport())
        if self.body:
            protocol.dataReceived(self.body)
        if not self.endless:
            protocol.connectionLost(Failure(ResponseDone()))


class StallingHTTP:
    """
    A treq-like client for a bucket: answers like S3 while C{stalled} is
    false, else takes the request and never answers (as an endpoint behind
    a dead link does).
    """

    def __init__(self) -> None:
        self.stalled = False
        self.requests: list[tuple[str, str, bool]] = []

    def request(self, method: str, url: str, **_: Any) -> Deferred[FakeResponse]:
        self.requests.append((method, url, self.stalled))
        if self.stalled:
            return Deferred()
        if method == "POST" and "?uploads" in url:
            body = b"<InitiateMultipartUploadResult><UploadId>u-1</UploadId></InitiateMultipartUploadResult>"
            return Deferred.fromCoroutine(_answer(FakeResponse(200, body)))
        if method == "PUT":
            return Deferred.fromCoroutine(_answer(FakeResponse(200, headers={"ETag": '"e"'})))
        return Deferred.fromCoroutine(_answer(FakeResponse(204)))

    def sent(self, method: str, text: str) -> list[tuple[str, str, bool]]:
        return [found for found in self.requests if found[0] == method and text in found[1]]


async def _answer(response: FakeResponse) -> FakeResponse:
    return response


@implementer(IPushProducer)
class Producer:
    def __init__(self) -> None:
        self.stopped = False

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        self.stopped = True


def _when(clock: Clock, deferred: Deferred[Any], until: float = 400.0) -> float | None:
    """Advance C{clock} a second at a time until C{deferred} fires; the time it did, or C{None}."""
    start = clock.seconds()
    while not deferred.called and clock.seconds() - start < until:
        clock.advance(1)
    return clock.seconds() - start if deferred.called else None


class DeadlineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = FakeReactor()
        self.http = StallingHTTP()
        config = S3Config("bucket", region="us-east-1", endpoint_url="http://s3.test", node="n1")
        credentials = CredentialSource(self.clock, Credentials("AKID", "SECRET"))
        self.client = S3Client(config, self.http, credentials, self.clock)

    def test_defaults(self) -> None:
        """On the defaults, one try may take 60 s and an operation with its retries 75 s."""
        config = self.client.config
        assert (config.request_timeout, config.retries, config.operation_deadline) == (60.0, 4, DEFAULT_DEADLINE)
        assert S3Config("b", request_timeout=120).operation_deadline == 120
        assert S3Config("b", deadline=10).operation_deadline == 10
        with self.assertRaises(ValueError):
            S3Config("b", deadline=0)

    def test_a_stalled_request_ends_by_the_deadline(self) -> None:
        """Not after 5 tries of 60 s (about 300 s): within the deadline, with the try it had time for."""
        self.http.stalled = True
        done = Deferred.fromCoroutine(self.client.head("key"))
        took = _when(self.clock, done)
        assert took is not None and took <= DEFAULT_DEADLINE + 1, took
        self.failureResultOf(done, S3Unreachable)
        assert 2 <= len(self.http.requests) <= 3, self.http.requests

    def test_a_stalled_download_body_ends_by_the_deadline(self) -> None:
        """A body that stops, and whose resumption gets no answer, fails 451 within the deadline."""
        first = FakeResponse(200, b"x" * 1000, {"ETag": '"e"'}, endless=True)

        async def resume(received: int, within: float) -> Any:
            return await self.client.get_stream("key", received, '"e"', within)

        reader = _S3Reader(first, self.clock, 60.0, resume, 4, DEFAULT_DEADLINE)  # type: ignore[arg-type]
        self.http.stalled = True
        consumer = RecordingConsumer()
        done = reader.send(consumer)
        took = _when(self.clock, done)
        assert took is not None and took <= DEFAULT_DEADLINE + 1, took
        self.failureResultOf(done, StorageUnavailable)
        assert bytes(consumer.data) == b"x" * 1000
        assert self.http.sent("GET", "key"), "the rest was asked for once the body stalled"

    def test_a_stalled_part_fails_the_upload_without_waiting_for_the_abort(self) -> None:
        """
        The last part meets the stall: the upload fails by the deadline, not
        after an abort that cannot be answered either; the journal aborts it
        once the endpoint is back.
        """
        journal = journal_of(self.client, self.clock)
        upload = S3Upload(self.client, "big", {}, 5 * MiB, 2, journal)
        producer = Producer()
        upload.registerProducer(producer, True)
        upload.write(b"a" * (5 * MiB))
        assert len(self.http.sent("PUT", "partNumber=1")) == 1 and upload.parts_sent == 1
        self.http.stalled = True
        upload.write(b"b" * 1000)
        finishing = upload.finish()
        took = _when(self.clock, finishing)
        assert took is not None and took <= DEFAULT_DEADLINE + 1, took
        self.failureResultOf(finishing, StorageUnavailable)
        assert self.http.sent("PUT", "partNumber=2")
        assert journal.leftovers == 1
        self.http.stalled = False
        for _ in range(6):  # an abort try that got no answer times out; the next one is answered
            self.clock.advance(60)
        assert journal.leftovers == 0
        assert any(not stalled for _, _, stalled in self.http.sent("DELETE", "uploadId=u-1"))
        assert any(not stalled for _, url, stalled in self.http.sent("DELETE", ".exftp-upload-journal/"))


class _CancellableHTTP(StallingHTTP):
    """A stalled endpoint whose requests fail as Twisted's HTTP client fails a cancelled one."""

    def request(self, method: str, url: str, **_: Any) -> Deferred[FakeResponse]:
        self.requests.append((method, url, True))

        def cancel(waiting: Deferred[FakeResponse]) -> None:
            waiting.errback(ResponseNeverReceived([Failure(CancelledError())]))

        return Deferred(cancel)


class CancelTests(SynchronousTestCase):
    def test_a_cancelled_request_is_not_retried(self) -> None:
        """
        The caller gives up (e.g. a listing whose first page failed drops the
        lookup it ran alongside): the request ends there. It was taken for a
        transient failure and retried in the background until the deadline.
        """
        clock = FakeReactor()
        http = _CancellableHTTP()
        config = S3Config("bucket", region="us-east-1", endpoint_url="http://s3.test", node="n1")
        client = S3Client(config, http, CredentialSource(clock, Credentials("AKID", "SECRET")), clock)
        listing = Deferred.fromCoroutine(client.request("GET", None))
        assert len(http.requests) == 1
        listing.cancel()
        self.failureResultOf(listing, CancelledError)
        clock.advance(120)
        assert len(http.requests) == 1, http.requests
        assert clock.getDelayedCalls() == []

    def test_a_try_that_times_out_is_still_retried(self) -> None:
        clock = FakeReactor()
        http = _CancellableHTTP()
        config = S3Config("bucket", region="us-east-1", endpoint_url="http://s3.test", node="n1", request_timeout=5)
        client = S3Client(config, http, CredentialSource(clock, Credentials("AKID", "SECRET")), clock)
        listing = Deferred.fromCoroutine(client.request("GET", None))
        clock.advance(6)
        clock.advance(3)  # the backoff
        assert len(http.requests) >= 2, http.requests
        listing.cancel()
        self.failureResultOf(listing, CancelledError)
