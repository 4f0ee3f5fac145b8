"""A generation read through its probabilities: each token shaded by how likely the model
found it, its alternatives on hover, and entropy and probability along the generation.

It is plain HTML with inline styles, not a widget (anywidget or ipywidgets): a widget
shows nothing without its kernel and its front-end extension (a saved notebook, nbviewer,
a notebook opened in VS Code before its kernel starts), and each front-end loads widget
code its own way. HTML output renders the same in JupyterLab, Notebook 7 and VS Code, and
a saved notebook keeps it. The hover popup needs no JavaScript: one ``<style>`` block,
scoped to this output by a class of its own, shows a token's popup on ``:hover``. Where
the front-end strips ``<style>`` (JupyterLab sanitizes the HTML of an untrusted notebook),
the popups stay hidden (their ``display:none`` is inline; the stylesheet overrides it
with ``!important``) and the text reads as plain shaded text; the table folded under it
(``<details>``, a click) gives every token's alternatives in every front-end.

The data is ``session.token_metrics()`` (with ``-p logprobs=K``): ``logprob`` (the
token's log probability under the model, before any sampler), ``probability`` (after the
sampler chain), ``rank``, ``entropy`` (nats) and ``top`` (the K likeliest as (text,
logprob)).
"""

from __future__ import annotations

import html
import itertools
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from IPython.display import display

from ..tasks import Event, EventKind

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from ..sessions import Session

__all__ = ["DETAIL_COLUMNS", "ProbabilityCell", "ProbabilityView", "legend_html", "probability_colour", "show",
           "visible"]

DETAIL_COLUMNS = ("logprob", "probability", "rank", "entropy", "top")
# Low probability red, high green (matplotlib's RdYlGn), mixed with white so that black
# text stays readable on every shade.
_COLOUR_MAP = "RdYlGn"
_TINT = 0.55
_LEGEND_STEPS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
_STYLE_TEXT = ("white-space:pre-wrap;margin:0;padding:6px 8px;border-left:3px solid #4a7fd6;font-size:95%;"
               "line-height:1.9;font-family:var(--jp-code-font-family, monospace)")
_STYLE_CAPTION = "color:#888;font-size:80%"
# Shared by every token, so in the output's <style> block: only what must survive a
# sanitizer that strips it (the shade, the popups' being hidden) is written inline. A
# popup is placed absolutely in the text block with no top: it opens at the block's left
# edge right under the hovered token's line. JupyterLab's output areas clip what overflows
# them (an absolutely placed box included; a fixed one lands where the page was before it
# scrolled), so the view keeps room under its last line for a popup (_POPUP_LINE).
_CLASSES = {
    "x": "position:relative",
    "t": "border-radius:2px;padding:1px 0;cursor:default",
    "a": ("position:absolute;left:0;margin-top:2px;z-index:10;padding:4px 6px;background:#fff;"
          "color:#222;border:1px solid #bbb;border-radius:3px;box-shadow:0 2px 6px #0003;white-space:pre;"
          "font-size:85%;line-height:1.35"),
    "w": "display:inline-block;width:84px",
    "b": "display:inline-block;height:0.7em;background:#4a7fd6;vertical-align:middle",
    "c td,.{scope}-c th": "padding:1px 10px 1px 0;text-align:left;white-space:pre",  # the table's cells
}
_POPUP_LINE = 1.15  # em of the view's font, a line of a popup
_UNDER_TEXT = 2.5  # em the legend and the table's summary take under the text
_view_numbers = itertools.count(1)


def probability_colour(probability: float) -> str:
    """The background for a token the model gave ``probability``: red (unlikely) to
    green (sure), tinted towards white."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    red, green, blue, _ = colormaps[_COLOUR_MAP](min(max(probability, 0.0), 1.0))
    return to_hex((_TINT * red + 1 - _TINT, _TINT * green + 1 - _TINT, _TINT * blue + 1 - _TINT))


def visible(text: str) -> str:
    """A token's text with its whitespace made visible (a space ␣, a newline ↵, a tab ⇥):
    " the" and "the" are different tokens."""
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍") or "∅"


def _percent(probability: float) -> str:
    if probability >= 0.995:
        return "100%" if probability >= 1 else ">99%"
    return f"{probability:.0%}" if probability >= 0.01 else "<1%"


def legend_html() -> str:
    """The colour scale, as swatches from 0 to 1."""
    swatches = "".join(f'<span style="background:{probability_colour(p)};padding:0 6px;margin-right:1px">'
                       f"{p:g}</span>" for p in _LEGEND_STEPS)
    return (f'<div style="{_STYLE_CAPTION};margin-top:4px">token probability under the model: '
            f"{swatches} · hover a token for its alternatives</div>")


def _alternatives(row: Any) -> list[tuple[str, float]]:
    return [(str(text), math.exp(logprob)) for text, logprob in (row.top or ())]


def _popup(row: Any, scope: str) -> str:
    chosen = str(row.text)
    lines = [f"<b>{html.escape(visible(chosen))}</b>",
             f"p {row.p_model:.3f} · rank {int(row.rank)} · sampled at {row.probability:.3f} · "
             f"entropy {row.entropy:.2f} nats"]
    for text, probability in _alternatives(row):
        mark = "font-weight:bold" if text == chosen else ""
        lines.append(f'<span class="{scope}-w"><span class="{scope}-b" style="width:{max(1, round(probability * 80))}px">'
                     f'</span></span>{_percent(probability):>4} <span style="{mark}">{html.escape(visible(text))}</span>')
    return "<br>".join(lines)


def _token_span(row: Any, scope: str) -> str:
    text = str(row.text)
    if math.isnan(row.p_model):  # recorded without logprobs: unshaded
        return html.escape(text)
    # A newline token gets a mark of its own, or its shade would be invisible.
    shown = html.escape(text).replace("\n", '<span style="opacity:0.45">↵</span>\n')
    return (f'<span class="{scope}-t" style="background:{probability_colour(row.p_model)}" data-p="{row.p_model:.4f}">'
            f'{shown}<span class="{scope}-a" style="display:none">{_popup(row, scope)}</span></span>')


def _table(rows: Sequence[Any], scope: str) -> str:
    header = "".join(f"<th>{name}</th>" for name in
                     ("#", "token", "p (model)", "rank", "p (after the sampler)", "entropy (nats)", "alternatives"))
    body = "".join(
        f'<tr><td>{row.token}</td><td style="background:{probability_colour(row.p_model)}">'
        f"{html.escape(visible(str(row.text)))}</td><td>{row.p_model:.3f}</td><td>{int(row.rank)}</td>"
        f"<td>{row.probability:.3f}</td><td>{row.entropy:.2f}</td><td>"
        + html.escape(", ".join(f"{visible(text)} {_percent(p)}" for text, p in _alternatives(row)))
        + "</td></tr>"
        for row in rows if not math.isnan(row.p_model))
    return f'<table class="{scope}-c" style="font-size:85%;border-collapse:collapse"><tr>{header}</tr>{body}</table>'


class ProbabilityView:
    """Generated tokens with their probabilities (rows of ``session.token_metrics()``,
    one generation or several), shown as shaded HTML in a notebook and as a plain list
    elsewhere. ``figure()`` plots entropy and probability along the generation."""

    def __init__(self, tokens: pd.DataFrame, caption: str = "") -> None:
        missing = [column for column in ("generation", "token", "text", *DETAIL_COLUMNS) if column not in tokens]
        if missing:
            raise ValueError(f"token rows without {', '.join(missing)}: pass session.token_metrics() rows")
        self.tokens = tokens
        self.caption = caption

    @classmethod
    def of(cls, session: Session, generation: int = -1) -> ProbabilityView:
        """The view of one of ``session``'s generations (by default its latest)."""
        from ..errors import InvalidArgument

        count = len(session.generations)
        if not count:
            raise InvalidArgument(f"session {session.id} has no generation yet: run a guest in it first")
        number = generation if generation >= 0 else count + generation
        if not 0 <= number < count:
            raise InvalidArgument(f"session {session.id} has generations 0 to {count - 1}, not {generation}")
        tokens = session.token_metrics()
        return cls(tokens[tokens["generation"] == number], f"session {session.id} · generation {number}")

    @property
    def recorded(self) -> bool:
        """Whether the tokens carry probabilities (the generation ran with logprobs on)."""
        return bool(len(self.tokens)) and bool(self.tokens["logprob"].notna().any())

    def _rows(self) -> dict[str, list[Any]]:
        """Each generation's rows, by its name ("generation N", and its session's id where
        the rows come from several sessions: each numbers its own)."""
        frame = self.tokens.assign(p_model=self.tokens["logprob"].astype(float).map(math.exp))
        if "session" not in frame:
            return {f"generation {number}": list(group.itertuples(index=False))
                    for number, group in frame.groupby("generation")}
        return {f"session {session} · generation {number}": list(group.itertuples(index=False))
                for (session, number), group in frame.groupby(["session", "generation"], sort=False)}

    def _absent(self) -> str:
        return ("no token probabilities were recorded: run the generation with -p logprobs=K "
                "(or --show probs, which turns them on)") if len(self.tokens) else "no tokens were generated"

    def html(self) -> str:
        scope = f"wasinn-probs-{next(_view_numbers)}"
        rules = "".join(f".{scope}-{name.format(scope=scope)}{{{rule}}}" for name, rule in _CLASSES.items())
        style = (f"<style>{rules}.{scope}-t:hover{{outline:1px solid #333}}"
                 f".{scope}-t:hover>.{scope}-a{{display:block!important}}</style>")
        popup_lines = 2 + max((len(top) for top in self.tokens["top"] if top), default=0)
        room = max(0.0, popup_lines * _POPUP_LINE - _UNDER_TEXT) if self.recorded else 0
        parts = [f'<div class="{scope}" style="padding-bottom:{room:.1f}em">{style}']
        if self.caption:
            parts.append(f'<div style="{_STYLE_CAPTION}">{html.escape(self.caption)}</div>')
        if not self.recorded:
            parts.append(f'<div style="{_STYLE_CAPTION}">{html.escape(self._absent())}</div></div>')
            return "".join(parts)
        generations = self._rows()
        for name, rows in generations.items():
            if len(generations) > 1:
                parts.append(f'<div style="{_STYLE_CAPTION}">{html.escape(name)}</div>')
            parts.append(f'<div class="{scope}-x" style="{_STYLE_TEXT}">'
                         f'{"".join(_token_span(row, scope) for row in rows)}</div>')
        parts.append(legend_html())
        rows = [row for group in generations.values() for row in group]
        parts.append(f'<details><summary style="{_STYLE_CAPTION}">each token, its probability and its alternatives'
                     f" ({len(rows)} tokens)</summary>{_table(rows, scope)}</details></div>")
        return "".join(parts)

    def plain(self) -> str:
        lines = [f"[{self.caption}]"] if self.caption else []
        if not self.recorded:
            return "\n".join([*lines, self._absent()])
        for name, rows in self._rows().items():
            lines.append(f"{name}: p (model), rank, entropy, token, alternatives")
            lines += [f"  {row.p_model:6.3f} {int(row.rank):4d} {row.entropy:6.2f}  {visible(str(row.text)):<14} "
                      + ", ".join(f"{visible(text)} {_percent(p)}" for text, p in _alternatives(row))
                      for row in rows if not math.isnan(row.p_model)]
        return "\n".join(lines)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/html": self.html(), "text/plain": self.plain()}

    def figure(self) -> Figure:
        """Entropy and the chosen token's probability along the generation."""
        from .. import plots

        return plots.token_probabilities(self.tokens)


def _png(figure: Figure) -> dict[str, str]:
    """A figure as a display bundle (pyplot's own display would show it twice)."""
    import base64
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(figure)
    return {"image/png": base64.b64encode(buffer.getvalue()).decode("ascii"), "text/plain": "<token probabilities plot>"}


def show(view: ProbabilityView, *, in_kernel: bool = True) -> None:
    """Display the view and, in a notebook, its plot below it."""
    display(view)
    if in_kernel and view.recorded:
        display(_png(view.figure()), raw=True)


class ProbabilityCell:
    """An ``on_event`` callback that shows a cell's generations through their
    probabilities, below the cell's text: shaded as the tokens come (in a kernel), and
    with the plot once they have ended. The rows are the sessions' records
    (``Generation.token_details``): the sessions a run without ``--session`` used are
    closed by the end, and keep them.

    Every update resends the whole view, a few hundred bytes a token: updates are at most
    ``UPDATES_PER_SECOND``, and further apart as the view grows (``BYTES_PER_SECOND``),
    for the server's output rate limit; the final state is always shown."""

    UPDATES_PER_SECOND = 4
    BYTES_PER_SECOND = 250_000

    def __init__(self, caption: str, *, in_kernel: bool) -> None:
        self.caption = caption
        self.view: ProbabilityView | None = None
        self._in_kernel = in_kernel
        self._sessions: list[Session] = []
        self._since = time.perf_counter()  # generations that started since then are this cell's
        self._next_update = 0.0
        # Placeholders, so that the view and its plot stay below the text whatever else the cell shows.
        self._handles: list[Any] = [display({"text/plain": text}, raw=True, display_id=True)
                                    for text in ("token probabilities: waiting for tokens…", "")] if in_kernel else []

    def __call__(self, event: Event) -> None:
        if event.kind is EventKind.SESSION and all(event.data is not known for known in self._sessions):
            self._sessions.append(event.data)
        elif event.kind is EventKind.TOKEN and self._in_kernel and time.monotonic() >= self._next_update:
            page = ProbabilityView(self.tokens(), self.caption).html()
            self._handles[0].update({"text/html": page, "text/plain": "token probabilities: running…"}, raw=True)
            self._next_update = time.monotonic() + max(1 / self.UPDATES_PER_SECOND, len(page) / self.BYTES_PER_SECOND)

    def tokens(self) -> pd.DataFrame:
        """The token rows of this cell's generations, numbered as in their sessions."""
        import pandas as pd

        from ..metrics import tokens_frame

        frames = []
        for session in self._sessions:
            generations = list(session.generations)
            first = next((n for n, generation in enumerate(generations) if generation.started >= self._since),
                         len(generations))
            frame = tokens_frame(generations[first:])
            frames.append(frame.assign(generation=frame["generation"] + first, session=session.id))
        return pd.concat(frames) if frames else tokens_frame([])

    def conclude(self) -> ProbabilityView:
        """The view of the cell's generations (made once they have ended)."""
        if self.view is None:
            self.view = ProbabilityView(self.tokens(), self.caption)
        return self.view

    def finish(self, status: str) -> None:
        view = self.conclude()
        if not self._in_kernel:
            display(view)
            return
        text, plot = self._handles
        text.update(view)
        if view.recorded:
            plot.update(_png(view.figure()), raw=True)
