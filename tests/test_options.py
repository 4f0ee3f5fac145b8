"""Option catalogues (``wasinn_lab.options``) and the GGML backend's, as guests send them."""

from __future__ import annotations

import logging

import pytest

from wasinn_lab import InvalidArgument
from wasinn_lab.abi.preview1 import _split_config
from wasinn_lab.backends.llama.options import OPTIONS, RANDOM_SEED

ISSUE_KEYS = [
    "ctx-size", "n-predict", "n-gpu-layers", "batch-size", "ubatch-size", "threads", "temp", "top-p", "top-k",
    "min-p", "repeat-penalty", "presence-penalty", "frequency-penalty", "seed", "reverse-prompt", "enable-log",
    "embedding", "grammar", "json-schema", "main-gpu", "use-mmap",
]


def test_every_documented_key_is_known() -> None:
    assert set(ISSUE_KEYS) <= OPTIONS.defaults.keys()
    # stream-stdout is WasmEdge's wire format, not the backend's: preview1 takes it out.
    assert _split_config(b'{"stream-stdout": true, "temp": 0.5}') == ({"temp": 0.5}, True)
    with pytest.raises(InvalidArgument, match="'stream-stdout' takes true or false"):
        _split_config(b'{"stream_stdout": 1}')


def test_snake_case_spellings_of_other_runtimes_are_accepted() -> None:
    snake = {"ctx_size": 512, "n_gpu_layers": 0, "n_predict": 8, "temp": 0.5, "top_p": 0.9,
             "repeat_penalty": 1.2, "batch_size": 64, "threads": 2}
    assert OPTIONS.normalize(snake) == {key.replace("_", "-"): value for key, value in snake.items()}


def test_unknown_keys_from_a_guest_are_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="wasinn_lab.options"):
        assert OPTIONS.normalize({"mystery": 1, "n-predict": 3}, source="guest x") == {"n-predict": 3}
    assert "guest x: 'mystery' is not an option" in caplog.text


def test_unknown_keys_from_a_person_are_errors() -> None:
    with pytest.raises(InvalidArgument, match="no option 'tmep'; the options are: n-gpu-layers"):
        OPTIONS.normalize({"tmep": 0.5}, strict=True)


def test_numbers_are_checked_like_json() -> None:
    assert OPTIONS.normalize({"temp": 1}) == {"temp": 1.0}  # an int is a fine float
    assert OPTIONS.normalize({"ctx-size": 512.0}) == {"ctx-size": 512}  # an integral float is a fine int
    assert OPTIONS.normalize({"ctx-size": 0}) == {"ctx-size": 0}  # 0: the model's own context length
    for bad, says in (({"ctx-size": 1.5}, "an integer"), ({"ctx-size": True}, "an integer"),
                      ({"temp": "hot"}, "a number"), ({"embedding": 1}, "true or false"), ({"grammar": 3}, "a string")):
        with pytest.raises(InvalidArgument, match=f"takes {says}"):
            OPTIONS.normalize(bad)


@pytest.mark.parametrize(("bad", "says"), [({"threads": 0}, "of at least 1"), ({"ctx-size": -1}, "of at least 0"),
                                           ({"temp": -0.5}, "of at least 0"), ({"n-predict": -2}, "of at least -1"),
                                           ({"top-p": 1.5}, "from 0 to 1")])
def test_out_of_range_values_are_invalid(bad: dict, says: str) -> None:
    with pytest.raises(InvalidArgument, match=says):
        OPTIONS.normalize(bad)


@pytest.mark.parametrize("bad", [{"temp": float("nan")}, {"top-p": float("nan")}, {"repeat-penalty": float("inf")},
                                 {"min-p": float("-inf")}, {"n-predict": 10**30}, {"n-predict": 1e300},
                                 {"last-n-penalty": -(2**63) - 1}])
def test_numbers_no_option_can_mean_are_invalid(bad: dict) -> None:
    """Found by the WIT fuzzer: NaN passed every range check (and sampled garbage), and an
    integer past 64 bits was taken, then read back wrapped through wasinn:llm's s64."""
    with pytest.raises(InvalidArgument, match="takes"):
        OPTIONS.normalize(bad)


def test_special_values_say_what_they_mean() -> None:
    assert OPTIONS["seed"].describe(RANDOM_SEED) == "random"
    assert OPTIONS["n-predict"].describe(-1) == "no limit" and OPTIONS["n-predict"].describe(64) == "64"
    assert "4294967295: random" in OPTIONS["seed"].accepts()


def test_every_option_says_what_it_does() -> None:
    for name, option in OPTIONS.items():
        assert option.help and option.name == name
        assert option.check(option.default) == option.default
