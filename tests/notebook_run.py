"""Execute the notebooks in notebooks/ headless, as tests/test_notebooks.py runs them, and
keep the executed copies in build/notebooks/, where the documentation site reads them:
the site shows each notebook with the outputs of its last passing run, never outputs saved
by hand (the notebooks in notebooks/ are saved clean).

``make docs`` runs this as a script for each notebook that has no executed copy newer than
its source (``python tests/notebook_run.py notebooks/NAME.ipynb ...``); ``make test`` leaves
it nothing to do, since the notebook tests save each copy once it passed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from traitlets.config import Config

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
EXECUTED_DIR = ROOT / "build" / "notebooks"
# Not the kernel they name: ipykernel's own, as VS Code or a JupyterHub without the
# project's kernel spec would start it.
KERNEL = "python3"
# CurveZMQ keys for the kernel's sockets where its spec supports them (ipykernel's does):
# otherwise it warns, on every start, that its TCP traffic is not encrypted.
ENCRYPTED = Config({"KernelManager": {"transport_encryption": "auto"}})


def execute(notebook: nbformat.NotebookNode) -> None:
    """Run every cell of ``notebook`` in place, in notebooks/, on ``KERNEL`` (the notebooks
    load the extension themselves, so they work on any Python kernel). Raises
    ``CellExecutionError``, naming the cell and its traceback, at the first cell that fails;
    the cells run until then keep their outputs. The kernel is shut down afterwards either
    way (the client starts it, so it owns it)."""
    client = NotebookClient(notebook, kernel_name=KERNEL, timeout=600, resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
                            config=ENCRYPTED)
    client.execute()


def save(notebook: nbformat.NotebookNode, name: str) -> Path:
    """Write an executed notebook to build/notebooks/ whole or not at all (a build that
    reads it meanwhile never sees half a file)."""
    EXECUTED_DIR.mkdir(parents=True, exist_ok=True)
    target = EXECUTED_DIR / name
    partial = target.with_suffix(".ipynb.partial")
    nbformat.write(notebook, partial)
    partial.replace(target)
    return target


def main(paths: list[str]) -> int:
    for path in map(Path, paths):
        print(f"executing {path} (the documentation shows its outputs)", flush=True)
        notebook = nbformat.read(path, as_version=4)
        execute(notebook)
        print(f"  -> {save(notebook, path.name).relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
