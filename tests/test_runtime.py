"""The guest runtime: compiled-module caches, and guests that misbehave as programs."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import wasmtime
from conftest import HELLO_GUEST

from wasinn_lab import GuestLoadError, Host
from wasinn_lab.guests import resolve
from wasinn_lab.runtime import GuestRuntime

EMPTY = b'\0asm\x01\0\0\0'


def test_compiled_modules_are_cached_on_disk_and_reused(tmp_path: Path) -> None:
    wasm = resolve("stream").read_bytes()
    first = GuestRuntime(tmp_path)
    module = first.compile(wasm)
    (cached,) = tmp_path.glob("*.cwasm")
    assert first.compile(wasm) is module  # in memory for this runtime
    second = GuestRuntime(tmp_path)
    reused = second.compile(wasm)  # from disk: same exports, no new file
    assert reused.exports == module.exports and reused.serialized == module.serialized
    assert list(tmp_path.glob("*.cwasm")) == [cached]


def test_a_damaged_cache_entry_is_replaced(tmp_path: Path) -> None:
    wasm = resolve("stream").read_bytes()
    GuestRuntime(tmp_path).compile(wasm)
    (cached,) = tmp_path.glob("*.cwasm")
    cached.write_bytes(b"garbage")
    module = GuestRuntime(tmp_path).compile(wasm)
    assert "_start" in module.exports
    assert cached.read_bytes() != b"garbage"


def test_no_disk_cache_when_turned_off(tmp_path: Path) -> None:
    GuestRuntime(None).compile(EMPTY)
    assert not list(tmp_path.iterdir())


def test_invalid_modules_are_clear_errors() -> None:
    with pytest.raises(GuestLoadError, match="not a valid WebAssembly module"):
        GuestRuntime(None).compile(b"\0asm garbage")


def test_a_guest_importing_what_the_host_lacks_is_a_load_error() -> None:

    wat = '(module (import "env" "nope" (func)) (memory (export "memory") 1) (func (export "_start")))'
    with pytest.raises(GuestLoadError, match="cannot instantiate"):
        Host(default_model=False).run(wasmtime.wat2wasm(wat))


def test_cache_prompt_false_re_evaluates_every_prompt(host: Host) -> None:
    params = {"n-predict": 4, "temp": 0, "cache-prompt": False}
    host.run("complete", "default", "One two three four", session="nocache", params=params)
    host.run("complete", "default", "One two three four five", session="nocache")
    try:
        second = host.session("nocache").generations[-1]
        assert second.evaluated_tokens == second.prompt_tokens
    finally:
        host.sessions.close("nocache")


def test_a_failing_output_callback_loses_no_output_and_stops_no_other_guest(caplog: pytest.LogCaptureFixture) -> None:
    host = Host(default_model=False)
    hello = HELLO_GUEST

    def broken(data: bytes) -> None:
        raise RuntimeError("the caller's bug")

    assert host.run(hello, on_stdout=broken).stdout == "hello\n"
    assert "an output callback failed" in caplog.text
    assert any(thread.name == "wasinn-lab-output" for thread in threading.enumerate())  # the pump lives on
    seen: list[bytes] = []
    assert host.run(hello, on_stdout=seen.append).stdout == "hello\n" and b"".join(seen) == b"hello\n"
