"""What a session's generations cost, as it records them (``metrics.Generation``): host
time spent on its wasi-nn calls, each generation's start and end, its tokens as they
come, and the backend's counts once it ends."""

from __future__ import annotations

import time

from ..backends.base import Usage
from ..metrics import Generation

__all__ = ["Recorder"]


class Recorder:
    def __init__(self) -> None:
        self.generations: list[Generation] = []
        self.current: Generation | None = None  # from its start until the next input
        self._host_seconds = 0.0  # host-call time before a generation starts (set_input)
        self._host_since = 0.0

    def account(self, call: str, seconds: float) -> None:
        """Host time one wasi-nn call (named as its ABI names it) took."""
        current = self.current
        if current is None:
            if not self._host_seconds:
                self._host_since = time.perf_counter() - seconds
            self._host_seconds += seconds
            return
        current.host_seconds += seconds
        count, total = current.host_calls.get(call, (0, 0.0))
        current.host_calls[call] = (count + 1, total + seconds)
        current.ended = time.perf_counter()

    def begin(self) -> Generation:
        # A generation starts where its input was given, if a front-end timed that.
        started = self._host_since if self._host_seconds else time.perf_counter()
        record = self.current = Generation(started=started, host_seconds=self._host_seconds)
        self._host_seconds = 0.0
        self.generations.append(record)
        return record

    @staticmethod
    def finish(record: Generation, usage: Usage) -> None:
        """The backend's counts replace those kept token by token."""
        (record.prompt_tokens, record.evaluated_tokens, record.output_tokens,
         record.prompt_seconds, record.backend_seconds) = usage
        record.ended = time.perf_counter()
