"""llama.cpp's log, which goes through one callback for the whole process.

wasinn-lab installs its callback only while it holds llama.cpp objects (``acquire``
with the first weights, ``release`` with the last), and puts back whatever was there
before. Its own calls into llama.cpp run in a ``section``, on their thread: every line
they log goes to Python logging (the ``wasinn_lab.llama_cpp`` logger, at the line's
level), and is printed to stderr as well only if the context asked for it
(``enable-log``; ``enable-debug-log`` adds the debug lines). Nothing reaches stderr, or
a notebook cell, unasked. Logs from anyone else's calls (a ``Llama(verbose=True)``
elsewhere in the process) go on to the callback that was there before, as if wasinn-lab
were not loaded.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import llama_cpp

__all__ = ["acquire", "release", "Section", "carried", "logged", "in_some_section", "LOGGER"]

T = TypeVar("T")
LOGGER = "wasinn_lab.llama_cpp"
log = logging.getLogger(LOGGER)
# A library's log is the application's to show: without this, Python's last-resort
# handler would print every warning llama.cpp makes (one per context) to stderr.
log.addHandler(logging.NullHandler())

# ggml_log_level: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (the line goes on).
_CONTINUED = 5
_LEVELS = {0: logging.INFO, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_local = threading.local()
_lock = threading.Lock()
_users = 0
_previous: tuple[Any, Any] | None = None  # the callback and user data we replaced


class Section:
    """While a wasinn-lab call into llama.cpp runs on this thread: its log goes to Python
    logging, and to stderr too when ``verbose`` (with ``debug``, its debug lines as
    well); every whole line, debug ones too, is appended to ``record`` where one is given
    (what llama.cpp reports of a load). Cheap: it is on the per-token path."""

    __slots__ = ("_outer", "_printed", "_record")

    def __init__(self, verbose: bool, debug: bool = False, record: list[str] | None = None) -> None:
        self._printed = (logging.DEBUG if debug else logging.INFO) if verbose else logging.CRITICAL + 1
        self._record = record

    def __enter__(self) -> None:
        self._outer = getattr(_local, "printed", None), getattr(_local, "record", None)
        _local.printed, _local.record = self._printed, self._record

    def __exit__(self, *exc_info: object) -> None:
        _local.printed, _local.record = self._outer


def carried(work: Callable[[], T]) -> Callable[[], T]:
    """``work``, to run on another thread in the section this thread is in now."""
    printed = getattr(_local, "printed", None)

    def in_section() -> T:
        outer = getattr(_local, "printed", None)
        _local.printed = printed
        try:
            return work()
        finally:
            _local.printed = outer

    return in_section


@contextmanager
def in_some_section() -> Iterator[None]:
    """In the section this thread is in (a pool's llama context, made for whichever
    context asked first, logs as that one asked), else in a quiet one: never to stderr
    unasked."""
    if getattr(_local, "printed", None) is not None:
        yield
    else:
        with Section(False):
            yield


@contextmanager
def logged() -> Iterator[None]:
    """For code that drives llama.cpp itself (the benchmarks' baselines): what its calls
    on this thread log in the block goes to Python logging only, as wasinn-lab's own."""
    acquire()
    try:
        with Section(False):
            yield
    finally:
        release()


@llama_cpp.llama_log_callback
def _callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    printed = getattr(_local, "printed", None)
    if printed is None:  # not one of our calls: hand it on
        previous = _previous
        if previous is not None and previous[0]:
            previous[0](level, text, user_data)
        else:  # there was none: llama.cpp's own default prints everything
            print(text.decode("utf-8", "replace"), end="", file=sys.stderr, flush=True)
        return
    # llama.cpp writes a line in pieces (CONT): a record is made of each whole line.
    pending: list[str] = getattr(_local, "pending", None) or []
    if level != _CONTINUED:
        _local.line_level = _LEVELS.get(level, logging.INFO)
    pending.append(text.decode("utf-8", "replace"))
    _local.pending = pending
    if not pending[-1].endswith("\n"):
        return
    _local.pending = None
    line = "".join(pending)
    line_level: int = getattr(_local, "line_level", logging.INFO)
    log.log(line_level, "%s", line.rstrip("\n"))
    record = getattr(_local, "record", None)
    if record is not None:
        record.append(line)
    if line_level >= printed:
        print(line, end="", file=sys.stderr, flush=True)


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
