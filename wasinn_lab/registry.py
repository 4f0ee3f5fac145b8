"""Named models, as WasmEdge's ``--nn-preload NAME:ENCODING:TARGET:PATH`` registers them.

Guests reach only registered names. Loading a name caches its graph, which keeps the
weights loaded, so a second ``load_by_name`` costs a dictionary lookup; each load still
gets its own config. ``forget`` (a guest's ``unload``) lets the weights go once no
context uses them; the backends share weights among graphs themselves.
"""

from __future__ import annotations

import enum
import os
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .backends.base import Backend, Graph
from .errors import ConfigError, InvalidEncoding, ModelNotFound, NNError, NotFound
from .singleflight import SingleFlight
from .types import ExecutionTarget, GraphEncoding

E = TypeVar("E", bound=enum.Enum)

__all__ = ["ModelSpec", "LoadedGraph", "ModelRegistry", "parse_preload", "MissingModelWarning"]


class MissingModelWarning(UserWarning):
    """A model was registered whose file does not exist (yet)."""


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its name, encoding, target, file (None for a backend that needs
    none, such as echo) and the default config every context on it starts from."""

    name: str
    encoding: GraphEncoding
    target: ExecutionTarget
    path: Path | None
    config: Mapping[str, Any] = field(default_factory=dict)
    missing: str | None = None  # how to get the file, for a model whose file may be absent

    @property
    def available(self) -> bool:
        """Whether its file exists (a preload of a missing file is registered anyway)."""
        return self.path is None or self.path.is_file()


@dataclass(frozen=True)
class LoadedGraph:
    """A graph as one load returned it: the shared weights plus this load's config."""

    graph: Graph
    backend: Backend
    config: Mapping[str, Any]
    model: str | None  # the registered name; None for graphs built from guest bytes
    owned: bool = False  # built from guest bytes: closed when its handle goes

    def close(self) -> None:
        if self.owned:
            self.graph.close()


def _enum_value(enum_type: type[E], text: str, what: str) -> E:
    try:
        return enum_type(text.lower())
    except ValueError:
        choices = ", ".join(member.value.upper() for member in enum_type)
        raise ConfigError(f"unknown {what} {text!r}; use one of {choices}") from None


def parse_preload(spec: str) -> tuple[str, GraphEncoding, ExecutionTarget, str]:
    """Split ``NAME:ENCODING:TARGET:PATH`` (the path may itself contain colons)."""
    parts = spec.split(":", 3)
    if len(parts) != 4 or not parts[0]:
        raise ConfigError(f"--nn-preload {spec!r}: expected NAME:ENCODING:TARGET:PATH, e.g. default:GGML:AUTO:model.gguf")
    name, encoding, target, path = parts
    return name, _enum_value(GraphEncoding, encoding, "encoding"), _enum_value(ExecutionTarget, target, "target"), path


class ModelRegistry:
    def __init__(self, backends: Sequence[Backend]) -> None:
        self._backends = {backend.encoding: backend for backend in backends}
        self._specs: dict[str, ModelSpec] = {}
        self._graphs: dict[str, Graph] = {}
        self._lock = threading.RLock()
        self._loads: SingleFlight[str, Graph] = SingleFlight(self._lock)

    # -- registration ---------------------------------------------------------------------

    def register(
        self,
        name: str,
        path: str | os.PathLike[str] | None = None,
        *,
        encoding: GraphEncoding | str = GraphEncoding.GGML,
        target: ExecutionTarget | str = ExecutionTarget.AUTO,
        config: Mapping[str, Any] | None = None,
        missing: str | None = None,
    ) -> ModelSpec:
        """Register (or replace) a model under ``name``. ``config`` is its default config;
        a guest's own config overrides it key by key. ``missing`` says how to get a file
        that may not be there yet: then its absence warns of nothing here, and a load
        says it (ModelNotFound)."""
        if not name or ":" in name:
            raise ConfigError(f"model name {name!r} must be non-empty and contain no ':'")
        if not isinstance(encoding, GraphEncoding):
            encoding = _enum_value(GraphEncoding, encoding, "encoding")
        if not isinstance(target, ExecutionTarget):
            target = _enum_value(ExecutionTarget, target, "target")
        backend = self._backend(encoding)
        if path is None and encoding is not GraphEncoding.ECHO:
            raise ConfigError(f"model {name!r}: a {encoding.value} model needs a file path")
        try:
            normalized = backend.options.normalize(config or {}, strict=True)
        except NNError as exc:
            raise ConfigError(f"model {name!r}: {exc}") from exc
        spec = ModelSpec(name, encoding, target, Path(path).expanduser() if path is not None else None, normalized,
                         missing)
        if not spec.available and missing is None:
            warnings.warn(
                f"model {name!r}: {spec.path} does not exist; guests loading it get model-not-found",
                MissingModelWarning,
                stacklevel=2,
            )
        with self._lock:
            self._specs[name] = spec
        self.forget(name)
        return spec

    def preload(self, spec: str, config: Mapping[str, Any] | None = None) -> ModelSpec:
        name, encoding, target, path = parse_preload(spec)
        return self.register(name, path or None, encoding=encoding, target=target, config=config)

    def unregister(self, name: str) -> None:
        with self._lock:
            self._specs.pop(self.get(name).name)
        self.forget(name)

    def get(self, name: str) -> ModelSpec:
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(sorted(self._specs)) or "none"
            raise NotFound(f"no model named {name!r} is registered (registered: {known})") from None

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(list(self._specs.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def is_loaded(self, name: str) -> bool:
        return name in self._graphs

    # -- loading --------------------------------------------------------------------------

    def _backend(self, encoding: GraphEncoding) -> Backend:
        try:
            return self._backends[encoding]
        except KeyError:
            raise InvalidEncoding(f"no backend serves the {encoding.value} encoding") from None

    def load(self, name: str, config: Mapping[str, Any] | None = None) -> LoadedGraph:
        """The named model's graph (cached) with its default config overridden by
        ``config`` (a guest's: unknown keys are logged and ignored, as WasmEdge does).
        A model loads without the registry's lock: other names, and this one once
        loaded, are served meanwhile; a second load of it waits for the first."""
        spec = self.get(name)
        backend = self._backend(spec.encoding)
        merged = {**spec.config, **backend.options.normalize(config or {}, source=f"model {name!r}")}

        def load() -> Graph:
            if spec.path is not None and not spec.path.is_file():
                how = f": {spec.missing}" if spec.missing else ""
                raise ModelNotFound(f"model {name!r}: file {spec.path} does not exist{how}")
            return backend.load_file(spec.path or Path(), spec.target, merged)

        graph = self._loads.get(name, lambda: self._graphs.get(name), load,
                                lambda loaded: self._graphs.update({name: loaded}))
        if self._specs.get(name) is not spec:  # registered anew while it loaded: not for later loads
            self.forget(name)
        return LoadedGraph(graph, backend, merged, name)

    def load_bytes(
        self, builders: Sequence[bytes], encoding: GraphEncoding, target: ExecutionTarget, staging_dir: Path
    ) -> LoadedGraph:
        """A graph from a guest's bytes, not cached: it is the guest's alone. Staged files go
        in ``staging_dir``, which must be private to the guest."""
        backend = self._backend(encoding)
        graph = backend.load(builders, target, staging_dir)
        return LoadedGraph(graph, backend, {}, None, owned=True)

    def forget(self, name: str) -> None:
        """Drop a name's cached graph: its weights go once no context uses them, and the
        next load loads them again if they went. Contexts already made keep working."""
        with self._lock:
            graph = self._graphs.pop(name, None)
        if graph is not None:
            graph.close()

    @property
    def backends(self) -> list[Backend]:
        return list(self._backends.values())

    def backend_properties(self) -> dict[str, dict[str, Any]]:
        return {encoding.value: backend.properties() for encoding, backend in self._backends.items()}

    def close(self) -> None:
        """Let every cached graph go (contexts still open keep their weights)."""
        for name in list(self._graphs):
            self.forget(name)
