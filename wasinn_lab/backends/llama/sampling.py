"""The sampler a generation samples with, built from its options: llama.cpp's own chain,
in the order llama.cpp's tools build it (penalties, DRY, top-k, typical, top-p, min-p,
XTC, temperature; or Mirostat), with one change where it is exact.

llama.cpp's penalties sampler looks up every candidate of the vocabulary in its table of
recent tokens, every token: 262,144 lookups for Gemma 3, about 1 ms a token, although
only the window's tokens (64 by default) can change. The repeat penalty is therefore
applied here, before the chain, to the window's logits alone, with llama.cpp's own
arithmetic (a float32 multiply or divide each, the same operation on the same value);
the chain then samples from logits it would itself have made. Frequency and presence
penalties (a multiply-add, which the compiler may fuse) stay with llama.cpp's sampler.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import _internals
from llama_cpp.llama_grammar import json_schema_to_gbnf

from ...errors import InvalidArgument
from .native import NativeContext
from .weights import Weights

__all__ = ["Sampler", "make_sampler"]

_DRY_BREAKERS = ("\n", ":", '"', "*")  # llama.cpp's defaults


class Sampler:
    """Samples the next token from a row of a context's logits; ``close`` frees it."""

    def __init__(self, chain: _internals.LlamaSampler, n_vocab: int, window: int, repeat_penalty: float) -> None:
        self._chain = chain
        self._n_vocab = n_vocab
        self._penalty = np.float32(repeat_penalty)
        self._recent: deque[int] | None = deque(maxlen=window) if window and repeat_penalty != 1.0 else None

    def sample(self, native: NativeContext, row: int) -> int:
        """The next token from the logits of batch row ``row`` (-1: the last row)."""
        recent = self._recent
        if recent:
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(native.ctx, row), (self._n_vocab,))
            tokens = np.unique(np.fromiter(recent, dtype=np.int64, count=len(recent)))
            values = logits[tokens]
            logits[tokens] = np.where(values <= 0, values * self._penalty, values / self._penalty)
        token: int = self._chain.sample(native, row)  # type: ignore[arg-type]  # it reads only `.ctx`, which ours has
        if recent is not None:
            recent.append(token)
        return token

    def close(self) -> None:
        self._chain.close()


def make_sampler(weights: Weights, config: Mapping[str, Any], n_ctx: int, *, window_penalty: bool = True) -> Sampler:
    """The generation's sampler. ``window_penalty=False``: llama.cpp's chain as its
    tools build it, penalties included (the benchmarks' floor)."""
    chain = _internals.LlamaSampler()
    try:
        window = _window(config["last-n-penalty"], n_ctx)
        repeat = config["repeat-penalty"]
        ours = window_penalty and config["frequency-penalty"] == 0 and config["presence-penalty"] == 0
        _build(chain, weights, config, n_ctx, window, penalties=not ours)
    except BaseException:
        chain.close()
        raise
    return Sampler(chain, weights.n_vocab, window, repeat) if ours else Sampler(chain, weights.n_vocab, 0, 1.0)


def _window(last_n: int, n_ctx: int) -> int:
    return n_ctx if last_n < 0 else last_n


def _build(chain: _internals.LlamaSampler, weights: Weights, config: Mapping[str, Any], n_ctx: int,
           window: int, *, penalties: bool) -> None:
    if config["ignore-eos"]:
        chain.add_logit_bias(weights.n_vocab, dict.fromkeys(weights.end_of_generation_tokens, float("-inf")))
    grammar = config["grammar"]
    if config["json-schema"]:
        try:
            grammar = json_schema_to_gbnf(config["json-schema"])
        except (ValueError, KeyError, TypeError, AssertionError) as exc:  # it asserts on an unknown "type"
            raise InvalidArgument(f"json-schema is not a usable JSON schema: {exc}") from exc
    if grammar:
        # Not LlamaSampler.add_grammar: it chains llama.cpp's NULL for a grammar that does not
        # parse, and the first sample then crashes the process.
        sampler = llama_cpp.llama_sampler_init_grammar(weights.vocab, grammar.encode(), b"root")
        if not sampler:
            raise InvalidArgument(f"grammar does not parse (GBNF with a `root` rule): {grammar[:200]!r}")
        llama_cpp.llama_sampler_chain_add(chain.sampler, sampler)
    if penalties:
        chain.add_penalties(weights.n_vocab, window, config["repeat-penalty"], config["frequency-penalty"],
                            config["presence-penalty"])
    if config["dry-multiplier"] > 0:
        chain.add_dry(weights.native, config["dry-multiplier"], config["dry-base"], config["dry-allowed-length"],
                      _window(config["dry-last-n-penalty"], n_ctx), list(_DRY_BREAKERS))
    temp, seed, keep = config["temp"], config["seed"], config["min-keep"]
    if temp <= 0:
        chain.add_greedy()
    elif config["mirostat"] == 1:
        chain.add_temp(temp)
        chain.add_mirostat(weights.n_vocab, seed, config["mirostat-tau"], config["mirostat-eta"], 100)
    elif config["mirostat"] == 2:
        chain.add_temp(temp)
        chain.add_mirostat_v2(seed, config["mirostat-tau"], config["mirostat-eta"])
    else:
        chain.add_top_k(config["top-k"])
        if config["typ-p"] < 1.0:
            chain.add_typical(config["typ-p"], keep)
        chain.add_top_p(config["top-p"], keep)
        chain.add_min_p(config["min-p"], keep)
        if config["xtc-probability"] > 0:
            chain.add_xtc(config["xtc-probability"], config["xtc-threshold"], keep, seed)
        if config["dynatemp-range"] > 0:
            chain.add_temp_ext(temp, config["dynatemp-range"], config["dynatemp-exponent"])
        else:
            chain.add_temp(temp)
        chain.add_dist(seed)
