"""The measurement paths: one generation, timed, as each path makes it.

- ``floor``: llama.cpp from the tightest loop one can write in Python: per run the KV
  cache cleared, the prompt decoded, then one ``llama_decode`` and one sample from
  llama.cpp's own sampler chain per token, nothing else. Its context is made on the
  ``direct`` path's model with the same parameters.
- ``direct``: llama-cpp-python's ``Llama.generate``, what a Python user would write.
- ``guest-compute``, ``guest-stream``, ``component-stream``: a guest run by the host; its
  numbers are read from its session's metrics afterwards, so the harness adds nothing
  per token.

The two baselines decode on the host's compute thread (a second thread decoding would
give the process a second OpenMP team and slow every path), and what llama.cpp logs for
them goes to Python logging, as the host's own does.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import llama_cpp

from ..backends.llama import compute_thread, logged
from ..errors import GuestExitError
from ..host import Host
from .workload import GUESTS, SAMPLINGS, Workload, guest_env

__all__ = ["Baselines", "GuestPath", "sampler_chain"]


def _rate(stamps: Sequence[float]) -> float | None:
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else None


def _row(prompt_tokens: int, stamps: Sequence[float], started: float) -> dict[str, Any]:
    return {"measured_prompt_tokens": prompt_tokens, "output_tokens": len(stamps), "ttft_s": stamps[0] - started,
            "decode_tok_per_s": _rate(stamps)}


def sampler_chain(vocab: Any, sampling: dict[str, Any], seed: int) -> Any:
    """llama.cpp's sampler chain as the host builds it for these settings (keep 0); the
    caller frees it (``llama_sampler_free``)."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = llama_cpp.llama_sampler_chain_add
    add(chain, llama_cpp.llama_sampler_init_penalties(llama_cpp.llama_vocab_n_tokens(vocab), 64,
                                                      sampling["repeat-penalty"], 0.0, 0.0))
    if sampling["temp"] <= 0:
        add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    add(chain, llama_cpp.llama_sampler_init_top_k(sampling["top-k"]))
    add(chain, llama_cpp.llama_sampler_init_top_p(sampling["top-p"], 0))
    add(chain, llama_cpp.llama_sampler_init_min_p(sampling["min-p"], 0))
    add(chain, llama_cpp.llama_sampler_init_temp(sampling["temp"]))
    add(chain, llama_cpp.llama_sampler_init_dist(seed))
    return chain


class _Floor:
    """A llama.cpp context of its own on a ``Llama``'s model and context parameters."""

    def __init__(self, llm: Any) -> None:
        self._llm = llm  # its model must outlive the context
        self.ctx = llama_cpp.llama_init_from_model(llm.model, llm.context_params)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not make the floor's context")
        self.vocab = llama_cpp.llama_model_get_vocab(llm.model)

    def run(self, w: Workload, prompt: str) -> dict[str, Any]:
        sampling = SAMPLINGS[w.sampling]
        started = time.perf_counter()
        tokens = self._llm.tokenize(prompt.encode(), add_bos=True, special=True)
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        for start in range(0, len(tokens), w.batch_size):
            chunk = tokens[start:start + w.batch_size]
            self._decode((llama_cpp.llama_token * len(chunk))(*chunk), len(chunk))
        chain = sampler_chain(self.vocab, sampling, w.seed)
        token_array = (llama_cpp.llama_token * 1)()
        stamps: list[float] = []
        try:
            while len(stamps) < w.n_predict:
                token = llama_cpp.llama_sampler_sample(chain, self.ctx, -1)
                stamps.append(time.perf_counter())
                if llama_cpp.llama_vocab_is_eog(self.vocab, token):
                    break
                token_array[0] = token
                self._decode(token_array, 1)
        finally:
            llama_cpp.llama_sampler_free(chain)
        return _row(len(tokens), stamps, started)

    def _decode(self, tokens: ctypes.Array[Any], count: int) -> None:
        status = llama_cpp.llama_decode(self.ctx, llama_cpp.llama_batch_get_one(tokens, count))
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status} on the floor path")

    def close(self) -> None:
        llama_cpp.llama_free(self.ctx)


class Baselines:
    """``floor`` and ``direct``: per context settings (``Workload.key``) one llama-cpp-python
    ``Llama`` and one floor context on its model, kept for all their runs."""

    def __init__(self, model_path: Path) -> None:
        self.model_path = model_path
        self._llamas: dict[tuple[Any, ...], Any] = {}
        self._floors: dict[tuple[Any, ...], _Floor] = {}
        compute_thread.acquire()  # held, so every run decodes on the same thread

    def llama(self, w: Workload) -> Any:
        from llama_cpp import Llama

        if w.key not in self._llamas:
            with logged():
                self._llamas[w.key] = Llama(
                    str(self.model_path),
                    n_ctx=w.ctx_size,
                    n_batch=w.batch_size,
                    n_ubatch=w.batch_size,
                    n_threads=w.threads,
                    n_threads_batch=w.threads,
                    n_gpu_layers=w.n_gpu_layers,
                    flash_attn=w.flash_attn,
                    swa_full=True,  # as the host's contexts: prefix reuse needs the whole cache
                    last_n_tokens_size=64,  # the penalties' window, as the host's
                    seed=w.seed,
                    verbose=False,
                )
        return self._llamas[w.key]

    def run(self, path: str, w: Workload, prompt: str) -> dict[str, Any]:
        llm = self.llama(w)
        if path == "floor" and w.key not in self._floors:
            with logged():
                self._floors[w.key] = _Floor(llm)
        work = (lambda: self._floors[w.key].run(w, prompt)) if path == "floor" else (lambda: self._direct(llm, w, prompt))
        with logged():
            return compute_thread.run(work)

    @staticmethod
    def _direct(llm: Any, w: Workload, prompt: str) -> dict[str, Any]:
        llm.reset()
        llm.set_seed(w.seed)
        sampling = SAMPLINGS[w.sampling]
        started = time.perf_counter()
        tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
        stamps: list[float] = []
        for _ in llm.generate(tokens, temp=sampling["temp"], top_k=sampling["top-k"], top_p=sampling["top-p"],
                              min_p=sampling["min-p"], repeat_penalty=sampling["repeat-penalty"], reset=True):
            stamps.append(time.perf_counter())
            if len(stamps) >= w.n_predict:
                break
        return _row(len(tokens), stamps, started)

    def close(self) -> None:
        with logged():
            for floor in self._floors.values():
                floor.close()
            for llm in self._llamas.values():
                llm.close()
        self._floors.clear()
        self._llamas.clear()
        compute_thread.release()


class GuestPath:
    """A guest path: one session per path and context settings, kept between runs (its
    context is made once); cache-prompt off makes every run evaluate the whole prompt, as
    the baselines do. A continued session keeps its parameters over the guest's config:
    what varies between workloads of one key is set on it too."""

    def __init__(self, host: Host, model: str) -> None:
        self.host = host
        self.model = model
        self.sessions: set[str] = set()

    def run(self, path: str, w: Workload, prompt: str) -> dict[str, Any]:
        session_id = f"bench-{path}-{'-'.join(map(str, w.key))}"
        self.sessions.add(session_id)
        params = {"cache-prompt": False, "flash-attn": "on" if w.flash_attn else "off", "n-predict": w.n_predict,
                  "seed": w.seed, **SAMPLINGS[w.sampling]}
        result = self.host.run(GUESTS[path], self.model, prompt, env=guest_env(w), session=session_id, params=params)
        if result.exit_code != 0:
            raise GuestExitError(result.exit_code, stderr=result.stderr)
        g = self.host.session(session_id).generations[-1]
        step_calls = g.host_calls.get("compute_single", g.host_calls.get("next-chunk"))
        step = None
        if step_calls is not None:
            # All the backend's work but the prompt's tokenizing (in set_input: its whole
            # call bounds it) is done inside the steps.
            count, seconds = step_calls
            backend_in_steps = g.backend_seconds - g.host_calls.get("set_input", (0, 0.0))[1]
            step = (seconds - backend_in_steps) / count * 1e6
        output = g.host_calls.get("get_output_single")
        return {
            "measured_prompt_tokens": g.prompt_tokens,
            "output_tokens": g.output_tokens,
            "ttft_s": g.time_to_first_token,
            "decode_tok_per_s": g.decode_tokens_per_second,
            "boundary_us_per_token": g.boundary_seconds / g.output_tokens * 1e6,
            "guest_us_per_token": g.guest_seconds / g.output_tokens * 1e6,
            # The host's own time in each kind of call (a step's: its call less the backend's work).
            "step_boundary_us": step,
            "output_boundary_us": output[1] / output[0] * 1e6 if output else None,
        }

    def close(self) -> None:
        for session_id in self.sessions:
            if self.host.sessions.find(session_id) is not None:
                self.host.sessions.close(session_id)
        self.sessions.clear()
