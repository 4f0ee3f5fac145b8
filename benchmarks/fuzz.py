"""A longer fuzz run of the preview1 ABI, with its figures.

    .venv/bin/python benchmarks/fuzz.py [--calls 100000] [--seed 1]
"""

from __future__ import annotations

import argparse

from wasinn_lab import Host
from wasinn_lab.fuzz import fuzz
from wasinn_lab.models import default_model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args()
    host = Host(default_model=False)
    host.register("tiny", default_model_path(), config={"n-predict": 2, "ctx-size": 128})
    report = fuzz(host, calls=options.calls, seed=options.seed)
    print(f"calls: {report.calls:,} in {report.seconds:.1f} s ({report.calls / report.seconds:,.0f} calls/s)")
    print(f"crashes (unexpected host errors or escapes): {report.crashes}")
    print(f"sessions leaked: {report.leaked_sessions}")
    print("errnos:", dict(sorted(report.errnos.items())))
    print("calls:", dict(report.by_call.most_common()))
    for line in report.unexpected[:20]:
        print("  unexpected:", line)


if __name__ == "__main__":
    main()
