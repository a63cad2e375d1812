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
import logging
import threading
from typing import Any, Callable, Sequence

import numpy as np

from ..types import SliceRef

__all__ = ["SlabCache", "TileCache"]

log = logging.getLogger(__name__)


def _volume_coords(ref: SliceRef, shape: tuple[int, int, int], indices: np.ndarray) -> list[np.ndarray]:
    """(z, y, x) volume coordinates of flat 2D ``indices`` into slice ``ref`` of a volume of ``shape``."""
    _, w = ref.shape_in(shape)
    rows, cols = np.divmod(np.asarray(indices, dtype=np.int64), w)
    it = iter((rows, cols))
    return [np.full(rows.shape, ref.index, np.int64) if axis == ref.axis_number else next(it) for axis in range(3)]


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

    def too_large(self, ref: SliceRef) -> bool:
        """Whether the chunk slab of ``ref`` is too large to keep (single slices are cached instead)."""
        a = ref.axis_number
        n, c = self.shape[a], self.chunks[a]
        start = ref.index // c * c
        return min(c, n - start) * (self.itemsize * int(np.prod(self.shape)) // n) > self.max_slab_bytes

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
        coords, values = _volume_coords(ref, self.shape, indices), np.asarray(values, dtype=np.uint8)
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


class TileCache:
    """The shown part of a whole chunk slab, at the shown resolution: for slices too large to cache.

    A 2048^2 z slice of a 64^3-chunked volume touches 1024 chunks, and zarr reads whole chunks,
    so reading one slice costs the same reads as its 64-slice chunk slab (512 MiB of uint16, too
    much to keep). This cache reads ``depth`` slices of that slab at once (16: the chunk reads
    are the same as for one slice, the copying and averaging stay small), band by band, and keeps
    only what the canvas shows: the requested region (widened to chunk borders) of each of those
    slices, reduced to the shown ``step`` (the image block-averaged and quantised for transfer,
    the labels sampled, as :mod:`._imaging` does per tile). At 1:4 that is 16 x 512 x 512 codes +
    labels (12 MiB), and stepping to a neighbour slice is served from memory.

    Labels stay equal to the store as in :class:`SlabCache`: :meth:`apply` sets every edited
    voxel that lies on a cached sample grid; edits by other processes drop the cached labels.

    Parameters
    ----------
    read_image, read_labels
        ``read(selection) -> ndarray`` for the image and the labels array.
    shape, chunks
        Of the arrays.
    encode
        Block means (float32, any shape) -> transfer codes (``Quantiser.encode``).
    sample_image
        Sample the image as the labels instead of averaging it (a model's prediction and
        confidence are kept in a second cache this way: confidence as the image, prediction as the labels).
    budget_bytes
        Total kept; least recently used entries are dropped first.
    levels
        The image's pyramid, item ``k`` = level ``k`` (``Session.image_levels``; item 0, the image
        itself, is not read through it). An entry whose ``step`` is at least 2 takes its image from
        level ``k = floor(log2(step))`` (at most the coarsest): the block means of ``step / 2^k``
        cells of that level when ``2^k`` divides ``step`` (exact: level ``k`` holds the means of
        ``2^k`` cubes), else its cell centres. Level ``k`` has read ``1 / 4^k`` of the chunks (a
        2048^2 z slice at 1:4 reads 64 chunks instead of 1024); the picture is the 3D mean of the
        level (it also averages ``2^k`` slices). Labels stay full resolution, sampled.

    Examples
    --------
    >>> from al_annotator.jupyter._imaging import Region
    >>> vol = np.arange(2 * 8 * 8, dtype=np.uint16).reshape(2, 8, 8)
    >>> lab = np.zeros_like(vol, dtype=np.uint8)
    >>> cache = TileCache(lambda s: vol[s], lambda s: lab[s], vol.shape, (2, 4, 4), lambda v: v.astype(np.uint16))
    >>> img, labels = cache.tile(SliceRef("z", 1), Region(0, 8, 0, 8, 2))
    >>> int(img[0, 0]) == int(vol[1, :2, :2].mean()), labels.shape, cache.reads
    (True, (4, 4), 1)
    >>> _ = cache.tile(SliceRef("z", 0), Region(0, 8, 0, 8, 2)); cache.reads   # same slab: no read
    1
    """

    def __init__(self, read_image: Callable[[tuple], np.ndarray], read_labels: Callable[[tuple], np.ndarray],
                 shape: tuple[int, int, int], chunks: tuple[int, int, int], encode: Callable[[np.ndarray], np.ndarray],
                 *, depth: int = 16, budget_bytes: int = 192 << 20, band_bytes: int = 32 << 20,
                 sample_image: bool = False, levels: Sequence[Any] = ()) -> None:
        self._read_image, self._read_labels = read_image, read_labels
        #: The image pyramid, item k = level k (item 0 unused); emptied if a level cannot be read.
        self.levels = list(levels)
        self.shape = tuple(int(s) for s in shape)
        self.chunks = tuple(int(c) for c in chunks)
        self._encode = encode
        self.depth = int(depth)
        self.sample_image = sample_image  # the "image" is sampled too (a model's confidence), not averaged
        self.budget_bytes = budget_bytes
        self.band_bytes = band_bytes
        #: key (axis, start, depth, step, p0, p1, q0, q1) -> [codes (D, h, w), labels (D, h, w) or None]
        self._entries: collections.OrderedDict[tuple, list] = collections.OrderedDict()
        self._lock = threading.RLock()
        self.reads = 0

    # ------------------------------------------------------------------ geometry
    def _dims(self, axis: int) -> tuple[int, int]:
        return tuple(a for a in range(3) if a != axis)  # type: ignore[return-value]

    def key(self, ref: SliceRef, region: Any) -> tuple:
        """The entry that would hold ``region`` of ``ref``: its chunk slab, step and (chunk-wide) bounds."""
        a = ref.axis_number
        c = self.chunks[a]
        c = self.depth if c % self.depth == 0 else c  # part of a chunk slab: the reads are the same, less to reduce
        start = ref.index // c * c
        depth = min(c, self.shape[a] - start)
        p, q = self._dims(a)
        s = int(region.step)
        lp, lq = _lcm(self.chunks[p], s), _lcm(self.chunks[q], s)  # on the chunk grid and the step grid
        p0, q0 = region.r0 // lp * lp, region.c0 // lq * lq
        p1 = min(self.shape[p], -(-region.r1 // self.chunks[p]) * self.chunks[p])
        q1 = min(self.shape[q], -(-region.c1 // self.chunks[q]) * self.chunks[q])
        return (a, start, depth, s, p0, p1, q0, q1)

    def nbytes(self, key: tuple) -> int:
        a, start, depth, s, p0, p1, q0, q1 = key
        return depth * -(-(p1 - p0) // s) * -(-(q1 - q0) // s) * 3

    def _find(self, ref: SliceRef, region: Any, need_labels: bool = True) -> tuple[tuple, list] | None:
        a, s = ref.axis_number, int(region.step)
        for key, entry in reversed(self._entries.items()):
            ka, start, depth, ks, p0, p1, q0, q1 = key
            if (ka == a and ks == s and start <= ref.index < start + depth and p0 <= region.r0 and region.r1 <= p1
                    and q0 <= region.c0 and region.c1 <= q1 and (region.r0 - p0) % s == 0 and (region.c0 - q0) % s == 0
                    and (entry[1] is not None or not need_labels)):
                return key, entry
        return None

    def level_for(self, step: int) -> int:
        """The pyramid level an entry of ``step`` reads its image from (0: the full image).

        >>> cache = TileCache(None, None, (8, 8, 8), (4, 4, 4), None, levels=["image", "level 1", "level 2"])
        >>> [cache.level_for(s) for s in (1, 2, 3, 4, 6, 16)]
        [0, 1, 1, 2, 2, 2]
        """
        if self.sample_image or len(self.levels) < 2:
            return 0
        return max(0, min(int(step).bit_length() - 1, len(self.levels) - 1))

    # ------------------------------------------------------------------ reading
    def has(self, ref: SliceRef, region: Any) -> bool:
        with self._lock:
            return self._find(ref, region) is not None

    def get(self, ref: SliceRef, region: Any) -> tuple[np.ndarray, np.ndarray] | None:
        """The tile ``(codes, labels)`` (copies) if in memory, else ``None``; never reads."""
        with self._lock:
            found = self._find(ref, region)
            if found is None:
                return None
            key, (codes, labels) = found
            self._entries.move_to_end(key)
            _, start, _, s, p0, _, q0, _ = key
            h, w = region.shape
            i0, j0 = (region.r0 - p0) // s, (region.c0 - q0) // s
            d = ref.index - start
            return (np.array(codes[d, i0:i0 + h, j0:j0 + w], order="C"), np.array(labels[d, i0:i0 + h, j0:j0 + w], order="C"))

    def image_tile(self, ref: SliceRef, region: Any) -> np.ndarray | None:
        """The image codes of the tile (a copy) if in memory, with or without labels; never reads."""
        with self._lock:
            found = self._find(ref, region, need_labels=False)
            if found is None:
                return None
            key, (codes, _) = found
            _, start, _, s, p0, _, q0, _ = key
            h, w = region.shape
            i0, j0 = (region.r0 - p0) // s, (region.c0 - q0) // s
            return np.array(codes[ref.index - start, i0:i0 + h, j0:j0 + w], order="C")

    def tile(self, ref: SliceRef, region: Any) -> tuple[np.ndarray, np.ndarray]:
        """The tile, reading (and keeping) its entry if needed (one thread only: it installs)."""
        got = self.get(ref, region)
        if got is None:
            key = self.key(ref, region)
            self.install(key, *self.read(key))
            got = self.get(ref, region)
        return got  # type: ignore[return-value]

    def get_labels(self, ref: SliceRef, region: Any) -> np.ndarray | None:
        got = self.get(ref, region)
        return None if got is None else got[1]

    def image_cached(self, key: tuple) -> bool:
        with self._lock:
            entry = self._entries.get(key)
            return entry is not None

    def read(self, key: tuple, image: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
        """Read and reduce one entry (no caching; safe from any thread): ``(codes or None, labels)``;
        the image from a pyramid level when :meth:`level_for` its step is one."""
        a, start, depth, s, p0, p1, q0, q1 = key
        p, q = self._dims(a)
        h, w = -(-(p1 - p0) // s), -(-(q1 - q0) // s)
        codes = None
        level = self.level_for(s) if image else 0
        if level:
            try:
                codes = self._read_level(key, level)
            except Exception as exc:  # noqa: BLE001 - a damaged level: the full image still answers
                log.warning("image pyramid level %d cannot be read (%s: %s); reading the full image", level,
                            type(exc).__name__, exc)
                self.levels = self.levels[:1]
            else:
                image = False
        labels = np.empty((depth, h, w), np.uint8)
        lp = _lcm(self.chunks[p], s)
        row_bytes = depth * (q1 - q0) * 4  # float32 while averaging
        band = max(lp, self.band_bytes // max(row_bytes, 1) // lp * lp)
        self.reads += 1
        for b0 in range(p0, p1, band):
            b1 = min(p1, b0 + band)
            sel: list[Any] = [slice(None)] * 3
            sel[a], sel[p], sel[q] = slice(start, start + depth), slice(b0, b1), slice(q0, q1)
            i0, i1 = (b0 - p0) // s, -(-(b1 - p0) // s)
            lab = np.transpose(np.asarray(self._read_labels(tuple(sel))), (a, p, q))  # (slab, rows, columns)
            labels[:, i0:i1] = lab[:, ::s, ::s]
            if image:
                img = np.transpose(np.asarray(self._read_image(tuple(sel))), (a, p, q))
                m = img[:, ::s, ::s] if self.sample_image else _block_mean3(img, s)
                if codes is None:
                    codes = np.empty((depth, h, w), self._encode(m[:1, :1, :1]).dtype)
                codes[:, i0:i1] = self._encode(m)
        return codes, labels

    def _read_level(self, key: tuple, k: int) -> np.ndarray:
        """The image codes ``(depth, h, w)`` of an entry from pyramid level ``k``."""
        a, start, depth, s, p0, p1, q0, q1 = key
        p, q = self._dims(a)
        f = 1 << k
        arr = self.levels[k]
        z0, z1 = start >> k, ((start + depth - 1) >> k) + 1
        rp, rq = (p0 >> k, -(-p1 // f)), (q0 >> k, -(-q1 // f))
        sel: list[Any] = [slice(None)] * 3
        sel[a], sel[p], sel[q] = slice(z0, z1), slice(*rp), slice(*rq)
        self.reads += 1
        coarse = np.transpose(np.asarray(arr[tuple(sel)]), (a, p, q))  # (level slices, rows, columns)
        if s % f == 0 and p0 % f == 0 and q0 % f == 0:
            m = _block_mean3(coarse, s // f)  # the mean of step x step full-resolution pixels
        else:  # the level's pixel under each cell's centre
            h, w = -(-(p1 - p0) // s), -(-(q1 - q0) // s)
            rows = np.minimum((p0 + np.arange(h) * s + s // 2) >> k, rp[1] - 1) - rp[0]
            cols = np.minimum((q0 + np.arange(w) * s + s // 2) >> k, rq[1] - 1) - rq[0]
            m = coarse[:, rows][:, :, cols]
        codes = self._encode(m)
        return np.ascontiguousarray(codes[(np.arange(start, start + depth) >> k) - z0])  # each level slice for its 2^k slices

    def install(self, key: tuple, codes: np.ndarray | None, labels: np.ndarray | None) -> None:
        """Keep an entry (``codes`` None: keep the cached image, replace the labels)."""
        with self._lock:
            old = self._entries.get(key)
            if codes is None:
                if old is None:
                    return
                codes = old[0]
            self._entries[key] = [codes, labels]
            self._entries.move_to_end(key)
            total = sum(c.nbytes + (lab.nbytes if lab is not None else 0) for c, lab in self._entries.values())
            while total > self.budget_bytes and len(self._entries) > 1:
                _, (c, lab) = self._entries.popitem(last=False)
                total -= c.nbytes + (lab.nbytes if lab is not None else 0)

    # ------------------------------------------------------------------ keeping labels coherent
    def apply(self, ref: SliceRef, indices: np.ndarray, values: np.ndarray) -> None:
        """Set voxels of slice ``ref`` (flat 2D indices) that lie on a cached sample grid."""
        if not self._entries:
            return
        coords, values = _volume_coords(ref, self.shape, indices), np.asarray(values, dtype=np.uint8)
        with self._lock:
            for (a, start, depth, s, p0, p1, q0, q1), (_, labels) in self._entries.items():
                if labels is None:
                    continue
                p, q = self._dims(a)
                cp, cq = coords[p] - p0, coords[q] - q0
                inside = ((coords[a] >= start) & (coords[a] < start + depth) & (cp >= 0) & (cp < p1 - p0) & (cq >= 0)
                          & (cq < q1 - q0) & (cp % s == 0) & (cq % s == 0))
                if not inside.any():
                    continue
                labels[coords[a][inside] - start, cp[inside] // s, cq[inside] // s] = values if values.size == 1 else values[inside]

    def clear_labels(self) -> None:
        """Forget every cached label (edits by another process: which voxels is unknown)."""
        with self._lock:
            for entry in self._entries.values():
                entry[1] = None

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _lcm(a: int, b: int) -> int:
    import math

    return a * b // math.gcd(a, b)


def _block_mean3(arr: np.ndarray, s: int) -> np.ndarray:
    """Mean of each ``s x s`` cell of every slice of ``(D, H, W)`` (edge cells padded by the edge, as
    :func:`._imaging.block_mean`), float32."""
    if s == 1:
        return arr
    d, hh, ww = arr.shape
    h, w = -(-hh // s), -(-ww // s)
    ph, pw = h * s - hh, w * s - ww
    if ph or pw:
        arr = np.pad(arr, ((0, 0), (0, ph), (0, pw)), mode="edge")
    if arr.dtype.kind in "iub" and arr.dtype.itemsize <= 2:
        total = arr.reshape(d, h, s, w * s).sum(axis=2, dtype=np.uint32 if arr.dtype.kind != "i" else np.int32)
        total = total.reshape(d, h, w, s).sum(axis=3)
        return total.astype(np.float32) / np.float32(s * s)
    return arr.reshape(d, h, s, w, s).mean(axis=(2, 4), dtype=np.float32)
