"""The text conventions of the front-ends, in one place: a prompt as a tensor, a guest's
config JSON, and the usage and embedding JSON guests are given.

``wasi:nn`` carries text generation as named tensors: the input ``prompt`` and
optionally ``config`` (U8, a JSON object of parameters) go in; the backend's outputs and
``usage`` (U8, JSON) come out. Preview1 carries the same config and usage at index 1, and
WasmEdge's usage JSON adds ``llama_build_number`` and ``llama_commit``; its embedding is
an object around the vector that ``wasinn:llm/preview1``'s ``embed`` gives as a bare array
(the preview1 adapter wraps it the same way), so both are made here.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from ..backends.base import Usage
from ..errors import InvalidEncoding
from ..types import Tensor, TensorType

__all__ = ["CONFIG", "USAGE", "prompt_tensor", "parse_config", "usage_json", "embedding_json"]

CONFIG = "config"  # wasi:nn's optional input of parameters
USAGE = "usage"  # and its extra output


def prompt_tensor(text: str) -> Tensor:
    """A prompt as the backends take it: U8, UTF-8."""
    data = text.encode()
    return Tensor((len(data),), TensorType.U8, data)


def parse_config(raw: bytes) -> dict[str, Any]:
    """A guest's config: a JSON object; anything else is InvalidEncoding (wasi-nn code 2)."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEncoding(f"config is not valid UTF-8 JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidEncoding(f"config must be a JSON object, not {type(value).__name__}")
    return value


def usage_json(usage: Usage, *, build: str | None = None) -> bytes:
    """``{"input_tokens": N, "output_tokens": M}``; with the backend's ``build``,
    WasmEdge's form, which names llama.cpp's build too."""
    report: dict[str, Any] = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}
    if build is not None:
        report.update(llama_build_number=0, llama_commit=build)
    return json.dumps(report).encode()


def embedding_json(embedding: Tensor, *, wrapped: bool) -> str:
    """An F32 embedding as a JSON array of numbers; ``wrapped``, WasmEdge's
    ``{"n_embedding": N, "embedding": [...]}``."""
    vector = struct.unpack(f"<{len(embedding.data) // 4}f", embedding.data)
    return json.dumps({"n_embedding": len(vector), "embedding": vector} if wrapped else vector)
