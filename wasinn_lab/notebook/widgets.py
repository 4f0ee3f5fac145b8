"""Widgets
=======

Three small panels built from plain ipywidgets, for steering the lab with the mouse.
They talk to the same lab as the magics (the extension's, or the one ``attach(host)``
made; pass ``lab=`` for another), so a session made in a ``%%wasi_nn ... --session
NAME`` cell can be tuned, prompted and closed here, and the other way round::

    from wasinn_lab.widgets import parameter_panel, prompt_box, session_browser

    parameter_panel("knobs")              # sliders for temp, top-p, top-k, min-p, ...
    prompt_box("stream", session="knobs") # a prompt, Generate and Stop, streamed output
    session_browser()                     # open sessions: parameters, counts, Close

``parameter_panel(session_id)``
    A control for each of the backend's main options (on the GGML backend: temp, top-p,
    top-k, min-p, repeat-penalty, n-predict, seed, ctx-size, n-gpu-layers, threads),
    built from the backend's description of them (range, step, help as the tooltip, and
    a checkbox for a value that means something else: the seed's "random", n-predict's
    "no limit"; ticked, it applies; a number typed or dragged unticks it and applies
    instead), read from the session. A change is
    a ``session.set(...)`` and applies to the session's next generation. ctx-size and
    threads need a new llama context, n-gpu-layers loads the weights again: the panel
    does that at once, off the main thread, and its status line says how long it took
    (or why it failed); while a generation runs, the change is pending until it ends,
    and the status says so. The session is the one source of truth: ``%wasi_nn set knobs
    temp=0.1`` moves the temp slider. Below the controls, ``panel.distribution`` shows
    the next token's top 20 before and after the sampler chain for the session's text, as
    the settings are now (``notebook.distribution``). ``panel.close()`` stops following
    the session.

``prompt_box(guest="stream", session=None, model="default", params=None)``
    Generate runs the guest on a worker thread, so the notebook stays responsive, and
    streams the model's text into the box (about 15 updates a second, then the final
    state). Stop ends the generation within one token; the session stays usable. With a
    session, the prompt is added to the session's text so far: the box shows that text
    (folded, with its length), and Start afresh forgets it (``lab.start_afresh``).
    Errors are shown in the box, in red. ``box.result`` holds the latest ``CellResult``
    (``box.error`` the latest error) and ``box.wait(timeout)`` waits for the worker, which
    makes the box scriptable: ``box.generate("Once upon a time"); box.wait(60)``.

``session_browser()``
    The open sessions; the selected one's model, guest, state, token counts (named as in
    ``%wasi_nn sessions``) and parameters (what differs from the defaults, the rest
    folded); Close (``lab.close(id)``) and Refresh.

Generation never runs inside ``with Output():`` (that swallows exceptions); the boxes
write to ``HTML`` widgets. Widgets work headless too: set ``value`` traits and call
``Button.click()``.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets

from ..errors import WasiNNLabError
from ..sessions import Session
from ..tasks import Event, GuestTask
from . import current_lab
from .display import Transcript
from .distribution import DistributionView
from .knobs import RELOADS, Knob, close_tree
from .lab import CellResult, Lab
from .tables import COUNTS_NOTE, Parameters, facts_html, session_counts

__all__ = ["ParameterPanel", "PromptBox", "SessionBrowser", "parameter_panel", "prompt_box", "session_browser"]

_ERROR = "color:#a33"
_CAPTION = "color:#555;font-size:90%"
_CONTINUED = "white-space:pre-wrap;margin:0;padding:4px 8px;color:#555;background:#f6f6f6;font-size:90%"


def _status(text: str, *, error: bool = False) -> str:
    style = _ERROR if error else "color:#555"
    return f'<span style="{style};font-size:90%">{html.escape(text)}</span>'


class ParameterPanel(widgets.VBox):
    """Controls for one session's parameters; see the module docstring."""

    def __init__(self, session: str | Session, lab: Lab | None = None, *, distribution: bool = True) -> None:
        super().__init__()
        self.session = (lab or current_lab()).session(session) if isinstance(session, str) else session
        parameters = self.session.parameters
        options = self.session.options
        self.knobs: dict[str, Knob] = {
            name: Knob(option, parameters[name], self._changed) for name, option in options.items() if option.panel
        }
        self.controls = {name: knob.control for name, knob in self.knobs.items()}
        self.status = widgets.HTML(_status("changes apply to the next generation"))
        self._reloads: list[threading.Thread] = []
        self._reload_lock = threading.Lock()
        header = widgets.HTML(
            f"<b>session {html.escape(self.session.id)}</b>"
            f' <span style="color:#888">· model {html.escape(str(self.session.model))}'
            f" · guest {html.escape(str(self.session.guest))}</span>"
        )
        # Above the status line, which reports the latest change.
        self.distribution = DistributionView(self.session) if distribution else None
        self.children = (header, *(knob.widget for knob in self.knobs.values()),
                         *([self.distribution] if self.distribution is not None else []), self.status)
        self._unwatch = self.session.watch(self._on_set)
        self._unfollow = self.session.on_close(lambda session: self._session_closed())

    # -- the widgets' side ----------------------------------------------------------------

    def _changed(self, key: str, value: Any) -> None:
        option = self.knobs[key].option
        try:
            if self.session.get(key) == value:  # the session's own value, shown: no loop
                return
            self.session.set({key: value})
        except WasiNNLabError as exc:
            self.status.value = _status(f"{key}: {exc}", error=True)
            if not self.session.closed:
                self.knobs[key].show(self.session.get(key))
            return
        shown = f"{key} = {option.describe(value)}"
        what = RELOADS.get(option.scope)
        if what is None:
            self.status.value = _status(f"{shown}: applies to the next generation")
        else:
            self._reload(shown, what)

    def _reload(self, change: str, what: str) -> None:
        self.status.value = _status(f"{change}: reloading the {what}…")
        thread = threading.Thread(target=self._do_reload, args=(change, what), name="wasinn-lab-reload", daemon=True)
        self._reloads = [t for t in self._reloads if t.is_alive()] + [thread]
        thread.start()

    def _do_reload(self, change: str, what: str) -> None:
        with self._reload_lock:  # one at a time; a later one finds little left to do
            started = time.perf_counter()
            try:
                done = self.session.reload()
                # Held a moment by something other than a generation (the distribution view
                # reading the model): that ends soon, a generation may not.
                while not done and not self.session.generating and not self.session.closed:
                    time.sleep(0.05)
                    done = self.session.reload()
            except Exception as exc:  # shown, not lost on a thread nobody reads
                self.status.value = _status(f"{change}: reloading the {what} failed: {exc}", error=True)
                return
            if done:
                self.status.value = _status(f"{change}: reloaded the {what} in {time.perf_counter() - started:.2f} s")
            else:  # never between two tokens of a generation: that would break it
                self.status.value = _status(f"{change}: pending, the {what} is rebuilt when the running "
                                            "generation has ended")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for reloads under way; False if one is still running after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in list(self._reloads):
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._reloads)

    # -- the session's side ---------------------------------------------------------------

    def _on_set(self, changed: dict[str, Any]) -> None:
        """Any change, the panel's own included (those find nothing to change)."""
        for key, value in changed.items():
            knob = self.knobs.get(key)
            if knob is None or knob.value == value:
                continue
            knob.show(value)
            what = RELOADS.get(knob.option.scope)
            if what is not None:
                self.status.value = _status(f"{key} = {knob.option.describe(value)}: the {what} is rebuilt "
                                            "at the next generation")

    def _session_closed(self) -> None:
        for knob in self.knobs.values():
            knob.control.disabled = True
            if knob.special is not None:
                knob.special.disabled = True
        self.status.value = _status(f"session {self.session.id} is closed", error=True)

    def close(self) -> None:
        """Stop following the session and close the panel's controls; the session stays open."""
        for remove in (getattr(self, "_unwatch", None), getattr(self, "_unfollow", None)):
            if remove is not None:
                remove()
        for child in self.children:
            close_tree(child)
        super().close()


class PromptBox(widgets.VBox):
    """A prompt, Generate and Stop, and the streamed output; see the module docstring."""

    def __init__(
        self,
        guest: str = "stream",
        session: str | None = None,
        model: str = "default",
        params: Mapping[str, Any] | None = None,
        lab: Lab | None = None,
    ) -> None:
        super().__init__()
        self._lab = lab or current_lab()
        self.guest = guest
        self.session = session
        self.model = model
        self.params = dict(params or {})
        self.result: CellResult | None = None  # the latest generation's
        self.error: BaseException | None = None  # the latest generation's
        # The default model is a base model: it continues text rather than answering it.
        self.prompt = widgets.Textarea(placeholder="Text for the model to continue…",
                                       layout=widgets.Layout(width="100%", height="5em"))
        self.generate_button = widgets.Button(description="Generate", icon="play", button_style="primary")
        self.stop_button = widgets.Button(description="Stop", icon="stop", disabled=True)
        self.afresh_button = widgets.Button(description="Start afresh", icon="eraser", disabled=session is None,
                                            tooltip="forget the session's text so far: the next prompt is all the "
                                                    "model sees (the parameters stay)")
        self.continues = widgets.HTML()  # what the model continues: the session's text so far
        self.output = widgets.HTML()
        buttons = widgets.HBox([self.generate_button, self.stop_button, self.afresh_button])
        self.children = (self.continues, self.prompt, buttons, self.output)
        self.generate_button.on_click(lambda button: self.generate())
        self.stop_button.on_click(lambda button: self.stop())
        self.afresh_button.on_click(lambda button: self.start_afresh())
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._task: GuestTask | None = None
        self._stopping = False
        self._reset("idle")
        self._show_continued()

    @property
    def running(self) -> bool:
        """Whether a generation started here is still under way."""
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
            self._show_continued()
            self.generate_button.disabled, self.stop_button.disabled, self.afresh_button.disabled = True, False, True
            self._render()
            job = (self.guest, self.prompt.value, self.model, self.session, dict(self.params))
            self._thread = threading.Thread(target=self._work, args=job, name="wasinn-lab-prompt", daemon=True)
            self._thread.start()

    def start_afresh(self) -> None:
        """Forget the session's text so far (not while a generation runs): the next
        prompt is all the model sees."""
        with self._lock:
            if self.running or self.session is None:
                return
            try:
                self._lab.start_afresh(self.session)
            except WasiNNLabError as exc:
                self.error = exc
            self._show_continued()

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
            self.result = self._lab.generate(
                guest, text, model=model, session=session, params=params, on_event=self._on_event, on_task=self._on_task
            )
            status = "stopped" if self._stopping else "done" if self.result.exit_code is not None else "waiting for the next turn"
        except BaseException as exc:  # shown in the box: a worker thread has nobody to raise to
            self.error = exc
        finally:
            self._transcript.status = status
            self._task = None
            self._render()
            self._show_continued()
            self.generate_button.disabled, self.stop_button.disabled = False, True
            self.afresh_button.disabled = self.session is None

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

    def _show_continued(self) -> None:
        """What the next prompt is added to, folded, with its length."""
        if self.session is None:
            self.continues.value = ""
            return
        text = self._lab.continued_text(self.session)
        found = self._lab.find(self.session)
        latest = found.generations[-1] if found is not None and found.generations else None
        held = "" if latest is None else f", {latest.prompt_tokens + latest.output_tokens:,} tokens"
        name = html.escape(self.session)
        if text:
            self.continues.value = (
                f'<details><summary style="{_CAPTION}">the model continues session {name}\'s text so far '
                f"({len(text):,} characters{held}): the prompt is added to its end</summary>"
                f'<pre style="{_CONTINUED}">{html.escape(text)}</pre></details>')
        else:  # a chat guest keeps its own conversation
            chatting = self._lab.chatting(self.session)
            said = f"continues session {name}'s conversation{held}" if chatting else f"session {name} has no text yet"
            self.continues.value = f'<span style="{_CAPTION}">{said}</span>'

    def close(self) -> None:
        """Stop a generation under way and close the box's controls."""
        if getattr(self, "_thread", None) is not None:
            self.stop()
        for child in self.children:
            close_tree(child)
        super().close()


class SessionBrowser(widgets.VBox):
    """The lab's open sessions; see the module docstring."""

    def __init__(self, lab: Lab | None = None) -> None:
        super().__init__()
        self._lab = lab or current_lab()
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
        """List the host's open sessions again and show the selected one."""
        sessions = list(self._lab.host.sessions)
        self.selector.options = [(f"{s.id} · {s.guest or '-'} · {s.state}", s.id) for s in sessions]
        if self.selector.value is None and sessions:
            self.selector.value = sessions[0].id
        self.close_button.disabled = not sessions
        self._show_selected()

    def close_selected(self) -> None:
        """Close the selected session (the Close button)."""
        session_id = self.selector.value
        if session_id is None:
            return
        try:
            self._lab.close(session_id)  # a generation under way ends before its next token
            self.status.value = _status(f"closed {session_id}")
        except WasiNNLabError as exc:
            self.status.value = _status(f"closing {session_id} failed: {exc}", error=True)
        self.refresh()

    def _show_selected(self) -> None:
        session_id = self.selector.value
        session = None if session_id is None else self._lab.host.sessions.find(session_id)
        if session is None:
            self.details.value = _status("no open sessions" if session_id is None else f"{session_id} is gone: Refresh")
            return
        about = facts_html({"model": session.model, "guest": session.guest or "-", "state": session.state}, columns=3)
        counts = f'<div title="{html.escape(COUNTS_NOTE)}">{facts_html(session_counts(session))}</div>'
        self.details.value = (f"<b>{html.escape(session.id)}</b>{about}{counts}"
                              f"{Parameters(session)._repr_html_()}")

    def close(self) -> None:
        """Close the browser's controls; the sessions stay open."""
        for child in self.children:
            close_tree(child)
        super().close()


def parameter_panel(session_id: str, lab: Lab | None = None, *, distribution: bool = True) -> ParameterPanel:
    """Controls for a session's parameters, kept in step with ``session.set``, and the next
    token's distribution before and after the sampler chain (``distribution=False``: not)."""
    return ParameterPanel(session_id, lab, distribution=distribution)


def prompt_box(
    guest: str = "stream",
    session: str | None = None,
    model: str = "default",
    params: Mapping[str, Any] | None = None,
    lab: Lab | None = None,
) -> PromptBox:
    """A prompt, Generate and Stop buttons, and the guest's streamed output."""
    return PromptBox(guest, session, model, params, lab)


def session_browser(lab: Lab | None = None) -> SessionBrowser:
    """The lab's open sessions, with their parameters and counts, and a Close button."""
    return SessionBrowser(lab)
