"""Tier 1, instant: an ilastik-style pixel classifier that refits on every stroke (issue #11).

* :class:`FeatureBank`: Gaussian, LoG, gradient magnitude, DoG, structure-tensor and Hessian
  eigenvalues over ilastik's scales (0.3-10), in 3D with each axis's sigma scaled by the voxel
  spacing; computed lazily per tile with a halo, cached in an LRU bounded by bytes, float32; with
  ``section_norm="auto"`` (the ``mode="auto"`` set) every section of a serial-section stack is
  standardised on its own brightness first.
* :class:`InstantClassifier`: a stratified-subsampled ExtraTrees ensemble (or random forest /
  gradient boosting) over those features; class values ``1..C``; probabilities for every class.
* :class:`InstantSegmenter`: the two together: ``update(labels)`` refits, ``predict_plane(axis, i)``
  returns ``(C, H, W)`` probabilities computing only the tiles that plane touches,
  ``predict_volume()`` works tile by tile.

Example
-------
>>> import numpy as np
>>> from al_annotator.instant import InstantSegmenter
>>> img = np.zeros((8, 32, 32), np.float32); img[:, :, 16:] = 1
>>> lab = np.zeros(img.shape, np.uint8); lab[4, 10:20, 2:8] = 1; lab[4, 10:20, 24:30] = 2
>>> seg = InstantSegmenter(img, sigmas=(0.7, 1.6), n_jobs=1)
>>> _ = seg.update(lab)
>>> p = seg.predict_plane("z", 0)
>>> p.shape, bool(p[1, :, 28].mean() > 0.9)
((2, 32, 32), True)

Measured figures (accuracy against the scikit-image forest peer, refit and plane timings) are in
docs/BENCHMARKS.md, "Tier 1, instant".
"""

from __future__ import annotations

from .classifier import CLASSIFIER_KINDS, InstantClassifier
from .features import FAMILIES, ILASTIK_SIGMAS, FeatureBank, compute_features
from .segmenter import InstantSegmenter

__all__ = ["FeatureBank", "InstantClassifier", "InstantSegmenter", "compute_features", "ILASTIK_SIGMAS", "FAMILIES",
           "CLASSIFIER_KINDS"]
