"""Tests of al_annotator.acquisition: measures, strategies (contract), coreset, modAL interop."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from al_annotator.acquisition import (
    STRATEGIES,
    ScoredPool,
    SliceCandidates,
    Suggestion,
    bald,
    covering_radius,
    get_strategy,
    hybrid,
    intensity_foreground_fraction,
    k_center_greedy,
    list_strategies,
    pixel_entropy,
    pixel_least_confidence,
    pixel_margin,
    register_strategy,
    slice_score,
    suggest,
    top_n,
)
from al_annotator.errors import InputError
from al_annotator.types import SliceRef

BUILTIN = ["random", "foreground_random", "least_confidence", "margin", "entropy", "bald", "coreset", "hybrid"]


def make_pool(n: int = 40, d: int = 8, seed: int = 0, annotated: int = 6, cold: bool = False) -> ScoredPool:
    rng = np.random.default_rng(seed)
    refs = [(("z", "y", "x")[i % 3], i) for i in range(n)]
    mask = np.zeros(n, bool)
    mask[rng.choice(n, annotated, replace=False)] = True
    fg = rng.random(n).astype(np.float32)
    if cold:
        return ScoredPool(refs, foreground_fraction=fg, annotated_mask=mask)
    unc = {m: rng.random(n) for m in ("entropy", "margin", "least_confidence", "bald")}
    return ScoredPool(
        refs,
        unc,
        embeddings=rng.normal(size=(n, d)),
        foreground_fraction=fg,
        annotated_mask=mask,
        labelled_embeddings=rng.normal(size=(3, d)),
        model_version=7,
    )


# ----------------------------------------------------------------------------------------------
# pixel measures
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("c", [2, 4])
def test_pixel_measures_on_known_distributions(c):
    uniform = np.full((c, 3, 5), 1.0 / c)
    onehot = np.zeros((c, 3, 5))
    onehot[1] = 1.0
    np.testing.assert_allclose(pixel_entropy(uniform), np.log(c))
    np.testing.assert_allclose(pixel_entropy(uniform, normalize=True), 1.0)
    np.testing.assert_allclose(pixel_entropy(onehot), 0.0, atol=1e-12)
    np.testing.assert_allclose(pixel_margin(uniform), 1.0)
    np.testing.assert_allclose(pixel_margin(onehot), 0.0)
    np.testing.assert_allclose(pixel_least_confidence(uniform), 1.0 - 1.0 / c)
    np.testing.assert_allclose(pixel_least_confidence(onehot), 0.0)
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(c), size=(3, 5)).transpose(2, 0, 1)
    assert (pixel_entropy(p) <= np.log(c) + 1e-9).all()
    # batched (N, C, H, W) gives (N, H, W) equal to the per-slice results
    batch = np.stack([p, uniform, onehot])
    assert pixel_entropy(batch).shape == (3, 3, 5)
    np.testing.assert_allclose(pixel_margin(batch)[0], pixel_margin(p))


def test_pixel_measures_float32_stay_float32():
    p = np.full((3, 4, 4), 1 / 3, np.float32)
    assert pixel_entropy(p).dtype == np.float32
    assert pixel_margin(p).dtype == np.float32


def test_bald_zero_when_samples_agree_positive_when_they_disagree():
    rng = np.random.default_rng(0)
    p = rng.dirichlet([1, 1, 1], size=(4, 4)).transpose(2, 0, 1)
    agree = np.stack([p] * 5)
    np.testing.assert_allclose(bald(agree), 0.0, atol=1e-9)
    disagree = np.stack([np.roll(p, k, axis=0) for k in range(3)])
    assert (bald(disagree) > 0).all()
    # confident but contradictory samples: BALD = log 2 for two classes
    flip = np.stack([np.array([1.0, 0.0])[:, None, None], np.array([0.0, 1.0])[:, None, None]])
    np.testing.assert_allclose(bald(flip), np.log(2), atol=1e-6)
    # batched (T, N, C, H, W)
    assert bald(np.stack([agree, agree], axis=1)).shape == (2, 4, 4)
    with pytest.raises(InputError, match="MC samples"):
        bald(p)


def test_slice_score_reductions():
    m = np.zeros((10, 10))
    m[0, :4] = 1.0
    assert slice_score(m) == pytest.approx(0.04)
    assert slice_score(m, "top_k_mean", top_k=4) == 1.0
    assert slice_score(m, "top_k_mean", top_k=0.08) == pytest.approx(0.5)
    assert slice_score(m, "max") == 1.0
    fg = np.zeros((10, 10), bool)
    fg[0] = True
    assert slice_score(m, fg_mask=fg) == pytest.approx(0.4)
    assert slice_score(m, fg_mask=np.zeros((10, 10), bool)) == 0.0
    with pytest.raises(InputError, match="median"):
        slice_score(m, "median")
    with pytest.raises(InputError, match="top_k"):
        slice_score(m, "top_k_mean", top_k=0)
    with pytest.raises(InputError, match="shape"):
        slice_score(m, fg_mask=np.ones((3, 3), bool))


def test_intensity_foreground_fraction():
    s = np.zeros((3, 10, 10), np.float32)
    s[1, :5] = 1.0
    s[2] = 1.0
    np.testing.assert_allclose(intensity_foreground_fraction(s), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(intensity_foreground_fraction(s, threshold=2.0), 0.0)


# ----------------------------------------------------------------------------------------------
# pool and candidates
# ----------------------------------------------------------------------------------------------
def test_slice_candidates_from_predictions_and_storage_round_trip():
    rng = np.random.default_rng(0)
    n, c = 6, 3
    probs = rng.dirichlet(np.ones(c), size=(n, 8, 8)).transpose(0, 3, 1, 2).astype(np.float32)
    mc = np.stack([probs, probs[:, ::-1]])
    refs = [("z", i) for i in range(n)]
    cand = SliceCandidates.from_predictions(refs, probs, embeddings=rng.normal(size=(n, 4)), mc=mc, model_version=3)
    assert set(cand.uncertainty) == {"entropy", "margin", "least_confidence", "bald"}
    np.testing.assert_allclose(cand.uncertainty["entropy"][2], pixel_entropy(probs[2]).mean(), rtol=1e-5)
    np.testing.assert_allclose(cand.foreground_fraction, (probs.argmax(1) != 0).mean(axis=(1, 2)))
    back = SliceCandidates.from_arrays(cand.to_arrays())
    assert back.refs == cand.refs and back.model_version == 3
    for k in cand.uncertainty:
        np.testing.assert_array_equal(back.uncertainty[k], cand.uncertainty[k])
    np.testing.assert_array_equal(back.embeddings, cand.embeddings)
    joined = SliceCandidates.concat([
        SliceCandidates.from_predictions(refs[:2], probs[:2], mc=mc[:, :2], embeddings=cand.embeddings[:2], model_version=3),
        SliceCandidates.from_predictions(refs[2:], probs[2:], mc=mc[:, 2:], embeddings=cand.embeddings[2:], model_version=3),
    ])
    np.testing.assert_allclose(joined.uncertainty["bald"], cand.uncertainty["bald"])
    pool = cand.to_pool(annotated=[SliceRef("z", 1), ("z", 4)], labelled_embeddings=np.zeros((2, 4)))
    assert pool.annotated_mask.tolist() == [False, True, False, False, True, False]
    assert pool.seed_embeddings().shape == (4, 4)
    mi = bald(mc)
    via_mi = SliceCandidates.from_predictions(refs, probs, mutual_info=mi)
    np.testing.assert_allclose(via_mi.uncertainty["bald"], cand.uncertainty["bald"], rtol=1e-5)


def test_pool_validation_names_the_problem():
    with pytest.raises(InputError, match=r"uncertainty\['entropy'\]"):
        ScoredPool([("z", 0), ("z", 1)], {"entropy": [0.1]})
    with pytest.raises(InputError, match="embeddings"):
        ScoredPool([("z", 0)], embeddings=np.array([[np.nan, 1.0]]))
    with pytest.raises(InputError, match="labelled_embeddings"):
        ScoredPool([("z", 0)], embeddings=np.zeros((1, 3)), labelled_embeddings=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="axis"):
        ScoredPool([("q", 0)])


# ----------------------------------------------------------------------------------------------
# strategy contract
# ----------------------------------------------------------------------------------------------
def test_registry():
    assert set(BUILTIN) <= set(list_strategies()) == set(STRATEGIES)
    assert get_strategy("entropy") is STRATEGIES["entropy"]
    with pytest.raises(InputError, match="no_such"):
        get_strategy("no_such")


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("cold", [False, True])
def test_strategy_contract(name, cold):
    pool = make_pool(cold=cold)
    func = get_strategy(name)
    avail = set(pool.available_indices().tolist())
    idx, scores = func(None, pool, 8, seed=3)
    assert idx.shape == (8,) and scores.shape == (8,)
    assert np.issubdtype(idx.dtype, np.integer)
    assert len(set(idx.tolist())) == 8
    assert set(idx.tolist()) <= avail  # annotated candidates excluded
    assert np.all(np.diff(scores) <= 1e-12)  # sorted best first
    # determinism with a seed
    idx2, scores2 = func(None, pool, 8, seed=3)
    np.testing.assert_array_equal(idx, idx2)
    np.testing.assert_array_equal(scores, scores2)
    # n larger than what is available: all available, once each
    big, big_scores = func(None, pool, 1000, seed=3)
    assert sorted(big.tolist()) == sorted(avail) and big_scores.shape == big.shape
    # n = 0
    none, none_scores = func(None, pool, 0)
    assert none.size == 0 and none_scores.size == 0
    # reasons
    idx3, scores3, reasons = func(None, pool, 4, seed=3, return_reasons=True)
    assert len(reasons) == 4 and all(isinstance(r, str) and r for r in reasons)
    if cold and name not in ("random", "foreground_random"):
        # cold start: the score is the slice's foreground fraction, as the reason says
        fg = np.asarray(pool.foreground_fraction, np.float64) if pool.foreground_fraction is not None else None
        if fg is not None:
            np.testing.assert_allclose(scores, np.nan_to_num(fg[idx], nan=0.0))
        assert all(r.startswith("cold start") and "foreground" in r for r in reasons)
    if name == "random":
        assert np.all(scores == scores[0])


def test_cold_start_without_any_information_is_random_and_seeded():
    pool = ScoredPool([("z", i) for i in range(30)])
    for name in BUILTIN:
        a = get_strategy(name)(None, pool, 5, seed=1)[0]
        b = get_strategy(name)(None, pool, 5, seed=1)[0]
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(get_strategy("entropy")(None, pool, 5, seed=1)[0], get_strategy("entropy")(None, pool, 5, seed=2)[0])


def test_foreground_random_prefers_foreground():
    n = 200
    fg = np.zeros(n)
    fg[:20] = 1.0
    pool = ScoredPool([("z", i) for i in range(n)], foreground_fraction=fg)
    hits = sum(int((get_strategy("foreground_random")(None, pool, 5, seed=s)[0] < 20).sum()) for s in range(20))
    assert hits >= 90  # 100 draws; empty slices weigh 0.01 vs 1.0


def test_uncertainty_strategies_pick_the_top_scores():
    pool = make_pool()
    avail = pool.available_indices()
    for name in ("least_confidence", "margin", "entropy", "bald"):
        u = pool.uncertainty[name]
        idx, scores = get_strategy(name)(None, pool, 5)
        expected = avail[np.argsort(-u[avail], kind="stable")][:5]
        np.testing.assert_array_equal(idx, expected)
        np.testing.assert_allclose(scores, u[expected])


def test_missing_measure_with_a_model_is_a_clear_error():
    pool = ScoredPool([("z", i) for i in range(5)], {"entropy": np.arange(5.0)}, model_version=1)
    with pytest.raises(InputError, match="bald"):
        get_strategy("bald")(None, pool, 2)
    with pytest.raises(InputError, match="embeddings"):
        get_strategy("coreset")(None, pool, 2)
    # hybrid degrades to uncertainty only
    idx, _ = hybrid(None, pool, 2)
    assert idx.tolist() == [4, 3]
    with pytest.raises(InputError, match="bald"):
        hybrid(None, pool, 2, measure="bald")  # asked for explicitly: no silent fallback
    with pytest.raises(InputError, match="wobble"):
        hybrid(None, pool, 2, measure="wobble")


def test_nan_scores_rank_last():
    pool = ScoredPool([("z", i) for i in range(4)], {"entropy": [np.nan, 0.2, 0.9, np.nan]})
    assert get_strategy("entropy")(None, pool, 4)[0][:2].tolist() == [2, 1]


def test_top_n_matches_modal_multi_argmax():
    from modAL.utils.selection import multi_argmax

    values = np.random.default_rng(0).random(1000)
    ours, ours_v = top_n(values, 10)
    theirs, _ = multi_argmax(values, 10)
    assert set(ours.tolist()) == set(theirs.tolist())
    assert np.all(np.diff(ours_v) <= 0)


# ----------------------------------------------------------------------------------------------
# coreset
# ----------------------------------------------------------------------------------------------
def brute_k_center(points, n, seeds=None, available=None, first=None):
    x = np.asarray(points, np.float64)
    avail = np.ones(len(x), bool) if available is None else available.copy()
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    if seeds is not None and len(seeds):
        s = np.asarray(seeds, np.float64)
        mind = np.sqrt(((x[:, None] - s[None]) ** 2).sum(-1)).min(1)
        picks = []
    else:
        picks = [first]
        mind = d[first].copy()
        avail[first] = False
    while len(picks) < n and avail.any():
        cand = np.where(avail, mind, -np.inf)
        i = int(np.argmax(cand))
        picks.append(i)
        avail[i] = False
        mind = np.minimum(mind, d[i])
    return picks


@pytest.mark.parametrize("trial", range(5))
def test_coreset_matches_brute_force_greedy(trial):
    rng = np.random.default_rng(trial)
    pts = rng.normal(size=(40, 3))
    seeds = rng.normal(size=(4, 3))
    avail = rng.random(40) > 0.2
    picks, dists = k_center_greedy(pts, 7, seeds=seeds, available=avail)
    assert picks.tolist() == brute_k_center(pts, 7, seeds=seeds, available=avail)
    assert np.all(np.diff(dists) <= 1e-6)
    picks, _ = k_center_greedy(pts, 7, first=5)
    assert picks.tolist() == brute_k_center(pts, 7, first=5)


@pytest.mark.parametrize("trial", range(4))
def test_coreset_covering_radius_within_twice_optimal(trial):
    rng = np.random.default_rng(100 + trial)
    pts = rng.normal(size=(11, 2))
    k = 3
    opt = min(covering_radius(pts, list(c)) for c in itertools.combinations(range(11), k))
    for first in range(11):
        picks, _ = k_center_greedy(pts, k, first=first)
        assert covering_radius(pts, picks) <= 2 * opt + 1e-9
    seeds = rng.normal(size=(2, 2))
    opt_s = min(covering_radius(pts, list(c), seeds=seeds) for c in itertools.combinations(range(11), k))
    picks, _ = k_center_greedy(pts, k, seeds=seeds)
    assert covering_radius(pts, picks, seeds=seeds) <= 2 * opt_s + 1e-9


def test_coreset_strategy_seeds_with_labelled_and_annotated():
    emb = np.array([[0.0, 0], [0.2, 0], [10, 0], [3, 0]])
    pool = ScoredPool([("z", i) for i in range(4)], embeddings=emb, labelled_embeddings=np.array([[10.0, 0.1]]),
                      annotated_mask=[True, False, False, False])
    idx, d = get_strategy("coreset")(None, pool, 1)
    assert idx.tolist() == [3]  # 0 is annotated, 2 sits next to the labelled seed
    assert d[0] == pytest.approx(3.0, abs=1e-5)


def test_coreset_is_fast_on_100k_candidates():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100_000, 128)).astype(np.float32)
    seeds = rng.normal(size=(100, 128)).astype(np.float32)
    t = time.perf_counter()
    picks, _ = k_center_greedy(x, 8, seeds=seeds)
    elapsed = time.perf_counter() - t
    assert len(set(picks.tolist())) == 8
    assert elapsed < 2.0, elapsed


def test_hybrid_picks_are_within_the_uncertain_short_list():
    pool = make_pool(n=200, annotated=20)
    avail = pool.available_indices()
    u = pool.uncertainty["entropy"]
    for n, factor in [(4, 3), (8, 4), (5, 1)]:
        idx, scores = hybrid(None, pool, n, pool_factor=factor)
        short = set(avail[np.argsort(-u[avail])][: n * factor].tolist())
        assert len(idx) == n and set(idx.tolist()) <= short
        assert np.all(np.diff(scores) <= 1e-6)
    idx_bald, _ = hybrid(None, pool, 4, measure="bald", pool_factor=2)
    ub = pool.uncertainty["bald"]
    assert set(idx_bald.tolist()) <= set(avail[np.argsort(-ub[avail])][:8].tolist())
    with pytest.raises(InputError, match="pool_factor"):
        hybrid(None, pool, 4, pool_factor=0)


# ----------------------------------------------------------------------------------------------
# modAL interoperability
# ----------------------------------------------------------------------------------------------
class ToyLearner:
    """A modAL-style learner: per-candidate class probabilities, embeddings and MC samples."""

    def __init__(self, proba, emb=None, mc=None):
        self.proba, self.emb, self.mc = proba, emb, mc

    def predict_proba(self, X):
        return self.proba[np.asarray(X)]

    def embed(self, X):
        return self.emb[np.asarray(X)]

    def mc_predict_proba(self, X, T):
        return self.mc[:T, np.asarray(X)]


def test_strategies_with_a_modal_style_learner_match_modal():
    from modAL.uncertainty import entropy_sampling, margin_sampling, uncertainty_sampling

    rng = np.random.default_rng(0)
    proba = rng.dirichlet([1, 1, 1], size=50)
    learner = ToyLearner(proba, emb=rng.normal(size=(50, 4)), mc=rng.dirichlet([1, 1, 1], size=(6, 50)))
    X = np.arange(50)
    for ours, theirs in [("entropy", entropy_sampling), ("margin", margin_sampling), ("least_confidence", uncertainty_sampling)]:
        idx, _ = get_strategy(ours)(learner, X, n_instances=5)
        ref = theirs(learner, X, n_instances=5)
        ref_idx = ref[0] if isinstance(ref, tuple) else ref
        assert set(idx.tolist()) == set(np.asarray(ref_idx).tolist()), ours
    idx, scores = get_strategy("bald")(learner, X, n_instances=3, mc_samples=6)
    mi = bald(learner.mc[..., None, None])[..., 0, 0]
    np.testing.assert_array_equal(idx, np.argsort(-mi)[:3])
    idx, _ = get_strategy("coreset")(learner, X, n_instances=3, labelled_embeddings=learner.emb[:2], annotated_mask=X < 2)
    assert not set(idx.tolist()) & {0, 1}
    idx, _ = get_strategy("hybrid")(learner, X, n_instances=3)
    assert len(idx) == 3
    # a learner only fills in what the pool lacks
    pool = ScoredPool([("z", i) for i in range(50)], annotated_mask=X < 10)
    idx, _ = get_strategy("entropy")(learner, pool, 4)
    assert idx.min() >= 10


def test_our_strategy_as_modal_active_learner_query_strategy():
    from modAL.models import ActiveLearner
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X_train = rng.normal(size=(20, 2))
    y_train = (X_train[:, 0] > 0).astype(int)
    X_pool = rng.normal(size=(100, 2))
    learner = ActiveLearner(estimator=LogisticRegression(), query_strategy=get_strategy("entropy"), X_training=X_train, y_training=y_train)
    idx, instances = learner.query(X_pool, n_instances=3)
    assert len(idx) == 3
    np.testing.assert_array_equal(instances, X_pool[idx])
    # the picks are the points closest to the decision boundary
    p = learner.predict_proba(X_pool)
    assert set(idx.tolist()) == set(np.argsort(-(-(p * np.log(p)).sum(1)))[:3].tolist())


def test_indices_into_a_pool():
    pool = make_pool(n=30, annotated=0)
    sub = np.array([3, 7, 11, 20, 25])
    idx, _ = get_strategy("entropy")(None, sub, 2, pool=pool)
    u = pool.uncertainty["entropy"][sub]
    np.testing.assert_array_equal(idx, np.argsort(-u)[:2])  # indices into X, as in modAL


# ----------------------------------------------------------------------------------------------
# suggest
# ----------------------------------------------------------------------------------------------
def test_suggest_returns_suggestions_with_reasons():
    pool = make_pool()
    out = suggest(pool, "hybrid", n=5, seed=0)
    assert len(out) == 5 and all(isinstance(s, Suggestion) for s in out)
    assert [s.rank for s in out] == [1, 2, 3, 4, 5]
    assert all(s.model_version == 7 and s.strategy == "hybrid" for s in out)
    assert all("entropy" in s.reason and "distance" in s.reason for s in out)
    assert all(not pool.annotated_mask[pool.refs.index(s.ref)] for s in out)
    assert out == suggest(pool, "hybrid", n=5, seed=0)
    cold = suggest(make_pool(cold=True), n=3)
    assert len(cold) == 3 and all("cold start" in s.reason for s in cold)
    assert all(s.model_version is None for s in cold)
    with pytest.raises(InputError, match="nope"):
        suggest(pool, "nope")


def test_register_custom_strategy():
    def last_first(learner, X, n_instances=1, **kw):
        idx = X.available_indices()[::-1][:n_instances]
        return idx, np.arange(len(idx), 0, -1, dtype=float)

    register_strategy("_last_first", last_first, overwrite=True)
    with pytest.raises(InputError, match="already registered"):
        register_strategy("_last_first", last_first)
    pool = ScoredPool([("x", i) for i in range(6)], annotated_mask=[False] * 5 + [True])
    out = suggest(pool, "_last_first", n=2)
    assert [s.index for s in out] == [4, 3] and out[0].reason == "ranked by _last_first"
    STRATEGIES.pop("_last_first")


# ----------------------------------------------------------------------------------------------
# project glue (store -> pool -> suggestions)
# ----------------------------------------------------------------------------------------------
def _volume():
    vol = np.zeros((10, 12, 14), np.uint8)
    vol[6:, 3:9, 3:9] = 200  # bright object in the last z slices only
    return vol


def test_suggest_for_project_cold_start_prefers_foreground_and_skips_annotated():
    from al_annotator.acquisition.project import cold_start_foreground, suggest_for_project
    from al_annotator.store import create_project

    store = create_project(None, _volume(), classes="background,bone", fsync=False)
    store.set_slice_state(SliceRef("z", 7), "annotated")
    fg = cold_start_foreground(store, ("z",))
    assert fg["z"].shape == (10,) and fg["z"][:6].max() == 0 and fg["z"][6:].min() > 0
    out = suggest_for_project(store, "entropy", n=3, axes="z", seed=0)
    assert [s.axis for s in out] == ["z"] * 3
    assert all(s.index >= 6 and s.index != 7 for s in out)
    assert all("cold start" in s.reason and s.model_version is None for s in out)
    js = out[0].to_json()
    assert set(js) >= {"axis", "index", "score", "reason", "model_version"}
    assert len(suggest_for_project(store, "random", n=100, axes="zy")) == 10 + 12 - 1
    with pytest.raises(InputError, match="'q'"):
        suggest_for_project(store, axes="q")


def test_suggest_for_project_uses_the_current_model_scores(tmp_path):
    from al_annotator.acquisition.project import suggest_for_project
    from al_annotator.store import create_project
    from al_annotator.store.models import publish_version

    store = create_project(tmp_path / "p", _volume(), classes="background,bone", fsync=False)
    refs = [SliceRef("z", i) for i in range(10)] + [SliceRef("y", i) for i in range(12)]
    ent = np.linspace(0, 1, len(refs)).astype(np.float32)
    cand = SliceCandidates(refs, {"entropy": ent}, embeddings=np.random.default_rng(0).normal(size=(len(refs), 4)), model_version=1)
    d = tmp_path / "p" / "models" / "v0001.partial"
    d.mkdir(parents=True)
    np.savez(d / "scores.npz", **cand.to_arrays())
    publish_version(store, 1, {"created": 0})
    store.set_slice_state(SliceRef("y", 11), "annotated")
    out = suggest_for_project(store, "entropy", n=2)
    assert [(s.axis, s.index) for s in out] == [("y", 10), ("y", 9)]
    assert all(s.model_version == 1 for s in out)
    out = suggest_for_project(store, "hybrid", n=2, axes="z")
    assert all(s.axis == "z" for s in out)
    with pytest.raises(InputError, match="none on"):
        suggest_for_project(store, axes="x")


class _CountingImage:
    """An image array-like with zarr's ``chunks`` that counts the chunks its reads touch."""

    def __init__(self, data: np.ndarray, chunks: tuple[int, int, int]) -> None:
        self.data, self.chunks, self.shape, self.dtype = data, chunks, data.shape, data.dtype
        self.chunks_read = 0

    def __getitem__(self, key):
        out = self.data[key]
        bounds = [k.indices(n)[:2] if isinstance(k, slice) else (k, k + 1) for k, n in zip(key, self.shape)]
        n_chunks = 1
        for (lo, hi), c in zip(bounds, self.chunks):
            n_chunks *= (hi - 1) // c - lo // c + 1
        self.chunks_read += n_chunks
        return out


class _ImageOnlyStore:
    def __init__(self, image: _CountingImage) -> None:
        self.image, self.shape, self.path = image, image.shape, None


def test_cold_start_foreground_reads_a_bounded_sub_grid_of_chunks():
    from al_annotator.acquisition.project import _chunk_grid_sample, cold_start_foreground

    assert [len(p) for p in _chunk_grid_sample((16, 16, 16), 216)] == [6, 6, 6]
    assert [len(p) for p in _chunk_grid_sample((2, 32, 32), 216)] == [2, 10, 10]  # an axis with few chunks lends its share
    assert all(p[0] == 0 and p[-1] == n - 1 for p, n in zip(_chunk_grid_sample((16, 9, 5), 100), (16, 9, 5)))  # both ends
    # 20^3 chunks of 8^3; a bright block in z 96..159, y/x 40..119: the estimate follows it
    vol = np.random.default_rng(0).integers(0, 40, (160, 160, 160)).astype(np.uint8)
    vol[96:160, 40:120, 40:120] += 150
    image = _CountingImage(vol, (8, 8, 8))
    fg = cold_start_foreground(_ImageOnlyStore(image), "zyx", max_chunks=216)
    assert image.chunks_read <= 216  # of 8000: whole slices would be 72 x 400 chunks
    exact = (vol > 100).mean(axis=(1, 2))
    assert fg["z"].shape == (160,) and fg["z"][:88].max() < 0.05 and fg["z"][120:].min() > 0.05
    assert np.corrcoef(fg["z"], exact)[0, 1] > 0.85
    assert fg["y"][:32].max() < 0.05 and fg["y"][64:96].min() > 0.05
    # a volume of at most max_chunks chunks is read whole: the exact per-slice fractions
    sub = vol[96:160, 16:80, 16:80]
    small = _CountingImage(sub, (16, 16, 16))
    fg_small = cold_start_foreground(_ImageOnlyStore(small), "zyx", max_chunks=64)
    assert small.chunks_read == 64
    assert np.allclose(fg_small["x"], (sub > 100).mean(axis=(0, 1)), atol=1e-6)


def test_cold_start_suggestions_on_a_phantom_prefer_foreground_slices(tmp_path):
    from al_annotator.acquisition.project import cold_start_foreground, suggest_for_project
    from al_annotator.datasets import make_phantom
    from al_annotator.store import create_project

    ph = make_phantom((64, 96, 96), dtype="uint16")
    store = create_project(tmp_path / "p", ph.image, classes=ph.classes, fsync=False)
    fg = cold_start_foreground(store, "zyx")
    picks = suggest_for_project(store, "foreground_random", n=10, seed=1)
    assert np.mean([fg[s.axis][s.index] for s in picks]) > np.mean(np.concatenate([fg[a] for a in "zyx"]))
