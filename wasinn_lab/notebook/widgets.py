"""Widgets
=======

Three small panels built from plain ipywidgets, for steering the lab with the mouse.
They talk to the same lab as the magics (``lab()``), so a session made in a
``%%wasi_nn ... --session NAME`` cell can be tuned, prompted and closed here, and the
other way round::

    from wasinn_lab.widgets import parameter_panel, prompt_box, session_browser

    parameter_panel("knobs")              # sliders for temp, top-p, top-k, min-p, ...
    prompt_box("stream", session="knobs") # a prompt, Generate and Stop, streamed output
    session_browser()                     # open sessions: parameters, counts, Close

``parameter_panel(session_id)``
    Sliders and number fields for temp, top-p, top-k, min-p, repeat-penalty,
    n-predict, seed, ctx-size, n-gpu-layers and threads, read from the session. A change
    is a ``session.set(...)`` and applies to the session's next generation. ctx-size and
    threads need a new llama context, n-gpu-layers loads the weights again: the panel
    does that at once, off the main thread, and its status line says how long it took
    (or why it failed). The session is the one source of truth: ``%wasi_nn set knobs
    temp=0.1`` moves the temp slider. ``panel.close()`` stops following the session.

``prompt_box(guest="stream", session=None, model="default", params=None)``
    Generate runs the guest on a worker thread, so the notebook stays responsive, and
    streams the model's text into the box (about 15 updates a second, then the final
    state). Stop ends the generation within one token; the session stays usable.
    Errors are shown in the box, in red. ``box.result`` holds the latest ``CellResult``
    (``box.error`` the latest error) and ``box.wait(timeout)`` waits for the worker, which
    makes the box scriptable: ``box.generate("Once upon a time"); box.wait(60)``.

``session_browser()``
    The open sessions; the selected one's model, guest, state, token counts and
    parameters; Close (``lab().close(id)``) and Refresh.

Generation never runs inside ``with Output():`` (that swallows exceptions); the boxes
write to ``HTML`` widgets. Widgets work headless too: set ``value`` traits and call
``Button.click()``.
"""

from __future__ import annotations

import html
import os
import threading
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

import ipywidgets as widgets
import traitlets

from ..backends.llama_options import OPTIONS, Scope
from ..errors import WasiNNLabError
from ..sessions import Session
from ..tasks import Event, EventKind, GuestTask
from .display import Transcript
from .lab import CellResult, lab

__all__ = ["ParameterPanel", "PromptBox", "SessionBrowser", "parameter_panel", "prompt_box", "session_browser"]

_STYLE = {"description_width": "120px"}
_ERROR = "color:#a33"

# The panel's knobs: widget, largest value offered, step. Types, minima and scopes come
# from the backend's catalogue of options.
_KNOBS: dict[str, tuple[type[widgets.ValueWidget], float, float]] = {
    "temp": (widgets.FloatSlider, 2.0, 0.05),
    "top-p": (widgets.FloatSlider, 1.0, 0.01),
    "top-k": (widgets.IntSlider, 200, 1),
    "min-p": (widgets.FloatSlider, 1.0, 0.01),
    "repeat-penalty": (widgets.FloatSlider, 2.0, 0.05),
    "n-predict": (widgets.BoundedIntText, 1 << 20, 1),
    "seed": (widgets.BoundedIntText, 0xFFFFFFFF, 1),  # shown by SeedField: "random" or the number
    "ctx-size": (widgets.BoundedIntText, 1 << 20, 256),
    "n-gpu-layers": (widgets.BoundedIntText, 1024, 1),
    "threads": (widgets.IntSlider, os.cpu_count() or 1, 1),
}
_RELOADS = {Scope.CONTEXT: "context", Scope.MODEL: "model"}
RANDOM_SEED = OPTIONS["seed"].default  # llama.cpp's "a new seed every generation"


class SeedField(widgets.HBox):
    """The seed as a person reads it: "random" (llama.cpp's 4294967295) or a number.
    ``value`` is the number the session holds; type a seed, or "random" (or -1, or
    nothing) to go back to a random one. Text that is neither is put back."""

    value = traitlets.Int(RANDOM_SEED)
    disabled = traitlets.Bool(False)

    def __init__(self, value: int, *, description: str, tooltip: str, style: Mapping[str, str]) -> None:
        self.text = widgets.Text(description=description, tooltip=tooltip, placeholder="random, or a number",
                                 continuous_update=False, style=dict(style))
        super().__init__([self.text])
        self.min, self.max = 0, RANDOM_SEED
        traitlets.link((self, "disabled"), (self.text, "disabled"))
        self.text.observe(self._typed, names="value")
        self.observe(lambda change: self._show(), names="value")
        self.value = value
        self._show()

    @property
    def continuous_update(self) -> bool:  # as the other knobs: a value is sent on Enter or blur
        return bool(self.text.continuous_update)

    def _show(self) -> None:
        self.text.value = "random" if self.value == RANDOM_SEED else str(self.value)

    def _typed(self, change: dict[str, Any]) -> None:
        typed = change["new"].strip().lower()
        if typed in ("", "random", "-1"):
            self.value = RANDOM_SEED
        elif typed.isdigit() and int(typed) < RANDOM_SEED:
            self.value = int(typed)
        self._show()  # normalised, or put back


def _knob(key: str, value: Any) -> widgets.ValueWidget:
    cls, maximum, step = _KNOBS[key]
    option = OPTIONS[key]
    minimum = option.minimum if option.minimum is not None else 0
    tooltip = f"{key} (default {option.default})"
    if option.scope in _RELOADS:
        tooltip += f": changing it reloads the {_RELOADS[option.scope]}"
    if key == "seed":
        return SeedField(value, description=key, tooltip=f"{key}: random, or a number", style=_STYLE)
    control = cls(
        value=option.kind(minimum),
        min=option.kind(minimum),
        max=option.kind(maximum),
        step=option.kind(step),
        description=key,
        tooltip=tooltip,
        continuous_update=False,
        style=_STYLE,
    )
    _show_value(control, value)
    return control


def _show_value(control: widgets.ValueWidget, value: Any) -> None:
    """Set a control, first widening its range: a bounded widget would clamp a value
    outside it, and the clamped value would then be written back to the session."""
    if value > control.max:
        control.max = value
    if value < control.min:
        control.min = value
    control.value = value


def _close_tree(widget: widgets.Widget) -> None:
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    widget.close()


def _status(text: str, *, error: bool = False) -> str:
    style = _ERROR if error else "color:#555"
    return f'<span style="{style};font-size:90%">{html.escape(text)}</span>'


class ParameterPanel(widgets.VBox):
    """Controls for one session's parameters; see the module docstring."""

    def __init__(self, session: str | Session) -> None:
        super().__init__()
        self.session = lab().session(session) if isinstance(session, str) else session
        parameters = self.session.parameters
        # A backend without llama.cpp's options (echo) gets the ones it has.
        self.controls: dict[str, widgets.ValueWidget] = {
            key: _knob(key, parameters[key]) for key in _KNOBS if key in parameters
        }
        self.status = widgets.HTML(_status("changes apply to the next generation"))
        self._reloads: list[threading.Thread] = []
        self._reload_lock = threading.Lock()
        header = widgets.HTML(
            f"<b>session {html.escape(self.session.id)}</b>"
            f' <span style="color:#888">· model {html.escape(str(self.session.model))}'
            f" · guest {html.escape(str(self.session.guest))}</span>"
        )
        self.children = (header, *self.controls.values(), self.status)
        for key, control in self.controls.items():
            control.observe(partial(self._changed, key), names="value")
        self._unwatch = self.session.watch(self._on_set)
        self._unfollow = self.session.on_close(lambda session: self._session_closed())

    # -- the widgets' side ----------------------------------------------------------------

    def _changed(self, key: str, change: dict[str, Any]) -> None:
        value = change["new"]
        try:
            if self.session.get(key) == value:  # the session's own value, shown: no loop
                return
            self.session.set({key: value})
        except (WasiNNLabError, KeyError) as exc:
            self.status.value = _status(f"{key}: {exc}", error=True)
            if not self.session.closed:
                _show_value(self.controls[key], self.session.get(key))
            return
        what = _RELOADS.get(OPTIONS[key].scope)
        if what is None:
            self.status.value = _status(f"{key} = {value}: applies to the next generation")
        else:
            self._reload(f"{key} = {value}", what)

    def _reload(self, change: str, what: str) -> None:
        self.status.value = _status(f"{change}: reloading {what}…")
        thread = threading.Thread(target=self._do_reload, args=(change, what), name="wasinn-lab-reload", daemon=True)
        self._reloads = [t for t in self._reloads if t.is_alive()] + [thread]
        thread.start()

    def _do_reload(self, change: str, what: str) -> None:
        with self._reload_lock:  # one at a time; a later one finds little left to do
            self.status.value = _status(f"{change}: reloading {what}…")
            started = time.perf_counter()
            try:
                self.session.reload()
            except Exception as exc:  # shown, not lost on a thread nobody reads
                self.status.value = _status(f"{change}: reloading the {what} failed: {exc}", error=True)
                return
            self.status.value = _status(f"{change}: reloaded in {time.perf_counter() - started:.2f} s")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for reloads under way; False if one is still running after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in list(self._reloads):
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._reloads)

    # -- the session's side ---------------------------------------------------------------

    def _on_set(self, changed: dict[str, Any]) -> None:
        """Any ``session.set``, the panel's own included (those find nothing to change)."""
        for key, value in changed.items():
            control = self.controls.get(key)
            if control is None or control.value == value:
                continue
            _show_value(control, value)
            what = _RELOADS.get(OPTIONS[key].scope)
            if what is not None:
                self.status.value = _status(f"{key} = {value}: the {what} is rebuilt at the next generation")

    def _session_closed(self) -> None:
        for control in self.controls.values():
            control.disabled = True
        self.status.value = _status(f"session {self.session.id} is closed", error=True)

    def close(self) -> None:
        for remove in (getattr(self, "_unwatch", None), getattr(self, "_unfollow", None)):
            if remove is not None:
                remove()
        for child in self.children:
            _close_tree(child)
        super().close()


class PromptBox(widgets.VBox):
    """A prompt, Generate and Stop, and the streamed output; see the module docstring."""

    def __init__(
        self,
        guest: str = "stream",
        session: str | None = None,
        model: str = "default",
        params: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.guest = guest
        self.session = session
        self.model = model
        self.params = dict(params or {})
        self.result: CellResult | None = None  # the latest generation's
        self.error: BaseException | None = None  # the latest generation's
        self.prompt = widgets.Textarea(placeholder="Prompt…", layout=widgets.Layout(width="100%", height="5em"))
        self.generate_button = widgets.Button(description="Generate", icon="play", button_style="primary")
        self.stop_button = widgets.Button(description="Stop", icon="stop", disabled=True)
        self.output = widgets.HTML()
        self.children = (self.prompt, widgets.HBox([self.generate_button, self.stop_button]), self.output)
        self.generate_button.on_click(lambda button: self.generate())
        self.stop_button.on_click(lambda button: self.stop())
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._task: GuestTask | None = None
        self._stopping = False
        self._reset("idle")

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def generate(self, text: str | None = None) -> None:
        """Start a generation on ``text`` (default: the prompt box) on a worker thread."""
        with self._lock:
            if self.running:
                return
            if text is not None:
                self.prompt.value = text
            self.result = self.error = None
            self._task, self._stopping = None, False
            self._reset("running")
            self.generate_button.disabled, self.stop_button.disabled = True, False
            self._render()
            job = (self.guest, self.prompt.value, self.model, self.session, dict(self.params))
            self._thread = threading.Thread(target=self._work, args=job, name="wasinn-lab-prompt", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """End the generation under way after its next token."""
        self._stopping = True
        task = self._task
        if task is not None:
            task.stop()
        if self.running:
            self._transcript.status = "stopping"
            self._render()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the worker; False if it is still running after ``timeout``."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.running

    # -- the worker -------------------------------------------------------------------------

    def _work(self, guest: str, text: str, model: str, session: str | None, params: dict[str, Any]) -> None:
        status = "failed"
        try:
            self.result = lab().generate(
                guest, text, model=model, session=session, params=params, on_event=self._on_event, on_task=self._on_task
            )
            status = "stopped" if self._stopping else "done" if self.result.exit_code is not None else "waiting for the next turn"
        except BaseException as exc:  # shown in the box: a worker thread has nobody to raise to
            self.error = exc
        finally:
            self._transcript.status = status
            self._task = None
            self._render()
            self.generate_button.disabled, self.stop_button.disabled = False, True

    def _on_task(self, task: GuestTask) -> None:
        self._task = task
        if self._stopping:
            task.stop()

    def _on_event(self, event: Event) -> None:
        self._transcript.add(event)
        if self._transcript.due():
            self._render()

    # -- showing it -------------------------------------------------------------------------

    def _reset(self, status: str) -> None:
        self._transcript = Transcript(f"{self.guest} · {self.model}")  # the caption adds the session, once
        if self.session:
            self._transcript.sessions.append(self.session)
        self._transcript.status = status

    def _render(self) -> None:
        self._transcript.error = self.error
        self._transcript.shown()
        self.output.value = self._transcript.html()

    def close(self) -> None:
        if getattr(self, "_thread", None) is not None:
            self.stop()
        for child in self.children:
            _close_tree(child)
        super().close()


class SessionBrowser(widgets.VBox):
    """The lab's open sessions; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.selector = widgets.Select(options=[], rows=6, layout=widgets.Layout(width="320px"))
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.close_button = widgets.Button(description="Close", icon="trash", button_style="danger")
        self.details = widgets.HTML()
        self.status = widgets.HTML()
        self.children = (
            widgets.HBox([self.selector, widgets.VBox([self.refresh_button, self.close_button])]),
            self.status,
            self.details,
        )
        self.selector.observe(lambda change: self._show_selected(), names="value")
        self.refresh_button.on_click(lambda button: self.refresh())
        self.close_button.on_click(lambda button: self.close_selected())
        self.refresh()

    def refresh(self) -> None:
        sessions = list(lab().host.sessions)
        self.selector.options = [(f"{s.id} · {s.guest or '-'} · {s.state}", s.id) for s in sessions]
        if self.selector.value is None and sessions:
            self.selector.value = sessions[0].id
        self.close_button.disabled = not sessions
        self._show_selected()

    def close_selected(self) -> None:
        session_id = self.selector.value
        if session_id is None:
            return
        try:
            lab().close(session_id)  # a generation under way ends after its next token
            self.status.value = _status(f"closed {session_id}")
        except WasiNNLabError as exc:
            self.status.value = _status(f"closing {session_id} failed: {exc}", error=True)
        self.refresh()

    def _show_selected(self) -> None:
        session_id = self.selector.value
        session = None if session_id is None else lab().host.sessions.find(session_id)
        if session is None:
            self.details.value = _status("no open sessions" if session_id is None else f"{session_id} is gone: Refresh")
            return
        generations = session.generations
        facts = {
            "model": session.model,
            "guest": session.guest,
            "state": session.state,
            "generations": len(generations),
            "tokens in (evaluated)": sum(g.evaluated_tokens for g in generations),
            "tokens out": sum(g.output_tokens for g in generations),
        }
        rows = [*facts.items(), *session.parameters.items()]
        cells = "".join(
            f'<tr><td style="color:#666;padding-right:12px">{html.escape(str(key))}</td>'
            f"<td>{html.escape(repr(value) if isinstance(value, str) else str(value))}</td></tr>"
            for key, value in rows
        )
        self.details.value = f"<b>{html.escape(session.id)}</b><table style='font-size:90%'>{cells}</table>"

    def close(self) -> None:
        for child in self.children:
            _close_tree(child)
        super().close()


def parameter_panel(session_id: str) -> ParameterPanel:
    """Sliders for a session's parameters, kept in step with ``session.set``."""
    return ParameterPanel(session_id)


def prompt_box(
    guest: str = "stream", session: str | None = None, model: str = "default", params: Mapping[str, Any] | None = None
) -> PromptBox:
    """A prompt, Generate and Stop buttons, and the guest's streamed output."""
    return PromptBox(guest, session, model, params)


def session_browser() -> SessionBrowser:
    """The lab's open sessions, with their parameters and counts, and a Close button."""
    return SessionBrowser()
