"""Sessions from Python: parameters, token listeners, limits and idle expiry."""

from __future__ import annotations

import time

import pytest

from wasinn_lab import Busy, ConfigError, Host, InvalidArgument, NotFound, PromptTooLong, Session, Tensor, TensorType


def open_session(host: Host, model: str = "default", **config: object) -> Session:
    loaded = host.registry.load(model, config)
    return host.sessions.open(loaded.graph.init_execution_context(loaded.config), loaded.backend, model=model, guest=None)


def prompt(text: str) -> Tensor:
    return Tensor((1,), TensorType.U8, text.encode())


def test_parameters_are_readable_and_settable_while_the_session_lives(host: Host) -> None:
    session = open_session(host, temp=0.0)
    try:
        assert session.get("temp") == 0.0 and session.get("n_predict") == 128
        session.set(n_predict=3)
        session.set({"top-k": 5})
        assert session.parameters["n-predict"] == 3 and session.get("top-k") == 5
        session.set_input(0, prompt("Hello"))
        session.compute()
        assert session.counts["output_tokens"] == 3
        with pytest.raises(InvalidArgument, match="'temp' must be float"):
            session.set(temp="warm")
        with pytest.raises(KeyError, match="no parameter 'warmth'"):
            session.get("warmth")
    finally:
        host.sessions.discard(session)


def test_listeners_receive_the_text_token_by_token(host: Host) -> None:
    session = open_session(host, temp=0.0, **{"n-predict": 6})
    pieces: list[str] = []
    remove = session.add_listener(lambda text, event: pieces.append(text))
    try:
        session.set_input(0, prompt("Once upon a time"))
        session.compute()
        assert len(pieces) == 6
        assert "".join(pieces) == session.text == session.get_output(0).decode()
        remove()
        session.compute()
        assert len(pieces) == 6
    finally:
        host.sessions.discard(session)


def test_a_context_setting_rebuilds_the_context(host: Host) -> None:
    session = open_session(host, temp=0.0, **{"n-predict": 2})
    try:
        session.set_input(0, prompt("A B C D"))
        session.compute()
        session.set({"ctx-size": 128})
        session.compute()  # same prompt, fresh KV cache: everything is evaluated again
        assert session.generations[-1].evaluated_tokens == session.generations[-1].prompt_tokens
    finally:
        host.sessions.discard(session)


def test_closed_sessions_refuse_work_and_leave_the_manager(host: Host) -> None:
    session = open_session(host)
    host.sessions.close(session.id)
    assert session.state == "closed"
    with pytest.raises(InvalidArgument, match="closed"):
        session.set_input(0, prompt("x"))
    with pytest.raises(NotFound):
        host.sessions.get(session.id)
    with pytest.raises(NotFound):
        host.sessions.close(session.id)


def test_the_manager_caps_sessions() -> None:
    small = Host(default_model=False, max_sessions=3)
    sessions = [open_session(small, "echo") for _ in range(3)]
    with pytest.raises(Busy, match="the maximum is 3"):
        open_session(small, "echo")
    small.sessions.close(sessions[0].id)
    open_session(small, "echo")


def test_idle_sessions_expire() -> None:
    quick = Host(default_model=False, idle_timeout=0.2)
    idle = open_session(quick, "echo")
    busy = open_session(quick, "echo")
    time.sleep(0.15)
    busy.set_input(0, Tensor((1,), TensorType.U8, b"x"))  # using a session keeps it alive
    time.sleep(0.1)
    assert quick.sessions.sweep() == [idle.id]
    assert idle.closed and not busy.closed
    assert [s.id for s in quick.sessions] == [busy.id]


@pytest.mark.parametrize(("option", "value"), [("max_sessions", 0), ("idle_timeout", 0)])
def test_manager_limits_are_checked(option: str, value: float) -> None:
    with pytest.raises(ConfigError, match=option):
        Host(default_model=False, **{option: value})


def test_watchers_see_every_change_and_reload_rebuilds_now(host: Host) -> None:
    session = open_session(host)
    seen: list[dict] = []
    stop = session.watch(seen.append)
    try:
        session.set(temp=0.5)
        session.set({"ctx_size": 256})
        assert seen == [{"temp": 0.5}, {"ctx-size": 256}]
        session.reload()  # the 256-token context is built now, not at the next generation
        session.set_input(0, prompt("word " * 300))
        with pytest.raises(PromptTooLong):
            session.compute()
        stop()
        session.set(temp=0.1)
        assert len(seen) == 2
    finally:
        host.sessions.discard(session)


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
