"""Streaming a generation into a cell.

In a kernel, one display handle is updated in place, throttled (every update resends
the whole text and the server rate-limits output), and always left with the final
state, which is what a saved notebook keeps. Without a kernel (terminal IPython) the
new text is printed as it comes. Model text, the guest's stdout and its stderr are kept
apart: a guest that prints its tokens would otherwise show everything twice. A guest
that prints something else (a report, the text changed) has that shown open, as its
output; a wasi-nn call that failed in a run that went on is said to be handled by the
guest, not shown as an error.
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import re
import sys
import time
from typing import Any

from IPython.display import display

from ..tasks import Event, EventKind
from .tables import GENERATED_TOKENS, PROMPT_TOKENS

__all__ = ["CellStream", "LivePlot", "Transcript", "describe_usage", "split_usage"]

UPDATES_PER_SECOND = 15

_STYLE_CAPTION = "color:#888;font-size:80%"
_STYLE_TEXT = "white-space:pre-wrap;margin:0;padding:4px 8px;border-left:3px solid #4a7fd6;font-size:95%"
_STYLE_GUEST = "white-space:pre-wrap;margin:0;padding:4px 8px;border-left:3px solid #6a6;font-size:95%"
_STYLE_STDERR = "white-space:pre-wrap;margin:0;padding:2px 8px;color:#a33;background:#fff4f4;font-size:85%"
_STYLE_NOTES = "white-space:pre-wrap;margin:0;padding:2px 8px;color:#555;background:#f6f6f6;font-size:85%"

# A guest's usage report on stderr: "usage: {...}" on a line of its own (guests/wasi_nn.h).
_USAGE_LINE = re.compile(r"usage: (\{.*\})\s*")
# The same names as %wasi_nn sessions and the session browser give them (tables.py).
_USAGE_LABELS = {"input_tokens": PROMPT_TOKENS, "output_tokens": GENERATED_TOKENS}
# What the lab adds to the stderr pane, in order with the guest's own lines: a failed call.
_HOST_NOTE = "wasinn-lab: "


def split_usage(stderr: str, *, complete: bool = True) -> tuple[list[dict[str, Any]], str]:
    """The usage reports in a guest's stderr, and the rest of it (a line that only looks
    like a report, with no JSON object after ``usage:``, stays in the rest). While the
    guest runs (``complete=False``) a report still being written is held back."""
    usages: list[dict[str, Any]] = []
    rest: list[str] = []
    for line in stderr.splitlines(keepends=True):
        if not complete and not line.endswith("\n") and line.startswith("usage: {"):
            break
        match = _USAGE_LINE.fullmatch(line)
        if match is not None:
            try:
                usage = json.loads(match[1])
            except json.JSONDecodeError:
                usage = None
            if isinstance(usage, dict):
                usages.append(usage)
                continue
        rest.append(line)
    return usages, "".join(rest)


def describe_usage(usage: dict[str, Any], evaluated: int | None = None) -> str:
    """``12 prompt tokens (4 evaluated) · 32 generated tokens`` (``evaluated``: how many
    of the prompt's tokens the model computed, the rest coming from its cache, when the
    session's record of the generation is at hand); other fields (build, commit) are left
    to the tooltip (``_usage_details``)."""
    shown = [f"{usage[key]} {label}" for key, label in _USAGE_LABELS.items() if key in usage]
    if evaluated is not None and shown and "input_tokens" in usage:
        shown[0] += f" ({evaluated} evaluated)"
    shown += [f"{key.replace('_', ' ')} {value}" for key, value in usage.items()
              if key.endswith("_tokens") and key not in _USAGE_LABELS]
    return " · ".join(shown) or json.dumps(usage)


def _usage_details(usage: dict[str, Any]) -> str:
    return ", ".join(f"{key}: {value}" for key, value in usage.items())


class Transcript:
    """One generation as it arrives (model text, the guest's stdout and stderr, its
    sessions) and as it is shown: HTML for a notebook, plain text for the rest. Shared by
    the cell display and the prompt box."""

    def __init__(self, header: str) -> None:
        self.header = header
        self.status = "running"
        self.sessions: list[str] = []
        self._session_records: list[Any] = []  # the Session objects, for their generations' counts
        self._since = time.perf_counter()  # generations that started since then are this transcript's
        self._closed: set[str] = set()
        self.error: BaseException | None = None
        self._text: list[str] = []
        self._stdout = bytearray()
        self._stderr = bytearray()
        self._last_shown = 0.0
        # Where the model text is shown in another form once the run has ended (e.g. "shaded by
        # probability below"): then it is folded here.
        self.text_below: str | None = None

    def add(self, event: Event) -> None:
        if event.kind is EventKind.TOKEN:
            self._text.append(event.data)
        elif event.kind is EventKind.STDOUT:
            self._stdout += event.data
        elif event.kind is EventKind.STDERR:
            self._stderr += event.data
        elif event.kind is EventKind.NN_ERROR:  # in order with what the guest says about it
            self._stderr += f"{_HOST_NOTE}{event.data}\n".encode()
        elif event.kind is EventKind.SESSION and all(event.data is not known for known in self._session_records):
            self._session_records.append(event.data)
            if event.data.id not in self.sessions:
                self.sessions.append(event.data.id)
            event.data.on_close(lambda session: self._closed.add(session.id))

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
        # A session that closed with its guest (one run without --session) is gone: not named.
        live = [sid for sid in self.sessions if sid not in self._closed]
        sessions = f" · session {', '.join(live)}" if live else ""
        return f"{self.header}{sessions} · {self.status}"

    @property
    def finished(self) -> bool:
        return self.status not in ("running", "stopping")

    @property
    def failed(self) -> bool:
        return self.error is not None or self.status == "failed"

    def kept_and_dropped(self) -> tuple[str, str]:
        """The model text as the guest kept it, and the tail it dropped. A guest that
        printed a proper prefix of the text and ended its line (``chat`` stops at its turn
        marker, which the model has already written) kept that much; any other guest, all
        of it. Only for a run that ended by itself: while tokens come the guest's output
        lags behind them, and a stopped or interrupted guest never sees the last token."""
        text, stdout = self.text, self.stdout
        printed = stdout.rstrip()
        if (self.status in ("done", "waiting for the next turn") and stdout.endswith("\n") and printed
                and len(printed) < len(text.rstrip()) and text.startswith(printed)):
            return text[: len(printed)], text[len(printed) :]
        return text, ""

    def split_stderr(self) -> tuple[list[dict[str, Any]], list[str], str]:
        """The guest's usage reports; the failed wasi-nn calls it handled (in a run that
        did not fail: it went on after them); and the rest of its stderr (a failed run's
        calls among it, in order)."""
        usages, rest = split_usage(self.stderr, complete=self.finished)
        if self.failed or not self.finished:
            return usages, [], rest
        lines = rest.splitlines(keepends=True)
        handled = [line.removeprefix(_HOST_NOTE).rstrip("\n") for line in lines if line.startswith(_HOST_NOTE)]
        return usages, handled, "".join(line for line in lines if not line.startswith(_HOST_NOTE))

    def usage_captions(self, usages: list[dict[str, Any]]) -> list[str]:
        """Each usage report in words, with how much of its prompt was evaluated where the
        session's record of that generation says (the reports and the records of this
        transcript's generations pair up in order, when their prompt sizes agree)."""
        generations = sorted((g for session in self._session_records for g in list(session.generations)
                              if g.started >= self._since), key=lambda g: g.started)
        if len(generations) != len(usages):
            generations = [None] * len(usages)
        return [describe_usage(usage, g.evaluated_tokens if g is not None and usage.get("input_tokens") == g.prompt_tokens
                               else None) for usage, g in zip(usages, generations)]

    def distinct_stdout(self) -> str:
        """The guest's stdout when it is more than the model's text: a guest that prints its
        tokens (all of them; fewer while they come, or when it was stopped) would otherwise
        show them twice."""
        stdout = self.stdout
        printed = stdout.strip()
        return stdout if printed and not self.kept_and_dropped()[0].strip().startswith(printed) else ""

    def html(self) -> str:
        kept, dropped = self.kept_and_dropped()
        stdout = self.distinct_stdout()
        usages, handled, stderr = self.split_stderr()
        parts = [f'<div style="{_STYLE_CAPTION}">{html.escape(self.caption())}</div>']
        text = f'<pre style="{_STYLE_TEXT}">{html.escape(kept)}</pre>'
        if self.finished and kept.strip() and kept.strip() in stdout:  # the guest's output has it: folded
            parts.append(f'<details><summary style="{_STYLE_CAPTION}">model text ({len(kept)} characters, also in '
                         f"the guest's stdout below)</summary>{text}</details>")
        elif self.finished and kept and self.text_below:
            parts.append(f'<details><summary style="{_STYLE_CAPTION}">model text ({len(kept)} characters, '
                         f"{html.escape(self.text_below)})</summary>{text}</details>")
        elif kept or not self.finished:  # nothing came: no empty box (a guest that only prints shows its stdout)
            parts.append(text)
        if dropped:
            note = dropped if len(dropped) <= 60 else dropped[:60] + "…"
            parts.append(f'<div style="{_STYLE_CAPTION}">the guest stopped here; the model went on with '
                         f'{html.escape(json.dumps(note, ensure_ascii=False))}</div>')
        if stdout:  # what the guest printed, when it is more than the model's text: its output, open
            parts.append(f'<details open><summary style="{_STYLE_CAPTION}">guest stdout ({len(self._stdout)} bytes)'
                         f'</summary><pre style="{_STYLE_GUEST}">{html.escape(stdout)}</pre></details>')
        for usage, caption in zip(usages, self.usage_captions(usages)):
            parts.append(f'<div style="{_STYLE_CAPTION}" title="{html.escape(_usage_details(usage))}">'
                         f"usage · {html.escape(caption)}</div>")
        for note in handled:
            parts.append(f'<div style="{_STYLE_CAPTION}">a call failed and the guest handled it (it went on): '
                         f"{html.escape(note)}</div>")
        if stderr.strip():
            style = _STYLE_STDERR if self.failed else _STYLE_NOTES
            parts.append(f'<pre style="{style}">{html.escape(stderr)}</pre>')
        if self.error is not None:
            parts.append(f'<pre style="{_STYLE_STDERR}">{html.escape(f"{type(self.error).__name__}: {self.error}")}</pre>')
        return "".join(parts)

    def sections(self) -> tuple[list[str], str]:
        """What follows the model text in plain text (the guest's stdout when it is more
        than the text, usage, handled calls), and the rest of the guest's stderr."""
        usages, handled, stderr = self.split_stderr()
        lines = ["[guest stdout]", self.stdout.rstrip("\n")] if self.distinct_stdout() else []
        lines += [f"[usage: {caption}]" for caption in self.usage_captions(usages)]
        lines += [f"[handled by the guest: {note}]" for note in handled]
        return lines, stderr if stderr.strip() else ""

    def plain(self) -> str:
        lines, stderr = self.sections()
        return "\n".join([f"[{self.caption()}]", self.kept_and_dropped()[0], *lines,
                          *(["[guest stderr]", stderr] if stderr else [])])


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
        lines, stderr = transcript.sections()
        if stderr:
            sys.stderr.write(f"[guest stderr]\n{stderr}")
        for line in lines:
            print(line)
        print(f"[{transcript.caption()}]")

    def _bundle(self) -> dict[str, str]:
        return {"text/html": self.transcript.html(), "text/plain": self.transcript.plain()}


_matplotlib_warm = False


def _warm_up_matplotlib() -> None:
    """Import matplotlib and render once (fonts, the Agg canvas): the first redraw of a
    live plot did all that while holding the GIL, stalling the generation it plotted by
    seconds on a busy machine."""
    global _matplotlib_warm
    if _matplotlib_warm:
        return
    import io

    from matplotlib.figure import Figure

    figure = Figure(figsize=(1, 1))
    figure.subplots().set_title("warm-up")
    figure.savefig(io.BytesIO(), format="png")
    _matplotlib_warm = True


class LivePlot:
    """An ``on_event`` callback that redraws per-token latency while tokens stream.

    The latencies are the session's own (``Generation.token_times``: when each token was
    made, on the guest's thread), not when this callback got round to a token: a redraw
    takes a while, and the tokens that came meanwhile would show its cost as theirs.
    Without a session (no SESSION event) it falls back to when the tokens arrived.

    A redraw runs on the kernel's thread and holds the GIL for much of it, so it slows the
    generation it plots: redraws are at most ``REDRAWS_PER_SECOND``, and further apart when
    drawing is slow (never more than a fifth of the time), with a matplotlib ``Figure`` of
    its own rather than pyplot's."""

    REDRAWS_PER_SECOND = 2
    DRAWING_SHARE = 0.2

    def __init__(self) -> None:
        self._arrivals: list[float] = []
        self._sessions: list[Any] = []
        self._since = time.perf_counter()
        self._last_draw = 0.0
        self._gap = 1 / self.REDRAWS_PER_SECOND
        _warm_up_matplotlib()  # before the guest starts, not in the middle of its tokens
        self._handle: Any = display({"text/plain": "waiting for tokens…"}, raw=True, display_id=True)

    def __call__(self, event: Event) -> None:
        if event.kind is EventKind.SESSION and all(event.data is not s for s in self._sessions):
            self._sessions.append(event.data)
        elif event.kind is EventKind.TOKEN:
            self._arrivals.append(time.perf_counter())
            if time.monotonic() - self._last_draw >= self._gap:
                self._draw()

    def finish(self, status: str) -> None:
        self._draw()

    def latencies(self) -> tuple[int, list[float]]:
        """Tokens so far, and the milliseconds between each and the one before it (within
        a generation)."""
        generations = sorted((g for session in self._sessions for g in list(session.generations)
                              if g.started >= self._since), key=lambda g: g.started)
        runs = [list(g.token_times) for g in generations] or [list(self._arrivals)]
        latencies = [(b - a) * 1e3 for times in runs for a, b in itertools.pairwise(times)]
        return sum(len(times) for times in runs), latencies

    def _draw(self) -> None:
        import io

        from matplotlib.figure import Figure

        started = self._last_draw = time.monotonic()
        count, latencies = self.latencies()
        if not latencies:
            return
        figure = Figure(figsize=(6, 2.4))
        ax = figure.subplots()
        ax.plot(range(1, len(latencies) + 1), latencies, linewidth=1)
        ax.set_xlabel("token")
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"{count} tokens, {1e3 * len(latencies) / sum(latencies):.1f} tokens/s")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        png = base64.b64encode(buffer.getvalue()).decode("ascii")  # raw image data travels as base64
        self._handle.update({"image/png": png, "text/plain": f"<{count} tokens>"}, raw=True)
        spent = time.monotonic() - started
        self._gap = max(1 / self.REDRAWS_PER_SECOND, spent / self.DRAWING_SHARE)
