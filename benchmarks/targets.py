"""Check the speed targets (issues 4 and 13), each measured side by side in this one run.

    .venv/bin/python benchmarks/targets.py [--runs 7] [--prompt-tokens 32,256,1024] [--out benchmarks/out]

Every path runs with the same sampling (repeat penalty 1.1 over 64 tokens, top-k 40,
top-p 0.95, min-p 0.05, temperature 0.8), the same context settings and one context for
all its runs. Prints each measurement and PASS or MISS against its target, and writes the
frames to --out. Exits 0 either way: a miss is a finding to explain, not a crash.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

from boundary import measure as measure_boundary

from wasinn_lab.bench import Bench, Workload, write

TARGETS = {
    "stream_vs_floor": (">=", 1.02, "streaming guest decode rate / the floor (llama_decode and llama.cpp's chain)"),
    "stream_vs_direct": (">=", 1.0, "streaming guest decode rate / llama-cpp-python, lowest over the prompt lengths"),
    "boundary_warm_us": ("<=", 15.0, "host boundary per host call, warm: get_output_single (us)"),
    "boundary_after_decode_us": ("<=", 30.0, "host boundary per host call right after a decode: get_output_single (us)"),
    "step_boundary_us": ("<=", 30.0, "host boundary per host call right after a decode: compute_single less llama.cpp (us)"),
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
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--n-predict", type=int, default=64)
    parser.add_argument("--prompt-tokens", default="32,256,1024", help="the prompt lengths to sweep")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    options = parser.parse_args()
    lengths = [int(n) for n in options.prompt_tokens.split(",")]

    bench = Bench()  # its own host, closed with it
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, threads {Workload().threads}, "
          f"load average at the start {os.getloadavg()[0]:.2f}")
    sweep = bench.sweep("prompt-tokens", lengths, Workload(n_predict=options.n_predict), options.runs)
    summary = Bench.summary(sweep, by=["prompt_tokens"])
    warm_s, after_decode_s = measure_boundary()
    loads = bench.load_by_name(options.runs)
    starts = bench.guest_start(options.runs)
    chat = bench.chat_turns(10)
    session_us = bench.session_cost()
    bench.close()
    write({"targets-sweep": sweep, "targets-load": loads, "targets-start": starts, "targets-chat": chat}, options.out)

    columns = ["decode_tok_per_s", "vs_floor", "vs_floor_q1", "vs_floor_q3", "vs_direct", "vs_direct_q1",
               "vs_direct_q3", "ttft_ratio", "step_boundary_us", "output_boundary_us", "guest_us_per_token",
               "load_1min"]
    print(summary[columns].round(3).to_string(), end="\n\n")
    print(loads.groupby("kind")["ms"].median().round(3).to_string(), end="\n\n")
    print(starts.groupby("kind", sort=False)["ms"].median().round(2).to_string(), end="\n\n")
    ttft = chat.pivot(index="turn", columns="mode", values="ttft_s")
    print(ttft.round(3).to_string(), end="\n\n")

    stream = summary.xs("guest-stream", level="path")
    measured = {
        "stream_vs_floor": stream["vs_floor"].min(),
        "stream_vs_direct": stream["vs_direct"].min(),
        "boundary_warm_us": warm_s * 1e6,
        "boundary_after_decode_us": after_decode_s * 1e6,
        "step_boundary_us": stream["step_boundary_us"].max(),
        "cached_load_ms": loads[loads.kind == "cached"]["ms"].median(),
        "start_from_cache_ms": starts[starts.kind == "memory cache"]["ms"].median(),
        "chat_ttft_turn10_over_turn1": ttft["prefix reuse"].iloc[-1] / ttft["prefix reuse"].iloc[0],
    }
    baseline = ttft["re-evaluate all"].iloc[-1] / ttft["re-evaluate all"].iloc[0]
    for name, value in measured.items():
        op, limit, what = TARGETS[name]
        print(f"{verdict(name, value)}  {what}: {value:.3f} (target {op} {limit})")
    compute = summary.xs("guest-compute", level="path")
    print(f"info  at {lengths} prompt tokens: guest-stream/floor {', '.join(f'{v:.3f}' for v in stream['vs_floor'])};"
          f" guest-compute/floor {', '.join(f'{v:.3f}' for v in compute['vs_floor'])}")
    print(f"info  chat turn 10 / turn 1 when re-evaluating everything (WasmEdge's way): {baseline:.3f}")
    print(f"info  start from the on-disk compiled cache: {starts[starts.kind == 'disk cache']['ms'].median():.2f} ms;"
          f" compiling afresh: {starts[starts.kind == 'compile']['ms'].median():.2f} ms")
    print(f"info  a session's token path over its backend's stream (metrics recording included): {session_us:.3f} us per token")


if __name__ == "__main__":
    main()
