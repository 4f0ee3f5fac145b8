"""What a session costs in memory: resident memory as sessions are added on one model.

    .venv/bin/python benchmarks/memory.py [--sessions 8] [--ctx-size 4096]

Every session gets its own llama context (KV cache); the weights are loaded once for the
model and shared. Each added session should cost about its KV cache, not the model.
"""

from __future__ import annotations

import argparse
import itertools
import os

from wasinn_lab import Host, Tensor, TensorType


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--ctx-size", type=int, default=4096)
    options = parser.parse_args()

    host = Host()
    start = rss_mib()
    config = {"ctx-size": options.ctx_size, "n-predict": 4, "temp": 0}
    model = host.properties("default")["model"]
    print(f"model: {model['model_size_bytes'] / 2**20:.0f} MiB of weights, {model['n_layers']} layers; "
          f"RSS after loading it {rss_mib():.0f} MiB (process start {start:.0f} MiB)")
    sessions, sizes = [], [rss_mib()]
    for _ in range(options.sessions):
        session = host.open_session("default", config)
        session.compute({"prompt": Tensor((1,), TensorType.U8, b"Hello there")})  # touches the weights and the KV cache
        sessions.append(session)
        sizes.append(rss_mib())
    deltas = [b - a for a, b in itertools.pairwise(sizes)]
    print("RSS after each session (MiB): " + ", ".join(f"{s:.0f}" for s in sizes[1:]))
    print(f"first session: +{deltas[0]:.1f} MiB (first touch of the weights included); "
          f"each further session: {sum(deltas[1:]) / len(deltas[1:]):.1f} MiB on average "
          f"(ctx-size {options.ctx_size}); the weights: {model['model_size_bytes'] / 2**20:.0f} MiB, once")


if __name__ == "__main__":
    main()
