"""Held-out labelled voxels: the evidence a served model is chosen and published by.

Scribbles rarely make whole validation slices (``split_validation`` needs five annotated ones), so
a round would have no score until late. Instead a stable fraction of the labelled voxels is held
out in square blocks of each slice (``block`` pixels, chosen by a hash of the slice and the block,
so the same voxels stay held out round after round and across processes, and a new stroke only
adds blocks). A block keeps a stroke's neighbouring voxels together, so the held-out voxels are
not the immediate neighbours of training voxels everywhere.

This is never a simulation's test set: it is part of what the expert painted, and what a tier is
scored on in the product, where there is no ground truth.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from typing import Sequence

import numpy as np

__all__ = ["holdout_mask", "split_voxels", "HOLDOUT_FRACTION", "HOLDOUT_BLOCK", "MIN_HOLDOUT_VOXELS"]

HOLDOUT_FRACTION = 0.1
HOLDOUT_BLOCK = 16
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
        mask = holdout_mask(s.ref, s.target.shape, fraction=fraction, block=block, seed=seed) & (s.target >= 0)
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
