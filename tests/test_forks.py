"""Forks: a session copied into a new one that continues as it would (``Session.fork``),
from Python, through ``wasinn:llm``'s ``context.fork()``, and in a cell (``--fork N``)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import GREEDY

from wasinn_lab import Busy, Host, InvalidArgument, Tensor, TensorType, guests
from wasinn_lab.abi.llm import VERSION
from wasinn_lab.compose import component_imports, compose, unprovided


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
