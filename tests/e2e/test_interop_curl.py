"""
Interop: curl — resumed downloads (C{-C -}), resumed and appended uploads
(C{--append}), uploads into new directories (C{--ftp-create-dirs}), renames
with C{-Q "RNFR a" -Q "RNTO b"}, listings, in EPSV, PASV and active modes.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pytest
from _interop import Run, client_env, commands_in, need, run_client, transfer_bytes, upload_temporaries
from conftest import PASSWORD, USER, Area, FTPServer, wait_until

pytestmark = need("curl")

#: Data-connection modes: curl options, and the command its log must show.
MODES = {
    "epsv": ([], "EPSV"),
    "pasv": (["--disable-epsv"], "PASV"),
    "active-eprt": (["-P", "127.0.0.1"], "EPRT"),
    "active-port": (["-P", "-", "--disable-eprt"], "PORT"),
}
SENT = "> "


def url(server: FTPServer, path: str) -> str:
    return f"ftp://{server.host}:{server.port}{quote(path)}"


def curl(server: FTPServer, path: str, *options: str, cwd: Path, mode: str = "epsv", check: bool = True) -> Run:
    extra, verb = MODES[mode]
    args = [
        "curl", "-q", "--silent", "--show-error", "--verbose", "--noproxy", "*", "--max-time", "60",
        "--user", f"{USER}:{PASSWORD}", *extra, *options, url(server, path),
    ]  # fmt: skip
    run = run_client(args, cwd=cwd, home=cwd / "home", check=check, env=client_env(cwd / "home"))
    if check:
        used = {line.split(" ", 1)[0] for line in commands_in(run.stderr, SENT)}
        assert verb in used, f"curl did not use {verb}:\n{run.describe()}"
    return run


@pytest.mark.parametrize("mode", list(MODES))
def test_upload_into_new_directories_then_download(server: FTPServer, area: Area, tmp_path: Path, mode: str) -> None:
    """C{-T} with C{--ftp-create-dirs} makes the missing directories (UTF-8 names) and stores byte for byte."""
    data = os.urandom(654_321) + b"\r\n\n\r"
    (tmp_path / "up.bin").write_bytes(data)
    remote = f"{area.path}/new dir/ünï/日本/up file.bin"
    run = curl(server, remote, "-T", "up.bin", "--ftp-create-dirs", cwd=tmp_path, mode=mode)
    assert (area.local / "new dir" / "ünï" / "日本" / "up file.bin").read_bytes() == data
    assert [line for line in commands_in(run.stderr, SENT) if line.startswith("MKD ")] == [
        "MKD new dir", "MKD ünï", "MKD 日本",
    ], run.describe()  # fmt: skip
    assert upload_temporaries(area.local) == []

    curl(server, remote, "-o", "down.bin", cwd=tmp_path, mode=mode)
    assert (tmp_path / "down.bin").read_bytes() == data


@pytest.mark.parametrize("mode", list(MODES))
def test_resume_download(server: FTPServer, area: Area, tmp_path: Path, mode: str) -> None:
    """C{-C -} sends C{REST <local size>}; only the rest moves and the file ends byte-exact."""
    data = os.urandom(1_000_003)
    area.file("big file.bin", data)
    have = 333_333
    (tmp_path / "big.bin").write_bytes(data[:have])
    start = server.log_position()
    run = curl(server, f"{area.path}/big file.bin", "-C", "-", "-o", "big.bin", cwd=tmp_path, mode=mode)
    assert (tmp_path / "big.bin").read_bytes() == data
    sent = commands_in(run.stderr, SENT)
    assert sent[sent.index(f"REST {have}") + 1] == "RETR big file.bin", run.describe()
    path = f"{area.path}/big file.bin"
    wait_until(lambda: transfer_bytes(server.log(start), "downloaded", path), "the server's transfer log line")
    assert transfer_bytes(server.log(start), "downloaded", path) == [len(data) - have]


def test_resume_download_of_a_complete_file(server: FTPServer, area: Area, tmp_path: Path) -> None:
    """C{-C -} on a file that is already complete changes nothing and succeeds."""
    data = os.urandom(10_000)
    area.file("done.bin", data)
    (tmp_path / "done.bin").write_bytes(data)
    curl(server, f"{area.path}/done.bin", "-C", "-", "-o", "done.bin", cwd=tmp_path)
    assert (tmp_path / "done.bin").read_bytes() == data


@pytest.mark.parametrize("first,last", [(0, 99), (1000, 1999), (2_999_000, 2_999_999)])
def test_range_download_aborts_the_rest(server: FTPServer, area: Area, tmp_path: Path, first: int, last: int) -> None:
    """
    C{-r FIRST-LAST}: curl sends REST, reads what it wants, then ABOR; the
    bytes are exact and the server answers the ABOR so that curl ends cleanly.
    """
    data = os.urandom(3_000_000)
    area.file("ranged.bin", data)
    run = curl(server, f"{area.path}/ranged.bin", "-r", f"{first}-{last}", "-o", "part.bin", cwd=tmp_path)
    assert (tmp_path / "part.bin").read_bytes() == data[first : last + 1]
    if first:
        assert f"REST {first}" in commands_in(run.stderr, SENT), run.describe()
    if "ABOR" in commands_in(run.stderr, SENT):
        replies = run.stderr[run.stderr.index("> ABOR") :]
        assert "< 426 " in replies or "< 225 " in replies or "< 226 " in replies, run.describe()


def test_resume_upload(server: FTPServer, area: Area, tmp_path: Path) -> None:
    """C{-C - -T}: curl asks SIZE and appends the rest; the server's file ends byte-exact."""
    data = os.urandom(800_001)
    have = 250_000
    area.file("partial.bin", data[:have])
    (tmp_path / "full.bin").write_bytes(data)
    run = curl(server, f"{area.path}/partial.bin", "-C", "-", "-T", "full.bin", cwd=tmp_path)
    assert (area.local / "partial.bin").read_bytes() == data
    sent = commands_in(run.stderr, SENT)
    assert "SIZE partial.bin" in sent, run.describe()
    assert "APPE partial.bin" in sent or f"REST {have}" in sent, run.describe()


@pytest.mark.parametrize("mode", ["epsv", "active-eprt"])
def test_append(server: FTPServer, area: Area, tmp_path: Path, mode: str) -> None:
    """C{--append} sends APPE: the server's file becomes old + new, and a missing file is created."""
    old, new = os.urandom(70_000), os.urandom(90_001)
    area.file("log.bin", old)
    (tmp_path / "more.bin").write_bytes(new)
    run = curl(server, f"{area.path}/log.bin", "--append", "-T", "more.bin", cwd=tmp_path, mode=mode)
    assert "APPE log.bin" in commands_in(run.stderr, SENT), run.describe()
    assert (area.local / "log.bin").read_bytes() == old + new
    curl(server, f"{area.path}/fresh.bin", "--append", "-T", "more.bin", cwd=tmp_path, mode=mode)
    assert (area.local / "fresh.bin").read_bytes() == new
    assert upload_temporaries(area.local) == []


def test_quote_rename_file_and_directory(server: FTPServer, area: Area, tmp_path: Path) -> None:
    """C{-Q "RNFR a" -Q "RNTO b"} renames before the transfer, files and directories, UTF-8 names."""
    data = os.urandom(5000)
    area.file("old name.bin", data)
    (area.local / "old dir").mkdir()
    (area.local / "old dir" / "inside.txt").write_bytes(b"inside\n")
    curl(
        server, f"{area.path}/",
        "-Q", f"RNFR {area.path}/old name.bin", "-Q", f"RNTO {area.path}/new näme.bin",
        "-Q", f"RNFR {area.path}/old dir", "-Q", f"RNTO {area.path}/new dir ü",
        "-o", "listing.txt", cwd=tmp_path,
    )  # fmt: skip
    assert sorted(p.name for p in area.local.iterdir()) == ["new dir ü", "new näme.bin"]
    assert (area.local / "new näme.bin").read_bytes() == data
    assert (area.local / "new dir ü" / "inside.txt").read_bytes() == b"inside\n"
    listing = (tmp_path / "listing.txt").read_text("utf-8")
    assert "new näme.bin" in listing and "new dir ü" in listing, listing


def test_quote_rnto_without_rnfr_fails_with_503(server: FTPServer, area: Area, tmp_path: Path) -> None:
    """A lone C{RNTO} is refused with 503 (bad sequence); curl reports the quote command failed."""
    area.file("stay.bin", b"stay")
    run = curl(server, f"{area.path}/", "-Q", f"RNTO {area.path}/moved.bin", cwd=tmp_path, check=False)
    assert run.returncode == 21, run.describe()  # CURLE_QUOTE_ERROR
    assert "< 503 " in run.stderr, run.describe()
    assert sorted(p.name for p in area.local.iterdir()) == ["stay.bin"]


@pytest.mark.parametrize("mode", ["epsv", "pasv", "active-port"])
def test_listings(server: FTPServer, area: Area, tmp_path: Path, mode: str) -> None:
    """C{--list-only} (NLST) names every entry exactly, UTF-8 included; the full listing (LIST) shows sizes."""
    names = {"a.bin": 1, "with space.bin": 22, "ünïcødé.bin": 333, "日本語.bin": 4444, "🙂.bin": 0}
    for name, size in names.items():
        area.file(name, b"x" * size)
    (area.local / "sub dir").mkdir()
    run = curl(server, f"{area.path}/", "--list-only", cwd=tmp_path, mode=mode)
    assert sorted(run.stdout.splitlines()) == sorted([*names, "sub dir"])
    run = curl(server, f"{area.path}/", cwd=tmp_path, mode=mode)
    lines = run.stdout.splitlines()
    for name, size in names.items():
        assert any(line.endswith(" " + name) and f" {size} " in line for line in lines), (name, lines)
    assert any(line.startswith("d") and line.endswith(" sub dir") for line in lines), lines


@pytest.mark.parametrize("method", ["multicwd", "singlecwd", "nocwd"])
def test_ftp_methods(server: FTPServer, area: Area, tmp_path: Path, method: str) -> None:
    """Each C{--ftp-method} (CWD per level, one CWD, or whole paths) reaches the same nested UTF-8 file."""
    data = os.urandom(77_777)
    (area.local / "lvl one" / "ünï").mkdir(parents=True)
    (tmp_path / "up.bin").write_bytes(data)
    remote = f"{area.path}/lvl one/ünï/f {method}.bin"
    curl(server, remote, "--ftp-method", method, "-T", "up.bin", cwd=tmp_path)
    assert (area.local / "lvl one" / "ünï" / f"f {method}.bin").read_bytes() == data
    curl(server, remote, "--ftp-method", method, "-o", "down.bin", cwd=tmp_path)
    assert (tmp_path / "down.bin").read_bytes() == data


def test_ascii_mode_converts_line_ends(server: FTPServer, area: Area, tmp_path: Path) -> None:
    """
    C{-B --crlf -T} sends CRLF lines in TYPE A: the server stores LF (its
    native form); C{-B} downloads get CRLF on the wire, which curl turns back to LF.
    """
    text = b"line one\nline two\n\nlast without newline"
    (tmp_path / "text.txt").write_bytes(text)
    run = curl(server, f"{area.path}/text.txt", "-B", "--crlf", "-T", "text.txt", cwd=tmp_path)
    assert "TYPE A" in commands_in(run.stderr, SENT), run.describe()
    assert (area.local / "text.txt").read_bytes() == text
    curl(server, f"{area.path}/text.txt", "-B", "-o", "back.txt", cwd=tmp_path)
    assert (tmp_path / "back.txt").read_bytes() == text
