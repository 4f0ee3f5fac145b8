"""The GGML backend's own behaviour through sessions: decode-ahead, flash attention."""

from __future__ import annotations

import threading

import llama_cpp
import pytest
from conftest import GREEDY

from wasinn_lab import Host, InvalidArgument, Tensor, TensorType
from wasinn_lab.backends.llama.compute import ComputeThread


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


def test_decode_ahead_makes_the_same_tokens(host: Host) -> None:
    ahead = generate(host, {"decode-ahead": "on"})
    assert ahead == generate(host, {"decode-ahead": "off"}) and ahead.strip()
    assert generate(host, {"decode-ahead": "on", "seed": 7, "temp": 0.8}) == \
        generate(host, {"decode-ahead": "off", "seed": 7, "temp": 0.8})  # sampled too, not only greedy


def test_every_decode_runs_on_the_one_compute_thread_whichever_thread_asks(
        host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each thread that decodes gets an OpenMP team of its own; with more of their threads
    than CPUs, libgomp sleeps at every barrier: a guest's thread decoded at 28 tokens/s
    where the main thread, alone, did 44."""
    decode = llama_cpp.llama_decode
    callers: set[str] = set()

    def recorded(ctx: object, batch: object) -> int:
        callers.add(threading.current_thread().name)
        return decode(ctx, batch)

    monkeypatch.setattr(llama_cpp, "llama_decode", recorded)
    # Batched together, three greedy generations may part (batching is not batch-invariant
    # on this CPU: CI saw it); each alone in its batch must give the one text.
    alone = {"batch-with-others": False}
    texts: dict[str, str] = {}
    workers = [threading.Thread(target=lambda mode=mode: texts.__setitem__(
                   mode, generate(host, {**alone, "decode-ahead": mode})))
               for mode in ("on", "off")]
    for worker in workers:
        worker.start()
    texts["main"] = generate(host, alone)
    for worker in workers:
        worker.join()
    assert len(set(texts.values())) == 1, "the same greedy text on every thread"
    assert len(callers) == 1 and callers.pop().startswith("wasinn-lab-compute")


def test_the_compute_thread_runs_while_it_is_held() -> None:
    owner = ComputeThread()
    owner.acquire()
    owner.acquire()
    name = owner.run(lambda: threading.current_thread().name)
    assert name.startswith("wasinn-lab-compute")
    assert owner.run(lambda: owner.run(lambda: 7)) == 7  # on the thread itself: at once, no deadlock
    owner.release()
    assert any(thread.name == name for thread in threading.enumerate())  # one holder is left
    owner.release()
    assert not any(thread.name == name for thread in threading.enumerate())
    with pytest.raises(RuntimeError, match="acquire"):
        owner.submit(lambda: None)


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
    with host.open_session("default") as session, \
            pytest.raises(InvalidArgument, match="'flash-attn' takes one of 'auto', 'on', 'off'"):
        session.set({"flash-attn": "yes"})
