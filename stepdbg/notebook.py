"""The live table in a Jupyter notebook: one output of the cell, replaced in place.

A display id is Jupyter's own way to update an output (JupyterLab, the classic
notebook, VS Code and Colab show it; nbclient, nbconvert and papermill keep its
last state in the saved notebook), so a long loop leaves one table, not one output
per refresh. rich's ``Live`` is not used: in Jupyter it needs ipywidgets and draws
into a widget, which a notebook run without a browser does not keep. The table is
rendered by rich's own Jupyter support (HTML, with a plain-text copy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import RenderableType
from rich.jupyter import JupyterMixin


class _Shown(JupyterMixin):
    """A renderable as rich shows it in Jupyter."""

    def __init__(self, renderable: RenderableType) -> None:
        self.renderable = renderable

    def __rich__(self) -> RenderableType:
        return self.renderable


class NotebookTable:
    """The table as one output of the running cell, updated at most every ``interval`` seconds
    (on the training thread, from `refresh`), and once more, to its final state, at `stop`."""

    def __init__(self, render: Callable[[], RenderableType], clock: Callable[[], float], interval: float) -> None:
        self.render = render
        self.clock = clock
        self.interval = interval
        self._handle: Any = None
        self._last_draw = float("-inf")

    def start(self) -> None:
        from IPython.display import display  # there: rich found a Jupyter kernel

        self._last_draw = self.clock()
        self._handle = display(_Shown(self.render()), display_id=True)

    def refresh(self) -> None:
        if self._handle is not None and self.clock() - self._last_draw >= self.interval:
            self._draw()

    def stop(self) -> None:
        if self._handle is not None:
            self._draw()
            self._handle = None

    def detach(self) -> None:
        """In a forked child: the cell is the parent's."""
        self._handle = None

    def _draw(self) -> None:
        self._last_draw = self.clock()
        self._handle.update(_Shown(self.render()))
