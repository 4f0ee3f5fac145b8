"""The magics through a real InteractiveShell, real host, default model and guests."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import threading
import traceback

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.lib.pretty import pretty
from IPython.utils.capture import capture_output
from test_display import TokenSpans

from wasinn_lab.notebook import current_lab as lab
from wasinn_lab.notebook.probabilities import visible


def run(shell: InteractiveShell, cell: str):  # type: ignore[no-untyped-def]
    return shell.run_cell(cell, store_history=False)


def test_a_cell_streams_model_text_into_the_output(shell: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(shell, "%%wasi_nn stream -p n-predict=12 -p temp=0\nThe sky is")
    assert result.success, result.error_in_exec
    generation = shell.user_ns["_wasi_nn"]
    out = capsys.readouterr().out
    assert generation.text and generation.text in out  # printed as it came
    # The guest's context closed with it: no session is named that %wasi_nn could not find.
    assert re.search(r"\[stream · default · done\]", out)
    assert generation.exit_code == 0


def test_params_override_the_guests_config(shell: InteractiveShell) -> None:
    assert run(shell, "%%wasi_nn complete --quiet -p n-predict=3 -p temp=0\nHello").success
    assert '"output_tokens": 3' in shell.user_ns["_wasi_nn"].stderr


def test_a_prompt_guest_session_continues_across_cells(shell: InteractiveShell) -> None:
    assert run(shell, "%%wasi_nn stream -q --session story -p n-predict=10 -p temp=0\nOnce upon a time").success
    first = shell.user_ns["_wasi_nn"].text
    assert run(shell, "%%wasi_nn stream -q --session story\nThe end.").success
    session = lab().session("story")
    latest = session.generations[-1]
    # The second prompt is the story so far plus the new cell; only the new part is evaluated.
    assert latest.prompt_tokens > 10 and latest.evaluated_tokens < latest.prompt_tokens / 2
    assert first
    run(shell, "%wasi_nn close story")


def test_a_session_continues_only_on_its_own_model(shell: InteractiveShell) -> None:
    """A cell naming another model used to continue the session on its own model."""
    for guest, session in (("complete", "tale"), ("chat", "chatter")):
        assert run(shell, f"%%wasi_nn {guest} -q --session {session} -p n-predict=2\nOnce").success
        result = run(shell, f"%%wasi_nn {guest} -m echo -q --session {session}\nHello echo")
        assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
        assert f"session {session!r} runs model 'default', not 'echo'" in str(result.error_in_exec)
        assert len(lab().session(session).generations) == 1
        run(shell, f"%wasi_nn close {session}")


def test_a_chat_guest_lives_across_cells_until_closed(shell: InteractiveShell) -> None:
    assert run(shell, "%%wasi_nn chat -q --session talk -p n-predict=8 -p temp=0\nHello!").success
    assert shell.user_ns["_wasi_nn"].exit_code is None  # waiting for the next turn
    assert run(shell, "%%wasi_nn chat -q --session talk\nAnd who are you?").success
    session = lab().session("talk")
    assert len(session.generations) == 2
    assert session.generations[1].evaluated_tokens < session.generations[1].prompt_tokens
    assert run(shell, "%wasi_nn close talk").success
    assert session.closed and "talk" not in shell.run_line_magic("wasi_nn", "sessions").index


def test_line_commands(shell: InteractiveShell, tmp_path) -> None:  # type: ignore[no-untyped-def]
    models = shell.run_line_magic("wasi_nn", "models")
    assert isinstance(models, pd.DataFrame) and {"default", "echo"} <= set(models.index)
    assert run(shell, "%%wasi_nn complete -q --session knobs -p n-predict=2\nHi").success
    assert shell.run_line_magic("wasi_nn", "get knobs n-predict") == 2
    shell.run_line_magic("wasi_nn", "set knobs temp=0.3 reverse-prompt=User:")
    parameters = shell.run_line_magic("wasi_nn", "get knobs")
    assert parameters["temp"] == 0.3 and parameters["reverse-prompt"] == "User:"
    sessions = shell.run_line_magic("wasi_nn", "sessions")
    assert list(sessions.columns) == ["guest", "model", "parameters", "generations", "latest prompt tokens",
                                      "evaluated tokens", "generated tokens", "state"]
    assert sessions.loc["knobs", "guest"] == "complete" and re.fullmatch(r"idle since \d\d:\d\d:\d\d",
                                                                        sessions.loc["knobs", "state"])
    assert sessions.loc["knobs", "generated tokens"] == 2 and sessions.loc["knobs", "generations"] == 1
    # What differs from the defaults, whole, where the dict was cut short after n-gpu-layers.
    assert "temp=0.3" in sessions.loc["knobs", "parameters"] and "reverse-prompt=User:" in sessions.loc["knobs", "parameters"]
    shell.run_line_magic("wasi_nn", "close knobs")
    properties = shell.run_line_magic("wasi_nn", "properties default")
    assert "backends.ggml.gpu_offload_supported" in properties.index and "model.n_params" in properties.index
    with pytest.warns(UserWarning):
        shell.run_line_magic("wasi_nn", f"preload later {tmp_path / 'later.gguf'} n-predict=5")
    assert shell.run_line_magic("wasi_nn", "models").loc["later", "default config"] == {"n-predict": 5}


@pytest.mark.parametrize(
    ("cell", "message", "usage"),
    [
        ("%%wasi_nn\nhi", "which guest?", "usage: %%wasi_nn [-m MODEL]"),
        ("%%wasi_nn stream --bogus\nhi", "unrecognized arguments: --bogus", "usage: %%wasi_nn [-m MODEL]"),
        ("%%wasi_nn stream --name x\nhi", "--name and --run go with --build", "usage: %%wasi_nn [-m MODEL]"),
        ("%%wasi_nn --build c\nint main(){}", "--build needs --name", "usage: %%wasi_nn [-m MODEL]"),
        ("%%wasi_nn stream -p temp\nhi", "expected KEY=VALUE", ""),
        ("%wasi_nn set s1", "usage: %wasi_nn set SESSION KEY=VALUE...", ""),
        ("%wasi_nn frobnicate", "invalid choice: 'frobnicate'",
         "{models,preload,sessions,get,set,close,properties,options,stats,plot,probs}"),
        ("%%wasi_nn stream --show prob\nhi", "argument --show: invalid choice: 'prob'", "usage: %%wasi_nn [-m MODEL]"),
        ("%%wasi_nn stream --show probs -p logprobs=0\nhi", "-p logprobs=0 turns them off", "usage: %%wasi_nn"),
        ("%%wasi_nn stream --show probs -q\nhi", "--quiet shows nothing", "usage: %%wasi_nn"),
        ("%wasi_nn probs s1 latest", "not 'latest'", "usage: %wasi_nn probs [SESSION] [N]"),
        ("%wasi_nn probs s1 0 1", "usage: %wasi_nn probs [SESSION] [N]", ""),
    ],
)
def test_bad_arguments_are_usage_errors(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str], cell: str, message: str, usage: str
) -> None:
    result = run(shell, cell)
    assert not result.success
    captured = capsys.readouterr()
    shown = captured.err + captured.out
    assert "UsageError" in shown and message in shown and usage in shown


def test_closing_an_unknown_session_fails_the_cell(shell: InteractiveShell) -> None:
    result = run(shell, "%wasi_nn close no-such-session")
    assert isinstance(result.error_in_exec, UsageError)  # a person's mistake: one line
    assert "no open session 'no-such-session'" in str(result.error_in_exec)


def test_failures_fail_the_cell_with_the_guests_stderr(shell: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(shell, "%%wasi_nn complete -m nobody\nHi")
    assert not result.success
    assert "not-found" in capsys.readouterr().err  # the guest's stderr is shown
    error = result.error_in_exec
    # Shown as one line that says what happened, not a traceback through the host.
    (line,) = error._render_traceback_()
    assert line.startswith("GuestExitError: guest exited with status 2") and "not-found" in line
    result = run(shell, "%%wasi_nn nonexistent\nHi")
    assert isinstance(result.error_in_exec, UsageError) and "unknown guest 'nonexistent'" in str(result.error_in_exec)
    result = run(shell, "%%wasi_nn complete -p temp=hot\nHi")
    assert isinstance(result.error_in_exec, UsageError) and "parameter 'temp' takes a number" in str(result.error_in_exec)


USER_CODE = """from wasinn_lab import Host
def open_with(host, params):
    return host.open_session("echo", params)
with Host(default_model=False) as host:
    open_with(host, {"no-such-parameter": 1})
"""


def test_a_lab_error_shows_the_users_own_frames_and_not_the_hosts(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every error of the tree showed its message alone in IPython: a person whose own
    code called the API wrongly could not see where."""
    result = run(shell, USER_CODE)
    shown = capsys.readouterr().out
    lines = result.error_in_exec._render_traceback_()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-1].startswith("ConfigError: no parameter 'no-such-parameter'")
    for line in ('open_with(host, {"no-such-parameter": 1})', 'return host.open_session("echo", params)'):
        assert line in shown and line in "\n".join(lines)
    assert "wasinn_lab" + os.sep not in shown and "interactiveshell.py" not in shown


def test_what_a_failed_call_said_is_in_the_cells_stderr_and_result(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(shell, "%%wasi_nn complete -e ctx_size=1000000000\nHi")
    assert not result.success
    said = "wasi-nn init_execution_context failed: ctx-size 1000000000 is over the model's context length 32768"
    assert shell.user_ns["_wasi_nn"].errors == [said]
    assert f"wasinn-lab: {said}" in capsys.readouterr().err  # in the stderr pane, before the guest's own line


def test_environment_values_reach_the_guest_as_written(shell: InteractiveShell) -> None:
    """-e values were read as JSON and written back by Python: true became "True", which
    the guests (like WasmEdge's) refuse as a boolean."""
    assert run(shell, "%%wasi_nn complete -q -e stream_stdout=true -e n_predict=3 -p temp=0\nHi").success
    generated = shell.user_ns["_wasi_nn"]
    assert generated.exit_code == 0 and generated.stdout.startswith(generated.text)  # streamed, then printed


def test_build_c_in_a_cell_then_run_it(shell: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    source = '#include <stdio.h>\nint main(int argc, char **argv) { printf("hello from %s\\n", argv[1]); return 0; }'
    assert run(shell, f"%%wasi_nn --build c --name hello --run\n{source}").success
    assert shell.user_ns["_wasi_nn"].stdout == "hello from default\n"
    assert run(shell, "%%wasi_nn hello -q -m echo\nunused").success  # usable by name afterwards
    assert shell.user_ns["_wasi_nn"].stdout == "hello from echo\n"
    capsys.readouterr()


def test_a_guest_built_in_a_cell_is_found_by_name_in_another_kernel(shell: InteractiveShell) -> None:
    """It was known only to the kernel that built it: another notebook said `unknown guest`."""
    source = '#include <stdio.h>\nint main(void) { printf("made elsewhere\\n"); return 0; }'
    assert run(shell, f"%%wasi_nn --build c --name elsewhere\n{source}").success
    other = subprocess.run([sys.executable, "-c", "from wasinn_lab import Host\n"
                            "with Host() as host: print(host.run('elsewhere', 'echo').stdout, end='')"],
                           capture_output=True, text=True, timeout=120)
    assert other.returncode == 0 and other.stdout == "made elsewhere\n", other.stderr
    # A source that does not build leaves the name with the guest that did.
    assert not run(shell, "%%wasi_nn --build c --name elsewhere\nint main(void) { return nope; }").success
    assert run(shell, "%%wasi_nn elsewhere -q -m echo\nunused").success
    assert shell.user_ns["_wasi_nn"].stdout == "made elsewhere\n"


def test_an_unknown_guest_is_answered_with_the_guests_that_run(shell: InteractiveShell) -> None:
    """Offered were providers and test guests, which cannot run as commands."""
    result = run(shell, "%%wasi_nn nonexistent\nHi")
    message = str(result.error_in_exec)
    offered = message.split("one of ", 1)[1].split("; built in notebook cells: ")[0].split(", ")
    assert {"stream", "chat", "complete", "chat_py", "ask"} <= set(offered)
    assert not {"chat_template", "model", "hostile", "probe"} & set(offered), offered
    assert "; built in notebook cells: " in message and "elsewhere" in message.split("cells: ")[1].split(", ")
    result = run(shell, "%%wasi_nn --build wat --name stream\n(module)")  # it would mean two things
    assert isinstance(result.error_in_exec, UsageError) and "'stream' is a built-in guest" in str(result.error_in_exec)


def test_the_result_names_only_sessions_that_are_still_open(shell: InteractiveShell) -> None:
    """The quickstart printed `sessions: ['s1']` for a cell without --session: a context that
    closed with the guest, never in %wasi_nn sessions."""
    assert run(shell, "%%wasi_nn stream -q -p n-predict=2\nHi").success
    assert shell.user_ns["_wasi_nn"].sessions == []
    assert run(shell, "%%wasi_nn stream -q --session kept -p n-predict=2\nHi").success
    assert shell.user_ns["_wasi_nn"].sessions == ["kept"]
    assert "kept" in shell.run_line_magic("wasi_nn", "sessions").index
    run(shell, "%wasi_nn close kept")


def test_get_shows_what_differs_from_the_defaults_and_folds_the_rest(shell: InteractiveShell) -> None:
    """It dumped a 40-line dict."""
    assert run(shell, "%%wasi_nn stream -q --session poem -p n-predict=2 -p temp=0.9\nRoses").success
    parameters = shell.run_line_magic("wasi_nn", "get poem")
    assert parameters["temp"] == 0.9 and dict(parameters) == lab().session("poem").parameters  # still a dict
    # The bundled model's own ctx-size (4096) differs from the backend's default too (0: the model's length).
    assert set(parameters.changed()) == {"ctx-size", "n-predict", "temp"}
    page = parameters._repr_html_()  # what a notebook shows
    assert "3 of" in page and "differ from the defaults" in page and "<details>" in page
    assert "default 0.8" in page and "random" in page  # the seed as a person reads it, folded with the rest
    assert len(pretty(parameters).splitlines()) == 5  # a line, the three changes, the rest in one line
    run(shell, "%wasi_nn close poem")

def test_compiler_errors_point_at_cell_lines(shell: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(shell, "%%wasi_nn --build c --name broken\nint main(void) {\n  return nope;\n}")
    assert not result.success
    message = str(result.error_in_exec)
    assert "guest 'broken' did not build" in message and "cell:2:" in message and "nope" in message


def test_build_wat(shell: InteractiveShell) -> None:
    wat = '(module (memory (export "memory") 1) (func (export "_start")))'
    assert run(shell, f"%%wasi_nn --build wat --name empty --run\n{wat}").success
    assert shell.user_ns["_wasi_nn"].exit_code == 0


def test_an_interrupt_stops_generation_fails_the_cell_and_keeps_the_session(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        result = run(shell, "%%wasi_nn stream -q --session long -p n-predict=2000 -p temp=0\nOnce upon a time")
    finally:
        timer.cancel()
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    frames = traceback.extract_tb(result.error_in_exec.__traceback__)
    assert not [frame for frame in frames if "wasinn_lab" in frame.filename and not frame.filename.endswith("magics.py")]
    # Shown as one line, as IPython shows its own magics' errors: no traceback through the lab.
    (line,) = result.error_in_exec._render_traceback_()  # type: ignore[attr-defined]
    assert line.startswith("KeyboardInterrupt: the lab stopped the generation; the ") and "session long is ready" in line
    shown = "".join(capsys.readouterr())
    assert line in shown and "Traceback" not in shown and "magics.py" not in shown
    session = lab().session("long")
    assert 0 < session.generations[-1].output_tokens < 2000  # stopped early, within a token
    assert shell.user_ns["_wasi_nn"].text == session.text  # what came before the interrupt is kept
    assert session.state == "idle"
    assert run(shell, "%%wasi_nn stream -q --session long -p n-predict=3\nAnd then").success
    assert session.generations[-1].output_tokens == 3
    run(shell, "%wasi_nn close long")


def test_stats_and_plots_come_from_the_sessions_metrics(shell: InteractiveShell) -> None:
    from matplotlib.figure import Figure

    assert run(shell, "%%wasi_nn stream -q --session measured -p n-predict=6 -p temp=0\nOne two").success
    assert run(shell, "%%wasi_nn stream -q --session measured -p n-predict=4 --live-plot\nthree").success
    stats = shell.run_line_magic("wasi_nn", "stats measured")
    assert list(stats.index) == [("measured", 0), ("measured", 1)]
    assert list(stats["generated tokens"]) == [6, 4]
    assert (stats["first token (s)"] > 0).all() and (stats["decode (tokens/s)"] > 0).all()
    # Rounded, with units, and only the columns read first (session.metrics() has them all, unrounded).
    assert list(stats.columns) == ["prompt tokens", "evaluated tokens", "generated tokens", "prompt eval (s)",
                                   "first token (s)", "decode (tokens/s)", "total (s)"]
    assert all(round(value, 3) == value for value in stats["first token (s)"])
    assert (stats["decode (tokens/s)"] == lab().session("measured").metrics()["decode_tok_per_s"].round(1).values).all()
    figure = shell.run_line_magic("wasi_nn", "plot measured")
    assert isinstance(figure, Figure) and len(figure.axes) == 3  # latency, and ttft with its decode-rate twin
    run(shell, "%wasi_nn close measured")


def test_limits_from_the_magic(shell: InteractiveShell) -> None:
    source = '(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))'
    assert run(shell, f"%%wasi_nn --build wat --name spinner\n{source}").success
    result = run(shell, "%%wasi_nn spinner -q --timeout 0.5\nignored")
    assert "time limit of 0.5 s" in str(result.error_in_exec)
    result = run(shell, "%%wasi_nn spinner -q --fuel 1000\nignored")
    assert "fuel (1,000)" in str(result.error_in_exec)
    assert not run(shell, "%%wasi_nn spinner --timeout -1\nx").success  # a UsageError
    result = run(shell, "%%wasi_nn spinner -q --limit timeout=0.5\nignored")
    assert "time limit of 0.5 s" in str(result.error_in_exec)
    result = run(shell, "%%wasi_nn spinner -q --limit tables=many\nignored")
    assert isinstance(result.error_in_exec, UsageError) and "limit tables takes a number" in str(result.error_in_exec)


def test_cell_guests_include_the_shared_header(shell: InteractiveShell) -> None:
    source = (
        '#include "wasi_nn.h"\n'
        "int main(int argc, char **argv) {\n"
        "    graph g; nn_load(nn_model_arg(argc, argv, 1, \"usage\"), &g);\n"
        '    printf("loaded\\n"); return 0;\n}'
    )
    assert run(shell, f"%%wasi_nn --build c --name includer --run\n{source}").success, "wasi_nn.h not found?"
    assert shell.user_ns["_wasi_nn"].stdout == "loaded\n"


def test_an_expired_chat_session_ends_its_guest_and_starts_afresh(shell: InteractiveShell) -> None:
    sessions = lab().host.sessions
    assert run(shell, "%%wasi_nn chat -q --session fleeting -p n-predict=4\nHi").success
    task = lab()._chats["fleeting"]
    saved, sessions.idle_timeout = sessions.idle_timeout, 0.01
    try:
        import time

        time.sleep(0.05)
        assert "fleeting" in sessions.sweep()
    finally:
        sessions.idle_timeout = saved
    task.close(timeout=10)
    assert not task.running  # the guest got end of input and left
    assert run(shell, "%%wasi_nn chat -q --session fleeting -p n-predict=4\nHello again").success
    assert len(lab().session("fleeting").generations) == 1  # a new session, a new guest
    run(shell, "%wasi_nn close fleeting")


def test_the_extension_leaves_ipythons_error_handler_alone() -> None:
    """It used to take IPython's one custom-exception slot for every lab error, and clear
    it at unload: a handler the user had set was lost."""
    ip = InteractiveShell.instance()
    seen: list[str] = []

    def handler(shell: object, etype: type, value: BaseException, tb: object, tb_offset: object = None) -> None:
        seen.append(str(value))

    ip.set_custom_exc((LookupError,), handler)
    try:
        ip.run_line_magic("unload_ext", "wasinn_lab")
        ip.run_line_magic("load_ext", "wasinn_lab")
        ip.run_cell("raise LookupError('mine')")
        assert seen == ["mine"]
    finally:
        ip.set_custom_exc((), None)


def test_a_bug_keeps_its_traceback(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def generate_with_a_bug(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug in the lab")

    monkeypatch.setattr(lab(), "generate", generate_with_a_bug)
    result = run(shell, "%%wasi_nn stream\nHi")
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    shown = "".join(capsys.readouterr())
    assert "Traceback" in shown and "generate_with_a_bug" in shown


def shaded(outputs: list) -> tuple[TokenSpans, str]:  # type: ignore[type-arg]
    """The token spans of the one shaded view among a cell's displays, and its plain text."""
    (view,) = [output.data for output in outputs if "wasinn-probs-" in output.data.get("text/html", "")]
    spans = TokenSpans()
    spans.feed(view["text/html"])
    return spans, view["text/plain"]


def test_show_probs_shades_every_token_and_gives_its_alternatives(shell: InteractiveShell) -> None:
    with capture_output() as captured:
        result = run(shell, "%%wasi_nn stream --session shaded -p n-predict=8 -p temp=0 --show probs\nThe sky is")
    assert result.success, result.error_in_exec
    tokens = lab().session("shaded").token_metrics()
    assert lab().session("shaded").get("logprobs") == 5  # turned on for the cell, as the caption says
    spans, plain = shaded(captured.outputs)
    assert "logprobs=5, turned on by --show probs" in plain
    assert [span["text"].replace("↵\n", "\n") for span in spans.tokens] == list(tokens["text"])  # one span a token
    assert [round(span["p"], 4) for span in spans.tokens] == [round(math.exp(lp), 4) for lp in tokens["logprob"]]
    for span, top in zip(spans.tokens, tokens["top"]):
        assert len(top) == 5 and "rank 1" in span["popup"]  # greedy: the likeliest, every time
        assert all(f"% {visible(text)}" in span["popup"] for text, _ in top)
    # Again from the session: the same view, now with its own caption.
    with capture_output() as again:
        shell.run_line_magic("wasi_nn", "probs shaded")
    assert [span["text"] for span in shaded(again.outputs)[0].tokens] == [span["text"] for span in spans.tokens]
    run(shell, "%wasi_nn close shaded")


def test_a_session_with_logprobs_on_keeps_its_k_and_one_without_says_how(shell: InteractiveShell) -> None:
    assert run(shell, "%%wasi_nn stream -q --session plain -p n-predict=3 -p temp=0\nOne two").success
    with capture_output() as captured:
        shell.run_line_magic("wasi_nn", "probs plain")
    assert "run the generation with -p logprobs=K" in shaded(captured.outputs)[1]
    shell.run_line_magic("wasi_nn", "set plain logprobs=3")
    with capture_output() as captured:
        assert run(shell, "%%wasi_nn stream --session plain -p n-predict=3 --show probs\nthree").success
    assert "top 3 alternatives (session plain's logprobs=3)" in shaded(captured.outputs)[1]
    assert all(len(top) == 3 for top in lab().session("plain").token_metrics()["top"].iloc[-3:])
    with pytest.raises(UsageError, match="has generations 0 to 1, not 5"):
        shell.run_line_magic("wasi_nn", "probs plain 5")
    run(shell, "%wasi_nn close plain")
