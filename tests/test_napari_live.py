"""Tier 1 live in the napari dock: strokes painted through the labels layer refit the instant
classifier, and the prediction and uncertainty layers show the served tier's plane (issue #11).

Under Xvfb like ``test_napari.py`` (its fixtures: a dock on a phantom project, napari's own drag
callbacks). No timing thresholds: waits have timeouts, assertions are on content.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

napari = pytest.importorskip("napari", reason="napari is not installed (pip install 'al-annotator[napari]')")
pytest.importorskip("sklearn")

from al_annotator.store import open_project  # noqa: E402
from al_annotator.store.models import publish_version  # noqa: E402
from al_annotator.types import SliceRef  # noqa: E402
from test_napari import SHAPE, _drag, _skip_without_qt, dock, gui, phantom, plugin, project  # noqa: E402,F401

REF = SliceRef("z", 10)


def _publish(path, version, pred, conf, metrics):
    """A deep model version as the trainer publishes it, with the given metrics (held-out Dice)."""
    from al_annotator.acquisition.pool import SliceCandidates

    store = open_project(path)
    group = store.root.require_group("models").require_group(f"v{version:04d}")
    for name, arr in (("prediction", pred), ("confidence", conf)):
        group.create_array(name, shape=arr.shape, dtype=arr.dtype, chunks=(16, 16, 16), overwrite=True)[...] = arr
    d = store.path / "models" / f"v{version:04d}.partial"
    d.mkdir(parents=True)
    refs = [SliceRef("z", i) for i in range(3)]
    cand = SliceCandidates(refs, {"entropy": np.array([0.2, 0.9, 0.5], np.float32)},
                           embeddings=np.eye(3, 8, dtype=np.float32), model_version=version)
    np.savez(d / "scores.npz", **cand.to_arrays())
    publish_version(store, version, {"created": time.time(), "trained_on_seq": 0, "metrics": metrics})


def _paint_two_classes(viewer, w, phantom, ref=REF):
    """Two strokes on ``ref`` through napari's drag callbacks, each inside a region of one class."""
    layer = w.layers["labels"]
    layer.brush_size = 3
    gt = phantom.labels[ref.selection()]
    strokes = []
    from scipy import ndimage

    for value in (1, 2):
        depth = ndimage.distance_transform_edt(gt == value)
        r, c = (int(i) for i in np.unravel_index(np.argmax(depth), gt.shape))  # the voxel deepest inside the class
        w.select_label(value)
        pts = [(ref.index, r, max(0, c - 1)), (ref.index, r, c), (ref.index, r, min(SHAPE[2] - 1, c + 1))]
        _drag(layer, viewer, pts)
        strokes.append((value, r, c))
    w.wait_idle()  # the strokes are in the store (tier 1 was told by the session on the worker)
    return strokes


def _settle(w):
    """Let tier 1 finish what it was asked, then hand its previews over as the dock's timer does."""
    w.jobs.call("tier 1 idle", lambda: w.session.wait_preview(120))
    w.take_previews()


def _shown(layer):
    return np.asarray(layer._slice.image.raw)


@pytest.mark.gui
@pytest.mark.skipif("_skip_without_qt()", reason="needs a display for Qt")
def test_strokes_show_tier_1s_preview_of_the_displayed_plane(dock, phantom, qtbot):
    viewer, w = dock
    assert w.live_check.isChecked() and w.session.live_preview  # on by default
    w.go_to(REF)
    pred_layer, unc_layer = w.layers["prediction"], w.layers["uncertainty"]
    assert not pred_layer.visible and "nothing yet" in w.served_label.text()
    seen = []
    w.preview_shown.connect(seen.append)
    strokes = _paint_two_classes(viewer, w, phantom)
    # the dock's 100 ms timer collects the preview and refreshes the layer: no call from here
    qtbot.waitUntil(lambda: bool(seen), timeout=120_000)
    _settle(w)
    preview = w.session.preview(REF)
    assert preview is not None and preview.ref == REF and seen[-1] is preview
    assert pred_layer.visible and not pred_layer.editable  # made visible by the first prediction
    assert np.array_equal(_shown(pred_layer), preview.prediction)
    assert np.array_equal(_shown(pred_layer), w.session.prediction(REF))
    for value, r, c in strokes:  # learnt from the strokes: their own voxels are predicted as painted
        assert preview.prediction[r, c] == value
    assert "serving: instant classifier" in w.served_label.text() and not w.live_error_label.isVisible()
    unc_layer.visible = True  # the heat map: 1 - confidence of the same preview
    assert np.allclose(_shown(unc_layer).squeeze(), 1 - preview.confidence / 255, atol=1e-6)
    # another slice of the axis: tier 1 predicts it from the fitted classifier once the dock shows it
    other = SliceRef("z", 4)
    w.go_to(other)
    qtbot.waitUntil(lambda: bool(seen) and seen[-1].ref == other, timeout=120_000)
    assert np.array_equal(_shown(pred_layer), w.session.preview(other).prediction)


@pytest.mark.gui
@pytest.mark.skipif("_skip_without_qt()", reason="needs a display for Qt")
def test_the_layers_follow_the_served_tier(dock, phantom, project, qtbot):
    viewer, w = dock
    w.go_to(REF)
    _paint_two_classes(viewer, w, phantom)
    _settle(w)
    layer = w.layers["prediction"]
    preview = w.session.preview(REF)
    assert preview is not None and np.array_equal(_shown(layer), preview.prediction)
    # a deep version that scores higher on the held-out voxels: the layers switch to its outputs
    pred = np.full(SHAPE, 4, np.uint8)
    pred[:, :10] = 3
    conf = np.full(SHAPE, 204, np.uint8)
    _publish(project, 1, pred, conf, {"heldout_dice": 0.999})
    assert w.poll()["model"]
    assert w.session.served_tier()["tier"] == "deep"
    assert np.array_equal(_shown(layer), pred[REF.selection()])
    assert np.array_equal(_shown(layer), w.session.prediction(REF))
    assert "serving: model v1" in w.served_label.text() and layer.metadata["model_version"] == 1
    unc = w.layers["uncertainty"]
    unc.visible = True
    assert np.allclose(_shown(unc).squeeze(), 0.2, atol=1e-3)
    # a deep version with no held-out score: the fresher instant classifier serves again
    _publish(project, 2, np.full(SHAPE, 1, np.uint8), conf, {})
    w.poll()
    assert w.session.served_tier()["tier"] == "instant"
    assert np.array_equal(_shown(layer), w.session.preview(REF).prediction)
    assert np.allclose(_shown(unc).squeeze(), 1 - w.session.preview(REF).confidence / 255, atol=1e-6)
    assert "serving: instant classifier" in w.served_label.text()


@pytest.mark.gui
@pytest.mark.skipif("_skip_without_qt()", reason="needs a display for Qt")
def test_live_off_stops_previews(dock, phantom, qtbot):
    viewer, w = dock
    w.go_to(REF)
    _paint_two_classes(viewer, w, phantom)
    _settle(w)
    before = w.session.preview(REF)
    layer = w.layers["prediction"]
    assert before is not None and np.array_equal(_shown(layer), before.prediction)
    w.live_check.setChecked(False)
    w.wait_idle()
    assert not w.session.live_preview and not w.preview_timer.isActive()
    assert not _shown(layer).any()  # no deep model: nothing is served while live is off
    assert "live preview off" in w.served_label.text()
    # strokes with live off: tier 1 does not refit, no new preview
    layer_labels = w.layers["labels"]
    w.select_label(3)
    _drag(layer_labels, viewer, [(REF.index, 2, 2), (REF.index, 2, 8)])
    w.wait_idle()
    _settle(w)
    assert w.session.preview(REF) is before and w.session.labels_seq > before.seq
    assert not _shown(layer).any()
    # on again: the slice on screen is previewed again and shown
    seen = []
    w.preview_shown.connect(seen.append)
    w.live_check.setChecked(True)
    qtbot.waitUntil(lambda: bool(seen), timeout=120_000)
    _settle(w)
    assert w.session.live_preview and w.preview_timer.isActive()
    assert np.array_equal(_shown(layer), w.session.preview(REF).prediction)
