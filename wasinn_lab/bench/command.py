"""The command line: ``wasinn-lab bench``, and ``write``, which saves what it measured.
Building the parser imports neither pandas nor llama.cpp."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, SweepError
from .workload import ALL_PATHS, MIN_RUNS, PATHS, Workload, sweepable

if TYPE_CHECKING:
    import pandas as pd

    from ..cluster import ClusterBench
    from .harness import Bench

__all__ = ["add_arguments", "command", "write"]


def write(frames: dict[str, pd.DataFrame], out: Path, plots: dict[str, Callable[[], Any]] | None = None) -> list[Path]:
    """Each frame as CSV and JSON, each plot as PNG, in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in frames.items():
        for suffix, save in ((".csv", frame.to_csv), (".json", partial(frame.to_json, orient="records", indent=1))):
            path = out / f"{name}{suffix}"
            save(path)
            written.append(path)
    for name, draw in (plots or {}).items():
        import matplotlib.pyplot as plt

        figure = draw()
        path = out / f"{name}.png"
        figure.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    return written


def add_arguments(parser: Any) -> None:
    parser.add_argument("--runs", type=int, default=MIN_RUNS, help=f"measured runs per path (at least {MIN_RUNS}, the default)")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--n-predict", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--n-gpu-layers", type=int, default=0)
    parser.add_argument("--sweep", action="append", default=[], metavar="PARAM=V1,V2,...",
                        help=f"sweep a workload parameter ({', '.join(sorted(sweepable()))})")
    parser.add_argument("--chat-turns", type=int, default=0, help="also time the first token at turns 1..N of a chat")
    parser.add_argument("--concurrency", type=_levels, default=(), metavar="N1,N2,...",
                        help="also run N stream guests at once, for each N: tokens/s in all and time to first token")
    parser.add_argument("--solo", action="store_true",
                        help="with --concurrency: keep each generation alone in its batch (solo-exact), "
                             "where the backend would batch generations together")
    parser.add_argument("--paths", type=_paths, default=PATHS, metavar="PATH,...",
                        help=f"which paths to compare, direct first (default {','.join(PATHS)}; also: component-stream)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"), help="where CSV, JSON and PNG go")
    parser.add_argument("--no-progress", action="store_true")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run each measurement and sweep point as a task on this Dask scheduler's workers "
                            "(tcp://HOST:8786; needs wasinn-lab[cluster])")
    where.add_argument("--local-cluster", type=int, metavar="N",
                       help="the same on a LocalCluster of N worker processes on this machine")


def _paths(text: str) -> tuple[str, ...]:
    paths = tuple(text.split(","))
    unknown = [path for path in paths if path not in ALL_PATHS]
    if unknown or paths[:1] != ("direct",):
        raise argparse.ArgumentTypeError(f"{text!r}: direct first, then any of {', '.join(ALL_PATHS[1:])}")
    return paths


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(level) for level in text.split(","))
    except ValueError:
        levels = ()
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: numbers of guests at once, each at least 1, e.g. 1,2,4,8,16")
    return levels


def _sweep_spec(text: str) -> tuple[str, list[int]]:
    name, sep, values = text.partition("=")
    fields = sweepable()
    if not sep or name not in fields:
        raise ConfigError(f"--sweep {text!r}: expected PARAM=V1,V2,... with PARAM one of {', '.join(sorted(fields))}")
    try:
        return name, [int(v) for v in values.split(",")]
    except ValueError:
        raise ConfigError(f"--sweep {text!r}: values must be integers") from None


def _sweep_frame(bench: Bench | ClusterBench, name: str, values: list[int], base: Workload, options: Any) -> pd.DataFrame:
    """A sweep's frame, written as it is; when some points failed on a cluster, the
    others' rows are written before the error is raised."""
    from .. import plots
    from .stats import table

    key, column = f"sweep-{name}", name.replace("-", "_")
    try:
        frame = bench.sweep(name, values, base, options.runs, options.paths)
    except SweepError as exc:
        if not exc.frame.empty:
            write({key: exc.frame}, options.out)
        raise
    medians = frame.groupby([column, "path"])["decode_tok_per_s"].median().reset_index()
    write({key: frame}, options.out, {key: partial(plots.sweep, medians, column, hue="path")})
    print(table(frame, by=[column]).to_string(), end="\n\n")
    return frame


def command(options: Any) -> int:
    from .stats import chat_table, concurrency_table, table

    if options.runs < MIN_RUNS:
        raise ConfigError(f"--runs must be at least {MIN_RUNS}: a median of fewer runs says little on a noisy machine")
    sweeps = [_sweep_spec(text) for text in options.sweep]
    base = Workload(options.prompt_tokens, options.n_predict, options.threads, options.batch_size, options.n_gpu_layers)
    with ExitStack() as stack:  # the bench, its host, and a cluster's client: closed however this ends
        bench: Bench | ClusterBench
        if options.scheduler is None and options.local_cluster is None:
            from .harness import Bench

            bench = stack.enter_context(Bench(progress=not options.no_progress))
        else:
            from ..cluster import ClusterBench, connect

            client = stack.enter_context(connect(options.scheduler, options.local_cluster))
            bench = ClusterBench(client, progress=not options.no_progress)
        # Each measurement is written as soon as it is made: a long sweep is never lost.
        frames = {"compare": bench.compare(base, options.runs, options.paths)}
        write({"compare": frames["compare"]}, options.out)
        print(table(frames["compare"]).to_string(), end="\n\n")
        for name, values in sweeps:
            frames[f"sweep-{name}"] = _sweep_frame(bench, name, values, base, options)
        if options.chat_turns:
            frames["chat"] = bench.chat_turns(options.chat_turns, w=base)
            write({"chat": frames["chat"]}, options.out)
            print(chat_table(frames["chat"]).to_string(), end="\n\n")
        if options.concurrency:
            frames["concurrency"] = bench.concurrency(options.concurrency, base, options.runs, batching=not options.solo)
            write({"concurrency": frames["concurrency"]}, options.out)
            print(concurrency_table(frames["concurrency"]).to_string(), end="\n\n")
    print(f"results in {options.out}/: {', '.join(sorted(frames))} (CSV, JSON; sweeps also PNG)")
    return 0
