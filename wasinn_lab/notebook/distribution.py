"""The parameter panel's view of the next token's distribution: the model's top tokens
for the session's current text, before the sampler chain and after it with the session's
parameters (pending changes included), as horizontal bars, so that moving a slider shows
what it does before anything is generated.

HTML bars in an ``ipywidgets.HTML``, like the rest of the panel: setting a widget's value
from a thread shows at once (an image or an ``Output`` would be re-encoded or lost), and
the bars cost nothing to draw. The distribution is computed on a thread of the view's own
(the kernel stays responsive while it runs), debounced (a dragged slider asks many
times), and never while a generation runs on the session: the view then says that it
waits, and computes once the generation has ended (its text has changed too).
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Sequence
from typing import Any

import ipywidgets as widgets

from ..errors import Busy, WasiNNLabError
from ..options import Scope
from ..sessions import Session
from .probabilities import visible

__all__ = ["DistributionView", "distribution_html"]

TOP = 20
DEBOUNCE = 0.25  # seconds without a new request before the view computes
# Options that leave the next token's distribution as it is.
_UNRELATED = frozenset({"n-predict", "logprobs"})
_SHOWN_KNOBS = ("temp", "top-k", "top-p", "min-p", "repeat-penalty")
_MODEL, _SAMPLED = "#b9c3d3", "#4a7fd6"
_BAR_WIDTH = 220  # px for probability 1
_CAPTION = "color:#555;font-size:90%"
_CELL = "padding:0 8px 0 0;text-align:left;white-space:pre;font-size:90%"
_BAR = "display:block;height:7px;margin:1px 0"


def _bar(colour: str, probability: float | None) -> str:
    width = 0 if probability is None else max(1, round(probability * _BAR_WIDTH)) if probability > 0 else 0
    return f'<span style="{_BAR};width:{width}px;background:{colour}"></span>'


def _number(probability: float | None) -> str:
    return "–" if probability is None else f"{probability:.3f}"


def distribution_html(before: Sequence[tuple[str, float]], after: Sequence[tuple[str, float]], caption: str = "") -> str:
    """The top tokens before (grey) and after (blue) the sampler chain, one row per token:
    the model's order, then any token the chain brought into its top that the model's top
    lacks (a penalty can). "–": not among the top of that side."""
    model, sampled = dict(before), dict(after)
    order = [text for text, _ in before] + [text for text, _ in after if text not in model]
    rows = "".join(
        f'<tr><td style="{_CELL}"><code>{html.escape(visible(text))}</code></td>'
        f'<td style="{_CELL};width:{_BAR_WIDTH}px">{_bar(_MODEL, model.get(text))}{_bar(_SAMPLED, sampled.get(text))}</td>'
        f'<td style="{_CELL};color:#777">{_number(model.get(text))}</td>'
        f'<td style="{_CELL};color:{_SAMPLED}">{_number(sampled.get(text))}</td></tr>'
        for text in order)
    legend = (f'<span style="background:{_MODEL};padding:0 6px">&nbsp;</span> the model '
              f'<span style="background:{_SAMPLED};padding:0 6px;margin-left:8px">&nbsp;</span> after the sampler chain')
    heading = (f'<tr><th style="{_CELL}">next token</th><th style="{_CELL}">{legend}</th>'
               f'<th style="{_CELL}">model</th><th style="{_CELL}">sampled</th></tr>')
    shown = f'<div style="{_CAPTION}">{html.escape(caption)}</div>' if caption else ""
    return f'{shown}<table style="border-collapse:collapse">{heading}{rows}</table>'


def _note(text: str, *, error: bool = False) -> str:
    return f'<div style="{"color:#a33;font-size:90%" if error else _CAPTION}">{html.escape(text)}</div>'


class DistributionView(widgets.HTML):
    """The next token's distribution for ``session``, kept up to date; see the module
    docstring. ``distribution`` is the latest computed (``before``, ``after``);
    ``wait()`` waits until the view shows the session as it is now."""

    def __init__(self, session: Session, top: int = TOP) -> None:
        super().__init__(_note("next token: computing…"))
        self.session = session
        self.top = top
        self.distribution: Any = None  # the latest NextTokenDistribution
        self.error: BaseException | None = None  # why the latest computation failed
        self._wake = threading.Condition()
        self._due: float | None = None  # when to compute: a request waits DEBOUNCE for the next one
        self._closed = False
        self._idle = threading.Event()
        # A token asks without putting the computation off: tokens come faster than the
        # debounce, and one that restarted it would never let the view say it waits.
        self._removers = [session.watch(self._changed), session.add_listener(lambda token: self.request(restart=False)),
                          session.on_close(lambda closed: self.close())]
        self._thread = threading.Thread(target=self._work, name=f"wasinn-lab-distribution-{session.id}", daemon=True)
        self.request()
        self._thread.start()

    def request(self, *, restart: bool = True) -> None:
        """Compute again, DEBOUNCE seconds after the last request (``restart=False``: after
        the first of those pending); any thread."""
        with self._wake:
            self._idle.clear()
            waiting = self._due is None
            if waiting or restart:
                self._due = time.monotonic() + DEBOUNCE
            if waiting:  # else the worker is counting down already, and finds the new time when it wakes
                self._wake.notify()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until nothing is left to compute; False if something still is after ``timeout``."""
        return self._idle.wait(timeout)

    def _changed(self, changed: dict[str, Any]) -> None:
        options = self.session.options
        if any((option := options.get(key)) is None or (option.scope is Scope.GENERATION and key not in _UNRELATED)
               for key in changed):
            self.request()

    def _next_due(self) -> bool:
        """Wait for a request and its debounce; False once closed."""
        with self._wake:
            while not self._closed:
                if self._due is None:
                    self._idle.set()
                    self._wake.wait()
                elif (delay := self._due - time.monotonic()) > 0:
                    self._wake.wait(delay)
                else:
                    self._due = None
                    return True
            return False

    def _work(self) -> None:
        while self._next_due():
            self._compute()

    def _wait_for_the_generation(self) -> None:
        """Never between two of its tokens (the session refuses): ask again until it ends."""
        self.value = _note("next token: waiting for the generation under way to end…")
        self.request()

    def _compute(self) -> None:
        if self.session.generating:
            self._wait_for_the_generation()
            return
        parameters = self.session.parameters
        settings = ", ".join(f"{key}={parameters[key]}" for key in _SHOWN_KNOBS if key in parameters)
        try:
            self.distribution = self.session.next_token_distribution(self.top)
        except Busy:  # a generation began meanwhile
            self._wait_for_the_generation()
            return
        except WasiNNLabError as exc:
            self.error = exc
            self.value = _note(f"next token: {exc}", error=True)
            return
        except Exception as exc:  # shown, not lost on a thread nobody reads
            self.error = exc
            self.value = _note(f"next token: {type(exc).__name__}: {exc}", error=True)
            return
        self.error = None
        self.value = distribution_html(self.distribution.before, self.distribution.after,
                                       f"the next token after session {self.session.id}'s text, top {self.top}: "
                                       f"{settings}")

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        for remove in getattr(self, "_removers", ()):
            remove()
        thread = getattr(self, "_thread", None)
        if thread is not None and thread is not threading.current_thread() and thread.is_alive():
            thread.join(timeout=30)
        super().close()
