"""Does raising glibc's malloc thresholds pay for component tensors? Measured side by side.

    .venv/bin/python benchmarks/malloc.py [--pairs 8] [--trips 10]

A ``list<u8>`` of n bytes makes wasmtime allocate several arrays of 32*n bytes. Above
glibc's mmap threshold (dynamic, 32 MiB at most) each is a fresh mmap whose pages fault
on first touch and are unmapped on free. wasinn-lab used to raise the thresholds to 64 MiB
for the whole process (``mallopt``) at the first component run. Here each pair is two fresh
processes, one with glibc's defaults and one with the same thresholds raised through
``GLIBC_TUNABLES`` (which sets what ``mallopt`` did, before the process starts), in
alternating order; each runs ``tensor_py echo TRIPS`` (1 MiB in and 1 MiB out per trip,
timed by the guest) after a warm-up, and reports its median trip. The ratio is tuned /
stock, per pair; below 1 the tuning pays.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

THRESHOLD = 64 << 20
TUNED = f"glibc.malloc.mmap_threshold={THRESHOLD}:glibc.malloc.trim_threshold={THRESHOLD}"
CHILD = """
import re, statistics, sys
from wasinn_lab import Host
with Host(default_model=False) as host:
    host.run("tensor_py", "echo", "2")  # compiled, cached and warm
    out = host.run("tensor_py", "echo", sys.argv[1]).stdout
trips = [float(ms) for ms in re.search(r"round trip ms: (.*)", out).group(1).split()]
print(statistics.median(trips))
"""


def median_trip_ms(trips: int, tuned: bool) -> float:
    env = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
    if tuned:
        env["GLIBC_TUNABLES"] = TUNED
    done = subprocess.run([sys.executable, "-c", CHILD, str(trips)], env=env, capture_output=True, text=True,
                          check=True, timeout=600)
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--trips", type=int, default=10)
    options = parser.parse_args()

    ratios = []
    for pair in range(options.pairs):
        order = (False, True) if pair % 2 == 0 else (True, False)
        measured = {tuned: median_trip_ms(options.trips, tuned) for tuned in order}
        ratios.append(measured[True] / measured[False])
        print(f"pair {pair}: stock {measured[False]:.1f} ms, tuned {measured[True]:.1f} ms, "
              f"ratio {ratios[-1]:.3f}", flush=True)
    quartiles = statistics.quantiles(ratios, n=4)
    print(f"1 MiB round trip, thresholds at {THRESHOLD >> 20} MiB / glibc's defaults, paired per process pair: "
          f"median {statistics.median(ratios):.3f}, IQR {quartiles[0]:.3f}..{quartiles[2]:.3f}")


if __name__ == "__main__":
    main()
