"""The notebook's wasi-nn lab: a host, guests built in cells, chat guests kept alive
across cells, the text a prompt guest's session continues, and the generation loop that
magics and widgets share.

It talks to the public host API only (``Host``, ``GuestTask``, ``Session``).
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigError, GuestExitError, NotFound
from ..guests import build_cell_source, builtin_source, cell_source, cells_dir
from ..host import Host
from ..limits import Limits
from ..runtime import RunResult
from ..sessions import Session, in_use
from ..tasks import DRAIN, GRACE, Event, EventKind, GuestTask
from ..types import Tensor, TensorType

__all__ = ["Lab", "CellResult", "ForkResult"]

T = TypeVar("T")


@dataclass
class CellResult:
    """What one cell (or one Generate click) produced."""

    guest: str
    session: str | None
    text: str = ""  # model text, token by token
    exit_code: int | None = None  # None while the guest lives on (a chat session)
    # The sessions it leaves open (%wasi_nn sessions lists them); a run without --session
    # has a context of its own, closed with the guest.
    sessions: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # what failed wasi-nn calls said
    # Bytes as they came: a str grown chunk by chunk is copied whole each time (a guest
    # that writes without end made an interrupt wait on that), and a character split
    # across two chunks must be decoded whole.
    stdout_bytes: bytearray = field(default_factory=bytearray, repr=False)
    stderr_bytes: bytearray = field(default_factory=bytearray, repr=False)

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", "replace")


@dataclass
class ForkResult:
    """What a ``--fork`` cell produced: one result per fork, in the order of their seeds."""

    guest: str
    seeds: list[int]
    results: list[CellResult]

    @property
    def texts(self) -> list[str]:
        return [result.text for result in self.results]


def _interruptible(future: Future[T]) -> T:
    """The future's result, waited for in short steps so that a KeyboardInterrupt reaches
    this thread; on one, the work is let finish (it is short) and the interrupt raised."""
    try:
        while True:
            with contextlib.suppress(FuturesTimeout):
                return future.result(timeout=0.05)
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            future.result()
        raise


class Lab:
    """The lab of one kernel (the extension's) or of a host you built (``attach``).
    A lab that made its own host closes it at ``shutdown``."""

    def __init__(self, host: Host | None = None) -> None:
        self._host = host
        self._owns_host = host is None
        self._host_lock = threading.Lock()
        self._chats: dict[str, GuestTask] = {}  # session id -> a stdin guest kept alive
        self._transcripts: dict[str, str] = {}  # session id -> text so far (prompt guests)
        self._watched: set[str] = set()  # sessions whose closing we follow
        self._generating: set[str] = set()  # sessions a generate() is running on
        self._generating_lock = threading.Lock()

    @property
    def host(self) -> Host:
        with self._host_lock:
            if self._host is None:
                self._host = Host()
            return self._host

    # -- guests -------------------------------------------------------------------------------

    def build(self, name: str, code: str, language: str) -> Path:
        """Build a guest from cell source (``c``, ``wat``, ``python``: a component on the
        LLM interface, world ``llm-guest``, or ``llm-chat-guest`` when it defines ``class
        StdinTurns``); ``name`` is then a guest in this kernel and every other one
        (``guests.cells_dir()`` keeps the source once it has built, so a name always stands
        for a guest that built). A built-in guest's name is refused: it would run one guest
        here and another in a kernel that never saw this cell."""
        if not name.isidentifier():
            raise ConfigError(f"guest name {name!r} must be an identifier (letters, digits, _)")
        if language not in ("c", "wat", "python"):
            raise ConfigError(f"--build takes c, wat or python, not {language!r}")
        if builtin_source(name) is not None:
            raise ConfigError(f"{name!r} is a built-in guest: build this one under another name")
        folder = cells_dir()
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder))
        try:
            # Written unchanged: the line numbers in error messages are the cell's.
            source = staging / name / "app.py" if language == "python" else staging / f"{name}.{language}"
            source.parent.mkdir(exist_ok=True)
            source.write_text(code)
            built = build_cell_source(source)
            kept = cell_source(name)  # one source per name, in the language it was last built in
            if kept is not None and kept.name == "app.py":
                shutil.rmtree(kept.parent)
            elif kept is not None:
                kept.unlink()
            if language == "python":
                source.parent.replace(folder / name)
            else:
                source.replace(folder / source.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return built

    # -- sessions -------------------------------------------------------------------------------

    def session(self, session_id: str) -> Session:
        return self.host.sessions.get(session_id)

    def find(self, session_id: str) -> Session | None:
        """The open session ``session_id``, or None; a lab whose host is not made yet has
        none, and this makes none."""
        with self._host_lock:
            host = self._host
        return None if host is None else host.sessions.find(session_id)

    def continued_text(self, session_id: str) -> str:
        """The text a prompt guest's next generation on this session continues: every
        earlier prompt and answer ("" for a new session, and for a chat guest, which keeps
        its own conversation)."""
        return self._transcripts.get(session_id, "")

    def chatting(self, session_id: str) -> bool:
        """Whether a chat guest lives on for this session (it keeps its own conversation)."""
        task = self._chats.get(session_id)
        return task is not None and task.running

    def start_afresh(self, session_id: str) -> None:
        """Forget the session's text so far: a prompt guest's next prompt is only the new
        text, and a chat guest ends (the next turn starts a new one, and a new
        conversation). The session, its parameters and its metrics stay."""
        self._transcripts.pop(session_id, None)
        task = self._chats.pop(session_id, None)
        if task is not None:
            task.close()

    def close(self, session_id: str) -> None:
        task = self._chats.get(session_id)
        if self.host.sessions.find(session_id) is not None:
            self.host.sessions.close(session_id)  # its on_close forgets the rest
        elif task is None and session_id not in self._transcripts:
            raise NotFound(f"no open session {session_id!r}")
        self._forget(session_id)
        if task is not None:
            task.close()  # and wait for the guest to go

    # -- generating -----------------------------------------------------------------------------

    def generate(
        self,
        guest: str,
        text: str | None,
        *,
        model: str = "default",
        session: str | None = None,
        params: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        stdin_turns: bool | None = None,
        limits: Limits | None = None,
        on_event: Callable[[Event], None] = lambda event: None,
        on_task: Callable[[GuestTask], None] = lambda task: None,
        result: CellResult | None = None,
    ) -> CellResult:
        """Run ``guest`` on ``text`` (None: no input) and hand every event to ``on_event``.
        ``result``, when given, is filled as the guest runs, so the caller keeps what came
        even when this raises (an interrupt, a trap); it is also what is returned.

        A guest that reads turns from stdin gets ``text`` as one turn; with a session it
        lives on for the next turn. Any other guest gets ``text`` as its prompt argument;
        with a session, the prompt is the session's text so far plus ``text``, and the
        session's KV cache means only the new part is evaluated.

        On KeyboardInterrupt the generation is stopped within one token and the guest is
        let finish its turn; a guest that does not (it spins) is stopped itself. Then the
        interrupt is raised again. A trap or a non-zero exit raises (GuestTrap,
        GuestExitError); a limit, GuestLimitError."""
        if stdin_turns is None:
            stdin_turns = self.host.reads_stdin_turns(guest)
        result = result or CellResult(guest=guest, session=session)
        open_session = self.host.sessions.find(session) if session is not None else None
        if open_session is not None:
            open_session.require_model(model)  # a chat guest kept alive would answer on its own
        with self._exclusive(session):
            task = self._task(guest, text, model, session, dict(params or {}), dict(env or {}), list(args),
                              stdin_turns, limits)
            on_task(task)
            try:
                self._pump(task, result, on_event)
            except KeyboardInterrupt:
                task.wind_down(partial(self._absorb, result, on_event))
                raise
            finally:
                if session is not None:
                    self._remember(session, task, text if not stdin_turns else None, result)
                result.sessions[:] = [sid for sid in result.sessions if self.host.sessions.find(sid) is not None]
        return result

    def generate_forks(
        self,
        guest: str,
        text: str,
        seeds: Sequence[int],
        *,
        model: str = "default",
        session: str | None = None,
        params: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        limits: Limits | None = None,
        on_event: Callable[[int, Event], None] = lambda index, event: None,
        result: ForkResult | None = None,
    ) -> ForkResult:
        """Continue ``text`` once per seed, all at once: the prompt (with ``session``, the
        session's text so far plus ``text``) is evaluated once, in that session or a
        session of its own, which is then forked once per seed; each fork is driven by its
        own instance of ``guest`` (one that takes its prompt as an argument) with its seed.
        ``on_event(index, event)`` gets each fork's events, from this thread. The forks
        (and a parent of its own) are closed at the end; a named session stays, its text
        so far unchanged. Raises what the first fork that failed raised, once all ended."""
        params = dict(params or {})
        result = result or ForkResult(guest, list(seeds), [])
        result.results[:] = [CellResult(guest=guest, session=None) for _ in seeds]
        if self.host.reads_stdin_turns(guest):
            raise ConfigError(f"--fork runs a guest that takes its prompt as an argument (stream, complete, "
                              f"stream_llm); {guest} reads turns from stdin: run it without --fork")
        named = self.host.sessions.find(session) if session is not None else None
        needed, open_now = len(seeds) + (named is None), len(self.host.sessions)
        room = self.host.sessions.max_sessions - open_now
        if needed > room:
            raise ConfigError(f"--fork {len(seeds)} needs {needed} sessions, and {room} of the "
                              f"{self.host.sessions.max_sessions} allowed are free: ask for at most "
                              f"{room - (needed - len(seeds))}, or close sessions")
        if named is not None:
            named.require_model(model)
            named.require_free()
        prompt = self.continued_text(session) + text if session is not None else text
        with self._exclusive(session):
            opened: list[Session] = []  # what the cell closes when it ends: the forks, a parent of its own
            try:
                # Off this thread: an interrupt that lands while llama.cpp calls back into
                # Python here (its log) would be swallowed by ctypes.
                with ThreadPoolExecutor(1, thread_name_prefix="wasinn-lab-fork-prompt") as pool:
                    forks = _interruptible(pool.submit(self._fork_prompt, named, model, session, prompt, params,
                                                       len(seeds), opened))
                tasks = [self.host.start(guest, model, prompt, *args, env=dict(env or {}), session=fork.id,
                                         params={**params, "seed": seed}, limits=limits)
                         for fork, seed in zip(forks, seeds)]
                self._pump_all(tasks, result.results, on_event)
            finally:
                for temporary in opened:
                    self.host.sessions.discard(temporary)
        return result

    def _fork_prompt(self, named: Session | None, model: str, session_id: str | None, prompt: str,
                     params: Mapping[str, Any], n: int, opened: list[Session]) -> list[Session]:
        """The prompt evaluated in the parent (``named``, else opened here), then forked ``n``
        times; each session the cell is to close is put in ``opened`` as soon as it opens."""
        parent = named or self.host.open_session(model, params, session_id=session_id)
        if session_id is None:
            opened.append(parent)
        self._evaluate(parent, prompt, params)
        for _ in range(n):
            opened.append(parent.fork())
        return opened[len(opened) - n:]

    @staticmethod
    def _evaluate(parent: Session, prompt: str, params: Mapping[str, Any]) -> None:
        """The prompt evaluated in ``parent``, nothing generated (n-predict 0 for this once)."""
        if not parent.inputs or parent.options.lookup("n-predict") is None:
            raise ConfigError(f"--fork continues text: model {parent.model!r} does not generate any")
        parent.set(params)
        n_predict = parent.get("n-predict")
        parent.set({"n-predict": 0})
        try:
            data = prompt.encode()
            parent.compute({parent.inputs[0]: Tensor((len(data),), TensorType.U8, data)})
        finally:
            parent.set({"n-predict": n_predict})

    @classmethod
    def _pump_all(cls, tasks: list[GuestTask], results: list[CellResult],
                  on_event: Callable[[int, Event], None]) -> None:
        """Every task's events, handed on from this thread as they come (one thread each
        waits on a task's events: this one stays free for KeyboardInterrupt)."""
        events: queue.Queue[tuple[int, Event]] = queue.Queue()

        def forward(index: int, task: GuestTask) -> None:
            for event in task.events():
                events.put((index, event))

        pumps = [threading.Thread(target=forward, args=(index, task), name="wasinn-lab-fork", daemon=True)
                 for index, task in enumerate(tasks)]
        for pump in pumps:
            pump.start()
        failures: list[BaseException] = []

        def absorb(index: int, event: Event) -> None:
            cls._absorb(results[index], partial(on_event, index), event)
            if event.kind is EventKind.DONE:
                outcome = event.data
                if isinstance(outcome, BaseException):
                    failures.append(outcome)
                else:
                    results[index].exit_code = outcome.exit_code
                    if outcome.exit_code != 0:
                        failures.append(GuestExitError(outcome.exit_code, stderr=outcome.stderr))

        try:
            while any(pump.is_alive() for pump in pumps) or not events.empty():
                with contextlib.suppress(queue.Empty):
                    absorb(*events.get(timeout=0.05))
        except KeyboardInterrupt:
            for task in tasks:
                task.stop()  # each generation ends within a token; its guest gets GRACE to finish
            ends = time.monotonic() + GRACE
            for pump, task in zip(pumps, tasks):
                pump.join(max(0.0, ends - time.monotonic()))
                if pump.is_alive():
                    task.interrupt()
            for pump in pumps:
                pump.join(DRAIN)
            while not events.empty():
                absorb(*events.get())
            raise
        if failures:
            raise failures[0]

    @contextlib.contextmanager
    def _exclusive(self, session_id: str | None) -> Iterator[None]:
        """One generation per session at a time: a second cell or prompt box would
        interleave its turn with the first one's (a chat guest reads them in any order)."""
        if session_id is None:
            yield
            return
        with self._generating_lock:
            if session_id in self._generating:
                raise in_use(session_id, "another cell or prompt box")
            self._generating.add(session_id)
        try:
            yield
        finally:
            self._generating.discard(session_id)

    def _remember(self, session_id: str, task: GuestTask, text: str | None, result: CellResult) -> None:
        """Keep what the next cell of this session needs, for as long as the session lives."""
        if text is not None:
            self._transcripts[session_id] = self._transcripts.get(session_id, "") + text + result.text
        if not task.running:
            self._chats.pop(session_id, None)
        session = self.host.sessions.find(session_id)
        if session is None:  # it never opened, or it ended with the guest
            self._forget(session_id)
        elif session_id not in self._watched:
            self._watched.add(session_id)
            session.on_close(lambda closed: self._forget(closed.id))

    def _forget(self, session_id: str) -> None:
        """The session is gone (closed, or expired): end its chat guest, drop its text."""
        self._watched.discard(session_id)
        self._transcripts.pop(session_id, None)
        task = self._chats.pop(session_id, None)
        if task is not None:
            task.close(timeout=0)

    def _task(
        self,
        guest: str,
        text: str | None,
        model: str,
        session: str | None,
        params: dict[str, Any],
        env: dict[str, str],
        args: list[str],
        stdin_turns: bool,
        limits: Limits | None,
    ) -> GuestTask:
        if not stdin_turns:
            prompt = [] if text is None else [self._transcripts.get(session or "", "") + text]
            return self.host.start(guest, model, *prompt, *args, env=env, session=session, params=params, limits=limits)
        task = self._chats.get(session) if session else None
        if task is None or not task.running:
            task = self.host.start(guest, model, *args, env=env, interactive=True, session=session, params=params,
                                   limits=limits)
            if session is not None:
                self._chats[session] = task
        elif params:
            self.session(session).set(params)  # type: ignore[arg-type]
        if text is not None:
            task.send(text if text.endswith("\n") else text + "\n")
        if session is None:
            task.close(timeout=0)  # a one-off turn: end of input after it
        return task

    @classmethod
    def _pump(cls, task: GuestTask, result: CellResult, on_event: Callable[[Event], None]) -> None:
        for event in task.events():
            cls._absorb(result, on_event, event)
            if event.kind is EventKind.DONE:
                if isinstance(event.data, BaseException):
                    raise event.data
                outcome: RunResult = event.data
                result.exit_code = outcome.exit_code
                if outcome.exit_code != 0:
                    raise GuestExitError(outcome.exit_code, stderr=outcome.stderr)

    @staticmethod
    def _absorb(result: CellResult, on_event: Callable[[Event], None], event: Event) -> None:
        if event.kind is EventKind.TOKEN:
            result.text += event.data
        elif event.kind is EventKind.STDOUT:
            result.stdout_bytes += event.data
        elif event.kind is EventKind.STDERR:
            result.stderr_bytes += event.data
        elif event.kind is EventKind.SESSION:
            result.sessions.append(event.data.id)
        elif event.kind is EventKind.NN_ERROR:
            result.errors.append(event.data)
        on_event(event)

    def shutdown(self) -> None:
        """End the chat guests; close the host if this lab made it."""
        for session_id in list(self._chats):
            self.close(session_id)
        with self._host_lock:
            host, self._host = (self._host, None) if self._owns_host else (None, self._host)
        if host is not None:
            host.close()
