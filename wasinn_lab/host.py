"""The public host: a model registry, a session manager and a guest runtime, composed.

Every later layer (command line, notebook) talks to this and nothing below it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import wasmtime

from .backends.echo import EchoBackend
from .backends.llama import LlamaBackend
from .errors import GuestExitError
from .guests import resolve
from .models import DEFAULT_CONFIG, DEFAULT_MODEL, default_model_path
from .registry import ModelRegistry, ModelSpec
from .runtime import GuestInstance, GuestRuntime, RunResult, Stdin
from .sessions import Session, SessionManager
from .types import ExecutionTarget, GraphEncoding

__all__ = ["Host"]

Guest = str | os.PathLike[str] | bytes | bytearray


class Host:
    """Runs wasi-nn guests in-process.

    >>> host = Host()                       # registers `default` (Gemma 3 270M) and `echo`
    >>> host.run("stream", "default", "Once upon a time", on_stdout=print).exit_code
    0
    """

    def __init__(
        self,
        *,
        default_model: bool = True,
        max_sessions: int = 100,
        idle_timeout: float = 300.0,
    ) -> None:
        self.registry = ModelRegistry([LlamaBackend(), EchoBackend()])
        self.sessions = SessionManager(max_sessions=max_sessions, idle_timeout=idle_timeout)
        self.runtime = GuestRuntime()
        self.registry.register("echo", encoding=GraphEncoding.ECHO)
        if default_model:
            self.registry.register(DEFAULT_MODEL, default_model_path(), config=DEFAULT_CONFIG)

    # -- models ---------------------------------------------------------------------------

    def register(
        self,
        name: str,
        path: str | os.PathLike[str] | None = None,
        *,
        encoding: GraphEncoding | str = GraphEncoding.GGML,
        target: ExecutionTarget | str = ExecutionTarget.AUTO,
        config: Mapping[str, Any] | None = None,
    ) -> ModelSpec:
        """Register a model under ``name`` with an optional default ``config``."""
        return self.registry.register(name, path, encoding=encoding, target=target, config=config)

    def preload(self, spec: str, config: Mapping[str, Any] | None = None) -> ModelSpec:
        """Register from a WasmEdge-style ``NAME:ENCODING:TARGET:PATH`` spec."""
        return self.registry.preload(spec, config)

    def models(self) -> list[ModelSpec]:
        return list(self.registry)

    def properties(self, model: str | None = None) -> dict[str, Any]:
        """Backend properties; with ``model``, that model's too (it is loaded if needed)."""
        properties: dict[str, Any] = {"backends": self.registry.backend_properties()}
        if model is not None:
            properties["model"] = self.registry.load(model).graph.properties()
        return properties

    # -- guests ---------------------------------------------------------------------------

    def _module(self, guest: Guest) -> tuple[str, wasmtime.Module]:
        if isinstance(guest, (bytes, bytearray)):
            return "guest.wasm", self.runtime.compile(bytes(guest))
        path = resolve(guest)
        return path.name, self.runtime.compile(path.read_bytes())

    def run(
        self,
        guest: Guest,
        *args: str,
        env: Mapping[str, str] | None = None,
        stdin: bytes | str | Stdin | None = None,
        dirs: Iterable[tuple[str | os.PathLike[str], str]] = (),
        on_stdout: Callable[[bytes], None] | None = None,
        on_stderr: Callable[[bytes], None] | None = None,
        check: bool = False,
    ) -> RunResult:
        """Run a guest to completion: a ``.wasm`` path, a ``.c``/``.wat`` source, the name of
        a guest in ``guests/``, or module bytes. Output is captured and also handed to the
        callbacks as it is written. ``check=True`` raises GuestExitError on a non-zero exit."""
        name, module = self._module(guest)
        result = self.runtime.run(
            module,
            name=name,
            registry=self.registry,
            sessions=self.sessions,
            args=args,
            env=env,
            stdin=stdin,
            dirs=[(Path(host_dir), guest_dir) for host_dir, guest_dir in dirs],
            on_stdout=on_stdout,
            on_stderr=on_stderr,
        )
        if check and result.exit_code != 0:
            raise GuestExitError(result.exit_code, stderr=result.stderr)
        return result

    def instantiate(self, guest: Guest, *args: str, env: Mapping[str, str] | None = None) -> GuestInstance:
        """Instantiate a guest without running it, to call its exports one by one
        (``instance.call("nn_load_by_name", ...)``); close it when done."""
        name, module = self._module(guest)
        return self.runtime.instantiate(module, name=name, registry=self.registry, sessions=self.sessions, args=args, env=env)

    # -- sessions -------------------------------------------------------------------------

    def session(self, session_id: str) -> Session:
        return self.sessions.get(session_id)

    def close(self) -> None:
        """Close every open session."""
        for session in list(self.sessions):
            self.sessions.discard(session)
