"""``Bench``: the paths side by side, sweeps, and what the rest of the host costs."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, replace
from typing import Any

import pandas as pd

from ..backends.base import NextTokenDistribution, TokenEvent, TokenStream, Usage
from ..backends.echo import EchoBackend
from ..errors import ConfigError, GuestExitError
from ..host import Host
from ..types import Tensor
from .paths import Baselines, GuestPath
from .stats import summary, table
from .workload import PATHS, Workload, guest_env, sweep_points

__all__ = ["Bench"]

_TEXT = (
    "The history of computing is a story of abstraction. Each generation of engineers built "
    "tools that hid the details of the machine below, so that the next could think in larger "
    "pieces. Portable bytecode, sandboxes and virtual machines are part of that story. "
)
_BASELINES = ("floor", "direct")


class Bench:
    """Measures a model's paths side by side on ``host`` (a new one, closed with the
    bench, if none is given). Close it (or use it as a context manager): it holds a
    llama.cpp context per path and context settings."""

    summary = staticmethod(summary)
    table = staticmethod(table)

    def __init__(self, host: Host | None = None, *, model: str = "default", progress: bool = True) -> None:
        self._own_host = host is None
        self.host = host or Host()
        self.model = model
        self.progress = progress
        path = self.host.registry.get(model).path
        if path is None:
            raise ConfigError(f"benchmarks need a GGUF model; {model!r} has no file")
        self.model_path = path
        self._baselines = Baselines(path)
        self._guests = GuestPath(self.host, model)
        self._ids = itertools.count()
        self._warm: set[tuple[str, tuple[Any, ...]]] = set()

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Free the contexts the paths kept, and the host if the bench made it."""
        self._guests.close()
        self._baselines.close()
        self._warm.clear()
        if self._own_host:
            self.host.close()

    def prompt(self, n_tokens: int, w: Workload | None = None) -> str:
        """A text of about ``n_tokens`` tokens (the guest's tokenizer may differ by one)."""
        llm = self._baselines.llama(w or Workload())
        tokens: list[int] = []
        while len(tokens) < n_tokens:
            tokens += llm.tokenize(_TEXT.encode(), add_bos=False)
        return str(llm.detokenize(tokens[:n_tokens]).decode("utf-8", "ignore"))

    def _run(self, path: str, w: Workload, prompt: str) -> dict[str, Any]:
        if path in _BASELINES:
            return self._baselines.run(path, w, prompt)
        return self._guests.run(path, w, prompt)

    def _bar(self, total: int, description: str) -> Any:
        from ..progress import Progress

        return Progress(total, description, enabled=self.progress)

    # -- comparisons ------------------------------------------------------------------------------

    def compare(self, w: Workload = Workload(), runs: int = 5, paths: Sequence[str] = PATHS) -> pd.DataFrame:
        """One row per run and path (with the machine's load average as it ran). Each path
        first runs until its time to first token settles (what a first run pays for once:
        its context, its compiled guest, caches), unrecorded; then the runs, interleaved,
        the order rotated each run."""
        from .workload import ALL_PATHS

        unknown = [path for path in paths if path not in ALL_PATHS]
        if unknown:
            raise ConfigError(f"unknown paths {unknown}; the paths are: {', '.join(ALL_PATHS)}")
        self.host.check_params(w.config)  # a bad value is named here, before llama.cpp sees it
        prompt = self.prompt(w.prompt_tokens, w)
        rows = []
        with self._bar(len(paths) * (runs + 1), f"prompt {w.prompt_tokens}, n-predict {w.n_predict}") as bar:
            for path in paths:
                self._warm_up(path, w, prompt)
                bar.update()
            for run in range(runs):
                shift = run % len(paths)
                for path in [*paths[shift:], *paths[:shift]]:
                    measured = self._run(path, w, prompt)
                    rows.append({"path": path, "run": run, **asdict(w), "load_1min": os.getloadavg()[0], **measured})
                    bar.update()
        return pd.DataFrame(rows)

    def _warm_up(self, path: str, w: Workload, prompt: str, most: int = 3) -> None:
        """Run ``path`` until two runs in a row reach their first token within 20% of each
        other (at most ``most`` runs): a path's first runs on new context settings pay for
        making the context, compiling the guest, a new thread's OpenMP team."""
        previous = None
        for _ in range(1 if (path, w.key) in self._warm else most):
            ttft = self._run(path, w, prompt)["ttft_s"]
            if previous is not None and abs(ttft - previous) <= 0.2 * min(ttft, previous):
                break
            previous = ttft
        self._warm.add((path, w.key))

    def sweep(self, parameter: str, values: Sequence[int], base: Workload = Workload(), runs: int = 5,
              paths: Sequence[str] = PATHS) -> pd.DataFrame:
        """``compare`` at each value of ``parameter`` (a Workload field, kebab-case or not)."""
        return pd.concat([self.compare(w, runs, paths) for _, w in sweep_points(parameter, list(values), base)],
                         ignore_index=True)

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
        """A whole run of a guest that exits at once (no arguments): compiled afresh (a
        host without the compiled-module cache), from this process's compiled-module
        cache (this host, warm), and from the on-disk cache a new process uses (a new
        host). Each host made for it is closed."""
        rows = []
        self.host.run(guest)  # compiled and cached: the memory cache's runs find it
        for repeat in range(repeats):
            for kind in ("compile", "memory cache", "disk cache"):
                with self._starter(kind) as host:
                    started = time.perf_counter()
                    result = host.run(guest)
                    rows.append({"kind": kind, "repeat": repeat, "ms": (time.perf_counter() - started) * 1e3,
                                 "exit_code": result.exit_code})
        return pd.DataFrame(rows)

    @contextmanager
    def _starter(self, kind: str) -> Iterator[Host]:
        if kind == "memory cache":
            yield self.host
            return
        with Host(default_model=False, compiled_cache=kind == "disk cache") as host:
            yield host

    def chat_turns(self, turns: int = 10, n_predict: int = 16, w: Workload = Workload()) -> pd.DataFrame:
        """Time to first token at each turn of a chat, keeping the KV cache between turns
        (ours) and re-evaluating the whole conversation every turn (WasmEdge's way)."""
        questions = [f"Tell me one fact about the number {n}." for n in range(1, turns + 1)]
        env = guest_env(replace(w, n_predict=n_predict))
        # Warm up on a session of its own, as each mode's: the guest compiled, the weights
        # loaded, a context of these settings made once, so turn 1 is not a cold start.
        self._chat("bench-chat-warm-up", questions[:1], env, cache=True)
        rows = []
        for mode, cache in (("prefix reuse", True), ("re-evaluate all", False)):
            for turn, g in enumerate(self._chat(f"bench-chat-{next(self._ids)}", questions, env, cache), start=1):
                rows.append({"mode": mode, "turn": turn, "prompt_tokens": g.prompt_tokens,
                             "evaluated_tokens": g.evaluated_tokens, "ttft_s": g.time_to_first_token})
        return pd.DataFrame(rows)

    def _chat(self, session_id: str, questions: list[str], env: dict[str, str], cache: bool) -> list[Any]:
        result = self.host.run("chat", self.model, stdin="\n".join(questions) + "\n", env=env, session=session_id,
                               params={"cache-prompt": cache})
        try:
            if result.exit_code != 0:
                raise GuestExitError(result.exit_code, stderr=result.stderr)
            return list(self.host.session(session_id).generations)
        finally:
            self.host.sessions.close(session_id)

    def session_cost(self, tokens: int = 100_000) -> float:
        """Microseconds per token that a session's token path adds to its backend's
        stream (its lock, UTF-8 decoding, metrics recording, listeners): ``next_token``
        through a session against the same stream's own, alternated, best of five, on a
        stream that hands out one token at once (the backend is not measured)."""
        context = _InstantContext()
        session = self.host.sessions.open(context, EchoBackend(), model=None, guest=None)  # its catalogue: none
        per_call: dict[str, list[float]] = {"session": [], "stream": []}
        try:
            for _ in range(5):
                for side in per_call:
                    session.start_generation()
                    pull = session.next_token if side == "session" else context.stream.next_token
                    started = time.perf_counter()
                    for _ in range(tokens // 5):
                        pull()
                    per_call[side].append((time.perf_counter() - started) / (tokens // 5))
                    session.end_generation()
        finally:
            self.host.sessions.close(session.id)
        return (min(per_call["session"]) - min(per_call["stream"])) * 1e6


class _InstantStream:
    event = TokenEvent(b" word", 1, 0.0)
    end_reason = None

    def next_token(self) -> TokenEvent:
        return self.event

    def close(self) -> None:
        pass


class _InstantContext:
    """An execution context whose generations never end and cost nothing."""

    generates = True

    def __init__(self) -> None:
        self.stream = _InstantStream()
        self.parameters: dict[str, Any] = {}

    def check(self, options: Any) -> None:
        pass

    def configure(self, options: Any) -> None:
        pass

    def prepare(self) -> None:
        pass

    def set_input(self, name: str, tensor: Tensor) -> None:
        pass

    def clear_inputs(self) -> None:
        pass

    def compute(self) -> None:
        pass

    def output_names(self) -> list[str]:
        return []

    def get_output(self, name: str) -> Tensor:
        raise ConfigError("the instant context has no outputs")

    def distribution(self, k: int, options: Any) -> NextTokenDistribution:
        raise ConfigError("the instant context has no token distribution")

    def generate(self) -> TokenStream:
        return self.stream

    def usage(self) -> Usage:
        return Usage()

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass
