"""The "Python 3 (wasinn-lab)" Jupyter kernel spec: ipykernel with the extension loaded
(``--ext=wasinn_lab.notebook``), so ``%%wasi_nn`` works without ``%load_ext``. It is loaded
under the notebook layer's name so that ``%load_ext wasinn_lab``, the first cell of every
notebook (for any other Python kernel), is a silent no-op here, where IPython would say
"already loaded" and suggest a reload that ends the lab. The spec lives in ``kernels/`` at the
repository root and ships as package data (``wasinn_lab._data``), so any install of
wasinn-lab, editable or not, can install it; ``$WASINN_LAB_KERNELS`` names another folder.

Its argv starts with ``python``, which jupyter_client replaces with the interpreter of
the Jupyter server that starts the kernel: install it for a Jupyter running in the
environment that has wasinn-lab (``--sys-prefix`` does that for this environment).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from . import _data
from .errors import ConfigError

__all__ = ["KERNELS_DIR", "KERNEL_NAME", "kernel_dir", "install"]

KERNELS_DIR = Path(os.environ.get("WASINN_LAB_KERNELS") or _data.path("kernels"))
KERNEL_NAME = "wasinn-lab"


def kernel_dir() -> Path:
    """The directory holding the spec's ``kernel.json``."""
    directory = KERNELS_DIR / KERNEL_NAME
    if not (directory / "kernel.json").is_file():
        raise ConfigError(f"no kernel spec at {directory}")
    return directory


def install(name: str = KERNEL_NAME, *, user: bool = False, sys_prefix: bool = False) -> Path:
    """Install the spec under ``name``: for this user, into this environment
    (``sys.prefix``), or system-wide when neither is asked for; returns where it went."""
    from jupyter_client.kernelspec import KernelSpecManager

    if user and sys_prefix:
        raise ConfigError("choose one of --user and --sys-prefix")
    source = kernel_dir()
    try:
        destination = KernelSpecManager().install_kernel_spec(
            str(source), name, user=user, prefix=sys.prefix if sys_prefix else None
        )
    except ValueError as exc:  # an invalid kernel name
        raise ConfigError(" ".join(str(exc).split())) from None
    except OSError as exc:
        reason = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)
        hint = "" if user or sys_prefix else " (system-wide: try --user or --sys-prefix)"
        raise ConfigError(f"cannot install the kernel spec: {reason}{hint}") from None
    return Path(destination)
