"""The notebook layer: ``%load_ext wasinn_lab`` registers the magics on a lab of its own
(whose host is made on first use, and closed at ``%unload_ext``); ``attach(host)`` puts
the magics and widgets on a host you built instead."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..host import Host
    from ..sessions import Session
    from .lab import Lab

__all__ = ["load_ipython_extension", "unload_ipython_extension", "attach", "current_lab", "show_probabilities"]

# The extension's lab: made by load_ipython_extension, shut down by unload_ipython_extension.
_extension_lab: Lab | None = None
# The lab the magics and widgets use now: the extension's, or the last attach()'s.
_current: Lab | None = None


def load_ipython_extension(ip: Any) -> None:
    global _extension_lab, _current
    from .lab import Lab

    if _extension_lab is None:
        _extension_lab = Lab()
    _current = _extension_lab
    _register(ip, _extension_lab)


def attach(host: Host, ip: Any = None) -> Lab:
    """Use ``host`` for the widgets, and for the magics in ``ip`` (the running IPython, if
    any). The host stays yours: nothing here closes it."""
    global _current
    from IPython import get_ipython

    from .lab import Lab

    lab = _current = Lab(host)
    shell = ip if ip is not None else get_ipython()
    if shell is not None:
        _register(shell, lab)
    return lab


def _register(ip: Any, lab: Lab) -> None:
    from .magics import WasiNNMagics

    ip.register_magics(WasiNNMagics(ip, lab))


def unload_ipython_extension(ip: Any) -> None:
    global _extension_lab, _current
    lab, _extension_lab, _current = _extension_lab, None, None
    for kind in ("line", "cell"):  # IPython has no unregister: the magics would outlive their lab
        ip.magics_manager.magics[kind].pop("wasi_nn", None)
    if lab is not None:
        lab.shutdown()


def current_lab() -> Lab:
    """The lab the magics use (the widgets' default)."""
    if _current is None:
        raise ConfigError("no lab: run %load_ext wasinn_lab (or wasinn_lab.notebook.attach(host)) first")
    return _current


def show_probabilities(session: str | Session, generation: int = -1) -> None:
    """Show one of a session's generations (the latest by default; a session id is looked
    up in the current lab) as ``%%wasi_nn ... --show probs`` does: each token shaded by
    its probability, its alternatives on hover, and entropy and probability along it. The
    generation must have run with ``-p logprobs=K``. ``%wasi_nn probs SESSION`` does the same."""
    from IPython import get_ipython

    from .probabilities import ProbabilityView, show

    found = current_lab().session(session) if isinstance(session, str) else session
    shell = get_ipython()
    show(ProbabilityView.of(found, generation), in_kernel=getattr(shell, "kernel", None) is not None)
