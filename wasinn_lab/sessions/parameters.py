"""A session's parameters: its context's, and the changes queued for its next generation.

A change (a slider moved, a guest's config) returns at once, even while a generation
runs: it waits here and is applied where the next generation starts, so a change that
rebuilds the context never lands between two of its tokens.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from ..backends.base import ExecutionContext

__all__ = ["ParameterQueue"]


class ParameterQueue:
    def __init__(self, context: ExecutionContext) -> None:
        self._context = context
        self._pending: dict[str, Any] = {}
        self._lock = threading.Lock()  # queue() comes from any thread, apply() from the session's

    @property
    def current(self) -> dict[str, Any]:
        """Every parameter, as the next generation will have it."""
        with self._lock:
            return {**self._context.parameters, **self._pending}

    @property
    def pending(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._pending)

    def queue(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Queue ``changes`` (normalized) for the next generation; returns those that change
        anything. InvalidArgument, with nothing queued, if the context cannot take them."""
        current = self.current
        changed = {key: value for key, value in changes.items() if current.get(key) != value}
        if changed:
            self._context.check(changed)
            with self._lock:
                self._pending.update(changed)
        return changed

    def apply(self) -> None:
        """Hand what is queued to the context (only between generations)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if pending:
            self._context.configure(pending)
