"""The host as an owner: what it starts, it stops; what it takes of the process (llama.cpp's
log callback), it gives back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import wasmtime
from conftest import HELLO_GUEST, output_tokens

from wasinn_lab import ConfigError, GuestLimitError, Host, Limits, Timeout
from wasinn_lab.backends.llama.weights import weights_cache
from wasinn_lab.models import default_model_path


def _threads() -> set[str]:
    return {thread.name for thread in threading.enumerate() if thread.name.startswith("wasinn-lab-")}


def test_a_host_stops_the_threads_it_started_and_can_start_them_again() -> None:
    with Host(default_model=False) as host:
        assert host.run(HELLO_GUEST).stdout == "hello\n"
        assert host.runtime.pump.running and host.runtime.watchdog.running
    assert not host.runtime.pump.running and not host.runtime.watchdog.running
    assert host.run(HELLO_GUEST).stdout == "hello\n"  # still usable: it starts them again
    host.close()
    assert not host.runtime.pump.running and not host.runtime.watchdog.running


def test_closing_a_host_closes_its_sessions_and_lets_the_weights_go() -> None:
    path = default_model_path()
    before = weights_cache.copies(path)
    host = Host()
    with host:
        host.run("complete", "default", "Hi", env={"n_predict": "1"}, session="kept")
        assert len(host.sessions) == 1
    assert len(host.sessions) == 0
    assert weights_cache.copies(path) == before  # nothing of this host's holds them


def test_misuse_of_a_task_is_an_error_of_the_tree() -> None:
    with Host(default_model=False) as host:
        task = host.start(HELLO_GUEST)
        with pytest.raises(ConfigError, match="interactive=True"):
            task.send("more")
        assert [event.kind.value for event in task.events(timeout=30)][-1] == "done"
        spinning = host.start(wasmtime.wat2wasm('(module (memory (export "memory") 1) (func (export "_start")'
                                                ' (loop (br 0))))'))
        with pytest.raises(Timeout) as raised:
            list(spinning.events(timeout=0.2))
        assert isinstance(raised.value, TimeoutError)  # the tree's, and what Python code expects
        spinning.interrupt()
        list(spinning.events(timeout=30))


SPINNING_GUEST = wasmtime.wat2wasm('(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))')
# Reads stdin until its end, and never calls wasi-nn.
READING_GUEST = wasmtime.wat2wasm("""(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "\\10\\00\\00\\00\\00\\01\\00\\00")
  (func (export "_start")
    (loop (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
          (br_if 0 (i32.load (i32.const 8))))))""")


def test_closing_a_host_ends_every_guest_it_started() -> None:
    """Guests from host.start were tracked by nobody: close() left them running, a
    spinning one for as long as its time limit, a reader of stdin for good."""
    before = set(threading.enumerate())
    host = Host(default_model=False)
    spinning = host.start(SPINNING_GUEST, limits=Limits(timeout=60))
    reading = host.start(READING_GUEST, interactive=True, limits=Limits(timeout=None))
    reading.send("a turn\n")
    try:
        assert spinning.running and reading.running
        host.close()
        assert not [thread for thread in threading.enumerate() if thread not in before]
        assert not spinning.running and not reading.running
    finally:
        spinning.interrupt()
        reading.close(timeout=0)


LLAMA_LOG = textwrap.dedent("""
    import sys
    from llama_cpp import Llama
    if sys.argv[1] != "plain":
        import wasinn_lab
        if sys.argv[1] == "after-a-host":
            with wasinn_lab.Host() as host:
                host.run("complete", "default", "Hi", env={"n_predict": "1"})
        elif sys.argv[1] == "beside-a-host":
            host = wasinn_lab.Host()
            host.run("complete", "default", "Hi", env={"n_predict": "1"}, session="open")
    Llama(sys.argv[2], n_ctx=256, verbose=True)
""")


@pytest.mark.parametrize("when", ["imported", "after-a-host", "beside-a-host"])
def test_llama_cpp_logs_as_if_wasinn_lab_were_not_there(when: str) -> None:
    """wasinn-lab's log callback used to be installed at import, for good: a plain
    Llama(verbose=True) elsewhere in the process printed 3 lines of its log, not all."""

    def log_lines(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", LLAMA_LOG, mode, str(default_model_path())],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stderr.count("\n")

    plain = log_lines("plain")
    assert plain > 50  # llama.cpp's whole log: the check means something
    assert log_lines(when) == plain


MAP_PROMPTS = ["Once upon a time", "The sea is", "My favourite food", "In the year 1900", "Hello"]
MAP_GREEDY = {"temp": 0, "seed": 42, "n-predict": 4}


class _MostGuests(threading.Thread):
    """Counts, while it runs, the most guest threads alive at once."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.most = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.005):
            self.most = max(self.most, sum(1 for thread in threading.enumerate() if thread.name == "wasinn-lab-guest"))

    def __enter__(self) -> _MostGuests:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self.join()


@pytest.mark.model
def test_map_runs_its_prompts_at_once_and_gives_the_rows_in_prompt_order(host: Host) -> None:
    serial = [host.run("stream", "default", prompt, params=MAP_GREEDY).stdout for prompt in MAP_PROMPTS]
    one_at_a_time = host.map("stream", MAP_PROMPTS, params=MAP_GREEDY, progress=False, concurrency=1)
    assert list(one_at_a_time["stdout"]) == serial  # concurrency 1 is the serial map it was
    with _MostGuests() as counted:
        frame = host.map("stream", MAP_PROMPTS, params=MAP_GREEDY, progress=False, concurrency=3)
    assert counted.most == 3  # three at once, never more
    assert list(frame["prompt"]) == MAP_PROMPTS and (frame["exit_code"] == 0).all()
    assert [output_tokens(stderr) for stderr in frame["stderr"]] == [4] * len(MAP_PROMPTS)  # each a whole text
    with pytest.raises(ConfigError, match="concurrency is how many runs go at once, a whole number of at least 1"):
        host.map("stream", MAP_PROMPTS, concurrency=0)


@pytest.mark.model
def test_an_interrupt_in_map_ends_every_run_under_way_and_starts_no_more(host: Host) -> None:
    """Ctrl-C on the thread that waits (a script, a cell): all the guests under way end,
    the prompts not begun never begin, and the interrupt is raised once they have unwound."""
    before = set(threading.enumerate())
    sessions = len(host.sessions)
    timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    try:
        with _MostGuests() as counted, pytest.raises(KeyboardInterrupt):
            host.map("stream", ["Once upon a time"] * 6, params={"temp": 0, "n-predict": 5000}, progress=False,
                     concurrency=3)
    finally:
        timer.cancel()
    assert counted.most == 3 and time.monotonic() - started < 15  # all three were generating, and ended soon after
    assert not [thread for thread in threading.enumerate() if thread not in before and thread.name == "wasinn-lab-guest"]
    assert len(host.sessions) == sessions  # what they opened is closed
    assert host.map("stream", ["Hello"], params=MAP_GREEDY, progress=False)["exit_code"].tolist() == [0]


@pytest.mark.model
def test_a_run_of_map_that_raises_ends_the_others(host: Host) -> None:
    before = set(threading.enumerate())
    with pytest.raises(GuestLimitError, match="time limit of 1 s"):
        host.map("stream", ["Once upon a time", "The sea is"], params={"temp": 0, "n-predict": 5000},
                 limits=Limits(timeout=1), progress=False, concurrency=2)
    assert not [thread for thread in threading.enumerate() if thread not in before and thread.name == "wasinn-lab-guest"]
