"""Held-out voxels of a slice: the bounding-box search gives the whole-plane search's mask exactly."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from al_annotator.training import holdout
from al_annotator.types import SliceRef


def _whole_plane(ref, labels2d, fraction=0.1, block=16, seed=0, max_stroke=holdout.MAX_STROKE):
    """The search over the whole plane (what heldout_voxels did before the bounding box)."""
    out = np.zeros(labels2d.shape, bool)
    blocks = None
    for c in np.unique(labels2d[labels2d > 0]):
        comp, n = ndimage.label(labels2d == c, structure=np.ones((3, 3), bool))
        sizes = np.bincount(comp.ravel(), minlength=n + 1)
        first = ndimage.minimum(np.arange(comp.size).reshape(comp.shape), comp, index=np.arange(1, n + 1))
        held, large = np.zeros(n + 1, bool), np.zeros(n + 1, bool)
        for k in range(1, n + 1):
            if sizes[k] > max_stroke:
                large[k] = True
            else:
                held[k] = holdout._hash01(f"{ref}|{seed}|{int(c)}|{int(first[k - 1])}") < fraction
        out |= held[comp]
        if large.any():
            blocks = holdout.holdout_mask(ref, labels2d.shape, fraction=fraction, block=block, seed=seed) if blocks is None else blocks
            out |= large[comp] & blocks
    return out


@pytest.mark.parametrize("seed", range(4))
def test_bounding_box_search_equals_the_whole_plane(seed):
    rng = np.random.default_rng(seed)
    plane = np.zeros((300, 410), np.uint8)
    r0, c0 = rng.integers(20, 120, size=2)
    for _ in range(40):  # short strokes of 3 classes in a box away from the edges, and one large region
        r, c = r0 + rng.integers(0, 150), c0 + rng.integers(0, 250)
        plane[r:r + rng.integers(1, 4), c:c + rng.integers(5, 60)] = rng.integers(1, 4)
    plane[r0 + 10:r0 + 90, c0 + 100:c0 + 190] = 2  # 7200 voxels > MAX_STROKE: blocks inside it
    ref = SliceRef("z", int(seed))
    got = holdout.heldout_voxels(ref, plane, fraction=0.3)
    np.testing.assert_array_equal(got, _whole_plane(ref, plane, fraction=0.3))
    assert got.any() and not got[plane == 0].any()
