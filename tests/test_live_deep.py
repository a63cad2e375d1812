"""Tier 1 live with the deep tier's own features (``instant.deep`` in ``LivePreview``): once a deep
version with a checkpoint is published, tier 1 refits with the network's 16 channels added, the plane
on screen is predicted again, a stroke runs the network on the plane it painted only, and slices are
still scored from the filter bank alone."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("sklearn")
torch = pytest.importorskip("torch")

from al_annotator.core import Session  # noqa: E402
from al_annotator.store.models import publish_version  # noqa: E402
from al_annotator.types import SliceRef  # noqa: E402
from test_live import _scribble, phantom  # noqa: E402,F401 - the same 16 x 64 x 64 phantom (a module fixture) and strokes


def _publish_network(session, version):
    from al_annotator.models import create_model
    from al_annotator.models.checkpoint import save_checkpoint

    torch.manual_seed(version)
    net = create_model("hrnet_w18_small", n_classes=len(session.store.config.classes))
    d = session.store.path / "models" / f"v{version:04d}.partial"
    d.mkdir(parents=True)
    save_checkpoint(net, d / "checkpoint.pt", version=version, round=version)
    from al_annotator.acquisition.pool import SliceCandidates

    refs = [SliceRef("z", i) for i in range(4)]
    cand = SliceCandidates(refs, {"entropy": np.linspace(0, 1, 4).astype(np.float32)},
                           embeddings=np.eye(4, 8, dtype=np.float32), model_version=version)
    np.savez(d / "scores.npz", **cand.to_arrays())
    publish_version(session.store, version, {"created": time.time(), "trained_on_seq": 0, "input_norm": "window",
                                             "metrics": {"heldout_dice": 0.1}})


def _painted_session(tmp_path, phantom):
    """A live session with strokes of every class on three z slices (enough for a held-out set), the
    plane on screen predicted: ``(session, plane on screen, LivePreview)``."""
    s = Session.create(tmp_path / "p", phantom.image, classes=phantom.classes, live_preview=True)
    ref = s.goto(SliceRef("z", 8))
    for k, z in enumerate((3, 8, 12)):
        _scribble(s, phantom.labels, SliceRef("z", z), 700, k)
    s.wait_preview()
    return s, ref, s._live


def _wait(live, cond, timeout=120.0):
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        live.wait_idle(timeout=5.0)
    assert cond()


def test_a_published_network_adds_its_features_to_tier_1(tmp_path, phantom, monkeypatch):
    import al_annotator.core.live as live_mod

    # the held-out comparison decides (values.use_deep_features); here it always takes them (a random network)
    monkeypatch.setattr(live_mod, "use_deep_features", lambda with_deep, filters: with_deep is not None)
    s, ref, live = _painted_session(tmp_path, phantom)
    assert live._fit_deep is None and live.deep_features is None  # no deep version yet: the filters alone
    n_filters = live.bank.n_features
    import al_annotator.instant.deep as deep_mod

    forward = []
    head = deep_mod.DeepFeatures.head_features
    monkeypatch.setattr(deep_mod.DeepFeatures, "head_features", lambda self, im: forward.append(im.shape) or head(self, im))
    _publish_network(s, 1)
    s.poll()  # the new version: tier 1 loads its network, fits the reduction, refits, predicts the plane again
    _wait(live, lambda: live._fit_deep == 1 and live.latest(ref) is not None and live.latest(ref).seq == s.labels_seq)
    assert forward == [(64, 64)] * 3  # the network ran once per labelled slice: the PCA's maps gave their planes too
    assert live.deep_features.version == 1 and live.deep_features.components == 16
    assert live.heldout_filters is not None  # the filter-only held-out fit it was compared with
    served = s.served_tier()
    assert served["tier"] == "instant" and "v1's features" in served["reason"]  # tier 1 holds the network's evidence
    assert live.classifier.n_features_ == n_filters + 16
    gt = phantom.labels[ref.selection()]
    assert (live.latest(ref).prediction == gt).mean() > 0.8
    # a stroke on a plane not seen before runs the network on that plane only (the others' voxels are kept)
    calls = []
    plane = live.deep_features.plane
    live.deep_features.plane = lambda im: calls.append(im.shape) or plane(im)
    new = s.goto(SliceRef("z", 5))
    _scribble(s, phantom.labels, new, 60, 7)
    s.wait_preview()
    _wait(live, lambda: live.fitted_seq == s.labels_seq)
    assert calls == [(64, 64)]
    # slices are scored from the filter bank alone (a second fit on the same voxels)
    _wait(live, lambda: live.fresh_coverage() > 0.5)
    assert live._filters_fit is not None and live._filters_fit[1].n_features_ == n_filters
    s.close()


def test_no_deep_features_where_planes_are_too_large(tmp_path, phantom, monkeypatch):
    from al_annotator.core.live import LivePreview

    monkeypatch.setattr(LivePreview, "DEEP_MAX_PIXELS", 32 * 32)
    s = Session.create(tmp_path / "p", phantom.image, classes=phantom.classes, live_preview=True)
    ref = s.goto(SliceRef("z", 8))
    _scribble(s, phantom.labels, ref, 200, 0)
    _publish_network(s, 1)
    s.poll()
    s.wait_preview()
    s._live.wait_idle(timeout=60)
    assert not s._live.deep_features_possible() and s._live.deep_features is None and s._live._fit_deep is None
    s.close()


def test_deep_features_turned_down_by_the_held_out_fits_are_not_used(tmp_path, phantom, monkeypatch):
    import al_annotator.core.live as live_mod

    monkeypatch.setattr(live_mod, "use_deep_features", lambda with_deep, filters: False)
    s, ref, live = _painted_session(tmp_path, phantom)
    _publish_network(s, 1)
    s.poll()
    _wait(live, lambda: live.deep_features is not None and live.heldout_filters is not None)
    _scribble(s, phantom.labels, ref, 20, 9)
    s.wait_preview()
    _wait(live, lambda: live.fitted_seq == s.labels_seq)
    assert live._fit_deep is None and live.classifier.n_features_ == live.bank.n_features
    assert s.served_tier()["reason"] != "the instant classifier has model v1's features"
    s.close()
