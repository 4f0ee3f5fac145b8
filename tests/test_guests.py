"""The guests in guests/, end to end on the default model (and the echo backend)."""

from __future__ import annotations

import json
import math
import re
import time

import pytest

from wasinn_lab import ConfigError, GuestExitError, GuestTrap, Host

SEEDED = {"n_predict": "16", "temp": "0.7", "seed": "7"}


def usage_lines(stderr: str) -> list[dict]:
    return [json.loads(line[len("usage: "):]) for line in stderr.splitlines() if line.startswith("usage: {")]


def test_complete_generates_bounded_text(host: Host) -> None:
    # Greedy, so the count cannot fall short by the model ending the text by chance.
    result = host.run("complete", "default", "The capital of France is", env={"n_predict": "8", "temp": "0"})
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip()
    assert usage_lines(result.stderr)[-1]["output_tokens"] == 8


def test_default_registration_bounds_guests_that_set_no_length(host: Host) -> None:
    # Greedy (temp only: no length is set), so the model cannot end the text by chance first.
    result = host.run("stream", "default", "Once upon a time", env={"temp": "0"})
    assert result.exit_code == 0, result.stderr
    assert usage_lines(result.stderr)[-1]["output_tokens"] == 128


def test_stream_delivers_tokens_as_they_are_written(host: Host) -> None:
    arrivals: list[tuple[float, bytes]] = []
    result = host.run("stream", "default", "List three colours:", env={"n_predict": "10", "temp": "0"},
                      on_stdout=lambda chunk: arrivals.append((time.monotonic(), chunk)))
    assert result.exit_code == 0, result.stderr
    assert b"".join(chunk for _, chunk in arrivals).decode() == result.stdout
    # As written, not at the end: pieces spread over the ten decodes (batched, they would not be).
    times = [when for when, _ in arrivals]
    assert len(arrivals) >= 3 and times[-1] - times[0] > 0.02


def test_streamed_text_equals_compute_text_with_a_fixed_seed(host: Host) -> None:
    prompt = "My favourite programming language is"
    complete = host.run("complete", "default", prompt, env=SEEDED)
    stream = host.run("stream", "default", prompt, env=SEEDED)
    assert complete.exit_code == stream.exit_code == 0
    assert stream.stdout == complete.stdout and stream.stdout.strip()


def test_prompt_from_stdin(host: Host) -> None:
    result = host.run("complete", "default", stdin="Roses are red,", env={"n_predict": "4"})
    assert result.exit_code == 0 and usage_lines(result.stderr)[-1]["input_tokens"] >= 4


def test_chat_keeps_the_conversation_and_reuses_the_prefix(host: Host) -> None:
    turns = "Hello, who are you?\nWhat is your favourite colour?\nWhy do you like it?\n"
    task = host.start("chat", "default", stdin=turns, env={"n_predict": "12", "temp": "0"})
    events = list(task.events(timeout=120))
    result = events[-1].data
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) >= 3
    (session,) = task.sessions
    prompts = [g.prompt_tokens for g in session.generations]
    evaluated = [g.evaluated_tokens for g in session.generations]
    assert len(prompts) == 3 and prompts[0] < prompts[1] < prompts[2]  # the whole conversation each turn
    assert evaluated[0] == prompts[0]
    for turn in (1, 2):
        # Only what is new since the last turn is evaluated, not the whole conversation.
        assert evaluated[turn] <= prompts[turn] - prompts[turn - 1] + 2
        assert evaluated[turn] < prompts[turn] / 2


def test_embed_returns_a_normalized_mean_pooled_embedding(host: Host) -> None:
    result = host.run("embed", "default", "WebAssembly is a portable binary format.")
    assert result.exit_code == 0, result.stderr
    output = json.loads(result.stdout)
    n = output["n_embedding"]
    assert n == len(output["embedding"]) == int(host.properties("default")["model"]["metadata"]["gemma3.embedding_length"])
    assert math.isclose(math.sqrt(sum(v * v for v in output["embedding"])), 1.0, rel_tol=1e-4)
    other = json.loads(host.run("embed", "default", "Bananas are yellow.").stdout)["embedding"]
    assert other != output["embedding"]


def test_echo_guest_round_trips_every_tensor_type(host: Host) -> None:
    result = host.run("echo", "echo")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "echo: 30 cases passed" in result.stdout
    types = set(re.findall(r"^ok type=(\w+)", result.stdout, re.M))
    assert types == {"f16", "f32", "f64", "u8", "i32", "i64"}


def test_unregistered_model_fails_the_guest_with_not_found(host: Host) -> None:
    result = host.run("complete", "nobody", "hi")
    assert result.exit_code == 2
    assert "errno 8" in result.stderr and "not-found" in result.stderr
    with pytest.raises(GuestExitError) as raised:
        host.run("complete", "nobody", "hi", check=True)
    assert raised.value.exit_code == 2 and "not-found" in str(raised.value)


def test_a_trapping_guest_raises_guest_trap_and_frees_its_sessions(host: Host) -> None:
    wat = """(module
      (import "wasi_ephemeral_nn" "load_by_name" (func $load (param i32 i32 i32) (result i32)))
      (import "wasi_ephemeral_nn" "init_execution_context" (func $init (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "default")
      (func (export "_start")
        (drop (call $load (i32.const 0) (i32.const 7) (i32.const 16)))
        (drop (call $init (i32.load (i32.const 16)) (i32.const 20)))
        unreachable))"""
    import wasmtime

    before = len(host.sessions)
    with pytest.raises(GuestTrap, match="unreachable"):
        host.run(wasmtime.wat2wasm(wat))
    assert len(host.sessions) == before


def test_stream_stdout_prints_tokens_to_the_guests_stdout_as_compute_makes_them(host: Host) -> None:
    arrivals: list[float] = []
    env = {"n_predict": "6", "stream_stdout": "1", **{k: v for k, v in SEEDED.items() if k != "n_predict"}}
    result = host.run("complete", "default", "Hello", env=env, session="streamed",
                      on_stdout=lambda chunk: arrivals.append(time.perf_counter()))
    assert result.exit_code == 0, result.stderr
    generation = host.session("streamed").generations[-1]
    host.sessions.close("streamed")
    text = host.run("complete", "default", "Hello", env={**env, "stream_stdout": "0"}).stdout.rstrip("\n")
    # The streamed tokens first, then the guest's own print of the whole text; the first
    # token reached stdout while compute was still making the others.
    assert result.stdout == text + text + "\n"
    assert arrivals[0] < generation.token_times[-1]


def test_enable_log_turns_llama_cpp_logging_on_for_that_context(host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    host.run("complete", "default", "Hi", env={"n_predict": "2"})
    assert "llama_context" not in capsys.readouterr().err
    host.run("complete", "default", "Hi", env={"n_predict": "2", "enable_log": "1", "ctx_size": "512"})
    assert "llama_context" in capsys.readouterr().err
    host.run("complete", "default", "Hi", env={"n_predict": "2", "ctx_size": "256"})
    assert "llama_context" not in capsys.readouterr().err  # off again once that context is gone


def test_a_run_keeps_what_its_failed_wasi_nn_calls_said(host: Host) -> None:
    messages: list[str] = []
    result = host.run("complete", "default", "Hello", env={"ctx_size": "1000000000"}, on_error=messages.append)
    assert result.exit_code == 2
    assert result.errors == messages == [
        "wasi-nn init_execution_context failed: ctx-size 1000000000 is over the model's context length 32768"
    ]
    # The answers of a protocol are not failures: the end of a stream, a buffer too small.
    assert host.run("stream", "default", "Hi", env={"n_predict": "3"}).errors == []
    assert host.run("echo", "echo").errors == []


def test_bad_params_leave_no_session_refused_before_the_guest_starts_or_on_its_context(host: Host) -> None:
    before = len(host.sessions)
    with pytest.raises(ConfigError, match="parameter 'temp' takes a number"):
        host.run("complete", "default", "Hello", params={"temp": "hot"})
    with pytest.raises(ConfigError, match="no parameter 'tmep'; the parameters are: "):
        host.run("complete", "default", "Hello", params={"tmep": 0.2})
    assert len(host.sessions) == before
    # A number the model cannot take fails on the guest's context, once it exists: the
    # guest gets an error, and the session it named is not left open.
    result = host.run("complete", "default", "Hello", params={"ctx-size": 10**9}, session="too-big")
    assert result.exit_code == 2 and "ctx-size 1000000000 is over the model's context length" in result.errors[0]
    assert len(host.sessions) == before and host.sessions.find("too-big") is None
