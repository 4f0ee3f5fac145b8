"""The preview1 ``wasi_ephemeral_nn`` ABI, as WasmEdge and WAMR implement it, including
WasmEdge's GGML extensions (by-name loading, single-token streaming, unload, finalize).

Marshalling only: it reads and writes guest memory, turns ABI numbers into the neutral
types and tensor indexes into names, and calls the guest's wasi-nn state (``GuestNN``)
and its sessions. WasmEdge's wire formats live here alone: the config JSON at index 1,
``stream-stdout``, the three-call streaming protocol and errno 100 at its end (the usage
and embedding JSON are made in ``conventions``, which the wasinn:llm adapter's share).
Every call goes through the guest's boundary (``GuestNN.boundary``); its errors become
errnos through one table, ``ERRNO``.

Index semantics follow the backend. One that names its inputs (the GGML backend takes
``prompt``) gets WasmEdge's: input 1 is config, any other index is its first input;
output 1 is usage JSON, any other index its text (or its embedding). One that takes any
names (echo) gets index ``i`` as the tensor named ``"i"``.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any

import wasmtime

from ..backends.base import EMBEDDING, TEXT
from ..errors import (
    BackendError,
    Busy,
    ContextFull,
    EndOfSequence,
    InvalidArgument,
    InvalidEncoding,
    MissingMemory,
    ModelNotFound,
    NNError,
    NotFound,
    PromptTooLong,
    TooLarge,
    UnsupportedOperation,
)
from ..nn import GuestNN, code_for
from ..sessions import Session
from ..types import ExecutionTarget, GraphEncoding, Tensor, TensorType
from .conventions import embedding_json, parse_config, usage_json
from .memory import GuestMemory, MemoryExtent, memory_of

__all__ = ["Preview1", "errno_for", "ERRNO", "MODULE"]

MODULE = "wasi_ephemeral_nn"
log = logging.getLogger(__name__)

ERRNO: dict[type[NNError], int] = {
    InvalidArgument: 1,
    InvalidEncoding: 2,
    MissingMemory: 3,
    Busy: 4,
    BackendError: 5,
    UnsupportedOperation: 6,
    TooLarge: 7,
    NotFound: 8,
    EndOfSequence: 100,
    ContextFull: 101,
    PromptTooLong: 102,
    ModelNotFound: 103,
}
_RUNTIME_ERROR = ERRNO[BackendError]

# WasmEdge's numbering; the WIT and WAMR swap 5 and 6, so 5 (autodetect) finds GGML in
# GGUF bytes: guests built for either runtime load.
_ENCODINGS = {
    0: GraphEncoding.OPENVINO,
    1: GraphEncoding.ONNX,
    2: GraphEncoding.TENSORFLOW,
    3: GraphEncoding.PYTORCH,
    4: GraphEncoding.TENSORFLOWLITE,
    5: GraphEncoding.AUTODETECT,
    6: GraphEncoding.GGML,
}
_TARGETS = {0: ExecutionTarget.CPU, 1: ExecutionTarget.GPU, 2: ExecutionTarget.TPU, 3: ExecutionTarget.AUTO}
_TENSOR_TYPES = {
    0: TensorType.F16,
    1: TensorType.F32,
    2: TensorType.F64,
    3: TensorType.U8,
    4: TensorType.I32,
    5: TensorType.I64,
}
_TENSOR = struct.Struct("<IIB3xII")  # dims ptr, dims len, type, data ptr, data len
_BUILDER = struct.Struct("<II")  # ptr, len
_CONFIG_INDEX = 1  # WasmEdge: input 1 is config JSON, output 1 is usage JSON
_STREAM_STDOUT = ("stream-stdout", "stream_stdout")  # WasmEdge: print each token of a compute
MAX_RANK = 32
MAX_BUILDERS = 64
_MASK = 0xFFFFFFFF
_OK = 0


def errno_for(exc: NNError) -> int:
    return code_for(ERRNO, exc, _RUNTIME_ERROR)


def _split_config(raw: bytes) -> tuple[dict[str, Any], bool | None]:
    """A guest's config JSON: what goes to the backend, and ``stream-stdout`` (ours)."""
    config = parse_config(raw)
    stream_stdout = None
    for key in _STREAM_STDOUT:
        if key in config:
            value = config.pop(key)
            if not isinstance(value, bool):
                raise InvalidArgument(f"'stream-stdout' takes true or false, got {value!r}")
            stream_stdout = value
    return config, stream_stdout


class Preview1:
    """The twelve ``wasi_ephemeral_nn`` imports for one guest instance."""

    def __init__(self, nn: GuestNN, *, stdout: Callable[[bytes], None] | None = None) -> None:
        self._nn = nn
        self._stdout = stdout  # where stream-stdout prints, in order with the guest's own output
        self._stream_stdout: dict[tuple[str, int], bool] = {}  # ("graph" | "context", handle) -> on
        self._last_piece: dict[int, bytes] = {}  # context -> its latest streamed token
        self._memory: wasmtime.Memory | None = None  # the guest's export, looked up once
        self._extent = MemoryExtent()  # and where it lies

    def define(self, linker: wasmtime.Linker) -> None:
        i32 = wasmtime.ValType.i32()
        for name in _IMPORTS:
            method = getattr(self, name)
            arity = method.__code__.co_argcount - 2  # self, caller
            signature = wasmtime.FuncType([i32] * arity, [i32])
            linker.define_func(MODULE, name, signature, self._nn.boundary(f"wasi-nn {name}", method, errno_for),
                               access_caller=True)

    def _guest_memory(self, caller: wasmtime.Caller) -> GuestMemory:
        if self._memory is None:
            self._memory = memory_of(caller)
        return GuestMemory(caller, self._memory, self._extent)

    # -- loading --------------------------------------------------------------------------

    def load(self, caller: wasmtime.Caller, builders_ptr: int, builders_len: int, encoding: int, target: int,
             out_graph: int) -> int:
        memory = self._guest_memory(caller)
        memory.check_writable(out_graph, 4)
        count = builders_len & _MASK
        if count > MAX_BUILDERS:
            raise InvalidArgument(f"{count} graph builders; at most {MAX_BUILDERS}")
        if encoding not in _ENCODINGS:
            raise InvalidEncoding(f"unknown graph encoding {encoding}")
        if target not in _TARGETS:
            raise InvalidArgument(f"unknown execution target {target}")
        spans = list(_BUILDER.iter_unpack(memory.read(builders_ptr, _BUILDER.size * count)))
        self._nn.check_load_bytes(sum(length for _, length in spans))  # before copying them out
        builders = [memory.read(ptr, length) for ptr, length in spans]
        memory.write_u32(out_graph, self._nn.load(builders, _ENCODINGS[encoding], _TARGETS[target]))
        return _OK

    def load_by_name(self, caller: wasmtime.Caller, name_ptr: int, name_len: int, out_graph: int) -> int:
        memory = self._guest_memory(caller)
        memory.check_writable(out_graph, 4)
        memory.write_u32(out_graph, self._nn.load_by_name(self._name(memory, name_ptr, name_len)))
        return _OK

    def load_by_name_with_config(
        self, caller: wasmtime.Caller, name_ptr: int, name_len: int, config_ptr: int, config_len: int, out_graph: int
    ) -> int:
        memory = self._guest_memory(caller)
        memory.check_writable(out_graph, 4)
        name = self._name(memory, name_ptr, name_len)
        config, stream_stdout = _split_config(memory.read(config_ptr, config_len))
        graph = self._nn.load_by_name(name, config)
        if stream_stdout is not None:
            self._stream_stdout["graph", graph] = stream_stdout
        memory.write_u32(out_graph, graph)
        return _OK

    @staticmethod
    def _name(memory: GuestMemory, pointer: int, length: int) -> str:
        try:
            return memory.read(pointer, length).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgument(f"model name is not valid UTF-8: {exc}") from exc

    def unload(self, caller: wasmtime.Caller, graph: int) -> int:
        self._nn.unload(graph & _MASK)
        self._stream_stdout.pop(("graph", graph & _MASK), None)
        return _OK

    # -- execution contexts ---------------------------------------------------------------

    def init_execution_context(self, caller: wasmtime.Caller, graph: int, out_context: int) -> int:
        memory = self._guest_memory(caller)
        memory.check_writable(out_context, 4)
        context = self._nn.init_execution_context(graph & _MASK)
        if ("graph", graph & _MASK) in self._stream_stdout:
            self._stream_stdout["context", context] = self._stream_stdout["graph", graph & _MASK]
        memory.write_u32(out_context, context)
        return _OK

    def finalize_execution_context(self, caller: wasmtime.Caller, context: int) -> int:
        self._nn.finalize(context & _MASK)
        self._last_piece.pop(context & _MASK, None)
        self._stream_stdout.pop(("context", context & _MASK), None)
        return _OK

    def set_input(self, caller: wasmtime.Caller, context: int, index: int, tensor_ptr: int) -> int:
        memory = self._guest_memory(caller)
        session = self._nn.context(context & _MASK)
        dims_ptr, dims_len, type_code, data_ptr, data_len = _TENSOR.unpack(memory.read(tensor_ptr, _TENSOR.size))
        if dims_len > MAX_RANK:
            raise InvalidArgument(f"tensor rank {dims_len} is over the limit of {MAX_RANK}")
        if type_code not in _TENSOR_TYPES:
            raise InvalidArgument(f"unknown tensor type {type_code}")
        dims = memory.read_u32s(dims_ptr, dims_len)
        data = memory.read(data_ptr, data_len)
        index &= _MASK
        if session.inputs is None:
            session.set_input(str(index), Tensor(dims, _TENSOR_TYPES[type_code], data))
        elif index == _CONFIG_INDEX:
            config, stream_stdout = _split_config(data)
            session.configure(config)
            if stream_stdout is not None:
                self._stream_stdout["context", context & _MASK] = stream_stdout
        else:
            # Text prompts often come as dims [1] with N bytes: the dims say nothing here.
            session.set_input(session.inputs[0], Tensor(dims, _TENSOR_TYPES[type_code], data))
        return _OK

    def compute(self, caller: wasmtime.Caller, context: int) -> int:
        session = self._nn.context(context & _MASK)
        write = self._stdout
        if write is None or not self._stream_stdout.get(("context", context & _MASK)):
            session.compute()
            return _OK
        remove = session.add_listener(lambda token: write(token.piece))
        try:
            session.compute()
        finally:
            remove()
        return _OK

    def _generative(self, context: int) -> Session:
        """The context of a text model: single-token mode is WasmEdge's GGML protocol."""
        session = self._nn.context(context & _MASK)
        if session.inputs is None:
            raise UnsupportedOperation("this backend does not generate text: it has no single-token mode")
        return session

    def compute_single(self, caller: wasmtime.Caller, context: int) -> int:
        session = self._generative(context)
        if not session.streaming:
            session.start_generation()
        token = session.next_token()
        if token is None:
            raise EndOfSequence("end of generation")
        self._last_piece[context & _MASK] = token.piece
        return _OK

    def fini_single(self, caller: wasmtime.Caller, context: int) -> int:
        self._generative(context).end_generation()
        self._last_piece.pop(context & _MASK, None)
        return _OK

    def get_output(self, caller: wasmtime.Caller, context: int, index: int, out_ptr: int, out_max: int,
                   out_written: int) -> int:
        memory = self._guest_memory(caller)
        session = self._nn.context(context & _MASK)
        index &= _MASK
        if session.inputs is None:
            data = session.get_output(str(index)).data
        elif index == _CONFIG_INDEX:
            data = usage_json(session.usage(), build=session.build)
        elif EMBEDDING in session.output_names():
            data = embedding_json(session.get_output(EMBEDDING), wrapped=True).encode()
        else:
            data = session.get_output(TEXT).data
        return self._write_output(memory, data, out_ptr, out_max, out_written)

    def get_output_single(
        self, caller: wasmtime.Caller, context: int, index: int, out_ptr: int, out_max: int, out_written: int
    ) -> int:
        memory = self._guest_memory(caller)
        session = self._generative(context)
        if index & _MASK == _CONFIG_INDEX:
            data = usage_json(session.usage(), build=session.build)
        else:
            data = self._last_piece.get(context & _MASK, b"")
        return self._write_output(memory, data, out_ptr, out_max, out_written)

    @staticmethod
    def _write_output(memory: GuestMemory, data: bytes, out_ptr: int, out_max: int, out_written: int) -> int:
        memory.check_writable(out_written, 4)
        memory.check_writable(out_ptr, out_max)
        if len(data) > out_max & _MASK:
            # WasmEdge's contract: the required size in out_written, no data, errno 7.
            memory.write_u32(out_written, len(data))
            raise TooLarge(f"the output is {len(data)} bytes, the buffer {out_max & _MASK}", required=len(data))
        memory.write(out_ptr, data)
        memory.write_u32(out_written, len(data))
        return _OK


_IMPORTS = (
    "load",
    "load_by_name",
    "load_by_name_with_config",
    "init_execution_context",
    "set_input",
    "compute",
    "get_output",
    "compute_single",
    "get_output_single",
    "fini_single",
    "unload",
    "finalize_execution_context",
)
