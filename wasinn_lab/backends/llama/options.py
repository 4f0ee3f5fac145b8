"""The GGML backend's options: WasmEdge's kebab-case config keys, their types, defaults,
ranges and what a change to each one costs (a model reload, a new llama context, or
nothing until the next generation). The defaults are WasmEdge's plugin's (llama.cpp's
``common_params``) but where the README's "Where this differs from WasmEdge" says why not;
tests/test_defaults.py lists each against its source."""

from __future__ import annotations

import os

from ...options import Option, Options, Scope

__all__ = ["OPTIONS", "RANDOM_SEED"]

RANDOM_SEED = 0xFFFFFFFF  # llama.cpp's LLAMA_DEFAULT_SEED: a new seed every generation
_CORES = os.cpu_count() or 1

OPTIONS = Options(
    (
        Option("n-gpu-layers", int, 0, Scope.MODEL, "layers offloaded to the GPU (a CPU build offloads none)",
               minimum=-1, soft_maximum=1024, step=1, panel=True, special={-1: "all"}, aliases=("ngl",)),
        Option("main-gpu", int, 0, Scope.MODEL, "the GPU that holds the model when one GPU is used", minimum=0),
        Option("use-mmap", bool, True, Scope.MODEL, "map the model file instead of reading it into memory"),
        Option("ctx-size", int, 0, Scope.CONTEXT, "tokens the context (KV cache) holds; 0: the model's own length",
               minimum=0, soft_maximum=32768, step=256, panel=True),
        Option("batch-size", int, 2048, Scope.CONTEXT, "prompt tokens evaluated per llama_decode", minimum=1),
        Option("ubatch-size", int, 512, Scope.CONTEXT, "physical batch size llama.cpp computes at once", minimum=1),
        Option("threads", int, _CORES, Scope.CONTEXT, "CPU threads for decoding",
               minimum=1, soft_maximum=_CORES, step=1, panel=True),
        Option("embedding", bool, False, Scope.CONTEXT, "compute a pooled embedding instead of generating text"),
        Option("flash-attn", str, "auto", Scope.CONTEXT, "flash attention: on, off, or auto (llama.cpp decides)",
               choices=("auto", "on", "off")),
        Option("n-predict", int, -1, Scope.GENERATION, "tokens to generate at most",
               minimum=-1, soft_maximum=4096, step=1, panel=True, special={-1: "no limit"}),
        Option("temp", float, 0.8, Scope.GENERATION, "sampling temperature; 0: greedy",
               minimum=0.0, soft_maximum=2.0, step=0.05, panel=True),
        Option("top-p", float, 0.95, Scope.GENERATION, "nucleus sampling: keep the likeliest tokens up to this mass",
               minimum=0.0, maximum=1.0, step=0.01, panel=True),
        Option("top-k", int, 40, Scope.GENERATION, "keep the k likeliest tokens; 0: all",
               minimum=0, soft_maximum=200, step=1, panel=True),
        Option("min-p", float, 0.05, Scope.GENERATION, "drop tokens less likely than this times the likeliest",
               minimum=0.0, maximum=1.0, step=0.01, panel=True),
        Option("repeat-penalty", float, 1.0, Scope.GENERATION, "penalty for the tokens of the last last-n-penalty; 1: none",
               minimum=0.0, soft_maximum=2.0, step=0.05, panel=True),
        Option("presence-penalty", float, 0.0, Scope.GENERATION, "subtracted from the logit of each recent token"),
        Option("frequency-penalty", float, 0.0, Scope.GENERATION, "subtracted per occurrence of each recent token"),
        Option("last-n-penalty", int, 64, Scope.GENERATION, "how many recent tokens the penalties look at; -1: the context",
               minimum=-1, special={-1: "the context"}),
        Option("typ-p", float, 1.0, Scope.GENERATION, "locally typical sampling; 1: off", minimum=0.0, maximum=1.0),
        Option("min-keep", int, 0, Scope.GENERATION, "tokens top-p, min-p, typ-p and XTC keep at least", minimum=0),
        Option("xtc-probability", float, 0.0, Scope.GENERATION, "XTC: chance of removing the top choices; 0: off",
               minimum=0.0, maximum=1.0),
        Option("xtc-threshold", float, 0.1, Scope.GENERATION, "XTC: choices above this probability are removed; above 0.5: off",
               minimum=0.0, maximum=1.0),
        Option("dynatemp-range", float, 0.0, Scope.GENERATION, "dynamic temperature: temp plus or minus this; 0: off",
               minimum=0.0),
        Option("dynatemp-exponent", float, 1.0, Scope.GENERATION, "dynamic temperature's exponent", minimum=0.0),
        Option("dry-multiplier", float, 0.0, Scope.GENERATION, "DRY repetition penalty; 0: off", minimum=0.0,
               aliases=("dry-multipier",)),  # WasmEdge's spelling
        Option("dry-base", float, 1.75, Scope.GENERATION, "DRY: the penalty grows as this to the repeat's length",
               minimum=0.0),
        Option("dry-allowed-length", int, 2, Scope.GENERATION, "DRY: repeats up to this long go free", minimum=0),
        Option("dry-last-n-penalty", int, 64, Scope.GENERATION, "DRY: how many recent tokens it scans; -1: the context",
               minimum=-1, special={-1: "the context"}),
        Option("mirostat", int, 0, Scope.GENERATION, "Mirostat sampling: 0 off, 1, or 2 (Mirostat 2.0)",
               minimum=0, maximum=2, choices=(0, 1, 2)),
        Option("mirostat-tau", float, 5.0, Scope.GENERATION, "Mirostat: the target entropy", minimum=0.0),
        Option("mirostat-eta", float, 0.1, Scope.GENERATION, "Mirostat: the learning rate", minimum=0.0),
        Option("ignore-eos", bool, False, Scope.GENERATION, "never end by the model's own end of generation"),
        Option("seed", int, RANDOM_SEED, Scope.GENERATION, "the sampler's seed",
               minimum=0, maximum=RANDOM_SEED, soft_maximum=RANDOM_SEED, step=1, panel=True,
               special={RANDOM_SEED: "random"}),
        Option("reverse-prompt", str, "", Scope.GENERATION, "stop once the text contains this"),
        Option("grammar", str, "", Scope.GENERATION, "a GBNF grammar the text must follow"),
        Option("json-schema", str, "", Scope.GENERATION, "a JSON schema the text must follow (as a grammar)"),
        # Ours, after llama.cpp server's option: false re-evaluates the whole prompt every
        # time, as WasmEdge does (the chat benchmark's baseline).
        Option("cache-prompt", bool, True, Scope.GENERATION,
               "keep the KV cache between prompts: a prompt that extends the last one evaluates only its new tokens"),
        # Ours: decode the token just handed out on the compute thread, while the guest
        # works on it. auto: where the model runs on a GPU (on the CPU the two compete
        # for the same cores).
        Option("decode-ahead", str, "auto", Scope.GENERATION,
               "decode each token while the guest handles it: on, off, or auto (on when layers run on a GPU)",
               choices=("auto", "on", "off")),
        # Ours: what llama-cpp-python's completion calls `logprobs`, recorded per token.
        Option("logprobs", int, 0, Scope.GENERATION,
               "record each token's log-probability, rank, entropy and this many likeliest alternatives; 0: off",
               minimum=0, soft_maximum=20, step=1),
        Option("enable-log", bool, False, Scope.GENERATION, "print llama.cpp's log to stderr"),
        Option("enable-debug-log", bool, False, Scope.GENERATION, "print llama.cpp's debug log too"),
    )
)
