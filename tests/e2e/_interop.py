"""
Shared helpers of the interop matrix: real client programs against a real
C{twistd exftp}, with every result checked on disk.

The servers come from C{conftest.py} (the C{server} and C{area} fixtures);
this module adds what the client programs need: a sealed environment (no
user configuration, no proxy, UTF-8 locale, UTC), a runner that attaches the
client's own debug log to every failure, and trees of files to move and
compare byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Longest a single client run may take before the test fails (a hang, not slowness).
CLIENT_TIMEOUT = 120
#: Shown of a client's log in a failure message (the end, where the error is).
_LOG_TAIL = 20_000
_PROXY_VARIABLES = re.compile(r"(?i)^(all|ftp|http|https|no)_proxy$")


def need(program: str) -> pytest.MarkDecorator:
    """Skip the tests of a module when C{program} is not on the path."""
    return pytest.mark.skipif(
        shutil.which(program) is None,
        reason=f"{program} is not installed (CI installs it with .ci/run)",
    )


def client_env(home: Path, **extra: str) -> dict[str, str]:
    """
    The environment of a client program: its own empty home (no ~/.lftprc,
    ~/.curlrc, ~/.wgetrc or rclone.conf), no proxy, a UTF-8 locale so that
    non-ASCII names are not transliterated, and UTC so that listed times
    mean the same on both sides.
    """
    env = {key: value for key, value in os.environ.items() if not _PROXY_VARIABLES.match(key)}
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        LC_ALL="C.UTF-8",
        LANG="C.UTF-8",
        TZ="UTC",
        no_proxy="*",
        NO_PROXY="*",
    )
    env.update(extra)
    return env


@dataclass
class Run:
    """A finished client run: its exit status and its output (stdout as bytes too, for binary output)."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    stdout_bytes: bytes

    @property
    def log(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        tail = self.log[-_LOG_TAIL:]
        cut = "[...]\n" if len(self.log) > _LOG_TAIL else ""
        return f"{' '.join(self.args)}\nexited {self.returncode}; its log:\n{cut}{tail}"


def run_client(
    args: Sequence[str], cwd: Path, home: Path, *, check: bool = True, env: dict[str, str] | None = None
) -> Run:
    """
    Run a client program to completion; with C{check}, fail the test (with
    the client's log) unless it exits 0.
    """
    completed = subprocess.run(
        list(args),
        cwd=cwd,
        env=env if env is not None else client_env(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=CLIENT_TIMEOUT,
        check=False,
    )
    result = Run(
        list(args),
        completed.returncode,
        completed.stdout.decode("utf-8", "replace"),
        completed.stderr.decode("utf-8", "replace"),
        completed.stdout,
    )
    if check and result.returncode != 0:
        pytest.fail(result.describe(), pytrace=False)
    return result


# Trees of files


#: Directory names: nested, with spaces, accents, other scripts and a 4-byte character.
TREE_DIRECTORIES = (
    "",
    "sub",
    "sub/deeper",
    "sub/deeper/deepest",
    "space dir",
    "space dir/inner space",
    "ünïcødé",
    "ünïcødé/日本語",
    "кириллица папка",
    "emoji 🙂",
)
#: File name stems, used in turn; each gets a number so that names stay unique.
TREE_STEMS = (
    "plain", "with space", "naïve café", "日本語ファイル",
    "ёжик", "smile 🙂", "dash-and_under", "odd #%&'()[]{}!$,;=+@~",
)  # fmt: skip


def make_tree(root: Path, count: int = 200, seed: int = 3) -> dict[str, bytes]:
    """
    Write C{count} files under C{root}: nested directories, binary contents
    (every byte value, bare CR and LF, NUL), an empty file, a few larger
    files of odd sizes, and UTF-8 names with spaces and non-ASCII letters.

    @return: each file's relative POSIX path and contents.
    """
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    for index in range(count):
        directory = TREE_DIRECTORIES[index % len(TREE_DIRECTORIES)]
        stem = TREE_STEMS[index % len(TREE_STEMS)]
        name = f"{stem} {index:03d}.bin"
        if index == 0:
            data = b""
        elif index == 1:
            data = bytes(range(256)) * 4 + b"\r\n\n\r\x00\r\r\n"
        elif index % 50 == 2:
            data = rng.randbytes(rng.randrange(200_000, 1_200_000))
        else:
            data = rng.randbytes(rng.randrange(1, 6_000))
        files[f"{directory}/{name}" if directory else name] = data
    for relative, data in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return files


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> tuple[int, str]:
    """A file's size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            size += len(chunk)
            digest.update(chunk)
    return size, digest.hexdigest()


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every regular file under C{root}: relative POSIX path to (size, SHA-256)."""
    return {
        path.relative_to(root).as_posix(): file_digest(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def expected_snapshot(files: dict[str, bytes]) -> dict[str, tuple[int, str]]:
    return {name: (len(data), sha256(data)) for name, data in files.items()}


def assert_same_files(expected: dict[str, tuple[int, str]], actual_root: Path, what: str) -> None:
    """Fail unless C{actual_root} holds exactly the files of C{expected}, byte for byte."""
    actual = snapshot(actual_root)
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    different = sorted(name for name in set(expected) & set(actual) if expected[name] != actual[name])
    assert not (missing or extra or different), (
        f"{what}: {len(missing)} missing {missing[:10]}, {len(extra)} unexpected {extra[:10]}, "
        f"{len(different)} different {[(n, expected[n], actual[n]) for n in different[:5]]}"
    )


def upload_temporaries(root: Path) -> list[str]:
    """Upload temporaries the server left under C{root} (there should be none)."""
    return sorted(str(p) for p in root.rglob(".exftp-upload-*"))


# Times


def whole_minute_in_past(days: int = 3) -> int:
    """
    A whole-minute time C{days} ago: listed by LIST with its hour and minute
    (it is within six months), so clients that only read LIST see it exactly.
    """
    return (int(time.time()) // 60 - days * 24 * 60) * 60


def set_mtimes(root: Path, names: Sequence[str], base: int, step: int = 61) -> dict[str, int]:
    """Give each file a distinct whole-second mtime (C{base}, C{base - step}, ...)."""
    stamps = {}
    for index, name in enumerate(names):
        stamp = base - index * step
        os.utime(root / name, (stamp, stamp))
        stamps[name] = stamp
    return stamps


def mtimes(root: Path, names: Sequence[str]) -> dict[str, int]:
    """Each file's mtime in whole seconds (as FTP carries them)."""
    return {name: int((root / name).stat().st_mtime) for name in names}


# Logs


def commands_in(log: str, prefix: str) -> list[str]:
    """The FTP command lines a client's debug log shows it sent (lines starting with C{prefix})."""
    return [line[len(prefix) :].strip() for line in log.splitlines() if line.startswith(prefix)]


def transfer_bytes(server_log: str, verb: str, path: str) -> list[int]:
    """Byte counts of the server's C{alice downloaded /path: N bytes} lines for C{path}."""
    pattern = re.compile(rf" {verb} {re.escape(path)}: (\d+) bytes in ")
    return [int(found.group(1)) for found in pattern.finditer(server_log)]
