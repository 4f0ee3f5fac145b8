"""How often a greedy sequence decoded together with others leaves its solo run.

For each N, N distinct prompts are generated greedily, each alone (``batch-with-others``
off: a batch of its own, as a context of its own computes it) and then all N at once from
N threads (the scheduler decodes them in one batch per step). Printed per N: how many of
the N diverged from their solo run, and the first differing token of each that did, and
the rows per llama_decode the batched run reached (N when the scheduler gathers them all).

    .venv/bin/python benchmarks/batch_invariance.py [--sizes 2,4,8,16] [--tokens 64]
"""

from __future__ import annotations

import argparse
import os
import threading
from typing import Any

from wasinn_lab import Host, Tensor, TensorType
from wasinn_lab.backends.llama.scheduler import scheduler

PROMPTS = [
    "Once upon a time", "The capital of France is", "My favourite food is", "In the beginning",
    "The best way to learn is", "Rain fell on the", "She opened the door and", "Numbers: one, two,",
    "The history of the city begins with", "A recipe for bread:", "The old man said", "Dear diary, today",
    "The rules of chess are", "Under the sea there", "The train left the station", "A poem about winter:",
]


def generate(host: Host, text: str, config: dict[str, Any]) -> list[int]:
    with host.open_session("default", config) as session:
        session.set_input("prompt", Tensor((1,), TensorType.U8, text.encode()))
        session.start_generation()
        out = []
        while (token := session.next_token()) is not None:
            out.append(token.token_id)
        return out


def together(host: Host, texts: list[str], config: dict[str, Any]) -> list[list[int]]:
    results: list[list[int]] = [[] for _ in texts]
    start = threading.Barrier(len(texts))

    def work(index: int) -> None:
        start.wait()
        results[index] = generate(host, texts[index], config)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def first_difference(a: list[int], b: list[int]) -> int | None:
    return next((index for index, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2,4,8,16")
    parser.add_argument("--tokens", type=int, default=64)
    options = parser.parse_args()
    sizes = [int(size) for size in options.sizes.split(",")]
    config = {"temp": 0.0, "n-predict": options.tokens, "ignore-eos": True, "parallel": max(sizes)}
    print(f"greedy, {options.tokens} tokens, load {os.getloadavg()[0]:.1f}")
    print("| N | diverged | first differing token (each that diverged) | rows per llama_decode |")
    print("|---|---|---|---|")
    with Host(max_sessions=max(sizes) + 4) as host:
        solo = [generate(host, text, {**config, "batch-with-others": False}) for text in PROMPTS[: max(sizes)]]
        for size in sizes:
            steps, rows = scheduler.steps, scheduler.batched_rows
            batched = together(host, PROMPTS[:size], config)
            per_decode = (scheduler.batched_rows - rows) / max(1, scheduler.steps - steps)
            firsts = [first_difference(run, alone) for run, alone in zip(batched, solo)]
            diverged = sorted(first for first in firsts if first is not None)
            print(f"| {size} | {len(diverged)} of {size} | {', '.join(map(str, diverged)) or '-'} | {per_decode:.1f} |",
                  flush=True)
    print(f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
