"""An ilastik-style filter bank, computed lazily per tile (with a halo) and cached within a byte bound.

Filters (the six families of ilastik's feature table, with its default scales
:data:`ILASTIK_SIGMAS` = 0.3, 0.7, 1.0, 1.6, 3.5, 5.0, 10.0):

* ``gaussian``: Gaussian smoothing (every scale, 0.3 included);
* ``log``: Laplacian of Gaussian (sum of the second Gaussian derivatives);
* ``ggm``: Gaussian gradient magnitude;
* ``dog``: difference of Gaussians, ``G(s) - G(0.66 s)`` (ilastik's ratio);
* ``st``: structure tensor eigenvalues, inner scale ``s``, outer scale ``0.5 s`` (ilastik's ratio);
* ``hessian``: eigenvalues of the Hessian of Gaussian at ``s``.

The derivative families start at 0.7 (as in ilastik: 0.3 is offered for smoothing only).
Eigenvalues are sorted in descending order, one channel per *active* axis.

Anisotropy. With ``spacing`` (z, y, x) each scale ``s`` is in units of the finest axis and the
sigma along axis ``a`` is ``s * min(spacing) / spacing[a]``; derivatives are taken in the same
physical units (a derivative along ``a`` is multiplied by ``min(spacing) / spacing[a]``), so the
tensors mix the axes consistently. A sigma below ``min_sigma`` (0.3) along an axis is not
resolvable on that grid: the axis is then neither smoothed nor differentiated at that scale (the
tensors lose that row and column), which is what ilastik/vigra do for 2D features in a 3D volume.
For the ssTEM stack (50, 4, 4 nm) the z sigmas are 0.08 s: z takes part only at s = 5 and 10.
``mode="2d"`` makes ``flat_axis`` inactive at every scale: per-slice 2D features.

Tiles. The volume is cut into tiles of ``tile_shape``; a tile's features are computed from the
tile grown by a halo of the filters' total radius (``4 sigma`` per Gaussian, inner plus outer for
the structure tensor, clipped at the volume's edges where the filters reflect), so they equal a
computation on the whole volume (tested). Computed tiles are kept in an LRU cache bounded by
``cache_bytes``. Features are float32.

Sections. ``section_norm=a`` standardises every slice along axis ``a`` on its own mean and standard
deviation before filtering (``"auto"``: along the axis where neighbouring slices differ in mean
brightness by at least :data:`~al_annotator.training.data.SECTION_SHIFT_SLICE` of the in-slice
spread, the test the network's ``input_norm="auto"`` makes: serial-section EM yes, calibrated
tomography no). The ssTEM sections' means range over +-0.5 in-slice standard deviations; from 2-4
labelled sections the trees learned those sections' brightness: standardising them raised tier 1's
test Dice by 0.04-0.08 at 2 slices (docs/BENCHMARKS.md, "Tier 1 at small budgets").

Implementation: :func:`scipy.ndimage.gaussian_filter` with a per-axis sigma and derivative order
(exact Gaussian derivatives, like vigra); closed-form eigenvalues of the symmetric 2x2 / 3x3
tensors (vectorised; checked against :func:`numpy.linalg.eigvalsh`). scikit-image's
``hessian_matrix`` / ``structure_tensor`` were not used: they take one sigma for all axes (or
np.gradient derivatives), not a per-axis one. fastfilters / vigra are not installable from PyPI.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from scipy import ndimage

from ..errors import InputError

__all__ = ["ILASTIK_SIGMAS", "OCTAVE_SIGMAS", "FAMILIES", "MODES", "BOUNDARIES", "FeatureBank", "compute_features", "feature_plan", "eigvalsh_sym",
           "section_statistics", "choose_section_norm"]

#: ilastik's default scales (in pixels of the finest axis).
ILASTIK_SIGMAS: tuple[float, ...] = (0.3, 0.7, 1.0, 1.6, 3.5, 5.0, 10.0)
#: Scale-space octaves 1..16, the scikit-image forest peer's sigmas (``sigma_min=1, sigma_max=16``).
OCTAVE_SIGMAS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
#: The filter families, in channel order within a scale.
FAMILIES: tuple[str, ...] = ("gaussian", "log", "ggm", "dog", "st", "hessian")
#: Derivative families start at this scale (ilastik offers 0.3 for smoothing only).
DERIVATIVE_MIN_SCALE = 0.7
DOG_RATIO = 0.66
ST_OUTER_RATIO = 0.5
TRUNCATE = 4.0
#: Feature modes of :class:`FeatureBank`.
MODES: tuple[str, ...] = ("3d", "2d", "inplane")
#: How the filters extend the image past the volume's edges (scipy.ndimage modes).
BOUNDARIES: tuple[str, ...] = ("reflect", "nearest")


#: Per-slice statistics (``section_norm``) are taken over at most this many pixels per in-plane axis (a central
#: block: the whole slice up to 512 x 512), in slabs of :data:`SECTION_SLAB` slices.
SECTION_BLOCK, SECTION_SLAB = 512, 16
#: A slice's spread is floored at this share of the median spread of the slices (a blank slice is not amplified).
SECTION_STD_FLOOR = 0.1


def section_statistics(image: Any, axis: int, block: int = SECTION_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (float64, one per slice along ``axis``) of a central block of at most
    ``block`` pixels per in-plane axis of every slice (the whole slice up to that size); the spreads are
    floored at :data:`SECTION_STD_FLOOR` x their median."""
    shape = tuple(int(n) for n in image.shape)
    n = shape[axis]
    mean, std = np.zeros(n, np.float64), np.zeros(n, np.float64)
    sel: list[Any] = [slice(max(0, (m - block) // 2), max(0, (m - block) // 2) + min(m, block)) for m in shape]
    for i0 in range(0, n, SECTION_SLAB):
        sel[axis] = slice(i0, min(n, i0 + SECTION_SLAB))
        x = np.moveaxis(np.asarray(image[tuple(sel)], np.float64), axis, 0).reshape(sel[axis].stop - i0, -1)
        mean[i0:i0 + x.shape[0]] = x.mean(axis=1)
        std[i0:i0 + x.shape[0]] = x.std(axis=1)
    floor = SECTION_STD_FLOOR * float(np.median(std))
    return mean, np.maximum(std, floor if floor > 0 else 1.0)


def choose_section_norm(image: Any) -> tuple[int | None, str]:
    """``section_norm="auto"``: ``(axis or None, why)``, by the network's test
    (:func:`~al_annotator.training.data.section_shift` against ``SECTION_SHIFT_SLICE``) on the image's value range."""
    from ..training.data import SECTION_SHIFT_SLICE, section_shift

    shape = tuple(int(n) for n in image.shape)
    if len(shape) != 3 or min(shape) < 2:
        return None, "section_norm off: not a 3D volume of several slices"
    step = max(1, int(round((np.prod(shape) / 1e6) ** (1 / 3))))
    sample = np.asarray(image[tuple(slice(None, None, step) for _ in shape)], np.float64)
    lo, hi = float(sample.min()), float(sample.max())
    if not hi > lo:
        return None, "section_norm off: a constant image"
    shift, name = section_shift(image, (lo, hi))
    if shift >= SECTION_SHIFT_SLICE:
        return "zyx".index(name), (f"section_norm={name}: neighbouring {name} slices differ in mean brightness by {shift:.3f} "
                                   f"of the in-slice spread (>= {SECTION_SHIFT_SLICE}): each {name} slice standardised")
    return None, (f"section_norm off: neighbouring slices differ in mean brightness by at most {shift:.3f} of the in-slice "
                  f"spread (< {SECTION_SHIFT_SLICE})")


def _radius(sigma: float) -> int:
    """scipy's kernel radius for ``sigma`` at :data:`TRUNCATE` (0 when the axis is not smoothed)."""
    return int(TRUNCATE * float(sigma) + 0.5) if sigma > 0 else 0


@dataclass(frozen=True)
class _Scale:
    scale: float
    sigma: tuple[float, ...]  # per axis, 0 = not smoothed / not differentiated
    families: tuple[str, ...]
    weight: tuple[float, ...]  # physical-unit factor of a derivative along each axis

    @property
    def active(self) -> tuple[int, ...]:
        return tuple(a for a, s in enumerate(self.sigma) if s > 0)


def _axis_sigmas(scale: float, factors: Sequence[float], min_sigma: float, flat: Sequence[int] = ()) -> tuple[float, ...]:
    out = []
    for a, f in enumerate(factors):
        s = float(scale) * float(f)
        out.append(0.0 if (a in flat or s < min_sigma - 1e-9) else s)
    return tuple(out)


def feature_plan(ndim: int, spacing: Sequence[float] | None, sigmas: Sequence[float], families: Sequence[str],
                 mode: str, flat_axis: int, min_sigma: float) -> tuple[list[_Scale], list[str], tuple[int, ...]]:
    """(scales, channel names, halo per axis) of a bank configuration."""
    if spacing is None:
        factors = [1.0] * ndim
    else:
        sp = [float(s) for s in spacing]
        factors = [min(sp) / s for s in sp]
    flat = (flat_axis,) if mode == "2d" else ()
    scales: list[_Scale] = []
    names: list[str] = []
    halo = [0] * ndim
    for s in sorted(float(v) for v in sigmas):
        fams = tuple(f for f in FAMILIES if f in families and (f == "gaussian" or s >= DERIVATIVE_MIN_SCALE - 1e-9))
        sig = _axis_sigmas(s, factors, min_sigma, flat)
        active = [a for a in range(ndim) if sig[a] > 0]
        if not active:  # nothing resolvable at this scale: only the (unsmoothed) intensity makes sense
            fams = tuple(f for f in fams if f == "gaussian")
        if not fams:
            continue
        sc = _Scale(s, sig, fams, tuple(factors))
        scales.append(sc)
        outer = _axis_sigmas(s * ST_OUTER_RATIO, factors, min_sigma, flat)
        for f in fams:
            if f in ("st", "hessian"):
                n = len(active)
                names += [f"{f}_eig{i} s={s:g}" for i in range(n)]
            else:
                names.append(f"{f} s={s:g}")
            for a in range(ndim):
                r = _radius(sig[a]) + (_radius(outer[a]) if f == "st" and a in active else 0)
                halo[a] = max(halo[a], r)
    return scales, names, tuple(halo)


def eigvalsh_sym(m: dict[tuple[int, int], np.ndarray], n: int) -> list[np.ndarray]:
    """Eigenvalues (descending) of a field of symmetric ``n x n`` matrices, ``n`` in 1..3.

    ``m[(i, j)]`` (``i <= j``) holds the component arrays. Closed form (trigonometric for 3x3),
    computed in float64, returned as float32 arrays.
    """
    if n == 1:
        return [m[(0, 0)].astype(np.float32)]
    if n == 2:
        a, b, c = (np.asarray(m[k], np.float64) for k in ((0, 0), (0, 1), (1, 1)))
        mean = 0.5 * (a + c)
        rad = np.sqrt((0.5 * (a - c)) ** 2 + b * b)
        return [(mean + rad).astype(np.float32), (mean - rad).astype(np.float32)]
    if n != 3:
        raise ValueError(f"eigenvalues of {n}x{n} tensors are not implemented")
    a00, a01, a02, a11, a12, a22 = (np.asarray(m[k], np.float64) for k in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)))
    q = (a00 + a11 + a22) / 3.0
    b00, b11, b22 = a00 - q, a11 - q, a22 - q
    p1 = a01 * a01 + a02 * a02 + a12 * a12
    p = np.sqrt((b00 * b00 + b11 * b11 + b22 * b22 + 2.0 * p1) / 6.0)
    det = b00 * (b11 * b22 - a12 * a12) - a01 * (a01 * b22 - a12 * a02) + a02 * (a01 * a12 - b11 * a02)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(p > 0, det / (2.0 * p ** 3), 0.0)
    phi = np.arccos(np.clip(r, -1.0, 1.0)) / 3.0
    e1 = q + 2.0 * p * np.cos(phi)
    e3 = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    e2 = 3.0 * q - e1 - e3
    return [e1.astype(np.float32), e2.astype(np.float32), e3.astype(np.float32)]


def _gauss(img: np.ndarray, sigma: Sequence[float], order: Sequence[int] | int = 0, boundary: str = "reflect") -> np.ndarray:
    return ndimage.gaussian_filter(img, sigma=tuple(sigma), order=order, mode=boundary, truncate=TRUNCATE, output=np.float32)


def _kernel(sigma: float, order: int) -> np.ndarray:
    """The weights ``w`` of :func:`scipy.ndimage.gaussian_filter1d` at ``sigma``/``order``:
    ``out[p] = sum_j w[j] * in[p + j - r]`` (read off its response to a unit impulse)."""
    r = _radius(sigma)
    delta = np.zeros(2 * r + 1, np.float64)
    delta[r] = 1.0
    resp = ndimage.gaussian_filter1d(delta, sigma, order=order, mode="constant", truncate=TRUNCATE)
    return resp[::-1].copy()


def _boundary_index(idx: np.ndarray, n: int, boundary: str) -> np.ndarray:
    """Indices past an axis of length ``n`` mapped as scipy.ndimage's ``mode`` maps them."""
    if boundary == "nearest":
        return np.clip(idx, 0, n - 1)
    m = np.mod(idx, 2 * n)  # "reflect": (d c b a | a b c d | d c b a), period 2n
    return np.where(m >= n, 2 * n - 1 - m, m)


def _filter_axis(x: np.ndarray, sigma: float, order: int, axis: int, keep: slice, boundary: str) -> np.ndarray:
    """``x`` filtered along ``axis`` (Gaussian derivative ``order`` at ``sigma``; none when ``sigma`` is 0), then
    cropped to ``keep`` along that axis. When ``keep`` is at most half of the axis, only the kept
    positions are computed, as weighted sums of the planes they need (a plane of a volume filtered
    along its normal reads 2r+1 planes instead of filtering the whole slab)."""
    n = x.shape[axis]
    k = keep.stop - keep.start
    if sigma <= 1e-15:  # scipy skips such an axis (no smoothing, no derivative)
        return x[(slice(None),) * axis + (keep,)]
    if 2 * k > n:
        y = ndimage.gaussian_filter1d(x, sigma, axis=axis, order=order, mode=boundary, truncate=TRUNCATE, output=np.float32)
        return y[(slice(None),) * axis + (keep,)]
    w = _kernel(sigma, order).astype(np.float32)
    r = (len(w) - 1) // 2
    out = np.empty(x.shape[:axis] + (k,) + x.shape[axis + 1:], np.float32)
    last = x.ndim - 1
    for i, p in enumerate(range(keep.start, keep.stop)):
        lo, hi = p - r, p + r + 1
        idx = slice(lo, hi) if lo >= 0 and hi <= n else _boundary_index(np.arange(lo, hi), n, boundary)
        src = x[(slice(None),) * axis + (idx,)]
        # the weighted sum in the array's own memory order: moved to the front, a plane across the
        # last (contiguous) axis gathers one float per cache line (an x plane of a 512^3 volume took
        # 64 s of features where a z plane took 14 s); as matrix products it reads whole rows
        if axis == last:
            out[..., i] = src @ w
        elif axis == last - 1:
            out[(slice(None),) * axis + (i,)] = np.matmul(w, src)
        else:
            out[(slice(None),) * axis + (i,)] = np.tensordot(w, np.moveaxis(src, axis, 0), axes=(0, 0))
    return out


class _Separable:
    """The Gaussian (derivative) filters of one block, computed axis by axis.

    Each axis is cropped to the part that is kept as soon as it is filtered (the most-cropped axis
    first), and the partial results are shared between the filters that agree on the axes done so
    far: the features of a plane of a 3D volume filter the slab along the plane's normal once per
    (sigma, order), then only the plane in-plane. Equal to :func:`scipy.ndimage.gaussian_filter`
    followed by the crop (to float32 rounding; tested)."""

    def __init__(self, img: np.ndarray, boundary: str, keep: tuple[slice, ...]) -> None:
        self.img = img
        self.boundary = boundary
        ratio = [(s.stop - s.start) / max(n, 1) for s, n in zip(keep, img.shape)]
        self.axes = sorted(range(img.ndim), key=lambda a: (ratio[a], a))
        self._memo: dict[tuple, np.ndarray] = {}

    def __call__(self, sigma: Sequence[float], order: Sequence[int] | int, keep: tuple[slice, ...]) -> np.ndarray:
        ndim = self.img.ndim
        orders = [int(order)] * ndim if isinstance(order, (int, np.integer)) else [int(o) for o in order]
        x = self.img
        key: tuple = ()
        last = self.axes[-1]
        for a in self.axes:
            s = float(sigma[a]) if sigma[a] > 1e-15 else 0.0
            key += ((a, s, orders[a] if s else 0, keep[a].start, keep[a].stop),)
            y = self._memo.get(key)
            if y is None:
                y = _filter_axis(x, s, orders[a] if s else 0, a, keep[a], self.boundary)
                if a != last:
                    self._memo[key] = y
            x = y
        return np.ascontiguousarray(x, np.float32) if x is self.img or not x.flags.c_contiguous else x


def _scale_features(img: np.ndarray, sc: _Scale, min_sigma: float, flat: Sequence[int],
                    crop: tuple[slice, ...] | None = None, boundary: str = "reflect", fast: bool = True) -> list[np.ndarray]:
    """The channels of one scale, cropped to ``crop``.

    ``fast``: the filters run through :class:`_Separable` (each axis cropped as soon as it is
    filtered, partial results shared); ``False``: whole-block :func:`scipy.ndimage.gaussian_filter`
    calls, then the crop (the reference :func:`compute_features` uses)."""
    ndim = img.ndim
    crop = crop if crop is not None else (slice(None),) * ndim
    core = tuple(slice(*c.indices(n)[:2]) for c, n in zip(crop, img.shape))
    active = sc.active
    fams = sc.families
    out: list[np.ndarray] = []
    factors = list(sc.weight)
    outer = _axis_sigmas(sc.scale * ST_OUTER_RATIO, factors, min_sigma, flat)
    # the gradients the structure tensor smooths are needed on the core grown by the outer radius
    st_keep = tuple(slice(max(0, c.start - _radius(o)), min(n, c.stop + _radius(o)))
                    for c, o, n in zip(core, outer, img.shape)) if "st" in fams else core
    in_st = tuple(slice(c.start - k.start, c.stop - k.start) for c, k in zip(core, st_keep))
    gauss: Callable[[Sequence[float], Sequence[int] | int, tuple[slice, ...]], np.ndarray]
    if fast:
        gauss = _Separable(img, boundary, core)
    else:
        def gauss(sigma: Sequence[float], order: Sequence[int] | int, keep: tuple[slice, ...]) -> np.ndarray:
            return _gauss(img, sigma, order, boundary)[keep]

    g = gauss(sc.sigma, 0, core) if ("gaussian" in fams or "dog" in fams) else None
    grads: dict[int, np.ndarray] = {}
    if "ggm" in fams or "st" in fams:
        for a in active:
            order = [0] * ndim
            order[a] = 1
            d = gauss(sc.sigma, order, st_keep)
            d = d * np.float32(sc.weight[a])
            grads[a] = d  # on st_keep: the structure tensor smooths products of these
    hess: dict[tuple[int, int], np.ndarray] = {}
    if "hessian" in fams or "log" in fams:
        pairs = [(a, b) for i, a in enumerate(active) for b in active[i:]] if "hessian" in fams else [(a, a) for a in active]
        for a, b in pairs:
            order = [0] * ndim
            order[a] += 1
            order[b] += 1
            d = gauss(sc.sigma, order, core)
            d = d * np.float32(sc.weight[a] * sc.weight[b])
            hess[(a, b)] = d
    for f in fams:
        if f == "gaussian":
            out.append(g)
        elif f == "log":
            out.append(np.sum([hess[(a, a)] for a in active], axis=0, dtype=np.float32))
        elif f == "ggm":
            out.append(np.sqrt(np.sum([grads[a][in_st] ** 2 for a in active], axis=0, dtype=np.float32)))
        elif f == "dog":
            out.append(g - gauss(_axis_sigmas(sc.scale * DOG_RATIO, factors, min_sigma, flat), 0, core))
        elif f == "st":
            comp = {}
            for i, a in enumerate(active):
                for j in range(i, len(active)):
                    prod = grads[a] * grads[active[j]]
                    if not any(outer):
                        comp[(i, j)] = prod[in_st]
                    elif fast:
                        comp[(i, j)] = _Separable(prod, boundary, in_st)(outer, 0, in_st)
                    else:
                        comp[(i, j)] = _gauss(prod, outer, 0, boundary)[in_st]
            out += eigvalsh_sym(comp, len(active))
        elif f == "hessian":
            comp = {(i, j): hess[(active[i], active[j])] for i in range(len(active)) for j in range(i, len(active))}
            out += eigvalsh_sym(comp, len(active))
    return out


def compute_features(image: np.ndarray, spacing: Sequence[float] | None = None, *, sigmas: Sequence[float] = ILASTIK_SIGMAS,
                     families: Sequence[str] = FAMILIES, mode: str = "3d", flat_axis: int = 0, min_sigma: float = 0.3,
                     boundary: str = "reflect", section_norm: int | None = None) -> np.ndarray:
    """The bank's features of a whole (float32) array, ``(*image.shape, F)``: the reference a tile must match.

    ``section_norm``: an axis whose slices are standardised first (:func:`section_statistics`), or ``None``."""
    img = np.asarray(image, np.float32)
    if section_norm is not None:
        mean, std = section_statistics(img, int(section_norm))
        shp = [1] * img.ndim
        shp[int(section_norm)] = -1
        img = ((img - mean.astype(np.float32).reshape(shp)) / std.astype(np.float32).reshape(shp)).astype(np.float32)
    if mode == "inplane":  # the features of planes along flat_axis (pixel sigmas)
        spacing, mode = None, "2d"
    scales, names, _ = feature_plan(img.ndim, spacing, sigmas, families, mode, flat_axis, min_sigma)
    flat = (flat_axis,) if mode == "2d" else ()
    chans = [ch for sc in scales for ch in _scale_features(img, sc, min_sigma, flat, boundary=boundary, fast=False)]
    assert len(chans) == len(names)
    return np.stack(chans, axis=-1)


def _check_slices(block: Any, shape: tuple[int, ...]) -> tuple[slice, ...]:
    if isinstance(block, slice) or not isinstance(block, (tuple, list)):
        block = (block,)
    block = tuple(block) + (slice(None),) * (len(shape) - len(block))
    if len(block) != len(shape):
        raise InputError(f"a block of {len(block)} slices was asked of a {len(shape)}D volume; pass one slice (or index) per axis")
    out = []
    for a, (s, n) in enumerate(zip(block, shape)):
        if isinstance(s, (int, np.integer)):
            i = int(s) + (n if s < 0 else 0)
            if not 0 <= i < n:
                raise InputError(f"index {s} is outside axis {a} of length {n}")
            out.append(slice(i, i + 1))
            continue
        if not isinstance(s, slice):
            raise InputError(f"block entries must be slices or integers, got {type(s).__name__} for axis {a}")
        start, stop, step = s.indices(n)
        if step != 1:
            raise InputError(f"block slices must have step 1, got step {step} on axis {a}")
        if stop <= start:
            raise InputError(f"the block is empty along axis {a} ({s}); pass a non-empty range within 0..{n}")
        out.append(slice(start, stop))
    return tuple(out)


class FeatureBank:
    """Lazily computed, tile-cached filter-bank features of a 2D or 3D image (see the module docs).

    Parameters
    ----------
    image
        A 2D or 3D array-like (numpy, memmap, zarr, h5py dataset): only the tiles asked for (with their
        halo) are read.
    spacing
        Voxel size per axis (any unit), e.g. ``(50, 4, 4)``; ``None`` = isotropic (equal sigmas on every axis).
    sigmas, families
        Scales (pixels of the finest axis) and filter families (subset of :data:`FAMILIES`).
    mode
        ``"3d"`` (default), ``"2d"``: no smoothing or derivative along ``flat_axis`` (per-slice features), or
        ``"inplane"`` (3D volumes): 2D features *in the plane each voxel is seen in*, as the scikit-image
        forest peer computes them: a plane along axis ``a`` gets the 2D features of that plane, a labelled
        voxel those of the plane it was painted on (``features_at(coords, axes=...)``); blocks that are not
        one plane use ``flat_axis``. In-plane sigmas are in pixels (``spacing`` is not used), so every
        orientation has the same channels.
    boundary
        How filters extend the image past the volume's edges: ``"reflect"`` (default) or ``"nearest"``
        (edge values repeated, as scikit-image's ``gaussian``).
    tile_shape
        Tile size; default: the whole axis halved until a tile holds at most ``tile_voxels`` voxels, always
        halving the axis that is longest relative to its halo.
    cache_bytes
        Bound of the tile cache (LRU by bytes). Must hold at least one tile's features.
    intensity
        ``(offset, scale)`` applied before filtering (``(x - offset) / scale``); default: mean and standard
        deviation of a strided sample. The filters are linear, so this only conditions the float32 values.
    section_norm
        ``None`` (default): one ``intensity`` mapping for the volume; an axis (0-2): every slice along it
        standardised on its own mean and spread (:func:`section_statistics`) instead; ``"auto"``: that axis
        where :func:`choose_section_norm` finds sections imaged differently, else ``None``.
    """

    def __init__(self, image: Any, spacing: Sequence[float] | None = None, *, sigmas: Sequence[float] = ILASTIK_SIGMAS,
                 families: Sequence[str] = FAMILIES, mode: str = "3d", flat_axis: int = 0, min_sigma: float = 0.3,
                 tile_shape: Sequence[int] | None = None, tile_voxels: int = 1 << 20, cache_bytes: int = 1 << 30,
                 intensity: tuple[float, float] | None = None, boundary: str = "reflect",
                 section_norm: int | str | None = None) -> None:
        shape = tuple(int(s) for s in getattr(image, "shape", ()))
        if len(shape) not in (2, 3):
            raise InputError(f"the image has shape {shape} ({len(shape)}D); FeatureBank takes a 2D (Y, X) or 3D (Z, Y, X) array")
        if min(shape) < 1:
            raise InputError(f"the image has shape {shape}, which is empty")
        dtype = np.dtype(getattr(image, "dtype", np.float32))
        if dtype.kind not in "biuf":
            raise InputError(f"the image has dtype {dtype}, which is not numeric")
        if spacing is not None:
            spacing = tuple(float(s) for s in spacing)
            if len(spacing) != len(shape) or not all(math.isfinite(s) and s > 0 for s in spacing):
                raise InputError(f"spacing must be {len(shape)} positive numbers (one per axis of shape {shape}), got {spacing}")
        unknown = [f for f in families if f not in FAMILIES]
        if unknown or not families:
            raise InputError(f"unknown filter families {unknown or list(families)}; choose from {', '.join(FAMILIES)}")
        sig = [float(s) for s in sigmas]
        if not sig or not all(math.isfinite(s) and s > 0 for s in sig):
            raise InputError(f"sigmas must be positive numbers, got {list(sigmas)}")
        if mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
        if mode == "inplane" and len(shape) != 3:
            raise InputError("mode='inplane' needs a 3D volume; a 2D image is a single plane: use mode='3d'")
        if not 0 <= int(flat_axis) < len(shape):
            raise InputError(f"flat_axis {flat_axis} is not an axis of a {len(shape)}D image")
        if boundary not in BOUNDARIES:
            raise InputError(f"boundary must be one of {', '.join(BOUNDARIES)}, got {boundary!r}")
        self.boundary = boundary
        self.image = image
        self.shape = shape
        self.ndim = len(shape)
        self.spacing = spacing
        self.sigmas = tuple(sorted(sig))
        self.families = tuple(f for f in FAMILIES if f in families)
        self.mode = mode
        self.flat_axis = int(flat_axis)
        self.min_sigma = float(min_sigma)
        # one plan per orientation: (scales, flat axes, halo); key None except in-plane mode (key = the plane's axis)
        self._plans: dict[int | None, tuple[list[_Scale], tuple[int, ...], tuple[int, ...]]] = {}
        if mode == "inplane":
            for a in range(self.ndim):
                sc, names, halo = feature_plan(self.ndim, None, self.sigmas, self.families, "2d", a, self.min_sigma)
                self._plans[a] = (sc, (a,), halo)
            self.halo = tuple(max(p[2][d] for p in self._plans.values()) for d in range(self.ndim))
        else:
            sc, names, self.halo = feature_plan(self.ndim, spacing, self.sigmas, self.families, mode, self.flat_axis, self.min_sigma)
            self._plans[None] = (sc, (self.flat_axis,) if mode == "2d" else (), self.halo)
        self._scales, self._flat = self._plans[self.flat_axis if mode == "inplane" else None][:2]
        self.feature_names = names
        self.n_features = len(self.feature_names)
        if tile_shape is None:
            self.tile_shape = self._default_tile(int(tile_voxels))
        else:
            ts = tuple(int(t) for t in tile_shape)
            if len(ts) != self.ndim or min(ts) < 1:
                raise InputError(f"tile_shape must be {self.ndim} positive integers, got {tuple(tile_shape)}")
            self.tile_shape = tuple(min(t, n) for t, n in zip(ts, shape))
        self.grid = tuple(-(-n // t) for n, t in zip(shape, self.tile_shape))
        self.tile_bytes = int(np.prod(self.tile_shape)) * self.n_features * 4
        self.cache_bytes = int(cache_bytes)
        if self.cache_bytes < self.tile_bytes:
            raise InputError(
                f"cache_bytes={self.cache_bytes} cannot hold one tile's features ({self.tile_bytes} bytes: tile "
                f"{self.tile_shape} x {self.n_features} features x 4 bytes); raise cache_bytes or pass a smaller tile_shape")
        if intensity is None:
            step = max(1, int(round((np.prod(shape) / 1e6) ** (1 / self.ndim))))
            sample = np.asarray(image[tuple(slice(None, None, step) for _ in shape)], np.float64)
            offset, scale = float(sample.mean()), float(sample.std())
        else:
            offset, scale = (float(v) for v in intensity)
        self.intensity = (offset, scale if scale > 0 else 1.0)
        if section_norm == "auto":
            axis, self.section_reason = choose_section_norm(image) if self.ndim == 3 else (None, "section_norm off: a 2D image")
        elif section_norm is None:
            axis, self.section_reason = None, "section_norm off"
        elif isinstance(section_norm, (int, np.integer)) and not isinstance(section_norm, bool) and 0 <= int(section_norm) < self.ndim:
            axis, self.section_reason = int(section_norm), f"section_norm={int(section_norm)} (given)"
        else:
            raise InputError(f"section_norm must be None, 'auto' or an axis 0..{self.ndim - 1}, got {section_norm!r}")
        #: The axis whose slices are standardised one by one (``None``: the one ``intensity`` mapping) and their statistics.
        self.section_axis: int | None = axis
        self.section_stats = None if axis is None else tuple(v.astype(np.float32) for v in section_statistics(image, axis))
        self._cache: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.RLock()
        #: Filters through :class:`_Separable` (crop after each axis); False: whole-block scipy filters
        #: then the crop, as before (kept for ``benchmarks/bench_plane_features.py``'s side-by-side).
        self.separable = True
        self.stats = {"tiles_computed": 0, "hits": 0, "misses": 0, "evictions": 0, "compute_seconds": 0.0}

    # ------------------------------------------------------------------ layout
    def _default_tile(self, budget: int) -> tuple[int, ...]:
        """Thin along the coarsest axis of an anisotropic volume (the plane the expert views: a plane costs
        few slices), else cut greedily where the halo overhead grows least; at most ``budget`` voxels."""
        shape = self.shape
        tile = list(shape)

        def overhead(t: Sequence[int]) -> float:
            return float(np.prod([min(n, x + 2 * h) / x for n, x, h in zip(shape, t, self.halo)]))

        sp = self.spacing
        if sp is not None and max(sp) / min(sp) >= 2.0:
            thin = int(np.argmax(sp))
            plane = int(np.prod([n for a, n in enumerate(shape) if a != thin]))
            tile[thin] = max(1, min(shape[thin], budget // max(plane, 1)))
        while int(np.prod(tile)) > budget:
            cands = [a for a in range(self.ndim) if tile[a] > 8]
            if not cands:
                break
            def after(a: int) -> float:
                t = list(tile)
                t[a] = -(-t[a] // 2)
                return overhead(t)
            a = min(cands, key=lambda a: (after(a), -tile[a]))
            tile[a] = -(-tile[a] // 2)
        return tuple(tile)

    def _key(self, tile: Sequence[int]) -> tuple[int, ...]:
        """A cache key: the tile's grid index, prefixed by its orientation (the plane's axis) in in-plane mode."""
        key = tuple(int(t) for t in tile)
        if self.mode != "inplane":
            if len(key) != self.ndim:
                raise InputError(f"a tile index has {self.ndim} entries, got {key}")
            return key
        if len(key) == self.ndim:
            return (self.flat_axis,) + key
        if len(key) != self.ndim + 1 or not 0 <= key[0] < self.ndim:
            raise InputError(f"an in-plane tile key is (axis, {', '.join('i' * self.ndim)}), got {key}")
        return key

    def _grid_index(self, tile: Sequence[int]) -> tuple[int, ...]:
        t = tuple(int(v) for v in tile)
        return t[1:] if self.mode == "inplane" and len(t) == self.ndim + 1 else t

    def tile_slices(self, tile: Sequence[int]) -> tuple[slice, ...]:
        """The voxels of a tile (a grid index, or an in-plane key ``(axis, *index)``)."""
        return tuple(slice(i * t, min((i + 1) * t, n)) for i, t, n in zip(self._grid_index(tile), self.tile_shape, self.shape))

    def orientation(self, block: Any, axis: int | None = None) -> int | None:
        """In-plane mode: the axis whose plane features a block gets (``axis`` if given, else the one axis along which
        the block is a single plane of a longer volume, else ``flat_axis``); ``None`` in the other modes."""
        if self.mode != "inplane":
            return None
        if axis is not None:
            if not 0 <= int(axis) < self.ndim:
                raise InputError(f"axis {axis} is not an axis of a {self.ndim}D volume")
            return int(axis)
        sl = _check_slices(block, self.shape)
        thin = [a for a, (s, n) in enumerate(zip(sl, self.shape)) if s.stop - s.start == 1 and n > 1]
        return thin[0] if len(thin) == 1 else self.flat_axis

    def tiles_of(self, block: Any, axis: int | None = None) -> list[tuple[int, ...]]:
        """The tiles a block (slices or indices per axis) touches: grid indices, or in in-plane mode keys
        ``(axis, *index)`` of the block's orientation (see :meth:`orientation`); each can be passed to :meth:`tile_features`."""
        sl = _check_slices(block, self.shape)
        ranges = [range(s.start // t, (s.stop - 1) // t + 1) for s, t in zip(sl, self.tile_shape)]
        o = self.orientation(sl, axis)
        pre = () if o is None else (o,)
        return [pre + tuple(idx) for idx in itertools.product(*ranges)]

    @property
    def cached_bytes(self) -> int:
        return self._cached_bytes

    @property
    def cached_tiles(self) -> int:
        return len(self._cache)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._cached_bytes = 0

    # ----------------------------------------------------------------- compute
    def _compute_tile(self, key: tuple[int, ...]) -> np.ndarray:
        import time

        t0 = time.perf_counter()
        out = self._compute_block(self.tile_slices(key), key[0] if self.mode == "inplane" else None)
        self.stats["tiles_computed"] += 1
        self.stats["compute_seconds"] += time.perf_counter() - t0
        return out

    def block_features(self, block: Any, axis: int | None = None) -> np.ndarray:
        """Features of any block computed directly from the block grown by the halo, channel first
        ``(F, *block_shape)``, **not** cached and not cut into tiles (equal to :meth:`features`, tested).

        For a plane whose tiles cannot all stay in the cache (a 2048^2 plane of a 3D volume touches
        tiles worth several GB): only the plane's own voxels are computed and kept, where the tiles
        would compute (and evict) every voxel of their depth. ``axis``: as in :meth:`features`."""
        sl = _check_slices(block, self.shape)
        return self._compute_block(sl, self.orientation(sl, axis) if self.mode == "inplane" else None)

    def _compute_block(self, core: tuple[slice, ...], plan: int | None) -> np.ndarray:
        scales, flat, halo = self._plans[plan]
        padded = tuple(slice(max(0, s.start - h), min(n, s.stop + h)) for s, h, n in zip(core, halo, self.shape))
        img = np.asarray(self.image[padded], np.float32)
        if self.section_axis is None:
            off, sc = self.intensity
            img = (img - np.float32(off)) / np.float32(sc)
        else:  # every slice along section_axis on its own statistics (those of the whole slice, not of the block)
            a = self.section_axis
            shp = [1] * self.ndim
            shp[a] = -1
            mean, std = (v[padded[a]].reshape(shp) for v in self.section_stats)
            img = (img - mean) / std
        crop = tuple(slice(s.start - p.start, s.stop - p.start) for s, p in zip(core, padded))
        out = np.empty((self.n_features,) + tuple(s.stop - s.start for s in core), np.float32)
        k = 0
        for scale in scales:
            for ch in _scale_features(img, scale, self.min_sigma, flat, crop, self.boundary, self.separable):
                out[k] = ch
                k += 1
        return out

    def tile_features(self, tile: Sequence[int]) -> np.ndarray:
        """The features of one tile, channel first ``(F, *tile_extent)`` (cached or computed and cached). Read-only.

        ``tile``: a grid index, as :meth:`tiles_of` returns; in in-plane mode ``(axis, *index)`` (a bare grid index
        means ``flat_axis``'s orientation)."""
        tile = self._key(tile)
        with self._lock:
            arr = self._cache.get(tile)
            if arr is not None:
                self._cache.move_to_end(tile)
                self.stats["hits"] += 1
                return arr
            self.stats["misses"] += 1
            arr = self._compute_tile(tile)
            arr.flags.writeable = False
            while self._cache and self._cached_bytes + arr.nbytes > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached_bytes -= old.nbytes
                self.stats["evictions"] += 1
            self._cache[tile] = arr
            self._cached_bytes += arr.nbytes
            return arr

    def features(self, block: Any, axis: int | None = None) -> np.ndarray:
        """Features of a block, ``(*block_shape, F)`` float32; integer indices keep their axis (length 1).

        ``block`` is one slice (or integer) per axis, e.g. ``(slice(0, 4), 10, slice(None))``. ``axis``: in in-plane
        mode, the orientation whose plane features to return (default: see :meth:`orientation`); ignored otherwise.
        """
        sl = _check_slices(block, self.shape)
        out = np.empty(tuple(s.stop - s.start for s in sl) + (self.n_features,), np.float32)
        for tile in self.tiles_of(sl, axis):
            tsl = self.tile_slices(tile)
            inter = [slice(max(a.start, b.start), min(a.stop, b.stop)) for a, b in zip(sl, tsl)]
            src = tuple(slice(i.start - t.start, i.stop - t.start) for i, t in zip(inter, tsl))
            dst = tuple(slice(i.start - s.start, i.stop - s.start) for i, s in zip(inter, sl))
            arr = self.tile_features(tile)[(slice(None),) + src]
            out[dst] = np.moveaxis(arr, 0, -1)
        return out

    def features_at(self, coords: Any, axes: Any = None) -> np.ndarray:
        """Features of individual voxels: ``coords`` is ``(N, ndim)`` integer indices; returns ``(N, F)``.

        ``axes``: in in-plane mode, the axis of the plane each voxel was labelled on (one int for all, or ``(N,)``);
        default ``flat_axis``. Ignored in the other modes.
        """
        c = np.asarray(coords)
        if c.ndim != 2 or c.shape[1] != self.ndim:
            raise InputError(f"coords must be an (N, {self.ndim}) array of voxel indices, got shape {c.shape}")
        if c.size and c.dtype.kind not in "iu":
            if not np.all(np.mod(c, 1) == 0):
                raise InputError("coords must be integer voxel indices")
        c = c.astype(np.int64)
        if c.size and (c.min(0) < 0).any() or c.size and (c.max(0) >= np.array(self.shape)).any():
            raise InputError(f"coords fall outside the volume of shape {self.shape}")
        out = np.empty((c.shape[0], self.n_features), np.float32)
        if not c.shape[0]:
            return out
        tid = c // np.array(self.tile_shape)
        grid = self.grid
        if self.mode == "inplane":
            ax = np.broadcast_to(np.asarray(self.flat_axis if axes is None else axes), (c.shape[0],))
            if ax.dtype.kind not in "iu" or (ax < 0).any() or (ax >= self.ndim).any():
                raise InputError(f"axes must be axis numbers 0..{self.ndim - 1} (one, or one per voxel), got {np.unique(ax)[:5]}")
            tid = np.column_stack([ax.astype(np.int64), tid])
            grid = (self.ndim,) + grid
        keys = np.ravel_multi_index(tid.T, grid)
        order = np.argsort(keys, kind="stable")
        uniq, starts = np.unique(keys[order], return_index=True)
        ends = list(starts[1:]) + [len(order)]
        for key, s, e in zip(uniq, starts, ends):
            idx = order[s:e]
            tile = tuple(int(v) for v in np.unravel_index(int(key), grid))
            arr = self.tile_features(tile)
            local = c[idx] - np.array([t.start for t in self.tile_slices(tile)])
            out[idx] = arr[(slice(None),) + tuple(local.T)].T
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape), "spacing": None if self.spacing is None else list(self.spacing),
            "mode": self.mode, "boundary": self.boundary, "sigmas": list(self.sigmas),
            "section_norm": self.section_axis, "section_reason": self.section_reason, "families": list(self.families), "n_features": self.n_features,
            "halo": list(self.halo), "tile_shape": list(self.tile_shape), "cache_bytes": self.cache_bytes,
            "axis_sigmas": {f"{s.scale:g}": list(s.sigma) for s in self._scales},
            **({"orientations": "2D features in the plane of each voxel's slice (sigmas in pixels)"} if self.mode == "inplane" else {}),
        }
