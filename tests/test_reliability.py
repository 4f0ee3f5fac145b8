"""Load, leaks and recovery: many sessions at once, many runs in one process, and
interrupts or traps in the middle of work."""

from __future__ import annotations

import glob
import os
import signal
import statistics
import tempfile
import threading
import time

import pytest
import wasmtime

from wasinn_lab import GuestTrap, Host, Tensor, TensorType
from wasinn_lab.models import default_model_path
from wasinn_lab.notebook.lab import Lab

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
        loaded = host.registry.load("default", {"temp": 0, "n-predict": 6, "ctx-size": 256})
        session = host.sessions.open(loaded.graph.init_execution_context(loaded.config), loaded.backend,
                                     model="default", guest=None)
        session.set_input(0, Tensor((1,), TensorType.U8, prompt.encode()))
        return session, loaded.graph

    alone = []
    for prompt in PROMPTS:
        session, _ = open_session(prompt)
        session.compute()
        alone.append(session.text)
        host.sessions.discard(session)
    opened = [open_session(prompt) for prompt in PROMPTS]
    sessions = [session for session, _ in opened]
    assert len({id(graph) for _, graph in opened}) == 1  # one set of weights for all sixteen
    try:
        for _ in range(6):  # one token each, round robin
            for session in sessions:
                session.compute_single()
        assert [session.text for session in sessions] == alone
        assert len(set(alone)) > 1  # different prompts, different texts: the check means something
    finally:
        for session in sessions:
            host.sessions.discard(session)


def _rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


@pytest.mark.parametrize("backend", ["echo", "llama.cpp"])
def test_a_thousand_runs_keep_memory_flat_and_leave_nothing_behind(backend: str) -> None:
    host = Host(default_model=False)
    if backend == "llama.cpp":  # a llama.cpp context (KV cache, sampler) made and freed each run
        host.register("small", default_model_path(), config={"ctx-size": 256, "n-predict": 1})
    guest = short_guest("echo" if backend == "echo" else "small")
    scratch = set(glob.glob(os.path.join(tempfile.gettempdir(), "wasinn-lab-*")))
    for _ in range(100):  # warm up: caches, allocator arenas
        host.run(guest)
    samples = [_rss_kib()]
    for run in range(1000):
        assert host.run(guest).exit_code == 0
        if run % 50 == 49:
            samples.append(_rss_kib())
    # A leak grows memory in every stretch of 50 runs; the allocator taking a new arena
    # does so once. The median stretch tells them apart where a fitted slope may not.
    growth = statistics.median(later - earlier for earlier, later in zip(samples, samples[1:])) / 50
    print(f"{backend}: resident memory growth over 1000 runs: {growth:.3f} KiB per run (median of 20 stretches); "
          f"{samples[-1] - samples[0]:,} KiB in all")
    assert growth < 1.0, f"{growth:.3f} KiB per run; KiB every 50 runs: {samples}"
    assert len(host.sessions) == 0
    left = set(glob.glob(os.path.join(tempfile.gettempdir(), "wasinn-lab-*"))) - scratch
    assert not left, left
    host.close()


def test_a_guest_that_traps_mid_generation_frees_its_context(host: Host) -> None:
    before = len(host.sessions)
    with pytest.raises(GuestTrap, match="unreachable"):
        host.run(TRAPPING_GUEST)
    assert len(host.sessions) == before
    assert host.run("complete", "default", "Hi", env={"n_predict": "2"}).exit_code == 0


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


def test_an_interrupt_during_a_model_load(host: Host) -> None:
    lab = Lab(host)
    host.register("reloaded", host.registry.get("default").path)
    try:
        timer = _interrupt_after(0.05)  # while the weights load (not cached yet)
        started = time.monotonic()
        try:
            with pytest.raises(KeyboardInterrupt):
                lab.generate("complete", "Hi", model="reloaded", params={"n-predict": 2000, "temp": 0})
        finally:
            timer.cancel()
        assert time.monotonic() - started < 30
        assert not [s for s in host.sessions if s.model == "reloaded"]
        assert lab.generate("complete", "Hi", model="reloaded", params={"n-predict": 2}).exit_code == 0
    finally:
        host.registry.unregister("reloaded")
