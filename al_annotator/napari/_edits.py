"""napari paint history -> :class:`~al_annotator.types.EditAtom` (pure numpy, no napari import).

napari 0.9 emits one ``events.paint`` per stroke whose ``value`` is a list of history atoms:

* ``_MaskedPaintAtom(slice_key, mask, old_values, new_value)`` from the brush, eraser, fill and
  polygon: ``slice_key`` is the bounding box (a slice per axis, length 1 on the axes not
  painted), ``mask`` the changed voxels in it (``None``: all of them);
* ``(indices, old_values, new_values)`` from ``Labels.data_setitem`` (and napari < 0.6): a
  numpy multi-index and a scalar or one value per voxel.

:func:`voxels_from_history` turns either into 3D voxel coordinates and values;
:func:`voxels_to_atoms` splits them into one :class:`EditAtom` per slice of the sliced axis.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from ..types import AXES, EditAtom, SliceRef

__all__ = ["voxels_from_history", "voxels_to_atoms", "guess_axis"]


def voxels_from_history(atoms: Iterable[Any], ndim: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates ``(ndim, N)`` and new values ``(N,)`` of the voxels a napari history item changed.

    Examples
    --------
    >>> import numpy as np
    >>> coords, values = voxels_from_history([((np.array([1, 1]), np.array([2, 3]), np.array([0, 0])), np.zeros(2), 4)])
    >>> coords.tolist(), values.tolist()
    ([[1, 1], [2, 3], [0, 0]], [4, 4])
    """
    coords: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for atom in atoms:
        if hasattr(atom, "slice_key"):  # _MaskedPaintAtom
            starts = [int(s.start or 0) for s in atom.slice_key]
            if atom.mask is None:
                shape = [int(s.stop) - int(s.start or 0) for s in atom.slice_key]
                nz = tuple(g.reshape(-1) for g in np.indices(shape))
            else:
                mask = np.asarray(atom.mask, bool)
                if mask.ndim < ndim:  # a painted-dims mask: add the length-1 axes back
                    extra = [d for d, s in enumerate(atom.slice_key) if (int(s.stop) - int(s.start or 0)) == 1][: ndim - mask.ndim]
                    mask = np.expand_dims(mask, tuple(extra))
                nz = np.nonzero(mask)
            c = np.stack([np.asarray(n, np.int64) + s for n, s in zip(nz, starts)]) if len(nz) else np.zeros((ndim, 0), np.int64)
            coords.append(c)
            values.append(np.full(c.shape[1], int(atom.new_value), np.int64))
        else:  # (indices, old_values, new_values)
            indices, _old, new = atom
            idx = [np.asarray(i, np.int64).reshape(-1) for i in indices]
            c = np.stack(idx) if idx else np.zeros((ndim, 0), np.int64)
            coords.append(c)
            v = np.asarray(new, np.int64).reshape(-1)
            values.append(np.full(c.shape[1], int(v[0]), np.int64) if v.size == 1 else v)
    if not coords:
        return np.zeros((ndim, 0), np.int64), np.zeros(0, np.int64)
    return np.concatenate(coords, axis=1), np.concatenate(values)


def guess_axis(coords: np.ndarray, preferred: int | None = None) -> int:
    """The axis to slice edits along: ``preferred`` (the axis napari is slicing) when given,
    else the axis on which the voxels span the fewest planes."""
    if preferred is not None:
        return int(preferred)
    if coords.shape[1] == 0:
        return 0
    return int(np.argmin([np.unique(c).size for c in coords]))


def voxels_to_atoms(
    coords: np.ndarray,
    values: np.ndarray | int,
    axis: int | str,
    shape: Sequence[int],
    *,
    tool: str = "brush",
    author: str = "",
) -> list[EditAtom]:
    """Split voxel edits into one :class:`EditAtom` per slice along ``axis``.

    ``coords`` is ``(3, N)`` (z, y, x); ``values`` one per voxel or a scalar. A voxel listed twice
    keeps its last value. Atoms whose values are all equal carry one scalar value (a compact log).

    Examples
    --------
    >>> import numpy as np
    >>> coords = np.array([[2, 2, 5], [0, 1, 0], [3, 3, 3]])   # voxels (2,0,3), (2,1,3), (5,0,3)
    >>> atoms = voxels_to_atoms(coords, 2, "z", (8, 4, 4))
    >>> [(str(a.slice_ref), a.indices.tolist(), a.new_values.tolist()) for a in atoms]
    [('z=2', [3, 7], [2]), ('z=5', [3], [2])]
    """
    ax = AXES.index(axis) if isinstance(axis, str) else int(axis)
    coords = np.asarray(coords, np.int64)
    n = coords.shape[1]
    vals = np.broadcast_to(np.asarray(values, np.int64), (n,))
    if n == 0:
        return []
    a, b = (d for d in range(3) if d != ax)
    flat = coords[a] * int(shape[b]) + coords[b]
    plane = coords[ax]
    # last write wins: unique over (plane, flat), keeping the last occurrence
    key = plane * (int(shape[a]) * int(shape[b])) + flat
    rev_unique, rev_first = np.unique(key[::-1], return_index=True)
    keep = n - 1 - rev_first
    plane, flat, vals = plane[keep], flat[keep], vals[keep]
    order = np.lexsort((flat, plane))
    plane, flat, vals = plane[order], flat[order], vals[order]
    cuts = np.flatnonzero(np.diff(plane)) + 1
    idx_dtype = np.uint32 if int(shape[a]) * int(shape[b]) < 2**32 else np.uint64
    atoms = []
    for p, f, v in zip(np.split(plane, cuts), np.split(flat, cuts), np.split(vals, cuts)):
        new = v[:1] if (v == v[0]).all() else v
        atoms.append(EditAtom(SliceRef(AXES[ax], int(p[0])), f.astype(idx_dtype), new, author=author, tool=tool))
    return atoms
