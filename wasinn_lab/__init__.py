"""wasinn-lab: run and study WebAssembly wasi-nn guests from Python and Jupyter."""

from . import errors
from .backends.base import Usage
from .errors import *  # noqa: F403 - the whole exception tree is public
from .host import Host
from .limits import Limits
from .metrics import Generation
from .options import Option, Scope
from .registry import MissingModelWarning, ModelSpec
from .runtime import GuestInstance, RunResult
from .sessions import Session, SessionManager, Token
from .tasks import Event, EventKind, GuestTask
from .types import ExecutionTarget, GraphEncoding, Tensor, TensorType

__version__ = "0.1.0"

__all__ = [
    "Host",
    "Limits",
    "RunResult",
    "GuestInstance",
    "GuestTask",
    "Event",
    "EventKind",
    "Session",
    "SessionManager",
    "Token",
    "Usage",
    "Generation",
    "Option",
    "Scope",
    "ModelSpec",
    "MissingModelWarning",
    "Tensor",
    "TensorType",
    "GraphEncoding",
    "ExecutionTarget",
    *errors.__all__,
    "__version__",
]


def load_ipython_extension(ip: object) -> None:
    """``%load_ext wasinn_lab``: the ``%%wasi_nn`` and ``%wasi_nn`` magics."""
    from .notebook import load_ipython_extension as load

    load(ip)


def unload_ipython_extension(ip: object) -> None:
    from .notebook import unload_ipython_extension as unload

    unload(ip)
