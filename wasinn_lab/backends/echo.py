"""The echo backend: every output is the input at the same index, unchanged.

It is the conformance approach the wasi-nn working group proposed: it checks an ABI
front-end's tensor marshalling for every type and shape, with no model in the way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import InvalidArgument, UnsupportedOperation
from ..types import ExecutionTarget, GraphEncoding, Tensor
from .base import GenerationStats, TokenListener

__all__ = ["EchoBackend"]

_NO_SINGLE_MODE = "the echo backend has no single-token mode"


class _EchoContext:
    on_token: TokenListener | None = None

    def __init__(self) -> None:
        self._inputs: dict[int, Tensor] = {}
        self._outputs: dict[int, Tensor] = {}

    @property
    def parameters(self) -> dict[str, Any]:
        return {}

    def configure(self, options: Mapping[str, Any]) -> None:
        pass

    def prepare(self) -> None:
        pass

    def set_input(self, index: int, tensor: Tensor) -> None:
        if len(tensor.data) != tensor.expected_size:
            raise InvalidArgument(
                f"tensor data is {len(tensor.data)} bytes but dims {list(tensor.dims)} of "
                f"{tensor.type.value} need {tensor.expected_size}"
            )
        self._inputs[index] = tensor

    def compute(self) -> None:
        self._outputs = dict(self._inputs)

    def get_output(self, index: int) -> bytes:
        try:
            return self._outputs[index].data
        except KeyError:
            raise InvalidArgument(f"no output at index {index}: set that input and compute first") from None

    def compute_single(self) -> None:
        raise UnsupportedOperation(_NO_SINGLE_MODE)

    def get_output_single(self, index: int) -> bytes:
        raise UnsupportedOperation(_NO_SINGLE_MODE)

    def fini_single(self) -> None:
        raise UnsupportedOperation(_NO_SINGLE_MODE)

    def stats(self) -> GenerationStats:
        return GenerationStats()

    def close(self) -> None:
        self._inputs.clear()
        self._outputs.clear()


class _EchoGraph:
    def init_execution_context(self, config: Mapping[str, Any]) -> _EchoContext:
        return _EchoContext()

    def properties(self) -> dict[str, Any]:
        return {"backend": "echo"}

    def close(self) -> None:
        pass


class EchoBackend:
    encoding = GraphEncoding.ECHO

    def normalize_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        return dict(config)

    def load(self, builders: Sequence[bytes], target: ExecutionTarget, staging_dir: Path) -> _EchoGraph:
        return _EchoGraph()

    def load_file(self, path: Path, target: ExecutionTarget, config: Mapping[str, Any]) -> _EchoGraph:
        return _EchoGraph()

    def properties(self) -> dict[str, Any]:
        return {"backend": "echo", "gpu_offload_supported": False}
