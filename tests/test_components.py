"""Components through the host: the standard wasi:nn WIT, our wasinn:llm interface, their
resources and errors, and components that misbehave. Real wasmtime, the default model,
guests built from guests/components/."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wasinn_lab import ConfigError, GuestLimitError, GuestLoadError, GuestTrap, Host, Limits, errors
from wasinn_lab.guests import build, build_cell_source, resolve
from wasinn_lab.notebook.lab import Lab
from wasinn_lab.runtime import kind_of

SEEDED = {"n_predict": "12", "seed": "42", "temp": "0.8"}


def usage(stderr: str) -> dict[str, int]:
    return json.loads(re.findall(r"^usage: (\{.*\})$", stderr, re.M)[-1])


def test_a_component_is_told_from_a_module_and_runs_as_a_command(host: Host) -> None:
    assert kind_of(resolve("stream_llm").read_bytes()) == "component"
    assert kind_of(resolve("stream").read_bytes()) == "module"
    result = host.run("echo_nn", "echo")
    assert result.exit_code == 0, result.stderr
    with pytest.raises(ConfigError, match="is a component: instantiate"):
        host.instantiate("echo_nn")


def test_each_wasi_nn_compute_answers_for_its_own_inputs_only(host: Host) -> None:
    """A second compute on one context used to come back with the first one's tensors too."""
    result = host.run("echo_nn", "echo")
    assert result.exit_code == 0, result.stdout
    assert "echo_nn: 3 tensors came back unchanged, then 1 alone" in result.stdout


def test_the_same_seed_gives_the_same_text_through_preview1_and_through_components(host: Host) -> None:
    module = host.run("stream", "default", "Once upon a time", env=SEEDED)
    llm = host.run("stream_llm", "default", "Once upon a time", env=SEEDED)
    tensors = host.run("tensor_py", "default", "Once upon a time", env=SEEDED)
    assert module.exit_code == llm.exit_code == tensors.exit_code == 0, (llm.stderr, tensors.stderr)
    assert module.stdout.strip() and module.stdout == llm.stdout == tensors.stdout
    assert usage(llm.stderr)["output_tokens"] == usage(module.stderr)["output_tokens"] == 12


def test_every_tensor_type_comes_back_unchanged_from_the_echo_model(host: Host) -> None:
    result = host.run("tensor_py", "echo")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert re.search(r"\b15 tensors came back unchanged", result.stdout)
    for ty in ("FP16", "FP32", "FP64", "BF16", "U8", "I32", "I64"):
        assert f"type={ty}" in result.stdout, ty
    assert "dims=1048576" in result.stdout  # one of them is 1 MiB


def test_a_c_components_exit_status_comes_through_whole(host: Host, tmp_path: Path) -> None:
    """The preview1 adapter makes proc_exit(n) wasi:cli/exit's `exit(err)`: every non-zero
    status read as 1. A C component's proc_exit is `exit-with-code` now, as a module's is
    its own status."""
    source = tmp_path / "components" / "exit3.c"
    source.parent.mkdir()
    source.write_text('// world: nn-imports\n#include <stdio.h>\nint main(void) { puts("bye"); return 3; }\n')
    result = host.run(build(source))
    assert (result.exit_code, result.stdout) == (3, "bye\n")


BIG_WRITES = """import sys
from wit_world import exports


class Run(exports.Run):
    def run(self) -> None:
        print("x" * 200_000)
        sys.stderr.write("y" * 100_000)
"""


def test_a_python_components_big_writes_arrive_whole(host: Host, tmp_path: Path) -> None:
    """componentize-py's stdout dropped what one write had past 64 KiB (wasmtime takes at
    most that much at a time), silently."""
    source = tmp_path / "big_writes" / "app.py"
    source.parent.mkdir()
    source.write_text(BIG_WRITES)
    result = host.run(build_cell_source(source))
    assert result.exit_code == 0
    assert (len(result.stdout), len(result.stderr)) == (200_001, 100_000)


def test_wasi_nn_errors_are_error_resources_with_a_code_and_what_to_fix(host: Host) -> None:
    result = host.run("hostile", "bad-tensor")
    assert result.exit_code == 0, result.stdout
    assert "compute: invalid-argument: tensor 'bad' has 4 bytes of data, but dims [3] of f32 need 12" in result.stdout
    assert result.errors == ["wasi:nn compute failed: tensor 'bad' has 4 bytes of data, but dims [3] of f32 need 12"]
    result = host.run("echo_nn", "no-such-model")
    assert result.exit_code == 2  # echo_nn's status for a wasi:nn error
    assert "not-found" in result.stdout + result.stderr and "no model named 'no-such-model'" in result.stderr + result.stdout


def test_two_input_tensors_of_one_name_are_an_invalid_argument(host: Host) -> None:
    """Found by the WIT fuzzer: compute kept one of them, unchecked (a tensor whose data did
    not match its dims went through), and said nothing."""
    result = host.run("hostile", "twice")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "compute: invalid-argument: each input tensor needs a name of its own: 'x' given twice" in result.stdout


def test_a_bad_parameter_is_an_error_that_names_it(host: Host) -> None:
    result = host.run("hostile", "bad-parameter", "default")
    assert result.exit_code == 0, result.stdout
    assert "set-parameter: invalid-parameter, name temp: 'temp' takes a number" in result.stdout


def test_text_from_a_context_made_for_embeddings_is_unsupported_not_a_host_error(host: Host) -> None:
    """Found by the WIT fuzzer: compute on an embedding context met no text output (a
    KeyError, logged as a host bug and answered runtime-error)."""
    result = host.run("hostile", "embedding-text", "default")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "compute: unsupported-operation: this context makes embeddings" in result.stdout


def test_pulling_after_cancel_gives_nothing_and_the_context_streams_again(host: Host) -> None:
    result = host.run("hostile", "after-cancel", "default", env={"n_predict": "8"})
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "after cancel: none, none; finish cancelled" in result.stdout


def test_what_a_component_never_drops_is_freed_when_it_ends(host: Host) -> None:
    before = len(host.sessions)
    result = host.run("hostile", "never-drops", "default", env={"n_predict": "8"})
    assert result.exit_code == 0 and "holding" in result.stdout
    assert len(host.sessions) == before


def test_a_component_that_traps_mid_generation_frees_its_context(host: Host) -> None:
    before = len(host.sessions)
    with pytest.raises(GuestTrap, match="wasm trap"):
        host.run("hostile", "traps", "default", env={"n_predict": "64"})
    assert len(host.sessions) == before
    assert host.run("stream_llm", "default", "Hi", env={"n_predict": "2"}).exit_code == 0


def test_a_spinning_component_is_stopped_at_its_time_limit(host: Host) -> None:
    started = time.monotonic()
    with pytest.raises(GuestLimitError, match="time limit of 1 s"):
        host.run("hostile", "spins", limits=Limits(timeout=1))
    assert time.monotonic() - started < 10


def test_a_missing_import_is_named_before_the_guest_runs(host: Host, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from wasinn_lab.guests import _run, _wasm_tools  # the project's own wasm-tools

    wat = tmp_path / "needs.wat"
    wat.write_text('(component (import "example:missing/thing@1.0.0" (instance (export "f" (func))))'
                   ' (import "wasi:nn/graph@0.1.0" (instance (export "g" (func)))))')
    wasm = tmp_path / "needs.wasm"
    done = _run([_wasm_tools(), "parse", str(wat), "-o", str(wasm)])
    assert done.returncode == 0, done.stderr
    with pytest.raises(GuestLoadError, match=re.escape("imports what this host does not provide: "
                       "example:missing/thing@1.0.0, wasi:nn/graph@0.1.0. It provides WASI 0.2")):
        host.run(str(wasm))


def test_a_components_context_is_a_session_like_a_modules(host: Host) -> None:
    result = host.run("stream_llm", "default", "Once upon a time", env={"n_predict": "4"}, session="comp",
                      params={"temp": 0.0})
    try:
        assert result.exit_code == 0, result.stderr
        session = host.session("comp")
        assert session.guest == "stream_llm.wasm" and session.get("temp") == 0.0
        assert session.generations[-1].output_tokens == 4
        session.set(n_predict=3)  # read and set from outside, like any session
        again = host.run("stream_llm", "default", "Once upon a time", session="comp")
        assert again.exit_code == 0 and session.generations[-1].output_tokens == 3
        assert session.generations[-1].evaluated_tokens == 1  # prefix reuse: the same prompt
    finally:
        host.sessions.close("comp")


def test_ctrl_c_ends_a_components_generation_within_a_token_and_the_session_lives_on(host: Host) -> None:
    lab = Lab(host)
    task_events: list[str] = []

    def on_event(event) -> None:  # type: ignore[no-untyped-def]
        task_events.append(event.kind.value)
        if event.kind.value == "token" and task_events.count("token") == 5:
            os.kill(os.getpid(), signal.SIGINT)  # one Ctrl-C, on the thread that waits, as in a cell

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        lab.generate("stream_llm", "Once upon a time", session="comp-int", params={"n-predict": 5000, "temp": 0},
                     on_event=on_event)
    try:
        assert time.monotonic() - started < 60
        session = host.session("comp-int")
        assert session.state == "idle" and not session.streaming  # the guest has unwound
        assert 5 <= session.generations[-1].output_tokens < 50
        assert lab.generate("stream_llm", " And", session="comp-int", params={"n-predict": 3}).exit_code == 0
        assert session.generations[-1].output_tokens == 3
    finally:
        lab.close("comp-int")


def test_a_thousand_component_runs_leave_nothing_behind(host: Host) -> None:
    before = len(host.sessions)
    for _ in range(1000):
        assert host.run("hostile", "bad-tensor").exit_code == 0
    assert len(host.sessions) == before


def test_a_compiled_component_starts_from_the_disk_cache(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from wasinn_lab.runtime import GuestRuntime

    wasm = resolve("tensor_py").read_bytes()
    first = GuestRuntime(tmp_path)
    compiled = first.compile(wasm)
    assert compiled.kind == "component" and compiled.path is not None and compiled.path.is_file()
    assert any(name.startswith("wasi:cli/run@0.2.") for name in compiled.exports)
    started = time.perf_counter()
    again = GuestRuntime(tmp_path).compile(wasm)  # a new process's runtime: from the disk cache
    assert time.perf_counter() - started < 5 and again.path == compiled.path


def test_a_python_chat_component_takes_turns_on_stdin_and_reuses_the_prefix(host: Host) -> None:
    assert host.reads_stdin_turns("chat_py") and not host.reads_stdin_turns("stream_llm")
    result = host.run("chat_py", "default", stdin="Hi there\nHow are you?\n", env={"n_predict": "8", "temp": "0"},
                      session="comp-turns")
    try:
        assert result.exit_code == 0, result.stderr
        assert result.stderr.count("usage: {") == 2 and "User:" not in result.stdout
        first, second = host.session("comp-turns").generations[-2:]
        assert second.prompt_tokens > first.prompt_tokens
        assert second.evaluated_tokens < second.prompt_tokens - first.prompt_tokens + 8  # the conversation was cached
    finally:
        host.sessions.close("comp-turns")


@pytest.mark.parametrize(
    ("error", "nn_code", "llm_code"),
    [
        (errors.InvalidArgument("x"), "invalid-argument", "invalid-argument"),
        (errors.InvalidEncoding("x"), "invalid-encoding", "runtime-error"),
        (errors.NotFound("x"), "not-found", "not-found"),
        (errors.ModelNotFound("x"), "not-found", "not-found"),
        (errors.UnsupportedOperation("x"), "unsupported-operation", "unsupported-operation"),
        (errors.TooLarge("x"), "too-large", "too-large"),
        (errors.PromptTooLong("x"), "too-large", "too-large"),
        (errors.ContextFull("x"), "too-large", "too-large"),
        (errors.Busy("x"), "runtime-error", "busy"),
        (errors.BackendError("x"), "runtime-error", "runtime-error"),
        (errors.Timeout("x"), "timeout", None),
    ],
)
def test_each_error_of_the_tree_has_its_code_in_each_wit_front_end(
    error: Exception, nn_code: str, llm_code: str | None
) -> None:
    from wasinn_lab.abi import llm, wit

    assert wit.error_code_for(error) == nn_code
    if llm_code is not None:
        assert llm.error_code_for(error) == llm_code  # type: ignore[arg-type]


WASMTIME_UNCHANGED = """
import ctypes, sys
import wasmtime, wasmtime.component

def everything():
    \"\"\"Every global of every wasmtime module, and every attribute of every class in them.\"\"\"
    seen = {}
    for name, module in list(sys.modules.items()):
        if name == "wasmtime" or name.startswith("wasmtime."):
            for attr, value in list(vars(module).items()):
                seen[name, attr] = value
                if isinstance(value, type):
                    seen.update({(name, attr, key): item for key, item in vars(value).items()})
    return seen

class MallInfo2(ctypes.Structure):
    _fields_ = [(field, ctypes.c_size_t) for field in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def mmapped(size):
    \"\"\"Whether glibc maps a block of this size on its own (stock: anything above 32 MiB).\"\"\"
    before = libc.mallinfo2().hblks
    block = libc.malloc(size)
    try:
        return libc.mallinfo2().hblks > before
    finally:
        libc.free(block)

stock = everything()
import wasinn_lab
host = wasinn_lab.Host()
assert host.run("echo_nn", "echo").exit_code == 0
def changed():
    now = everything()
    return sorted(".".join(key) for key, value in stock.items() if now.get(key, stock) is not value)
print("while a host lives:", changed())
host.close()
print("after it closed:", changed())
print("glibc maps 40 MiB blocks:", mmapped(40 << 20))
"""


def test_components_leave_wasmtime_py_and_malloc_as_they_were() -> None:
    """The host's faster component values used to patch wasmtime-py's classes and host
    callback, and glibc's malloc thresholds, for the whole process and for good: a user's
    own wasmtime-py code in the same kernel ran on them. Nothing of it changes, neither
    while a host runs components nor after it closes."""
    done = subprocess.run([sys.executable, "-c", WASMTIME_UNCHANGED], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["while a host lives: []", "after it closed: []",
                                        "glibc maps 40 MiB blocks: True"]
