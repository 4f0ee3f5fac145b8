"""Benchmarks: what a wasm guest costs next to llama.cpp driven directly.

The same generation (model, prompt, seed, n-predict, threads, batch size, flash
attention, sampling) runs through (a) ``floor``: llama.cpp from the tightest loop one can
write in Python (one ``llama_decode`` per token and llama.cpp's own sampler chain, nothing
else), (b) ``direct``: llama-cpp-python's ``Llama.generate``, (c) the ``complete`` guest
(``compute``), (d) the ``stream`` guest (``compute_single``) and, when asked, (e)
``stream_llm``, the stream guest as a component on wasinn:llm. The paths run interleaved,
run by run, in one process, the order rotated each run, and each keeps one llama context
for all its runs (so no path pays for making one in its time to first token); every run
evaluates the whole prompt again. Guest runs are read from their session metrics
afterwards, so the harness adds nothing per token. Ratios are paired: each run's path
against the same run's direct and floor, then their median and spread.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .backends.base import TokenEvent
from .errors import ConfigError, GuestExitError, SweepError
from .host import Host
from .metrics import Generation
from .nn import GuestNN
from .runtime import GuestOptions

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["Workload", "Bench", "PATHS", "ALL_PATHS", "SAMPLINGS", "write", "add_arguments", "command"]

PATHS = ("floor", "direct", "guest-compute", "guest-stream")
ALL_PATHS = (*PATHS, "component-stream")  # the stream guest as a component, on wasinn:llm
MIN_RUNS = 5  # what the command line reports medians over, at the least
_GUESTS = {"guest-compute": "complete", "guest-stream": "stream", "component-stream": "stream_llm"}
# The same on every path. "default": llama.cpp's usual chain, which is what guests get
# unless they ask otherwise; "greedy": every path makes the same tokens.
SAMPLINGS: dict[str, dict[str, Any]] = {
    "default": {"temp": 0.8, "top-k": 40, "top-p": 0.95, "min-p": 0.05, "repeat-penalty": 1.1},
    "greedy": {"temp": 0.0, "top-k": 40, "top-p": 0.95, "min-p": 0.05, "repeat-penalty": 1.0},
}
_TEXT = (
    "The history of computing is a story of abstraction. Each generation of engineers built "
    "tools that hid the details of the machine below, so that the next could think in larger "
    "pieces. Portable bytecode, sandboxes and virtual machines are part of that story. "
)


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


def _median(values: Iterable[float | None]) -> float:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else float("nan")


def _rate(stamps: Sequence[float]) -> float | None:
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else None


class _Floor:
    """llama.cpp driven as tightly as Python can: the host's weights and a context made
    once with the host's own parameters; per run the KV cache cleared, the prompt
    decoded, then one llama_decode and one sample from llama.cpp's own chain per token."""

    def __init__(self, path: Path, w: Workload) -> None:
        from .backends.llama.context import context_params
        from .backends.llama.native import NativeContext
        from .backends.llama.options import OPTIONS
        from .backends.llama.weights import weights_cache
        from .options import Scope

        self._config = {**OPTIONS.defaults, **w.config}
        self._weights = weights_cache.acquire(path, OPTIONS.scoped(self._config, Scope.MODEL))
        self._native = NativeContext(self._weights, context_params(self._config, self._weights))

    def run(self, w: Workload, prompt: str) -> dict[str, Any]:
        import llama_cpp

        from .backends.llama.sampling import make_sampler

        weights, native = self._weights, self._native
        started = time.perf_counter()
        tokens = weights.tokenize(prompt.encode())
        native.clear()
        native.decode(tokens, 0)
        chain = make_sampler(weights, self._config, native.n_ctx, window_penalty=False)  # llama.cpp's own
        stamps: list[float] = []
        n_past = len(tokens)
        try:
            while len(stamps) < w.n_predict:
                token = chain.sample(native)
                stamps.append(time.perf_counter())
                if llama_cpp.llama_vocab_is_eog(weights.vocab, token):
                    break
                native.decode([token], n_past)
                n_past += 1
        finally:
            chain.close()
        return {"measured_prompt_tokens": len(tokens), "output_tokens": len(stamps), "ttft_s": stamps[0] - started,
                "decode_tok_per_s": _rate(stamps), "boundary_us_per_token": None, "guest_us_per_token": None}

    def close(self) -> None:
        from .backends.llama.weights import weights_cache

        self._native.close()
        weights_cache.release(self._weights)


class Bench:
    def __init__(self, host: Host | None = None, *, model: str = "default", progress: bool = True) -> None:
        self.host = host or Host()
        self.model = model
        self.progress = progress
        path = self.host.registry.get(model).path
        if path is None:
            raise ConfigError(f"benchmarks need a GGUF model; {model!r} has no file")
        self.model_path = path
        self._llamas: dict[tuple[Any, ...], Any] = {}
        self._floors: dict[tuple[Any, ...], _Floor] = {}
        self._sessions: set[str] = set()
        self._ids = itertools.count()

    # -- the paths --------------------------------------------------------------------------------

    def _llama(self, w: Workload) -> Any:
        from llama_cpp import Llama

        if w.key not in self._llamas:
            self._llamas[w.key] = Llama(
                str(self.model_path),
                n_ctx=w.ctx_size,
                n_batch=w.batch_size,
                n_ubatch=w.batch_size,
                n_threads=w.threads,
                n_threads_batch=w.threads,
                n_gpu_layers=w.n_gpu_layers,
                flash_attn=w.flash_attn,
                swa_full=True,  # as the host's contexts: prefix reuse needs the whole cache
                last_n_tokens_size=64,  # the penalties' window, as the host's
                seed=w.seed,
                verbose=False,
            )
        return self._llamas[w.key]

    def prompt(self, n_tokens: int, w: Workload | None = None) -> str:
        """A text of about ``n_tokens`` tokens (the guest's tokenizer may differ by one)."""
        llm = self._llama(w or Workload())
        tokens: list[int] = []
        while len(tokens) < n_tokens:
            tokens += llm.tokenize(_TEXT.encode(), add_bos=False)
        return llm.detokenize(tokens[:n_tokens]).decode("utf-8", "ignore")

    def _direct(self, w: Workload, prompt: str) -> dict[str, Any]:
        llm = self._llama(w)
        llm.reset()
        llm.set_seed(w.seed)
        sampling = SAMPLINGS[w.sampling]
        started = time.perf_counter()
        tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
        stamps: list[float] = []
        for _ in llm.generate(tokens, temp=sampling["temp"], top_k=sampling["top-k"], top_p=sampling["top-p"],
                              min_p=sampling["min-p"], repeat_penalty=sampling["repeat-penalty"], reset=True):
            stamps.append(time.perf_counter())
            if len(stamps) >= w.n_predict:
                break
        return {"measured_prompt_tokens": len(tokens), "output_tokens": len(stamps), "ttft_s": stamps[0] - started,
                "decode_tok_per_s": _rate(stamps), "boundary_us_per_token": None, "guest_us_per_token": None}

    def _floor(self, w: Workload, prompt: str) -> dict[str, Any]:
        if w.key not in self._floors:
            self._floors[w.key] = _Floor(self.model_path, w)
        return self._floors[w.key].run(w, prompt)

    def guest_env(self, w: Workload) -> dict[str, str]:
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

    def _guest(self, w: Workload, prompt: str, path: str) -> dict[str, Any]:
        # One session per path and context settings, kept between runs (its context is made
        # once); cache-prompt off makes every run evaluate the whole prompt, as the others do.
        # A continued session keeps its parameters over the guest's config: what varies
        # between workloads of one key is set on it too.
        session_id = f"bench-{path}-{'-'.join(map(str, w.key))}"
        self._sessions.add(session_id)
        params = {"cache-prompt": False, "flash-attn": "on" if w.flash_attn else "off", "n-predict": w.n_predict,
                  "seed": w.seed, **SAMPLINGS[w.sampling]}
        result = self.host.run(_GUESTS[path], self.model, prompt, env=self.guest_env(w), session=session_id,
                               params=params)
        if result.exit_code != 0:
            raise GuestExitError(result.exit_code, stderr=result.stderr)
        g: Generation = self.host.session(session_id).generations[-1]
        calls = {name: (seconds / count * 1e6) for name, (count, seconds) in g.host_calls.items()}
        step_calls = g.host_calls.get("compute_single", g.host_calls.get("next-chunk"))
        step = None
        if step_calls is not None:
            # All the backend's work but the prompt's tokenizing (in set_input: its whole
            # call bounds it) is done inside the steps.
            count, seconds = step_calls
            backend_in_steps = g.backend_seconds - g.host_calls.get("set_input", (0, 0.0))[1]
            step = (seconds - backend_in_steps) / count * 1e6
        return {
            "measured_prompt_tokens": g.prompt_tokens,
            "output_tokens": g.output_tokens,
            "ttft_s": g.time_to_first_token,
            "decode_tok_per_s": g.decode_tokens_per_second,
            "boundary_us_per_token": g.boundary_seconds / g.output_tokens * 1e6,
            "guest_us_per_token": g.guest_seconds / g.output_tokens * 1e6,
            # The host's own time in each kind of call (a step's: its call less the backend's work).
            "step_boundary_us": step,
            "output_boundary_us": calls.get("get_output_single"),
        }

    def _run(self, path: str, w: Workload, prompt: str) -> dict[str, Any]:
        if path == "direct":
            from .backends.llama.compute import compute_thread

            # On the thread the host computes on: a second OpenMP team in the process
            # would slow every path (see backends.llama.compute).
            compute_thread.acquire()
            try:
                return compute_thread.run(partial(self._direct, w, prompt))
            finally:
                compute_thread.release()
        if path == "floor":
            return self._floor(w, prompt)
        return self._guest(w, prompt, path)

    def close(self) -> None:
        """Free the contexts the paths kept (the host stays the caller's)."""
        for session_id in self._sessions:
            if self.host.sessions.find(session_id) is not None:
                self.host.sessions.close(session_id)
        for floor in self._floors.values():
            floor.close()
        self._sessions.clear()
        self._floors.clear()
        self._llamas.clear()

    # -- comparisons ------------------------------------------------------------------------------

    def _bar(self, total: int, description: str) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=description, disable=not self.progress, leave=False)

    def _on_cluster(self, client: Client, calls: Sequence[tuple[str, str, tuple[Any, ...]]],
                    description: str) -> pd.DataFrame:
        from .cluster import run_bench

        return run_bench(client, self.model, calls, description, progress=self.progress)

    def compare(self, w: Workload = Workload(), runs: int = 5, paths: Sequence[str] = PATHS, *,
                client: Client | None = None) -> pd.DataFrame:
        """One row per run and path (with the machine's load average as it ran); one
        warm-up run per path first, not recorded. With a Dask ``client``, all of it is one
        task on a worker of the cluster (``wasinn_lab.cluster``), each row naming its
        ``worker`` and ``hostname``."""
        unknown = [path for path in paths if path not in ALL_PATHS]
        if unknown:
            raise ConfigError(f"unknown paths {unknown}; the paths are: {', '.join(ALL_PATHS)}")
        if client is not None:
            return self._on_cluster(client, [("compare", "compare", (w, runs, paths))], "compare")
        self.host.check_params(w.config)  # a bad value is named here, before llama.cpp sees it
        prompt = self.prompt(w.prompt_tokens, w)
        rows = []
        with self._bar((runs + 1) * len(paths), f"prompt {w.prompt_tokens}, n-predict {w.n_predict}") as bar:
            for path in paths:
                self._run(path, w, prompt)
                bar.update()
            for run in range(runs):
                shift = run % len(paths)
                for path in [*paths[shift:], *paths[:shift]]:
                    measured = self._run(path, w, prompt)
                    rows.append({"path": path, "run": run, **asdict(w), "load_1min": os.getloadavg()[0], **measured})
                    bar.update()
        return pd.DataFrame(rows)

    @staticmethod
    def summary(frame: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
        """Medians per path (and ``by``); each path's decode rate against the direct path
        and the floor, paired run by run: the median ratio and its interquartile range
        (``vs_direct``, ``vs_direct_q1``, ``vs_direct_q3``, the same for the floor); time to
        first token against direct, paired too; the per-token overhead against direct."""
        keys = [*by, "path"]
        columns = [c for c in ("ttft_s", "decode_tok_per_s", "boundary_us_per_token", "step_boundary_us",
                               "output_boundary_us", "guest_us_per_token", "output_tokens", "load_1min")
                   if c in frame]
        table = frame.groupby(keys, sort=False)[columns].median()

        def paired(value: str, base: str, names: tuple[str, str, str]) -> pd.DataFrame | None:
            wide = frame.set_index([*by, "run", "path"])[value].unstack("path")
            if base not in wide:
                return None
            ratios = pd.Series(wide.div(wide[base], axis=0).stack(), name="ratio").reset_index()
            grouped = ratios.groupby(keys)["ratio"]
            return pd.concat({name: grouped.quantile(q) for name, q in zip(names, (0.25, 0.5, 0.75))}, axis=1)

        for value, base, names in (
            ("decode_tok_per_s", "direct", ("vs_direct_q1", "vs_direct", "vs_direct_q3")),
            ("decode_tok_per_s", "floor", ("vs_floor_q1", "vs_floor", "vs_floor_q3")),
            ("ttft_s", "direct", ("ttft_ratio_q1", "ttft_ratio", "ttft_ratio_q3")),
        ):
            stats = paired(value, base, names)
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

    def sweep(self, parameter: str, values: Sequence[int], base: Workload = Workload(), runs: int = 5,
              paths: Sequence[str] = PATHS, *, client: Client | None = None) -> pd.DataFrame:
        """``compare`` at each value of ``parameter`` (a Workload field, kebab-case or not).
        With a Dask ``client`` each value is a task on the cluster: a worker that dies has
        its points rerun on another, and a point that fails is named in a ``SweepError``
        (its ``frame`` holds the other points' rows) once the others have completed."""
        field = parameter.replace("-", "_")
        points = [(f"{parameter}={value}", replace(base, **{field: value})) for value in values]  # type: ignore[arg-type]
        if client is not None:
            calls = [(label, "compare", (w, runs, paths)) for label, w in points]
            return self._on_cluster(client, calls, f"sweep {parameter}")
        return pd.concat([self.compare(w, runs, paths) for _, w in points], ignore_index=True)

    # -- the rest of the host -----------------------------------------------------------------------

    def load_by_name(self, repeats: int = 5) -> pd.DataFrame:
        """A ``load_by_name`` through the ABI when the weights are not cached (cold) and
        when they are (cached), timed around the guest's call."""
        rows = []
        with self.host.instantiate("probe") as instance:
            name = self.model.encode()
            instance.write(1024, name)
            for repeat in range(repeats):
                for kind in ("cold", "cached"):
                    if kind == "cold":
                        self.host.registry.forget(self.model)
                    started = time.perf_counter()
                    errno = instance.call("nn_load_by_name", 1024, len(name), 2048)
                    rows.append({"kind": kind, "repeat": repeat, "ms": (time.perf_counter() - started) * 1e3, "errno": errno})
        return pd.DataFrame(rows)

    def guest_start(self, repeats: int = 5, guest: str = "complete") -> pd.DataFrame:
        """Start a guest (it exits at once: no arguments) after compiling it afresh, from
        this process's compiled-module cache, and from the on-disk cache a new process uses."""
        from .guests import resolve
        from .runtime import GuestRuntime

        wasm = resolve(guest).read_bytes()
        disk = self.host.runtime.compiled_dir
        rows = []
        for repeat in range(repeats):
            for kind in ("compile", "memory cache", "disk cache"):
                runtime = self.host.runtime if kind == "memory cache" else GuestRuntime(disk if kind == "disk cache" else None)
                if kind == "memory cache":
                    runtime.compile(wasm)
                started = time.perf_counter()
                module = runtime.compile(wasm)
                nn = GuestNN(self.host.registry, self.host.sessions, guest=guest, load_bytes=self.host.limits.load_bytes)
                result = runtime.run(module, name=guest, options=GuestOptions(), nn=nn)
                rows.append({"kind": kind, "repeat": repeat, "ms": (time.perf_counter() - started) * 1e3,
                             "exit_code": result.exit_code})
        return pd.DataFrame(rows)

    def chat_turns(self, turns: int = 10, n_predict: int = 16, w: Workload = Workload(), *,
                   client: Client | None = None) -> pd.DataFrame:
        """Time to first token at each turn of a chat, keeping the KV cache between turns
        (ours) and re-evaluating the whole conversation every turn (WasmEdge's way). With
        a Dask ``client``, one task on a worker of the cluster."""
        if client is not None:
            return self._on_cluster(client, [("chat-turns", "chat_turns", (turns, n_predict, w))], "chat turns")
        questions = [f"Tell me one fact about the number {n}." for n in range(1, turns + 1)]
        # Warm up (guest compiled, weights cached, context sizes seen) so turn 1 is not a cold start.
        self.host.run("chat", self.model, stdin="Hello\n", env=self.guest_env(replace(w, n_predict=2)))
        rows = []
        for mode, cache in (("prefix reuse", True), ("re-evaluate all", False)):
            session_id = f"bench-chat-{next(self._ids)}"
            env = {**self.guest_env(replace(w, n_predict=n_predict))}
            result = self.host.run("chat", self.model, stdin="\n".join(questions) + "\n", env=env,
                                   session=session_id, params={"cache-prompt": cache})
            if result.exit_code != 0:
                raise GuestExitError(result.exit_code, stderr=result.stderr)
            for turn, g in enumerate(self.host.session(session_id).generations, start=1):
                rows.append({"mode": mode, "turn": turn, "prompt_tokens": g.prompt_tokens,
                             "evaluated_tokens": g.evaluated_tokens, "ttft_s": g.time_to_first_token})
            self.host.sessions.close(session_id)
        return pd.DataFrame(rows)

    def recording_cost(self, tokens: int = 100_000) -> float:
        """Microseconds per token that recording metrics adds to the token path: a
        session's ``next_token`` with a generation being recorded, minus without, on a
        stream that hands out the same token at once (the backend is not measured)."""
        session = self.host.open_session(self.model)
        event = TokenEvent(b" word", 1, time.perf_counter())

        class Instant:
            end_reason = None

            def next_token(self) -> TokenEvent:
                return event

            def close(self) -> None:
                pass

        timings: dict[bool, list[float]] = {False: [], True: []}
        try:
            for _ in range(5):  # alternate, and keep each side's best: the machine is noisy
                for recording in (False, True):
                    session._stream = Instant()  # measuring the session's real per-token path
                    session._recorder.current = Generation() if recording else None
                    started = time.perf_counter()
                    for _ in range(tokens // 5):
                        session.next_token()
                    timings[recording].append((time.perf_counter() - started) / (tokens // 5))
        finally:
            session._stream = session._recorder.current = None
            self.host.sessions.discard(session)
        return (min(timings[True]) - min(timings[False])) * 1e6


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


# -- the command line: wasinn-lab bench ------------------------------------------------------------


def add_arguments(parser: Any) -> None:
    parser.add_argument("--runs", type=int, default=MIN_RUNS, help=f"measured runs per path (at least {MIN_RUNS}, the default)")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--n-predict", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--n-gpu-layers", type=int, default=0)
    parser.add_argument("--sweep", action="append", default=[], metavar="PARAM=V1,V2,...",
                        help="sweep a workload parameter (prompt-tokens, n-predict, threads, batch-size, n-gpu-layers)")
    parser.add_argument("--chat-turns", type=int, default=0, help="also time the first token at turns 1..N of a chat")
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


def _sweep_spec(text: str) -> tuple[str, list[int]]:
    name, sep, values = text.partition("=")
    fields = {f.replace("_", "-") for f in Workload.__dataclass_fields__} - {"seed", "ctx-size"}
    if not sep or name not in fields:
        raise ConfigError(f"--sweep {text!r}: expected PARAM=V1,V2,... with PARAM one of {', '.join(sorted(fields))}")
    try:
        return name, [int(v) for v in values.split(",")]
    except ValueError:
        raise ConfigError(f"--sweep {text!r}: values must be integers") from None


def _client(options: Any) -> AbstractContextManager[Client | None]:
    """The Dask client the options ask for (and the LocalCluster under it), closed by the
    caller's ``with``; none for a run in this process."""
    if options.scheduler is None and options.local_cluster is None:
        return nullcontext()
    from .cluster import connect

    return connect(options.scheduler, options.local_cluster)


def _sweep_frame(bench: Bench, name: str, values: list[int], base: Workload, options: Any,
                 client: Client | None) -> pd.DataFrame:
    """A sweep's frame, written as it is; when some points failed on a cluster, the
    others' rows are written before the error is raised."""
    from . import plots

    key, column = f"sweep-{name}", name.replace("-", "_")
    try:
        frame = bench.sweep(name, values, base, options.runs, options.paths, client=client)
    except SweepError as exc:
        if not exc.frame.empty:
            write({key: exc.frame}, options.out)
        raise
    medians = frame.groupby([column, "path"])["decode_tok_per_s"].median().reset_index()
    write({key: frame}, options.out, {key: partial(plots.sweep, medians, column, hue="path")})
    print(Bench.summary(frame, by=[column]).round(3).to_string(), end="\n\n")
    return frame


def command(options: Any) -> int:
    if options.runs < MIN_RUNS:
        raise ConfigError(f"--runs must be at least {MIN_RUNS}: a median of fewer runs says little on a noisy machine")
    sweeps = [_sweep_spec(text) for text in options.sweep]
    bench = Bench(progress=not options.no_progress)
    base = Workload(options.prompt_tokens, options.n_predict, options.threads, options.batch_size, options.n_gpu_layers)
    with _client(options) as client:
        # Each measurement is written as soon as it is made: a long sweep is never lost.
        frames = {"compare": bench.compare(base, options.runs, options.paths, client=client)}
        write({"compare": frames["compare"]}, options.out)
        print(Bench.summary(frames["compare"]).round(3).to_string(), end="\n\n")
        for name, values in sweeps:
            frames[f"sweep-{name}"] = _sweep_frame(bench, name, values, base, options, client)
        if options.chat_turns:
            frames["chat"] = bench.chat_turns(options.chat_turns, w=base, client=client)
            write({"chat": frames["chat"]}, options.out)
            print(frames["chat"].pivot(index="turn", columns="mode", values="ttft_s").round(3).to_string(), end="\n\n")
    print(f"results in {options.out}/: {', '.join(sorted(frames))} (CSV, JSON; sweeps also PNG)")
    return 0
