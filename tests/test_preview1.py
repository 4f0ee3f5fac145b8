"""Each of the twelve wasi_ephemeral_nn imports, success and every documented error,
driven by guests/probe.wat through real wasmtime on the real host."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import struct
import tempfile

import pytest
from conftest import (
    BUSY,
    CONTEXT_FULL,
    ENCODING_GGML_WASMEDGE,
    ENCODING_GGML_WIT,
    END_OF_SEQUENCE,
    F32,
    GREEDY,
    INVALID_ARGUMENT,
    INVALID_ENCODING,
    MODEL_NOT_FOUND,
    NOT_FOUND,
    PROMPT_TOO_LONG,
    SUCCESS,
    TARGET_AUTO,
    TARGET_CPU,
    TOO_LARGE,
    U8,
    UNSUPPORTED,
    Probe,
)

from wasinn_lab import Host
from wasinn_lab.backends.llama import MAX_WEIGHT_COPIES, gpu_offload_supported

OUTSIDE = 0xFFFF_FFF0  # a guest pointer far past the probe's memory


# -- load_by_name / load_by_name_with_config ------------------------------------------------


def test_load_by_name_returns_a_graph_and_caches_the_weights(host: Host, probe: Probe) -> None:
    errno, graph = probe.load_by_name("default")
    assert errno == SUCCESS and graph != 0xEEEEEEEE
    assert host.registry.is_loaded("default")
    errno, second = probe.load_by_name("default")
    assert errno == SUCCESS and second != graph  # a new handle on the same cached weights


def test_load_by_name_unregistered_is_not_found(probe: Probe) -> None:
    assert probe.load_by_name("no-such-model")[0] == NOT_FOUND


def test_load_by_name_registered_but_missing_file_is_model_not_found(host: Host, probe: Probe, tmp_path) -> None:
    with pytest.warns(UserWarning, match="does not exist"):
        host.register("ghost", tmp_path / "ghost.gguf")
    try:
        assert probe.load_by_name("ghost")[0] == MODEL_NOT_FOUND
        assert probe.load_by_name("ghost", {"n-predict": 1})[0] == MODEL_NOT_FOUND
    finally:
        host.registry.unregister("ghost")


@pytest.mark.parametrize("bad", ["name", "out"])
def test_load_by_name_pointers_outside_memory(probe: Probe, bad: str) -> None:
    name_ptr, name_len = probe.put(b"default")
    out = probe.alloc(4)
    if bad == "name":
        name_ptr = OUTSIDE
    else:
        out = OUTSIDE
    assert probe.call("load_by_name", name_ptr, name_len, out) == INVALID_ARGUMENT


def test_memory_grown_between_calls_is_reachable_and_its_end_still_checked(probe: Probe) -> None:
    """The host keeps where the guest's memory lies between calls: growth must still be
    seen, in the calls after it, and the new end must still be the end."""
    assert probe.load_by_name("no-such-model")[0] == NOT_FOUND  # memory seen at its size now
    end = probe.instance.call("grow", 0) * 65536
    assert probe.instance.call("grow", 2) >= 0
    probe.instance.write(end + 65536, b"default")
    assert probe.call("load_by_name", end + 65536, 7, end + 65544) == SUCCESS  # in the new pages
    assert probe.call("load_by_name", end + 2 * 65536 - 3, 7, end + 65544) == INVALID_ARGUMENT  # past them


def test_load_by_name_length_overflowing_memory(probe: Probe) -> None:
    name_ptr, _ = probe.put(b"default")
    assert probe.call("load_by_name", name_ptr, 0xFFFF_FFFF, probe.alloc(4)) == INVALID_ARGUMENT


def test_load_by_name_invalid_utf8_name(probe: Probe) -> None:
    name_ptr, name_len = probe.put(b"\xff\xfe")
    assert probe.call("load_by_name", name_ptr, name_len, probe.alloc(4)) == INVALID_ARGUMENT


def test_load_by_name_with_config_applies_and_accepts_snake_case(host: Host, probe: Probe) -> None:
    context = probe.context("default", {"n_predict": 3, "ctx-size": 256, "unknown-key": [1, 2], **GREEDY})
    session = probe.instance.nn.sessions[-1]
    assert session.get("n-predict") == 3 and session.get("ctx-size") == 256
    assert "unknown-key" not in session.parameters
    assert probe.set_text(context, "Hello") == SUCCESS
    assert probe.call("compute", context) == SUCCESS
    usage = json.loads(probe.output(context, index=1)[1])
    assert usage["output_tokens"] == 3


def test_registration_default_config_is_overridden_by_the_guest(host: Host, probe: Probe) -> None:
    probe.context("default")
    assert probe.instance.nn.sessions[-1].get("n-predict") == 128  # the default model's bound
    probe.context("default", {"n-predict": 5})
    assert probe.instance.nn.sessions[-1].get("n-predict") == 5


def test_model_level_settings_cannot_multiply_the_weights(host: Host, probe: Probe) -> None:
    def copies() -> int:
        return host.properties("default")["model"]["weight_copies"]

    before = copies()
    # The weights for a context's settings are found (or loaded) when it gets its prompt.
    errnos = [probe.set_text(probe.context("default", {"n-gpu-layers": layers}), "Hi") for layers in range(1, 9)]
    if gpu_offload_supported():  # each setting is a copy, up to the cap
        assert BUSY in errnos and copies() == MAX_WEIGHT_COPIES
    else:  # GPU settings change nothing on a CPU build, so they make no copy at all
        assert set(errnos) == {SUCCESS} and copies() == before


@pytest.mark.parametrize("config", [b"{not json", b"[1, 2]", b"\xff"])
def test_load_by_name_with_config_malformed_is_invalid_encoding(probe: Probe, config: bytes) -> None:
    name_ptr, name_len = probe.put(b"default")
    config_ptr, config_len = probe.put(config)
    assert probe.call("load_by_name_with_config", name_ptr, name_len, config_ptr, config_len, probe.alloc(4)) == INVALID_ENCODING


@pytest.mark.parametrize("config", [{"ctx-size": "big"}, {"temp": True}, {"n-predict": 1.5}, {"stream-stdout": 1},
                                    {"threads": 0}])
def test_load_by_name_with_config_wrong_types_are_invalid_argument(probe: Probe, config: dict) -> None:
    assert probe.load_by_name("default", config)[0] == INVALID_ARGUMENT


def test_load_by_name_with_config_outside_memory(probe: Probe) -> None:
    name_ptr, name_len = probe.put(b"default")
    assert probe.call("load_by_name_with_config", name_ptr, name_len, OUTSIDE, 10, probe.alloc(4)) == INVALID_ARGUMENT


# -- load (GGUF bytes) ---------------------------------------------------------------------


def _staged_files() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "wasinn-lab-*", "*.gguf")))


@pytest.mark.parametrize("encoding", [ENCODING_GGML_WASMEDGE, ENCODING_GGML_WIT])
def test_load_gguf_bytes_under_either_ggml_number(host: Host, encoding: int) -> None:
    model = host.registry.get("default").path.read_bytes()
    before = _staged_files()
    with host.instantiate("probe") as instance:
        probe = Probe(instance)
        assert instance.call("grow", len(model) // 65536 + 2) >= 0
        data_ptr, data_len = probe.put(model)
        builders, _ = probe.put(struct.pack("<II", data_ptr, data_len))
        errno, graph = probe.call_out("load", builders, 1, encoding, TARGET_AUTO)
        assert errno == SUCCESS
        errno, context = probe.call_out("init_execution_context", graph)
        assert errno == SUCCESS
        assert probe.set_text(context, json.dumps({"n-predict": 4, **GREEDY}), index=1) == SUCCESS
        assert probe.set_text(context, "The capital of France is") == SUCCESS
        assert probe.call("compute", context) == SUCCESS
        assert probe.output(context)[1].strip()
        staged = _staged_files() - before
        assert len(staged) == 1  # staged while the graph lives, in a directory of the guest's own
        assert os.stat(os.path.dirname(staged.pop())).st_mode & 0o777 == 0o700
        # Unloaded, the graph's contexts can still be drained; it is freed with the guest.
        assert probe.call("unload", graph) == SUCCESS
        assert probe.set_text(context, "The capital of Italy is") == SUCCESS
        assert probe.call("compute", context) == SUCCESS
    assert _staged_files() == before  # and always removed


def test_load_caps_the_model_bytes_of_all_a_guests_loads_together(host: Host) -> None:
    model = host.registry.get("default").path.read_bytes()
    capped = Host(default_model=False, limits=dataclasses.replace(host.limits, load_bytes=len(model) * 3 // 2))
    with capped.instantiate("probe") as instance:
        probe = Probe(instance)
        assert instance.call("grow", len(model) // 65536 + 2) >= 0
        data_ptr, data_len = probe.put(model)
        builders, _ = probe.put(struct.pack("<II", data_ptr, data_len))
        assert probe.call_out("load", builders, 1, ENCODING_GGML_WASMEDGE, TARGET_AUTO)[0] == SUCCESS
        assert probe.call_out("load", builders, 1, ENCODING_GGML_WASMEDGE, TARGET_AUTO)[0] == TOO_LARGE


def test_load_rejects_bytes_that_are_not_gguf(probe: Probe) -> None:
    data_ptr, data_len = probe.put(b"not a model at all")
    builders, _ = probe.put(struct.pack("<II", data_ptr, data_len))
    assert probe.call_out("load", builders, 1, ENCODING_GGML_WASMEDGE, TARGET_CPU)[0] == INVALID_ENCODING


@pytest.mark.parametrize("encoding", [0, 1, 99])
def test_load_unserved_or_unknown_encoding(probe: Probe, encoding: int) -> None:
    data_ptr, data_len = probe.put(b"GGUF....")
    builders, _ = probe.put(struct.pack("<II", data_ptr, data_len))
    assert probe.call_out("load", builders, 1, encoding, TARGET_CPU)[0] == INVALID_ENCODING


def test_load_builder_array_outside_memory(probe: Probe) -> None:
    assert probe.call_out("load", OUTSIDE, 1, ENCODING_GGML_WASMEDGE, TARGET_CPU)[0] == INVALID_ARGUMENT
    builders, _ = probe.put(struct.pack("<II", OUTSIDE, 100))
    assert probe.call_out("load", builders, 1, ENCODING_GGML_WASMEDGE, TARGET_CPU)[0] == INVALID_ARGUMENT


def test_load_unknown_target(probe: Probe) -> None:
    data_ptr, data_len = probe.put(b"GGUF")
    builders, _ = probe.put(struct.pack("<II", data_ptr, data_len))
    assert probe.call_out("load", builders, 1, ENCODING_GGML_WASMEDGE, 42)[0] == INVALID_ARGUMENT


# -- init_execution_context / finalize_execution_context --------------------------------------


def test_init_execution_context_opens_a_session(host: Host, probe: Probe) -> None:
    before = len(host.sessions)
    probe.context("default")
    assert len(host.sessions) == before + 1


def test_init_execution_context_unknown_graph(probe: Probe) -> None:
    assert probe.call_out("init_execution_context", 12345)[0] == INVALID_ARGUMENT


def test_init_execution_context_out_pointer_outside_memory(probe: Probe) -> None:
    _errno, graph = probe.load_by_name("default")
    assert probe.call("init_execution_context", graph, OUTSIDE) == INVALID_ARGUMENT


def test_init_execution_context_beyond_max_sessions_is_busy() -> None:
    small = Host(default_model=False, max_sessions=2)
    with small.instantiate("probe") as instance:
        probe = Probe(instance)
        errno, graph = probe.load_by_name("echo")
        assert probe.call_out("init_execution_context", graph)[0] == SUCCESS
        errno, second = probe.call_out("init_execution_context", graph)
        assert errno == SUCCESS
        assert probe.call_out("init_execution_context", graph)[0] == BUSY
        assert probe.call("finalize_execution_context", second) == SUCCESS
        assert probe.call_out("init_execution_context", graph)[0] == SUCCESS


def test_finalize_frees_the_session_and_the_handle(host: Host, probe: Probe) -> None:
    context = probe.context("default")
    session = probe.instance.nn.sessions[-1]
    assert probe.call("finalize_execution_context", context) == SUCCESS
    assert session.closed and session.id not in {s.id for s in host.sessions}
    assert probe.call("finalize_execution_context", context) == INVALID_ARGUMENT  # double free
    assert probe.set_text(context, "use after free") == INVALID_ARGUMENT
    assert probe.call("compute", context) == INVALID_ARGUMENT


def test_contexts_left_open_are_freed_when_the_guest_ends(host: Host) -> None:
    with host.instantiate("probe") as instance:
        Probe(instance).context("default")
        session = instance.nn.sessions[-1]
    assert session.closed and session.id not in {s.id for s in host.sessions}


# -- unload --------------------------------------------------------------------------------


def test_unload_drops_the_name_from_the_cache_and_frees_the_handle(host: Host, probe: Probe) -> None:
    _errno, graph = probe.load_by_name("default")
    context = probe.call_out("init_execution_context", graph)[1]
    assert probe.call("unload", graph) == SUCCESS
    assert not host.registry.is_loaded("default")
    assert probe.call("unload", graph) == INVALID_ARGUMENT  # already unloaded
    assert probe.call_out("init_execution_context", graph)[0] == INVALID_ARGUMENT
    # A context made before the unload can still be drained.
    assert probe.set_text(context, json.dumps({"n-predict": 2}), index=1) == SUCCESS
    assert probe.set_text(context, "Hi") == SUCCESS
    assert probe.call("compute", context) == SUCCESS
    assert probe.load_by_name("default")[0] == SUCCESS  # the next load reloads
    assert host.registry.is_loaded("default")


def test_unload_unknown_graph(probe: Probe) -> None:
    assert probe.call("unload", 999) == INVALID_ARGUMENT


# -- set_input -----------------------------------------------------------------------------


def test_set_input_unknown_context(probe: Probe) -> None:
    assert probe.call("set_input", 777, 0, probe.tensor([1], U8, b"x")) == INVALID_ARGUMENT


def test_set_input_tensor_struct_outside_memory(probe: Probe) -> None:
    context = probe.context("default")
    assert probe.call("set_input", context, 0, OUTSIDE) == INVALID_ARGUMENT


@pytest.mark.parametrize("field", ["dims", "data"])
def test_set_input_tensor_fields_outside_memory(probe: Probe, field: str) -> None:
    context = probe.context("default")
    pointer = probe.tensor([1], U8, b"hello")
    offset = 0 if field == "dims" else 12
    probe.instance.write(pointer + offset, struct.pack("<I", OUTSIDE))
    assert probe.call("set_input", context, 0, pointer) == INVALID_ARGUMENT


def test_set_input_unknown_tensor_type_and_absurd_rank(probe: Probe) -> None:
    context = probe.context("default")
    assert probe.call("set_input", context, 0, probe.tensor([1], 9, b"x")) == INVALID_ARGUMENT
    assert probe.call("set_input", context, 0, probe.tensor([1] * 40, U8, b"x")) == INVALID_ARGUMENT
    pointer = probe.tensor([1], U8, b"x")
    probe.instance.write(pointer + 4, struct.pack("<I", 0x4000_0000))  # a rank of 2**30
    assert probe.call("set_input", context, 0, pointer) == INVALID_ARGUMENT


def test_set_input_config_at_index_1(probe: Probe) -> None:
    context = probe.context("default")
    session = probe.instance.nn.sessions[-1]
    assert probe.set_text(context, json.dumps({"temp": 0.25, "top_k": 7}), index=1) == SUCCESS
    assert session.get("temp") == 0.25 and session.get("top-k") == 7
    assert probe.set_text(context, b"{broken", index=1) == INVALID_ENCODING
    assert probe.set_text(context, json.dumps({"top-k": "seven"}), index=1) == INVALID_ARGUMENT
    assert session.get("top-k") == 7  # a rejected config changes nothing


def test_set_input_prompt_must_be_utf8(probe: Probe) -> None:
    context = probe.context("default")
    assert probe.set_text(context, b"\xc3\x28 broken") == INVALID_ARGUMENT


# -- compute / get_output --------------------------------------------------------------------


def test_usage_json_is_valid_right_after_set_input(probe: Probe) -> None:
    context = probe.context("default", {"n-predict": 4, **GREEDY})
    assert probe.set_text(context, "One two three") == SUCCESS
    errno, usage, _ = probe.output(context, index=1)
    assert errno == SUCCESS
    usage = json.loads(usage)
    assert usage["input_tokens"] >= 3 and usage["output_tokens"] == 0
    assert {"llama_build_number", "llama_commit"} <= usage.keys()
    assert probe.call("compute", context) == SUCCESS
    assert json.loads(probe.output(context, index=1)[1])["output_tokens"] == 4


def test_compute_without_input(probe: Probe) -> None:
    context = probe.context("default")
    assert probe.call("compute", context) == INVALID_ARGUMENT


def test_compute_unknown_context(probe: Probe) -> None:
    assert probe.call("compute", 4242) == INVALID_ARGUMENT


def test_compute_stops_at_the_reverse_prompt(probe: Probe) -> None:
    context = probe.context("default", {"n-predict": 64, "reverse-prompt": "\n", **GREEDY})
    assert probe.set_text(context, "Write a list of fruits:\n1.") == SUCCESS
    assert probe.call("compute", context) == SUCCESS
    text = probe.output(context)[1].decode()
    assert text.endswith("\n") and text.count("\n") == 1


def test_prompt_longer_than_the_context(probe: Probe) -> None:
    context = probe.context("default", {"ctx-size": 64})
    assert probe.set_text(context, "word " * 200) == SUCCESS
    assert probe.call("compute", context) == PROMPT_TOO_LONG
    assert probe.call("compute_single", context) == PROMPT_TOO_LONG


def test_full_context_keeps_the_partial_output(probe: Probe) -> None:
    context = probe.context("default", {"ctx-size": 48, "n-predict": -1, **GREEDY})
    assert probe.set_text(context, "Count: one, two, three,") == SUCCESS
    assert probe.call("compute", context) == CONTEXT_FULL
    usage = json.loads(probe.output(context, index=1)[1])
    assert usage["input_tokens"] + usage["output_tokens"] >= 47
    assert probe.output(context)[1]  # the partial text is still readable


def test_get_output_too_small_reports_the_size_and_writes_nothing(probe: Probe) -> None:
    context = probe.context("default", {"n-predict": 6, **GREEDY})
    assert probe.set_text(context, "Once upon a time") == SUCCESS
    assert probe.call("compute", context) == SUCCESS
    full = probe.output(context)[1]
    buffer, written = probe.alloc(64), probe.alloc(4)
    probe.instance.write(buffer, b"\xab" * 64)
    assert probe.call("get_output", context, 0, buffer, len(full) - 1, written) == TOO_LARGE
    assert probe.u32(written) == len(full)
    assert probe.instance.read(buffer, 64) == b"\xab" * 64


@pytest.mark.parametrize("bad", ["buffer", "written"])
def test_get_output_pointers_outside_memory(probe: Probe, bad: str) -> None:
    context = probe.context("default")
    assert probe.set_text(context, "x") == SUCCESS
    buffer, written = probe.alloc(16), probe.alloc(4)
    if bad == "buffer":
        buffer = OUTSIDE
    else:
        written = OUTSIDE
    assert probe.call("get_output", context, 1, buffer, 16, written) == INVALID_ARGUMENT


# -- compute_single / get_output_single / fini_single ------------------------------------------


def test_single_token_streaming_matches_compute_with_a_fixed_seed(probe: Probe) -> None:
    config = {"n-predict": 12, "temp": 0.7, "seed": 1234}
    whole = probe.context("default", config)
    assert probe.set_text(whole, "The weather today is") == SUCCESS
    assert probe.call("compute", whole) == SUCCESS
    expected = probe.output(whole)[1]

    streamed = probe.context("default", config)
    assert probe.set_text(streamed, "The weather today is") == SUCCESS
    pieces = []
    while (errno := probe.call("compute_single", streamed)) == SUCCESS:
        errno_out, piece, _ = probe.output(streamed, single=True)
        assert errno_out == SUCCESS
        pieces.append(piece)
    assert errno == END_OF_SEQUENCE  # n-predict bounds single mode too
    assert len(pieces) == 12
    assert b"".join(pieces) == expected
    assert probe.call("fini_single", streamed) == SUCCESS


def test_get_output_single_too_small(probe: Probe) -> None:
    context = probe.context("default", {"n-predict": 2, **GREEDY})
    assert probe.set_text(context, "Hello") == SUCCESS
    assert probe.call("compute_single", context) == SUCCESS
    buffer, written = probe.alloc(8), probe.alloc(4)
    assert probe.call("get_output_single", context, 0, buffer, 0, written) == TOO_LARGE
    assert probe.u32(written) > 0


def test_single_mode_on_unknown_context_and_unsupported_backend(probe: Probe) -> None:
    for name in ("compute_single", "fini_single"):
        assert probe.call(name, 31337) == INVALID_ARGUMENT
    echo = probe.context("echo")
    assert probe.call("set_input", echo, 0, probe.tensor([2], F32, bytes(8))) == SUCCESS
    assert probe.call("compute_single", echo) == UNSUPPORTED
    assert probe.output(echo, single=True)[0] == UNSUPPORTED
    assert probe.call("fini_single", echo) == UNSUPPORTED


def test_single_mode_context_full(probe: Probe) -> None:
    context = probe.context("default", {"ctx-size": 32, "n-predict": -1, **GREEDY})
    assert probe.set_text(context, "Numbers: 1 2 3") == SUCCESS
    errno = SUCCESS
    for _ in range(40):
        errno = probe.call("compute_single", context)
        if errno != SUCCESS:
            break
    assert errno == CONTEXT_FULL


def test_a_guest_without_memory_gets_missing_memory(host: Host) -> None:
    wat = """(module
      (import "wasi_ephemeral_nn" "load_by_name" (func $f (param i32 i32 i32) (result i32)))
      (func (export "try") (result i32) (call $f (i32.const 0) (i32.const 7) (i32.const 8))))"""
    import wasmtime

    with host.instantiate(wasmtime.wat2wasm(wat)) as instance:
        assert instance.call("try") == 3


@pytest.mark.parametrize("config", [{"ctx-size": 10**9}, {"batch-size": 10**8}, {"threads": 100_000}])
def test_absurd_sizes_are_refused_before_llama_cpp_allocates(probe: Probe, config: dict) -> None:
    errno, graph = probe.load_by_name("default", config)
    assert errno == SUCCESS
    assert probe.call_out("init_execution_context", graph)[0] == INVALID_ARGUMENT
    assert any("the model's context length" in message or "4 per CPU core" in message for message in probe.instance.nn.errors)


def test_a_guests_config_tensor_reaches_parameter_watchers(probe: Probe) -> None:
    context = probe.context("default")
    seen: list[dict] = []
    probe.instance.nn.sessions[-1].watch(seen.append)
    assert probe.set_text(context, json.dumps({"temp": 0.3, "top-k": 40}), index=1) == SUCCESS
    assert seen == [{"temp": 0.3}]  # top-k was 40 already: only what changed
