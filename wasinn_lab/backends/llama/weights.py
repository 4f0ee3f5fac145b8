"""Model weights, loaded once per file and set of model-level settings for the whole
process, and shared by every graph and context that uses them.

A guest that loops load, compute, unload, or many guests and hosts loading the same
model, share one copy: the cache hands out references and frees the weights when the
last one is given back. At most ``MAX_WEIGHT_COPIES`` different model-level settings
of one file live at once, so a guest trying values one after another cannot fill the
machine's memory.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import llama_cpp
from llama_cpp import _internals

from ...errors import BackendError, Busy
from ...singleflight import SingleFlight
from . import log
from .devices import devices

if TYPE_CHECKING:
    from .native import NativeContext

__all__ = ["Weights", "WeightsCache", "MAX_WEIGHT_COPIES", "gpu_offload_supported", "weights_cache"]

MAX_WEIGHT_COPIES = 4  # per model file: one per distinct set of model-level settings in use
_GPU_SETTINGS = frozenset({"n-gpu-layers", "main-gpu"})
_Key = tuple[str, tuple[tuple[str, Any], ...]]  # the file's real path, the model-level settings
# llama.cpp's debug line for each layer as it assigns it a device (src/llama-model.cpp).
_LAYER_PLACED = re.compile(r"load_tensors: layer +(\d+) assigned to device (\S+),")


def gpu_offload_supported() -> bool:
    return bool(llama_cpp.llama_supports_gpu_offload())


class Weights:
    """One load of a model file with one set of model-level settings."""

    def __init__(self, path: Path, settings: Mapping[str, Any]) -> None:
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = settings["n-gpu-layers"]
        params.main_gpu = settings["main-gpu"]
        # llama-cpp-python 0.3.36's params have no use_mmap (ctypes would take it silently):
        # llama.cpp's load mode says it.
        params.load_mode = llama_cpp.LLAMA_LOAD_MODE_AUTO if settings["use-mmap"] else llama_cpp.LLAMA_LOAD_MODE_NONE
        log.acquire()
        native: _internals.LlamaModel | None = None
        report: list[str] = []
        try:
            with log.Section(False, record=report):
                # verbose=True: llama-cpp-python otherwise redirects the process's file
                # descriptors while it loads; its log is ours to filter anyway.
                native = _internals.LlamaModel(path_model=str(path), params=params, verbose=True)
            self.n_vocab = native.n_vocab()
            self.n_ctx_train = native.n_ctx_train()
            self.metadata = native.metadata()
        except BaseException as exc:  # a Ctrl-C during the load too: no model, no log callback left behind
            if native is not None:
                with log.Section(False):
                    native.close()
            log.release()
            if isinstance(exc, ValueError):
                raise BackendError(f"llama.cpp failed to load {path}: {exc}") from exc
            raise
        self.native = native
        self.vocab = native.vocab
        self.path = path
        self.requested_gpu_layers = settings["n-gpu-layers"]
        self.layer_devices = _layer_devices(report)
        self.contexts: weakref.WeakSet[NativeContext] = weakref.WeakSet()  # freed before the weights
        self.references = 0

    @property
    def n_layers(self) -> int:
        return int(llama_cpp.llama_model_n_layer(self.native.model))

    @property
    def offloaded_layers(self) -> int:
        """The layers llama.cpp put on a device other than the CPU (the output layer counts)."""
        cpus = {device["name"] for device in devices() if device["type"] == "cpu"}
        return sum(1 for device in self.layer_devices if device not in cpus)

    @property
    def has_pooling(self) -> bool:
        return any(key.endswith(".pooling_type") for key in self.metadata)

    def tokenize(self, text: bytes) -> list[int]:
        return self.native.tokenize(text, add_bos=True, special=True)

    def piece(self, token: int) -> bytes:
        # llama-cpp-python's token_to_piece returns its whole 32-byte buffer, NULs and
        # all, and truncates longer pieces: ask for the length and size the buffer to it.
        buffer = ctypes.create_string_buffer(64)
        length = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, True)
        if length < 0:
            buffer = ctypes.create_string_buffer(-length)
            length = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, True)
        return buffer.raw[:length]

    def is_end_of_generation(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    @functools.cached_property
    def end_of_generation_tokens(self) -> list[int]:
        """Every token that ends a generation (asked of each token once, as llama.cpp's
        own tools do for ignore-eos)."""
        return [token for token in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self.vocab, token)]

    def close(self) -> None:
        for context in list(self.contexts):
            context.close()
        with log.Section(False):
            self.native.close()
        log.release()


def _layer_devices(report: list[str]) -> list[str]:
    """The device of each layer, the output layer last, from llama.cpp's load log: its
    public API does not say where it put them."""
    placed = {int(match[1]): match[2] for match in map(_LAYER_PLACED.match, report) if match}
    return [placed[index] for index in sorted(placed)]


class WeightsCache:
    def __init__(self) -> None:
        self._loaded: dict[_Key, Weights] = {}
        self._lock = threading.Lock()
        self._loads: SingleFlight[_Key, Weights] = SingleFlight(self._lock)

    @staticmethod
    def _key(path: Path, settings: tuple[tuple[str, Any], ...]) -> _Key:
        # Without GPU offload, the GPU settings change nothing: no copy of the weights for them.
        if not gpu_offload_supported():
            settings = tuple(item for item in settings if item[0] not in _GPU_SETTINGS)
        return os.path.realpath(path), settings

    def acquire(self, path: Path, settings: tuple[tuple[str, Any], ...]) -> Weights:
        """A reference to the weights of ``path`` with these model-level settings, loaded
        if no one holds them now; give it back with ``release``. They load without the
        cache's lock: other weights are handed out meanwhile, and a second user of
        these waits for them rather than loading a copy of its own."""
        key = self._key(path, settings)

        def take() -> Weights | None:
            weights = self._loaded.get(key)
            if weights is not None:
                weights.references += 1
            return weights

        def room() -> None:
            copies = sum(1 for file, _ in [*self._loaded, *self._loads.under_way()] if file == key[0])
            if copies >= MAX_WEIGHT_COPIES:
                raise Busy(f"{path.name} is loaded with {MAX_WEIGHT_COPIES} different model-level settings "
                           "(n-gpu-layers, main-gpu, use-mmap) already; reuse one of them")

        def keep(weights: Weights) -> None:
            weights.references = 1
            self._loaded[key] = weights

        return self._loads.get(key, take, lambda: Weights(path, dict(settings)), keep, room)

    def release(self, weights: Weights) -> None:
        with self._lock:
            weights.references -= 1
            if weights.references > 0:
                return
            for key, loaded in list(self._loaded.items()):
                if loaded is weights:
                    del self._loaded[key]
        weights.close()

    def copies(self, path: Path) -> int:
        """How many sets of model-level settings of this file are loaded now."""
        with self._lock:
            return sum(1 for file, _ in self._loaded if file == os.path.realpath(path))

    def loaded(self) -> list[Weights]:
        with self._lock:
            return list(self._loaded.values())


weights_cache = WeightsCache()  # one for the process: its references are its owners
