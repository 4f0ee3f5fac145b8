"""What a guest run may use. Every run has limits; these defaults keep a kernel safe from
a guest that spins, allocates without end, or sends an absurd model."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

__all__ = ["Limits"]

MiB = 1 << 20
_MAY_BE_NONE = ("timeout", "fuel", "output_bytes")  # None: no such limit


@dataclass(frozen=True)
class Limits:
    """What one guest run may use (per host: ``Host(limits=...)``; per run:
    ``host.run(..., limits=...)``; in a cell or on the command line: ``--timeout``,
    ``--max-memory``, ``--fuel``, ``--limit NAME=VALUE``). A run past one is stopped with
    ``GuestLimitError`` naming it, or refused at instantiation.

    Attributes:
        timeout: Wall-clock seconds for a run, or for each turn of an interactive guest;
            None: none. A guest spinning without host calls is stopped too (wasmtime epoch
            interruption).
        memory_bytes: Bytes of each linear memory of the guest.
        memories: Linear memories: a core module has one; a component one per core module
            in it (a composed one, several), each capped at ``memory_bytes``.
        fuel: Wasm instructions, roughly; None: not metered (metering costs speed).
        instances: Wasm instances.
        tables: Wasm tables.
        table_elements: Elements of each table.
        load_bytes: Model bytes a guest may send to ``load``, all its loads together.
        output_bytes: Bytes a guest may write to stdout, and to stderr; None: no limit.
            What it writes is kept (and shown), so a guest printing without end would
            otherwise fill the kernel's memory.
    """

    timeout: float | None = 600.0
    memory_bytes: int = 2048 * MiB
    memories: int = 4
    fuel: int | None = None
    instances: int = 16
    tables: int = 16
    table_elements: int = 1_000_000
    load_bytes: int = 1024 * MiB
    output_bytes: int | None = 64 * MiB

    def overridden(
        self,
        *,
        timeout: float | None = None,
        fuel: int | None = None,
        max_memory_mib: int | None = None,
        named: Iterable[tuple[str, str]] = (),
    ) -> Limits:
        """These limits with what a person gave (``--timeout``, ``--fuel``,
        ``--max-memory``, ``--limit NAME=VALUE``, on the command line or in the magic);
        what is not given (None) stays."""
        given: dict[str, Any] = {"timeout": timeout, "fuel": fuel, "memory_bytes": max_memory_mib and max_memory_mib * MiB}
        return dataclasses.replace(self, **{k: v for k, v in given.items() if v is not None}).changed(named)

    def changed(self, assignments: Iterable[tuple[str, str]]) -> Limits:
        """These limits with some set from text, by field name: the ``--limit NAME=VALUE``
        of the command line and the magic (``none`` lifts ``timeout``, ``fuel`` or ``output_bytes``)."""
        fields = [field.name for field in dataclasses.fields(self)]
        changes: dict[str, Any] = {}
        for name, text in assignments:
            if name not in fields:
                raise ConfigError(f"no limit named {name!r}; the limits are: {', '.join(fields)}")
            try:
                if name in _MAY_BE_NONE and text.lower() == "none":
                    changes[name] = None
                else:
                    changes[name] = float(text) if name == "timeout" else int(text)
            except ValueError:
                raise ConfigError(f"limit {name} takes a number, got {text!r}") from None
        return dataclasses.replace(self, **changes)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None and field.name not in _MAY_BE_NONE:
                raise ConfigError(f"{field.name} cannot be None")
            if value is not None and value <= 0:
                lifted = " or None" if field.name in _MAY_BE_NONE else ""
                raise ConfigError(f"{field.name} must be positive{lifted}, got {value}")
