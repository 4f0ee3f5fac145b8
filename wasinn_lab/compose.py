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
on to the host. Only the top-level import and export names are rewritten (not types), and
nothing of the private name is left in the result.

What a binary imports and exports is read by the tools: wasmtime for a core module, the
component's WIT world (``wasm-tools component wit``) for a component.

``component_new(module)`` makes a preview1 core module a component: the
``wasi_snapshot_preview1`` command adapter (jco's) and this package's ``wasi_ephemeral_nn``
adapter (wasinn_lab/adapters/) with ``wasm-tools component new``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wasmtime

from . import adapters, guests
from .abi.llm import VERSION as LLM_VERSION
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


def module_imports(binary: bytes) -> tuple[list[tuple[str, str]], list[str]]:
    """A core module's imports, as (module, name), and its export names, as wasmtime reads them."""
    try:
        module = wasmtime.Module(wasmtime.Engine(), binary)
    except wasmtime.WasmtimeError as exc:
        raise GuestBuildError("not a valid WebAssembly module", log=str(exc)) from None
    return [(item.module, item.name or "") for item in module.imports], [item.name for item in module.exports]


def _world(binary: bytes) -> tuple[list[str], list[str]]:
    """A component's top-level import and export names, in order, from its WIT world as
    ``wasm-tools component wit --json`` gives it."""
    resolve = json.loads(guests.wasm_tools("component", "wit", "--json", stdin=binary,
                                           failed="wasm-tools cannot read the component's WIT world"))
    packages = resolve["packages"]

    def name(key: str, item: dict[str, Any]) -> str:
        interface = resolve["interfaces"][item["interface"]["id"]] if "interface" in item else {"name": None}
        if interface["name"] is None:  # a function, or an interface written inline: named by its key
            return key
        package, _, version = packages[interface["package"]]["name"].partition("@")
        return f"{package}/{interface['name']}" + (f"@{version}" if version else "")

    world = resolve["worlds"][packages[-1]["worlds"]["root"]]
    return [name(key, item) for key, item in world["imports"].items()], \
        [name(key, item) for key, item in world["exports"].items()]


def component_imports(binary: bytes) -> list[str]:
    """A component's top-level import names."""
    return _world(binary)[0]


def component_exports(binary: bytes) -> list[str]:
    """A component's top-level export names."""
    return _world(binary)[1]


def _leb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _sections(binary: bytes) -> list[tuple[int, bytes]]:
    """Each top-level section of a component: its id and its contents."""
    sections = []
    position = 8
    while position < len(binary):
        section_id, size, shift = binary[position], 0, 0
        position += 1
        while True:  # the size: an unsigned LEB128
            byte = binary[position]
            position, size, shift = position + 1, size | (byte & 0x7F) << shift, shift + 7
            if not byte & 0x80:
                break
        sections.append((section_id, binary[position:position + size]))
        position += size
    return sections


def _renamed(binary: bytes, section_id: int, renames: dict[str, str]) -> bytes:
    """The component with top-level imports (or exports) renamed; all else byte for byte.

    No tool renames them, so each name is found in the import (or export) sections as the
    binary writes it: a 0x00 or 0x01 byte, then the name as a length-prefixed string.
    Names are plain text and what lies between them a few small numbers, so a name found
    there once, after such a byte, is that name's entry."""
    encoded = {_string(old): _string(new) for old, new in renames.items()}
    found = dict.fromkeys(encoded, 0)

    def rename(match: re.Match[bytes]) -> bytes:
        if match.start() == 0 or match.string[match.start() - 1] not in (0x00, 0x01):
            return match[0]
        found[match[0]] += 1
        return encoded[match[0]]

    names = re.compile(b"|".join(re.escape(old) for old in encoded))
    out = bytearray(binary[:8])
    for sid, body in _sections(binary):
        if sid == section_id:
            body = names.sub(rename, body)
        out.append(sid)
        out += _leb(len(body)) + body
    missing = [old for old, count in zip(renames, found.values(), strict=True) if count != 1]
    if missing:
        raise GuestBuildError(f"cannot find {', '.join(missing)} once among the component's names to rename")
    return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return _leb(len(data)) + data


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
            provider_imports, exported = _world(provided)
            matched = [name for name in exported if name in wanted]
            if not matched:
                asked = [name for name in wanted if not name.startswith("wasi:")]
                raise ConfigError(
                    f"provider {provider_path.name} exports nothing that is imported here: it exports "
                    f"{', '.join(exported) or 'nothing'}; what is composed so far imports "
                    f"{', '.join(asked) or 'nothing'} (and WASI)")
            _check_ties(provider_path.name, matched, wanted)
            # An interface the provider both imports and exports: private on both sides of this link.
            taken = {*wanted, *exported, *provider_imports}
            renames = {name: _private(name, taken) for name in matched if name in provider_imports}
            root = Path(scratch) / f"root{step}.wasm"
            definition = Path(scratch) / f"provider{step}.wasm"
            root.write_bytes(_renamed(current, _COMPONENT_IMPORTS, renames) if renames else current)
            definition.write_bytes(_renamed(provided, _COMPONENT_EXPORTS, renames) if renames else provided)
            composed = Path(scratch) / f"composed{step}.wasm"
            guests.wasm_tools("compose", "-q", root, "-d", definition, "-o", composed,
                              failed=f"wasm-tools compose could not link {provider_path.name} into {user_path.name}")
            current = composed.read_bytes()
            imports = component_imports(current)
            left = [name for name in imports if name in renames.values()]
            if left:  # compose links every import it can: a private name left is a bug here
                raise GuestBuildError(f"composing {provider_path.name} left private imports: {', '.join(left)}")
            linked += [(name, provider_path.name) for name in matched]
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(f".{output.name}.{os.getpid()}.partial")
        partial.write_bytes(current)
        partial.replace(output)
    return Composition(output, imports, linked)


# Imports whose types are another interface's resources: they must come from where those
# do. Each with what it is for, said when a provider would pull them apart.
_TIED = {
    f"wasinn:llm/preview1@{LLM_VERSION}": (
        (f"wasinn:llm/graphs@{LLM_VERSION}", f"wasinn:llm/prompt@{LLM_VERSION}"),
        "a preview1 guest made a component (its wasi_ephemeral_nn adapter uses it) runs on the host's text "
        "interface, not a provider's"),
    f"wasinn:llm/tokens@{LLM_VERSION}": (
        (f"wasinn:llm/prompt@{LLM_VERSION}",),
        "next-token reads the host's generations, and a provider's are its own: pull a provider's answers "
        "with next-chunk"),
}


def _check_ties(provider: str, matched: Sequence[str], wanted: Sequence[str]) -> None:
    for tied, (owners, why) in _TIED.items():
        moved = [owner for owner in owners if owner in matched]
        if tied in wanted and tied not in matched and moved:
            raise ConfigError(
                f"{provider} would serve {', '.join(moved)}, but what it is composed with also imports {tied} from "
                f"the host, whose graphs and contexts are the host's own: {why}")


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
