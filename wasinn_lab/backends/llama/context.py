"""An execution context on the GGML backend: its llama context, KV cache and sampler,
on weights shared with every other context of the same model and settings.

The KV cache is kept between prompts, so a prompt that extends the previous one
evaluates only its new tokens (WasmEdge re-evaluates the whole conversation every turn).
"""

from __future__ import annotations

import array
import math
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import llama_cpp
import numpy as np

from ...errors import BackendError, ContextFull, InvalidArgument, PromptTooLong, UnsupportedOperation
from ...options import Scope
from ...types import Tensor, TensorType
from ..base import EMBEDDING, PROMPT, TEXT, EndReason, NextTokenDistribution, TokenEvent, Usage
from . import log
from .compute import compute_thread
from .native import NativeContext
from .options import OPTIONS
from .sampling import Sampler, make_sampler
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


class _DecodeAhead:
    """The decode of the token a context has just handed out, under way on the compute
    thread. ctypes lets go of the GIL inside llama_decode, so the guest's own work on the
    token runs meanwhile."""

    def __init__(self) -> None:
        self._future: Future[float] | None = None

    def start(self, decode: Callable[[], float]) -> None:
        self._future = compute_thread.submit(decode)

    def wait(self) -> float:
        """The seconds the decode under way took (0 if none); raises what it raised."""
        future, self._future = self._future, None
        return compute_thread.result(future) if future is not None else 0.0

    def close(self) -> None:
        try:
            self.wait()
        except Exception:  # the context is going: what went wrong in its last decode no longer matters
            pass


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
            self._done = True
            raise
        finally:
            context.backend_seconds += time.perf_counter() - started
        if isinstance(event, EndReason):
            self._done, self.end_reason = True, event
            return None
        if context.stop_after_this(event.piece):
            self._done, self.end_reason = True, EndReason.STOP
        return event

    def close(self) -> None:
        if not self._done:
            self._done, self.end_reason = True, EndReason.CANCELLED


class LlamaContext:
    def __init__(self, graph: LlamaGraph, config: dict[str, Any]) -> None:
        self._graph = graph
        self._config = config
        self._weights: Weights | None = None
        self._native: NativeContext | None = None
        self._n_ctx = 0
        self._cached: list[int] = []  # tokens whose keys and values are in the KV cache
        self._prompt: list[int] = []
        self._output_tokens: list[int] = []
        self._output = bytearray()
        self._pending: int | None = None  # sampled, not yet decoded
        self._sampler: Sampler | None = None
        self._stream: LlamaStream | None = None
        self._evaluated = 0
        self._embedding: Tensor | None = None
        self._prompt_seconds = 0.0
        self.backend_seconds = 0.0
        self.log_section = log.Section(config["enable-log"], config["enable-debug-log"])
        self._ahead = _DecodeAhead()
        self._decode_ahead = False  # for the generation under way
        self._text_logits: tuple[list[int], np.ndarray] | None = None  # the last distribution's text and logits

    # -- parameters -----------------------------------------------------------------------

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self._config)

    @property
    def generates(self) -> bool:
        return not self._config["embedding"]

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
            self._drop_native()
        if changed & {"enable-log", "enable-debug-log"}:
            self.log_section = log.Section(self._config["enable-log"], self._config["enable-debug-log"])

    def prepare(self) -> None:
        with self.log_section:
            self._ensure_native()

    def _ensure_weights(self) -> Weights:
        if self._weights is None:
            self._weights = weights_cache.acquire(self._graph.path, OPTIONS.scoped(self._config, Scope.MODEL))
        return self._weights

    def _ensure_native(self) -> NativeContext:
        if self._native is not None:
            return self._native
        weights = self._ensure_weights()
        self._native = native = NativeContext(weights, context_params(self._config, weights))
        # llama.cpp pads n_ctx up (to 256): hold the context to the size the user asked for.
        self._n_ctx = min(self._config["ctx-size"] or native.n_ctx, native.n_ctx)
        return native

    def _drop_native(self) -> None:
        self._settle()
        if self._native is not None:
            self._native.close()
        self._native = None
        self._cached = []
        self._pending = None
        self._text_logits = None

    def release(self) -> None:
        self._drop_native()
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
        if not self._prompt:
            raise InvalidArgument(f"no prompt: set the input {PROMPT!r} first")
        started = time.perf_counter()
        self._output_tokens = []
        self._output = bytearray()
        self._evaluate_prompt()
        ahead = self._config["decode-ahead"]
        self._decode_ahead = ahead == "on" or (ahead == "auto" and self._ensure_weights().offloaded_layers > 0)
        if self._sampler is not None:
            self._sampler.close()
            self._sampler = None
        self._sampler = make_sampler(self._ensure_weights(), self._config, self._n_ctx)
        self._prompt_seconds += time.perf_counter() - started

    def _evaluate_prompt(self) -> None:
        self._settle()
        self._ensure_native()
        prompt = self._prompt
        if len(prompt) >= self._n_ctx:
            raise PromptTooLong(f"the prompt has {len(prompt)} tokens; the context holds {self._n_ctx}")
        self._evaluated = self._cache(prompt, reuse=self._config["cache-prompt"])

    def _cache(self, tokens: list[int], *, reuse: bool) -> int:
        """Make the KV cache hold ``tokens``, the last evaluated again for its logits (from
        what it holds already, if ``reuse``); returns how many were evaluated."""
        native = self._ensure_native()
        keep = 0
        for cached, wanted in zip(self._cached if reuse else [], tokens):
            if cached != wanted:
                break
            keep += 1
        keep = min(keep, len(tokens) - 1)
        if not native.keep_prefix(keep):
            native.clear()
            keep = 0
        self._cached = tokens[:keep]
        self._pending = None
        native.decode(tokens[keep:], keep)
        self._cached = list(tokens)
        return len(tokens) - keep

    def step(self) -> TokenEvent | EndReason:
        """Decode the pending token, then sample the next one; at end of generation, or
        once n-predict tokens are out, why it ended instead."""
        native, sampler, weights = self._native, self._sampler, self._weights
        if native is None or sampler is None or weights is None:
            raise BackendError("no generation under way: start_generation first")
        n_predict = self._config["n-predict"]
        if 0 <= n_predict <= len(self._output_tokens):
            return EndReason.LENGTH
        self._settle()
        if self._pending is not None:
            self._decode_pending()
        if len(self._cached) >= self._n_ctx:
            raise ContextFull(f"the context of {self._n_ctx} tokens is full")
        token = sampler.sample(native)
        if weights.is_end_of_generation(token):
            return EndReason.STOP
        sampled = time.perf_counter()
        piece = weights.piece(token)
        self._pending = token
        self._output_tokens.append(token)
        self._output += piece
        if self._decode_ahead:
            self._ahead.start(self._decode_ahead_pending)
        return TokenEvent(piece, token, sampled, sampler.details)

    # -- the next token's distribution ----------------------------------------------------

    def distribution(self, k: int, options: Mapping[str, Any]) -> NextTokenDistribution:
        if self._config["embedding"]:
            raise UnsupportedOperation("an embedding context has no next token: its distribution is for text generation")
        if not self._prompt:
            raise InvalidArgument(f"no prompt: set the input {PROMPT!r} first")
        with self.log_section:
            row = self._next_logits()
            sampler = make_sampler(self._ensure_weights(), {**self._config, **options}, self._n_ctx)
        try:
            sampler.remember(self._output_tokens)
            return sampler.distribution(row, k)
        finally:
            sampler.close()

    def _next_logits(self) -> np.ndarray:
        """The model's logits for the token after the current text (the prompt and what was
        generated from it). The KV cache then holds that text: a generation from the prompt
        cuts it back as it would any other conversation."""
        text = self._prompt + self._output_tokens
        if self._text_logits is not None and self._text_logits[0] == text:
            return self._text_logits[1]
        self._settle()
        native = self._ensure_native()
        if len(text) >= self._n_ctx:
            raise ContextFull(f"the text has {len(text)} tokens; the context of {self._n_ctx} is full")
        self._cache(text, reuse=True)
        n_vocab = self._ensure_weights().n_vocab
        row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(native.ctx, -1), (n_vocab,)).copy()
        self._text_logits = (text, row)
        return row

    def _decode_pending(self) -> None:
        native, pending = self._native, self._pending
        if native is not None and pending is not None:
            self._pending = None
            native.decode([pending], len(self._cached))
            self._cached.append(pending)

    def _decode_ahead_pending(self) -> float:
        """On the decode thread: the log section is per thread, so it is entered here too."""
        started = time.perf_counter()
        with self.log_section:
            self._decode_pending()
        return time.perf_counter() - started

    def _settle(self) -> None:
        """Wait for a decode ahead to finish: nothing may touch the KV cache or the pending
        token while it runs. (What a generation counts as the backend's time is then what
        was waited for: the rest ran while the guest worked.)"""
        self._ahead.wait()

    def stop_after_this(self, piece: bytes) -> bool:
        """Whether the text now contains the reverse prompt (looked for where it can have
        appeared with this piece only: the text grows a token at a time)."""
        reverse = self._config["reverse-prompt"]
        if not reverse:
            return False
        needle = reverse.encode()
        return self._output.find(needle, max(0, len(self._output) - len(piece) - len(needle) + 1)) >= 0

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
        self._cached = []
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
        self._ahead.close()
        self.release()
        if self._sampler is not None:
            self._sampler.close()
            self._sampler = None
