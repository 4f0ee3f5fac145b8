"""The sampler chain a generation samples with, built from its options."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llama_cpp import _internals
from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

from ...errors import InvalidArgument
from .weights import Weights

__all__ = ["make_sampler", "PENALTY_LAST_N"]

PENALTY_LAST_N = 64


def make_sampler(weights: Weights, config: Mapping[str, Any]) -> _internals.LlamaSampler:
    sampler = _internals.LlamaSampler()
    grammar = config["grammar"]
    if config["json-schema"]:
        try:
            grammar = json_schema_to_gbnf(config["json-schema"])
        except (ValueError, KeyError, TypeError) as exc:
            sampler.close()
            raise InvalidArgument(f"json-schema is not a usable JSON schema: {exc}") from exc
    if grammar:
        try:
            sampler.add_grammar(weights.native, LlamaGrammar.from_string(grammar, verbose=False))
        except ValueError as exc:
            sampler.close()
            raise InvalidArgument(f"grammar does not parse: {exc}") from exc
    sampler.add_penalties(
        weights.n_vocab,
        PENALTY_LAST_N,
        config["repeat-penalty"],
        config["frequency-penalty"],
        config["presence-penalty"],
    )
    if config["temp"] <= 0:
        sampler.add_greedy()
    else:
        sampler.add_top_k(config["top-k"])
        sampler.add_top_p(config["top-p"], 1)
        sampler.add_min_p(config["min-p"], 1)
        sampler.add_temp(config["temp"])
        sampler.add_dist(config["seed"])
    return sampler
