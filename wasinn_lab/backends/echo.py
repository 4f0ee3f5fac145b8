"""The echo backend: every input tensor comes back as the output of the same name, unchanged.

It is the conformance approach the wasi-nn working group proposed: it checks an ABI
front-end's tensor marshalling for every type and shape, with no model in the way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import InvalidArgument, UnsupportedOperation
from ..options import Options
from ..types import ExecutionTarget, GraphEncoding, Tensor
from .base import NextTokenDistribution, TokenStream, Usage

__all__ = ["EchoBackend"]


class _EchoContext:
    generates = False

    def __init__(self) -> None:
        self._inputs: dict[str, Tensor] = {}
        self._outputs: dict[str, Tensor] = {}

    @property
    def parameters(self) -> dict[str, Any]:
        return {}

    def check(self, options: Mapping[str, Any]) -> None:
        pass

    def configure(self, options: Mapping[str, Any]) -> None:
        pass

    def prepare(self) -> None:
        pass

    def set_input(self, name: str, tensor: Tensor) -> None:
        if len(tensor.data) != tensor.expected_size:
            raise InvalidArgument(
                f"tensor {name!r} has {len(tensor.data)} bytes of data, but dims {list(tensor.dims)} of "
                f"{tensor.type.value} need {tensor.expected_size}"
            )
        self._inputs[name] = tensor

    def clear_inputs(self) -> None:
        self._inputs = {}

    def compute(self) -> None:
        self._outputs = dict(self._inputs)

    def output_names(self) -> list[str]:
        return list(self._outputs)

    def get_output(self, name: str) -> Tensor:
        try:
            return self._outputs[name]
        except KeyError:
            raise InvalidArgument(f"no output named {name!r}: set that input and compute first") from None

    def generate(self) -> TokenStream:
        raise UnsupportedOperation("the echo backend does not generate text")

    def distribution(self, k: int, options: Mapping[str, Any]) -> NextTokenDistribution:
        raise UnsupportedOperation("the echo backend has no token distribution: it echoes its inputs; "
                                   "use a GGML model for next_token_distribution")

    def usage(self) -> Usage:
        return Usage()

    def release(self) -> None:
        pass

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
    options = Options(())
    inputs: tuple[str, ...] | None = None  # any names
    build = "echo"

    def load(self, builders: Sequence[bytes], target: ExecutionTarget, staging_dir: Path) -> _EchoGraph:
        return _EchoGraph()

    def load_file(self, path: Path, target: ExecutionTarget, config: Mapping[str, Any]) -> _EchoGraph:
        return _EchoGraph()

    def properties(self) -> dict[str, Any]:
        return {"backend": "echo", "gpu_offload_supported": False}
