"""
A real S3 endpoint for tests: moto's server as a subprocess on a free
loopback port, with signature checking on.

moto checks SigV4 signatures once C{INITIAL_NO_AUTH_ACTION_COUNT} requests
have been served. The first six create two IAM users (one may do anything
in S3, one may only read), their policies and their access keys; every
request after that must be signed with one of those keys, so a wrong
signature fails the tests.

One fix is applied to moto in its process: it recomputes signatures from
werkzeug's re-quoted URL, in which C{%2F} in a query value has become C{/},
so every correctly signed request with C{prefix=dir%2F} (boto3's too) fails.
The server here checks against the URI exactly as sent (C{RAW_URI}), as S3 does.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from typing import Any

import boto3
from botocore.config import Config

HOST = "127.0.0.1"
REGION = "us-east-1"
#: Requests moto serves before it checks signatures: user, policy and key, twice.
_UNAUTHENTICATED = 6
#: Read-only in S3's IAM terms (AWS's own AmazonS3ReadOnlyAccess is C{Get*} and C{List*}). Head* is no IAM
#: action in S3, but some moto releases check HeadObject and ListObjectsV2 under their operation names
#: rather than under s3:GetObject and s3:ListBucket: the wildcards hold for both, and grant no write.
_READ_ONLY = ["s3:Get*", "s3:List*", "s3:Head*"]
_DEADLINE = 60.0

#: Runs moto's server, checking signatures against the request URI as sent.
_BOOT = """
import sys
from urllib.parse import urlsplit
from moto.core import responses

_setup_class = responses.BaseResponse.setup_class

def setup_class(self, request, full_url, headers, *args, **kwargs):
    result = _setup_class(self, request, full_url, headers, *args, **kwargs)
    raw = getattr(request, "environ", {}).get("RAW_URI")
    if raw:
        parts = urlsplit(full_url)
        self.uri = f"{parts.scheme}://{parts.netloc}{raw}"
    return result

responses.BaseResponse.setup_class = setup_class

from moto.server import main
main(sys.argv[1:])
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class MotoServer:
    """
    One moto server and the IAM key that may use it.

    @ivar endpoint: e.g. C{http://127.0.0.1:40123}.
    @ivar access_key: the IAM user's access key id.
    @ivar secret_key: its secret.
    @ivar reader_key: the access key and secret of a user who may only read.
    """

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.endpoint = ""
        self.access_key = ""
        self.secret_key = ""
        self.reader_key = ("", "")

    def start(self) -> MotoServer:
        for _ in range(5):
            port = _free_port()
            env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(_UNAUTHENTICATED), MOTO_PORT=str(port))
            for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "HTTP_PROXY", "HTTPS_PROXY"):
                env.pop(name, None)
            self.process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, "-H", HOST, "-p", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.endpoint = f"http://{HOST}:{port}"
            if self._wait_ready():
                break
            self.stop()
        else:
            raise RuntimeError("moto server did not start")
        self._create_key()
        return self

    def _wait_ready(self) -> bool:
        """Poll moto's own API (which does not count as an action) until it answers."""
        deadline = time.monotonic() + _DEADLINE
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2) as answer:
                    if answer.status == 200:
                        return True
            except OSError:
                time.sleep(0.05)
        return False

    def _create_key(self) -> None:
        iam = boto3.client(
            "iam",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
        )
        self.access_key, self.secret_key = self._user(iam, "exftp", "s3:*")
        self.reader_key = self._user(iam, "reader", _READ_ONLY)

    @staticmethod
    def _user(iam: Any, name: str, actions: str | list[str]) -> tuple[str, str]:
        iam.create_user(UserName=name)
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
        iam.put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def s3(self) -> Any:
        """A boto3 S3 client with the IAM key: the independent view of what landed."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def new_bucket(self) -> str:
        """A fresh, empty bucket."""
        name = f"exftp-{uuid.uuid4().hex[:16]}"
        self.s3().create_bucket(Bucket=name)
        return name

    def environment(self) -> dict[str, str]:
        """The AWS variables that point a process at this server with this key."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
        }

    def patch_environment(self, patch: Any) -> None:
        """
        Through C{patch} (a pytest C{MonkeyPatch}), point the AWS variables of
        processes started from here at this server: L{environment}, no
        profile, region or general endpoint of the caller's, no EC2 metadata.
        """
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_REGION"):
            patch.delenv(name, raising=False)
        for name, value in self.environment().items():
            patch.setenv(name, value)
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")


_shared: MotoServer | None = None


def shared_server() -> MotoServer:
    """The moto server of this test process, started on first use and stopped at exit."""
    global _shared
    if _shared is None or _shared.process is None or _shared.process.poll() is not None:
        _shared = MotoServer().start()
        atexit.register(_shared.stop)
    return _shared
