"""Backend-neutral wasi-nn types. No ABI ordinals here: each ABI maps its own numbers."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

__all__ = ["TensorType", "GraphEncoding", "ExecutionTarget", "Tensor"]


class TensorType(enum.Enum):
    """A tensor's element type, as wasi-nn names them."""

    F16 = "f16"
    BF16 = "bf16"
    F32 = "f32"
    F64 = "f64"
    U8 = "u8"
    I32 = "i32"
    I64 = "i64"

    @property
    def element_size(self) -> int:
        """Bytes per element."""
        return _ELEMENT_SIZE[self]


_ELEMENT_SIZE = {
    TensorType.F16: 2,
    TensorType.BF16: 2,
    TensorType.F32: 4,
    TensorType.F64: 8,
    TensorType.U8: 1,
    TensorType.I32: 4,
    TensorType.I64: 8,
}


class GraphEncoding(enum.Enum):
    """A model's format, as wasi-nn names them (``ggml``: GGUF for llama.cpp; ``echo``: the
    test backend). Each ABI numbers them its own way."""

    OPENVINO = "openvino"
    ONNX = "onnx"
    TENSORFLOW = "tensorflow"
    PYTORCH = "pytorch"
    TENSORFLOWLITE = "tensorflowlite"
    GGML = "ggml"
    AUTODETECT = "autodetect"
    ECHO = "echo"


class ExecutionTarget(enum.Enum):
    """Where a graph should run, as wasi-nn names the targets; the GGML backend places
    layers by ``n-gpu-layers`` instead."""

    CPU = "cpu"
    GPU = "gpu"
    TPU = "tpu"
    AUTO = "auto"


@dataclass(frozen=True)
class Tensor:
    """A tensor as wasi-nn passes it: its dimensions, element type and raw little-endian
    bytes. Text goes as U8 tensors of UTF-8."""

    dims: tuple[int, ...]
    type: TensorType
    data: bytes

    @property
    def expected_size(self) -> int:
        """Bytes that ``dims`` and ``type`` describe (GGML prompts ignore it)."""
        return math.prod(self.dims) * self.type.element_size
