"""One session: an execution context with an id, its model, its parameters, its
generations and listeners that receive the text token by token. A front-end sets named
input tensors and computes, or pulls a generation token by token; it never sees the
backend. One operation runs at a time; ``set``, ``stop`` and the readers return at once
from any thread, even while a generation runs.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..backends.base import (
    Backend,
    EndReason,
    ExecutionContext,
    NextTokenDistribution,
    TokenEvent,
    TokenStream,
    Usage,
)
from ..errors import Busy, ConfigError, InvalidArgument
from ..metrics import generations_frame, tokens_frame
from ..types import Tensor
from .listeners import Token, TokenListener, remover
from .parameters import ParameterQueue
from .recording import Recorder

if TYPE_CHECKING:
    import pandas as pd

    from ..metrics import Generation
    from .manager import SessionManager

__all__ = ["Session", "in_use"]


def in_use(session_id: str, by: str) -> Busy:
    """The one way to say a session is taken (by a guest, a cell, a prompt box)."""
    return Busy(f"session {session_id!r} is in use by {by}: wait for it to end, or stop it")


class Session:
    """An execution context the host keeps, with an id, its model, its parameters, its
    generations and listeners that receive its text token by token: the neutral API every
    ABI front-end drives, and that Python drives directly (``Host.open_session``). One
    operation runs at a time; ``set``, ``stop`` and the readers return at once from any
    thread, even while a generation runs."""

    def __init__(
        self,
        context: ExecutionContext,
        backend: Backend,
        *,
        session_id: str,
        model: str | None,
        guest: str | None,
        clock: Callable[[], float],
        manager: SessionManager,
    ) -> None:
        self.id = session_id
        self.model = model
        self.guest = guest
        self.created = clock()
        self.last_used = self.created
        self._clock = clock
        self._context = context
        self._backend = backend
        self._manager = manager  # where its forks are opened
        self._options = self.options = backend.options  # what it takes: the panel builds its controls from this
        self.inputs = backend.inputs  # the input names it takes; None: any
        self.build = backend.build
        self._lock = threading.RLock()  # one operation at a time
        self._parameters = ParameterQueue(context)
        self._recorder = Recorder()
        self.generations = self._recorder.generations
        self._listeners: list[TokenListener] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._running = False  # an operation is under way
        self._closed = False
        self._stream: TokenStream | None = None  # the generation being pulled token by token
        self._stop_requested = False
        self._stopped = False  # the latest generation ended at a stop() request
        self._end_reason: EndReason | None = None  # how the latest generation ended
        self._holder: object | None = None  # the guest that drives this session now
        self._close_callbacks: list[Callable[[Session], None]] = []
        self._watchers: list[Callable[[dict[str, Any]], None]] = []

    # -- what users read and set ----------------------------------------------------------

    @property
    def state(self) -> str:
        """"running" from the start of a generation to its end, token stream included."""
        return "closed" if self._closed else "running" if self.generating else "idle"

    @property
    def closed(self) -> bool:
        """Whether the session was closed (or expired); a closed session is gone for good."""
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
        return self._parameters.current

    @property
    def pending(self) -> dict[str, Any]:
        """Changes made with ``set`` that wait for the next generation."""
        return self._parameters.pending

    def get(self, key: str) -> Any:
        """The current value of one parameter (any of its spellings); ``ConfigError``
        listing the parameters if it has none of that name."""
        option = self._options.lookup(key)
        parameters = self.parameters
        if option is None or option.name not in parameters:
            raise ConfigError(f"session {self.id} has no parameter {key!r}; it has: {', '.join(sorted(parameters))}")
        return parameters[option.name]

    def set(self, options: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        """Change parameters for the next generation: ``set(temp=0.2)`` or
        ``set({"top-p": 0.9})``. Returns at once, even while a generation runs; a bad
        name or value raises InvalidArgument and changes nothing."""
        self._queue(self._options.normalize({**(options or {}), **kwargs}, strict=True))

    def configure(self, options: Mapping[str, Any]) -> None:
        """A guest's config (unknown keys are logged and ignored, as WasmEdge does);
        it applies from the next generation on, like ``set``."""
        self._queue(self._options.normalize(options, source=f"session {self.id}"))

    def _queue(self, changes: dict[str, Any]) -> None:
        self._check_open()
        changed = self._parameters.queue(changes)
        if changed:
            for watcher in list(self._watchers):
                watcher(changed)

    def watch(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call ``callback(changed)`` after every change, from the host or the guest;
        returns the remover."""
        self._watchers.append(callback)
        return remover(self._watchers, callback)

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
            self._parameters.apply()
            self._context.prepare()
            return True
        finally:
            self._lock.release()

    def require_model(self, model: str | None) -> None:
        """Raise InvalidArgument unless the session runs ``model`` (None: a model a guest
        sent as bytes): a session is continued on its own model only."""
        if model != self.model:
            asked = repr(model) if model is not None else "a model sent as bytes"
            raise InvalidArgument(f"session {self.id!r} runs model {self.model!r}, not {asked}: "
                                  f"continue it on {self.model!r}, or name another session")

    @property
    def text(self) -> str:
        """Text of the latest generation, as far as it has got ("" once a new input is set)."""
        current = self._recorder.current
        return current.text if current is not None else ""

    def usage(self) -> Usage:
        """Token counts and backend time of the generation under way, or the latest one."""
        return self._context.usage()

    def metrics(self) -> pd.DataFrame:
        """One row per generation: tokens, prompt evaluation, time to first token, decode
        rate, and where the time went (the backend, the host boundary, the guest)."""
        return generations_frame(self.generations)

    def token_metrics(self) -> pd.DataFrame:
        """One row per generated token: its text, when it came and its latency; with the
        parameter logprobs on, also its logprob, probability after the sampler chain, rank,
        the model's entropy there and the likeliest alternatives (``top``)."""
        return tokens_frame(self.generations)

    def next_token_distribution(self, k: int = 20) -> NextTokenDistribution:
        """The ``k`` likeliest tokens to follow the current text (the prompt and what the
        latest generation made of it), as (text, probability) before and after the sampler
        chain of the session's parameters, pending changes included. Nothing is generated:
        the text, the outputs and the next generation stay as they were."""
        if k < 1:
            raise InvalidArgument(f"k must be at least 1, not {k}")
        with self._lock:
            self._check_open()
            if self.generating:
                raise Busy(f"session {self.id!r} is generating: ask for the next token's distribution once it ends")
            self.last_used = self._clock()
            return self._context.distribution(k, self._parameters.current)

    def account(self, call: str, seconds: float) -> None:
        """Host time spent in one wasi-nn call on this session (the front-ends report it,
        naming the call as their ABI does)."""
        self._recorder.account(call, seconds)

    def add_listener(self, listener: TokenListener) -> Callable[[], None]:
        """Call ``listener(token)`` for every generated token; returns its remover."""
        self._listeners.append(listener)
        return remover(self._listeners, listener)

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

    def fork(self, new_id: str | None = None, *, holder: object = None) -> Session:
        """A new open session that continues as this one would: the same model, parameters
        (pending changes too), inputs, text so far and cached state (a backend may copy its
        KV cache, or rebuild it on the next generation); from then on the two are
        independent. It is opened like any other (``new_id`` checked, the session limit
        counted), with no guest; with a ``holder``, claimed by it. Busy while a generation
        is under way here; InvalidArgument once this session is closed."""
        if not self._lock.acquire(blocking=False):
            raise self._busy_forking()
        try:
            self._check_open()
            if self.generating:
                raise self._busy_forking()
            context = self._context.fork()
            pending = self.pending
            current = self._recorder.current
            end_reason = self._end_reason
        finally:
            self._lock.release()
        twin = self._manager.open(context, self._backend, model=self.model, guest=None, session_id=new_id,
                                  holder=holder)
        twin._parameters.queue(pending)
        if current is not None:  # its text so far; its metrics stay this session's
            twin._recorder.current = dataclasses.replace(current, host_calls=dict(current.host_calls),
                                                         token_times=list(current.token_times),
                                                         token_texts=list(current.token_texts))
        twin._end_reason = end_reason
        return twin

    def _busy_forking(self) -> Busy:
        return Busy(f"session {self.id!r} is generating: fork it once the generation has ended, or stop it first")

    def on_close(self, callback: Callable[[Session], None]) -> Callable[[], None]:
        """Call ``callback(session)`` once it closes; returns the remover."""
        self._close_callbacks.append(callback)
        return remover(self._close_callbacks, callback)

    def close(self) -> None:
        """End the generation under way and free the context (its KV cache); idempotent."""
        self.stop()  # a generation under way ends before its next token, not at its end
        with self._lock:
            if self._closed:
                return
            self._shut()
        self._closed_now()

    def expire(self, idle_timeout: float) -> bool:
        """Close the session if it has been idle for more than ``idle_timeout`` seconds;
        whether it did. An operation under way, or a token stream open, is not idle."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if self._closed or self.generating or self._clock() - self.last_used <= idle_timeout:
                return False
            self._shut()
        finally:
            self._lock.release()
        self._closed_now()
        return True

    def _shut(self) -> None:
        self._closed = True
        self._end_generation()
        self._context.close()
        self._listeners.clear()

    def _closed_now(self) -> None:
        for callback in list(self._close_callbacks):
            callback(self)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the neutral execution API, as front-ends drive it --------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidArgument(f"session {self.id} is closed (finalized or expired)")

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
        with the parameters set until now. Inputs stay set until replaced."""
        with self._operation():
            self._stage({name: tensor}, replace=False)

    def compute(self, inputs: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Compute, and return every output by name: on ``inputs`` alone when given (the
        inputs set before are dropped: a call's outputs are that call's, as the wasi:nn
        WIT's compute answers), else on the inputs set with ``set_input``. A context that
        generates runs its token stream to the end (listeners get each token; ``stop``
        ends it early)."""
        with self._operation():
            if inputs is not None:
                self._stage(inputs, replace=True)
            if self._context.generates:
                self._begin_generation()
                while self._pull() is not None:
                    pass
            else:
                self._end_generation()
                self._parameters.apply()
                record = self._begin_record()
                try:
                    self._context.compute()
                finally:
                    self._recorder.finish(record, self._context.usage())
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
        """The names of the outputs there are now (``text``, or ``embedding``; a tensor model's own)."""
        with self._lock:
            self._check_open()
            return self._context.output_names()

    def get_output(self, name: str) -> Tensor:
        """One output, by name; ``InvalidArgument``, listing those there are, if there is none
        of that name."""
        with self._lock:
            self._check_open()
            self.last_used = self._clock()
            return self._context.get_output(name)

    # -- inside the lock ------------------------------------------------------------------

    def _stage(self, inputs: Mapping[str, Tensor], *, replace: bool) -> None:
        self._end_generation()
        self._parameters.apply()
        if replace:
            self._context.clear_inputs()
        for name, tensor in inputs.items():
            self._context.set_input(name, tensor)
        self._recorder.current = None

    def _begin_record(self) -> Generation:
        self._stop_requested = self._stopped = False
        self._decoder.reset()
        return self._recorder.begin()

    def _begin_generation(self) -> None:
        self._end_generation()
        self._parameters.apply()
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
        token = Token(self._decoder.decode(event.piece), event.piece, event.token_id, event.time, event.details)
        record = self._recorder.current
        if record is not None:
            record.token_times.append(event.time)
            record.token_texts.append(token.text)
            record.token_details.append(event.details)
            record.output_tokens += 1  # live; the backend's count replaces it at the end
        for listener in self._listeners:
            listener(token)
        return token

    def _end_generation(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()
            self._end_reason = stream.end_reason
            current = self._recorder.current
            if current is not None:
                self._recorder.finish(current, self._context.usage())
