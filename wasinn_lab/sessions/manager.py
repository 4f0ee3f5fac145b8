"""The sessions of a host: how many may live at once, their ids, and freeing those idle
too long. Sweeping is lazy (on every open and listing) and can be called explicitly, so
no thread of its own races a running generation; a session with an operation under way
or a token stream open is never idle.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ..backends.base import Backend, ExecutionContext
from ..errors import Busy, ConfigError, NotFound
from .session import Session

__all__ = ["SessionManager"]


class SessionManager:
    """The host's open sessions: at most ``max_sessions`` at once (``Busy`` past that), each
    closed once it has been idle ``idle_timeout`` seconds (a session generating, its token
    stream open between two tokens included, is never idle)."""

    def __init__(
        self,
        *,
        max_sessions: int = 100,
        idle_timeout: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_sessions < 1:
            raise ConfigError(f"max_sessions must be at least 1, got {max_sessions}")
        if idle_timeout <= 0:
            raise ConfigError(f"idle_timeout must be a positive number of seconds, got {idle_timeout}")
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def open(
        self,
        context: ExecutionContext,
        backend: Backend,
        *,
        model: str | None,
        guest: str | None,
        session_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        holder: object = None,
    ) -> Session:
        """A session on ``context`` (which it then owns: on any failure here it is
        closed), with ``params`` (a person's: unknown names are errors) set. With a
        ``holder``, it is claimed by it before anyone else can find it."""
        self.sweep()
        try:
            with self._lock:
                # The checks and the insertion under one hold of the lock: two opens at
                # once can neither both take the last place nor both take one id.
                if session_id is None:
                    session_id = self._free_id()
                elif session_id in self._sessions:
                    raise Busy(f"session {session_id!r} is already open")
                if len(self._sessions) >= self.max_sessions:
                    raise Busy(
                        f"{len(self._sessions)} sessions are open, the maximum is {self.max_sessions}: "
                        "close some or raise max_sessions"
                    )
                session = Session(context, backend, session_id=session_id, model=model, guest=guest, clock=self._clock,
                                  manager=self)
                if holder is not None:
                    session.claim(holder)
                self._sessions[session_id] = session
        except BaseException:
            context.close()
            raise
        session.on_close(self._forget)  # however it closes, the manager lets it go
        try:
            if params:
                session.set(params)
        except BaseException:
            session.close()
            raise
        return session

    def _free_id(self) -> str:
        while (session_id := f"s{next(self._ids)}") in self._sessions:  # a person may have named one so
            pass
        return session_id

    def _forget(self, session: Session) -> None:
        with self._lock:
            if self._sessions.get(session.id) is session:
                del self._sessions[session.id]

    def find(self, session_id: str) -> Session | None:
        """The open session ``session_id``, or None; expired sessions are closed first."""
        self.sweep()
        with self._lock:
            return self._sessions.get(session_id)

    def get(self, session_id: str) -> Session:
        """The open session ``session_id``; ``NotFound`` if there is none."""
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            raise NotFound(f"no open session {session_id!r}")
        return session

    def close(self, session_id: str) -> None:
        """Close the open session ``session_id``; ``NotFound`` if there is none."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is None:
            raise NotFound(f"no open session {session_id!r}")
        session.close()

    def discard(self, session: Session) -> None:
        """Close ``session`` if it is still open; forget it either way."""
        self._forget(session)
        session.close()

    def sweep(self) -> list[str]:
        """Close sessions idle longer than ``idle_timeout``; returns their ids."""
        with self._lock:
            sessions = list(self._sessions.values())
        return [session.id for session in sessions if session.expire(self.idle_timeout)]

    def close_all(self) -> None:
        """Close every open session."""
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.close()

    def __iter__(self) -> Iterator[Session]:
        self.sweep()
        with self._lock:
            return iter(list(self._sessions.values()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
