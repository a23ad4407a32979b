"""
Commands as the README and C{deploy/} write them: their code blocks, and a
process started from such a command that is waited for like a server.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from conftest import REPO, FTPServer, server_env, twistd_command

README = REPO / "README.md"


def code_blocks(heading: str, text: str | None = None) -> list[str]:
    """The fenced code blocks of the README section under C{heading} (up to the next heading as high)."""
    text = README.read_text() if text is None else text
    level = heading.split(" ", 1)[0]
    start = text.index(f"\n{heading}\n")
    following = re.search(rf"\n#{{1,{len(level)}}} ", text[start + 1 :])
    section = text[start : start + 1 + following.start()] if following else text[start:]
    return [block.strip("\n") for block in re.findall(r"\n```\w*\n(.*?)\n```", section, re.S)]


def replace_once(text: str, replacements: Mapping[str, str]) -> str:
    """C{text} with each key replaced by its value; each key must occur exactly once (so the README cannot drift)."""
    for old, new in replacements.items():
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in:\n{text}"
        text = text.replace(old, new)
    return text


def with_twistd(argv: Sequence[str]) -> list[str]:
    """C{argv} with its C{twistd} run by this interpreter's twistd."""
    return [*twistd_command(), *argv[1:]] if argv and argv[0] == "twistd" else list(argv)


class Command(FTPServer):
    """A server started from a whole command line, in C{directory}, with extra environment variables."""

    def __init__(self, directory: Path, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        super().__init__(directory)
        self.argv = list(argv)
        self.env = {**server_env(), **(env or {})}

    def start(self) -> Command:
        self.process = subprocess.Popen(
            self.argv, env=self.env, cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        try:
            match = self.wait_for_log(r"exftp listening on (?P<host>\S+):(?P<port>\d+)\s*$", timeout=60)
        except AssertionError:
            self.stop()
            raise
        self.host, self.port = match["host"], int(match["port"])
        return self
