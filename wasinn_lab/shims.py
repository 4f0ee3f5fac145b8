"""What the lab's component builds add so that a component guest behaves as its module
would: its whole exit status (C components) and its whole writes (Python components).
``guests`` applies them; a change here changes ``RECIPE``, which is part of every
component build's cache key.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

__all__ = ["RECIPE", "exit_with_code", "whole_writes"]

# componentize-py's sys.stdout and sys.stderr are TextIOWrappers straight over unbuffered
# FileIO, and TextIOWrapper ignores a partial write of the raw stream; wasmtime takes at most
# 64 KiB per write, so the rest of a bigger one was lost without a word. Here each stream
# writes through a raw stream that writes until all is written, as unbuffered as before.
_WHOLE_WRITES = '''"""Added by wasinn-lab's build: stdout and stderr write whole (see wasinn_lab.shims)."""
import io
import os
import sys


class _Whole(io.RawIOBase):
    def __init__(self, fd):
        self._fd = fd

    def writable(self):
        return True

    def fileno(self):
        return self._fd

    def write(self, data):
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(self._fd, view):]
        return len(data)


for _name in ("stdout", "stderr"):
    _stream = getattr(sys, _name)
    setattr(sys, _name, io.TextIOWrapper(_Whole(_stream.fileno()), encoding=_stream.encoding,
                                         errors=_stream.errors, write_through=True))
'''
_WHOLE_WRITES_MODULE = "_wasinn_lab_whole_writes"

RECIPE = hashlib.sha256(f"exit-with-code\0{_WHOLE_WRITES}".encode()).hexdigest()


def exit_with_code(wasm_tools: str, wasi_version: str, core: Path, wit: Path, scratch: Path) -> tuple[Path, Path]:
    """A C command's ``proc_exit`` goes through jco's preview1 adapter, which says only ok or
    err (``wasi:cli/exit``'s ``exit``): any non-zero status became 1. The core module's
    ``proc_exit`` import becomes WASI 0.2's ``exit-with-code`` instead (the same signature,
    the status as a ``u8``; rewritten in the text format, which keeps every custom section),
    and a world importing ``wasi:cli/exit`` is to go beside the guest's (``component new``
    merges them). Returns the rewritten module and that world's WIT package (world
    ``exit-status``)."""
    text = subprocess.run([wasm_tools, "print", str(core)], capture_output=True, text=True, check=True).stdout
    rewritten = scratch / "core-exit.wat"
    rewritten.write_text(text.replace('(import "wasi_snapshot_preview1" "proc_exit"',
                                      f'(import "wasi:cli/exit@{wasi_version}" "exit-with-code"'))
    package = scratch / "exit-status"
    package.mkdir()
    (package / "deps").symlink_to(wit / "deps", target_is_directory=True)
    (package / "exit.wit").write_text(f"package wasinn:exit-status;\n\nworld exit-status {{\n"
                                      f"  import wasi:cli/exit@{wasi_version};\n}}\n")
    return rewritten, package


def whole_writes(app: Path) -> None:
    """Make the Python app in the folder ``app`` (a copy: the sources stay as they are)
    write its output whole: a module beside it, imported on the last line of ``app.py``,
    so that every line of the app keeps its number in error messages."""
    (app / f"{_WHOLE_WRITES_MODULE}.py").write_text(_WHOLE_WRITES)
    main = app / "app.py"
    main.write_text(main.read_text().rstrip("\n") + f"\nimport {_WHOLE_WRITES_MODULE}  # noqa: E402,F401\n")
