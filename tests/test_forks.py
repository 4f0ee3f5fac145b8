"""Forks: a session copied into a new one that continues as it would (``Session.fork``),
from Python, through ``wasinn:llm``'s ``context.fork()``, and in a cell (``--fork N``)."""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import threading
from pathlib import Path

import pytest
from conftest import GREEDY
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from kernel_run import execute

from wasinn_lab import Busy, Host, InvalidArgument, Tensor, TensorType, guests
from wasinn_lab.abi.llm import VERSION
from wasinn_lab.compose import component_imports, compose, unprovided
from wasinn_lab.notebook import current_lab as lab


def prompt(text: str) -> Tensor:
    return Tensor((len(text.encode()),), TensorType.U8, text.encode())


def test_a_fork_has_its_parents_parameters_inputs_and_text(host: Host) -> None:
    with host.open_session("default", {**GREEDY, "n-predict": 4}) as parent:
        parent.compute({"prompt": prompt("Once upon a time")})
        parent.set(top_k=7)  # pending: it goes with the fork too
        with parent.fork("fork-params") as fork:
            assert host.session("fork-params") is fork and fork.guest is None and fork.model == parent.model
            assert fork.parameters == parent.parameters and fork.pending == {"top-k": 7}
            assert fork.text == parent.text != "" and fork.get_output("text") == parent.get_output("text")
            assert fork.generations == []  # the parent's metrics stay the parent's
            # The input stays set: a compute with no new input generates on the same prompt.
            assert fork.compute()["text"].data.decode() == parent.compute()["text"].data.decode()


def test_a_fork_continues_as_its_parent_would_and_then_goes_its_own_way(host: Host) -> None:
    with host.open_session("default", {**GREEDY, "n-predict": 6}) as parent:
        first = parent.compute({"prompt": prompt("The capital of France is")})["text"].data.decode()
        follow_up = "The capital of France is" + first + " And the capital of Italy is"
        with parent.fork() as fork:
            assert fork.id != parent.id and host.session(fork.id) is fork
            # Greedy: the fork's next generation is the parent's own next one.
            forked = fork.compute({"prompt": prompt(follow_up)})["text"].data.decode()
            assert forked == parent.compute({"prompt": prompt(follow_up)})["text"].data.decode()
            # Independent from now on: parameters, inputs and text.
            fork.set(n_predict=2)
            assert parent.get("n-predict") == 6
            fork.compute({"prompt": prompt("Hello")})
            assert fork.usage().output_tokens == 2 and parent.text == forked
            parent.set(n_predict=3)
            assert fork.get("n-predict") == 2


def test_forking_is_refused_while_generating_or_closed_or_over_the_limit(host: Host) -> None:
    with host.open_session("default", {**GREEDY, "n-predict": 20}) as parent:
        parent.set_input("prompt", prompt("Once upon a time"))
        parent.start_generation()
        assert parent.next_token() is not None
        with pytest.raises(Busy, match="fork it once the generation has ended, or stop it"):
            parent.fork()
        parent.end_generation()
        with parent.fork("fork-taken"), pytest.raises(Busy, match="'fork-taken' is already open"):
            parent.fork("fork-taken")
    with pytest.raises(InvalidArgument, match="is closed"):
        parent.fork()
    with Host(default_model=False, max_sessions=2) as small:
        echo = small.open_session("echo")
        echo.fork()
        with pytest.raises(Busy, match="the maximum is 2: close some or raise max_sessions"):
            echo.fork()
        assert len(small.sessions) == 2


def test_an_echo_session_forks_with_its_inputs_and_outputs(host: Host) -> None:
    tensors = {"a": Tensor((2,), TensorType.U8, b"ab"), "b": Tensor((1,), TensorType.F32, bytes(4))}
    with host.open_session("echo") as parent:
        assert parent.compute(tensors) == tensors
        with parent.fork() as fork:
            assert fork.get_output("a") == tensors["a"] and fork.compute() == tensors
            fork.set_input("c", Tensor((1,), TensorType.U8, b"c"))
            assert list(fork.compute()) == ["a", "b", "c"] and parent.compute() == tensors


# -- wasinn:llm: context.fork() -----------------------------------------------------------


def _branches(stdout: str) -> dict[int, str]:
    """fork_llm's "[seed S] TEXT" lines, by seed."""
    return {int(seed): text for seed, text in re.findall(r"^\[seed (\d+)\] (.*)$", stdout, re.M)}


def test_a_component_forks_its_context_and_both_branches_generate(host: Host) -> None:
    result = host.run("fork_llm", "default", "Once upon a time", "7", env={"n_predict": "6", "temp": "0.9"})
    assert result.exit_code == 0, result.stderr
    branches = _branches(result.stdout)
    assert list(branches) == [7, 8] and all(text.strip() for text in branches.values()), result.stdout
    assert result.errors == [] and len(host.sessions) == 0  # the forks went with the guest
    # Greedy, both branches are the parent's own continuation: the same text.
    greedy = host.run("fork_llm", "default", "Once upon a time", env={"n_predict": "6", "temp": "0"})
    first, second = _branches(greedy.stdout).values()
    assert first == second and first.strip()


def test_a_provider_forks_its_conversation_with_the_hosts_context(host: Host, tmp_path: Path) -> None:
    composed = compose("fork_llm", ["chat_template"], tmp_path / "fork+chat.wasm")
    result = host.run(str(composed.path), "default", "Name a colour.", env={"n_predict": "6"})
    assert result.exit_code == 0, result.stderr
    assert list(_branches(result.stdout)) == [1, 2]


def test_a_guest_built_against_0_1_0_still_runs(host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """wasmtime's linker serves an import of @0.1.0 with the host's @0.1.1 (semver), and
    the host's import check must let it through."""
    old = tmp_path / "guests"
    shutil.copytree(guests.SOURCE_DIR, old, ignore=shutil.ignore_patterns("*.md"))
    for path in [*old.rglob("*.wit"), *old.rglob("*.h")]:
        path.write_text(path.read_text().replace(f"@{VERSION}", "@0.1.0"))
    monkeypatch.setattr(guests, "SOURCE_DIR", old)
    wasm = guests.build(old / "components" / "stream_llm.c", tmp_path / "stream_llm-0.1.0.wasm")
    imports = component_imports(wasm.read_bytes())
    assert "wasinn:llm/prompt@0.1.0" in imports and VERSION != "0.1.0"
    result = host.run(str(wasm), "default", "Once upon a time", params={"n-predict": 4})
    assert result.exit_code == 0 and result.stdout.strip(), result.stderr
    assert unprovided(["wasinn:llm/prompt@0.1.0", "wasinn:llm/prompt@0.1.9", "wasinn:llm/prompt@0.2.0"]) == [
        "wasinn:llm/prompt@0.1.9", "wasinn:llm/prompt@0.2.0"]


# -- %%wasi_nn GUEST --fork N ----------------------------------------------------------------


def test_a_fork_cell_continues_a_named_session_in_columns(shell: InteractiveShell,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    cell = "%%wasi_nn stream -q --session fork-story -p n-predict=6 -p temp=0\nOnce upon a time"
    assert shell.run_cell(cell, store_history=False).success
    story = shell.user_ns["_wasi_nn"].text
    before = len(lab().host.sessions)
    result = shell.run_cell("%%wasi_nn stream --session fork-story --fork 2 -p seed=11\nThe end.", store_history=False)
    assert result.success, result.error_in_exec
    forks = shell.user_ns["_wasi_nn"]
    assert forks.seeds == [11, 12] and [r.exit_code for r in forks.results] == [0, 0]
    out = capsys.readouterr().out
    assert "[stream · default · forks of session fork-story · 2 forks · done]" in out
    assert out.index("[seed 11 · done]") < out.index("[seed 12 · done]")
    assert all(text.strip() and text in out for text in forks.texts)
    # Greedy: both forks continue the story with the cell as the story would.
    assert forks.texts[0] == forks.texts[1]
    session = lab().session("fork-story")
    assert len(lab().host.sessions) == before and lab().continued_text("fork-story").endswith(story)
    assert session.generations[-1].output_tokens == 0  # the parent evaluated the prompt, generated nothing
    lab().close("fork-story")


@pytest.mark.parametrize(("line", "said"), [
    ("stream --fork 0", "--fork N takes how many continuations to show, 1 or more, not 0"),
    ("stream --fork -2", "1 or more, not -2"),
    ("stream --fork 100", "--fork 100 needs 101 sessions, and 100 of the 100 allowed are free: ask for at most 99"),
    ("chat --fork 2", "chat reads turns from stdin: run it without --fork"),
    ("stream --fork 2 -m echo", "--fork continues text: model 'echo' does not generate any"),
    ("stream --fork 2 -p seed=-1", "give a whole number, 0 or more, or no seed for random ones"),
])
def test_a_fork_cell_that_cannot_work_says_what_to_fix(shell: InteractiveShell, capsys: pytest.CaptureFixture[str],
                                                       line: str, said: str) -> None:
    result = shell.run_cell(f"%%wasi_nn {line}\nHi", store_history=False)
    assert isinstance(result.error_in_exec, UsageError) and said in str(result.error_in_exec)
    assert "[seed" not in capsys.readouterr().out and len(lab().host.sessions) == 0  # no empty columns, nothing left


def test_fork_columns_stream_into_one_display_in_a_kernel() -> None:
    code = ("%load_ext wasinn_lab\n"
            "get_ipython().run_cell_magic('wasi_nn', 'stream --fork 3 -p n-predict=12', 'Once upon a time')\n"
            "print(repr(_wasi_nn.texts))")
    reply, messages = execute(code, timeout=300)
    assert reply["content"]["status"] == "ok"
    shown = [m for m in messages if m["msg_type"] in ("display_data", "update_display_data")]
    assert shown[0]["msg_type"] == "display_data"
    assert len({m["content"]["transient"]["display_id"] for m in shown}) == 1  # one display, updated in place
    final = shown[-1]["content"]["data"]
    assert final["text/html"].count("<td ") == 3 and "3 forks · done" in final["text/plain"]
    assert len(set(re.findall(r"\[seed (\d+) · done\]", final["text/plain"]))) == 3
    texts = eval(next(m for m in messages if m["msg_type"] == "stream")["content"]["text"])
    assert len(texts) == 3 and all(text.strip() and html.escape(text) in final["text/html"] for text in texts)


def test_an_interrupt_stops_every_fork_and_keeps_what_came(shell: InteractiveShell,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    cell_over = threading.Event()

    def interrupt_once_both_forks_generate() -> None:
        while not cell_over.wait(0.05):
            generating = [s for s in lab().host.sessions if s.generations and s.generations[-1].output_tokens > 2]
            if len(generating) == 2:
                os.kill(os.getpid(), signal.SIGINT)
                return

    watcher = threading.Thread(target=interrupt_once_both_forks_generate)
    watcher.start()
    try:
        result = shell.run_cell("%%wasi_nn stream --fork 2 -p n-predict=2000\nOnce upon a time", store_history=False)
    finally:
        cell_over.set()
        watcher.join()
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    (line,) = result.error_in_exec._render_traceback_()  # type: ignore[attr-defined]
    assert line == "KeyboardInterrupt: the lab stopped the 2 generations; what came is kept in _wasi_nn"
    forks = shell.user_ns["_wasi_nn"]
    out = capsys.readouterr().out
    assert "2 forks · interrupted]" in out and all(text and text in out for text in forks.texts)
    assert len(lab().host.sessions) == 0  # the forks and their parent are closed
