"""wasinn-lab: run and study WebAssembly wasi-nn guests from Python and Jupyter."""

from .errors import (
    BackendError,
    Busy,
    ConfigError,
    ContextFull,
    EndOfSequence,
    GuestBuildError,
    GuestError,
    GuestExitError,
    GuestLoadError,
    GuestTrap,
    InvalidArgument,
    InvalidEncoding,
    MissingMemory,
    ModelNotFound,
    NNError,
    NotFound,
    PromptTooLong,
    TooLarge,
    UnsupportedOperation,
    WasiNNLabError,
)
from .host import Host
from .registry import MissingModelWarning, ModelSpec
from .runtime import RunResult
from .sessions import Session, SessionManager
from .types import ExecutionTarget, GraphEncoding, Tensor, TensorType

__version__ = "0.1.0"

__all__ = [
    "Host",
    "RunResult",
    "Session",
    "SessionManager",
    "ModelSpec",
    "MissingModelWarning",
    "Tensor",
    "TensorType",
    "GraphEncoding",
    "ExecutionTarget",
    "WasiNNLabError",
    "ConfigError",
    "GuestError",
    "GuestLoadError",
    "GuestTrap",
    "GuestExitError",
    "GuestBuildError",
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
    "__version__",
]
