"""The wasi-nn state of one guest, which every ABI front-end drives (Wasmtime's
``WasiNnCtx``): its graph and execution-context handle tables, the lifetime of its
graphs, the named session it adopts, its claims on sessions, the cap on model bytes
it may send, and what its failed calls said.

Front-ends convert their ABI's types to these calls and map ``NNError`` to their own
codes; nothing here knows an ABI's numbers or wire formats.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .errors import BackendError, EndOfSequence, InvalidArgument, InvalidEncoding, NNError, TooLarge
from .registry import LoadedGraph, ModelRegistry
from .sessions import Session, SessionManager
from .types import ExecutionTarget, GraphEncoding

__all__ = ["GuestNN", "MAX_ERRORS"]

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_ERRORS = 100  # messages kept per guest: one that loops on a failing call must not fill memory


class GuestNN:
    def __init__(
        self,
        registry: ModelRegistry,
        sessions: SessionManager,
        *,
        guest: str,
        load_bytes: int,
        session_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        on_session: Callable[[Session], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.guest = guest
        self._registry = registry
        self._sessions = sessions
        self._load_bytes = load_bytes
        self._loaded_bytes = 0  # model bytes this guest has sent to `load`, in all
        # The guest's first execution context is this named session: adopted if it is
        # open, else opened under that name. Either way it outlives the guest.
        self._session_id = session_id
        self._params = dict(params or {})  # a person's, checked: applied to every context
        self._on_session = on_session
        self._on_error = on_error
        self.errors: list[str] = []  # what the guest's failed calls said, in order
        self.errors_dropped = 0
        self._staging: Path | None = None
        self._kept: set[str] = set()  # sessions that outlive the guest
        self._detach: list[Callable[[], None]] = []  # claims on its sessions
        self._graphs: dict[int, LoadedGraph] = {}
        self._unloaded: list[LoadedGraph] = []  # built from bytes and unloaded: contexts may still drain
        self._contexts: dict[int, Session] = {}
        self._graph_of: dict[int, int] = {}  # context handle -> the graph handle it was made from
        self._ids = itertools.count()

    # -- graphs ---------------------------------------------------------------------------

    def _handle(self, table: dict[int, Any], value: Any) -> int:
        handle = next(self._ids)
        table[handle] = value
        return handle

    def check_load_bytes(self, n_bytes: int) -> None:
        """Raise TooLarge if ``n_bytes`` more of model would take the guest past its cap."""
        total = self._loaded_bytes + n_bytes
        if total > self._load_bytes:
            raise TooLarge(f"{total:,} bytes of model in all; a guest may send at most {self._load_bytes:,}")

    def load(self, builders: Sequence[bytes], encoding: GraphEncoding, target: ExecutionTarget) -> int:
        """A graph from model bytes the guest sent, staged privately; freed with the guest."""
        size = sum(len(builder) for builder in builders)
        self.check_load_bytes(size)
        if encoding is GraphEncoding.AUTODETECT:
            if not (builders and builders[0].startswith(b"GGUF")):
                raise InvalidEncoding("autodetect: the model bytes are of no format a backend here reads (GGUF)")
            encoding = GraphEncoding.GGML
        if self._staging is None:
            self._staging = Path(tempfile.mkdtemp(prefix="wasinn-lab-models-"))  # 0700: the guest's alone
        loaded = self._registry.load_bytes(builders, encoding, target, self._staging)
        self._loaded_bytes += size
        return self._handle(self._graphs, loaded)

    def load_by_name(self, name: str, config: Mapping[str, Any] | None = None) -> int:
        return self._handle(self._graphs, self._registry.load(name, config))

    def graph(self, handle: int) -> LoadedGraph:
        try:
            return self._graphs[handle]
        except KeyError:
            raise InvalidArgument(f"unknown or freed graph handle {handle}") from None

    def drop_graph(self, handle: int) -> None:
        """The guest no longer needs the graph (WIT: it dropped the resource): a graph it
        built from bytes goes with the guest; contexts made from it keep working."""
        loaded = self.graph(handle)
        del self._graphs[handle]
        if loaded.model is None:
            self._unloaded.append(loaded)

    def unload(self, handle: int) -> None:
        """Drop the graph: a registered model's weights go once nothing uses them (the
        next load loads them again), and this guest's contexts made from it free their
        KV caches (what they computed stays readable)."""
        loaded = self.graph(handle)
        del self._graphs[handle]
        if loaded.model is not None:
            self._registry.forget(loaded.model)
        else:
            self._unloaded.append(loaded)
        for context, graph in self._graph_of.items():
            session = self._contexts[context]
            if graph == handle and session.id not in self._kept:
                session.release()

    # -- execution contexts ---------------------------------------------------------------

    def init_execution_context(self, graph_handle: int) -> int:
        loaded = self.graph(graph_handle)
        session = self._open_session(loaded)
        handle = self._handle(self._contexts, session)
        self._graph_of[handle] = graph_handle
        return handle

    def _open_session(self, loaded: LoadedGraph) -> Session:
        name, self._session_id = self._session_id, None
        params = {key: value for key, value in self._params.items() if loaded.backend.options.lookup(key)}
        session = self._sessions.find(name) if name is not None else None
        if session is not None:
            session.require_model(loaded.model)
            self._detach.append(session.claim(self))
            if params:
                session.set(params)
        else:
            context = loaded.graph.init_execution_context(loaded.config)
            session = self._sessions.open(context, loaded.backend, model=loaded.model, guest=self.guest,
                                          session_id=name, params=params, holder=self)
            self._detach.append(session.claim(self))
        if name is not None and not loaded.owned:
            # A model the guest sent as bytes is freed when the guest ends, and so must be
            # every context made from it: only a registered model's session outlives it.
            self._kept.add(session.id)
        if self._on_session is not None:
            self._on_session(session)
        return session

    def context(self, handle: int) -> Session:
        try:
            return self._contexts[handle]
        except KeyError:
            raise InvalidArgument(f"unknown or freed execution context handle {handle}") from None

    def finalize(self, handle: int) -> None:
        session = self.context(handle)
        del self._contexts[handle]
        del self._graph_of[handle]
        if session.id not in self._kept:
            self._sessions.discard(session)

    @property
    def sessions(self) -> list[Session]:
        return list(self._contexts.values())

    # -- the host's backends, for front-ends that describe them ------------------------------

    def backends(self) -> dict[str, dict[str, Any]]:
        """Each backend's properties, by its encoding's name."""
        return self._registry.backend_properties()

    # -- what front-ends report -----------------------------------------------------------

    def timed(self, context: int, name: str, call: Callable[[], T]) -> T:
        """``call()``, its time accounted to the context as the host call ``name``."""
        started = time.perf_counter()
        try:
            return call()
        finally:
            self.account(context, name, time.perf_counter() - started)

    def account(self, context: int, name: str, seconds: float) -> None:
        """Host time one call on this context took: the session's metrics split its time
        between the backend, the host and the guest."""
        session = self._contexts.get(context)
        if session is not None:
            session.account(name, seconds)

    def failed(self, call: str, error: NNError) -> None:
        """Keep what a failed call (named as its ABI names it: "wasi-nn load") said, for
        the person running the guest: a guest sees only a code. The ends of streams and
        too-small buffers are answers, not failures."""
        if isinstance(error, EndOfSequence) or (isinstance(error, TooLarge) and error.required):
            return
        message = f"{call} failed: {error}"
        log.info("%s: %s", self.guest, message)
        if len(self.errors) >= MAX_ERRORS:
            self.errors_dropped += 1
            return
        self.errors.append(message)
        if self._on_error is not None:
            self._on_error(message)

    def failed_unexpectedly(self, call: str, exc: Exception) -> BackendError:
        """A host bug in a call: logged with its traceback, kept like any failure, and the
        runtime-error the guest gets instead (never a trap with a traceback)."""
        log.exception("%s: %s failed unexpectedly", self.guest, call)
        error = BackendError(f"the host failed unexpectedly ({type(exc).__name__}: {exc})")
        self.failed(call, error)
        return error

    def close(self) -> None:
        """Free every context the guest left open (named sessions stay), the graphs it
        built from bytes, and their staged files."""
        for detach in self._detach:
            detach()
        self._detach.clear()
        for session in self._contexts.values():
            if session.id not in self._kept:
                self._sessions.discard(session)
        self._contexts.clear()
        self._graph_of.clear()
        for loaded in [*self._graphs.values(), *self._unloaded]:
            loaded.close()
        self._graphs.clear()
        self._unloaded.clear()
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
