"""The notebook front end: :class:`Annotator`, one anywidget for JupyterLab, Notebook 7 and Voila.

Painting happens in the browser (a canvas in ES-module JavaScript, bundled from ``js/src``): a
painted move costs 1.5-2.5 ms client-side, measured here, against ~40 ms for a kernel round
trip per move with ipycanvas. Each stroke reaches the kernel once, on mouse-up, as one binary
message, and is on disk (``Session.paint``) when the kernel has handled it.

Examples
--------
>>> from al_annotator import Annotator      # doctest: +SKIP
>>> Annotator("myproj")                     # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .widget import Annotator

__all__ = ["Annotator"]


def __getattr__(name: str) -> Any:
    # lazy: the controller and the plane server (``_controller``, ``_planes``) load without anywidget
    if name == "Annotator":
        try:
            from .widget import Annotator
        except ModuleNotFoundError as exc:
            from ..extras import missing_extra

            raise (missing_extra(exc, "the notebook widget (Annotator)") or exc) from exc
        return Annotator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
