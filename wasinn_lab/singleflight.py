"""One load per key at a time, run outside its owner's lock.

A registry or cache that loads under its lock stalls every other caller for as long as
the load takes (seconds, for model weights), those asking for what is loaded already
included. Here the first caller of a key marks it as loading and loads without the
lock; a caller of the same key meanwhile waits for that load and looks again, so one
key is never loaded twice at once (no second copy of the weights).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["SingleFlight"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self, lock: threading.Lock | threading.RLock) -> None:
        self._lock = lock  # the owner's: it guards what ``find`` and ``keep`` read and change
        self._under_way: dict[K, threading.Event] = {}

    def under_way(self) -> list[K]:
        """The keys being loaded now (call it holding the owner's lock)."""
        return list(self._under_way)

    def get(
        self,
        key: K,
        find: Callable[[], V | None],
        load: Callable[[], V],
        keep: Callable[[V], None],
        before_load: Callable[[], None] = lambda: None,
    ) -> V:
        """``find()`` if it finds the value; else, once no other load of ``key`` is under
        way, ``before_load()`` (it may raise: nothing is loaded), ``load()`` without the
        lock, and ``keep(value)``. ``find``, ``before_load`` and ``keep`` run holding the
        owner's lock; ``keep`` in the same hold that ends the load, so a caller waiting
        for it finds the value. A load that fails lets the next caller try again."""
        while True:
            with self._lock:
                found = find()
                if found is not None:
                    return found
                loading = self._under_way.get(key)
                if loading is None:
                    before_load()
                    loading = self._under_way[key] = threading.Event()
                    break
            loading.wait()
        loaded = False
        try:
            value = load()
            loaded = True
        finally:
            try:
                with self._lock:
                    del self._under_way[key]
                    if loaded:
                        keep(value)
            finally:
                loading.set()  # whatever happened: no caller waits for good
        return value
