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
QUOTE_WIDTH = 72  # characters of a config shown around what was wrong in it


def prompt_tensor(text: str) -> Tensor:
    """A prompt as the backends take it: U8, UTF-8."""
    data = text.encode()
    return Tensor((len(data),), TensorType.U8, data)


def parse_config(raw: bytes) -> dict[str, Any]:
    """A JSON object from raw bytes; anything else is InvalidEncoding (wasi-nn code 2),
    whose message quotes the config where it went wrong: the guest wrote it, and the
    person reading the message has never seen it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The bytes before the first bad one decode, so its place in the shown text is known.
        shown = raw.decode("utf-8", "backslashreplace")
        where = len(raw[: exc.start].decode("utf-8"))
        raise InvalidEncoding(f"config is not valid UTF-8 ({exc.reason} at byte {exc.start}):\n"
                              f"{_quote(shown, where)}") from exc
    if not text.strip():
        raise InvalidEncoding("config is empty: it must be a JSON object")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        what = exc.msg.lower().removesuffix(" at")  # "Invalid control character at"
        raise InvalidEncoding(f"config is not valid JSON ({what} at line {exc.lineno}, column {exc.colno}):\n"
                              f"{_quote(text, exc.pos)}") from exc
    if not isinstance(value, dict):
        raise InvalidEncoding(f"config must be a JSON object, not {_JSON_NAMES[type(value)]}:\n{_quote(text, 0)}")
    return value


_JSON_NAMES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true or false",
               type(None): "null"}


def _quote(text: str, position: int, *, width: int = QUOTE_WIDTH) -> str:
    """The line of ``text`` holding ``position``, indented, cut to ``width`` characters
    around it, with a caret under it."""
    start = text.rfind("\n", 0, position) + 1
    end = text.find("\n", position)
    line = text[start : end if end >= 0 else len(text)]
    column = position - start
    left = min(max(0, column - width // 2), max(0, len(line) - width))
    shown = line[left : left + width]
    # One character per character, so the caret stays under its place.
    shown = "".join(char if char.isprintable() else " " for char in shown)
    before = "…" if left > 0 else ""
    after = "…" if left + width < len(line) else ""
    return f"    {before}{shown}{after}\n    {' ' * (len(before) + column - left)}^"


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
