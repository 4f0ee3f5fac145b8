"""The GGML backend's defaults against WasmEdge's GGML plugin: a guest that sends no value
for an option gets WasmEdge's, so an unmodified WasmEdge guest samples the same text here
as there. Where this host differs on purpose, the README's "Where this differs from
WasmEdge, and why" says so.

The plugin (WasmEdge d516c5d, plugins/wasi_nn/GGML/) starts every graph from llama.cpp's
``common_params``, ``common_params_sampling`` and ``llama_model_default_params()``
(core/ggml_core.cpp:59-77) and overrides only what a guest's config names
(metadata/metadata_parser.cpp). Its llama.cpp is a29e4c0 (b8757, cmake/WASINNDeps.cmake:344);
the llama.cpp lines cited are those of 0c1e570, the version llama-cpp-python 0.3.36 vendors
and this host runs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from wasinn_lab import Host, Tensor, TensorType
from wasinn_lab.backends.llama.options import OPTIONS, RANDOM_SEED
from wasinn_lab.errors import PromptTooLong
from wasinn_lab.models import DEFAULT_CONFIG, default_model_path

README = Path(__file__).resolve().parents[1] / "README.md"
NOT_IN_WASMEDGE = object()  # an option of ours that WasmEdge's plugin does not have


@dataclass(frozen=True)
class Default:
    option: str
    ours: Any
    wasmedge: Any
    source: str
    differs_because: str = ""  # a deliberate difference, which the README names


PLUGIN = "WasmEdge plugins/wasi_nn/GGML/core/ggml_core.cpp"
COMMON = "llama.cpp common/common.h"
SAMPLING = "llama.cpp common/common.h, common_params_sampling"

DEFAULTS = [
    # Model-level settings.
    Default("n-gpu-layers", 0, -1, f"{PLUGIN}:70-71 (llama_model_default_params); llama.cpp src/llama-model.cpp:2913",
            "every layer on the GPU, unfitted, fails to load where the model is larger than the free GPU memory"),
    Default("main-gpu", 0, 0, f"{COMMON}:476"),
    Default("use-mmap", True, True, f"{COMMON}:486 (load_mode AUTO: mmap, src/llama-model-loader.cpp:559)"),
    # Context-level settings.
    Default("ctx-size", 0, 0, f"{COMMON}:452 (0: the model's own length)"),
    Default("batch-size", 2048, 2048, f"{COMMON}:453"),
    Default("ubatch-size", 512, 512, f"{COMMON}:454"),
    Default("threads", os.cpu_count() or 1, 4,
            f"{PLUGIN}:150 passes common_cpu_params' -1 ({COMMON}:71); ggml then runs GGML_DEFAULT_N_THREADS, 4 "
            "(ggml.h:232)", "4 threads on 2 cores made 0.4 tokens/s here, 2 threads 73"),
    Default("embedding", False, False, f"{COMMON}:615"),
    Default("flash-attn", "auto", "auto", f"{COMMON}:501"),
    # Generation settings.
    Default("n-predict", -1, -1, f"{PLUGIN}:82 (Conf.NPredict = Params.n_predict); {COMMON}:451"),
    Default("temp", 0.8, 0.8, f"{SAMPLING}:238"),
    Default("top-p", 0.95, 0.95, f"{SAMPLING}:233"),
    Default("top-k", 40, 40, f"{SAMPLING}:232"),
    Default("min-p", 0.05, 0.05, f"{SAMPLING}:234"),
    Default("repeat-penalty", 1.0, 1.0, f"{SAMPLING}:242"),
    Default("presence-penalty", 0.0, 0.0, f"{SAMPLING}:244"),
    Default("frequency-penalty", 0.0, 0.0, f"{SAMPLING}:243"),
    Default("last-n-penalty", 64, 64, f"{SAMPLING}:241"),
    Default("typ-p", 1.0, 1.0, f"{SAMPLING}:237"),
    Default("min-keep", 0, 0, f"{SAMPLING}:231"),
    Default("xtc-probability", 0.0, 0.0, f"{SAMPLING}:235"),
    Default("xtc-threshold", 0.1, 0.1, f"{SAMPLING}:236"),
    Default("dynatemp-range", 0.0, 0.0, f"{SAMPLING}:239"),
    Default("dynatemp-exponent", 1.0, 1.0, f"{SAMPLING}:240"),
    Default("dry-multiplier", 0.0, 0.0, f"{SAMPLING}:245"),
    Default("dry-base", 1.75, 1.75, f"{SAMPLING}:246"),
    Default("dry-allowed-length", 2, 2, f"{SAMPLING}:247"),
    Default("dry-last-n-penalty", 64, 64, f"{SAMPLING}:248"),
    Default("mirostat", 0, 0, f"{SAMPLING}:251"),
    Default("mirostat-tau", 5.0, 5.0, f"{SAMPLING}:253"),
    Default("mirostat-eta", 0.1, 0.1, f"{SAMPLING}:254"),
    Default("ignore-eos", False, False, f"{SAMPLING}:255"),
    Default("seed", RANDOM_SEED, RANDOM_SEED, f"{SAMPLING}:227 (LLAMA_DEFAULT_SEED, include/llama.h:37)"),
    Default("reverse-prompt", "", "", f"{PLUGIN}:83"),
    Default("grammar", "", "", f"{SAMPLING}:275 (no grammar)"),
    Default("json-schema", "", "", "WasmEdge plugins/wasi_nn/GGML/metadata/metadata_parser.cpp:269-277 (none unless sent)"),
    Default("enable-log", False, False, f"{PLUGIN}:57"),
    Default("enable-debug-log", False, False, f"{PLUGIN}:58"),
    # Ours alone.
    Default("cache-prompt", True, NOT_IN_WASMEDGE, "ours, after llama.cpp server's option",
            "WasmEdge evaluates the whole prompt again every compute; a prompt that extends the last one costs its "
            "new tokens here"),
    Default("decode-ahead", "auto", NOT_IN_WASMEDGE, "ours",
            "decodes the next token while the guest handles this one, where the model runs on a GPU"),
    Default("logprobs", 0, NOT_IN_WASMEDGE, "ours, after llama-cpp-python's completion option `logprobs`",
            "records each token's log-probability, rank, entropy and likeliest alternatives; off by default"),
]


def differences_section() -> str:
    text = README.read_text()
    start = text.index("### Where this differs from WasmEdge, and why")
    return text[start : text.index("\n## ", start)]


def test_every_option_is_listed_with_its_source() -> None:
    listed = [d.option for d in DEFAULTS]
    assert len(listed) == len(set(listed)) and set(listed) == set(OPTIONS)
    for d in DEFAULTS:
        assert OPTIONS[d.option].default == d.ours, d.option
        assert d.source


def test_the_defaults_are_wasmedges_but_for_the_documented_differences() -> None:
    section = differences_section()
    for d in DEFAULTS:
        if d.differs_because:
            assert d.ours != d.wasmedge, f"{d.option}: listed as a difference, yet the same as WasmEdge's"
            assert f"`{d.option}`" in section, f"{d.option} differs from WasmEdge; the README does not say why"
        else:
            assert d.ours == d.wasmedge, f"{d.option}: ours {d.ours!r}, WasmEdge's {d.wasmedge!r} ({d.source})"


def test_the_bundled_models_own_settings_are_documented_differences() -> None:
    # A model a person registers or preloads gets WasmEdge's defaults; the bundled base
    # model is registered bounded.
    section = differences_section()
    for option in DEFAULT_CONFIG:
        assert re.search(rf"`{option}` {DEFAULT_CONFIG[option]}\b", section), option


def test_a_guest_that_sends_no_repeat_penalty_gets_none(host: Host) -> None:
    """WasmEdge applies no repeat penalty unless the guest sends one (greedy: 1.1 changes
    these 16 tokens)."""
    def text(config: dict[str, Any]) -> str:
        with host.open_session("default", {"n-predict": 16, "temp": 0, **config}) as session:
            session.set_input("prompt", Tensor((1,), TensorType.U8, b"The history of the city begins with"))
            session.compute()
            return session.get_output("text").data.decode()

    unpenalised = text({"repeat-penalty": 1.0})
    assert text({}) == unpenalised
    assert text({"repeat-penalty": 1.1}) != unpenalised


def test_an_embedding_on_a_model_registered_with_no_settings(host: Host) -> None:
    """ctx-size 0 is the model's whole length; the micro-batch an embedding needs is
    batch-size tokens, as WasmEdge takes, not a micro-batch of that length (which llama.cpp
    could not allocate)."""
    host.register("plain", default_model_path())
    try:
        with host.open_session("plain", {"embedding": True}) as session:
            session.set_input("prompt", Tensor((1,), TensorType.U8, b"Bananas are yellow."))
            session.compute()
            n_embd = int(host.properties("plain")["model"]["metadata"]["gemma3.embedding_length"])
            assert session.get_output("embedding").dims == (n_embd,)
        with host.open_session("plain", {"embedding": True, "batch-size": 4}) as session, \
                pytest.raises(PromptTooLong, match=r"at most batch-size \(4\): raise batch-size"):
            session.set_input("prompt", Tensor((1,), TensorType.U8, b"Bananas are yellow, and so is the sun."))
            session.compute()
    finally:
        host.registry.unregister("plain")
