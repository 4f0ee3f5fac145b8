"""What a token's distribution says (the option ``logprobs``): the model's own
distribution over the vocabulary (its log-probabilities, entropy and likeliest tokens),
and the sampler chain's, which llama.cpp's ``llama_sampler_sample`` computes and throws
away. ``Candidates`` applies a chain as that function does, by hand, so that all the
chain's candidates can be read (the distribution of a next token that is not sampled);
a sampled token's probability is read by a last sampler in the chain (``sampling.py``).

A row is the model's logits for one position, a float32 array of n_vocab. On Gemma 3's
262,144 tokens a softmax is about 0.2 ms: the likeliest K are found among the likeliest
blocks (see ``top_ids``) rather than by a partition of the whole row.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable
from typing import NamedTuple

import llama_cpp
import numpy as np

from ...errors import BackendError
from ..base import TokenDetails

__all__ = ["ModelDistribution", "model_distribution", "top_ids", "Candidates", "token_details", "likeliest"]

_BLOCK = 256  # values per block in top_ids: 1,024 blocks for Gemma 3's vocabulary
_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])  # llama_token_data
assert _TOKEN_DATA.itemsize == ctypes.sizeof(llama_cpp.llama_token_data)


class ModelDistribution(NamedTuple):
    """The model's distribution at one position, before any sampler."""

    log_normalizer: float  # log of the sum of exp(logit): a token's logprob is its logit less this
    entropy: float  # nats
    top: np.ndarray  # the ids of the K likeliest tokens, likeliest first


def model_distribution(row: np.ndarray, k: int) -> ModelDistribution:
    peak = float(row.max())
    shifted = row - np.float32(peak)
    weights = np.exp(shifted)
    total = float(weights.sum())
    with np.errstate(invalid="ignore"):
        mean_shifted = float(np.dot(weights, shifted)) / total
    if math.isnan(mean_shifted):  # a logit of -inf: exp gives 0, and 0 * -inf is NaN; such a token adds nothing
        finite = weights > 0
        mean_shifted = float(np.dot(weights[finite], shifted[finite])) / total
    log_total = math.log(total)
    # H = -sum(p log p), with log p = shifted - log_total and sum(p) = 1.
    return ModelDistribution(peak + log_total, log_total - mean_shifted, top_ids(row, k))


def top_ids(values: np.ndarray, k: int) -> np.ndarray:
    """The indexes of the ``k`` largest values, largest first. Each of the k largest lies
    in a block whose maximum is at least the k-th largest value, and there are at most k
    such blocks: a partition of the maxima of blocks, then of k blocks, instead of one of
    the whole row."""
    k = min(k, len(values))
    if k <= 0:
        return np.empty(0, dtype=np.intp)
    n_blocks = len(values) // _BLOCK
    if n_blocks <= k:
        candidates = np.arange(len(values))
    else:
        blocks = values[: n_blocks * _BLOCK].reshape(n_blocks, _BLOCK)
        best_blocks = np.argpartition(blocks.max(axis=1), -k)[-k:]
        candidates = (best_blocks[:, None] * _BLOCK + np.arange(_BLOCK)).ravel()
        candidates = np.concatenate((candidates, np.arange(n_blocks * _BLOCK, len(values))))
    picked = candidates[np.argpartition(values[candidates], -k)[-k:]] if len(candidates) > k else candidates
    return picked[np.lexsort((picked, -values[picked].astype(np.float64)))]


def token_details(model: ModelDistribution, row: np.ndarray, token: int, probability: float,
                  text: Callable[[int], str]) -> TokenDetails:
    """The details of ``token`` drawn at ``probability`` from a chain's candidates."""
    log_normalizer = model.log_normalizer
    logit = row[token]
    top = model.top
    matches = np.flatnonzero(top == token)
    rank = int(matches[0]) + 1 if len(matches) else int(np.count_nonzero(row > logit)) + 1
    return TokenDetails(
        logprob=float(logit) - log_normalizer,
        probability=probability,
        rank=rank,
        entropy=model.entropy,
        top=tuple((text(int(i)), float(row[i]) - log_normalizer) for i in top),
    )


class Candidates:
    """A llama_token_data array of the whole vocabulary, made once per sampler and filled
    from a row for each token, as llama_sampler_sample fills its own."""

    def __init__(self, n_vocab: int) -> None:
        self._data = np.zeros(n_vocab, dtype=_TOKEN_DATA)
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._pointer = self._data.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data))
        self._array = llama_cpp.llama_token_data_array(data=self._pointer, size=n_vocab, selected=-1, sorted=False)

    def fill(self, row: np.ndarray) -> np.ndarray:
        """The candidates' logits, set from ``row`` (each at its token's index, until the
        chain is applied): what a penalty before the chain changes."""
        data = self._data
        data["id"] = self._ids
        data["logit"] = row
        data["p"] = 0.0
        return data["logit"]

    def apply(self, chain: llama_cpp.llama_sampler_p) -> tuple[np.ndarray, int]:
        """Apply ``chain`` to the candidates as filled; returns the candidates it kept
        (id, logit, p) and the index of the one it selected."""
        array = self._array
        array.data = self._pointer  # type: ignore[assignment]  # a pointer field, which llama-cpp-python types as an array
        array.size, array.selected, array.sorted = len(self._data), -1, False
        llama_cpp.llama_sampler_apply(chain, ctypes.byref(array))
        # A sampler may shrink the array, reorder it, or (llama.cpp allows it) point it elsewhere.
        kept = np.ctypeslib.as_array(ctypes.cast(array.data, ctypes.POINTER(ctypes.c_uint8)),
                                     (array.size * _TOKEN_DATA.itemsize,)).view(_TOKEN_DATA)
        selected = array.selected
        if not 0 <= selected < len(kept):
            raise BackendError(f"llama.cpp's sampler chain selected no candidate ({selected} of {len(kept)})")
        return kept, selected


def likeliest(ids: np.ndarray, probabilities: np.ndarray, k: int,
              text: Callable[[int], str]) -> list[tuple[str, float]]:
    """The ``k`` likeliest of these tokens as (text, probability), likeliest first."""
    order = top_ids(probabilities, k)
    return [(text(int(ids[i])), float(probabilities[i])) for i in order]
