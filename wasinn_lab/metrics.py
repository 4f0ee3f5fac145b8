"""What each generation cost: token counts, prompt evaluation, time to first token, decode
rate, and where the time went (the backend, the host's wasi-nn calls, the guest)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from .backends.base import TokenDetails

__all__ = ["Generation", "generations_frame", "tokens_frame"]

METRIC_COLUMNS = (
    "prompt_tokens", "evaluated_tokens", "output_tokens", "prompt_eval_s", "ttft_s",
    "decode_tok_per_s", "wall_s", "backend_s", "host_boundary_s", "guest_s",
)
TOKEN_COLUMNS = ("generation", "token", "text", "t_s", "latency_s", "logprob", "probability", "rank", "entropy", "top")


@dataclass
class Generation:
    """One generation: from its prompt to its last token.

    Times are ``time.perf_counter()`` seconds. Where the time went: ``backend_seconds``
    inside the backend (llama.cpp, tokenizing included); ``boundary_seconds`` in the
    host's wasi-nn calls around it (guest memory, handles, sessions); ``guest_seconds``
    everything else, in the guest."""

    prompt_tokens: int = 0
    evaluated_tokens: int = 0  # after prefix reuse: what the backend actually had to evaluate
    output_tokens: int = 0
    started: float = 0.0
    ended: float = 0.0
    prompt_seconds: float = 0.0
    backend_seconds: float = 0.0
    host_seconds: float = 0.0  # inside wasi-nn host calls on this session, backend included
    host_calls: dict[str, tuple[int, float]] = field(default_factory=dict)  # per call: how many, their seconds
    token_times: list[float] = field(default_factory=list)
    token_texts: list[str] = field(default_factory=list)
    token_details: list[TokenDetails | None] = field(default_factory=list)  # None: logprobs was off

    @property
    def text(self) -> str:
        return "".join(self.token_texts)

    @property
    def time_to_first_token(self) -> float | None:
        return self.token_times[0] - self.started if self.token_times else None

    @property
    def decode_tokens_per_second(self) -> float | None:
        if len(self.token_times) < 2:
            return None
        return (len(self.token_times) - 1) / (self.token_times[-1] - self.token_times[0])

    @property
    def wall_seconds(self) -> float:
        return self.ended - self.started

    @property
    def boundary_seconds(self) -> float:
        return max(self.host_seconds - self.backend_seconds, 0.0)

    @property
    def guest_seconds(self) -> float:
        return max(self.wall_seconds - self.host_seconds, 0.0) if self.host_seconds else 0.0


def generations_frame(generations: Sequence[Generation]) -> pd.DataFrame:
    """One row per generation."""
    import pandas as pd

    rows = [
        {
            "prompt_tokens": g.prompt_tokens,
            "evaluated_tokens": g.evaluated_tokens,
            "output_tokens": g.output_tokens,
            "prompt_eval_s": g.prompt_seconds,
            "ttft_s": g.time_to_first_token,
            "decode_tok_per_s": g.decode_tokens_per_second,
            "wall_s": g.wall_seconds,
            "backend_s": g.backend_seconds,
            "host_boundary_s": g.boundary_seconds,
            "guest_s": g.guest_seconds,
        }
        for g in generations
    ]
    return pd.DataFrame(rows, columns=list(METRIC_COLUMNS)).rename_axis("generation")


_NO_DETAILS = {"logprob": math.nan, "probability": math.nan, "rank": math.nan, "entropy": math.nan, "top": None}


def tokens_frame(generations: Sequence[Generation]) -> pd.DataFrame:
    """One row per generated token: its text, when it came (seconds since its generation
    started), its latency (since the previous token, or the start) and, where the option
    logprobs was on, its details (``TokenDetails``; NaN and None where it was off)."""
    import pandas as pd

    rows = []
    for number, g in enumerate(generations):
        previous = g.started
        for index, (stamp, text, details) in enumerate(zip(g.token_times, g.token_texts, g.token_details)):
            rows.append({"generation": number, "token": index, "text": text, "t_s": stamp - g.started,
                         "latency_s": stamp - previous, **(details._asdict() if details else _NO_DETAILS)})
            previous = stamp
    frame = pd.DataFrame(rows, columns=list(TOKEN_COLUMNS))
    return frame.astype({"logprob": float, "probability": float, "rank": float, "entropy": float})
