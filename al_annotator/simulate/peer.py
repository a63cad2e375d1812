"""A classical peer: scikit-image's trainable segmentation (random forest on multiscale 2D features).

Features are :func:`skimage.feature.multiscale_basic_features` (intensity, edges and texture at
sigmas 1..16) computed **per 2D slice** along the slice's own axis (a picked y slice gets features
of the y slice; test slices get features along the test axis); the classifier is
``RandomForestClassifier(n_estimators=50, max_depth=10, n_jobs=2)`` fitted with
:func:`skimage.future.fit_segmenter` on the voxels the oracle revealed, and applied with
:func:`skimage.future.predict_segmenter` to the test slices.

The picks are those of the ``random`` strategy for the same seed (they depend on nothing but the
seed and the annotation state, so they are replayed without a network), and the oracle is the
same one with the same per-slice generator: the forest sees exactly the voxels the network runs
with ``random`` saw. When more than ``max_samples`` voxels are revealed (dense slices) the forest
is fitted on a seeded uniform subsample of them, to bound its cost; the count is recorded.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

from ..acquisition import ScoredPool, suggest
from ..training.data import normalise
from ..types import SliceRef
from .metrics import confusion, scores_from_confusion
from .oracle import slice_rng

__all__ = ["slice_features", "run_peer", "PEER_STRATEGY"]

#: The strategy whose picks the peer learns from.
PEER_STRATEGY = "random"


def slice_features(image2d: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """``(H, W, F)`` float32 multiscale features of one normalised slice."""
    from skimage.feature import multiscale_basic_features

    img = normalise(image2d, window)
    return multiscale_basic_features(img, intensity=True, edges=True, texture=True, sigma_min=1, sigma_max=16, channel_axis=None).astype(np.float32)


def run_peer(
    *,
    gt: Any,
    window: tuple[float, float],
    candidates: Sequence[SliceRef],
    test_refs: Sequence[SliceRef],
    test_mask: np.ndarray,
    oracle: Any,
    seed: int,
    budget: int,
    per_round: int,
    max_samples: int = 200_000,
    n_jobs: int = 2,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The forest's learning curve for one seed (same round structure as the network runs)."""
    from sklearn.ensemble import RandomForestClassifier
    from skimage.future import fit_segmenter, predict_segmenter

    t_start = time.perf_counter()
    n_classes = gt.n_classes
    total_voxels = int(np.prod(gt.shape))
    test_feats = {}
    t0 = time.perf_counter()
    for ref in test_refs:
        test_feats[ref] = slice_features(np.asarray(gt.image[ref.selection()]), window)
    feature_seconds = time.perf_counter() - t0
    train_X: list[np.ndarray] = []
    train_y: list[np.ndarray] = []
    revealed = np.zeros(gt.shape, bool)
    annotated = np.zeros(len(candidates), bool)
    rounds = []
    r = 0
    while annotated.sum() < budget:
        n = min(per_round, budget - int(annotated.sum()))
        pool = ScoredPool(candidates, annotated_mask=annotated)
        picks = [s.ref for s in suggest(pool, PEER_STRATEGY, n=n, seed=seed * 1000 + r)]
        if not picks:
            break
        pos = {ref: i for i, ref in enumerate(candidates)}
        t0 = time.perf_counter()
        for ref in picks:
            annotated[pos[ref]] = True
            sel = ref.selection()
            lab2d = np.asarray(gt.labels[sel])
            allowed = ~np.asarray(test_mask[sel])
            mask = oracle.mask(lab2d, allowed, slice_rng(seed, ref)) & allowed
            revealed[sel] |= mask
            feats = slice_features(np.asarray(gt.image[sel]), window)
            train_X.append(feats[mask])
            train_y.append(lab2d[mask])
        feature_seconds += time.perf_counter() - t0
        X = np.concatenate(train_X)
        y = np.concatenate(train_y)
        if X.shape[0] > max_samples:
            keep = np.random.default_rng(seed).choice(X.shape[0], max_samples, replace=False)
            X, y = X[keep], y[keep]
        t0 = time.perf_counter()
        clf = RandomForestClassifier(n_estimators=50, max_depth=10, n_jobs=n_jobs, random_state=seed)
        clf = fit_segmenter(y[:, None], X[:, None, :], clf)
        train_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        cm = np.zeros((n_classes, n_classes), np.int64)
        for ref, feats in test_feats.items():
            pred = predict_segmenter(feats, clf)
            cm += confusion(np.asarray(gt.labels[ref.selection()]), pred, n_classes)
        predict_seconds = time.perf_counter() - t0
        sc = scores_from_confusion(cm)
        nvox = int(revealed.sum())
        rounds.append({
            "round": r,
            "annotated_slices": int(annotated.sum()),
            "annotated_voxels": nvox,
            "annotated_fraction": nvox / total_voxels,
            "dice_per_class": sc["dice_per_class"],
            "iou_per_class": sc["iou_per_class"],
            "mean_dice": sc["mean_dice"],
            "miou": sc["miou"],
            "train_seconds": train_seconds,
            "predict_seconds": predict_seconds,
            "train_samples": int(X.shape[0]),
            "picked": [[p.axis, p.index] for p in picks],
        })
        log(f"  [rf peer seed {seed}] round {r}: {int(annotated.sum())} slices, {100 * nvox / total_voxels:.3f}% voxels, "
            f"mean Dice {sc['mean_dice']:.3f} (fit {train_seconds:.1f} s on {X.shape[0]} voxels, predict {predict_seconds:.1f} s)")
        r += 1
    return {
        "method": "random_forest",
        "picks_from": PEER_STRATEGY,
        "features": "skimage multiscale_basic_features per 2D slice (intensity, edges, texture; sigma 1..16)",
        "classifier": "RandomForestClassifier(n_estimators=50, max_depth=10)",
        "max_samples": int(max_samples),
        "seed": int(seed),
        "rounds": rounds,
        "feature_seconds": feature_seconds,
        "seconds": time.perf_counter() - t_start,
    }
