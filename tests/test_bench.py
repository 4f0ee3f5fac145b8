"""The benchmark harness on a tiny workload: real paths, real numbers, shapes checked."""

from __future__ import annotations

from pathlib import Path

from wasinn_lab import Host
from wasinn_lab.bench import ALL_PATHS, PATHS, Bench, Workload, write


def test_compare_sweep_and_summary(host: Host, tmp_path: Path) -> None:
    bench = Bench(host, progress=False)
    small = Workload(prompt_tokens=8, n_predict=4, sampling="greedy")
    try:
        frame = bench.compare(small, runs=2, paths=ALL_PATHS)
        assert sorted(frame["path"].unique()) == sorted(ALL_PATHS) and len(frame) == 2 * len(ALL_PATHS)
        assert (frame["output_tokens"] == 4).all()  # greedy, bounded: every path made the same count
        assert frame["load_1min"].notna().all()  # the machine's load, with every run
        summary = Bench.summary(frame)
        assert summary.loc["direct", "decode_ratio"] == 1.0 and summary.loc["floor", "vs_floor"] == 1.0
        assert summary.loc["guest-stream", "vs_direct_q1"] <= summary.loc["guest-stream", "vs_direct"] \
            <= summary.loc["guest-stream", "vs_direct_q3"]  # paired ratios and their spread
        assert summary.loc["guest-stream", "output_boundary_us"] > 0  # the host's time per kind of call
        # One context per path for all its runs: every run still evaluates the whole prompt.
        streams = [s for s in host.sessions if s.id.startswith("bench-guest-stream")]
        assert len(streams) == 1 and len(streams[0].generations) == 3
        assert all(g.evaluated_tokens == g.prompt_tokens for g in streams[0].generations)
        sweep = bench.sweep("prompt-tokens", [8, 16], small, runs=1, paths=PATHS)
        by = Bench.summary(sweep, by=["prompt_tokens"])
        assert set(by.index.get_level_values("prompt_tokens")) == {8, 16}
        assert (by.xs("direct", level="path")["decode_ratio"] == 1.0).all()
        # A sweep of what one context serves (n-predict) sets it on the kept session each time.
        lengths = bench.sweep("n-predict", [2, 3], small, runs=1, paths=("guest-stream",))
        assert list(lengths["output_tokens"]) == [2, 3]
        written = write({"sweep": sweep}, tmp_path)
        assert {p.name for p in written} == {"sweep.csv", "sweep.json"}
    finally:
        bench.close()
    assert not [s for s in host.sessions if s.id.startswith("bench-")]


def test_chat_turns_and_load_timings(host: Host) -> None:
    bench = Bench(host, progress=False)
    chat = bench.chat_turns(3, n_predict=2)
    assert list(chat.groupby("mode")["turn"].max()) == [3, 3]
    reuse = chat[chat["mode"] == "prefix reuse"]
    assert (reuse["evaluated_tokens"].iloc[1:] < reuse["prompt_tokens"].iloc[1:]).all()
    full = chat[chat["mode"] == "re-evaluate all"]
    assert (full["evaluated_tokens"] == full["prompt_tokens"]).all()
    loads = bench.load_by_name(1)
    assert set(loads["kind"]) == {"cold", "cached"} and (loads["errno"] == 0).all()
    starts = bench.guest_start(1)
    assert set(starts["kind"]) == {"compile", "memory cache", "disk cache"} and (starts["exit_code"] == 1).all()
