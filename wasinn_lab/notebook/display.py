"""Streaming a generation into a cell.

In a kernel, one display handle is updated in place, throttled (every update resends
the whole text and the server rate-limits output), and always left with the final
state, which is what a saved notebook keeps. Without a kernel (terminal IPython) the
new text is printed as it comes. Model text, the guest's stdout and its stderr are kept
apart: a guest that prints its tokens would otherwise show everything twice.
"""

from __future__ import annotations

import base64
import html
import sys
import time
from typing import Any

from IPython.display import display

from ..tasks import Event, EventKind

__all__ = ["CellStream", "LivePlot"]

UPDATES_PER_SECOND = 15

_STYLE_TEXT = "white-space:pre-wrap;margin:0;padding:4px 8px;border-left:3px solid #4a7fd6;font-size:95%"
_STYLE_GUEST = "white-space:pre-wrap;margin:0;padding:2px 8px;color:#666;font-size:85%"
_STYLE_STDERR = "white-space:pre-wrap;margin:0;padding:2px 8px;color:#a33;background:#fff4f4;font-size:85%"


class CellStream:
    """An ``on_event`` callback that shows a generation in the current cell."""

    def __init__(self, header: str, *, in_kernel: bool) -> None:
        self.header = header
        self._in_kernel = in_kernel
        self._text: list[str] = []
        self._stdout = bytearray()
        self._stderr = bytearray()
        self.sessions: list[str] = []
        self._status = "running"
        self._last_update = 0.0
        self._handle: Any = None
        if in_kernel:
            self._handle = display(self._bundle(), raw=True, display_id=True)

    def __call__(self, event: Event) -> None:
        if event.kind is EventKind.TOKEN:
            self._text.append(event.data)
            if not self._in_kernel:
                sys.stdout.write(event.data)
                sys.stdout.flush()
        elif event.kind is EventKind.STDOUT:
            self._stdout += event.data
        elif event.kind is EventKind.STDERR:
            self._stderr += event.data
        elif event.kind is EventKind.SESSION and event.data.id not in self.sessions:
            self.sessions.append(event.data.id)
        self._refresh()

    def finish(self, status: str) -> None:
        """Show the final state, whatever the throttle says."""
        self._status = status
        if self._in_kernel:
            self._handle.update(self._bundle(), raw=True)
        else:
            if self._text:
                sys.stdout.write("\n")
            guest_stdout = self._stdout.decode("utf-8", "replace")
            if guest_stdout.strip() and guest_stdout.strip() != "".join(self._text).strip():
                sys.stdout.write(f"[guest stdout]\n{guest_stdout}")
            if self._stderr:
                sys.stderr.write(f"[guest stderr]\n{self._stderr.decode('utf-8', 'replace')}")
            print(f"[{self._caption()}]")

    def _refresh(self) -> None:
        now = time.monotonic()
        if self._in_kernel and now - self._last_update >= 1 / UPDATES_PER_SECOND:
            self._last_update = now
            self._handle.update(self._bundle(), raw=True)

    def _caption(self) -> str:
        sessions = f" · session {', '.join(self.sessions)}" if self.sessions else ""
        return f"{self.header}{sessions} · {self._status}"

    def _bundle(self) -> dict[str, str]:
        text = "".join(self._text)
        stdout = self._stdout.decode("utf-8", "replace")
        stderr = self._stderr.decode("utf-8", "replace")
        parts = [f'<div style="color:#888;font-size:80%">{html.escape(self._caption())}</div>']
        parts.append(f'<pre style="{_STYLE_TEXT}">{html.escape(text)}</pre>')
        if stdout:
            parts.append(
                f'<details><summary style="color:#888;font-size:80%">guest stdout ({len(self._stdout)} bytes)</summary>'
                f'<pre style="{_STYLE_GUEST}">{html.escape(stdout)}</pre></details>'
            )
        if stderr:
            parts.append(f'<pre style="{_STYLE_STDERR}">{html.escape(stderr)}</pre>')
        plain = [f"[{self._caption()}]", text]
        if stdout.strip() and stdout.strip() != text.strip():
            plain += ["[guest stdout]", stdout]
        if stderr:
            plain += ["[guest stderr]", stderr]
        return {"text/html": "".join(parts), "text/plain": "\n".join(plain)}


class LivePlot:
    """An ``on_event`` callback that redraws per-token latency while tokens stream."""

    REDRAWS_PER_SECOND = 2

    def __init__(self) -> None:
        self._times: list[float] = []
        self._last_draw = 0.0
        self._handle: Any = display({"text/plain": "waiting for tokens…"}, raw=True, display_id=True)

    def __call__(self, event: Event) -> None:
        if event.kind is EventKind.TOKEN:
            self._times.append(time.perf_counter())
            if time.monotonic() - self._last_draw >= 1 / self.REDRAWS_PER_SECOND:
                self._draw()

    def finish(self, status: str) -> None:
        self._draw()

    def _draw(self) -> None:
        import io

        import matplotlib.pyplot as plt

        self._last_draw = time.monotonic()
        if len(self._times) < 2:
            return
        latencies = [(b - a) * 1e3 for a, b in zip(self._times, self._times[1:])]
        figure, ax = plt.subplots(figsize=(6, 2.4))
        ax.plot(range(1, len(self._times)), latencies, linewidth=1)
        ax.set_xlabel("token")
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"{len(self._times)} tokens, {1e3 * len(latencies) / sum(latencies):.1f} tokens/s")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        plt.close(figure)
        png = base64.b64encode(buffer.getvalue()).decode("ascii")  # raw image data travels as base64
        self._handle.update({"image/png": png, "text/plain": f"<{len(self._times)} tokens>"}, raw=True)
