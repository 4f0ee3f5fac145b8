"""The host boundary every front-end shares (``GuestNN.boundary``) and what crosses it:
why a generation ended, from the backend's token stream up, and what a guest's failed
calls said when there are more than are kept. Real wasmtime, the default model, guests
built from guests/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from wasinn_lab import Host
from wasinn_lab.abi.conventions import prompt_tensor
from wasinn_lab.backends.base import PROMPT, EndReason
from wasinn_lab.nn import MAX_ERRORS
from wasinn_lab.sessions import Session


@pytest.fixture
def session(host: Host) -> Iterator[Session]:
    opened = host.open_session("default", {"temp": 0.0, "n-predict": 3})
    try:
        yield opened
    finally:
        host.sessions.discard(opened)


def test_a_session_says_why_its_generation_ended(session: Session) -> None:
    assert session.end_reason is None  # none yet
    session.compute({PROMPT: prompt_tensor("Once upon a time")})
    assert session.end_reason is EndReason.LENGTH and session.usage().output_tokens == 3

    session.set({"reverse-prompt": " ", "n-predict": 64})  # the first word ends it
    session.compute({PROMPT: prompt_tensor("Once upon a time")})
    assert session.end_reason is EndReason.STOP and session.usage().output_tokens < 64

    session.set({"reverse-prompt": "", "n-predict": 3})
    session.set_input(PROMPT, prompt_tensor("Once upon a time"))
    session.start_generation()
    assert session.next_token() is not None
    assert session.end_reason is None  # under way
    session.stop()
    assert session.next_token() is None
    assert session.end_reason is EndReason.CANCELLED


def test_the_limit_in_force_ends_a_generation_not_one_set_for_the_next(session: Session) -> None:
    """n-predict set while a generation runs applies from the next one: this one still
    ends at its own limit, and says so."""
    session.set_input(PROMPT, prompt_tensor("Once upon a time"))
    session.start_generation()
    assert session.next_token() is not None
    session.set(n_predict=64)
    while session.next_token() is not None:
        pass
    assert session.usage().output_tokens == 3 and session.end_reason is EndReason.LENGTH


def test_a_new_input_cancels_the_generation_under_way(session: Session) -> None:
    session.set_input(PROMPT, prompt_tensor("Once upon a time"))
    session.start_generation()
    assert session.next_token() is not None
    session.set_input(PROMPT, prompt_tensor("And then"))
    assert session.end_reason is EndReason.CANCELLED


def test_a_component_reads_each_finish_reason_in_usage(host: Host) -> None:
    """wasinn:llm's usage().finish, from a real component: the limit in force (the guest
    raises n-predict mid-generation, for the next one), the reverse prompt, a cancel."""
    result = host.run("hostile", "finishes", "default")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "n-predict: length; reverse prompt: stop; cancel: cancelled" in result.stdout


# A guest that asks for an unknown graph 150 times: each is errno 1, and says why.
FAILS_150_TIMES = """(module
  (import "wasi_ephemeral_nn" "init_execution_context" (func $init (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $i i32)
    (loop $again
      (drop (call $init (i32.const 77) (i32.const 0)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 150))))))"""


def test_failed_calls_past_those_kept_are_counted_and_said(host: Host, tmp_path: Path) -> None:
    guest = tmp_path / "fails.wat"
    guest.write_text(FAILS_150_TIMES)
    said: list[str] = []
    result = host.run(guest, on_error=said.append)
    assert result.exit_code == 0
    assert len(result.errors) == MAX_ERRORS and result.errors_dropped == 150 - MAX_ERRORS
    assert result.errors[0] == "wasi-nn init_execution_context failed: unknown or freed graph handle 77"
    # What is shown as it happens ends with a line that says more failed than are kept.
    assert said[:-1] == result.errors
    assert said[-1] == (f"more wasi-nn calls failed: only the first {MAX_ERRORS} are kept "
                        "(RunResult.errors_dropped counts the rest)")


def test_a_host_bug_in_a_call_is_logged_kept_and_a_runtime_error_in_each_front_end(
    host: Host, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The boundary turns an exception from outside the error tree into the runtime-error
    of the guest's ABI; the guest goes on, the person sees what happened."""

    def a_host_bug(self: Session) -> None:
        raise RuntimeError("a host bug")

    monkeypatch.setattr(Session, "start_generation", a_host_bug)
    said = "the host failed unexpectedly (RuntimeError: a host bug)"
    module = host.run("stream", "default", "Hi")
    assert f"wasi-nn compute_single failed: {said}" in module.errors
    assert "error: compute_single failed: errno 5" in module.stderr, module.stderr
    component = host.run("stream_llm", "default", "Hi")
    assert component.errors == [f"wasinn:llm generate failed: {said}"]
    assert f"error: generate failed: runtime-error: {said}" in component.stderr
    logged = [record for record in caplog.records if "failed unexpectedly" in record.getMessage()]
    assert len(logged) >= 2 and all(record.exc_info for record in logged)
