"""The widgets without a browser: set traits, click buttons. Real host (this module's
own, attached as a user would attach theirs), default model, real guests. Sessions here
are named ``w-...`` and closed after each test."""

from __future__ import annotations

import html
import itertools
import re
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import updates_expected

from wasinn_lab import Busy, ConfigError, GuestExitError, Host, PromptTooLong, Session, Tensor, TensorType
from wasinn_lab.notebook import attach
from wasinn_lab.notebook import current_lab as lab
from wasinn_lab.notebook import widgets as widgets_module
from wasinn_lab.notebook.display import UPDATES_PER_SECOND
from wasinn_lab.notebook.magics import WasiNNMagics
from wasinn_lab.widgets import ParameterPanel, PromptBox, SessionBrowser, parameter_panel, prompt_box, session_browser


@pytest.fixture(scope="module", autouse=True)
def own_host() -> Iterator[Host]:
    with Host() as host:
        attach(host)
        yield host
        lab().shutdown()


@pytest.fixture(autouse=True)
def close_test_sessions() -> Iterator[None]:
    yield
    for session in list(lab().host.sessions):
        if session.id.startswith("w-"):
            lab().close(session.id)


def open_session(name: str, **params: object) -> Session:
    """A session made the way a notebook makes one: by running a guest in it."""
    lab().generate("stream", "Hi", session=name, params={"n-predict": 2, **params})
    return lab().session(name)


def recorder(widget: object, times: list[float] | None = None) -> list[str]:
    """Every value the widget's ``value`` trait takes from now on (and when, into ``times``)."""
    values: list[str] = []

    def record(change: dict[str, str]) -> None:
        values.append(change["new"])
        if times is not None:
            times.append(time.monotonic())

    widget.observe(record, names="value")  # type: ignore[attr-defined]
    return values


def recorder_of_sets(session: Session) -> list[dict[str, object]]:
    """Every change any ``session.set`` makes from now on."""
    sets: list[dict[str, object]] = []
    session.watch(sets.append)
    return sets


def shown_text(output: str) -> str:
    """The model text inside a prompt box's output HTML."""
    match = re.search(r'<pre style="[^"]*border-left[^"]*">(.*?)</pre>', output, re.S)
    assert match, output
    return html.unescape(match.group(1))


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_public_api() -> None:
    assert set(widgets_module.__all__) == {
        "ParameterPanel", "PromptBox", "SessionBrowser", "parameter_panel", "prompt_box", "session_browser",
    }


# -- the parameter panel ----------------------------------------------------------------------


def test_the_panel_starts_from_the_session_and_its_changes_reach_the_next_generation() -> None:
    session = open_session("w-knobs", temp=0.0, **{"top-k": 12})
    panel = parameter_panel("w-knobs")
    assert isinstance(panel, ParameterPanel)
    try:
        assert set(panel.controls) == {
            "temp", "top-p", "top-k", "min-p", "repeat-penalty", "n-predict", "seed", "ctx-size", "n-gpu-layers", "threads",
        }
        for key, control in panel.controls.items():
            assert panel.knobs[key].value == session.get(key), key
            assert control.continuous_update is False, key
        # The seed's default means "a new one each time": shown as such, not as 4294967295.
        seed = panel.knobs["seed"]
        assert seed.special is not None and seed.special.description == "random"
        assert seed.special.value and not seed.control.disabled
        seed.special.value = False  # a seed of one's own: the number field's
        assert session.get("seed") == seed.control.value
        seed.special.value = True
        assert session.get("seed") == 0xFFFFFFFF
        # Typing a number fixes the seed (the field was disabled while "random" was ticked,
        # and typing into it did nothing); ticking "random" goes back.
        seed.control.value = 1234
        assert session.get("seed") == 1234 and not seed.special.value
        seed.special.value = True
        assert session.get("seed") == 0xFFFFFFFF and seed.control.value == 1234
        sets = recorder_of_sets(session)
        panel.controls["temp"].value = 0.25
        panel.controls["top-k"].value = 7
        assert session.get("temp") == 0.25 and session.get("top-k") == 7
        assert sets == [{"temp": 0.25}, {"top-k": 7}]  # one set each: no echo from the watcher
        assert "top-k = 7: applies to the next generation" in panel.status.value
        panel.controls["n-predict"].value = 3
        panel.controls["seed"].value = 7  # seeded: the count cannot fall short by chance
        lab().generate("stream", " and", session="w-knobs")  # no params: the session's own
        assert session.generations[-1].output_tokens == 3
    finally:
        panel.close()


def test_session_set_from_outside_moves_the_sliders_and_close_stops_following() -> None:
    session = open_session("w-watch")
    panel = parameter_panel("w-watch")
    sets = recorder_of_sets(session)
    try:
        session.set({"temp": 0.1, "top-p": 0.5, "seed": 7})
        assert (panel.controls["temp"].value, panel.controls["top-p"].value, panel.controls["seed"].value) == (0.1, 0.5, 7)
        # Beyond the slider's range: the slider widens rather than clamping the value
        # and writing the clamped value back to the session.
        session.set(temp=3.5)
        assert panel.controls["temp"].value == 3.5 and panel.controls["temp"].max >= 3.5
        assert session.get("temp") == 3.5
        assert sets == [{"temp": 0.1, "top-p": 0.5, "seed": 7}, {"temp": 3.5}]  # the panel set nothing back
    finally:
        panel.close()
    session.set(temp=0.7)
    assert panel.controls["temp"].value == 3.5  # closed: no longer watching


def test_the_set_magic_moves_the_slider() -> None:
    # The magics' own code, without the global test shell (the magics tests own that one).
    magics = WasiNNMagics(None, lab())
    open_session("w-magic")
    panel = parameter_panel("w-magic")
    try:
        magics.wasi_nn_line("set w-magic temp=0.1 top-k=3")
        assert panel.controls["temp"].value == 0.1 and panel.controls["top-k"].value == 3
        panel.controls["temp"].value = 0.4
        assert magics.wasi_nn_line("get w-magic temp") == 0.4
    finally:
        panel.close()


def test_a_context_setting_reloads_off_the_main_thread_and_takes_effect() -> None:
    session = open_session("w-ctx")
    panel = parameter_panel("w-ctx")
    statuses = recorder(panel.status)
    reloaded_on: list[threading.Thread] = []
    real_reload = session.reload

    def reload() -> bool:  # the real reload, noting the thread it ran on
        reloaded_on.append(threading.current_thread())
        return real_reload()

    session.reload = reload  # type: ignore[method-assign]
    try:
        panel.controls["ctx-size"].value = 64
        assert panel.wait(120)
        assert reloaded_on and reloaded_on[0] is not threading.main_thread()
        assert any("ctx-size = 64: reloading the context…" in status for status in statuses)
        assert re.search(r"ctx-size = 64: reloaded the context in \d+\.\d\d s", panel.status.value), panel.status.value
        assert session.get("ctx-size") == 64
        session.set_input("prompt", Tensor((1,), TensorType.U8, ("word " * 100).encode()))
        with pytest.raises(PromptTooLong, match="the context holds 64"):
            session.compute()
        # A generation setting does not reload.
        reloads = len(reloaded_on)
        panel.controls["temp"].value = 0.5
        assert len(reloaded_on) == reloads
    finally:
        panel.close()


def test_a_context_setting_reloads_once_the_session_is_free_when_no_generation_holds_it() -> None:
    """The distribution view holds the session a moment while it reads the model: a
    ctx-size change then said "pending until the running generation has ended", with no
    generation running, and stayed pending."""
    session = open_session("w-held")
    panel = parameter_panel("w-held", distribution=False)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:  # what next_token_distribution does: the session's lock, no generation
        with session._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        panel.controls["ctx-size"].value = 1024
        time.sleep(0.3)
        assert "reloading the context" in panel.status.value and not session.generating
        release.set()
        assert panel.wait(60)
        assert re.search(r"ctx-size = 1024: reloaded the context in \d+\.\d\d s", panel.status.value), panel.status.value
    finally:
        release.set()
        holder.join()
        panel.close()


def test_a_closed_session_disables_the_panel_and_errors_show_in_its_status() -> None:
    open_session("w-gone")
    panel = parameter_panel("w-gone")
    try:
        lab().close("w-gone")
        assert all(control.disabled for control in panel.controls.values())
        assert "session w-gone is closed" in panel.status.value
        panel.controls["temp"].value = 0.3  # a script can still set it: shown, not raised
        assert "temp: session w-gone is closed" in panel.status.value and "#a33" in panel.status.value
    finally:
        panel.close()


def test_the_panel_shows_the_next_tokens_distribution_and_follows_the_sliders() -> None:
    session = open_session("w-dist", temp=0.8, **{"top-k": 40})
    panel = parameter_panel("w-dist")
    view = panel.distribution
    assert view is not None and view in panel.children
    try:
        assert view.wait(120) and view.error is None, view.value
        before, after = view.distribution
        assert len(before) == 20 and 0.3 < sum(p for _, p in before) <= 1 + 1e-6
        assert [p for _, p in before] == sorted((p for _, p in before), reverse=True)
        assert after and sum(p for _, p in after) <= 1 + 1e-6
        assert view.value.count("<tr>") == 1 + len({text for text, _ in [*before, *after]})  # a row a token
        assert "temp=0.8, top-k=40" in view.value
        # Greedy: the chain keeps the model's likeliest token, with probability 1.
        panel.controls["temp"].value = 0.0
        assert view.wait(120) and view.error is None, view.value
        assert view.distribution.before == before  # the model's own is the same: only the chain moved
        assert view.distribution.after == [(before[0][0], 1.0)]
        assert "temp=0.0" in view.value and f">{1:.3f}<" in view.value
        # Moved in quick succession: the view ends at the last setting.
        for value in (0.3, 0.6, 1.0):
            panel.controls["temp"].value = value
        panel.controls["top-k"].value = 2
        assert view.wait(120) and view.error is None, view.value
        kept = [text for text, _ in view.distribution.after]
        assert 1 <= len(kept) <= 2 and kept == [text for text, _ in before[: len(kept)]]
        assert "temp=1.0, top-k=2" in view.value
        assert len(session.generations) == 1  # shown without generating
    finally:
        panel.close()
    assert not view._thread.is_alive()  # the panel's close ends the view's thread


def test_the_distribution_waits_for_a_generation_and_then_shows_the_text_it_made() -> None:
    open_session("w-wait", temp=0.0)
    panel = parameter_panel("w-wait")
    view = panel.distribution
    assert view is not None
    box = prompt_box("stream", session="w-wait", params={"n-predict": 400})
    try:
        assert view.wait(120)
        first = view.distribution.before
        shown = recorder(view)
        box.generate(" Once upon a time")
        wait_until(lambda: any("waiting for the generation under way to end" in value for value in shown), 60)
        panel.controls["top-k"].value = 5  # while it runs: asked for, not computed
        box.stop()
        assert box.wait(60) and box.error is None
        assert view.wait(120) and view.error is None, view.value
        assert view.distribution.before != first  # for the text as it is now, the generation's included
        assert "top-k=5" in shown[-1] and "waiting" not in shown[-1]
    finally:
        box.close()
        panel.close()


# -- the prompt box ---------------------------------------------------------------------------


def test_generate_streams_into_the_output_and_ends_with_the_final_text() -> None:
    box = prompt_box("stream", session="w-box", params={"n-predict": 48, "temp": 0.0})
    assert isinstance(box, PromptBox)
    times: list[float] = []
    outputs = recorder(box.output, times)
    try:
        box.prompt.value = "Once upon a time"
        box.generate_button.click()
        assert box.generate_button.disabled and not box.stop_button.disabled
        assert box.wait(180)
        assert not box.generate_button.disabled and box.stop_button.disabled
        assert box.error is None and box.result is not None and box.result.exit_code == 0
        final = box.result.text
        assert final and shown_text(outputs[-1]) == final and "· done" in outputs[-1]
        assert lab().session("w-box").generations[-1].output_tokens == 48
        # Streamed: several distinct partial texts, each a beginning of the final one.
        partial = {shown_text(value) for value in outputs if "· running" in value} - {""}
        assert len(partial) >= updates_expected(lab().session("w-box").generations[-1].token_times, 2), outputs
        assert all(final.startswith(text) for text in partial)
        # Throttled: the updates while running come at most UPDATES_PER_SECOND a second
        # (each token arrives twice, as model text and as the guest's stdout).
        running = [when for when, value in zip(times, outputs) if "· running" in value]
        gaps = [later - earlier for earlier, later in itertools.pairwise(running)]
        assert gaps and min(gaps) >= 0.9 / UPDATES_PER_SECOND, gaps
    finally:
        box.close()


def test_stop_halts_a_long_generation_within_a_token_and_the_session_stays_usable() -> None:
    box = prompt_box("stream", session="w-stop", params={"n-predict": 2000, "temp": 0.0})
    try:
        box.generate("Once upon a time")
        wait_until(lambda: len(shown_text(box.output.value)) > 10)
        session = lab().session("w-stop")
        at_click = session.generations[-1].output_tokens
        box.stop_button.click()
        assert box.wait(60)
        assert box.error is None and box.result is not None and box.result.text
        assert at_click <= session.generations[-1].output_tokens <= at_click + 2
        assert session.generations[-1].output_tokens < 200
        assert "· stopped" in box.output.value
        assert session.state == "idle"
        box.params = {"n-predict": 3}
        box.generate(" And then")
        assert box.wait(60)
        assert box.error is None and "· done" in box.output.value
        assert session.generations[-1].output_tokens == 3
    finally:
        box.close()


def test_the_box_shows_what_the_model_continues_and_starts_afresh_in_one_click() -> None:
    """A prompt typed into 02's box was answered as a continuation of the session's earlier
    text, which the box never showed."""
    box = prompt_box("stream", session="w-afresh", params={"n-predict": 4, "temp": 0.0})
    try:
        assert "session w-afresh has no text yet" in box.continues.value
        box.generate("The three primary colours are")
        assert box.wait(60) and box.error is None
        continued = lab().continued_text("w-afresh")
        assert continued == "The three primary colours are" + box.result.text
        session = lab().session("w-afresh")
        held = session.generations[-1].prompt_tokens + session.generations[-1].output_tokens
        assert f"({len(continued)} characters, {held} tokens)" in box.continues.value
        assert "<details>" in box.continues.value and html.escape(continued) in box.continues.value  # folded
        box.generate(" A story about a lighthouse keeper:")
        assert box.wait(60)
        assert session.generations[-1].prompt_tokens > held  # the earlier text came first
        box.afresh_button.click()
        assert lab().continued_text("w-afresh") == "" and "has no text yet" in box.continues.value
        box.generate("A story about a lighthouse keeper:")
        assert box.wait(60) and box.error is None
        fresh = session.generations[-1]
        assert fresh.prompt_tokens < held and session.get("n-predict") == 4  # the prompt alone; parameters kept
    finally:
        box.close()


def test_stop_right_after_generate_still_stops() -> None:
    """Stop before the guest has opened its session: the box stops it once it has."""
    box = prompt_box("stream", session="w-early", params={"n-predict": 2000, "temp": 0.0})
    try:
        box.generate("Once upon a time")
        box.stop_button.click()
        assert box.wait(60)
        assert box.error is None and "· stopped" in box.output.value
        assert lab().session("w-early").generations[-1].output_tokens < 10
    finally:
        box.close()


@pytest.mark.parametrize(
    ("guest", "model", "error", "message"),
    [
        ("nonexistent", "default", ConfigError, "unknown guest &#x27;nonexistent&#x27;"),
        ("complete", "nobody", GuestExitError, "not-found"),
    ],
)
def test_errors_are_shown_in_the_output_not_raised(guest: str, model: str, error: type[Exception], message: str) -> None:
    box = prompt_box(guest, model=model)
    try:
        box.prompt.value = "Hi"
        box.generate_button.click()  # raises nothing
        assert box.wait(60)
        assert isinstance(box.error, error) and box.result is None
        assert message in box.output.value and "color:#a33" in box.output.value and "· failed" in box.output.value
        assert not box.generate_button.disabled and box.stop_button.disabled
    finally:
        box.close()


# -- the session browser ----------------------------------------------------------------------


def listed(browser: SessionBrowser) -> list[str]:
    return [value for _, value in browser.selector.options]


def test_the_session_browser_lists_shows_and_closes_sessions() -> None:
    open_session("w-b1")
    open_session("w-b2", temp=0.3)
    browser = session_browser()
    assert isinstance(browser, SessionBrowser)
    try:
        assert {"w-b1", "w-b2"} <= set(listed(browser))
        browser.selector.value = "w-b2"
        details = browser.details.value
        assert "<b>w-b2</b>" in details
        # Named as %wasi_nn sessions names them, values as a person reads them (no Python reprs).
        counts = lab().host.sessions.get("w-b2").generations[-1]
        for name, value in (("generations", 1), ("generated tokens", 2), ("latest prompt tokens", counts.prompt_tokens),
                            ("evaluated tokens", counts.evaluated_tokens), ("model", "default"), ("state", "idle")):
            assert re.search(f">{name}</td><td[^>]*>{value}</td>", details), (name, details)
        assert "&#x27;" not in details and "4294967295" not in details and ">random</td>" in details
        # What differs from the defaults first, the rest folded.
        assert re.search(r">temp</td><td[^>]*><b>0.3</b></td><td[^>]*>default 0.8</td>", details)
        assert "<details><summary" in details and ">ctx-size</td>" in details
        browser.selector.value = "w-b1"
        browser.close_button.click()
        assert lab().host.sessions.find("w-b1") is None
        assert "w-b1" not in listed(browser) and "closed w-b1" in browser.status.value
        open_session("w-b3")
        assert "w-b3" not in listed(browser)
        browser.refresh_button.click()
        assert "w-b3" in listed(browser)
    finally:
        browser.close()


def test_a_session_generating_in_a_box_refuses_a_second_generation_until_done() -> None:
    box = prompt_box("stream", session="w-busy", params={"n-predict": 2000, "temp": 0.0})
    other = prompt_box("stream", session="w-busy", params={"n-predict": 3})
    try:
        box.generate("Once upon a time")
        wait_until(lambda: len(shown_text(box.output.value)) > 10)
        other.generate("Meanwhile")
        assert other.wait(60)
        assert isinstance(other.error, Busy) and "in use by another cell or prompt box" in other.output.value
        box.stop_button.click()
        assert box.wait(60) and box.error is None
        other.generate(" And then")
        assert other.wait(60)
        assert other.error is None and lab().session("w-busy").generations[-1].output_tokens == 3
    finally:
        box.close()
        other.close()
