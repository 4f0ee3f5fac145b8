"""Many guests at once: the lab against llama.cpp's own batched loop and against the serial path.

    .venv/bin/python benchmarks/concurrency.py [--levels 1,2,4,8,16] [--n-predict 64]
        [--prompt-tokens 32] [--repeats 3] [--model default|smollm2] [--sessions 100]
        [--join-level 8] [--out benchmarks/out]

For each level N, each repeat, in an order rotated repeat by repeat, all in this process:
- floor: llama.cpp's own batched loop through llama_cpp's ctypes layer: one llama_context
  with n_seq_max = N (kv_unified off: each sequence its own ctx-size), every prompt in one
  llama_batch, then one llama_batch per step holding every sequence's next token, each
  sequence sampled from its logits row by its own sampler chain (the host's chain for these
  settings: greedy by default). On the lab's compute thread, as the bench's floor path. Its
  context is made once per level, outside the time measured.
- lab: N stream guests started at once through the host (``Host.start``), each a new
  session on its own prompt: what N callers get.
- serial: the same N runs one after another.
Each path's number is tokens generated in all per second, from the start to the last
token (prompts included), and the median wait for a first token, timed from the start of
the N. Ratios are paired repeat by repeat (lab over floor, lab over serial): their median
and interquartile range.

Then, unless --join-level 0: a new session's first token while N others generate (N the
join level), against the same guest's first token alone plus one step of the others; and,
unless --sessions 0: the resident memory of that many sessions (on the model's own config)
that each computed a short prompt, in a child process (VmRSS from /proc).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import llama_cpp
import pandas as pd

from wasinn_lab import Host
from wasinn_lab.backends.llama import compute_thread, logged
from wasinn_lab.bench import Workload, write
from wasinn_lab.bench import concurrency as guests
from wasinn_lab.bench.paths import Baselines, sampler_chain
from wasinn_lab.bench.stats import paired
from wasinn_lab.bench.workload import SAMPLINGS
from wasinn_lab.tasks import EventKind, GuestTask

PATHS = ("floor", "lab", "serial")
TEXT = ("The history of computing is a story of abstraction. Each generation of engineers built tools that hid "
        "the details of the machine below, so that the next could think in larger pieces. ")
# The targets: lab over floor at these levels, and resident memory of 100 sessions.
FLOOR_TARGETS = {1: 0.9, 8: 0.85}
MEMORY_TARGET_GIB = 2.0


class BatchedFloor:
    """One llama context holding ``n_seq`` sequences on a ``Llama``'s model and context
    parameters; each run decodes every sequence together, step by step."""

    def __init__(self, llm: Any, n_seq: int, w: Workload, prompt_tokens: int) -> None:
        self._llm = llm  # its model must outlive the context
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_seq_max = n_seq
        params.kv_unified = False
        params.n_ctx = w.ctx_size * n_seq  # kv_unified off: each sequence gets n_ctx / n_seq_max
        # Every prompt in one decode, so that every sequence's last logits row is kept.
        params.n_batch = max(params.n_batch, prompt_tokens)
        self.ctx = llama_cpp.llama_init_from_model(llm.model, params)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not make a context of {n_seq} sequences")
        self.vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.batch = llama_cpp.llama_batch_init(max(params.n_batch, n_seq), 0, n_seq)

    def _decode(self, entries: Sequence[tuple[int, int, int, bool]]) -> None:
        """One llama_decode of (token, position, sequence, wants logits) entries."""
        batch = self.batch
        for i, (token, pos, seq, logits) in enumerate(entries):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits
        batch.n_tokens = len(entries)
        status = llama_cpp.llama_decode(self.ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status} on the batched floor")

    def run(self, prompts: Sequence[str], w: Workload) -> dict[str, Any]:
        sampling = SAMPLINGS[w.sampling]
        started = time.perf_counter()
        tokens = [self._llm.tokenize(prompt.encode(), add_bos=True, special=True) for prompt in prompts]
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        entries = [(token, pos, seq, pos == len(toks) - 1) for seq, toks in enumerate(tokens)
                   for pos, token in enumerate(toks)]
        self._decode(entries)
        rows = [i for i, entry in enumerate(entries) if entry[3]]  # each sequence's logits row, in order
        chains = [sampler_chain(self.vocab, sampling, w.seed) for _ in prompts]
        stamps: list[list[float]] = [[] for _ in prompts]
        positions = [len(toks) for toks in tokens]
        try:
            active = list(range(len(prompts)))
            while active:
                step = []
                for seq, row in zip(active, rows, strict=True):
                    token = llama_cpp.llama_sampler_sample(chains[seq], self.ctx, row)
                    stamps[seq].append(time.perf_counter())
                    if not llama_cpp.llama_vocab_is_eog(self.vocab, token) and len(stamps[seq]) < w.n_predict:
                        step.append((token, positions[seq], seq, True))
                        positions[seq] += 1
                if not step:
                    break
                self._decode(step)
                active, rows = [entry[2] for entry in step], list(range(len(step)))
        finally:
            for chain in chains:
                llama_cpp.llama_sampler_free(chain)
        ended = max(times[-1] for times in stamps)
        firsts = [times[0] - started for times in stamps]
        produced = sum(len(times) for times in stamps)
        return {"guests": len(prompts), "output_tokens": produced, "seconds": ended - started,
                "tok_per_s": produced / (ended - started), "ttft_s": statistics.median(firsts), "ttft_max_s": max(firsts)}

    def close(self) -> None:
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)


def prompt_of(llm: Any, n_tokens: int) -> str:
    """A text of about ``n_tokens`` tokens."""
    tokens: list[int] = []
    while len(tokens) < n_tokens:
        tokens += llm.tokenize(TEXT.encode(), add_bos=False)
    return str(llm.detokenize(tokens[:n_tokens]).decode("utf-8", "ignore"))


def measure_level(host: Host, model: str, llm: Any, group: list[str], w: Workload, repeats: int,
                  extra: dict[str, Any]) -> list[dict[str, Any]]:
    """Each path on ``group`` (one prompt per guest), ``repeats`` times, the order rotated."""
    prompt_tokens = sum(len(llm.tokenize(prompt.encode(), add_bos=True, special=True)) for prompt in group)
    with logged():
        floor = compute_thread.run(lambda: BatchedFloor(llm, len(group), w, prompt_tokens))
    runs = {
        "floor": lambda: _on_compute_thread(floor, group, w),
        "lab": lambda: guests.at_once(host, model, group, w, extra),
        "serial": lambda: guests.one_by_one(host, model, group, w, extra),
    }
    rows = []
    try:
        runs["floor"]()  # unrecorded: the context's first decodes
        for run in range(repeats):
            shift = run % len(PATHS)
            for path in [*PATHS[shift:], *PATHS[:shift]]:
                rows.append({"level": len(group), "run": run, "path": path, **runs[path]()})
            print(f"  N={len(group)}: repeat {run + 1}/{repeats} done", file=sys.stderr)
    finally:
        with logged():
            compute_thread.run(floor.close)
    return rows


def _on_compute_thread(floor: BatchedFloor, prompts: Sequence[str], w: Workload) -> dict[str, Any]:
    with logged():
        return compute_thread.run(lambda: floor.run(prompts, w))


def late_join(host: Host, model: str, prompts: list[str], level: int, w: Workload, repeats: int,
              extra: dict[str, Any]) -> dict[str, float]:
    """A new guest started once ``level`` others are generating: its first token, against
    its first token alone plus one step of the others (their median time between tokens
    before it started)."""
    newcomer = f"0. {prompts[0]}"
    alone, joined, steps = [], [], []
    for _ in range(repeats):
        alone.append(guests.at_once(host, model, [newcomer], w, extra)["ttft_s"])
        longer = replace(w, n_predict=w.n_predict * 8)  # still generating when the newcomer is done
        others = [guests.start(host, model, prompt, longer, extra) for prompt in prompts[:level]]
        try:
            for task in others:  # each has a few tokens: all of them are generating, a step is timed
                _tokens(task, 3)
            began = time.perf_counter()
            first = guests.generation(guests.start(host, model, newcomer, w, extra)).token_times[0]
            joined.append(first - began)
        finally:
            for task in others:
                task.stop()
        gaps = [gap for g in (guests.generation(task) for task in others) for gap in _gaps_before(g.token_times, began)]
        steps.append(statistics.median(gaps) if gaps else float("nan"))
    return {"alone_s": statistics.median(alone), "joined_s": statistics.median(joined), "step_s": statistics.median(steps)}


def _tokens(task: GuestTask, count: int) -> None:
    """Wait until the guest has generated ``count`` tokens."""
    seen = 0
    for event in task.events():
        seen += event.kind is EventKind.TOKEN
        if seen >= count:
            return
        if event.kind is EventKind.DONE:
            raise RuntimeError(f"a guest ended after {seen} tokens, before a newcomer could join: {event.data}")


def _gaps_before(stamps: list[float], moment: float) -> list[float]:
    """The gaps between consecutive tokens sampled before ``moment``: the steps of a
    batch the newcomer had not joined yet."""
    return [b - a for a, b in itertools.pairwise(t for t in stamps if t < moment)]


MEMORY_CHILD = """
import json, sys
from wasinn_lab import Host, Tensor, TensorType
def rss():
    status = open("/proc/self/status").read()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024
model, count = sys.argv[1], int(sys.argv[2])
host = Host(max_sessions=max(count, 1))
host.properties(model)
before = rss()
sessions = []
for n in range(count):
    session = host.open_session(model, {"n-predict": 4, "temp": 0})
    session.compute({"prompt": Tensor((1,), TensorType.U8, f"Hello there, number {n}".encode())})
    sessions.append(session)
print(json.dumps({"sessions": count, "rss_before": before, "rss_after": rss()}))
"""


def memory(model: str, sessions: int) -> dict[str, Any]:
    """Resident memory of ``sessions`` sessions that each computed a short prompt, in a
    child process of its own (nothing else of this run in it)."""
    done = subprocess.run([sys.executable, "-c", MEMORY_CHILD, model, str(sessions)], capture_output=True, text=True,
                          timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"the memory child failed:\n{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _spread(ratios: pd.DataFrame, level: int, path: str) -> str:
    try:
        q1, m, q3 = ratios.loc[(level, path), ["q1", "m", "q3"]]
    except KeyError:
        return ""
    return f"{m:.2f} ({q1:.2f}-{q3:.2f})"


def report(frame: pd.DataFrame, mode: str) -> pd.DataFrame:
    names = ("q1", "m", "q3")
    vs_floor = paired(frame, ["level"], "tok_per_s", "floor", names)
    vs_serial = paired(frame, ["level"], "tok_per_s", "serial", names)
    assert vs_floor is not None and vs_serial is not None
    medians = frame.groupby(["level", "path"])[["tok_per_s", "ttft_s"]].median().unstack("path")
    table = pd.DataFrame(index=medians.index)
    for path in PATHS:
        table[f"{path} tok/s"] = medians[("tok_per_s", path)].round(1)
    table["lab/floor"] = [_spread(vs_floor, level, "lab") for level in table.index]
    table["lab/serial"] = [_spread(vs_serial, level, "lab") for level in table.index]
    for path in PATHS:
        table[f"{path} 1st ms"] = (medians[("ttft_s", path)] * 1e3).round().astype(int)
    table["lab mode"] = mode
    return table


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,2,4,8,16", help="numbers of guests at once (default 1,2,4,8,16)")
    parser.add_argument("--n-predict", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="default", help="a registered model: default or smollm2")
    parser.add_argument("--sampling", choices=sorted(SAMPLINGS), default="greedy")
    parser.add_argument("--threads", type=int, default=Workload().threads)
    parser.add_argument("--ctx-size", type=int, default=512, help="per sequence and per session (default 512)")
    parser.add_argument("--sessions", type=int, default=100, help="sessions for the memory measure (0: skip it)")
    parser.add_argument("--join-level", type=int, default=8, help="others generating when a new session starts (0: skip)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    options = parser.parse_args()
    levels = [int(level) for level in options.levels.split(",")]
    if min(levels) < 1 or options.repeats < 1:
        parser.error("levels and --repeats must be at least 1")
    w = Workload(prompt_tokens=options.prompt_tokens, n_predict=options.n_predict, threads=options.threads,
                 ctx_size=options.ctx_size, sampling=options.sampling)
    print(f"model {options.model}, {options.sampling}, prompt {options.prompt_tokens} tokens, n-predict "
          f"{options.n_predict}, ctx-size {options.ctx_size} per sequence, {options.repeats} repeats, levels {levels}")

    with Host() as host:
        path = host.registry.get(options.model).path
        if path is None:
            parser.error(f"{options.model!r} has no model file: benchmarks need a GGUF model")
        baselines = Baselines(path)
        try:
            llm = baselines.llama(w)
            extra = guests.batching_params(host, True)
            mode = guests.batching_mode(host, True)
            prompts = guests.distinct_prompts(prompt_of(llm, options.prompt_tokens), max([*levels, options.join_level]))
            guests.at_once(host, options.model, prompts[:1], w, extra)  # unrecorded: the guest compiled, the weights loaded
            frame = pd.DataFrame([row for level in levels for row in
                                  measure_level(host, options.model, llm, prompts[:level], w, options.repeats, extra)])
            joined = late_join(host, options.model, prompts, options.join_level, w, options.repeats, extra) \
                if options.join_level else None
        finally:
            baselines.close()
    write({"concurrency": frame}, options.out)
    table = report(frame, mode)
    print(table.to_string(), end="\n\n")

    print("targets:")
    ratios = paired(frame, ["level"], "tok_per_s", "floor", ("q1", "m", "q3"))
    assert ratios is not None
    for level, target in FLOOR_TARGETS.items():
        if level in levels:
            value = cast(float, ratios.loc[(level, "lab"), "m"])
            print(f"  lab >= {target}x floor at N={level}: {value:.2f} {_verdict(value >= target)}")
    if joined is not None:
        bound = joined["alone_s"] + joined["step_s"]
        print(f"  a new session's first token with {options.join_level} others generating <= its own first token "
              f"alone + one step: {joined['joined_s'] * 1e3:.0f} ms vs {joined['alone_s'] * 1e3:.0f} + "
              f"{joined['step_s'] * 1e3:.0f} ms {_verdict(joined['joined_s'] <= bound)}")
    if options.sessions:
        used = memory(options.model, options.sessions)
        per = (used["rss_after"] - used["rss_before"]) / options.sessions
        at_100 = (used["rss_before"] + 100 * per) / 2**30  # measured, where --sessions is 100
        print(f"  100 sessions that each computed a short prompt <= {MEMORY_TARGET_GIB:g} GiB resident: "
              f"{at_100:.2f} GiB {_verdict(at_100 <= MEMORY_TARGET_GIB)} ({options.sessions} measured: "
              f"{used['rss_after'] / 2**30:.2f} GiB, {per / 2**20:.1f} MiB each beyond the loaded model)")
    print(f"rows in {options.out}/concurrency.csv")


if __name__ == "__main__":
    main()
