"""Sessions: each execution context is a session with an id, its model, its parameters,
its text and token counts, and listeners that receive generated text token by token.

The manager caps how many sessions live at once and frees those idle too long. Sweeping
is lazy (on every open and listing) and can be called explicitly, so no thread races a
running generation.
"""

from __future__ import annotations

import codecs
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

from .backends.base import Backend, ExecutionContext, TokenEvent
from .errors import Busy, ConfigError, EndOfSequence, InvalidArgument, NotFound
from .types import Tensor

__all__ = ["Session", "SessionManager", "Generation", "TextListener"]

_METRIC_COLUMNS = (
    "prompt_tokens", "evaluated_tokens", "output_tokens", "prompt_eval_s", "ttft_s",
    "decode_tok_per_s", "wall_s", "llama_s", "host_boundary_s", "guest_s",
)

TextListener = Callable[[str, TokenEvent], None]


@dataclass
class Generation:
    """One generation: a ``compute``, or a ``compute_single`` sequence after ``set_input``.

    Times are ``time.perf_counter()`` seconds. Where the time went: ``backend_seconds``
    inside llama.cpp; ``boundary_seconds`` in the host's wasi-nn calls around it (guest
    memory, handles, sessions); ``guest_seconds`` everything else, in the guest."""

    prompt_tokens: int = 0
    evaluated_tokens: int = 0  # after prefix reuse: what llama.cpp actually had to evaluate
    output_tokens: int = 0
    started: float = 0.0
    ended: float = 0.0
    prompt_seconds: float = 0.0
    backend_seconds: float = 0.0
    host_seconds: float = 0.0  # inside wasi-nn host calls on this session, backend included
    token_times: list[float] = field(default_factory=list)
    token_texts: list[str] = field(default_factory=list)

    @property
    def time_to_first_token(self) -> float | None:
        return self.token_times[0] - self.started if self.token_times else None

    @property
    def decode_tokens_per_second(self) -> float | None:
        if len(self.token_times) < 2:
            return None
        return (len(self.token_times) - 1) / (self.token_times[-1] - self.token_times[0])

    @property
    def wall_seconds(self) -> float:
        return self.ended - self.started

    @property
    def boundary_seconds(self) -> float:
        return max(self.host_seconds - self.backend_seconds, 0.0)

    @property
    def guest_seconds(self) -> float:
        return max(self.wall_seconds - self.host_seconds, 0.0) if self.host_seconds else 0.0


_ids = itertools.count(1)


def _remover(items: list[Any], item: Any) -> Callable[[], None]:
    def remove() -> None:
        if item in items:
            items.remove(item)

    return remove


class Session:
    def __init__(
        self,
        context: ExecutionContext,
        backend: Backend,
        *,
        model: str | None,
        guest: str | None,
        clock: Callable[[], float],
        session_id: str | None = None,
    ) -> None:
        self.id = session_id or f"s{next(_ids)}"
        self.model = model
        self.guest = guest
        self.created = clock()
        self.last_used = self.created
        self._clock = clock
        self._context = context
        self._backend = backend
        self._lock = threading.RLock()
        self._listeners: list[TextListener] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._running = False
        self._closed = False
        self._streaming = False  # a compute_single sequence is under way
        self._current: Generation | None = None  # from its first compute until the next prompt
        self._pending_host = 0.0  # host-call time before a generation starts (set_input)
        self._pending_since = 0.0
        self._stop_requested = False
        self._holder: object | None = None  # the guest that drives this session now
        self._close_callbacks: list[Callable[[Session], None]] = []
        self._watchers: list[Callable[[dict[str, Any]], None]] = []
        self.generations: list[Generation] = []
        context.on_token = self._on_token

    # -- what users read and set ----------------------------------------------------------

    @property
    def state(self) -> str:
        return "closed" if self._closed else "running" if self._running else "idle"

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def parameters(self) -> dict[str, Any]:
        return self._context.parameters

    def get(self, key: str) -> Any:
        parameters = self.parameters
        canonical = key.replace("_", "-")
        if canonical not in parameters:
            raise KeyError(f"session {self.id} has no parameter {key!r}; it has: {', '.join(sorted(parameters))}")
        return parameters[canonical]

    def set(self, options: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        """Change parameters for the next generation; ``set(temp=0.2)`` or ``set({"top-p": 0.9})``."""
        normalized = self._backend.normalize_config({**(options or {}), **kwargs})
        with self._lock:
            self._check_open()
            self._context.configure(normalized)
        for watcher in list(self._watchers):
            watcher(normalized)

    def watch(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call ``callback(changed)`` after every ``set``, whoever calls it; returns the remover."""
        self._watchers.append(callback)
        return _remover(self._watchers, callback)

    def reload(self) -> None:
        """Rebuild now what changed settings need (a context, or the weights), rather than
        at the next generation."""
        self._operate(self._context.prepare)

    @property
    def text(self) -> str:
        """Text of the latest generation, as far as it has got ("" once a new prompt is set)."""
        return "".join(self._current.token_texts) if self._current is not None else ""

    @property
    def counts(self) -> dict[str, int]:
        stats = self._context.stats()
        return {"input_tokens": stats.input_tokens, "evaluated_tokens": stats.evaluated_tokens, "output_tokens": stats.output_tokens}

    def metrics(self) -> pd.DataFrame:
        """One row per generation: tokens, prompt evaluation, time to first token, decode
        rate, and where the time went (llama.cpp, the host boundary, the guest)."""
        import pandas as pd

        rows = [
            {
                "prompt_tokens": g.prompt_tokens,
                "evaluated_tokens": g.evaluated_tokens,
                "output_tokens": g.output_tokens,
                "prompt_eval_s": g.prompt_seconds,
                "ttft_s": g.time_to_first_token,
                "decode_tok_per_s": g.decode_tokens_per_second,
                "wall_s": g.wall_seconds,
                "llama_s": g.backend_seconds,
                "host_boundary_s": g.boundary_seconds,
                "guest_s": g.guest_seconds,
            }
            for g in self.generations
        ]
        return pd.DataFrame(rows, columns=list(_METRIC_COLUMNS)).rename_axis("generation")

    def token_metrics(self) -> pd.DataFrame:
        """One row per generated token: its text, when it came (seconds since the
        generation started) and its latency (since the previous token, or the start)."""
        import pandas as pd

        rows = []
        for number, g in enumerate(self.generations):
            previous = g.started
            for index, (stamp, text) in enumerate(zip(g.token_times, g.token_texts)):
                rows.append({"generation": number, "token": index, "text": text,
                             "t_s": stamp - g.started, "latency_s": stamp - previous})
                previous = stamp
        return pd.DataFrame(rows, columns=["generation", "token", "text", "t_s", "latency_s"])

    def account(self, seconds: float) -> None:
        """Host time spent in one wasi-nn call on this session (the front-end reports it)."""
        if self._current is None:
            if not self._pending_host:
                self._pending_since = time.perf_counter() - seconds
            self._pending_host += seconds
        else:
            self._current.host_seconds += seconds
            self._current.ended = time.perf_counter()

    def add_listener(self, listener: TextListener) -> Callable[[], None]:
        """Call ``listener(text, event)`` for every generated token; returns its remover."""
        self._listeners.append(listener)
        return _remover(self._listeners, listener)

    def require_free(self, holder: object = None) -> None:
        """Raise Busy if a guest other than ``holder`` drives the session."""
        if self._holder is not None and self._holder is not holder:
            raise Busy(f"session {self.id!r} is in use by another guest: wait for it to end, or stop it")

    def claim(self, holder: object) -> Callable[[], None]:
        """Let one guest at a time drive the session: two interleaving prompts would
        corrupt each other's KV cache. Returns the release; raises Busy if another holds it."""
        with self._lock:
            self.require_free(holder)
            self._holder = holder

        def release() -> None:
            with self._lock:
                if self._holder is holder:
                    self._holder = None

        return release

    def stop(self) -> None:
        """End the generation under way after its next token (safe from any thread).
        ``compute`` then returns the text so far; ``compute_single`` reports end of sequence."""
        self._stop_requested = True

    def on_close(self, callback: Callable[[Session], None]) -> Callable[[], None]:
        """Call ``callback(session)`` once it closes; returns the remover."""
        self._close_callbacks.append(callback)
        return _remover(self._close_callbacks, callback)

    def close(self) -> None:
        self.stop()  # a generation under way ends after its next token, not at its end
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._context.close()
            self._listeners.clear()
        for callback in self._close_callbacks:
            callback(self)

    # -- the wasi-nn operations, as front-ends drive them --------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidArgument(f"session {self.id} is closed (finalized or expired)")

    def _operate(self, operation: Callable[[], Any]) -> Any:
        with self._lock:
            self._check_open()
            self._running = True
            try:
                return operation()
            finally:
                self._running = False
                self.last_used = self._clock()

    def set_input(self, index: int, tensor: Tensor) -> None:
        def operation() -> None:
            before = self._context.parameters if index == 1 else None
            self._context.set_input(index, tensor)
            if before is not None:  # a config tensor (WasmEdge's index 1): tell the watchers
                after = self._context.parameters
                changed = {key: value for key, value in after.items() if before.get(key) != value}
                if changed:
                    for watcher in list(self._watchers):
                        watcher(changed)
            if index != 1:
                self._decoder.reset()
                self._streaming = False
                self._current = None

        self._operate(operation)

    def _record(self, step: Callable[[], None], *, single: bool) -> None:
        """Run a generation step and keep the generation's counts up to date. This runs for
        every streamed token, right after llama.cpp has evicted the interpreter from the CPU
        caches: it is kept to one frame and a handful of attribute writes."""
        with self._lock:
            self._check_open()
            self._running = True
            if not (single and self._streaming) or self._current is None:
                self._stop_requested = False
                # A generation starts where its prompt was given, if a front-end timed that.
                started = self._pending_since if self._pending_host else time.perf_counter()
                self._current = Generation(started=started, host_seconds=self._pending_host)
                self._pending_host = 0.0
                self.generations.append(self._current)
            record = self._current
            # Any error, end of sequence included, ends a compute_single sequence.
            self._streaming = False
            try:
                step()
                self._streaming = single
            finally:
                (record.prompt_tokens, record.evaluated_tokens, record.output_tokens,
                 record.prompt_seconds, record.backend_seconds) = self._context.stats()
                self._running = False
                record.ended = time.perf_counter()
                self.last_used = self._clock()

    def compute(self) -> None:
        self._record(self._context.compute, single=False)

    def compute_single(self) -> None:
        self._record(self._context.compute_single, single=True)

    def get_output(self, index: int) -> bytes:
        with self._lock:
            self._check_open()
            self.last_used = self._clock()
            return self._context.get_output(index)

    def get_output_single(self, index: int) -> bytes:
        with self._lock:
            self._check_open()
            self.last_used = self._clock()
            return self._context.get_output_single(index)

    def fini_single(self) -> None:
        def operation() -> None:
            self._context.fini_single()
            self._streaming = False

        self._operate(operation)

    def _on_token(self, event: TokenEvent) -> None:
        text = self._decoder.decode(event.piece)
        if self._current is not None:
            self._current.token_times.append(event.time)
            self._current.token_texts.append(text)
        for listener in list(self._listeners):
            listener(text, event)
        if self._stop_requested:
            self._stop_requested = False
            raise EndOfSequence("stopped on request")


class SessionManager:
    def __init__(
        self,
        *,
        max_sessions: int = 100,
        idle_timeout: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_sessions < 1:
            raise ConfigError(f"max_sessions must be at least 1, got {max_sessions}")
        if idle_timeout <= 0:
            raise ConfigError(f"idle_timeout must be a positive number of seconds, got {idle_timeout}")
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(
        self,
        context: ExecutionContext,
        backend: Backend,
        *,
        model: str | None,
        guest: str | None,
        session_id: str | None = None,
    ) -> Session:
        self.sweep()
        with self._lock:
            if session_id is not None and session_id in self._sessions:
                context.close()
                raise Busy(f"session {session_id!r} is already open")
            if len(self._sessions) >= self.max_sessions:
                context.close()
                raise Busy(
                    f"{len(self._sessions)} sessions are open, the maximum is {self.max_sessions}: "
                    "close some or raise max_sessions"
                )
            session = Session(context, backend, model=model, guest=guest, clock=self._clock, session_id=session_id)
            self._sessions[session.id] = session
        return session

    def find(self, session_id: str) -> Session | None:
        self.sweep()
        return self._sessions.get(session_id)

    def get(self, session_id: str) -> Session:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise NotFound(f"no open session {session_id!r}") from None

    def close(self, session_id: str) -> None:
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is None:
            raise NotFound(f"no open session {session_id!r}")
        session.close()

    def discard(self, session: Session) -> None:
        """Close ``session`` if it is still open; forget it either way."""
        with self._lock:
            self._sessions.pop(session.id, None)
        session.close()

    def sweep(self) -> list[str]:
        """Close sessions idle longer than ``idle_timeout``; returns their ids."""
        now = self._clock()
        with self._lock:
            expired = [
                session
                for session in self._sessions.values()
                if session.state == "idle" and now - session.last_used > self.idle_timeout
            ]
            for session in expired:
                del self._sessions[session.id]
        for session in expired:
            session.close()
        return [session.id for session in expired]

    def __iter__(self) -> Iterator[Session]:
        self.sweep()
        return iter(list(self._sessions.values()))

    def __len__(self) -> int:
        return len(self._sessions)
