"""A llama context (KV cache and compute buffers) on one set of weights, through
llama.cpp's C API as llama-cpp-python binds it. It may hold several sequences (a pool's,
``pool.py``), each in a KV stream of its own."""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Sequence
from typing import Any, NamedTuple

import llama_cpp
from llama_cpp import _internals

from ...errors import BackendError
from . import log
from .compute import compute_thread
from .weights import Weights

__all__ = ["Chunk", "NativeContext"]

# A sequence's saved state starts with these (llama.cpp's src/llama-context.cpp, io_magic).
_STATE_MAGIC = 0xAF143CD8
_PREAMBLE = 8  # the magic, then the sequence it was saved from


class Chunk(NamedTuple):
    """Tokens of one sequence for a ``decode_together``: they go at ``position`` on;
    the last one's logits are kept."""

    sequence: int
    position: int
    tokens: Sequence[int]


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
            self.n_ctx_sequence = int(llama_cpp.llama_n_ctx_seq(ctx))
            self.n_batch = int(llama_cpp.llama_n_batch(ctx))
            self.n_ubatch = int(llama_cpp.llama_n_ubatch(ctx))
            self.n_sequences = int(llama_cpp.llama_n_seq_max(ctx))  # each a KV stream of its own (not unified)
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
        for start in range(0, len(tokens), self.n_batch):
            self.decode_together([Chunk(0, n_past + start, tokens[start : start + self.n_batch])])

    def decode_together(self, chunks: Sequence[Chunk]) -> list[int]:
        """One ``llama_decode`` of several sequences' tokens (at most n_batch in all), on
        the calling thread (the compute thread); the batch row of each chunk's last token,
        whose logits are kept."""
        batch = self.batch.batch
        rows: list[int] = []
        row = 0
        for sequence, position, tokens in chunks:
            for offset, token in enumerate(tokens):
                batch.token[row] = token
                batch.pos[row] = position + offset
                batch.n_seq_id[row] = 1
                batch.seq_id[row][0] = sequence
                batch.logits[row] = offset == len(tokens) - 1
                row += 1
            rows.append(row - 1)
        batch.n_tokens = row
        code = llama_cpp.llama_decode(self.ctx, batch)
        if code != 0:
            raise BackendError(f"llama.cpp failed to decode (llama_decode returned {code})")
        return rows

    def keep_prefix(self, n_tokens: int, sequence: int = 0) -> bool:
        """Drop the sequence's KV cache past its first ``n_tokens``; False if it cannot be
        cut there."""
        return bool(llama_cpp.llama_memory_seq_rm(self._memory, sequence, n_tokens, -1))

    def drop(self, sequence: int) -> None:
        """Forget everything the sequence holds."""
        llama_cpp.llama_memory_seq_rm(self._memory, sequence, 0, -1)

    def copy_sequence(self, source: int, into: NativeContext, destination: int) -> None:
        """Copy a sequence's KV cache, byte for byte, into a sequence of ``into`` (this
        context, or another of the same weights and cells per sequence)."""
        state = self._state(source, 0)
        if into.n_sequences != self.n_sequences:
            state = self._restreamed(state, source, into.n_sequences)
        buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if int(llama_cpp.llama_state_seq_set_data(into.ctx, buffer, len(state), destination)) != len(state):
            raise BackendError("llama.cpp could not restore a sequence's KV cache")

    def _state(self, sequence: int, flags: int) -> bytes:
        size = int(llama_cpp.llama_state_seq_get_size_ext(self.ctx, sequence, flags))
        buffer = (ctypes.c_uint8 * max(size, 1))()
        if int(llama_cpp.llama_state_seq_get_data_ext(self.ctx, buffer, size, sequence, flags)) != size:
            raise BackendError("llama.cpp could not save a sequence's KV cache")
        return bytes(buffer)[:size]

    def _restreamed(self, state: bytes, sequence: int, n_streams: int) -> bytes:
        """The state as a context of ``n_streams`` KV streams reads it. After its preamble
        (a magic number and the sequence), each KV cache in it (a sliding-window model has
        two: the full layers', then the window's) starts with its stream count, then each
        stream's cell count and cells: a sequence's state has cells in its own stream
        alone, so the streams a larger context adds are empty ones (a zero count each) at
        the end. llama.cpp refuses a state of another stream count."""
        window = self._state(sequence, llama_cpp.LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY)  # the window's cache alone
        preamble, body, window = state[:_PREAMBLE], state[_PREAMBLE:], window[_PREAMBLE:]
        caches = [body] if len(window) == len(body) else [body[: len(body) - len(window)], window]
        laid_out = struct.unpack_from("<I", preamble)[0] == _STATE_MAGIC and body.endswith(window)
        restreamed = [preamble]
        for cache in caches:
            (streams,) = struct.unpack_from("<I", cache)
            laid_out = laid_out and streams == self.n_sequences <= n_streams
            restreamed.append(struct.pack("<I", n_streams) + cache[4:] + bytes(4 * (n_streams - streams)))
        if not laid_out:
            raise BackendError("a sequence's KV state is not laid out as this llama.cpp's was: it cannot move "
                               "to a larger pool")
        return b"".join(restreamed)

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
