"""What a component guest holds: its host resources, by rep, for the WIT front-ends.

wasmtime-py calls a resource's destructor when the guest drops its handle, and never for
the handles a guest still holds when its store goes away (componentize-py guests often
never drop): ``close`` frees those. Host functions receive borrowed handles (``self``
included) that must be taken with ``to_host``; an owned handle passed in moves to the
host (``take``), and its destructor will not run.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

import wasmtime
from wasmtime import component as cm

from ..errors import InvalidArgument

__all__ = ["Resources", "ResourceKind"]

log = logging.getLogger(__name__)


class ResourceKind:
    """A resource type of a front-end: its WIT name, the host type id the linker knows
    it by, and what to do when the guest lets one go."""

    def __init__(self, name: str, type_id: int, release: Callable[[Any], None] = lambda payload: None) -> None:
        self.name = name
        self.type_id = type_id
        self.release = release


class Resources:
    def __init__(self) -> None:
        self._held: dict[int, tuple[ResourceKind, Any]] = {}
        self._reps = itertools.count(1)

    def define(self, instance: cm.LinkerInstance, kind: ResourceKind) -> None:
        instance.add_resource(kind.name, cm.ResourceType.host(kind.type_id), self._destructor)

    def add(self, kind: ResourceKind, payload: Any) -> cm.ResourceHost:
        rep = next(self._reps)
        self._held[rep] = (kind, payload)
        return cm.ResourceHost.own(rep, kind.type_id)

    def _rep(self, store: wasmtime.StoreContext, handle: cm.ResourceAny, kind: ResourceKind) -> int:
        rep = handle.to_host(store).rep
        held = self._held.get(rep)
        if held is None or held[0] is not kind:
            raise InvalidArgument(f"unknown or freed {kind.name} handle")
        return rep

    def get(self, store: wasmtime.StoreContext, handle: cm.ResourceAny, kind: ResourceKind) -> Any:
        """What a borrowed handle (a method's ``self``) stands for."""
        return self._held[self._rep(store, handle, kind)][1]

    def take(self, store: wasmtime.StoreContext, handle: cm.ResourceAny, kind: ResourceKind) -> Any:
        """What an owned handle stands for, now the host's to release."""
        return self._held.pop(self._rep(store, handle, kind))[1]

    def _destructor(self, store: wasmtime.StoreContext, rep: int) -> None:
        held = self._held.pop(rep, None)
        if held is not None:
            self._release(*held)

    @staticmethod
    def _release(kind: ResourceKind, payload: Any) -> None:
        try:
            kind.release(payload)
        except Exception:  # a destructor must not trap the guest: it only lets go
            log.exception("releasing a %s failed", kind.name)

    def __len__(self) -> int:
        return len(self._held)

    def close(self) -> int:
        """Release everything the guest still held; returns how many there were."""
        held, self._held = self._held, {}
        for kind, payload in held.values():
            self._release(kind, payload)
        return len(held)
