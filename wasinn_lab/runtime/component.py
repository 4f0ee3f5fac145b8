"""Components: WASI 0.2 and the host's WIT interfaces (``wasi:nn``, ``wasinn:llm``)
linked in, ``wasi:cli/run`` to run.

Every host function goes through ``shield``: a Python exception raised in one would trap
the instance for good, so the front-ends return errors as values; a KeyboardInterrupt
(or any BaseException) would be swallowed by ctypes and the guest would go on with an
unrelated failure, so it is kept, the call traps cleanly, and it is raised once the
guest has unwound.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import wasmtime
from wasmtime import component as cm

from ..abi.llm import LLM
from ..abi.llm import VERSION as LLM_VERSION
from ..abi.resources import Resources
from ..abi.wit import VERSION as WIT_VERSION
from ..abi.wit import WasiNN
from ..errors import GuestLoadError
from ..nn import GuestNN
from .component_values import fast_root
from .instance import GuestInstance, GuestOptions, limit_at_instantiation

if TYPE_CHECKING:
    from . import CompiledGuest, GuestRuntime

__all__ = ["ComponentInstance", "load_component", "RUN_INTERFACE", "PROVIDED", "RESOURCES_LEFT", "unprovided"]

log = logging.getLogger(__name__)

RUN_INTERFACE = "wasi:cli/run@0.2."  # any 0.2.x
# Logged when a component ends holding host resources (which are then freed): normal for
# guests that never drop, a leak in the host's tables for one that dropped everything.
RESOURCES_LEFT = "%s ended holding %d host resources; freed"


def load_component(engine: wasmtime.Engine, compiled: CompiledGuest) -> cm.Component:
    """The compiled component in ``engine``: from its cache file (mapped, about 3 ms for an
    18 MB Python guest) when there is one, else from its bytes."""
    if compiled.path is not None:
        return cm.Component.deserialize_file(engine, str(compiled.path))
    return cm.Component.deserialize(engine, compiled.serialized)


class ComponentInstance(GuestInstance):
    def __init__(self, runtime: GuestRuntime, compiled: CompiledGuest, *, name: str, options: GuestOptions,
                 nn: GuestNN) -> None:
        self._compiled = compiled
        self._resources = Resources()
        self._interrupted: BaseException | None = None
        self._run: cm.Func | None = None
        super().__init__(runtime, name=name, options=options, nn=nn)

    def _instantiate(self, store: wasmtime.Store) -> None:
        component = load_component(self.engine, self._compiled)
        _check_imports(component, self.engine, self.name)
        linker = cm.Linker(self.engine)
        linker.add_wasip2()
        with fast_root(linker) as root:
            WasiNN(self.nn, self._resources).define(root, self._shield)
            LLM(self.nn, self._resources).define(root, self._shield)
        try:
            instance = linker.instantiate(store, component)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            raise (limit_at_instantiation(str(exc), self.limits, self._memories())
                   or GuestLoadError(f"cannot instantiate {self.name}: {exc}")) from exc
        self._run = _run_function(store, instance, component, self.engine, self.name)

    def _memories(self) -> int:
        return self.limits.memories

    def _shield(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def shielded(store: wasmtime.StoreContext, *args: Any) -> Any:
            try:
                return function(store, *args)
            except Exception:
                raise  # a host bug: it traps the instance, and wasmtime-py raises it once unwound
            except BaseException as exc:
                if self._interrupted is None:
                    self._interrupted = exc
                raise wasmtime.WasmtimeError(f"the host call was interrupted ({type(exc).__name__})") from None

        return shielded

    def _enter(self) -> int:
        run = self._run
        if run is None:
            raise GuestLoadError(f"{self.name} is closed")
        try:
            try:
                outcome = run(self.store)
                run.post_return(self.store)
            except wasmtime.ExitTrap as exit_trap:  # wasi:cli/exit: exit-with-code's status, or 1 for exit(err)
                return exit_trap.code
        finally:
            interrupted, self._interrupted = self._interrupted, None
            if interrupted is not None:
                raise interrupted
        # wasi:cli/run's `result` has no payloads: an error is status 1.
        return 0 if outcome.tag == "ok" else 1

    def _release(self) -> None:
        self._run = None
        left = self._resources.close()
        if left:
            log.debug(RESOURCES_LEFT, self.name, left)


def _run_function(store: wasmtime.Store, instance: cm.Instance, component: cm.Component, engine: wasmtime.Engine,
                  name: str) -> cm.Func:
    exports = [export for export in component.type.exports(engine) if export.startswith(RUN_INTERFACE)]
    if not exports:
        raise GuestLoadError(f"{name} is a component that exports no wasi:cli/run: it is not a command, so it "
                             "cannot be run (build it with a world that exports wasi:cli/run)")
    interface = instance.get_export_index(store, exports[0])
    index = instance.get_export_index(store, "run", interface)
    function = instance.get_func(store, index) if index is not None else None
    if function is None:
        raise GuestLoadError(f"{name}: {exports[0]} has no run function")
    return function


# What the linker provides: WASI 0.2 (add_wasip2; any 0.2.x resolves to it) and the
# front-ends' interfaces. wasmtime's linker serves an import from the newest version
# defined that semver allows (for 0.x.y, the same 0.x with a patch as high): wasinn:llm
# 0.1.1 serves guests built for 0.1.0.
_WASI_P2 = re.compile(r"^wasi:(cli|clocks|filesystem|io|random|sockets)/[a-z-]+@0\.2\.\d+$")
PROVIDED = (*WasiNN.INTERFACES, *LLM.INTERFACES)
_VERSIONED = re.compile(r"^(?P<name>[^@]+)@0\.(?P<minor>\d+)\.(?P<patch>\d+)$")
_PROVIDED_PATCHES = {(m["name"], m["minor"]): int(m["patch"]) for m in map(_VERSIONED.match, PROVIDED) if m}


def _provided(name: str) -> bool:
    if name in PROVIDED or _WASI_P2.match(name):
        return True
    match = _VERSIONED.match(name)
    return match is not None and int(match["patch"]) <= _PROVIDED_PATCHES.get((match["name"], match["minor"]), -1)


def unprovided(imports: Iterable[str]) -> list[str]:
    """The imports, of those named, that this host does not provide."""
    return [name for name in imports if not _provided(name)]


def _check_imports(component: cm.Component, engine: wasmtime.Engine, name: str) -> None:
    """Every import the host does not provide, named, before the guest runs."""
    missing = unprovided(component.type.imports(engine))
    if missing:
        raise GuestLoadError(
            f"{name} imports what this host does not provide: {', '.join(missing)}. It provides WASI 0.2, "
            f"wasi:nn@{WIT_VERSION} and wasinn:llm@{LLM_VERSION}"
        )
