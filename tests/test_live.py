"""Tier 1 live: the instant classifier learns from a few strokes, previews the plane on screen, and
serves or yields to the deep tier by their held-out scores."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("sklearn")

from al_annotator.core import Session  # noqa: E402
from al_annotator.datasets import make_phantom  # noqa: E402
from al_annotator.store.models import publish_version  # noqa: E402
from al_annotator.types import SliceRef  # noqa: E402

SHAPE = (24, 64, 64)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(SHAPE, seed=2)


def _scribble(session, gt, ref, per_class, seed):
    rng = np.random.default_rng(seed)
    plane = gt[ref.selection()].reshape(-1)
    for c in np.unique(plane):
        idx = np.flatnonzero(plane == c)
        session.paint(rng.choice(idx, min(per_class, idx.size), replace=False), int(c), ref=ref)


def _publish(session, version, heldout_dice):
    grp = session.store.root.require_group(f"models/v{version:04d}")
    for name, value in (("prediction", 1), ("confidence", 250)):
        grp.create_array(name, shape=SHAPE, dtype=np.uint8, chunks=(8, 32, 32), overwrite=True)[...] = value
    from al_annotator.acquisition.pool import SliceCandidates

    d = session.store.path / "models" / f"v{version:04d}.partial"
    d.mkdir(parents=True)
    refs = [SliceRef("z", i) for i in range(4)]
    cand = SliceCandidates(refs, {"entropy": np.linspace(0, 1, 4).astype(np.float32)},
                           embeddings=np.eye(4, 8, dtype=np.float32), model_version=version)
    np.savez(d / "scores.npz", **cand.to_arrays())
    publish_version(session.store, version, {"created": time.time(), "trained_on_seq": 0,
                                             "metrics": {"heldout_dice": heldout_dice}})


def test_a_few_strokes_give_a_preview_of_the_plane_on_screen(tmp_path, phantom):
    s = Session.create(tmp_path / "p", phantom.image, classes=phantom.classes, live_preview=True)
    ref = SliceRef("z", 12)
    s.goto(ref)
    seen = []
    s.preview_changed.connect(seen.append)
    assert s.served_tier()["tier"] is None and s.prediction() is None
    _scribble(s, phantom.labels, ref, 150, 0)
    s.wait_preview()
    assert seen and seen[-1].ref == ref and seen[-1].seq == s.labels_seq
    gt = phantom.labels[ref.selection()]
    assert (s.prediction() == gt).mean() > 0.85  # learnt from ~2 % of the plane's voxels
    assert s.confidence().shape == gt.shape and 0 <= s.confidence().min() <= s.confidence().max() <= 1
    assert s.served_tier()["tier"] == "instant" and s.prediction_token == ("instant", s.labels_seq)
    # another axis: predicted from the fitted classifier when the front end goes there
    s.goto("x", 30)
    s.wait_preview()
    other = s.prediction(SliceRef("x", 30))
    assert other.shape == (24, 64) and (other == phantom.labels[SliceRef("x", 30).selection()]).mean() > 0.8
    s.close()


def test_erasing_strokes_refits_and_a_single_class_is_no_fit(tmp_path, phantom):
    s = Session.create(tmp_path / "p", phantom.image, classes=phantom.classes, live_preview=True)
    ref = s.goto(SliceRef("y", 30))
    s.paint(np.arange(10, 40), 1, ref=ref)
    s.wait_preview()
    assert s.preview(ref) is None and s.live_error is None  # one class: nothing to tell apart yet
    s.paint(np.arange(64 * 10, 64 * 10 + 30), 3, ref=ref)
    s.wait_preview()
    assert s.preview(ref) is not None and set(np.unique(s.preview(ref).prediction)) <= {1, 3}
    s.undo()  # back to one class: the classifier is dropped, tier 1 serves nothing
    s.wait_preview()
    assert s._live.classifier is None and s.served_tier()["tier"] is None
    s.close()


def test_the_served_tier_is_the_one_that_scores_higher_on_held_out_voxels(tmp_path, phantom):
    s = Session.create(tmp_path / "p", phantom.image, classes=phantom.classes, live_preview=True)
    for k, z in enumerate((4, 12, 20)):  # enough voxels for a held-out set
        _scribble(s, phantom.labels, SliceRef("z", z), 700, k)
    s.goto(SliceRef("z", 12))
    s.wait_preview()
    instant = s.served_tier()["instant"]
    assert instant is not None and 0.5 < instant <= 1.0 and s._live.timings["held_out"] >= 200
    changes = []
    s.served_changed.connect(changes.append)
    _publish(s, 1, heldout_dice=min(1.0, instant + 0.05))  # the deep tier wins
    s.poll()
    assert s.served_tier()["tier"] == "deep" and changes[-1]["tier"] == "deep"
    assert s.prediction_token == ("deep", 1) and (s.prediction() == 1).all()  # the deep version's planes
    _publish(s, 2, heldout_dice=instant - 0.2)  # a worse deep version: tier 1 serves again
    s.poll()
    assert s.served_tier()["tier"] == "instant" and "at least as high" in s.served_tier()["reason"]
    assert not (s.prediction() == 1).all()
    s.close()


def test_crossing_edits_refresh_the_cached_planes_they_cross(tmp_path, phantom):
    s = Session.create(tmp_path / "p", phantom.image, classes=phantom.classes, live_preview=True)
    _scribble(s, phantom.labels, SliceRef("z", 12), 150, 0)
    _scribble(s, phantom.labels, SliceRef("y", 30), 150, 1)
    s.wait_preview()
    before = s._live.timings["labelled"]
    # erase on x = 5 every voxel of the y = 30 row it crosses: the cached y = 30 plane must be re-read
    ref = SliceRef("x", 5)
    row = np.arange(24) * 64 + 30  # (z, y=30) on the x plane
    s.erase(row, ref=ref)
    s.wait_preview()
    y30 = s.labels(SliceRef("y", 30))
    assert not y30[:, 5].any()
    assert s._live.timings["labelled"] < before  # recounted from the re-read planes
    assert s._live._planes[SliceRef("y", 30)][0][:, 5].sum() == 0
    s.close()


def test_live_preview_is_off_unless_asked(tmp_path, phantom):
    s = Session.create(tmp_path / "p", phantom.image, classes=phantom.classes)
    _scribble(s, phantom.labels, SliceRef("z", 12), 100, 0)
    assert s._live is None and s.take_previews() == [] and not s.request_preview()
    s.close()


def test_tier_1_scores_rank_the_queue_when_it_serves(tmp_path, phantom):
    s = Session.create(tmp_path / "p", phantom.image, classes=phantom.classes, live_preview=True, strategy="entropy")
    _scribble(s, phantom.labels, SliceRef("z", 12), 150, 0)
    s.wait_preview()
    deadline = time.monotonic() + 120
    while s._live.candidates()[1] < 1.0 and time.monotonic() < deadline:  # scored while idle
        s._live.wait_idle(5)
        time.sleep(0.05)
    cand, coverage = s._live.candidates()
    assert coverage == 1.0 and len(cand) == sum(SHAPE) and cand.model_version == f"instant:{s.labels_seq}"
    queue = s.refresh_suggestions(n=4)
    assert [q.suggestion.model_version for q in queue] == [cand.model_version] * 4 and not any(s.is_stale(q) for q in queue)
    ent = dict(zip(cand.refs, cand.uncertainty["entropy"]))
    assert ent[queue[0].ref] == max(v for r, v in ent.items() if r != SliceRef("z", 12))  # the most uncertain slice first
    s.close()


def test_spread_order_covers_every_slice_once_coarse_first():
    from al_annotator.core.live import _spread_order

    order = _spread_order((5, 9, 3))
    assert len(order) == 17 and len(set(order)) == 17
    assert [r.index for r in order if r.axis == "y"][:3] == [0, 8, 4]


def test_turning_live_on_warms_the_plane_on_screen_before_the_first_stroke(tmp_path, phantom):
    s = Session.create(tmp_path / "p", phantom.image, classes=phantom.classes)
    s.goto(SliceRef("y", 20))
    s.live_preview = True
    s._live.wait_idle(60)
    # a cold plane is warmed as one block (what its first stroke needs), not through its tiles, which
    # cost their whole depth
    live = s._live
    assert SliceRef("y", 20) in live._plane_cache and live.classifier is None
    warm = live._plane_cache[SliceRef("y", 20)]
    calls = []
    real = live.bank.block_features
    live.bank.block_features = lambda *a, **k: calls.append(a) or real(*a, **k)
    _scribble(s, phantom.labels, SliceRef("y", 20), 150, 0)
    s.wait_preview()
    assert s.preview(SliceRef("y", 20)) is not None
    # the stroke's fit and plane found it warm: no block computed again, no tile on the stroke's path
    assert not calls and live._plane_cache.get(SliceRef("y", 20)) is warm
    assert live.timings.get("plane_features_s") is None
    s.close()


def test_live_off_stops_serving_and_on_again_refits_with_what_was_painted(tmp_path, phantom):
    s = Session.create(tmp_path / "p", phantom.image, classes=phantom.classes, live_preview=True)
    ref = s.goto(SliceRef("z", 12))
    _scribble(s, phantom.labels, ref, 150, 0)
    s.wait_preview()
    assert s.served_tier()["tier"] == "instant" and s.prediction() is not None
    s.live_preview = False
    assert s.served_tier()["tier"] is None and s.prediction() is None and s.prediction_token == ("deep", None)
    seq_before = s._live.fitted_seq
    _scribble(s, phantom.labels, SliceRef("z", 4), 100, 1)  # painted while off: no refit
    s._live.wait_idle(30)
    assert s._live.fitted_seq == seq_before
    s.live_preview = True  # on again: the strokes painted meanwhile are in the next fit
    s.wait_preview()
    assert s._live.fitted_seq == s.labels_seq and s.served_tier()["tier"] == "instant"
    s.close()


def test_idle_scoring_of_a_volume_too_large_for_the_cache_only_uses_cached_tiles(tmp_path, phantom):
    from al_annotator.core.live import LivePreview

    s = Session.create(tmp_path / "p", phantom.image, classes=phantom.classes)
    from al_annotator.instant import FeatureBank
    from al_annotator.instant.segmenter import auto_features

    probe = FeatureBank(s.image_array, (1.0, 1.0, 1.0), **dict(auto_features((1.0, 1.0, 1.0)), mode="3d"), tile_shape=(8, 64, 64))
    live = LivePreview(s.image_array, (1.0, 1.0, 1.0), s.label_plane, lambda: [SliceRef("z", 12)], 4, coarse_scoring=False,
                       feature_kw={"cache_bytes": int(2.5 * probe.tile_bytes), "tile_shape": (8, 64, 64)})  # 2 of 3 tiles
    try:
        assert not live.scores_whole_volume
        _scribble(s, phantom.labels, SliceRef("z", 12), 150, 0)
        live.labels_changed(None, s.labels_seq)
        live.request(SliceRef("z", 12))
        live.wait_idle(60)
        deadline = time.monotonic() + 60
        while live._score_pos < len(live._score_order) and time.monotonic() < deadline:
            time.sleep(0.05)
        scored = set(live._scores)
        assert SliceRef("z", 12) in scored and SliceRef("z", 0) not in scored  # z 0..7 is another, uncomputed tile
        assert all(live._cached(r) for r in scored)
    finally:
        live.close()
        s.close()


def test_a_large_plane_gets_a_coarse_look_first_then_the_full_prediction(tmp_path):
    from al_annotator.core.live import LivePreview

    ph = make_phantom((8, 300, 300), seed=4)
    s = Session.create(tmp_path / "p", ph.image, classes=ph.classes)
    ref = SliceRef("z", 4)
    live = LivePreview(s.image_array, (1.0, 1.0, 1.0), s.label_plane, lambda: [ref], 4, feature_kw={"sigmas": (1.0, 2.0)})
    try:
        _scribble(s, ph.labels, ref, 300, 0)
        live.labels_changed(None, s.labels_seq)
        live.request(ref)
        assert live.wait_idle(120)
        got = live.take()
        assert [p.coarse for p in got] == [True, False] and {p.seq for p in got} == {s.labels_seq}
        coarse, full = got
        assert coarse.prediction.shape == full.prediction.shape == (300, 300)
        # the coarse look: every 2nd pixel, from the first trees of the same ensemble, grown whole for the full plane
        assert (coarse.prediction[::2, ::2] == full.prediction[::2, ::2]).mean() > 0.95
        assert live.classifier.complete and live.classifier.trees == live.classifier.n_estimators > live.QUICK_TREES
        assert live.latest(ref) is full and "coarse_plane_s" in live.timings
    finally:
        live.close()
        s.close()


def test_a_plane_whose_tiles_do_not_fit_the_cache_is_computed_as_one_block(tmp_path, phantom):
    """With a tile cache too small for a plane's tiles, or with its tiles not computed yet ("cold"), the
    plane's features are computed once as a block and kept; the strokes on it take their features from
    it; the preview agrees with the one from tiles already computed ("tiles")."""
    from al_annotator.core.live import LivePreview
    from al_annotator.instant import FeatureBank
    from al_annotator.instant.segmenter import auto_features

    s = Session.create(tmp_path / "p", phantom.image, classes=phantom.classes)
    ref = SliceRef("z", 12)
    _scribble(s, phantom.labels, ref, 150, 0)
    probe = FeatureBank(s.image_array, (1.0, 1.0, 1.0), **dict(auto_features((1.0, 1.0, 1.0)), mode="3d"), tile_shape=(8, 32, 32))
    small = {"cache_bytes": int(2.5 * probe.tile_bytes), "tile_shape": (8, 32, 32)}  # a z plane touches 4 tiles
    got = {}
    for name, kw in (("block", small), ("cold", {"tile_shape": (8, 32, 32)}), ("tiles", {"tile_shape": (8, 32, 32)})):
        live = LivePreview(s.image_array, (1.0, 1.0, 1.0), s.label_plane, lambda: [ref], 4, feature_kw=kw)
        try:
            assert live.plane_by_block(ref) == (name == "block")
            if name == "tiles":
                live.bank.features(live._plane_block(ref))  # the plane's tiles computed before the stroke
            assert live._block_first(ref) == (name != "tiles")
            live.labels_changed(None, s.labels_seq)
            live.request(ref)
            assert live.wait_idle(120) and live.last_error is None
            got[name] = live.latest(ref).prediction
            if name == "block":
                assert list(live._plane_cache) == [ref] and live._cached(ref)
                assert live.bank.stats["tiles_computed"] == 0  # the strokes lie on the block plane
            assert ("plane_features_s" in live.timings) == (name != "tiles")
        finally:
            live.close()
    assert (got["block"] == got["tiles"]).mean() > 0.99 and (got["cold"] == got["tiles"]).mean() > 0.99
    assert (got["block"] == phantom.labels[ref.selection()]).mean() > 0.85
    s.close()


def test_the_coarse_stride_grows_with_the_plane_and_a_newer_request_abandons_the_full_plane(tmp_path):
    from al_annotator.core.live import LivePreview

    big = np.zeros((4, 2048, 2048), np.uint8)
    live = LivePreview(big, (1.0, 1.0, 1.0), lambda r: (np.zeros(r.shape_in(big.shape), np.uint8), 0), lambda: [], 2)
    try:
        assert [live.coarse_stride(SliceRef("z", 0)), live.coarse_stride(SliceRef("y", 0))] == [8, 1]
        assert live._coarse_first(SliceRef("z", 0)) and not live._coarse_first(SliceRef("y", 0))
    finally:
        live.close()
    ph = make_phantom((8, 300, 300), seed=4)
    s = Session.create(tmp_path / "p", ph.image, classes=ph.classes)
    ref = SliceRef("z", 4)
    live = LivePreview(s.image_array, (1.0, 1.0, 1.0), s.label_plane, lambda: [ref], 4, feature_kw={"sigmas": (1.0, 2.0)})
    try:
        assert live.coarse_stride(ref) == 2
        _scribble(s, ph.labels, ref, 300, 0)
        live.labels_changed(None, s.labels_seq)
        live.request(ref)
        assert live.wait_idle(120)
        live.take()
        live.FULL_BLOCK_PIXELS = 300 * 10  # 30 row blocks
        assert live._predict(ref, set()) is not None
        live.close()  # closed: superseded between two blocks
        assert live._predict(ref, set()) is None
    finally:
        live.close()
        s.close()


def test_a_commit_re_ranks_once_the_fit_with_its_strokes_has_scored_enough_slices(tmp_path, phantom):
    """Committed right after a stroke, the queue is first ranked without tier 1's fresh scores (cold start
    here); once the fit including that stroke has scored a quarter of the slices, take_previews ranks it
    again with them, once."""
    s = Session.create(tmp_path / "p", phantom.image, classes=phantom.classes, live_preview=True, strategy="entropy")
    ref = SliceRef("z", 12)
    ranked = []
    s.suggestions_changed.connect(lambda q: ranked.append([i.suggestion.model_version for i in q]))
    _scribble(s, phantom.labels, ref, 150, 0)
    s.mark_annotated(ref)
    assert ranked and not any(isinstance(v, str) for v in ranked[-1])  # no fitted scores yet: not tier 1's
    deadline = time.monotonic() + 120
    while not (ranked and ranked[-1] and all(isinstance(v, str) for v in ranked[-1])) and time.monotonic() < deadline:
        s.take_previews()
        time.sleep(0.05)
    want = f"instant:{s._live.fitted_seq}"
    assert ranked[-1] == [want] * len(ranked[-1]) and s._live.fresh_coverage() >= s.INSTANT_SCORES_MIN_COVERAGE
    assert ref not in [q.ref for q in s.queue]
    n = len(ranked)
    for _ in range(20):  # no further re-rank without a new commit
        s.take_previews()
        time.sleep(0.02)
    assert len(ranked) == n
    s.close()


def test_a_cold_volume_is_ranked_from_the_downsampled_copy_first_then_at_full_resolution(tmp_path, phantom):
    """Where the whole volume's features fit the cache but are not computed yet, the first pass over
    the slices scores the uncached ones from the 2x block-mean copy (a ranking of every slice at an
    eighth of the filtering); a second pass then re-scores each of them from its own features."""
    from al_annotator.core.live import LivePreview

    s = Session.create(tmp_path / "p", phantom.image, classes=phantom.classes)
    ref = SliceRef("z", 12)
    live = LivePreview(s.image_array, (1.0, 1.0, 1.0), s.label_plane, lambda: [ref], 4, feature_kw={"tile_shape": (8, 64, 64)})
    try:
        assert live.scores_whole_volume and live.coarse_factor() == 2
        _scribble(s, phantom.labels, ref, 150, 0)
        live.labels_changed(None, s.labels_seq)
        live.request(ref)
        live.wait_idle(60)
        deadline = time.monotonic() + 120
        while (live._score_pos < len(live._score_order) or live._refine_pos < len(live._refine)) and time.monotonic() < deadline:
            time.sleep(0.05)
        live.wait_idle(60)
        assert live.last_error is None and live.fresh_coverage() == 1.0
        refined = set(live._refine)
        # z 8..15 was the previewed plane's tile; every slice outside it was first ranked from the copy
        assert SliceRef("z", 0) in refined and SliceRef("z", 12) not in refined and SliceRef("y", 5) in refined
        assert live._coarse[0] == 2 and live._coarse[1].shape == (12, 32, 32)
        for r in (SliceRef("z", 0), SliceRef("y", 5), SliceRef("x", 40)):
            scores, emb, fg = live._score_plane(r)
            assert live._scores[r][0] == live.fitted_seq and live._scores[r][1] == scores
            np.testing.assert_array_equal(live._scores[r][2], emb)
        assert all(live._cached(r) for r in live._score_order)
    finally:
        live.close()
        s.close()


def test_a_volume_too_large_for_the_cache_is_scored_from_a_downsampled_copy(tmp_path, phantom):
    """Idle scoring of a volume whose features do not fit: every slice gets scores from a block-mean
    copy (its own classifier on the labelled voxels' coarse features); slices in one block share them;
    the ranking pool is the current fit's."""
    from al_annotator.core.live import LivePreview
    from al_annotator.instant import FeatureBank
    from al_annotator.instant.segmenter import auto_features

    s = Session.create(tmp_path / "p", phantom.image, classes=phantom.classes)
    probe = FeatureBank(s.image_array, (1.0, 1.0, 1.0), **dict(auto_features((1.0, 1.0, 1.0)), mode="3d"), tile_shape=(8, 64, 64))
    ref = SliceRef("z", 12)
    live = LivePreview(s.image_array, (1.0, 1.0, 1.0), s.label_plane, lambda: [ref], 4,
                       feature_kw={"cache_bytes": int(2.5 * probe.tile_bytes), "tile_shape": (8, 64, 64)})
    try:
        assert not live.scores_whole_volume and live.coarse_factor() == 2
        _scribble(s, phantom.labels, ref, 150, 0)
        live.labels_changed(None, s.labels_seq)
        live.request(ref)
        live.wait_idle(60)
        deadline = time.monotonic() + 120
        while live.fresh_coverage() < 1.0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert live.fresh_coverage() == 1.0 and live.last_error is None
        f, bank = live._coarse
        assert bank.shape == (12, 32, 32)
        np.testing.assert_allclose(bank.image[3, 5, 7], phantom.image[6:8, 10:12, 14:16].astype(np.float32).mean(), rtol=1e-5)
        cand, cover = live.candidates(fresh_only=True)
        assert cover == 1.0 and len(cand) == sum(SHAPE) and cand.model_version == f"instant:{live.fitted_seq}"
        sc = live._scores
        assert sc[SliceRef("z", 0)][1] == sc[SliceRef("z", 1)][1]  # one block of the copy
        assert np.isfinite(cand.uncertainty["entropy"]).all()
    finally:
        live.close()
        s.close()


def test_idle_before_any_label_computes_what_the_first_ranking_needs(tmp_path, phantom):
    """Once the plane on screen has its features, an idle tier 1 imports the tree ensembles and computes
    the downsampled copy's feature tiles, each once, before anything is painted (the first commit's
    ranking then only fits and predicts); without coarse scoring it builds no copy."""
    from al_annotator.core.live import LivePreview

    s = Session.create(tmp_path / "p", phantom.image, classes=phantom.classes)
    ref = SliceRef("z", 12)
    live = LivePreview(s.image_array, (1.0, 1.0, 1.0), s.label_plane, lambda: [], 4, feature_kw={"tile_shape": (8, 64, 64)})
    off = LivePreview(s.image_array, (1.0, 1.0, 1.0), s.label_plane, lambda: [], 4, coarse_scoring=False)
    try:
        assert not live._warmup_due()  # nothing on screen yet: the plane comes first
        live.prefetch(ref)
        deadline = time.monotonic() + 120
        while not live._warmed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert live._warmed and live.last_error is None and live.classifier is None
        assert ref in live._plane_cache and "sklearn.ensemble" in sys.modules
        f, bank = live._coarse
        tiles = bank.tiles_of((slice(None),) * 3)
        assert f == 2 and all(t in bank._cache for t in tiles) and bank.stats["tiles_computed"] == len(tiles)
        off.prefetch(ref)
        off.wait_idle(60)
        time.sleep(0.3)
        assert not off._warmup_due() and off._coarse is None
    finally:
        live.close()
        off.close()
        s.close()


def test_a_commit_during_a_refit_is_not_ranked_as_fresh_by_the_fit_before_its_strokes(tmp_path, phantom):
    """While tier 1's thread works on a fit it has taken up (here held inside it), the previous fit's
    scores are not 'fresh': a commit made meanwhile is ranked without the fresh flag and ranked again,
    by the fit that includes its slice's strokes, once that one has scored enough slices."""
    s = Session.create(tmp_path / "p", phantom.image, classes=phantom.classes, live_preview=True, strategy="entropy")
    ranked = []
    s.suggestions_changed.connect(lambda q: ranked.append([i.suggestion.model_version for i in q]))
    live = s._live
    _scribble(s, phantom.labels, SliceRef("z", 12), 150, 0)
    deadline = time.monotonic() + 120
    while live.fresh_coverage() < 1.0 and time.monotonic() < deadline:
        s.take_previews()
        time.sleep(0.05)
    assert live.fresh_coverage() == 1.0
    old = live.fitted_seq
    gate, inside = threading.Event(), threading.Event()
    real = live._fit

    def held(*a, **k):
        inside.set()
        gate.wait(60)
        return real(*a, **k)

    live._fit = held
    try:
        ref = SliceRef("y", 20)
        s.goto(ref)
        _scribble(s, phantom.labels, ref, 150, 1)
        seq = s.labels_seq
        assert inside.wait(60)  # the thread took the strokes up and is inside the fit
        assert live.fitted_seq == old and live.fresh_coverage() == 0.0
        s.mark_annotated(ref)
        assert not s._ranked_fresh and s._rerank_when_scored
    finally:
        gate.set()
    deadline = time.monotonic() + 120
    while s._rerank_when_scored and time.monotonic() < deadline:
        s.take_previews()
        time.sleep(0.05)
    assert live.fitted_seq >= seq and ranked[-1] == [f"instant:{live.fitted_seq}"] * len(ranked[-1]) and s._ranked_fresh
    s.close()


@pytest.mark.parametrize("fits", [True, False])
def test_the_copy_is_scored_on_a_grid_of_half_the_score_size_where_a_full_resolution_pass_follows(tmp_path, phantom, fits):
    """One prediction over a grid of the downsampled copy ranks every slice: score_px per side where
    the copy's scores are final (the volume's features do not fit the cache), half that where every
    slice is re-scored from its own features afterwards."""
    from al_annotator.core.live import LivePreview
    from al_annotator.instant import FeatureBank
    from al_annotator.instant.segmenter import auto_features

    s = Session.create(tmp_path / "p", phantom.image, classes=phantom.classes)
    kw = {"tile_shape": (8, 64, 64)}
    if not fits:
        probe = FeatureBank(s.image_array, (1.0, 1.0, 1.0), **dict(auto_features((1.0, 1.0, 1.0)), mode="3d"), **kw)
        kw["cache_bytes"] = int(2.5 * probe.tile_bytes)
    ref = SliceRef("z", 12)
    live = LivePreview(s.image_array, (1.0, 1.0, 1.0), s.label_plane, lambda: [ref], 4, feature_kw=kw, score_px=24)
    try:
        assert live.scores_whole_volume == fits
        _scribble(s, phantom.labels, ref, 150, 0)
        live.labels_changed(None, s.labels_seq)
        live.request(ref)
        live.wait_idle(60)
        deadline = time.monotonic() + 120
        while live._coarse_probs is None and time.monotonic() < deadline:
            time.sleep(0.05)
        seq, f, strides, probs = live._coarse_probs
        assert f == 2 and live._coarse[1].shape == (12, 32, 32)
        assert strides == ((1, 3, 3) if fits else (1, 2, 2))  # sides of at most 12 / 24
        assert probs.shape == ((4, 12, 11, 11) if fits else (4, 12, 16, 16))
        np.testing.assert_allclose(probs.sum(0), 1.0, rtol=1e-5)
    finally:
        live.close()
        s.close()
