"""Bounds-checked access to a guest's linear memory during one host call.

Every pointer and length a guest passes is untrusted: anything outside memory is an
InvalidArgument (an errno for the guest), never a host exception or a crash.
"""

from __future__ import annotations

import struct

import wasmtime

from ..errors import InvalidArgument, MissingMemory

__all__ = ["GuestMemory"]

_U32 = struct.Struct("<I")
_MASK = 0xFFFFFFFF


class GuestMemory:
    def __init__(self, caller: wasmtime.Caller) -> None:
        memory = caller.get("memory")
        if not isinstance(memory, wasmtime.Memory):
            raise MissingMemory("the guest exports no memory named 'memory'")
        self._caller = caller
        self._memory = memory
        self._size = memory.data_len(caller)

    def _span(self, pointer: int, length: int) -> tuple[int, int]:
        # wasmtime hands i32 arguments over as signed integers.
        pointer &= _MASK
        length &= _MASK
        if pointer + length > self._size:
            raise InvalidArgument(
                f"guest range [{pointer:#x}, {pointer + length:#x}) is outside its {self._size}-byte memory"
            )
        return pointer, length

    def read(self, pointer: int, length: int) -> bytes:
        pointer, length = self._span(pointer, length)
        return bytes(self._memory.read(self._caller, pointer, pointer + length)) if length else b""

    def write(self, pointer: int, data: bytes) -> None:
        pointer, _ = self._span(pointer, len(data))
        if data:
            self._memory.write(self._caller, data, pointer)

    def read_u32(self, pointer: int) -> int:
        return _U32.unpack(self.read(pointer, 4))[0]

    def read_u32s(self, pointer: int, count: int) -> tuple[int, ...]:
        if count & _MASK > self._size // 4:
            raise InvalidArgument(f"{count & _MASK} u32 values cannot fit in guest memory")
        return struct.unpack(f"<{count & _MASK}I", self.read(pointer, 4 * (count & _MASK)))

    def write_u32(self, pointer: int, value: int) -> None:
        self.write(pointer, _U32.pack(value & _MASK))

    def check_writable(self, pointer: int, length: int) -> None:
        self._span(pointer, length)
