"""Many guests at once: aggregate tokens/s and time to first token when N stream guests
start together (``at_once``), or when the same N run one after another (``one_by_one``).

Each guest runs as a user's would (``Host.start``, a new session each, its context made
within the time measured), so the numbers include guest start and prompt. Per guest, its
first token is timed from the moment the N were started, the time a caller waits for it.
Whether the generations were batched together is ``batching_mode``'s answer: "batched"
where the backend batches across sessions and the run allowed it, "solo" where each
generation has its decodes to itself.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import GuestExitError
from ..host import Host
from ..metrics import Generation
from ..tasks import GuestTask
from .workload import BATCH_OPTION, GUESTS, SAMPLINGS, Workload, guest_env

__all__ = ["at_once", "one_by_one", "start", "generation", "batching_params", "batching_mode", "distinct_prompts",
           "GUEST"]

GUEST = GUESTS["guest-stream"]


def batching_params(host: Host, batching: bool) -> dict[str, Any]:
    """The parameter that asks for batching or a solo run, where the backend has it."""
    known = any(backend.options.lookup(BATCH_OPTION) for backend in host.registry.backends)
    return {BATCH_OPTION: batching} if known else {}


def batching_mode(host: Host, batching: bool) -> str:
    """"batched" if generations at once share their decodes, "solo" if each decodes alone."""
    return "batched" if batching_params(host, batching).get(BATCH_OPTION) else "solo"


def distinct_prompts(prompt: str, count: int) -> list[str]:
    """``count`` prompts that differ from their first token on (no two sequences alike)."""
    return [f"{n + 1}. {prompt}" for n in range(count)]


def _params(w: Workload, extra: Mapping[str, Any]) -> dict[str, Any]:
    """As the guest paths of ``compare`` run: the whole prompt evaluated every run."""
    return {"cache-prompt": False, "flash-attn": "on" if w.flash_attn else "off", "n-predict": w.n_predict,
            "seed": w.seed, **SAMPLINGS[w.sampling], **extra}


def start(host: Host, model: str, prompt: str, w: Workload, extra: Mapping[str, Any]) -> GuestTask:
    """The stream guest on ``prompt``, started on its own thread."""
    return host.start(GUEST, model, prompt, env=guest_env(w), params=_params(w, extra))


def generation(task: GuestTask) -> Generation:
    """Wait for the guest to end; the generation its session made."""
    outcome = task.wait()
    if outcome.exit_code != 0:
        raise GuestExitError(outcome.exit_code, stderr=outcome.stderr)
    return task.sessions[-1].generations[-1]


def _row(generations: Sequence[Generation], started: float, ended: float) -> dict[str, Any]:
    tokens = sum(g.output_tokens for g in generations)
    firsts = [g.token_times[0] - started for g in generations if g.token_times]
    return {"guests": len(generations), "output_tokens": tokens, "seconds": ended - started,
            "tok_per_s": tokens / (ended - started),
            "ttft_s": statistics.median(firsts) if firsts else None, "ttft_max_s": max(firsts, default=None)}


def at_once(host: Host, model: str, prompts: Sequence[str], w: Workload,
            extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The stream guest on each prompt, all started together: tokens generated in all per
    second from their start to the last one's end; the median and the longest wait for a
    guest's first token."""
    started = time.perf_counter()
    tasks: list[GuestTask] = []
    try:
        for prompt in prompts:
            tasks.append(start(host, model, prompt, w, extra or {}))
        generations = [generation(task) for task in tasks]
    except BaseException:
        for task in tasks:
            task.end()
        raise
    return _row(generations, started, time.perf_counter())


def one_by_one(host: Host, model: str, prompts: Sequence[str], w: Workload,
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The same runs one after another, as a serial loop makes them; each first token is
    still timed from the start of the first run (what the last caller waits)."""
    started = time.perf_counter()
    generations = [generation(start(host, model, prompt, w, extra or {})) for prompt in prompts]
    return _row(generations, started, time.perf_counter())
