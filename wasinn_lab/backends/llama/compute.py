"""The one thread on which llama.cpp computes, for the whole process.

llama.cpp's CPU backend runs each graph in an OpenMP parallel region, and libgomp keeps a
team of threads for every thread that has started one. Once the process holds more of
them than it has CPUs, libgomp stops spinning at its barriers and sleeps in the kernel
instead, and every matrix product pays for it: decoding from a guest's thread while
another thread had decoded before measured 28 tokens/s against 44 (Gemma 3 270M, 2
cores). So every decode the backend makes runs here, whichever thread asked for it, and
the process keeps one team.

The scheduler (``scheduler.py``) runs its steps here, one job each; an embedding's decode
is a job of its own between them. The thread starts with the first llama context or
pool sequence (``acquire``) and stops with the last (``release``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

from . import log

__all__ = ["ComputeThread", "compute_thread"]

T = TypeVar("T")


class ComputeThread:
    """The compute thread's owner: it runs while anyone holds it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._executor: ThreadPoolExecutor | None = None
        self._ident: int | None = None

    def acquire(self) -> None:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="wasinn-lab-compute",
                                                    initializer=self._started)
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            executor = self._executor if self._users == 0 else None
            if executor is not None:
                # An ident is reused by later threads: a stale one would make a guest's
                # thread think it is the compute thread.
                self._executor = self._ident = None
        if executor is not None:
            executor.shutdown()  # after what was asked of it

    def _started(self) -> None:
        self._ident = threading.get_ident()

    def submit(self, work: Callable[[], T]) -> Future[T]:
        """Start ``work`` on the thread (in the caller's log section) and return at once."""
        executor = self._executor
        if executor is None:
            raise RuntimeError("the compute thread runs only while a llama context holds it (acquire)")
        return executor.submit(log.carried(work))

    def run(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the thread and wait for it (at once, if this is the thread)."""
        if threading.get_ident() == self._ident:
            return work()
        return self.result(self.submit(work))

    @staticmethod
    def result(future: Future[T]) -> T:
        """What ``future`` gave. An interrupt while waiting waits on: a computation cannot
        be cut short, and nothing may touch its context until it is over."""
        try:
            return future.result()
        except KeyboardInterrupt:
            while not future.done():
                try:
                    wait([future])
                except KeyboardInterrupt:
                    continue
            raise


compute_thread = ComputeThread()
