"""Kernel-side caches of what the widget shows: slabs of the image and the labels.

A slice of a 64^3-chunked array costs the same reads as the 64 slices of its chunk slab (zarr
reads whole chunks): a 512x512 z slice 14 ms, its whole 64-slice slab 26 ms, measured here. So the
widget reads the slab once and serves its neighbours from memory: stepping through slices, the
common motion, costs no reads. Slabs larger than ``max_slab_bytes`` (a 2048^2 z slab of uint16 is
512 MiB) fall back to caching single slices.

The label cache stays equal to the store by applying every edit atom the session reports (on
any axis) to the cached voxels; edits by other processes, whose voxels are unknown here, clear it.
Both caches are guarded by a lock: the widget's reader thread (orthogonal views, thumbnails) reads
them too, but only the kernel's event-loop thread installs labels (so an edit can never be
overwritten by a read that started before it).
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Callable

import numpy as np

from ..types import SliceRef

__all__ = ["SlabCache"]


class SlabCache:
    """Cached slices of one ``(Z, Y, X)`` array, read a chunk slab at a time.

    Parameters
    ----------
    read
        ``read(selection) -> ndarray`` for a tuple of slices/ints of the 3D array.
    shape, chunks
        Of the array.
    itemsize
        Bytes per voxel.
    max_slab_bytes
        Largest slab kept whole; beyond it single slices are cached.
    budget_bytes
        Total kept (least recently used slabs are dropped first).

    Examples
    --------
    >>> vol = np.arange(4 * 6 * 6, dtype=np.uint8).reshape(4, 6, 6)
    >>> cache = SlabCache(lambda sel: vol[sel], vol.shape, (2, 3, 3), 1)
    >>> cache.slice(SliceRef("y", 4)).tolist() == vol[:, 4].tolist(), cache.reads
    (True, 1)
    >>> _ = cache.slice(SliceRef("y", 5)); cache.reads        # same slab: no read
    1
    """

    def __init__(self, read: Callable[[tuple], np.ndarray], shape: tuple[int, int, int], chunks: tuple[int, int, int],
                 itemsize: int, *, max_slab_bytes: int = 64 << 20, budget_bytes: int = 256 << 20) -> None:
        self._read = read
        self.shape = tuple(int(s) for s in shape)
        self.chunks = tuple(int(c) for c in chunks)
        self.itemsize = int(itemsize)
        self.max_slab_bytes = max_slab_bytes
        self.budget_bytes = budget_bytes
        self._slabs: collections.OrderedDict[tuple[int, int, int], np.ndarray] = collections.OrderedDict()
        self._lock = threading.RLock()
        self.reads = 0

    # ------------------------------------------------------------------ keys
    def key(self, ref: SliceRef) -> tuple[int, int, int]:
        """``(axis number, first index, depth)`` of the cache entry that holds ``ref``."""
        a = ref.axis_number
        n, c = self.shape[a], self.chunks[a]
        plane = self.itemsize * int(np.prod(self.shape)) // n
        start = ref.index // c * c
        depth = min(c, n - start)
        if depth * plane > self.max_slab_bytes:
            return (a, ref.index, 1)
        return (a, start, depth)

    @staticmethod
    def _selection(key: tuple[int, int, int]) -> tuple:
        a, start, depth = key
        sel: list[Any] = [slice(None)] * 3
        sel[a] = slice(start, start + depth)
        return tuple(sel)

    # ------------------------------------------------------------------ reading
    def __contains__(self, ref: SliceRef) -> bool:
        with self._lock:
            return self.key(ref) in self._slabs

    def cached(self, ref: SliceRef) -> np.ndarray | None:
        """The slice if it is in memory (a copy), else ``None``; never reads."""
        key = self.key(ref)
        with self._lock:
            slab = self._slabs.get(key)
            if slab is None:
                return None
            return np.array(np.take(slab, ref.index - key[1], axis=key[0]))

    def slice(self, ref: SliceRef) -> np.ndarray:
        """The slice (a view into the cached slab; do not modify), reading its slab if needed."""
        key = self.key(ref)
        with self._lock:
            slab = self._slabs.get(key)
            if slab is not None:
                self._slabs.move_to_end(key)
                return np.take(slab, ref.index - key[1], axis=key[0]) if key[0] else slab[ref.index - key[1]]
        slab = self.read_slab(key)
        self.install(key, slab)
        return np.take(slab, ref.index - key[1], axis=key[0]) if key[0] else slab[ref.index - key[1]]

    def read_slab(self, key: tuple[int, int, int]) -> np.ndarray:
        """Read an entry from the array (no caching; safe from any thread)."""
        self.reads += 1
        return np.ascontiguousarray(self._read(self._selection(key)))

    def install(self, key: tuple[int, int, int], slab: np.ndarray) -> None:
        with self._lock:
            self._slabs[key] = slab
            self._slabs.move_to_end(key)
            total = sum(s.nbytes for s in self._slabs.values())
            while total > self.budget_bytes and len(self._slabs) > 1:
                _, old = self._slabs.popitem(last=False)
                total -= old.nbytes

    # ------------------------------------------------------------------ keeping labels coherent
    def apply(self, ref: SliceRef, indices: np.ndarray, values: np.ndarray) -> None:
        """Set voxels of slice ``ref`` (flat 2D indices) to ``values`` in every cached entry they cross."""
        if not self._slabs:
            return
        h, w = ref.shape_in(self.shape)
        rows, cols = np.divmod(np.asarray(indices, dtype=np.int64), w)
        coords: list[np.ndarray] = []
        it = iter((rows, cols))
        for axis in range(3):
            coords.append(np.full(rows.shape, ref.index, np.int64) if axis == ref.axis_number else next(it))
        values = np.asarray(values, dtype=np.uint8)
        with self._lock:
            for (a, start, depth), slab in self._slabs.items():
                inside = (coords[a] >= start) & (coords[a] < start + depth)
                if not inside.any():
                    continue
                local = [c[inside] for c in coords]
                local[a] = local[a] - start
                slab[tuple(local)] = values if values.size == 1 else values[inside]

    def clear(self) -> None:
        with self._lock:
            self._slabs.clear()
