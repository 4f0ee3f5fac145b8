"""A guest running on a worker thread, what it does arriving as events.

The thread that started it stays free: in a kernel that is the main thread, which keeps
receiving KeyboardInterrupt and owns the display. An interactive task reads its stdin
from a pipe fed turn by turn with ``send()``.

When is a turn over? wasmtime reads stdin ahead on a background task, so "the guest is
blocked reading stdin" cannot be observed. A turn is over once the guest has answered
(some event since ``send``), none of its sessions is generating, and it has been quiet
for ``quiet`` seconds: model loads and prompt evaluation happen before the first event
or while a session runs, so they do not end a turn early.
"""

from __future__ import annotations

import enum
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError, Timeout
from .runtime import GuestInstance, RunResult
from .runtime.output import OutputSink
from .sessions import Session, Token

__all__ = ["GuestTask", "Event", "EventKind", "Hooks"]

_POLL = 0.02  # seconds between checks while no output arrives
QUIET = 0.25  # seconds of silence, after an answer, that end an interactive turn
GRACE = 2.0  # seconds a stopped generation's guest gets to finish its turn before it is stopped too
DRAIN = 30.0  # seconds to wait for an interrupted guest to unwind


class EventKind(enum.Enum):
    """What a ``GuestTask`` event reports; ``Event.data`` is as each member's comment says."""

    STDOUT = "stdout"  # bytes the guest wrote to stdout
    STDERR = "stderr"  # bytes the guest wrote to stderr
    TOKEN = "token"  # model text, token by token, from the sessions the guest uses
    SESSION = "session"  # a session the guest opened or adopted
    NN_ERROR = "nn-error"  # what a failed wasi-nn call said (the guest saw only a code)
    TURN = "turn"  # interactive: the guest consumed its input and waits for more
    DONE = "done"  # the guest ended: data is a RunResult, or the exception it raised


@dataclass(frozen=True)
class Event:
    """One thing a running guest did (``GuestTask.events``): its ``kind`` and ``data``."""

    kind: EventKind
    data: Any = None


@dataclass(frozen=True)
class Hooks:
    """What a run reports, and to whom; the runner wires them into the guest's world."""

    on_stdout: OutputSink | None = None
    on_stderr: OutputSink | None = None
    on_session: Callable[[Session], None] | None = None
    on_error: Callable[[str], None] | None = None
    on_instance: Callable[[GuestInstance], None] | None = None
    stdin: Path | None = None  # an interactive task's pipe


Runner = Callable[[Hooks], RunResult]


class GuestTask:
    """Run ``runner(hooks)`` on a worker thread (see ``Host.start``).

    ``output_events=False`` leaves the guest's output and errors to ``hooks``' own
    callbacks, on the worker, and makes no TOKEN events: ``events()`` then gives SESSION
    and DONE alone, and a waiting thread pays nothing per token (``Host.run``)."""

    def __init__(self, runner: Runner, hooks: Hooks = Hooks(), *, interactive: bool, output_events: bool = True) -> None:
        self._events: queue.Queue[Event] = queue.Queue()
        self.sessions: list[Session] = []
        self._detach: list[Callable[[], None]] = []
        self._stopping = False
        self.result: RunResult | None = None
        self._pipe: tuple[int, int] | None = None
        self._output_events = output_events
        ours = replace(hooks, on_session=self._adopt, on_instance=self._started)
        if interactive:
            read_end, write_end = os.pipe()
            self._pipe = (read_end, write_end)
            ours = replace(ours, stdin=Path(f"/proc/self/fd/{read_end}"))
        if output_events:
            ours = replace(
                ours,
                on_stdout=lambda data: self._events.put(Event(EventKind.STDOUT, data)),
                on_stderr=lambda data: self._events.put(Event(EventKind.STDERR, data)),
                on_error=lambda message: self._events.put(Event(EventKind.NN_ERROR, message)),
            )
        self._instance: GuestInstance | None = None
        self._interrupted = False
        self._thread = threading.Thread(target=self._work, args=(runner, ours), name="wasinn-lab-guest", daemon=True)
        self._thread.start()

    # -- the worker -----------------------------------------------------------------------

    def _started(self, instance: GuestInstance) -> None:
        self._instance = instance
        if self._interrupted:  # interrupted while it was being instantiated
            instance.interrupt()

    def _adopt(self, session: Session) -> None:
        self.sessions.append(session)

        def on_token(token: Token) -> None:
            if self._output_events:
                self._events.put(Event(EventKind.TOKEN, token.text))
            if self._stopping:  # a stop asked for before this session or generation began
                session.stop()

        self._detach.append(session.add_listener(on_token))
        self._events.put(Event(EventKind.SESSION, session))

    def _work(self, runner: Runner, hooks: Hooks) -> None:
        outcome: RunResult | BaseException
        try:
            outcome = self.result = runner(hooks)
        except BaseException as exc:  # handed to the thread that reads the events
            outcome = exc
        finally:
            for detach in self._detach:  # named sessions outlive the task
                detach()
            if self._pipe is not None:
                os.close(self._pipe[0])
        self._events.put(Event(EventKind.DONE, outcome))

    # -- the caller's side ----------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the guest's thread still runs."""
        return self._thread.is_alive()

    def send(self, text: str | bytes) -> None:
        """Give an interactive guest more input (a turn)."""
        if self._pipe is None:
            raise ConfigError("send() needs a task started with interactive=True")
        if self._pipe[1] < 0:
            raise ConfigError("this task's input is closed: start a new one")
        data = text.encode() if isinstance(text, str) else text
        self._stopping = False  # a new turn: an earlier stop was for the earlier one
        if self._instance is not None:
            self._instance.restart_clock()  # the time limit is per turn
        os.write(self._pipe[1], data)

    def stop(self) -> None:
        """End the generation under way within one token (or the next one, if none has
        begun yet); the guest carries on. A stopped task stays stopped."""
        self._stopping = True
        for session in self.sessions:
            session.stop()

    def interrupt(self) -> None:
        """Stop the guest itself, even one spinning without host calls (it traps); a
        guest not instantiated yet is stopped as soon as it is."""
        self._interrupted = True
        if self._instance is not None:
            self._instance.interrupt()

    def wind_down(self, on_event: Callable[[Event], None] = lambda event: None) -> None:
        """After an interrupt: end the generation under way within a token, and stop the
        guest itself if it has not ended (or finished its turn) ``GRACE`` seconds later,
        however much it writes meanwhile; hands on its events. What the guest raises then
        is the interrupt's consequence, not raised here: the caller re-raises the interrupt."""
        ended = False
        try:
            self.stop()
            ended = self._drain(GRACE, on_event)
        finally:
            if not ended:  # its grace is over, or a second interrupt cut it short
                self.interrupt()
        if ended:
            return
        # A guest still not unwound after the drain is blocked outside wasm (in a WASI
        # call): it ends at its deadline, and the interrupt is not held up for it.
        self._drain(DRAIN, on_event)

    def _drain(self, seconds: float, on_event: Callable[[Event], None]) -> bool:
        """Hand on events for at most ``seconds`` in all; True if the guest ended or its
        turn did."""
        try:
            for event in self.events(deadline=time.monotonic() + seconds):
                on_event(event)
        except Timeout:
            return False
        return True

    def wait(self) -> RunResult:
        """Wait on this thread for the guest to end: its result, or what it raised, raised
        here.

        The guest runs on the task's worker because a KeyboardInterrupt raised as a
        wasmtime host call begins escapes wasmtime-py's trampoline and the process
        crashes; signals land only on the main thread. Here an interrupt stops the guest
        (its generation first, ``wind_down``) and is raised once the guest has unwound."""
        try:
            outcome = next(event.data for event in self.events() if event.kind is EventKind.DONE)
        except KeyboardInterrupt:
            self.wind_down()
            raise
        if isinstance(outcome, BaseException):
            raise outcome
        assert isinstance(outcome, RunResult)
        return outcome

    def end(self, timeout: float = DRAIN) -> None:
        """End the guest now, whatever it is doing (its generation, the guest itself, its
        input), and wait for its thread. A guest blocked outside wasm (a WASI sleep) ends
        when that call returns."""
        self.stop()
        self.interrupt()
        self.close(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """End an interactive guest's input (EOF) and wait for it to finish."""
        if self._pipe is not None and self._pipe[1] >= 0:
            os.close(self._pipe[1])
            self._pipe = (self._pipe[0], -1)
        self._thread.join(timeout)

    def events(self, timeout: float | None = None, *, deadline: float | None = None,
               quiet: float = QUIET) -> Iterator[Event]:
        """Events as they come, until the guest ends (DONE) or, for an interactive guest,
        its turn is over (TURN). Polls, so the calling thread stays interruptible.
        Raises Timeout after ``timeout`` seconds without any event, or at ``deadline``
        (a ``time.monotonic()``) whatever came before it."""
        silent = 0.0
        answered = False
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise Timeout("the guest did not end in time")
            try:
                event = self._events.get(timeout=_POLL)
            except queue.Empty:
                silent += _POLL
                if timeout is not None and silent > timeout:
                    raise Timeout(f"the guest did nothing for {timeout:.0f} s") from None
                generating = any(session.state == "running" for session in self.sessions)
                awaiting_input = self._pipe is not None and self._pipe[1] >= 0
                if awaiting_input and answered and not generating and silent >= quiet:
                    yield Event(EventKind.TURN)
                    return
                continue
            silent = 0.0
            answered = True
            yield event
            if event.kind is EventKind.DONE:
                return
