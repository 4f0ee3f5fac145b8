"""matplotlib plots of generation metrics (``Session.metrics()``, ``token_metrics()``,
and benchmark frames). Each takes an optional ``ax`` and returns the figure."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["token_latency", "token_probabilities", "runs", "sweep", "session_overview"]


def _axes(ax: Axes | None) -> tuple[Figure, Axes]:
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax  # type: ignore[return-value]
    figure, ax = plt.subplots(figsize=(7, 3.2))
    return figure, ax


def _whole_numbers(axis: Any) -> None:
    """Ticks at whole numbers only: there is no token 2.5 or generation 0.5."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def token_latency(tokens: pd.DataFrame, ax: Axes | None = None) -> Figure:
    """Per-token latency across each generation (the first point is the time to first token)."""
    figure, ax = _axes(ax)
    for generation, frame in tokens.groupby("generation"):
        ax.plot(frame["token"], frame["latency_s"] * 1e3, marker=".", linewidth=1, label=f"generation {generation}")
    ax.set_xlabel("token")
    _whole_numbers(ax.xaxis)
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.set_title("per-token latency")
    if tokens["generation"].nunique() <= 8:
        ax.legend(fontsize="small")
    return figure


def token_probabilities(tokens: pd.DataFrame, ax: Axes | None = None) -> Figure:
    """The chosen token's probability under the model (bars, left) and the entropy of the
    model's distribution (line, right, nats) along each generation (``token_metrics()``
    of a generation run with ``-p logprobs=K``). Where the entropy is high the model was
    unsure, and a sampler's settings matter most."""
    import numpy as np

    figure, ax = _axes(ax)
    entropy = ax.twinx()
    recorded = tokens[tokens["logprob"].notna()]
    # Rows from several sessions (a cell's guest may use more than one) number their generations apart.
    names = ["session", "generation"] if "session" in recorded else ["generation"]
    groups = list(recorded.groupby(names))
    for key, frame in groups:
        label = " · ".join(f"{name} {value}" for name, value in zip(names, key)) if len(groups) > 1 else None
        ax.bar(frame["token"], np.exp(frame["logprob"].astype(float)), color="#9ab7e6", width=0.8,
               label=f"probability, {label}" if label else "probability of the chosen token")
        entropy.plot(frame["token"], frame["entropy"].astype(float), color="#c0392b", marker=".", linewidth=1,
                     label=f"entropy, {label}" if label else "entropy")
    ax.set_xlabel("token")
    _whole_numbers(ax.xaxis)
    ax.set_ylabel("probability under the model")
    ax.set_ylim(0, 1.05)
    entropy.set_ylabel("entropy (nats)")
    entropy.set_ylim(bottom=0)
    ax.set_title("how sure the model was, token by token")
    handles = [h for axis in (ax, entropy) for h in axis.get_legend_handles_labels()[0]]
    if handles:  # under the axes: over them it hides the bars
        ax.legend(handles=handles, fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2,
                  frameon=False)
    return figure


def runs(metrics: pd.DataFrame, ax: Axes | None = None) -> Figure:
    """Time to first token (bars) and decode rate (line) per generation."""
    figure, ax = _axes(ax)
    index = range(len(metrics))
    ax.bar(index, metrics["ttft_s"] * 1e3, color="#9ab7e6", label="time to first token")
    ax.set_xlabel("generation")
    _whole_numbers(ax.xaxis)
    ax.set_ylabel("time to first token (ms)")
    rate = ax.twinx()
    rate.plot(index, metrics["decode_tok_per_s"], color="#c0392b", marker="o", label="decode rate")
    rate.set_ylabel("decode (tokens/s)")
    ax.set_title("per generation")
    return figure


def sweep(frame: pd.DataFrame, x: str, y: str = "decode_tok_per_s", hue: str | None = None, ax: Axes | None = None) -> Figure:
    """``y`` against a swept parameter ``x``, one line per ``hue`` value (e.g. the path)."""
    figure, ax = _axes(ax)
    groups = frame.groupby(hue) if hue else [(y, frame)]
    for label, group in groups:
        ordered = group.sort_values(x)
        ax.plot(ordered[x], ordered[y], marker="o", label=str(label))
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if pd.api.types.is_integer_dtype(frame[x]):
        _whole_numbers(ax.xaxis)
    if hue:
        ax.legend(fontsize="small")
    return figure


def session_overview(metrics: pd.DataFrame, tokens: pd.DataFrame) -> Figure:
    """The two session plots side by side."""
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.2))
    token_latency(tokens, ax=left)
    runs(metrics, ax=right)
    figure.tight_layout()
    return figure
