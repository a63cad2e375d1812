"""The blend of the tiers: tier 1 scores the deep version and the blend of both on its own held-out
voxels; the blend serves when it beats either alone, and the previews are then blended."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("sklearn")

from al_annotator.core import Session  # noqa: E402
from al_annotator.core.live import blend  # noqa: E402
from al_annotator.core.values import choose_served, served_summary  # noqa: E402
from al_annotator.store.models import publish_version  # noqa: E402
from al_annotator.types import SliceRef  # noqa: E402

from tests.test_live import SHAPE, _scribble, phantom  # noqa: E402,F401 (the same phantom fixture and strokes)


def _deep_probs(gt, n_classes, wrong_half: bool):
    """Soft probabilities of the true class (0.4, the rest 0.2 each); with ``wrong_half`` the left half
    (x < 32) leans to the next class instead (0.4 there, 0.3 for the true one): a deep model that is
    right but unsure in one half and wrong in the other."""
    onehot = np.eye(n_classes, dtype=np.float32)[gt.astype(np.int64) - 1]  # (Z, Y, X, C)
    p = 0.2 + 0.2 * onehot
    p /= p.sum(-1, keepdims=True)
    if wrong_half:
        nxt = np.eye(n_classes, dtype=np.float32)[gt.astype(np.int64) % n_classes]
        left = np.zeros(gt.shape, bool)
        left[..., :32] = True
        q = 0.3 * onehot + 0.4 * nxt
        q += (1 - q.sum(-1, keepdims=True)) * (1 - onehot - nxt) / max(1, n_classes - 2)
        p[left] = q[left]
    return np.moveaxis(p, -1, 0)


def _publish(session, version, probs):
    grp = session.store.root.require_group(f"models/v{version:04d}")
    grp.create_array("prediction", shape=SHAPE, dtype=np.uint8, chunks=(8, 32, 32), overwrite=True)[...] = probs.argmax(0) + 1
    grp.create_array("confidence", shape=SHAPE, dtype=np.uint8, chunks=(8, 32, 32), overwrite=True)[...] = np.round(probs.max(0) * 255)
    grp.create_array("probabilities", shape=probs.shape, dtype=np.float16, chunks=(1, 8, 32, 32), overwrite=True)[...] = probs
    from al_annotator.acquisition.pool import SliceCandidates

    d = session.store.path / "models" / f"v{version:04d}.partial"
    d.mkdir(parents=True)
    refs = [SliceRef("z", i) for i in range(4)]
    cand = SliceCandidates(refs, {"entropy": np.linspace(0, 1, 4).astype(np.float32)},
                           embeddings=np.eye(4, 8, dtype=np.float32), model_version=version)
    np.savez(d / "scores.npz", **cand.to_arrays())
    publish_version(session.store, version, {"created": time.time(), "trained_on_seq": 0, "metrics": {"heldout_dice": 0.1}})


def test_choose_served_blend_rule():
    assert choose_served(0.8, 0.7, 0.81) == ("blend", choose_served(0.1, 0.1, 0.2)[1])
    assert choose_served(0.8, 0.7, 0.8)[0] == "instant" and choose_served(0.7, 0.8, 0.77)[0] == "deep"
    # the deep tier not clear of the blend: the blend serves in its place (DEEP_ALONE_MARGIN)
    assert choose_served(0.7, 0.8, 0.79)[0] == "blend" and choose_served(0.7, 0.8, 0.65)[0] == "deep"
    assert choose_served(0.8, 0.81, 0.8)[0] == "blend" and choose_served(0.8, 0.8, 0.79)[0] == "instant"
    assert choose_served(None, 0.8, 0.9)[0] == "deep" and choose_served(0.8, None, 0.9)[0] == "instant"
    text = served_summary({"tier": "blend", "instant": 0.8, "deep": 0.7, "blend": 0.85}, model_version=4)
    assert "blended" in text and "0.85" in text and "v4" in text


def test_the_deep_version_and_the_blend_are_scored_on_tier_1s_held_out_voxels(tmp_path, phantom):
    s = Session.create(tmp_path / "p", phantom.image, classes=phantom.classes, live_preview=True)
    for k, z in enumerate((4, 12, 20)):
        _scribble(s, phantom.labels, SliceRef("z", z), 700, k)
    ref = s.goto(SliceRef("z", 12))
    s.wait_preview()
    live = s._live
    assert live.heldout_dice is not None and live.heldout_deep is None  # no deep version yet
    n = len(phantom.classes)
    # a deep version that is right everywhere (but unsure): it scores 1.0 on the held-out voxels and serves
    _publish(s, 1, _deep_probs(phantom.labels, n, wrong_half=False))
    s.poll()
    s.wait_preview()
    s.poll()
    assert live.heldout_deep_version == 1 and live.heldout_deep == pytest.approx(1.0)
    served = s.served_tier()
    assert served["deep"] == live.heldout_deep and served["tier"] == choose_served(served["instant"], served["deep"], served["blend"])[0]
    if served["instant"] < 1.0:
        assert served["tier"] == "deep"  # the trainer's own metric (0.1) is replaced by the same-voxel score
    # a deep version wrong in one half: scored again on the same voxels, independently recomputed here
    _publish(s, 2, _deep_probs(phantom.labels, n, wrong_half=True))
    s.poll()
    s.wait_preview()
    s.poll()
    coords, labels, p1 = live._held_eval
    deep = np.moveaxis(_deep_probs(phantom.labels, n, True), 0, -1)[tuple(coords.T)].astype(np.float16).astype(np.float32)
    from al_annotator.core.live import _dice

    assert live.heldout_deep_version == 2
    assert live.heldout_deep == pytest.approx(_dice(deep.argmax(-1) + 1, labels, n)[0])
    assert live.heldout_blend == pytest.approx(_dice(blend(p1, deep).argmax(-1) + 1, labels, n)[0])
    served = s.served_tier()
    assert served["tier"] == choose_served(served["instant"], served["deep"], served["blend"])[0]
    # this case is built so that the blend wins: tier 1 confident where the deep model is wrong, the deep
    # model right where tier 1 errs
    assert served["blend"] > max(served["instant"], served["deep"]) and served["tier"] == "blend"
    assert s.prediction_token == ("instant", (live.fitted_seq, "blend", 2))
    s.wait_preview()  # the switch to the blend asked for the plane on screen again
    p = s.preview(ref)
    assert p is not None and p.blend_version == 2
    # the served plane is the blend of tier 1's and the deep version's probabilities
    want = np.moveaxis(_deep_probs(phantom.labels, n, True), 0, 0)[(slice(None),) + ref.selection()].astype(np.float16).astype(np.float32)
    t1 = np.moveaxis(live.classifier.predict_proba(live._plane_features(ref)), -1, 0)
    np.testing.assert_allclose(p.probabilities, blend(t1, want), atol=1e-5)
    assert (s.prediction(ref) == p.prediction).all() and "blended" in s.served_summary()
    s.close()
