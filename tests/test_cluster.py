"""Sweeps and batches on Dask: a real LocalCluster of two worker processes on 127.0.0.1,
each with its own host on the default model, against the same runs made in this process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import output_tokens
from distributed import Client
from kernel_run import execute

from wasinn_lab import GuestLimitError, Host, Limits, SweepError, cluster
from wasinn_lab.bench import Bench, Workload, write
from wasinn_lab.cluster import ClusterBench, connect
from wasinn_lab.errors import ConfigError

pytestmark = [pytest.mark.model]

SMALL = Workload(prompt_tokens=8, n_predict=3, sampling="greedy", threads=1)  # greedy: every run makes the same tokens
PATHS = ("direct", "guest-stream")
GREEDY = {"temp": 0, "seed": 42, "n-predict": 4}
PROMPTS = ["Once upon a time", "The sea is", "My favourite food", "In the year 1900"]
# What a run makes, as against how long it took or where it ran.
OUTCOME = ["path", "run", "prompt_tokens", "n_predict", "measured_prompt_tokens", "output_tokens"]


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with connect(local_workers=2) as client:
        yield client


def test_importing_wasinn_lab_and_a_local_bench_import_no_dask() -> None:
    script = """
import sys
from wasinn_lab import Host, cli
from wasinn_lab.bench import Bench, Workload
with Host() as host:
    Bench(host, progress=False).compare(Workload(prompt_tokens=4, n_predict=2), runs=1, paths=("direct", "guest-stream"))
    host.map("stream", ["Hello"], params={"n-predict": 2}, progress=False)
print(sorted(name for name in sys.modules if name.split(".")[0] in ("dask", "distributed")))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_the_command_line_asks_for_one_cluster_and_says_what_is_wrong() -> None:
    def bench(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "wasinn_lab", "bench", *args], capture_output=True, text=True,
                              timeout=120)

    both = bench("--scheduler", "tcp://127.0.0.1:1", "--local-cluster", "2")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    none = bench("--local-cluster", "0")
    assert none.returncode == 2 and "wasinn-lab: error: a local cluster needs at least one worker, not 0" in none.stderr
    with pytest.raises(ConfigError, match="one of them"), connect():
        pass


def test_a_batch_and_a_sweep_on_the_cluster_match_the_serial_run(host: Host, client: Client, tmp_path: Path) -> None:
    serial = host.map("stream", PROMPTS, params=GREEDY, progress=False)
    spread = cluster.map(client, "stream", PROMPTS, params=GREEDY, progress=False, concurrency=1)
    assert (serial["exit_code"] == 0).all() and serial["stdout"].str.strip().all()
    assert list(spread["prompt"]) == PROMPTS and list(spread["stdout"]) == list(serial["stdout"])
    workers = set(client.scheduler_info()["workers"])
    assert set(spread["worker"]) == workers  # each run a task, on both workers
    at_once = cluster.map(client, "stream", [*PROMPTS, "Hello"], params=GREEDY, progress=False, concurrency=2)
    assert list(at_once["prompt"]) == [*PROMPTS, "Hello"] and (at_once["exit_code"] == 0).all()
    assert [output_tokens(stderr) for stderr in at_once["stderr"]] == [GREEDY["n-predict"]] * 5  # each whole
    assert at_once["worker"].iloc[0] == at_once["worker"].iloc[1]  # two prompts to a task, run by one worker
    assert (spread["hostname"] == socket.gethostname()).all()

    bench = Bench(host, progress=False)
    try:
        serial = bench.sweep("prompt-tokens", [4, 8], SMALL, runs=1, paths=PATHS)
        spread = ClusterBench(client, progress=False).sweep("prompt-tokens", [4, 8], SMALL, runs=1, paths=PATHS)
    finally:
        bench.close()
    pd.testing.assert_frame_equal(spread[OUTCOME], serial[OUTCOME])
    assert set(spread["worker"]) <= workers and (spread["hostname"] == socket.gethostname()).all()
    summary = Bench.summary(spread, by=["prompt_tokens"])  # the same tables, plots and files as a local run
    assert (summary.xs("direct", level="path")["decode_ratio"] == 1.0).all()
    write({"sweep": spread}, tmp_path)
    assert "worker" in pd.read_csv(tmp_path / "sweep.csv").columns
    # Several generations at once on a worker only when asked: a concurrency measurement.
    at_once = ClusterBench(client, progress=False).concurrency([2], SMALL, runs=1)
    assert list(at_once["output_tokens"]) == [2 * SMALL.n_predict] and set(at_once["worker"]) <= workers


def test_a_bad_point_is_named_and_the_others_complete(host: Host, client: Client) -> None:
    with pytest.raises(SweepError) as raised:
        ClusterBench(client, progress=False).sweep("n-predict", [3, -5, 2], SMALL, runs=1, paths=PATHS)
    assert list(raised.value.failures) == ["n-predict=-5"]
    assert "parameter 'n-predict' takes an integer of at least -1" in raised.value.failures["n-predict=-5"]
    assert "n-predict=-5: ConfigError: parameter 'n-predict'" in str(raised.value)
    frame = raised.value.frame
    assert list(frame["n_predict"]) == [3, 3, 2, 2] and list(frame["output_tokens"]) == [3, 3, 2, 2]


def test_an_error_on_a_worker_arrives_as_its_own_class(client: Client) -> None:
    """Every error of the tree came back from a worker as the root class, with its
    attributes lost (a GuestLimitError's ``limit``)."""
    with pytest.raises(SweepError) as raised:
        cluster.map(client, "stream", ["Hi"], params={"n-predict": -5}, progress=False)
    error = raised.value.errors["prompt 0"]
    assert type(error) is ConfigError and "parameter 'n-predict' takes an integer" in str(error)
    assert raised.value.failures["prompt 0"] == f"ConfigError: {error}"
    with pytest.raises(SweepError) as raised:
        cluster.map(client, "stream", ["Once upon a time"], params={"n-predict": 5000}, limits=Limits(timeout=1),
                    progress=False)
    error = raised.value.errors["prompt 0"]
    assert type(error) is GuestLimitError and error.limit == "time" and error.value == 1
    assert "ran past its time limit of 1 s" in str(error)

def test_a_worker_killed_mid_sweep_has_its_points_rerun_elsewhere(client: Client) -> None:
    bench = ClusterBench(client, progress=False)
    values = [4, 6, 8, 10]
    outcome: dict[str, Any] = {}

    def sweep() -> None:
        try:
            outcome["frame"] = bench.sweep("prompt-tokens", values, SMALL, runs=1, paths=("guest-stream",))
        except BaseException as exc:  # handed to the test's own thread
            outcome["error"] = exc

    pids = client.run(os.getpid)
    thread = threading.Thread(target=sweep)  # the test's own: joined below
    thread.start()
    deadline = time.monotonic() + 120
    busy: dict[str, Any] = {}
    while not busy and time.monotonic() < deadline:
        busy = {worker: keys for worker, keys in client.processing().items() if keys}
        time.sleep(0.05)
    assert busy, "no worker began a point"
    victim, keys = next(iter(busy.items()))
    point = str(keys[0]).rsplit(" [", 1)[0]  # each task's key begins with its point
    os.kill(pids[victim], signal.SIGKILL)
    thread.join(timeout=280)
    assert not thread.is_alive() and "error" not in outcome, outcome.get("error")
    frame = outcome["frame"]
    assert list(frame["prompt_tokens"]) == values and (frame["output_tokens"] == 3).all()  # nothing lost
    rerun = frame[frame["prompt_tokens"] == int(point.removeprefix("prompt-tokens="))]
    assert victim not in set(rerun["worker"])  # the point it was making was made elsewhere
    assert victim not in client.scheduler_info()["workers"]

def test_in_a_notebook_dasks_progress_bar_moves_while_the_cell_waits() -> None:
    """A real kernel: the widget listens on the Dask client's own loop, so its value
    reaches the notebook run by run while the kernel is busy with the cell."""
    code = """
from wasinn_lab.cluster import connect, map
with connect(local_workers=1) as client:
    frame = map(client, "stream", ["a", "b", "c"], params={"temp": 0, "n-predict": 4}, concurrency=1)
print(list(frame["exit_code"]))
"""
    reply, messages = execute(code, timeout=240)
    assert reply["content"]["status"] == "ok"
    assert any("application/vnd.jupyter.widget-view+json" in m["content"].get("data", {}) for m in messages
               if m["msg_type"] == "display_data")
    values = [m["content"]["data"]["state"]["value"] for m in messages if m["msg_type"] == "comm_msg"
              and isinstance(m["content"]["data"].get("state", {}).get("value"), float)]
    assert values[:1] != [1.0] and values[-1] == 1.0  # it moved as the runs completed, and ended full
    printed = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")
    assert printed == "[0, 0, 0]\n"
