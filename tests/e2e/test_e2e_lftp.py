"""
lftp as the client, when it is installed: uploads, downloads, listings and
a mirror of a small tree, in passive and active mode.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import PASSWORD, USER, Area, FTPServer

pytestmark = pytest.mark.skipif(shutil.which("lftp") is None, reason="lftp is not installed")


def lftp(server: FTPServer, script: str, passive: bool, cwd: Path) -> str:
    settings = (
        "set cmd:fail-exit yes; set ftp:ssl-allow no; set net:max-retries 1; set net:timeout 20; "
        "set net:reconnect-interval-base 1; set xfer:clobber yes; set ftp:use-feat yes; "
        f"set ftp:passive-mode {'on' if passive else 'off'}; set ftp:port-ipv4 127.0.0.1; "
    )
    result = subprocess.run(
        ["lftp", "-u", f"{USER},{PASSWORD}", "-p", str(server.port), "-e", settings + script + "; bye", server.host],
        cwd=cwd,
        capture_output=True,
        timeout=120,
        check=False,
        env={**{k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}, "HOME": str(cwd)},
    )
    output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    assert result.returncode == 0, f"lftp exited {result.returncode}:\n{output}"
    return result.stdout.decode(errors="replace")


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
def test_lftp_put_get_ls(server: FTPServer, area: Area, tmp_path: Path, passive: bool) -> None:
    data = os.urandom(777_777)
    (tmp_path / "up.bin").write_bytes(data)
    listing = lftp(server, f"cd {area.path}; put up.bin; get up.bin -o down.bin; cls -1", passive, tmp_path)
    assert (area.local / "up.bin").read_bytes() == data
    assert (tmp_path / "down.bin").read_bytes() == data
    assert listing.split() == ["up.bin"]


def test_lftp_mirror_both_ways(server: FTPServer, area: Area, tmp_path: Path) -> None:
    source = tmp_path / "tree"
    (source / "a" / "b").mkdir(parents=True)
    files = {
        "top.txt": b"top\n",
        "a/one.bin": os.urandom(70_000),
        "a/b/two.bin": os.urandom(1),
        "a/b/empty": b"",
    }
    for name, content in files.items():
        (source / name).write_bytes(content)
    lftp(server, f"mirror -R tree {area.path}/tree; mirror {area.path}/tree back", True, tmp_path)
    for name, content in files.items():
        assert (area.local / "tree" / name).read_bytes() == content, name
        assert (tmp_path / "back" / name).read_bytes() == content, name
    assert not list(area.local.rglob(".exftp-upload-*"))
