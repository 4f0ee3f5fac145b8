"""Config as it arrives: JSON from guests, ``KEY=VALUE`` from people (the command line
and the magics)."""

from __future__ import annotations

import json
from typing import Any

from .errors import ConfigError, InvalidEncoding

__all__ = ["parse_config_json", "parse_assignment"]


def parse_config_json(raw: bytes) -> dict[str, Any]:
    """A JSON object from raw bytes; anything else is InvalidEncoding (wasi-nn code 2)."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEncoding(f"config is not valid UTF-8 JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidEncoding(f"config must be a JSON object, not {type(value).__name__}")
    return value


def parse_assignment(text: str, *, json_value: bool = True) -> tuple[str, Any]:
    """``KEY=VALUE``. With ``json_value``, VALUE is read as JSON when it is JSON (0.2,
    true, "x"), else kept as text; without, it is text (environment variables, limits)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"expected KEY=VALUE, got {text!r}")
    if not json_value:
        return key, raw
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw
