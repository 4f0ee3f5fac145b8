"""Sweeps and batches on Dask (``pip install wasinn-lab[cluster]``).

Each sweep point (``ClusterBench(client).sweep(...)``, as ``Bench.sweep``) and each
chunk of a batch's prompts (``map(client, guest, prompts)``, as ``Host.map``) is one
Dask task. Every worker process keeps one ``Host`` for its life (a worker plugin starts
it with the worker and closes it with the worker), so models load once per worker, and
one lock, so a worker runs one task at a time whatever its thread count, and timings are
not disturbed: a sweep point makes one generation at a time; a batch's task runs its
chunk (``concurrency`` prompts) at once, as ``Host.map`` does; a concurrency measurement
(``ClusterBench.concurrency``) runs as many guests at once as it was asked to. Results
come back as the same DataFrames as a local run, with ``worker`` (its address) and
``hostname`` in each row. A task whose worker dies is rerun on another one (Dask's own
rescheduling); a point that fails is named in a ``SweepError`` raised once the others
have completed.

Only this module imports Dask, and nothing in wasinn-lab imports this module but the
command line's cluster options: it sits above the host and the benchmarks.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pandas as pd

from .errors import ConfigError, SweepError, WasiNNLabError

try:
    from distributed import Client, Future, LocalCluster, as_completed, get_worker
    from distributed.diagnostics.plugin import WorkerPlugin
    from distributed.utils import is_kernel
    from distributed.worker import Worker
except ImportError as exc:  # the optional extra is not installed
    raise ConfigError("sweeps on a cluster need Dask: pip install 'wasinn-lab[cluster]'") from exc

from .bench import Bench, Workload
from .bench.workload import PATHS, sweep_points
from .guests import resolve
from .host import Guest, Host
from .limits import Limits
from .models import DEFAULT_MODEL

__all__ = ["connect", "ClusterBench", "map"]

PLUGIN = "wasinn-lab"


class _WorkerHost(WorkerPlugin):
    """A worker's wasinn-lab: one Host (and one Bench per model on it) from the worker's
    start to its end, and the lock that lets one generation run at a time."""

    idempotent = True  # every sweep registers it; a worker that has it keeps its loaded models

    host: Host
    lock: threading.Lock
    address: str
    benches: dict[str, Bench]

    def setup(self, worker: Worker) -> None:
        self.host = Host()
        self.lock = threading.Lock()
        self.address = worker.address
        self.benches = {}

    def teardown(self, worker: Worker) -> None:
        for bench in self.benches.values():
            bench.close()
        self.host.close()

    def bench(self, model: str) -> Bench:
        if model not in self.benches:
            self.benches[model] = Bench(self.host, model=model, progress=False)
        return self.benches[model]


def _on_worker(work: Callable[[_WorkerHost], pd.DataFrame]) -> pd.DataFrame:
    """Run ``work`` under this worker's lock; its rows name the worker and the machine."""
    state = cast(_WorkerHost, get_worker().plugins[PLUGIN])
    try:
        with state.lock:
            frame = work(state)
    except WasiNNLabError as exc:
        # It goes back as itself (every error of the tree pickles whole), less what caused
        # it inside the host: a wasmtime trap holds C pointers, which cannot be sent.
        exc.__cause__ = exc.__context__ = None
        raise
    return frame.assign(worker=state.address, hostname=socket.gethostname())


def _bench_task(model: str, method: str, args: tuple[Any, ...]) -> pd.DataFrame:
    return _on_worker(lambda state: getattr(state.bench(model), method)(*args))


def _map_task(guest: Guest, prompts: list[str], model: str, options: dict[str, Any]) -> pd.DataFrame:
    return _on_worker(lambda state: state.host.map(guest, prompts, model, progress=False, **options))


def _progress(client: Client, futures: list[Future[pd.DataFrame]], description: str) -> Any:
    """Dask's progress widget in a notebook (it listens on the client's own event loop,
    so it moves while this thread waits); a text bar elsewhere, returned to be updated."""
    if is_kernel():
        from distributed.diagnostics.progressbar import ProgressWidget
        from IPython.display import display

        widget = ProgressWidget(futures, scheduler=client.scheduler_info()["address"], complete=True)
        display(widget.widget)
        assert client.loop is not None  # a running client's
        client.loop.add_callback(widget.listen)
        return None
    from tqdm import tqdm

    return tqdm(total=len(futures), desc=description, leave=False)


def _run(client: Client, tasks: Sequence[tuple[str, Callable[..., pd.DataFrame], tuple[Any, ...]]],
         description: str, progress: bool) -> pd.DataFrame:
    """Each ``(label, function, args)`` as one task; their frames concatenated in the
    order given. A task's key begins with its label (the dashboard shows it). Waits for
    every task; then a ``SweepError`` names those that failed, with the others' rows."""
    client.register_plugin(_WorkerHost(), name=PLUGIN)
    futures = [client.submit(function, *args, key=f"{label} [{uuid.uuid4().hex}]", pure=False)
               for label, function, args in tasks]
    index = {future.key: position for position, future in enumerate(futures)}
    frames: dict[int, pd.DataFrame] = {}
    failures: dict[int, str] = {}
    errors: dict[int, BaseException] = {}
    bar = _progress(client, futures, description) if progress else None
    try:
        for future in as_completed(futures):
            position = index[future.key]
            if future.status == "finished":
                frames[position] = future.result()
            elif future.status == "error":
                error = future.exception()
                failures[position] = f"{type(error).__name__}: {error}"
                errors[position] = error
            else:
                failures[position] = future.status
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
        client.cancel([future for future in futures if not future.done()])  # interrupted: stop the rest
    done = [frames[position] for position in sorted(frames)]
    frame = pd.concat(done, ignore_index=True) if done else pd.DataFrame()
    if failures:
        raise SweepError({tasks[position][0]: failures[position] for position in sorted(failures)}, frame,
                         {tasks[position][0]: errors[position] for position in sorted(errors)})
    return frame


class ClusterBench:
    """``Bench``'s measurements, each point a task on ``client``'s workers (each keeps a
    ``Bench`` on ``model``); the frames a local run makes, each row naming its ``worker``
    and ``hostname``. A point that fails is named in a ``SweepError`` (its ``frame``
    holds the other points' rows) once the others have completed."""

    def __init__(self, client: Client, *, model: str = DEFAULT_MODEL, progress: bool = True) -> None:
        self.client, self.model, self.progress = client, model, progress

    def _run(self, calls: Sequence[tuple[str, str, tuple[Any, ...]]], description: str) -> pd.DataFrame:
        return _run(self.client, [(label, _bench_task, (self.model, method, args)) for label, method, args in calls],
                    description, self.progress)

    def compare(self, w: Workload = Workload(), runs: int = 5, paths: Sequence[str] = PATHS) -> pd.DataFrame:
        """``Bench.compare``, all of it one task (so its ratios pair runs on one machine)."""
        return self._run([("compare", "compare", (w, runs, paths))], "compare")

    def sweep(self, parameter: str, values: Sequence[int], base: Workload = Workload(), runs: int = 5,
              paths: Sequence[str] = PATHS) -> pd.DataFrame:
        """``Bench.sweep``, one task per value; a worker that dies has its points rerun on another."""
        points = sweep_points(parameter, list(values), base)
        return self._run([(label, "compare", (w, runs, paths)) for label, w in points], f"sweep {parameter}")

    def chat_turns(self, turns: int = 10, n_predict: int = 16, w: Workload = Workload()) -> pd.DataFrame:
        """``Bench.chat_turns``, one task."""
        return self._run([("chat-turns", "chat_turns", (turns, n_predict, w))], "chat turns")

    def concurrency(self, levels: Sequence[int], w: Workload = Workload(), runs: int = 5,
                    batching: bool = True) -> pd.DataFrame:
        """``Bench.concurrency``, one task: the one place where a worker makes several
        generations at once for a measurement, because it was asked to."""
        return self._run([("concurrency", "concurrency", (list(levels), w, runs, batching))], "guests at once")


def map(client: Client, guest: Guest, prompts: Sequence[str], model: str = DEFAULT_MODEL, *,
        env: dict[str, str] | None = None, params: dict[str, Any] | None = None, limits: Limits | None = None,
        progress: bool = True, concurrency: int = 4) -> pd.DataFrame:
    """``Host.map`` on the cluster: the prompts in tasks of ``concurrency`` each, which a
    worker runs at once (``Host.map`` with that concurrency; 1: a task per prompt); the
    rows in prompt order, each also naming its ``worker`` and ``hostname``. A task's runs
    all end before the worker takes its next task. A built-in guest goes by name (a
    worker builds it from the sources it ships with); any other as its bytes, which a
    worker on another machine can run. A task whose worker dies is rerun on another; a
    task that raises is named (``prompts 4-7``) in a ``SweepError`` once the others have
    completed."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError(f"concurrency is how many runs a worker makes at once, at least 1, not {concurrency!r}")
    if not (isinstance(guest, str) and "/" not in guest and not Path(guest).exists()):
        guest = bytes(guest) if isinstance(guest, (bytes, bytearray)) else resolve(guest).read_bytes()
    options = {"env": dict(env or {}), "params": dict(params or {}), "limits": limits, "concurrency": concurrency}
    prompts = list(prompts)
    tasks = []
    for first in range(0, len(prompts), concurrency):
        chunk = prompts[first:first + concurrency]
        label = f"prompt {first}" if len(chunk) == 1 else f"prompts {first}-{first + len(chunk) - 1}"
        tasks.append((label, _map_task, (guest, chunk, model, options)))
    return _run(client, tasks, f"{len(prompts)} runs", progress)


@contextmanager
def connect(scheduler: str | None = None, local_workers: int | None = None) -> Iterator[Client]:
    """A client of the scheduler at ``scheduler``, or of a ``LocalCluster`` of
    ``local_workers`` worker processes on 127.0.0.1 (one thread each); both are closed
    on leaving the block."""
    if scheduler is not None and local_workers is None:
        with Client(scheduler) as client:
            yield client
        return
    if local_workers is None or scheduler is not None:
        raise ConfigError("give a scheduler's address or a number of local workers: one of them")
    if local_workers < 1:
        raise ConfigError(f"a local cluster needs at least one worker, not {local_workers}")
    with (LocalCluster(n_workers=local_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                       dashboard_address=None) as cluster,
          Client(cluster) as client):
        yield client
