"""Sessions: the neutral execution API every ABI front-end drives.

Each execution context is a session (``session``) with an id, its model, its parameters
(``parameters``: changes wait for the next generation), its generations (``recording``)
and listeners that receive the text token by token. A front-end sets named input
tensors and computes, or pulls a generation token by token; it never sees the backend.
The manager (``manager``) caps how many sessions live at once and frees those idle too
long.
"""

from .listeners import Token, TokenListener
from .manager import SessionManager
from .session import Session, in_use

__all__ = ["Session", "SessionManager", "Token", "TokenListener", "in_use"]
