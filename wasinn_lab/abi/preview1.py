"""The preview1 ``wasi_ephemeral_nn`` ABI, as WasmEdge and WAMR implement it, including
WasmEdge's GGML extensions (by-name loading, single-token streaming, unload, finalize).

One ``Preview1`` serves one guest instance: it owns that guest's handle tables and
marshals between guest memory and the host's registry and sessions. It imports no
backend. Errors become errnos in exactly one place, ``errno_for``.
"""

from __future__ import annotations

import functools
import itertools
import logging
import struct
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import wasmtime

from ..config import parse_config_json
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
from ..registry import LoadedGraph, ModelRegistry
from ..sessions import Session, SessionManager
from ..types import ExecutionTarget, GraphEncoding, Tensor, TensorType
from .memory import GuestMemory, memory_of

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

# WasmEdge's numbering; the WIT and WAMR swap 5 and 6, so 5 also means GGML when the
# bytes are GGUF: guests built for either runtime load.
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
MAX_RANK = 32
MAX_BUILDERS = 64


def errno_for(exc: NNError) -> int:
    for cls in type(exc).__mro__:
        if cls in ERRNO:
            return ERRNO[cls]
    return _RUNTIME_ERROR


def _lookup(table: dict[int, Any], handle: int, what: str) -> Any:
    try:
        return table[handle & 0xFFFFFFFF]
    except KeyError:
        raise InvalidArgument(f"unknown or freed {what} handle {handle & 0xFFFFFFFF}") from None


class Preview1:
    """The twelve ``wasi_ephemeral_nn`` imports for one guest instance."""

    def __init__(
        self,
        registry: ModelRegistry,
        sessions: SessionManager,
        *,
        guest: str | None = None,
        stdout: Callable[[bytes], None] | None = None,
        session_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        on_session: Callable[[Session], None] | None = None,
        staging_dir: Path,
        max_load_bytes: int = 1 << 30,
    ) -> None:
        self._registry = registry
        self._sessions = sessions
        self._guest = guest
        self._stdout = stdout
        # The guest's first execution context is this named session: adopted if it is
        # open, else opened under that name. Either way it outlives the guest.
        self._session_id = session_id
        self._params = dict(params or {})
        self._on_session = on_session
        self._staging_dir = staging_dir
        self._max_load_bytes = max_load_bytes
        self._loaded_bytes = 0  # model bytes this guest has sent to `load`, in all
        self._kept: set[str] = set()
        self._detach: list[Callable[[], None]] = []  # this run's listeners and claims on its sessions
        self._graphs: dict[int, LoadedGraph] = {}
        self._unloaded: list[LoadedGraph] = []  # guest-built graphs whose contexts may still drain
        self._contexts: dict[int, Session] = {}
        self._graph_ids = itertools.count()
        self._context_ids = itertools.count()
        self._memory: wasmtime.Memory | None = None  # the guest's export, looked up once

    # -- wiring ---------------------------------------------------------------------------

    def define(self, linker: wasmtime.Linker) -> None:
        i32 = wasmtime.ValType.i32()
        for name in _IMPORTS:
            method = getattr(self, name)
            arity = method.__code__.co_argcount - 2  # self, memory
            signature = wasmtime.FuncType([i32] * arity, [i32])
            linker.define_func(MODULE, name, signature, self._entry(method), access_caller=True)

    def _entry(self, method: Callable[..., None]) -> Callable[..., int]:
        on_context = method.__name__ in _CONTEXT_CALLS

        @functools.wraps(method)
        def entry(caller: wasmtime.Caller, *args: int) -> int:
            started = time.perf_counter()
            try:
                if self._memory is None:
                    self._memory = memory_of(caller)
                method(GuestMemory(caller, self._memory), *args)
                return 0
            except NNError as exc:
                return errno_for(exc)
            except Exception:  # a host bug must not become a guest trap with a traceback
                log.exception("wasi_ephemeral_nn.%s failed unexpectedly", method.__name__)
                return _RUNTIME_ERROR
            finally:
                # The session's metrics split its time between llama.cpp, the host, the guest.
                session = self._contexts.get(args[0] & 0xFFFFFFFF) if on_context else None
                if session is not None:
                    session.account(time.perf_counter() - started)

        return entry

    @property
    def sessions(self) -> list[Session]:
        return list(self._contexts.values())

    def close(self) -> None:
        """Free every context this guest left open (named sessions stay) and the graphs
        it built from bytes."""
        for detach in self._detach:
            detach()
        for session in self._contexts.values():
            if session.id not in self._kept:
                self._sessions.discard(session)
        self._contexts.clear()
        for loaded in [*self._graphs.values(), *self._unloaded]:
            loaded.close()
        self._graphs.clear()
        self._unloaded.clear()

    # -- loading --------------------------------------------------------------------------

    def _new_graph(self, memory: GuestMemory, loaded: LoadedGraph, out_graph: int) -> None:
        handle = next(self._graph_ids)
        self._graphs[handle] = loaded
        memory.write_u32(out_graph, handle)

    def load(self, memory: GuestMemory, builders_ptr: int, builders_len: int, encoding: int, target: int, out_graph: int) -> None:
        memory.check_writable(out_graph, 4)
        if builders_len & 0xFFFFFFFF > MAX_BUILDERS:
            raise InvalidArgument(f"{builders_len & 0xFFFFFFFF} graph builders; at most {MAX_BUILDERS}")
        if encoding not in _ENCODINGS:
            raise InvalidEncoding(f"unknown graph encoding {encoding}")
        if target not in _TARGETS:
            raise InvalidArgument(f"unknown execution target {target}")
        raw = memory.read(builders_ptr, _BUILDER.size * (builders_len & 0xFFFFFFFF))
        spans = list(_BUILDER.iter_unpack(raw))
        total = self._loaded_bytes + sum(length for _, length in spans)
        if total > self._max_load_bytes:
            raise TooLarge(f"{total:,} bytes of model in all; a guest may send at most {self._max_load_bytes:,}")
        builders = [memory.read(ptr, length) for ptr, length in spans]
        kind = _ENCODINGS[encoding]
        if kind in (GraphEncoding.AUTODETECT, GraphEncoding.GGML):
            if not (builders and builders[0].startswith(b"GGUF")):
                raise InvalidEncoding("autodetect/ggml: the builder is not a GGUF file")
            kind = GraphEncoding.GGML
        loaded = self._registry.load_bytes(builders, kind, _TARGETS[target], self._staging_dir)
        self._loaded_bytes = total
        self._new_graph(memory, loaded, out_graph)

    def load_by_name(self, memory: GuestMemory, name_ptr: int, name_len: int, out_graph: int) -> None:
        memory.check_writable(out_graph, 4)
        self._new_graph(memory, self._registry.load(self._name(memory, name_ptr, name_len)), out_graph)

    def load_by_name_with_config(
        self, memory: GuestMemory, name_ptr: int, name_len: int, config_ptr: int, config_len: int, out_graph: int
    ) -> None:
        memory.check_writable(out_graph, 4)
        name = self._name(memory, name_ptr, name_len)
        config = parse_config_json(memory.read(config_ptr, config_len))
        self._new_graph(memory, self._registry.load(name, config), out_graph)

    @staticmethod
    def _name(memory: GuestMemory, pointer: int, length: int) -> str:
        try:
            return memory.read(pointer, length).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgument(f"model name is not valid UTF-8: {exc}") from exc

    def unload(self, memory: GuestMemory, graph: int) -> None:
        loaded = _lookup(self._graphs, graph, "graph")
        del self._graphs[graph & 0xFFFFFFFF]
        if loaded.model is not None:
            self._registry.forget(loaded.model)
        else:
            self._unloaded.append(loaded)

    # -- execution contexts ---------------------------------------------------------------

    def init_execution_context(self, memory: GuestMemory, graph: int, out_context: int) -> None:
        memory.check_writable(out_context, 4)
        loaded: LoadedGraph = _lookup(self._graphs, graph, "graph")
        session = self._open_session(loaded)
        if self._params:
            session.set(self._params)
        handle = next(self._context_ids)
        self._contexts[handle] = session
        memory.write_u32(out_context, handle)

    def _open_session(self, loaded: LoadedGraph) -> Session:
        name, self._session_id = self._session_id, None
        session = self._sessions.find(name) if name is not None else None
        if session is None:
            context = loaded.graph.init_execution_context(loaded.config)
            session = self._sessions.open(context, loaded.backend, model=loaded.model, guest=self._guest, session_id=name)
        if name is not None and not loaded.owned:
            # A model the guest sent as bytes is freed when the guest ends, and so must be
            # every context made from it: only a registered model's session outlives it.
            self._kept.add(session.id)
        self._detach.append(session.claim(self))
        if self._stdout is not None:
            self._detach.append(session.add_listener(self._stream_stdout(session)))
        if self._on_session is not None:
            self._on_session(session)
        return session

    def _stream_stdout(self, session: Session) -> Callable[..., None]:
        write = self._stdout
        assert write is not None

        # WasmEdge prints tokens for `stream-stdout` in compute mode only.
        def listener(text: str, event: Any) -> None:
            if not event.single and session.parameters.get("stream-stdout"):
                write(event.piece)

        return listener

    def _context(self, handle: int) -> Session:
        return _lookup(self._contexts, handle, "execution context")

    def finalize_execution_context(self, memory: GuestMemory, context: int) -> None:
        session = self._context(context)
        del self._contexts[context & 0xFFFFFFFF]
        if session.id not in self._kept:
            self._sessions.discard(session)

    def set_input(self, memory: GuestMemory, context: int, index: int, tensor_ptr: int) -> None:
        session = self._context(context)
        dims_ptr, dims_len, type_code, data_ptr, data_len = _TENSOR.unpack(memory.read(tensor_ptr, _TENSOR.size))
        if dims_len > MAX_RANK:
            raise InvalidArgument(f"tensor rank {dims_len} is over the limit of {MAX_RANK}")
        if type_code not in _TENSOR_TYPES:
            raise InvalidArgument(f"unknown tensor type {type_code}")
        dims = memory.read_u32s(dims_ptr, dims_len)
        session.set_input(index & 0xFFFFFFFF, Tensor(dims, _TENSOR_TYPES[type_code], memory.read(data_ptr, data_len)))

    def compute(self, memory: GuestMemory, context: int) -> None:
        self._context(context).compute()

    def compute_single(self, memory: GuestMemory, context: int) -> None:
        self._context(context).compute_single()

    def fini_single(self, memory: GuestMemory, context: int) -> None:
        self._context(context).fini_single()

    def get_output(self, memory: GuestMemory, context: int, index: int, out_ptr: int, out_max: int, out_written: int) -> None:
        self._write_output(memory, self._context(context).get_output(index & 0xFFFFFFFF), out_ptr, out_max, out_written)

    def get_output_single(
        self, memory: GuestMemory, context: int, index: int, out_ptr: int, out_max: int, out_written: int
    ) -> None:
        output = self._context(context).get_output_single(index & 0xFFFFFFFF)
        self._write_output(memory, output, out_ptr, out_max, out_written)

    @staticmethod
    def _write_output(memory: GuestMemory, data: bytes, out_ptr: int, out_max: int, out_written: int) -> None:
        memory.check_writable(out_written, 4)
        memory.check_writable(out_ptr, out_max)
        if len(data) > out_max & 0xFFFFFFFF:
            # WasmEdge's contract: the required size in out_written, no data, errno 7.
            memory.write_u32(out_written, len(data))
            raise TooLarge(f"output is {len(data)} bytes, the buffer {out_max & 0xFFFFFFFF}", required=len(data))
        memory.write(out_ptr, data)
        memory.write_u32(out_written, len(data))


_CONTEXT_CALLS = frozenset(
    {"set_input", "compute", "get_output", "compute_single", "get_output_single", "fini_single"}
)
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
