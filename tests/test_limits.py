"""Limits: a guest that spins, allocates or sends too much is stopped with an error that
names the limit, and the host carries on."""

from __future__ import annotations

import struct
import time

import pytest
import wasmtime

from wasinn_lab import ConfigError, GuestLimitError, GuestTrap, Host
from wasinn_lab.limits import Limits, MiB

SPIN = wasmtime.wat2wasm('(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))')
GROW = wasmtime.wat2wasm(
    '(module (memory (export "memory") 1)'
    ' (func (export "_start") (loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable))'
)
BIG_MEMORY = wasmtime.wat2wasm('(module (memory (export "memory") 2048) (func (export "_start")))')  # 128 MiB


def test_a_spinning_guest_is_stopped_at_its_time_limit() -> None:
    host = Host(default_model=False)
    started = time.monotonic()
    with pytest.raises(GuestLimitError, match=r"ran past its time limit of 0.3 s") as raised:
        host.run(SPIN, limits=Limits(timeout=0.3))
    assert raised.value.limit == "time" and raised.value.value == 0.3
    assert time.monotonic() - started < 5
    assert host.run("echo", "echo").exit_code == 0  # the host carries on


def test_fuel_limits_instructions() -> None:
    with pytest.raises(GuestLimitError, match=r"used all its fuel \(100,000\)") as raised:
        Host(default_model=False).run(SPIN, limits=Limits(fuel=100_000))
    assert raised.value.limit == "fuel"


def test_memory_limits() -> None:
    host = Host(default_model=False)
    with pytest.raises(GuestLimitError, match=r"more memory than its limit of 64 MiB"):
        host.run(BIG_MEMORY, limits=Limits(memory_bytes=64 * MiB))
    # Growth past the limit fails inside the guest (memory.grow gives -1); this one traps then.
    with pytest.raises(GuestTrap, match=r"using 7.1 MiB of its 8 MiB memory limit"):
        host.run(GROW, limits=Limits(memory_bytes=8 * MiB))


@pytest.mark.parametrize(
    ("wat", "limits", "limit", "message"),
    [
        ("(memory 1) (memory (export \"memory\") 1)", Limits(), "memories", "more than one linear memory"),
        ("(table 10 funcref) (table 10 funcref) (memory (export \"memory\") 1)", Limits(tables=1), "tables",
         "more than its limit of 1 tables"),
        ("(table 2000 funcref) (memory (export \"memory\") 1)", Limits(table_elements=1000), "table_elements",
         "more than its limit of 1,000 elements"),
    ],
)
def test_instantiation_limits_are_named(wat: str, limits: Limits, limit: str, message: str) -> None:
    guest = wasmtime.wat2wasm(f'(module {wat} (func (export "_start")))')
    with pytest.raises(GuestLimitError, match=message) as raised:
        Host(default_model=False).run(guest, limits=limits)
    assert raised.value.limit == limit


def test_an_interrupt_stops_that_guest_and_no_other() -> None:
    host = Host(default_model=False)
    spinning = host.start(SPIN, limits=Limits(timeout=None))
    other = host.start(SPIN, limits=Limits(timeout=2.0))
    time.sleep(0.3)
    spinning.interrupt()
    outcome = list(spinning.events(timeout=10))[-1].data
    assert isinstance(outcome, GuestLimitError) and outcome.limit == "interrupt"
    assert other.running  # its own engine: the interrupt did not touch it
    outcome = list(other.events(timeout=10))[-1].data
    assert isinstance(outcome, GuestLimitError) and outcome.limit == "time"


def test_model_bytes_from_a_guest_are_capped(host: Host) -> None:
    from conftest import ENCODING_GGML_WASMEDGE, TARGET_CPU, TOO_LARGE, Probe

    capped = Host(default_model=False, limits=Limits(load_bytes=1024))
    with capped.instantiate("probe") as instance:
        probe = Probe(instance)
        data_ptr, _ = probe.put(b"GGUF" + bytes(2000))
        builders, _ = probe.put(struct.pack("<II", data_ptr, 2004))
        assert probe.call_out("load", builders, 1, ENCODING_GGML_WASMEDGE, TARGET_CPU)[0] == TOO_LARGE


@pytest.mark.parametrize("bad", [{"timeout": 0}, {"fuel": -1}, {"memory_bytes": 0}, {"load_bytes": -5}])
def test_limits_are_checked(bad: dict) -> None:
    with pytest.raises(ConfigError, match="must be positive"):
        Limits(**bad)


def test_a_time_limit_stops_a_long_generation_too(host: Host) -> None:
    started = time.monotonic()
    with pytest.raises(GuestLimitError, match="time limit of 2 s"):
        host.run("stream", "default", "Once upon a time", env={"n_predict": "100000", "temp": "0"}, limits=Limits(timeout=2))
    assert time.monotonic() - started < 10
    assert not [s for s in host.sessions if s.guest == "stream.wasm"]  # its context was freed


def printer(*, forever: bool) -> bytes:
    """Writes a 64 KiB buffer to stdout (fd 1), forever or once: fd_write(fd, iovs, 1, nwritten)."""
    write = "(drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))"
    body = f"(loop {write} (br 0))" if forever else write
    return wasmtime.wat2wasm(f"""(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 0) "\\10\\00\\00\\00\\00\\00\\01\\00")  ;; one iovec: 64 KiB at 16
  (func (export "_start") {body}))""")


def test_a_guest_printing_without_end_is_stopped_at_its_output_limit() -> None:
    host = Host(default_model=False)
    seen: list[bytes] = []
    with pytest.raises(GuestLimitError, match=r"wrote more than its limit of 1 MiB to stdout") as raised:
        host.run(printer(forever=True), limits=Limits(output_bytes=MiB), on_stdout=seen.append)
    assert raised.value.limit == "output"
    assert sum(map(len, seen)) == MiB  # what was kept is exactly the limit, and it was handed on


def test_output_cut_short_is_an_error_even_if_the_guest_ends_well() -> None:
    host = Host(default_model=False)
    assert host.run(printer(forever=False)).stdout == "\0" * 65536
    assert len(host.run(printer(forever=False), limits=Limits(output_bytes=None)).stdout) == 65536  # no limit
    with pytest.raises(GuestLimitError, match=r"more than its limit of 1,000 bytes to stdout"):
        host.run(printer(forever=False), limits=Limits(output_bytes=1000))
