"""The scheduler: every generation's next token, decoded together on the compute thread.

A generation asks for a token with a ``Request``: the text its sequence must hold (its
prompt and the tokens handed out so far) and the sampler to sample the next token with.
Each *step* of the scheduler, one job on the compute thread, takes every request waiting,
and for each pool makes one batch::

    requests waiting ─┐  gather (wait a moment for the generations of the last step)
                      ▼
    pool A  [ s0: 1 token | s3: 1 token | s5: prompt chunk ]  ── one llama_decode
    pool A  [ s2: 1 token ]   (batch-with-others off: a batch of its own)
    pool B  [ s0: 1 token | s1: 1 token ]                     ── one llama_decode
                      ▼
    each finished request: its row's logits, sampled with its own sampler ──▶ its future

A sequence's KV cache is brought to its request's text first: the common prefix is kept
(prefix reuse), the rest is cut, the tokens missing are decoded. A prompt is evaluated
in chunks, a step each: alone in its batch a chunk is n_batch tokens, as a context of its
own evaluates it (so the result is the same); with others, at most n_ubatch, so that a
long prompt does not stall the others' tokens for its whole length.

Gathering: after a step the guests that got a token each need a little Python time
before they ask for the next one; a step taken at the first request would alternate a
batch of one with a batch of the rest. So a step waits, at most ``GATHER_SECONDS``, for
the generations of the last step that have not asked again yet (never with one
generation, and a generation that misses a step is not waited for in the next).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import Protocol

from ...errors import BackendError
from .compute import ComputeThread, compute_thread
from .native import Chunk, NativeContext
from .pool import Pool, PoolFull, Sequence

__all__ = ["GATHER_SECONDS", "Request", "RowSampler", "Scheduler", "Withdrawn", "scheduler"]

GATHER_SECONDS = 0.004  # see docs/batching.md: the guests' time between two tokens is well under this


class Withdrawn(Exception):
    """The request was withdrawn (its guest was interrupted) before it was done."""


class RowSampler(Protocol):
    """What a request's token comes from: a generation's ``Sampler``, or anything else
    that reads a row of the step's logits."""

    def sample(self, native: NativeContext, row: int) -> int: ...


@dataclass(eq=False)
class Request:
    sequence: Sequence
    text: list[int]  # what the sequence must hold; its last token's logits are sampled
    sampler: RowSampler | None
    alone: bool  # in a batch of its own (batch-with-others off)
    reuse: bool  # keep the common prefix of what the sequence holds (cache-prompt)
    future: Future[tuple[int | None, int]] = field(default_factory=Future)  # the token, and tokens evaluated
    started: bool = False
    evaluated: int = 0
    withdrawn: bool = False
    blocked: bool = False  # its pool is full of running sequences: it waits for a slot


class Scheduler:
    def __init__(self, thread: ComputeThread) -> None:
        self._thread = thread
        self._changed = threading.Condition()
        self._waiting: list[Request] = []
        self._step_queued = False
        self._generating: set[Sequence] = set()  # generations that will ask again
        self._last_step: set[Sequence] = set()
        self._freed = False  # a generation ended since the step began: a slot may be free
        self.steps = 0  # for tests and reports: llama_decode calls made by steps
        self.batched_rows = 0  # and the rows they held

    # -- from guests' threads ---------------------------------------------------------

    def begin(self, sequence: Sequence) -> None:
        """A generation on ``sequence`` starts: it will ask for tokens."""
        with self._changed:
            self._generating.add(sequence)

    def end(self, sequence: Sequence) -> None:
        """It asks for no more tokens: no step waits for it (and a request waiting for a
        slot may now get one)."""
        with self._changed:
            self._generating.discard(sequence)
            self._last_step.discard(sequence)
            self._changed.notify_all()
            self._freed = True
            self._queue_step()

    def _queue_step(self) -> None:
        """A step, unless one is queued or no request waiting could move (under the lock)."""
        if not self._step_queued and self._waiting:
            self._step_queued = True
            self._thread.submit(self._step)

    def submit(self, request: Request) -> Request:
        with self._changed:
            self._waiting.append(request)
            self._changed.notify_all()
            self._queue_step()
        return request

    def result(self, request: Request) -> tuple[int | None, int]:
        """What the request gave. An interrupt while waiting withdraws it: the step under
        way (which cannot be cut short) ends first, then the interrupt is raised."""
        try:
            return request.future.result()
        except KeyboardInterrupt:
            with self._changed:
                request.withdrawn = True
            while not request.future.done():
                try:
                    wait([request.future])
                except KeyboardInterrupt:
                    continue
            raise

    def forget(self, sequence: Sequence) -> None:
        """Drop the sequence's requests not yet taken (its context is going)."""
        self.end(sequence)
        with self._changed:
            for request in self._waiting:
                if request.sequence is sequence:
                    request.withdrawn = True

    # -- on the compute thread ------------------------------------------------------------

    def _step(self) -> None:
        with self._changed:
            self._freed = False
        taken = self._gather()
        stepped: set[Sequence] = set()
        try:
            by_pool: dict[Pool, list[Request]] = {}
            for request in taken:
                by_pool.setdefault(request.sequence.pool, []).append(request)
            busy = {request.sequence for request in taken}
            for pool, requests in by_pool.items():
                stepped |= self._step_pool(pool, requests, busy)
        except BaseException as exc:  # a fault of the step itself: no guest may wait for ever
            for request in taken:
                if not request.future.done():
                    request.future.set_exception(exc)
            raise
        finally:
            with self._changed:
                self._waiting = [request for request in self._waiting if not request.future.done()]
                self._last_step = stepped & self._generating
                self._step_queued = False
                if self._freed or any(not request.blocked for request in self._waiting):
                    self._queue_step()  # requests under way (blocked ones wait for a generation's end)

    def _gather(self) -> list[Request]:
        with self._changed:
            deadline = time.perf_counter() + GATHER_SECONDS
            while len(self._generating) > 1:
                asked = {request.sequence for request in self._waiting}
                late = self._last_step - asked
                remaining = deadline - time.perf_counter()
                if not late or remaining <= 0:
                    break
                self._changed.wait(remaining)
            for request in self._waiting:
                if request.withdrawn and not request.future.done():
                    request.future.set_exception(Withdrawn())
            return [request for request in self._waiting if not request.future.done()]

    def _step_pool(self, pool: Pool, requests: list[Request], busy: set[Sequence]) -> set[Sequence]:
        """Bring each request's sequence to its text a step further; the sequences that
        got their token."""
        ready: list[Request] = []
        for request in requests:
            request.blocked = False
            try:
                if not request.started:
                    self._start(pool, request, busy)
                else:
                    pool.place(request.sequence, busy)
                ready.append(request)
            except PoolFull:
                request.blocked = True
            except Exception as exc:  # this request's own failure (a full pool): the others go on
                request.future.set_exception(exc)
        native = pool.native
        if native is None:
            return set()
        together = [request for request in ready if not request.alone]
        batches = [[(request, self._chunk_length(native, request, len(together) == 1)) for request in together]]
        batches += [[(request, self._chunk_length(native, request, True))] for request in ready if request.alone]
        stepped: set[Sequence] = set()
        for batch in batches:
            stepped |= self._decode(native, self._fit(native, batch))
        return stepped

    @staticmethod
    def _start(pool: Pool, request: Request, busy: set[Sequence]) -> None:
        sequence, text = request.sequence, request.text
        native = pool.place(sequence, busy)
        keep = 0
        if request.reuse:
            for cached, wanted in zip(sequence.cached, text):
                if cached != wanted:
                    break
                keep += 1
        keep = min(keep, len(text) - 1)  # the last token is evaluated again for its logits
        if keep < sequence.copied:
            keep = 0
        if keep < len(sequence.cached):
            assert sequence.slot is not None
            if not native.keep_prefix(keep, sequence.slot):
                native.drop(sequence.slot)
                keep = 0
            del sequence.cached[keep:]
        if keep == 0:
            sequence.copied = 0
        request.started, request.evaluated = True, len(text) - keep

    @staticmethod
    def _chunk_length(native: NativeContext, request: Request, alone: bool) -> int:
        missing = len(request.text) - len(request.sequence.cached)
        return min(missing, native.n_batch if alone else native.n_ubatch)

    @staticmethod
    def _fit(native: NativeContext, batch: list[tuple[Request, int]]) -> list[tuple[Request, int]]:
        """At most n_batch tokens: single tokens first, then prompt chunks while they fit
        (the rest wait for the next step); in the order of their slots."""
        room, fitted = native.n_batch, []
        for request, length in sorted(batch, key=lambda item: item[1]):
            length = min(length, room)
            if length > 0:
                fitted.append((request, length))
                room -= length
        # With a KV stream per sequence llama.cpp splits a batch into micro-batches of
        # consecutive sequence ids, each a pass over the weights: 8 tokens in arrival
        # order took up to 8 passes where slot order takes one (docs/batching.md).
        return sorted(fitted, key=lambda item: Scheduler._slot(item[0]))

    def _decode(self, native: NativeContext, batch: list[tuple[Request, int]]) -> set[Sequence]:
        if not batch:
            return set()
        chunks = [Chunk(self._slot(request), len(request.sequence.cached),
                        request.text[len(request.sequence.cached) : len(request.sequence.cached) + length])
                  for request, length in batch]
        try:
            rows = native.decode_together(chunks)
        except Exception as exc:
            for request, _ in batch:  # llama.cpp may have kept part of it: cut each to what it knew
                native.keep_prefix(len(request.sequence.cached), self._slot(request))
                request.future.set_exception(exc)
            return set()
        self.steps += 1
        self.batched_rows += len(chunks)
        stepped: set[Sequence] = set()
        for (request, _), chunk, row in zip(batch, chunks, rows):
            sequence = request.sequence
            sequence.cached += chunk.tokens
            if len(sequence.cached) < len(request.text):
                continue
            try:
                token = request.sampler.sample(native, row) if request.sampler is not None else None
            except Exception as exc:  # a sampler's own failure is its generation's
                request.future.set_exception(exc)
                continue
            request.future.set_result((token, request.evaluated))
            stepped.add(sequence)
        return stepped

    @staticmethod
    def _slot(request: Request) -> int:
        slot = request.sequence.slot
        if slot is None:
            raise BackendError("a sequence in a step has no slot")
        return slot


scheduler = Scheduler(compute_thread)  # one for the process, on the one compute thread
