"""Backend-neutral wasi-nn types. No ABI ordinals here: each ABI maps its own numbers."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

__all__ = ["TensorType", "GraphEncoding", "ExecutionTarget", "Tensor"]


class TensorType(enum.Enum):
    F16 = "f16"
    BF16 = "bf16"
    F32 = "f32"
    F64 = "f64"
    U8 = "u8"
    I32 = "i32"
    I64 = "i64"

    @property
    def element_size(self) -> int:
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
    OPENVINO = "openvino"
    ONNX = "onnx"
    TENSORFLOW = "tensorflow"
    PYTORCH = "pytorch"
    TENSORFLOWLITE = "tensorflowlite"
    GGML = "ggml"
    AUTODETECT = "autodetect"
    ECHO = "echo"


class ExecutionTarget(enum.Enum):
    CPU = "cpu"
    GPU = "gpu"
    TPU = "tpu"
    AUTO = "auto"


@dataclass(frozen=True)
class Tensor:
    dims: tuple[int, ...]
    type: TensorType
    data: bytes

    @property
    def expected_size(self) -> int:
        """Bytes that ``dims`` and ``type`` describe (GGML prompts ignore it)."""
        return math.prod(self.dims) * self.type.element_size
