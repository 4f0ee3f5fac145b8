"""A GGML graph: a model file and its default config. It keeps its weights loaded (a
second load of the name costs nothing) until it is closed; contexts made from it hold
weights of their own, so they outlive it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...options import Scope
from .context import LlamaContext
from .options import OPTIONS
from .weights import Weights, gpu_offload_supported, weights_cache

__all__ = ["LlamaGraph"]


class LlamaGraph:
    def __init__(self, path: Path, config: Mapping[str, Any], *, owned_file: bool = False) -> None:
        self.path = path
        self._owned_file = owned_file
        self._settings = OPTIONS.scoped({**OPTIONS.defaults, **config}, Scope.MODEL)
        self._weights: Weights | None = weights_cache.acquire(path, self._settings)  # a model that does not load fails here
        self.n_ctx_train = self._weights.n_ctx_train

    def init_execution_context(self, config: Mapping[str, Any]) -> LlamaContext:
        context = LlamaContext(self, {**OPTIONS.defaults, **config})
        context.check({})  # sizes a guest chose reach llama.cpp's allocators: bound them first
        return context

    def properties(self) -> dict[str, Any]:
        weights = self._weights or weights_cache.acquire(self.path, self._settings)
        try:
            native = weights.native
            return {
                "backend": "llama.cpp",
                "model_path": str(self.path),
                "model_description": native.desc(),
                "n_params": native.n_params(),
                "model_size_bytes": native.size(),
                "n_ctx_train": weights.n_ctx_train,
                "n_layers": weights.n_layers,
                "n_gpu_layers_requested": weights.requested_gpu_layers,
                "n_gpu_layers_offloaded": weights.offloaded_layers,  # as llama.cpp placed them
                "layer_devices": list(weights.layer_devices),
                "gpu_offload_supported": gpu_offload_supported(),
                "weight_copies": weights_cache.copies(self.path),  # one per distinct model-level settings in use
                "metadata": dict(weights.metadata),
            }
        finally:
            if weights is not self._weights:
                weights_cache.release(weights)

    def close(self) -> None:
        if self._weights is not None:
            weights, self._weights = self._weights, None
            weights_cache.release(weights)
        if self._owned_file:
            self.path.unlink(missing_ok=True)
