"""What a cell shows of a generation (no model: events made by hand): usage reports as a
caption, not as an error; the text as the guest kept it; the prompt box's caption; the
panel's seed."""

from __future__ import annotations

import pytest

from wasinn_lab.notebook.display import Transcript, describe_usage, split_usage
from wasinn_lab.tasks import Event, EventKind

USAGE = b'usage: {"input_tokens": 12, "output_tokens": 32, "llama_build_number": 0, "llama_commit": "x"}\n'


def transcript(tokens: list[str], stdout: bytes = b"", stderr: bytes = b"", status: str = "done") -> Transcript:
    shown = Transcript("chat · default")
    for token in tokens:
        shown.add(Event(EventKind.TOKEN, token))
    shown.add(Event(EventKind.STDOUT, stdout))
    shown.add(Event(EventKind.STDERR, stderr))
    shown.status = status
    return shown


def test_a_usage_report_is_a_caption_and_not_an_error() -> None:
    shown = transcript([" Hi", "."], b" Hi.\n", USAGE)
    page = shown.html()
    assert "usage · 12 input tokens · 32 output tokens" in page
    assert "#fff4f4" not in page and "llama_commit: x" in page  # no red box; the rest on hover
    assert shown.plain().splitlines() == ["[chat · default · done]", " Hi.", "[usage: 12 input tokens · 32 output tokens]"]


def test_other_stderr_is_shown_red_only_when_the_run_failed() -> None:
    stderr = b"note: context full\n" + USAGE + b"usage: not json\n"
    usages, rest = split_usage(stderr.decode())
    assert [describe_usage(u) for u in usages] == ["12 input tokens · 32 output tokens"]
    assert rest == "note: context full\nusage: not json\n"
    done = transcript(["x"], b"x\n", stderr)
    assert "note: context full" in done.html() and "#fff4f4" not in done.html()
    assert "[guest stderr]\nnote: context full\nusage: not json" in done.plain()
    failed = transcript(["x"], b"x\n", stderr, status="failed")
    assert "#fff4f4" in failed.html()


def test_a_report_being_written_is_held_back_while_the_guest_runs() -> None:
    running = transcript(["x"], stderr=b'usage: {"input_tok', status="running")
    assert "input_tok" not in running.html()


def test_the_chat_reply_is_shown_without_the_turn_marker_the_guest_stopped_at() -> None:
    tokens = [" Python", ".", "\n", "User", ":"]
    running = transcript(tokens, b" Python.", status="running")
    assert running.kept_and_dropped() == (" Python.\nUser:", "")  # while tokens come: all of them
    shown = transcript(tokens, b" Python.\n", USAGE, status="waiting for the next turn")
    assert shown.kept_and_dropped() == (" Python.", "\nUser:")
    assert shown.plain().splitlines()[1] == " Python."
    assert "User:" not in shown.plain() and "guest stdout" not in shown.html()
    assert "the guest stopped here" in shown.html()
    # A stopped or interrupted guest never printed the last token the model made: no note.
    stopped = transcript([" Once", " upon"], b" Once\n", status="stopped")
    assert stopped.kept_and_dropped() == (" Once upon", "")
    # A guest whose output is not a prefix of the text (shout upper-cases it) keeps it all.
    shout = transcript([" the", " end"], b" THE END\n")
    assert shout.kept_and_dropped() == (" the end", "") and "guest stdout" in shout.html()


def test_a_guest_that_only_prints_shows_its_stdout_open() -> None:
    shown = transcript([], b"hello from WebAssembly\n")
    page = shown.html()
    assert "<details open>" in page and "border-left:3px" not in page  # no empty text box


def test_the_prompt_box_caption_names_its_session_once() -> None:
    from wasinn_lab.notebook.lab import Lab
    from wasinn_lab.notebook.widgets import PromptBox

    box = PromptBox("stream", session="knobs", lab=Lab())  # its host is made when first needed: never here
    try:
        box._transcript.add(Event(EventKind.SESSION, type("S", (), {"id": "knobs"})()))
        assert box._transcript.caption() == "stream · default · session knobs · idle"
    finally:
        box.close()


def test_the_live_plot_uses_when_tokens_were_made_not_when_it_got_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from wasinn_lab.notebook.display import LivePlot

    monkeypatch.setattr(LivePlot, "REDRAWS_PER_SECOND", 1e-9)  # no drawing here
    plot = LivePlot()
    start = plot._since + 1
    made = [start + 0.01 * i for i in range(5)]  # 10 ms apart, as the session measured them
    session = SimpleNamespace(generations=[SimpleNamespace(started=plot._since - 5, token_times=[0.0, 9.0]),  # before
                                           SimpleNamespace(started=start, token_times=made)])
    plot(Event(EventKind.SESSION, session))
    for _ in made:
        plot(Event(EventKind.TOKEN, "x"))  # arriving late, all at once
    count, latencies = plot.latencies()
    assert count == 5 and [round(ms) for ms in latencies] == [10, 10, 10, 10]
