"""A llama context (KV cache and compute buffers) on one set of weights, through
llama.cpp's C API as llama-cpp-python binds it."""

from __future__ import annotations

from typing import Any

import llama_cpp
from llama_cpp import _internals

from ...errors import BackendError
from . import log
from .compute import compute_thread
from .weights import Weights

__all__ = ["NativeContext"]


class NativeContext:
    """llama-cpp-python's own ``LlamaContext`` puts its ``close`` on the model's exit
    stack for good, so the model would keep every context object it ever had alive: a
    kernel that runs many guests would grow without end. This one is forgotten once
    closed."""

    def __init__(self, weights: Weights, params: llama_cpp.llama_context_params) -> None:
        ctx = llama_cpp.llama_init_from_model(weights.native.model, params)  # in the caller's log section
        if ctx is None:
            raise BackendError("llama.cpp could not create a context (out of memory for this ctx-size?)")
        self.ctx = ctx  # the name llama-cpp-python's samplers read
        try:
            self._memory = llama_cpp.llama_get_memory(ctx)
            self.n_ctx = int(llama_cpp.llama_n_ctx(ctx))
            self.n_batch = int(llama_cpp.llama_n_batch(ctx))
            self.batch = _internals.LlamaBatch(n_tokens=self.n_batch, embd=0, n_seq_max=1, verbose=False)
        except BaseException:
            with log.Section(False):
                llama_cpp.llama_free(ctx)
            raise
        compute_thread.acquire()
        weights.contexts.add(self)

    def decode(self, tokens: list[int], n_past: int) -> None:
        """Evaluate ``tokens`` after the first ``n_past`` of the cache, a batch at a time,
        on the compute thread."""
        compute_thread.run(lambda: self._decode(tokens, n_past))

    def _decode(self, tokens: list[int], n_past: int) -> None:
        batch = self.batch
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            batch.set_batch(chunk, n_past=n_past + start, logits_all=False)
            code = llama_cpp.llama_decode(self.ctx, batch.batch)
            if code != 0:
                raise BackendError(f"llama.cpp failed to decode (llama_decode returned {code})")

    def keep_prefix(self, n_tokens: int) -> bool:
        """Drop the KV cache past its first ``n_tokens``; False if it cannot be cut there."""
        return bool(llama_cpp.llama_memory_seq_rm(self._memory, 0, n_tokens, -1))

    def clear(self) -> None:
        if self._memory is not None:  # non-causal embedding models may have no KV cache
            llama_cpp.llama_memory_clear(self._memory, True)

    def pooled_embedding(self) -> Any:
        return llama_cpp.llama_get_embeddings_seq(self.ctx, 0)

    def close(self) -> None:
        if self.ctx is not None:
            with log.Section(False):  # llama.cpp reports what it frees: not worth a line
                self.batch.close()
                llama_cpp.llama_free(self.ctx)
            self.ctx = self._memory = None
            compute_thread.release()
