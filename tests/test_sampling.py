"""Sampling on the GGML backend: the repeat penalty applied to the window's tokens alone
makes exactly llama.cpp's tokens, and WasmEdge's sampling keys each do what llama.cpp's
samplers do."""

from __future__ import annotations

import logging
from typing import Any

import llama_cpp
import pytest
from conftest import GREEDY, Probe

from wasinn_lab import ConfigError, Host, InvalidArgument, Tensor, TensorType
from wasinn_lab.backends.llama.native import NativeContext
from wasinn_lab.backends.llama.options import OPTIONS
from wasinn_lab.backends.llama.sampling import make_sampler
from wasinn_lab.backends.llama.weights import Weights

PROMPT = b"The history of the city begins with"


def tokens(llama: tuple[Weights, NativeContext], settings: dict[str, Any], n: int, *, window_penalty: bool) -> list[int]:
    weights, native = llama
    config = {**OPTIONS.defaults, **settings}
    prompt = weights.tokenize(PROMPT)
    native.clear()
    native.decode(prompt, 0)
    sampler = make_sampler(weights, config, native.n_ctx, window_penalty=window_penalty)
    out: list[int] = []
    try:
        while len(out) < n:
            token = sampler.sample(native)
            out.append(token)
            native.decode([token], len(prompt) + len(out) - 1)
    finally:
        sampler.close()
    return out


SETTINGS = [
    {"temp": 0.8, "seed": 1, "repeat-penalty": 1.1},  # over the default window, 64
    {"temp": 0.0, "repeat-penalty": 1.3},
    {"temp": 1.2, "seed": 2, "repeat-penalty": 1.5, "last-n-penalty": 16, "top-k": 0, "top-p": 1.0, "min-p": 0.0},
    {"temp": 0.7, "seed": 3, "repeat-penalty": 0.9, "last-n-penalty": -1},  # below 1, the whole context
    {"temp": 0.8, "seed": 5, "grammar": 'root ::= ([a-z ]+ "." " "?)+'},
]


@pytest.mark.parametrize("settings", SETTINGS, ids=[str(i) for i in range(len(SETTINGS))])
def test_the_window_penalty_makes_llama_cpps_tokens(llama: tuple[Weights, NativeContext], settings: dict[str, Any]) -> None:
    ours = tokens(llama, settings, 200, window_penalty=True)
    assert ours == tokens(llama, settings, 200, window_penalty=False)
    assert len(set(ours)) > 20  # a real generation, not one token over and over


def generate(host: Host, config: dict[str, Any], n: int = 32, prompt: bytes = PROMPT) -> str:
    with host.open_session("default", {"n-predict": n, **config}) as session:
        session.set_input("prompt", Tensor((1,), TensorType.U8, prompt))
        session.compute()
        return session.get_output("text").data.decode()


@pytest.mark.parametrize(("key", "value"), [
    ("typ-p", 0.3), ("xtc-probability", 1.0), ("dynatemp-range", 1.5), ("mirostat", 2), ("mirostat", 1),
    ("dry-multiplier", 2.0),
])
def test_each_wasmedge_key_changes_what_is_sampled(host: Host, key: str, value: object) -> None:
    base = {"temp": 0.8, "seed": 11, "repeat-penalty": 1.0}
    # DRY penalises a repeat only once it runs longer than dry-allowed-length: give it one.
    prompt = b"red green blue red green blue red green blue red green" if key.startswith("dry") else PROMPT
    plain = generate(host, base, prompt=prompt)
    assert generate(host, base, prompt=prompt) == plain  # the seed fixes it
    assert generate(host, {**base, key: value}, prompt=prompt) != plain


def test_wasmedge_spellings_and_bad_values(host: Host) -> None:
    base = {"temp": 0.8, "seed": 11, "n-predict": 8}
    assert generate(host, {**base, "dry-multipier": 2.0}) == generate(host, {**base, "dry-multiplier": 2.0})
    assert generate(host, {**base, "dry_multiplier": 2.0}) == generate(host, {**base, "dry-multiplier": 2.0})
    with pytest.raises(ConfigError, match="mirostat"):
        generate(host, {"mirostat": 3})
    with pytest.raises(ConfigError, match="typ-p"):
        generate(host, {"typ-p": 1.5})


def test_ignore_eos_never_samples_an_end_of_generation(llama: tuple[Weights, NativeContext]) -> None:
    weights, native = llama
    native.clear()
    native.decode(weights.tokenize(PROMPT), 0)
    logits = llama_cpp.llama_get_logits_ith(native.ctx, -1)
    end = weights.end_of_generation_tokens[0]
    logits[end] = 1e4  # the model all but certain to end here
    for ignore, ends in ((False, True), (True, False)):
        sampler = make_sampler(weights, {**OPTIONS.defaults, **GREEDY, "ignore-eos": ignore}, native.n_ctx)
        try:
            assert weights.is_end_of_generation(sampler.sample(native)) is ends
        finally:
            sampler.close()


def test_a_key_this_backend_does_not_know_is_named_in_the_log(probe: Probe, caplog: pytest.LogCaptureFixture) -> None:
    # A guest's config JSON: WasmEdge accepts keys it does not know, so the host does too, saying so.
    with caplog.at_level(logging.INFO):
        probe.context("default", {"top-n-sigma": 1.0})
    assert "'top-n-sigma' is not an option of this backend; ignored" in caplog.text


def test_a_json_schema_of_an_unknown_type_is_an_invalid_argument(llama: tuple[Weights, NativeContext]) -> None:
    """Found by the WIT fuzzer: llama-cpp-python's converter asserts on a type it does not
    know, and the AssertionError escaped the error tree (a host bug: runtime-error)."""
    weights, native = llama
    with pytest.raises(InvalidArgument, match="json-schema is not a usable JSON schema: Unrecognized schema"):
        make_sampler(weights, {**OPTIONS.defaults, "json-schema": '{"type": "nope"}'}, native.n_ctx)


@pytest.mark.parametrize("grammar", ["hot", "\n", "root ::= ("])
def test_a_grammar_that_does_not_parse_is_an_invalid_argument(llama: tuple[Weights, NativeContext], grammar: str) -> None:
    """Found by the WIT fuzzer: llama-cpp-python chained llama.cpp's NULL sampler for such a
    grammar, and the first sample crashed the process (a segmentation fault)."""
    weights, native = llama
    with pytest.raises(InvalidArgument, match="grammar does not parse"):
        make_sampler(weights, {**OPTIONS.defaults, "grammar": grammar}, native.n_ctx)
