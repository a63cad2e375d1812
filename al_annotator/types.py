"""Small value types shared by every layer: slice references and edit atoms."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["AXES", "SliceRef", "EditAtom", "axis_number"]

#: Axis names in array order: a volume is indexed ``volume[z, y, x]``.
AXES: tuple[str, str, str] = ("z", "y", "x")


def axis_number(axis: str | int) -> int:
    """Return 0, 1 or 2 for ``"z"``, ``"y"``, ``"x"`` (or the integer itself)."""
    if isinstance(axis, (int, np.integer)) and 0 <= int(axis) < 3:
        return int(axis)
    if isinstance(axis, str) and axis.lower() in AXES:
        return AXES.index(axis.lower())
    raise ValueError(f"axis must be one of 'z', 'y', 'x' (or 0, 1, 2), got {axis!r}")


@dataclass(frozen=True, slots=True, order=True)
class SliceRef:
    """A 2D slice of a 3D volume: ``SliceRef("z", 12)`` is ``volume[12, :, :]``.

    Examples
    --------
    >>> SliceRef("y", 5).selection(3)
    (slice(None, None, None), 5, slice(None, None, None))
    """

    axis: str
    index: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "axis", AXES[axis_number(self.axis)])
        if int(self.index) != self.index:
            raise ValueError(f"slice index must be an integer, got {self.index!r}")
        object.__setattr__(self, "index", int(self.index))

    @property
    def axis_number(self) -> int:
        return AXES.index(self.axis)

    def selection(self, ndim: int = 3) -> tuple:
        """The indexing tuple that picks this slice out of a ``(Z, Y, X)`` array."""
        sel: list = [slice(None)] * ndim
        sel[self.axis_number + ndim - 3] = self.index
        return tuple(sel)

    def shape_in(self, volume_shape: tuple[int, int, int]) -> tuple[int, int]:
        """The 2D shape of this slice in a volume of ``volume_shape``."""
        return tuple(s for i, s in enumerate(volume_shape) if i != self.axis_number)  # type: ignore[return-value]

    def check(self, volume_shape: tuple[int, int, int]) -> None:
        n = volume_shape[self.axis_number]
        if not 0 <= self.index < n:
            raise IndexError(f"{self} is outside the volume: axis {self.axis} has {n} slices (0..{n - 1})")

    def __str__(self) -> str:
        return f"{self.axis}={self.index}"


@dataclass(frozen=True, slots=True)
class EditAtom:
    """One edit: voxels of one slice set to new values.

    The same atom is what a front end sends, what the edit log stores, and what undo inverts
    (napari's paint event carries the same triple: indices, old values, new value).

    Parameters
    ----------
    slice_ref
        The slice the edit was made on.
    indices
        Flat (row-major) indices into the 2D slice, ``uint32``.
    new_values
        A scalar class value for every voxel, or one value per index.
    old_values
        The values before the edit, one per index; filled in by the store when it applies the atom.
    author, time, tool
        Provenance: who, when (POSIX seconds), and which tool ("brush", "eraser", "fill", ...).
    """

    slice_ref: SliceRef
    indices: np.ndarray
    new_values: np.ndarray
    old_values: np.ndarray | None = None
    author: str = ""
    time: float = 0.0
    tool: str = "brush"
    seq: int | None = None
    meta: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.indices.size)
