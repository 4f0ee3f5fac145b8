"""The notebook layer: ``%load_ext wasinn_lab`` registers the magics."""

from __future__ import annotations

from types import TracebackType
from typing import Any

__all__ = ["load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ip: Any) -> None:
    from ..errors import WasiNNLabError
    from .lab import lab
    from .magics import WasiNNMagics

    ip.register_magics(WasiNNMagics(ip, lab()))
    ip.set_custom_exc((WasiNNLabError,), _short_traceback)


def unload_ipython_extension(ip: Any) -> None:
    from .lab import lab

    lab().shutdown()
    ip.set_custom_exc((), None)


def _short_traceback(
    shell: Any, etype: type[BaseException], value: BaseException, tb: TracebackType | None, tb_offset: int | None = None
) -> list[str]:
    """Our errors say what to fix; a traceback through the host would bury that. The
    cell still fails with this error."""
    return [f"{etype.__name__}: {value}"]
