"""What components cost, measured side by side in one run.

    .venv/bin/python benchmarks/components.py [--runs 5] [--n-predict 64] [--trips 20]

- streaming decode: the `stream` guest as a preview1 module and as a component on
  wasinn:llm (`stream_llm`), against llama-cpp-python driven directly, interleaved run by
  run with the same settings and greedy sampling (wasinn_lab.bench); the host boundary per
  token (per chunk, for the component);
- tensor bytes: `tensor_py echo N`: N round trips of one 1 MiB U8 tensor through compute
  on the echo model (made in the guest, into the host, back out), timed by the guest;
- start: compiling the 18 MB Python component afresh, from the disk cache a new process
  uses, and a whole run of a C component from the cache.

Prints each figure with PASS or MISS against its target and exits 0 either way.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

from wasinn_lab import Host
from wasinn_lab.bench import Bench, Workload
from wasinn_lab.guests import resolve
from wasinn_lab.runtime import GuestRuntime

TARGETS = {
    "component_decode_ratio": (">=", 0.98, "component streaming decode rate / direct llama-cpp-python"),
    "tensor_round_trip_ms": ("<=", 50.0, "1 MiB tensor round trip through compute on echo (ms, median)"),
}


def verdict(name: str, value: float) -> str:
    op, limit, what = TARGETS[name]
    ok = value >= limit if op == ">=" else value <= limit
    return f"{'PASS' if ok else 'MISS'}  {what}: {value:.3f} (target {op} {limit})"


def timed(call: object) -> float:
    started = time.perf_counter()
    call()  # type: ignore[operator]
    return (time.perf_counter() - started) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--n-predict", type=int, default=64)
    parser.add_argument("--trips", type=int, default=20)
    options = parser.parse_args()

    with Host() as host, Bench(host, progress=False) as bench:
        frame = bench.compare(Workload(n_predict=options.n_predict), options.runs,
                              paths=("direct", "guest-stream", "component-stream"))
        summary = Bench.summary(frame)
        print(summary.round(3).to_string(), end="\n\n")
        paired = frame.pivot(index="run", columns="path", values="decode_tok_per_s")
        ratios = paired["component-stream"] / paired["guest-stream"]
        print(f"info  component / preview1 module decode, paired per run: median {ratios.median():.3f}, "
              f"IQR {ratios.quantile(0.25):.3f}..{ratios.quantile(0.75):.3f}")

        host.run("tensor_py", "echo", "2")  # compiled and cached, warm
        result = host.run("tensor_py", "echo", str(options.trips))
        trips = [float(ms) for ms in re.search(r"round trip ms: (.*)", result.stdout).group(1).split()]  # type: ignore[union-attr]
        median = statistics.median(trips)
        print(f"info  1 MiB round trips (ms): {' '.join(f'{ms:.1f}' for ms in trips)}")
        print(f"info  tensor bytes: {2 / (median / 1e3):.1f} MiB/s moved (1 MiB in and 1 MiB out per trip)")

        wasm = resolve("tensor_py").read_bytes()
        def compile_in(cache: str) -> None:
            with GuestRuntime(Path(cache)) as runtime:  # a new process's runtime: only the disk cache
                runtime.compile(wasm)

        with tempfile.TemporaryDirectory() as cache:
            cold = timed(lambda: compile_in(cache))
            cached = statistics.median(timed(lambda: compile_in(cache)) for _ in range(5))
        host.run("echo_nn", "echo")
        whole = statistics.median(timed(lambda: host.run("echo_nn", "echo")) for _ in range(10))
        print(f"info  Python component (18 MB): compile {cold / 1e3:.1f} s; from the disk cache {cached:.1f} ms; "
              f"a whole run of the C component echo_nn from the cache {whole:.1f} ms")

        print()
        print(verdict("component_decode_ratio", summary.loc["component-stream", "decode_ratio"]))
        print(verdict("tensor_round_trip_ms", median))
        print(f"info  host boundary per token: preview1 module {summary.loc['guest-stream', 'boundary_us_per_token']:.1f} us, "
              f"component {summary.loc['component-stream', 'boundary_us_per_token']:.1f} us")


if __name__ == "__main__":
    main()
