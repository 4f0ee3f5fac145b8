"""The notebook's widgets, under the short name: ``from wasinn_lab.widgets import prompt_box``.

They live in ``wasinn_lab.notebook.widgets`` with the rest of the notebook layer; see
that module for what each one does.
"""

from .notebook.widgets import (
    ParameterPanel,
    PromptBox,
    SessionBrowser,
    parameter_panel,
    prompt_box,
    session_browser,
)

__all__ = ["ParameterPanel", "PromptBox", "SessionBrowser", "parameter_panel", "prompt_box", "session_browser"]
