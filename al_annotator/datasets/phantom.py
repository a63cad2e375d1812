"""A seeded synthetic micro-CT phantom of a degrading magnesium bone screw, with complete ground truth.

The phantom imitates a synchrotron micro-CT (SRµCT) volume of a threaded magnesium screw that has
partly degraded inside bone:

* **implant** (label 3): the residual (not yet degraded) Mg screw, a cylinder around the rotation axis
  with a helical thread along ``z``;
* **degradation** (label 4): the degradation layer that replaces the metal from the outside in (so
  the residual screw shrinks) and, as the corrosion products take more volume than the metal they
  replace, also grows outward by a third of the consumed depth. Its thickness varies smoothly over the
  screw surface;
* **bone** (label 2): a cortical ring near the border of the (circular) field of view plus trabecular
  bone in between, grown from a band-thresholded smooth Gaussian random field;
* **background** (label 1): soft tissue, marrow, embedding medium and the region outside the circular
  field of view.

Intensity convention
--------------------
The four classes have the noise-free attenuation values (arbitrary linear-attenuation units) of
:data:`CLASS_ATTENUATION`, in the order

    background (0.05) < degradation (0.35) < implant (0.55) < bone (0.85)

which is how the classes appear in SRµCT of Mg implants: residual Mg alloy (Z = 12, about 1.8 g/cm³)
absorbs less than mineralised bone (hydroxyapatite, with Ca, Z = 20); the porous, hydrated degradation
products are less dense than bone and appear darker than the residual metal, yet denser than soft
tissue or embedding medium (background).

``dtype="float32"`` returns these attenuation values directly (plus artefacts, so background can go
slightly negative as in a real filtered back projection); integer dtypes map them linearly to grey
values, ``grey = offset + scale * attenuation`` (see :data:`GREY_MAPPING`), rounded and clipped to the
dtype's range: for ``uint16`` the clean class values are 12000, 24000, 32000 and 44000.

Imaging artefacts, applied in this order on the image only (labels stay exact):

1. partial-volume blur: a Gaussian of ``blur`` voxels (standard deviation);
2. ring artefacts: concentric rings about the rotation axis (the volume centre, along ``z``), one
   random offset per integer radius, the same on every ``z`` slice, with standard deviation
   ``rings * contrast``;
3. Gaussian noise of standard deviation ``noise * contrast``,

where ``contrast`` is the bone-background attenuation difference (0.8 units).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from numpy.typing import DTypeLike
from scipy import ndimage

from ..config import DEFAULT_CLASSES, parse_spacing
from ..errors import InputError

__all__ = [
    "make_phantom",
    "Phantom",
    "PHANTOM_CLASSES",
    "BACKGROUND",
    "BONE",
    "IMPLANT",
    "DEGRADATION",
    "CLASS_ATTENUATION",
    "GREY_MAPPING",
]

#: The phantom's classes; class ``i`` is stored as label value ``i + 1`` (as in :mod:`al_annotator.config`).
PHANTOM_CLASSES: tuple[str, ...] = tuple(DEFAULT_CLASSES)
BACKGROUND, BONE, IMPLANT, DEGRADATION = 1, 2, 3, 4

#: Noise-free attenuation (arbitrary units) of each class, in class order. See the module docstring.
CLASS_ATTENUATION: tuple[float, ...] = (0.05, 0.85, 0.55, 0.35)

#: ``dtype -> (offset, scale)``: integer grey value = ``offset + scale * attenuation``.
GREY_MAPPING: dict[str, tuple[float, float]] = {
    "uint16": (10000.0, 40000.0),
    "uint8": (16.0, 200.0),
    "float32": (0.0, 1.0),
}

_CONTRAST = CLASS_ATTENUATION[BONE - 1] - CLASS_ATTENUATION[BACKGROUND - 1]
_SLAB_VOXELS = 1 << 22  # voxels per z-slab processed at once (bounds the temporary memory)

# Geometry, relative to the screw's major radius R and the field-of-view radius F = min(Y, X) / 2.
_THREAD_DEPTH = 0.25  # thread depth / R; the core (minor) radius is 0.75 R
_MAX_DEGRADATION = 0.6  # degraded depth / R at degradation = 1 where the field is thickest
_OUTWARD_GROWTH = 1.0 / 3.0  # outward growth of the layer / consumed depth
_CORTEX_INNER, _CORTEX_OUTER = 0.80, 0.93  # cortical ring radii / F
_SCREW_MAX = 0.6  # largest allowed screw radius / F
_NTHETA = 256  # angular bins of the fields on the cylinder surface (interpolated linearly)


@dataclass(frozen=True, slots=True, eq=False)
class Phantom:
    """A synthetic CT volume with its complete ground truth.

    Attributes
    ----------
    image : numpy.ndarray
        ``(Z, Y, X)`` CT intensities of the requested dtype (see the module docstring for the scale).
    labels : numpy.ndarray
        ``(Z, Y, X)`` uint8 ground truth, values ``1..4`` = background, bone, implant, degradation;
        never ``0`` (the ground truth is complete).
    classes : tuple of str
        ``("background", "bone", "implant", "degradation")``; class ``i`` is label value ``i + 1``.
    spacing : tuple of float
        Voxel spacing ``(z, y, x)``.
    class_intensities : tuple of float
        The noise-free intensity of each class in ``image``'s units (class order).
    params : dict
        The arguments that generated the phantom, with the defaults resolved (screw radius, pitch).

    Examples
    --------
    >>> ph = make_phantom((16, 32, 32))
    >>> ph.image.shape, ph.labels.dtype.name, ph.classes[ph.labels[8, 16, 16] - 1]
    ((16, 32, 32), 'uint8', 'implant')
    """

    image: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...] = PHANTOM_CLASSES
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    class_intensities: tuple[float, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape)  # type: ignore[return-value]

    def mask(self, name: str) -> np.ndarray:
        """Boolean mask of one class, e.g. ``ph.mask("implant")``."""
        if name not in self.classes:
            raise InputError(f"unknown class {name!r}; the phantom's classes are {list(self.classes)}")
        return self.labels == self.classes.index(name) + 1


# --------------------------------------------------------------------------------------------------
# validation


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        dims = tuple(int(s) for s in shape)
        ok = len(dims) == 3 and all(int(s) == s for s in shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"shape must be three integers (Z, Y, X) such as (64, 128, 128); got {shape!r}")
    if dims[0] < 1 or dims[1] < 16 or dims[2] < 16:
        raise InputError(
            f"shape {dims} is too small: Z must be >= 1 and Y, X >= 16 so the screw and bone fit; "
            "use e.g. (32, 32, 32) or larger"
        )
    return dims  # type: ignore[return-value]


def _check_range(name: str, value: float, lo: float, hi: float = math.inf) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number in [{lo}, {hi}], got {value!r}") from None
    if not (lo <= v <= hi):
        raise InputError(f"{name} must be in [{lo}, {hi}], got {value!r}")
    return v


def _check_dtype(dtype: DTypeLike) -> str:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in GREY_MAPPING:
        raise InputError(f"dtype must be one of {sorted(GREY_MAPPING)}, got {dtype!r}")
    return name


# --------------------------------------------------------------------------------------------------
# random fields


def _standardised(field_: np.ndarray) -> np.ndarray:
    field_ = field_ - field_.mean(dtype=np.float64)
    std = float(field_.std(dtype=np.float64))
    return (field_ / std if std > 0 else field_).astype(np.float32)


def _surface_field(rng: np.random.Generator, nz: int, ntheta: int, sigma_z: float, sigma_theta: float) -> np.ndarray:
    """A smooth standard-normal field on the cylinder surface ``(z, theta)``, periodic in theta."""
    white = rng.standard_normal((nz, ntheta), dtype=np.float32)
    smooth = ndimage.gaussian_filter(white, (sigma_z, sigma_theta), mode=("reflect", "wrap"))
    return _standardised(smooth)


def _theta_bins(turn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbouring bins and weight of angles (in turns, 0..1) on a periodic grid of ``_NTHETA`` bins."""
    pos = turn.astype(np.float64) * _NTHETA
    b0 = np.floor(pos)
    w = (pos - b0).astype(np.float32)
    b0 = b0.astype(np.intp) % _NTHETA
    return b0, (b0 + 1) % _NTHETA, w


def _on_surface(rows: np.ndarray, bins: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Evaluate ``(z, theta)`` field rows at the pixels' angles, linearly interpolated: ``(z, pixels)``."""
    b0, b1, w = bins
    return rows[:, b0] * (1 - w) + rows[:, b1] * w


def _linear_weights(n: int, step: int, n_coarse: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights interpolating a node-aligned coarse axis (node k at k * step) onto 0..n-1."""
    c = np.arange(n, dtype=np.float64) / step
    i0 = np.minimum(np.floor(c).astype(np.intp), n_coarse - 2)
    w = (c - i0).astype(np.float32)
    return i0, i0 + 1, w


class _CoarseField:
    """A smooth 3D Gaussian random field drawn on a coarse grid, upsampled (trilinear) slab by slab."""

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int, int], sigma: float) -> None:
        self.shape = shape
        self.step = max(1, int(sigma / 1.5))
        coarse_shape = tuple((n - 1) // self.step + 2 for n in shape)
        white = rng.standard_normal(coarse_shape, dtype=np.float32)
        self.coarse = _standardised(ndimage.gaussian_filter(white, sigma / self.step, mode="reflect"))
        self.weights = [_linear_weights(n, self.step, m) for n, m in zip(shape, coarse_shape)]

    def slab(self, z0: int, z1: int) -> np.ndarray:
        if self.step == 1:
            return self.coarse[z0:z1, : self.shape[1], : self.shape[2]]
        out = self.coarse
        for axis, (i0, i1, w) in enumerate(self.weights):
            if axis == 0:
                i0, i1, w = i0[z0:z1], i1[z0:z1], w[z0:z1]
            shp = [1, 1, 1]
            shp[axis] = -1
            w = w.reshape(shp)
            out = np.take(out, i0, axis=axis) * (1 - w) + np.take(out, i1, axis=axis) * w
        return out


# --------------------------------------------------------------------------------------------------
# the phantom


def make_phantom(
    shape: Sequence[int] = (64, 128, 128),
    *,
    seed: int = 0,
    screw_radius: float | None = None,
    thread_pitch: float | None = None,
    degradation: float = 0.5,
    trabecular_fraction: float = 0.25,
    noise: float = 0.05,
    rings: float = 0.05,
    blur: float = 1.0,
    dtype: DTypeLike = "uint16",
    spacing: Sequence[float] | str | None = None,
) -> Phantom:
    """Make a seeded synthetic micro-CT volume of a degrading Mg screw in bone, with ground truth.

    Parameters
    ----------
    shape
        ``(Z, Y, X)``; the screw axis (and the CT rotation axis) is along ``z`` through the centre.
        ``Z >= 1``, ``Y, X >= 16``.
    seed
        Seed of every random component: the same seed (and arguments) gives bit-identical output.
    screw_radius
        Major (thread crest) radius of the screw in voxels; default ``0.2 * min(Y, X)``.
        At most ``0.3 * min(Y, X)`` so that bone fits around it.
    thread_pitch
        Axial distance between thread crests in voxels; default ``clip(Z / 4, 4, screw_radius)``.
    degradation
        In ``[0, 1]``: how much of the screw has degraded. The depth of the degradation layer
        (measured from the original screw surface inwards) is up to ``0.6 * screw_radius * degradation``,
        modulated over the surface by a smooth random field (between 30 % and 100 % of that).
        ``0`` gives no degradation layer.
    trabecular_fraction
        In ``[0, 1]``: bone volume fraction of the trabecular compartment (between the screw and the
        cortical ring).
    noise
        Standard deviation of the additive Gaussian noise relative to the bone-background contrast.
    rings
        Standard deviation of the ring-artefact offsets relative to the bone-background contrast.
    blur
        Standard deviation, in voxels, of the partial-volume Gaussian blur (``0``: none).
    dtype
        ``"uint16"`` (default), ``"uint8"`` or ``"float32"`` (attenuation units); see the module
        docstring for the intensity scale.
    spacing
        Voxel spacing ``(z, y, x)`` recorded on the result; default ``(1, 1, 1)``. It does not change
        the geometry, which is defined in voxels.

    Returns
    -------
    Phantom
        ``image``, ``labels`` (uint8, ``1..4``, no zeros), ``classes``, ``spacing`` and the noise-free
        ``class_intensities``.

    Raises
    ------
    InputError
        For a shape, parameter or dtype outside its documented range.

    Examples
    --------
    >>> ph = make_phantom((32, 64, 64), seed=1)
    >>> ph.image.dtype.name, sorted(int(v) for v in set(ph.labels.ravel().tolist()))
    ('uint16', [1, 2, 3, 4])
    >>> bool((make_phantom((32, 64, 64), seed=1).image == ph.image).all())
    True
    """
    nz, ny, nx = _check_shape(shape)
    dtype_name = _check_dtype(dtype)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    degradation = _check_range("degradation", degradation, 0.0, 1.0)
    trabecular_fraction = _check_range("trabecular_fraction", trabecular_fraction, 0.0, 1.0)
    noise = _check_range("noise", noise, 0.0)
    rings = _check_range("rings", rings, 0.0)
    blur = _check_range("blur", blur, 0.0, 64.0)
    spacing_t = parse_spacing(spacing) if spacing is not None else (1.0, 1.0, 1.0)

    fov = min(ny, nx) / 2.0
    if screw_radius is None:
        screw_radius = 0.4 * fov
    screw_radius = _check_range("screw_radius (voxels)", screw_radius, 1.0, _SCREW_MAX * fov)
    if thread_pitch is None:
        thread_pitch = float(np.clip(nz / 4.0, 4.0, max(4.0, screw_radius)))
    thread_pitch = _check_range("thread_pitch (voxels)", thread_pitch, 1.0)

    rng_surface, rng_trab, rng_rings, rng_noise = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(4)
    )

    # ---- the in-plane polar grid, the same for every z slice
    cy, cx = (ny - 1) / 2.0, (nx - 1) / 2.0
    yy, xx = np.meshgrid(np.arange(ny, dtype=np.float32) - cy, np.arange(nx, dtype=np.float32) - cx, indexing="ij")
    radius = np.hypot(yy, xx)
    theta = np.arctan2(yy, xx)  # [-pi, pi]
    turn = ((theta + np.pi) / (2 * np.pi)).astype(np.float32)  # angle in turns, [0, 1]
    ntheta = _NTHETA

    # ---- smooth fields on the cylinder surface: degradation depth and the cortex radii
    sigma_z = max(1.5, 0.5 * screw_radius)
    sigma_theta = sigma_z / screw_radius * ntheta / (2 * np.pi)
    depth_field = _surface_field(rng_surface, nz, ntheta, sigma_z, sigma_theta)
    cortex_sigma_z = max(2.0, 0.15 * fov)
    cortex_sigma_theta = cortex_sigma_z / fov * ntheta / (2 * np.pi)
    cortex_in_field = _surface_field(rng_surface, nz, ntheta, cortex_sigma_z, cortex_sigma_theta)
    cortex_out_field = _surface_field(rng_surface, nz, ntheta, cortex_sigma_z, cortex_sigma_theta)

    max_depth = _MAX_DEGRADATION * screw_radius * degradation
    depth = max_depth * (0.65 + 0.35 * np.clip(depth_field / 1.5, -1.0, 1.0))  # (Z, ntheta)
    cortex_in = _CORTEX_INNER * fov * (1.0 + 0.04 * np.clip(cortex_in_field, -2.5, 2.5))
    cortex_out = np.maximum(_CORTEX_OUTER * fov * (1.0 + 0.025 * np.clip(cortex_out_field, -2.5, 2.5)), cortex_in + 1.0)

    # ---- trabecular bone: a band |f| < t of a smooth Gaussian field, t set for the volume fraction
    trab = _CoarseField(rng_trab, (nz, ny, nx), sigma=max(1.5, min(ny, nx) / 64.0))
    outer_screw = screw_radius * (1.0 + _MAX_DEGRADATION * _OUTWARD_GROWTH * degradation)
    compartment = (radius > outer_screw + 1.0) & (radius < _CORTEX_INNER * fov * 0.9)
    if not compartment.any():  # a very wide screw: sample the whole inside of the cortex
        compartment = radius < _CORTEX_INNER * fov * 0.9
    if trabecular_fraction <= 0.0:
        threshold = -1.0
    elif trabecular_fraction >= 1.0:
        threshold = math.inf
    else:
        sample_z = np.unique(np.linspace(0, nz - 1, min(nz, 8)).round().astype(np.intp))
        sample = np.concatenate([np.abs(trab.slab(int(z), int(z) + 1)[0][compartment]) for z in sample_z])
        threshold = float(np.quantile(sample, trabecular_fraction))

    # ---- labels, slab by slab; the screw and the cortex are computed only on the pixels they can reach
    labels = np.empty((nz, ny, nx), dtype=np.uint8)
    core = (1.0 - _THREAD_DEPTH) * screw_radius
    thread_depth = _THREAD_DEPTH * screw_radius
    flat_radius = radius.ravel()
    screw_px = np.flatnonzero(flat_radius < screw_radius + _OUTWARD_GROWTH * max_depth + 1.0)
    screw_r, screw_turn = flat_radius[screw_px], turn.ravel()[screw_px]
    screw_bins = _theta_bins(screw_turn)
    cortex_px = np.flatnonzero((flat_radius >= cortex_in.min()) & (flat_radius < cortex_out.max()))
    cortex_r = flat_radius[cortex_px]
    cortex_bins = _theta_bins(turn.ravel()[cortex_px])
    inside = radius < np.float32(cortex_in.min())  # surely inside the cortex, everywhere along z
    slab = max(1, min(nz, _SLAB_VOXELS // (ny * nx)))
    for z0 in range(0, nz, slab):
        z1 = min(nz, z0 + slab)
        lab = np.full((z1 - z0, ny, nx), BACKGROUND, dtype=np.uint8)
        flat = lab.reshape(z1 - z0, ny * nx)
        # trabecular bone inside the cortex
        if threshold >= 0:
            trabecular = np.abs(trab.slab(z0, z1)) <= threshold if math.isfinite(threshold) else np.ones(lab.shape, bool)
            lab[trabecular & inside] = BONE
        # the cortex (and the trabecular bone in the band where the cortex's inner radius varies)
        cin, cout = _on_surface(cortex_in[z0:z1], cortex_bins), _on_surface(cortex_out[z0:z1], cortex_bins)
        ring = flat[:, cortex_px]
        ring[(cortex_r >= cin) & (cortex_r < cout)] = BONE
        if threshold >= 0:
            ring[(cortex_r < cin) & trabecular.reshape(z1 - z0, -1)[:, cortex_px]] = BONE
        flat[:, cortex_px] = ring
        # the screw: original surface r(z, theta) with a helical thread, minus the degraded depth
        z = np.arange(z0, z1, dtype=np.float32)[:, None]
        u = np.mod(z / np.float32(thread_pitch) + screw_turn, np.float32(1.0))
        tri = 1.0 - np.abs(2.0 * u - 1.0)  # triangle wave, 0 at the roots, 1 at the crests
        profile = np.clip(1.25 * tri - 0.125, 0.0, 1.0)  # with short flats at crest and root
        surface = core + thread_depth * profile
        d = _on_surface(depth[z0:z1], screw_bins)
        screw = flat[:, screw_px]
        screw[screw_r < surface + _OUTWARD_GROWTH * d] = DEGRADATION
        screw[screw_r < surface - d] = IMPLANT
        flat[:, screw_px] = screw
        labels[z0:z1] = lab

    # ---- image: class values, blur, rings, noise, then the output dtype (slab-wise, exact halos)
    offset, scale = GREY_MAPPING[dtype_name]
    lut = np.zeros(5, dtype=np.float32)  # class value in output units, indexed by label
    lut[1:] = np.float32(offset) + np.float32(scale) * np.asarray(CLASS_ATTENUATION, dtype=np.float32)
    unit = np.float32(scale * _CONTRAST)
    ring_offsets = (rings * unit) * rng_rings.standard_normal(int(radius.max()) + 2, dtype=np.float32)
    ring_image = ring_offsets[np.rint(radius).astype(np.intp)] if rings > 0 else None
    halo = int(4.0 * blur + 0.5) if blur > 0 else 0
    image = np.empty((nz, ny, nx), dtype=np.dtype(dtype_name))
    info = np.iinfo(image.dtype) if image.dtype.kind == "u" else None
    buffer = np.empty((slab, ny, nx), dtype=np.float32)
    for z0 in range(0, nz, slab):
        z1 = min(nz, z0 + slab)
        h0, h1 = max(0, z0 - halo), min(nz, z1 + halo)
        grey = lut[labels[h0:h1]]
        if blur > 0:  # == gaussian_filter(whole volume, blur) restricted to the slab: z pass on the halo
            ndimage.gaussian_filter1d(grey, blur, axis=0, output=grey, mode="reflect", truncate=4.0)
            grey = grey[z0 - h0 : z1 - h0]
            for axis in (1, 2):
                ndimage.gaussian_filter1d(grey, blur, axis=axis, output=grey, mode="reflect", truncate=4.0)
        if ring_image is not None:
            grey += ring_image
        if noise > 0:
            gauss = buffer[: z1 - z0]
            rng_noise.standard_normal(out=gauss, dtype=np.float32)
            gauss *= np.float32(noise * unit)
            grey += gauss
        if info is not None:  # round half up and clip to the dtype's range
            grey += np.float32(0.5)
            np.clip(grey, info.min, info.max, out=grey)
        image[z0:z1] = grey

    clean = lut[1:] if info is None else np.floor(lut[1:] + np.float32(0.5))
    class_intensities = tuple(float(v) for v in clean)
    params = dict(
        shape=(nz, ny, nx), seed=int(seed), screw_radius=float(screw_radius), thread_pitch=float(thread_pitch),
        degradation=degradation, trabecular_fraction=trabecular_fraction, noise=noise, rings=rings, blur=blur,
        dtype=dtype_name,
    )
    return Phantom(
        image=image, labels=labels, classes=PHANTOM_CLASSES, spacing=spacing_t,
        class_intensities=class_intensities, params=params,
    )
