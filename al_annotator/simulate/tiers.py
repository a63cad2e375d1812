"""The two tiers in the simulator, and the served choice between them (issue #11).

Tier 1 is the instant pixel classifier (:mod:`al_annotator.instant`: the ilastik-style filter bank,
sigmas scaled by the voxel spacing, and the ExtraTrees ensemble), refitted every round on the
voxels the oracle revealed. Tier 2 is the network the simulation trains. Both are scored on the
same held-out labelled voxels: ~10 % of the revealed voxels, whole strokes (blocks of large regions), from
:func:`al_annotator.training.holdout.split_voxels` (holdout seed 0, what the trainer worker and the
live preview use by default), which neither tier is fitted on. The *served* system is, per round,
the tier with the higher held-out Dice (:func:`choose_served`, the rule of
``Session.served_tier``): never the test set, which only scores what was served.

:class:`InstantTier` keeps one :class:`~al_annotator.instant.FeatureBank` for the whole simulation
(the features depend only on the image, so every strategy and seed shares the tile cache) and
predicts the test slices slice by slice (blockwise, through ``FeatureBank.features``).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from ..core.values import choose_served
from ..types import SliceRef
from ..instant.deep import deep_at
from .metrics import confusion, scores_from_confusion

__all__ = ["InstantTier", "choose_served", "labelled_voxels", "deep_at", "blend_probabilities", "heldout_dice", "HOLDOUT_SEED"]

#: The holdout blocks' seed: 0, the default of the trainer (``TrainConfig.seed``) and of the live preview.
HOLDOUT_SEED = 0


def labelled_voxels(train: Sequence[Any], held: Sequence[Any], shape: tuple[int, int, int],
                    with_axes: bool = False) -> tuple[np.ndarray, ...]:
    """Coordinates ``(N, 3)``, class values ``(N,)`` (``1..C``) and held-out flags of the labelled voxels
    of ``LabelledSlice`` lists (``target`` -1 = unlabelled); with ``with_axes`` also the axis number of
    the slice each was labelled on. A voxel on two crossing slices counts once (the first slice's
    flag, as the live preview does)."""
    held_targets: dict[SliceRef, np.ndarray] = {h.ref: h.target for h in held}
    coords, values, hflag, axes = [], [], [], []
    for s in train:
        ht = held_targets.get(s.ref)
        held_mask = None if ht is None else ht >= 0
        lab = s.target >= 0 if held_mask is None else (s.target >= 0) | held_mask
        rows, cols = np.nonzero(lab)
        if not rows.size:
            continue
        c = np.empty((rows.size, 3), np.int64)
        a = s.ref.axis_number
        others = [k for k in range(3) if k != a]
        c[:, a] = s.ref.index
        c[:, others[0]], c[:, others[1]] = rows, cols
        full = s.target.copy()
        if held_mask is not None:
            full[held_mask] = ht[held_mask]
        coords.append(c)
        values.append(full[rows, cols] + 1)
        hflag.append(np.zeros(rows.size, bool) if held_mask is None else held_mask[rows, cols])
        axes.append(np.full(rows.size, a, np.int8))
    if not coords:
        empty = (np.zeros((0, 3), np.int64), np.zeros(0, np.int64), np.zeros(0, bool))
        return empty + ((np.zeros(0, np.int8),) if with_axes else ())
    c, v, h, ax = np.concatenate(coords), np.concatenate(values), np.concatenate(hflag), np.concatenate(axes)
    _, first = np.unique(np.ravel_multi_index(c.T, shape), return_index=True)
    first.sort()
    out = (c[first], v[first].astype(np.int64), h[first])
    return out + ((ax[first],) if with_axes else ())


class InstantTier:
    """Tier 1 for one simulation: a shared feature bank, a fresh classifier fitted each round.

    ``classifier`` options go to :class:`~al_annotator.instant.InstantClassifier` (default: the
    product's live preview, ExtraTrees with 1 thread); ``features`` to
    :class:`~al_annotator.instant.FeatureBank`.
    """

    def __init__(self, image: np.ndarray, spacing: Sequence[float] | None, n_classes: int, test_refs: Sequence[SliceRef],
                 *, classifier: dict[str, Any] | None = None, features: dict[str, Any] | None = None) -> None:
        from ..instant import FeatureBank

        self.shape = tuple(int(n) for n in image.shape)
        self.n_classes = int(n_classes)
        from ..instant.segmenter import auto_features

        # the feature set the product's live tier uses (core/live.py): 3D at the octaves, edges repeated
        live_set = dict(auto_features(spacing), mode="3d")
        self.bank = FeatureBank(image, spacing, **({"cache_bytes": 1 << 30} | live_set | dict(features or {})))
        self.classifier_kw = {"n_jobs": 1} | dict(classifier or {})
        self.test_refs = list(test_refs)
        self._test_feats: dict[SliceRef, np.ndarray] | None = None
        self.feature_seconds = 0.0

    def describe(self) -> dict[str, Any]:
        return {"features": self.bank.describe(), "classifier": {"kind": "et", **self.classifier_kw},
                "holdout": {"fraction": 0.1, "block": 16, "seed": HOLDOUT_SEED}}

    def test_features(self) -> dict[SliceRef, np.ndarray]:
        """``(H, W, F)`` features of every test slice (computed once, blockwise, then kept)."""
        if self._test_feats is None:
            t0 = time.perf_counter()
            out = {}
            for ref in self.test_refs:
                block: list[Any] = [slice(None)] * 3
                block[ref.axis_number] = ref.index
                out[ref] = np.squeeze(self.bank.features(tuple(block)), axis=ref.axis_number)
            self._test_feats = out
            self.feature_seconds += time.perf_counter() - t0
        return self._test_feats

    def run_round(self, train: Sequence[Any], held: Sequence[Any], gt_labels: np.ndarray, seed: int,
                  deep: Any = None) -> dict[str, Any]:
        """Fit on the revealed voxels not held out and score on the held-out ones; then, as the product
        serves it, refit on every revealed voxel and score on the test slices.

        Returns ``{"heldout_dice", "heldout_per_class", "heldout_voxels", "train_voxels", "test": scores,
        "fit_seconds", "features_seconds", "predict_seconds", "held_coords", "held_values", "held_probs",
        "test_probs"}`` (``test`` as :func:`scores_from_confusion`; ``held_probs`` ``(N, C)`` from the
        held-out fit, ``test_probs`` ``{ref: (C, H, W)}`` from the served fit, for blends); ``test`` is
        ``None`` when fewer than two classes are revealed (nothing to fit). The served fit stays as
        :attr:`classifier` (it scores the candidate slices: :meth:`candidate_pool`).

        ``deep``: ``ref -> (k, H, W)``, the deep tier's features of a slice (``instant.deep``): appended
        to the filter bank's, each labelled voxel's from the slice it was labelled on (a self-trained
        convpaint); that fit does not replace :attr:`classifier` (the filter-only fit ranks the candidate slices, as the
        product's live tier scores every slice from the filter bank alone).
        """
        from ..instant import InstantClassifier

        if deep is None:
            self.classifier = None
        t0 = time.perf_counter()
        coords, values, is_held, axes = labelled_voxels(train, held, self.shape, with_axes=True)
        feats = self.bank.features_at(coords) if len(coords) else np.zeros((0, self.bank.n_features), np.float32)
        if deep is not None and len(coords):
            feats = np.concatenate([feats, deep_at(deep, coords, axes)], axis=1)
        t1 = time.perf_counter()
        self.feature_seconds += t1 - t0
        fit_on = ~is_held
        out: dict[str, Any] = {"heldout_dice": None, "heldout_per_class": [], "heldout_voxels": int(is_held.sum()),
                               "train_voxels": int(fit_on.sum()), "test": None, "features_seconds": t1 - t0,
                               "fit_seconds": 0.0, "predict_seconds": 0.0, "held_coords": coords[is_held],
                               "held_values": values[is_held], "held_probs": None, "test_probs": None}
        if np.unique(values[fit_on]).size < 2:
            return out
        clf = InstantClassifier(self.n_classes, seed=seed, **self.classifier_kw)
        clf.fit(feats[fit_on], values[fit_on])
        t2 = time.perf_counter()
        out["fit_seconds"] = t2 - t1
        if is_held.any():
            held_probs = clf.predict_proba(feats[is_held])
            hs = scores_from_confusion(confusion(values[is_held], held_probs.argmax(-1) + 1, self.n_classes))
            out["heldout_dice"], out["heldout_per_class"] = hs["mean_dice"], hs["dice_per_class"]
            out["held_probs"] = held_probs
            # what the product serves: tier 1 refitted on every revealed voxel (core/live.py; the held-out
            # fit above only scores it), so it sees the voxels the RF peer sees
            clf = InstantClassifier(self.n_classes, seed=seed, **self.classifier_kw)
            clf.fit(feats, values)
            out["fit_seconds"] = time.perf_counter() - t1
        if deep is None:
            self.classifier = clf
        test_feats = self.test_features()
        t3 = time.perf_counter()
        cm = np.zeros((self.n_classes, self.n_classes), np.int64)
        probs = {}
        for ref, f in test_feats.items():
            if deep is not None:
                f = np.concatenate([f, np.moveaxis(deep(ref), 0, -1)], axis=-1)
            p = np.moveaxis(clf.predict_proba(f), -1, 0)
            probs[ref] = p
            cm += confusion(np.asarray(gt_labels[ref.selection()]), p.argmax(0) + 1, self.n_classes)
        out["predict_seconds"] = time.perf_counter() - t3
        out["test"] = scores_from_confusion(cm)
        out["test_probs"] = probs
        return out

    def candidate_pool(self, refs: Sequence[SliceRef], annotated: Sequence[SliceRef], *, score_px: int = 64) -> Any:
        """The candidate slices scored by the served tier-1 fit, as the product's live tier scores them
        (``core/live.py``: every slice subsampled to about ``score_px`` pixels a side; per-slice
        uncertainty, the class make-up as embedding, the foreground fraction), as a ``ScoredPool``
        in the order of ``refs``; ``None`` before a fit."""
        from ..acquisition.pool import SliceCandidates

        if getattr(self, "classifier", None) is None:
            return None
        parts = []
        for ref in refs:
            block: list[Any] = [slice(None)] * 3
            block[ref.axis_number] = ref.index
            f = np.squeeze(self.bank.features(tuple(block)), axis=ref.axis_number)
            step = max(1, -(-max(f.shape[:2]) // int(score_px)))
            p = np.moveaxis(self.classifier.predict_proba(f[::step, ::step]), -1, 0)[None]
            emb = np.concatenate([p[0].mean(axis=(1, 2)), p[0].std(axis=(1, 2))]).astype(np.float32)[None]
            parts.append(SliceCandidates.from_predictions([ref], p, embeddings=emb, model_version="instant"))
        return SliceCandidates.concat(parts).to_pool(annotated=list(annotated))


def blend_probabilities(instant: np.ndarray, deep: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """The blend of the tiers: ``weight`` x tier 1's class probabilities + the rest x tier 2's (same shape)."""
    return weight * np.asarray(instant, np.float32) + (1.0 - weight) * np.asarray(deep, np.float32)


def heldout_dice(values: np.ndarray, probs: np.ndarray, n_classes: int) -> float | None:
    """Mean Dice of ``(N, C)`` probabilities against class values ``1..C`` (``None`` without voxels)."""
    if not len(values):
        return None
    return scores_from_confusion(confusion(values, np.asarray(probs).argmax(-1) + 1, n_classes))["mean_dice"]
