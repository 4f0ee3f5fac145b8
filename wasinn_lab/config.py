"""Config JSON as guests send it (``load_by_name_with_config``, ``set_input`` index 1)."""

from __future__ import annotations

import json
from typing import Any

from .errors import InvalidEncoding

__all__ = ["parse_config_json"]


def parse_config_json(raw: bytes) -> dict[str, Any]:
    """A JSON object from raw bytes; anything else is InvalidEncoding (wasi-nn code 2)."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEncoding(f"config is not valid UTF-8 JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidEncoding(f"config must be a JSON object, not {type(value).__name__}")
    return value
