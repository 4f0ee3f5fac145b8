"""The parameter panel's controls: one per option, built from the option's description."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from ..options import Option, Scope

__all__ = ["Knob", "close_tree", "RELOADS"]

_STYLE = {"description_width": "120px"}
_SLIDER_SPAN = 1024  # an int option with a wider range gets a number field, not a slider
RELOADS = {Scope.CONTEXT: "context", Scope.MODEL: "model"}  # what changing an option of that scope rebuilds


class Knob:
    """The control for one option, built from its description: a slider or a number
    field over its range, and a checkbox for a value that means something else (the
    seed's "random", n-predict's "no limit")."""

    def __init__(self, option: Option, value: Any, on_change: Callable[[str, Any], None]) -> None:
        self.option = option
        self._on_change = on_change
        self._showing = False  # a value from the session being shown is no change to make
        low = option.minimum if option.minimum is not None else 0
        high = option.maximum if option.maximum is not None else option.soft_maximum
        if high is None:
            high = max(abs(option.default) * 4, 1)
        step = option.step or (1 if option.kind is int else 0.01)
        if option.kind is float:
            cls: type[widgets.ValueWidget] = widgets.FloatSlider
        else:
            cls = widgets.IntSlider if high - low <= _SLIDER_SPAN else widgets.BoundedIntText
        special = next(iter(option.special.items()), None)
        if special is not None and special[0] <= low:
            low = special[0] + 1  # the special value is the checkbox's, not the control's
        elif special is not None and special[0] >= high:
            high = special[0] - 1
        tooltip = f"{option.help} (default {option.describe(option.default)})"
        if option.scope in RELOADS:
            tooltip += f"; changing it reloads the {RELOADS[option.scope]}"
        self.control = cls(value=option.kind(low), min=option.kind(low), max=option.kind(high),
                           step=option.kind(step), description=option.name, tooltip=tooltip,
                           continuous_update=False, style=_STYLE)
        self.special = None if special is None else widgets.Checkbox(
            value=False, description=special[1], indent=False, layout=widgets.Layout(width="auto"))
        self.widget = self.control if self.special is None else widgets.HBox([self.control, self.special])
        self.show(value)
        self.control.observe(self._number_changed, names="value")
        if self.special is not None:
            self.special.observe(self._changed, names="value")

    def _number_changed(self, change: dict[str, Any]) -> None:
        """A number typed or dragged means that number: it unticks the special value."""
        if self.special is not None and self.special.value and not self._showing:
            self._showing = True
            try:
                self.special.value = False
            finally:
                self._showing = False
        self._changed(change)

    def _changed(self, change: dict[str, Any]) -> None:
        if not self._showing:
            self._on_change(self.option.name, self.value)

    @property
    def value(self) -> Any:
        if self.special is not None and self.special.value:
            return next(iter(self.option.special))
        return self.control.value

    def show(self, value: Any) -> None:
        """Show the session's value. A bounded control would clamp a value outside its
        range, and the clamped value would then be written back: widen it first."""
        self._showing = True
        try:
            self._show(value)
        finally:
            self._showing = False

    def _show(self, value: Any) -> None:
        if self.special is not None:
            self.special.value = value in self.option.special
            if self.special.value:
                return
        if value > self.control.max:
            self.control.max = value
        if value < self.control.min:
            self.control.min = value
        self.control.value = value

    def close(self) -> None:
        close_tree(self.widget)


def close_tree(widget: widgets.Widget) -> None:
    for child in getattr(widget, "children", ()):
        close_tree(child)
    widget.close()


