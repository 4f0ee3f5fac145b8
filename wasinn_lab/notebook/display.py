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

__all__ = ["CellStream", "LivePlot", "Transcript"]

UPDATES_PER_SECOND = 15

_STYLE_CAPTION = "color:#888;font-size:80%"
_STYLE_TEXT = "white-space:pre-wrap;margin:0;padding:4px 8px;border-left:3px solid #4a7fd6;font-size:95%"
_STYLE_GUEST = "white-space:pre-wrap;margin:0;padding:2px 8px;color:#666;font-size:85%"
_STYLE_STDERR = "white-space:pre-wrap;margin:0;padding:2px 8px;color:#a33;background:#fff4f4;font-size:85%"


class Transcript:
    """One generation as it arrives (model text, the guest's stdout and stderr, its
    sessions) and as it is shown: HTML for a notebook, plain text for the rest. Shared by
    the cell display and the prompt box."""

    def __init__(self, header: str) -> None:
        self.header = header
        self.status = "running"
        self.sessions: list[str] = []
        self.error: BaseException | None = None
        self._text: list[str] = []
        self._stdout = bytearray()
        self._stderr = bytearray()
        self._last_shown = 0.0

    def add(self, event: Event) -> None:
        if event.kind is EventKind.TOKEN:
            self._text.append(event.data)
        elif event.kind is EventKind.STDOUT:
            self._stdout += event.data
        elif event.kind is EventKind.STDERR:
            self._stderr += event.data
        elif event.kind is EventKind.NN_ERROR:  # in order with what the guest says about it
            self._stderr += f"wasinn-lab: {event.data}\n".encode()
        elif event.kind is EventKind.SESSION and event.data.id not in self.sessions:
            self.sessions.append(event.data.id)

    @property
    def text(self) -> str:
        return "".join(self._text)

    @property
    def stdout(self) -> str:
        return self._stdout.decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        return self._stderr.decode("utf-8", "replace")

    def due(self) -> bool:
        """Whether an update may be shown now (and if so, it counts as shown): every update
        resends the whole text and the server rate-limits output, so at most
        ``UPDATES_PER_SECOND``."""
        if time.monotonic() - self._last_shown < 1 / UPDATES_PER_SECOND:
            return False
        self.shown()
        return True

    def shown(self) -> None:
        """An update was shown regardless of ``due`` (the first, the last)."""
        self._last_shown = time.monotonic()

    def caption(self) -> str:
        sessions = f" · session {', '.join(self.sessions)}" if self.sessions else ""
        return f"{self.header}{sessions} · {self.status}"

    def distinct_stdout(self) -> str:
        # A guest that prints its tokens would otherwise show everything twice.
        stdout = self.stdout
        return stdout if stdout.strip() and stdout.strip() != self.text.strip() else ""

    def html(self) -> str:
        parts = [f'<div style="{_STYLE_CAPTION}">{html.escape(self.caption())}</div>',
                 f'<pre style="{_STYLE_TEXT}">{html.escape(self.text)}</pre>']
        if self.distinct_stdout():
            parts.append(f'<details><summary style="{_STYLE_CAPTION}">guest stdout ({len(self._stdout)} bytes)</summary>'
                         f'<pre style="{_STYLE_GUEST}">{html.escape(self.stdout)}</pre></details>')
        if self._stderr:
            parts.append(f'<pre style="{_STYLE_STDERR}">{html.escape(self.stderr)}</pre>')
        if self.error is not None:
            parts.append(f'<pre style="{_STYLE_STDERR}">{html.escape(f"{type(self.error).__name__}: {self.error}")}</pre>')
        return "".join(parts)

    def plain(self) -> str:
        lines = [f"[{self.caption()}]", self.text]
        if self.distinct_stdout():
            lines += ["[guest stdout]", self.stdout]
        if self._stderr:
            lines += ["[guest stderr]", self.stderr]
        return "\n".join(lines)


class CellStream:
    """An ``on_event`` callback that shows a generation in the current cell."""

    def __init__(self, header: str, *, in_kernel: bool) -> None:
        self.transcript = Transcript(header)
        self._in_kernel = in_kernel
        self._handle: Any = display(self._bundle(), raw=True, display_id=True) if in_kernel else None
        self.transcript.shown()

    @property
    def sessions(self) -> list[str]:
        return self.transcript.sessions

    def __call__(self, event: Event) -> None:
        self.transcript.add(event)
        if self._in_kernel:
            if self.transcript.due():
                self._handle.update(self._bundle(), raw=True)
        elif event.kind is EventKind.TOKEN:
            sys.stdout.write(event.data)
            sys.stdout.flush()

    def finish(self, status: str) -> None:
        """Show the final state, whatever the throttle says."""
        self.transcript.status = status
        if self._in_kernel:
            self._handle.update(self._bundle(), raw=True)
            return
        transcript = self.transcript
        if transcript.text:
            sys.stdout.write("\n")
        if transcript.distinct_stdout():
            sys.stdout.write(f"[guest stdout]\n{transcript.stdout}")
        if transcript.stderr:
            sys.stderr.write(f"[guest stderr]\n{transcript.stderr}")
        print(f"[{transcript.caption()}]")

    def _bundle(self) -> dict[str, str]:
        return {"text/html": self.transcript.html(), "text/plain": self.transcript.plain()}


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
