"""Check issue 4's targets, each measured side by side in this one run.

    .venv/bin/python benchmarks/targets.py [--runs 5] [--out benchmarks/out]

Prints each measurement and PASS or MISS against its target, and writes the frames to
--out. Exits 0 either way: a miss is a finding to explain, not a crash.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

from wasinn_lab.bench import Bench, Workload, write

TARGETS = {
    "stream_decode_ratio": (">=", 0.98, "streaming guest decode rate / direct llama-cpp-python"),
    "stream_boundary_us": ("<=", 30.0, "host boundary per token, streaming guest (us)"),
    "cached_load_ms": ("<=", 5.0, "second load_by_name of a loaded model (ms)"),
    "start_from_cache_ms": ("<=", 50.0, "guest start from the compiled-module cache (ms)"),
    "chat_ttft_turn10_over_turn1": ("<=", 1.5, "time to first token, chat turn 10 / turn 1"),
}


def verdict(name: str, value: float) -> str:
    op, limit, _ = TARGETS[name]
    ok = value >= limit if op == ">=" else value <= limit
    return "PASS" if ok else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--n-predict", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    options = parser.parse_args()

    bench = Bench()
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, threads {Workload().threads}")
    compare = bench.compare(Workload(n_predict=options.n_predict), options.runs)
    summary = Bench.summary(compare)
    loads = bench.load_by_name(options.runs)
    starts = bench.guest_start(options.runs)
    chat = bench.chat_turns(10)
    recording_us = bench.recording_cost()
    write({"targets-compare": compare, "targets-load": loads, "targets-start": starts, "targets-chat": chat}, options.out)

    print(summary.round(3).to_string(), end="\n\n")
    print(loads.groupby("kind")["ms"].median().round(3).to_string(), end="\n\n")
    print(starts.groupby("kind", sort=False)["ms"].median().round(2).to_string(), end="\n\n")
    ttft = chat.pivot(index="turn", columns="mode", values="ttft_s")
    print(ttft.round(3).to_string(), end="\n\n")

    measured = {
        "stream_decode_ratio": summary.loc["guest-stream", "decode_ratio"],
        "stream_boundary_us": summary.loc["guest-stream", "boundary_us_per_token"],
        "cached_load_ms": loads[loads.kind == "cached"]["ms"].median(),
        "start_from_cache_ms": starts[starts.kind == "memory cache"]["ms"].median(),
        "chat_ttft_turn10_over_turn1": ttft["prefix reuse"].iloc[-1] / ttft["prefix reuse"].iloc[0],
    }
    baseline = ttft["re-evaluate all"].iloc[-1] / ttft["re-evaluate all"].iloc[0]
    for name, value in measured.items():
        op, limit, what = TARGETS[name]
        print(f"{verdict(name, value)}  {what}: {value:.3f} (target {op} {limit})")
    print(f"info  compute guest decode ratio: {summary.loc['guest-compute', 'decode_ratio']:.3f}")
    print(f"info  chat turn 10 / turn 1 when re-evaluating everything (WasmEdge's way): {baseline:.3f}")
    print(f"info  start from the on-disk compiled cache: {starts[starts.kind == 'disk cache']['ms'].median():.2f} ms;"
          f" compiling afresh: {starts[starts.kind == 'compile']['ms'].median():.2f} ms")
    print(f"info  metrics recording cost: {recording_us:.3f} us per token")


if __name__ == "__main__":
    main()
