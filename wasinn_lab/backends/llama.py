"""The GGML backend: llama.cpp through llama-cpp-python, with WasmEdge's semantics.

One graph holds one set of weights (per model-level settings), shared by every execution
context made from it; each context owns its llama context, KV cache and sampler. The KV
cache is kept between prompts, so a prompt that extends the previous one evaluates only
its new tokens (WasmEdge re-evaluates the whole conversation every turn).

llama-cpp-python's ``_internals`` wrappers are used because its high-level ``Llama``
ties weights and context together; the dependency is pinned to a minor version for that.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp import _internals
from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

from ..errors import (
    BackendError,
    Busy,
    ContextFull,
    EndOfSequence,
    InvalidArgument,
    InvalidEncoding,
    ModelNotFound,
    PromptTooLong,
)
from ..config import parse_config_json
from ..types import ExecutionTarget, GraphEncoding, Tensor
from . import ggml_devices, llama_options
from .base import GenerationStats, TokenEvent, TokenListener
from .llama_options import Scope

__all__ = ["LlamaBackend", "gpu_offload_supported"]

_CONFIG_INPUT_INDEX = 1  # set_input/get_output index 1 carries config / usage JSON (WasmEdge)
_PENALTY_LAST_N = 64


def gpu_offload_supported() -> bool:
    return bool(llama_cpp.llama_supports_gpu_offload())


# llama.cpp logs through one process-wide callback: it prints while any live context
# has `enable-log` on (the ids of those contexts are kept here).
_logging_contexts: set[int] = set()


@llama_cpp.llama_log_callback
def _llama_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    if _logging_contexts:
        print(text.decode("utf-8", "replace"), end="", file=sys.stderr, flush=True)


llama_cpp.llama_log_set(_llama_log, ctypes.c_void_p(0))


MAX_THREADS = 4 * (os.cpu_count() or 1)
MAX_WEIGHT_COPIES = 4  # per graph: one per distinct set of model-level settings
_GPU_SETTINGS = frozenset({"n-gpu-layers", "main-gpu"})


def _check_sizes(config: Mapping[str, Any], n_ctx_train: int) -> None:
    """Guest-chosen sizes reach llama.cpp's allocators: bound them by the model and machine."""
    if config["ctx-size"] > n_ctx_train:
        raise InvalidArgument(f"ctx-size {config['ctx-size']} is over the model's context length {n_ctx_train}")
    if config["batch-size"] > n_ctx_train or config["ubatch-size"] > n_ctx_train:
        raise InvalidArgument(f"batch-size and ubatch-size can be at most the model's context length {n_ctx_train}")
    if config["threads"] > MAX_THREADS:
        raise InvalidArgument(f"threads {config['threads']} is over {MAX_THREADS} (4 per CPU core here)")


class _NativeContext:
    """A llama context (KV cache and compute buffers) on one model's weights.

    llama-cpp-python's own ``LlamaContext`` puts its ``close`` on the model's exit stack
    for good, so the model keeps every context object it ever had alive: a kernel that
    runs many guests would grow without end. This one is forgotten once closed."""

    def __init__(self, model: _Model, params: llama_cpp.llama_context_params) -> None:
        ctx = llama_cpp.llama_init_from_model(model.native.model, params)
        if ctx is None:
            raise BackendError("llama.cpp could not create a context (out of memory for this ctx-size?)")
        self.ctx = ctx  # the name llama-cpp-python's samplers read
        self._memory = llama_cpp.llama_get_memory(ctx)
        model.contexts.add(self)

    def n_ctx(self) -> int:
        return int(llama_cpp.llama_n_ctx(self.ctx))

    def n_batch(self) -> int:
        return int(llama_cpp.llama_n_batch(self.ctx))

    def decode(self, batch: _internals.LlamaBatch) -> None:
        code = llama_cpp.llama_decode(self.ctx, batch.batch)
        if code != 0:
            raise BackendError(f"llama.cpp failed to decode (llama_decode returned {code})")

    def keep_prefix(self, n_tokens: int) -> bool:
        """Drop the KV cache past its first ``n_tokens``; False if it cannot be cut there."""
        return bool(llama_cpp.llama_memory_seq_rm(self._memory, 0, n_tokens, -1))

    def clear(self) -> None:
        if self._memory is not None:  # non-causal embedding models may have no KV cache
            llama_cpp.llama_memory_clear(self._memory, True)

    def pooled_embedding(self) -> Any:
        return llama_cpp.llama_get_embeddings_seq(self.ctx, 0)

    def close(self) -> None:
        if self.ctx is not None:
            llama_cpp.llama_free(self.ctx)
            self.ctx = self._memory = None


class _Model:
    """Weights loaded once for one set of model-level settings."""

    def __init__(self, path: Path, settings: Mapping[str, Any]) -> None:
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = settings["n-gpu-layers"]
        params.main_gpu = settings["main-gpu"]
        params.use_mmap = settings["use-mmap"]
        try:
            self.native = _internals.LlamaModel(path_model=str(path), params=params, verbose=True)
        except ValueError as exc:
            raise BackendError(f"llama.cpp failed to load {path}: {exc}") from exc
        self.requested_gpu_layers = settings["n-gpu-layers"]
        self.contexts: weakref.WeakSet[_NativeContext] = weakref.WeakSet()  # freed before the weights
        self.n_vocab = self.native.n_vocab()
        self.metadata = self.native.metadata()

    @property
    def n_layers(self) -> int:
        return int(llama_cpp.llama_model_n_layer(self.native.model))

    @property
    def offloaded_layers(self) -> int:
        if not gpu_offload_supported():
            return 0
        total = self.n_layers + 1  # the output layer counts, as in llama.cpp's own report
        requested = self.requested_gpu_layers
        return total if requested < 0 else min(requested, total)

    def piece(self, token: int) -> bytes:
        # llama-cpp-python's token_to_piece returns its whole 32-byte buffer, NULs and
        # all, and truncates longer pieces: ask for the length and size the buffer to it.
        buffer = ctypes.create_string_buffer(64)
        length = llama_cpp.llama_token_to_piece(self.native.vocab, token, buffer, len(buffer), 0, True)
        if length < 0:
            buffer = ctypes.create_string_buffer(-length)
            length = llama_cpp.llama_token_to_piece(self.native.vocab, token, buffer, len(buffer), 0, True)
        return buffer.raw[:length]

    @property
    def has_pooling(self) -> bool:
        return any(key.endswith(".pooling_type") for key in self.metadata)

    def close(self) -> None:
        for context in list(self.contexts):
            context.close()
        self.native.close()


class _LlamaGraph:
    def __init__(self, path: Path, config: Mapping[str, Any], *, owned_file: bool = False) -> None:
        self.path = path
        self._owned_file = owned_file
        self._lock = threading.Lock()
        self._models: dict[tuple[tuple[str, Any], ...], _Model] = {}
        self.model_for({**llama_options.DEFAULTS, **config})

    def model_for(self, config: Mapping[str, Any]) -> _Model:
        settings = llama_options.scoped(config, Scope.MODEL)
        # Without GPU offload, the GPU settings change nothing: no copy of the weights for them.
        key = settings if gpu_offload_supported() else tuple(kv for kv in settings if kv[0] not in _GPU_SETTINGS)
        with self._lock:
            model = self._models.get(key)
            if model is None:
                # Each set of model-level settings is a whole copy of the weights: a guest
                # trying values one after another must not fill the machine's memory.
                if len(self._models) >= MAX_WEIGHT_COPIES:
                    raise Busy(f"{self.path.name} is loaded with {MAX_WEIGHT_COPIES} different model-level settings "
                               "(n-gpu-layers, main-gpu, use-mmap) already; reuse one of them")
                model = self._models[key] = _Model(self.path, dict(settings))
            return model

    def init_execution_context(self, config: Mapping[str, Any]) -> _LlamaContext:
        return _LlamaContext(self, {**llama_options.DEFAULTS, **config})

    def properties(self) -> dict[str, Any]:
        with self._lock:
            model = next(iter(self._models.values()))
            copies = len(self._models)
        native = model.native
        return {
            "backend": "llama.cpp",
            "model_path": str(self.path),
            "model_description": native.desc(),
            "n_params": native.n_params(),
            "model_size_bytes": native.size(),
            "n_ctx_train": native.n_ctx_train(),
            "n_layers": model.n_layers,
            "n_gpu_layers_requested": model.requested_gpu_layers,
            "n_gpu_layers_offloaded": model.offloaded_layers,
            "weight_copies": copies,  # one per distinct set of model-level settings in use
            "metadata": dict(model.metadata),
        }

    def close(self) -> None:
        with self._lock:
            for model in self._models.values():
                model.close()
            self._models.clear()
        if self._owned_file:
            self.path.unlink(missing_ok=True)


class _LlamaContext:
    on_token: TokenListener | None = None

    def __init__(self, graph: _LlamaGraph, config: dict[str, Any]) -> None:
        self._graph = graph
        self._config = config
        self._model: _Model | None = None
        self._native: _NativeContext | None = None
        self._batch: _internals.LlamaBatch | None = None
        self._n_batch = 0
        self._n_ctx = 0
        self._cached: list[int] = []  # tokens whose keys and values are in the KV cache
        self._prompt: list[int] = []
        self._output_tokens: list[int] = []
        self._output = bytearray()
        self._last_piece = b""
        self._pending: int | None = None  # sampled, not yet decoded
        self._sampler: _internals.LlamaSampler | None = None
        self._single_started = False
        self._evaluated = 0
        self._embedding: bytes | None = None
        self._prompt_seconds = 0.0
        self._backend_seconds = 0.0
        self._last_token_time = 0.0
        self._apply_logging()

    def _apply_logging(self) -> None:
        if self._config["enable-log"]:
            _logging_contexts.add(id(self))
        else:
            _logging_contexts.discard(id(self))

    # -- parameters -------------------------------------------------------------------

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self._config)

    def configure(self, options: Mapping[str, Any]) -> None:
        changed = {key for key, value in options.items() if self._config.get(key) != value}
        self._config.update(options)
        scopes = {llama_options.OPTIONS[key].scope for key in changed}
        if Scope.MODEL in scopes:
            self._model = None
        if scopes & {Scope.MODEL, Scope.CONTEXT}:
            self._drop_native()
        if "enable-log" in changed:
            self._apply_logging()

    def _drop_native(self) -> None:
        if self._native is not None:
            self._native.close()
        if self._batch is not None:
            self._batch.close()
        self._native = self._batch = None
        self._cached = []
        self._pending = None

    def prepare(self) -> None:
        self._ensure_native()

    def _ensure_native(self) -> _NativeContext:
        if self._native is not None:
            return self._native
        if self._model is None:
            self._model = self._graph.model_for(self._config)
        cfg = self._config
        _check_sizes(cfg, self._model.native.n_ctx_train())
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = cfg["ctx-size"]  # 0: the model's own context length
        params.n_batch = cfg["batch-size"]
        params.n_ubatch = min(cfg["ubatch-size"], cfg["batch-size"])
        params.n_threads = params.n_threads_batch = cfg["threads"]
        params.swa_full = True  # a sliding-window cache cannot keep a prefix for reuse
        if cfg["embedding"]:
            params.embeddings = True
            if not self._model.has_pooling:
                params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
            # Pooled embeddings need the whole prompt in one micro-batch.
            params.n_batch = params.n_ubatch = cfg["ctx-size"] or self._model.native.n_ctx_train()
        self._native = native = _NativeContext(self._model, params)
        # llama.cpp pads n_ctx up (to 256) but clamps n_batch to the size asked for:
        # chunk by the batch it really has (a larger chunk aborts the process), and hold
        # the context to the size the user asked for.
        self._n_batch = native.n_batch()
        self._n_ctx = min(cfg["ctx-size"] or native.n_ctx(), native.n_ctx())
        self._batch = _internals.LlamaBatch(n_tokens=self._n_batch, embd=0, n_seq_max=1, verbose=False)
        return self._native

    # -- inputs and outputs ---------------------------------------------------------------

    def set_input(self, index: int, tensor: Tensor) -> None:
        if index == _CONFIG_INPUT_INDEX:
            self.configure(llama_options.normalize(parse_config_json(tensor.data)))
            return
        try:
            tensor.data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgument(f"the prompt is not valid UTF-8: {exc}") from exc
        model = self._model or self._graph.model_for(self._config)
        self._model = model
        self._prompt = model.native.tokenize(tensor.data, add_bos=True, special=True)
        self._prompt_seconds = self._backend_seconds = 0.0
        self._output_tokens = []
        self._output = bytearray()
        self._last_piece = b""
        self._single_started = False
        self._evaluated = 0
        self._embedding = None

    def get_output(self, index: int) -> bytes:
        if index == _CONFIG_INPUT_INDEX:
            return self._usage()
        if self._embedding is not None:
            return self._embedding
        return bytes(self._output)

    def get_output_single(self, index: int) -> bytes:
        if index == _CONFIG_INPUT_INDEX:
            return self._usage()
        return self._last_piece

    def _usage(self) -> bytes:
        return json.dumps(
            {
                "input_tokens": len(self._prompt),
                "output_tokens": len(self._output_tokens),
                "llama_build_number": 0,
                "llama_commit": f"llama-cpp-python-{llama_cpp.__version__}",
            }
        ).encode()

    def stats(self) -> GenerationStats:
        return GenerationStats(
            input_tokens=len(self._prompt),
            evaluated_tokens=self._evaluated,
            output_tokens=len(self._output_tokens),
            prompt_seconds=self._prompt_seconds,
            backend_seconds=self._backend_seconds,
        )

    # -- generation -----------------------------------------------------------------------

    def compute(self) -> None:
        if self._config["embedding"]:
            self._embed()
            return
        self._start_generation()
        n_predict = self._config["n-predict"]
        reverse_prompt = self._config["reverse-prompt"].encode()
        while n_predict < 0 or len(self._output_tokens) < n_predict:
            try:
                self._next_token(single=False)
            except EndOfSequence:
                return
            if reverse_prompt and reverse_prompt in self._output:
                return

    def compute_single(self) -> None:
        if not self._single_started:
            self._start_generation()
            self._single_started = True
        n_predict = self._config["n-predict"]
        # WasmEdge leaves single mode unbounded; we apply n-predict so guests that set
        # nothing still finish on a base model that rarely ends by itself.
        if 0 <= n_predict <= len(self._output_tokens):
            self._single_started = False
            raise EndOfSequence(f"n-predict ({n_predict}) tokens generated")
        try:
            self._next_token(single=True)
        except (EndOfSequence, ContextFull):
            self._single_started = False
            raise

    def fini_single(self) -> None:
        self._single_started = False

    def _start_generation(self) -> None:
        if not self._prompt:
            raise InvalidArgument("no prompt: set input 0 before compute")
        self._output_tokens = []
        self._output = bytearray()
        self._last_piece = b""
        started = time.perf_counter()
        self._evaluate_prompt()
        if self._sampler is not None:
            self._sampler.close()
        self._sampler = self._make_sampler()
        self._prompt_seconds = self._backend_seconds = time.perf_counter() - started

    def _evaluate_prompt(self) -> None:
        native = self._ensure_native()
        n_ctx = self._n_ctx
        prompt = self._prompt
        if len(prompt) >= n_ctx:
            raise PromptTooLong(f"the prompt has {len(prompt)} tokens; the context holds {n_ctx}")
        keep = 0
        for cached, wanted in zip(self._cached if self._config["cache-prompt"] else [], prompt):
            if cached != wanted:
                break
            keep += 1
        keep = min(keep, len(prompt) - 1)  # the last prompt token is evaluated again for its logits
        if not native.keep_prefix(keep):
            native.clear()
            keep = 0
        self._cached = prompt[:keep]
        self._pending = None
        self._decode(prompt[keep:])
        self._evaluated = len(prompt) - keep

    def _decode(self, tokens: Sequence[int]) -> None:
        assert self._native is not None and self._batch is not None
        step = self._n_batch
        for start in range(0, len(tokens), step):
            chunk = tokens[start : start + step]
            self._batch.set_batch(chunk, n_past=len(self._cached), logits_all=False)
            self._native.decode(self._batch)
            self._cached.extend(chunk)

    def _make_sampler(self) -> _internals.LlamaSampler:
        cfg = self._config
        assert self._model is not None
        sampler = _internals.LlamaSampler()
        grammar = cfg["grammar"]
        if cfg["json-schema"]:
            try:
                grammar = json_schema_to_gbnf(cfg["json-schema"])
            except (ValueError, KeyError, TypeError) as exc:
                raise InvalidArgument(f"json-schema is not a usable JSON schema: {exc}") from exc
        if grammar:
            try:
                sampler.add_grammar(self._model.native, LlamaGrammar.from_string(grammar, verbose=False))
            except ValueError as exc:
                raise InvalidArgument(f"grammar does not parse: {exc}") from exc
        sampler.add_penalties(
            self._model.n_vocab,
            _PENALTY_LAST_N,
            cfg["repeat-penalty"],
            cfg["frequency-penalty"],
            cfg["presence-penalty"],
        )
        if cfg["temp"] <= 0:
            sampler.add_greedy()
        else:
            sampler.add_top_k(cfg["top-k"])
            sampler.add_top_p(cfg["top-p"], 1)
            sampler.add_min_p(cfg["min-p"], 1)
            sampler.add_temp(cfg["temp"])
            sampler.add_dist(cfg["seed"])
        return sampler

    def _next_token(self, *, single: bool) -> None:
        started = time.perf_counter()
        try:
            self._step()
        finally:
            self._backend_seconds += time.perf_counter() - started
        if self.on_token is not None:
            self.on_token(TokenEvent(self._last_piece, self._output_tokens[-1], single, self._last_token_time))

    def _step(self) -> None:
        """Decode the pending token, then sample the next one."""
        native = self._native
        assert native is not None and self._sampler is not None and self._model is not None
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._decode([pending])
        if len(self._cached) >= self._n_ctx:
            raise ContextFull(f"the context of {self._n_ctx} tokens is full")
        token = self._sampler.sample(native, -1)
        if llama_cpp.llama_vocab_is_eog(self._model.native.vocab, token):
            raise EndOfSequence("end of generation")
        self._last_token_time = time.perf_counter()
        piece = self._model.piece(token)
        self._pending = token
        self._output_tokens.append(token)
        self._output += piece
        self._last_piece = piece

    def _embed(self) -> None:
        if not self._prompt:
            raise InvalidArgument("no prompt: set input 0 before compute")
        native = self._ensure_native()
        if len(self._prompt) > self._n_ctx:
            raise PromptTooLong(f"the prompt has {len(self._prompt)} tokens; the context holds {self._n_ctx}")
        started = time.perf_counter()
        native.clear()
        self._cached = []
        self._decode(self._prompt)
        self._cached = []  # embeddings are not continued: the next prompt starts afresh
        native.clear()
        self._evaluated = len(self._prompt)
        assert self._model is not None
        n_embd = self._model.native.n_embd()
        pointer = native.pooled_embedding()
        if not pointer:
            raise BackendError("llama.cpp returned no pooled embedding")
        values = pointer[:n_embd]
        norm = math.sqrt(sum(v * v for v in values)) or 1.0
        self._embedding = json.dumps({"n_embedding": n_embd, "embedding": [v / norm for v in values]}).encode()
        self._prompt_seconds = self._backend_seconds = time.perf_counter() - started

    def close(self) -> None:
        _logging_contexts.discard(id(self))
        self._drop_native()
        if self._sampler is not None:
            self._sampler.close()
            self._sampler = None


class LlamaBackend:
    encoding = GraphEncoding.GGML

    def normalize_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        return llama_options.normalize(config)

    def load(self, builders: Sequence[bytes], target: ExecutionTarget, staging_dir: Path) -> _LlamaGraph:
        if len(builders) != 1:
            raise InvalidArgument(f"a GGML graph is built from exactly one GGUF buffer, got {len(builders)}")
        if not builders[0].startswith(b"GGUF"):
            raise InvalidEncoding("the buffer is not a GGUF file (no GGUF magic)")
        # llama.cpp loads from a path: stage the bytes; the graph removes the file.
        with tempfile.NamedTemporaryFile(dir=staging_dir, prefix="model-", suffix=".gguf", delete=False) as staged:
            staged.write(builders[0])
        try:
            return _LlamaGraph(Path(staged.name), {}, owned_file=True)
        except BaseException:
            Path(staged.name).unlink(missing_ok=True)
            raise

    def load_file(self, path: Path, target: ExecutionTarget, config: Mapping[str, Any]) -> _LlamaGraph:
        if not path.is_file():
            raise ModelNotFound(f"model file {path} does not exist")
        return _LlamaGraph(path, config)

    def properties(self) -> dict[str, Any]:
        return {
            "backend": "llama.cpp",
            "llama_cpp_python_version": llama_cpp.__version__,
            "gpu_offload_supported": gpu_offload_supported(),
            "max_devices": int(llama_cpp.llama_max_devices()),
            "devices": ggml_devices.devices(),
            "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
        }
