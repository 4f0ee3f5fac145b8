"""One guest instance, whatever its kind: its engine and store with their limits, its
WASI world, its output, its wasi-nn state, and how it is stopped from outside.

A kind of guest (a core module, a component) subclasses ``GuestInstance`` with how it is
linked and how it runs; limits, the watchdog, output capture and the explanation of a
trap are the same for every kind.
"""

from __future__ import annotations

import abc
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Self, TypeVar

import wasmtime

from ..errors import GuestLimitError, GuestLoadError, GuestTrap
from ..limits import Limits, MiB
from ..nn import GuestNN
from .output import OutputPipe, OutputSink

if TYPE_CHECKING:
    from . import GuestRuntime

__all__ = ["GuestInstance", "GuestOptions", "RunResult", "engine_config", "limit_at_instantiation"]

T = TypeVar("T")


@dataclass
class RunResult:
    """How a guest run ended: its exit status, what it wrote to stdout and stderr, how long
    it ran, and what each of its failed wasi-nn calls said (the guest itself saw only a code)."""

    exit_code: int
    stdout: str
    stderr: str
    seconds: float
    errors: list[str] = field(default_factory=list)  # what the guest's failed wasi-nn calls said
    errors_dropped: int = 0  # failed calls past the first nn.MAX_ERRORS, counted but not kept


@dataclass
class GuestOptions:
    """A guest's world: its arguments, environment, stdin, directories and output, and
    what it may use."""

    args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    # Text or bytes to read, or a file to read from (a pipe, /dev/stdin); None: empty.
    stdin: bytes | str | os.PathLike[str] | None = None
    dirs: Sequence[tuple[str | os.PathLike[str], str]] = ()
    on_stdout: OutputSink | None = None
    on_stderr: OutputSink | None = None
    limits: Limits = field(default_factory=Limits)
    on_instance: Callable[[GuestInstance], None] | None = None  # e.g. to stop it from elsewhere


def engine_config(*, fuel: bool) -> wasmtime.Config:
    config = wasmtime.Config()
    config.epoch_interruption = True
    # A memory's base address then stays put for its life, which lets the host keep it
    # between calls (abi.memory.MemoryExtent); memories still grow, within the reservation.
    config.memory_may_move = False
    config.consume_fuel = fuel
    return config


class GuestInstance(abc.ABC):
    """``close()`` frees every execution context the guest left open; use it as a
    context manager."""

    def __init__(self, runtime: GuestRuntime, *, name: str, options: GuestOptions, nn: GuestNN) -> None:
        self.name = name
        self.limits = options.limits
        self.nn = nn
        self._runtime = runtime
        self._stopped: GuestLimitError | None = None
        self.deadline: float | None = None  # time.monotonic() past which the watchdog stops it
        cap = self.limits.output_bytes
        self.stdout, self.stderr = (
            OutputPipe(runtime.pump, sink, cap, partial(self._overflowed, stream))
            for stream, sink in (("stdout", options.on_stdout), ("stderr", options.on_stderr))
        )
        self._scratch = Path(tempfile.mkdtemp(prefix="wasinn-lab-"))
        self._store: wasmtime.Store | None = None
        try:
            # An engine of its own: its epoch counter then stops this guest and no other.
            self.engine = wasmtime.Engine(engine_config(fuel=self.limits.fuel is not None))
            self._store = store = wasmtime.Store(self.engine)
            store.set_wasi(self._wasi(options))
            limits = self.limits
            # wasmtime caps each memory, not their sum: one memory makes the cap a total.
            store.set_limits(memory_size=limits.memory_bytes, table_elements=limits.table_elements,
                             instances=limits.instances, tables=limits.tables, memories=self._memories())
            store.set_epoch_deadline(1)  # the watchdog's first tick on this engine stops it
            if limits.fuel is not None:
                store.set_fuel(limits.fuel)
            self._instantiate(store)
            if options.on_instance is not None:
                options.on_instance(self)
        except BaseException:
            self.close()
            raise

    @property
    def store(self) -> wasmtime.Store:
        """The guest's wasmtime store, to call its exports with; ``GuestLoadError`` once closed."""
        if self._store is None:
            raise GuestLoadError(f"{self.name} is closed")
        return self._store

    def _wasi(self, options: GuestOptions) -> wasmtime.WasiConfig:
        wasi = wasmtime.WasiConfig()
        wasi.argv = [self.name, *options.args]
        wasi.env = list(options.env.items())
        wasi.stdout_file = self.stdout.path
        wasi.stderr_file = self.stderr.path
        for host_dir, guest_dir in options.dirs:
            wasi.preopen_dir(str(host_dir), guest_dir)
        stdin = options.stdin
        if isinstance(stdin, (bytes, str)):
            stdin_file = self._scratch / "stdin"
            stdin_file.write_bytes(stdin.encode() if isinstance(stdin, str) else stdin)
            stdin = stdin_file
        if stdin is not None:
            wasi.stdin_file = str(stdin)
        return wasi

    @abc.abstractmethod
    def _instantiate(self, store: wasmtime.Store) -> None:
        """Link the guest's imports (WASI, wasi-nn) and instantiate it in ``store``."""

    @abc.abstractmethod
    def _enter(self) -> int:
        """Run the guest's entry point; returns its exit status."""

    def _memory_in_use(self) -> int:
        """Bytes of linear memory in use, for a trap's explanation (0 if unknown)."""
        return 0

    def run(self) -> int:
        """Run the guest to its end: its exit status. A trap raises GuestTrap
        (GuestLimitError at a limit), as does output past its limit."""
        exit_code = self._guarded(self._enter)
        self.check_output()
        return exit_code

    def _guarded(self, enter: Callable[[], T]) -> T:
        """Call into the guest under its time limit; a trap becomes GuestTrap (WASI's
        ``proc_exit`` stays ``wasmtime.ExitTrap``)."""
        self.restart_clock()
        self._runtime.watchdog.watch(self)
        try:
            return enter()
        except wasmtime.ExitTrap:
            raise
        except (wasmtime.Trap, wasmtime.WasmtimeError) as trap:
            raise self._explain(trap) from trap
        finally:
            self._runtime.watchdog.forget(self)

    def _explain(self, trap: Exception) -> GuestTrap:
        stderr = self.stderr.text()
        if self._stopped is not None:
            self._stopped.stderr = stderr
            return self._stopped
        if getattr(trap, "trap_code", None) is wasmtime.TrapCode.OUT_OF_FUEL:
            return GuestLimitError("fuel", self.limits.fuel, f"it used all its fuel ({self.limits.fuel:,})", stderr=stderr)
        message = str(trap).strip()
        # wasmtime-py reports no denied growth, so say what is known: how close it was.
        used, cap = self._memory_in_use(), self.limits.memory_bytes
        if used >= 0.75 * cap:
            message += (f"\n(it was using {used / MiB:.1f} MiB of its {cap // MiB} MiB memory limit: "
                        "a failed allocation may be the cause)")
        return GuestTrap(message, stderr=stderr)

    def restart_clock(self) -> None:
        """Start the time limit afresh (each run, and each turn of an interactive guest)."""
        timeout = self.limits.timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def stop(self, error: GuestLimitError) -> None:
        """Stop the guest from any thread: its generations end within a token, and its
        wasm traps at the next check even if it never calls the host."""
        if self._stopped is None:
            self._stopped = error
        for session in self.nn.sessions:
            session.stop()
        self.engine.increment_epoch()

    def overran(self) -> None:
        """Stop the guest for running past its time limit (the watchdog calls this)."""
        timeout = self.limits.timeout
        self.stop(GuestLimitError("time", timeout, f"it ran past its time limit of {timeout:g} s"))

    def _overflowed(self, stream: str) -> None:
        cap = self.limits.output_bytes
        self.stop(GuestLimitError("output", cap, f"it wrote more than its limit of {_size(cap)} to {stream}"))

    def check_output(self) -> None:
        """Raise the output limit's error if the guest went past it, even if it then ended
        well: its output was cut short."""
        self.stdout.drain()  # the guest has stopped: all it wrote is in the pipes
        self.stderr.drain()
        if (self.stdout.overflowed or self.stderr.overflowed) and self._stopped is not None:
            raise self._stopped

    def interrupt(self) -> None:
        """Stop the guest, from any thread: its generations end within a token, and the guest
        traps as soon as it runs wasm code again (epoch interruption)."""
        self.stop(GuestLimitError("interrupt", None, "it was interrupted"))

    def result(self, exit_code: int, started: float) -> RunResult:
        """The run's result: ``exit_code``, the output kept, the seconds since ``started``
        (``time.perf_counter()``) and the failed calls."""
        return RunResult(exit_code, self.stdout.text(), self.stderr.text(), time.perf_counter() - started,
                         list(self.nn.errors), self.nn.errors_dropped)

    def close(self) -> None:
        """Free the guest: its wasi-nn state (graphs, contexts, sessions it owns), its store
        and its output pipes."""
        if self._store is not None:
            self._release()  # what the guest still holds goes back through its wasi-nn state
        self.nn.close()
        if self._store is not None:
            self._store.close()
            self._store = None
        self.stdout.close()
        self.stderr.close()
        shutil.rmtree(self._scratch, ignore_errors=True)

    def _memories(self) -> int:
        """How many linear memories this kind of guest may have: a core module one."""
        return 1

    def _release(self) -> None:  # noqa: B027 - most kinds hold nothing to drop
        """Drop the kind's references into the store before it closes."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _size(n_bytes: int | None) -> str:
    if n_bytes is None:
        return "no limit"
    return f"{n_bytes / MiB:g} MiB" if n_bytes >= MiB else f"{n_bytes:,} bytes"


def limit_at_instantiation(message: str, limits: Limits, memories: int = 1) -> GuestLimitError | None:
    """Which store limit wasmtime's instantiation error is about, if any, said plainly
    (``memories``: how many linear memories the guest may have)."""
    if "memory count too high" in message:
        if memories == 1:
            return GuestLimitError("memories", 1, "it has more than one linear memory; guests may have one")
        return GuestLimitError("memories", memories, f"it has more than its limit of {memories} linear memories "
                                                     "(a component has one per core module in it)")
    if "memory minimum size" in message:
        return GuestLimitError("memory", limits.memory_bytes,
                               f"it needs more memory than its limit of {limits.memory_bytes // MiB} MiB")
    if "table count too high" in message:
        return GuestLimitError("tables", limits.tables, f"it needs more than its limit of {limits.tables} tables")
    if "table minimum size" in message:
        return GuestLimitError("table_elements", limits.table_elements,
                               f"a table needs more than its limit of {limits.table_elements:,} elements")
    return None

