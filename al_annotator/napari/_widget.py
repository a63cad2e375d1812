"""The "AL Annotator" dock: a thin napari front end on :class:`~al_annotator.core.Session`.

The dock holds no annotation state of its own: labels live in the project store (the Labels
layer reads them lazily and its strokes become :meth:`Session.apply_edit` calls through
:class:`~al_annotator.napari._bridge.LabelsBridge`), suggestions and slice states come from the
session, and the trainer runs in its own process, watched through the project directory.

Threads: the GUI thread only updates widgets and layers. Everything that reads or writes project
files (a stroke's commit, :meth:`Session.poll` on the ``QTimer``, committing a slice, ranking
suggestions) runs on the bridge's one commit thread, in the order it was asked for; the session's
signals from there are queued (``thread="main"``) and delivered on the GUI thread when the task's
completion is posted back. ``benchmarks/bench_napari.py`` measures the longest GUI pause.

Showing a slice reads zarr chunks (0.5-1 s for the planes of four layers at 1024^3). The layer
data wrappers cache whole planes (``_arrays.PlaneCache``); before the dock moves napari's dims
(Next, a click in the suggestion table) or refreshes a layer (labels another process edited, a new
model version) the commit thread reads the planes about to be shown into those caches, and napari's
slicing on the GUI thread then finds them in memory.
"""

from __future__ import annotations

import html
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from psygnal import emit_queued
from qtpy.QtCore import QObject, Qt, QTimer, Signal
from qtpy.QtGui import QColor, QFont
from qtpy.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.values import TrainerStatus
from ..errors import AlAnnotatorError
from ..types import AXES, SliceRef
from ._arrays import ZerosArray, read_only
from ._bridge import LabelsBridge, finish_in_order, take_once
from ._layers import (
    class_colormap,
    image_layer_kwargs,
    labels_array,
    labels_token,
    layer_names,
    model_arrays,
    prefetch_planes,
    uncertainty_array,
)

if TYPE_CHECKING:
    import napari

__all__ = ["AnnotatorWidget"]

log = logging.getLogger(__name__)

#: How often the dock picks up what the trainer and other front ends did (ms).
POLL_MS = 500
STRATEGY_CHOICES = ("hybrid", "entropy", "margin", "least_confidence", "bald", "coreset", "foreground_random", "random")
SUGGESTION_COLUMNS = ("axis", "slice", "score", "model", "stale")


class _GuiThreadPoster(QObject):
    """``post(fn)`` from any thread runs ``fn`` on the GUI thread later (a queued Qt signal; queued
    from the GUI thread too, so a task that is already done is never finished inside its own submit)."""

    call = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.call.connect(self._run, Qt.QueuedConnection)

    def _run(self, fn: Any) -> None:
        fn()

    def post(self, fn: Any) -> None:
        self.call.emit(fn)


class _Task:
    """Store work handed to the commit thread; finished (results, signals) on the GUI thread."""

    __slots__ = ("name", "session", "future", "on_done", "handled")

    def __init__(self, name: str, session: Any, on_done: Any) -> None:
        self.name = name
        self.session = session
        self.future: Any = None
        self.on_done = on_done
        self.handled = False


def _text_colour(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#ffffff"


class AnnotatorWidget(QWidget):
    """Open or create a project, paint with napari's tools, follow suggestions, run the trainer.

    Parameters
    ----------
    napari_viewer
        The viewer (napari passes it when the dock is opened from the Plugins menu).
    poll_ms
        Period of the timer that calls :meth:`Session.poll`; ``0`` disables the timer (tests
        and scripts then call :meth:`poll` themselves).

    Examples
    --------
    >>> import napari                                               # doctest: +SKIP
    >>> viewer = napari.Viewer()                                    # doctest: +SKIP
    >>> dock = AnnotatorWidget(viewer)                              # doctest: +SKIP
    >>> viewer.window.add_dock_widget(dock, name="AL Annotator")    # doctest: +SKIP
    >>> dock.open_project("my_project")                             # doctest: +SKIP
    """

    def __init__(self, napari_viewer: "napari.viewer.Viewer", *, poll_ms: int = POLL_MS) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: Any = None
        self.bridge: LabelsBridge | None = None
        self.layers: dict[str, Any] = {}
        self._queue: list[Any] = []
        self._syncing = False
        self._started_trainer = False
        self._tasks: list[_Task] = []
        self._poll_task: _Task | None = None
        self._opened_models: dict[int, tuple[Any, Any]] = {}
        self._qt_dims: Any = None
        #: Time :meth:`Session.poll` took on the commit thread (the GUI thread does not wait for it).
        self.poll_stats = {"n": 0, "max_s": 0.0, "total_s": 0.0}
        self._poster = _GuiThreadPoster()
        self._build_ui()
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
        self._set_project_controls(False)

    # ================================================================== UI
    def _build_ui(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)

        # -- project
        box = QGroupBox("Project")
        grid = QGridLayout(box)
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("project directory")
        self.browse_button = QPushButton("…")
        self.browse_button.setToolTip("Choose a project directory")
        self.browse_button.setMaximumWidth(28)
        self.browse_button.clicked.connect(self._browse)
        self.open_button = QPushButton("Open")
        self.open_button.setToolTip("Open the project directory (a folder with project.json)")
        self.open_button.clicked.connect(lambda: self._guard(self.open_project, self.path_edit.text()))
        grid.addWidget(self.path_edit, 0, 0, 1, 2)
        grid.addWidget(self.browse_button, 0, 2)
        grid.addWidget(self.open_button, 0, 3)
        self.source_combo = QComboBox()
        self.source_combo.setToolTip("Image layer to create a new project from")
        self.classes_edit = QLineEdit("background,bone,implant,degradation")
        self.classes_edit.setToolTip("Class names of a new project, comma-separated (label i+1 = class i)")
        self.create_button = QPushButton("Create")
        self.create_button.setToolTip("Create a new project in the directory above from the chosen image layer")
        self.create_button.clicked.connect(self._create_clicked)
        grid.addWidget(QLabel("from"), 1, 0)
        grid.addWidget(self.source_combo, 1, 1, 1, 2)
        grid.addWidget(self.create_button, 1, 3)
        grid.addWidget(QLabel("classes"), 2, 0)
        grid.addWidget(self.classes_edit, 2, 1, 1, 3)
        self.info_label = QLabel("No project open.")
        self.info_label.setWordWrap(True)
        grid.addWidget(self.info_label, 3, 0, 1, 4)
        grid.setColumnStretch(1, 1)
        outer.addWidget(box)

        # -- classes
        self.class_box = QGroupBox("Classes (label value)")
        self.class_grid = QGridLayout(self.class_box)
        self.class_buttons: list[QPushButton] = []
        outer.addWidget(self.class_box)

        # -- current slice
        box = QGroupBox("Current slice")
        lay = QGridLayout(box)
        self.slice_label = QLabel("–")
        self.slice_label.setTextFormat(Qt.RichText)
        self.annotated_button = self._button("✓ Annotated", self.mark_annotated, "Commit the displayed slice as fully annotated (the trainer starts a round)")
        self.undo_button = self._button("Undo", self.undo)
        self.redo_button = self._button("Redo", self.redo)
        lay.addWidget(self.slice_label, 0, 0, 1, 3)
        lay.addWidget(self.annotated_button, 1, 0)
        lay.addWidget(self.undo_button, 1, 1)
        lay.addWidget(self.redo_button, 1, 2)
        outer.addWidget(box)

        # -- suggestions
        box = QGroupBox("Suggestions")
        lay = QVBoxLayout(box)
        row = QHBoxLayout()
        self.strategy_combo = QComboBox()
        self.strategy_combo.addItems(STRATEGY_CHOICES)
        self.strategy_combo.setToolTip("How slices are ranked (scores come from the current model version)")
        self.refresh_button = self._button("Refresh", self.refresh_suggestions, "Rank slices again with the current model's scores")
        self.auto_refresh_check = QCheckBox("auto")
        self.auto_refresh_check.setChecked(True)
        self.auto_refresh_check.setToolTip("Re-rank as soon as a new model version lands (else the queue is marked stale)")
        self.auto_refresh_check.toggled.connect(self._on_auto_rerank)
        row.addWidget(self.strategy_combo, 1)
        row.addWidget(self.auto_refresh_check)
        row.addWidget(self.refresh_button)
        lay.addLayout(row)
        self.suggestion_table = QTableWidget(0, len(SUGGESTION_COLUMNS))
        self.suggestion_table.setHorizontalHeaderLabels(SUGGESTION_COLUMNS)
        self.suggestion_table.verticalHeader().setVisible(False)
        self.suggestion_table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.suggestion_table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.suggestion_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        header = self.suggestion_table.horizontalHeader()
        for col in range(len(SUGGESTION_COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(SUGGESTION_COLUMNS.index("score"), QHeaderView.Stretch)
        self.suggestion_table.setMinimumHeight(150)
        self.suggestion_table.cellClicked.connect(self._suggestion_clicked)
        lay.addWidget(self.suggestion_table)
        self.reason_label = QLabel("")
        self.reason_label.setWordWrap(True)
        self.reason_label.setStyleSheet("color: #bbbbbb")
        self.reason_label.setToolTip("Why the highlighted slice is suggested")
        lay.addWidget(self.reason_label)
        row = QHBoxLayout()
        self.next_button = self._button("Next ▶", self.next_suggestion, "Go to the best suggestion not yet annotated")
        self.skip_button = self._button("Skip", self.skip, "Drop the selected (or displayed) slice from the queue for this session")
        row.addWidget(self.next_button)
        row.addWidget(self.skip_button)
        lay.addLayout(row)
        outer.addWidget(box, 1)

        # -- trainer
        box = QGroupBox("Trainer")
        lay = QGridLayout(box)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda"])
        self.device_combo.setToolTip("Where the trainer process runs the network")
        self.start_button = self._button("Start", self.start_trainer, "Start the background trainer process (a round after each new annotation)")
        self.stop_button = self._button("Stop", self.stop_trainer)
        self.trainer_label = QLabel("not started")
        self.trainer_label.setWordWrap(True)
        self.trainer_label.setTextFormat(Qt.RichText)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        lay.addWidget(self.device_combo, 0, 0)
        lay.addWidget(self.start_button, 0, 1)
        lay.addWidget(self.stop_button, 0, 2)
        lay.addWidget(self.trainer_label, 1, 0, 1, 3)
        lay.addWidget(self.progress, 2, 0, 1, 3)
        outer.addWidget(box)

        self.message_label = QLabel("")
        self.message_label.setWordWrap(True)
        self.message_label.setStyleSheet("color: #ff8080")
        outer.addWidget(self.message_label)
        self.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Expanding)
        self.setMinimumWidth(340)

    def _button(self, text: str, action: Any, tooltip: str = "") -> QPushButton:
        """A push button that runs ``action`` through :meth:`_guard` (errors shown, not raised)."""
        button = QPushButton(text)
        if tooltip:
            button.setToolTip(tooltip)
        button.clicked.connect(lambda: self._guard(action))
        return button

    def _set_project_controls(self, enabled: bool) -> None:
        for w in (self.annotated_button, self.undo_button, self.redo_button, self.refresh_button, self.next_button,
                  self.skip_button, self.start_button, self.stop_button, self.strategy_combo, self.device_combo,
                  self.suggestion_table):
            w.setEnabled(enabled)

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

        current = self.source_combo.currentText()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Image) and layer.ndim == 3
                 and layer not in self.layers.values()]
        self.source_combo.blockSignals(True)
        self.source_combo.clear()
        self.source_combo.addItems(names)
        if current in names:
            self.source_combo.setCurrentText(current)
        self.source_combo.blockSignals(False)
        self.create_button.setEnabled(bool(names))

    # ================================================================== project
    def open_project(self, path: str | Path, **session_kw: Any) -> Any:
        """Open a project directory: add its layers and bind the labels layer to a new session."""
        from ..core import Session

        if not str(path).strip():
            raise AlAnnotatorError("type a project directory first (a folder with project.json)")
        session = Session(Path(str(path)).expanduser(), **session_kw)
        self._attach(session)
        return session

    def create_project(self, path: str | Path, source: Any, classes: str | None = None, **create_kw: Any) -> Any:
        """Create a project at ``path`` from an image layer (or its name, or an array) and open it."""
        from ..core import Session
        from ..config import parse_classes

        if not str(path).strip():
            raise AlAnnotatorError("type the new project's directory first")
        if isinstance(source, str):
            source = self.viewer.layers[source]
        array = getattr(source, "data", source)
        if "spacing" not in create_kw and hasattr(source, "scale") and len(source.scale) == 3:
            create_kw["spacing"] = tuple(float(s) for s in source.scale)
        if classes:
            create_kw["classes"] = parse_classes(classes)
        QApplication.setOverrideCursor(Qt.WaitCursor)
        try:
            session = Session(Path(str(path)).expanduser(), volume=array, **create_kw)
        finally:
            QApplication.restoreOverrideCursor()
        if hasattr(source, "visible"):
            source.visible = False
        self._attach(session)
        return session

    def _create_clicked(self) -> None:
        name = self.source_combo.currentText()
        if not name:
            self._message("add a 3D image layer first (File > Open, or a sample from File > Open Sample > AL Annotator)")
            return
        self._guard(self.create_project, self.path_edit.text(), name, self.classes_edit.text())

    def _attach(self, session: Any) -> None:
        self.close_project()
        self.session = session
        session.auto_rerank = self.auto_refresh_check.isChecked()
        store = session.store
        name = Path(store.path).name if store.path else "project"
        names = layer_names(name)
        self.path_edit.setText(str(store.path or ""))
        image = self.viewer.add_image(read_only(store.image), **image_layer_kwargs(store, name))
        pred_layer, unc_layer = self._add_model_layers(names)
        labels = self.viewer.add_labels(
            labels_array(store),
            name=names["labels"],
            scale=tuple(store.config.spacing),
            axis_labels=AXES,
            colormap=class_colormap(store.config.colours),
            opacity=0.7,
            metadata={"al_annotator_project": str(store.path) if store.path else None},
        )
        labels.brush_size = 8
        labels.selected_label = min(2, store.config.n_classes)
        labels.mode = "paint"
        self.layers = {"image": image, "labels": labels, "prediction": pred_layer, "uncertainty": unc_layer}
        # strokes are committed on a background thread (the GUI never waits on the edit log's fsync);
        # session signals are therefore connected with thread="main": always handled on the GUI thread
        self.bridge = LabelsBridge(session, labels, current_slice=self.displayed_slice, notify=self._message, post=self._poster.post)
        session.slice_changed.connect(self._on_session_slice, thread="main")
        session.slice_state_changed.connect(self._on_slice_state, thread="main")
        session.suggestions_changed.connect(self._on_suggestions, thread="main")
        session.model_version_changed.connect(self._on_model_version, thread="main")
        session.trainer_status_changed.connect(self._on_trainer_status, thread="main")
        session.classes_changed.connect(self._on_classes, thread="main")
        labels.events.selected_label.connect(self._on_selected_label)
        self.viewer.layers.selection.active = labels
        self._build_class_buttons()
        self._set_project_controls(True)
        self._refresh_source_layers()
        self.go_to(session.current)
        self.viewer.reset_view()
        self._update_info()
        self._update_slice_label()
        self._on_trainer_status(TrainerStatus(state="loading", alive=True))
        self.poll(wait=False)  # the trainer's status
        self.refresh_suggestions()  # before the first model: the cold start reads a few hundred chunks

    def close_project(self) -> None:
        """Remove the project's layers and close the session (a trainer this dock started is asked to stop)."""
        if self.session is None:
            return
        self.wait_idle()  # strokes and store work in flight finish (and are handled) first
        session = self.session
        if self.bridge is not None:
            self.bridge.drain()
            self.bridge.flush()
            self.bridge.disconnect()
            self.bridge = None
        for sig, slot in ((session.slice_changed, self._on_session_slice), (session.slice_state_changed, self._on_slice_state),
                          (session.suggestions_changed, self._on_suggestions), (session.model_version_changed, self._on_model_version),
                          (session.trainer_status_changed, self._on_trainer_status), (session.classes_changed, self._on_classes)):
            sig.disconnect(slot)
        if self._started_trainer:
            try:
                session.stop_trainer(timeout=0.0)
            except AlAnnotatorError:
                pass
            self._started_trainer = False
        for layer in self.layers.values():
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.layers = {}
        self.session = None
        self._opened_models = {}
        session.close()
        self._queue = []
        self._on_suggestions([])
        self._build_class_buttons()
        self._set_project_controls(False)
        self.info_label.setText("No project open.")
        self.slice_label.setText("–")

    def _update_info(self) -> None:
        s = self.session
        if s is None:
            return
        store = s.store
        shape = "×".join(str(n) for n in store.shape)
        version = "no model yet" if s.model_version is None else f"model v{s.model_version}"
        self.info_label.setText(f"<b>{html.escape(Path(store.path).name if store.path else 'in-memory')}</b> · {shape} {store.dtype} · "
                                f"{store.config.n_classes} classes · {version} · author {html.escape(s.author)}")

    def _build_class_buttons(self) -> None:
        for b in self.class_buttons:
            self.class_grid.removeWidget(b)
            b.deleteLater()
        self.class_buttons = []
        if self.session is None:
            return
        cfg = self.session.store.config
        entries = [("erase", "#202020", 0)] + [(name, colour, i + 1) for i, (name, colour) in enumerate(zip(cfg.classes, cfg.colours))]
        for k, (name, colour, value) in enumerate(entries):
            b = QPushButton(f"{name} ({value})")
            b.setCheckable(True)
            b.setToolTip("Paint with this class (napari's brush, fill and polygon tools)" if value else "Paint label 0: erase")
            b.setStyleSheet(f"QPushButton {{background-color: {colour}; color: {_text_colour(colour)}; padding: 3px;}}"
                            f"QPushButton:checked {{border: 2px solid white; padding: 1px;}}")
            b.clicked.connect(lambda _=False, v=value: self.select_label(v))
            if value:  # right-click: edit the palette (saved in the project, shared with other front ends)
                b.setContextMenuPolicy(Qt.CustomContextMenu)
                b.customContextMenuRequested.connect(lambda _pos, v=value: self._guard(self._edit_class_dialog, v))
            self.class_grid.addWidget(b, k // 3, k % 3)
            self.class_buttons.append(b)
        self._on_selected_label()

    def set_class_colour(self, value: int, colour: str) -> None:
        """Change class ``value``'s colour in the project (the layers follow via ``classes_changed``)."""
        if self.session is not None:
            self.session.set_class_colour(value, colour)

    def rename_class(self, value: int, name: str) -> None:
        if self.session is not None:
            self.session.rename_class(value, name)

    def _edit_class_dialog(self, value: int) -> None:  # pragma: no cover - modal dialogs
        from qtpy.QtGui import QColor
        from qtpy.QtWidgets import QColorDialog, QInputDialog

        cfg = self.session.store.config
        name, ok = QInputDialog.getText(self, "Class", f"Name of label {value}:", text=cfg.classes[value - 1])
        if ok and name.strip() and name.strip() != cfg.classes[value - 1]:
            self.rename_class(value, name.strip())
        colour = QColorDialog.getColor(QColor(cfg.colours[value - 1]), self, f"Colour of {cfg.classes[value - 1]}")
        if colour.isValid() and colour.name().lower() != cfg.colours[value - 1]:
            self.set_class_colour(value, colour.name())

    def _on_classes(self, classes: list) -> None:
        """A palette edit (here or in another front end): new buttons and layer colours."""
        if self.session is None:
            return
        cmap = class_colormap(self.session.store.config.colours)
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
        """Prediction and uncertainty layers, added at open (hidden placeholders before the first
        model): adding a napari layer costs ~0.3-1 s of GUI time, which must not land mid-session."""
        store = self.session.store
        version = self.session.model_version
        pred, conf = model_arrays(store, version)
        kw = {"scale": tuple(store.config.spacing), "axis_labels": AXES}
        pred_layer = self.viewer.add_labels(
            read_only(pred) if pred is not None else ZerosArray(store.shape, np.uint8), name=names["prediction"],
            colormap=class_colormap(store.config.colours), opacity=0.35, visible=pred is not None, **kw)
        pred_layer.editable = False
        pred_layer.metadata["model_version"] = version if pred is not None else None
        unc_layer = self.viewer.add_image(
            uncertainty_array(conf) if conf is not None else ZerosArray(store.shape, np.float32), name=names["uncertainty"],
            colormap="inferno", contrast_limits=[0.0, 1.0], blending="additive", opacity=0.6, visible=False, **kw)
        unc_layer.metadata["model_version"] = version if conf is not None else None
        return pred_layer, unc_layer

    def _on_model_version(self, current: dict) -> None:
        """A new model version landed: point the prediction and uncertainty layers at it."""
        store = self.session.store
        version = int(current["version"])
        opened = self._opened_models.pop(version, None)  # opened by the poll on the commit thread
        for older in [v for v in self._opened_models if v < version]:
            del self._opened_models[older]
        if opened is None:
            pred, conf = model_arrays(store, version)
            opened = (read_only(pred) if pred is not None else None, uncertainty_array(conf) if conf is not None else None)
        if any(self.layers.get(k) not in self.viewer.layers for k in ("prediction", "uncertainty")):
            for k in ("prediction", "uncertainty"):  # the user deleted one: add both again
                if self.layers.get(k) in self.viewer.layers:
                    self.viewer.layers.remove(self.layers[k])
            self.layers["prediction"], self.layers["uncertainty"] = self._add_model_layers(
                layer_names(Path(store.path).name if store.path else "project"))
        for key, data in zip(("prediction", "uncertainty"), opened):
            if data is None:
                continue
            layer = self.layers[key]
            first = layer.metadata.get("model_version") is None
            if layer.metadata.get("model_version") != version:
                layer.data = data  # its displayed plane was read on the commit thread (poll)
                layer.metadata["model_version"] = version
            if first and key == "prediction":
                layer.visible = True  # the first model: show what it predicts
            if key == "prediction":
                layer.editable = False  # napari re-enables it when data or visibility change
        # keep the labels layer on top (painting) and active
        labels = self.layers.get("labels")
        if labels is not None and labels in self.viewer.layers:
            i = self.viewer.layers.index(labels)
            if i != len(self.viewer.layers) - 1:
                self.viewer.layers.move(i, len(self.viewer.layers))
        self._update_info()  # re-ranking on a new version is the Session's policy (session.auto_rerank)

    def _on_auto_rerank(self, checked: bool) -> None:
        if self.session is not None:
            self.session.auto_rerank = bool(checked)

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

    def go_to(self, ref: SliceRef) -> None:
        """Show ``ref``: put its axis on the slider (``dims.order``) and move to its index."""
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
        self._on_dims()

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

    def _prefetch_job(self, ref: SliceRef) -> Any:
        """A commit-thread job that reads ``ref``'s planes of the shown layers into their plane
        caches; built on the GUI thread."""
        arrays = [layer.data for layer in self.layers.values() if layer is not None and layer.visible and layer in self.viewer.layers]
        axis, index = ref.axis_number, int(ref.index)
        return lambda: prefetch_planes(arrays, axis, index)

    def _on_dims(self, event: Any = None) -> None:
        if self._syncing or self.session is None:
            return
        ref = self.displayed_slice()
        if ref is not None and ref != self.session.current:
            self.session.goto(ref)
        self._update_slice_label()

    def _on_session_slice(self, ref: SliceRef) -> None:
        if self.displayed_slice() != ref:
            self.go_to(ref)
        self._update_slice_label()
        self._highlight_current_row()

    def _on_slice_state(self, state: Any = None) -> None:
        self._update_slice_label()

    def _update_slice_label(self) -> None:
        s = self.session
        if s is None:
            return
        ref = s.current
        st = s.store.slice_state(ref)
        colour = {"annotated": "#4caf50", "in_progress": "#e69f00"}.get(st.state, "#aaaaaa")
        by = f" by {html.escape(st.by)}" if st.by else ""
        self.slice_label.setText(f"<b>{ref.axis} = {ref.index}</b> &nbsp; <span style='color:{colour}'>{st.state.replace('_', ' ')}</span>{by}")

    # ================================================================== actions
    def mark_annotated(self, *, wait: bool = False) -> None:
        """Commit the displayed slice as fully annotated.

        Runs on the commit thread after the strokes painted before it (their order on disk is
        kept); the slice label and the queue update when it is done. ``wait`` blocks until then.
        """
        if self.bridge is not None:
            self.bridge.flush()  # writes outside a stroke join the commit queue before the state
        ref = self.displayed_slice() or self.session.current
        session = self.session
        labels = self.layers["labels"].data

        def job() -> Any:  # commit thread
            before = labels_token(session.store)
            out = session.mark_annotated(ref)
            after = labels_token(session.store)
            if isinstance(before, int) and after == before + 1:
                labels.apply_atoms([], before, after)  # a slice state, no label changed: cached planes stay valid
            return out

        self._submit("mark annotated", job)
        if wait:
            self.wait_idle()

    def undo(self) -> None:
        if self.bridge is not None:
            self.bridge.undo()

    def redo(self) -> None:
        if self.bridge is not None:
            self.bridge.redo()

    def refresh_suggestions(self, *, wait: bool = False) -> list[Any] | None:
        """Rank the slices again (on the commit thread: after every stroke and slice state asked for).

        The table fills when the ranking is done (``suggestions_changed``); ``wait`` blocks until then
        and returns the queue.
        """
        session = self.session
        strategy = self.strategy_combo.currentText()
        if self.bridge is not None:
            self.bridge.flush()
        self.reason_label.setText("ranking slices…")

        def done(result: Any, error: BaseException | None) -> None:
            if not any(t.name == "rank" for t in self._tasks):
                self._highlight_current_row()  # the reason of the shown slice, or nothing

        self._submit("rank", lambda: session.refresh_suggestions(strategy), done)
        if wait:
            self.wait_idle()
            return list(self._queue)
        return None

    def next_suggestion(self, *, wait: bool = False) -> Any:
        """Go to the best suggestion not yet annotated.

        On the commit thread (after the slice states asked for before it): the session picks the
        slice and the planes of the shown layers are read there; the dims move on the GUI thread
        when that is done, and napari finds the planes in the layers' caches. ``wait`` blocks until
        then and returns the queue item (``None``: nothing left); without it, returns ``None``.
        """
        session = self.session
        arrays = [layer.data for layer in self.layers.values() if layer is not None and layer.visible]

        def job() -> Any:  # commit thread; session.slice_changed reaches the dock on the GUI thread
            item = session.next_suggestion()
            if item is not None:
                prefetch_planes(arrays, item.ref.axis_number, int(item.ref.index))
            return item

        def done(item: Any, error: BaseException | None) -> None:
            if item is None and error is None:
                self._message("no suggestion left: press Refresh (or wait for the next model version)")

        task = self._submit("next suggestion", job, done)
        if wait:
            self.wait_idle()
            return task.future.result() if task.future.exception() is None else None
        return None

    def skip(self) -> None:
        rows = self.suggestion_table.selectionModel().selectedRows() if self.suggestion_table.selectionModel() else []
        ref = self._queue[rows[0].row()].ref if rows and rows[0].row() < len(self._queue) else self.session.current
        session = self.session
        # on the commit thread like every other change of the session's queue (no lost update)
        self._submit("skip", lambda: session.skip(ref))

    def _suggestion_clicked(self, row: int, col: int = 0) -> None:
        if 0 <= row < len(self._queue):
            ref = self._queue[row].ref
            session = self.session
            # the slice's planes are read on the commit thread; the dims move when they are in memory
            self._submit("show suggestion", self._prefetch_job(ref),
                         lambda _r, _e: session.goto(ref) if session is self.session else None)

    def _on_suggestions(self, items: list) -> None:
        self._queue = list(items)
        table = self.suggestion_table
        table.setRowCount(len(self._queue))
        italic = QFont()
        italic.setItalic(True)
        for row, item in enumerate(self._queue):
            s = item.suggestion
            values = (s.axis, str(s.index), f"{s.score:.3f}", "–" if s.model_version is None else f"v{s.model_version}",
                      "stale" if item.stale else "")
            for col, text in enumerate(values):
                cell = QTableWidgetItem(text)
                cell.setToolTip(s.reason)
                if item.stale:
                    cell.setForeground(QColor("#999999"))
                    cell.setFont(italic)
                table.setItem(row, col, cell)
        self._highlight_current_row()

    def _highlight_current_row(self) -> None:
        if self.session is None:
            return
        for row, item in enumerate(self._queue):
            if item.ref == self.session.current:
                self.suggestion_table.blockSignals(True)
                self.suggestion_table.selectRow(row)
                self.suggestion_table.blockSignals(False)
                stale = " (scored by an older model: press Refresh)" if item.stale else ""
                self.reason_label.setText(f"{item.ref}: {item.suggestion.reason}{stale}")
                return
        self.suggestion_table.clearSelection()
        self.reason_label.setText("")

    # ================================================================== trainer
    def start_trainer(self) -> int:
        device = self.device_combo.currentText()
        pid = self.session.start_trainer(device=device)
        self._started_trainer = True
        self.trainer_label.setText(f"starting (pid {pid})…")
        return pid

    def stop_trainer(self) -> None:
        # timeout 0: write the stop file and SIGTERM, return at once; the status poll shows "stopped"
        self.session.stop_trainer(timeout=0.0)
        self._started_trainer = False
        self.trainer_label.setText("stopping…")

    def _on_trainer_status(self, status: TrainerStatus) -> None:
        parts = [html.escape(p) for p in status.parts()]  # the same phrasing as the notebook widget
        parts[0] = f"<b>{parts[0]}</b>"
        if status.error:
            parts[-1] = f"<span style='color:#ff8080'>{parts[-1]}</span>"
        self.trainer_label.setText(" · ".join(parts))
        running = status.progress is not None and status.state in ("training", "predicting", "idle")
        self.progress.setValue(int(round(100 * status.progress)) if running else 0)
        self.progress.setFormat(f"{status.state} %p%" if running else status.state)

    # ================================================================== background work
    def _submit(self, name: str, fn: Any, on_done: Any = None) -> _Task:
        """Run ``fn`` on the commit thread (after the strokes and tasks before it); its session
        signals and ``on_done(result, error)`` are handled on the GUI thread when it is done."""
        task = _Task(name, self.session, on_done)
        self._tasks.append(task)
        task.future = self.bridge.submit(fn)
        task.future.add_done_callback(lambda _f, t=task: self._poster.post(lambda: self._finish_task(t)))
        return task

    def _finish_task(self, task: _Task) -> None:  # GUI thread
        if not take_once(task, self._tasks):
            return
        if task is self._poll_task:
            self._poll_task = None
        emit_queued()  # the session's signals from the commit thread, on this thread now
        if task.session is not self.session:
            return  # the project was closed meanwhile
        error = task.future.exception()
        if error is not None:
            if isinstance(error, AlAnnotatorError):
                self._message(str(error))
            else:
                log.error("%s failed", task.name, exc_info=error)
                self._message(f"{task.name} failed: {type(error).__name__}: {error}")
        if task.on_done is not None:
            task.on_done(None if error is not None else task.future.result(), error)

    @property
    def busy(self) -> bool:
        """True while strokes or store work handed to the commit thread are not handled yet."""
        return bool(self._tasks) or bool(self.bridge is not None and self.bridge.pending)

    def wait_idle(self) -> None:
        """Wait for the strokes and store work in flight and handle them now (scripts, tests, closing).

        Blocks the calling (GUI) thread; the dock itself only calls it when a project is closed.
        """
        while self.busy:
            if self.bridge is not None:
                self.bridge.drain()
            finish_in_order(self._tasks, self._finish_task)

    # ================================================================== polling
    def poll(self, *, wait: bool = True) -> dict[str, bool] | None:
        """Pick up the trainer's and other front ends' changes.

        :meth:`Session.poll` runs on the commit thread; its signals update the dock on the GUI
        thread when it is done. The timer calls this with ``wait=False`` (returns at once; no second
        poll starts while one is in flight). ``wait=True`` (scripts, tests) blocks until the poll
        and what it set off (re-ranking after a new model) are handled, and returns what changed.
        """
        if self.session is None:
            return None
        task = self._poll_task
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

            def job() -> dict[str, bool]:  # commit thread
                t0 = time.perf_counter()
                changed = session.poll()
                if changed["labels"] and shown is not None:
                    # another process's edits: the shown plane is read here, the layer's refresh finds it
                    labels.prefetch(shown.axis_number, int(shown.index))
                if changed["model"] and session.model_version is not None:
                    # open the new version's arrays here (zarr metadata reads) and read the shown
                    # planes (the layers are re-pointed on the GUI thread and find them in memory)
                    pred, conf = model_arrays(session.store, session.model_version)
                    arrays = (read_only(pred) if pred is not None else None, uncertainty_array(conf) if conf is not None else None)
                    if shown is not None:
                        prefetch_planes([a for a, show in zip(arrays, (True, unc_visible)) if a is not None and show],
                                        shown.axis_number, int(shown.index))
                    opened[session.model_version] = arrays
                dt = time.perf_counter() - t0
                stats["n"] += 1
                stats["total_s"] += dt
                stats["max_s"] = max(stats["max_s"], dt)
                return changed

            task = self._poll_task = self._submit("poll", job)
        if not wait:
            return None
        self.wait_idle()
        return task.future.result() if task.future.exception() is None else None

    def _tick(self) -> None:
        if self._poll_task is None:
            self.poll(wait=False)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self.timer.stop()
        self.close_project()
        super().closeEvent(event)
