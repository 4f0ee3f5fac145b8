"""Our text interface, ``wasinn:llm@0.1.1`` (guests/wit/llm.wit), for components.

Marshalling only, like the other front-ends: graphs and contexts are the guest's wasi-nn
state (``GuestNN``) and its sessions; a generation is a session's token stream, pulled a
chunk at a time, which ends for the reason its session gives. Every call goes through the
guest's boundary (``GuestNN.boundary``); errors are records whose code comes from one
table, ``_CODES``.

``wasinn:llm/preview1`` (guests/wit/preview1.wit) is the few calls the ``wasi_ephemeral_nn``
adapter (wasinn_lab/adapters/) needs besides the rest: loads whose errors keep the host's
error kind (table ``_KINDS``), unload, a JSON config, an embedding. The adapter holds
preview1's wire formats, but for the config and embedding JSON (``conventions``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import wasmtime
from wasmtime import component as cm

from ..backends.base import EMBEDDING, PROMPT, TEXT, Usage
from ..errors import (
    BackendError,
    Busy,
    ContextFull,
    InvalidArgument,
    InvalidEncoding,
    ModelNotFound,
    NNError,
    NotFound,
    PromptTooLong,
    TooLarge,
    UnsupportedOperation,
)
from ..nn import GuestNN, code_for
from ..sessions import Session, Token
from ..types import ExecutionTarget, GraphEncoding
from .conventions import embedding_json, parse_config, prompt_tensor
from .resources import ResourceKind, Resources

__all__ = ["LLM", "VERSION", "PACKAGE", "STDIN_TURNS", "error_code_for", "kind_for"]

VERSION = "0.1.1"
PACKAGE = f"wasinn:llm@{VERSION}"
STDIN_TURNS = f"wasinn:llm/stdin-turns@{VERSION}"  # exported by a guest that reads turns from stdin
log = logging.getLogger(__name__)

_CODES: dict[type[NNError], str] = {
    InvalidArgument: "invalid-argument",
    NotFound: "not-found",
    ModelNotFound: "not-found",
    UnsupportedOperation: "unsupported-operation",
    Busy: "busy",
    TooLarge: "too-large",
    PromptTooLong: "too-large",
    ContextFull: "too-large",
}


def error_code_for(exc: NNError) -> str:
    return code_for(_CODES, exc, "runtime-error")


# wasinn:llm/preview1's error-kind: one case per class of the error tree.
_KINDS: dict[type[NNError], str] = {
    InvalidArgument: "invalid-argument",
    InvalidEncoding: "invalid-encoding",
    Busy: "busy",
    BackendError: "runtime-error",
    UnsupportedOperation: "unsupported-operation",
    TooLarge: "too-large",
    NotFound: "not-found",
    ContextFull: "context-full",
    PromptTooLong: "prompt-too-long",
    ModelNotFound: "model-not-found",
}


def kind_for(exc: NNError) -> str:
    return code_for(_KINDS, exc, "runtime-error")


class _Refused(NNError):
    """A parameter or property the guest named is not there, or not to be changed."""

    def __init__(self, code: str, message: str, name: str) -> None:
        super().__init__(message)
        self.code = code
        self.name = name


def _error(exc: NNError) -> cm.Record:
    if isinstance(exc, _Refused):
        return _record(code=exc.code, message=str(exc), name=exc.name)
    return _record(code=error_code_for(exc), message=str(exc), name=None)


def _record(**fields: Any) -> cm.Record:
    """wasmtime-py reads record fields under their WIT names, dashes and all."""
    record = cm.Record()
    for key, value in fields.items():
        setattr(record, key.replace("_", "-"), value)
    return record


def _strings(properties: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Properties as WIT key-value strings: nested ones under dotted keys, lists as JSON."""
    flat: list[tuple[str, str]] = []
    for key, value in properties.items():
        name = prefix + key.replace("_", "-")
        if isinstance(value, dict):
            flat += _strings(value, f"{name}.")
        elif isinstance(value, (list, tuple)):
            flat.append((name, json.dumps(value)))
        else:
            flat.append((name, str(value).lower() if isinstance(value, bool) else str(value)))
    return flat


@dataclass
class _Generation:
    context: int
    started: float
    finish: str | None = None  # a finish-reason, once it is over
    ended: float | None = None
    last: Usage | None = None  # the usage it ended with (its context may be gone since)

    def end(self, finish: str, usage: Usage) -> None:
        if self.finish is None:
            self.finish, self.ended, self.last = finish, time.perf_counter(), usage


class LLM:
    """The ``wasinn:llm`` interfaces for one component instance (``types`` has no
    functions: nothing to define for it, but a guest may import it)."""

    INTERFACES = tuple(f"wasinn:llm/{name}@{VERSION}"
                       for name in ("types", "backends", "prompt", "tokens", "graphs", "preview1"))

    def __init__(self, nn: GuestNN, resources: Resources) -> None:
        self._nn = nn
        self._resources = resources
        self._current: dict[int, _Generation] = {}  # context -> its latest generation
        self.graph = ResourceKind("graph", 11, nn.drop_graph)
        self.context = ResourceKind("context", 12, self._finalize)
        self.generation = ResourceKind("generation", 13, self._cancel)

    def define(self, root: cm.LinkerInstance, shield: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        resources = self._resources
        with root.add_instance(f"wasinn:llm/backends@{VERSION}") as instance:
            instance.add_func("list-backends", shield(lambda store: list(self._nn.backends())))
            instance.add_func("backend-properties", shield(self._result(self._backend_properties)))
        with root.add_instance(f"wasinn:llm/prompt@{VERSION}") as instance:
            resources.define(instance, self.context)
            resources.define(instance, self.generation)
            for name, call in (("list-parameters", self._list_parameters), ("get-parameter", self._get_parameter),
                               ("set-parameter", self._result(self._set_parameter)),
                               ("compute", self._result(self._compute)), ("generate", self._result(self._generate)),
                               ("fork", self._result(self._fork))):
                instance.add_func(f"[method]context.{name}", shield(call))
            for name, call in (("next-chunk", self._result(self._next_chunk, tagged=True)),
                               ("cancel", self._cancel_handle), ("usage", self._usage)):
                instance.add_func(f"[method]generation.{name}", shield(call))
        with root.add_instance(f"wasinn:llm/tokens@{VERSION}") as instance:
            instance.add_func("next-token", shield(self._result(self._next_token, tagged=True)))
        with root.add_instance(f"wasinn:llm/graphs@{VERSION}") as instance:
            resources.define(instance, self.graph)
            for name, call in (("list-properties", self._list_properties), ("get-property", self._get_property),
                               ("set-property", self._result(self._set_property)),
                               ("init-context", self._result(self._init_context))):
                instance.add_func(f"[method]graph.{name}", shield(call))
            instance.add_func("load-by-name", shield(self._result(self._load_by_name)))
        with root.add_instance(f"wasinn:llm/preview1@{VERSION}") as instance:
            for name, call in (("load-by-name", self._p1_load_by_name), ("load", self._p1_load),
                               ("unload", self._p1_unload), ("configure", self._p1_configure),
                               ("embed", self._p1_embed)):
                instance.add_func(name, shield(self._kind_result(name, call)))

    # -- results: every failure an error record ---------------------------------------------

    def _result(self, call: Callable[..., Any], *, tagged: bool = False) -> Callable[..., Any]:
        """``result<T, error>``: T never a record, so the error is told apart without a
        Variant, unless ``tagged`` (``next-chunk``'s ``option<string>`` needs one)."""
        name = f"wasinn:llm {call.__name__.strip('_').replace('_', '-')}"
        if not tagged:
            return self._nn.boundary(name, call, _error)
        return self._nn.boundary(name, call, lambda error: cm.Variant("err", _error(error)))

    def _kind_result(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        """``result<T, error-kind>`` (wasinn:llm/preview1): the error tree's own kind."""
        return self._nn.boundary(f"wasinn:llm preview1.{name}",
                                 lambda store, *args: cm.Variant("ok", call(store, *args)),
                                 lambda error: cm.Variant("err", kind_for(error)))

    # -- backends and graphs ----------------------------------------------------------------

    def _backend_properties(self, store: wasmtime.StoreContext, name: str) -> list[tuple[str, str]]:
        backends = self._nn.backends()
        if name not in backends:
            raise _Refused("not-found", f"no backend named {name!r}; there are: {', '.join(backends)}", name)
        return _strings(backends[name])

    def _load_by_name(self, store: wasmtime.StoreContext, name: str) -> cm.ResourceHost:
        try:
            return self._resources.add(self.graph, self._nn.load_by_name(name))
        except NotFound as exc:
            raise _Refused("not-found", str(exc), name) from None

    def _properties(self, store: wasmtime.StoreContext, graph: cm.ResourceAny) -> dict[str, str]:
        loaded = self._nn.graph(self._resources.get(store, graph, self.graph))
        properties = loaded.graph.properties()
        metadata = properties.pop("metadata", {})
        flat = {"build": loaded.backend.build, **dict(_strings(properties, "model."))}
        flat["backend"] = str(properties.get("backend", loaded.backend.encoding.value))
        flat.pop("model.backend", None)
        return {**flat, **{key: str(value) for key, value in metadata.items()}}

    def _list_properties(self, store: wasmtime.StoreContext, graph: cm.ResourceAny) -> list[tuple[str, str]]:
        return list(self._properties(store, graph).items())

    def _get_property(self, store: wasmtime.StoreContext, graph: cm.ResourceAny, key: str) -> str | None:
        return self._properties(store, graph).get(key)

    def _set_property(self, store: wasmtime.StoreContext, graph: cm.ResourceAny, key: str, value: str) -> None:
        if key not in self._properties(store, graph):
            raise _Refused("invalid-parameter", f"no property {key!r}", key)
        raise _Refused("unsupported-operation", f"property {key!r} describes the model: it is read-only", key)

    def _init_context(self, store: wasmtime.StoreContext, graph: cm.ResourceAny) -> cm.ResourceHost:
        handle = self._resources.get(store, graph, self.graph)
        loaded = self._nn.graph(handle)
        if loaded.backend.inputs is None:
            raise UnsupportedOperation(f"model {loaded.model!r} has no text to generate: use wasi:nn tensors")
        return self._resources.add(self.context, self._nn.init_execution_context(handle))

    # -- parameters ---------------------------------------------------------------------------

    def _session(self, store: wasmtime.StoreContext, context: cm.ResourceAny) -> tuple[int, Session]:
        handle = self._resources.get(store, context, self.context)
        return handle, self._nn.context(handle)

    def _list_parameters(self, store: wasmtime.StoreContext, context: cm.ResourceAny) -> list[tuple[str, Any]]:
        return list(self._session(store, context)[1].parameters.items())

    def _get_parameter(self, store: wasmtime.StoreContext, context: cm.ResourceAny, name: str) -> Any:
        session = self._session(store, context)[1]
        option = session.options.lookup(name)
        return None if option is None else session.parameters.get(option.name)

    def _set_parameter(self, store: wasmtime.StoreContext, context: cm.ResourceAny, name: str, value: Any) -> None:
        session = self._session(store, context)[1]
        try:
            session.set({name: value})
        except InvalidArgument as exc:
            raise _Refused("invalid-parameter", str(exc), name) from None

    # -- generating ---------------------------------------------------------------------------

    def _compute(self, store: wasmtime.StoreContext, context: cm.ResourceAny, prompt: str) -> str:
        handle, session = self._session(store, context)
        self._end(handle, "cancelled")
        outputs = session.compute({PROMPT: prompt_tensor(prompt)})
        if TEXT not in outputs:
            raise UnsupportedOperation("this context makes embeddings, not text: set `embedding` false to generate")
        return outputs[TEXT].data.decode("utf-8", "replace")

    def _generate(self, store: wasmtime.StoreContext, context: cm.ResourceAny, prompt: str) -> cm.ResourceHost:
        handle, session = self._session(store, context)
        self._end(handle, "cancelled")  # a new input ends the generation under way
        started = time.perf_counter()
        session.set_input(PROMPT, prompt_tensor(prompt))
        session.start_generation()
        generation = self._current[handle] = _Generation(handle, started)
        return self._resources.add(self.generation, generation)

    def _fork(self, store: wasmtime.StoreContext, context: cm.ResourceAny) -> cm.ResourceHost:
        handle = self._resources.get(store, context, self.context)
        return self._resources.add(self.context, self._nn.fork_context(handle))

    def _next_chunk(self, store: wasmtime.StoreContext, handle: cm.ResourceAny) -> cm.Variant:
        """``result<option<string>, error>``: its error needs an explicit Variant (the
        component_values override makes wasmtime-py take one)."""
        generation, session = self._pulling(store, handle)
        while session is not None:  # whole characters only: a token that ends inside one gives no text
            token = self._pull(generation, session)
            if token is None:
                break
            if token.text:
                return cm.Variant("ok", token.text)
        return cm.Variant("ok", None)

    def _next_token(self, store: wasmtime.StoreContext, handle: cm.ResourceAny) -> cm.Variant:
        """``result<option<token-info>, error>``: one token and its details (NaN, rank 0
        and no alternatives where the parameter logprobs is 0)."""
        generation, session = self._pulling(store, handle)
        token = self._pull(generation, session) if session is not None else None
        if token is None:
            return cm.Variant("ok", None)
        details = token.details
        if details is None:
            return cm.Variant("ok", _record(text=token.text, logprob=math.nan, probability=math.nan, rank=0,
                                            entropy=math.nan, top=[]))
        return cm.Variant("ok", _record(text=token.text, logprob=details.logprob, probability=details.probability,
                                        rank=details.rank, entropy=details.entropy, top=list(details.top)))

    def _pulling(self, store: wasmtime.StoreContext, handle: cm.ResourceAny) -> tuple[_Generation, Session | None]:
        """The generation, and its session if it is the context's latest and unfinished."""
        generation: _Generation = self._resources.get(store, handle, self.generation)
        if generation.finish is not None or self._current.get(generation.context) is not generation:
            return generation, None
        return generation, self._nn.context(generation.context)

    def _pull(self, generation: _Generation, session: Session) -> Token | None:
        """The session's next token; None once it has ended, which ends the generation."""
        try:
            token = session.next_token()
        except Exception:
            self._current.pop(generation.context, None)
            generation.end("error", session.usage())
            raise
        if token is None:
            reason = session.end_reason
            generation.end(reason.value if reason is not None else "error", session.usage())
        return token

    def _cancel_handle(self, store: wasmtime.StoreContext, handle: cm.ResourceAny) -> None:
        self._cancel(self._resources.get(store, handle, self.generation))

    def _cancel(self, generation: _Generation) -> None:
        if self._current.get(generation.context) is generation:
            self._end(generation.context, "cancelled")

    def _end(self, context: int, finish: str) -> None:
        generation = self._current.pop(context, None)
        if generation is not None and generation.finish is None:
            session = self._nn.context(context)
            session.end_generation()
            generation.end(finish, session.usage())

    def _usage(self, store: wasmtime.StoreContext, handle: cm.ResourceAny) -> cm.Record:
        generation = self._resources.get(store, handle, self.generation)
        usage = generation.last or self._nn.context(generation.context).usage()
        ended = generation.ended or time.perf_counter()
        return _record(prompt_tokens=usage.input_tokens, evaluated_tokens=usage.evaluated_tokens,
                       completion_tokens=usage.output_tokens, prompt_ms=usage.prompt_seconds * 1e3,
                       total_ms=(ended - generation.started) * 1e3, finish=generation.finish)

    # -- preview1: what the wasi_ephemeral_nn adapter needs besides ----------------------------

    def _loaded(self, handle: int) -> cm.Record:
        loaded = self._nn.graph(handle)
        return _record(graph=self._resources.add(self.graph, handle), text=loaded.backend.inputs is not None,
                       build=loaded.backend.build)

    def _p1_load_by_name(self, store: wasmtime.StoreContext, name: str, config: bytes | None) -> cm.Record:
        options = parse_config(bytes(config)) if config is not None else None
        return self._loaded(self._nn.load_by_name(name, options))

    def _p1_load(self, store: wasmtime.StoreContext, builders: list[bytes], encoding: str, target: str) -> cm.Record:
        # The WIT enums' case names are the neutral enums' values.
        return self._loaded(self._nn.load([bytes(b) for b in builders], GraphEncoding(encoding), ExecutionTarget(target)))

    def _p1_unload(self, store: wasmtime.StoreContext, graph: cm.ResourceAny) -> None:
        self._nn.unload(self._resources.take(store, graph, self.graph))

    def _p1_configure(self, store: wasmtime.StoreContext, context: cm.ResourceAny, config: bytes) -> None:
        self._session(store, context)[1].configure(parse_config(bytes(config)))

    def _p1_embed(self, store: wasmtime.StoreContext, context: cm.ResourceAny, text: str) -> str:
        handle, session = self._session(store, context)
        self._end(handle, "cancelled")
        outputs = session.compute({PROMPT: prompt_tensor(text)})
        if EMBEDDING not in outputs:
            raise UnsupportedOperation("this context makes no embeddings: make it with `embedding` true")
        return embedding_json(outputs[EMBEDDING], wrapped=False)

    def _finalize(self, context: int) -> None:
        self._end(context, "cancelled")
        self._nn.finalize(context)

