"""The "AL Annotator" dock: a thin napari view of one :class:`~al_annotator.core.Session`.

The dock holds no annotation state of its own and reaches the project only through the Session
(its values: :class:`~al_annotator.core.VolumeFacts`, read-only lazy arrays, the edit-log
position ``labels_seq``, :class:`~al_annotator.core.TrainerStatus`, model outputs). Labels are
read lazily from ``session.labels_array`` and the layer's strokes become
:meth:`Session.apply_edit` calls through :class:`~al_annotator.napari._bridge.LabelsBridge`;
suggestions, slice states and the re-rank policy (``session.auto_rerank``) are the session's; the
trainer runs in its own process.

Three parts: ``_ui`` builds the widgets (no session logic), ``_jobs`` owns the one worker thread,
this module wires them.

Threading rule (see ``_jobs``): **every Session call that changes the session or the project runs
on the one worker thread of** ``self.jobs`` (opening and closing the session, strokes, undo/redo,
``goto`` when napari's dims move, commit of a slice, ranking, Next, Skip, the ``QTimer``'s
``poll``, the "auto" checkbox, palette edits, starting and stopping the trainer), in the order it
was asked for. The GUI thread only updates widgets and layers and reads in-memory values; the
session's signals come from the worker queued (``thread="main"``) and are delivered on the GUI
thread when the job's completion is posted back. ``tests/test_napari_threads.py`` fails if a
mutating Session call comes from another thread; ``benchmarks/bench_napari.py`` measures the
longest GUI pause.

Tier 1 live (issue #11): the "live" checkbox (on by default) turns on ``session.live_preview``;
after each stroke the instant classifier refits on its own thread and predicts the slice the
session shows. The prediction and uncertainty layers' data are a
:class:`~al_annotator.napari._layers.ServedOutputs`: each plane is whatever serves it now (tier 1's
preview of that plane while the instant classifier serves, else the deep model version, else zeros;
``Session.prediction``/``confidence``). A fast ``QTimer`` (``preview_ms``, 100 ms) hands
``session.take_previews()`` to the worker thread, which then reads the displayed plane as served into
the layers' plane caches; ``preview_changed`` / ``served_changed`` arrive on the GUI thread after
that and refresh the two layers when what the displayed plane shows changed. The prediction layer
becomes visible the first time a prediction exists (a preview or a model version) unless the user
showed or hid it before; the uncertainty layer stays as the user left it (hidden at first). The dock
says which tier serves and its held-out Dice, and tier 1's last error.

Showing a slice reads zarr chunks (0.5-1 s for the planes of four layers at 1024^3). The layer
data wrappers cache whole planes (``_arrays.PlaneCache``); before the dock moves napari's dims
(Next, a click in the suggestion table) or refreshes a layer (labels another process edited, a new
model version) the worker reads the planes about to be shown into those caches, and napari's
slicing on the GUI thread then finds them in memory.
"""

from __future__ import annotations

import html
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from qtpy.QtCore import QEventLoop, Qt, QTimer
from qtpy.QtCore import Signal as QtSignal
from qtpy.QtWidgets import QApplication, QFileDialog, QWidget

from ..core import Session
from ..core.values import TrainerStatus
from ..errors import AlAnnotatorError
from ..progress import PhaseEta
from ..types import AXES, SliceRef
from ._bridge import LabelsBridge
from ._io import prefer_this_reader
from ._jobs import GuiPoster, Job, Jobs
from ._layers import (ServedOutputs, class_colormap, image_layer_data, image_layer_kwargs, labels_array, layer_names,
                      model_arrays, prefetch_planes, shown_arrays, volume_level)
from ._progress import NapariProgress
from ._ui import build_dock_ui, class_button, show_served, show_slice_state, show_suggestions, show_trainer_status

if TYPE_CHECKING:
    import napari

__all__ = ["AnnotatorWidget"]

log = logging.getLogger(__name__)

#: How often the dock picks up what the trainer and other front ends did (ms).
POLL_MS = 500
#: How often the dock collects tier 1's finished previews (ms): a preview shows within this of being ready.
PREVIEW_MS = 100


class AnnotatorWidget(QWidget):
    """Open or create a project, paint with napari's tools, follow suggestions, run the trainer.

    Parameters
    ----------
    napari_viewer
        The viewer (napari passes it when the dock is opened from the Plugins menu).
    poll_ms
        Period of the timer that calls :meth:`Session.poll`; ``0`` disables the timer (tests
        and scripts then call :meth:`poll` themselves).
    preview_ms
        Period of the timer that collects tier 1's previews (``Session.take_previews`` on the
        worker thread) while "live" is on; ``0`` disables it (:meth:`take_previews` by hand).

    Examples
    --------
    >>> import napari                                               # doctest: +SKIP
    >>> viewer = napari.Viewer()                                    # doctest: +SKIP
    >>> dock = AnnotatorWidget(viewer)                              # doctest: +SKIP
    >>> viewer.window.add_dock_widget(dock, name="AL Annotator")    # doctest: +SKIP
    >>> dock.open_project("my_project")                             # doctest: +SKIP
    """

    #: Emitted (GUI thread) with tier 1's :class:`~al_annotator.core.live.PlanePreview` once the
    #: prediction layer shows it on the displayed slice (latency measurements, tests).
    preview_shown = QtSignal(object)

    def __init__(self, napari_viewer: "napari.viewer.Viewer", *, poll_ms: int = POLL_MS, preview_ms: int = PREVIEW_MS) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: Any = None
        self.bridge: LabelsBridge | None = None
        self.layers: dict[str, Any] = {}
        self._queue: list[Any] = []
        self._syncing = False
        self._started_trainer = False
        self._poll_job: Job | None = None
        self._goto_ref: SliceRef | None = None  # the slice last asked of session.goto
        self._goto_queued = False
        self._opened_models: dict[int, tuple[Any, Any]] = {}
        self._qt_dims: Any = None
        self._volume: Any = None  # the open session's VolumeFacts
        self._trainer_eta = PhaseEta()  # the trainer bar's ETA, from the round's progress so far
        #: The prediction and uncertainty layers' data: the served tier, plane by plane.
        self.outputs: ServedOutputs | None = None
        self._preview_job: Job | None = None
        self._shown_token: Any = None  # (slice, token) the prediction layer last showed
        self._served: dict | None = None  # session.served_tier() as last shown
        self._live_error: str | None = None
        self._user_visibility: set[str] = set()  # model layers whose visibility the user set
        self._setting_visibility = False
        self._prediction_shown = False  # the prediction layer was made visible once (or by the user)
        #: Time :meth:`Session.poll` took on the worker thread (the GUI thread does not wait for it).
        self.poll_stats = {"n": 0, "max_s": 0.0, "total_s": 0.0}
        #: The one worker thread every mutating Session call runs on (module docstring).
        self.jobs = Jobs(GuiPoster().post, on_error=self._job_failed)
        self.ui = build_dock_ui(self, Session.strategies())
        for name, widget in self.ui.widgets().items():  # dock.next_button, ... (scripts and tests use them)
            setattr(self, name, widget)
        self._live_on = self.live_check.isChecked()  # read by the layers' data on any thread (not the widget)
        self._wire()
        self.viewer.dims.events.current_step.connect(self._on_dims)
        self.viewer.dims.events.order.connect(self._on_dims)
        self.viewer.dims.events.ndisplay.connect(self._on_dims)
        self.viewer.layers.events.inserted.connect(self._refresh_source_layers)
        self.viewer.layers.events.removed.connect(self._refresh_source_layers)
        self._refresh_source_layers()
        self.timer = QTimer(self)
        self.timer.timeout.connect(self._tick)
        if poll_ms:
            self.timer.start(int(poll_ms))
        self.preview_timer = QTimer(self)
        self.preview_timer.timeout.connect(self._preview_tick)
        self._preview_ms = int(preview_ms)
        if self._preview_ms:
            self.preview_timer.start(self._preview_ms)
        self.ui.set_project_controls(False)

    # ================================================================== UI wiring
    def _wire(self) -> None:
        ui = self.ui
        ui.browse_button.clicked.connect(self._browse)
        ui.open_button.clicked.connect(lambda: self._guard(self.open_project, ui.path_edit.text()))
        ui.create_button.clicked.connect(self._create_clicked)
        for button, action in ((ui.annotated_button, self.mark_annotated), (ui.undo_button, self.undo),
                               (ui.redo_button, self.redo), (ui.refresh_button, self.refresh_suggestions),
                               (ui.next_button, self.next_suggestion), (ui.skip_button, self.skip),
                               (ui.start_button, self.start_trainer), (ui.stop_button, self.stop_trainer)):
            button.clicked.connect(lambda _=False, action=action: self._guard(action))
        ui.auto_refresh_check.toggled.connect(self._on_auto_rerank)
        ui.live_check.toggled.connect(self._on_live)
        ui.suggestion_table.cellClicked.connect(self._suggestion_clicked)

    def _message(self, text: str) -> None:
        self.message_label.setText(text)
        if text:
            try:
                from napari.utils.notifications import show_warning

                show_warning(text)
            except Exception:  # noqa: BLE001 - a notification must never break the dock
                pass

    def _guard(self, func, *args) -> Any:
        """Run a button's action; show an al_annotator error instead of raising into Qt."""
        try:
            self._message("")
            return func(*args)
        except AlAnnotatorError as exc:
            self._message(str(exc))
        except (OSError, ValueError) as exc:
            self._message(f"{type(exc).__name__}: {exc}")
        return None

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Project directory", self.path_edit.text() or str(Path.cwd()))
        if path:
            self.path_edit.setText(path)

    def _refresh_source_layers(self, event: Any = None) -> None:
        from napari.layers import Image

        combo = self.source_combo
        current = combo.currentText()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Image) and layer.ndim == 3
                 and layer not in self.layers.values()]
        combo.blockSignals(True)
        combo.clear()
        combo.addItems(names)
        if current in names:
            combo.setCurrentText(current)
        combo.blockSignals(False)
        self.create_button.setEnabled(bool(names))

    # ================================================================== session work (the worker thread)
    def _submit(self, name: str, fn: Callable[[], Any], on_done: Callable[[Any, BaseException | None], None] | None = None) -> Job:
        """Run ``fn`` on the worker thread (after the strokes and jobs before it); its session
        signals and ``on_done(result, error)`` are handled on the GUI thread when it is done
        (not at all when the project was closed meanwhile; errors are shown)."""
        session = self.session

        def finished(result: Any, error: BaseException | None) -> None:  # GUI thread
            if session is not self.session:
                return  # the project was closed meanwhile
            if error is not None:
                self._report(name, error)
            if on_done is not None:
                on_done(result, error)

        return self.jobs.submit(name, fn, finished)

    def _report(self, name: str, error: BaseException) -> None:
        if isinstance(error, AlAnnotatorError):
            self._message(str(error))
        else:
            log.error("%s failed", name, exc_info=error)
            self._message(f"{name} failed: {type(error).__name__}: {error}")

    def _job_failed(self, job: Job, error: BaseException) -> None:
        self._report(job.name, error)

    @property
    def busy(self) -> bool:
        """True while strokes or session work handed to the worker thread are not handled yet."""
        return self.jobs.pending > 0

    def wait_idle(self) -> None:
        """Wait for the strokes and session work in flight and handle them now (scripts, tests, closing).

        Blocks the calling (GUI) thread; the dock itself only calls it when a project is opened or closed.
        """
        self.jobs.drain()

    # ================================================================== project
    def open_project(self, path: str | Path, **session_kw: Any) -> Any:
        """Open a project directory: add its layers and bind the labels layer to a new session."""
        if not str(path).strip():
            raise AlAnnotatorError("type a project directory first (a folder with project.json)")
        path = Path(str(path)).expanduser()
        session_kw.setdefault("auto_rerank", self.auto_refresh_check.isChecked())
        session_kw.setdefault("live_preview", self._live_on)
        self._attach(self.jobs.call("open project", lambda: _opened(Session.open(path, **session_kw))))
        return self.session

    def create_project(self, path: str | Path, source: Any, classes: str | None = None, **create_kw: Any) -> Any:
        """Create a project at ``path`` from an image layer (or its name, or an array) and open it."""
        from ..config import parse_classes

        if not str(path).strip():
            raise AlAnnotatorError("type the new project's directory first")
        from napari.layers import Layer

        if isinstance(source, str):
            source = self.viewer.layers[source]
        array = source.data if isinstance(source, Layer) else source  # (a numpy array's .data is a memoryview)
        if "spacing" not in create_kw and isinstance(source, Layer) and len(source.scale) == 3:
            create_kw["spacing"] = tuple(float(s) for s in source.scale)
        if classes:
            create_kw["classes"] = parse_classes(classes)
        create_kw.setdefault("auto_rerank", self.auto_refresh_check.isChecked())
        create_kw.setdefault("live_preview", self._live_on)
        path = Path(str(path)).expanduser()
        bars = NapariProgress(unit="slice")  # the import's slabs, in napari's activity panel
        create_kw.setdefault("progress", bars)
        QApplication.setOverrideCursor(Qt.WaitCursor)
        try:
            job = self.jobs.submit("create project", lambda: _opened(Session.create(path, array, **create_kw)),
                                   on_done=lambda result, error: None)  # an error is raised below, not reported twice
            while not job.future.done():  # the bars are drawn from posted events; no user input meanwhile
                QApplication.processEvents(QEventLoop.ProcessEventsFlag.ExcludeUserInputEvents, 50)
            self.jobs.drain(upto=job)
            opened = job.future.result()
        finally:
            bars.close()
            QApplication.restoreOverrideCursor()
        if hasattr(source, "visible"):
            source.visible = False
        self._attach(opened)
        return self.session

    def _create_clicked(self) -> None:
        name = self.source_combo.currentText()
        if not name:
            self._message("add a 3D image layer first (File > Open, or a sample from File > Open Sample > AL Annotator)")
            return
        self._guard(self.create_project, self.path_edit.text(), name, self.classes_edit.text())

    def _attach(self, opened: tuple[Any, Any, Any, Any]) -> None:
        session, volume, outputs, served = opened
        self.close_project()
        self.session = session
        self._volume = volume
        self._goto_ref = session.current
        name = volume.name if volume.path else "project"
        names = layer_names(name)
        self.path_edit.setText(volume.path or "")
        if volume.path:
            prefer_this_reader(volume.path)  # `napari PROJECT_DIR` opens it here, with no reader chooser
        if session.strategy in [self.strategy_combo.itemText(i) for i in range(self.strategy_combo.count())]:
            self.strategy_combo.setCurrentText(session.strategy)
        image_data = image_layer_data(session)
        image = self.viewer.add_image(image_data, **image_layer_kwargs(volume, name, multiscale=isinstance(image_data, list)))
        pred, unc = outputs
        self.outputs = ServedOutputs(session, (session.model_version if pred is not None else None, pred, unc),
                                     live=lambda: self._live_on)
        self._user_visibility = set()
        self._prediction_shown = False
        self._shown_token = None
        self._served, self._live_error = served, None
        pred_layer, unc_layer = self._add_model_layers(names)
        colours = list(session.colours)
        labels = self.viewer.add_labels(
            labels_array(session),
            name=names["labels"],
            scale=tuple(volume.spacing),
            axis_labels=AXES,
            colormap=class_colormap(colours),
            opacity=0.7,
            metadata={"al_annotator_project": volume.path},
        )
        labels.brush_size = 8
        labels.selected_label = min(2, len(colours))
        labels.mode = "paint"
        self.layers = {"image": image, "labels": labels, "prediction": pred_layer, "uncertainty": unc_layer}
        # strokes go through the worker thread (the GUI never waits on the edit log's fsync); session
        # signals are therefore connected with thread="main": always handled on the GUI thread
        self.bridge = LabelsBridge(session, labels, current_slice=self.displayed_slice, notify=self._message, jobs=self.jobs)
        for sig, slot in self._slots(session):
            sig.connect(slot, thread="main")
        labels.events.selected_label.connect(self._on_selected_label)
        self.viewer.layers.selection.active = labels
        self._build_class_buttons()
        self.ui.set_project_controls(True)
        self._refresh_source_layers()
        self.go_to(session.current, wait=False)
        self.viewer.reset_view()
        self._update_info()
        self._update_slice_label()
        self._on_trainer_status(TrainerStatus(state="loading", alive=True))
        self.poll(wait=False)  # the trainer's status
        self.refresh_suggestions()  # before the first model: the cold start reads a few hundred chunks
        self._show_served()
        if self._live_on:  # labels painted before (another session): tier 1 fits them and previews the slice shown
            self._submit("live preview", lambda: session.request_preview(session.current))

    def _slots(self, session: Any) -> list[tuple[Any, Callable]]:
        return [(session.slice_changed, self._on_session_slice), (session.slice_state_changed, self._on_slice_state),
                (session.suggestions_changed, self._on_suggestions), (session.model_version_changed, self._on_model_version),
                (session.trainer_status_changed, self._on_trainer_status), (session.classes_changed, self._on_classes),
                (session.preview_changed, self._on_preview), (session.served_changed, self._on_served)]

    def close_project(self) -> None:
        """Remove the project's layers and close the session (a trainer this dock started is asked to stop)."""
        if self.session is None:
            return
        self.wait_idle()  # strokes and session work in flight finish (and are handled) first
        session = self.session
        if self.bridge is not None:
            self.bridge.flush()
            self.bridge.disconnect()
            self.bridge = None
        for sig, slot in self._slots(session):
            sig.disconnect(slot)
        stop = self._started_trainer
        self._started_trainer = False
        self._poll_job = None
        self._preview_job = None

        def close() -> None:  # worker thread
            if stop:
                try:
                    session.stop_trainer(timeout=0.0)
                except AlAnnotatorError:
                    pass
            session.close()

        self.session = None
        for layer in self.layers.values():
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.layers = {}
        self.outputs = None
        self._opened_models = {}
        try:
            self.jobs.call("close project", close)
        finally:
            self._queue = []
            show_suggestions(self.ui, [])
            self.reason_label.setText("")
            self._build_class_buttons()
            self.ui.set_project_controls(False)
            self.info_label.setText("No project open.")
            self.slice_label.setText("–")
            self._served, self._live_error = None, None
            show_served(self.ui, None, live=self._live_on)

    def _update_info(self) -> None:
        s = self.session
        if s is None:
            return
        v = self._volume
        shape = "×".join(str(n) for n in v.shape)
        version = "no model yet" if s.model_version is None else f"model v{s.model_version}"
        self.info_label.setText(f"<b>{html.escape(v.name if v.path else 'in-memory')}</b> · {shape} {v.dtype} · "
                                f"{s.n_classes} classes · {version} · author {html.escape(s.author)}")

    # ================================================================== classes
    def _build_class_buttons(self) -> None:
        for b in self.class_buttons:
            self.ui.class_grid.removeWidget(b)
            b.deleteLater()
        self.class_buttons.clear()
        if self.session is None:
            return
        entries = [("erase", "#202020", 0)] + [(c["name"], c["colour"], c["value"]) for c in self.session.class_table()]
        for k, (name, colour, value) in enumerate(entries):
            b = class_button(name, colour, value)
            b.clicked.connect(lambda _=False, v=value: self.select_label(v))
            if value:  # right-click: edit the palette (saved in the project, shared with other front ends)
                b.customContextMenuRequested.connect(lambda _pos, v=value: self._guard(self._edit_class_dialog, v))
            self.ui.class_grid.addWidget(b, k // 3, k % 3)
            self.class_buttons.append(b)
        self._on_selected_label()

    def set_class_colour(self, value: int, colour: str) -> None:
        """Change class ``value``'s colour in the project (the layers follow via ``classes_changed``)."""
        if self.session is not None:
            session = self.session
            self._submit("set class colour", lambda: session.set_class_colour(value, colour))

    def rename_class(self, value: int, name: str) -> None:
        if self.session is not None:
            session = self.session
            self._submit("rename class", lambda: session.rename_class(value, name))

    def _edit_class_dialog(self, value: int) -> None:  # pragma: no cover - modal dialogs
        from qtpy.QtGui import QColor
        from qtpy.QtWidgets import QColorDialog, QInputDialog

        entry = next(c for c in self.session.class_table() if c["value"] == value)
        name, ok = QInputDialog.getText(self, "Class", f"Name of label {value}:", text=entry["name"])
        if ok and name.strip() and name.strip() != entry["name"]:
            self.rename_class(value, name.strip())
        colour = QColorDialog.getColor(QColor(entry["colour"]), self, f"Colour of {entry['name']}")
        if colour.isValid() and colour.name().lower() != entry["colour"]:
            self.set_class_colour(value, colour.name())

    def _on_classes(self, classes: list) -> None:
        """A palette edit (here or in another front end): new buttons and layer colours."""
        if self.session is None:
            return
        cmap = class_colormap([c["colour"] for c in classes])
        for key in ("labels", "prediction"):
            layer = self.layers.get(key)
            if layer is not None:
                layer.colormap = cmap
        self._build_class_buttons()

    def select_label(self, value: int) -> None:
        """Paint with label ``value`` (0 erases) using napari's brush."""
        layer = self.layers.get("labels")
        if layer is None:
            return
        layer.selected_label = int(value)
        if layer.mode not in ("paint", "fill", "polygon"):
            layer.mode = "paint"
        self.viewer.layers.selection.active = layer

    def _on_selected_label(self, event: Any = None) -> None:
        layer = self.layers.get("labels")
        value = layer.selected_label if layer is not None else -1
        for k, b in enumerate(self.class_buttons):
            b.setChecked(k == value)

    # ================================================================== model layers
    def _add_model_layers(self, names: dict[str, str]) -> tuple[Any, Any]:
        """Prediction and uncertainty layers, added at open over :attr:`outputs` (the served tier,
        plane by plane; hidden before the first prediction): adding a napari layer costs ~0.3-1 s
        of GUI time, which must not land mid-session."""
        volume = self._volume
        outputs = self.outputs
        colours = list(self.session.colours)
        kw = {"scale": tuple(volume.spacing), "axis_labels": AXES}
        shown = self._prediction_shown or outputs.has_deep
        pred_layer = self.viewer.add_labels(outputs.prediction, name=names["prediction"], colormap=class_colormap(colours),
                                            opacity=0.35, visible=shown, **kw)
        pred_layer.editable = False
        pred_layer.metadata["model_version"] = outputs.deep_version
        unc_layer = self.viewer.add_image(outputs.uncertainty, name=names["uncertainty"], colormap="inferno",
                                          contrast_limits=[0.0, 1.0], blending="additive", opacity=0.6, visible=False, **kw)
        unc_layer.metadata["model_version"] = outputs.deep_version
        self._prediction_shown = shown
        for key, layer in (("prediction", pred_layer), ("uncertainty", unc_layer)):
            layer.events.visible.connect(lambda _e=None, key=key: self._visibility_set(key))
        return pred_layer, unc_layer

    def _visibility_set(self, key: str) -> None:
        if not self._setting_visibility:
            self._user_visibility.add(key)  # the user's choice: never changed by the dock again
            if key == "prediction":
                self._prediction_shown = True

    def _show_prediction_once(self) -> None:
        """The first prediction (a tier 1 preview or a model version): show the prediction layer,
        unless the user showed or hid it already."""
        layer = self.layers.get("prediction")
        if self._prediction_shown or layer is None or "prediction" in self._user_visibility:
            return
        self._prediction_shown = True
        self._setting_visibility = True
        try:
            layer.visible = True
            layer.editable = False  # napari re-enables it when data or visibility change
        finally:
            self._setting_visibility = False

    def _on_model_version(self, current: dict) -> None:
        """A new model version landed: the prediction and uncertainty layers show it where tier 1 does not serve."""
        version = int(current["version"])
        opened = self._opened_models.pop(version, None)  # opened by the poll on the worker thread
        for older in [v for v in self._opened_models if v < version]:
            del self._opened_models[older]
        if opened is None:
            opened = model_arrays(self.session, version)
        if opened[0] is not None and self.outputs is not None:
            self.outputs.set_deep(version, *opened)  # its displayed plane was read on the worker thread (poll)
        if any(self.layers.get(k) not in self.viewer.layers for k in ("prediction", "uncertainty")):
            for k in ("prediction", "uncertainty"):  # the user deleted one: add both again
                if self.layers.get(k) in self.viewer.layers:
                    self.viewer.layers.remove(self.layers[k])
            self.layers["prediction"], self.layers["uncertainty"] = self._add_model_layers(
                layer_names(self._volume.name if self._volume.path else "project"))
        for key in ("prediction", "uncertainty"):
            self.layers[key].metadata["model_version"] = self.outputs.deep_version if self.outputs is not None else None
        if opened[0] is not None:
            self._show_prediction_once()
        self._refresh_outputs(force=True)
        # keep the labels layer on top (painting) and active
        labels = self.layers.get("labels")
        if labels is not None and labels in self.viewer.layers:
            i = self.viewer.layers.index(labels)
            if i != len(self.viewer.layers) - 1:
                self.viewer.layers.move(i, len(self.viewer.layers))
        self._update_info()  # re-ranking on a new version is the Session's policy (session.auto_rerank)
        self._show_served()

    # ================================================================== tier 1 live
    def _on_live(self, checked: bool) -> None:
        """The "live" checkbox: tier 1 refits after every stroke (on) or stays as it is (off: the
        prediction layers show the deep model version only)."""
        self._live_on = bool(checked)
        if self._live_on and self._preview_ms:
            self.preview_timer.start(self._preview_ms)
        elif not self._live_on:
            self.preview_timer.stop()
        if self.session is not None:
            session = self.session
            shown = self._shown()

            def job() -> Any:  # worker thread
                session.live_preview = bool(checked)
                if checked and shown is not None:
                    session.request_preview(shown)  # the slice on screen, from the labels as they are now
                return None

            self._submit("live preview", job)
            self._refresh_outputs()
            self._show_served()

    def _preview_tick(self) -> None:
        if self.session is not None and self._live_on and self._preview_job is None:
            self.take_previews(wait=False)

    def take_previews(self, *, wait: bool = True) -> list[Any] | None:
        """Collect tier 1's finished previews (:meth:`Session.take_previews` on the worker thread,
        which then reads the displayed plane as served into the layers' plane caches); their
        ``preview_changed`` refreshes the layers on the GUI thread. The fast timer calls it with
        ``wait=False``; ``wait=True`` (scripts, tests) blocks until it is handled and returns the previews."""
        if self.session is None:
            return None
        task = self._preview_job
        if task is None:
            session = self.session
            fill = self._fill_outputs_job()

            def job() -> Any:  # worker thread
                previews = session.take_previews()
                fill()
                return previews, session.served_tier(), session.live_error

            def done(result: Any, error: BaseException | None) -> None:
                if self._preview_job is task:
                    self._preview_job = None
                if result is not None:
                    self._show_served(result[1], result[2])

            task = self._preview_job = self._submit("previews", job, done)
        if not wait:
            return None
        self.jobs.drain(upto=task)
        if self._preview_job is task:
            self._preview_job = None
        result = task.result()
        return None if result is None else list(result[0])

    def _fill_outputs_job(self) -> Callable[[], int]:
        """A worker job that reads the displayed slice's served planes into the model layers' caches; built on the GUI thread."""
        outputs, shown = self.outputs, self.displayed_slice()
        unc = self.layers.get("uncertainty")
        unc_visible = unc is not None and unc.visible
        if outputs is None or shown is None:
            return lambda: 0
        return lambda: outputs.prefetch(shown, uncertainty=unc_visible)

    def _on_preview(self, preview: Any) -> None:
        """Tier 1 previewed a plane (GUI thread): refresh the model layers if it is the one shown."""
        if self.outputs is None or not self._live_on:
            return
        shown = self.displayed_slice()
        if shown is not None and preview.ref == shown:
            self._refresh_outputs()

    def _on_served(self, served: dict) -> None:
        """The served tier or its held-out scores changed: the label, and the layers if what they show changed."""
        self._show_served(served)
        self._refresh_outputs()

    def _refresh_outputs(self, *, force: bool = False) -> None:
        """Refresh the prediction and uncertainty layers when what the displayed plane shows
        changed (a new preview, another served tier, a new deep version); its planes were read
        on the worker thread first."""
        outputs = self.outputs
        shown = self.displayed_slice()
        if outputs is None or shown is None:
            return
        token = (shown, outputs.token(shown))
        if token == self._shown_token and not force:
            return
        self._shown_token = token
        preview = outputs.served_preview(shown)
        if preview is not None:
            self._show_prediction_once()
        for key in ("prediction", "uncertainty"):
            layer = self.layers.get(key)
            if layer is not None and layer in self.viewer.layers and layer.visible:
                layer.refresh()
        if preview is not None:
            self.preview_shown.emit(preview)

    def _show_served(self, served: dict | None = None, error: str | None | bool = False) -> None:
        if served is not None:
            self._served = served
        if error is not False:
            self._live_error = error
        show_served(self.ui, self._served, self._live_error, live=self._live_on,
                    deep_version=self.outputs.deep_version if self.outputs is not None else None)

    def _on_auto_rerank(self, checked: bool) -> None:
        if self.session is not None:
            session = self.session
            self._submit("auto re-rank", lambda: setattr(session, "auto_rerank", bool(checked)))

    # ================================================================== navigation
    def displayed_slice(self) -> SliceRef | None:
        """The slice napari shows (the project axis on the slider, and its index); ``None`` in 3D view."""
        labels = self.layers.get("labels")
        dims = self.viewer.dims
        if labels is None or dims.ndisplay != 2 or dims.ndim < 3:
            return None
        extra = dims.ndim - 3  # world axes in front of the project's (z, y, x)
        sliced = [a - extra for a in dims.not_displayed if a >= extra]
        if len(sliced) != 1:
            return None
        axis = sliced[0]
        index = int(np.round(labels.world_to_data(dims.point)[axis]))
        return SliceRef(AXES[axis], int(np.clip(index, 0, labels.data.shape[axis] - 1)))

    def _shown(self) -> SliceRef | None:
        """The slice on screen (else the session's current one)."""
        if self.session is None:
            return None
        return self.displayed_slice() or self._goto_ref or self.session.current

    def go_to(self, ref: SliceRef, *, wait: bool = True) -> None:
        """Show ``ref``: put its axis on the slider (``dims.order``) and move to its index.

        The session follows (:meth:`Session.goto` on the worker thread); ``wait`` blocks until it
        did (scripts, tests: ``dock.session.current`` is then ``ref``).
        """
        labels = self.layers.get("labels")
        if labels is None:
            return
        dims = self.viewer.dims
        extra = dims.ndim - 3
        axis = ref.axis_number + extra
        others = [extra + a for a in range(3) if a != ref.axis_number]
        order = tuple(range(extra)) + (axis, *others)
        changed_order = tuple(dims.order) != order
        frozen = self._freeze_dims_height() if changed_order else None
        self._syncing = True
        try:
            if dims.ndisplay != 2:
                dims.ndisplay = 2
            data_point = [0.0] * 3
            data_point[ref.axis_number] = float(ref.index)
            world = labels.data_to_world(data_point)
            # the point first, then the axis: napari slices the target plane only (not the middle of
            # the new axis on the way); the plane shown now is re-sliced from the layers' plane caches
            dims.set_point(axis, float(world[ref.axis_number]))
            if changed_order:
                dims.order = order
        finally:
            self._syncing = False
            if frozen is not None:
                frozen.setMaximumHeight(16777215)  # QWIDGETSIZE_MAX; napari keeps its own minimum
        if changed_order:
            self.viewer.reset_view()
        job = self._ask_goto(self.displayed_slice())
        self._update_slice_label()
        self._highlight_current_row()
        if wait and job is not None:
            self.jobs.drain(upto=job)

    def _ask_goto(self, ref: SliceRef | None) -> Job | None:
        """Have the session follow the slice on screen (coalesced: while a ``goto`` waits for the
        worker, a newer slice replaces the one it will go to). Returns the job, if one was queued."""
        if ref is None or self.session is None or ref == self._goto_ref:
            return None
        self._goto_ref = ref
        if self._goto_queued:
            return None
        self._goto_queued = True
        session = self.session

        def job() -> Any:  # worker thread
            self._goto_queued = False  # first: a newer slice asked from now on queues a new job
            return session.goto(self._goto_ref)

        return self._submit("goto", job)

    def _freeze_dims_height(self) -> Any:
        """Hold napari's slider panel at its height while the sliced axis changes (returns it, or ``None``).

        napari shows the new axis's slider before it hides the old one; the panel grows for a moment,
        the canvas shrinks and grows back, and each resize redraws the canvas on the GUI thread (two
        thirds of an axis change, ~100 ms on a software GL). The panel is found in the Qt widget
        tree (plugins see the viewer through a proxy without napari's private attributes).
        """
        qt_dims = self._qt_dims
        if qt_dims is None:
            window = self.window()
            found = [w for w in window.findChildren(QWidget) if type(w).__name__ == "QtDims"] if window is not self else []
            if len(found) != 1:
                return None
            qt_dims = self._qt_dims = found[0]
        try:
            height = qt_dims.height()
            if height <= 0 or not qt_dims.isVisible():
                return None
            qt_dims.setMaximumHeight(height)
        except RuntimeError:  # the C++ widget was deleted (viewer closed)
            self._qt_dims = None
            return None
        return qt_dims

    def _prefetch_job(self, ref: SliceRef) -> Callable[[], int]:
        """A worker job that reads ``ref``'s planes of the shown layers into their plane caches;
        built on the GUI thread."""
        arrays = shown_arrays(layer for layer in self.layers.values() if layer is not None and layer.visible and layer in self.viewer.layers)
        axis, index = ref.axis_number, int(ref.index)
        return lambda: prefetch_planes(arrays, axis, index)

    def _on_dims(self, event: Any = None) -> None:
        self._lock_volume_level()
        if self._syncing or self.session is None:
            return
        self._ask_goto(self.displayed_slice())
        self._update_slice_label()

    def _lock_volume_level(self) -> None:
        """A multiscale image in 3D renders :func:`volume_level` (napari would take the coarsest); in 2D
        napari picks the level for the zoom again."""
        image = self.layers.get("image")
        if image is None or not getattr(image, "multiscale", False) or image not in self.viewer.layers:
            return
        want = volume_level(image.level_shapes, image.dtype.itemsize) if self.viewer.dims.ndisplay == 3 else None
        if image.locked_data_level != want:
            image.locked_data_level = want

    def _on_session_slice(self, ref: SliceRef) -> None:
        # the dims are moved by the job that moved the session (Next, a click in the table), not here:
        # a goto that followed the dims may land after they moved on
        self._update_slice_label()
        self._highlight_current_row()

    def _on_slice_state(self, state: Any = None) -> None:
        self._update_slice_label()

    def _update_slice_label(self) -> None:
        ref = self._shown()
        if ref is not None:
            show_slice_state(self.ui, ref, self.session.slice_state(ref))

    # ================================================================== actions
    def mark_annotated(self, *, wait: bool = False) -> None:
        """Commit the displayed slice as fully annotated.

        Runs on the worker thread after the strokes painted before it (their order on disk is
        kept); the slice label and the queue update when it is done. ``wait`` blocks until then.
        """
        if self.bridge is not None:
            self.bridge.flush()  # writes outside a stroke join the queue before the state
        ref = self._shown()
        session = self.session
        labels = self.layers["labels"].data

        def job() -> Any:  # worker thread
            before = session.labels_seq
            out = session.mark_annotated(ref)
            after = session.labels_seq
            if after == before + 1:
                labels.apply_atoms([], before, after)  # a slice state, no label changed: cached planes stay valid
            return out

        task = self._submit("mark annotated", job)
        if wait:
            self.jobs.drain(upto=task)

    def undo(self) -> None:
        if self.bridge is not None:
            self.bridge.undo()

    def redo(self) -> None:
        if self.bridge is not None:
            self.bridge.redo()

    def refresh_suggestions(self, *, wait: bool = False) -> list[Any] | None:
        """Rank the slices again (on the worker thread: after every stroke and slice state asked for).

        The table fills when the ranking is done (``suggestions_changed``); ``wait`` blocks until then
        and returns the queue.
        """
        session = self.session
        strategy = self.strategy_combo.currentText()
        if self.bridge is not None:
            self.bridge.flush()
        self.reason_label.setText("ranking slices…")

        def done(result: Any, error: BaseException | None) -> None:
            self._highlight_current_row()  # the reason of the shown slice, or nothing

        task = self._submit("rank", lambda: session.refresh_suggestions(strategy), done)
        if wait:
            self.jobs.drain(upto=task)
            return list(self._queue)
        return None

    def next_suggestion(self, *, wait: bool = False) -> Any:
        """Go to the best suggestion not yet annotated.

        On the worker thread (after the slice states asked for before it): the session picks the
        slice and the planes of the shown layers are read there; the dims move on the GUI thread
        when that is done, and napari finds the planes in the layers' caches. ``wait`` blocks until
        then and returns the queue item (``None``: nothing left); without it, returns ``None``.
        """
        session = self.session
        arrays = shown_arrays(layer for layer in self.layers.values() if layer is not None and layer.visible)

        def job() -> Any:  # worker thread
            item = session.next_suggestion()
            if item is not None:
                self._goto_ref = item.ref
                prefetch_planes(arrays, item.ref.axis_number, int(item.ref.index))
            return item

        def done(item: Any, error: BaseException | None) -> None:
            if item is not None:
                self.go_to(item.ref, wait=False)
            elif error is None:
                self._message("no suggestion left: press Refresh (or wait for the next model version)")

        task = self._submit("next suggestion", job, done)
        if wait:
            self.jobs.drain(upto=task)
            return task.result()
        return None

    def skip(self) -> None:
        rows = self.suggestion_table.selectionModel().selectedRows() if self.suggestion_table.selectionModel() else []
        ref = self._queue[rows[0].row()].ref if rows and rows[0].row() < len(self._queue) else self._shown()
        session = self.session
        self._submit("skip", lambda: session.skip(ref))

    def _suggestion_clicked(self, row: int, col: int = 0) -> None:
        if 0 <= row < len(self._queue):
            ref = self._queue[row].ref
            session = self.session
            prefetch = self._prefetch_job(ref)

            def job() -> Any:  # worker thread: the planes are read, then the session moves
                prefetch()
                self._goto_ref = ref
                return session.goto(ref)

            # the dims move when the planes are in memory
            self._submit("show suggestion", job, lambda _r, error: self.go_to(ref, wait=False) if error is None else None)

    def _on_suggestions(self, items: list) -> None:
        self._queue = list(items)
        show_suggestions(self.ui, self._queue)
        self._highlight_current_row()

    def _highlight_current_row(self) -> None:
        shown = self._shown()
        if shown is None:
            return
        table = self.suggestion_table
        for row, item in enumerate(self._queue):
            if item.ref == shown:
                table.blockSignals(True)
                table.selectRow(row)
                table.blockSignals(False)
                stale = " (scored by an older model: press Refresh)" if item.stale else ""
                self.reason_label.setText(f"{item.ref}: {item.suggestion.reason}{stale}")
                return
        table.clearSelection()
        self.reason_label.setText("")

    # ================================================================== trainer
    def start_trainer(self, *, wait: bool = False) -> int | None:
        """Start the trainer process (on the worker thread); ``wait``: block and return its pid."""
        device = self.device_combo.currentText()
        session = self.session
        self._started_trainer = True
        self.trainer_label.setText("starting…")

        def done(pid: Any, error: BaseException | None) -> None:
            if error is not None:
                self._started_trainer = False
                self.trainer_label.setText("not started")
            else:
                self.trainer_label.setText(f"starting (pid {pid})…")

        task = self._submit("start trainer", lambda: session.start_trainer(device=device), done)
        if wait:
            self.jobs.drain(upto=task)
            return task.result()
        return None

    def stop_trainer(self) -> None:
        # timeout 0: write the stop file and SIGTERM, return at once; the status poll shows "stopped"
        session = self.session
        self._submit("stop trainer", lambda: session.stop_trainer(timeout=0.0))
        self._started_trainer = False
        self.trainer_label.setText("stopping…")

    def _on_trainer_status(self, status: TrainerStatus) -> None:
        working = status.state in ("training", "predicting")
        eta = self._trainer_eta.text(status.round, status.progress if working else None)
        show_trainer_status(self.ui, status, eta)  # TrainerStatus.summary(), as the notebook widget shows it

    # ================================================================== polling
    def poll(self, *, wait: bool = True) -> dict[str, bool] | None:
        """Pick up the trainer's and other front ends' changes.

        :meth:`Session.poll` runs on the worker thread; its signals update the dock on the GUI
        thread when it is done. The timer calls this with ``wait=False`` (returns at once; no second
        poll starts while one is in flight). ``wait=True`` (scripts, tests) blocks until the poll
        and what it set off (re-ranking after a new model) are handled, and returns what changed.
        """
        if self.session is None:
            return None
        task = self._poll_job
        if task is None:
            if self.bridge is not None:
                self.bridge.flush()
            session = self.session
            opened = self._opened_models
            stats = self.poll_stats
            shown = self.displayed_slice()
            labels = self.layers["labels"].data
            unc = self.layers.get("uncertainty")
            unc_visible = unc is not None and unc.visible
            fill = self._fill_outputs_job()

            def job() -> dict[str, bool]:  # worker thread
                t0 = time.perf_counter()
                changed = session.poll()  # also takes tier 1's previews (preview_changed)
                if changed["labels"] and shown is not None:
                    # another process's edits: the shown plane is read here, the layer's refresh finds it
                    labels.prefetch(shown.axis_number, int(shown.index))
                if changed["model"] and session.model_version is not None:
                    # open the new version's arrays here (zarr metadata reads) and read the shown
                    # planes (the layers are re-pointed on the GUI thread and find them in memory)
                    arrays = model_arrays(session)
                    if shown is not None:
                        prefetch_planes([a for a, show in zip(arrays, (True, unc_visible)) if a is not None and show],
                                        shown.axis_number, int(shown.index))
                    opened[session.model_version] = arrays
                fill()  # the shown plane as served now (a preview taken, the served tier switched)
                dt = time.perf_counter() - t0
                stats["n"] += 1
                stats["total_s"] += dt
                stats["max_s"] = max(stats["max_s"], dt)
                return changed

            def done(result: Any, error: BaseException | None) -> None:
                if self._poll_job is task:
                    self._poll_job = None

            task = self._poll_job = self._submit("poll", job, done)
        if not wait:
            return None
        self.wait_idle()
        if self._poll_job is task:  # the project was closed meanwhile: done() did not run
            self._poll_job = None
        return task.result()

    def _tick(self) -> None:
        if self._poll_job is None:
            self.poll(wait=False)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self.timer.stop()
        self.preview_timer.stop()
        self.close_project()
        super().closeEvent(event)


def _opened(session: Any) -> tuple[Any, Any, Any, Any]:
    """What the dock needs to show a session, read on the worker thread: the session, its volume
    facts, the served model version's layer data (zarr metadata reads off the GUI thread) and the
    served tier."""
    return session, session.volume, model_arrays(session), session.served_tier()
