"""What a session hands the listeners of its text: each generated token, decoded; and the
removers that ``add_listener``, ``watch`` and ``on_close`` return."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ..backends.base import TokenDetails

__all__ = ["Token", "TokenListener", "remover"]


class Token(NamedTuple):
    """A generated token as a session hands it on."""

    text: str  # decoded; a character split over two tokens comes whole with the second
    piece: bytes
    token_id: int
    time: float  # time.perf_counter() when it was sampled
    details: TokenDetails | None = None  # with the parameter logprobs on


TokenListener = Callable[[Token], None]


def remover(items: list[Any], item: Any) -> Callable[[], None]:
    """A call that takes ``item`` out of ``items`` (once; later calls do nothing)."""

    def remove() -> None:
        if item in items:
            items.remove(item)

    return remove
