"""The thread that stops guests running past their deadline (owned by the runtime)."""

from __future__ import annotations

import threading
import time
from typing import Protocol

__all__ = ["Watchdog", "Watched"]


class Watched(Protocol):
    deadline: float | None  # time.monotonic() past which it is stopped

    def overran(self) -> None:
        """Stop it: it ran past its deadline."""


class Watchdog:
    """Checks every ``TICK`` seconds while anything is watched; starts with the first
    ``watch`` and stops at ``close`` (a later ``watch`` starts it again)."""

    TICK = 0.05

    def __init__(self) -> None:
        self._running: set[Watched] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def watch(self, guest: Watched) -> None:
        with self._lock:
            self._running.add(guest)
            if self._thread is None:
                self._stop = threading.Event()
                self._thread = threading.Thread(target=self._loop, args=(self._stop,), name="wasinn-lab-watchdog",
                                                daemon=True)
                self._thread.start()

    def forget(self, guest: Watched) -> None:
        with self._lock:
            self._running.discard(guest)

    def _loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.TICK):
            now = time.monotonic()
            with self._lock:
                late = [guest for guest in self._running if guest.deadline is not None and now > guest.deadline]
            for guest in late:
                guest.overran()

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None:
            thread.join()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
