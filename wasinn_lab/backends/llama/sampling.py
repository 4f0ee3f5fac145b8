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

import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import _internals
from llama_cpp.llama_grammar import json_schema_to_gbnf

from ...errors import InvalidArgument
from ..base import NextTokenDistribution, TokenDetails
from .logprobs import Candidates, likeliest, model_distribution, token_details
from .native import NativeContext
from .weights import Weights

__all__ = ["Sampler", "make_sampler"]

_DRY_BREAKERS = ("\n", ":", '"', "*")  # llama.cpp's defaults


class Sampler:
    """Samples the next token from a row of a context's logits; ``close`` frees it. With
    ``logprobs`` K, each token's details (``details``) come too, its K likeliest
    alternatives among them."""

    def __init__(self, chain: _internals.LlamaSampler, n_vocab: int, window: int, repeat_penalty: float,
                 *, logprobs: int = 0, greedy: bool = False, piece: Callable[[int], bytes] | None = None) -> None:
        self._chain = chain
        self._selected = _SelectedReader()
        if logprobs:
            chain.add_custom(self._selected)
        self._n_vocab = n_vocab
        self._penalty = np.float32(repeat_penalty)
        self._recent: deque[int] | None = deque(maxlen=window) if window and repeat_penalty != 1.0 else None
        self._logprobs = logprobs
        self._greedy = greedy  # the chain ends in argmax, which leaves the candidates' p unset
        self._piece = piece
        self._texts: dict[int, str] = {}
        self._candidates: Candidates | None = None
        self.details: TokenDetails | None = None  # the latest token's, with logprobs on

    def _row(self, native: NativeContext, row: int) -> np.ndarray:
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(native.ctx, row), (self._n_vocab,))

    def sample(self, native: NativeContext, row: int) -> int:
        """The next token from the logits of batch row ``row`` (-1: the last row)."""
        if self._recent or self._logprobs:
            token = self._sample_row(native, row, self._row(native, row))
        else:
            token = self._chain.sample(native, row)  # type: ignore[arg-type]  # it reads only `.ctx`, which ours has
        if self._recent is not None:
            self._recent.append(token)
        return token

    def _sample_row(self, native: NativeContext, row: int, logits: np.ndarray) -> int:
        """With the window's penalty, or logprobs: the model's own distribution is read
        before the penalty changes the row (and the row is put back after), the chain's
        probability of its token by the chain's last sampler."""
        model = model_distribution(logits, self._logprobs) if self._logprobs else None
        penalized = _penalize(logits, self._recent, self._penalty) if self._recent else None
        token = self._chain.sample(native, row)  # type: ignore[arg-type]
        if model is not None:
            if penalized is not None:
                logits[penalized[0]] = penalized[1]
            probability = 1.0 if self._greedy else self._selected.probability
            self.details = token_details(model, logits, token, probability, self._text)
        return token

    def _fill_candidates(self, row: np.ndarray) -> Candidates:
        if self._candidates is None:
            self._candidates = Candidates(self._n_vocab)
        logits = self._candidates.fill(row)
        if self._recent:
            _penalize(logits, self._recent, self._penalty)
        return self._candidates

    def remember(self, tokens: list[int]) -> None:
        """Count ``tokens`` as generated before (the repeat penalty's window)."""
        if self._recent is not None:
            self._recent.extend(tokens)

    def distribution(self, row: np.ndarray, k: int) -> NextTokenDistribution:
        """The ``k`` likeliest tokens for ``row`` before the chain and after it; nothing is
        accepted, so the chain's state (a grammar's) stays where it is."""
        model = model_distribution(row, k)
        before = [(self._text(int(i)), math.exp(float(row[i]) - model.log_normalizer)) for i in model.top]
        kept, selected = self._fill_candidates(row).apply(self._chain.sampler)
        if self._greedy:
            return NextTokenDistribution(before, [(self._text(int(kept[selected]["id"])), 1.0)])
        probabilities = kept["p"] / kept["p"].sum(dtype=np.float64)
        return NextTokenDistribution(before, likeliest(kept["id"], probabilities, k, self._text))

    def _text(self, token: int) -> str:
        text = self._texts.get(token)
        if text is None:
            piece = self._piece(token) if self._piece is not None else b""
            text = self._texts[token] = piece.decode("utf-8", "replace")
        return text

    def close(self) -> None:
        self._chain.close()


def _penalize(logits: np.ndarray, recent: deque[int], penalty: np.float32) -> tuple[np.ndarray, np.ndarray]:
    """llama.cpp's repeat penalty, on the logits of the window's tokens alone; the tokens
    and their logits before it."""
    tokens = np.unique(np.fromiter(recent, dtype=np.int64, count=len(recent)))
    values = logits[tokens]
    logits[tokens] = np.where(values <= 0, values * penalty, values / penalty)
    return tokens, values


class _SelectedReader:
    """The last sampler of a chain with logprobs on: llama_sampler_sample throws the
    candidates away, so it reads the probability the chain gave the token it selected
    (filling a candidate array of the whole vocabulary by hand instead cost 0.4 ms a token)."""

    def __init__(self) -> None:
        self.probability = math.nan

    def __call__(self, candidates: Any) -> None:  # a llama_token_data_array pointer
        array = candidates.contents
        self.probability = float(array.data[array.selected].p) if 0 <= array.selected < array.size else math.nan


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
    window, repeat = (window, repeat) if ours else (0, 1.0)
    return Sampler(chain, weights.n_vocab, window, repeat, logprobs=config["logprobs"], greedy=config["temp"] <= 0,
                   piece=weights.piece)


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
