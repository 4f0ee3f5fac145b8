"""Bounds-checked access to a guest's linear memory during one host call.

Every pointer and length a guest passes is untrusted: anything outside memory is an
InvalidArgument (an errno for the guest), never a host exception or a crash.

This sits on every per-token call, so it works on the raw memory: the export is looked
up once per guest instance, and calls read and write with ``ctypes`` at its base address.
Where the memory lies is kept between calls (``MemoryExtent``): asking wasmtime again on
every call cost most of a per-token call right after a decode, when its code is cold.
"""

from __future__ import annotations

import ctypes
import struct

import wasmtime

from ..errors import InvalidArgument, MissingMemory

__all__ = ["GuestMemory", "MemoryExtent", "memory_of"]

_U32 = struct.Struct("<I")
_MASK = 0xFFFFFFFF


def memory_of(caller: wasmtime.Caller) -> wasmtime.Memory:
    memory = caller.get("memory")
    if not isinstance(memory, wasmtime.Memory):
        raise MissingMemory("the guest exports no memory named 'memory'")
    return memory


class MemoryExtent:
    """Where one guest memory lies, kept from one host call to the next. The host's engines
    never move a memory (``memory_may_move`` off: see ``runtime.instance.engine_config``)
    and a wasm memory never shrinks, so a base and size once read stay true; only an access
    past the size read asks again (the memory may have grown)."""

    __slots__ = ("base", "size")

    def __init__(self) -> None:
        self.base = 0
        self.size = 0


class GuestMemory:
    """A guest's memory as it is now: during a host call (through its ``Caller``), or
    between calls (through its ``Store``)."""

    def __init__(self, caller: wasmtime.Caller | wasmtime.Store, memory: wasmtime.Memory,
                 extent: MemoryExtent | None = None) -> None:
        self._caller = caller
        self._memory = memory
        self._extent = extent or MemoryExtent()

    def _span(self, pointer: int, length: int) -> int:
        # wasmtime hands i32 arguments over as signed integers.
        pointer &= _MASK
        length &= _MASK
        extent = self._extent
        if pointer + length > extent.size:
            extent.size = self._memory.data_len(self._caller)
            extent.base = ctypes.addressof(self._memory.data_ptr(self._caller).contents) if extent.size else 0
            if pointer + length > extent.size:
                raise InvalidArgument(
                    f"guest range [{pointer:#x}, {pointer + length:#x}) is outside its {extent.size}-byte memory"
                )
        return pointer

    def read(self, pointer: int, length: int) -> bytes:
        pointer = self._span(pointer, length)
        return ctypes.string_at(self._extent.base + pointer, length & _MASK) if length else b""

    def write(self, pointer: int, data: bytes) -> None:
        pointer = self._span(pointer, len(data))
        if data:
            ctypes.memmove(self._extent.base + pointer, data, len(data))

    def read_u32(self, pointer: int) -> int:
        return _U32.unpack(self.read(pointer, 4))[0]

    def read_u32s(self, pointer: int, count: int) -> tuple[int, ...]:
        count &= _MASK
        if count > _MASK // 4:
            raise InvalidArgument(f"{count} u32 values cannot fit in guest memory")
        return struct.unpack(f"<{count}I", self.read(pointer, 4 * count))

    def write_u32(self, pointer: int, value: int) -> None:
        self.write(pointer, _U32.pack(value & _MASK))

    def check_writable(self, pointer: int, length: int) -> None:
        self._span(pointer, length)
