"""The instant tier's pixel classifier: a tree ensemble refitted on every stroke.

:class:`InstantClassifier` wraps a scikit-learn ensemble and takes class *values* ``1..C`` (as the
project's label volumes hold them; 0 = unlabelled is refused). Before fitting it keeps at most
``max_samples`` labelled voxels (a seeded subsample, stratified: each class keeps its share of the
strokes, so the forest keeps the strokes' class priors, but a class never drops below
``min(its count, max_samples // (4 C))`` voxels): the fit's cost stays bounded however long the
strokes get. Measured on the ssTEM stack: balancing the classes to equal counts cost 0.01-0.02
mean Dice against keeping the strokes' proportions. ``predict_proba`` returns one column per class ``1..C`` even for classes
with no labels yet (probability 0), so callers can rely on the shape.

Kinds (choice measured in docs/BENCHMARKS.md, "Tier 1, instant"):

* ``"rf"``: :class:`~sklearn.ensemble.RandomForestClassifier` (ilastik's classifier; 100 trees there);
* ``"et"`` (default): :class:`~sklearn.ensemble.ExtraTreesClassifier` (random thresholds: no split
  search). Measured on the ssTEM stack (3D spacing-scaled features, 4 and 8 scribbled slices,
  seeds 0-2, 2 threads on a loaded 2-core machine): 50 trees on at most 16k voxels fit in 0.3-1 s
  and score the same test Dice (within 0.003) as on 40k or on every labelled voxel; a random forest
  on 25k voxels took 3-7 s and scored 0.00-0.02 lower (one case +0.005); histogram gradient boosting
  took 8-60 s;
* ``"hgb"``: :class:`~sklearn.ensemble.HistGradientBoostingClassifier`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["InstantClassifier", "CLASSIFIER_KINDS"]

CLASSIFIER_KINDS = ("rf", "et", "hgb")


class InstantClassifier:
    """A balanced, subsampled tree ensemble over per-voxel features (see the module docs).

    Parameters
    ----------
    n_classes
        ``C``: labels are class values ``1..C``.
    kind
        ``"rf"``, ``"et"`` or ``"hgb"``.
    n_estimators
        Trees (rf/et) or boosting iterations (hgb).
    max_samples
        At most this many labelled voxels are fitted on (seeded stratified subsample).
    max_depth, min_samples_leaf
        Tree size (rf/et).
    n_jobs
        Threads for fit and predict (rf/et; hgb uses OpenMP threads, bounded with threadpoolctl).
    """

    def __init__(self, n_classes: int, *, kind: str = "et", n_estimators: int = 50, max_samples: int = 16000,
                 max_depth: int | None = None, min_samples_leaf: int = 1, max_features: Any = "sqrt",
                 n_jobs: int = 2, seed: int = 0) -> None:
        if int(n_classes) < 2:
            raise InputError(f"n_classes must be at least 2 (a segmentation needs two classes), got {n_classes}")
        if kind not in CLASSIFIER_KINDS:
            raise InputError(f"kind must be one of {', '.join(CLASSIFIER_KINDS)}, got {kind!r}")
        if int(max_samples) < 2 or int(n_estimators) < 1:
            raise InputError("max_samples must be at least 2 and n_estimators at least 1")
        self.n_classes = int(n_classes)
        self.kind = kind
        self.n_estimators = int(n_estimators)
        self.max_samples = int(max_samples)
        self.max_depth = max_depth
        self.min_samples_leaf = int(min_samples_leaf)
        self.max_features = max_features
        self.n_jobs = int(n_jobs)
        self.seed = int(seed)
        self.model: Any = None
        self.classes_: np.ndarray | None = None
        self.n_features_: int | None = None
        self.last_fit: dict[str, Any] = {}
        self._grow_data: tuple[np.ndarray, np.ndarray] | None = None  # the subsample, while trees are missing

    def _make(self) -> Any:
        from sklearn.ensemble import ExtraTreesClassifier, HistGradientBoostingClassifier, RandomForestClassifier

        if self.kind == "hgb":
            return HistGradientBoostingClassifier(max_iter=self.n_estimators, learning_rate=0.15, max_leaf_nodes=31,
                                                  early_stopping=False, random_state=self.seed)
        cls = RandomForestClassifier if self.kind == "rf" else ExtraTreesClassifier
        return cls(n_estimators=self.n_estimators, max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf,
                   max_features=self.max_features, n_jobs=self.n_jobs, random_state=self.seed)

    def _threads(self):
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=max(1, self.n_jobs), user_api="openmp")

    def fit(self, features: Any, labels: Any, *, first_trees: int | None = None) -> "InstantClassifier":
        """Fit on ``features`` ``(N, F)`` and class values ``labels`` ``(N,)`` in ``1..C``.

        ``first_trees`` (rf/et): fit only the first that many trees of the ensemble, a usable model at
        a fraction of the cost; :meth:`grow` then adds the rest (scikit-learn's ``warm_start``), which
        gives exactly the ensemble a full fit gives (same seeds, same subsample: tested)."""
        X = np.asarray(features, np.float32)
        y = np.asarray(labels)
        if X.ndim != 2:
            raise InputError(f"features must be an (N, F) array (one row per labelled voxel), got shape {X.shape}")
        if y.shape != (X.shape[0],):
            raise InputError(f"labels must be an (N,) array matching the {X.shape[0]} feature rows, got shape {y.shape}")
        if X.shape[0] == 0:
            raise InputError("no labelled voxels: paint at least one stroke of two different classes before fitting")
        if y.dtype.kind not in "biu":
            if y.dtype.kind != "f" or not np.all(np.mod(y, 1) == 0):
                raise InputError(f"labels must be integer class values 1..{self.n_classes}, got dtype {y.dtype}")
        y = y.astype(np.int64)
        if y.min() < 1 or y.max() > self.n_classes:
            bad = int(y.min()) if y.min() < 1 else int(y.max())
            raise InputError(f"label value {bad} is outside 1..{self.n_classes} (0 means unlabelled: pass only labelled voxels)")
        if not np.all(np.isfinite(X)):
            raise InputError("the features hold NaN or infinite values; check the image for NaN/inf (numpy.nan_to_num)")
        present = np.unique(y)
        if present.size < 2:
            raise InputError(f"only class {int(present[0])} is labelled; paint a stroke of at least one other class so the "
                             "classifier has something to tell apart")
        keep = self._subsample(y, present)
        keep_idx = np.concatenate(keep)
        t0 = time.perf_counter()
        model = self._make()
        partial = first_trees is not None and self.kind != "hgb" and 1 <= int(first_trees) < self.n_estimators
        if partial:
            model.set_params(warm_start=True, n_estimators=int(first_trees))
        with self._threads():
            model.fit(X[keep_idx], y[keep_idx])
        self._grow_data = (X[keep_idx], y[keep_idx]) if partial else None
        self.model = model
        self.classes_ = np.asarray(model.classes_, np.int64)
        self.n_features_ = X.shape[1]
        self.last_fit = {"seconds": time.perf_counter() - t0, "samples": int(keep_idx.size), "labelled": int(X.shape[0]),
                         "per_class": {int(c): int(k.size) for c, k in zip(present, keep)}}
        return self

    @property
    def complete(self) -> bool:
        """Whether every tree of the ensemble is fitted (see ``fit(first_trees=...)``)."""
        return self.model is not None and self._grow_data is None

    @property
    def trees(self) -> int:
        """Trees fitted so far (rf/et; ``n_estimators`` for hgb)."""
        return len(getattr(self.model, "estimators_", ())) if self.kind != "hgb" else self.n_estimators

    def grow(self, n: int | None = None) -> bool:
        """Add ``n`` more trees (default: all that are missing) to a partial fit; True once complete."""
        if self.model is None:
            raise InputError("the classifier is not fitted yet: call fit first")
        if self._grow_data is None:
            return True
        X, y = self._grow_data
        target = self.n_estimators if n is None else min(self.n_estimators, self.trees + max(1, int(n)))
        t0 = time.perf_counter()
        self.model.set_params(n_estimators=target)
        with self._threads():
            self.model.fit(X, y)
        self.last_fit["seconds"] = self.last_fit.get("seconds", 0.0) + time.perf_counter() - t0
        if target >= self.n_estimators:
            self.model.set_params(warm_start=False)
            self._grow_data = None
        return self._grow_data is None

    def _subsample(self, y: np.ndarray, present: np.ndarray) -> list[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        groups = [np.flatnonzero(y == c) for c in present]
        n = y.size
        if n <= self.max_samples:
            return groups
        floor = self.max_samples // (4 * len(present))
        quota = [max(min(g.size, floor), int(round(self.max_samples * g.size / n))) for g in groups]
        return [np.sort(rng.choice(g, q, replace=False)) if q < g.size else g for g, q in zip(groups, quota)]

    def predict_proba(self, features: Any) -> np.ndarray:
        """Probabilities ``(..., C)`` float32 of features ``(..., F)`` (columns = classes 1..C)."""
        if self.model is None:
            raise InputError("the classifier is not fitted yet: call fit (InstantSegmenter.update) with labels of two classes first")
        X = np.asarray(features, np.float32)
        if X.ndim < 1 or X.shape[-1] != self.n_features_:
            raise InputError(f"features have {X.shape[-1] if X.ndim else 0} channels but the classifier was fitted on "
                             f"{self.n_features_}; use the same FeatureBank configuration for fit and predict")
        lead = X.shape[:-1]
        flat = np.ascontiguousarray(X.reshape(-1, X.shape[-1]))
        out = np.zeros((flat.shape[0], self.n_classes), np.float32)
        if flat.shape[0]:
            with self._threads():
                p = self.model.predict_proba(flat)
            out[:, self.classes_ - 1] = p
        return out.reshape(lead + (self.n_classes,))

    def predict(self, features: Any) -> np.ndarray:
        """Class values ``1..C`` (argmax of :meth:`predict_proba`), uint8."""
        return (self.predict_proba(features).argmax(-1) + 1).astype(np.uint8)
