"""Running guests in wasmtime. The runtime compiles each guest once (in memory, and on
disk for the next process), gives every run a fresh engine and store with its limits,
and owns the two threads every guest relies on: the output pump and the watchdog.
A guest is run by its kind (``kind_of``) behind one interface, ``GuestInstance``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import wasmtime
from wasmtime import component as cm

from ..errors import GuestLoadError
from ..nn import GuestNN
from .component import ComponentInstance
from .instance import GuestInstance, GuestOptions, RunResult, engine_config
from .module import ModuleInstance
from .output import OutputPump
from .watchdog import Watchdog

__all__ = ["GuestRuntime", "GuestInstance", "ModuleInstance", "ComponentInstance", "CompiledGuest", "GuestOptions",
           "RunResult", "kind_of"]

_WASMTIME_VERSION = importlib.metadata.version("wasmtime")
_MAGIC = b"\0asm"


def kind_of(wasm: bytes) -> str:
    """"module" or "component", from the binary's header (its layer field)."""
    if wasm[:4] != _MAGIC or len(wasm) < 8:
        raise GuestLoadError("not a WebAssembly binary (no \\0asm header)")
    return "component" if int.from_bytes(wasm[6:8], "little") == 1 else "module"


@dataclass(frozen=True)
class CompiledGuest:
    """A guest compiled once, loaded into each run's own engine in milliseconds: from
    ``path`` (the disk cache, mapped) where there is one, else from ``serialized``."""

    kind: str  # "module" or "component"
    serialized: bytes
    exports: tuple[str, ...]  # a module's export names; a component's exported interfaces
    path: Path | None = None


class GuestRuntime:
    """The disk cache (``compiled_dir``) holds only what this runtime compiled itself
    (wasmtime trusts what it deserializes); ``compiled_dir=None`` turns it off. Use it
    as a context manager, or ``close()`` it: that stops its threads."""

    def __init__(self, compiled_dir: Path | None = None) -> None:
        self.compiled_dir = compiled_dir
        self.pump = OutputPump()
        self.watchdog = Watchdog()
        self._engines = {fuel: wasmtime.Engine(engine_config(fuel=fuel)) for fuel in (False, True)}
        self._compiled: dict[tuple[str, bool], CompiledGuest] = {}
        self._lock = threading.Lock()

    # -- compiling ------------------------------------------------------------------------

    def compile(self, wasm: bytes, *, fuel: bool = False) -> CompiledGuest:
        """Metering fuel changes the machine code, so each flavour compiles separately."""
        key = (hashlib.sha256(wasm).hexdigest(), fuel)
        with self._lock:
            compiled = self._compiled.get(key)
        if compiled is None:
            kind = kind_of(wasm)
            compiled = self._from_disk(key, kind) or self._compile(wasm, key, kind)
            with self._lock:
                self._compiled[key] = compiled
        return compiled

    def _cached_path(self, key: tuple[str, bool]) -> Path | None:
        if self.compiled_dir is None:
            return None
        digest, fuel = key
        flavour = "-fuel" if fuel else ""
        return self.compiled_dir / f"{digest}{flavour}-wasmtime-{_WASMTIME_VERSION}.cwasm"

    def _from_disk(self, key: tuple[str, bool], kind: str) -> CompiledGuest | None:
        path = self._cached_path(key)
        if path is None or not path.is_file():
            return None
        engine = self._engines[key[1]]
        try:
            if kind == "component":
                component = cm.Component.deserialize_file(engine, str(path))
                return CompiledGuest(kind, b"", tuple(component.type.exports(engine)), path)
            module = wasmtime.Module.deserialize_file(engine, str(path))
        except wasmtime.WasmtimeError:
            path.unlink(missing_ok=True)  # stale or damaged: compile afresh
            return None
        return CompiledGuest(kind, path.read_bytes(), tuple(e.name for e in module.exports))

    def _compile(self, wasm: bytes, key: tuple[str, bool], kind: str) -> CompiledGuest:
        engine = self._engines[key[1]]
        try:
            if kind == "component":
                component = cm.Component(engine, wasm)
                serialized, exports = bytes(component.serialize()), tuple(component.type.exports(engine))
            else:
                module = wasmtime.Module(engine, wasm)
                serialized, exports = bytes(module.serialize()), tuple(e.name for e in module.exports)
        except wasmtime.WasmtimeError as exc:
            raise GuestLoadError(f"not a valid WebAssembly {kind}: {exc}") from exc
        path = self._cached_path(key)
        if path is None:
            return CompiledGuest(kind, serialized, exports)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_bytes(serialized)
        partial.replace(path)
        # A component's compiled code is large (35 MB for a Python guest): runs map the file.
        return CompiledGuest(kind, b"" if kind == "component" else serialized, exports,
                             path if kind == "component" else None)

    # -- running --------------------------------------------------------------------------

    def instantiate(self, compiled: CompiledGuest, *, name: str, options: GuestOptions, nn: GuestNN) -> GuestInstance:
        """The guest, instantiated by its kind (it owns ``nn`` from here on, even if this fails)."""
        kind = ComponentInstance if compiled.kind == "component" else ModuleInstance
        try:
            return kind(self, compiled, name=name, options=options, nn=nn)
        except BaseException:
            nn.close()
            raise

    def run(self, compiled: CompiledGuest, *, name: str, options: GuestOptions, nn: GuestNN) -> RunResult:
        """Run the guest to completion. Traps raise GuestTrap (GuestLimitError at a
        limit); an exit status, zero or not, is returned. A KeyboardInterrupt raised in a
        host call propagates once the guest has unwound, after its contexts are freed."""
        started = time.perf_counter()
        with self.instantiate(compiled, name=name, options=options, nn=nn) as instance:
            return instance.result(instance.run(), started)

    def close(self) -> None:
        """Stop the runtime's threads (a later run starts them again)."""
        self.pump.close()
        self.watchdog.close()

    def __enter__(self) -> GuestRuntime:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
