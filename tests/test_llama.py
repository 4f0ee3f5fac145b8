"""The GGML backend's own behaviour through sessions: decode-ahead, flash attention."""

from __future__ import annotations

import threading

import pytest
from conftest import GREEDY

from wasinn_lab import Host, InvalidArgument, Tensor, TensorType


def prompt(text: str) -> Tensor:
    return Tensor((1,), TensorType.U8, text.encode())


def generate(host: Host, config: dict[str, object], text: str = "Once upon a time") -> str:
    with host.open_session("default", {**GREEDY, "n-predict": 24, **config}) as session:
        session.set_input("prompt", prompt(text))
        session.start_generation()
        pieces = []
        while (token := session.next_token()) is not None:
            pieces.append(token.text)
        assert session.usage().output_tokens == 24
        return "".join(pieces)


def _decode_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("wasinn-lab-decode")]


def test_decode_ahead_makes_the_same_tokens_and_its_thread_goes_with_the_context(host: Host) -> None:
    before = len(_decode_threads())
    ahead = generate(host, {"decode-ahead": "on"})
    assert ahead == generate(host, {"decode-ahead": "off"}) and ahead.strip()
    assert generate(host, {"decode-ahead": "on", "seed": 7, "temp": 0.8}) == \
        generate(host, {"decode-ahead": "off", "seed": 7, "temp": 0.8})  # sampled too, not only greedy
    assert len(_decode_threads()) == before  # each context's thread stopped with it


def test_a_new_prompt_waits_for_the_decode_ahead_and_prefix_reuse_still_holds(host: Host) -> None:
    with host.open_session("default", {**GREEDY, "n-predict": 6, "decode-ahead": "on"}) as session:
        first = session.compute({"prompt": prompt("The sky is")})["text"].data.decode()
        # The prompt extended by what was generated: only the new part is evaluated, so the
        # KV cache (written by the decode thread) is whole.
        session.compute({"prompt": prompt("The sky is" + first + " And")})
        generation = session.generations[-1]
        assert generation.evaluated_tokens < generation.prompt_tokens


def test_flash_attention_on_and_off_both_work_and_other_values_are_refused(host: Host) -> None:
    assert generate(host, {"flash-attn": "on"}).strip() and generate(host, {"flash-attn": "off"}).strip()
    with pytest.raises(InvalidArgument, match="'flash-attn' takes one of 'auto', 'on', 'off'"):
        host.open_session("default").set({"flash-attn": "yes"})
