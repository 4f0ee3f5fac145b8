"""The GGML backend: llama.cpp through llama-cpp-python, with WasmEdge's semantics.

Weights load once per file and model-level settings for the process and are shared
(``weights``); each execution context that generates is a sequence of a pool, one llama
context for every context of the same weights and settings (``pool``), with its own KV
cache and sampler (``context``); the scheduler decodes all their tokens together
(``scheduler``). llama-cpp-python's ``_internals`` wrappers are used because its
high-level ``Llama`` ties weights and context together; the dependency is pinned to a
minor version for that.
"""

from __future__ import annotations

import atexit
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp import _utils

from ...errors import InvalidArgument, InvalidEncoding, ModelNotFound
from ...types import ExecutionTarget, GraphEncoding
from ..base import PROMPT
from . import devices
from .compute import ComputeThread, compute_thread
from .graph import LlamaGraph
from .log import logged
from .options import OPTIONS
from .weights import MAX_WEIGHT_COPIES, gpu_offload_supported

# For code that drives llama.cpp itself next to the host (the benchmarks' baselines):
# compute_thread, the thread every decode runs on (hold it, run on it), and logged(), so
# that what llama.cpp logs for it goes to Python logging as the host's own does.
__all__ = ["LlamaBackend", "gpu_offload_supported", "MAX_WEIGHT_COPIES", "ComputeThread", "compute_thread", "logged"]


@atexit.register
def _close_llama_cpp_devnull() -> None:
    """llama-cpp-python opens os.devnull twice as it is imported, for its output
    suppression while a model loads (never asked for here: loads are verbose=True and
    log.py filters), and never closes them: at exit Python would report each as a
    ResourceWarning wherever those are shown (after any warning, or under -W). Closed
    once the interpreter is ending, when nothing loads a model any more."""
    _utils.outnull_file.close()
    _utils.errnull_file.close()


class LlamaBackend:
    encoding = GraphEncoding.GGML
    options = OPTIONS
    inputs: tuple[str, ...] | None = (PROMPT,)
    build = f"llama-cpp-python-{llama_cpp.__version__}"

    def load(self, builders: Sequence[bytes], target: ExecutionTarget, staging_dir: Path) -> LlamaGraph:
        if len(builders) != 1:
            raise InvalidArgument(f"a GGML graph is built from exactly one GGUF buffer, got {len(builders)}")
        if not builders[0].startswith(b"GGUF"):
            raise InvalidEncoding("the buffer is not a GGUF file (no GGUF magic)")
        # llama.cpp loads from a path: stage the bytes; the graph removes the file.
        with tempfile.NamedTemporaryFile(dir=staging_dir, prefix="model-", suffix=".gguf", delete=False) as staged:
            staged.write(builders[0])
        try:
            return LlamaGraph(Path(staged.name), {}, owned_file=True)
        except BaseException:
            Path(staged.name).unlink(missing_ok=True)
            raise

    def load_file(self, path: Path, target: ExecutionTarget, config: Mapping[str, Any]) -> LlamaGraph:
        if not path.is_file():
            raise ModelNotFound(f"model file {path} does not exist")
        return LlamaGraph(path, config)

    def properties(self) -> dict[str, Any]:
        return {
            "backend": "llama.cpp",
            "llama_cpp_python_version": llama_cpp.__version__,
            "gpu_offload_supported": gpu_offload_supported(),
            "max_devices": int(llama_cpp.llama_max_devices()),
            "devices": devices.devices(),
            "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
        }
