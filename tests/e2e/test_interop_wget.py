"""
Interop: wget — a recursive download (C{-r}) of a tree with UTF-8 names,
byte for byte and with the listed times, passive and active; and C{-c}.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pytest
from _interop import (
    Run,
    assert_same_files,
    commands_in,
    expected_snapshot,
    make_tree,
    mtimes,
    need,
    run_client,
    set_mtimes,
    whole_minute_in_past,
)
from conftest import PASSWORD, USER, Area, FTPServer

pytestmark = need("wget")

#: No wgetrc, no retries, a quick give-up; -d logs each command sent ("--> ").
FLAGS = ["--no-config", "--no-proxy", "--tries=1", "--timeout=20", "-d", f"--user={USER}", f"--password={PASSWORD}"]
SENT = "--> "


def wget(server: FTPServer, path: str, *options: str, cwd: Path) -> Run:
    address = f"ftp://{server.host}:{server.port}{quote(path)}"
    return run_client(["wget", *FLAGS, *options, address], cwd=cwd, home=cwd / "home")


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
def test_recursive_download(server: FTPServer, area: Area, tmp_path: Path, passive: bool) -> None:
    """
    C{wget -r} walks the tree through LIST and fetches every file byte for
    byte; each file gets the time LIST shows (to the minute, in UTC).
    """
    files = make_tree(area.local / "tree", 60)
    names = sorted(files)
    stamps = set_mtimes(area.local / "tree", names, base=whole_minute_in_past(), step=60)
    mode = [] if passive else ["--no-passive-ftp"]
    run = wget(server, f"{area.path}/tree/", "-r", "-nH", f"--cut-dirs={area.path.count('/') + 1}", "-P", "out",
               *mode, cwd=tmp_path)  # fmt: skip
    assert_same_files(expected_snapshot(files), tmp_path / "out", "client after wget -r")
    assert mtimes(tmp_path / "out", names) == stamps, run.describe()
    used = {line.split(" ", 1)[0] for line in commands_in(run.log, SENT)}
    assert ("PASV" in used or "EPSV" in used) if passive else ("PORT" in used or "EPRT" in used), run.describe()


def test_continue_partial_download(server: FTPServer, area: Area, tmp_path: Path) -> None:
    """C{wget -c} sends C{REST <local size>} and completes the file byte-exact."""
    data = os.urandom(700_001)
    area.file("part ü.bin", data)
    have = 123_457
    (tmp_path / "part ü.bin").write_bytes(data[:have])
    run = wget(server, f"{area.path}/part ü.bin", "-c", cwd=tmp_path)
    assert (tmp_path / "part ü.bin").read_bytes() == data
    assert f"REST {have}" in commands_in(run.log, SENT), run.describe()

