"""The napari front end: strokes painted with napari's own tools land in the store on disk.

Tests marked ``gui`` need a display: the ``pytest-xvfb`` plugin starts Xvfb (install
``xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-cursor0 libgl1 libegl1 libgl1-mesa-dri``);
without one they skip and say why. The bridge tests (napari Labels layer + session, no window)
run wherever napari is installed.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari", reason="napari is not installed (pip install 'al-annotator[napari]')")

from al_annotator.core import Session  # noqa: E402
from al_annotator.datasets import make_phantom  # noqa: E402
from al_annotator.store import create_project, open_project  # noqa: E402
from al_annotator.store.models import publish_version  # noqa: E402
from al_annotator.types import SliceRef  # noqa: E402

MANIFEST = Path(__file__).resolve().parents[1] / "al_annotator" / "napari" / "napari.yaml"
SHAPE = (20, 40, 48)
CLASSES = ("background", "bone", "implant", "degradation")


# ---------------------------------------------------------------------- environment
@functools.lru_cache(maxsize=1)
def _qt_problem() -> str | None:
    """Why a Qt window cannot open here (None when it can). Checked in a subprocess: a missing
    xcb library makes Qt abort the process, which a test cannot catch."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        why = "no display: install Xvfb (apt-get install xvfb ...) so pytest-xvfb can start one"
        return why if shutil.which("Xvfb") is None else why + " (Xvfb is installed but pytest-xvfb did not start it; run without -p no:xvfb)"
    code = "from qtpy.QtWidgets import QApplication; app = QApplication([]); print('ok')"
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "starting a Qt application timed out"
    if proc.returncode != 0 or "ok" not in proc.stdout:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return "Qt cannot open a window here (missing xcb/GL system libraries?): " + " | ".join(tail)
    return None


def _skip_without_qt() -> bool:
    """skipif condition, evaluated before any fixture (pytest-qt's session QApplication would abort
    the whole run without a display): skips with the detailed reason."""
    problem = _qt_problem()
    if problem:
        pytest.skip(problem)
    return False


@pytest.fixture
def gui():
    problem = _qt_problem()
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="module")
def plugin():
    """Make the plugin known to npe2 (discovered through its entry point, or registered from the file)."""
    import npe2

    pm = npe2.PluginManager.instance()
    pm.discover()
    if "al-annotator" not in pm._manifests:  # entry point missing from the installed metadata
        pm.register(npe2.PluginManifest.from_file(MANIFEST))
    return pm


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def phantom():
    return make_phantom(SHAPE, dtype="uint16")


@pytest.fixture
def project(tmp_path, phantom):
    create_project(tmp_path / "proj", phantom.image, classes=CLASSES, author="test")
    return tmp_path / "proj"


@pytest.fixture
def dock(gui, plugin, make_napari_viewer, project):
    from al_annotator.napari._widget import AnnotatorWidget

    viewer = make_napari_viewer()
    widget = AnnotatorWidget(viewer, poll_ms=0)
    viewer.window.add_dock_widget(widget, name="AL Annotator")
    widget.open_project(project, author="ana")
    widget.wait_idle()  # the first poll and the cold-start ranking run on the commit thread
    yield viewer, widget
    widget.close_project()


def _on_disk(path) -> np.ndarray:
    return np.asarray(open_project(path).labels[...])


def _drag(layer, viewer, points):
    """A stroke through napari's mouse callbacks (press, moves, release) at world positions."""
    from napari.utils._proxies import ReadOnlyWrapper
    from napari.utils.interactions import mouse_move_callbacks, mouse_press_callbacks, mouse_release_callbacks

    dims = viewer.dims
    common = {"view_direction": None, "dims_displayed": tuple(dims.displayed), "dims_point": tuple(dims.point), "pos": (0, 0), "button": 1}

    class Event:
        def __init__(self, type, position, is_dragging):
            self.type, self.position, self.is_dragging, self.handled = type, tuple(position), is_dragging, False
            self.modifiers = ()
            for k, v in common.items():
                setattr(self, k, v)

    mouse_press_callbacks(layer, ReadOnlyWrapper(Event("mouse_press", points[0], False)))
    for p in points[1:]:
        mouse_move_callbacks(layer, ReadOnlyWrapper(Event("mouse_move", p, True)))
    mouse_release_callbacks(layer, ReadOnlyWrapper(Event("mouse_release", points[-1], False)))


def _publish(store, version, pred, conf, refs_scores):
    """Publish a model version as the trainer would: volume outputs in zarr, scores, current.json."""
    from al_annotator.acquisition.pool import SliceCandidates

    group = store.root.require_group("models").require_group(f"v{version:04d}")
    for name, arr in (("prediction", pred), ("confidence", conf)):
        group.create_array(name, shape=arr.shape, dtype=arr.dtype, chunks=(16, 16, 16), overwrite=True)[...] = arr
    d = store.path / "models" / f"v{version:04d}.partial"
    d.mkdir(parents=True)
    refs = [r for r, _ in refs_scores]
    cand = SliceCandidates(refs, {"entropy": np.array([s for _, s in refs_scores], np.float32)},
                           embeddings=np.eye(len(refs), 8, dtype=np.float32), model_version=version)
    np.savez(d / "scores.npz", **cand.to_arrays())
    publish_version(store, version, {"created": time.time(), "trained_on_seq": 0, "metrics": {}})


# ---------------------------------------------------------------------- no window needed
def test_store_labels_buffers_writes_and_reads_the_store():
    from al_annotator.napari._arrays import StoreLabels

    base = np.zeros((6, 70, 70), np.uint8)
    lab = StoreLabels(base, chunks=(4, 32, 32))
    lab[2, 30:40, 30:40] = 3  # spans 4 chunks
    assert base.sum() == 0 and lab.pending == 4
    assert (lab[2, 30:40, 30:40] == 3).all() and (lab[2, ::-1, 35] == np.where((np.arange(70)[::-1] >= 30) & (np.arange(70)[::-1] < 40), 3, 0)).all()
    assert int(lab[(np.array([2, 2]), np.array([30, 0]), np.array([30, 0]))].sum()) == 3  # napari's data_setitem indexing
    coords, values = lab.take_differences()
    assert coords.shape == (3, 100) and (values == 3).all() and lab.pending == 0
    base[1, 0, 0] = 1
    assert int(lab[1, 0, 0]) == 1  # reads come from the store


def test_store_labels_plane_cache_follows_the_store_and_strokes():
    """Cached whole planes are used only at the edit-log position they were read at; a committed
    stroke is written into every cached plane it crosses; the stroke buffer is overlaid, never cached."""
    from al_annotator.napari._arrays import PlaneCache, StoreLabels
    from al_annotator.types import EditAtom

    base = np.zeros((6, 70, 70), np.uint8)
    seq = [0]
    reads = []

    class Counting(np.ndarray):
        def __getitem__(self, key):
            reads.append(key)
            return np.ndarray.__getitem__(self, key)

    store = base.view(Counting)
    lab = StoreLabels(store, chunks=(4, 32, 32), token=lambda: seq[0])
    z2 = (2, slice(None), slice(None))
    y35 = (slice(None), 35, slice(None))
    assert lab.prefetch(0, 2) and lab.prefetch(1, 35) and not lab.prefetch(0, 2)  # read once, then cached
    reads.clear()
    assert lab[z2].shape == (70, 70) and lab[(slice(None), slice(35, 36), slice(None))].shape == (6, 1, 70) and not reads
    lab[2, 30:40, 30:40] = 3  # a dab: into the stroke buffer, shown on top of the cached planes
    assert (lab[z2][30:40, 30:40] == 3).all() and (lab[y35][2, 30:40] == 3).all()
    assert (lab.plane_cache.get(0, 2, 0) == 0).all()  # the cache holds the store only
    lab.take_differences()  # the stroke goes to the store (as Session.apply_edit does) ...
    base[2, 30:40, 30:40] = 3
    atom = EditAtom(SliceRef("z", 2), np.ravel_multi_index(np.mgrid[30:40, 30:40].reshape(2, -1), (70, 70)), np.array([3], np.uint8))
    seq[0] = 1
    lab.apply_atoms([atom], 0, 1)  # ... and into the cached planes it crosses (the bridge does this)
    reads.clear()
    assert (lab[z2] == base[2]).all() and (lab[y35] == base[:, 35]).all() and not reads
    base[2, 0, 0] = 4  # another writer: the store moves on without the cache seeing the edit
    seq[0] = 2
    assert int(lab[z2][0, 0]) == 4 and reads  # a stale token: read again, never shown stale
    lab[1, 0, 0] = 2
    lab.discard()  # a refused stroke never reaches the cached planes
    assert int(lab[(1, slice(None), slice(None))][0, 0]) == 0
    small = PlaneCache(max_bytes=3 * 70 * 70, max_planes=8)
    for i in range(5):
        small.put(0, i, 0, np.zeros((70, 70), np.uint8))
    assert len(small) == 3 and small.get(0, 0, 0) is None and small.get(0, 4, 0) is not None


def test_voxels_to_atoms_groups_by_the_sliced_axis():
    from al_annotator.napari._edits import voxels_to_atoms

    coords = np.array([[0, 1, 2, 3], [5, 5, 5, 5], [1, 2, 1, 2]])  # y = 5 for all: a stroke on y=5
    atoms = voxels_to_atoms(coords, 2, "y", (4, 8, 3))
    assert [str(a.slice_ref) for a in atoms] == ["y=5"]
    assert atoms[0].indices.tolist() == [1, 5, 7, 11]  # (z, x) flat in a 4x3 slice
    per_z = voxels_to_atoms(coords, np.array([1, 2, 3, 4]), "z", (4, 8, 3))
    assert [str(a.slice_ref) for a in per_z] == ["z=0", "z=1", "z=2", "z=3"]


def test_bridge_without_a_window(tmp_path, phantom):
    """napari's Labels layer (no viewer): paint -> disk, napari undo -> logged session undo, in-place writes too."""
    from napari.layers import Labels

    from al_annotator.napari._bridge import LabelsBridge
    from al_annotator.napari._layers import labels_array

    session = Session(tmp_path / "p", volume=phantom.image, classes=CLASSES, author="ana")
    layer = Labels(labels_array(session))
    bridge = LabelsBridge(session, layer, current_slice=lambda: SliceRef("z", 10))
    committed = []
    bridge.stroke_committed.connect(committed.append)
    layer.brush_size = 5
    for axis, index in ((0, 10), (1, 20), (2, 21)):  # planes through the stroke, cached before it
        layer.data.prefetch(axis, index)
    layer.paint((10, 20, 20), 3)
    disk = _on_disk(tmp_path / "p")
    for axis, index in ((0, 10), (1, 20), (2, 21)):  # the commit wrote the stroke into them
        key = tuple(index if a == axis else slice(None) for a in range(3))
        assert layer.data.plane_cache.has(axis, index, session.labels_seq)
        assert np.array_equal(layer.data[key], disk[key])
    assert int((disk[10] == 3).sum()) == 21 and int((disk == 3).sum()) == 21  # a radius-2.5 disc, on z=10 only
    assert committed and committed[0][0].slice_ref == SliceRef("z", 10) and committed[0][0].seq is not None
    assert layer.data.pending == 0
    layer.undo()  # napari's Ctrl+Z binding calls this
    disk = _on_disk(tmp_path / "p")
    assert int((disk == 3).sum()) == 0
    for axis, index in ((0, 10), (1, 20), (2, 21)):  # the undo reached the cached planes too
        key = tuple(index if a == axis else slice(None) for a in range(3))
        assert layer.data.plane_cache.has(axis, index, session.labels_seq)
        assert np.array_equal(layer.data[key], disk[key])
    records = session.store.log.read_all().records
    assert records[-1].meta.get("undo_of") == committed[0][0].seq
    layer.redo()
    assert int((_on_disk(tmp_path / "p") == 3).sum()) == 21
    layer.data[5, 0:2, 0:3] = 4  # code writing into the layer without an event is logged too
    assert int((_on_disk(tmp_path / "p")[5] == 4).sum()) == 6
    layer.selected_label = 9  # not a class: clamped to the last class
    assert layer.selected_label == len(CLASSES)


def test_manifest_declares_the_contributions():
    import importlib

    from npe2 import PluginManifest

    m = PluginManifest.from_file(MANIFEST)
    assert m.name == "al-annotator"
    assert [w.display_name for w in m.contributions.widgets] == ["AL Annotator"]
    assert m.contributions.readers[0].accepts_directories and "*.nii.gz" in m.contributions.readers[0].filename_patterns
    assert {".tif", ".nii", ".nii.gz", ".ome.zarr"} <= set(m.contributions.writers[0].filename_extensions)
    assert {s.key for s in m.contributions.sample_data} == {"bone", "cement", "phantom"}
    for cmd in m.contributions.commands:
        module, attr = cmd.python_name.split(":")
        assert callable(getattr(importlib.import_module(module), attr)), cmd.python_name


def test_plugin_is_discovered_through_its_entry_point():
    import npe2

    pm = npe2.PluginManager()
    pm.discover()
    assert "al-annotator" in pm._manifests, (
        "npe2 does not find the plugin: declare the entry point in pyproject.toml "
        '([project.entry-points."napari.manifest"] al-annotator = "al_annotator.napari:napari.yaml") and reinstall (pip install -e .)'
    )
    assert pm.get_manifest("al-annotator").contributions.widgets[0].display_name == "AL Annotator"


def test_import_al_annotator_napari_stays_light():
    code = "import sys, al_annotator.napari; print(sorted(m for m in ('napari', 'qtpy', 'PyQt5', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize("suffix", [".tif", ".nii.gz", ".ome.zarr"])
def test_writer_and_reader_round_trip(tmp_path, phantom, suffix):
    from al_annotator.napari._io import get_reader, write_labels

    labels = phantom.labels.copy()
    written = write_labels(str(tmp_path / f"labels{suffix}"), labels, {"name": "labels", "scale": (2.0, 1.0, 1.0)})
    assert len(written) == 1 and Path(written[0]).exists()
    reader = get_reader(written[0])
    assert reader is not None
    (data, meta, kind), = reader(written[0])
    assert kind == "labels" and np.array_equal(np.asarray(data), labels)


def test_sample_data_phantom_has_ground_truth():
    from al_annotator.napari._io import sample_phantom

    (img, img_meta, img_kind), (lab, lab_meta, lab_kind) = sample_phantom()
    assert (img_kind, lab_kind) == ("image", "labels") and img.shape == lab.shape
    assert set(np.unique(lab).tolist()) <= {1, 2, 3, 4} and img_meta["contrast_limits"][1] > img_meta["contrast_limits"][0]


# ---------------------------------------------------------------------- the dock (Xvfb)
@pytest.mark.gui
@pytest.mark.skipif("_skip_without_qt()", reason="needs a display for Qt")
def test_dock_opens_a_project_with_lazy_layers_and_shows_strokes(dock, project, tmp_path):
    from al_annotator.core import ReadOnlyArray
    from al_annotator.napari._arrays import MappedArray, StoreLabels

    viewer, w = dock
    image = w.layers["image"].data  # lazy: napari reads the displayed plane only (a cached read-only view)
    assert isinstance(image, MappedArray) and isinstance(image.base, ReadOnlyArray) and not hasattr(image, "__setitem__")
    assert isinstance(w.layers["labels"].data, StoreLabels) and isinstance(w.layers["labels"].data.base, ReadOnlyArray)
    assert tuple(w.layers["image"].contrast_limits) == pytest.approx(w.session.volume.display_window)
    bone = np.array(w.layers["labels"].colormap.map(np.array([2]))).reshape(-1)[:3]
    assert bone == pytest.approx([int(w.session.colours[1][i : i + 2], 16) / 255 for i in (1, 3, 5)], abs=1e-3)
    assert len(w.class_buttons) == len(CLASSES) + 1
    assert w.suggestion_table.rowCount() > 0  # cold-start suggestions
    assert viewer.layers[-1] is w.layers["labels"] and viewer.layers.selection.active is w.layers["labels"]
    # LOOK at it: the painted colour is on the canvas (PNG in $AL_ANNOTATOR_SCREENSHOTS, else tmp_path)
    viewer.window.show()
    w.go_to(SliceRef("z", 10))
    layer = w.layers["labels"]
    layer.brush_size = 15
    w.select_label(3)
    layer.paint((10, 20, 24), 3)
    w.layers["image"].visible = False
    shot = viewer.screenshot(canvas_only=True, flash=False)
    full = viewer.screenshot(canvas_only=False, flash=False)
    try:
        import imageio.v3 as iio

        iio.imwrite(Path(os.environ.get("AL_ANNOTATOR_SCREENSHOTS", tmp_path)) / "napari_dock.png", full)
    except ImportError:
        pass
    colour = np.array([int(w.session.colours[2][i : i + 2], 16) for i in (1, 3, 5)], float)
    rgb = shot[..., :3].astype(float)
    # opacity 0.7 over a black canvas
    close = np.abs(rgb - 0.7 * colour).max(axis=-1) < 25
    assert close.sum() > 100, "the painted implant colour is not on the canvas"


@pytest.mark.gui
@pytest.mark.skipif("_skip_without_qt()", reason="needs a display for Qt")
def test_mouse_stroke_on_the_y_axis_is_on_disk(dock, project, qtbot):
    viewer, w = dock
    w.go_to(SliceRef("y", 17))
    assert viewer.dims.order[0] == 1 and w.displayed_slice() == SliceRef("y", 17) and w.session.current == SliceRef("y", 17)
    layer = w.layers["labels"]
    w.select_label(3)  # implant
    layer.brush_size = 3
    seen = []
    w.bridge.stroke_committed.connect(seen.append)
    _drag(layer, viewer, [(4, 17, 10), (4, 17, 14), (8, 17, 20)])
    assert layer.get_value((6, 17, 17), world=True) == 3  # shown at once (the commit runs on a thread)
    qtbot.waitUntil(lambda: bool(seen), timeout=30_000)
    assert w.bridge.pending == 0 and layer.data.pending == 0  # committed: the layer reads the store again
    assert len(seen) == 1 and [a.slice_ref for a in seen[0]] == [SliceRef("y", 17)]  # one stroke, one atom
    disk = _on_disk(project)
    assert int((disk[:, 17, :] == 3).sum()) > 15 and int((disk == 3).sum()) == int((disk[:, 17, :] == 3).sum())
    assert disk[4, 17, 10] == 3 and disk[8, 17, 20] == 3
    assert layer.get_value((6, 17, 17), world=True) == 3  # what napari shows is what is stored
    assert w.session.slice_state(SliceRef("y", 17)).state == "in_progress"
    # another process (a notebook, a colleague) edits the displayed slice: it shows after the poll
    other = open_project(project, author="ben")
    other.paint(SliceRef("y", 17), np.arange(40), "degradation")  # row z=0 of the y=17 slice
    assert layer.get_value((0, 17, 5), world=True) == 0
    w.poll()
    assert layer.get_value((0, 17, 5), world=True) == 4


@pytest.mark.gui
@pytest.mark.skipif("_skip_without_qt()", reason="needs a display for Qt")
def test_suggestions_click_next_annotated_skip(dock, project, qtbot):
    from qtpy.QtCore import Qt

    viewer, w = dock
    table = w.suggestion_table
    rows = [r for r in range(table.rowCount()) if table.item(r, 0).text() != "z"]
    assert rows, "the cold-start queue should hold slices along y or x"
    row = rows[0]
    axis, index = table.item(row, 0).text(), int(table.item(row, 1).text())
    rect = table.visualItemRect(table.item(row, 1))
    qtbot.mouseClick(table.viewport(), Qt.LeftButton, pos=rect.center())
    # the session moves on the worker thread, the dims when the planes are read
    qtbot.waitUntil(lambda: w.session.current == SliceRef(axis, index) and not w.busy, timeout=10_000)
    assert viewer.dims.order[0] == "zyx".index(axis)
    assert viewer.dims.current_step["zyx".index(axis)] == index
    assert w.displayed_slice() == SliceRef(axis, index)
    assert w.reason_label.text().startswith(f"{axis}={index}")
    # Next, Annotated, Skip
    first = w._queue[0].ref
    qtbot.mouseClick(w.next_button, Qt.LeftButton)  # picked and read on the commit thread, then shown
    qtbot.waitUntil(lambda: w.displayed_slice() == first and not w.busy, timeout=10_000)
    w.layers["labels"].paint(tuple(first.index if i == first.axis_number else 5 for i in range(3)), 2)
    qtbot.mouseClick(w.annotated_button, Qt.LeftButton)  # committed on the commit thread
    qtbot.waitUntil(lambda: not w.busy, timeout=30_000)
    assert open_project(project).slice_state(first).state == "annotated"
    assert first not in [item.ref for item in w._queue] and "annotated" in w.slice_label.text()
    second = w._queue[0].ref
    w.suggestion_table.selectRow(0)
    qtbot.mouseClick(w.skip_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not w.busy, timeout=30_000)
    assert second not in [item.ref for item in w._queue]


@pytest.mark.gui
@pytest.mark.skipif("_skip_without_qt()", reason="needs a display for Qt")
def test_prediction_layers_follow_new_model_versions(dock, project):
    viewer, w = dock
    placeholder = w.layers["prediction"]
    assert not placeholder.visible and placeholder.metadata["model_version"] is None  # no model yet
    writer = open_project(project)
    pred = np.ones(SHAPE, np.uint8)
    pred[:, :20] = 2
    conf = np.full(SHAPE, 255, np.uint8)
    conf[:, :, :10] = 51
    _publish(writer, 1, pred, conf, [(SliceRef("z", i), s) for i, s in enumerate([0.2, 0.9, 0.5])])
    assert w.poll()["model"]
    layer = w.layers["prediction"]
    assert layer is placeholder and layer.visible and not layer.editable and layer.metadata["model_version"] == 1
    w.go_to(SliceRef("z", 3))
    assert layer.get_value((3, 5, 30), world=True) == 2 and layer.get_value((3, 30, 30), world=True) == 1
    unc = w.layers["uncertainty"]
    assert layer.visible and not unc.visible  # the heat map is one click away in the layer list
    unc.visible = True
    assert unc.get_value((3, 30, 5), world=True) == pytest.approx(0.8, abs=0.01)
    assert unc.get_value((3, 30, 30), world=True) == pytest.approx(0.0, abs=0.01)
    # "auto" re-ranked the queue with version 1's scores
    assert w._queue and all(not item.stale and item.suggestion.model_version == 1 for item in w._queue)
    w.auto_refresh_check.setChecked(False)
    pred2 = np.full(SHAPE, 3, np.uint8)
    _publish(writer, 2, pred2, conf, [(SliceRef("z", i), s) for i, s in enumerate([0.9, 0.1, 0.5])])
    w.poll()
    assert w.layers["prediction"] is layer and layer.get_value((3, 5, 30), world=True) == 3  # same layer, new data
    assert all(item.stale for item in w._queue) and w.suggestion_table.item(0, 4).text() == "stale"
    assert w.layers["labels"] is viewer.layers[-1]  # painting stays on top


@pytest.mark.gui
@pytest.mark.skipif("_skip_without_qt()", reason="needs a display for Qt")
def test_palette_edits_follow_between_front_ends(dock, project, qtbot):
    from al_annotator import Session

    viewer, w = dock
    w.set_class_colour(2, "#00ff00")  # here: saved, layer and button follow
    qtbot.waitUntil(lambda: tuple(w.layers["labels"].colormap.map(2)[:3].round(3)) == (0.0, 1.0, 0.0), timeout=5000)
    assert "#00ff00" in w.class_buttons[2].styleSheet()
    other = Session(project)  # e.g. the notebook widget in another process
    other.rename_class(3, "magnesium")
    other.set_class_colour(3, "#0000ff")
    w.poll()
    qtbot.waitUntil(lambda: w.class_buttons[3].text() == "magnesium (3)", timeout=5000)
    assert tuple(w.layers["labels"].colormap.map(3)[:3].round(3)) == (0.0, 0.0, 1.0)
    assert tuple(w.layers["prediction"].colormap.map(3)[:3].round(3)) == (0.0, 0.0, 1.0)
    assert open_project(project).config.colours[1] == "#00ff00"


@pytest.mark.gui
@pytest.mark.skipif("_skip_without_qt()", reason="needs a display for Qt")
def test_trainer_status_and_buttons(dock, project, monkeypatch):
    viewer, w = dock
    calls = []
    monkeypatch.setattr(w.session, "start_trainer", lambda **kw: calls.append(("start", kw)) or 4242)
    monkeypatch.setattr(w.session, "stop_trainer", lambda timeout=30.0: calls.append(("stop", timeout)) or False)
    w.device_combo.setCurrentText("cpu")
    w.start_button.click()  # on the worker thread (every Session call that changes something is)
    w.wait_idle()
    assert calls == [("start", {"device": "cpu"})] and "4242" in w.trainer_label.text()
    # a status as the worker writes it; the pid is a live stand-in process
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (project / "trainer").mkdir(exist_ok=True)
        status = {"state": "training", "round": 2, "step": 30, "loss": 0.4321, "val_dice": 0.812, "device": "cpu",
                  "progress": 0.5, "heartbeat": time.time(), "pid": stand_in.pid}
        (project / "trainer" / "status.json").write_text(json.dumps(status))
        assert w.poll()["trainer"]
        text = w.trainer_label.text()
        assert "training" in text and "round 2" in text and "loss 0.432" in text and "val Dice 0.812" in text
        assert w.progress.value() == 50
        import html
        import re

        from al_annotator.core import TrainerStatus

        failed = TrainerStatus(state="failed", round=3, error="CUDA out of memory <8 GiB>")
        w._on_trainer_status(failed)  # the status line is TrainerStatus.summary(), marked up
        assert html.unescape(re.sub("<[^>]+>", "", w.trainer_label.text())) == failed.summary()
        w.stop_button.click()
        w.wait_idle()
        assert calls[-1] == ("stop", 0.0)  # never blocks the GUI waiting for the worker
    finally:
        stand_in.kill()
        stand_in.wait()


@pytest.mark.gui
@pytest.mark.skipif("_skip_without_qt()", reason="needs a display for Qt")
def test_poll_runs_off_the_gui_thread_and_results_arrive_by_signal(dock, project, qtbot, monkeypatch):
    import threading

    viewer, w = dock
    session = w.session
    ran_on = []
    release = threading.Event()
    from al_annotator.core import TrainerStatus

    status = TrainerStatus(state="training", round=7, step=3, progress=0.25, alive=True)

    def slow_poll():  # a poll stuck on a slow filesystem (the trainer writing its outputs)
        ran_on.append(threading.current_thread())
        release.wait(10)
        session.trainer_status_changed.emit(status)
        return {"labels": False, "model": False, "trainer": True}

    monkeypatch.setattr(session, "poll", slow_poll)
    t = time.perf_counter()
    w._tick()  # what the QTimer calls
    w._tick()  # a tick while the poll is in flight starts no second poll
    handed_over = time.perf_counter() - t
    assert handed_over < 0.1, f"the timer's handler blocked the GUI thread for {handed_over:.3f} s"
    qtbot.waitUntil(lambda: bool(ran_on), timeout=10_000)
    assert ran_on[0] is not threading.main_thread()
    assert "round 7" not in w.trainer_label.text()  # nothing yet: the poll is still running
    # the GUI thread stays free meanwhile: Qt events are processed while the poll blocks
    beats = []
    timer_id = w.startTimer(5)
    w.timerEvent = lambda event: beats.append(time.perf_counter())
    qtbot.wait(200)
    w.killTimer(timer_id)
    assert len(beats) >= 5 and w.busy
    release.set()
    qtbot.waitUntil(lambda: "round 7" in w.trainer_label.text(), timeout=10_000)  # delivered on the GUI thread
    assert w.progress.value() == 25 and len(ran_on) == 1 and not w.busy


@pytest.mark.gui
@pytest.mark.skipif("_skip_without_qt()", reason="needs a display for Qt")
def test_mark_annotated_runs_off_the_gui_thread_after_its_strokes(dock, project, qtbot, monkeypatch):
    import threading

    viewer, w = dock
    session = w.session
    ref = SliceRef("z", 6)
    w.go_to(ref)
    layer = w.layers["labels"]
    w.select_label(2)
    layer.brush_size = 3
    ran_on = []
    mark = session.mark_annotated

    def slow_mark(ref=None, annotated=True):
        ran_on.append(threading.current_thread())
        time.sleep(0.4)
        return mark(ref, annotated)

    monkeypatch.setattr(session, "mark_annotated", slow_mark)
    _drag(layer, viewer, [(6, 10, 10), (6, 10, 16), (6, 14, 20)])  # committed on the commit thread
    t = time.perf_counter()
    w.annotated_button.click()
    handed_over = time.perf_counter() - t
    assert handed_over < 0.2, f"'Annotated' blocked the GUI thread for {handed_over:.3f} s"
    qtbot.waitUntil(lambda: not w.busy, timeout=30_000)
    assert ran_on and ran_on[0] is not threading.main_thread()
    assert "annotated" in w.slice_label.text()
    # on disk: the stroke, then the slice state (the order it was asked for)
    store = open_project(project)
    assert store.slice_state(ref).state == "annotated" and int((np.asarray(store.labels[6]) == 2).sum()) > 5
    records = store.log.read_all().records
    kinds = [(r.kind, r.meta.get("axis"), r.meta.get("index")) for r in records]
    assert kinds.index(("state", "z", 6)) > max(i for i, k in enumerate(kinds) if k[0] == "edit")


@pytest.fixture
def main_thread_reads(monkeypatch):
    """Every zarr read made on the GUI (main) thread: ``(array path, key)``."""
    import threading

    import zarr

    seen = []
    getitem = zarr.Array.__getitem__

    def counting(self, key):
        if threading.current_thread() is threading.main_thread():
            seen.append((self.path, key))
        return getitem(self, key)

    monkeypatch.setattr(zarr.Array, "__getitem__", counting)
    return seen


@pytest.mark.gui
@pytest.mark.skipif("_skip_without_qt()", reason="needs a display for Qt")
def test_showing_slices_reads_no_zarr_on_the_gui_thread(dock, project, qtbot, main_thread_reads):
    """Next, a click in the suggestion table, a new model version and another process's edits: the
    planes napari shows are read on the commit thread; the GUI thread reads no zarr chunk."""
    from qtpy.QtCore import Qt

    viewer, w = dock
    writer = open_project(project)
    pred = np.ones(SHAPE, np.uint8)
    pred[:, :20] = 2
    conf = np.full(SHAPE, 255, np.uint8)
    conf[:, :, :10] = 51
    image = np.asarray(writer.image[...])
    w.layers["uncertainty"].visible = True  # all four layers shown
    w.go_to(SliceRef("x", 30))
    main_thread_reads.clear()
    # a new model version: both model layers re-pointed at planes read off the GUI thread
    _publish(writer, 1, pred, conf, [(SliceRef("y", 7), 0.9), (SliceRef("z", 4), 0.5), (SliceRef("x", 11), 0.2), (SliceRef("y", 12), 0.4)])
    assert w.poll()["model"] and w.layers["prediction"].metadata["model_version"] == 1
    assert main_thread_reads == [], main_thread_reads
    assert w.layers["prediction"].get_value((3, 5, 30), world=True) == 2
    assert w.layers["uncertainty"].get_value((3, 30, 30), world=True) == pytest.approx(0.0, abs=0.01)
    # Next: the best suggestion, on another axis than the one shown; its planes are read before the dims move
    target = w._queue[0].ref
    w.go_to(SliceRef("z" if target.axis != "z" else "y", 3))
    main_thread_reads.clear()
    qtbot.mouseClick(w.next_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: w.displayed_slice() == target and not w.busy, timeout=10_000)
    assert main_thread_reads == [], main_thread_reads
    point = tuple(target.index if a == target.axis_number else 3 for a in range(3))
    assert w.layers["prediction"].get_value(point, world=True) == pred[point]
    assert w.layers["uncertainty"].get_value(point, world=True) == pytest.approx(1 - conf[point] / 255, abs=0.01)
    assert w.layers["image"].get_value(point, world=True) == image[point]
    # a click in the table, on another axis again
    row = next(r for r, item in enumerate(w._queue) if item.ref.axis != target.axis)
    ref = w._queue[row].ref
    qtbot.mouseClick(w.suggestion_table.viewport(), Qt.LeftButton, pos=w.suggestion_table.visualItemRect(w.suggestion_table.item(row, 1)).center())
    qtbot.waitUntil(lambda: w.displayed_slice() == ref and not w.busy, timeout=10_000)
    assert main_thread_reads == [], main_thread_reads
    # another process paints the shown slice: read on the commit thread by the poll, then refreshed
    other = open_project(project, author="ben")
    other.paint(ref, np.arange(SHAPE[2] if ref.axis != "x" else SHAPE[1]), "degradation")  # the first row of the slice
    main_thread_reads.clear()  # (that process's own reads)
    w.poll()
    assert main_thread_reads == [], main_thread_reads
    point = tuple(ref.index if a == ref.axis_number else 0 if a == min(d for d in range(3) if d != ref.axis_number) else 5 for a in range(3))
    assert w.layers["labels"].get_value(point, world=True) == 4


@pytest.mark.gui
@pytest.mark.skipif("_skip_without_qt()", reason="needs a display for Qt")
def test_cached_label_planes_show_every_saved_stroke(dock, project, qtbot, main_thread_reads):
    """A plane cached before a stroke shows the stroke once it is saved (on every axis it crosses),
    and what napari shows equals the store."""
    viewer, w = dock
    layer = w.layers["labels"]
    for ref in (SliceRef("y", 20), SliceRef("x", 24), SliceRef("z", 10)):  # cache the three planes
        w.go_to(ref)
    w.select_label(3)
    layer.brush_size = 5
    seen = []
    w.bridge.stroke_committed.connect(seen.append)
    _drag(layer, viewer, [(10, 18, 24), (10, 20, 24), (10, 22, 24)])
    qtbot.waitUntil(lambda: bool(seen) and not w.busy, timeout=30_000)
    disk = _on_disk(project)
    main_thread_reads.clear()
    for ref in (SliceRef("y", 20), SliceRef("x", 24), SliceRef("z", 10)):
        w.go_to(ref)
        layer.refresh()
        shown = np.asarray(layer._slice.image.raw)
        assert np.array_equal(shown, disk[ref.selection()]), ref
    assert int((disk == 3).sum()) > 10
    assert [r for r in main_thread_reads if r[0] == "labels"] == []  # all from the (updated) cache



@pytest.mark.gui
@pytest.mark.skipif("_skip_without_qt()", reason="needs a display for Qt")
def test_reader_and_sample_data_through_napari(gui, plugin, make_napari_viewer, project):
    viewer = make_napari_viewer()
    viewer.open_sample("al-annotator", "phantom")
    assert [type(layer).__name__ for layer in viewer.layers] == ["Image", "Labels"]
    # "Create" in the dock: a new project from the sample's image layer
    _, dock = viewer.window.add_plugin_dock_widget("al-annotator", "AL Annotator")
    assert dock.source_combo.currentText() == "phantom"
    dock.path_edit.setText(str(project.parent / "from_layer"))
    dock.create_button.click()
    assert dock.session is not None and dock.message_label.text() == ""
    created = open_project(project.parent / "from_layer")
    assert created.shape == viewer.layers["phantom"].data.shape and created.config.n_classes == 4
    assert np.array_equal(np.asarray(created.image[5]), viewer.layers["phantom"].data[5])
    assert not viewer.layers["phantom"].visible  # the project's own image layer replaces it
    layers = viewer.open(str(project), plugin="al-annotator")
    assert layers == []  # the dock added them
    _, dock = viewer.window.add_plugin_dock_widget("al-annotator", "AL Annotator")  # the one the reader opened
    assert dock.session is not None and dock.session.volume.path == str(project.absolute())
    dock.layers["labels"].paint((10, 20, 20), 2)
    dock.bridge.drain()
    assert int((_on_disk(project) == 2).sum()) > 0
    dock.close_project()
