"""Inside a generation: each token's log-probability, rank, entropy and alternatives (the
parameter ``logprobs``), and the next token's distribution before and after the sampler
chain, on real llama.cpp and the default model."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import pytest
from conftest import GREEDY

from wasinn_lab import Busy, Host, InvalidArgument, Tensor, TensorType, TokenDetails, UnsupportedOperation, guests
from wasinn_lab.backends.llama import compute_thread, logged
from wasinn_lab.backends.llama.logprobs import Candidates, model_distribution, top_ids
from wasinn_lab.backends.llama.native import NativeContext
from wasinn_lab.backends.llama.options import OPTIONS
from wasinn_lab.backends.llama.sampling import make_sampler
from wasinn_lab.backends.llama.weights import Weights
from wasinn_lab.compose import component_imports
from wasinn_lab.models import default_model_path
from wasinn_lab.sessions import Session, Token

PROMPT = "The capital of France is"
SAMPLED = {"temp": 0.8, "seed": 7, "top-k": 30, "top-p": 0.9, "min-p": 0.05}


def prompt(session: Session, text: str = PROMPT) -> None:
    session.set_input("prompt", Tensor((1,), TensorType.U8, text.encode()))


def generate(session: Session) -> list[Token]:
    tokens: list[Token] = []
    session.start_generation()
    while (token := session.next_token()) is not None:
        tokens.append(token)
    return tokens


def run(host: Host, settings: dict[str, Any], text: str = PROMPT) -> list[Token]:
    with host.open_session("default", {"n-predict": 12, **settings}) as session:
        prompt(session, text)
        return generate(session)


# -- the arithmetic, on hand-made rows -------------------------------------------------------


def test_the_entropy_and_normalizer_of_a_known_distribution() -> None:
    probabilities = np.array([0.5, 0.25, 0.125, 0.125])
    row = np.log(probabilities).astype(np.float32) + np.float32(3.0)  # logits are log-probabilities plus anything
    model = model_distribution(row, 2)
    assert model.entropy == pytest.approx(1.75 * math.log(2), abs=1e-6)  # 1.75 bits
    assert row[0] - model.log_normalizer == pytest.approx(math.log(0.5), abs=1e-6)
    assert list(model.top) == [0, 1]

    uniform = np.zeros(262_144, dtype=np.float32)
    assert model_distribution(uniform, 5).entropy == pytest.approx(math.log(262_144), abs=1e-4)
    # A token the model rules out (-inf) adds nothing, rather than making it NaN.
    assert model_distribution(np.array([0.0, 0.0, -np.inf], dtype=np.float32), 1).entropy == pytest.approx(math.log(2))


@pytest.mark.parametrize("size", [7, 1000, 262_144, 262_144 + 77])
def test_the_likeliest_k_are_those_a_full_sort_finds(size: int) -> None:
    rng = np.random.default_rng(size)
    values = (rng.standard_normal(size) * 3).astype(np.float32)
    values[rng.integers(0, size, 3)] = 20.0 + np.arange(3)  # the likeliest may sit in one block
    for k in (1, 5, 20, 64):
        expected = np.argsort(-values, kind="stable")[: min(k, size)]
        assert list(top_ids(values, k)) == list(expected), k


# -- a real row from the model ---------------------------------------------------------------


def test_the_model_distribution_and_the_chains_candidates_each_sum_to_one(llama: tuple[Weights, NativeContext]) -> None:
    weights, native = llama
    native.clear()
    native.decode(weights.tokenize(PROMPT.encode()), 0)
    row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(native.ctx, -1), (weights.n_vocab,)).copy()
    model = model_distribution(row, 20)
    probabilities = np.exp(row.astype(np.float64) - model.log_normalizer)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert model.entropy == pytest.approx(-(probabilities * np.log(probabilities)).sum(), abs=1e-4)

    sampler = make_sampler(weights, {**OPTIONS.defaults, **SAMPLED, "top-k": 0, "top-p": 1.0, "min-p": 0.0}, native.n_ctx)
    try:
        candidates = Candidates(weights.n_vocab)
        candidates.fill(row)
        kept, _ = candidates.apply(sampler._chain.sampler)
    finally:
        sampler.close()
    assert len(kept) == weights.n_vocab and float(kept["p"].sum(dtype=np.float64)) == pytest.approx(1.0, abs=1e-4)


# -- through a session ------------------------------------------------------------------------


def test_each_token_carries_its_details_and_token_metrics_has_their_columns(host: Host) -> None:
    with host.open_session("default", {**GREEDY, "n-predict": 8, "logprobs": 3}) as session:
        prompt(session)
        tokens = generate(session)
        assert len(tokens) == 8
        for token in tokens:
            details = token.details
            assert isinstance(details, TokenDetails)
            assert details.rank == 1 and details.probability == 1.0  # greedy: the likeliest, surely
            assert len(details.top) == 3 and details.top[0] == (token.text, details.logprob)
            assert [p for _, p in details.top] == sorted((p for _, p in details.top), reverse=True)
            assert details.logprob < 0 and details.entropy > 0
        frame = session.token_metrics()
        assert list(frame["logprob"]) == [t.details.logprob for t in tokens if t.details]
        assert list(frame["rank"]) == [1.0] * 8 and frame["top"][0] == tokens[0].details.top  # type: ignore[union-attr]

        session.set(logprobs=0)
        session.compute()
        frame = session.token_metrics()
        latest = frame[frame["generation"] == 1]
        assert latest["logprob"].isna().all() and latest["top"].isna().all() and len(latest) == 8


def test_a_sampled_tokens_probability_after_the_chain_is_its_share_of_the_candidates(host: Host) -> None:
    tokens = run(host, {**SAMPLED, "logprobs": 2})
    details = [t.details for t in tokens if t.details]
    assert len(details) == len(tokens) == 12
    assert all(0 < d.probability <= 1 for d in details)
    # temp 0.8 sharpens the distribution top-k, top-p and min-p have cut: the model's likeliest
    # token is likelier after the chain than before.
    assert all(d.probability > math.exp(d.logprob) for d in details if d.rank == 1)


@pytest.mark.parametrize("settings", [
    GREEDY,
    SAMPLED,
    {**SAMPLED, "repeat-penalty": 1.3, "last-n-penalty": 8},
    {"temp": 0.8, "seed": 5, "grammar": 'root ::= ([a-z ]+ "." " "?)+'},
], ids=["greedy", "sampled", "repeat-penalty", "grammar"])
def test_turning_logprobs_on_changes_no_token(host: Host, settings: dict[str, Any]) -> None:
    off = [t.token_id for t in run(host, {**settings, "logprobs": 0})]
    on = run(host, {**settings, "logprobs": 5})
    assert [t.token_id for t in on] == off and len(off) >= 8  # the grammar's text may end sooner
    assert all(t.details is not None for t in on)


def test_the_logprobs_agree_with_llama_cpp_pythons(host: Host) -> None:
    """llama-cpp-python's own completion with ``logprobs`` on the same model file, greedy:
    the same tokens, and each one's log-probability to 1e-4."""
    from llama_cpp import Llama

    # Flash attention named on both sides: on this CPU it moves a logprob by up to 0.1, and
    # llama-cpp-python's Llama defaults to off where the host's auto turns it on.
    tokens = run(host, {**GREEDY, "n-predict": 8, "logprobs": 5, "flash-attn": "on"})
    compute_thread.acquire()
    try:
        with logged():
            llm = compute_thread.run(lambda: Llama(str(default_model_path()), n_ctx=64, logits_all=True, seed=GREEDY["seed"],
                                                   n_threads=OPTIONS["threads"].default, swa_full=True,
                                                   flash_attn=True, verbose=False))
            try:
                completion: Any = compute_thread.run(lambda: llm(PROMPT, max_tokens=8, logprobs=5, temperature=0.0,
                                                                 repeat_penalty=1.0))
            finally:
                compute_thread.run(llm.close)
    finally:
        compute_thread.release()
    theirs = completion["choices"][0]["logprobs"]
    assert "".join(theirs["tokens"]) == "".join(t.text for t in tokens)
    ours = [t.details.logprob for t in tokens if t.details]
    assert ours == pytest.approx(theirs["token_logprobs"], abs=1e-4)
    for token, top in zip(tokens, theirs["top_logprobs"]):
        assert token.details is not None
        assert {text for text, _ in token.details.top} <= set(top)


# -- the next token's distribution -------------------------------------------------------------


def test_the_next_tokens_distribution_is_the_next_greedy_token_and_changes_nothing(host: Host) -> None:
    nine = run(host, {**GREEDY, "n-predict": 9})
    with host.open_session("default", {**GREEDY, "n-predict": 8}) as session:
        prompt(session)
        before = session.next_token_distribution(5)  # of the prompt alone, before any generation
        first = [t.token_id for t in generate(session)]
        assert first == [t.token_id for t in nine[:8]]
        text, outputs = session.text, session.get_output("text")
        distribution = session.next_token_distribution(5)
        assert session.text == text and session.get_output("text") == outputs
        assert [t.token_id for t in generate(session)] == first  # the next generation, unchanged
        assert session.next_token_distribution(5) == distribution  # the same text, the same answer

    # The likeliest next token is the one greedy generation goes on with.
    assert distribution.before[0][0] == nine[8].text and distribution.after == [(nine[8].text, 1.0)]
    assert len(distribution.before) == 5 and sum(p for _, p in distribution.before) < 1
    assert before.before[0][0] == nine[0].text


def test_the_distribution_after_the_chain_follows_pending_parameters(host: Host) -> None:
    with host.open_session("default", {**GREEDY, "n-predict": 4}) as session:
        prompt(session)
        greedy = session.next_token_distribution(10)
        assert greedy.after == [(greedy.before[0][0], 1.0)]
        session.set(temp=1.0, **{"top-k": 3, "top-p": 1.0, "min-p": 0.0})  # pending: no generation since
        three = session.next_token_distribution(10)
        assert three.before == greedy.before
        assert [text for text, _ in three.after] == [text for text, _ in greedy.before[:3]]
        total = sum(p for _, p in greedy.before[:3])
        assert [p for _, p in three.after] == pytest.approx([p / total for _, p in greedy.before[:3]], rel=1e-4)
        session.set(temp=0.5)
        cooler = session.next_token_distribution(10)
        assert cooler.after[0][1] > three.after[0][1]


def test_the_distribution_is_refused_clearly(host: Host) -> None:
    with host.open_session("default", {**GREEDY, "n-predict": 4}) as session:
        with pytest.raises(InvalidArgument, match="no prompt"):
            session.next_token_distribution()
        prompt(session)
        with pytest.raises(InvalidArgument, match="at least 1"):
            session.next_token_distribution(0)
        session.start_generation()
        assert session.next_token() is not None
        with pytest.raises(Busy, match="generating"):
            session.next_token_distribution()
        session.end_generation()
        assert session.next_token_distribution(1).before
    with host.open_session("echo") as echo, pytest.raises(UnsupportedOperation, match="echo"):
        echo.next_token_distribution()


# -- through wasinn:llm ------------------------------------------------------------------------


def test_a_component_prints_each_token_with_its_alternatives_through_next_token(host: Host) -> None:
    result = host.run("tokens_llm", "default", PROMPT, env={"n_predict": "6", "temp": "0", "logprobs": "3"})
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    expected = run(host, {**GREEDY, "n-predict": 6, "logprobs": 3})
    assert len(lines) == 6
    for line, token in zip(lines, expected):
        assert token.details is not None
        alternatives = "".join(f' "{text}" {logprob:.3f}' for text, logprob in token.details.top)
        assert line == (f'"{token.text}"  logprob {token.details.logprob:.3f}  p 1.000  rank 1  '
                        f'entropy {token.details.entropy:.2f} nats  |{alternatives}')


def test_a_component_built_for_wasinn_llm_0_1_0_still_runs(host: Host, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """wasmtime's linker serves a 0.1.0 import from the 0.1.1 the host defines, and the
    host's own check of a component's imports agrees."""
    old = tmp_path / "guests"
    shutil.copytree(guests.SOURCE_DIR, old)
    for path in [*old.glob("wit/*.wit"), old / "components" / "wasinn_llm.h"]:
        path.write_text(path.read_text().replace("@0.1.1", "@0.1.0"))
    monkeypatch.setattr(guests, "SOURCE_DIR", old)
    wasm = guests.build(old / "components" / "stream_llm.c", tmp_path / "stream_llm_0_1_0.wasm")
    monkeypatch.undo()
    assert "wasinn:llm/prompt@0.1.0" in component_imports(wasm.read_bytes())
    result = host.run(str(wasm), "default", PROMPT, env={"n_predict": "4", "temp": "0"})
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "".join(t.text for t in run(host, {**GREEDY, "n-predict": 4})).strip()
