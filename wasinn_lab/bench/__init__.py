"""Benchmarks: what a wasm guest costs next to llama.cpp driven directly.

The same generation (model, prompt, seed, n-predict, threads, batch size, flash
attention, sampling) runs through each path (``paths``): ``floor``, llama.cpp from the
tightest loop one can write in Python; ``direct``, llama-cpp-python's ``Llama.generate``;
the ``complete`` guest (``guest-compute``: one ``compute`` call makes the whole text);
the ``stream`` guest (``guest-stream``: one ``compute_single`` call per token) and, when
asked, ``component-stream``, the stream guest as a component on wasinn:llm. The paths run
interleaved, run by run, in one process, the order rotated each run; each keeps one
llama context for all its runs and is warmed up first, so no path pays for making one
in its time to first token; every run evaluates the whole prompt again. Ratios are
paired: each run's path against the same run's direct and floor, then their median and
spread (``stats``). ``command`` is ``wasinn-lab bench``; ``wasinn_lab.cluster`` runs the
same on Dask.

Modules: ``workload`` (what runs), ``paths`` (how each path runs and is timed),
``concurrency`` (many guests at once: ``Bench.concurrency``, ``bench --concurrency``),
``harness`` (``Bench``), ``stats`` (summaries and tables), ``command`` (the command
line, and ``write``). This package imports pandas and llama.cpp only when a name that
needs them is used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .workload import ALL_PATHS, MIN_RUNS, PATHS, SAMPLINGS, Workload

if TYPE_CHECKING:
    from .command import write
    from .harness import Bench

__all__ = ["Workload", "Bench", "PATHS", "ALL_PATHS", "SAMPLINGS", "MIN_RUNS", "write"]
_LAZY = {"Bench": "harness", "write": "command"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
