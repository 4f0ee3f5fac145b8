"""Composition and adapters: several components made one, and preview1 guests made components.

``compose(user, [provider, ...])`` links a component's imports to what providers export,
with ``wasm-tools compose`` (pinned with the project's wasm-tools; it calls itself deprecated
in favour of ``wac``, which no registry here serves, so it is used here and nowhere else).
Providers are taken in order: the first satisfies what the user imports, the next what the
result still imports (the first provider's own imports included), and so on, so
``[chat_template, model]`` stacks user → chat template → model → host. The result is one
component that imports what is left: the host's interfaces.

A provider may import an interface and export the same one, changed (the chat template
provider imports the host's ``wasinn:llm/prompt`` and exports its own). ``wasm-tools
compose`` cannot link that as it stands: it merges every import of one name across the
components it composes, resources included, so the user's ``prompt.context`` and the
provider's (the host's) would have to be one type, and the provider's export (its own
``context``) is rejected as incompatible. So before each step the name is made private on
both sides of the link: the provider exports it, and the user imports it, as
``NS:PKG-provided/IFACE@VERSION``; the provider's own import keeps the real name and goes
on to the host. Only the top-level import and export sections are rewritten (names, not
types), and nothing of the private name is left in the result.

``component_new(module)`` makes a preview1 core module a component: the
``wasi_snapshot_preview1`` command adapter (jco's) and this package's ``wasi_ephemeral_nn``
adapter (wasinn_lab/adapters/) with ``wasm-tools component new``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import adapters, guests
from .errors import ConfigError, GuestBuildError
from .runtime import kind_of
from .runtime.component import unprovided

__all__ = ["Composition", "compose", "component_new", "component_imports", "component_exports",
           "module_imports", "NN_IMPORTS", "unprovided"]

# What the wasi_ephemeral_nn adapter exports: every call preview1 guests make.
NN_IMPORTS = (
    "load", "load_by_name", "load_by_name_with_config", "init_execution_context", "set_input", "compute",
    "get_output", "compute_single", "get_output_single", "fini_single", "unload", "finalize_execution_context",
)
_NN_MODULE = "wasi_ephemeral_nn"
_WASI_MODULE = "wasi_snapshot_preview1"

_COMPONENT_IMPORTS, _COMPONENT_EXPORTS = 10, 11
_INTERFACE = re.compile(r"^(?P<ns>[a-z][a-z0-9-]*):(?P<pkg>[a-z][a-z0-9-]*)/(?P<rest>.+)$")


# -- reading binaries ---------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes, position: int = 0, end: int | None = None) -> None:
        self.data = data
        self.position = position
        self.end = len(data) if end is None else end

    def byte(self) -> int:
        if self.position >= self.end:
            raise GuestBuildError("truncated WebAssembly binary")
        value = self.data[self.position]
        self.position += 1
        return value

    def leb(self, signed: bool = False) -> int:
        result = shift = 0
        while True:
            byte = self.byte()
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                if signed and byte & 0x40:
                    result -= 1 << shift
                return result

    def name(self) -> str:
        length = self.leb()
        start = self.position
        self.position += length
        if self.position > self.end:
            raise GuestBuildError("truncated WebAssembly binary")
        return self.data[start : self.position].decode("utf-8")


def _leb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _sections(binary: bytes) -> list[tuple[int, int, int]]:
    """(id, start, end) of each top-level section's contents."""
    reader = _Reader(binary, 8)
    sections = []
    while reader.position < len(binary):
        section_id = reader.byte()
        size = reader.leb()
        sections.append((section_id, reader.position, reader.position + size))
        reader.position += size
    if reader.position != len(binary):
        raise GuestBuildError("truncated WebAssembly binary")
    return sections


def module_imports(binary: bytes) -> tuple[list[tuple[str, str]], list[str]]:
    """A core module's imports, as (module, name), and its export names."""
    imports: list[tuple[str, str]] = []
    exports: list[str] = []
    for section_id, start, end in _sections(binary):
        reader = _Reader(binary, start, end)
        if section_id == 2:
            for _ in range(reader.leb()):
                module, name = reader.name(), reader.name()
                imports.append((module, name))
                kind = reader.byte()
                if kind == 0x00:  # func: type index
                    reader.leb()
                elif kind == 0x01:  # table: reference type, limits
                    reader.byte()
                    _skip_limits(reader)
                elif kind == 0x02:  # memory: limits
                    _skip_limits(reader)
                elif kind == 0x03:  # global: value type, mutability
                    reader.byte()
                    reader.byte()
                else:  # a tag, or a proposal we do not need to read past
                    break
        elif section_id == 7:
            for _ in range(reader.leb()):
                exports.append(reader.name())
                reader.byte()
                reader.leb()
    return imports, exports


def _skip_limits(reader: _Reader) -> None:
    flags = reader.byte()
    reader.leb()
    if flags & 0x01:
        reader.leb()


def _extern_name(reader: _Reader) -> tuple[str, int, int]:
    """A component import or export name: the name, and the span of its length-prefixed string."""
    if reader.byte() not in (0x00, 0x01):
        raise GuestBuildError("a component name with options (cm-implements) is not supported here")
    start = reader.position
    name = reader.name()
    return name, start, reader.position


def _skip_type_ref(reader: _Reader) -> None:
    kind = reader.byte()
    if kind == 0x00:  # core module: 0x00 0x11, then its core type
        reader.byte()
        reader.leb()
    elif kind == 0x02:  # value: a value type (a primitive's byte or a type index, as s33)
        reader.leb(signed=True)
    elif kind == 0x03:  # type: eq(index) or sub resource
        if reader.byte() == 0x00:
            reader.leb()
    else:  # func, component, instance: a type index
        reader.leb()


def _entries(binary: bytes, start: int, end: int, section_id: int) -> list[tuple[str, int, int]]:
    reader = _Reader(binary, start, end)
    entries = []
    for _ in range(reader.leb()):
        entries.append(_extern_name(reader))
        if section_id == _COMPONENT_IMPORTS:
            _skip_type_ref(reader)
        else:
            kind = reader.byte()
            if kind == 0x00:
                reader.byte()
            reader.leb()  # the index exported
            if reader.byte() == 0x01:  # its type, ascribed
                _skip_type_ref(reader)
    return entries


def _names(binary: bytes, section_id: int) -> list[str]:
    return [name for sid, start, end in _sections(binary) if sid == section_id
            for name, _, _ in _entries(binary, start, end, section_id)]


def component_imports(binary: bytes) -> list[str]:
    """A component's top-level import names."""
    return _names(binary, _COMPONENT_IMPORTS)


def component_exports(binary: bytes) -> list[str]:
    """A component's top-level export names."""
    return _names(binary, _COMPONENT_EXPORTS)


def _renamed(binary: bytes, section_id: int, renames: dict[str, str]) -> bytes:
    """The component with top-level imports (or exports) renamed; all else byte for byte."""
    out = bytearray(binary[:8])
    for sid, start, end in _sections(binary):
        body = binary[start:end]
        if sid == section_id:
            pieces = bytearray()
            cursor = start
            for name, name_start, name_end in _entries(binary, start, end, section_id):
                if name in renames:
                    pieces += binary[cursor:name_start]
                    new = renames[name].encode()
                    pieces += _leb(len(new)) + new
                    cursor = name_end
            pieces += binary[cursor:end]
            body = bytes(pieces)
        out.append(sid)
        out += _leb(len(body)) + body
    return bytes(out)


# -- composition ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Composition:
    path: Path
    imports: list[str]  # what the composed component still imports
    linked: list[tuple[str, str]]  # (interface, the provider that supplies it), in order

    @property
    def unprovided(self) -> list[str]:
        """Imports this lab's host does not provide: running it will fail, naming them."""
        return unprovided(self.imports)


def _component(path: str | os.PathLike[str], role: str) -> tuple[Path, bytes]:
    resolved = guests.resolve(path)
    binary = resolved.read_bytes()
    if kind_of(binary) != "component":
        raise ConfigError(f"{role} {resolved} is a core module, not a component: make it one first "
                          f"(`wasinn-lab component new {resolved}`)")
    return resolved, binary


def _private(name: str, taken: set[str]) -> str:
    match = _INTERFACE.match(name)
    for n in range(1000):
        suffix = "-provided" if n == 0 else f"-provided{n}"
        private = (f"{match['ns']}:{match['pkg']}{suffix}/{match['rest']}" if match else f"{name}{suffix}")
        if private not in taken:
            return private
    raise GuestBuildError(f"no private name free for {name}")


def compose(user: str | os.PathLike[str], providers: Sequence[str | os.PathLike[str]],
            output: str | os.PathLike[str] | None = None) -> Composition:
    """Compose ``user`` with ``providers`` (components: paths or built-in guest names), in
    order, into one component at ``output`` (default: beside the user component, as
    ``USER+PROVIDER...wasm``)."""
    if not providers:
        raise ConfigError("compose needs at least one provider (--with PROVIDER.wasm)")
    user_path, current = _component(user, "the component")
    if output is None:
        names = "+".join([user_path.stem, *(Path(str(p)).stem for p in providers)])
        output = user_path.with_name(f"{names}.wasm")
    output = Path(output)
    linked: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="wasinn-compose-") as scratch:
        for step, provider in enumerate(providers):
            provider_path, provided = _component(provider, "provider")
            wanted = component_imports(current)
            exported = component_exports(provided)
            matched = [name for name in exported if name in wanted]
            if not matched:
                asked = [name for name in wanted if not name.startswith("wasi:")]
                raise ConfigError(
                    f"provider {provider_path.name} exports nothing that is imported here: it exports "
                    f"{', '.join(exported) or 'nothing'}; what is composed so far imports "
                    f"{', '.join(asked) or 'nothing'} (and WASI)")
            _check_ties(provider_path.name, matched, wanted)
            # An interface the provider both imports and exports: private on both sides of this link.
            taken = {*wanted, *exported, *component_imports(provided)}
            renames = {name: _private(name, taken) for name in matched if name in component_imports(provided)}
            root = Path(scratch) / f"root{step}.wasm"
            definition = Path(scratch) / f"provider{step}.wasm"
            root.write_bytes(_renamed(current, _COMPONENT_IMPORTS, renames) if renames else current)
            definition.write_bytes(_renamed(provided, _COMPONENT_EXPORTS, renames) if renames else provided)
            composed = Path(scratch) / f"composed{step}.wasm"
            guests.wasm_tools("compose", "-q", root, "-d", definition, "-o", composed,
                              failed=f"wasm-tools compose could not link {provider_path.name} into {user_path.name}")
            current = composed.read_bytes()
            left = [name for name in component_imports(current) if name in renames.values()]
            if left:  # compose links every import it can: a private name left is a bug here
                raise GuestBuildError(f"composing {provider_path.name} left private imports: {', '.join(left)}")
            linked += [(name, provider_path.name) for name in matched]
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(f".{output.name}.{os.getpid()}.partial")
        partial.write_bytes(current)
        partial.replace(output)
    return Composition(output, component_imports(current), linked)


# Imports whose types are another interface's resources: they must come from where those do.
_TIED = {"wasinn:llm/preview1@0.1.0": ("wasinn:llm/graphs@0.1.0", "wasinn:llm/prompt@0.1.0")}


def _check_ties(provider: str, matched: Sequence[str], wanted: Sequence[str]) -> None:
    for tied, owners in _TIED.items():
        moved = [owner for owner in owners if owner in matched]
        if tied in wanted and tied not in matched and moved:
            raise ConfigError(
                f"{provider} would serve {', '.join(moved)}, but what it is composed with also imports {tied} from "
                "the host, whose graphs and contexts are the host's own: a preview1 guest made a component "
                "(its wasi_ephemeral_nn adapter uses it) runs on the host's text interface, not a provider's")


# -- preview1 modules made components ------------------------------------------------------------


def component_new(guest: str | os.PathLike[str], output: str | os.PathLike[str] | None = None) -> Path:
    """Make a preview1 core module (a path, or a built-in guest's name) a component that runs
    on any host of ``wasi:nn``, ``wasinn:llm`` and WASI 0.2: its ``wasi_ephemeral_nn`` imports
    through this package's adapter, its ``wasi_snapshot_preview1`` ones through jco's command
    adapter, which also exports ``wasi:cli/run`` (calling ``_start``). Default output: beside
    the module, as ``NAME.component.wasm``."""
    path = guests.resolve(guest)
    binary = path.read_bytes()
    if kind_of(binary) == "component":
        raise ConfigError(f"{path} is a component already")
    imports, exports = module_imports(binary)
    unknown = sorted({name for module, name in imports if module == _NN_MODULE and name not in NN_IMPORTS})
    if unknown:
        raise ConfigError(f"{path.name} imports {_NN_MODULE} functions no adapter provides: {', '.join(unknown)} "
                          f"(the adapter has {', '.join(NN_IMPORTS)})")
    if "_start" not in exports:
        raise ConfigError(f"{path.name} exports no _start: it is not a command (a reactor, or a module driven "
                          "export by export), and a component made of it would have nothing to run")
    if output is None:
        output = path.with_name(f"{path.stem}.component.wasm")
    output = Path(output)
    adapts = ["--adapt", f"{_WASI_MODULE}={guests.jco_files().adapter}"]
    if any(module == _NN_MODULE for module, _ in imports):
        adapts += ["--adapt", f"{_NN_MODULE}={adapters.wasi_ephemeral_nn()}"]
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".component-", dir=output.parent) as scratch:
        partial = Path(scratch) / output.name
        guests.wasm_tools("component", "new", path, *adapts, "-o", partial,
                          failed=f"wasm-tools component new failed for {path.name}")
        shutil.move(str(partial), output)
    return output
