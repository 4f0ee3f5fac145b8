"""Why the host boundary costs what it does: one wasi-nn call timed warm and right after
a decode, side by side in one run.

    .venv/bin/python benchmarks/boundary.py [--calls 2000] [--tokens 64]

The probe guest calls ``get_output_single`` (the host's whole work for it: guest memory,
handles, the session, the copy out) in a loop, then once after each ``compute_single``,
as a streaming guest does. Each call is timed inside the host's entry point, so wasm and
wasmtime-py's trampolines are not counted; the figures are medians.
"""

from __future__ import annotations

import argparse
import statistics
import struct
import time
from collections.abc import Callable
from typing import Any

from wasinn_lab import Host
from wasinn_lab.abi.preview1 import Preview1

SETTINGS = '{"n-predict": 100000, "temp": 0.0}'


def measure(calls: int = 2000, tokens: int = 64) -> tuple[float, float]:
    """The host's median seconds in ``get_output_single``: warm, and right after a decode."""
    timings: dict[str, list[float]] = {}
    make_entry = Preview1._entry

    def timed_entry(self: Preview1, method: Callable[..., None]) -> Callable[..., int]:
        entry = make_entry(self, method)
        samples = timings.setdefault(method.__name__, [])

        def timed(*args: Any) -> int:
            started = time.perf_counter()
            try:
                return entry(*args)
            finally:
                samples.append(time.perf_counter() - started)

        return timed

    Preview1._entry = timed_entry  # type: ignore[method-assign]
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
        Preview1._entry = make_entry  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--tokens", type=int, default=64)
    options = parser.parse_args()
    warm, after_decode = measure(options.calls, options.tokens)
    print(f"get_output_single, host side: warm {warm * 1e6:.1f} us; right after a decode {after_decode * 1e6:.1f} us "
          f"({after_decode / warm:.1f}x), median of {options.calls} and of {options.tokens} calls")


if __name__ == "__main__":
    main()
