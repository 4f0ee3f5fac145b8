"""Pools: one llama context holding the sequences of many execution contexts.

Every execution context that generates text on the same weights with the same
context-level settings (the options of ``Scope.CONTEXT``) is a *sequence* of one llama
context, its pool, so the scheduler (``scheduler.py``) can decode all of their next
tokens in one ``llama_decode``. The KV cache is not unified (``kv_unified`` off): each
sequence has a KV stream of its own, of the size its context asked for, and a sequence
alone in a batch computes exactly what a llama context of its own would. (Embedding
contexts keep a llama context of their own: a pooled embedding is one decode of one
prompt, with nothing to batch it with.)

Without a unified cache each sequence's cells are fixed when the llama context is made,
so a pool cannot grow in place. It starts with one slot and doubles, up to the
``parallel`` option, by making the larger llama context and copying each live
sequence's KV cache into it (``llama_state_seq_get_data``/``set_data``: bytes, exact).
At ``parallel`` slots an idle sequence's KV cache is dropped, the least recently used
first, never a running one's (a generation under way or a token stream open): it is
rebuilt from its text when next used, its next prompt evaluated in full, as llama.cpp's
server purges idle slots. When every slot is running the pool grows past ``parallel``
(up to llama.cpp's 256 sequences; past that a request waits for a slot).

Everything here runs on the compute thread (``compute_thread.run``), between the
scheduler's steps: nothing else touches a pool, so it needs no lock.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ...errors import BackendError, Busy
from ...options import Scope
from . import log
from .compute import compute_thread
from .native import NativeContext
from .options import OPTIONS
from .weights import Weights

__all__ = ["Pool", "PoolFull", "Pools", "Sequence", "pools"]

MAX_SEQUENCES = 256  # llama.cpp's LLAMA_MAX_SEQ
_PAD = 256  # llama.cpp pads a context's cells to this: a slot gets what a context of its own would


class PoolFull(Busy):
    """Every slot of the pool holds a running sequence (the scheduler's request waits)."""


class Sequence:
    """One execution context's place in a pool: which slot (KV stream) it has, if any,
    and the tokens that slot holds."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.slot: int | None = None  # None: no KV cache now (new, or purged)
        self.cached: list[int] = []  # the tokens whose keys and values the slot holds
        self.running = False  # a generation under way: its KV cache is never purged
        # Copied from another slot (a larger pool, a fork): llama.cpp's copy leaves out
        # the cells a sliding window no longer sees, so a prefix cut shorter than this
        # evaluates the text again from the start.
        self.copied = 0
        self.last_used = time.monotonic()


class Pool:
    def __init__(self, weights: Weights, config: Mapping[str, Any], key: tuple[Any, ...]) -> None:
        self.weights = weights
        self._config = dict(config)
        self._key = key
        self.maximum = int(config["parallel"])
        self.native: NativeContext | None = None
        self.slots: list[Sequence | None] = []
        self.members: list[Sequence] = []
        self.purges = 0  # KV caches dropped to make room, over the pool's life

    @property
    def cells_per_sequence(self) -> int:
        wanted = self._config["ctx-size"] or self.weights.n_ctx_train
        return -(-wanted // _PAD) * _PAD

    def place(self, sequence: Sequence, busy: set[Sequence]) -> NativeContext:
        """Give ``sequence`` a slot if it has none: a free one, else a larger llama context,
        else the least recently used idle sequence's (neither running nor in ``busy``)."""
        sequence.last_used = time.monotonic()
        if sequence.slot is None:
            slot = self._free_slot()
            if slot is None and len(self.slots) < self.maximum:
                self._grow(self.maximum)
                slot = self._free_slot()
            if slot is None:
                try:
                    slot = self._purge_one(busy)
                except PoolFull:
                    # Every slot is running: parallel bounds what idle sessions keep, not
                    # how many may run at once (a notebook may hold many streams open).
                    if len(self.slots) >= MAX_SEQUENCES:
                        raise
                    self._grow(MAX_SEQUENCES)
                    slot = self._free_slot()
                    assert slot is not None
            self.slots[slot] = sequence
            sequence.slot, sequence.cached = slot, []
        assert self.native is not None
        return self.native

    def _free_slot(self) -> int | None:
        return next((index for index, holder in enumerate(self.slots) if holder is None), None)

    def _grow(self, limit: int) -> None:
        size = min(limit, max(1, 2 * len(self.slots)))
        with log.in_some_section():  # enable-log shows the llama context made for the context that asked
            grown = NativeContext(self.weights, self._params(size))
        old, self.native = self.native, grown
        if old is not None:
            for slot, holder in enumerate(self.slots):
                if holder is not None and holder.cached:
                    try:
                        old.copy_sequence(slot, grown, slot)
                        holder.copied = len(holder.cached)
                    except BackendError:  # a state llama.cpp will not move: rebuilt from its text when used
                        holder.cached, holder.copied = [], 0
            old.close()
        self.slots += [None] * (size - len(self.slots))

    def _purge_one(self, busy: set[Sequence]) -> int:
        idle = [holder for holder in self.slots if holder is not None and not holder.running and holder not in busy]
        if not idle:
            raise PoolFull(f"all {len(self.slots)} sequences of this model's pool are generating (parallel = "
                       f"{self.maximum}): raise parallel, or end a generation first")
        victim = min(idle, key=lambda holder: holder.last_used)
        slot = victim.slot
        assert slot is not None and self.native is not None
        self.native.drop(slot)
        victim.slot, victim.cached, victim.copied = None, [], 0
        self.purges += 1
        return slot

    def _params(self, size: int) -> Any:
        from .context import context_params  # context.py builds on pools

        params = context_params(self._config, self.weights)
        params.n_seq_max = size
        params.kv_unified = False
        params.n_ctx = self.cells_per_sequence * size
        return params

    def join(self) -> Sequence:
        sequence = Sequence(self)
        self.members.append(sequence)
        return sequence

    def fork(self, source: Sequence, busy: set[Sequence]) -> Sequence:
        """A new sequence holding a copy of ``source``'s KV cache."""
        copy = self.join()
        try:
            if source.slot is not None and source.cached:
                busy = busy | {source}
                self.place(copy, busy)
                native = self.place(source, busy)  # a grown pool keeps its slot
                assert source.slot is not None and copy.slot is not None
                native.copy_sequence(source.slot, native, copy.slot)
                copy.cached, copy.copied = list(source.cached), len(source.cached)
        except BaseException:
            self.leave(copy)
            raise
        return copy

    def leave(self, sequence: Sequence) -> None:
        """The sequence is done: its slot is freed, and the pool ends with its last one."""
        if sequence.slot is not None and self.native is not None:
            self.native.drop(sequence.slot)
            self.slots[sequence.slot] = None
        sequence.slot, sequence.cached = None, []
        if sequence in self.members:
            self.members.remove(sequence)
        if not self.members:
            pools.forget(self._key, self)
            if self.native is not None:
                self.native.close()
                self.native = None
            self.slots = []


class Pools:
    """The pools of the process, by weights and context-level settings. Only the compute
    thread reads or changes them."""

    def __init__(self) -> None:
        self._pools: dict[tuple[Any, ...], Pool] = {}

    def join(self, weights: Weights, config: Mapping[str, Any]) -> Sequence:
        """A new sequence in the pool for these weights and settings (made if need be).
        Each sequence holds the compute thread until it leaves."""
        if config["embedding"]:
            raise BackendError("an embedding context has a llama context of its own, not a pool's sequence")
        compute_thread.acquire()
        try:
            return compute_thread.run(lambda: self._pool(weights, config).join())
        except BaseException:
            compute_thread.release()
            raise

    def place(self, sequence: Sequence) -> None:
        """Give the sequence its slot now (its pool's llama context made or grown now,
        not at its next generation)."""
        compute_thread.run(lambda: sequence.pool.place(sequence, set()))

    def leave(self, sequence: Sequence) -> None:
        try:
            compute_thread.run(lambda: sequence.pool.leave(sequence))
        finally:
            compute_thread.release()

    def fork(self, weights: Weights, source: Sequence) -> Sequence:
        """A new sequence in ``source``'s pool, holding a copy of its KV cache."""
        if weights is not source.pool.weights:
            raise BackendError("a fork shares its parent's weights")
        compute_thread.acquire()
        try:
            return compute_thread.run(lambda: source.pool.fork(source, set()))
        except BaseException:
            compute_thread.release()
            raise

    def _pool(self, weights: Weights, config: Mapping[str, Any]) -> Pool:
        key = (id(weights), OPTIONS.scoped(config, Scope.CONTEXT))
        pool = self._pools.get(key)
        if pool is None or pool.weights is not weights:
            pool = self._pools[key] = Pool(weights, config, key)
        return pool

    def forget(self, key: tuple[Any, ...], pool: Pool) -> None:
        if self._pools.get(key) is pool:
            del self._pools[key]

    def all(self) -> list[Pool]:
        """The pools there are now (a snapshot, for tests and reports)."""
        return compute_thread.run(lambda: list(self._pools.values())) if self._pools else []


pools = Pools()  # one for the process: a pool's owners are its sequences
