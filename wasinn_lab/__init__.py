"""wasinn-lab: run and study WebAssembly wasi-nn guests from Python and Jupyter."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import errors
from .errors import *  # noqa: F403 - the whole exception tree is public

if TYPE_CHECKING:  # the names as type checkers see them (X as X: re-exported)
    from .backends.base import NextTokenDistribution as NextTokenDistribution
    from .backends.base import TokenDetails as TokenDetails
    from .backends.base import Usage as Usage
    from .host import Host as Host
    from .limits import Limits as Limits
    from .metrics import Generation as Generation
    from .options import Option as Option
    from .options import Scope as Scope
    from .registry import MissingModelWarning as MissingModelWarning
    from .registry import ModelSpec as ModelSpec
    from .runtime import GuestInstance as GuestInstance
    from .runtime import RunResult as RunResult
    from .sessions import Session as Session
    from .sessions import SessionManager as SessionManager
    from .sessions import Token as Token
    from .tasks import Event as Event
    from .tasks import EventKind as EventKind
    from .tasks import GuestTask as GuestTask
    from .types import ExecutionTarget as ExecutionTarget
    from .types import GraphEncoding as GraphEncoding
    from .types import Tensor as Tensor
    from .types import TensorType as TensorType

__version__ = "0.1.0"

# Each public name from the module that defines it, imported on first use: `wasinn-lab
# --help` or `import wasinn_lab.cli` need not load wasmtime and llama.cpp, and the command
# line chooses what to import first.
_LAZY = {
    "Host": ".host",
    "Limits": ".limits",
    "RunResult": ".runtime",
    "GuestInstance": ".runtime",
    "GuestTask": ".tasks",
    "Event": ".tasks",
    "EventKind": ".tasks",
    "Session": ".sessions",
    "SessionManager": ".sessions",
    "Token": ".sessions",
    "TokenDetails": ".backends.base",
    "NextTokenDistribution": ".backends.base",
    "Usage": ".backends.base",
    "Generation": ".metrics",
    "Option": ".options",
    "Scope": ".options",
    "ModelSpec": ".registry",
    "MissingModelWarning": ".registry",
    "Tensor": ".types",
    "TensorType": ".types",
    "GraphEncoding": ".types",
    "ExecutionTarget": ".types",
}

__all__ = [*_LAZY, *errors.__all__, "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value  # once: later lookups find it without coming here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def load_ipython_extension(ip: object) -> None:
    """``%load_ext wasinn_lab``: the ``%%wasi_nn`` and ``%wasi_nn`` magics."""
    from .notebook import load_ipython_extension as load

    load(ip)


def unload_ipython_extension(ip: object) -> None:
    from .notebook import unload_ipython_extension as unload

    unload(ip)
