"""Decode-ahead on and off: the streaming guest against the floor, each setting in its own
process (one context per path, interleaved runs, paired ratios).

    .venv/bin/python benchmarks/decode_ahead.py on|off [--runs 5] [--prompt-tokens 32]
"""

from __future__ import annotations

import argparse
from typing import Any

from wasinn_lab.bench import Bench, Workload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("on", "off"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    options = parser.parse_args()
    with Bench(progress=False) as bench:
        run = bench.host.run

        def with_mode(*args: Any, **kwargs: Any) -> Any:  # the guest path's parameters, plus decode-ahead
            kwargs["params"] = {**kwargs.get("params", {}), "decode-ahead": options.mode}
            return run(*args, **kwargs)

        bench.host.run = with_mode  # type: ignore[method-assign]
        frame = bench.compare(Workload(prompt_tokens=options.prompt_tokens), runs=options.runs,
                              paths=["floor", "guest-stream"])
    summary = Bench.summary(frame)
    print(f"decode-ahead {options.mode}")
    print(summary[["decode_tok_per_s", "vs_floor", "vs_floor_q1", "vs_floor_q3", "load_1min"]].round(3).to_string())


if __name__ == "__main__":
    main()
