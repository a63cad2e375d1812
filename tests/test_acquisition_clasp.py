"""ClaSP PE (class-stratified, power noise): the rare class gets a pick, seeded determinism, cold start."""

import numpy as np

from al_annotator.acquisition import STRATEGIES, ScoredPool, suggest


def _pool(n=40, seed=0):
    rng = np.random.default_rng(seed)
    probs = np.tile([0.9, 0.1, 0.0], (n, 1))
    probs[7] = [0.5, 0.2, 0.3]  # the only slice with the rare class 3, and not the most uncertain
    ent = rng.uniform(0.5, 1.0, n)
    ent[7] = 0.3
    emb = np.c_[probs, np.zeros((n, 3))]
    return ScoredPool([("z", i) for i in range(n)], {"entropy": ent}, embeddings=emb, model_version=1)


def test_rare_class_slice_is_picked_first_when_greedy():
    pool = _pool()
    picks = suggest(pool, "clasp_pe", n=3, seed=0, beta0=1e6)
    assert picks[0].index == 7
    assert "class 3" in picks[0].reason
    assert suggest(pool, "entropy", n=3)[0].index != 7  # plain entropy does not pick it


def test_deterministic_given_seed_and_noisy_early():
    pool = _pool()
    a = [s.index for s in suggest(pool, "clasp_pe", n=5, seed=3)]
    assert a == [s.index for s in suggest(pool, "clasp_pe", n=5, seed=3)]
    assert len(set(a)) == 5
    runs = {tuple(s.index for s in suggest(pool, "clasp_pe", n=5, seed=s, beta0=0.05)) for s in range(6)}
    assert len(runs) > 1


def test_cold_start_and_annotated_never_returned():
    cold = ScoredPool([("z", i) for i in range(10)], foreground_fraction=np.linspace(0, 1, 10))
    assert suggest(cold, "clasp_pe", n=2, seed=0)[0].reason.startswith("cold start")
    pool = _pool()
    mask = np.zeros(pool.n, bool)
    mask[7] = True
    warm = ScoredPool(pool.refs, pool.uncertainty, embeddings=pool.embeddings, annotated_mask=mask, model_version=1)
    idx, scores = STRATEGIES["clasp_pe"](None, warm, 6, seed=1)
    assert 7 not in idx and len(set(idx.tolist())) == 6
    assert np.all(np.diff(scores) <= 0)
