"""A progress bar that leaves text behind: tqdm's widget in a notebook, replaced when it
ends by one line of text (a saved or reloaded notebook has no widget state to show, and
would show an error in its place); tqdm's text bar on stderr elsewhere, cleared at the
end."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

__all__ = ["Progress"]


class Progress:
    """Counts to ``total``; a context manager. ``enabled=False`` shows nothing."""

    def __init__(self, total: int, description: str, *, enabled: bool = True) -> None:
        self._description = description
        self._started = time.perf_counter()
        self._handle: Any = None
        self._bar: Any = None
        if not enabled:  # no bar at all: even a disabled one starts tqdm's monitor thread
            return
        from tqdm.auto import tqdm
        from tqdm.notebook import tqdm as notebook_tqdm

        in_notebook = issubclass(tqdm, notebook_tqdm)
        self._bar = tqdm(total=total, desc=description, leave=in_notebook, **({"display": False} if in_notebook else {}))
        if in_notebook:
            from IPython.display import display

            self._handle = display(self._bar.container, display_id=True)

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        bar, self._bar = self._bar, None
        if bar is None:
            return
        done, total = bar.n, bar.total
        bar.close()
        if self._handle is not None:
            seconds = time.perf_counter() - self._started
            ended = f"{done}/{total} in" if done >= total else f"stopped at {done}/{total} after"
            self._handle.update({"text/plain": f"{self._description}: {ended} {seconds:.1f} s"}, raw=True)
            bar.container.close()  # the widget is gone from the page: free its model too
            self._handle = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

