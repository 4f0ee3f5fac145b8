"""The GGML config keys: WasmEdge's kebab-case names, their types, defaults and what a
change to each one costs (a model reload, a new llama context, or nothing)."""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgument

__all__ = ["Scope", "OPTIONS", "DEFAULTS", "normalize", "scoped"]


class Scope(enum.Enum):
    MODEL = "model"  # weights must be loaded again
    CONTEXT = "context"  # the llama context (and its KV cache) must be made again
    GENERATION = "generation"  # takes effect at the next generation


@dataclass(frozen=True)
class Option:
    kind: type
    default: Any
    scope: Scope
    minimum: float | None = None


_INT_SENTINEL_RANDOM_SEED = 0xFFFFFFFF

OPTIONS: dict[str, Option] = {
    "n-gpu-layers": Option(int, 0, Scope.MODEL, minimum=-1),
    "main-gpu": Option(int, 0, Scope.MODEL, minimum=0),
    "use-mmap": Option(bool, True, Scope.MODEL),
    "ctx-size": Option(int, 4096, Scope.CONTEXT, minimum=0),
    "batch-size": Option(int, 512, Scope.CONTEXT, minimum=1),
    "ubatch-size": Option(int, 512, Scope.CONTEXT, minimum=1),
    "threads": Option(int, os.cpu_count() or 1, Scope.CONTEXT, minimum=1),
    "embedding": Option(bool, False, Scope.CONTEXT),
    "n-predict": Option(int, -1, Scope.GENERATION, minimum=-1),
    "temp": Option(float, 0.8, Scope.GENERATION, minimum=0.0),
    "top-p": Option(float, 0.95, Scope.GENERATION, minimum=0.0),
    "top-k": Option(int, 40, Scope.GENERATION, minimum=0),
    "min-p": Option(float, 0.05, Scope.GENERATION, minimum=0.0),
    "repeat-penalty": Option(float, 1.1, Scope.GENERATION, minimum=0.0),
    "presence-penalty": Option(float, 0.0, Scope.GENERATION),
    "frequency-penalty": Option(float, 0.0, Scope.GENERATION),
    "seed": Option(int, _INT_SENTINEL_RANDOM_SEED, Scope.GENERATION, minimum=0),
    "reverse-prompt": Option(str, "", Scope.GENERATION),
    "grammar": Option(str, "", Scope.GENERATION),
    "json-schema": Option(str, "", Scope.GENERATION),
    "stream-stdout": Option(bool, False, Scope.GENERATION),
    # Ours, after llama.cpp server's option: keep the KV cache between prompts so a prompt
    # that extends the last one evaluates only its new tokens. false: re-evaluate it all,
    # every time, as WasmEdge does (the chat benchmark's baseline).
    "cache-prompt": Option(bool, True, Scope.GENERATION),
    "enable-log": Option(bool, False, Scope.GENERATION),
    "enable-debug-log": Option(bool, False, Scope.GENERATION),
}

DEFAULTS: dict[str, Any] = {key: option.default for key, option in OPTIONS.items()}


def _check(key: str, value: Any, option: Option) -> Any:
    # JSON has one number type: an integral float is a fine int, any int a fine float.
    # bool is an int subclass in Python, so it is ruled out explicitly.
    if option.kind is bool:
        ok = isinstance(value, bool)
    elif option.kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif option.kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise InvalidArgument(f"config {key!r} must be {option.kind.__name__}, got {value!r}")
    if option.minimum is not None and value < option.minimum:
        raise InvalidArgument(f"config {key!r} must be at least {option.minimum}, got {value!r}")
    return value


def normalize(config: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical kebab-case keys with checked values. snake_case spellings (other
    runtimes' llama.cpp backends) are accepted; unknown keys are ignored, as in WasmEdge."""
    normalized: dict[str, Any] = {}
    for raw_key, value in config.items():
        key = raw_key.replace("_", "-")
        option = OPTIONS.get(key)
        if option is not None:
            normalized[key] = _check(key, value, option)
    return normalized


def scoped(config: Mapping[str, Any], scope: Scope) -> tuple[tuple[str, Any], ...]:
    """The settings of one scope, hashable: a cache key for what they build."""
    return tuple((key, config[key]) for key, option in OPTIONS.items() if option.scope is scope)
