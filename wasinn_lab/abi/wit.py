"""The standard ``wasi:nn@0.2.0-rc-2024-10-28`` WIT, for components, as Wasmtime hosts it.

Marshalling only: tensors, graphs, execution contexts and errors are host resources; each
call converts WIT values to the neutral types and calls the guest's wasi-nn state
(``GuestNN``) and its sessions. Every call goes through the guest's boundary
(``GuestNN.boundary``); its errors are ``error`` resources whose code comes from one
table, ``_CODES``, and whose ``data`` says what to fix.

Text generation through plain wasi:nn, for a model that names its inputs (the GGML
backend), follows ``conventions``: ``prompt`` and optionally ``config`` in, the backend's
outputs (``text``) and ``usage`` out. A model that takes any names (echo) gets every input
tensor under its own name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import wasmtime
from wasmtime import component as cm

from ..errors import (
    BackendError,
    Busy,
    ContextFull,
    InvalidArgument,
    InvalidEncoding,
    ModelNotFound,
    NNError,
    NotFound,
    PromptTooLong,
    Timeout,
    TooLarge,
    UnsupportedOperation,
)
from ..nn import GuestNN, code_for
from ..types import ExecutionTarget, GraphEncoding, Tensor, TensorType
from .conventions import CONFIG, USAGE, parse_config, usage_json
from .resources import ResourceKind, Resources

__all__ = ["WasiNN", "VERSION", "error_code_for"]

VERSION = "0.2.0-rc-2024-10-28"
log = logging.getLogger(__name__)

_CODES: dict[type[BaseException], str] = {
    InvalidArgument: "invalid-argument",
    InvalidEncoding: "invalid-encoding",
    Timeout: "timeout",
    BackendError: "runtime-error",
    UnsupportedOperation: "unsupported-operation",
    TooLarge: "too-large",
    PromptTooLong: "too-large",
    ContextFull: "too-large",
    NotFound: "not-found",
    ModelNotFound: "not-found",
    Busy: "runtime-error",  # the WIT has no busy: the message says it
}
_TYPES = {
    "FP16": TensorType.F16, "FP32": TensorType.F32, "FP64": TensorType.F64, "BF16": TensorType.BF16,
    "U8": TensorType.U8, "I32": TensorType.I32, "I64": TensorType.I64,
}
_TYPE_NAMES = {tensor_type: name for name, tensor_type in _TYPES.items()}
_ENCODINGS = {encoding.value: encoding for encoding in GraphEncoding if encoding is not GraphEncoding.ECHO}
_TARGETS = {"cpu": ExecutionTarget.CPU, "gpu": ExecutionTarget.GPU, "tpu": ExecutionTarget.TPU}


def error_code_for(exc: BaseException) -> str:
    return code_for(_CODES, exc, "unknown")


class WasiNN:
    """The four ``wasi:nn`` interfaces for one component instance."""

    INTERFACES = tuple(f"wasi:nn/{name}@{VERSION}" for name in ("errors", "tensor", "inference", "graph"))

    def __init__(self, nn: GuestNN, resources: Resources) -> None:
        self._nn = nn
        self._resources = resources
        self.tensor = ResourceKind("tensor", 1)
        self.graph = ResourceKind("graph", 2, nn.drop_graph)
        self.context = ResourceKind("graph-execution-context", 3, nn.finalize)
        self.error = ResourceKind("error", 4)

    def define(self, root: cm.LinkerInstance, shield: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        resources = self._resources
        get = resources.get
        with root.add_instance(f"wasi:nn/errors@{VERSION}") as instance:
            resources.define(instance, self.error)
            instance.add_func("[method]error.code", shield(lambda store, e: get(store, e, self.error)[0]))
            instance.add_func("[method]error.data", shield(lambda store, e: get(store, e, self.error)[1]))
        with root.add_instance(f"wasi:nn/tensor@{VERSION}") as instance:
            resources.define(instance, self.tensor)
            instance.add_func("[constructor]tensor", shield(self._new_tensor))
            instance.add_func("[method]tensor.dimensions", shield(lambda store, t: list(get(store, t, self.tensor).dims)))
            instance.add_func("[method]tensor.ty", shield(lambda store, t: _TYPE_NAMES[get(store, t, self.tensor).type]))
            instance.add_func("[method]tensor.data", shield(lambda store, t: get(store, t, self.tensor).data))
        with root.add_instance(f"wasi:nn/inference@{VERSION}") as instance:
            resources.define(instance, self.context)
            instance.add_func("[method]graph-execution-context.compute", shield(self._result(self._compute, tagged=False)))
        with root.add_instance(f"wasi:nn/graph@{VERSION}") as instance:
            resources.define(instance, self.graph)
            instance.add_func("[method]graph.init-execution-context", shield(self._result(self._init_execution_context)))
            instance.add_func("load", shield(self._result(self._load)))
            instance.add_func("load-by-name", shield(self._result(self._load_by_name)))

    # -- results: every failure an error resource -------------------------------------------

    def _result(self, call: Callable[..., Any], *, tagged: bool = True) -> Callable[..., Any]:
        """``result<T, error>``: an error resource for every failure, never a raise (a
        Python exception would trap the instance for good). Two resources need ``Variant``s;
        a list and a resource are told apart without."""
        name = f"wasi:nn {call.__name__.strip('_').replace('_', '-')}"
        if not tagged:
            return self._nn.boundary(name, call, self._error)
        return self._nn.boundary(name, lambda store, *args: cm.Variant("ok", call(store, *args)),
                                 lambda error: cm.Variant("err", self._error(error)))

    def _error(self, error: NNError) -> cm.ResourceHost:
        return self._resources.add(self.error, (error_code_for(error), str(error)))

    # -- the calls -------------------------------------------------------------------------

    def _new_tensor(self, store: wasmtime.StoreContext, dims: list[int], ty: str, data: bytes) -> cm.ResourceHost:
        return self._resources.add(self.tensor, Tensor(tuple(dims), _TYPES[ty], bytes(data)))

    def _load(self, store: wasmtime.StoreContext, builders: list[bytes], encoding: str, target: str) -> cm.ResourceHost:
        self._nn.check_load_bytes(sum(len(builder) for builder in builders))
        handle = self._nn.load([bytes(b) for b in builders], _ENCODINGS[encoding], _TARGETS[target])
        return self._resources.add(self.graph, handle)

    def _load_by_name(self, store: wasmtime.StoreContext, name: str) -> cm.ResourceHost:
        return self._resources.add(self.graph, self._nn.load_by_name(name))

    def _init_execution_context(self, store: wasmtime.StoreContext, graph: cm.ResourceAny) -> cm.ResourceHost:
        handle = self._nn.init_execution_context(self._resources.get(store, graph, self.graph))
        return self._resources.add(self.context, handle)

    def _compute(self, store: wasmtime.StoreContext, context: cm.ResourceAny,
                 inputs: list[tuple[str, cm.ResourceAny]]) -> list[tuple[str, cm.ResourceHost]]:
        handle = self._resources.get(store, context, self.context)
        # The tensors come in owned: the host takes them whatever happens next.
        tensors = {name: self._resources.take(store, tensor, self.tensor) for name, tensor in inputs}
        if len(tensors) < len(inputs):  # a dict would keep one of them, unchecked and unsaid
            twice = sorted({name for name, _ in inputs if [n for n, _ in inputs].count(name) > 1})
            raise InvalidArgument(f"each input tensor needs a name of its own: {', '.join(map(repr, twice))} given twice")
        session = self._nn.context(handle)
        if session.inputs is not None and CONFIG in tensors:
            session.configure(parse_config(tensors.pop(CONFIG).data))
        outputs = session.compute(tensors)
        if session.inputs is not None:
            outputs[USAGE] = Tensor((1,), TensorType.U8, usage_json(session.usage()))
        return [(name, self._resources.add(self.tensor, tensor)) for name, tensor in outputs.items()]
