"""The Qt widgets and layout of the "AL Annotator" dock: no session, no project, no threads.

:func:`build_dock_ui` lays the widgets out in the dock and returns them as a :class:`DockUI`;
the dock (``_widget``) connects their signals to its actions. The ``show_*`` functions render
values the dock hands them (a :class:`~al_annotator.core.TrainerStatus`, the suggestion queue,
a slice state, the served tier) into those widgets.
"""

from __future__ import annotations

import html
from typing import Any, Iterable, Sequence

from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QFont
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
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

__all__ = ["DockUI", "build_dock_ui", "class_button", "text_colour", "show_trainer_status", "show_suggestions",
           "show_slice_state", "show_served", "served_text", "SUGGESTION_COLUMNS", "DEFAULT_CLASSES"]

SUGGESTION_COLUMNS = ("axis", "slice", "score", "model", "stale")
DEFAULT_CLASSES = "background,bone,implant,degradation"
DEFAULT_STRATEGY = "hybrid"
#: The widgets that need an open project (disabled without one).
PROJECT_CONTROLS = ("annotated_button", "undo_button", "redo_button", "refresh_button", "next_button", "skip_button",
                    "start_button", "stop_button", "strategy_combo", "device_combo", "suggestion_table")


class DockUI:
    """The dock's widgets, by name (attributes set by :func:`build_dock_ui`)."""

    path_edit: QLineEdit
    browse_button: QPushButton
    open_button: QPushButton
    source_combo: QComboBox
    classes_edit: QLineEdit
    create_button: QPushButton
    info_label: QLabel
    class_box: QGroupBox
    class_grid: QGridLayout
    class_buttons: list
    slice_label: QLabel
    annotated_button: QPushButton
    undo_button: QPushButton
    redo_button: QPushButton
    strategy_combo: QComboBox
    refresh_button: QPushButton
    auto_refresh_check: QCheckBox
    suggestion_table: QTableWidget
    reason_label: QLabel
    next_button: QPushButton
    skip_button: QPushButton
    live_check: QCheckBox
    served_label: QLabel
    live_error_label: QLabel
    device_combo: QComboBox
    start_button: QPushButton
    stop_button: QPushButton
    trainer_label: QLabel
    progress: QProgressBar
    message_label: QLabel

    def widgets(self) -> dict[str, Any]:
        return dict(vars(self))

    def set_project_controls(self, enabled: bool) -> None:
        for name in PROJECT_CONTROLS:
            getattr(self, name).setEnabled(enabled)


def _button(text: str, tooltip: str = "") -> QPushButton:
    button = QPushButton(text)
    if tooltip:
        button.setToolTip(tooltip)
    return button


def build_dock_ui(parent: QWidget, strategies: Sequence[str]) -> DockUI:
    """Lay the dock's widgets out in ``parent``; ``strategies`` fill the ranking menu (the default,
    ``hybrid``, first)."""
    ui = DockUI()
    outer = QVBoxLayout(parent)
    outer.setContentsMargins(4, 4, 4, 4)

    # -- project
    box = QGroupBox("Project")
    grid = QGridLayout(box)
    ui.path_edit = QLineEdit()
    ui.path_edit.setPlaceholderText("project directory")
    ui.browse_button = _button("…", "Choose a project directory")
    ui.browse_button.setMaximumWidth(28)
    ui.open_button = _button("Open", "Open the project directory (a folder with project.json)")
    grid.addWidget(ui.path_edit, 0, 0, 1, 2)
    grid.addWidget(ui.browse_button, 0, 2)
    grid.addWidget(ui.open_button, 0, 3)
    ui.source_combo = QComboBox()
    ui.source_combo.setToolTip("Image layer to create a new project from")
    ui.classes_edit = QLineEdit(DEFAULT_CLASSES)
    ui.classes_edit.setToolTip("Class names of a new project, comma-separated (label i+1 = class i)")
    ui.create_button = _button("Create", "Create a new project in the directory above from the chosen image layer")
    grid.addWidget(QLabel("from"), 1, 0)
    grid.addWidget(ui.source_combo, 1, 1, 1, 2)
    grid.addWidget(ui.create_button, 1, 3)
    grid.addWidget(QLabel("classes"), 2, 0)
    grid.addWidget(ui.classes_edit, 2, 1, 1, 3)
    ui.info_label = QLabel("No project open.")
    ui.info_label.setWordWrap(True)
    grid.addWidget(ui.info_label, 3, 0, 1, 4)
    grid.setColumnStretch(1, 1)
    outer.addWidget(box)

    # -- classes (buttons added per project: class_button)
    ui.class_box = QGroupBox("Classes (label value)")
    ui.class_grid = QGridLayout(ui.class_box)
    ui.class_buttons = []
    outer.addWidget(ui.class_box)

    # -- current slice
    box = QGroupBox("Current slice")
    lay = QGridLayout(box)
    ui.slice_label = QLabel("–")
    ui.slice_label.setTextFormat(Qt.RichText)
    ui.annotated_button = _button("✓ Annotated", "Commit the displayed slice as fully annotated (the trainer starts a round)")
    ui.undo_button = _button("Undo")
    ui.redo_button = _button("Redo")
    lay.addWidget(ui.slice_label, 0, 0, 1, 3)
    lay.addWidget(ui.annotated_button, 1, 0)
    lay.addWidget(ui.undo_button, 1, 1)
    lay.addWidget(ui.redo_button, 1, 2)
    outer.addWidget(box)

    # -- suggestions
    box = QGroupBox("Suggestions")
    lay = QVBoxLayout(box)
    row = QHBoxLayout()
    ui.strategy_combo = QComboBox()
    ui.strategy_combo.addItems(sorted(strategies, key=lambda s: s != DEFAULT_STRATEGY))
    ui.strategy_combo.setToolTip("How slices are ranked (scores come from the current model version)")
    ui.refresh_button = _button("Refresh", "Rank slices again with the current model's scores")
    ui.auto_refresh_check = QCheckBox("auto")
    ui.auto_refresh_check.setChecked(True)
    ui.auto_refresh_check.setToolTip("Re-rank as soon as a new model version lands (else the queue is marked stale)")
    row.addWidget(ui.strategy_combo, 1)
    row.addWidget(ui.auto_refresh_check)
    row.addWidget(ui.refresh_button)
    lay.addLayout(row)
    table = ui.suggestion_table = QTableWidget(0, len(SUGGESTION_COLUMNS))
    table.setHorizontalHeaderLabels(SUGGESTION_COLUMNS)
    table.verticalHeader().setVisible(False)
    table.setSelectionBehavior(QAbstractItemView.SelectRows)
    table.setSelectionMode(QAbstractItemView.SingleSelection)
    table.setEditTriggers(QAbstractItemView.NoEditTriggers)
    header = table.horizontalHeader()
    for col in range(len(SUGGESTION_COLUMNS)):
        header.setSectionResizeMode(col, QHeaderView.ResizeToContents)
    header.setSectionResizeMode(SUGGESTION_COLUMNS.index("score"), QHeaderView.Stretch)
    table.setMinimumHeight(150)
    lay.addWidget(table)
    ui.reason_label = QLabel("")
    ui.reason_label.setWordWrap(True)
    ui.reason_label.setStyleSheet("color: #bbbbbb")
    ui.reason_label.setToolTip("Why the highlighted slice is suggested")
    lay.addWidget(ui.reason_label)
    row = QHBoxLayout()
    ui.next_button = _button("Next ▶", "Go to the best suggestion not yet annotated")
    ui.skip_button = _button("Skip", "Drop the selected (or displayed) slice from the queue for this session")
    row.addWidget(ui.next_button)
    row.addWidget(ui.skip_button)
    lay.addLayout(row)
    outer.addWidget(box, 1)

    # -- tier 1 live: the instant classifier's preview after every stroke, and which tier serves
    box = QGroupBox("Prediction")
    lay = QGridLayout(box)
    ui.live_check = QCheckBox("live")
    ui.live_check.setChecked(True)
    ui.live_check.setToolTip("Refit the instant classifier after every stroke and preview the slice on screen "
                             "(the prediction layers show whichever tier scores higher on held-out labels)")
    ui.served_label = QLabel("serving: nothing yet")
    ui.served_label.setWordWrap(True)
    ui.served_label.setTextFormat(Qt.RichText)
    ui.live_error_label = QLabel("")
    ui.live_error_label.setWordWrap(True)
    ui.live_error_label.setTextFormat(Qt.PlainText)
    ui.live_error_label.setStyleSheet("color: #ff8080")
    ui.live_error_label.setVisible(False)
    lay.addWidget(ui.live_check, 0, 0)
    lay.addWidget(ui.served_label, 0, 1)
    lay.addWidget(ui.live_error_label, 1, 0, 1, 2)
    lay.setColumnStretch(1, 1)
    outer.addWidget(box)

    # -- trainer
    box = QGroupBox("Trainer")
    lay = QGridLayout(box)
    ui.device_combo = QComboBox()
    ui.device_combo.addItems(["auto", "cpu", "cuda"])
    ui.device_combo.setToolTip("Where the trainer process runs the network")
    ui.start_button = _button("Start", "Start the background trainer process (a round after each new annotation)")
    ui.stop_button = _button("Stop")
    ui.trainer_label = QLabel("not started")
    ui.trainer_label.setWordWrap(True)
    ui.trainer_label.setTextFormat(Qt.RichText)
    ui.progress = QProgressBar()
    ui.progress.setRange(0, 100)
    ui.progress.setValue(0)
    lay.addWidget(ui.device_combo, 0, 0)
    lay.addWidget(ui.start_button, 0, 1)
    lay.addWidget(ui.stop_button, 0, 2)
    lay.addWidget(ui.trainer_label, 1, 0, 1, 3)
    lay.addWidget(ui.progress, 2, 0, 1, 3)
    outer.addWidget(box)

    ui.message_label = QLabel("")
    ui.message_label.setWordWrap(True)
    ui.message_label.setStyleSheet("color: #ff8080")
    outer.addWidget(ui.message_label)
    parent.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Expanding)
    parent.setMinimumWidth(340)
    return ui


def text_colour(hex_colour: str) -> str:
    """Black or white, whichever reads better on ``hex_colour``."""
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#ffffff"


def class_button(name: str, colour: str, value: int) -> QPushButton:
    """A checkable button in the class's colour (``value`` 0: erase)."""
    b = QPushButton(f"{name} ({value})")
    b.setCheckable(True)
    b.setToolTip("Paint with this class (napari's brush, fill and polygon tools)" if value else "Paint label 0: erase")
    b.setStyleSheet(f"QPushButton {{background-color: {colour}; color: {text_colour(colour)}; padding: 3px;}}"
                    f"QPushButton:checked {{border: 2px solid white; padding: 1px;}}")
    if value:
        b.setContextMenuPolicy(Qt.CustomContextMenu)  # right-click: edit the palette
    return b


def show_trainer_status(ui: DockUI, status: Any, eta: str = "") -> None:
    """A :class:`~al_annotator.core.TrainerStatus`: its summary (the notebook widget's phrasing,
    state in bold, an error in red) and the progress bar with the round's ``eta`` text."""
    parts = [html.escape(p) for p in status.parts()]
    parts[0] = f"<b>{parts[0]}</b>"
    if status.error:
        parts[-1] = f"<span style='color:#ff8080'>{parts[-1]}</span>"
    ui.trainer_label.setText(" · ".join(parts))  # TrainerStatus.summary(), marked up
    running = status.progress is not None and status.state in ("training", "predicting", "idle")
    ui.progress.setValue(int(round(100 * status.progress)) if running else 0)
    ui.progress.setFormat((f"{status.state} %p%" + (f" · {eta}" if eta else "")) if running else status.state)


def show_suggestions(ui: DockUI, items: Iterable[Any]) -> None:
    """Fill the suggestion table with queue items (stale ones grey and italic)."""
    items = list(items)
    table = ui.suggestion_table
    table.setRowCount(len(items))
    italic = QFont()
    italic.setItalic(True)
    for row, item in enumerate(items):
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


def show_slice_state(ui: DockUI, ref: Any, state: Any) -> None:
    """The slice shown and its state (annotated green, in progress orange), with who set it."""
    colour = {"annotated": "#4caf50", "in_progress": "#e69f00"}.get(state.state, "#aaaaaa")
    by = f" by {html.escape(state.by)}" if state.by else ""
    ui.slice_label.setText(f"<b>{ref.axis} = {ref.index}</b> &nbsp; <span style='color:{colour}'>{state.state.replace('_', ' ')}</span>{by}")


def served_text(served: dict | None, *, live: bool = True, deep_version: int | None = None) -> str:
    """The served tier in words (the core's phrasing, the same as the notebook widget's).

    Examples
    --------
    >>> served_text({"tier": "instant", "instant": 0.834, "deep": None, "reason": "no deep model version yet"})
    'serving: instant classifier · held-out Dice 0.83'
    """
    from ..core.values import served_summary

    return served_summary(served, model_version=deep_version, live=live)


def show_served(ui: DockUI, served: dict | None, error: str | None = None, *, live: bool = True,
                deep_version: int | None = None) -> None:
    """Which tier the prediction layers show (:meth:`Session.served_tier`), why (tooltip), and
    tier 1's last error (``session.live_error``) in red."""
    text = served_text(served, live=live, deep_version=deep_version)
    ui.served_label.setText(html.escape(text))
    ui.served_label.setToolTip((served or {}).get("reason", "") if live else "live preview is off")
    ui.live_error_label.setText(f"instant classifier failed: {error}" if error else "")
    ui.live_error_label.setVisible(bool(error))
