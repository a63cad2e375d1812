"""Progress in napari's idiom: the dock's long work as ``napari.utils.progress`` bars (needs a display)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

napari = pytest.importorskip("napari", reason="napari is not installed (pip install 'al-annotator[napari]')")

from test_napari import gui  # noqa: E402,F401


@pytest.mark.gui
def test_the_napari_dock_shows_project_creation_in_the_activity_panel(gui, tmp_path, make_napari_viewer):
    """Creating a project from a layer in the dock draws a napari.utils.progress bar per stage,
    updated on the GUI thread while the worker thread imports."""
    from napari.utils import progress

    from al_annotator.napari._widget import AnnotatorWidget

    seen: list = []
    updates: list[tuple[int, bool]] = []

    def added(event):
        for bar in event.added:
            seen.append(bar)
            bar.events.value.connect(lambda e: updates.append((e.value, threading.current_thread() is threading.main_thread())))

    progress._all_instances.events.changed.connect(added)
    try:
        viewer = make_napari_viewer()
        widget = AnnotatorWidget(viewer, poll_ms=0)
        viewer.window.add_dock_widget(widget, name="AL Annotator")
        viewer.add_image(np.zeros((130, 16, 16), np.uint16), name="scan")
        widget.create_project(tmp_path / "made", "scan", "background,bone")
        widget.wait_idle()
        assert widget.session is not None and (tmp_path / "made" / "project.json").is_file()
        widget.close_project()
    finally:
        progress._all_instances.events.changed.disconnect(added)
    assert [(b.desc.rstrip(": "), b.total) for b in seen] == [("import", 130)]
    assert [v for v, _ in updates] == [64, 128, 130] and all(main for _, main in updates), updates


@pytest.mark.gui
def test_the_dock_trainer_bar_shows_an_eta(gui, tmp_path, make_napari_viewer):
    from al_annotator.core import TrainerStatus
    from al_annotator.napari._widget import AnnotatorWidget

    widget = AnnotatorWidget(make_napari_viewer(), poll_ms=0)
    widget._on_trainer_status(TrainerStatus(state="training", alive=True, round=1, progress=0.2))
    assert "ETA" not in widget.ui.progress.format()
    widget._on_trainer_status(TrainerStatus(state="predicting", alive=True, round=1, progress=0.8))
    assert widget.ui.progress.value() == 80 and " · ETA " in widget.ui.progress.format(), widget.ui.progress.format()
