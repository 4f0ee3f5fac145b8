"""Sessions from Python: named tensors, token streams, parameters, listeners, limits and
idle expiry."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import GREEDY

from wasinn_lab import (
    Busy,
    ConfigError,
    Host,
    InvalidArgument,
    NotFound,
    PromptTooLong,
    Session,
    Tensor,
    TensorType,
)


def prompt(text: str) -> Tensor:
    return Tensor((1,), TensorType.U8, text.encode())


def test_parameters_are_readable_and_settable_while_the_session_lives(host: Host) -> None:
    with host.open_session("default", {"temp": 0.0}) as session:
        assert session.get("temp") == 0.0 and session.get("n_predict") == 128
        session.set(n_predict=3)
        session.set({"top-k": 5})
        assert session.parameters["n-predict"] == 3 and session.get("top-k") == 5
        outputs = session.compute({"prompt": prompt("Hello")})
        assert session.usage().output_tokens == 3 and list(outputs) == ["text"]
        with pytest.raises(InvalidArgument, match="'temp' takes a number"):
            session.set(temp="warm")
        with pytest.raises(InvalidArgument, match="no option 'warmth'"):
            session.set(warmth=1)
        with pytest.raises(ConfigError, match="no parameter 'warmth'"):
            session.get("warmth")


def test_compute_takes_and_returns_named_tensors(host: Host) -> None:
    with host.open_session("default", {**GREEDY, "n-predict": 4}) as session:
        outputs = session.compute({"prompt": prompt("Once upon a time")})
        text = outputs["text"]
        assert text.type is TensorType.U8 and text.dims == (len(text.data),)
        assert text.data.decode() == session.text and session.output_names() == ["text"]
        with pytest.raises(InvalidArgument, match="takes one input, 'prompt'"):
            session.set_input("question", prompt("x"))
        with pytest.raises(InvalidArgument, match="no output named 'logits'"):
            session.get_output("logits")
    with host.open_session("echo") as echo:
        tensors = {"a": Tensor((2,), TensorType.F32, bytes(8)), "b": Tensor((1, 3), TensorType.U8, b"xyz")}
        assert echo.compute(tensors) == tensors


def test_each_compute_answers_for_its_own_inputs_only(host: Host) -> None:
    """The echo model used to answer a compute with every tensor its context had ever
    been given: x, then x, t0, t1 and t2."""

    def named(*names: str) -> dict[str, Tensor]:
        return {name: Tensor((len(name),), TensorType.U8, name.encode()) for name in names}

    with host.open_session("echo") as echo:
        x, three = named("x"), named("t0", "t1", "t2")
        assert echo.compute(x) == x
        assert echo.compute(three) == three
        assert echo.compute(x) == x
        # What set_input staged stays staged (preview1's, as in WasmEdge): a compute
        # given no inputs answers for all of it.
        echo.set_input("y", named("y")["y"])
        assert echo.compute() == {**x, **named("y")}


def test_a_generation_is_a_stream_the_caller_pulls(host: Host) -> None:
    with host.open_session("default", {**GREEDY, "n-predict": 5}) as session:
        session.set_input("prompt", prompt("Once upon a time"))
        session.start_generation()
        tokens = []
        while (token := session.next_token()) is not None:
            tokens.append(token)
        assert len(tokens) == 5 and not session.streaming
        assert "".join(t.text for t in tokens) == session.text == session.get_output("text").data.decode()
        assert session.usage().output_tokens == 5
        # The same prompt again, by compute: the same text (greedy), and prefix reuse.
        assert session.compute()["text"].data.decode() == session.text
        assert session.generations[-1].evaluated_tokens == 1


def test_stop_ends_the_stream_before_its_next_token(host: Host) -> None:
    with host.open_session("default", {**GREEDY, "n-predict": 50}) as session:
        session.set_input("prompt", prompt("Once upon a time"))
        session.start_generation()
        assert session.next_token() is not None
        session.stop()
        assert session.next_token() is None and not session.streaming
        with pytest.raises(InvalidArgument, match="no generation under way"):
            session.next_token()


def test_listeners_receive_the_text_token_by_token(host: Host) -> None:
    with host.open_session("default", {**GREEDY, "n-predict": 6}) as session:
        pieces: list[str] = []
        remove = session.add_listener(lambda token: pieces.append(token.text))
        session.compute({"prompt": prompt("Once upon a time")})
        assert len(pieces) == 6
        assert "".join(pieces) == session.text
        remove()
        session.compute()
        assert len(pieces) == 6


def test_a_context_setting_rebuilds_the_context(host: Host) -> None:
    with host.open_session("default", {**GREEDY, "n-predict": 2}) as session:
        session.compute({"prompt": prompt("A B C D")})
        session.set({"ctx-size": 128})
        session.compute({"prompt": prompt("A B C D")})  # same prompt, fresh KV cache: all evaluated again
        assert session.generations[-1].evaluated_tokens == session.generations[-1].prompt_tokens


def test_set_returns_at_once_while_a_generation_runs(host: Host) -> None:
    """A slider moved during a 20 s generation used to freeze the kernel for 20 s."""
    with host.open_session("default", {**GREEDY, "n-predict": 400}) as session:
        session.set_input("prompt", prompt("Once upon a time"))
        first = threading.Event()
        session.add_listener(lambda token: first.set())
        worker = threading.Thread(target=session.compute)
        worker.start()
        try:
            assert first.wait(60), "the generation never started"
            started = time.monotonic()
            session.set(temp=0.5)
            session.set({"ctx-size": 512})
            took = time.monotonic() - started
            assert worker.is_alive(), "the generation ended before the changes could be made during it"
            assert took < 0.5, f"set() waited {took:.2f} s for the generation"
            assert session.pending == {"temp": 0.5, "ctx-size": 512}
            assert session.get("ctx-size") == 512  # what the next generation will have
            assert not session.reload()  # not now: it would free the context under the generation
        finally:
            session.stop()
            worker.join(60)
        assert session.reload() and session.pending == {}


def test_a_rebuilding_change_waits_for_the_stream_to_end(host: Host) -> None:
    """ctx-size, threads or n-gpu-layers changed between two tokens used to free the
    context under the stream: the next token failed (errno 5)."""
    with host.open_session("default", {**GREEDY, "n-predict": 12}) as session:
        session.set_input("prompt", prompt("Once upon a time"))
        session.start_generation()
        tokens = [session.next_token()]
        session.set({"ctx-size": 256, "threads": 1})
        assert not session.reload()
        while (token := session.next_token()) is not None:
            tokens.append(token)
        assert len(tokens) == 12 and session.parameters["ctx-size"] == 256
        assert session.reload()
        session.set_input("prompt", prompt("word " * 300))
        with pytest.raises(PromptTooLong):
            session.compute()  # the new 256-token context is in use


def test_closed_sessions_refuse_work_and_leave_the_manager(host: Host) -> None:
    session = host.open_session("echo")
    host.sessions.close(session.id)
    assert session.state == "closed"
    with pytest.raises(InvalidArgument, match="closed"):
        session.set_input("0", prompt("x"))
    with pytest.raises(NotFound):
        host.sessions.get(session.id)
    with pytest.raises(NotFound):
        host.sessions.close(session.id)


def test_the_manager_caps_sessions() -> None:
    with Host(default_model=False, max_sessions=3) as small:
        sessions = [small.open_session("echo") for _ in range(3)]
        with pytest.raises(Busy, match="the maximum is 3"):
            small.open_session("echo")
        small.sessions.close(sessions[0].id)
        small.open_session("echo")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_idle_sessions_expire() -> None:
    clock = FakeClock()
    with Host(default_model=False, idle_timeout=300, clock=clock) as quick:
        idle = quick.open_session("echo")
        busy = quick.open_session("echo")
        clock.now += 200
        busy.set_input("0", prompt("x"))  # using a session keeps it alive
        clock.now += 150
        assert quick.sessions.sweep() == [idle.id]
        assert idle.closed and not busy.closed
        assert [s.id for s in quick.sessions] == [busy.id]
        clock.now += 301
        assert [s.id for s in quick.sessions] == []  # listing sweeps too


@pytest.mark.parametrize(("option", "value"), [("max_sessions", 0), ("idle_timeout", 0)])
def test_manager_limits_are_checked(option: str, value: float) -> None:
    with pytest.raises(ConfigError, match=option):
        Host(default_model=False, **{option: value})


def test_a_session_with_bad_params_is_never_left_open(host: Host) -> None:
    before = len(host.sessions)
    with pytest.raises(ConfigError, match="'temp' takes a number"):
        host.open_session("default", {"temp": "hot"})
    with pytest.raises(ConfigError, match="no parameter 'tmep'"):
        host.open_session("default", {"tmep": 0.2})
    # A number the model cannot take fails on the context, once it and the session exist:
    # the session is closed and its id let go.
    with pytest.raises(InvalidArgument, match="ctx-size 1000000000 is over the model's context length"):
        host.open_session("default", {"ctx-size": 10**9}, session_id="too-big")
    assert len(host.sessions) == before and host.sessions.find("too-big") is None
    host.open_session("echo", session_id="too-big").close()


def test_watchers_see_every_change_and_reload_rebuilds_now(host: Host) -> None:
    with host.open_session() as session:
        seen: list[dict] = []
        stop = session.watch(seen.append)
        session.set(temp=0.5)
        session.set({"ctx_size": 256})
        assert seen == [{"temp": 0.5}, {"ctx-size": 256}]
        assert session.reload()  # the 256-token context is built now, not at the next generation
        session.set_input("prompt", prompt("word " * 300))
        with pytest.raises(PromptTooLong):
            session.compute()
        stop()
        session.set(temp=0.1)
        assert len(seen) == 2


def test_one_guest_drives_a_session_at_a_time(host: Host) -> None:
    first = host.start("stream", "default", "Once upon a time", session="held", params={"n-predict": 2000, "temp": 0.0})
    try:
        deadline = time.monotonic() + 60
        while host.sessions.find("held") is None or not host.session("held").generations:
            assert time.monotonic() < deadline, "the first guest never started generating"
            time.sleep(0.05)
        with pytest.raises(Busy, match="session 'held' is in use by another guest"):
            host.run("stream", "default", "Hello", session="held")
        # What guards it underneath: the first guest's claim, which any other holder meets.
        with pytest.raises(Busy):
            host.session("held").claim(object())
        first.stop()
        outcome = [event for event in first.events(timeout=60)][-1].data
        assert outcome.exit_code == 0, outcome.stderr
        # Released with the guest: the session takes the next guest.
        result = host.run("stream", "default", " And then", session="held", params={"n-predict": 3})
        assert result.exit_code == 0, result.stderr
        assert host.session("held").generations[-1].output_tokens == 3
    finally:
        first.close()
        host.sessions.close("held")


def test_a_named_session_is_continued_only_on_its_own_model(host: Host) -> None:
    """Asked for another model, a named session used to be continued on its own: `echo`
    answered with Gemma's text."""
    assert host.run("complete", "default", "Once", env={"n_predict": "2"}, session="story").exit_code == 0
    try:
        result = host.run("complete", "echo", "Hello echo", session="story")
        assert result.exit_code == 2 and "session 'story' runs model 'default', not 'echo'" in result.errors[0]
        assert len(host.session("story").generations) == 1
    finally:
        host.sessions.close("story")
    with host.open_session("echo", session_id="echoes") as echoes:
        for guest in ("complete", "tensor_py", "stream_llm"):  # preview1, wasi:nn, wasinn:llm
            result = host.run(guest, "default", "Hello", session="echoes")
            assert result.exit_code != 0, (guest, result.stdout)
            assert any("session 'echoes' runs model 'echo', not 'default'" in error for error in result.errors), (
                guest, result.errors)
        assert not echoes.generations


@contextlib.contextmanager
def switching_often() -> Iterator[None]:
    """Threads handed the interpreter every microsecond: a check-then-act race between
    them shows in a few tries rather than once in a long while."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def at_once(count: int, work: Callable[[], object]) -> list[object]:
    """``work()`` on ``count`` threads released together: what each returned or raised."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work()
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_sessions_opened_at_once_keep_to_the_cap_and_their_ids() -> None:
    """The manager checked the cap and the id, let go of its lock, then added the session:
    opens at once went over max_sessions, or two sessions got one id (one of them, and its
    context, orphaned)."""
    with Host(default_model=False, max_sessions=2) as small, switching_often():
        for _ in range(20):
            results = at_once(8, lambda: small.open_session("echo"))
            opened = [result for result in results if isinstance(result, Session)]
            assert len(opened) == 2 and len(small.sessions) == 2
            assert all(isinstance(result, Busy) for result in results if result not in opened)
            small.sessions.close_all()
            results = at_once(8, lambda: small.open_session("echo", session_id="same"))
            opened = [result for result in results if isinstance(result, Session)]
            assert len(opened) == 1 and small.session("same") is opened[0]
            small.sessions.close_all()


def test_a_session_is_not_idle_while_its_stream_is_open() -> None:
    """Between two tokens a session said "idle", and the idle sweep closed it under the
    guest generating on it."""
    clock = FakeClock()
    with Host(idle_timeout=300, clock=clock) as quick:
        session = quick.open_session("default", {**GREEDY, "n-predict": 3})
        session.set_input("prompt", prompt("Once upon a time"))
        session.start_generation()
        assert session.next_token() is not None
        clock.now += 301  # the guest takes its time over a token
        assert session.state == "running"
        assert quick.sessions.sweep() == [] and not session.closed
        while session.next_token() is not None:
            pass
        assert session.state == "idle"
        clock.now += 301
        assert quick.sessions.sweep() == [session.id]
