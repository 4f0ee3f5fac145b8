"""wasinn-lab: run and study WebAssembly wasi-nn guests from Python and Jupyter."""

from . import errors
from .errors import *  # noqa: F403 - the whole exception tree is public
from .host import Host
from .registry import MissingModelWarning, ModelSpec
from .runtime import GuestInstance, RunResult
from .sessions import Generation, Session, SessionManager
from .types import ExecutionTarget, GraphEncoding, Tensor, TensorType

__version__ = "0.1.0"

__all__ = [
    "Host",
    "RunResult",
    "GuestInstance",
    "Session",
    "SessionManager",
    "Generation",
    "ModelSpec",
    "MissingModelWarning",
    "Tensor",
    "TensorType",
    "GraphEncoding",
    "ExecutionTarget",
    *errors.__all__,
    "__version__",
]
