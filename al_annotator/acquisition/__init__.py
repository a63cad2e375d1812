"""Acquisition: which slices should the expert annotate next?

Pipeline
--------
1. The trainer predicts every candidate slice (``models.iter_predict_proba``) and reduces the
   per-pixel probabilities to per-slice scores with :func:`pixel_entropy`, :func:`pixel_margin`,
   :func:`pixel_least_confidence`, :func:`bald` and :func:`slice_score`, collected in a
   :class:`SliceCandidates` (``SliceCandidates.from_predictions``) that it stores.
2. A front end turns the candidates plus the annotation state into a :class:`ScoredPool`
   (``candidates.to_pool(annotated=..., labelled_embeddings=...)``).
3. :func:`suggest` ranks the pool with a strategy from :data:`STRATEGIES` and returns
   :class:`Suggestion` objects (axis, index, score, reason, model version).

Strategies have modAL's signature ``strategy(learner, X, n_instances=1, **kw) -> (indices, scores)``
(see :mod:`.strategies`). This package imports only numpy (modAL is imported lazily when a
learner object is used).

Examples
--------
>>> import numpy as np
>>> from al_annotator.acquisition import SliceCandidates, suggest
>>> rng = np.random.default_rng(0)
>>> probs = rng.dirichlet([1, 1, 1], size=(6, 8, 8)).transpose(0, 3, 1, 2).astype(np.float32)
>>> cand = SliceCandidates.from_predictions([("z", i) for i in range(6)], probs,
...                                         embeddings=rng.normal(size=(6, 4)), model_version=1)
>>> picks = suggest(cand.to_pool(annotated=[("z", 0)]), "hybrid", n=2)
>>> len(picks), all(p.index != 0 for p in picks)
(2, True)
"""

from __future__ import annotations

from .coreset import covering_radius, k_center_greedy
from .measures import (
    bald as bald_map,
    foreground_fraction,
    intensity_foreground_fraction,
    otsu_threshold,
    pixel_entropy,
    pixel_least_confidence,
    pixel_margin,
    slice_score,
)
from . import strategies as _strategies
from .pool import MEASURES, ScoredPool, SliceCandidates, Suggestion, as_refs
from .strategies import (
    STRATEGIES,
    QueryStrategy,
    bald as bald_sampling,
    coreset,
    entropy,
    foreground_random_sampling,
    get_strategy,
    hybrid,
    least_confidence,
    list_strategies,
    margin,
    random_sampling,
    register_strategy,
    suggest,
    top_n,
)

#: ``bald`` is the per-pixel measure (``bald(mc) -> (H, W)``); the BALD query strategy is
#: ``bald_sampling`` (also ``STRATEGIES["bald"]``).
bald = bald_map

__all__ = [
    "pixel_entropy",
    "pixel_margin",
    "pixel_least_confidence",
    "bald",
    "bald_map",
    "slice_score",
    "foreground_fraction",
    "intensity_foreground_fraction",
    "otsu_threshold",
    "MEASURES",
    "SliceCandidates",
    "ScoredPool",
    "Suggestion",
    "as_refs",
    "k_center_greedy",
    "covering_radius",
    # the strategies' public names, with the BALD strategy under its alias
    *("bald_sampling" if name == "bald" else name for name in _strategies.__all__),
]
