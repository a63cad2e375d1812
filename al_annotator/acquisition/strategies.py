"""Query strategies with modAL's signature, and :func:`suggest`.

Every strategy is ``strategy(learner, X, n_instances=1, **kw) -> (indices, scores)``:

* ``X`` is a :class:`~.pool.ScoredPool` (the usual case: per-slice scores precomputed by the
  trainer), or, as in modAL, an array of candidate ids or features, in which case the scores
  come from ``learner``. With ``X`` an integer array and ``pool=ScoredPool`` the strategy ranks
  only those pool indices.
* ``learner`` may be ``None``. Otherwise it is any object with ``predict_proba(X) -> (N, C)``
  (per-candidate class-probability summaries; a modAL ``ActiveLearner`` qualifies), optionally
  ``embed(X) -> (N, D)`` and ``mc_predict_proba(X, T) -> (T, N, C)``. It is only consulted for
  what the pool lacks; with a pool the ids passed to it are ``np.arange(pool.n)``.
* ``indices`` index ``X`` (as in modAL, so ``X[indices]`` are the picks), best first;
  ``scores`` are the matching scores, non-increasing. Annotated candidates (``pool.annotated_mask``
  or ``annotated_mask=`` for arrays) are never returned; if fewer than ``n_instances``
  candidates are available, all of them are returned.
* Common keywords: ``seed`` (int, ``numpy.random.Generator`` or None) for random parts and
  ``return_reasons=True`` to get a third element, one human-readable reason per pick.

Cold start: with no model information at all (no uncertainty, no embeddings, no usable
learner) every strategy returns a seeded random pick (foreground-weighted when the pool has a
``foreground_fraction``) with uniform scores instead of raising.

Use of modAL
------------
With a ``learner`` the uncertainty strategies call ``modAL.uncertainty.classifier_uncertainty``
/ ``classifier_margin`` / ``classifier_entropy``. Top-n selection is *not* delegated to
``modAL.utils.selection.multi_argmax``/``shuffled_argmax``: importing modAL costs about 3 s
(it imports scikit-learn) which the interactive path should not pay, ``multi_argmax`` returns
its picks unsorted and ``shuffled_argmax`` breaks ties with the global ``np.random`` state (not
seedable per call). :func:`top_n` is the same ``argpartition`` selection followed by a sort by
score, ties broken by lower index. modAL is imported lazily only when a learner is used.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import InputError
from .coreset import k_center_greedy
from .measures import bald as _bald
from .pool import MEASURES, ScoredPool, Suggestion

__all__ = [
    "QueryStrategy",
    "STRATEGIES",
    "register_strategy",
    "get_strategy",
    "list_strategies",
    "suggest",
    "top_n",
    "random_sampling",
    "foreground_random_sampling",
    "least_confidence",
    "margin",
    "entropy",
    "bald",
    "coreset",
    "hybrid",
]

#: ``strategy(learner, X, n_instances=1, **kw) -> (indices, scores)``
QueryStrategy = Callable[..., tuple]

_LABELS = {
    "entropy": "entropy",
    "margin": "margin uncertainty",
    "least_confidence": "least confidence",
    "bald": "BALD mutual information",
}

#: Floor of the sampling weight of a slice without foreground in foreground-weighted sampling.
MIN_FOREGROUND_WEIGHT = 0.01


# ----------------------------------------------------------------------------------------------
# context: one view of "what we know" whether X is a pool or a modAL-style array
# ----------------------------------------------------------------------------------------------
class _Context:
    def __init__(self, learner: Any, X: Any, kw: dict[str, Any]) -> None:
        self.learner = learner
        self.kw = kw
        pool = kw.pop("pool", None)
        if isinstance(X, ScoredPool):
            self.pool: ScoredPool | None = X
        elif pool is not None:
            if not isinstance(pool, ScoredPool):
                raise InputError(f"pool= must be a ScoredPool, got {type(pool).__name__}")
            self.pool = pool.subset(np.asarray(X, dtype=np.int64))
        else:
            self.pool = None
        if self.pool is not None:
            self.n = self.pool.n
            self.available = ~self.pool.annotated_mask
            self.learner_X: Any = np.arange(self.n)
            self.model_version = self.pool.model_version
        else:
            try:
                self.n = len(X)
            except TypeError:
                raise InputError(f"X must be a ScoredPool or an array of candidates, got {type(X).__name__}") from None
            self.learner_X = X
            mask = kw.pop("annotated_mask", None)
            self.available = np.ones(self.n, bool) if mask is None else ~np.asarray(mask, bool)
            if self.available.shape != (self.n,):
                raise InputError(f"annotated_mask must have shape ({self.n},), got {np.shape(mask)}")
            self.model_version = kw.pop("model_version", None)
        kw.pop("annotated_mask", None)
        self._unc: dict[str, np.ndarray | None] = {}

    @property
    def n_available(self) -> int:
        return int(self.available.sum())

    def has_learner(self, method: str = "predict_proba") -> bool:
        return self.learner is not None and callable(getattr(self.learner, method, None))

    @property
    def is_cold(self) -> bool:
        pool_cold = self.pool is None or self.pool.is_cold
        return pool_cold and not self.has_learner("predict_proba") and not self.has_learner("embed")

    @property
    def foreground(self) -> np.ndarray | None:
        if self.pool is not None and self.pool.foreground_fraction is not None:
            return self.pool.foreground_fraction
        fg = self.kw.get("foreground_fraction")
        return None if fg is None else np.asarray(fg, np.float32)

    def available_measures(self) -> list[str]:
        names = list(self.pool.uncertainty) if self.pool is not None else []
        if self.has_learner("predict_proba"):
            names += [m for m in ("entropy", "margin", "least_confidence") if m not in names]
        if self.has_learner("mc_predict_proba") and "bald" not in names:
            names.append("bald")
        return names

    def uncertainty(self, name: str) -> np.ndarray | None:
        if name in self._unc:
            return self._unc[name]
        u = None
        if self.pool is not None and name in self.pool.uncertainty:
            u = self.pool.uncertainty[name]
        elif name == "bald" and self.has_learner("mc_predict_proba"):
            mc = np.asarray(self.learner.mc_predict_proba(self.learner_X, int(self.kw.get("mc_samples", 10))), np.float64)
            if mc.ndim != 3 or mc.shape[1] != self.n:
                raise InputError(f"learner.mc_predict_proba must return (T, {self.n}, C), got shape {mc.shape}")
            u = _bald(mc[..., None, None])[..., 0, 0]
        elif name in ("entropy", "margin", "least_confidence") and self.has_learner("predict_proba"):
            from modAL import uncertainty as mu  # lazy: ~3 s import

            if name == "entropy":
                u = mu.classifier_entropy(self.learner, self.learner_X)
            elif name == "margin":
                u = 1.0 - mu.classifier_margin(self.learner, self.learner_X)
            else:
                u = mu.classifier_uncertainty(self.learner, self.learner_X)
        if u is not None:
            u = np.asarray(u, dtype=np.float64).reshape(-1)
            if u.shape != (self.n,):
                raise InputError(f"{name} scores must have one value per candidate ({self.n}), got shape {u.shape}")
        self._unc[name] = u
        return u

    def embeddings(self) -> np.ndarray | None:
        if self.pool is not None and self.pool.embeddings is not None:
            return self.pool.embeddings
        if self.has_learner("embed"):
            e = np.asarray(self.learner.embed(self.learner_X), np.float32)
            if e.ndim != 2 or e.shape[0] != self.n:
                raise InputError(f"learner.embed must return ({self.n}, D), got shape {e.shape}")
            return e
        return None

    def seeds(self, emb: np.ndarray) -> np.ndarray | None:
        parts = []
        if self.pool is not None:
            if self.pool.labelled_embeddings is not None and len(self.pool.labelled_embeddings):
                parts.append(self.pool.labelled_embeddings)
        else:
            lab = self.kw.get("labelled_embeddings")
            if lab is not None and len(lab):
                parts.append(np.asarray(lab, np.float32))
        if (~self.available).any():
            parts.append(emb[~self.available])
        return np.concatenate(parts) if parts else None


def _rng(seed: Any) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _check_n(n_instances: Any) -> int:
    if isinstance(n_instances, bool) or not isinstance(n_instances, (int, np.integer)) or n_instances < 0:
        raise InputError(f"n_instances must be a non-negative integer, got {n_instances!r}")
    return int(n_instances)


def _result(idx: np.ndarray, scores: np.ndarray, reasons: list[str], return_reasons: bool) -> tuple:
    idx = np.asarray(idx, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    return (idx, scores, reasons) if return_reasons else (idx, scores)


def top_n(scores: np.ndarray, n: int, available: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the ``n`` largest ``scores`` among ``available``, best first.

    NaN ranks below every number; ties go to the lower index among those selected.

    Examples
    --------
    >>> import numpy as np
    >>> top_n(np.array([0.2, 0.9, np.nan, 0.9, 0.5]), 3)
    (array([1, 3, 4]), array([0.9, 0.9, 0.5]))
    """
    s = np.asarray(scores, dtype=np.float64)
    cand = np.arange(s.size) if available is None else np.flatnonzero(available)
    k = min(int(n), cand.size)
    if k == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    key = np.where(np.isnan(s[cand]), -np.inf, s[cand])
    part = np.argpartition(-key, k - 1)[:k] if k < cand.size else np.arange(cand.size)
    order = np.lexsort((cand[part], -key[part]))
    sel = cand[part][order]
    return sel, s[sel]


def _random_pick(ctx: _Context, n: int, seed: Any, weighted: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Seeded pick without replacement; weighted by foreground when asked and known.

    Returns (indices, Efraimidis-Spirakis priority keys ``u**(1/w)``, weights or None).
    """
    cand = np.flatnonzero(ctx.available)
    k = min(n, cand.size)
    rng = _rng(seed)
    u = rng.random(cand.size)
    fg = ctx.foreground if weighted else None
    if fg is not None:
        w = np.maximum(np.nan_to_num(fg[cand].astype(np.float64), nan=0.0), MIN_FOREGROUND_WEIGHT)
        keys = u ** (1.0 / w)
    else:
        w = None
        keys = u
    order = np.lexsort((cand, -keys))[:k]
    return cand[order], keys[order], fg


def _cold_start(ctx: _Context, n: int, seed: Any, return_reasons: bool, why: str = "cold start (no model yet)") -> tuple:
    """Before a model there is nothing to be uncertain about: a random pick weighted toward slices
    with foreground (an empty slice teaches little). The score is that weight, the slice's estimated
    foreground fraction (0..1), so the queue's numbers mean something; without foreground
    information it is the uniform pick probability ``1/N``. The picked set is listed by score."""
    idx, _, fg = _random_pick(ctx, n, seed, weighted=True)
    if fg is not None:
        scores = np.nan_to_num(fg[idx].astype(np.float64), nan=0.0)
        order = np.lexsort((idx, -scores))  # the picked set, best (most foreground) first
        idx, scores = idx[order], scores[order]
        reasons = [f"{why}: picked at random, weighted by foreground (score = foreground fraction, {fg[i]:.0%} here)"
                   for i in idx]
    else:
        scores = np.full(idx.size, 1.0 / max(ctx.n_available, 1))
        reasons = [f"{why}: random pick (score = 1/candidates)" for _ in idx]
    return _result(idx, scores, reasons, return_reasons)


def _supports_reasons(func: QueryStrategy) -> QueryStrategy:
    func.supports_reasons = True  # type: ignore[attr-defined]
    return func


# ----------------------------------------------------------------------------------------------
# strategies
# ----------------------------------------------------------------------------------------------
@_supports_reasons
def random_sampling(learner: Any, X: Any, n_instances: int = 1, *, seed: Any = None, return_reasons: bool = False, **kw: Any) -> tuple:
    """Uniform random pick among unannotated candidates; scores are uniform (``1/N_available``).

    Examples
    --------
    >>> from al_annotator.acquisition import ScoredPool, random_sampling
    >>> pool = ScoredPool([("z", i) for i in range(10)], annotated_mask=[True] + [False] * 9)
    >>> idx, scores = random_sampling(None, pool, 3, seed=0)
    >>> len(idx), 0 in idx, scores.tolist()
    (3, False, [0.1111111111111111, 0.1111111111111111, 0.1111111111111111])
    """
    n = _check_n(n_instances)
    ctx = _Context(learner, X, kw)
    idx, _, _ = _random_pick(ctx, n, seed, weighted=False)
    scores = np.full(idx.size, 1.0 / max(ctx.n_available, 1))
    return _result(idx, scores, ["random pick" for _ in idx], return_reasons)


@_supports_reasons
def foreground_random_sampling(learner: Any, X: Any, n_instances: int = 1, *, seed: Any = None, return_reasons: bool = False, **kw: Any) -> tuple:
    """Random pick weighted toward slices with foreground.

    The weight of a slice is its ``foreground_fraction`` (predicted non-background fraction, or
    before any model an image-intensity-based fraction), floored at :data:`MIN_FOREGROUND_WEIGHT`
    so that empty slices stay possible. Sampling without replacement uses Efraimidis-Spirakis
    keys ``u ** (1 / w)``; the returned scores are those keys (non-increasing). Without any
    foreground information this is :func:`random_sampling`.

    Examples
    --------
    >>> import numpy as np
    >>> from al_annotator.acquisition import ScoredPool, foreground_random_sampling
    >>> pool = ScoredPool([("z", i) for i in range(100)], foreground_fraction=np.r_[np.zeros(90), np.ones(10)])
    >>> idx, _ = foreground_random_sampling(None, pool, 5, seed=0)
    >>> bool((idx >= 90).all())
    True
    """
    n = _check_n(n_instances)
    ctx = _Context(learner, X, kw)
    if ctx.foreground is None:
        idx, _, _ = _random_pick(ctx, n, seed, weighted=False)
        scores = np.full(idx.size, 1.0 / max(ctx.n_available, 1))
        return _result(idx, scores, ["random pick (no foreground information)" for _ in idx], return_reasons)
    idx, keys, fg = _random_pick(ctx, n, seed, weighted=True)
    reasons = [f"foreground-weighted random pick, foreground {fg[i]:.0%}" for i in idx]
    return _result(idx, keys, reasons, return_reasons)


def _uncertainty_strategy(measure: str, learner: Any, X: Any, n_instances: int, seed: Any, return_reasons: bool, kw: dict) -> tuple:
    n = _check_n(n_instances)
    ctx = _Context(learner, X, kw)
    u = ctx.uncertainty(measure)
    if u is None:
        if ctx.is_cold:
            return _cold_start(ctx, n, seed, return_reasons)
        raise InputError(
            f"no {measure!r} scores for these candidates (available: {ctx.available_measures() or 'none'}); "
            + ("run the trainer with MC dropout (mc_samples > 0) or pick another strategy" if measure == "bald" else "pick another strategy")
        )
    idx, scores = top_n(u, n, ctx.available)
    label = _LABELS[measure]
    reasons = [f"{label} {s:.3g}, rank {r} of {ctx.n_available} unannotated slices" for r, s in enumerate(scores, 1)]
    return _result(idx, scores, reasons, return_reasons)


@_supports_reasons
def least_confidence(learner: Any, X: Any, n_instances: int = 1, *, seed: Any = None, return_reasons: bool = False, **kw: Any) -> tuple:
    """Slices with the highest least-confidence score ``1 - max_c p`` (pool key ``"least_confidence"``).

    Examples
    --------
    >>> from al_annotator.acquisition import ScoredPool, least_confidence
    >>> pool = ScoredPool([("z", 0), ("z", 1), ("z", 2)], {"least_confidence": [0.1, 0.6, 0.3]})
    >>> least_confidence(None, pool, 2)
    (array([1, 2]), array([0.60000002, 0.30000001]))
    """
    return _uncertainty_strategy("least_confidence", learner, X, n_instances, seed, return_reasons, kw)


@_supports_reasons
def margin(learner: Any, X: Any, n_instances: int = 1, *, seed: Any = None, return_reasons: bool = False, **kw: Any) -> tuple:
    """Slices with the smallest top-1/top-2 margin, i.e. highest ``1 - margin`` (pool key ``"margin"``)."""
    return _uncertainty_strategy("margin", learner, X, n_instances, seed, return_reasons, kw)


@_supports_reasons
def entropy(learner: Any, X: Any, n_instances: int = 1, *, seed: Any = None, return_reasons: bool = False, **kw: Any) -> tuple:
    """Slices with the highest predictive entropy (pool key ``"entropy"``).

    Examples
    --------
    >>> import numpy as np
    >>> from al_annotator.acquisition import entropy
    >>> class Learner:  # anything with predict_proba, e.g. a modAL ActiveLearner
    ...     def predict_proba(self, X):
    ...         return np.array([[0.9, 0.1], [0.5, 0.5], [0.7, 0.3]])
    >>> entropy(Learner(), np.arange(3), 2)[0]
    array([1, 2])
    """
    return _uncertainty_strategy("entropy", learner, X, n_instances, seed, return_reasons, kw)


@_supports_reasons
def bald(learner: Any, X: Any, n_instances: int = 1, *, seed: Any = None, return_reasons: bool = False, **kw: Any) -> tuple:
    """Slices with the highest MC-dropout mutual information (pool key ``"bald"``).

    With a learner and no pool scores, ``learner.mc_predict_proba(X, T)`` (``T = mc_samples``,
    default 10) must return ``(T, N, C)``.
    """
    return _uncertainty_strategy("bald", learner, X, n_instances, seed, return_reasons, kw)


@_supports_reasons
def coreset(learner: Any, X: Any, n_instances: int = 1, *, seed: Any = None, return_reasons: bool = False, **kw: Any) -> tuple:
    """Diversity: k-center greedy on embeddings, seeded with the labelled slices' embeddings.

    Scores are the distance of each pick to its nearest labelled or earlier-picked slice
    (non-increasing). For arrays, pass ``labelled_embeddings=`` or a learner with ``embed``.

    Examples
    --------
    >>> import numpy as np
    >>> from al_annotator.acquisition import ScoredPool, coreset
    >>> emb = np.array([[0.0, 0], [1.0, 0], [5, 0], [5, 0.1]])
    >>> pool = ScoredPool([("z", i) for i in range(4)], embeddings=emb, annotated_mask=[True, False, False, False])
    >>> coreset(None, pool, 2)[0]
    array([3, 1])
    """
    n = _check_n(n_instances)
    ctx = _Context(learner, X, kw)
    emb = ctx.embeddings()
    if emb is None:
        if ctx.is_cold:
            return _cold_start(ctx, n, seed, return_reasons)
        raise InputError("coreset needs slice embeddings, and these candidates have none; store embeddings or pick an uncertainty strategy")
    idx, dist = k_center_greedy(emb, n, seeds=ctx.seeds(emb), available=ctx.available, rng=_rng(seed))
    reasons = [f"diversity: distance {d:.3g} to the nearest labelled or already picked slice (k-center greedy)" for d in dist]
    return _result(idx, dist, reasons, return_reasons)


@_supports_reasons
def hybrid(
    learner: Any,
    X: Any,
    n_instances: int = 1,
    *,
    seed: Any = None,
    return_reasons: bool = False,
    measure: str | None = None,
    pool_factor: int = 4,
    **kw: Any,
) -> tuple:
    """Uncertain *and* diverse: the ``pool_factor * n`` most uncertain slices, then coreset among them.

    Parameters
    ----------
    measure
        Uncertainty measure; default the first available of ``entropy``, ``bald``, ``margin``,
        ``least_confidence``. A measure named explicitly must be available (else InputError).
    pool_factor
        Size of the uncertain short list relative to ``n_instances`` (>= 1; 1 = pure uncertainty).

    Scores are coreset distances within the short list (non-increasing). Degrades gracefully:
    without embeddings it is pure uncertainty ranking; without uncertainty, pure coreset;
    with neither, the cold-start pick.

    Examples
    --------
    >>> import numpy as np
    >>> from al_annotator.acquisition import ScoredPool, hybrid
    >>> rng = np.random.default_rng(0)
    >>> pool = ScoredPool([("z", i) for i in range(50)], {"entropy": rng.random(50)}, embeddings=rng.normal(size=(50, 8)))
    >>> idx, scores = hybrid(None, pool, 4, pool_factor=3)
    >>> set(idx) <= set(np.argsort(-pool.uncertainty["entropy"])[:12])
    True
    """
    n = _check_n(n_instances)
    if isinstance(pool_factor, bool) or not isinstance(pool_factor, (int, np.integer)) or pool_factor < 1:
        raise InputError(f"pool_factor must be an integer >= 1, got {pool_factor!r}")
    ctx = _Context(learner, X, kw)
    if measure is not None and measure not in _LABELS and (ctx.pool is None or measure not in ctx.pool.uncertainty):
        raise InputError(f"unknown uncertainty measure {measure!r}; choose one of {list(MEASURES)}")
    explicit = measure is not None
    if measure is None:
        avail = ctx.available_measures()
        measure = next((m for m in ("entropy", "bald", "margin", "least_confidence") if m in avail), avail[0] if avail else None)
    u = None if measure is None else ctx.uncertainty(measure)
    if explicit and u is None and not ctx.is_cold:
        raise InputError(f"no {measure!r} scores for these candidates (available: {ctx.available_measures() or 'none'})")
    emb = ctx.embeddings()
    if u is None and emb is None:
        if ctx.is_cold:
            return _cold_start(ctx, n, seed, return_reasons)
        raise InputError(f"hybrid needs uncertainty scores or embeddings; measure {measure!r} is not available ({ctx.available_measures()})")
    label = _LABELS.get(measure or "", measure or "")
    if emb is None:
        idx, scores = top_n(u, n, ctx.available)
        reasons = [f"{label} {s:.3g}, rank {r} of {ctx.n_available} unannotated slices (no embeddings: uncertainty only)" for r, s in enumerate(scores, 1)]
        return _result(idx, scores, reasons, return_reasons)
    if u is None:
        idx, dist = k_center_greedy(emb, n, seeds=ctx.seeds(emb), available=ctx.available, rng=_rng(seed))
        reasons = [f"diversity: distance {d:.3g} to the nearest labelled or already picked slice (no uncertainty scores)" for d in dist]
        return _result(idx, dist, reasons, return_reasons)
    short, _ = top_n(u, pool_factor * n, ctx.available)
    rank = {int(i): r for r, i in enumerate(short, 1)}
    # the greedy only ever looks at the short list, so run it on those rows alone (same picks)
    members = np.sort(short)
    local, dist = k_center_greedy(emb[members], n, seeds=ctx.seeds(emb), rng=_rng(seed))
    idx = members[local]
    reasons = [
        f"{label} {u[i]:.3g} (rank {rank[int(i)]} of {ctx.n_available} unannotated slices), most diverse of the "
        f"{short.size} most uncertain: distance {d:.3g} to the nearest labelled or already picked slice"
        for i, d in zip(idx, dist)
    ]
    return _result(idx, dist, reasons, return_reasons)


# ----------------------------------------------------------------------------------------------
# registry and suggest()
# ----------------------------------------------------------------------------------------------
#: Name -> strategy function (modAL signature). Extend with :func:`register_strategy`.
STRATEGIES: dict[str, QueryStrategy] = {
    "random": random_sampling,
    "foreground_random": foreground_random_sampling,
    "least_confidence": least_confidence,
    "margin": margin,
    "entropy": entropy,
    "bald": bald,
    "coreset": coreset,
    "hybrid": hybrid,
}


def register_strategy(name: str, func: QueryStrategy, *, overwrite: bool = False) -> None:
    """Add a strategy ``func(learner, X, n_instances=1, **kw) -> (indices, scores)``.

    If ``func.supports_reasons`` is true it must also accept ``return_reasons=True`` and then
    return ``(indices, scores, reasons)``; otherwise :func:`suggest` writes a generic reason.

    Examples
    --------
    >>> import numpy as np
    >>> from al_annotator.acquisition import register_strategy, suggest, ScoredPool
    >>> def lowest_index(learner, X, n_instances=1, **kw):
    ...     idx = X.available_indices()[:n_instances]
    ...     return idx, np.ones(idx.size)
    >>> register_strategy("lowest_index", lowest_index, overwrite=True)
    >>> [s.index for s in suggest(ScoredPool([("z", i) for i in range(5)]), "lowest_index", n=2)]
    [0, 1]
    """
    if not isinstance(name, str) or not name:
        raise InputError(f"strategy name must be a non-empty string, got {name!r}")
    if not callable(func):
        raise InputError(f"strategy {name!r} must be callable, got {func!r}")
    if name in STRATEGIES and not overwrite:
        raise InputError(f"a strategy named {name!r} is already registered; pass overwrite=True to replace it")
    STRATEGIES[name] = func


def get_strategy(name: str) -> QueryStrategy:
    """The registered strategy called ``name``."""
    try:
        return STRATEGIES[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown acquisition strategy {name!r}; choose one of {', '.join(sorted(STRATEGIES))}") from None


def list_strategies() -> list[str]:
    """Registered strategy names, sorted."""
    return sorted(STRATEGIES)


def suggest(
    pool: ScoredPool,
    strategy: str | QueryStrategy = "hybrid",
    n: int = 8,
    seed: Any = 0,
    *,
    learner: Any = None,
    **kw: Any,
) -> list[Suggestion]:
    """The ``n`` slices to annotate next, best first, each with a reason.

    Parameters
    ----------
    pool
        Candidates and annotation state.
    strategy
        A name from :data:`STRATEGIES` (default ``"hybrid"``) or a strategy function.
    n
        Number of suggestions (fewer if fewer slices are unannotated).
    seed
        Seed for random parts (cold start, random strategies, seedless coreset start).
    learner
        Optional learner object (see the module docs).
    **kw
        Passed to the strategy (e.g. ``pool_factor=``, ``measure=`` for hybrid).

    Examples
    --------
    >>> import numpy as np
    >>> from al_annotator.acquisition import ScoredPool, suggest
    >>> cold = ScoredPool([("z", i) for i in range(20)], foreground_fraction=np.linspace(0, 1, 20))
    >>> s = suggest(cold, "hybrid", n=2, seed=1)
    >>> len(s), s[0].reason.startswith("cold start")
    (2, True)
    >>> warm = ScoredPool([("y", i) for i in range(5)], {"entropy": [0.1, 0.7, 0.2, 0.9, 0.3]}, model_version=4)
    >>> [(x.axis, x.index, x.model_version) for x in suggest(warm, "entropy", n=2)]
    [('y', 3, 4), ('y', 1, 4)]
    """
    if not isinstance(pool, ScoredPool):
        raise InputError(f"suggest needs a ScoredPool, got {type(pool).__name__}")
    if isinstance(strategy, str):
        name, func = strategy, get_strategy(strategy)
    elif callable(strategy):
        name, func = getattr(strategy, "__name__", "custom"), strategy
    else:
        raise InputError(f"strategy must be a name or a function, got {strategy!r}")
    n = _check_n(n)
    if getattr(func, "supports_reasons", False):
        idx, scores, reasons = func(learner, pool, n, seed=seed, return_reasons=True, **kw)
    else:
        idx, scores = func(learner, pool, n, seed=seed, **kw)[:2]
        reasons = [f"ranked by {name}" for _ in range(len(idx))]
    out = []
    for rank, (i, s, why) in enumerate(zip(np.asarray(idx), np.asarray(scores, dtype=np.float64), reasons), 1):
        ref = pool.refs[int(i)]
        out.append(Suggestion(ref.axis, ref.index, float(s), str(why), pool.model_version, name, rank))
    return out



def _class_presence(ctx: _Context, n_classes: int | None, class_fraction: Any) -> np.ndarray | None:
    """``(N, C)`` predicted presence of each class per slice (mean class probability), or None.

    Given explicitly (``class_fraction=``), else the first ``C`` entries of the embeddings when they are
    the class make-up the live tier and the simulator's tier-1 pool store (``[mean probs, std probs]``,
    ``D = 2C``, the means summing to 1); ``n_classes=`` names ``C`` for other embeddings whose first ``C``
    entries are mean probabilities."""
    if class_fraction is not None:
        cf = np.asarray(class_fraction, np.float64)
        if cf.ndim != 2 or cf.shape[0] != ctx.n:
            raise InputError(f"class_fraction must have shape ({ctx.n}, C), got {cf.shape}")
        return cf
    emb = ctx.embeddings()
    if emb is None:
        return None
    c = int(n_classes) if n_classes is not None else (emb.shape[1] // 2 if emb.shape[1] % 2 == 0 else 0)
    if c < 2 or c > emb.shape[1]:
        return None
    cf = emb[:, :c].astype(np.float64)
    if (cf < -1e-6).any() or not np.allclose(cf.sum(1), 1.0, atol=1e-3):
        return None  # not class probabilities (e.g. a network's feature embedding)
    return cf


@_supports_reasons
def clasp_pe(
    learner: Any,
    X: Any,
    n_instances: int = 1,
    *,
    seed: Any = None,
    return_reasons: bool = False,
    measure: str = "entropy",
    beta0: float = 1.0,
    gamma: float = 1.0,
    round: int | None = None,
    background: int | None = 0,
    n_classes: int | None = None,
    class_fraction: Any = None,
    **kw: Any,
) -> tuple:
    """Class-stratified querying with a power-noise schedule ("ClaSP PE", arXiv 2601.13677).

    The paper could not be read from here; this is implemented from its one-line description
    ("class-stratified querying with a power-noise schedule") and is our reading of it, not a
    verified reproduction:

    * **class-stratified**: the batch is filled class by class in turn (round robin; the rarest
      predicted class first, the background class last); each class takes the not-yet-picked slice
      maximising ``presence[c] * uncertainty``: the slice's mean predicted probability of that class
      times its uncertainty (``measure``, default entropy), so slices of rare classes get annotated;
    * **power noise** (power acquisition, Kirsch et al. 2023, "Stochastic batch acquisition"): each
      class's scores are perturbed as ``log score + Gumbel / beta`` (sampling with probability
      proportional to ``score ** beta``), with ``beta = beta0 * (1 + round) ** gamma``: noisy early,
      nearly greedy later. ``round`` defaults to the number of annotated slices in the pool.
      Deterministic given ``seed``.

    Class presence comes from ``class_fraction=`` ``(N, C)`` or from embeddings that are the class
    make-up (the live tier's ``[mean probs, std probs]``); without it the pick is power acquisition on
    the uncertainty alone. Without model information: the cold start. Scores are the perturbed
    per-class keys of the picks (in pick order, made non-increasing by rank).
    """
    n = _check_n(n_instances)
    ctx = _Context(learner, X, kw)
    u = ctx.uncertainty(measure)
    if u is None:
        if ctx.is_cold:
            return _cold_start(ctx, n, seed, return_reasons)
        raise InputError(f"no {measure!r} scores for these candidates (available: {ctx.available_measures() or 'none'})")
    if round is None:
        round = int((~ctx.available).sum())
    beta = float(beta0) * (1.0 + max(int(round), 0)) ** float(gamma)
    if not beta > 0:
        raise InputError(f"beta0 must be > 0, got {beta0!r}")
    rng = _rng(seed)
    unc = np.nan_to_num(np.asarray(u, np.float64), nan=0.0).clip(min=0.0)
    cf = _class_presence(ctx, n_classes, class_fraction)
    avail = ctx.available.copy()
    k = min(n, int(avail.sum()))
    picks: list[int] = []
    keys_out: list[float] = []
    reasons: list[str] = []
    tiny = 1e-12
    if cf is None:
        key = np.log(unc + tiny) + rng.gumbel(size=ctx.n) / beta
        idx, keys = top_n(key, k, avail)
        reasons = [f"power acquisition on {_LABELS.get(measure, measure)} {unc[i]:.3g} (beta {beta:.3g}; no class make-up)" for i in idx]
        return _result(idx, -np.sort(-keys), reasons, return_reasons)
    c = cf.shape[1]
    avail_rows = cf[ctx.available] if ctx.available.any() else cf
    order = [int(j) for j in np.argsort(avail_rows.mean(0), kind="stable") if background is None or j != background]
    if background is not None and 0 <= background < c:
        order.append(int(background))
    noise = rng.gumbel(size=(c, ctx.n)) / beta
    score = cf.T.clip(min=0.0) * unc[None, :]  # (C, N)
    keys_all = np.log(score + tiny) + noise
    j = 0
    while len(picks) < k:
        cls = order[j % len(order)]
        j += 1
        kk = np.where(avail, keys_all[cls], -np.inf)
        i = int(np.argmax(kk))
        picks.append(i)
        keys_out.append(float(kk[i]))
        avail[i] = False
        reasons.append(f"class-stratified (class {cls + 1}'s turn, rarest first): presence {cf[i, cls]:.0%} x "
                       f"{_LABELS.get(measure, measure)} {unc[i]:.3g}, power noise beta {beta:.3g}")
    scores = np.minimum.accumulate(np.asarray(keys_out)) if keys_out else np.zeros(0)
    return _result(np.asarray(picks, np.int64), scores, reasons, return_reasons)


STRATEGIES["clasp_pe"] = clasp_pe
__all__.append("clasp_pe")
