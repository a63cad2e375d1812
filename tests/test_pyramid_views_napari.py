"""napari's image layer is multiscale over the store's pyramid: napari reads the level that fits
the zoom (the coarsest in 3D); the labels stay full resolution, aligned, and a stroke painted
zoomed out lands on disk at full resolution. Under Xvfb like ``test_napari.py`` (its fixtures)."""

from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari", reason="napari is not installed (pip install 'al-annotator[napari]')")

from al_annotator.store import create_project, open_project  # noqa: E402
from al_annotator.store.pyramid import level_shape  # noqa: E402
from al_annotator.types import SliceRef  # noqa: E402
from test_napari import _drag, _skip_without_qt, gui, main_thread_reads, plugin  # noqa: E402,F401

SHAPE = (9, 4100, 64)  # levels 1..4; tall, so the field of view decides the level whatever the canvas (< ~1000 px) is
CLASSES = ("background", "bone", "implant")


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    rng = np.random.default_rng(4)
    ramp = np.linspace(0, 30000, SHAPE[1])[None, :, None]
    return (ramp + rng.integers(0, 20000, SHAPE)).astype(np.uint16)


@pytest.fixture
def big_dock(gui, plugin, make_napari_viewer, tmp_path, volume):
    from al_annotator.napari._widget import AnnotatorWidget

    create_project(tmp_path / "proj", volume, classes=CLASSES, author="test")
    viewer = make_napari_viewer()
    widget = AnnotatorWidget(viewer, poll_ms=0)
    viewer.window.add_dock_widget(widget, name="AL Annotator")
    widget.open_project(tmp_path / "proj", author="ana", live_preview=False)  # tier 1 is not what is tested
    widget.wait_idle()
    yield viewer, widget, tmp_path / "proj"
    widget.close_project()


def _zoom(viewer, ref, data_pixels_per_screen_pixel):
    """Show ``ref`` zoomed so one screen pixel covers that many image pixels, and draw the canvas
    (napari then picks the level for the field of view: the coarsest with >= 1 of its pixels per
    screen pixel)."""
    viewer.reset_view()
    viewer.scene.camera.zoom = 1.0 / data_pixels_per_screen_pixel
    viewer.scene.camera.center = (0.0, SHAPE[1] / 2, SHAPE[2] / 2) if ref.axis == "z" else viewer.scene.camera.center
    viewer.window._qt_viewer.canvas.on_draw(None)


def _shows_the_store(image, store, point):
    """What napari shows at world ``point`` is the voxel of the level it reads (napari maps a point
    to level ``k`` as ``round(point / factor)``)."""
    level, value = image.get_value(point, world=True)
    arr = store.image if level == 0 else store.pyramid[level]
    f = np.asarray(image.downsample_factors[level])
    idx = tuple(int(min(max(np.round(p / s), 0), n - 1)) for p, s, n in zip(point, f, arr.shape))
    assert value == arr[idx], (level, point)
    return level


def test_level_arrays_are_lazy_and_read_only_the_asked_part():
    from al_annotator.napari._arrays import ImageLevel, LevelShown

    reads = []

    class Counting:
        def __init__(self, a):
            self.a, self.shape, self.dtype = a, a.shape, a.dtype

        def __getitem__(self, key):
            reads.append(key)
            return self.a[key]

    base = np.arange(6 * 10 * 12, dtype=np.uint16).reshape(6, 10, 12)
    level = ImageLevel(Counting(base))
    window = level[:, 2:7, 3:9]  # napari's first step: the field of view, all slices: nothing read
    assert window.shape == (6, 5, 6) and not reads
    np.testing.assert_array_equal(np.asarray(window[4]), base[4, 2:7, 3:9])
    assert reads == [(4, slice(2, 7), slice(3, 9))]  # only that part of that plane
    np.testing.assert_array_equal(window[:, 1, :][2:4], base[2:4, 3, 3:9])
    reads.clear()
    shown = LevelShown([(ImageLevel(Counting(base)), (1.0,) * 3), (level, (4.0, 4.0, 4.0))], shown=[1], axis=0)
    assert shown.prefetch(0, 9) and reads == [(2, slice(None), slice(None))]  # on the sliced axis: level 1 only, round(9 / 4)
    assert not shown.prefetch(0, 9)  # cached
    reads.clear()
    assert shown.prefetch(1, 4) and reads == [(slice(None), 4, slice(None)), (slice(None), 1, slice(None))]  # another axis: all
    reads.clear()
    np.testing.assert_array_equal(np.asarray(level[2, 1:3, :]), base[2, 1:3])  # from the prefetched plane
    np.testing.assert_array_equal(np.asarray(level[:, 1:3, :][2:3]), base[2:3, 1:3])  # napari's thick slicing: the same
    assert not reads
    with pytest.raises(IndexError):
        level[6]


@pytest.mark.gui
@pytest.mark.skipif("_skip_without_qt()", reason="needs a display for Qt")
def test_image_layer_is_multiscale_over_the_pyramid_and_labels_stay_full(big_dock):
    viewer, w, path = big_dock
    image, labels = w.layers["image"], w.layers["labels"]
    store = open_project(path)
    assert image.multiscale and not labels.multiscale
    assert [tuple(s) for s in image.level_shapes] == [SHAPE] + [level_shape(SHAPE, k) for k in (1, 2, 3, 4)]
    assert tuple(labels.data.shape) == SHAPE
    for k in (1, 2, 3, 4):
        np.testing.assert_array_equal(np.asarray(image.data[k]), np.asarray(store.pyramid[k][...]))
    np.testing.assert_array_equal(np.asarray(image.data[0][3]), np.asarray(store.image[3]))
    # the same world extent: level 0's scale is the voxel size, the coarser ones are scaled by napari
    assert image.extent.world.tolist() == labels.extent.world.tolist()

    ref = SliceRef("z", 5)
    w.go_to(ref)
    for zoom, level in ((4.5, 2), (2.5, 1), (1.5, 0)):  # 1:4.5 -> level 2, 1:2.5 -> 1, 1:1.5 -> the image
        _zoom(viewer, ref, zoom)
        assert image.data_level == level, zoom
        for row in (1500, 2050, 2600):
            assert _shows_the_store(image, store, (5, row, 33)) == level
        assert labels.get_value((5, 2050, 33), world=True) == 0  # the labels layer is read at full resolution
    viewer.dims.ndisplay = 3  # 3D: the finest level a GPU texture takes (napari alone would take the coarsest)
    viewer.window._qt_viewer.canvas.on_draw(None)
    assert image.data_level == image.locked_data_level == 2  # (9, 4100, 64): level 2 is the first <= 2048 a side
    assert image._slice.image.raw.shape == level_shape(SHAPE, 2)  # the whole level, rendered
    viewer.dims.ndisplay = 2
    assert image.locked_data_level is None  # 2D: the level follows the zoom again
    for other in (SliceRef("y", 3001), SliceRef("x", 40)):  # slicing along the other axes
        w.go_to(other)
        viewer.reset_view()
        viewer.window._qt_viewer.canvas.on_draw(None)
        assert w.displayed_slice() == other
        point = tuple(other.index if a == other.axis_number else (4 if a == 0 else 2049 if a == 1 else 31) for a in range(3))
        _shows_the_store(image, store, point)


@pytest.mark.gui
@pytest.mark.skipif("_skip_without_qt()", reason="needs a display for Qt")
def test_a_stroke_painted_zoomed_out_lands_at_full_resolution(big_dock, qtbot):
    viewer, w, path = big_dock
    image, labels = w.layers["image"], w.layers["labels"]
    w.go_to(SliceRef("z", 7))
    _zoom(viewer, SliceRef("z", 7), 4.5)
    assert image.data_level == 2
    w.select_label(2)
    labels.brush_size = 5
    seen = []
    w.bridge.stroke_committed.connect(seen.append)
    _drag(labels, viewer, [(7, 1601, 21), (7, 1601, 41), (7, 1641, 41)])
    qtbot.waitUntil(lambda: bool(seen), timeout=30_000)
    disk = np.asarray(open_project(path).labels[...])
    assert disk[7, 1601, 21] == 2 and disk[7, 1601, 41] == 2 and disk[7, 1641, 41] == 2  # full-resolution voxels
    assert int((disk != 0).sum()) == int((disk[7] != 0).sum()) > 40  # on that slice only
    rows, cols = np.nonzero(disk[7])
    assert 1596 <= rows.min() and rows.max() <= 1646 and 16 <= cols.min() and cols.max() <= 46  # brush 5 around the path
    assert labels.get_value((7, 1601, 30), world=True) == 2


@pytest.mark.gui
@pytest.mark.skipif("_skip_without_qt()", reason="needs a display for Qt")
def test_zoomed_out_suggestions_are_read_off_the_gui_thread(big_dock, qtbot, main_thread_reads):
    """Next suggestion, zoomed out: the levels napari reads are read on the dock's worker thread
    before the dims move (on another axis every level); the GUI thread reads no zarr chunk."""
    from qtpy.QtCore import Qt

    viewer, w, path = big_dock
    image = w.layers["image"]
    store = open_project(path)
    w.go_to(SliceRef("z", 2))
    _zoom(viewer, SliceRef("z", 2), 4.5)
    assert image.data_level == 2
    for _ in range(2):
        target = w._queue[0].ref
        main_thread_reads.clear()
        qtbot.mouseClick(w.next_button, Qt.LeftButton)
        qtbot.waitUntil(lambda: w.displayed_slice() == target and not w.busy, timeout=30_000)
        viewer.window._qt_viewer.canvas.on_draw(None)
        assert main_thread_reads == [], (target, image.data_level, main_thread_reads)
        point = tuple(target.index if a == target.axis_number else (4 if a == 0 else 2050 if a == 1 else 33) for a in range(3))
        _shows_the_store(image, store, point)
