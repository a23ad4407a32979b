"""
End to end on S3: C{twistd -n exftp --storage s3:bucket=B} against moto's
server with signature checking on, its endpoint and key given the standard
way (C{AWS_ENDPOINT_URL_S3}, C{AWS_ACCESS_KEY_ID}, ...), driven by ftplib,
curl and lftp, and checked with boto3.
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import shutil
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _moto
import pytest
from _interop import make_tree, need, set_mtimes
from conftest import AUTH, PASSWORD, USER, FTPServer, code, list_lines, retr_bytes, rss_kib, wait_until
from test_interop_rclone import obscured, rclone, remote  # noqa: F401 (obscured: a fixture)

MiB = 1024 * 1024
#: The default part size of the S3 storage.
PART = 8 * MiB


class S3Server:
    """An exftp server on a bucket of its own, and a boto3 view of that bucket."""

    def __init__(self, server: FTPServer, moto: _moto.MotoServer, bucket: str) -> None:
        self.server = server
        self.bucket = bucket
        self.s3 = moto.s3()

    def get(self, key: str) -> bytes | None:
        try:
            data: bytes = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        return data

    def head(self, key: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.s3.head_object(Bucket=self.bucket, Key=key)
        except self.s3.exceptions.ClientError:
            return None
        return found

    def keys(self, prefix: str = "") -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def uploads(self, key: str | None = None) -> list[dict[str, Any]]:
        found = self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        return [upload for upload in found if key is None or upload["Key"] == key]

    def parts(self, key: str) -> int:
        for upload in self.uploads(key):
            listed = self.s3.list_parts(Bucket=self.bucket, Key=key, UploadId=upload["UploadId"])
            return len(listed.get("Parts", []))
        return 0


@pytest.fixture(scope="module")
def s3(start_server: Any) -> Iterator[S3Server]:
    """One exftp server on one bucket for this module."""
    moto = _moto.shared_server()
    bucket = moto.new_bucket()
    with pytest.MonkeyPatch.context() as patch:
        moto.patch_environment(patch)
        server = start_server("--storage", f"s3:bucket={bucket}", "--auth", AUTH, root_option=False)
    yield S3Server(server, moto, bucket)
    assert server.alive(), f"the S3 server died during the tests:\n{server.log()}"


@pytest.fixture
def area(s3: S3Server, request: pytest.FixtureRequest) -> str:
    """A fresh directory for one test, e.g. C{t-1a2b3c}."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    with s3.server.login() as client:
        client.mkd(name)
    return name


def pattern(index: int) -> bytes:
    """1 MiB of test data that differs for every index."""
    return hashlib.sha256(index.to_bytes(8, "big")).digest() * (MiB // 32)


def test_commands(s3: S3Server, area: str) -> None:
    with s3.server.login() as client:
        client.cwd(area)
        client.mkd("sub")
        client.storbinary("STOR a.txt", io.BytesIO(b"hello world"))
        assert client.size("a.txt") == 11
        for command in ("SIZE a", "SIZE a.tx", "DELE a", "RETR a", "CWD a.txt", "RMD nothing"):
            with pytest.raises(ftplib.error_perm) as refused:
                client.sendcmd(command)
            assert code(refused.value) == 550, command
        assert sorted(client.nlst()) in (["a.txt", "sub"], [f"{area}/a.txt", f"{area}/sub"])
        names = sorted(line.split()[-1] for line in list_lines(client))
        assert names == ["a.txt", "sub"]
        assert client.sendcmd("MDTM a.txt").startswith("213 ")
        assert retr_bytes(client, "a.txt") == b"hello world"
        chunks: list[bytes] = []
        client.retrbinary("RETR a.txt", chunks.append, rest=6)
        assert b"".join(chunks) == b"world"
        client.storbinary("APPE a.txt", io.BytesIO(b"!"))
        assert client.sendcmd("MFMT 20200102030405 a.txt").startswith("213 ")
        client.rename("a.txt", "sub/b.txt")
        assert client.sendcmd("MDTM sub/b.txt") == "213 20200102030405"
        with pytest.raises(ftplib.error_perm) as refused:
            client.rmd("sub")
        assert code(refused.value) == 550
        client.cwd("sub")
        assert client.pwd() == f"/{area}/sub"
    assert s3.keys(area) == [f"{area}/", f"{area}/sub/", f"{area}/sub/b.txt"]
    assert s3.get(f"{area}/sub/b.txt") == b"hello world!"
    head = s3.head(f"{area}/sub/b.txt")
    assert head is not None and "exftp-node" in head["Metadata"]
    with s3.server.login() as client:
        client.delete(f"{area}/sub/b.txt")
        client.rmd(f"{area}/sub")
    assert s3.keys(area) == [f"{area}/"]


def test_directories_persist_across_sessions(s3: S3Server, area: str) -> None:
    with s3.server.login() as client:
        client.mkd(f"{area}/empty")
    with s3.server.login() as client:
        client.cwd(f"{area}/empty")
        assert list_lines(client) == []
        client.cwd("..")
        assert [line.split()[-1] for line in list_lines(client)] == ["empty"]
    assert s3.head(f"{area}/empty/") is not None


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_upload_and_download(s3: S3Server, area: str, tmp_path: Path) -> None:
    source = tmp_path / "up.bin"
    data = b"".join(pattern(index) for index in range(3)) + b"tail"
    source.write_bytes(data)
    url = f"ftp://127.0.0.1:{s3.server.port}/{area}/curl/up.bin"
    common = ["curl", "--silent", "--show-error", "--max-time", "60", "--noproxy", "*", "--user", f"{USER}:{PASSWORD}"]
    subprocess.run([*common, "--ftp-create-dirs", "-T", str(source), url], check=True, timeout=90)
    assert s3.get(f"{area}/curl/up.bin") == data
    fetched = subprocess.run([*common, url], check=True, capture_output=True, timeout=90).stdout
    assert fetched == data
    listing = subprocess.run([*common, "--list-only", url.rsplit("/", 1)[0] + "/"], check=True,
                             capture_output=True, timeout=90).stdout  # fmt: skip
    assert listing.split() == [b"up.bin"]


@pytest.mark.skipif(shutil.which("lftp") is None, reason="lftp is not installed")
def test_lftp_mirror_there_and_back(s3: S3Server, area: str, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "one" / "two").mkdir(parents=True)
    (tree / "top.txt").write_bytes(b"top")
    (tree / "one" / "mid.bin").write_bytes(pattern(7))
    (tree / "one" / "two" / "deep.txt").write_bytes(b"deep")
    (tree / "empty").mkdir()
    site = f"open -u {USER},{PASSWORD} ftp://127.0.0.1:{s3.server.port}; set cmd:fail-exit yes; set net:max-retries 1"
    subprocess.run(["lftp", "-c", f"{site}; mirror -R {tree} /{area}/tree"], check=True, timeout=120)
    assert s3.keys(f"{area}/tree/") == sorted(
        [f"{area}/tree/", f"{area}/tree/empty/", f"{area}/tree/one/", f"{area}/tree/one/mid.bin",
         f"{area}/tree/one/two/", f"{area}/tree/one/two/deep.txt", f"{area}/tree/top.txt"]
    )  # fmt: skip
    back = tmp_path / "back"
    subprocess.run(["lftp", "-c", f"{site}; mirror /{area}/tree {back}"], check=True, timeout=120)
    for path in tree.rglob("*"):
        mirrored = back / path.relative_to(tree)
        assert mirrored.exists(), mirrored
        if path.is_file():
            assert mirrored.read_bytes() == path.read_bytes()


def test_100_mib_upload_streams_part_by_part(s3: S3Server, area: str) -> None:
    """
    Parts are in S3 while the client is still sending; the server's memory
    grows by about the parts in flight, not by the file; 226 only once the
    object is complete.
    """
    key = f"{area}/big.bin"
    size = 100 * MiB + 12345
    digest = hashlib.sha256()
    pid = s3.server.pid
    before = rss_kib(pid)
    with s3.server.login() as client:
        client.voidcmd("TYPE I")
        with client.transfercmd(f"STOR {key}") as data:
            sent = 0
            for index in range(100):
                block = pattern(index)
                data.sendall(block)
                digest.update(block)
                sent += len(block)
                if index == 39:
                    wait_until(lambda: s3.parts(key) >= 1, "a part in S3 while the client sends")
                    assert s3.head(key) is None, "the object is visible before the upload is complete"
            tail = b"x" * (size - sent)
            data.sendall(tail)
            digest.update(tail)
        assert client.voidresp().startswith("226")
    peak = rss_kib(pid, "VmHWM")
    head = s3.head(key)
    assert head is not None and head["ContentLength"] == size
    assert head["ETag"].endswith(f'-{-(-size // PART)}"')
    assert s3.uploads(key) == []
    # Four parts in flight and one filling: about 40 MiB, far below the file's 100.
    assert (peak - before) * 1024 < 80 * MiB, f"server memory grew by {(peak - before) // 1024} MiB"
    downloaded = hashlib.sha256()
    with s3.server.login() as client:
        client.retrbinary(f"RETR {key}", downloaded.update, blocksize=1 << 20)
    assert downloaded.hexdigest() == digest.hexdigest()


def test_killed_upload_leaves_no_object_and_no_open_upload(s3: S3Server, area: str) -> None:
    key = f"{area}/killed.bin"
    with s3.server.login() as client:
        client.voidcmd("TYPE I")
        data = client.transfercmd(f"STOR {key}")
        for index in range(20):
            data.sendall(pattern(index))
        wait_until(lambda: s3.parts(key) >= 1, "a part in S3")
        data.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        data.close()
        with pytest.raises(ftplib.Error) as aborted:
            client.voidresp()
        assert code(aborted.value) in (426, 451)
        wait_until(lambda: s3.uploads(key) == [], "the multipart upload to be aborted")
        assert s3.head(key) is None
        client.voidcmd("NOOP")  # the session goes on


@pytest.mark.server_traceback_expected
def test_unreachable_storage_is_451_and_the_session_goes_on(start_server: Any, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        server = start_server(
            "--storage", f"s3:bucket=b:endpoint=http://127.0.0.1:{port}:retries=1:region=us-east-1",
            "--auth", AUTH, root_option=False,
        )  # fmt: skip
    with server.login() as client:
        with pytest.raises(ftplib.error_temp) as unavailable:
            client.sendcmd("SIZE anything")
        assert code(unavailable.value) == 451
        client.voidcmd("NOOP")


@need("rclone")
def test_rclone_sync_copies_nothing_the_second_time(
    s3: S3Server,
    area: str,
    tmp_path: Path,
    obscured: str,  # noqa: F811 (the fixture imported above)
) -> None:
    """
    C{rclone sync} sets each file's time with MFMT and compares it with the
    MLSD listing: the listing shows the time set (not the time of the copy
    that stored it), so the second sync copies nothing, as on file storage.
    Directories show a real time, not 1970.
    """
    files = make_tree(tmp_path / "source", 24)
    names = sorted(files)
    stamps = set_mtimes(tmp_path / "source", names, base=1_500_000_000)
    target = remote(s3.server, obscured, f"{area}/tree")
    rclone("sync", "source", target, cwd=tmp_path)
    again = rclone("sync", "source", target, cwd=tmp_path)
    assert "Copied (" not in again.log and "There was nothing to transfer" in again.log, again.describe()
    name = names[0]
    folder, _, leaf = f"{area}/tree/{name}".rpartition("/")
    with s3.server.login() as client:
        facts = dict(client.mlsd(folder))
        assert facts[leaf]["modify"] == time.strftime("%Y%m%d%H%M%S", time.gmtime(stamps[name])), facts[leaf]
        listed = dict(client.mlsd(f"{area}/tree"))
        directories = [fact for entry, fact in listed.items() if fact["type"] in ("dir", "cdir")]
        assert directories and all(not fact["modify"].startswith("1970") for fact in directories), listed


def test_connections_to_s3_log_no_factory_lines(s3: S3Server, area: str) -> None:
    """Twisted's "Starting factory" and "Stopping factory" lines for every connection to S3 stay out of the log."""
    with s3.server.login() as first, s3.server.login() as second:
        for client in (first, second):
            client.cwd(area)
        first.storbinary("STOR one.bin", io.BytesIO(pattern(1)))
        second.storbinary("STOR two.bin", io.BytesIO(pattern(2)))
        assert retr_bytes(first, "two.bin") == pattern(2)
        assert sorted(second.nlst()) in (["one.bin", "two.bin"], [f"{area}/one.bin", f"{area}/two.bin"])
    log = s3.server.log()
    assert "uploaded" in log  # the log is there, and shows the transfers
    noisy = [line for line in log.splitlines() if "Starting factory" in line or "Stopping factory" in line]
    assert noisy == [], noisy[:4]
