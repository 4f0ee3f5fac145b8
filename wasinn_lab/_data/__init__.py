"""Package data: the guest sources (``guests``: C and WAT guests, ``wasi_nn.h``, WIT
files) and the Jupyter kernel spec (``kernels``).

Both folders live at the repository root; ``guests`` and ``kernels`` here are symbolic
links to them (``../../guests``, ``../../kernels``). A checkout and an editable install
read the repository's folders through the links, and a wheel or ``pip install .`` copies
their files here (the package-data globs in pyproject.toml), so every install finds them
the same way: ``importlib.resources.files("wasinn_lab._data")``. Nothing is ever written
here: built guests go to the user cache (``wasinn_lab.guests.build_dir()``).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from ..errors import ConfigError

__all__ = ["path"]


def path(name: str) -> Path:
    """The directory of package data ``name`` (``"guests"``, ``"kernels"``), as a real
    filesystem path (zig and Jupyter need one), symbolic links resolved."""
    directory = files(__name__) / name
    if not isinstance(directory, Path):  # e.g. imported from a zip archive
        raise ConfigError(f"wasinn-lab's package data ({directory}) is not on the filesystem: install it unpacked")
    return directory.resolve()
