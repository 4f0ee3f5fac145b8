"""Where a step's time goes with N generations at once: sessions pulled directly from N
threads (no guests) against N `stream` guests, each printing tokens/s in all, rows per
llama_decode and milliseconds per step (issue 17's N=8 gap, RESULTS.md).

    .venv/bin/python benchmarks/concurrency_steps.py
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from wasinn_lab import Host, Tensor, TensorType
from wasinn_lab.backends.llama.scheduler import scheduler

CONFIG = {"n-predict": 64, "temp": 0.0, "ctx-size": 512, "ignore-eos": True}


def prompt(index: int) -> str:
    return f"Prompt number {index}: once upon a time"


def pull_session(host: Host, index: int) -> None:
    with host.open_session("default", CONFIG) as session:
        session.set_input("prompt", Tensor((1,), TensorType.U8, prompt(index).encode()))
        session.start_generation()
        while session.next_token() is not None:
            pass


def run_guest(host: Host, index: int) -> None:
    host.run("stream", "default", prompt(index), params=CONFIG)


def measure(host: Host, n: int, job: Callable[[Host, int], None]) -> str:
    steps, rows = scheduler.steps, scheduler.batched_rows
    started = time.perf_counter()
    threads = [threading.Thread(target=job, args=(host, index)) for index in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    steps, rows = scheduler.steps - steps, scheduler.batched_rows - rows
    return f"{n * CONFIG['n-predict'] / seconds:.1f} tok/s {rows / steps:.2f} rows/step {seconds / steps * 1000:.1f} ms/step"


def main() -> None:
    with Host() as host:
        pull_session(host, 0)  # the weights loaded and the pool made, outside what is timed
        for n in (1, 8):
            for name, job in (("sessions", pull_session), ("guests", run_guest)):
                print(n, name, measure(host, n, job), flush=True)


if __name__ == "__main__":
    main()
