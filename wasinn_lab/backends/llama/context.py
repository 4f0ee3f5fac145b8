"""An execution context on the GGML backend: its sequence in a pool (``pool.py``: its KV
cache, in a llama context shared with the other contexts of the same weights and
context-level settings) and its sampler; the scheduler (``scheduler.py``) decodes its
tokens with everyone else's. An embedding context has a llama context of its own.

The KV cache is kept between prompts, so a prompt that extends the previous one
evaluates only its new tokens (WasmEdge re-evaluates the whole conversation every turn).
"""

from __future__ import annotations

import array
import math
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import llama_cpp
import numpy as np

from ...errors import BackendError, ContextFull, InvalidArgument, PromptTooLong, UnsupportedOperation
from ...options import Scope
from ...types import Tensor, TensorType
from ..base import EMBEDDING, PROMPT, TEXT, EndReason, NextTokenDistribution, TokenEvent, Usage
from . import log
from .native import NativeContext
from .options import OPTIONS
from .pool import Sequence, pools
from .sampling import Sampler, make_sampler
from .scheduler import Request, scheduler
from .weights import Weights, weights_cache

if TYPE_CHECKING:
    from .graph import LlamaGraph

__all__ = ["LlamaContext", "LlamaStream", "context_params"]

MAX_THREADS = 4 * (os.cpu_count() or 1)
_FLASH_ATTN = {"auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO, "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
               "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED}


def context_params(config: Mapping[str, Any], weights: Weights) -> llama_cpp.llama_context_params:
    """llama.cpp's context parameters for these options."""
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = config["ctx-size"]  # 0: the model's own context length
    params.n_batch = config["batch-size"]
    params.n_ubatch = min(config["ubatch-size"], config["batch-size"])
    params.n_threads = params.n_threads_batch = config["threads"]
    params.swa_full = True  # a sliding-window cache cannot keep a prefix for reuse
    params.flash_attn_type = _FLASH_ATTN[config["flash-attn"]]
    if config["embedding"]:
        params.embeddings = True
        if not weights.has_pooling:
            params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        # Pooled embeddings need the whole prompt in one micro-batch: batch-size tokens
        # at most, as WasmEdge takes (a micro-batch of the model's whole length need not fit).
        params.n_batch = params.n_ubatch = min(config["batch-size"], config["ctx-size"] or weights.n_ctx_train)
    return params


class _RowCopy:
    """Takes a copy of the logits row a scheduler step leaves (in place of a sampler):
    the next token's distribution, with nothing sampled."""

    def __init__(self, n_vocab: int) -> None:
        self._n_vocab = n_vocab
        self.logits = np.empty(0, dtype=np.float32)  # the row, once the step has left it

    def sample(self, native: NativeContext, row: int) -> int:
        self.logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(native.ctx, row), (self._n_vocab,)).copy()
        return -1


class LlamaStream:
    """One generation, a token at a time (``ExecutionContext.generate``)."""

    def __init__(self, context: LlamaContext) -> None:
        self._context = context
        self._started = False
        self._done = False
        self.end_reason: EndReason | None = None

    def next_token(self) -> TokenEvent | None:
        if self._done:
            return None
        context = self._context
        started = time.perf_counter()
        try:
            with context.log_section:
                if not self._started:
                    self._started = True
                    context.start_generation()
                event = context.step()
        except BaseException:
            self._end(None)
            raise
        finally:
            context.backend_seconds += time.perf_counter() - started
        if isinstance(event, EndReason):
            self._end(event)
            return None
        if context.stop_after_this(event.piece):
            self._end(EndReason.STOP)
        return event

    def close(self) -> None:
        if not self._done:
            self._end(EndReason.CANCELLED)

    def _end(self, reason: EndReason | None) -> None:
        self._done, self.end_reason = True, reason
        if self._started:
            self._context.end_generation()


class LlamaContext:
    def __init__(self, graph: LlamaGraph, config: dict[str, Any]) -> None:
        self._graph = graph
        self._config = config
        self._weights: Weights | None = None
        self._sequence: Sequence | None = None  # a context that generates: its place in a pool
        self._native: NativeContext | None = None  # an embedding context: a llama context of its own
        self._prompt: list[int] = []
        self._text: list[int] = []  # the generation's prompt and the tokens handed out
        self._output_tokens: list[int] = []
        self._output = bytearray()
        self._sampler: Sampler | None = None
        self._next: int | None = None  # sampled, not yet handed out
        self._ahead: Request | None = None  # the next token's request, made before it was asked for
        self._stream: LlamaStream | None = None
        self._evaluated = 0
        self._embedding: Tensor | None = None
        self._prompt_seconds = 0.0
        self.backend_seconds = 0.0
        self.log_section = log.Section(config["enable-log"], config["enable-debug-log"])

    # -- parameters -----------------------------------------------------------------------

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self._config)

    @property
    def generates(self) -> bool:
        return not self._config["embedding"]

    @property
    def _n_ctx(self) -> int:
        return int(self._config["ctx-size"] or self._graph.n_ctx_train)

    def check(self, options: Mapping[str, Any]) -> None:
        """Guest-chosen sizes reach llama.cpp's allocators: bound them by the model and machine."""
        config = {**self._config, **options}
        n_ctx_train = self._graph.n_ctx_train
        if config["ctx-size"] > n_ctx_train:
            raise InvalidArgument(f"ctx-size {config['ctx-size']} is over the model's context length {n_ctx_train}")
        if config["batch-size"] > n_ctx_train or config["ubatch-size"] > n_ctx_train:
            raise InvalidArgument(f"batch-size and ubatch-size can be at most the model's context length {n_ctx_train}")
        if config["threads"] > MAX_THREADS:
            raise InvalidArgument(f"threads {config['threads']} is over {MAX_THREADS} (4 per CPU core here)")

    def configure(self, options: Mapping[str, Any]) -> None:
        self.check(options)
        changed = {key for key, value in options.items() if self._config.get(key) != value}
        self._config.update(options)
        scopes = {OPTIONS[key].scope for key in changed}
        if Scope.MODEL in scopes:
            self.release()
        elif Scope.CONTEXT in scopes:
            self._drop_kv()
        if changed & {"enable-log", "enable-debug-log"}:
            self.log_section = log.Section(self._config["enable-log"], self._config["enable-debug-log"])

    def prepare(self) -> None:
        with self.log_section:
            if self.generates:
                pools.place(self._ensure_sequence())
            else:
                self._ensure_native()

    def _ensure_weights(self) -> Weights:
        if self._weights is None:
            self._weights = weights_cache.acquire(self._graph.path, OPTIONS.scoped(self._config, Scope.MODEL))
        return self._weights

    def _ensure_sequence(self) -> Sequence:
        if self._sequence is None:
            self._sequence = pools.join(self._ensure_weights(), self._config)
        return self._sequence

    def _ensure_native(self) -> NativeContext:
        if self._native is None:
            weights = self._ensure_weights()
            self._native = NativeContext(weights, context_params(self._config, weights))
        return self._native

    def _drop_kv(self) -> None:
        """Let the KV cache go: the sequence leaves its pool (or the own llama context is freed)."""
        self._settle()
        if self._sequence is not None:
            sequence, self._sequence = self._sequence, None
            scheduler.forget(sequence)
            pools.leave(sequence)
            scheduler.end(sequence)  # its slot is free now: a request waiting for one moves
        if self._native is not None:
            self._native.close()
            self._native = None

    def release(self) -> None:
        self._drop_kv()
        if self._weights is not None:
            weights, self._weights = self._weights, None
            weights_cache.release(weights)

    # -- inputs and outputs ---------------------------------------------------------------

    def set_input(self, name: str, tensor: Tensor) -> None:
        self._settle()
        if name != PROMPT:
            raise InvalidArgument(f"the GGML backend takes one input, {PROMPT!r} (UTF-8 text), not {name!r}")
        try:
            tensor.data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgument(f"the prompt is not valid UTF-8: {exc}") from exc
        started = time.perf_counter()
        with self.log_section:
            self._prompt = self._ensure_weights().tokenize(tensor.data)
        if self._stream is not None:
            self._stream.close()
        self._output_tokens = []
        self._output = bytearray()
        self._evaluated = 0
        self._embedding = None
        # Tokenizing is backend work too: it grows with the prompt.
        self._prompt_seconds = self.backend_seconds = time.perf_counter() - started

    def clear_inputs(self) -> None:
        self._prompt = []

    def output_names(self) -> list[str]:
        return [EMBEDDING] if self._embedding is not None else [TEXT]

    def get_output(self, name: str) -> Tensor:
        if name == EMBEDDING and self._embedding is not None:
            return self._embedding
        if name == TEXT:
            return Tensor((len(self._output),), TensorType.U8, bytes(self._output))
        raise InvalidArgument(f"no output named {name!r}; there are: {', '.join(self.output_names())}")

    def usage(self) -> Usage:
        return Usage(
            input_tokens=len(self._prompt),
            evaluated_tokens=self._evaluated,
            output_tokens=len(self._output_tokens),
            prompt_seconds=self._prompt_seconds,
            backend_seconds=self.backend_seconds,
        )

    # -- generation -----------------------------------------------------------------------

    def compute(self) -> None:
        """An embedding (a context that generates is computed by pulling ``generate``)."""
        started = time.perf_counter()
        try:
            with self.log_section:
                self._embed()
        finally:
            self.backend_seconds += time.perf_counter() - started

    def generate(self) -> LlamaStream:
        if self._stream is not None:
            self._stream.close()
        self._stream = LlamaStream(self)
        return self._stream

    def start_generation(self) -> None:
        """Evaluate the prompt (what the KV cache lacks of it) and sample the first token."""
        if not self._prompt:
            raise InvalidArgument(f"no prompt: set the input {PROMPT!r} first")
        self._settle()
        if len(self._prompt) >= self._n_ctx:
            raise PromptTooLong(f"the prompt has {len(self._prompt)} tokens; the context holds {self._n_ctx}")
        started = time.perf_counter()
        self._output_tokens = []
        self._output = bytearray()
        self._text = list(self._prompt)
        if self._sampler is not None:
            self._sampler.close()
            self._sampler = None
        weights = self._ensure_weights()
        self._sampler = make_sampler(weights, self._config, self._n_ctx)
        sequence = self._ensure_sequence()
        sequence.running = True
        scheduler.begin(sequence)
        self._next, self._evaluated = scheduler.result(self._request(reuse=self._config["cache-prompt"]))
        self._prompt_seconds += time.perf_counter() - started

    def _request(self, *, reuse: bool = True) -> Request:
        """Ask the scheduler for the token after the text so far."""
        sequence = self._sequence
        if sequence is None:
            raise BackendError("no generation under way: start_generation first")
        return scheduler.submit(Request(sequence, list(self._text), self._sampler,
                                        alone=not self._config["batch-with-others"], reuse=reuse))

    def step(self) -> TokenEvent | EndReason:
        """The next token; at end of generation, or once n-predict tokens are out, why it
        ended instead."""
        weights, sequence = self._weights, self._sequence
        if self._sampler is None or weights is None or sequence is None:
            raise BackendError("no generation under way: start_generation first")
        n_predict = self._config["n-predict"]
        if 0 <= n_predict <= len(self._output_tokens):
            return EndReason.LENGTH
        token = self._take_next()
        details = self._sampler.details  # read before a request ahead samples again
        if weights.is_end_of_generation(token):
            return EndReason.STOP
        sampled = time.perf_counter()
        piece = weights.piece(token)
        self._output_tokens.append(token)
        self._text.append(token)
        self._output += piece
        if 0 <= n_predict <= len(self._output_tokens):
            scheduler.end(sequence)  # it asks for no more: no step waits for it
        elif self._ahead_wanted() and len(self._text) < self._n_ctx:
            self._ahead = self._request()
        return TokenEvent(piece, token, sampled, details)

    # -- the next token's distribution ----------------------------------------------------

    def distribution(self, k: int, options: Mapping[str, Any]) -> NextTokenDistribution:
        if self._config["embedding"]:
            raise UnsupportedOperation("an embedding context has no next token: its distribution is for text generation")
        if not self._prompt:
            raise InvalidArgument(f"no prompt: set the input {PROMPT!r} first")
        text = self._prompt + self._output_tokens
        if len(text) >= self._n_ctx:
            raise ContextFull(f"the text has {len(text)} tokens; the context of {self._n_ctx} is full")
        with self.log_section:
            self._settle()
            sampler = make_sampler(self._ensure_weights(), {**self._config, **options}, self._n_ctx)
            try:
                row = _RowCopy(self._ensure_weights().n_vocab)
                # The KV cache then holds the text: a generation from the prompt cuts it back
                # as it would any other conversation's.
                scheduler.result(scheduler.submit(Request(self._ensure_sequence(), text, row, alone=True, reuse=True)))
                sampler.remember(self._output_tokens)
                return sampler.distribution(row.logits, k)
            finally:
                sampler.close()

    def _take_next(self) -> int:
        token: int | None
        if self._next is not None:
            token, self._next = self._next, None
        elif self._ahead is not None:
            request, self._ahead = self._ahead, None
            token, _ = scheduler.result(request)
        else:
            if len(self._text) >= self._n_ctx:
                raise ContextFull(f"the context of {self._n_ctx} tokens is full")
            token, _ = scheduler.result(self._request())
        if token is None:
            raise BackendError("the scheduler sampled no token")
        return token

    def _ahead_wanted(self) -> bool:
        """decode-ahead: the scheduler decodes the token just handed out and samples the
        next one before it is asked for (while the guest works on this one)."""
        ahead = self._config["decode-ahead"]
        return ahead == "on" or (ahead == "auto" and self._ensure_weights().offloaded_layers > 0)

    def end_generation(self) -> None:
        """The generation is over: its sequence may be purged again, and no step waits for it."""
        self._settle()
        self._next = None
        if self._sequence is not None:
            self._sequence.running = False
            scheduler.end(self._sequence)

    def _settle(self) -> None:
        """Wait for a token asked for ahead: nothing may change the sequence while its
        request is under way. Its token is dropped; the KV cache then holds exactly the
        text handed out."""
        request, self._ahead = self._ahead, None
        if request is not None:
            try:
                scheduler.result(request)
            except Exception:  # the token was never handed out: what went wrong with it no longer matters
                pass

    def stop_after_this(self, piece: bytes) -> bool:
        """Whether the text now contains the reverse prompt (looked for where it can have
        appeared with this piece only: the text grows a token at a time)."""
        reverse = self._config["reverse-prompt"]
        if not reverse:
            return False
        needle = reverse.encode()
        return self._output.find(needle, max(0, len(self._output) - len(piece) - len(needle) + 1)) >= 0

    def fork(self) -> LlamaContext:
        """A new context continuing from this one: its KV cache copied (not evaluated
        again), prompt, outputs and parameters."""
        self._settle()
        copy = LlamaContext(self._graph, dict(self._config))
        copy._prompt, copy._text = list(self._prompt), list(self._text)
        copy._output_tokens, copy._output = list(self._output_tokens), bytearray(self._output)
        copy._evaluated, copy._embedding, copy._prompt_seconds = self._evaluated, self._embedding, self._prompt_seconds
        if self._sequence is not None:
            with self.log_section:  # llama.cpp reports the copy: to Python logging, not a cell
                copy._sequence = pools.fork(copy._ensure_weights(), self._sequence)
        return copy

    def _embed(self) -> None:
        if not self._prompt:
            raise InvalidArgument(f"no prompt: set the input {PROMPT!r} first")
        native = self._ensure_native()
        if len(self._prompt) > native.n_batch:
            raise PromptTooLong(f"the prompt has {len(self._prompt)} tokens; an embedding takes at most batch-size "
                                f"({native.n_batch}): raise batch-size (and ctx-size) or shorten the prompt")
        started = time.perf_counter()
        native.clear()
        native.decode(self._prompt, 0)
        native.clear()  # embeddings are not continued: the next prompt starts afresh
        self._evaluated = len(self._prompt)
        n_embd = self._ensure_weights().native.n_embd()
        pointer = native.pooled_embedding()
        if not pointer:
            raise BackendError("llama.cpp returned no pooled embedding")
        values = pointer[:n_embd]
        norm = math.sqrt(sum(v * v for v in values)) or 1.0
        data = array.array("f", (v / norm for v in values)).tobytes()
        self._embedding = Tensor((n_embd,), TensorType.F32, data)
        self._prompt_seconds += time.perf_counter() - started

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self.release()
        if self._sampler is not None:
            self._sampler.close()
            self._sampler = None
