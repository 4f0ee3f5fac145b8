from __future__ import annotations

import pytest

from wasinn_lab import InvalidArgument
from wasinn_lab.backends.llama_options import DEFAULTS, normalize

ISSUE_KEYS = (
    "ctx-size n-predict n-gpu-layers batch-size ubatch-size threads temp top-p top-k min-p repeat-penalty "
    "presence-penalty frequency-penalty seed reverse-prompt stream-stdout enable-log embedding grammar "
    "json-schema main-gpu use-mmap"
).split()


def test_every_documented_key_is_known() -> None:
    assert set(ISSUE_KEYS) <= DEFAULTS.keys()


def test_snake_case_spellings_of_other_runtimes_are_accepted() -> None:
    snake = {"ctx_size": 512, "n_gpu_layers": 0, "n_predict": 8, "temp": 0.5, "top_p": 0.9,
             "repeat_penalty": 1.2, "batch_size": 64, "threads": 2}
    assert normalize(snake) == {key.replace("_", "-"): value for key, value in snake.items()}


def test_unknown_keys_are_ignored() -> None:
    assert normalize({"mystery": 1, "n-predict": 3}) == {"n-predict": 3}


def test_numbers_are_checked_like_json() -> None:
    assert normalize({"temp": 1}) == {"temp": 1.0}  # an int is a fine float
    assert normalize({"ctx-size": 0}) == {"ctx-size": 0}  # 0: the model's own context length
    for bad in ({"ctx-size": 1.5}, {"ctx-size": True}, {"temp": "hot"}, {"embedding": 1}, {"grammar": 3}):
        with pytest.raises(InvalidArgument, match="must be"):
            normalize(bad)


@pytest.mark.parametrize("bad", [{"threads": 0}, {"ctx-size": -1}, {"temp": -0.5}, {"n-predict": -2}])
def test_out_of_range_values_are_invalid(bad: dict) -> None:
    with pytest.raises(InvalidArgument, match="must be at least"):
        normalize(bad)
