"""Building guests: C with zig (``wasm32-wasi``), WAT with wasmtime's assembler.

Builds are cached by content: the output is rebuilt only when the source, the shared
headers beside it, or the compiler flags change.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import wasmtime

from .errors import ConfigError, GuestBuildError
from .models import cache_dir

__all__ = ["SOURCE_DIR", "BUILD_DIR", "CFLAGS", "build", "build_all", "resolve"]

SOURCE_DIR = Path(os.environ.get("WASINN_LAB_GUESTS") or Path(__file__).resolve().parent.parent / "guests")
BUILD_DIR = SOURCE_DIR / "build"
CFLAGS = ("--target=wasm32-wasi", "-O2", "-s", "-Wall", "-Wextra")


def _headers(source: Path) -> list[Path]:
    """Headers a C guest may include: beside it, and guests/ (wasi_nn.h) for any guest."""
    return sorted({*source.parent.glob("*.h"), *SOURCE_DIR.glob("*.h")})


def _digest(source: Path) -> str:
    digest = hashlib.sha256(" ".join(CFLAGS).encode())
    inputs = [source, *_headers(source)] if source.suffix == ".c" else [source]
    for path in inputs:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def build(source: Path, output: Path | None = None) -> Path:
    """Compile one ``.c`` or ``.wat`` guest; returns the ``.wasm`` path (by default in the
    user cache, named by content)."""
    source = Path(source)
    if source.suffix not in (".c", ".wat"):
        raise ConfigError(f"{source}: guests are .c or .wat sources")
    if not source.is_file():
        raise ConfigError(f"{source}: no such guest source")
    digest = _digest(source)
    output = Path(output) if output else cache_dir() / "guests" / f"{source.stem}-{digest[:16]}.wasm"
    stamp = output.with_suffix(".sha256")
    if output.is_file() and stamp.is_file() and stamp.read_text() == digest:
        return output
    output.parent.mkdir(parents=True, exist_ok=True)
    if source.suffix == ".wat":
        try:
            output.write_bytes(wasmtime.wat2wasm(source.read_text()))
        except wasmtime.WasmtimeError as exc:
            raise GuestBuildError(f"{source}: WAT does not assemble", log=str(exc)) from exc
    else:
        command = [sys.executable, "-m", "ziglang", "cc", *CFLAGS, f"-I{SOURCE_DIR}", "-o", str(output), str(source)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise GuestBuildError(f"{source}: compilation failed", log=result.stderr)
    stamp.write_text(digest)
    return output


def build_all(source_dir: Path = SOURCE_DIR, output_dir: Path | None = None) -> list[Path]:
    output_dir = output_dir or source_dir / "build"
    sources = sorted([*source_dir.glob("*.c"), *source_dir.glob("*.wat")])
    return [build(source, output_dir / f"{source.stem}.wasm") for source in sources]


def resolve(guest: str | os.PathLike[str]) -> Path:
    """A guest by path (``.wasm``, or a ``.c``/``.wat`` source, built on demand) or by
    the name of a guest in ``guests/`` (``stream``, ``chat``...)."""
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
            return build(source, BUILD_DIR / f"{source.stem}.wasm")
    known = sorted(p.stem for p in [*SOURCE_DIR.glob("*.c"), *SOURCE_DIR.glob("*.wat")])
    raise ConfigError(f"unknown guest {str(guest)!r}: give a .wasm path or one of {', '.join(known)}")
