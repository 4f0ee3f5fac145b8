"""Shared fixtures: real wasmtime, real llama.cpp on the default model, real guests
compiled from guests/."""

from __future__ import annotations

import json
import signal
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import wasmtime
from IPython import get_ipython
from IPython.core.interactiveshell import InteractiveShell
from IPython.testing.globalipapp import start_ipython

from wasinn_lab import Host
from wasinn_lab.runtime import GuestInstance

if TYPE_CHECKING:
    from wasinn_lab.backends.llama.native import NativeContext
    from wasinn_lab.backends.llama.weights import Weights

# WasmEdge's preview1 numbers, written out here rather than imported: the tests check
# the front-end against the ABI, not against itself.
SUCCESS, INVALID_ARGUMENT, INVALID_ENCODING, MISSING_MEMORY, BUSY, RUNTIME_ERROR = 0, 1, 2, 3, 4, 5
UNSUPPORTED, TOO_LARGE, NOT_FOUND = 6, 7, 8
END_OF_SEQUENCE, CONTEXT_FULL, PROMPT_TOO_LONG, MODEL_NOT_FOUND = 100, 101, 102, 103
F16, F32, F64, U8, I32, I64 = range(6)
ENCODING_GGML_WASMEDGE, ENCODING_GGML_WIT = 6, 5
TARGET_CPU, TARGET_AUTO = 0, 3

def pytest_configure(config: pytest.Config) -> None:
    """The Ctrl-C tests need SIGINT to reach Python: a process started with ``&`` by a
    non-interactive shell inherits it ignored, and Python then installs no handler."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        pytest.exit("SIGINT is ignored in this process (started with & from a non-interactive shell?), so the "
                    "tests that send a Ctrl-C cannot work: run the tests in the foreground", returncode=4)


def updates_expected(token_times: list[float], at_most: int) -> int:
    """How many display updates a throttled stream can show while these tokens came
    (at most ``at_most``): a machine ten times faster streams fewer, not none."""
    from wasinn_lab.notebook.display import UPDATES_PER_SECOND

    span = token_times[-1] - token_times[0] if len(token_times) > 1 else 0.0
    return max(1, min(at_most, int(span * UPDATES_PER_SECOND) - 1))


def output_tokens(stderr: str) -> int:
    """How many tokens a guest's usage line (``nn_print_usage``: the stream guest's) says it generated."""
    (usage,) = [line for line in stderr.splitlines() if line.startswith("usage: {")]
    return int(json.loads(usage.removeprefix("usage: "))["output_tokens"])


def wait_idle(client: Any, message_id: str, timeout: float = 60) -> None:
    """Wait until a kernel is idle after a request: after an error it aborts every request
    that reaches it before then."""
    while True:
        message = client.get_iopub_msg(timeout=timeout)
        if (message["parent_header"].get("msg_id") == message_id and message["msg_type"] == "status"
                and message["content"]["execution_state"] == "idle"):
            return


SEED = 42
GREEDY = {"temp": 0.0, "seed": SEED}

# Writes "hello\n" to stdout and exits: a guest with no wasi-nn in it.
HELLO_GUEST = wasmtime.wat2wasm("""(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "\\10\\00\\00\\00\\06\\00\\00\\00")
  (data (i32.const 16) "hello\\n")
  (func (export "_start") (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))""")


@pytest.fixture(scope="module")
def shell() -> Iterator[InteractiveShell]:
    """IPython's one global shell with the extension loaded (a module's tests share it)."""
    ip = start_ipython() or get_ipython()  # one global shell: a second start gives None
    ip.run_line_magic("load_ext", "wasinn_lab")
    yield ip
    ip.run_line_magic("unload_ext", "wasinn_lab")


@pytest.fixture(scope="session")
def host() -> Iterator[Host]:
    """One host for the whole run: the default model's weights load once."""
    shared = Host()
    yield shared
    shared.close()


@pytest.fixture(scope="module")
def llama() -> Iterator[tuple[Weights, NativeContext]]:
    """The default model's weights and a llama context of 1024 tokens on them, below any
    session: for tests of the sampler and of what it reads."""
    from wasinn_lab.backends.llama.context import context_params
    from wasinn_lab.backends.llama.native import NativeContext
    from wasinn_lab.backends.llama.options import OPTIONS
    from wasinn_lab.backends.llama.weights import weights_cache
    from wasinn_lab.models import default_model_path
    from wasinn_lab.options import Scope

    config = {**OPTIONS.defaults, "ctx-size": 1024}
    weights = weights_cache.acquire(default_model_path(), OPTIONS.scoped(config, Scope.MODEL))
    native = NativeContext(weights, context_params(config, weights))
    yield weights, native
    native.close()
    weights_cache.release(weights)


class Probe:
    """Drives guests/probe.wat: calls any wasi_ephemeral_nn import with raw arguments."""

    HEAP = 4096

    def __init__(self, instance: GuestInstance) -> None:
        self.instance = instance
        self._next = self.HEAP

    def alloc(self, size: int) -> int:
        pointer = self._next
        self._next += (size + 7) // 8 * 8
        while self._next > self.instance.call("grow", 0) * 65536:  # grow(0) returns the page count
            assert self.instance.call("grow", 16) >= 0
        return pointer

    def put(self, data: bytes) -> tuple[int, int]:
        pointer = self.alloc(len(data))
        self.instance.write(pointer, data)
        return pointer, len(data)

    def u32(self, pointer: int) -> int:
        return struct.unpack("<I", self.instance.read(pointer, 4))[0]

    def call(self, name: str, *args: int) -> int:
        return self.instance.call(f"nn_{name}", *args)

    def call_out(self, name: str, *args: int) -> tuple[int, int]:
        """Call an import whose last parameter is a u32 out-pointer; returns (errno, value)."""
        out = self.alloc(4)
        self.instance.write(out, b"\xee\xee\xee\xee")
        errno = self.call(name, *args, out)
        return errno, self.u32(out)

    def load_by_name(self, name: str, config: dict | None = None) -> tuple[int, int]:
        name_ptr, name_len = self.put(name.encode())
        if config is None:
            return self.call_out("load_by_name", name_ptr, name_len)
        config_ptr, config_len = self.put(json.dumps(config).encode())
        return self.call_out("load_by_name_with_config", name_ptr, name_len, config_ptr, config_len)

    def context(self, name: str, config: dict | None = None) -> int:
        errno, graph = self.load_by_name(name, config)
        assert errno == SUCCESS
        errno, context = self.call_out("init_execution_context", graph)
        assert errno == SUCCESS
        return context

    def tensor(self, dims: list[int], type_code: int, data: bytes) -> int:
        dims_ptr, _ = self.put(struct.pack(f"<{len(dims)}I", *dims))
        data_ptr, data_len = self.put(data)
        pointer = self.alloc(20)
        self.instance.write(pointer, struct.pack("<IIB3xII", dims_ptr, len(dims), type_code, data_ptr, data_len))
        return pointer

    def set_text(self, context: int, text: str | bytes, index: int = 0) -> int:
        data = text.encode() if isinstance(text, str) else text
        return self.call("set_input", context, index, self.tensor([1], U8, data))

    def output(self, context: int, index: int = 0, size: int = 1 << 14, single: bool = False) -> tuple[int, bytes, int]:
        """(errno, bytes written, the size the host reported in out_written)."""
        buffer, written = self.alloc(size), self.alloc(4)
        errno = self.call("get_output_single" if single else "get_output", context, index, buffer, size, written)
        reported = self.u32(written)
        data = self.instance.read(buffer, reported) if errno == SUCCESS else b""
        return errno, data, reported


@pytest.fixture
def probe(host: Host) -> Iterator[Probe]:
    with host.instantiate("probe") as instance:
        yield Probe(instance)
