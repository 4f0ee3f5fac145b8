"""One exception tree for wasinn-lab.

    WasiNNLabError
    ├── ConfigError          bad host-side input: a preload spec, a path, a limit
    ├── GuestError           a guest failed as a program
    │   ├── GuestLoadError   not a valid module, or its imports cannot be satisfied
    │   ├── GuestTrap        trapped (unreachable, out-of-bounds, a host error re-raised)
    │   │   └── GuestLimitError  stopped at one of its limits (time, fuel, memory)
    │   └── GuestExitError   exited non-zero (raised only when asked: ``run(..., check=True)``)
    ├── GuestBuildError      a guest's source did not compile
    ├── Timeout              nothing happened for longer than a caller would wait
    ├── SweepError           points of a sweep or batch on a cluster failed; the rest completed
    └── NNError              a wasi-nn failure; each ABI maps these to its own codes
        ├── InvalidArgument, InvalidEncoding, MissingMemory, Busy, BackendError,
        ├── UnsupportedOperation, TooLarge, NotFound
        └── EndOfSequence, ContextFull, PromptTooLong, ModelNotFound   (WasmEdge's GGML codes)

Backends and the registry raise ``NNError`` subclasses only; foreign exceptions are
translated where they are caught (the llama backend's native calls), chained with ``from``.
Nothing else escapes the tree on purpose: an exception that is not a ``WasiNNLabError``
(or a KeyboardInterrupt) is a bug in wasinn-lab, and keeps its traceback.
"""

from __future__ import annotations

import importlib.util
import os
import traceback
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "WasiNNLabError",
    "ConfigError",
    "GuestError",
    "GuestLoadError",
    "GuestTrap",
    "GuestLimitError",
    "GuestExitError",
    "GuestBuildError",
    "Timeout",
    "SweepError",
    "NNError",
    "InvalidArgument",
    "InvalidEncoding",
    "MissingMemory",
    "Busy",
    "BackendError",
    "UnsupportedOperation",
    "TooLarge",
    "NotFound",
    "EndOfSequence",
    "ContextFull",
    "PromptTooLong",
    "ModelNotFound",
]


class WasiNNLabError(Exception):
    """Root of every error wasinn-lab raises."""

    def _render_traceback_(self) -> list[str]:
        """What IPython shows for it: the caller's own frames down to the call into
        wasinn-lab, then the message, which says what to fix; the frames inside the host
        would bury it. (Bugs, which are not WasiNNLabErrors, keep all their frames.)"""
        shown = traceback.format_list(_callers_frames(self.__traceback__))
        heading = ["Traceback (most recent call last):"] if shown else []
        return [*heading, *(frame.rstrip("\n") for frame in shown), f"{type(self).__name__}: {self}"]

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled whole, as its own class (a Dask worker sends it back so): the default
        # rebuilds it from ``args``, which most constructors here do not take.
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type[WasiNNLabError], args: tuple[Any, ...], state: dict[str, Any]) -> WasiNNLabError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


_PACKAGE = str(Path(__file__).parent) + os.sep
_IPYTHON = tuple(str(Path(spec.origin).parent) + os.sep for name in ("IPython", "ipykernel")
                 if (spec := importlib.util.find_spec(name)) is not None and spec.origin is not None)


def _callers_frames(tb: TracebackType | None) -> traceback.StackSummary:
    """The frames of a traceback before its first one in wasinn-lab, less IPython's own
    (running the cell, dispatching a magic, and a magic's line as IPython rewrote it)."""
    frames = []
    for frame in traceback.extract_tb(tb):
        if frame.filename.startswith(_PACKAGE):
            break
        ipythons = frame.filename.startswith((*_IPYTHON, "<decorator-gen-")) or (frame.line or "").startswith(
            "get_ipython().run_")
        if not ipythons:
            frames.append(frame)
    return traceback.StackSummary.from_list(frames)


class ConfigError(WasiNNLabError, ValueError):
    """A host-side setting is wrong; the message says what to fix."""


class GuestError(WasiNNLabError):
    """A guest failed as a program. Carries what it wrote to stderr."""

    def __init__(self, message: str, *, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr

    def __str__(self) -> str:
        text = super().__str__()
        tail = self.stderr.strip()
        return f"{text}\nguest stderr:\n{tail}" if tail else text


class GuestLoadError(GuestError):
    """The guest is not a valid module or needs imports the host does not provide."""


class GuestTrap(GuestError):
    """The guest trapped; ``trap`` holds wasmtime's message."""

    def __init__(self, trap: str, *, stderr: str = "") -> None:
        super().__init__(f"guest trapped: {trap}", stderr=stderr)
        self.trap = trap


class GuestLimitError(GuestTrap):
    """The guest was stopped at one of its limits; ``limit`` names it, ``value`` says it."""

    def __init__(self, limit: str, value: object, detail: str, *, stderr: str = "") -> None:
        super().__init__(detail, stderr=stderr)
        self.args = (f"guest stopped: {detail}",)
        self.limit = limit
        self.value = value


class GuestExitError(GuestError):
    """The guest exited with a non-zero status."""

    def __init__(self, exit_code: int, *, stderr: str = "") -> None:
        super().__init__(f"guest exited with status {exit_code}", stderr=stderr)
        self.exit_code = exit_code


class GuestBuildError(WasiNNLabError):
    """A guest's source failed to compile; ``log`` holds the compiler's output."""

    def __init__(self, message: str, *, log: str = "") -> None:
        super().__init__(f"{message}\n{log}".rstrip())
        self.log = log


class Timeout(WasiNNLabError, TimeoutError):
    """A wait ran out: nothing happened for as long as the caller was willing to wait."""


class SweepError(WasiNNLabError):
    """Points of a sweep (or prompts of a batch) failed while the others completed:
    ``failures`` maps each failed point to what it raised, said in words; ``errors``, to
    the exception itself where one came back (a lost worker sends none); ``frame`` holds
    the rows of the others."""

    def __init__(self, failures: dict[str, str], frame: pd.DataFrame,
                 errors: dict[str, BaseException] | None = None) -> None:
        listed = "; ".join(f"{point}: {error}" for point, error in failures.items())
        super().__init__(f"{len(failures)} point(s) failed, the others completed. {listed}")
        self.failures = failures
        self.errors = errors or {}
        self.frame = frame


class NNError(WasiNNLabError):
    """A wasi-nn operation failed. The subclass says how; each ABI has its own code for it."""


class InvalidArgument(NNError):
    """A malformed argument: a bad handle, pointer, name, tensor or config value (preview1 errno 1)."""


class InvalidEncoding(NNError):
    """A graph encoding the backend cannot load, or config JSON that does not parse (preview1 errno 2)."""


class MissingMemory(NNError):
    """The guest exports no linear memory for the host to read its arguments from (preview1 errno 3)."""


class Busy(NNError):
    """Held by another: a session another guest or generation is using, or a limit of live contexts
    or weight copies reached (preview1 errno 4)."""


class BackendError(NNError):
    """The backend failed at run time (wasi-nn's runtime-error)."""


class UnsupportedOperation(NNError):
    """An operation this backend or model cannot do: text from a model without any, a
    read-only property set (preview1 errno 6)."""


class TooLarge(NNError):
    """An output does not fit the caller's buffer; ``required`` is the size it needs."""

    def __init__(self, message: str, *, required: int = 0) -> None:
        super().__init__(message)
        self.required = required


class NotFound(NNError):
    """No model, backend, session or output of that name (preview1 errno 8)."""


class EndOfSequence(NNError):
    """Generation ended (end-of-generation token, or the n-predict bound)."""


class ContextFull(NNError):
    """The context (KV cache) filled up mid-generation; the text so far stays readable (WasmEdge's
    errno 101)."""


class PromptTooLong(NNError):
    """The prompt does not fit the context (WasmEdge's errno 102)."""


class ModelNotFound(NNError):
    """The name is registered but its model file does not exist."""
