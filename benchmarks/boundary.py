"""Why the host boundary costs what it does: one wasi-nn call timed warm and right after
a decode, side by side in one run.

    .venv/bin/python benchmarks/boundary.py [--calls 2000] [--tokens 64]
    .venv/bin/python benchmarks/boundary.py --against REV [--rounds 5]

The probe guest calls ``get_output_single`` (the host's whole work for it: the call
wrapper, guest memory, handles, the session, the copy out) in a loop, then once after
each ``compute_single``, as a streaming guest does. Each call is timed around the host's
entry point (``GuestNN.boundary``'s wrapper), so wasm and wasmtime-py's trampolines are
not counted; the figures are medians.

``--against REV`` compares this checkout's boundary with the git revision REV's: the two
run this script in turn, ``--rounds`` times each, in fresh processes, and the ratios
(this / REV) are paired round by round.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wasinn_lab import Host
from wasinn_lab.nn import GuestNN

SETTINGS = '{"n-predict": 100000, "temp": 0.0}'


def measure(calls: int = 2000, tokens: int = 64) -> tuple[float, float]:
    """The host's median seconds in ``get_output_single``: warm, and right after a decode."""
    timings: dict[str, list[float]] = {}
    boundary = GuestNN.boundary

    def timed_boundary(self: GuestNN, call: str, function: Callable[..., Any],
                       refuse: Callable[..., Any]) -> Callable[..., Any]:
        entry = boundary(self, call, function, refuse)
        samples = timings.setdefault(call.rpartition(" ")[2], [])

        def timed(*args: Any) -> Any:
            started = time.perf_counter()
            try:
                return entry(*args)
            finally:
                samples.append(time.perf_counter() - started)

        return timed

    GuestNN.boundary = timed_boundary  # type: ignore[method-assign]
    try:
        with Host().instantiate("probe") as probe:
            def nn(name: str, *args: int) -> None:
                errno = probe.call(f"nn_{name}", *args)
                if errno:
                    raise SystemExit(f"{name} failed with errno {errno}")

            def put(pointer: int, data: bytes) -> int:
                probe.write(pointer, data)
                return pointer

            def u32(pointer: int) -> int:
                return struct.unpack("<I", probe.read(pointer, 4))[0]

            nn("load_by_name_with_config", put(4096, b"default"), 7, put(4160, SETTINGS.encode()), len(SETTINGS), 4352)
            nn("init_execution_context", u32(4352), 4356)
            context, prompt = u32(4356), b"Once upon a time"
            tensor = put(4480, struct.pack("<IIB3xII", put(4400, struct.pack("<I", 1)), 1, 3, put(4416, prompt),
                                           len(prompt)))
            nn("set_input", context, 0, tensor)
            nn("compute_single", context)  # the prompt, and the first token

            samples = timings["get_output_single"]
            samples.clear()
            for _ in range(calls):
                nn("get_output_single", context, 0, 8192, 256, 4600)
            warm = statistics.median(samples)
            samples.clear()
            for _ in range(tokens):
                nn("compute_single", context)
                nn("get_output_single", context, 0, 8192, 256, 4600)
            return warm, statistics.median(samples)
    finally:
        GuestNN.boundary = boundary  # type: ignore[method-assign]


_LINE = re.compile(r"warm ([\d.]+) us; right after a decode ([\d.]+) us")


def _run(tree: Path, options: argparse.Namespace) -> tuple[float, float]:
    """This script's two medians (us), run in ``tree``'s checkout."""
    command = [sys.executable, str(tree / "benchmarks" / "boundary.py"), "--calls", str(options.calls),
               "--tokens", str(options.tokens)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    output = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=True).stdout
    match = _LINE.search(output)
    if match is None:
        raise SystemExit(f"no timing in {tree}'s output: {output}")
    return float(match[1]), float(match[2])


def compare(options: argparse.Namespace) -> None:
    here = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="boundary-") as scratch:
        archive = subprocess.run(["git", "archive", options.against], cwd=here, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", scratch], input=archive, check=True)
        ratios: dict[str, list[float]] = {"warm": [], "after a decode": []}
        for round_ in range(options.rounds):
            trees = [here, Path(scratch)] if round_ % 2 == 0 else [Path(scratch), here]
            figures = {tree: _run(tree, options) for tree in trees}
            (this_warm, this_after), (base_warm, base_after) = figures[here], figures[Path(scratch)]
            ratios["warm"].append(this_warm / base_warm)
            ratios["after a decode"].append(this_after / base_after)
            print(f"round {round_ + 1}: this {this_warm:.2f} / {this_after:.2f} us, {options.against} "
                  f"{base_warm:.2f} / {base_after:.2f} us")
    for name, values in ratios.items():
        q1, median, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
        print(f"get_output_single {name}, this / {options.against}: median {median:.3f} "
              f"(IQR {q1:.3f}-{q3:.3f}) over {len(values)} paired rounds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--against", metavar="REV", help="compare with this git revision's boundary, paired")
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    if options.against:
        compare(options)
        return
    warm, after_decode = measure(options.calls, options.tokens)
    print(f"get_output_single, host side: warm {warm * 1e6:.1f} us; right after a decode {after_decode * 1e6:.1f} us "
          f"({after_decode / warm:.1f}x), median of {options.calls} and of {options.tokens} calls")


if __name__ == "__main__":
    main()
