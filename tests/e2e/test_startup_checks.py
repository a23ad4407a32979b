"""
Start-up checks through the real command line: a bucket that does not exist
is a configuration error (one line, exit status 1); S3 or an auth service
that does not answer yet is said once at start, the server starts anyway,
and says so again when the problem is gone.
"""

from __future__ import annotations

import ftplib
import io
import socket
import uuid
from collections.abc import Callable, Iterator

import _moto
import pytest
from _faultproxy import FaultProxy
from conftest import AUTH, PASSWORD, USER, FTPServer, code, run_twistd

_TRACEBACK = "Traceback (most recent call last)"


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> _moto.MotoServer:
    server = _moto.shared_server()
    server.patch_environment(monkeypatch)
    return server


def test_a_bucket_that_does_not_exist_stops_the_server(moto: _moto.MotoServer) -> None:
    bucket = f"missing-{uuid.uuid4().hex[:12]}"
    ran = run_twistd("-n", "--pidfile=", "exftp", "--port", "tcp:0:interface=127.0.0.1",
                     "--storage", f"s3:bucket={bucket}", "--auth", AUTH)
    assert ran.returncode == 1, ran
    errors = ran.stderr.strip().splitlines()
    assert errors == [f"twistd exftp: error: --storage: the bucket {bucket!r} does not exist at "
                      f"{moto.endpoint} (NoSuchBucket)"], ran.stderr
    assert "listening" not in ran.stdout + ran.stderr
    assert _TRACEBACK not in ran.stdout + ran.stderr


@pytest.fixture
def proxy(moto: _moto.MotoServer) -> Iterator[FaultProxy]:
    host, port = moto.endpoint.removeprefix("http://").split(":")
    forwarder = FaultProxy((host, int(port)))
    yield forwarder
    forwarder.close()


def test_s3_that_does_not_answer_at_start(
    start_server: Callable[..., FTPServer], moto: _moto.MotoServer, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Said once at start, 451 meanwhile, and said again when S3 answers."""
    bucket = moto.new_bucket()
    proxy.down()  # connections refused
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    server = start_server("--storage", f"s3:bucket={bucket}:retries=0:deadline=5", "--auth", AUTH, root_option=False)
    server.wait_for_log(rf"The storage does not work yet, exftp starts anyway: {proxy.endpoint} does not answer")
    with server.login() as client:
        with pytest.raises(ftplib.error_temp) as refused:
            client.storbinary("STOR /early.txt", io.BytesIO(b"x"))
        assert code(refused.value) == 451
    position = server.log_position()
    proxy.up()
    server.wait_for_log("The storage works again", timeout=60, start=position)
    with server.login() as client:
        client.storbinary("STOR /later.txt", io.BytesIO(b"stored"))
    assert moto.s3().get_object(Bucket=bucket, Key="later.txt")["Body"].read() == b"stored"
    assert _TRACEBACK not in server.log()
    assert server.log().count("does not work yet") == 1


def test_refused_s3_credentials_at_start(
    start_server: Callable[..., FTPServer], moto: _moto.MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = moto.new_bucket()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    server = start_server("--storage", f"s3:bucket={bucket}", "--auth", AUTH, root_option=False)
    server.wait_for_log(rf"The storage does not work yet, exftp starts anyway: .*refuses access to the bucket "
                        rf"'{bucket}' \(403 ")
    assert server.alive()
    assert _TRACEBACK not in server.log()


def test_auth_service_that_does_not_answer_at_start(start_server: Callable[..., FTPServer]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there
    server = start_server("--auth", f"webhook:http://127.0.0.1:{port}/login")
    server.wait_for_log(rf"The auth does not work yet, exftp starts anyway: http://127.0.0.1:{port}/login "
                        r"does not answer")
    with pytest.raises(ftplib.error_temp) as refused:
        server.login(USER, PASSWORD)
    assert code(refused.value) == 421
    assert _TRACEBACK not in server.log()
