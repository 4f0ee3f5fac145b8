"""The statistics: medians per path, ratios paired run by run with their spread, and
the same as a table to read (few columns, rounded, units in the names)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

__all__ = ["summary", "table", "chat_table", "concurrency_table", "paired"]

# The measurements kept per run, in the order the summary shows them.
MEASURES = ("ttft_s", "decode_tok_per_s", "boundary_us_per_token", "step_boundary_us", "output_boundary_us",
            "guest_us_per_token", "output_tokens", "load_1min")


def paired(frame: pd.DataFrame, by: Sequence[str], value: str, base: str, names: tuple[str, str, str]) -> pd.DataFrame | None:
    """Each run's ``value`` on every path over the same run's on ``base``: quartiles per path."""
    wide = frame.set_index([*by, "run", "path"])[value].unstack("path")
    if base not in wide:
        return None
    ratios = pd.Series(wide.div(wide[base], axis=0).stack(), name="ratio").reset_index()
    grouped = ratios.groupby([*by, "path"])["ratio"]
    return pd.concat({name: grouped.quantile(q) for name, q in zip(names, (0.25, 0.5, 0.75))}, axis=1)


def summary(frame: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Medians per path (and ``by``); each path's decode rate against the direct path
    and the floor, paired run by run: the median ratio and its interquartile range
    (``vs_direct``, ``vs_direct_q1``, ``vs_direct_q3``, the same for the floor); time to
    first token against direct, paired too; the per-token overhead against direct."""
    keys = [*by, "path"]
    table = frame.groupby(keys, sort=False)[[c for c in MEASURES if c in frame]].median()
    for value, base, names in (
        ("decode_tok_per_s", "direct", ("vs_direct_q1", "vs_direct", "vs_direct_q3")),
        ("decode_tok_per_s", "floor", ("vs_floor_q1", "vs_floor", "vs_floor_q3")),
        ("ttft_s", "direct", ("ttft_ratio_q1", "ttft_ratio", "ttft_ratio_q3")),
    ):
        stats = paired(frame, by, value, base, names)
        if stats is not None:
            table = table.join(stats)
    if "vs_direct" in table:
        table["decode_ratio"] = table["vs_direct"]  # the name the targets and notebooks read
        if by:
            direct = table.xs("direct", level="path")["decode_tok_per_s"].rename("direct_tok_per_s")
            direct_rate: Any = table.join(direct)["direct_tok_per_s"]
        else:
            direct_rate = table.loc["direct", "decode_tok_per_s"]
        table["overhead_us_per_token"] = (1 / table["decode_tok_per_s"] - 1 / direct_rate) * 1e6
    return table


def _spread(median: Any, q1: Any, q3: Any, digits: int) -> str:
    """``median (q1-q3)``; the range left out where every run gave the same."""
    if pd.isna(median):
        return ""
    if round(q1, digits) == round(q3, digits):
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} ({q1:.{digits}f}-{q3:.{digits}f})"


def _quartiles(frame: pd.DataFrame, keys: list[str], column: str, scale: float, digits: int) -> pd.Series:
    grouped = frame.groupby(keys, sort=False)[column]
    q = pd.concat({name: grouped.quantile(p) * scale for name, p in (("q1", 0.25), ("m", 0.5), ("q3", 0.75))}, axis=1)
    return q.apply(lambda r: _spread(r["m"], r["q1"], r["q3"], digits), axis=1)


def _host_per_token(value: Any) -> str:
    """The host's own time per token. It is a difference of two timings; where noise
    makes it negative, it is below what they resolve, not a measurement."""
    if pd.isna(value):
        return ""
    return f"{value:.0f}" if value >= 0 else "~0"


def table(frame: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """``frame`` (rows of ``Bench.compare`` or ``sweep``) to read: per path (and ``by``)
    the median of each measure with the interquartile range of the runs beside it, the
    decode rate as a ratio to ``direct`` paired run by run, and the host's and the
    guest's time per token where a guest ran. Only the columns that apply."""
    keys = [*by, "path"]
    stats = summary(frame, by)
    runs = frame.groupby(keys, sort=False)["run"].nunique()
    out = pd.DataFrame({
        "runs": runs,
        "first token ms": _quartiles(frame, keys, "ttft_s", 1e3, 0),
        "tokens/s": _quartiles(frame, keys, "decode_tok_per_s", 1.0, 1),
    })
    if "vs_direct" in stats:
        out["vs direct"] = [_spread(m, q1, q3, 2) for m, q1, q3 in
                            stats[["vs_direct", "vs_direct_q1", "vs_direct_q3"]].itertuples(index=False)]
    if "boundary_us_per_token" in stats and stats["boundary_us_per_token"].notna().any():
        out["host us/token"] = stats["boundary_us_per_token"].map(_host_per_token)
        out["guest us/token"] = stats["guest_us_per_token"].map(_host_per_token)
    return out


def chat_table(chat: pd.DataFrame) -> pd.DataFrame:
    """``Bench.chat_turns`` to read: per turn, the tokens in the conversation, and for
    each mode the time to first token and how many tokens it evaluated."""
    out = {("conversation", "tokens"): chat.groupby("turn")["prompt_tokens"].max()}
    for mode, rows in chat.groupby("mode", sort=False):
        rows = rows.set_index("turn")
        out[(str(mode), "first token ms")] = (rows["ttft_s"] * 1e3).round().astype(int)
        out[(str(mode), "evaluated")] = rows["evaluated_tokens"].astype(int)
    return pd.DataFrame(out)


def concurrency_table(frame: pd.DataFrame) -> pd.DataFrame:
    """``Bench.concurrency`` to read: per level, its batching mode, the tokens per second
    in all with their spread, against one guest at a time paired run by run (where level 1
    was measured), the median wait for a first token and the longest."""
    keys = ["level"]
    out = pd.DataFrame({
        "mode": frame.groupby(keys, sort=False)["mode"].first(),
        "runs": frame.groupby(keys, sort=False)["run"].nunique(),
        "tokens/s in all": _quartiles(frame, keys, "tok_per_s", 1.0, 1),
    })
    wide = frame.set_index(["run", "level"])["tok_per_s"].unstack("level")
    if 1 in wide:
        ratios = wide.div(wide[1], axis=0)
        out["vs 1 guest"] = [_spread(ratios[level].median(), ratios[level].quantile(0.25), ratios[level].quantile(0.75), 2)
                             for level in out.index]
    out["first token ms"] = _quartiles(frame, keys, "ttft_s", 1e3, 0)
    out["last first token ms"] = _quartiles(frame, keys, "ttft_max_s", 1e3, 0)
    return out
