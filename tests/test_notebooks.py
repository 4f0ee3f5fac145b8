"""The notebooks in notebooks/, executed headless on the default model in a plain Python
kernel (each loads the extension in its first code cell), and the kernel spec in kernels/
started as Jupyter starts it. A notebook that passes is saved executed to build/notebooks/
(tests/notebook_run.py), which the documentation site shows (make docs)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import notebook_run
import psutil
import pytest
from conftest import wait_idle
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(notebook_run.NOTEBOOK_DIR.glob("*.ipynb"))

# The first line of a %%wasi_nn cell's output: "[GUEST · MODEL · session ID · STATUS]".
CAPTION = re.compile(r"^\[(?P<guest>\S+) · (?P<model>\S+)(?: · session [^\]]+)? · (?P<status>[^\]·]+)\]$", re.M)
SECTIONS = re.compile(r"^\[(?:guest (?:stdout|stderr)|usage: [^\]]*|handled by the guest: .*)\]$", re.M)


def model_texts(cell: Any) -> list[str]:
    """The model text in each output of a ``%%wasi_nn`` cell that finished: a kernel shows
    one display (caption, then the text, then guest stdout/stderr sections); a terminal
    prints the text, then the sections, then the caption."""
    texts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "display_data":
            plain = output["data"].get("text/plain", "")
            caption = CAPTION.match(plain)
            if caption and caption["status"] in ("done", "waiting for the next turn"):
                texts.append(SECTIONS.split(plain[caption.end() :])[0].strip())
        elif output["output_type"] == "stream" and output["name"] == "stdout":
            captions = list(CAPTION.finditer(output["text"]))
            if captions and captions[-1]["status"] in ("done", "waiting for the next turn"):
                texts.append(SECTIONS.split(output["text"][: captions[-1].start()])[0].strip())
    return texts


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def test_notebooks_are_saved_clean(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.nbformat == 4
    # They open on the project's kernel (kernels/wasinn-lab), which loads the extension.
    assert notebook.metadata.kernelspec.name == "wasinn-lab"
    assert notebook.metadata.kernelspec.display_name == "Python 3 (wasinn-lab)"
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith("# ")
    # Opened on any other Python kernel (VS Code, a JupyterHub without the spec) they still
    # work: the first code cell loads the extension (a no-op on the project's kernel).
    first_code = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert first_code.source == "%load_ext wasinn_lab"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"saved with outputs: {cell.source[:60]!r}"


@pytest.mark.model
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def test_notebook_runs_headless_on_a_plain_kernel_and_generates_text(path: Path, tmp_path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    (notebook_run.EXECUTED_DIR / path.name).unlink(missing_ok=True)  # only a run that passes leaves a copy
    # Not the kernel it names (the browser tests run them on the project's kernel): a plain one.
    assert "--ext" not in " ".join(KernelManager(kernel_name=notebook_run.KERNEL).kernel_spec.argv)
    try:
        notebook_run.execute(notebook)  # raises CellExecutionError, with the cell and its traceback, on an error
    except Exception:
        nbformat.write(notebook, tmp_path / path.name)  # what ran until then; never back into notebooks/
        raise
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code)
    errors = [output for cell in code for output in cell.outputs if output["output_type"] == "error"]
    assert not errors, errors
    magic_cells = [cell for cell in code if cell.source.startswith("%%wasi_nn")]
    texts = [text for cell in magic_cells for text in model_texts(cell)]
    assert any(texts), f"no %%wasi_nn cell shows model text: {[cell.outputs for cell in magic_cells]}"
    notebook_run.save(notebook, path.name)  # passed: the documentation site shows this run (make docs)


def test_executing_a_notebook_leaves_no_kernel_running() -> None:
    """Each run's kernel is shut down once it ran, not kept (with its model) until pytest ends."""

    def kernels() -> set[int]:
        return {child.pid for child in psutil.Process().children(recursive=True) if "ipykernel" in " ".join(child.cmdline())}

    before = kernels()
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    notebook_run.execute(notebook)
    assert notebook.cells[0].outputs[0]["data"]["text/plain"] == "2"
    assert kernels() == before


# -- the kernel spec ---------------------------------------------------------------------------


@pytest.fixture
def wasinn_kernel() -> Iterator[tuple[KernelManager, Any]]:
    """A kernel started from kernels/wasinn-lab, as Jupyter would start it."""
    specs = KernelSpecManager(kernel_dirs=[str(ROOT / "kernels")])
    manager = KernelManager(kernel_name="wasinn-lab", kernel_spec_manager=specs)
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
        yield manager, client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def execute(client: Any, code: str, timeout: float = 300) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    outputs: list[dict[str, Any]] = []

    def keep(message: dict[str, Any]) -> None:
        if message["msg_type"] in ("stream", "display_data", "update_display_data", "execute_result", "error"):
            outputs.append({"type": message["msg_type"], **message["content"]})

    reply = client.execute_interactive(code, timeout=timeout, output_hook=keep)
    return reply["content"], outputs


def plain(outputs: list[dict[str, Any]], kind: str) -> str:
    return "".join(o["data"]["text/plain"] if "data" in o else o.get("text", "") for o in outputs if o["type"] == kind)


@pytest.mark.model
def test_the_kernel_spec_starts_a_kernel_with_the_magics_loaded(wasinn_kernel: tuple[KernelManager, Any]) -> None:
    manager, client = wasinn_kernel
    assert manager.kernel_spec.display_name == "Python 3 (wasinn-lab)"
    # Loaded by --ext, lazily: no host (so no model) until a magic needs it.
    reply, outputs = execute(client, "import wasinn_lab.notebook as N\nprint(N._current is not None, N._current._host is None)")
    assert reply["status"] == "ok" and plain(outputs, "stream").split() == ["True", "True"]
    # The notebooks' first cell: silent here, and the same lab goes on (IPython said "already
    # loaded. To reload it, use: %reload_ext", and a reload ends the lab).
    reply, outputs = execute(client, "lab = N._current\n%load_ext wasinn_lab\nprint(N._current is lab)")
    assert reply["status"] == "ok" and plain(outputs, "stream") == "True\n", outputs
    reply, outputs = execute(client, "%wasi_nn models")
    assert reply["status"] == "ok", reply
    (result,) = [output for output in outputs if output["type"] == "execute_result"]
    assert "<table" in result["data"]["text/html"] and "default" in result["data"]["text/plain"]
    reply, outputs = execute(client, "models = %wasi_nn models\nprint(*models.index, models.loc['default', 'path'])")
    assert reply["status"] == "ok", reply
    echo, default, smollm2, path = plain(outputs, "stream").split()
    assert (echo, default, smollm2) == ("echo", "default", "smollm2")
    assert path.endswith(".gguf") and Path(path).is_file()


@pytest.mark.model
def test_the_kernel_spec_kernel_is_interrupted_by_a_signal(wasinn_kernel: tuple[KernelManager, Any]) -> None:
    manager, client = wasinn_kernel
    assert manager.kernel_spec.interrupt_mode == "signal"
    reply, _ = execute(client, "%%wasi_nn stream -q -p n-predict=1 -p temp=0\nHi")  # the model is loaded now
    assert reply["status"] == "ok", reply
    message_id = client.execute("%%wasi_nn stream --session long -p n-predict=4000 -p temp=0\nOnce upon a time")
    time.sleep(3)
    started = time.monotonic()
    manager.interrupt_kernel()
    reply = client.get_shell_msg(timeout=120)
    assert reply["parent_header"]["msg_id"] == message_id
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    (line,) = reply["content"]["traceback"]  # one line, as IPython shows its own magics' errors
    assert line.startswith("KeyboardInterrupt: the lab stopped the generation;") and "session long is ready" in line
    assert time.monotonic() - started < 30  # within a token or so, not after 4000 of them
    wait_idle(client, message_id)
    reply, outputs = execute(client, "%wasi_nn get long n-predict\n")  # the kernel lives on, and so does the session
    assert reply["status"] == "ok" and plain(outputs, "execute_result") == "4000"
