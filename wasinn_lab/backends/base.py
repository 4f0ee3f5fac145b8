"""The backend contract: a backend loads graphs, a graph makes execution contexts,
a context takes inputs, computes and gives outputs.

Only bytes, neutral types (``wasinn_lab.types``), plain dicts and ``NNError``s cross it;
backends know nothing about wasm, handles or guest memory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from ..types import ExecutionTarget, GraphEncoding, Tensor

__all__ = ["Backend", "Graph", "ExecutionContext", "GenerationStats", "TokenEvent", "TokenListener"]


# NamedTuples: made on every token, and cheaper to make than frozen dataclasses.
class TokenEvent(NamedTuple):
    """One generated token, as it is made."""

    piece: bytes
    token_id: int
    single: bool  # made by compute_single (the guest streams) rather than compute
    time: float  # time.perf_counter() when the token was sampled


TokenListener = Callable[[TokenEvent], None]


class GenerationStats(NamedTuple):
    input_tokens: int = 0
    evaluated_tokens: int = 0  # after prefix reuse: what the backend really evaluated
    output_tokens: int = 0
    prompt_seconds: float = 0.0  # evaluating the prompt
    backend_seconds: float = 0.0  # all backend work for this generation, prompt included


class ExecutionContext(Protocol):
    # Called for every generated token. It may raise EndOfSequence to end the
    # generation there: compute then returns normally, compute_single raises it on.
    on_token: TokenListener | None

    @property
    def parameters(self) -> dict[str, Any]: ...

    def configure(self, options: Mapping[str, Any]) -> None:
        """Update parameters (already normalized by ``Backend.normalize_config``)."""

    def prepare(self) -> None:
        """Build now whatever the next generation would build (after a reconfiguration)."""

    def set_input(self, index: int, tensor: Tensor) -> None: ...

    def compute(self) -> None: ...

    def get_output(self, index: int) -> bytes: ...

    def compute_single(self) -> None: ...

    def get_output_single(self, index: int) -> bytes: ...

    def fini_single(self) -> None: ...

    def stats(self) -> GenerationStats:
        """The current (or latest) generation's counts and backend time."""

    def close(self) -> None: ...


class Graph(Protocol):
    def init_execution_context(self, config: Mapping[str, Any]) -> ExecutionContext: ...

    def properties(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class Backend(Protocol):
    encoding: GraphEncoding

    def normalize_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Canonical keys and checked value types; raises InvalidArgument."""

    def load(self, builders: Sequence[bytes], target: ExecutionTarget, staging_dir: Path) -> Graph:
        """A graph from bytes a guest sent. Files the backend needs for it go in
        ``staging_dir`` (private to the caller, who removes it); the graph's ``close``
        removes them sooner."""

    def load_file(self, path: Path, target: ExecutionTarget, config: Mapping[str, Any]) -> Graph:
        """A graph from a registered model file."""

    def properties(self) -> dict[str, Any]:
        """What the backend is and can do (build, GPU offload support, devices)."""
