"""The planes a volume is predicted along: 3 orthogonal, or those plus 6 diagonal (nine-plane fusion).

Baltruschat et al. ("Scaling the U-net", Sci Rep 11, 24237, 2021) segment a volume slice by slice
along nine planes, the three orthogonal ones and six diagonal ones (45-degree rotations about each
axis), and soft-vote the nine probability maps. Here a diagonal plane is taken *exactly* from the
voxel grid instead of by resampling: about axis ``a`` with in-plane axes ``(p, q)``, the planes are
the sets ``p - q = d`` (family ``"a+"``) and ``p + q = s`` (family ``"a-"``); each is an ``(n_a, L)``
image whose rows follow ``a`` and whose columns step along the voxel diagonal. Every voxel lies on
exactly one plane of each family, so the probabilities go back to the voxels they came from with no
interpolation (nothing blurred, nothing lost at the border, and a per-voxel model gives the same answer
on all nine planes). The price is the column spacing: sqrt(2) voxels instead of 1.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from ..errors import InputError
from ..types import AXES

__all__ = ["Plane", "PLANE_COUNTS", "plane_families", "diagonal_planes", "plane_view"]

#: The ``planes`` values prediction accepts.
PLANE_COUNTS = (3, 9)


@dataclass(frozen=True)
class Plane:
    """One family of parallel planes: ``axis`` lies in every plane of a diagonal family, and is the
    normal of an orthogonal one. ``sign`` is 0 (orthogonal), +1 (``p - q`` constant) or -1 (``p + q``)."""

    axis: int
    sign: int = 0

    @property
    def name(self) -> str:
        return AXES[self.axis] + {0: "", 1: "+", -1: "-"}[self.sign]

    @property
    def orthogonal(self) -> bool:
        return self.sign == 0


def plane_families(planes: int, axes: str = "zyx") -> list[Plane]:
    """The plane families of ``planes``-plane fusion: the orthogonal ``axes`` (``planes=3``), or all
    three axes and the six diagonal families (``planes=9``, which needs ``axes="zyx"``)."""
    if planes not in PLANE_COUNTS:
        raise InputError(f"planes must be 3 (orthogonal) or 9 (orthogonal and diagonal), got {planes!r}")
    ortho = [Plane(AXES.index(a)) for a in axes]
    if planes == 3:
        return ortho
    if sorted(axes) != sorted(AXES):
        raise InputError(f"planes=9 soft-votes all nine planes, so it needs axes='zyx', got axes={axes!r}; "
                         "use planes=3 to predict along fewer axes")
    return ortho + [Plane(a, s) for a in range(3) for s in (1, -1)]


def diagonal_planes(shape: tuple[int, int, int], plane: Plane,
                    keep: tuple[tuple[int, int], tuple[int, int]] | None = None) -> list[tuple[int, tuple[np.ndarray, np.ndarray]]]:
    """``(length, (p, q))`` for each plane of a diagonal family of a ``shape`` volume, longest first:
    ``plane_view(volume, plane)[..., p, q]`` is that plane's ``(..., n_a, length)`` image.

    ``keep``: ``((p0, p1), (q0, q1))``, a rectangle in the volume's own ``(p, q)`` (the two axes other
    than ``plane.axis``, in order): only the planes crossing it are listed (a block's core inside its halo).
    """
    if plane.orthogonal:
        raise InputError(f"{plane.name} is an orthogonal plane family, not a diagonal one")
    P, Q = (shape[i] for i in range(3) if i != plane.axis)
    (p0, p1), (q0, q1) = keep if keep is not None else ((0, P), (0, Q))
    if plane.sign < 0:  # the view flips q
        q0, q1 = Q - q1, Q - q0
    out = []
    for d in range(p0 - (q1 - 1), p1 - q0):  # d = p - q over the rectangle
        q = np.arange(max(0, -d), min(Q, P - d))
        if q.size:
            out.append((int(q.size), (q + d, q)))
    out.sort(key=lambda t: -t[0])
    return out


def plane_view(volume: np.ndarray, plane: Plane, lead: int = 0) -> np.ndarray:
    """``volume`` (``lead`` leading axes, then z, y, x) as ``(..., a, p, q)``, ``q`` flipped for a
    ``"-"`` family so both diagonal families are the planes of constant ``p - q``: ``view[..., i, :, :]``
    is slice ``i`` of an orthogonal family, ``view[..., p, q]`` (an index of :func:`diagonal_planes`)
    a diagonal plane. A view: writes into it reach ``volume``."""
    v = np.moveaxis(volume, lead + plane.axis, lead)
    return v[..., ::-1] if plane.sign < 0 else v
