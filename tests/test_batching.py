"""Many generations at once on the GGML backend: sessions are sequences of a pool (one
llama context), and the scheduler decodes their tokens together on the compute thread.
On the default model, with real llama.cpp and real guests."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import GREEDY

from wasinn_lab import GuestLimitError, Host, Limits, Tensor, TensorType
from wasinn_lab.backends.llama.context import LlamaContext
from wasinn_lab.backends.llama.graph import LlamaGraph
from wasinn_lab.backends.llama.options import OPTIONS
from wasinn_lab.backends.llama.pool import pools
from wasinn_lab.backends.llama.scheduler import scheduler
from wasinn_lab.models import DEFAULT_CONFIG, default_model_path

# Tokens the default model gave for these, 24 each, on main at 480aece (every session a
# llama context of its own, decoded one after another): a generation alone must still give them.
BEFORE_POOLS = [
    ("Once upon a time", {"temp": 0.0, "seed": 42},
     [236764, 993, 691, 496, 1944, 5148, 528, 506, 6029, 529, 506, 19227, 236761, 1030, 691, 496, 1977, 1298, 506,
      1331, 964, 1401, 10841, 532]),
    ("The capital of France is", {"temp": 0.8, "seed": 7},
     [506, 5279, 3207, 529, 506, 2891, 236761, 1030, 563, 5628, 580, 506, 7830, 106274, 532, 563, 506, 9754, 3207,
      528, 506, 106274, 236761, 108]),
    ("List three colours:", {"temp": 0.7, "seed": 3, "repeat-penalty": 1.2},
     [108, 9264, 236764, 3730, 532, 7070, 236761, 107, 6974, 496, 15649, 580, 506, 2269, 14050, 236787, 236743, 12218,
      12218, 139145, 17291, 109, 1613, 1806]),
]
PROMPTS = ["Once upon a time", "The capital of France is", "My favourite food is", "In the beginning",
           "The best way to learn is", "Rain fell on the", "She opened the door and", "Numbers: one, two,"]


def prompt(text: str) -> Tensor:
    return Tensor((1,), TensorType.U8, text.encode())


def tokens(host: Host, text: str, config: dict[str, Any], until: Callable[[int], bool] = lambda n: False,
           model: str = "default") -> list[int]:
    """A generation's token ids, pulled one at a time (``until(n)``: stop after n)."""
    with host.open_session(model, config) as session:
        session.set_input("prompt", prompt(text))
        session.start_generation()
        out: list[int] = []
        while (token := session.next_token()) is not None:
            out.append(token.token_id)
            if until(len(out)):
                session.stop()
        return out


def at_once(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Run the jobs from threads at once; what each returned (or raised)."""
    results: list[Any] = [None] * len(jobs)
    start = threading.Barrier(len(jobs))

    def work(index: int) -> None:
        start.wait()
        try:
            results[index] = jobs[index]()
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=work, args=(index,)) for index in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.fixture(scope="module")
def graph() -> Iterator[LlamaGraph]:
    loaded = LlamaGraph(default_model_path(), DEFAULT_CONFIG)
    yield loaded
    loaded.close()


def generate(context: LlamaContext, text: str) -> list[int]:
    context.set_input("prompt", prompt(text))
    stream = context.generate()
    out = []
    while (event := stream.next_token()) is not None:
        out.append(event.token_id)
    stream.close()
    return out


def context(graph: LlamaGraph, **config: Any) -> LlamaContext:
    return graph.init_execution_context({**DEFAULT_CONFIG, **GREEDY, "n-predict": 8, **config})


def test_a_session_alone_gives_the_tokens_it_gave_with_a_context_of_its_own(host: Host) -> None:
    for text, config, before in BEFORE_POOLS:
        assert tokens(host, text, {**config, "n-predict": 24}) == before, (text, config)


def test_sessions_generating_at_once_each_finish_and_are_decoded_together(host: Host) -> None:
    steps, rows = scheduler.steps, scheduler.batched_rows
    config = {**GREEDY, "n-predict": 16, "ignore-eos": True}
    results = at_once([lambda text=text: tokens(host, text, config) for text in PROMPTS[:4]])
    assert [len(result) for result in results] == [16] * 4, results
    assert scheduler.batched_rows - rows > scheduler.steps - steps, "no step decoded two sequences together"


def micro_batches(lines: list[str]) -> list[tuple[int, int]]:
    """From llama.cpp's batch log (LLAMA_BATCH_DEBUG): for each llama_decode, the tokens it
    was given and the micro-batches (passes over the weights) it made of them."""
    decodes: list[list[int]] = []
    for line in lines:
        if line.startswith("init: input batch info"):
            decodes.append([])
        elif line.startswith("ubatch_print:   n_tokens") and decodes:
            decodes[-1].append(int(line.split("=")[1]))
    return [(sizes[0], len(sizes) - 1) for sizes in decodes if sizes]


def test_a_step_of_eight_generations_is_one_pass_over_the_weights(
        host: Host, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """With a KV stream per sequence, llama.cpp cuts a batch into micro-batches of
    consecutive sequence ids: the steps' rows in the order their requests came made up to
    eight passes for eight tokens (a step took 100-120 ms where one pass takes 60)."""
    monkeypatch.setenv("LLAMA_BATCH_DEBUG", "1")  # read when a llama context is made: a pool of its own below
    caplog.set_level(logging.DEBUG, logger="wasinn_lab.llama_cpp")
    config = {**GREEDY, "n-predict": 24, "ignore-eos": True, "ctx-size": 384}
    results = at_once([lambda text=text: tokens(host, text, config) for text in PROMPTS])
    assert [len(result) for result in results] == [24] * 8, results
    steps = [passes for tokens_in, passes in micro_batches(caplog.messages) if tokens_in == 8]
    assert len(steps) >= 5, "the eight were decoded together, a token each"
    assert set(steps) == {1}, f"passes over the weights for a step of eight tokens: {steps}"


def test_a_sequence_decoded_with_others_never_sees_their_tokens(host: Host) -> None:
    """In batches of their own (batch-with-others off) each sequence gives its solo tokens
    exactly; batched, each still continues its own prompt (its first tokens, before the
    batch's arithmetic can move a greedy choice, are its own)."""
    config = {**GREEDY, "n-predict": 12, "ignore-eos": True}
    solo = [tokens(host, text, config) for text in PROMPTS[:4]]
    apart = at_once([lambda text=text: tokens(host, text, {**config, "batch-with-others": False}) for text in PROMPTS[:4]])
    assert apart == solo
    together = at_once([lambda text=text: tokens(host, text, config) for text in PROMPTS[:4]])
    assert [run[:2] for run in together] == [run[:2] for run in solo]
    assert len({tuple(run) for run in together}) == 4


def test_the_second_architecture_is_batched_too_and_apart_gives_its_solo_tokens(host: Host) -> None:
    """SmolLM2-135M (llama architecture, 49,152-token vocabulary, no sliding window: its KV
    state is laid out differently when a pool grows): sessions at once each finish, and
    with batch-with-others off each gives exactly its solo run."""
    config = {**GREEDY, "n-predict": 12, "ignore-eos": True}
    solo = [tokens(host, text, config, model="smollm2") for text in PROMPTS[:3]]
    apart = at_once([lambda text=text: tokens(host, text, {**config, "batch-with-others": False}, model="smollm2")
                     for text in PROMPTS[:3]])
    together = at_once([lambda text=text: tokens(host, text, config, model="smollm2") for text in PROMPTS[:3]])
    assert apart == solo
    assert all(isinstance(result, list) and len(result) == 12 for result in together), together
    assert [result[:2] for result in together] == [run[:2] for run in solo]  # each its own prompt's continuation


def test_stop_of_one_session_leaves_the_others_running_to_their_end(host: Host) -> None:
    config = {**GREEDY, "n-predict": 20, "ignore-eos": True}
    results = at_once([lambda: tokens(host, PROMPTS[0], config, until=lambda n: n == 3),
                       lambda: tokens(host, PROMPTS[1], config), lambda: tokens(host, PROMPTS[2], config)])
    assert [len(result) for result in results] == [3, 20, 20], results


def test_once_every_generation_has_ended_no_step_is_taken_and_their_pool_is_gone(host: Host) -> None:
    config = {**GREEDY, "n-predict": 12, "ignore-eos": True, "ctx-size": 768}  # a pool of their own
    results = at_once([lambda: tokens(host, PROMPTS[0], config, until=lambda n: n == 3),
                       lambda: tokens(host, PROMPTS[1], config), lambda: tokens(host, PROMPTS[2], config)])
    assert [len(result) for result in results] == [3, 12, 12], results
    steps = scheduler.steps
    time.sleep(0.3)  # many steps' worth: a request left waiting would be decoded in one
    assert scheduler.steps == steps
    assert not [pool for pool in pools.all() if pool.cells_per_sequence == 768]


def test_a_guest_trapped_mid_step_frees_only_its_sequence(host: Host) -> None:
    config = {**GREEDY, "n-predict": 48, "ignore-eos": True}

    def trapped() -> None:
        host.run("stream", "default", "Once upon a time", params={"n-predict": 100000, "ignore-eos": True},
                 limits=Limits(timeout=1))

    results = at_once([trapped, lambda: tokens(host, PROMPTS[1], config), lambda: tokens(host, PROMPTS[2], config)])
    assert isinstance(results[0], GuestLimitError) and results[0].limit == "time", results[0]
    assert [len(result) for result in results[1:]] == [48, 48]
    assert sum(len(pool.members) for pool in pools.all()) == 0, "the trapped guest's sequence was not freed"


def test_a_fork_continues_as_its_parent_would_without_evaluating_again(graph: LlamaGraph) -> None:
    parent = context(graph)
    try:
        first = generate(parent, "The river ran")
        fork = parent.fork()
        try:
            assert fork.get_output("text").data == parent.get_output("text").data
            text = "The river ran" + parent.get_output("text").data.decode() + " Then"
            assert generate(fork, text) == generate(parent, text) and first
            assert fork.usage().evaluated_tokens == parent.usage().evaluated_tokens < fork.usage().input_tokens // 2
        finally:
            fork.close()
    finally:
        parent.close()


def test_a_purged_session_is_rebuilt_and_continues_as_if_never_purged(graph: LlamaGraph) -> None:
    kept, purged, other = context(graph, parallel=2), context(graph, parallel=1), context(graph, parallel=1)
    try:
        start = "A short story about a cat:"
        assert generate(kept, start) == generate(purged, start)
        generate(other, "Something else entirely")  # the one slot of its pool: the idle one is purged
        assert pools.all() and max(pool.purges for pool in pools.all()) == 1
        text = start + purged.get_output("text").data.decode() + " The end?"
        assert generate(purged, text) == generate(kept, text)
        assert purged.usage().evaluated_tokens == purged.usage().input_tokens  # rebuilt from its text
        assert kept.usage().evaluated_tokens < kept.usage().input_tokens
    finally:
        for each in (kept, purged, other):
            each.close()


def resident_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


def test_a_hundred_sessions_that_each_computed_stay_bounded(host: Host) -> None:
    before = resident_mib()
    sessions = [host.open_session("default", {**GREEDY, "n-predict": 1}) for _ in range(100)]
    try:
        for index, session in enumerate(sessions):
            session.compute({"prompt": prompt(f"Note {index}:")})
        [pool] = pools.all()
        assert len(pool.members) == 100 and len(pool.slots) == OPTIONS["parallel"].default
        assert pool.purges == 100 - len(pool.slots)  # each new one took the least recently used slot
        assert pool.native is not None and len(pool.weights.contexts) == 1  # one llama context for them all
        grown = resident_mib() - before
        assert grown < 1024, f"100 sessions hold {grown:.0f} MiB more"
    finally:
        for session in sessions:
            session.close()
    assert not pools.all()
