"""
curl as the client: downloads, uploads and listings in every data-connection
mode it offers, compared byte for byte.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import USER, Area, FTPServer

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")

#: curl options per mode, and the command its verbose log must show.
MODES = {
    "epsv": ([], "EPSV"),
    "pasv": (["--disable-epsv"], "PASV"),
    "eprt": (["--ftp-port", "127.0.0.1"], "EPRT"),
    "port": (["-P", "127.0.0.1", "--disable-eprt"], "PORT"),
}


def curl(server: FTPServer, path: str, mode: str, *options: str) -> subprocess.CompletedProcess[bytes]:
    extra, verb = MODES[mode]
    result = subprocess.run(
        ["curl", "--silent", "--show-error", "--verbose", "--max-time", "60", "--noproxy", "*",
         "--user", f"{USER}:secret", *extra, *options, f"ftp://127.0.0.1:{server.port}{path}"],
        capture_output=True,
        timeout=90,
        check=False,
    )  # fmt: skip
    log = result.stderr.decode(errors="replace")
    assert result.returncode == 0, f"curl exited {result.returncode}:\n{log}"
    assert f"> {verb}" in log, f"curl did not use {verb}:\n{log}"
    return result


@pytest.mark.parametrize("mode", MODES)
def test_curl_download(server: FTPServer, area: Area, tmp_path: Path, mode: str) -> None:
    data = os.urandom(300_001) + b"\r\n\n\r" + bytes(range(256))
    area.file("blob.bin", data)
    out = tmp_path / "out"
    curl(server, f"{area.path}/blob.bin", mode, "--output", str(out))
    assert out.read_bytes() == data


@pytest.mark.parametrize("mode", MODES)
def test_curl_upload(server: FTPServer, area: Area, tmp_path: Path, mode: str) -> None:
    data = os.urandom(200_003) + b"line\r\nline\n"
    source = tmp_path / "up.bin"
    source.write_bytes(data)
    curl(server, f"{area.path}/uploaded.bin", mode, "--upload-file", str(source))
    assert (area.local / "uploaded.bin").read_bytes() == data
    assert not list(area.local.glob(".exftp-upload-*"))


@pytest.mark.parametrize("mode", MODES)
def test_curl_list(server: FTPServer, area: Area, mode: str) -> None:
    area.file("first.txt", b"1")
    area.file("second file.txt", b"22")
    (area.local / "subdir").mkdir()
    listing = curl(server, f"{area.path}/", mode).stdout.decode()
    lines = listing.splitlines()
    assert len(lines) == 3, listing
    names = {line.split(maxsplit=8)[-1] for line in lines}
    assert names == {"first.txt", "second file.txt", "subdir"}
    assert next(line for line in lines if line.endswith("subdir")).startswith("d")


@pytest.mark.parametrize("mode", ["epsv", "port"])
def test_curl_names_only(server: FTPServer, area: Area, mode: str) -> None:
    area.file("a", b"")
    area.file("b", b"")
    listing = curl(server, f"{area.path}/", mode, "--list-only").stdout.decode()
    assert sorted(listing.split()) == ["a", "b"]


def test_curl_resume_download(server: FTPServer, area: Area, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    area.file("resume.bin", data)
    out = tmp_path / "partial"
    out.write_bytes(data[:12345])
    curl(server, f"{area.path}/resume.bin", "epsv", "--continue-at", "-", "--output", str(out))
    assert out.read_bytes() == data


def test_curl_append(server: FTPServer, area: Area, tmp_path: Path) -> None:
    area.file("log.txt", b"first\n")
    source = tmp_path / "more"
    source.write_bytes(b"second\n")
    curl(server, f"{area.path}/log.txt", "pasv", "--append", "--upload-file", str(source))
    assert (area.local / "log.txt").read_bytes() == b"first\nsecond\n"
