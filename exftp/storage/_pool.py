"""
A bounded thread pool for storage I/O, apart from the reactor's own.

The reactor's pool also runs host-name lookups (the HTTP authenticators'
among them): sessions that keep it busy with disk work would make other
users' logins time out. Work whose caller has stopped waiting is not started.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore, IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

#: Threads for storage I/O in one pool, by default.
DEFAULT_THREADS = 8

_T = TypeVar("_T")


class StoragePool:
    """
    A thread pool for storage work, started on first use and stopped when
    the reactor shuts down.

    @param threads: the most jobs that run at once; more wait their turn.
    """

    def __init__(self, reactor: Any, threads: int = DEFAULT_THREADS, name: str = "exftp-storage") -> None:
        if threads < 1:
            raise ValueError("a storage pool needs at least one thread")
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=threads, name=name)
        # Daemon threads: a reactor that never shuts down (tests, an embedding
        # program) must not keep the process alive; a reactor that does stops
        # the pool first, which waits for the jobs.
        self._pool.threadFactory = _daemon_thread  # type: ignore[assignment]
        self._started = False

    @property
    def threads(self) -> int:
        """The most jobs that run at once."""
        return int(self._pool.max)

    def _start(self) -> None:
        if not self._started:
            self._started = True
            self._pool.start()
            core: IReactorCore = self._reactor
            core.addSystemEventTrigger("during", "shutdown", self._pool.stop)

    def run(self, function: Callable[..., _T], *args: Any, stopping: threading.Event | None = None) -> Deferred[_T]:
        """
        Run C{function(*args)} in a thread of this pool.

        @param stopping: once set, the job is not started if it has not
            been yet (it fails with C{ECANCELED}); a long job may look at it
            too, to stop early.
        """
        self._start()
        if stopping is None:
            job: Callable[[], _T] = lambda: function(*args)  # noqa: E731
        else:

            def job() -> _T:
                if stopping.is_set():
                    raise OSError(errno.ECANCELED, os.strerror(errno.ECANCELED))
                return function(*args)

        threads: IReactorThreads = self._reactor
        return deferToThreadPool(threads, self._pool, job)


def _daemon_thread(*args: Any, **kwargs: Any) -> threading.Thread:
    return threading.Thread(*args, daemon=True, **kwargs)


_shared: dict[int, tuple[Any, StoragePool]] = {}


def shared_pool(reactor: Any) -> StoragePool:
    """The storage pool of C{reactor} for storages made without one of their own."""
    known = _shared.get(id(reactor))
    if known is None or known[0] is not reactor:
        known = _shared[id(reactor)] = (reactor, StoragePool(reactor))
    return known[1]
