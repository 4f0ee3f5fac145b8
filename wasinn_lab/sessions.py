"""Sessions: the neutral execution API every ABI front-end drives.

Each execution context is a session with an id, its model, its parameters, its
generations and listeners that receive the text token by token. A front-end sets named
input tensors and computes, or pulls a generation token by token; it never sees the
backend. Parameters set from the host (``set``) wait for the next generation: a slider
moved while a generation runs returns at once, and a change that rebuilds the context
never lands between two of its tokens.

The manager caps how many sessions live at once and frees those idle too long. Sweeping
is lazy (on every open and listing) and can be called explicitly, so no thread races a
running generation.
"""

from __future__ import annotations

import codecs
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from .backends.base import Backend, EndReason, ExecutionContext, TokenEvent, TokenStream, Usage
from .errors import Busy, ConfigError, InvalidArgument, NNError, NotFound
from .metrics import Generation, generations_frame, tokens_frame
from .types import Tensor

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Session", "SessionManager", "Token", "TokenListener", "in_use"]

log = logging.getLogger(__name__)


class Token(NamedTuple):
    """A generated token as a session hands it on."""

    text: str  # decoded; a character split over two tokens comes whole with the second
    piece: bytes
    token_id: int
    time: float  # time.perf_counter() when it was sampled


TokenListener = Callable[[Token], None]

_ids = itertools.count(1)


def in_use(session_id: str, by: str) -> Busy:
    """The one way to say a session is taken (by a guest, a cell, a prompt box)."""
    return Busy(f"session {session_id!r} is in use by {by}: wait for it to end, or stop it")


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
        self._options = self.options = backend.options  # what it takes: the panel builds its controls from this
        self.inputs = backend.inputs  # the input names it takes; None: any
        self.build = backend.build
        self._lock = threading.RLock()  # one operation at a time
        self._pending: dict[str, Any] = {}  # set, not yet applied: applied where the next generation starts
        self._pending_lock = threading.Lock()
        self._listeners: list[TokenListener] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._running = False  # an operation is under way
        self._closed = False
        self._stream: TokenStream | None = None  # the generation being pulled token by token
        self._current: Generation | None = None  # from its start until the next input
        self._pending_host = 0.0  # host-call time before a generation starts (set_input)
        self._pending_since = 0.0
        self._stop_requested = False
        self._stopped = False  # the latest generation ended at a stop() request
        self._end_reason: EndReason | None = None  # how the latest generation ended
        self._holder: object | None = None  # the guest that drives this session now
        self._close_callbacks: list[Callable[[Session], None]] = []
        self._watchers: list[Callable[[dict[str, Any]], None]] = []
        self.generations: list[Generation] = []

    # -- what users read and set ----------------------------------------------------------

    @property
    def state(self) -> str:
        return "closed" if self._closed else "running" if self._running else "idle"

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def generating(self) -> bool:
        """A generation is under way (a compute, or a token stream not yet ended)."""
        return self._stream is not None or self._running

    @property
    def stopped(self) -> bool:
        """The latest generation ended because ``stop`` was asked for (not by itself)."""
        return self._stopped

    @property
    def end_reason(self) -> EndReason | None:
        """Why the latest generation ended: the model stopped it, it reached n-predict, or
        it was cancelled (``stop``, a new input, its end asked for). None while one runs,
        if it failed, or before any."""
        return self._end_reason

    @property
    def streaming(self) -> bool:
        """A token stream (``start_generation``) is under way and not yet ended."""
        return self._stream is not None

    @property
    def parameters(self) -> dict[str, Any]:
        """Every parameter, as the next generation will have it."""
        with self._pending_lock:
            return {**self._context.parameters, **self._pending}

    @property
    def pending(self) -> dict[str, Any]:
        """Changes made with ``set`` that wait for the next generation."""
        with self._pending_lock:
            return dict(self._pending)

    def get(self, key: str) -> Any:
        option = self._options.lookup(key)
        parameters = self.parameters
        if option is None or option.name not in parameters:
            raise ConfigError(f"session {self.id} has no parameter {key!r}; it has: {', '.join(sorted(parameters))}")
        return parameters[option.name]

    def set(self, options: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        """Change parameters for the next generation: ``set(temp=0.2)`` or
        ``set({"top-p": 0.9})``. Returns at once, even while a generation runs; a bad
        name or value raises InvalidArgument and changes nothing."""
        changes = self._options.normalize({**(options or {}), **kwargs}, strict=True)
        self._queue(changes)

    def configure(self, options: Mapping[str, Any]) -> None:
        """A guest's config (unknown keys are logged and ignored, as WasmEdge does);
        it applies from the next generation on, like ``set``."""
        self._queue(self._options.normalize(options, source=f"session {self.id}"))

    def _queue(self, changes: dict[str, Any]) -> None:
        self._check_open()
        current = self.parameters
        changes = {key: value for key, value in changes.items() if current.get(key) != value}
        if not changes:
            return
        self._context.check(changes)
        with self._pending_lock:
            self._pending.update(changes)
        for watcher in list(self._watchers):
            watcher(changes)

    def watch(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call ``callback(changed)`` after every change, from the host or the guest;
        returns the remover."""
        self._watchers.append(callback)
        return _remover(self._watchers, callback)

    def reload(self) -> bool:
        """Apply pending changes and rebuild now what they need (a context, or the
        weights), rather than at the next generation. False, with nothing done, while
        a generation is under way: they apply once it has ended."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if self.generating:
                return False
            self._check_open()
            self._apply_pending()
            self._context.prepare()
            return True
        finally:
            self._lock.release()

    @property
    def text(self) -> str:
        """Text of the latest generation, as far as it has got ("" once a new input is set)."""
        return self._current.text if self._current is not None else ""

    def usage(self) -> Usage:
        return self._context.usage()

    @property
    def counts(self) -> dict[str, int]:
        usage = self._context.usage()
        return {"input_tokens": usage.input_tokens, "evaluated_tokens": usage.evaluated_tokens,
                "output_tokens": usage.output_tokens}

    def metrics(self) -> pd.DataFrame:
        """One row per generation: tokens, prompt evaluation, time to first token, decode
        rate, and where the time went (the backend, the host boundary, the guest)."""
        return generations_frame(self.generations)

    def token_metrics(self) -> pd.DataFrame:
        """One row per generated token: its text, when it came and its latency."""
        return tokens_frame(self.generations)

    def account(self, call: str, seconds: float) -> None:
        """Host time spent in one wasi-nn call on this session (the front-ends report it,
        naming the call as their ABI does)."""
        current = self._current
        if current is None:
            if not self._pending_host:
                self._pending_since = time.perf_counter() - seconds
            self._pending_host += seconds
            return
        current.host_seconds += seconds
        count, total = current.host_calls.get(call, (0, 0.0))
        current.host_calls[call] = (count + 1, total + seconds)
        current.ended = time.perf_counter()

    def add_listener(self, listener: TokenListener) -> Callable[[], None]:
        """Call ``listener(token)`` for every generated token; returns its remover."""
        self._listeners.append(listener)
        return _remover(self._listeners, listener)

    def require_free(self, holder: object = None) -> None:
        """Raise Busy if a guest other than ``holder`` drives the session."""
        if self._holder is not None and self._holder is not holder:
            raise in_use(self.id, "another guest")

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
        """End the generation under way before its next token (safe from any thread)."""
        self._stop_requested = True

    def release(self) -> None:
        """Free what the context can rebuild (its KV cache) unless a generation needs it;
        what it computed stays readable."""
        with self._lock:
            if not self._closed and not self.generating:
                self._context.release()

    def on_close(self, callback: Callable[[Session], None]) -> Callable[[], None]:
        """Call ``callback(session)`` once it closes; returns the remover."""
        self._close_callbacks.append(callback)
        return _remover(self._close_callbacks, callback)

    def close(self) -> None:
        self.stop()  # a generation under way ends before its next token, not at its end
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._end_generation()
            self._context.close()
            self._listeners.clear()
        for callback in self._close_callbacks:
            callback(self)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the neutral execution API, as front-ends drive it --------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidArgument(f"session {self.id} is closed (finalized or expired)")

    def _apply_pending(self) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        if pending:
            self._context.configure(pending)

    @contextlib.contextmanager
    def _operation(self) -> Iterator[None]:
        """One operation on the context (the token path inlines this: it is per token)."""
        with self._lock:
            self._check_open()
            self._running = True
            try:
                yield
            finally:
                self._running = False
                self.last_used = self._clock()

    def set_input(self, name: str, tensor: Tensor) -> None:
        """Set a named input; it ends any generation under way, and the next one starts
        with the parameters set until now."""
        with self._operation():
            self._end_generation()
            self._apply_pending()
            self._context.set_input(name, tensor)
            self._current = None

    def compute(self, inputs: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Set ``inputs`` (if any), compute, and return every output by name. A context
        that generates runs its token stream to the end (listeners get each token;
        ``stop`` ends it early)."""
        for name, tensor in (inputs or {}).items():
            self.set_input(name, tensor)
        with self._operation():
            if self._context.generates:
                self._begin_generation()
                while self._pull() is not None:
                    pass
            else:
                self._end_generation()
                self._apply_pending()
                record = self._begin_record()
                try:
                    self._context.compute()
                finally:
                    self._finish_record(record)
            return {name: self._context.get_output(name) for name in self._context.output_names()}

    def start_generation(self) -> None:
        """Begin a generation on the inputs set, to be pulled with ``next_token``."""
        with self._lock:
            self._check_open()
            self._begin_generation()

    def next_token(self) -> Token | None:
        """The next token of the generation under way, or None once it has ended (by
        itself, or at ``stop``); after None the generation is over."""
        with self._lock:
            self._check_open()
            if self._stream is None:
                raise InvalidArgument(f"session {self.id} has no generation under way: start one first")
            self._running = True
            try:
                return self._pull()
            finally:
                self._running = False
                self.last_used = self._clock()

    def end_generation(self) -> None:
        """End the generation under way here (nothing if there is none)."""
        with self._lock:
            self._end_generation()

    def output_names(self) -> list[str]:
        with self._lock:
            self._check_open()
            return self._context.output_names()

    def get_output(self, name: str) -> Tensor:
        with self._lock:
            self._check_open()
            self.last_used = self._clock()
            return self._context.get_output(name)

    # -- inside the lock ------------------------------------------------------------------

    def _begin_record(self) -> Generation:
        self._stop_requested = self._stopped = False
        self._decoder.reset()
        # A generation starts where its input was given, if a front-end timed that.
        started = self._pending_since if self._pending_host else time.perf_counter()
        record = self._current = Generation(started=started, host_seconds=self._pending_host)
        self._pending_host = 0.0
        self.generations.append(record)
        return record

    def _finish_record(self, record: Generation) -> None:
        usage = self._context.usage()
        (record.prompt_tokens, record.evaluated_tokens, record.output_tokens,
         record.prompt_seconds, record.backend_seconds) = usage
        record.ended = time.perf_counter()

    def _begin_generation(self) -> None:
        self._end_generation()
        self._apply_pending()
        self._stream = self._context.generate()
        self._end_reason = None
        self._begin_record()

    def _pull(self) -> Token | None:
        """One token of the stream under way. This runs for every token, right after the
        backend has evicted the interpreter from the CPU caches: it is kept short."""
        stream = self._stream
        if stream is None or self._stop_requested:
            self._stopped = self._stop_requested
            self._end_generation()
            return None
        try:
            event: TokenEvent | None = stream.next_token()
        except BaseException:
            self._end_generation()
            raise
        if event is None:
            self._end_generation()
            return None
        token = Token(self._decoder.decode(event.piece), event.piece, event.token_id, event.time)
        record = self._current
        if record is not None:
            record.token_times.append(event.time)
            record.token_texts.append(token.text)
            record.output_tokens += 1  # live; the backend's count replaces it at the end
        for listener in self._listeners:
            listener(token)
        return token

    def _end_generation(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()
            self._end_reason = stream.end_reason
            if self._current is not None:
                self._finish_record(self._current)


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
        params: Mapping[str, Any] | None = None,
    ) -> Session:
        """A session on ``context`` (which it then owns: on any failure here it is
        closed), with ``params`` (a person's: unknown names are errors) set."""
        self.sweep()
        try:
            with self._lock:
                if session_id is not None and session_id in self._sessions:
                    raise Busy(f"session {session_id!r} is already open")
                if len(self._sessions) >= self.max_sessions:
                    raise Busy(
                        f"{len(self._sessions)} sessions are open, the maximum is {self.max_sessions}: "
                        "close some or raise max_sessions"
                    )
                session = Session(context, backend, model=model, guest=guest, clock=self._clock, session_id=session_id)
        except NNError:
            context.close()
            raise
        try:
            if params:
                session.set(params)
        except BaseException:
            session.close()
            raise
        with self._lock:
            self._sessions[session.id] = session
        session.on_close(self._forget)  # however it closes, the manager lets it go
        return session

    def _forget(self, session: Session) -> None:
        with self._lock:
            if self._sessions.get(session.id) is session:
                del self._sessions[session.id]

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

    def close_all(self) -> None:
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.close()

    def __iter__(self) -> Iterator[Session]:
        self.sweep()
        return iter(list(self._sessions.values()))

    def __len__(self) -> int:
        return len(self._sessions)
