"""The wasi-nn state of one guest, which every ABI front-end drives (Wasmtime's
``WasiNnCtx``): its graph and execution-context handle tables, the lifetime of its
graphs, the named session it adopts, its claims on sessions, the cap on model bytes
it may send, and what its failed calls said.

Every host call of every front-end goes through one wrapper, ``GuestNN.boundary``: it
times the call, turns a foreign exception into the error tree (logged), keeps what
failed, and hands the error to the front-end, which answers with its code for it
(``code_for`` over its table {error class: code}). Nothing here knows an ABI's numbers
or wire formats.
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

__all__ = ["GuestNN", "MAX_ERRORS", "code_for"]

log = logging.getLogger(__name__)
T = TypeVar("T")
C = TypeVar("C")
E = TypeVar("E", bound=BaseException)
MAX_ERRORS = 100  # messages kept per guest: one that loops on a failing call must not fill memory


def code_for(codes: Mapping[type[E], C], error: BaseException, default: C) -> C:
    """The code a front-end's table gives ``error``: its class's, else its nearest base's."""
    for cls in type(error).__mro__:
        if cls in codes:
            return codes[cls]
    return default


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
        self.errors_dropped = 0  # failed calls past MAX_ERRORS: counted, not kept
        self._used = -1  # the execution context the call under way looked up (-1: none)
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

    def fork_context(self, handle: int) -> int:
        """A new context of this guest's that continues as ``handle`` would (``Session.fork``),
        on the same graph, claimed by it and freed with it like those it opened."""
        session = self.context(handle).fork(holder=self)
        session.guest = self.guest
        self._detach.append(session.claim(self))
        forked = self._handle(self._contexts, session)
        self._graph_of[forked] = self._graph_of[handle]
        if self._on_session is not None:
            self._on_session(session)
        return forked

    def context(self, handle: int) -> Session:
        self._used = handle
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

    # -- the boundary: every host call of every front-end --------------------------------------

    def boundary(self, call: str, function: Callable[..., T], refuse: Callable[[NNError], T]) -> Callable[..., T]:
        """``function`` as the host call ``call`` (named as its ABI names it: "wasi-nn
        compute_single", "wasinn:llm next-chunk"): its time is accounted to the execution
        context it looked up (``context``), and a failure is kept and answered with
        ``refuse(error)``, a foreign exception first logged and made a BackendError. This
        runs on every token: one frame, nothing more."""
        name = call.rpartition(" ")[2].rpartition(".")[2]  # as the session's metrics name it

        def guarded(*args: Any) -> T:
            self._used = -1
            started = time.perf_counter()
            try:
                return function(*args)
            except NNError as exc:
                self._failed(call, exc)
                return refuse(exc)
            except Exception as exc:
                return refuse(self._failed_unexpectedly(call, exc))
            finally:
                session = self._contexts.get(self._used)
                if session is not None:
                    session.account(name, time.perf_counter() - started)

        return guarded

    def _failed(self, call: str, error: NNError) -> None:
        """Keep what a failed call said, for the person running the guest: a guest sees
        only a code. The ends of streams and too-small buffers are answers, not failures."""
        if isinstance(error, EndOfSequence) or (isinstance(error, TooLarge) and error.required):
            return
        message = f"{call} failed: {error}"
        log.info("%s: %s", self.guest, message)
        if len(self.errors) >= MAX_ERRORS:
            self.errors_dropped += 1
            if self.errors_dropped == 1 and self._on_error is not None:
                self._on_error(f"more wasi-nn calls failed: only the first {MAX_ERRORS} are kept "
                               "(RunResult.errors_dropped counts the rest)")
            return
        self.errors.append(message)
        if self._on_error is not None:
            self._on_error(message)

    def _failed_unexpectedly(self, call: str, exc: Exception) -> BackendError:
        """A host bug in a call: logged with its traceback, kept like any failure, and the
        runtime-error the guest gets instead (never a trap with a traceback)."""
        log.exception("%s: %s failed unexpectedly", self.guest, call)
        error = BackendError(f"the host failed unexpectedly ({type(exc).__name__}: {exc})")
        self._failed(call, error)
        return error

    def close(self) -> None:
        """Free every context the guest left open (named sessions stay), the graphs it
        built from bytes, and their staged files."""
        for session in self._contexts.values():
            if session.id in self._kept:
                # A generation the guest began and never ended (it was stopped mid-way) has
                # nobody left to pull it: ended while the guest still holds the session, which
                # then says idle rather than running for good.
                session.end_generation()
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
