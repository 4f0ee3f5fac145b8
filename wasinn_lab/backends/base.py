"""The backend contract: a backend loads graphs, a graph makes execution contexts, a
context takes named input tensors, computes, and gives named output tensors; a context
that generates text also gives a stream of tokens its caller pulls.

Only bytes, the neutral types (``wasinn_lab.types``), plain dicts, the records below and
``NNError``s cross it. Backends know nothing about wasm, handles, guest memory or any
ABI's wire format.

Text generation has a named-tensor convention that every ABI can carry: the input
``prompt`` (U8, UTF-8 text), the outputs ``text`` (U8, all text generated so far) and,
in embedding mode, ``embedding`` (F32, one vector). Configuration is ``configure``, and
usage is a ``Usage`` record. A token stream says why it ended (``EndReason``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from ..options import Options
from ..types import ExecutionTarget, GraphEncoding, Tensor

__all__ = ["PROMPT", "TEXT", "EMBEDDING", "Backend", "Graph", "ExecutionContext", "TokenStream", "TokenEvent",
           "TokenDetails", "NextTokenDistribution", "Usage", "EndReason"]

PROMPT = "prompt"
TEXT = "text"
EMBEDDING = "embedding"


# NamedTuples: made on every token, and cheaper to make than frozen dataclasses.
class TokenDetails(NamedTuple):
    """How sure the model was of a token and what it nearly said (the option ``logprobs``)."""

    logprob: float  # natural log of its probability under the model's own distribution, before any sampler
    probability: float  # its probability after the sampler chain (1.0 for greedy)
    rank: int  # 1: the model's likeliest token
    entropy: float  # nats, of the model's distribution
    top: tuple[tuple[str, float], ...]  # the K likeliest (text, logprob), likeliest first


class TokenEvent(NamedTuple):
    """One generated token, as it is sampled."""

    piece: bytes  # its text's bytes (a character may span two tokens)
    token_id: int
    time: float  # time.perf_counter() when it was sampled
    details: TokenDetails | None = None  # with the option logprobs on


class NextTokenDistribution(NamedTuple):
    """The likeliest next tokens as (text, probability), likeliest first: under the model's
    own distribution, and after the sampler chain."""

    before: list[tuple[str, float]]
    after: list[tuple[str, float]]


class Usage(NamedTuple):
    """The current (or latest) generation's counts and backend time."""

    input_tokens: int = 0
    evaluated_tokens: int = 0  # after prefix reuse: what the backend really evaluated
    output_tokens: int = 0
    prompt_seconds: float = 0.0  # evaluating the prompt
    backend_seconds: float = 0.0  # all backend work for this generation, prompt included


class EndReason(enum.Enum):
    """Why a generation ended."""

    STOP = "stop"  # the model ended it: end of generation, or the reverse prompt
    LENGTH = "length"  # the token limit (n-predict)
    CANCELLED = "cancelled"  # closed before it ended by itself


class TokenStream(Protocol):
    def next_token(self) -> TokenEvent | None:
        """The next token, or None once the generation has ended (end of generation, the
        n-predict bound, the reverse prompt). Raises ContextFull when the context fills
        up, PromptTooLong on the first call for a prompt that cannot fit."""

    def close(self) -> None:
        """End the generation here; ``next_token`` gives None from now on."""

    @property
    def end_reason(self) -> EndReason | None:
        """Why it ended; None while it runs, or if it failed."""


class ExecutionContext(Protocol):
    @property
    def parameters(self) -> dict[str, Any]:
        """Every option's current value, by canonical name."""

    @property
    def generates(self) -> bool:
        """Whether ``compute`` is a token stream (``generate``) run to its end."""

    def check(self, options: Mapping[str, Any]) -> None:
        """Raise InvalidArgument if these options (normalized) cannot work here, e.g. a
        context larger than the model's; nothing changes."""

    def configure(self, options: Mapping[str, Any]) -> None:
        """Update parameters (normalized by ``Backend.options``); the caller does this
        only between generations, so a change may rebuild what a generation uses."""

    def prepare(self) -> None:
        """Build now whatever the next generation would build (after a reconfiguration)."""

    def set_input(self, name: str, tensor: Tensor) -> None: ...

    def clear_inputs(self) -> None:
        """Forget every input set: the next compute is on those set from now on."""

    def compute(self) -> None: ...

    def output_names(self) -> list[str]:
        """The outputs there are now."""

    def get_output(self, name: str) -> Tensor: ...

    def generate(self) -> TokenStream:
        """A token stream on the inputs set (UnsupportedOperation if it cannot generate)."""

    def distribution(self, k: int, options: Mapping[str, Any]) -> NextTokenDistribution:
        """The ``k`` likeliest tokens to follow the current text (the prompt and what was
        generated from it), before and after the sampler chain that ``options`` (normalized
        parameters) make; nothing is generated and the next generation is as it would have
        been. InvalidArgument without a prompt; UnsupportedOperation if it has no
        distribution."""

    def usage(self) -> Usage: ...

    def release(self) -> None:
        """Free what can be rebuilt on the next use (a KV cache); outputs stay readable."""

    def close(self) -> None: ...


class Graph(Protocol):
    def init_execution_context(self, config: Mapping[str, Any]) -> ExecutionContext: ...

    def properties(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class Backend(Protocol):
    encoding: GraphEncoding
    options: Options  # what configure, load configs and the notebook's controls take
    # The input names its contexts take, in order (the GGML backend: PROMPT); None: any
    # names at all (echo), which an ABI with numbered tensors numbers "0", "1", ...
    inputs: tuple[str, ...] | None
    build: str  # what it is built from, for usage reports (e.g. "llama-cpp-python-0.3.36")

    def load(self, builders: Sequence[bytes], target: ExecutionTarget, staging_dir: Path) -> Graph:
        """A graph from bytes a guest sent. Files the backend needs for it go in
        ``staging_dir`` (private to the caller, who removes it); the graph's ``close``
        removes them sooner."""

    def load_file(self, path: Path, target: ExecutionTarget, config: Mapping[str, Any]) -> Graph:
        """A graph from a registered model file."""

    def properties(self) -> dict[str, Any]:
        """What the backend is and can do (build, GPU offload support, devices)."""
