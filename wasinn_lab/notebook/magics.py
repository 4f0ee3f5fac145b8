"""``%%wasi_nn`` and ``%wasi_nn``: run guests in cells and inspect the lab."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import random
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..config import parse_assignment
from ..errors import Busy, ConfigError, GuestBuildError, InvalidArgument, NotFound, WasiNNLabError
from ..limits import Limits
from ..sessions import Session
from ..tasks import Event
from .display import CellStream, LivePlot
from .forkgrid import ForkGrid
from .lab import CellResult, ForkResult, Lab
from .probabilities import ProbabilityCell, ProbabilityView, show
from .tables import COUNT_COLUMNS, Parameters, session_counts, stats_table

__all__ = ["WasiNNMagics"]

LINE_COMMANDS = ("models", "preload", "sessions", "get", "set", "close", "properties", "options", "stats", "plot",
                 "probs")
# How many alternatives --show probs records when the cell does not say (-p logprobs=K).
SHOWN_ALTERNATIVES = 5
# What a person got wrong (a name, a value, a session that is busy): said in one line.
_USER_MISTAKES = (ConfigError, NotFound, Busy, InvalidArgument)
_RANDOM_SEEDS = 2**31  # --fork's random seeds: below it, a seed every backend takes


@contextlib.contextmanager
def _said_plainly() -> Iterator[None]:
    """A user's mistake becomes a UsageError: IPython shows it as one line, no traceback."""
    try:
        yield
    except _USER_MISTAKES as exc:
        raise UsageError(str(exc)) from None


def _assignments(items: list[str], what: str, *, json_value: bool = True) -> dict[str, Any]:
    try:
        return dict(parse_assignment(item, json_value=json_value) for item in items)
    except WasiNNLabError as exc:
        raise UsageError(f"{what}: {exc}") from None


def _parse(magic: Any, line: str) -> argparse.Namespace:
    """``parse_argstring``, with the usage line under the message of every bad argument."""
    try:
        return parse_argstring(magic, line)
    except UsageError as exc:
        raise _usage_error(magic, str(exc)) from None


def _usage_error(magic: Any, message: str) -> UsageError:
    usage = magic.parser.format_usage().removeprefix("::").strip()  # IPython formats it as reST
    return UsageError(f"{message}\nusage: {usage}")


def _changed(session: Session) -> str:
    """The parameters that differ from the backend's defaults, short enough for a table
    cell (all of them: ``%wasi_nn get SESSION``)."""
    parameters = Parameters(session)
    return ", ".join(f"{key}={parameters[key]}" for key in parameters.changed()) or "(defaults)"


def _interrupted(result: CellResult) -> KeyboardInterrupt:
    """A fresh KeyboardInterrupt (its traceback would run through the whole host) that
    IPython shows as one line, as it shows a UsageError: the cell has already said where
    the generation stopped, and kept what came."""
    kept = f"the {len(result.text):,} characters that came are kept in _wasi_nn" if result.text else "nothing came"
    after = f"; session {result.session} is ready for the next cell" if result.session else ""
    return _said_in_one_line(f"KeyboardInterrupt: the lab stopped the generation; {kept}{after}")


def _said_in_one_line(line: str) -> KeyboardInterrupt:
    interrupt = KeyboardInterrupt()
    interrupt._render_traceback_ = lambda: [line]  # type: ignore[attr-defined]  # IPython's hook for how it is shown
    return interrupt


def _flatten(mapping: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        if isinstance(value, dict):
            rows += _flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


@magics_class
class WasiNNMagics(Magics):
    def __init__(self, shell: Any, lab: Lab) -> None:
        super().__init__(shell)
        self.lab = lab

    @property
    def _in_kernel(self) -> bool:
        return getattr(self.shell, "kernel", None) is not None

    # -- %%wasi_nn --------------------------------------------------------------------------

    @cell_magic("wasi_nn")
    @magic_arguments("%wasi_nn")  # help and usage then name it %%wasi_nn
    @argument("guest", nargs="?", help="a .wasm path, a guest from guests/ (stream, chat...) or one built with --build")
    @argument("-m", "--model", default="default", help="registered model name (default: default)")
    @argument("-s", "--session", help="keep the guest's context (and a chat guest itself) under this id across cells")
    @argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
              help="a parameter for the guest's contexts, e.g. temp=0.2 (%%wasi_nn options lists them)")
    @argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE", help="environment variable for the guest")
    @argument("--input", choices=("argv", "stdin"), help="how the cell reaches the guest (default: what it declares)")
    @argument("-q", "--quiet", action="store_true", help="show nothing; the result is in the variable _wasi_nn")
    @argument("--live-plot", action="store_true", help="plot per-token latency while tokens stream")
    @argument("--show", choices=("text", "probs"), default="text",
              help="probs: each token shaded by its probability, its alternatives on hover, and a plot of entropy "
                   f"(turns on -p logprobs={SHOWN_ALTERNATIVES} unless the cell or its session has logprobs on)")
    @argument("--timeout", type=float, help="seconds this run (or chat turn) may take (default 600)")
    @argument("--max-memory", type=int, metavar="MIB", help="linear memory limit in MiB (default 2048)")
    @argument("--fuel", type=int, help="instruction budget (metered; default: none)")
    @argument("--limit", action="append", default=[], metavar="NAME=VALUE",
              help="any limit by name: instances, tables, table_elements, load_bytes, ... (repeatable)")
    @argument("--build", choices=("c", "wat", "python"),
              help="the cell is guest source in this language: build it (python: a component on the LLM interface)")
    @argument("--name", help="with --build: the name to use the guest by")
    @argument("--run", action="store_true", help="with --build: run the guest once built")
    @argument("--fork", type=int, metavar="N",
              help="N continuations of the cell's prompt side by side, generated together, each with its own seed "
                   "(-p seed=S: S, S+1, ...; else random); for guests that take the prompt as an argument")
    @argument("--args", nargs=argparse.REMAINDER, default=[],
              help="more guest arguments (after MODEL and the prompt); everything after --args goes to the guest")
    def wasi_nn_cell(self, line: str, cell: str) -> None:
        """Run a wasi-nn guest on the cell.

        A guest that takes a prompt argument (complete, stream) gets the cell as argv[2];
        a guest that reads turns from stdin (chat; it exports `wasinn-lab.input.stdin`)
        gets the cell as one turn. With --build, the cell is C, WAT or Python source instead.
        The result (text, stdout, stderr, sessions) is stored in `_wasi_nn`.

        With --fork N, a prompt guest continues the cell N times at once, side by side, each
        fork with its own seed (the prompt is evaluated once, then forked); `_wasi_nn` is then
        a ForkResult (seeds, texts, one result per fork). docs/forks.md has the details.
        """
        args = _parse(self.wasi_nn_cell, line)
        if args.fork is not None:
            self._forks(args, cell.rstrip("\n"))
            return
        if args.build:
            if not args.name:
                raise _usage_error(self.wasi_nn_cell, "--build needs --name NAME to use the guest by")
            self._build(args.name, cell, args.build)
            if not args.run:
                return
            args.guest, text = args.name, None
        else:
            if args.name or args.run:
                raise _usage_error(self.wasi_nn_cell, "--name and --run go with --build")
            if not args.guest:
                raise _usage_error(self.wasi_nn_cell, "which guest? e.g. %%wasi_nn stream  (or --build c --name NAME)")
            text = cell.rstrip("\n")
        params = _assignments(args.param, "--param")
        env = _assignments(args.env, "--env", json_value=False)
        stdin_turns = None if args.input is None else args.input == "stdin"
        limits = self._limits(args)
        if args.show == "probs" and args.quiet:
            raise _usage_error(self.wasi_nn_cell, "--quiet shows nothing: it does not go with --show probs")
        recorded = self._logprobs_on(args, params) if args.show == "probs" else ""
        stream = None if args.quiet else CellStream(f"{args.guest} · {args.model}", in_kernel=self._in_kernel)
        if stream is not None and args.session:
            stream.sessions.append(args.session)
        probabilities = None if args.show != "probs" else ProbabilityCell(
            f"{args.guest} · token probabilities, {recorded}", in_kernel=self._in_kernel)
        sinks = [sink for sink in (stream, LivePlot() if args.live_plot else None, probabilities) if sink is not None]

        def on_event(event: Event) -> None:
            for sink in sinks:
                sink(event)

        status = "failed"
        result = CellResult(guest=args.guest, session=args.session)
        try:
            with _said_plainly():
                self.lab.generate(
                    args.guest,
                    text,
                    model=args.model,
                    session=args.session,
                    params=params,
                    env=env,
                    args=args.args,
                    stdin_turns=stdin_turns,
                    limits=limits,
                    on_event=on_event,
                    result=result,
                )
            status = "done" if result.exit_code is not None else "waiting for the next turn"
        except KeyboardInterrupt:
            status = "interrupted"
            raise _interrupted(result) from None
        finally:
            if probabilities is not None and stream is not None and probabilities.conclude().recorded:
                stream.transcript.text_below = "shaded by probability below"  # not shown twice: folded
            for sink in sinks:
                sink.finish(status)
            if self.shell is not None:
                self.shell.user_ns["_wasi_nn"] = result  # what came, even from a failed or interrupted cell

    def _forks(self, args: argparse.Namespace, text: str) -> None:
        """``--fork N``: the cell's prompt continued N times at once, in N columns."""
        n = args.fork
        refused = ("--build" if args.build else "--input stdin" if args.input == "stdin"
                   else "--live-plot" if args.live_plot else None)
        if refused:
            raise _usage_error(self.wasi_nn_cell, f"--fork takes the cell as a prompt to continue: not with {refused}")
        if not args.guest:
            raise _usage_error(self.wasi_nn_cell, "which guest? e.g. %%wasi_nn stream --fork 3")
        if n < 1:
            raise _usage_error(self.wasi_nn_cell, f"--fork N takes how many continuations to show, 1 or more, not {n}")
        params = _assignments(args.param, "--param")
        seed = params.pop("seed", None)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise UsageError(f"seed={seed!r}: with --fork {n}, the seeds are seed, seed+1, ... seed+{n - 1}: give a "
                             "whole number, 0 or more, or no seed for random ones")
        seeds = [seed + i for i in range(n)] if seed is not None else random.sample(range(_RANDOM_SEEDS), n)
        header = f"{args.guest} · {args.model}" + (f" · forks of session {args.session}" if args.session else "")
        grid = None if args.quiet else ForkGrid(header, seeds, in_kernel=self._in_kernel)
        result = ForkResult(args.guest, seeds, [])
        status = "failed"
        try:
            with _said_plainly():
                self.lab.generate_forks(args.guest, text, seeds, model=args.model, session=args.session, params=params,
                                        env=_assignments(args.env, "--env", json_value=False), args=args.args,
                                        limits=self._limits(args), on_event=grid or (lambda index, event: None),
                                        result=result)
            status = "done"
        except KeyboardInterrupt:
            status = "interrupted"
            after = f"; session {args.session} is ready for the next cell" if args.session else ""
            raise _said_in_one_line(f"KeyboardInterrupt: the lab stopped the {n} generations; what came is kept "
                                    f"in _wasi_nn{after}") from None
        finally:
            if grid is not None:
                grid.finish(status)
            if self.shell is not None:
                self.shell.user_ns["_wasi_nn"] = result

    def _logprobs_on(self, args: argparse.Namespace, params: dict[str, Any]) -> str:
        """Make sure the cell records probabilities for --show probs; says how."""
        asked = params.get("logprobs")
        if asked is not None:
            if asked == 0:  # any other bad value: the session's own check says what it takes
                raise _usage_error(self.wasi_nn_cell, f"--show probs needs logprobs on, and -p logprobs={asked} "
                                   "turns them off: give -p logprobs=K with K >= 1, or leave it out")
            return f"top {asked} alternatives"
        open_session = self.lab.find(args.session) if args.session else None
        if open_session is not None:
            with contextlib.suppress(ConfigError):  # a backend without logprobs says so when it is set
                kept = open_session.get("logprobs")
                if kept:
                    return f"top {kept} alternatives (session {args.session}'s logprobs={kept})"
        params["logprobs"] = SHOWN_ALTERNATIVES
        return f"top {SHOWN_ALTERNATIVES} alternatives (logprobs={SHOWN_ALTERNATIVES}, turned on by --show probs)"

    def _limits(self, args: argparse.Namespace) -> Limits | None:
        if args.timeout is None and args.fuel is None and args.max_memory is None and not args.limit:
            return None  # the host's own
        with _said_plainly():
            named = list(_assignments(args.limit, "--limit", json_value=False).items())
            return self.lab.host.limits.overridden(timeout=args.timeout, fuel=args.fuel,
                                                   max_memory_mib=args.max_memory, named=named)

    def _build(self, name: str, source: str, language: str) -> None:
        started = time.perf_counter()
        try:
            with _said_plainly():
                path = self.lab.build(name, source, language)
        except GuestBuildError as exc:
            # Compiler messages name the source file it was built from; show them as lines
            # of the cell (C, WAT: "cell:LINE:"; Python's tracebacks: 'File "cell", line LINE').
            log = re.sub(r"\S*/" + re.escape(name) + r"\.(c|wat):", "cell:", exc.log)
            log = re.sub(r'"[^"]*/' + re.escape(name) + r'/app\.py"', '"cell"', log)
            raise GuestBuildError(f"guest {name!r} did not build", log=log) from None
        print(f"built {name} ({path.stat().st_size:,} bytes, {time.perf_counter() - started:.1f} s): use it as "
              f"%%wasi_nn {name}, in this notebook or any other")

    # -- %wasi_nn ---------------------------------------------------------------------------

    @line_magic("wasi_nn")
    @magic_arguments("wasi_nn")
    @argument("command", choices=LINE_COMMANDS, help="what to do")
    @argument("rest", nargs="*", help="the command's arguments")
    def wasi_nn_line(self, line: str) -> Any:
        """Inspect and steer the lab.

        %wasi_nn models                      registered models
        %wasi_nn preload NAME PATH [K=V...]  register a GGUF model (with a default config)
        %wasi_nn sessions                    open sessions, their parameters and token counts
        %wasi_nn get SESSION [KEY]           a session's parameters, or one of them
        %wasi_nn set SESSION KEY=VALUE...    change them for the next generation
        %wasi_nn close SESSION               free a session (and its chat guest)
        %wasi_nn properties [MODEL]          backend (and model) properties
        %wasi_nn options [ENCODING]          the parameters each backend takes (ggml, echo)
        %wasi_nn stats [SESSION]             metrics per generation, rounded (all sessions without one)
        %wasi_nn plot [SESSION]              per-token latency, time to first token, decode rate
        %wasi_nn probs [SESSION] [N]         generation N (the latest) shaded by probability, alternatives
        """
        args = _parse(self.wasi_nn_line, line)
        handler = getattr(self, f"_{args.command}")
        try:
            inspect.signature(handler).bind(*args.rest)
        except TypeError:
            doc = (inspect.getdoc(self.wasi_nn_line) or "").splitlines()
            usage = next(re.split(r"\s{2,}", text.strip())[0] for text in doc if f"%wasi_nn {args.command}" in text)
            raise UsageError(f"usage: {usage}") from None
        with _said_plainly():
            return handler(*args.rest)

    def _models(self) -> pd.DataFrame:
        rows = [
            {
                "name": spec.name,
                "encoding": spec.encoding.value,
                "target": spec.target.value,
                "path": str(spec.path) if spec.path else "",
                "available": spec.available,
                "default config": dict(spec.config),
            }
            for spec in self.lab.host.models()
        ]
        return pd.DataFrame(rows).set_index("name")

    def _preload(self, name: str, path: str, *config: str) -> None:
        spec = self.lab.host.register(name, path, config=_assignments(list(config), "preload"))
        print(f"registered {spec.name} → {spec.path}")

    def _sessions(self) -> pd.DataFrame:
        """One row per open session; the counts are named as in the cell's usage caption
        and the session browser (tables.COUNTS_NOTE says what each counts)."""
        now_monotonic, now = time.monotonic(), datetime.now()
        rows = [
            {
                "id": session.id,
                "guest": Path(session.guest).stem if session.guest else "",  # stream, not stream.wasm
                "model": session.model,
                "parameters": _changed(session),
                **session_counts(session),
                # When it was last used, beside its state: one column less to run off the right edge.
                "state": f"{session.state} since "
                         f"{(now - timedelta(seconds=now_monotonic - session.last_used)).strftime('%H:%M:%S')}",
            }
            for session in self.lab.host.sessions
        ]
        columns = ["id", "guest", "model", "parameters", *COUNT_COLUMNS, "state"]
        return pd.DataFrame(rows, columns=columns).set_index("id")

    def _get(self, session_id: str, key: str | None = None) -> Any:
        session = self.lab.session(session_id)
        return Parameters(session) if key is None else session.get(key)

    def _set(self, session_id: str, *assignments: str) -> None:
        if not assignments:
            raise UsageError("usage: %wasi_nn set SESSION KEY=VALUE...")
        self.lab.session(session_id).set(_assignments(list(assignments), "set"))

    def _close(self, session_id: str) -> None:
        self.lab.close(session_id)
        print(f"closed {session_id}")

    def _options(self, encoding: str | None = None) -> pd.DataFrame:
        backends = {backend.encoding.value: backend for backend in self.lab.host.registry.backends}
        if encoding is not None and encoding.lower() not in backends:
            raise UsageError(f"no backend {encoding!r}; the backends are: {', '.join(backends)}")
        chosen = [backends[encoding.lower()]] if encoding else list(backends.values())
        rows = [{"backend": b.encoding.value, **row} for b in chosen for row in b.options.rows()]
        return pd.DataFrame(rows).set_index(["backend", "option"]) if rows else pd.DataFrame()

    def _properties(self, model: str | None = None) -> pd.DataFrame:
        rows = _flatten(self.lab.host.properties(model))
        return pd.DataFrame(rows, columns=["property", "value"]).set_index("property")

    def _stats(self, session_id: str | None = None) -> pd.DataFrame:
        """Rounded, with units; every column, unrounded: ``session.metrics()``."""
        sessions = [self.lab.session(session_id)] if session_id else list(self.lab.host.sessions)
        frames = [stats_table(session.metrics()).assign(session=session.id) for session in sessions]
        if not frames:
            raise UsageError("no open sessions: run a guest first (with --session to keep one)")
        return pd.concat(frames).reset_index().set_index(["session", "generation"])

    def _latest(self, session_id: str | None) -> Session:
        """The session named, or the one used last."""
        if session_id is None:
            recent = sorted(self.lab.host.sessions, key=lambda session: session.last_used)
            if not recent:
                raise UsageError("no open sessions: run a guest first (with --session to keep one)")
            session_id = recent[-1].id
        return self.lab.session(session_id)

    def _probs(self, session_id: str | None = None, generation: str = "-1") -> None:
        try:
            number = int(generation)
        except ValueError:
            raise UsageError(f"usage: %wasi_nn probs [SESSION] [N]: N is a generation's number, not {generation!r}") from None
        show(ProbabilityView.of(self._latest(session_id), number), in_kernel=self._in_kernel)

    def _plot(self, session_id: str | None = None) -> Any:
        from .. import plots

        session = self._latest(session_id)
        figure = plots.session_overview(session.metrics(), session.token_metrics())
        figure.suptitle(f"session {session.id}", fontsize="medium")
        import matplotlib.pyplot as plt

        plt.close(figure)  # shown once, as the value; pyplot would show it again
        return figure
