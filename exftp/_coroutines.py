"""
Running a coroutine that usually finishes at once without a Deferred.

Most FTP commands (USER, PASS with a local user list, TYPE, PWD, QUIT...) never
wait: their coroutine returns on its first step. C{Deferred.fromCoroutine}
still builds a Deferred, a cancellation status and a copy of the context for
each, about a tenth of the work of a login. L{start} takes the first step
itself and makes the Deferred only for a coroutine that did not finish there.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

_T = TypeVar("_T")
_log = Logger(namespace="exftp")


def start(coroutine: Coroutine[Any, Any, _T]) -> Deferred[_T] | None:
    """
    Take C{coroutine}'s first step now.

    @return: C{None} when it finished in that step (its exception, if it
        raised one, propagates to the caller), otherwise a Deferred that
        follows the rest of it exactly as C{Deferred.fromCoroutine} would
        (results, errors and cancellation of what it waits for).
    """
    try:
        awaited = coroutine.send(None)
    except StopIteration:
        return None
    return Deferred.fromCoroutine(_resumed(coroutine, awaited))


async def _resumed(coroutine: Coroutine[Any, Any, _T], awaited: Any) -> _T:
    return await _Resume(coroutine, awaited)  # type: ignore[no-any-return]


class _Resume:
    """
    An awaitable that hands a suspended coroutine to Twisted: it first yields
    what the coroutine was waiting for (so that Twisted waits for it), then
    passes every result, error and close on to the coroutine.
    """

    def __init__(self, coroutine: Coroutine[Any, Any, Any], awaited: Any) -> None:
        self._coroutine = coroutine
        self._awaited: Any = awaited
        self._first = True

    def __await__(self) -> Generator[Any, Any, Any]:
        return self  # type: ignore[return-value]

    def __iter__(self) -> _Resume:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def send(self, value: Any) -> Any:
        if self._first:
            self._first = False
            awaited, self._awaited = self._awaited, None
            return awaited
        return self._coroutine.send(value)

    def throw(self, *args: Any) -> Any:
        self._first = False
        return self._coroutine.throw(*args)

    def close(self) -> None:
        self._coroutine.close()


def shielded(work: Deferred[None], what: str) -> Deferred[None]:
    """
    Follow C{work}, clean-up that must run to its end: cancelling the
    returned Deferred stops the waiting (it fires with C{None}), not the
    work, whose failure is then logged here.
    """
    follower: Deferred[None] = Deferred(lambda waiting: waiting.callback(None))

    def deliver(result: Failure | None) -> None:
        if isinstance(result, Failure) and not follower.called:
            follower.errback(result)
        elif not follower.called:
            follower.callback(None)
        elif isinstance(result, Failure):
            _log.failure("{what} failed", result, what=what)

    work.addBoth(deliver)
    return follower
