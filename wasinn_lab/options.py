"""How a backend describes its options: name, type, default, range, scope and help.

Backends own their catalogue (``Backend.options``); everything that shows or checks
options reads it from there: value checks, the parameter panel's controls, the magic's
help and the parameters table (docs/parameters.md). Nothing here knows any backend or ABI.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidArgument

__all__ = ["Scope", "Option", "Options"]

log = logging.getLogger(__name__)



class Scope(enum.Enum):
    """What a change to an option costs."""

    MODEL = "model"  # the weights are loaded again
    CONTEXT = "context"  # the context (and its KV cache) is made again
    GENERATION = "generation"  # nothing: it applies from the next generation on


_COSTS = {Scope.MODEL: "a model reload", Scope.CONTEXT: "a new context", Scope.GENERATION: "nothing"}


@dataclass(frozen=True)
class Option:
    """One option a backend takes: its name, type, default, range, what a change costs
    (``scope``) and what it does. The parameter panel, ``%wasi_nn options``, ``wasinn-lab
    options`` and the parameters table are all made from these."""

    name: str
    kind: type  # bool, int, float or str
    default: Any
    scope: Scope
    help: str
    minimum: float | None = None
    maximum: float | None = None  # a hard limit; None: unbounded
    # Where a control's range should end when the option has no hard maximum.
    soft_maximum: float | None = None
    step: float | None = None
    panel: bool = False  # one of the backend's main knobs: the parameter panel shows it
    special: Mapping[Any, str] = field(default_factory=dict)  # values that mean something else, e.g. -1: "no limit"
    aliases: tuple[str, ...] = ()  # other spellings guests send (canonical names are kebab-case)
    choices: tuple[Any, ...] = ()  # the values it takes, where they are few

    def check(self, value: Any) -> Any:
        """The value in this option's type, or InvalidArgument naming the option and what
        it accepts. JSON has one number type: an integral float is a fine int, any int a
        fine float; bool, an int in Python, is neither."""
        if self.kind is bool:
            ok = isinstance(value, bool)
        elif self.kind is int:
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            # Beyond 64 bits no option means anything, and WIT's s64 would read it back wrapped.
            ok = isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
        elif self.kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
            ok = ok and math.isfinite(value)  # NaN passes every range check; no option means infinity
        else:
            ok = isinstance(value, str)
        if not ok or (self.choices and value not in self.choices):
            raise InvalidArgument(f"{self.name!r} takes {self.accepts()}, got {value!r}")
        if value in self.special:
            return value
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            raise InvalidArgument(f"{self.name!r} takes {self.accepts()}, got {value!r}")
        return value

    def accepts(self) -> str:
        """What the option takes, in words: "a float from 0.0 to 1.0"."""
        if self.choices:
            return "one of " + ", ".join(repr(choice) for choice in self.choices)
        noun = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[self.kind]
        if self.minimum is not None and self.maximum is not None:
            noun += f" from {self.minimum:g} to {self.maximum:g}"
        elif self.minimum is not None:
            noun += f" of at least {self.minimum:g}"
        elif self.maximum is not None:
            noun += f" of at most {self.maximum:g}"
        if self.special:
            noun += " (" + ", ".join(f"{value!r}: {meaning}" for value, meaning in self.special.items()) + ")"
        return noun

    def range(self) -> str:
        """The range as a table shows it: ``0..1``, ``-1..``, or empty when unbounded."""
        low = "" if self.minimum is None else f"{self.minimum:g}"
        high = "" if self.maximum is None else f"{self.maximum:g}"
        return f"{low}..{high}" if low or high else ""

    def describe(self, value: Any) -> str:
        """A value as a person reads it: the special meaning where it has one."""
        return self.special.get(value, repr(value) if isinstance(value, str) else str(value))


class Options(Mapping[str, Option]):
    """A backend's catalogue of options, by canonical name."""

    def __init__(self, options: Iterable[Option]) -> None:
        self._options = {option.name: option for option in options}
        self._spellings = {
            spelling: option
            for option in self._options.values()
            for spelling in (option.name, option.name.replace("-", "_"), *option.aliases)
        }

    def __getitem__(self, name: str) -> Option:
        return self._options[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._options)

    def __len__(self) -> int:
        return len(self._options)

    def lookup(self, key: str) -> Option | None:
        """The option a guest's key means: its name, the snake_case spelling other
        runtimes use, or an alias."""
        return self._spellings.get(key)

    @property
    def defaults(self) -> dict[str, Any]:
        return {name: option.default for name, option in self._options.items()}

    def normalize(self, config: Mapping[str, Any], *, strict: bool = False, source: str = "config") -> dict[str, Any]:
        """Canonical names with checked values. An unknown key is an InvalidArgument when
        ``strict`` (a person typed it), else it is named in a log line and ignored, as
        WasmEdge ignores it (a guest sent it)."""
        normalized: dict[str, Any] = {}
        for key, value in config.items():
            option = self.lookup(key)
            if option is None:
                if strict:
                    raise InvalidArgument(f"no option {key!r}; the options are: {', '.join(self._options)}")
                log.info("%s: %r is not an option of this backend; ignored", source, key)
                continue
            normalized[option.name] = option.check(value)
        return normalized

    def rows(self) -> list[dict[str, str]]:
        """One row per option, in words: what the docs, the magic and the CLI show."""
        return [
            {"option": name, "type": option.kind.__name__, "default": option.describe(option.default),
             "range": option.range(), "a change costs": _COSTS[option.scope], "what it does": option.help}
            for name, option in self._options.items()
        ]

    def markdown(self) -> str:
        rows = self.rows()
        if not rows:
            return ""
        columns = list(rows[0])
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(f"`{row[c]}`" if c == "option" else row[c] for c in columns) + " |" for row in rows]
        return "\n".join(lines)

    def scoped(self, config: Mapping[str, Any], scope: Scope) -> tuple[tuple[str, Any], ...]:
        """The settings of one scope, hashable: a cache key for what they build."""
        return tuple((name, config[name]) for name, option in self._options.items() if option.scope is scope)
