"""What the line magics and the session browser show of sessions: the token counts
under one set of names (the cell's usage caption uses them too), a session's parameters
as a short table (what differs from the defaults first, the rest folded), and metrics
rounded, with units."""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from ..sessions import Session

__all__ = ["COUNTS_NOTE", "COUNT_COLUMNS", "GENERATED_TOKENS", "PROMPT_TOKENS", "Parameters", "facts_html", "session_counts",
           "stats_table"]

PROMPT_TOKENS = "prompt tokens"  # a generation's whole prompt (a guest's usage report calls it input_tokens)
EVALUATED_TOKENS = "evaluated tokens"  # the part of a prompt the model computed: the rest came from its KV cache
GENERATED_TOKENS = "generated tokens"  # what the model made (output_tokens)
LATEST_PROMPT_TOKENS = f"latest {PROMPT_TOKENS}"
COUNT_COLUMNS = ("generations", LATEST_PROMPT_TOKENS, EVALUATED_TOKENS, GENERATED_TOKENS)
COUNTS_NOTE = (f"{LATEST_PROMPT_TOKENS}: the whole prompt of the latest generation of the session; "
               f"{EVALUATED_TOKENS}: the prompt tokens the model computed, the rest coming from its cache; "
               f"{GENERATED_TOKENS}: what it made. Evaluated and generated add up every generation of the session.")

_STYLE_CAPTION = "color:#888;font-size:85%"
_STYLE_KEY = "color:#666;padding:1px 8px 1px 0;text-align:left"
_STYLE_VALUE = "padding:1px 16px 1px 0;text-align:left"
_TABLE = '<table style="font-size:90%;border-collapse:collapse">'
_GRID_COLUMNS = 3  # name/value pairs per row of the folded parameters

# session.metrics() column -> (shown as, decimals): every column of it, unrounded, is
# session.metrics() itself.
_STATS = {
    "prompt_tokens": (PROMPT_TOKENS, 0),
    "evaluated_tokens": (EVALUATED_TOKENS, 0),
    "output_tokens": (GENERATED_TOKENS, 0),
    "prompt_eval_s": ("prompt eval (s)", 3),
    "ttft_s": ("first token (s)", 3),
    "decode_tok_per_s": ("decode (tokens/s)", 1),
    "wall_s": ("total (s)", 2),
}


def session_counts(session: Session) -> dict[str, int]:
    """A session's generations and token counts, named as everywhere in the notebook layer."""
    generations = list(session.generations)
    counts = (len(generations), generations[-1].prompt_tokens if generations else 0,
              sum(g.evaluated_tokens for g in generations), sum(g.output_tokens for g in generations))
    return dict(zip(COUNT_COLUMNS, counts))


def stats_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """``session.metrics()`` as ``%wasi_nn stats`` shows it: the columns a person reads
    first, named with their units, rounded."""
    shown = metrics[list(_STATS)].rename(columns={column: name for column, (name, _) in _STATS.items()})
    return shown.round({name: decimals for name, decimals in _STATS.values()})


def _rows(pairs: list[tuple[str, str]], columns: int) -> str:
    cells = [f'<td style="{_STYLE_KEY}">{html.escape(key)}</td><td style="{_STYLE_VALUE}">{html.escape(value)}</td>'
             for key, value in pairs]
    return "".join(f"<tr>{''.join(cells[i:i + columns])}</tr>" for i in range(0, len(cells), columns))


def facts_html(facts: dict[str, Any], columns: int = 2) -> str:
    """Name/value pairs as a small table, values as a person reads them (no quotes)."""
    return f"{_TABLE}{_rows([(key, str(value)) for key, value in facts.items()], columns)}</table>"


class Parameters(dict[str, Any]):
    """A session's parameters: a dict (``%wasi_nn get SESSION``), shown as a short table
    of what differs from the backend's defaults, with the rest folded below it."""

    def __init__(self, session: Session) -> None:
        super().__init__(session.parameters)
        self.session_id = session.id
        self._options = session.options
        self._defaults = session.options.defaults

    def _describe(self, key: str, value: Any) -> str:
        option = self._options.get(key)
        if option is not None and value in option.special:
            return option.describe(value)
        if isinstance(value, str) and not value:
            return "(none)"
        if isinstance(value, str):  # quoted only where its edges or a control character would not show
            return value if value.strip() == value and value.isprintable() else json.dumps(value)
        return str(value)

    def changed(self) -> list[str]:
        """The parameters that differ from the backend's defaults."""
        return [key for key, value in self.items() if key in self._defaults and self._defaults[key] != value]

    def _repr_html_(self) -> str:
        changed = self.changed()
        rest = [(key, self._describe(key, value)) for key, value in self.items() if key not in changed]
        rows = "".join(f'<tr><td style="{_STYLE_KEY}">{html.escape(key)}</td>'
                       f'<td style="{_STYLE_VALUE}"><b>{html.escape(self._describe(key, self[key]))}</b></td>'
                       f'<td style="{_STYLE_CAPTION}">default {html.escape(self._describe(key, self._defaults[key]))}</td></tr>'
                       for key in changed)
        said = f"{len(changed)} of {len(self)} parameters differ from the defaults" if changed else \
            f"all {len(self)} parameters at their defaults"
        table = f"{_TABLE}{rows}</table>" if rows else ""
        folded = (f'<details><summary style="{_STYLE_CAPTION}">the other {len(rest)}, at their defaults</summary>'
                  f"{_TABLE}{_rows(rest, _GRID_COLUMNS)}</table></details>")
        return f'<div style="{_STYLE_CAPTION}">session {html.escape(self.session_id)}: {said}</div>{table}{folded}'

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        changed = self.changed()
        lines = [f"session {self.session_id}: {len(changed)} of {len(self)} parameters differ from the defaults"]
        lines += [f"  {key} = {self._describe(key, self[key])}  (default {self._describe(key, self._defaults[key])})"
                  for key in changed]
        lines.append(f"  the other {len(self) - len(changed)} at their defaults: dict(...) lists them all")
        printer.text("\n".join(lines))
