"""Config as people give it: ``KEY=VALUE`` (the command line and the magics). A guest's
config JSON is the front-ends' (``abi.conventions``)."""

from __future__ import annotations

import json
from typing import Any

from .errors import ConfigError

__all__ = ["parse_assignment"]


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
