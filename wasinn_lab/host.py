"""The public host: a model registry, a session manager and a guest runtime, composed.

Every later layer (command line, notebook) talks to this and nothing below it. A host
owns what it starts: ``close()`` (or leaving its ``with`` block) closes its sessions,
lets its models go and stops its threads.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

from .abi.llm import STDIN_TURNS
from .backends.echo import EchoBackend
from .backends.llama import LlamaBackend
from .errors import ConfigError, GuestExitError, NNError, Timeout
from .guests import resolve
from .limits import Limits
from .models import (
    DEFAULT_CONFIG,
    DEFAULT_MODEL,
    SMOLLM2_CONFIG,
    SMOLLM2_MISSING,
    SMOLLM2_MODEL,
    cache_dir,
    default_model_path,
    smollm2_path,
)
from .nn import GuestNN
from .registry import ModelRegistry, ModelSpec
from .runtime import CompiledGuest, GuestOptions, GuestRuntime, ModuleInstance, RunResult
from .sessions import Session, SessionManager
from .tasks import DRAIN, GRACE, GuestTask, Hooks, Runner
from .types import ExecutionTarget, GraphEncoding

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Host", "Guest"]

Guest = str | os.PathLike[str] | bytes | bytearray
STDIN_TURNS_EXPORT = "wasinn-lab.input.stdin"
_POLL = 0.1  # seconds between looks while a map waits for its next run to end


class Host:
    """Runs wasi-nn guests in-process.

    Examples:
        >>> with Host() as host:                # registers `default` (Gemma 3 270M), `smollm2` and `echo`
        ...     host.run("stream", "default", "Once upon a time", on_stdout=print).exit_code
        0
    """

    def __init__(
        self,
        *,
        default_model: bool = True,
        max_sessions: int = 100,
        idle_timeout: float = 300.0,
        compiled_cache: bool = True,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits or Limits()  # for every run that names none of its own
        self.registry = ModelRegistry([LlamaBackend(), EchoBackend()])
        self.sessions = SessionManager(max_sessions=max_sessions, idle_timeout=idle_timeout, clock=clock)
        self.runtime = GuestRuntime(cache_dir() / "compiled" if compiled_cache else None)
        # Every guest task started and not yet collected; a running one is kept alive by its
        # thread, so none is missed.
        self._tasks: weakref.WeakSet[GuestTask] = weakref.WeakSet()
        self._tasks_lock = threading.Lock()
        self.registry.register("echo", encoding=GraphEncoding.ECHO)
        if default_model:
            self.registry.register(DEFAULT_MODEL, default_model_path(), config=DEFAULT_CONFIG)
            self.registry.register(SMOLLM2_MODEL, smollm2_path(), config=SMOLLM2_CONFIG, missing=SMOLLM2_MISSING)

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """End every guest it started that still runs, close every open session, let the
        models go, stop the host's threads. The host still works afterwards (it starts
        what it needs again)."""
        with self._tasks_lock:
            tasks = list(self._tasks)
        for task in tasks:
            task.end()
        self.sessions.close_all()
        self.registry.close()
        self.runtime.close()

    # -- models ---------------------------------------------------------------------------

    def register(
        self,
        name: str,
        path: str | os.PathLike[str] | None = None,
        *,
        encoding: GraphEncoding | str = GraphEncoding.GGML,
        target: ExecutionTarget | str = ExecutionTarget.AUTO,
        config: Mapping[str, Any] | None = None,
    ) -> ModelSpec:
        """Register a model under ``name`` with an optional default ``config``."""
        return self.registry.register(name, path, encoding=encoding, target=target, config=config)

    def preload(self, spec: str, config: Mapping[str, Any] | None = None) -> ModelSpec:
        """Register from a WasmEdge-style ``NAME:ENCODING:TARGET:PATH`` spec."""
        return self.registry.preload(spec, config)

    def models(self) -> list[ModelSpec]:
        """The registered models, ``default`` and ``echo`` among them."""
        return list(self.registry)

    def properties(self, model: str | None = None) -> dict[str, Any]:
        """Backend properties; with ``model``, that model's too (it is loaded if needed)."""
        properties: dict[str, Any] = {"backends": self.registry.backend_properties()}
        if model is not None:
            properties["model"] = self.registry.load(model).graph.properties()
        return properties

    # -- sessions -------------------------------------------------------------------------

    def open_session(self, model: str = DEFAULT_MODEL, config: Mapping[str, Any] | None = None, *,
                     session_id: str | None = None) -> Session:
        """A session on a registered model with no guest: drive it from Python
        (``set_input``, ``compute``, ``start_generation``/``next_token``)."""
        params = self.check_params(config or {})
        loaded = self.registry.load(model)
        context = loaded.graph.init_execution_context(loaded.config)
        return self.sessions.open(context, loaded.backend, model=model, guest=None, session_id=session_id,
                                  params=params)

    def session(self, session_id: str) -> Session:
        """The open session ``session_id``; ``NotFound`` if there is none."""
        return self.sessions.get(session_id)

    def check_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` as every context a guest opens gets them: each must be an option of
        some backend, with a value it accepts (ConfigError, naming it, if not)."""
        checked: dict[str, Any] = {}
        for key, value in params.items():
            options = [option for backend in self.registry.backends if (option := backend.options.lookup(key))]
            if not options:
                known = sorted({name for backend in self.registry.backends for name in backend.options})
                raise ConfigError(f"no parameter {key!r}; the parameters are: {', '.join(known)}")
            try:
                checked[options[0].name] = options[0].check(value)
            except NNError as exc:
                raise ConfigError(f"parameter {exc}") from None
        return checked

    # -- guests ---------------------------------------------------------------------------

    def _compile(self, guest: Guest, limits: Limits) -> tuple[str, CompiledGuest]:
        fuel = limits.fuel is not None
        if isinstance(guest, (bytes, bytearray)):
            return "guest.wasm", self.runtime.compile(bytes(guest), fuel=fuel)
        path = resolve(guest)
        return path.name, self.runtime.compile(path.read_bytes(), fuel=fuel)

    def _runner(self, guest: Guest, options: GuestOptions, session: str | None,
                params: Mapping[str, Any] | None) -> Runner:
        """Everything checked before the guest starts (its binary, its parameters, its
        session), and how it runs."""
        name, compiled = self._compile(guest, options.limits)
        checked = self.check_params(params or {})
        # Said here, before the guest starts, rather than as errno 4 inside it; the claim
        # when the guest opens the session is what really guards it.
        named = self.sessions.find(session) if session is not None else None
        if named is not None:
            named.require_free()

        def run(hooks: Hooks) -> RunResult:
            world = dataclasses.replace(options, on_stdout=hooks.on_stdout, on_stderr=hooks.on_stderr,
                                        on_instance=hooks.on_instance, stdin=hooks.stdin or options.stdin)
            nn = GuestNN(self.registry, self.sessions, guest=name, load_bytes=options.limits.load_bytes,
                         session_id=session, params=checked, on_session=hooks.on_session, on_error=hooks.on_error)
            return self.runtime.run(compiled, name=name, options=world, nn=nn)

        return run

    def run(
        self,
        guest: Guest,
        *args: str,
        env: Mapping[str, str] | None = None,
        stdin: bytes | str | os.PathLike[str] | None = None,
        dirs: Iterable[tuple[str | os.PathLike[str], str]] = (),
        on_stdout: Callable[[bytes], None] | None = None,
        on_stderr: Callable[[bytes], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        session: str | None = None,
        params: Mapping[str, Any] | None = None,
        limits: Limits | None = None,
        check: bool = False,
    ) -> RunResult:
        """Run a guest to completion: a ``.wasm`` path, a ``.c``/``.wat`` source, the name of
        a guest in ``guests/``, or module bytes.

        Output is captured, and handed to ``on_stdout``/``on_stderr`` as it is written, on
        wasinn-lab's output thread. ``on_error`` gets what each failed wasi-nn call said
        (the guest sees only a code), on the guest's thread; ``RunResult.errors`` keeps
        them too. The guest runs on a worker thread while this one waits, so that a
        KeyboardInterrupt here ends the guest's generation, and 2 s later the guest, and
        is raised once it has unwound. ``stdin`` is text or bytes to read, or a file
        (``Path``) to read from. ``session`` names the guest's execution context: an open
        session of that name is continued (its KV cache too), else the guest's first
        context becomes it, and it stays open afterwards. ``params`` override the config
        of every context the guest opens; they are checked before it starts
        (ConfigError). ``limits`` (default: ``host.limits``) bound what it may use;
        GuestLimitError says which one it hit. ``check=True`` raises GuestExitError on a
        non-zero exit."""
        options = GuestOptions(args=args, env=dict(env or {}), stdin=stdin, dirs=list(dirs),
                               limits=limits or self.limits)
        hooks = Hooks(on_stdout=on_stdout, on_stderr=on_stderr, on_error=on_error)
        task = self._task(self._runner(guest, options, session, params), hooks, interactive=False,
                          output_events=False)
        result = task.wait()
        if check and result.exit_code != 0:
            raise GuestExitError(result.exit_code, stderr=result.stderr)
        return result

    def map(
        self,
        guest: Guest,
        prompts: Iterable[str],
        model: str = DEFAULT_MODEL,
        *,
        env: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        limits: Limits | None = None,
        progress: bool = True,
        concurrency: int = 4,
    ) -> pd.DataFrame:
        """Run ``guest`` on ``model`` once per prompt, as ``run(guest, model, prompt, ...)``,
        ``concurrency`` runs at once (1: one after another): one row per prompt, in prompt
        order (prompt, exit_code, stdout, stderr, errors, seconds). ``progress`` shows a bar
        as the runs complete. A KeyboardInterrupt ends every run under way, as ``run`` ends
        its one, and is raised once they have unwound; a run that raises (a limit it hit)
        ends the others the same way, and its error is raised. ``wasinn_lab.cluster.map``
        does the same on a Dask cluster."""
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"concurrency is how many runs go at once, a whole number of at least 1, not {concurrency!r}")
        prompts = list(prompts)
        import pandas as pd

        from .progress import Progress

        options = GuestOptions(env=dict(env or {}), limits=limits or self.limits)
        waiting = deque(enumerate(prompts))
        running: dict[int, GuestTask] = {}
        finished: queue.Queue[int] = queue.Queue()  # each run's index, as its guest ends
        results: dict[int, RunResult] = {}
        with Progress(len(prompts), f"{len(prompts)} runs", enabled=progress) as bar:
            try:
                while waiting or running:
                    while waiting and len(running) < concurrency:
                        index, prompt = waiting.popleft()
                        runner = self._runner(guest, dataclasses.replace(options, args=(model, prompt)), None, params)
                        running[index] = self._task(_telling(runner, finished, index), Hooks(), interactive=False,
                                                    output_events=False)
                    index = _next(finished)
                    results[index] = running.pop(index).wait()
                    bar.update()
            except BaseException:
                _wind_down(list(running.values()))
                raise
        rows = [{"prompt": prompt, "exit_code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr,
                 "errors": result.errors, "seconds": result.seconds}
                for prompt, result in zip(prompts, (results[index] for index in range(len(prompts))), strict=True)]
        return pd.DataFrame(rows, columns=["prompt", "exit_code", "stdout", "stderr", "errors", "seconds"])

    def start(
        self,
        guest: Guest,
        *args: str,
        env: Mapping[str, str] | None = None,
        stdin: bytes | str | None = None,
        interactive: bool = False,
        session: str | None = None,
        params: Mapping[str, Any] | None = None,
        limits: Limits | None = None,
    ) -> GuestTask:
        """Start a guest on a worker thread; read what it does from ``task.events()``.
        ``interactive=True`` feeds its stdin turn by turn with ``task.send(text)``; the time
        limit then applies to each turn."""
        options = GuestOptions(args=args, env=dict(env or {}), stdin=stdin, limits=limits or self.limits)
        return self._task(self._runner(guest, options, session, params), Hooks(), interactive=interactive)

    def _task(self, runner: Runner, hooks: Hooks, **options: bool) -> GuestTask:
        """A guest started on its worker thread, kept so that ``close`` ends it."""
        task = GuestTask(runner, hooks, **options)
        with self._tasks_lock:
            self._tasks.add(task)
        return task

    def instantiate(self, guest: Guest, *args: str, env: Mapping[str, str] | None = None) -> ModuleInstance:
        """Instantiate a guest without running it, to call its exports one by one
        (``instance.call("nn_load_by_name", ...)``); close it when done."""
        options = GuestOptions(args=args, env=dict(env or {}), limits=self.limits)
        name, compiled = self._compile(guest, options.limits)
        if compiled.kind != "module":
            raise ConfigError(f"{name} is a component: instantiate() is for core modules, whose exports are called "
                              "one by one; run a component with run() or start()")
        nn = GuestNN(self.registry, self.sessions, guest=name, load_bytes=options.limits.load_bytes)
        return cast(ModuleInstance, self.runtime.instantiate(compiled, name=name, options=options, nn=nn))

    def reads_stdin_turns(self, guest: Guest) -> bool:
        """Whether the guest declares that it reads turns from stdin (a module exports
        ``wasinn-lab.input.stdin``, a component ``wasinn:llm/stdin-turns``) rather than
        taking a prompt argument."""
        exports = self._compile(guest, self.limits)[1].exports
        # Any 0.1.x of the package: a guest built for 0.1.0 declares it as 0.1.0.
        return STDIN_TURNS_EXPORT in exports or any(name.startswith(STDIN_TURNS.rpartition(".")[0] + ".")
                                                    for name in exports)


def _telling(runner: Runner, finished: queue.Queue[int], index: int) -> Runner:
    """``runner``, putting ``index`` on ``finished`` as it ends, however it ends."""
    def run(hooks: Hooks) -> RunResult:
        try:
            return runner(hooks)
        finally:
            finished.put(index)

    return run


def _next(finished: queue.Queue[int]) -> int:
    """The next index on ``finished``, waiting for it in short polls: an interrupt lands."""
    while True:
        try:
            return finished.get(timeout=_POLL)
        except queue.Empty:
            continue


def _wind_down(tasks: list[GuestTask]) -> None:
    """After an interrupt, or a run that raised: end every run under way, all together,
    as ``GuestTask.wind_down`` ends one: their generations at once, then, ``GRACE``
    seconds later, the guests that have not ended (each would have its own grace, one
    after another, if it were wound down alone); then wait ``DRAIN`` seconds at most
    for them to unwind. What they raise meanwhile is the interrupt's consequence."""
    for task in tasks:
        task.stop()
    left = tasks
    try:
        left = _drain(tasks, time.monotonic() + GRACE)
    finally:  # a second interrupt cuts the grace short
        for task in left:
            task.interrupt()
    _drain(left, time.monotonic() + DRAIN)


def _drain(tasks: list[GuestTask], deadline: float) -> list[GuestTask]:
    """Read each task's events until its guest ends, until ``deadline`` at the latest;
    returns those whose guests had not ended by then."""
    left = []
    for task in tasks:
        try:
            for _ in task.events(deadline=deadline):
                pass
        except Timeout:
            left.append(task)
    return left
