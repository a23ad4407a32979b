"""
Shared by the client-library interop suites (PyFilesystem2, fsspec, ftputil):
one C{twistd exftp} on a directory and one on an S3 bucket (moto's server),
a fresh directory of its own for every test, and a table of the tests that
are expected to fail, each with its root cause.

A test listed in an expectation table is marked C{xfail(strict=True)} when
the cause is a server bug (so that it turns red the day the bug is fixed,
and the marker must go), or skipped when the storage cannot hold what the
test needs (S3: permissions, symbolic links).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import _moto
import pytest
from conftest import AUTH, FTPServer

FILE, S3 = "file", "s3"
BACKENDS = (FILE, S3)


@dataclass(frozen=True)
class Expect:
    """
    Why a test cannot pass on some backends.

    @ivar reason: the root cause, in one line.
    @ivar backends: where it applies.
    @ivar bug: a server bug (xfail, strict), or else a limit of the storage (skip).
    """

    reason: str
    backends: tuple[str, ...] = BACKENDS
    bug: bool = True


def bug(reason: str, *backends: str) -> Expect:
    """A server bug, on C{backends} (all when none are named)."""
    return Expect(reason, backends or BACKENDS)


def cannot(reason: str, *backends: str) -> Expect:
    """Something the storage cannot hold, on C{backends}."""
    return Expect(reason, backends or BACKENDS, bug=False)


#: Test name to what is expected of it: one L{Expect}, or several for different backends.
Expectations = Mapping[str, Expect | tuple[Expect, ...]]


def apply_expectation(request: pytest.FixtureRequest, name: str, backend: str, table: Expectations) -> None:
    """Mark or skip the running test by its entry in C{table}, if it has one for C{backend}."""
    entry = table.get(name, ())
    for expected in entry if isinstance(entry, tuple) else (entry,):
        if backend not in expected.backends:
            continue
        if not expected.bug:
            pytest.skip(f"{backend}: {expected.reason}")
        request.applymarker(pytest.mark.xfail(strict=True, reason=expected.reason))


@dataclass
class Backend:
    """
    A running server and how to find what it stores.

    @ivar kind: L{FILE} or L{S3}.
    @ivar server: the C{twistd exftp} process.
    @ivar local: for L{FILE}, the directory it serves.
    """

    kind: str
    server: FTPServer
    local: Path | None = None
    moto: _moto.MotoServer | None = None
    bucket: str = ""

    def fresh_directory(self) -> str:
        """A new, empty directory on the server, e.g. C{/t-1a2b3c4d} (made with MKD)."""
        name = f"t-{uuid.uuid4().hex[:8]}"
        with self.server.login() as client:
            client.mkd(name)
        return "/" + name

    def read(self, path: str) -> bytes | None:
        """What the storage holds at C{path} (absolute), read behind the server's back; None if nothing."""
        if self.local is not None:
            target = self.local / path.lstrip("/")
            return target.read_bytes() if target.is_file() else None
        assert self.moto is not None
        s3 = self.moto.s3()
        try:
            data: bytes = s3.get_object(Bucket=self.bucket, Key=path.lstrip("/"))["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None
        return data

    def write(self, path: str, data: bytes) -> None:
        """Store C{data} at C{path} (absolute, in an existing directory) behind the server's back."""
        if self.local is not None:
            (self.local / path.lstrip("/")).write_bytes(data)
            return
        assert self.moto is not None
        self.moto.s3().put_object(Bucket=self.bucket, Key=path.lstrip("/"), Body=data)

    def remove(self, path: str) -> None:
        """Remove a directory made by L{fresh_directory}, behind the server's back."""
        name = path.strip("/")
        if self.local is not None:
            shutil.rmtree(self.local / name, ignore_errors=True)
            return
        assert self.moto is not None
        s3 = self.moto.s3()
        listed = s3.list_objects_v2(Bucket=self.bucket, Prefix=name + "/")
        while True:
            keys = [{"Key": item["Key"]} for item in listed.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
            if not listed.get("IsTruncated"):
                break
            listed = s3.list_objects_v2(
                Bucket=self.bucket, Prefix=name + "/", ContinuationToken=listed["NextContinuationToken"]
            )


def start_backend(kind: str, start_server: Callable[..., FTPServer], *options: str) -> Backend:
    """Start an exftp server of C{kind}, with C{options} added to its command line."""
    if kind == FILE:
        server = start_server("--auth", AUTH, *options)
        return Backend(kind, server, local=server.root)
    moto = _moto.shared_server()
    bucket = moto.new_bucket()
    with pytest.MonkeyPatch.context() as patch:
        moto.patch_environment(patch)
        server = start_server("--storage", f"s3:bucket={bucket}", "--auth", AUTH, *options, root_option=False)
    return Backend(kind, server, moto=moto, bucket=bucket)


def stop_check(started: Backend) -> None:
    """Fail unless the server of C{started} is still running."""
    assert started.server.alive(), f"the {started.kind} server died:\n{started.server.log()}"
