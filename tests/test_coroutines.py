"""
exftp._coroutines.start: a coroutine that finishes on its first step needs
no Deferred; one that waits is followed as Deferred.fromCoroutine would.
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import CancelledError, Deferred, succeed

from exftp._coroutines import start


def test_a_coroutine_that_finishes_at_once_needs_no_deferred() -> None:
    seen: list[int] = []

    async def command() -> None:
        seen.append(await succeed(1))  # an answer already there does not suspend

    assert start(command()) is None
    assert seen == [1]


def test_an_error_in_the_first_step_reaches_the_caller() -> None:
    async def command() -> None:
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        start(command())


def test_a_waiting_coroutine_gets_each_result_in_turn() -> None:
    first: Deferred[int] = Deferred()
    second: Deferred[str] = Deferred()
    seen: list[object] = []

    async def command() -> str:
        seen.append(await first)
        seen.append(await second)
        return "done"

    running = start(command())
    assert running is not None and not running.called and seen == []
    first.callback(7)
    assert seen == [7] and not running.called
    second.callback("x")
    assert seen == [7, "x"]
    assert running.result == "done"


def test_errors_of_what_it_waits_for_are_raised_inside_it() -> None:
    awaited: Deferred[int] = Deferred()
    caught: list[BaseException] = []

    async def command() -> int:
        try:
            return await awaited
        except KeyError as error:
            caught.append(error)
            return -1

    running = start(command())
    assert running is not None
    awaited.errback(KeyError("gone"))
    assert [type(error) for error in caught] == [KeyError]
    assert running.result == -1


def test_an_error_after_waiting_fails_the_deferred() -> None:
    awaited: Deferred[None] = Deferred()

    async def command() -> None:
        await awaited
        raise RuntimeError("late")

    running = start(command())
    assert running is not None
    failures: list[BaseException] = []
    running.addErrback(lambda failure: failures.append(failure.value))
    awaited.callback(None)
    assert [str(error) for error in failures] == ["late"]


def test_cancelling_cancels_what_it_waits_for_and_runs_its_clean_up() -> None:
    cancelled: list[bool] = []
    awaited: Deferred[None] = Deferred(lambda _: cancelled.append(True))
    cleaned: list[str] = []

    async def command() -> None:
        try:
            await awaited
        finally:
            cleaned.append("aborted the upload")

    running = start(command())
    assert running is not None
    failures: list[type[BaseException]] = []
    running.addErrback(lambda failure: failures.append(failure.type))
    running.cancel()
    assert cancelled == [True]
    assert cleaned == ["aborted the upload"]
    assert failures == [CancelledError]
