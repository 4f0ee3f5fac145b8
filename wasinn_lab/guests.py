"""Building guests: C with zig (``wasm32-wasi``), WAT with wasmtime's assembler.

The built-in guests' sources ship with the package (``wasinn_lab._data``: ``guests/`` at
the repository root; ``$WASINN_LAB_GUESTS`` names another folder). Nothing is built
beside the sources, which may be read-only: outputs go to the user cache,
``build_dir()``, a built-in guest as ``NAME.wasm``, any other source as
``NAME-DIGEST.wasm``.

Builds are cached by content: the output is rebuilt only when the source, the shared
headers beside it, or the compiler flags change (a ``.sha256`` stamp beside each output
records what it was built from).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import wasmtime

from . import _data
from .errors import ConfigError, GuestBuildError
from .models import cache_dir

__all__ = ["SOURCE_DIR", "CFLAGS", "build", "build_all", "build_dir", "resolve", "sources"]

SOURCE_DIR = Path(os.environ.get("WASINN_LAB_GUESTS") or _data.path("guests"))
CFLAGS = ("--target=wasm32-wasi", "-O2", "-s", "-Wall", "-Wextra")


def build_dir() -> Path:
    """Where guests are built by default: ``guests/`` in the user cache
    (``$WASINN_LAB_CACHE``, else ``~/.cache/wasinn-lab``)."""
    return cache_dir() / "guests"


def sources(source_dir: Path | None = None) -> list[Path]:
    """The guest sources (``.c``, ``.wat``) in ``source_dir``, the built-in ones by default."""
    source_dir = Path(source_dir) if source_dir is not None else SOURCE_DIR
    return sorted([*source_dir.glob("*.c"), *source_dir.glob("*.wat")])


def _headers(source: Path) -> list[Path]:
    """Headers a C guest may include: beside it, and the built-in ones (wasi_nn.h) for any guest."""
    return sorted({*source.parent.glob("*.h"), *SOURCE_DIR.glob("*.h")})


def _digest(source: Path) -> str:
    digest = hashlib.sha256(" ".join(CFLAGS).encode())
    inputs = [source, *_headers(source)] if source.suffix == ".c" else [source]
    for path in inputs:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _is_builtin(source: Path) -> bool:
    return source.resolve().parent == SOURCE_DIR.resolve()


def _write_atomically(path: Path, data: str | bytes) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        if isinstance(data, str):
            partial.write_text(data)
        else:
            partial.write_bytes(data)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def build(source: Path, output: Path | None = None) -> Path:
    """Compile one ``.c`` or ``.wat`` guest; returns the ``.wasm`` path. By default the
    output goes to ``build_dir()``: ``NAME.wasm`` for a built-in guest, ``NAME-DIGEST.wasm``
    (named by content) for any other source."""
    source = Path(source)
    if source.suffix not in (".c", ".wat"):
        raise ConfigError(f"{source}: guests are .c or .wat sources")
    if not source.is_file():
        raise ConfigError(f"{source}: no such guest source")
    digest = _digest(source)
    if output is None:
        name = source.stem if _is_builtin(source) else f"{source.stem}-{digest[:16]}"
        output = build_dir() / f"{name}.wasm"
    output = Path(output)
    stamp = output.with_suffix(".sha256")
    if output.is_file() and stamp.is_file() and stamp.read_text() == digest:
        return output
    output.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the output and renamed, so that a build interrupted, or one running in
    # another process at the same time, never leaves a truncated module that looks built.
    if source.suffix == ".wat":
        try:
            _write_atomically(output, bytes(wasmtime.wat2wasm(source.read_text())))
        except wasmtime.WasmtimeError as exc:
            raise GuestBuildError(f"{source}: WAT does not assemble", log=str(exc)) from exc
    else:
        partial = output.with_name(f".{output.stem}.{os.getpid()}.partial.wasm")
        command = [sys.executable, "-m", "ziglang", "cc", *CFLAGS, f"-I{SOURCE_DIR}", "-o", str(partial), str(source)]
        try:
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                raise GuestBuildError(f"{source}: compilation failed", log=result.stderr)
            partial.replace(output)
        finally:
            partial.unlink(missing_ok=True)
    _write_atomically(stamp, digest)
    return output


def build_all(source_dir: Path | None = None, output_dir: Path | None = None) -> list[Path]:
    """Build every guest in ``source_dir`` (the built-in guests by default) into
    ``output_dir`` as ``NAME.wasm``, or where ``build`` puts each by default."""
    return [
        build(source, Path(output_dir) / f"{source.stem}.wasm" if output_dir is not None else None)
        for source in sources(source_dir)
    ]


def resolve(guest: str | os.PathLike[str]) -> Path:
    """A guest by path (``.wasm``, or a ``.c``/``.wat`` source, built on demand) or by
    the name of a built-in guest (``stream``, ``chat``...), built on demand into the cache."""
    path = Path(guest)
    if path.suffix == ".wasm":
        if not path.is_file():
            raise ConfigError(f"guest {path} does not exist")
        return path
    if path.suffix in (".c", ".wat"):
        return build(path)
    for suffix in (".c", ".wat"):
        source = SOURCE_DIR / f"{guest}{suffix}"
        if source.is_file():
            return build(source)
    known = sorted(source.stem for source in sources())
    raise ConfigError(f"unknown guest {str(guest)!r}: give a .wasm path or one of {', '.join(known)}")
