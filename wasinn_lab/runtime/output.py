"""Guest output: each stream an OS pipe that wasmtime writes into directly, and one
thread (the ``OutputPump``, owned by the runtime) that reads every live guest's pipes.

WASI's output callbacks would cost every write a hop to wasmtime's I/O thread and back
into Python (about 170 us a token when a guest prints each one); a write to a pipe
costs the guest a system call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections.abc import Callable

__all__ = ["OutputPipe", "OutputPump", "OutputSink"]

OutputSink = Callable[[bytes], None]
log = logging.getLogger(__name__)


class OutputPipe:
    """One output stream of a guest. The pump hands each chunk on as it arrives. The host
    writes into the same pipe (``stream-stdout``), in order with the guest, since both
    write from the guest's thread.

    Past ``cap`` bytes nothing more is kept or handed on, the pipe is still drained (so
    the guest never blocks on it), and ``on_overflow`` is called once."""

    def __init__(self, pump: OutputPump, forward: OutputSink | None, cap: int | None,
                 on_overflow: Callable[[], None]) -> None:
        self._chunks: list[bytes] = []
        self._forward = forward
        self._room = cap if cap is not None else -1  # bytes still kept; -1: no cap
        self._on_overflow = on_overflow
        self.overflowed = False
        self.read_fd, self._write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self._lock = threading.Lock()
        self._closed = False
        self._pump = pump
        pump.add(self)

    @property
    def path(self) -> str:
        """Where wasmtime opens the pipe: its own descriptor, for as long as it likes."""
        return f"/proc/self/fd/{self._write_fd}"

    def __call__(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._write_fd, view):]

    def drain(self) -> None:
        """Hand on everything written so far (all of it, once the guest has stopped)."""
        with self._lock:
            while not self._closed:
                try:
                    data = os.read(self.read_fd, 1 << 16)
                except BlockingIOError:
                    return
                if self._room >= 0:
                    if len(data) > self._room:
                        data = data[: self._room]
                        if not self.overflowed:
                            self.overflowed = True
                            self._on_overflow()
                    self._room -= len(data)
                if data:
                    self._chunks.append(data)
                    if self._forward is not None:
                        self._hand_on(data)

    def _hand_on(self, data: bytes) -> None:
        # The caller's callback must not take the output thread, every guest's, down with it.
        try:
            self._forward(data)  # type: ignore[misc]
        except Exception:
            log.exception("an output callback failed; this guest's output is still kept, not handed on")
            self._forward = None

    def text(self) -> str:
        self.drain()
        return b"".join(self._chunks).decode("utf-8", "replace")

    def close(self) -> None:
        """Once the guest can write no more: take the rest, then let the pipe go."""
        self._pump.remove(self)
        self.drain()
        with self._lock:  # the pump may hold this pipe still: it reads nothing once closed
            self._closed = True
            os.close(self.read_fd)
            os.close(self._write_fd)


class OutputPump:
    """The thread that reads every live guest's output as it arrives. It starts with the
    first pipe and stops at ``close``; a pipe added after that starts it again."""

    def __init__(self) -> None:
        self._pipes: dict[int, OutputPipe] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._poller = select.poll()
        self._wake_fd = -1  # an eventfd: a new pipe, or close, makes the thread poll again

    def add(self, pipe: OutputPipe) -> None:
        with self._lock:
            if self._thread is None:
                self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK)
                self._poller = select.poll()
                self._poller.register(self._wake_fd, select.POLLIN)
                for fd in self._pipes:
                    self._poller.register(fd, select.POLLIN)
                self._thread = threading.Thread(target=self._loop, args=(self._poller, self._wake_fd),
                                                name="wasinn-lab-output", daemon=True)
                self._thread.start()
            self._pipes[pipe.read_fd] = pipe
            self._poller.register(pipe.read_fd, select.POLLIN)
            os.eventfd_write(self._wake_fd, 1)

    def remove(self, pipe: OutputPipe) -> None:
        with self._lock:
            if self._pipes.pop(pipe.read_fd, None) is not None and self._thread is not None:
                self._poller.unregister(pipe.read_fd)

    def _loop(self, poller: select.poll, wake_fd: int) -> None:
        while True:
            for fd, _ in poller.poll():
                if fd == wake_fd:
                    with contextlib.suppress(BlockingIOError):
                        if os.eventfd_read(wake_fd) >= _STOP:
                            return
                    continue
                with self._lock:
                    pipe = self._pipes.get(fd)
                if pipe is not None:
                    pipe.drain()

    def close(self) -> None:
        """Stop the thread; pipes still open drain when their guests close them."""
        with self._lock:
            thread, self._thread = self._thread, None
            wake_fd, self._wake_fd = self._wake_fd, -1
            if thread is not None:
                os.eventfd_write(wake_fd, _STOP)
        if thread is not None:
            thread.join()
            os.close(wake_fd)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


_STOP = 1 << 32  # an eventfd count no number of wake-ups reaches
