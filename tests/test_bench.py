"""The benchmark harness on a tiny workload: real paths, real numbers, shapes checked."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pandas as pd
import pytest
from kernel_run import execute

from wasinn_lab import ConfigError, Host
from wasinn_lab.bench import ALL_PATHS, PATHS, Bench, Workload, write
from wasinn_lab.bench.concurrency import batching_mode
from wasinn_lab.bench.stats import chat_table, concurrency_table
from wasinn_lab.cli import main

SMALL = Workload(prompt_tokens=8, n_predict=4, sampling="greedy", threads=1)


def test_compare_sweep_and_summary(host: Host, tmp_path: Path) -> None:
    bench = Bench(host, progress=False)
    try:
        frame = bench.compare(SMALL, runs=2, paths=ALL_PATHS)
        assert sorted(frame["path"].unique()) == sorted(ALL_PATHS) and len(frame) == 2 * len(ALL_PATHS)
        assert (frame["output_tokens"] == 4).all()  # greedy, bounded: every path made the same count
        assert frame["load_1min"].notna().all()  # the machine's load, with every run
        summary = Bench.summary(frame)
        assert summary.loc["direct", "decode_ratio"] == 1.0 and summary.loc["floor", "vs_floor"] == 1.0
        assert summary.loc["guest-stream", "vs_direct_q1"] <= summary.loc["guest-stream", "vs_direct"] \
            <= summary.loc["guest-stream", "vs_direct_q3"]  # paired ratios and their spread
        assert summary.loc["guest-stream", "output_boundary_us"] > 0  # the host's time per kind of call
        # One context per path for all its runs (warm-up runs first): every run still
        # evaluates the whole prompt.
        streams = [s for s in host.sessions if s.id.startswith("bench-guest-stream")]
        assert len(streams) == 1 and len(streams[0].generations) >= 3
        assert all(g.evaluated_tokens == g.prompt_tokens for g in streams[0].generations)
        sweep = bench.sweep("prompt-tokens", [8, 16], SMALL, runs=1, paths=PATHS)
        by = Bench.summary(sweep, by=["prompt_tokens"])
        assert set(by.index.get_level_values("prompt_tokens")) == {8, 16}
        assert (by.xs("direct", level="path")["decode_ratio"] == 1.0).all()
        # A sweep of what one context serves (n-predict) sets it on the kept session each time.
        lengths = bench.sweep("n-predict", [2, 3], SMALL, runs=1, paths=("guest-stream",))
        assert list(lengths["output_tokens"]) == [2, 3]
        written = write({"sweep": sweep}, tmp_path)
        assert {p.name for p in written} == {"sweep.csv", "sweep.json"}
    finally:
        bench.close()
    assert not [s for s in host.sessions if s.id.startswith("bench-")]


def test_the_table_to_read_has_no_empty_columns_and_no_negative_overhead() -> None:
    runs = [
        {"path": path, "run": run, "ttft_s": ttft, "decode_tok_per_s": rate, "boundary_us_per_token": boundary,
         "guest_us_per_token": guest, "output_tokens": 8, "load_1min": 1.0}
        for run in range(3)
        for path, ttft, rate, boundary, guest in (
            ("direct", 0.1 + run / 100, 40.0 + run, None, None),
            ("guest-stream", 0.11, 41.0 - run, -3.0, 200.0),  # noise made the host's time negative
        )
    ]
    table = Bench.table(pd.DataFrame(runs))
    assert list(table.columns) == ["runs", "first token ms", "tokens/s", "vs direct", "host us/token", "guest us/token"]
    assert table.loc["direct", "first token ms"] == "110 (105-115)" and table.loc["direct", "vs direct"] == "1.00"
    assert table.loc["guest-stream", "host us/token"] == "~0"  # below what two timings resolve
    assert table.loc["direct", "host us/token"] == ""  # not applicable, not NaN
    assert not table.isna().any().any()
    no_guests = Bench.table(pd.DataFrame([r for r in runs if r["path"] == "direct"]))
    assert "host us/token" not in no_guests.columns


def test_chat_turns_and_load_timings(host: Host) -> None:
    bench = Bench(host, progress=False)
    try:
        chat = bench.chat_turns(3, n_predict=2, w=SMALL)
        assert list(chat.groupby("mode")["turn"].max()) == [3, 3]
        reuse = chat[chat["mode"] == "prefix reuse"]
        assert (reuse["evaluated_tokens"].iloc[1:] < reuse["prompt_tokens"].iloc[1:]).all()
        full = chat[chat["mode"] == "re-evaluate all"]
        assert (full["evaluated_tokens"] == full["prompt_tokens"]).all()
        assert not [s for s in host.sessions if s.id.startswith("bench-chat")]
        table = chat_table(chat)
        assert list(table.columns.get_level_values(0).unique()) == ["conversation", "prefix reuse", "re-evaluate all"]
        assert list(table["re-evaluate all", "evaluated"]) == list(full["prompt_tokens"])
        loads = bench.load_by_name(1)
        assert set(loads["kind"]) == {"cold", "cached"} and (loads["errno"] == 0).all()
        assert bench.session_cost(1000) > 0  # a session's token path costs something over its stream
    finally:
        bench.close()


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


def test_guest_start_leaves_no_thread_behind(host: Host) -> None:
    bench = Bench(host, progress=False)
    try:
        bench.guest_start(1)  # the host's own threads started, once
        before = _threads()
        starts = bench.guest_start(2)
        assert set(starts["kind"]) == {"compile", "memory cache", "disk cache"} and (starts["exit_code"] == 1).all()
        assert [t.name for t in _threads() - before] == []
    finally:
        bench.close()


def test_the_bench_command_closes_what_it_started(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _threads()
    assert main(["bench", "--runs", "5", "--prompt-tokens", "4", "--n-predict", "2", "--threads", "1",
                 "--paths", "direct,guest-stream", "--concurrency", "1,3", "--no-progress", "--out", str(tmp_path)]) == 0
    assert [t.name for t in _threads() - before] == []
    printed = capsys.readouterr().out
    assert "vs direct" in printed and "NaN" not in printed
    assert (tmp_path / "compare.csv").exists()
    # --concurrency: one row per level, each saying whether its generations were batched.
    (table,) = [block for block in printed.split("\n\n") if "tokens/s in all" in block]
    rows = [line.split() for line in table.splitlines()[2:]]
    assert [row[0] for row in rows] == ["1", "3"] and {row[1] for row in rows} <= {"batched", "solo"}
    frame = pd.read_csv(tmp_path / "concurrency.csv")
    assert list(frame.groupby("level")["output_tokens"].min()) == [2, 6]  # every guest made its 2 tokens
    assert (frame["tok_per_s"] > 0).all() and (frame["ttft_max_s"] >= frame["ttft_s"]).all()


def test_guests_at_once_are_measured_batched_or_solo_as_asked(host: Host) -> None:
    bench = Bench(host, progress=False)
    try:
        frame = bench.concurrency([2, 1], SMALL, runs=2)
        solo = bench.concurrency([2], SMALL, runs=1, batching=False)
        with pytest.raises(ConfigError, match="concurrency levels are numbers of guests, each at least 1"):
            bench.concurrency([0], SMALL)
    finally:
        bench.close()
    assert list(frame["level"]) == [2, 1, 2, 1] and list(frame["output_tokens"]) == [8, 4, 8, 4]
    assert set(frame["mode"]) == {batching_mode(host, True)} and list(solo["mode"]) == ["solo"]
    table = concurrency_table(frame)
    assert list(table.index) == [2, 1] and table.loc[1, "vs 1 guest"] == "1.00"
    assert not [s for s in host.sessions if s.guest == "stream.wasm"]  # each guest's session closed with it


def test_llama_cpps_log_goes_to_logging_not_to_stderr(host: Host, capfd: pytest.CaptureFixture[str],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """What llama.cpp prints while a context is made (on every path, the baselines'
    contexts too) reaches Python logging, never the process's stderr (a cell's red box)."""
    caplog.set_level(logging.INFO, logger="wasinn_lab.llama_cpp")
    bench = Bench(host, progress=False)
    try:
        bench.compare(Workload(prompt_tokens=4, n_predict=2, threads=1, ctx_size=1024), runs=1,
                      paths=("floor", "direct", "guest-stream"))
    finally:
        bench.close()
    assert "llama" not in capfd.readouterr().err
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("using full-size SWA cache" in message for message in warnings) >= 3  # one per context made


def test_in_a_notebook_finished_progress_is_text_not_a_widget() -> None:
    """A saved or reloaded notebook has no widget state: once done, the bar's output is
    replaced by a line of text (so nothing shows "model not found")."""
    code = """
from wasinn_lab.progress import Progress
with Progress(3, "runs") as bar:
    for _ in range(3):
        bar.update()
"""
    reply, messages = execute(code, timeout=120)
    assert reply["content"]["status"] == "ok"
    shown = [m for m in messages if m["msg_type"] in ("display_data", "update_display_data")]
    assert "application/vnd.jupyter.widget-view+json" in shown[0]["content"]["data"]  # a live bar while it runs
    final = shown[-1]
    assert final["msg_type"] == "update_display_data"
    assert final["content"]["transient"]["display_id"] == shown[0]["content"]["transient"]["display_id"]
    assert list(final["content"]["data"]) == ["text/plain"] and final["content"]["data"]["text/plain"].startswith("runs: 3/3 in ")
    assert not [m for m in messages if m["msg_type"] == "stream" and m["content"]["name"] == "stderr"]


def test_host_map_in_a_notebook_leaves_text_not_a_widget() -> None:
    """Host.map showed tqdm's widget and left it: after a reload, "model not found"."""
    code = """
from wasinn_lab import Host
with Host() as host:
    frame = host.map("complete", ["one", "two"], "echo")
print("rows", len(frame))
"""
    reply, messages = execute(code, timeout=120)
    assert reply["content"]["status"] == "ok"
    shown = [m for m in messages if m["msg_type"] in ("display_data", "update_display_data")]
    assert shown[-1]["msg_type"] == "update_display_data"
    assert list(shown[-1]["content"]["data"]) == ["text/plain"]
    assert shown[-1]["content"]["data"]["text/plain"].startswith("2 runs: 2/2 in ")
    assert any(m["msg_type"] == "stream" and "rows 2" in m["content"]["text"] for m in messages)
