"""Config as it arrives: JSON from guests, ``KEY=VALUE`` from people (the command line
and the magics)."""

from __future__ import annotations

import json
from typing import Any

from .errors import ConfigError, InvalidEncoding

__all__ = ["parse_config_json", "parse_assignment", "quote"]

QUOTE_WIDTH = 72  # characters of a config shown around what was wrong in it


def parse_config_json(raw: bytes) -> dict[str, Any]:
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
                              f"{quote(shown, where)}") from exc
    if not text.strip():
        raise InvalidEncoding("config is empty: it must be a JSON object")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        what = exc.msg.lower().removesuffix(" at")  # "Invalid control character at"
        raise InvalidEncoding(f"config is not valid JSON ({what} at line {exc.lineno}, column {exc.colno}):\n"
                              f"{quote(text, exc.pos)}") from exc
    if not isinstance(value, dict):
        raise InvalidEncoding(f"config must be a JSON object, not {_JSON_NAMES[type(value)]}:\n{quote(text, 0)}")
    return value


_JSON_NAMES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true or false",
               type(None): "null"}


def quote(text: str, position: int, *, width: int = QUOTE_WIDTH) -> str:
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
