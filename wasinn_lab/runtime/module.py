"""Core modules: WASI preview1 and ``wasi_ephemeral_nn`` linked in, ``_start`` to run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import wasmtime

from ..abi.memory import GuestMemory
from ..abi.preview1 import Preview1
from ..errors import GuestLoadError
from ..nn import GuestNN
from .instance import GuestInstance, GuestOptions, limit_at_instantiation

if TYPE_CHECKING:
    from . import CompiledGuest, GuestRuntime

__all__ = ["ModuleInstance"]


class ModuleInstance(GuestInstance):
    """A core module, whose exports can also be called one by one (``call``)."""

    def __init__(self, runtime: GuestRuntime, compiled: CompiledGuest, *, name: str, options: GuestOptions,
                 nn: GuestNN) -> None:
        self._compiled = compiled
        self._exports: Any = None
        super().__init__(runtime, name=name, options=options, nn=nn)

    def _instantiate(self, store: wasmtime.Store) -> None:
        module = wasmtime.Module.deserialize(self.engine, self._compiled.serialized)
        linker = wasmtime.Linker(self.engine)
        linker.define_wasi()
        Preview1(self.nn, stdout=self.stdout).define(linker)
        try:
            instance = linker.instantiate(store, module)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            raise (limit_at_instantiation(str(exc), self.limits)
                   or GuestLoadError(f"cannot instantiate {self.name}: {exc}")) from exc
        self._exports = instance.exports(store)

    def _enter(self) -> int:
        try:
            self._function("_start")(self.store)
        except wasmtime.ExitTrap as exit_trap:
            return exit_trap.code
        return 0

    def _function(self, export: str) -> wasmtime.Func:
        function = self._exports.get(export) if self._exports is not None else None
        if not isinstance(function, wasmtime.Func):
            raise GuestLoadError(f"{self.name} exports no function {export!r}")
        return function

    def call(self, export: str, *args: Any) -> Any:
        """Call one exported function, under the same limits as a run. A trap raises
        GuestTrap; WASI's ``proc_exit`` raises ``wasmtime.ExitTrap``."""
        function = self._function(export)
        return self._guarded(lambda: function(self.store, *args))

    def _memory(self) -> wasmtime.Memory:
        memory = self._exports.get("memory") if self._exports is not None else None
        if not isinstance(memory, wasmtime.Memory):
            raise GuestLoadError(f"{self.name} exports no memory")
        return memory

    def _memory_in_use(self) -> int:
        memory = self._exports.get("memory") if self._exports is not None else None
        return memory.data_len(self.store) if isinstance(memory, wasmtime.Memory) else 0

    def read(self, pointer: int, length: int) -> bytes:
        """Bytes of the guest's memory (InvalidArgument outside it), between calls."""
        return GuestMemory(self.store, self._memory()).read(pointer, length)

    def write(self, pointer: int, data: bytes) -> None:
        GuestMemory(self.store, self._memory()).write(pointer, data)

    def _release(self) -> None:
        self._exports = None
