"""Where a step's time goes with N generations at once: sessions pulled directly from N
threads (no guests) against N `stream` guests, each printing tokens/s in all, rows per
llama_decode and milliseconds per step (issue 17's N=8 gap, RESULTS.md); then where a
newcomer's first token goes while N others generate: the pool's growth, the step that
holds its prompt beside the others' tokens, and its first token.

    .venv/bin/python benchmarks/concurrency_steps.py [--join 7,8] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from wasinn_lab import Host, Session, Tensor, TensorType
from wasinn_lab.backends.llama.native import NativeContext
from wasinn_lab.backends.llama.pool import Pool
from wasinn_lab.backends.llama.scheduler import scheduler

CONFIG = {"n-predict": 64, "temp": 0.0, "ctx-size": 512, "ignore-eos": True}


def prompt(index: int) -> str:
    return f"Prompt number {index}: once upon a time"


def start(host: Host, index: int, config: dict[str, Any]) -> Session:
    session = host.open_session("default", config)
    session.set_input("prompt", Tensor((1,), TensorType.U8, prompt(index).encode()))
    session.start_generation()
    return session


def pull_session(host: Host, index: int) -> None:
    with start(host, index, CONFIG) as session:
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


@contextmanager
def timed(owner: type, name: str, calls: list[tuple[float, float, Any]]) -> Iterator[None]:
    """Each call of ``owner.name`` in the block as (start, seconds, its arguments)."""
    original = getattr(owner, name)

    def timing(*args: Any) -> Any:
        began = time.perf_counter()
        try:
            return original(*args)
        finally:
            calls.append((began, time.perf_counter() - began, args))

    setattr(owner, name, timing)
    try:
        yield
    finally:
        setattr(owner, name, original)


def first_token(host: Host, index: int) -> float:
    """Seconds from a new session's open to its first token."""
    began = time.perf_counter()
    with start(host, index, CONFIG) as session:
        session.next_token()
        return time.perf_counter() - began


def newcomer(host: Host, others: int) -> dict[str, float]:
    """A session started once ``others`` are generating (each a few tokens in), in
    milliseconds: its first token, the pool's growth, when the step holding its prompt
    began and how long it took, and a step of the others before it came."""
    longer = {**CONFIG, "n-predict": 1000}
    running = [start(host, index, longer) for index in range(others)]
    grows: list[tuple[float, float, Any]] = []
    decodes: list[tuple[float, float, Any]] = []
    try:
        for session in running:
            for _ in range(3):
                session.next_token()
        pullers = [threading.Thread(target=lambda s=session: [s.next_token() for _ in range(40)]) for session in running]
        with timed(Pool, "_grow", grows), timed(NativeContext, "decode_together", decodes):
            for thread in pullers:
                thread.start()
            time.sleep(0.5)  # the others in full flow
            began = time.perf_counter()
            first = first_token(host, others)
            for thread in pullers:
                thread.join()
    finally:
        for session in running:
            session.close()
    joined = next((at, seconds) for at, seconds, args in decodes if any(len(chunk.tokens) > 1 for chunk in args[1]))
    alone = [seconds for at, seconds, args in decodes if at < began and len(args[1]) == others]
    return {"first token": first * 1e3, "pool grown": sum(seconds for _, seconds, _ in grows) * 1e3,
            "its prompt's step began": (joined[0] - began) * 1e3, "its prompt's step took": joined[1] * 1e3,
            "a step of the others": statistics.median(alone) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--join", default="7,8", help="others generating when a newcomer starts (default 7,8)")
    parser.add_argument("--repeats", type=int, default=7, help="newcomers at each level (default 7)")
    options = parser.parse_args()
    try:
        levels = [int(level) for level in options.join.split(",")]
    except ValueError:
        parser.error(f"--join takes numbers separated by commas, not {options.join!r}")
    if options.repeats < 1 or min(levels) < 1:
        parser.error("--repeats and every --join level must be at least 1")
    with Host() as host:
        pull_session(host, 0)  # the weights loaded and the pool made, outside what is timed
        for n in (1, 8):
            for name, job in (("sessions", pull_session), ("guests", run_guest)):
                print(n, name, measure(host, n, job), flush=True)
        for others in levels:
            alone = statistics.median(first_token(host, others) for _ in range(options.repeats)) * 1e3
            runs = [newcomer(host, others) for _ in range(options.repeats)]
            medians = ", ".join(f"{name} {statistics.median(run[name] for run in runs):.0f}" for name in runs[0])
            print(f"newcomer: alone, first token {alone:.0f} ms; with {others} others generating (ms, medians of "
                  f"{options.repeats}): {medians}", flush=True)


if __name__ == "__main__":
    main()
