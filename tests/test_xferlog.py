"""
The xferlog format, parsed back field by field, and the buffered file writer.
"""

from __future__ import annotations

import calendar
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from exftp import Action, FTPEvent
from exftp._xferlog import TransferLog, xferlog_line

#: 2023-11-14 22:13:20 UTC
WHEN = 1700000000.0


@dataclass(frozen=True)
class Entry:
    """One xferlog line, parsed the way log analysers (and xferlog(5)) read it."""

    time: float
    transfer_time: int
    remote_host: str
    file_size: int
    filename: str
    transfer_type: str
    special_action_flag: str
    direction: str
    access_mode: str
    username: str
    service_name: str
    authentication_method: str
    authenticated_user_id: str
    completion_status: str

    @classmethod
    def parse(cls, line: str) -> Entry:
        assert line == line.strip() and "  " not in line.split(" ", 5)[-1], line
        tokens = line.split()
        assert len(tokens) == 5 + 13, tokens  # the date is five tokens, then thirteen fields
        stamp = time.strptime(" ".join(tokens[:5]), "%a %b %d %H:%M:%S %Y")
        (seconds, host, size, name, kind, flag, direction, mode, user, service, method, user_id, status) = tokens[5:]
        return cls(
            calendar.timegm(stamp), int(seconds), host, int(size), name, kind, flag, direction, mode, user, service,
            method, user_id, status,
        )  # fmt: skip


def transfer(action: Action = Action.UPLOAD, **details: object) -> FTPEvent:
    fields: dict[str, object] = {
        "action": action, "ok": True, "reply": 226, "username": "alice", "peer": "127.0.0.1", "time": WHEN,
        "path": "/in/report.csv", "bytes": 12345, "seconds": 2.4, "binary": True,
    }  # fmt: skip
    fields.update(details)
    return FTPEvent(**fields)  # type: ignore[arg-type]


def line(event: FTPEvent) -> str:
    text = xferlog_line(event, time.gmtime)
    assert text is not None
    return text


def test_upload_fields() -> None:
    assert Entry.parse(line(transfer())) == Entry(
        WHEN, 2, "127.0.0.1", 12345, "/in/report.csv", "b", "_", "i", "r", "alice", "ftp", "0", "*", "c"
    )


def test_the_date_is_as_ctime_writes_it() -> None:
    early = calendar.timegm((2024, 1, 2, 3, 4, 5, 0, 0, 0))
    assert line(transfer(time=early)).startswith("Tue Jan  2 03:04:05 2024 ")


def test_download_ascii_incomplete_anonymous() -> None:
    entry = Entry.parse(line(transfer(Action.DOWNLOAD, ok=False, reply=426, binary=False, username="anonymous",
                                      seconds=0.01, bytes=0)))  # fmt: skip
    assert (entry.direction, entry.transfer_type, entry.completion_status) == ("o", "a", "i")
    assert (entry.access_mode, entry.username, entry.transfer_time, entry.file_size) == ("a", "anonymous", 1, 0)


def test_spaces_and_control_characters_never_split_a_field() -> None:
    entry = Entry.parse(line(transfer(path="/my files/a\tb\nc.txt", username="Jane Doe", peer=None)))
    assert (entry.filename, entry.username, entry.remote_host) == ("/my_files/a_b_c.txt", "Jane_Doe", "-")


@pytest.mark.parametrize("action", sorted(set(Action) - {Action.UPLOAD, Action.DOWNLOAD}, key=str))
def test_only_transfers_are_logged(action: Action) -> None:
    assert xferlog_line(transfer(action)) is None


def test_local_time_by_default() -> None:
    text = xferlog_line(transfer())
    assert text is not None and text.startswith(time.asctime(time.localtime(WHEN)))


# The file


def test_buffered_then_written_every_interval(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "xferlog"
    log = TransferLog(str(path), reactor=clock, flush_interval=1.0, localtime=time.gmtime)
    log(transfer(path="/1"))
    log(transfer(Action.LOGIN))
    log(transfer(Action.DOWNLOAD, path="/2"))
    clock.advance(1)
    entries = [Entry.parse(text) for text in path.read_text().splitlines()]
    assert [(e.filename, e.direction) for e in entries] == [("/1", "i"), ("/2", "o")]
    log(transfer(path="/3"))
    log.close()
    assert Entry.parse(path.read_text().splitlines()[-1]).filename == "/3"
    assert clock.getDelayedCalls() == []
    log(transfer(path="/after-close"))  # ignored, not an error


def test_appends_and_reopens_after_rotation(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "xferlog"
    path.write_text("old line\n")
    log = TransferLog(str(path), reactor=clock)
    log(transfer(path="/before"))
    os.rename(path, tmp_path / "xferlog.1")
    log.reopen()
    log(transfer(path="/after"))
    log.close()
    assert (tmp_path / "xferlog.1").read_text().splitlines()[0] == "old line"
    assert "/before" in (tmp_path / "xferlog.1").read_text()
    assert [Entry.parse(text).filename for text in path.read_text().splitlines()] == ["/after"]


def test_unwritable_file(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        TransferLog(str(tmp_path / "missing" / "xferlog"), reactor=Clock())


def test_readme_example_line() -> None:
    from test_plugins import readme_blocks

    [text] = readme_blocks("", "Operating exftp")
    example = text.strip()
    assert example == line(transfer(peer="198.51.100.7", seconds=0.42))
    assert Entry.parse(example).filename == "/in/report.csv"
