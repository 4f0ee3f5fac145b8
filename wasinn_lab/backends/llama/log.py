"""llama.cpp's log, which goes through one callback for the whole process.

wasinn-lab installs its callback only while it holds llama.cpp objects (``acquire``
with the first weights, ``release`` with the last), and puts back whatever was there
before. Its own calls into llama.cpp run in a ``section``, on their thread: the log is
printed there if the context asked for it (``enable-log``) and dropped if not. Logs from
anyone else's calls (a ``Llama(verbose=True)`` elsewhere in the process) go on to the
callback that was there before, as if wasinn-lab were not loaded.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import llama_cpp

__all__ = ["acquire", "release", "Section", "carried"]

T = TypeVar("T")
_DEBUG = 4
_local = threading.local()
_lock = threading.Lock()
_users = 0
_previous: tuple[Any, Any] | None = None  # the callback and user data we replaced


class Section:
    """While a wasinn-lab call into llama.cpp runs on this thread: print its log
    (``verbose``; with ``debug``, its debug lines too) or drop it, and append every line,
    debug ones too, to ``record`` where one is given (what llama.cpp reports of a load).
    Cheap: it is on the per-token path."""

    __slots__ = ("_level", "_outer", "_record")

    def __init__(self, verbose: bool, debug: bool = False, record: list[str] | None = None) -> None:
        self._level = (_DEBUG + 1 if debug else _DEBUG) if verbose else 0  # levels below this print
        self._record = record

    def __enter__(self) -> None:
        self._outer = getattr(_local, "level", None), getattr(_local, "record", None)
        _local.level, _local.record = self._level, self._record

    def __exit__(self, *exc_info: object) -> None:
        _local.level, _local.record = self._outer


def carried(work: Callable[[], T]) -> Callable[[], T]:
    """``work``, to run on another thread in the section this thread is in now."""
    level = getattr(_local, "level", None)

    def in_section() -> T:
        outer = getattr(_local, "level", None)
        _local.level = level
        try:
            return work()
        finally:
            _local.level = outer

    return in_section


@llama_cpp.llama_log_callback
def _callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    shown_below = getattr(_local, "level", None)
    if shown_below is None:  # not one of our calls: hand it on
        previous = _previous
        if previous is not None and previous[0]:
            previous[0](level, text, user_data)
        else:  # there was none: llama.cpp's own default prints everything
            print(text.decode("utf-8", "replace"), end="", file=sys.stderr, flush=True)
        return
    record = getattr(_local, "record", None)
    if record is not None:
        record.append(text.decode("utf-8", "replace"))
    if level < shown_below or (level == 5 and shown_below):  # 5: a continued line
        print(text.decode("utf-8", "replace"), end="", file=sys.stderr, flush=True)


def acquire() -> None:
    """Install the callback (on the first use)."""
    global _users, _previous
    with _lock:
        if _users == 0:
            callback = llama_cpp.llama_log_callback()  # null until llama_log_get fills it
            user_data = ctypes.c_void_p()
            llama_cpp.llama_log_get(ctypes.byref(callback), ctypes.byref(user_data))
            _previous = (callback, user_data)
            llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))
        _users += 1


def release() -> None:
    """Put the previous callback back (after the last use)."""
    global _users, _previous
    with _lock:
        _users -= 1
        if _users == 0 and _previous is not None:
            callback, user_data = _previous
            llama_cpp.llama_log_set(callback, user_data)
            _previous = None
