"""Running guests in wasmtime: one engine, compiled modules cached by content, and a
fresh store per guest instance with WASI preview1 and ``wasi_ephemeral_nn`` linked in."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wasmtime

from .abi.preview1 import Preview1
from .errors import GuestLoadError, GuestTrap, InvalidArgument
from .registry import ModelRegistry
from .sessions import Session, SessionManager

__all__ = ["GuestRuntime", "GuestInstance", "RunResult", "GuestOptions"]

OutputSink = Callable[[bytes], None]


@dataclass
class RunResult:
    exit_code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


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


class _Capture:
    """Collects one output stream and forwards each write as it happens."""

    def __init__(self, forward: OutputSink | None) -> None:
        self._chunks: list[bytes] = []
        self._forward = forward

    def __call__(self, data: bytes) -> None:
        self._chunks.append(data)
        if self._forward is not None:
            self._forward(data)

    def text(self) -> str:
        return b"".join(self._chunks).decode("utf-8", "replace")


class _Forwarder:
    """What wasmtime holds as a WASI output callback; only wasmtime references it.

    wasmtime calls these callbacks, and finally releases them, on a tokio worker thread,
    some milliseconds after the store is closed. A release that lands during interpreter
    shutdown kills that thread mid-call and aborts the process, so ``close()`` waits for
    the release, which this object's death signals."""

    def __init__(self, sink: OutputSink, released: threading.Event) -> None:
        self._sink = sink
        weakref.finalize(self, released.set)

    def __call__(self, data: bytes) -> None:
        self._sink(data)


_RELEASE_TIMEOUT = 5.0


class GuestInstance:
    """One instantiated guest: its store, WASI context, wasi-nn handles and output.

    ``close()`` frees every execution context the guest left open; use it as a context
    manager."""

    def __init__(
        self,
        engine: wasmtime.Engine,
        module: wasmtime.Module,
        *,
        name: str,
        registry: ModelRegistry,
        sessions: SessionManager,
        options: GuestOptions,
    ) -> None:
        self.name = name
        self.stdout, self.stderr = _Capture(options.on_stdout), _Capture(options.on_stderr)
        self._scratch = Path(tempfile.mkdtemp(prefix="wasinn-lab-"))
        self.nn = Preview1(
            registry,
            sessions,
            guest=name,
            stdout=self.stdout,
            session_id=options.session_id,
            params=options.params,
            on_session=options.on_session,
        )
        try:
            wasi = wasmtime.WasiConfig()
            wasi.argv = [name, *options.args]
            wasi.env = list(options.env.items())
            self._released = [threading.Event(), threading.Event()]
            wasi.stdout_custom = _Forwarder(self.stdout, self._released[0])
            wasi.stderr_custom = _Forwarder(self.stderr, self._released[1])
            for host_dir, guest_dir in options.dirs:
                wasi.preopen_dir(str(host_dir), guest_dir)
            stdin = options.stdin
            if isinstance(stdin, (bytes, str)):
                stdin_file = self._scratch / "stdin"
                stdin_file.write_bytes(stdin.encode() if isinstance(stdin, str) else stdin)
                stdin = stdin_file
            if stdin is not None:
                wasi.stdin_file = str(stdin)
            self.store = wasmtime.Store(engine)
            self.store.set_wasi(wasi)
            linker = wasmtime.Linker(engine)
            linker.define_wasi()
            self.nn.define(linker)
            try:
                self._instance = linker.instantiate(self.store, module)
            except wasmtime.WasmtimeError as exc:
                raise GuestLoadError(f"cannot instantiate {name}: {exc}") from exc
            self._exports = self._instance.exports(self.store)
        except BaseException:
            self.close()
            raise

    def call(self, export: str, *args: Any) -> Any:
        """Call an exported function. A trap raises GuestTrap; WASI's ``proc_exit`` raises
        ``wasmtime.ExitTrap`` (``run`` turns it into an exit code)."""
        function = self._exports.get(export)
        if not isinstance(function, wasmtime.Func):
            raise GuestLoadError(f"{self.name} exports no function {export!r}")
        try:
            return function(self.store, *args)
        except wasmtime.ExitTrap:
            raise
        except (wasmtime.Trap, wasmtime.WasmtimeError) as trap:
            raise GuestTrap(str(trap).strip(), stderr=self.stderr.text()) from trap

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
            for released in self._released:
                released.wait(_RELEASE_TIMEOUT)
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> GuestInstance:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class GuestRuntime:
    def __init__(self) -> None:
        self.engine = wasmtime.Engine()
        self._modules: dict[str, wasmtime.Module] = {}
        self._lock = threading.Lock()

    def compile(self, wasm: bytes) -> wasmtime.Module:
        """A compiled module; the same bytes compile once per process."""
        digest = hashlib.sha256(wasm).hexdigest()
        with self._lock:
            module = self._modules.get(digest)
        if module is None:
            try:
                module = wasmtime.Module(self.engine, wasm)
            except wasmtime.WasmtimeError as exc:
                raise GuestLoadError(f"not a valid WebAssembly module: {exc}") from exc
            with self._lock:
                self._modules[digest] = module
        return module

    def instantiate(
        self,
        module: wasmtime.Module,
        *,
        name: str,
        registry: ModelRegistry,
        sessions: SessionManager,
        options: GuestOptions,
    ) -> GuestInstance:
        return GuestInstance(self.engine, module, name=name, registry=registry, sessions=sessions, options=options)

    def run(
        self,
        module: wasmtime.Module,
        *,
        name: str,
        registry: ModelRegistry,
        sessions: SessionManager,
        options: GuestOptions,
    ) -> RunResult:
        """Run the module's ``_start`` to completion. Traps raise GuestTrap; an exit status,
        zero or not, is returned. A KeyboardInterrupt raised in a host call propagates once
        the guest has unwound, after the instance's contexts are freed."""
        started = time.perf_counter()
        with self.instantiate(module, name=name, registry=registry, sessions=sessions, options=options) as instance:
            exit_code = 0
            try:
                instance.call("_start")
            except wasmtime.ExitTrap as exit_trap:
                exit_code = exit_trap.code
            return RunResult(exit_code, instance.stdout.text(), instance.stderr.text(), time.perf_counter() - started)
