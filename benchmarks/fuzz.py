"""Longer fuzz runs, with their figures: the preview1 ABI, or (``--wit``) the WIT
front-ends (wasi:nn, wasinn:llm) through the fuzz_wit component.

    .venv/bin/python benchmarks/fuzz.py [--calls 100000] [--seed 1]
    .venv/bin/python benchmarks/fuzz.py --wit [--calls 100000] [--seed 1]
"""

from __future__ import annotations

import argparse

from wasinn_lab import Host
from wasinn_lab.fuzz import fuzz, fuzz_wit
from wasinn_lab.models import default_model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--wit", action="store_true", help="fuzz the WIT front-ends instead of preview1")
    options = parser.parse_args()
    host = Host(default_model=False)
    if options.wit:
        host.register("tiny", default_model_path(), config={"n-predict": 2, "ctx-size": 128, "threads": 1})
        wit = fuzz_wit(host, calls=options.calls, seed=options.seed, model="tiny")
        print(f"calls: {wit.calls:,} in {wit.runs} runs, {wit.seconds:.1f} s ({wit.calls / wit.seconds:,.0f} calls/s)")
        print(f"failures (undocumented answers, host errors, unplanned traps): {len(wit.failures)}")
        print(f"sessions leaked: {wit.leaked_sessions}; host resources left by guests that dropped all: "
              f"{wit.resources_left}")
        print(f"planned traps: {dict(wit.traps)}; resources the host freed after them: {wit.freed_after_traps}")
        print("answers:", dict(sorted(wit.outcomes.items())))
        for line in wit.failures[:20]:
            print("  failure:", line)
        return
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
