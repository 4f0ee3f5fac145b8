"""Load, leaks and recovery: many sessions at once, many runs in one process, and
interrupts or traps in the middle of work."""

from __future__ import annotations

import glob
import itertools
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import wasmtime

from wasinn_lab import Busy, GuestTrap, Host, Limits, Tensor, TensorType
from wasinn_lab.backends.base import EndReason
from wasinn_lab.backends.llama import weights
from wasinn_lab.backends.llama.log import LOGGER as LLAMA_CPP_LOGGER
from wasinn_lab.backends.llama.weights import weights_cache
from wasinn_lab.models import default_model_path
from wasinn_lab.notebook.lab import Lab
from wasinn_lab.tasks import GRACE, Event, EventKind

PROMPTS = [
    f"{opening} {topic}"
    for opening in ("Tell me about", "A poem about")
    for topic in ("the ocean", "volcanoes", "bread", "chess", "the moon", "trains", "jazz", "tea")
]

def short_guest(model: str) -> bytes:
    """Loads ``model``, opens a context, computes, and exits without finalizing: the host
    must free it. Any call that fails traps, so a run that exits 0 did all of it."""
    return wasmtime.wat2wasm(f"""(module
  (import "wasi_ephemeral_nn" "load_by_name" (func $load (param i32 i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "init_execution_context" (func $init (param i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "set_input" (func $set (param i32 i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "compute" (func $compute (param i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{model}")
  (data (i32.const 32) "\\02\\00\\00\\00")                                  ;; dims [2]
  (data (i32.const 64) "\\20\\00\\00\\00\\01\\00\\00\\00\\03\\00\\00\\00\\60\\00\\00\\00\\02\\00\\00\\00")  ;; tensor
  (data (i32.const 96) "Hi")
  (func (export "_start")
    (if (call $load (i32.const 0) (i32.const {len(model)}) (i32.const 16)) (then unreachable))
    (if (call $init (i32.load (i32.const 16)) (i32.const 20)) (then unreachable))
    (if (call $set (i32.load (i32.const 20)) (i32.const 0) (i32.const 64)) (then unreachable))
    (if (call $compute (i32.load (i32.const 20))) (then unreachable))))""")


# Streams two tokens, then traps mid-generation.
TRAPPING_GUEST = wasmtime.wat2wasm("""(module
  (import "wasi_ephemeral_nn" "load_by_name" (func $load (param i32 i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "init_execution_context" (func $init (param i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "set_input" (func $set (param i32 i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "compute_single" (func $single (param i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "default")
  (data (i32.const 32) "\\01\\00\\00\\00")
  (data (i32.const 64) "\\20\\00\\00\\00\\01\\00\\00\\00\\03\\00\\00\\00\\60\\00\\00\\00\\05\\00\\00\\00")
  (data (i32.const 96) "Hello")
  (func (export "_start")
    (drop (call $load (i32.const 0) (i32.const 7) (i32.const 16)))
    (drop (call $init (i32.load (i32.const 16)) (i32.const 20)))
    (drop (call $set (i32.load (i32.const 20)) (i32.const 0) (i32.const 64)))
    (drop (call $single (i32.load (i32.const 20))))
    (drop (call $single (i32.load (i32.const 20))))
    unreachable))""")


def test_sixteen_sessions_interleaved_on_one_model_stay_separate(host: Host) -> None:
    def open_session(prompt: str):  # type: ignore[no-untyped-def]
        session = host.open_session("default", {"temp": 0, "n-predict": 6, "ctx-size": 256})
        session.set_input("prompt", Tensor((1,), TensorType.U8, prompt.encode()))
        return session

    alone = []
    for prompt in PROMPTS:
        with open_session(prompt) as session:
            session.compute()
            alone.append(session.text)
    sessions = [open_session(prompt) for prompt in PROMPTS]
    assert weights_cache.copies(default_model_path()) == 1  # one set of weights for all sixteen
    try:
        for session in sessions:
            session.start_generation()
        for _ in range(6):  # one token each, round robin
            for session in sessions:
                assert session.next_token() is not None
        assert [session.text for session in sessions] == alone
        assert len(set(alone)) > 1  # different prompts, different texts: the check means something
    finally:
        for session in sessions:
            host.sessions.discard(session)


def _rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


@pytest.mark.parametrize("backend", ["echo", "llama.cpp"])
def test_a_thousand_runs_keep_memory_flat_and_leave_nothing_behind(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # this process's temporary files alone
    # llama.cpp warns once per context (the SWA cache), and pytest keeps every record it
    # captures: 1.4 KiB a run that is pytest's, not the lab's.
    caplog.set_level(logging.ERROR, logger=LLAMA_CPP_LOGGER)
    host = Host(default_model=False)
    if backend == "llama.cpp":  # a llama.cpp context (KV cache, sampler) made and freed each run
        host.register("small", default_model_path(), config={"ctx-size": 256, "n-predict": 1})
    guest = short_guest("echo" if backend == "echo" else "small")
    for _ in range(100):  # warm up: caches, allocator arenas
        host.run(guest)
    samples = [_rss_kib()]
    for run in range(1000):
        assert host.run(guest).exit_code == 0
        if run % 50 == 49:
            samples.append(_rss_kib())
    # A leak grows memory in every stretch of 50 runs; the allocator taking a new arena
    # does so once. The median stretch tells them apart where a fitted slope may not.
    growth = statistics.median(later - earlier for earlier, later in itertools.pairwise(samples)) / 50
    print(f"{backend}: resident memory growth over 1000 runs: {growth:.3f} KiB per run (median of 20 stretches); "
          f"{samples[-1] - samples[0]:,} KiB in all")
    assert growth < 1.0, f"{growth:.3f} KiB per run; KiB every 50 runs: {samples}"
    assert len(host.sessions) == 0
    left = glob.glob(os.path.join(tmp_path, "wasinn-lab-*"))
    assert not left, left
    host.close()


def test_a_guest_that_traps_mid_generation_frees_its_context(host: Host) -> None:
    before = len(host.sessions)
    with pytest.raises(GuestTrap, match="unreachable"):
        host.run(TRAPPING_GUEST)
    assert len(host.sessions) == before
    assert host.run("complete", "default", "Hi", env={"n_predict": "2"}).exit_code == 0


def test_a_guest_stopped_mid_generation_leaves_its_named_session_idle(host: Host) -> None:
    """A guest stopped itself (an interrupt whose grace ran out: the prompt was still being
    evaluated) never ends the generation it began: its named session, which outlives it,
    stayed "running" with the stream open, for %wasi_nn sessions and the widgets alike."""
    task = host.start("stream", "default", "Once upon a time", session="r-orphan",
                      params={"n-predict": 5000, "temp": 0})
    try:
        deadline = time.monotonic() + 120
        while not ((session := host.sessions.find("r-orphan")) is not None and session.generations
                   and session.generations[-1].output_tokens >= 3):
            assert time.monotonic() < deadline, "no tokens"
            time.sleep(0.02)
        task.interrupt()  # the guest itself, not its generation
        assert any(event.kind is EventKind.DONE for event in task.events(timeout=60))
        assert session.state == "idle" and not session.streaming
        assert session.end_reason is EndReason.CANCELLED
    finally:
        task.end()
        if host.sessions.find("r-orphan") is not None:
            host.sessions.close("r-orphan")


def _interrupt_after(seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    return timer


@pytest.mark.parametrize(
    ("guest", "moment"),
    [("complete", "during compute"), ("stream", "during a compute_single loop")],
)
def test_an_interrupt_mid_generation_leaves_everything_consistent(host: Host, guest: str, moment: str) -> None:
    lab = Lab(host)
    timer = _interrupt_after(1.5)
    try:
        with pytest.raises(KeyboardInterrupt):
            lab.generate(guest, "Once upon a time", params={"n-predict": 5000, "temp": 0})
    finally:
        timer.cancel()
    assert not [s for s in host.sessions if s.guest == f"{guest}.wasm"], moment  # the context was freed
    assert lab.generate(guest, "Hello", params={"n-predict": 3}).exit_code == 0


def test_an_interrupt_in_host_run_stops_the_guest_and_keeps_the_process(host: Host) -> None:
    """host.run on the main thread, where Ctrl-C lands (a script, a cell calling the API).
    Raised inside a wasmtime host call, the interrupt used to crash the process."""
    tokens: list[bytes] = []
    timer = _interrupt_after(1.5)
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            host.run("stream", "default", "Once upon a time", env={"n_predict": "5000", "temp": "0"}, on_stdout=tokens.append)
    finally:
        timer.cancel()
    assert tokens and time.monotonic() - started < 10  # it was generating, and stopped soon after
    assert not [s for s in host.sessions if s.guest == "stream.wasm"]
    assert host.run("stream", "default", "Hello", env={"n_predict": "3"}).exit_code == 0


class _InterruptDuringLoad(threading.Thread):
    """Sends SIGINT once llama.cpp has the model file open, its load under way, and notes
    whether it still had it open once the signal was sent: then the signal landed during
    the load (llama.cpp closes the file when the load ends)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self._path = os.path.realpath(path)
        self._cancelled = threading.Event()
        self.landed_during_load = False

    def _open(self) -> bool:
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}") == self._path:
                    return True
            except OSError:  # closed meanwhile
                pass
        return False

    def run(self) -> None:
        while not self._cancelled.is_set():
            if self._open():
                os.kill(os.getpid(), signal.SIGINT)
                self.landed_during_load = self._open()
                return
            time.sleep(0.001)

    def cancel(self) -> None:
        self._cancelled.set()
        self.join()


def test_an_interrupt_during_a_model_load(host: Host) -> None:
    lab = Lab(host)
    path = host.registry.get("default").path
    host.register("reloaded", path, config={"use-mmap": False})  # weights of its own, not loaded yet
    try:
        interrupt = _InterruptDuringLoad(path)
        assert not interrupt._open()  # no load of the file under way before this one
        interrupt.start()
        started = time.monotonic()
        try:
            with pytest.raises(KeyboardInterrupt):
                lab.generate("complete", "Hi", model="reloaded", params={"n-predict": 2000, "temp": 0})
        finally:
            interrupt.cancel()
        assert interrupt.landed_during_load
        assert time.monotonic() - started < 30
        assert not [s for s in host.sessions if s.model == "reloaded"]
        assert lab.generate("complete", "Hi", model="reloaded", params={"n-predict": 2}).exit_code == 0
    finally:
        host.registry.unregister("reloaded")


def _peak_rss_mib(*command: str) -> float:
    """Peak resident memory of a fresh process running ``command`` (measured by a parent
    of its own, so no other child counts)."""
    probe = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:], capture_output=True); "
             "assert done.returncode == 0, done.stderr.decode(); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    measured = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True, timeout=600)
    assert measured.returncode == 0, measured.stderr
    return int(measured.stdout) / 1024


def test_a_guest_that_loads_and_unloads_five_times_shares_one_copy_of_the_weights() -> None:
    """WasmEdge's own unload test guest: five rounds of load, compute, unload. Each round
    used to load a new copy of the weights while the last lived on through its context
    (1.95 GB against 0.41 GB for one run of a one-shot guest)."""
    run = [sys.executable, "-m", "wasinn_lab", "run", "--env", "n_predict=8", "--env", "ctx_size=4096"]
    once = _peak_rss_mib(*run, "complete", "default", "Hello")
    five = _peak_rss_mib(*run, "unload", "default", "Hello")
    print(f"peak resident memory: one-shot guest {once:.0f} MiB, five load/unload rounds {five:.0f} MiB "
          f"({five / once:.2f}x)")
    assert five <= 1.5 * once


def test_the_weight_copies_cap_counts_per_model_file_not_per_name(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    path = default_model_path()
    host.register("alias", path)  # the same file under another name: the same weights
    try:
        with host.open_session("alias") as alias, host.open_session("default") as default:
            for session in (alias, default):
                session.set_input("prompt", Tensor((1,), TensorType.U8, b"Hi"))
            assert weights_cache.copies(path) == 1
            monkeypatch.setattr(weights, "MAX_WEIGHT_COPIES", 1)
            with host.open_session("alias", {"use-mmap": False}) as other, \
                    pytest.raises(Busy, match="different model-level settings"):
                # Other model-level settings are another copy, whichever name asks for it.
                other.set_input("prompt", Tensor((1,), TensorType.U8, b"Hi"))
    finally:
        host.registry.unregister("alias")


# Writes a line to stdout, without end, and never calls wasi-nn.
CHATTY_GUEST = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "\\10\\00\\00\\00\\06\\00\\00\\00")
  (data (i32.const 16) "again\\n")
  (func (export "_start") (loop (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))) (br 0))))"""


def test_an_interrupt_stops_a_guest_that_never_stops_writing(host: Host, tmp_path: Path) -> None:
    """The wind-down waited for the guest to fall silent, and every write started the wait
    again: the cell ran on to its time limit (600 s in a notebook)."""
    guest = tmp_path / "chatty.wat"
    guest.write_text(CHATTY_GUEST)
    lab = Lab(host)
    seen: list[int] = []
    timer = _interrupt_after(1.0)
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            lab.generate(str(guest), None, limits=Limits(timeout=600, output_bytes=None),
                         on_event=lambda event: seen.append(1))
    finally:
        timer.cancel()
    took = time.monotonic() - started
    assert seen, "it was writing"
    assert took < 1.0 + GRACE + 5, f"the interrupt took {took:.1f} s"


# Writes "é" as two writes of one byte each, 200 ms apart, so they reach the host apart.
SPLIT_CHARACTER_GUEST = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "\\40\\00\\00\\00\\01\\00\\00\\00\\41\\00\\00\\00\\01\\00\\00\\00")
  (data (i32.const 64) "\\c3\\a9")
  (func (export "_start")
    ;; one clock subscription at 128: relative, 200 ms
    (i64.store (i32.const 152) (i64.const 200000000))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 256)))
    (drop (call $poll (i32.const 128) (i32.const 192) (i32.const 1) (i32.const 256)))
    (drop (call $write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 256)))))"""


def test_a_character_written_in_two_pieces_arrives_whole(host: Host, tmp_path: Path) -> None:
    """Each chunk of output was decoded on its own: the two bytes of "é" became two "\\ufffd"."""
    guest = tmp_path / "split.wat"
    guest.write_text(SPLIT_CHARACTER_GUEST)
    chunks: list[bytes] = []

    def on_event(event: Event) -> None:
        if event.kind is EventKind.STDOUT:
            chunks.append(event.data)

    result = Lab(host).generate(str(guest), None, on_event=on_event)
    assert chunks == [b"\xc3", b"\xa9"], "the two bytes came apart, as the test needs"
    assert result.stdout == "é"


# Opens a context on the echo model (with a session named, it claims that session), then
# spins without calling the host again.
CLAIM_AND_SPIN_GUEST = """(module
  (import "wasi_ephemeral_nn" "load_by_name" (func $load (param i32 i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "init_execution_context" (func $init (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "echo")
  (func (export "_start")
    (if (call $load (i32.const 0) (i32.const 4) (i32.const 16)) (then unreachable))
    (if (call $init (i32.load (i32.const 16)) (i32.const 20)) (then unreachable))
    (loop (br 0))))"""


def test_a_second_interrupt_during_the_wind_down_still_stops_the_guest(host: Host, tmp_path: Path) -> None:
    """A second Ctrl-C during the first one's grace period escaped the wind-down before it
    stopped the guest: the guest ran on, holding its session (Busy for every later cell)."""
    guest = tmp_path / "claim_and_spin.wat"
    guest.write_text(CLAIM_AND_SPIN_GUEST)
    lab = Lab(host)
    tasks = []
    first, second = _interrupt_after(1.0), _interrupt_after(1.0 + GRACE / 4)  # the second within the grace
    try:
        with pytest.raises(KeyboardInterrupt):
            lab.generate(str(guest), None, model="echo", session="double", limits=Limits(timeout=120),
                         on_task=tasks.append)
        [task] = tasks
        task.close(timeout=30)
        assert not task.running, "the guest runs on"
        host.session("double").require_free()
    finally:
        first.cancel()
        second.cancel()
        for task in tasks:
            task.interrupt()
        if host.sessions.find("double") is not None:
            host.sessions.close("double")
