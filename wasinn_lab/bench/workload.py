"""What one measurement runs: the workload, the paths, the sampling every path shares.
Nothing here imports pandas or llama.cpp (the command line builds its parser from it)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any

__all__ = ["Workload", "PATHS", "ALL_PATHS", "GUESTS", "SAMPLINGS", "MIN_RUNS", "BATCH_OPTION", "guest_env",
           "sweep_points", "sweepable"]

PATHS = ("floor", "direct", "guest-compute", "guest-stream")
ALL_PATHS = (*PATHS, "component-stream")  # the stream guest as a component, on wasinn:llm
GUESTS = {"guest-compute": "complete", "guest-stream": "stream", "component-stream": "stream_llm"}
MIN_RUNS = 5  # what the command line reports medians over, at the least
# The generation option that lets a session's decodes be batched with other sessions'
# (true) or keeps it alone in its batch, solo-exact (false), where the backend batches.
BATCH_OPTION = "batch-with-others"
# The same on every path. "default": llama.cpp's usual chain, which is what guests get
# unless they ask otherwise; "greedy": every path makes the same tokens.
SAMPLINGS: dict[str, dict[str, Any]] = {
    "default": {"temp": 0.8, "top-k": 40, "top-p": 0.95, "min-p": 0.05, "repeat-penalty": 1.1},
    "greedy": {"temp": 0.0, "top-k": 40, "top-p": 0.95, "min-p": 0.05, "repeat-penalty": 1.0},
}


@dataclass(frozen=True)
class Workload:
    prompt_tokens: int = 32
    n_predict: int = 64
    threads: int = os.cpu_count() or 1
    batch_size: int = 512
    n_gpu_layers: int = 0
    ctx_size: int = 2048
    seed: int = 42
    sampling: str = "default"  # a key of SAMPLINGS
    flash_attn: bool = False  # the same on every path (llama-cpp-python's Llama has no "auto")

    @property
    def key(self) -> tuple[Any, ...]:
        """What makes a context: runs of workloads with the same key share one."""
        return (self.threads, self.batch_size, self.n_gpu_layers, self.ctx_size, self.flash_attn)

    @property
    def config(self) -> dict[str, Any]:
        """The whole configuration, as the host's options name it."""
        return {"n-predict": self.n_predict, "threads": self.threads, "batch-size": self.batch_size,
                "ubatch-size": self.batch_size, "ctx-size": self.ctx_size, "n-gpu-layers": self.n_gpu_layers,
                "seed": self.seed, "flash-attn": "on" if self.flash_attn else "off", **SAMPLINGS[self.sampling]}


def guest_env(w: Workload) -> dict[str, str]:
    """The workload as WasmEdge-style guests read it (environment variables)."""
    sampling = SAMPLINGS[w.sampling]
    return {
        "n_predict": str(w.n_predict),
        "temp": str(sampling["temp"]),
        "top_k": str(sampling["top-k"]),
        "top_p": str(sampling["top-p"]),
        "min_p": str(sampling["min-p"]),
        "repeat_penalty": str(sampling["repeat-penalty"]),
        "threads": str(w.threads),
        "batch_size": str(w.batch_size),
        "ubatch_size": str(w.batch_size),
        "ctx_size": str(w.ctx_size),
        "n_gpu_layers": str(w.n_gpu_layers),
        "seed": str(w.seed),
    }


def sweepable() -> set[str]:
    """The workload parameters a sweep may vary, kebab-case."""
    return {f.name.replace("_", "-") for f in fields(Workload)} - {"seed", "ctx-size", "sampling", "flash-attn"}


def sweep_points(parameter: str, values: list[int], base: Workload) -> list[tuple[str, Workload]]:
    """Each value of ``parameter`` (a Workload field, kebab-case or not) as a labelled workload."""
    field = parameter.replace("-", "_")
    return [(f"{parameter}={value}", replace(base, **{field: value})) for value in values]  # type: ignore[arg-type]
