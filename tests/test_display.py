"""What a cell shows of a generation (no model: events made by hand): usage reports as a
caption, not as an error, with the counts named as everywhere; the text as the guest kept
it; a guest's own output open; a failed call the guest handled said in words; the prompt
box's caption; the tables of the line magics."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser
from typing import Any

import pandas as pd
import pytest

from wasinn_lab.notebook.display import Transcript, describe_usage, split_usage
from wasinn_lab.notebook.distribution import distribution_html
from wasinn_lab.notebook.probabilities import ProbabilityView, probability_colour, visible
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
    assert "usage · 12 prompt tokens · 32 generated tokens" in page
    assert "#fff4f4" not in page and "llama_commit: x" in page  # no red box; the rest on hover
    assert shown.plain().splitlines() == ["[chat · default · done]", " Hi.", "[usage: 12 prompt tokens · 32 generated tokens]"]


def test_other_stderr_is_shown_red_only_when_the_run_failed() -> None:
    stderr = b"note: context full\n" + USAGE + b"usage: not json\n"
    usages, rest = split_usage(stderr.decode())
    assert [describe_usage(u) for u in usages] == ["12 prompt tokens · 32 generated tokens"]
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
    assert shout.kept_and_dropped() == (" the end", "")


MODEL_TEXT_BOX = "border-left:3px solid #4a7fd6"


def test_a_guest_printing_its_tokens_shows_them_once_while_they_come_and_when_stopped() -> None:
    """Its stdout lags the tokens (and misses the last one when stopped): that is not an
    output of its own, and was shown open beside the text, twice."""
    for status, stdout in (("running", b" Once"), ("stopped", b" Once"), ("interrupted", b" Once"), ("done", b" Once upon\n")):
        shown = transcript([" Once", " upon"], stdout, status=status)
        assert "guest stdout" not in shown.html() and "[guest stdout]" not in shown.plain(), status


def test_a_guest_that_only_prints_shows_its_stdout_open() -> None:
    shown = transcript([], b"hello from WebAssembly\n")
    page = shown.html()
    assert "<details open>" in page and MODEL_TEXT_BOX not in page  # no empty text box


def test_what_a_guest_prints_besides_the_text_is_its_output_and_shown_open() -> None:
    """03's shout upper-cases the text; 06's inspect prints a report around it: both were
    folded away under "guest stdout", the point of the demo hidden."""
    shout = transcript([" the", " end"], b" THE END\n")
    page = shout.html()
    assert page.index(MODEL_TEXT_BOX) < page.index("<details open><summary")  # the text, then what the guest made of it
    assert "THE END" in page and "[guest stdout]\n THE END" in shout.plain()
    report = b"backends: ggml, echo\nparameters: 40\n the end\nfinish: length\n"
    inspect = transcript([" the", " end"], report).html()
    # The model text is in the report already: folded, and the report open.
    assert "<details><summary" in inspect and "model text (8 characters, also in the guest's stdout below)" in inspect
    assert "<details open><summary" in inspect and "backends: ggml, echo" in inspect


def test_a_failed_call_the_guest_went_on_from_is_said_to_be_handled_not_shown_as_an_error() -> None:
    refused = "wasinn:llm set-parameter failed: 'temp' takes a number of at least 0, got 'hot'"

    def run(status: str) -> Transcript:
        shown = Transcript("inspect · default")
        shown.add(Event(EventKind.STDOUT, b"set temp=hot: invalid-argument\n"))
        shown.add(Event(EventKind.NN_ERROR, refused))
        shown.status = status
        return shown

    done = run("done")
    page = done.html()
    assert f"a call failed and the guest handled it (it went on): {refused}".replace("'", "&#x27;") in page
    assert "wasinn-lab:" not in page and "#f6f6f6" not in page  # no grey box that reads as a failure
    assert f"[handled by the guest: {refused}]" in done.plain()
    failed = run("failed").html()  # the run failed: the call is part of the story, in the red box, in order
    assert "#fff4f4" in failed and "wasinn-lab: wasinn:llm set-parameter failed" in failed
    assert "handled" not in failed


def test_the_usage_caption_says_how_much_of_the_prompt_was_evaluated() -> None:
    from types import SimpleNamespace

    shown = Transcript("chat · default")
    later = shown._since + 1
    session = SimpleNamespace(id="talk", on_close=lambda callback: None, generations=[
        SimpleNamespace(started=shown._since - 9, prompt_tokens=20, evaluated_tokens=20),  # an earlier cell's
        SimpleNamespace(started=later, prompt_tokens=69, evaluated_tokens=41)])
    shown.add(Event(EventKind.SESSION, session))
    shown.add(Event(EventKind.STDERR, b'usage: {"input_tokens": 69, "output_tokens": 32}\n'))
    shown.status = "waiting for the next turn"
    assert "usage · 69 prompt tokens (41 evaluated) · 32 generated tokens" in shown.html()
    # A report that does not match the session's record is shown as the guest said it.
    shown.add(Event(EventKind.STDERR, b'usage: {"input_tokens": 5, "output_tokens": 1}\n'))
    assert "usage · 69 prompt tokens · 32 generated tokens" in shown.html()


def test_the_prompt_box_caption_names_its_session_once() -> None:
    from wasinn_lab.notebook.lab import Lab
    from wasinn_lab.notebook.widgets import PromptBox

    box = PromptBox("stream", session="knobs", lab=Lab())  # its host is made when first needed: never here
    try:
        box._transcript.add(Event(EventKind.SESSION, type("S", (), {"id": "knobs", "on_close": lambda self, f: None})()))
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


# -- token probabilities (rows as session.token_metrics() gives them with -p logprobs=K) --------


class TokenSpans(HTMLParser):
    """The shaded view's token spans: each one's probability, its own text (what shows in
    the line, its popup left out) and its popup's text."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens: list[dict[str, Any]] = []
        self.style = ""
        self._stack: list[str] = []  # what each open tag is: "token", "popup", "style" or ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        kind = ""
        if tag == "style":
            kind = "style"
        elif tag == "span" and (named.get("class") or "").endswith("-t"):
            kind = "token"
            self.tokens.append({"p": float(named["data-p"] or "nan"), "style": named.get("style"), "text": "",
                                "popup": "", "popup_style": None})
        elif tag == "span" and (named.get("class") or "").endswith("-a"):
            kind = "popup"
            self.tokens[-1]["popup_style"] = named.get("style")
        if tag != "br":
            self._stack.append(kind)

    def handle_endtag(self, tag: str) -> None:
        if tag != "br":
            self._stack.pop()

    def handle_data(self, data: str) -> None:
        if "style" in self._stack:
            self.style += data
        elif "popup" in self._stack:
            self.tokens[-1]["popup"] += data
        elif "token" in self._stack:
            self.tokens[-1]["text"] += data


def token_rows(tokens: list[tuple[str, float, list[tuple[str, float]]]], logprobs: bool = True) -> pd.DataFrame:
    """token_metrics() rows of one generation: (text, probability under the model, top)."""
    nan = float("nan")
    return pd.DataFrame([
        {"generation": 0, "token": index, "text": text, "t_s": 0.0, "latency_s": 0.0,
         "logprob": math.log(p) if logprobs else nan, "probability": 1.0 if logprobs else nan,
         "rank": 1 if logprobs else nan, "entropy": 0.5 if logprobs else nan,
         "top": tuple((alternative, math.log(q)) for alternative, q in top) if logprobs else None}
        for index, (text, p, top) in enumerate(tokens)])


AWKWARD = [(" <b>x</b>", 0.5, [(" <b>x</b>", 0.5), (' "&amp;"', 0.25)]),
           ("\n", 0.9, [("\n", 0.9), ("\t<", 0.05)]),
           (" 'quoted'", 0.02, [(" no", 0.6), (" 'quoted'", 0.02)])]


def test_the_shaded_view_has_one_span_per_token_with_its_probability_and_escaped_alternatives() -> None:
    page = ProbabilityView(token_rows(AWKWARD), "stream · token probabilities").html()
    spans = TokenSpans()
    spans.feed(page)
    assert [token["text"] for token in spans.tokens] == [" <b>x</b>", "↵\n", " 'quoted'"]  # the text, escaped back
    assert [round(token["p"], 3) for token in spans.tokens] == [0.5, 0.9, 0.02]
    assert "<b>x</b>" not in page  # escaped, never markup
    colours = [token["style"] for token in spans.tokens]
    assert all(style.startswith("background:#") for style in colours) and len(set(colours)) == 3
    assert probability_colour(0.02) in colours[2] and probability_colour(0.9) in colours[1]
    # Alternatives: whitespace made visible, likeliest first, with percentages.
    assert " 50% ␣<b>x</b>" in spans.tokens[0]["popup"] and ' 25% ␣"&amp;"' in spans.tokens[0]["popup"]
    assert "  5% ⇥<" in spans.tokens[1]["popup"]
    assert spans.tokens[2]["popup"].index(" 60% ␣no") < spans.tokens[2]["popup"].index("  2% ␣'quoted'")
    assert "rank 1" in spans.tokens[2]["popup"] and "p 0.020" in spans.tokens[2]["popup"]
    # Hidden inline, shown by the scoped stylesheet on hover: a front-end that strips <style>
    # shows the plain shaded text, not every popup.
    assert all(token["popup_style"] == "display:none" for token in spans.tokens)
    assert ":hover>.wasinn-probs-" in spans.style and "display:block!important" in spans.style
    assert "token probability under the model" in page and "<details>" in page  # the legend; the table, folded


def test_each_view_scopes_its_stylesheet_to_itself() -> None:
    first, second = (ProbabilityView(token_rows(AWKWARD)).html() for _ in range(2))
    scope = re.compile(r'class="(wasinn-probs-\d+)"')
    assert scope.search(first)[1] != scope.search(second)[1]  # type: ignore[index]


def test_whitespace_in_tokens_is_made_visible() -> None:
    assert visible(" a\tb\n") == "␣a⇥b↵" and visible("") == "∅"


def test_the_plain_view_lists_tokens_with_their_probabilities() -> None:
    lines = ProbabilityView(token_rows(AWKWARD), "cap").plain().splitlines()
    assert lines[0] == "[cap]" and len(lines) == 2 + len(AWKWARD)
    assert lines[-1].split()[:4] == ["0.020", "1", "0.50", "␣'quoted'"] and "␣no 60%" in lines[-1]


def test_a_generation_without_logprobs_says_how_to_record_them() -> None:
    view = ProbabilityView(token_rows(AWKWARD, logprobs=False))
    assert not view.recorded
    assert "-p logprobs=K" in view.html() and "-p logprobs=K" in view.plain()
    with pytest.raises(ValueError, match="token_metrics"):
        ProbabilityView(token_rows(AWKWARD).drop(columns=["top"]))


def test_the_distribution_bars_show_both_sides_escaped() -> None:
    before = [(" the", 0.5), ("<", 0.3), ("\n", 0.2)]
    after = [(" the", 0.7), ("<", 0.3), (" new", 0.01)]
    page = distribution_html(before, after, "caption & more")
    rows = re.findall(r"<tr><td[^>]*><code>(.*?)</code>", page)
    assert rows == ["␣the", "&lt;", "↵", "␣new"]  # the model's order, then what only the chain has
    assert "caption &amp; more" in page
    newline = page[page.index("<code>↵</code>"):].split("</tr>")[0]
    assert ">0.200<" in newline and ">–<" in newline  # not among the chain's top
    assert "width:154px" in page and "width:110px" in page  # 0.7 and 0.5 of 220 px


def test_generations_of_two_sessions_numbered_alike_are_shown_apart() -> None:
    rows = pd.concat([token_rows(AWKWARD).assign(session=name) for name in ("left", "right")])
    page = ProbabilityView(rows).html()
    assert page.index("session left · generation 0") < page.index("session right · generation 0")
    spans = TokenSpans()
    spans.feed(page)
    assert len(spans.tokens) == 2 * len(AWKWARD)
