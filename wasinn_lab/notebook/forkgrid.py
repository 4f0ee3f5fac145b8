"""Forks of one prompt shown side by side (``%%wasi_nn GUEST --fork N``): a table of N
columns, each headed by its seed and showing its generation as a cell shows one
(``display.Transcript``). In a kernel, one display handle is updated in place, throttled,
and always left with the final state, which a saved notebook keeps; without a kernel
(terminal IPython) each column is printed once it is over, one after the other.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from typing import Any

from IPython.display import display

from ..tasks import Event, EventKind
from .display import _STYLE_CAPTION, UPDATES_PER_SECOND, Transcript

__all__ = ["ForkGrid"]

_STYLE_TABLE = "width:100%;table-layout:fixed;border-collapse:collapse"
_STYLE_COLUMN = "vertical-align:top;text-align:left;padding:0 6px 0 0;border:none"


class ForkGrid:
    """An ``on_event(index, event)`` callback that shows each fork in its own column."""

    def __init__(self, header: str, seeds: Sequence[int], *, in_kernel: bool) -> None:
        self.header = header
        self.status = "running"
        self.columns = [Transcript(f"seed {seed}") for seed in seeds]
        self._in_kernel = in_kernel
        self._last_shown = 0.0
        # Shown from the first event on: a cell refused before any guest started shows its
        # error alone, not N empty columns.
        self._handle: Any = None

    def __call__(self, index: int, event: Event) -> None:
        column = self.columns[index]
        column.add(event)
        if event.kind is EventKind.DONE:
            failed = isinstance(event.data, BaseException) or event.data.exit_code != 0
            column.status = "failed" if failed else "done"
            column.error = event.data if isinstance(event.data, BaseException) else None
        if self._in_kernel and time.monotonic() - self._last_shown >= 1 / UPDATES_PER_SECOND:
            self._show()

    def finish(self, status: str) -> None:
        """Show the final state, whatever the throttle says; a column still running ends
        with the cell's status. Nothing, if no guest ever started."""
        self.status = status
        for column in self.columns:
            if not column.finished:
                column.status = status
        if self._in_kernel and self._handle is not None:
            self._show()
        elif not self._in_kernel and any(column.sessions for column in self.columns):
            print(self.plain())

    def _show(self) -> None:
        self._last_shown = time.monotonic()
        if self._handle is None:
            self._handle = display(self._bundle(), raw=True, display_id=True)
        else:
            self._handle.update(self._bundle(), raw=True)

    def caption(self) -> str:
        return f"{self.header} · {len(self.columns)} forks · {self.status}"

    def html(self) -> str:
        width = f"{100 / max(len(self.columns), 1):.3f}%"
        cells = "".join(f'<td style="{_STYLE_COLUMN};width:{width}">{column.html()}</td>' for column in self.columns)
        return (f'<div style="{_STYLE_CAPTION}">{html.escape(self.caption())}</div>'
                f'<table style="{_STYLE_TABLE}"><tr>{cells}</tr></table>')

    def plain(self) -> str:
        return "\n\n".join([f"[{self.caption()}]", *(column.plain() for column in self.columns)])

    def _bundle(self) -> dict[str, str]:
        return {"text/html": self.html(), "text/plain": self.plain()}
