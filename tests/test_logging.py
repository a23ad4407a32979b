"""
The log observers twistd gets from C{twistd exftp}: the same text lines as
twistd's own observer, JSON, and SIGUSR1 rotation of a log file.
"""

from __future__ import annotations

import io
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import LogLevel, globalLogPublisher, textFileLogObserver
from twisted.python import log as legacy_log
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile

from exftp._logging import _SecondClock, log_observer, quietly, rotate_on_sigusr1


class _Peer:
    host = "192.0.2.9"
    port = 21


_EVENTS: list[dict[str, Any]] = [
    {
        "log_format": "Login of {user!r} from {peer}",
        "user": "ann",
        "peer": "192.0.2.7",
        "log_namespace": "exftp",
        "log_level": LogLevel.info,
        "log_time": 1764601200.25,
    },
    {"log_format": "legacy line", "log_system": "HTTPChannel,3,127.0.0.1", "log_time": 1764601200.75},
    {"log_format": "two\nlines", "log_namespace": "exftp", "log_level": LogLevel.warn, "log_time": 1764601201.0},
    {"log_format": "no time", "log_namespace": "exftp", "log_level": LogLevel.info},
    {"log_format": "{peer.host}:{peer.port:05d} {size:,} {name!r:>8}", "peer": _Peer(), "size": 1234567,
     "name": "a b", "log_namespace": "exftp", "log_level": LogLevel.debug, "log_time": 1764601203.0},
    {"log_format": "called {answer()}", "answer": lambda: 42, "log_time": 1764601203.5},
    {"log_format": "missing {nothing}", "log_namespace": "exftp", "log_time": 1764601204.0},
    {"log_format": "positional {}", "log_time": 1764601204.0},
    {"log_format": b"bytes format {n}", "n": 1, "log_time": 1764601204.0},
    {"log_format": "", "log_time": 1764601204.0},
    {"log_format": "system with\na break", "log_system": "odd\nsystem", "log_time": 1764601205.0},
    {"message": ("no format",), "isError": 0, "system": "-", "time": 1764601205.0, "log_time": 1764601205.0},
]


def _failure_event() -> dict[str, Any]:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        failure = Failure()
    return {
        "log_format": "Unexpected error handling {verb}",
        "verb": "LIST",
        "log_failure": failure,
        "log_namespace": "exftp",
        "log_level": LogLevel.critical,
        "log_time": 1764601202.5,
    }


def test_text_lines_are_twisteds() -> None:
    events = [*_EVENTS, _failure_event()]
    ours, theirs = io.StringIO(), io.StringIO()
    observer, reference = log_observer(ours, "text"), textFileLogObserver(theirs)
    for event in events:
        observer(dict(event))
        reference(dict(event))
    assert ours.getvalue() == theirs.getvalue()
    assert "ZeroDivisionError" in ours.getvalue() and "Login of 'ann' from 192.0.2.7" in ours.getvalue()


def _json_records(*events: dict[str, Any]) -> list[dict[str, Any]]:
    out = io.StringIO()
    observer = log_observer(out, "json")
    for event in events:
        observer(dict(event))
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_are_flat_objects_that_shippers_read() -> None:
    (record,) = _json_records(_EVENTS[0])
    assert record == {
        "time": "2025-12-01T15:00:00.250Z",
        "level": "info",
        "message": "Login of 'ann' from 192.0.2.7",
        "logger": "exftp",
        "user": "ann",
        "peer": "192.0.2.7",
    }


def test_every_event_is_one_json_line() -> None:
    records = _json_records(*_EVENTS, _failure_event())
    # The empty-text event is left out, as in the text format; every other is a line.
    assert len(records) == len(_EVENTS)
    assert all({"time", "level", "message", "logger"} <= record.keys() for record in records)
    assert not any(key.startswith("log_") for record in records for key in record)
    by_message = {record["message"]: record for record in records}
    assert by_message["legacy line"]["system"] == "HTTPChannel,3,127.0.0.1"
    assert by_message["no format"].keys() == {"time", "level", "message", "logger"}
    assert by_message["two\nlines"]["level"] == "warn"
    assert by_message["no time"]["time"] is None
    odd = by_message["192.0.2.9:00021 1,234,567    'a b'"]
    assert odd["peer"].startswith("<test_logging._Peer object") and odd["size"] == 1234567 and odd["level"] == "debug"
    failure = by_message["Unexpected error handling LIST"]
    assert failure["level"] == "critical" and failure["verb"] == "LIST"
    assert "ZeroDivisionError" in failure["traceback"] and "division by zero" in failure["error"]


def test_json_keeps_fields_named_like_its_own_keys_and_survives_odd_values() -> None:
    odd = {"time": 5, "level": "x", "ratio": float("nan"), "raw": b"\xff", "nested": {1: "a"}}
    (record,) = _json_records(
        {"log_format": "m", "log_time": 0.0, "log_level": LogLevel.error, "log_namespace": "exftp.test", **odd}
    )
    assert record["time"] == "1970-01-01T00:00:00.000Z" and record["field_time"] == 5 and record["field_level"] == "x"
    assert record["level"] == "error" and record["logger"] == "exftp.test"
    assert record["ratio"] == "nan" and record["raw"] == "b'\\xff'" and record["nested"] == "{1: 'a'}"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_routine_messages_logged_quietly_are_left_out(log_format: str) -> None:
    out = io.StringIO()
    observer = log_observer(out, log_format)
    globalLogPublisher.addObserver(observer)
    try:
        quietly(legacy_log.msg, "routine port line")
        quietly(legacy_log.err, Failure(ZeroDivisionError()), "but errors stay")
        legacy_log.msg("an ordinary line")
    finally:
        globalLogPublisher.removeObserver(observer)
    text = out.getvalue()
    assert "routine port line" not in text
    assert "but errors stay" in text and "ZeroDivisionError" in text
    assert "an ordinary line" in text
    assert quietly(lambda a, b: a + b, 2, 3) == 5


def test_each_second_is_formatted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float | None] = []

    def counting(when: float | None) -> str:
        calls.append(when)
        return f"<{when}>"

    monkeypatch.setattr("exftp._logging.formatTime", counting)
    clock = _SecondClock()
    stamps = [clock(when) for when in (100.1, 100.9, 101.0, 101.5, None, 102.2)]
    assert stamps == ["<100.1>", "<100.1>", "<101.0>", "<101.0>", "<None>", "<102.2>"]
    assert calls == [100.1, 101.0, None, 102.2]


@pytest.fixture
def no_sigusr1_handler() -> Iterator[None]:
    previous = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGUSR1, previous)


class _ImmediateReactor:
    def callFromThread(self, function: Any, *args: Any) -> None:
        function(*args)


def test_sigusr1_rotates_a_log_file(tmp_path: Path, no_sigusr1_handler: None) -> None:
    log_file = LogFile.fromFullPath(str(tmp_path / "exftp.log"))
    observer = log_observer(log_file, "text")
    rotate_on_sigusr1(_ImmediateReactor(), log_file)
    observer(dict(_EVENTS[0]))
    os.kill(os.getpid(), signal.SIGUSR1)
    observer(dict(_EVENTS[2]))
    log_file.close()
    assert "Login of 'ann'" in (tmp_path / "exftp.log.1").read_text()
    assert "two\n\tlines" in (tmp_path / "exftp.log").read_text()


def test_standard_output_and_other_handlers_are_left_alone(tmp_path: Path, no_sigusr1_handler: None) -> None:
    rotate_on_sigusr1(_ImmediateReactor(), io.StringIO())
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL

    def mine(signum: int, frame: Any) -> None:
        return None

    signal.signal(signal.SIGUSR1, mine)
    log_file = LogFile.fromFullPath(str(tmp_path / "exftp.log"))
    rotate_on_sigusr1(_ImmediateReactor(), log_file)
    log_file.close()
    assert signal.getsignal(signal.SIGUSR1) is mine


def test_plain_events_skip_twisteds_formatter(monkeypatch: pytest.MonkeyPatch) -> None:
    handed_over: list[dict[str, Any]] = []

    def twisted_format(event: dict[str, Any], formatTime: Any) -> str:
        handed_over.append(event)
        return "from Twisted\n"

    monkeypatch.setattr("exftp._logging.formatEventAsClassicLogText", twisted_format)
    out = io.StringIO()
    observer = log_observer(out, "text")
    observer(dict(_EVENTS[0]))  # formatted here
    observer({"log_format": "called {answer()}", "answer": lambda: 42})  # only Twisted calls
    observer(_failure_event())  # tracebacks are Twisted's
    assert out.getvalue().splitlines()[0].endswith("[exftp#info] Login of 'ann' from 192.0.2.7")
    assert [event["log_format"] for event in handed_over] == ["called {answer()}", "Unexpected error handling {verb}"]


def test_the_readmes_json_line_is_what_a_login_writes() -> None:
    from test_plugins import readme_blocks

    [text] = readme_blocks("jsonl", "Operating exftp")
    login = {"log_format": "Login of {user!r} from {peer}", "user": "alice", "peer": "198.51.100.7",
             "log_namespace": "exftp", "log_level": LogLevel.info, "log_time": 1796689969.123}  # fmt: skip
    assert _json_records(login) == [json.loads(text)]
