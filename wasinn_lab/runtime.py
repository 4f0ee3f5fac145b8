"""Running guests in wasmtime: one engine, compiled modules cached by content, and a
fresh store per guest instance with WASI preview1 and ``wasi_ephemeral_nn`` linked in."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import logging
import os
import select
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import wasmtime

from .abi.preview1 import Preview1
from .errors import GuestLimitError, GuestLoadError, GuestTrap, InvalidArgument
from .limits import MiB, Limits
from .registry import ModelRegistry
from .sessions import Session, SessionManager

__all__ = ["GuestRuntime", "GuestInstance", "RunResult", "GuestOptions"]

OutputSink = Callable[[bytes], None]
log = logging.getLogger(__name__)


@dataclass
class RunResult:
    exit_code: int
    stdout: str
    stderr: str
    seconds: float


@dataclass
class GuestOptions:
    """How to run a guest: its WASI world and how the host treats its wasi-nn sessions."""

    args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    # Text or bytes to read, or a file to read from (a pipe, /dev/stdin); None: empty.
    stdin: bytes | str | os.PathLike[str] | None = None
    dirs: Sequence[tuple[str | os.PathLike[str], str]] = ()
    on_stdout: OutputSink | None = None
    on_stderr: OutputSink | None = None
    # The guest's first execution context is this named session, which outlives it.
    session_id: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)  # overrides for every context it opens
    on_session: Callable[[Session], None] | None = None
    limits: Limits = field(default_factory=Limits)
    on_instance: Callable[[GuestInstance], None] | None = None  # e.g. to stop it from elsewhere


class _OutputPipe:
    """One output stream of a guest: an OS pipe that wasmtime writes into directly.

    WASI's output callbacks would cost every write a hop to wasmtime's I/O thread and
    back into Python (about 170 us a token when a guest prints each one); a write to a
    pipe costs the guest a system call. The process's output pump hands each chunk on as
    it arrives. The host writes into the same pipe (``stream-stdout``), in order with the
    guest, since both write from the guest's thread.

    Past ``cap`` bytes nothing more is kept or handed on, the pipe is still drained (so
    the guest never blocks on it), and ``on_overflow`` is called once."""

    def __init__(self, forward: OutputSink | None, cap: int | None, on_overflow: Callable[[], None]) -> None:
        self._chunks: list[bytes] = []
        self._forward = forward
        self._room = cap if cap is not None else -1  # bytes still kept; -1: no cap
        self._on_overflow = on_overflow
        self.overflowed = False
        self.read_fd, self._write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self._lock = threading.Lock()
        self._closed = False
        _pump.add(self)

    @property
    def path(self) -> str:
        """Where wasmtime opens the pipe: its own descriptor, for as long as it likes."""
        return f"/proc/self/fd/{self._write_fd}"

    def __call__(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._write_fd, view):]

    def drain(self) -> None:
        """Hand on everything written so far (all of it, once the guest has stopped)."""
        with self._lock:
            while not self._closed:
                try:
                    data = os.read(self.read_fd, 1 << 16)
                except BlockingIOError:
                    return
                if self._room >= 0:
                    if len(data) > self._room:
                        data = data[: self._room]
                        if not self.overflowed:
                            self.overflowed = True
                            self._on_overflow()
                    self._room -= len(data)
                if data:
                    self._chunks.append(data)
                    if self._forward is not None:
                        self._hand_on(data)

    def _hand_on(self, data: bytes) -> None:
        # The caller's callback must not take the output thread, every guest's, down with it.
        try:
            self._forward(data)  # type: ignore[misc]
        except Exception:
            log.exception("an output callback failed; this guest's output is still kept, not handed on")
            self._forward = None

    def text(self) -> str:
        self.drain()
        return b"".join(self._chunks).decode("utf-8", "replace")

    def close(self) -> None:
        """Once the guest can write no more: take the rest, then let the pipe go."""
        _pump.remove(self)
        self.drain()
        with self._lock:  # the pump may hold this pipe still: it reads nothing once closed
            self._closed = True
            os.close(self.read_fd)
            os.close(self._write_fd)


class _OutputPump:
    """One thread for the process: reads every live guest's output as it arrives."""

    def __init__(self) -> None:
        self._pipes: dict[int, _OutputPipe] = {}
        self._poller = select.poll()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK)  # a new pipe: poll again, with it
        self._poller.register(self._wake_fd, select.POLLIN)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, pipe: _OutputPipe) -> None:
        with self._lock:
            self._pipes[pipe.read_fd] = pipe
            self._poller.register(pipe.read_fd, select.POLLIN)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="wasinn-lab-output", daemon=True)
                self._thread.start()
        os.eventfd_write(self._wake_fd, 1)

    def remove(self, pipe: _OutputPipe) -> None:
        with self._lock:
            if self._pipes.pop(pipe.read_fd, None) is not None:
                self._poller.unregister(pipe.read_fd)

    def _loop(self) -> None:
        while True:
            for fd, _ in self._poller.poll():
                if fd == self._wake_fd:
                    with contextlib.suppress(BlockingIOError):
                        os.eventfd_read(self._wake_fd)
                    continue
                with self._lock:
                    pipe = self._pipes.get(fd)
                if pipe is not None:
                    pipe.drain()


_pump = _OutputPump()


_WASMTIME_VERSION = importlib.metadata.version("wasmtime")


class GuestInstance:
    """One instantiated guest: its store, WASI context, wasi-nn handles and output.

    ``close()`` frees every execution context the guest left open; use it as a context
    manager."""

    def __init__(
        self,
        compiled: CompiledGuest,
        *,
        name: str,
        registry: ModelRegistry,
        sessions: SessionManager,
        options: GuestOptions,
    ) -> None:
        self.name = name
        self.limits = options.limits
        self._stopped: GuestLimitError | None = None
        self.deadline: float | None = None  # time.monotonic() past which the watchdog stops it
        cap = self.limits.output_bytes
        self.stdout, self.stderr = (
            _OutputPipe(sink, cap, partial(self._overflowed, stream)) for stream, sink in
            (("stdout", options.on_stdout), ("stderr", options.on_stderr))
        )
        self._scratch = Path(tempfile.mkdtemp(prefix="wasinn-lab-"))
        self.nn = Preview1(
            registry,
            sessions,
            guest=name,
            stdout=self.stdout,
            session_id=options.session_id,
            params=options.params,
            on_session=options.on_session,
            staging_dir=self._scratch,
            max_load_bytes=options.limits.load_bytes,
        )
        try:
            wasi = wasmtime.WasiConfig()
            wasi.argv = [name, *options.args]
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
            # An engine of its own: its epoch counter then stops this guest and no other.
            self.engine = wasmtime.Engine(_engine_config(fuel=self.limits.fuel is not None))
            module = wasmtime.Module.deserialize(self.engine, compiled.serialized)
            self.store = wasmtime.Store(self.engine)
            self.store.set_wasi(wasi)
            limits = self.limits
            # wasmtime caps each memory, not their sum: one memory makes the cap a total.
            self.store.set_limits(memory_size=limits.memory_bytes, table_elements=limits.table_elements,
                                  instances=limits.instances, tables=limits.tables, memories=1)
            self.store.set_epoch_deadline(1)  # the watchdog's first tick on this engine stops it
            if limits.fuel is not None:
                self.store.set_fuel(limits.fuel)
            linker = wasmtime.Linker(self.engine)
            linker.define_wasi()
            self.nn.define(linker)
            try:
                self._instance = linker.instantiate(self.store, module)
            except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
                raise (_limit_at_instantiation(str(exc), limits)
                       or GuestLoadError(f"cannot instantiate {name}: {exc}")) from exc
            self._exports = self._instance.exports(self.store)
            if options.on_instance is not None:
                options.on_instance(self)
        except BaseException:
            self.close()
            raise

    def call(self, export: str, *args: Any) -> Any:
        """Call an exported function. A trap raises GuestTrap; WASI's ``proc_exit`` raises
        ``wasmtime.ExitTrap`` (``run`` turns it into an exit code)."""
        function = self._exports.get(export)
        if not isinstance(function, wasmtime.Func):
            raise GuestLoadError(f"{self.name} exports no function {export!r}")
        self.restart_clock()
        _watchdog.watch(self)
        try:
            return function(self.store, *args)
        except wasmtime.ExitTrap:
            raise
        except (wasmtime.Trap, wasmtime.WasmtimeError) as trap:
            raise self._explain(trap) from trap
        finally:
            _watchdog.forget(self)

    def _explain(self, trap: Exception) -> GuestTrap:
        stderr = self.stderr.text()
        code = getattr(trap, "trap_code", None)
        if self._stopped is not None:
            self._stopped.stderr = stderr
            return self._stopped
        if code is wasmtime.TrapCode.OUT_OF_FUEL:
            return GuestLimitError("fuel", self.limits.fuel, f"it used all its fuel ({self.limits.fuel:,})", stderr=stderr)
        message = str(trap).strip()
        memory = self._exports.get("memory") if self._exports else None
        # wasmtime-py reports no denied growth, so say what is known: how close it was.
        used, cap = (memory.data_len(self.store) if isinstance(memory, wasmtime.Memory) else 0), self.limits.memory_bytes
        if used >= 0.75 * cap:
            message += (f"\n(it was using {used / MiB:.1f} MiB of its {cap // MiB} MiB memory limit: "
                        "a failed allocation may be the cause)")
        return GuestTrap(message, stderr=stderr)

    def restart_clock(self) -> None:
        """Start the time limit afresh (each call, and each turn of an interactive guest)."""
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

    def _overflowed(self, stream: str) -> None:
        cap = self.limits.output_bytes
        assert cap is not None
        self.stop(GuestLimitError("output", cap, f"it wrote more than its limit of {_size(cap)} to {stream}"))

    def check_output(self) -> None:
        """Raise the output limit's error if the guest went past it, even if it then ended
        well: its output was cut short."""
        self.stdout.drain()  # the guest has stopped: all it wrote is in the pipes
        self.stderr.drain()
        if self.stdout.overflowed or self.stderr.overflowed:
            assert self._stopped is not None  # set by the overflow, or by a limit before it
            raise self._stopped

    def interrupt(self) -> None:
        self.stop(GuestLimitError("interrupt", None, "it was interrupted"))

    def _memory(self) -> wasmtime.Memory:
        memory = self._exports.get("memory")
        if not isinstance(memory, wasmtime.Memory):
            raise GuestLoadError(f"{self.name} exports no memory")
        return memory

    def read(self, pointer: int, length: int) -> bytes:
        memory = self._memory()
        if pointer < 0 or pointer + length > memory.data_len(self.store):
            raise InvalidArgument(f"[{pointer}, {pointer + length}) is outside {self.name}'s memory")
        return bytes(memory.read(self.store, pointer, pointer + length))

    def write(self, pointer: int, data: bytes) -> None:
        memory = self._memory()
        if pointer < 0 or pointer + len(data) > memory.data_len(self.store):
            raise InvalidArgument(f"[{pointer}, {pointer + len(data)}) is outside {self.name}'s memory")
        memory.write(self.store, data, pointer)

    def close(self) -> None:
        self.nn.close()
        store = getattr(self, "store", None)
        if store is not None:
            self._exports = self._instance = None
            store.close()
        self.stdout.close()
        self.stderr.close()
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> GuestInstance:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _limit_at_instantiation(message: str, limits: Limits) -> GuestLimitError | None:
    """Which store limit wasmtime's instantiation error is about, if any, said plainly."""
    if "memory count too high" in message:
        return GuestLimitError("memories", 1, "it has more than one linear memory; guests may have one")
    if "memory minimum size" in message:
        return GuestLimitError("memory", limits.memory_bytes,
                               f"it needs more memory than its limit of {limits.memory_bytes // MiB} MiB")
    if "table count too high" in message:
        return GuestLimitError("tables", limits.tables, f"it needs more than its limit of {limits.tables} tables")
    if "table minimum size" in message:
        return GuestLimitError("table_elements", limits.table_elements,
                               f"a table needs more than its limit of {limits.table_elements:,} elements")
    return None


def _size(n_bytes: int) -> str:
    return f"{n_bytes / MiB:g} MiB" if n_bytes >= MiB else f"{n_bytes:,} bytes"


def _engine_config(*, fuel: bool) -> wasmtime.Config:
    config = wasmtime.Config()
    config.epoch_interruption = True
    config.consume_fuel = fuel
    return config


@dataclass(frozen=True)
class CompiledGuest:
    """A guest compiled once, loaded into each run's own engine in under a millisecond."""

    serialized: bytes
    exports: tuple[str, ...]


class GuestRuntime:
    """Compiles guests once: in memory for this process, and on disk (``compiled_dir``)
    for the next, since compiling takes 100 ms or more and loading a compiled module
    under a millisecond. The disk cache holds only what this runtime compiled itself
    (wasmtime trusts what it deserializes); ``compiled_dir=None`` turns it off."""

    def __init__(self, compiled_dir: Path | None = None) -> None:
        self.compiled_dir = compiled_dir
        self._engines = {fuel: wasmtime.Engine(_engine_config(fuel=fuel)) for fuel in (False, True)}
        self._compiled: dict[tuple[str, bool], CompiledGuest] = {}
        self._lock = threading.Lock()

    def compile(self, wasm: bytes, *, fuel: bool = False) -> CompiledGuest:
        """Metering fuel changes the machine code, so each flavour compiles separately."""
        key = (hashlib.sha256(wasm).hexdigest(), fuel)
        with self._lock:
            compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._from_disk(key) or self._compile(wasm, key)
            with self._lock:
                self._compiled[key] = compiled
        return compiled

    def _cached_path(self, key: tuple[str, bool]) -> Path | None:
        if self.compiled_dir is None:
            return None
        digest, fuel = key
        flavour = "-fuel" if fuel else ""
        return self.compiled_dir / f"{digest}{flavour}-wasmtime-{_WASMTIME_VERSION}.cwasm"

    def _from_disk(self, key: tuple[str, bool]) -> CompiledGuest | None:
        path = self._cached_path(key)
        if path is None or not path.is_file():
            return None
        try:
            module = wasmtime.Module.deserialize_file(self._engines[key[1]], str(path))
        except wasmtime.WasmtimeError:
            path.unlink(missing_ok=True)  # stale or damaged: compile afresh
            return None
        return CompiledGuest(path.read_bytes(), tuple(e.name for e in module.exports))

    def _compile(self, wasm: bytes, key: tuple[str, bool]) -> CompiledGuest:
        try:
            module = wasmtime.Module(self._engines[key[1]], wasm)
        except wasmtime.WasmtimeError as exc:
            raise GuestLoadError(f"not a valid WebAssembly module: {exc}") from exc
        compiled = CompiledGuest(bytes(module.serialize()), tuple(e.name for e in module.exports))
        path = self._cached_path(key)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
            partial.write_bytes(compiled.serialized)
            partial.replace(path)
        return compiled

    def instantiate(
        self, compiled: CompiledGuest, *, name: str, registry: ModelRegistry, sessions: SessionManager,
        options: GuestOptions,
    ) -> GuestInstance:
        return GuestInstance(compiled, name=name, registry=registry, sessions=sessions, options=options)

    def run(
        self, compiled: CompiledGuest, *, name: str, registry: ModelRegistry, sessions: SessionManager,
        options: GuestOptions,
    ) -> RunResult:
        """Run the guest's ``_start`` to completion. Traps raise GuestTrap (GuestLimitError
        at a limit); an exit status, zero or not, is returned. A KeyboardInterrupt raised in
        a host call propagates once the guest has unwound, after its contexts are freed."""
        started = time.perf_counter()
        with self.instantiate(compiled, name=name, registry=registry, sessions=sessions, options=options) as instance:
            exit_code = 0
            try:
                instance.call("_start")
            except wasmtime.ExitTrap as exit_trap:
                exit_code = exit_trap.code
            instance.check_output()
            return RunResult(exit_code, instance.stdout.text(), instance.stderr.text(), time.perf_counter() - started)


class _Watchdog:
    """One thread for the process: stops guests that run past their deadline."""

    TICK = 0.05

    def __init__(self) -> None:
        self._running: set[GuestInstance] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, instance: GuestInstance) -> None:
        with self._lock:
            self._running.add(instance)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="wasinn-lab-watchdog", daemon=True)
                self._thread.start()

    def forget(self, instance: GuestInstance) -> None:
        with self._lock:
            self._running.discard(instance)

    def _loop(self) -> None:
        while True:
            time.sleep(self.TICK)
            now = time.monotonic()
            with self._lock:
                late = [i for i in self._running if i.deadline is not None and now > i.deadline]
            for instance in late:
                timeout = instance.limits.timeout
                instance.stop(GuestLimitError("time", timeout, f"it ran past its time limit of {timeout:g} s"))


_watchdog = _Watchdog()
