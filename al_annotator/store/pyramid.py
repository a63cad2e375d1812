"""The image pyramid in the store: coarse copies of the image for overviews and zoomed-out views.

A zoomed-out view of a 2048^2 slice shows every 4th or 8th voxel, but zarr reads whole 64^3
chunks: from the full image that is the 1024 chunks (512 MiB of uint16) of the slice's chunk
slab whatever the zoom. Level ``k`` (``data.zarr/pyramid/k``) is the image averaged over
``2^k``-voxel cubes, so the same view reads ``1024 / 4^k`` chunks of it::

    data.zarr/pyramid/     zarr group; attribute "levels": the levels present, written last
      1, 2, ...            (ceil(Z/2^k), ceil(Y/2^k), ceil(X/2^k)), the image's dtype, 64^3 chunks

Levels go down while the longest side stays at least :data:`COARSEST_SIDE` (a 2048^3 volume gets
1..3, 14 % more disk than the image; :func:`pyramid_bytes`); a volume below 512 voxels on every side gets none, and reads
fall back to striding the full image. The image never changes, so a level, once listed, stays
valid. :func:`build_pyramid` runs at project creation and, for projects created before, on
``al-annotator check --repair`` (:meth:`ProjectStore.build_pyramid
<al_annotator.store.ProjectStore.build_pyramid>`); it reads one block of up to 128 x 512 x 512
voxels at a time (64 MiB of uint16), whatever the volume's size.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["COARSEST_SIDE", "GROUP", "build_pyramid", "level_shape", "open_levels", "pyramid_bytes", "pyramid_levels"]

GROUP = "pyramid"
#: The coarsest level's longest side is at least this.
COARSEST_SIDE = 256
#: Output block edge (in voxels of the level written) per read-average-write step.
_BLOCK = (64, 256, 256)


def pyramid_levels(shape: Sequence[int]) -> list[int]:
    """The levels a volume of ``shape`` gets.

    Examples
    --------
    >>> pyramid_levels((2048, 2048, 2048)), pyramid_levels((300, 300, 300))
    ([1, 2, 3], [])
    """
    longest = max(int(n) for n in shape)
    return [k for k in range(1, 8) if longest >> k >= COARSEST_SIDE]


def level_shape(shape: Sequence[int], k: int) -> tuple[int, int, int]:
    """The shape of level ``k``: every side ``ceil(n / 2^k)`` (what striding by ``2^k`` gives too)."""
    return tuple(-(-int(n) // 2**k) for n in shape)  # type: ignore[return-value]


def pyramid_bytes(shape: Sequence[int], dtype: Any) -> int:
    """The disk the levels of a volume take (uncompressed, as the image)."""
    itemsize = np.dtype(dtype).itemsize
    return sum(int(np.prod(level_shape(shape, k), dtype=np.int64)) * itemsize for k in pyramid_levels(shape))


def _mean2(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """2x2x2 means (an odd edge averages what it has), rounded back to ``dtype``."""
    out_shape = tuple(-(-n // 2) for n in block.shape)
    total = np.zeros(out_shape, np.float64)
    count = np.zeros(out_shape, np.float64)
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                part = block[dz::2, dy::2, dx::2]
                sel = tuple(slice(0, n) for n in part.shape)
                total[sel] += part
                count[sel] += 1
    mean = total / count
    if dtype.kind in "iub":
        mean = np.rint(mean)
    return mean.astype(dtype)


def build_pyramid(root: Any, image: Any, *, progress: Callable[[int, int, str], None] | None = None) -> list[int]:
    """Write every level of :func:`pyramid_levels` under ``root/pyramid`` from ``image`` (each level
    from the one above it) and list them last; returns the levels. Existing levels are rewritten."""
    levels = pyramid_levels(image.shape)
    group = root.require_group(GROUP)
    group.attrs["levels"] = []
    if not levels:
        return []
    dtype = np.dtype(image.dtype)
    src = image
    total = sum(int(np.prod(level_shape(image.shape, k))) for k in levels)
    done = 0
    for k in levels:
        shape = level_shape(image.shape, k)
        dst = group.create_array(str(k), shape=shape, dtype=dtype, chunks=tuple(min(64, n) for n in shape),
                                 compressors=None, fill_value=0, overwrite=True, config={"write_empty_chunks": True})
        for z0 in range(0, shape[0], _BLOCK[0]):
            for y0 in range(0, shape[1], _BLOCK[1]):
                for x0 in range(0, shape[2], _BLOCK[2]):
                    block = np.asarray(src[2 * z0 : 2 * (z0 + _BLOCK[0]), 2 * y0 : 2 * (y0 + _BLOCK[1]), 2 * x0 : 2 * (x0 + _BLOCK[2])])
                    out = _mean2(block, dtype)
                    dst[z0 : z0 + out.shape[0], y0 : y0 + out.shape[1], x0 : x0 + out.shape[2]] = out
                    done += out.size
                    if progress is not None:
                        progress(done, total, "pyramid")
        src = dst
    group.attrs["levels"] = levels
    return levels


def open_levels(root: Any, shape: Sequence[int]) -> dict[int, Any]:
    """The complete levels of a store: ``{k: zarr array}`` (empty when it has none or they were
    never finished; a level whose shape does not fit the image is left out)."""
    try:
        group = root[GROUP]
        listed = [int(k) for k in group.attrs.get("levels", [])]
    except (KeyError, TypeError, ValueError):
        return {}
    out = {}
    for k in listed:
        try:
            arr = group[str(k)]
        except KeyError:
            continue
        if tuple(arr.shape) == level_shape(shape, k):
            out[k] = arr
    return out
