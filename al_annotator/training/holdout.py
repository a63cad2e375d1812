"""Held-out labelled voxels: the evidence a served model is chosen and published by.

Scribbles rarely make whole validation slices (``split_validation`` needs five annotated ones), so
a round would have no score until late. Instead a stable share of the labelled voxels is held out
on each slice, chosen by a hash (so the same voxels stay held out round after round and across
processes):

* **whole strokes**: each connected piece of one class on a slice (8-connected) of at most
  ``max_stroke`` voxels is held out or kept as a whole. Holding out blocks of a scribble left the
  rest of the same stroke in training, a pixel away: the instant classifier then scored about 0.9
  held out where it scored 0.7 on the test voxels of the shared EM stack, and served when the
  network was better (measured with ``al-annotator simulate --tiers``);
* **blocks of large regions**: a labelled region larger than that (a flood fill), and every
  region of a slice labelled densely (at least half its pixels: annotated whole, where a few
  regions are all there is), is held out in ``block`` x ``block`` squares.

This is never a simulation's test set: it is part of what the expert painted, and what a tier is
scored on in the product, where there is no ground truth.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from typing import Sequence

import numpy as np

__all__ = ["holdout_mask", "heldout_voxels", "split_voxels", "HOLDOUT_FRACTION", "HOLDOUT_BLOCK", "MAX_STROKE",
           "MIN_HOLDOUT_VOXELS"]

HOLDOUT_FRACTION = 0.1
HOLDOUT_BLOCK = 16
#: A connected labelled piece of at most this many voxels counts as one stroke (held out whole).
MAX_STROKE = 4096
#: A slice with at least this share of its pixels labelled is held out in blocks only.
DENSE_FRACTION = 0.5
#: Fewer held-out voxels than this (or a single class among them) is no evidence: nothing is held out.
MIN_HOLDOUT_VOXELS = 200


def holdout_mask(ref: object, shape2d: tuple[int, int], *, fraction: float = HOLDOUT_FRACTION, block: int = HOLDOUT_BLOCK,
                 seed: int = 0) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the held-out blocks of slice ``ref`` (stable for a given ref and seed)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    h, w = shape2d
    nb_r, nb_c = -(-h // block), -(-w // block)
    key = f"{ref}|{seed}|".encode()
    base = zlib.crc32(key)
    ids = np.arange(nb_r * nb_c, dtype=np.uint64)
    # a cheap, well-mixed per-block hash (splitmix64 on the block id xor the slice's crc)
    x = (ids ^ np.uint64(base)) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    held = (x % np.uint64(1_000_000)).astype(np.float64) < fraction * 1_000_000
    grid = held.reshape(nb_r, nb_c)
    return np.repeat(np.repeat(grid, block, 0), block, 1)[:h, :w]


def _hash01(key: str) -> float:
    x = zlib.crc32(key.encode()) & 0xFFFFFFFF
    x = ((x ^ (x >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    x = ((x ^ (x >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    return ((x ^ (x >> 16)) & 0xFFFFFF) / float(1 << 24)


def heldout_voxels(ref: object, labels2d: np.ndarray, *, fraction: float = HOLDOUT_FRACTION, block: int = HOLDOUT_BLOCK,
                   seed: int = 0, max_stroke: int = MAX_STROKE) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the held-out labelled voxels of one slice (``labels2d`` > 0 is
    labelled, values are classes): whole strokes, and blocks inside large regions (module docs)."""
    from scipy import ndimage

    labels2d = np.asarray(labels2d)
    out = np.zeros(labels2d.shape, bool)
    lab = labels2d > 0
    if fraction <= 0 or not lab.any():
        return out
    if lab.mean() >= DENSE_FRACTION:  # annotated whole: blocks everywhere
        return holdout_mask(ref, labels2d.shape, fraction=fraction, block=block, seed=seed) & lab
    # Only the bounding box of the labelled voxels is searched (scribbles on a 2048^2 plane: the
    # full-plane passes took 1-3 s per stroke); raster order inside the box is the plane's, so each
    # piece's first voxel, and with it its id, is the same as found on the whole plane.
    rows, cols = np.flatnonzero(lab.any(axis=1)), np.flatnonzero(lab.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    box = labels2d[r0:r1, c0:c1]
    width = labels2d.shape[1]
    sub = out[r0:r1, c0:c1]
    blocks = None
    eight = np.ones((3, 3), bool)
    for c in np.unique(box[box > 0]):
        comp, n = ndimage.label(box == c, structure=eight)
        if not n:
            continue
        flat = np.flatnonzero(comp)  # ascending: the first occurrence of a piece is its first voxel
        ids = comp.ravel()[flat]
        sizes = np.bincount(ids, minlength=n + 1)
        _, first_at = np.unique(ids, return_index=True)  # pieces 1..n in order
        first = (flat[first_at] // box.shape[1] + r0) * width + flat[first_at] % box.shape[1] + c0
        held = np.zeros(n + 1, bool)
        large = np.zeros(n + 1, bool)
        for k in range(1, n + 1):
            if sizes[k] > max_stroke:
                large[k] = True
            else:
                held[k] = _hash01(f"{ref}|{seed}|{int(c)}|{int(first[k - 1])}") < fraction
        sub |= held[comp]
        if large.any():
            if blocks is None:
                blocks = holdout_mask(ref, labels2d.shape, fraction=fraction, block=block, seed=seed)[r0:r1, c0:c1]
            sub |= large[comp] & blocks
    return out


def split_voxels(samples: Sequence, *, fraction: float = HOLDOUT_FRACTION, block: int = HOLDOUT_BLOCK, seed: int = 0,
                 min_voxels: int = MIN_HOLDOUT_VOXELS) -> tuple[list, list]:
    """``(train, held_out)`` copies of labelled slices (``LabelledSlice``: ``target`` -1 = unlabelled).

    ``train`` has the held-out voxels unlabelled; ``held_out`` has only them labelled (slices with
    none are left out). When the held-out voxels are fewer than ``min_voxels`` or of one class, nothing
    is held out: ``(list(samples), [])``.
    """
    if fraction <= 0 or not samples:
        return list(samples), []
    train, held = [], []
    n_held, classes = 0, set()
    for s in samples:
        mask = heldout_voxels(s.ref, s.target + 1, fraction=fraction, block=block, seed=seed)  # target -1 = unlabelled
        k = int(mask.sum())
        if not k:
            train.append(s)
            continue
        t_train = s.target.copy()
        t_train[mask] = -1
        t_held = np.full_like(s.target, -1)
        t_held[mask] = s.target[mask]
        train.append(replace(s, target=t_train))
        held.append(replace(s, target=t_held))
        n_held += k
        classes.update(np.unique(s.target[mask]).tolist())
    if n_held < min_voxels or len(classes) < 2 or not any((t.target >= 0).any() for t in train):
        return list(samples), []
    return train, held
