"""Loading models and making contexts: no lock is held across llama.cpp's loader, one
copy of the weights per key however many load them at once, and nothing of llama.cpp's
is left behind when a load or a context is interrupted. Real llama.cpp, the default
model; interrupts are real SIGINTs or KeyboardInterrupts where a Ctrl-C would land."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from types import FrameType

from llama_cpp import _internals

from wasinn_lab import Host, Scope
from wasinn_lab.backends.llama.options import OPTIONS
from wasinn_lab.backends.llama.weights import weights_cache
from wasinn_lab.models import default_model_path

MODEL_LOADER = _internals.LlamaModel.__init__.__code__


class HeldLoad:
    """``load()`` on a thread of its own, held where it enters llama.cpp's model loader
    until ``release()``: what else can run while a model loads?"""

    def __init__(self, load: Callable[[], object]) -> None:
        self.inside = threading.Event()
        self.gave_up = False  # held so long that it went on by itself
        self._release = threading.Event()
        self._load = load
        self.result: object = None
        self._thread = threading.Thread(target=self._run)
        self._thread.start()
        assert self.inside.wait(120), "the load never reached llama.cpp's loader"

    def _trace(self, frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code is MODEL_LOADER and not self.inside.is_set():
            self.inside.set()
            self.gave_up = not self._release.wait(30)

    def _run(self) -> None:
        sys.settrace(self._trace)
        try:
            self.result = self._load()
        finally:
            sys.settrace(None)

    def release(self) -> object:
        self._release.set()
        self._thread.join()
        return self.result


def test_loaded_models_and_weights_are_served_while_another_model_loads(host: Host) -> None:
    """The registry and the weights cache each held their lock through a load: one model
    loading (or a panel reloading with other n-gpu-layers) stalled every load_by_name."""
    path = default_model_path()
    default = host.registry.load("default")  # loaded: its weights are in the cache
    settings = OPTIONS.scoped(OPTIONS.defaults, Scope.MODEL)
    # The same file with other model-level settings: weights of its own to load.
    host.register("unmapped", path, config={"use-mmap": False})
    try:
        held = HeldLoad(lambda: host.registry.load("unmapped"))
        try:
            assert host.registry.load("default").graph is default.graph
            weights_cache.release(weights_cache.acquire(path, settings))
        finally:
            loaded = held.release()
        assert not held.gave_up, "the loaded model, or its weights, waited for the other load to end"
        assert loaded is not None
    finally:
        host.registry.unregister("unmapped")


def test_two_loads_of_one_model_at_once_make_one_copy(host: Host) -> None:
    path = default_model_path()
    host.register("unmapped", path, config={"use-mmap": False})
    copies = weights_cache.copies(path)
    try:
        held = HeldLoad(lambda: host.registry.load("unmapped"))
        second: list[object] = []
        waiting = threading.Thread(target=lambda: second.append(host.registry.load("unmapped")))
        waiting.start()
        first = held.release()
        waiting.join()
        assert first.graph is second[0].graph  # type: ignore[attr-defined]
        assert weights_cache.copies(path) == copies + 1
    finally:
        host.registry.unregister("unmapped")
    assert weights_cache.copies(path) == copies


def run_python(script: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script), str(default_model_path())],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_ctrl_c_in_a_load_leaves_no_log_callback_behind() -> None:
    """A load interrupted by anything but llama-cpp-python's ValueError kept its hold on
    llama.cpp's log callback: ours stayed installed in the process for good."""
    out = run_python("""
        import ctypes, os, signal, sys
        import llama_cpp
        from llama_cpp import _internals
        from pathlib import Path
        from wasinn_lab.backends.llama.options import OPTIONS
        from wasinn_lab.backends.llama.weights import Weights

        def installed():
            callback, data = llama_cpp.llama_log_callback(), ctypes.c_void_p()
            llama_cpp.llama_log_get(ctypes.byref(callback), ctypes.byref(data))
            return ctypes.cast(callback, ctypes.c_void_p).value

        def ctrl_c_in_the_loader(frame, event, arg):
            if event == "call" and frame.f_code is _internals.LlamaModel.__init__.__code__:
                os.kill(os.getpid(), signal.SIGINT)  # handled in the loader's next line

        before = installed()
        sys.settrace(ctrl_c_in_the_loader)
        try:
            Weights(Path(sys.argv[1]), OPTIONS.defaults)
            print("loaded")
        except KeyboardInterrupt:
            print("interrupted")
        sys.settrace(None)
        print("restored" if installed() == before else "still-ours")
    """)
    assert out.split() == ["interrupted", "restored"]


def test_a_context_interrupted_while_it_is_made_frees_its_llama_context() -> None:
    """An interrupt after llama.cpp made the context, while its batch was made, lost the
    context: its KV cache stayed allocated for good."""
    out = run_python("""
        import sys
        from pathlib import Path
        from llama_cpp import _internals
        from wasinn_lab.backends.llama.context import context_params
        from wasinn_lab.backends.llama.native import NativeContext
        from wasinn_lab.backends.llama.options import OPTIONS
        from wasinn_lab.backends.llama.weights import weights_cache
        from wasinn_lab.options import Scope

        def resident():
            with open("/proc/self/statm") as statm:
                return int(statm.read().split()[1]) * 4096

        def ctrl_c_in_the_batch(frame, event, arg):
            if event == "call" and frame.f_code is _internals.LlamaBatch.__init__.__code__:
                raise KeyboardInterrupt

        config = {**OPTIONS.defaults, "ctx-size": 4096, "batch-size": 64, "ubatch-size": 64}
        weights = weights_cache.acquire(Path(sys.argv[1]), OPTIONS.scoped(config, Scope.MODEL))
        params = context_params(config, weights)
        NativeContext(weights, params).close()  # what the first context sets up for the process
        before = resident()
        for _ in range(3):
            sys.settrace(ctrl_c_in_the_batch)
            try:
                NativeContext(weights, params)
            except KeyboardInterrupt:
                pass
            finally:
                sys.settrace(None)
        print((resident() - before) // 2**20)
    """)
    grown_mib = int(out)
    assert grown_mib < 50, f"{grown_mib} MiB more resident: the interrupted contexts' KV caches (75 MiB each) stayed"
