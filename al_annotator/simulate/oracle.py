"""Simulated experts: what an annotator reveals of the ground truth on a picked slice.

* :class:`SliceOracle` paints the complete ground truth of the slice (every voxel that is not
  held out for testing).
* :class:`ScribbleOracle` paints sparse strokes inside each class region, as an expert's
  scribbles would: random-walk brush strokes (radius 1 or 2 voxels) that stay inside the class
  mask eroded by the brush radius, so no stroke crosses a boundary. The stroke budget is
  ``fraction`` of the slice's revealable voxels (default 3 %), shared among the classes present in
  proportion to the square root of their area (a rare class still gets strokes), and each class
  gets at least a small stroke when it has room for one.

Both paint through :meth:`ProjectStore.paint` (one edit per class) and mark the slice
``"annotated"``; voxels held out for testing (``allowed`` false) are never revealed.

Annotation cost: :meth:`ScribbleOracle.scribble` also returns the number of strokes it drew (each
random walk that painted at least one new voxel), so a simulation can report the expert's cost in
strokes and seconds (:func:`reveal_counted`); the slice oracle counts no strokes (one complete slice:
its cost is a time per slice). The random
generator of a scribble is seeded by ``(seed, axis, index)``, so the same pick gives the same
strokes in every run (this is what lets the random-forest peer see exactly the same voxels).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..types import SliceRef

__all__ = ["SliceOracle", "ScribbleOracle", "make_oracle", "reveal", "reveal_counted"]


def _disk(r: int) -> np.ndarray:
    if r <= 0:
        return np.ones((1, 1), bool)
    y, x = np.ogrid[-r : r + 1, -r : r + 1]
    return (y * y + x * x) <= r * r + r  # r=1: 3x3 cross+corners-ish; r=2: 21-voxel disk


class SliceOracle:
    """Reveals every revealable voxel of the slice."""

    name = "slice"

    def mask(self, labels2d: np.ndarray, allowed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return allowed.copy()

    def scribble(self, labels2d: np.ndarray, allowed: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """``(mask, strokes)``: the whole slice, no strokes counted."""
        return self.mask(labels2d, allowed, rng), 0

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.name}


class ScribbleOracle:
    """Sparse random-walk strokes inside each (eroded) class region; see the module docs."""

    name = "scribble"

    def __init__(self, fraction: float = 0.03, radii: tuple[int, ...] = (1, 2), min_len: int = 15, max_len: int = 120) -> None:
        if not 0 < fraction < 1:
            raise InputError(f"--scribble-fraction must be in (0, 1), got {fraction}")
        self.fraction = float(fraction)
        self.radii = tuple(int(r) for r in radii)
        self.min_len, self.max_len = int(min_len), int(max_len)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.name, "fraction": self.fraction, "brush_radii": list(self.radii), "stroke_length": [self.min_len, self.max_len]}

    def mask(self, labels2d: np.ndarray, allowed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.scribble(labels2d, allowed, rng)[0]

    def scribble(self, labels2d: np.ndarray, allowed: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """``(mask, strokes)``: the painted voxels and the number of strokes that painted them."""
        out = np.zeros(labels2d.shape, bool)
        n_allowed = int(allowed.sum())
        if n_allowed == 0:
            return out, 0
        values, areas = np.unique(labels2d[allowed], return_counts=True)
        w = np.sqrt(areas.astype(np.float64))
        total = self.fraction * n_allowed
        strokes = 0
        for v, area, share in zip(values, areas, w / w.sum()):
            region = (labels2d == v) & allowed
            budget = min(max(total * share, min(9.0, float(area))), 0.5 * area)
            strokes += self._scribble_class(region, budget, rng, out)
        return out, strokes

    def _scribble_class(self, region: np.ndarray, budget: float, rng: np.random.Generator, out: np.ndarray) -> int:
        """Paint strokes into ``out`` until ``budget`` voxels are covered; returns the strokes that painted something."""
        cores: dict[int, np.ndarray] = {}
        for r in sorted(set(self.radii) | {0}):
            core = ndimage.binary_erosion(region, structure=_disk(r)) if r else region
            if core.any():
                cores[r] = core
        if not cores:
            return 0
        strokes = 0
        usable = [r for r in self.radii if r in cores] or [max(cores)]
        covered = 0
        h, w = region.shape
        for _attempt in range(400):
            if covered >= budget:
                break
            r = int(rng.choice(usable))
            core = cores[r]
            # start on a core voxel not yet covered when there is one
            fresh = core & ~out
            pool = np.flatnonzero(fresh if fresh.any() else core)
            start = int(pool[rng.integers(pool.size)])
            path = self._walk(core, divmod(start, w), rng)
            ys, xs = path[:, 0], path[:, 1]
            y0, y1 = max(0, ys.min() - r), min(h, ys.max() + r + 1)
            x0, x1 = max(0, xs.min() - r), min(w, xs.max() + r + 1)
            centres = np.zeros((y1 - y0, x1 - x0), bool)
            centres[ys - y0, xs - x0] = True
            stamp = ndimage.binary_dilation(centres, structure=_disk(r)) if r else centres
            stamp &= region[y0:y1, x0:x1]
            before = int(out[y0:y1, x0:x1].sum())
            out[y0:y1, x0:x1] |= stamp
            gained = int(out[y0:y1, x0:x1].sum()) - before
            covered += gained
            strokes += gained > 0
        return strokes

    def _walk(self, core: np.ndarray, start: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """A smooth random walk (unit steps, slowly turning) that stays on ``core``."""
        h, w = core.shape
        length = int(rng.integers(self.min_len, self.max_len + 1))
        pos = np.array(start, np.float64)
        theta = rng.uniform(0, 2 * np.pi)
        pts = [start]
        for _ in range(length):
            theta += rng.normal(0.0, 0.3)
            moved = False
            for turn in (0.0, *rng.permutation([np.pi / 4, -np.pi / 4, np.pi / 2, -np.pi / 2, np.pi])):
                t = theta + turn
                nxt = pos + (np.sin(t), np.cos(t))
                iy, ix = int(round(nxt[0])), int(round(nxt[1]))
                if 0 <= iy < h and 0 <= ix < w and core[iy, ix]:
                    pos, theta, moved = nxt, t, True
                    if (iy, ix) != pts[-1]:
                        pts.append((iy, ix))
                    break
            if not moved:
                break
        return np.asarray(pts, np.int64)


def make_oracle(kind: str, scribble_fraction: float = 0.03) -> SliceOracle | ScribbleOracle:
    if kind == "slice":
        return SliceOracle()
    if kind == "scribble":
        return ScribbleOracle(scribble_fraction)
    raise InputError(f"--oracle must be 'slice' or 'scribble', got {kind!r}")


def slice_rng(seed: int, ref: SliceRef) -> np.random.Generator:
    """The generator of the oracle on ``ref`` in a run with ``seed`` (same pick, same strokes)."""
    return np.random.default_rng([int(seed), ref.axis_number, int(ref.index), 7919])


def reveal(store: Any, oracle: Any, ref: SliceRef, gt_labels: np.ndarray, test_mask: np.ndarray, revealed: np.ndarray, seed: int) -> np.ndarray:
    """Paint what ``oracle`` reveals of ``ref`` into ``store``, mark it annotated, update ``revealed``.

    Returns the 2D mask of the voxels revealed on this slice (test voxels are never among them).
    """
    return reveal_counted(store, oracle, ref, gt_labels, test_mask, revealed, seed)[0]


def reveal_counted(store: Any, oracle: Any, ref: SliceRef, gt_labels: np.ndarray, test_mask: np.ndarray, revealed: np.ndarray,
                   seed: int) -> tuple[np.ndarray, int]:
    """:func:`reveal`, also returning the strokes the oracle drew (0 for the slice oracle)."""
    sel = ref.selection()
    lab2d = np.asarray(gt_labels[sel])
    allowed = ~np.asarray(test_mask[sel])
    if hasattr(oracle, "scribble"):
        mask, strokes = oracle.scribble(lab2d, allowed, slice_rng(seed, ref))
    else:
        mask, strokes = oracle.mask(lab2d, allowed, slice_rng(seed, ref)), 0
    mask = mask & allowed
    flat_mask = mask.reshape(-1)
    flat_lab = lab2d.reshape(-1)
    for v in np.unique(flat_lab[flat_mask]):
        idx = np.flatnonzero(flat_mask & (flat_lab == v))
        store.paint(ref, idx, int(v), tool="oracle", author="oracle")
    store.set_slice_state(ref, "annotated", author="oracle")
    revealed[sel] |= mask
    return mask, int(strokes)
