"""Forks: a session copied into a new one that continues as it would (``Session.fork``),
from Python, through ``wasinn:llm``'s ``context.fork()``, and in a cell (``--fork N``)."""

from __future__ import annotations

import pytest
from conftest import GREEDY

from wasinn_lab import Busy, Host, InvalidArgument, Tensor, TensorType


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
