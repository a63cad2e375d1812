"""The annotation widget: one anywidget that drives a :class:`~al_annotator.core.Session`.

The browser paints; the kernel stores. A stroke is drawn on the canvas as the mouse moves
(client-side, 1.5-2.5 ms per painted move measured here) and sent to the kernel once, on
mouse-up, as one binary message; the kernel applies it with ``Session.paint`` (on disk when the
message is handled) and sends back the authoritative labels of the tile the browser shows.
A canvas driven from the kernel (ipycanvas) costs a kernel round trip per move, ~40 ms here, which
a painting hand feels; that is why this is an anywidget with ES-module JavaScript
(``static/annotator.js``, bundled from ``js/src``) and not ipycanvas.

This module is the thin view: traits, construction, the poll timer and the public API. The work
is in two plain-Python parts it wires to the session's signals:

* :mod:`al_annotator.jupyter._controller`: browser messages -> Session calls, acks and errors
  (the message protocol is in :mod:`al_annotator.jupyter._protocol`);
* :mod:`al_annotator.jupyter._planes`: the plane server (caches, pixel transport in
  :mod:`al_annotator.jupyter._imaging`, orthogonal views, thumbnails, background reads).

Front ends reach the project only through :mod:`al_annotator.core`. The kernel polls the project
(``Session.poll``) on a timer, an asyncio task on the kernel's own event loop, so cell execution
is never blocked and the browser gets only what changed.
"""

from __future__ import annotations

import asyncio
import collections
import math
import os
from pathlib import Path
from typing import Any

import anywidget
import traitlets as t

from ..core import Session
from ..errors import InputError
from ..progress import ProgressBars
from ..types import SliceRef
from . import _protocol as P
from ._controller import Controller
from ._planes import ORTHO_PX, THUMB_PX, PlaneServer, running_loop  # noqa: F401 - ORTHO_PX, THUMB_PX: as before

__all__ = ["Annotator"]

_STATIC = Path(__file__).parent / "static"
#: A project directory holds this file.
_PROJECT_FILE = "project.json"


class Annotator(anywidget.AnyWidget):
    """Paint labels on slices of a 3D volume and steer active learning, in a notebook.

    Parameters
    ----------
    source
        A project directory, an open :class:`~al_annotator.core.Session` (or a
        :class:`~al_annotator.store.ProjectStore`, opened as a Session), a volume file (creates a project beside it, or
        at ``project``), or an array (creates a project at ``project``; in memory when none is
        given, which keeps nothing and cannot train).
    project
        Where to create the project when ``source`` is a volume.
    volume
        With a new project directory as ``source``: the volume to create it from.
    classes, author, strategy, n_suggestions
        Passed to :class:`~al_annotator.core.Session` (``classes`` only when creating).
    canvas_size
        The largest side of the main canvas in CSS pixels: the canvas is at most this big and
        shrinks to fit the notebook cell's width (a ResizeObserver in the browser follows it).
    poll_interval
        Seconds between ``Session.poll`` calls on the kernel's event loop (``None``: no timer;
        call :meth:`poll` yourself).
    live_preview
        Tier 1 live (``Session.live_preview``, also settable later: ``w.live_preview = True``): after
        every stroke the instant classifier (filter bank + random forest) refits on a background
        thread and predicts the slice on screen; the prediction and uncertainty overlays follow
        without blocking painting, and the page says which tier serves them ("serving: instant
        classifier · held-out Dice 0.83", or the deep model when it scores higher on the held-out voxels).
    live_interval
        Seconds between checks for finished tier 1 previews (``Session.take_previews``) on the
        kernel's event loop while live preview is on, so one reaches the page within about this
        long of being ready (``None``: only the poll timer checks).
    show_prediction
        Show the prediction overlay. ``None`` (default): off until a tier first serves a prediction,
        then on, unless the toggle was used before.
    trainer_options
        Passed to ``Session.start_trainer`` by the Start button (e.g. ``{"device": "cpu", "steps": 40}``).
    brush_size, tool, active_class, opacity
        Initial tool state (also settable later, e.g. ``w.brush_size = 9``).

    Examples
    --------
    >>> from al_annotator import Annotator, make_phantom          # doctest: +SKIP
    >>> w = Annotator("myproj")                                   # doctest: +SKIP
    >>> w                                                         # doctest: +SKIP
    >>> w.goto("y", 40); w.session.labels().max()                 # doctest: +SKIP
    """

    _esm = _STATIC / "annotator.js"
    _css = _STATIC / "annotator.css"

    # ---- the volume (kernel -> browser)
    shape = t.List(t.Int()).tag(sync=True)
    classes = t.List(t.Dict()).tag(sync=True)
    value_range = t.List(t.Float()).tag(sync=True)
    default_window = t.List(t.Float()).tag(sync=True)
    project_name = t.Unicode("").tag(sync=True)
    persistent = t.Bool(True).tag(sync=True)
    # ---- where the session is (kernel -> browser; the browser asks with a "view" message)
    axis = t.Unicode("z").tag(sync=True)
    index = t.Int(0).tag(sync=True)
    cursor = t.List(t.Int()).tag(sync=True)
    slice_state = t.Unicode("unlabelled").tag(sync=True)
    can_undo = t.Bool(False).tag(sync=True)
    can_redo = t.Bool(False).tag(sync=True)
    # ---- display and tools (both ways)
    window = t.List(t.Float()).tag(sync=True)
    tool = t.Unicode("brush").tag(sync=True)
    tools = t.List(t.Dict(), default_value=P.tool_table()).tag(sync=True)  # the toolbar: _protocol.TOOLS
    active_class = t.Int(1).tag(sync=True)
    brush_size = t.Int(5).tag(sync=True)
    opacity = t.Float(0.5).tag(sync=True)
    show_labels = t.Bool(True).tag(sync=True)
    show_prediction = t.Bool(False).tag(sync=True)  # turned on once when a prediction is first served (show_prediction=None)
    show_uncertainty = t.Bool(False).tag(sync=True)
    canvas_size = t.Int(512).tag(sync=True)
    # ---- suggestions and training (kernel -> browser)
    suggestions = t.List(t.Dict()).tag(sync=True)
    strategy = t.Unicode("hybrid").tag(sync=True)
    strategies = t.List(t.Unicode()).tag(sync=True)
    #: Re-rank when a new model version lands (the Session's policy; else suggestions turn stale).
    auto_rerank = t.Bool(True).tag(sync=True)
    model_version = t.Int(None, allow_none=True).tag(sync=True)
    trainer = t.Dict().tag(sync=True)
    history = t.List(t.Dict()).tag(sync=True)
    #: Tier 1 live on (``Session.live_preview``).
    live_preview = t.Bool(False).tag(sync=True)
    #: Which tier serves the overlays: ``Session.served_tier()`` plus ``live``, ``error`` and the ``summary`` line.
    served = t.Dict().tag(sync=True)

    def __init__(
        self,
        source: Any,
        *,
        project: str | os.PathLike | None = None,
        volume: Any = None,
        classes: Any = None,
        author: str | None = None,
        strategy: str = "hybrid",
        n_suggestions: int = 8,
        canvas_size: int = 512,
        poll_interval: float | None = 0.5,
        live_preview: bool = False,
        live_interval: float | None = 0.1,
        show_prediction: bool | None = None,
        trainer_options: dict[str, Any] | None = None,
        brush_size: int = 5,
        tool: str = "brush",
        active_class: int = 1,
        opacity: float = 0.5,
    ) -> None:
        self._closed = True  # until the signals are connected: nothing to close
        self.session, self._owns_session = _open_session(source, project=project, volume=volume, classes=classes,
                                                         author=author, strategy=strategy, n_suggestions=n_suggestions)
        s = self.session
        s.auto_rerank = self.auto_rerank
        if live_preview:
            s.live_preview = True
        self.poll_interval = poll_interval
        self.live_interval = live_interval
        vol = s.volume
        lo, hi = vol.display_window

        def send(content: dict, buffers: Any = ()) -> None:
            self.send(content, buffers=list(buffers) or None)

        self._planes = PlaneServer(s, send)
        self._controller = Controller(s, send, self._planes, view=self, trainer_options=trainer_options)
        #: Every error shown in the widget, newest last (for scripts and tests).
        self.errors: list[str] = self._controller.errors
        #: How long each poll took (ms).
        self.poll_ms: collections.deque[float] = self._controller.poll_ms
        self._poll_task: asyncio.Task | None = None
        self._live_task: asyncio.Task | None = None
        cur = s.current
        cursor = [n // 2 for n in vol.shape]
        cursor[cur.axis_number] = cur.index
        super().__init__(
            shape=list(vol.shape),
            classes=s.class_table(),
            value_range=list(vol.value_range),
            default_window=[lo, hi],
            window=[lo, hi],
            project_name=vol.name,
            persistent=vol.persistent,
            axis=cur.axis,
            index=cur.index,
            cursor=cursor,
            canvas_size=int(canvas_size),
            strategy=s.strategy,
            strategies=Session.strategies(),
            brush_size=int(brush_size),
            tool=tool,
            active_class=int(active_class),
            opacity=float(opacity),
            show_prediction=bool(show_prediction),
            live_preview=bool(s.live_preview),
        )
        self._controller.auto_prediction = show_prediction is None
        self.on_msg(lambda _widget, content, buffers: self._controller.handle(content, buffers or []))
        ctl = self._controller
        self._signals = ctl.connections()
        for signal, slot in self._signals:
            signal.connect(slot)
        self._closed = False
        ctl.start()
        self._start_polling()
        self._start_live_timer()

    # ================================================================== public API
    @property
    def trainer_options(self) -> dict[str, Any]:
        """Passed to ``Session.start_trainer`` by the Start button."""
        return self._controller.trainer_options

    @trainer_options.setter
    def trainer_options(self, value: dict[str, Any] | None) -> None:
        self._controller.trainer_options = dict(value or {})

    def goto(self, axis: str | SliceRef, index: int | None = None) -> SliceRef:
        """Show a slice: ``w.goto("y", 40)`` (the browser follows)."""
        return self.session.goto(axis, index)

    def poll(self) -> dict[str, bool]:
        """Pick up what the trainer and other processes did (the timer calls this)."""
        return self._controller.poll()

    def close(self) -> None:
        """Stop the timer, disconnect from the session (and close it if this widget opened it)."""
        if getattr(self, "_closed", True):  # closed already, or __init__ failed before there was anything to close
            return
        self._closed = True
        for task in (self._poll_task, self._live_task):
            if task is not None:
                task.cancel()
        for signal, slot in self._signals:
            try:
                signal.disconnect(slot)
            except Exception:  # noqa: BLE001
                pass
        self._planes.close()
        if self._owns_session:
            self.session.close()
        super().close()

    # ================================================================== the poll timer
    def _start_polling(self) -> None:
        loop = running_loop()
        if loop is None or self.poll_interval is None:
            return

        async def run() -> None:
            while not self._closed:
                await asyncio.sleep(self.poll_interval)
                self.poll()

        self._poll_task = loop.create_task(run())

    def _start_live_timer(self) -> None:
        """While live preview is on: ``Session.take_previews`` every ``live_interval`` s on the kernel's
        loop (cheap when nothing is ready), so a finished preview is sent within ~0.1 s, not at the next poll."""
        loop = running_loop()
        if loop is None or self.live_interval is None or not self.session.live_preview:
            return
        if self._live_task is not None and not self._live_task.done():
            return

        async def run() -> None:
            while not self._closed and self.session.live_preview:
                await asyncio.sleep(self.live_interval)
                self._controller.take_previews()

        self._live_task = loop.create_task(run())

    # ================================================================== traits set in the browser
    @t.observe("live_preview")
    def _live_preview_changed(self, change: dict) -> None:
        if getattr(self, "_closed", True):
            return
        self.session.live_preview = bool(change["new"])
        self._controller.sync_served()
        if change["new"]:
            self._controller.request_preview(self.session.current)
            self._start_live_timer()

    @t.observe("show_prediction")
    def _show_prediction_changed(self, change: dict) -> None:
        controller = getattr(self, "_controller", None)
        if controller is not None and change["old"] != change["new"]:  # set by the user (or once by the controller itself): no more automatic switching
            controller.auto_prediction = False

    @t.observe("auto_rerank")
    def _auto_rerank_changed(self, change: dict) -> None:
        session = getattr(self, "session", None)
        if session is not None:
            session.auto_rerank = bool(change["new"])

    @t.validate("tool")
    def _valid_tool(self, proposal: Any) -> str:
        value = proposal["value"]
        return value if value in P.TOOL_NAMES else "brush"

    @t.validate("brush_size")
    def _valid_brush(self, proposal: Any) -> int:
        return int(min(max(1, proposal["value"]), 512))

    @t.validate("opacity")
    def _valid_opacity(self, proposal: Any) -> float:
        value = float(proposal["value"])
        return min(max(0.0, value), 1.0) if math.isfinite(value) else 0.5

    @t.validate("active_class")
    def _valid_class(self, proposal: Any) -> int:
        n = len(self.classes) or self.session.n_classes
        return int(min(max(1, proposal["value"]), n))

    @t.validate("window")
    def _valid_window(self, proposal: Any) -> list[float]:
        value = list(proposal["value"])
        if len(value) != 2 or not all(math.isfinite(v) for v in value) or value[1] <= value[0]:
            return list(self.default_window) or [0.0, 1.0]
        return value


def _open_session(source: Any, *, project: Any, volume: Any, classes: Any, author: str | None, strategy: str,
                  n_suggestions: int) -> tuple[Session, bool]:
    """A Session for ``source`` (and whether the widget opened it, so closes it): a Session as is; a
    project directory; a new directory with ``volume``; a volume file (a project beside it, or at
    ``project``; reopened when it exists); an array (a project at ``project``, in memory when None);
    a ProjectStore (anything with ``apply_edit`` and ``root``)."""
    kw: dict[str, Any] = {"author": author, "strategy": strategy, "n_suggestions": n_suggestions}
    # a new project's import shows a bar in the cell's output (tqdm.auto: an ipywidgets bar in Jupyter)
    create_kw: dict[str, Any] = {"progress": ProgressBars(unit="slice")}
    if classes is not None:
        create_kw["classes"] = classes
    if isinstance(source, Session):
        return source, False
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if (path / _PROJECT_FILE).exists():
            return Session.open(path, **kw), True
        if volume is not None:  # a new project directory from a volume
            return Session.create(path, volume, **kw, **create_kw), True
        if path.exists() and not path.is_dir() or (path.is_dir() and any(path.iterdir())):
            target = Path(project) if project is not None else path.with_name(path.stem + ".alproj")
            if (target / _PROJECT_FILE).exists():  # created from this volume before
                return Session.open(target, **kw), True
            return Session.create(target, str(path), **kw, **create_kw), True
        raise InputError(f"{path} is not an al_annotator project; pass volume=... to create one there, "
                         "or give a volume file as the first argument")
    if hasattr(source, "apply_edit") and hasattr(source, "root"):  # an open ProjectStore
        return Session(source, **kw), True
    if hasattr(source, "shape") and hasattr(source, "dtype"):
        return Session.create(project, source, **kw, **create_kw), True
    raise InputError(f"Annotator needs a project directory, a Session, a volume file or an array; got {type(source).__name__}")
