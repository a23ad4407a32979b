"""
Interop: rclone's FTP backend — C{copy} up and down, C{check}, C{moveto}
(server-side rename), C{purge} and ranged C{cat} — each checked on disk.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _interop import (
    Run,
    assert_same_files,
    client_env,
    expected_snapshot,
    make_tree,
    mtimes,
    need,
    run_client,
    set_mtimes,
    snapshot,
    upload_temporaries,
    whole_minute_in_past,
)
from conftest import PASSWORD, USER, Area, FTPServer

pytestmark = need("rclone")

#: One try only, so that a failure is not retried away; a quick give-up on a dead server.
FLAGS = ["--retries", "1", "--low-level-retries", "1", "--contimeout", "10s", "--timeout", "30s", "-v"]


@pytest.fixture(scope="module")
def obscured(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The password as rclone wants it on the command line (C{rclone obscure})."""
    home = tmp_path_factory.mktemp("rclone-home")
    return run_client(["rclone", "obscure", PASSWORD], cwd=home, home=home, env=_env(home)).stdout.strip()


def _env(home: Path) -> dict[str, str]:
    # No config file: everything is on the command line.
    return client_env(home, RCLONE_CONFIG=str(home / "no-rclone.conf"))


def remote(server: FTPServer, obscured: str, path: str) -> str:
    """An on-the-fly FTP remote (no config file) for C{path} on C{server}."""
    return f":ftp,host={server.host},port={server.port},user={USER},pass={obscured}:{path}"


def rclone(*args: str, cwd: Path, check: bool = True) -> Run:
    home = cwd / "home"
    return run_client(["rclone", *args, *FLAGS], cwd=cwd, home=home, check=check, env=_env(home))


def test_copy_up(server: FTPServer, area: Area, tmp_path: Path, obscured: str) -> None:
    """
    C{rclone copy} uploads a tree byte for byte and sets each file's time
    (MFMT, which FEAT lists), so a second copy has nothing to do.
    """
    files = make_tree(tmp_path / "source", 60)
    names = sorted(files)
    stamps = set_mtimes(tmp_path / "source", names, base=1_500_000_000)
    target = remote(server, obscured, f"{area.path}/tree")
    rclone("copy", "source", target, cwd=tmp_path)
    assert_same_files(expected_snapshot(files), area.local / "tree", "server after rclone copy")
    assert upload_temporaries(area.local) == []
    assert mtimes(area.local / "tree", names) == stamps
    again = rclone("copy", "source", target, cwd=tmp_path)
    assert "Copied (" not in again.log, again.describe()


@pytest.mark.parametrize(
    "options", [[], ["--ftp-disable-mlsd", "--ftp-disable-epsv"]], ids=["mlsd-epsv", "list-pasv"]
)
def test_copy_down(server: FTPServer, area: Area, tmp_path: Path, obscured: str, options: list[str]) -> None:
    """
    C{rclone copy} downloads a tree byte for byte, with the server's times,
    whether it lists with MLSD or parses LIST (then asking MDTM).
    """
    files = make_tree(area.local / "tree", 60)
    names = sorted(files)
    stamps = set_mtimes(area.local / "tree", names, base=whole_minute_in_past() - 7)
    rclone("copy", remote(server, obscured, f"{area.path}/tree"), "back", *options, cwd=tmp_path)
    assert_same_files(expected_snapshot(files), tmp_path / "back", "client after rclone copy")
    assert mtimes(tmp_path / "back", names) == stamps


def test_check_finds_no_difference_then_one(server: FTPServer, area: Area, tmp_path: Path, obscured: str) -> None:
    """
    C{rclone check} of identical trees reports 0 differences (by size, and
    with C{--download} by content); after one byte changes on the server,
    C{check --download} reports exactly that file.
    """
    files = make_tree(area.local / "tree", 40, seed=5)
    make_tree(tmp_path / "local", 40, seed=5)
    target = remote(server, obscured, f"{area.path}/tree")
    for extra in ([], ["--download"]):
        run = rclone("check", "local", target, *extra, "--match", "match.txt", cwd=tmp_path)
        assert "0 differences found" in run.log, run.describe()
        assert _lines(tmp_path / "match.txt") == sorted(files), run.describe()

    changed = max(files, key=lambda name: len(files[name]))
    data = bytearray(files[changed])
    data[len(data) // 2] ^= 0xFF
    (area.local / "tree" / changed).write_bytes(bytes(data))
    run = rclone("check", "local", target, "--download", "--differ", "differ.txt", cwd=tmp_path, check=False)
    assert run.returncode != 0, run.describe()
    assert "1 differences found" in run.log, run.describe()
    assert _lines(tmp_path / "differ.txt") == [changed], run.describe()


def _lines(path: Path) -> list[str]:
    return sorted(path.read_text("utf-8").splitlines())


def test_moveto_renames_on_the_server(server: FTPServer, area: Area, tmp_path: Path, obscured: str) -> None:
    """C{rclone moveto} renames a file (into another directory, to a UTF-8 name) and a directory, server-side."""
    data = os.urandom(123_457)
    (area.local / "a.bin").write_bytes(data)
    (area.local / "dest dir").mkdir()
    tree = make_tree(area.local / "folder", 8)
    run = rclone(
        "moveto", remote(server, obscured, f"{area.path}/a.bin"),
        remote(server, obscured, f"{area.path}/dest dir/b ü.bin"), cwd=tmp_path,
    )  # fmt: skip
    assert not (area.local / "a.bin").exists()
    assert (area.local / "dest dir" / "b ü.bin").read_bytes() == data
    assert "server-side" in run.log or "Renamed" in run.log, run.describe()

    rclone(
        "moveto", remote(server, obscured, f"{area.path}/folder"),
        remote(server, obscured, f"{area.path}/dest dir/folder 2"), cwd=tmp_path,
    )  # fmt: skip
    assert not (area.local / "folder").exists()
    moved = area.local / "dest dir" / "folder 2"
    assert_same_files(expected_snapshot(tree), moved, "server after moveto of a directory")


@pytest.mark.parametrize("offset,count", [(1000, 100), (0, 65536), (2_999_990, -1)])
def test_cat_a_range(server: FTPServer, area: Area, tmp_path: Path, obscured: str, offset: int, count: int) -> None:
    """
    C{rclone cat --offset --count} reads with REST and closes the data
    connection early (the server answers 426 for the cut transfer): exact bytes.
    """
    data = os.urandom(3_000_000)
    (area.local / "ranged.bin").write_bytes(data)
    run = rclone("cat", "--offset", str(offset), "--count", str(count),
                 remote(server, obscured, f"{area.path}/ranged.bin"), cwd=tmp_path)  # fmt: skip
    end = None if count < 0 else offset + count
    assert run.stdout_bytes == data[offset:end]


def test_purge_removes_a_tree(server: FTPServer, area: Area, tmp_path: Path, obscured: str) -> None:
    """C{rclone purge} removes a nested directory tree and nothing else."""
    make_tree(area.local / "doomed", 30)
    keep = make_tree(area.local / "kept", 3)
    rclone("purge", remote(server, obscured, f"{area.path}/doomed"), cwd=tmp_path)
    assert not (area.local / "doomed").exists()
    assert snapshot(area.local / "kept") == expected_snapshot(keep)
    assert sorted(p.name for p in area.local.iterdir()) == ["kept"]
