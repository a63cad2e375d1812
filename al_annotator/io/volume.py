"""The imported volume (:class:`VolumeData`), its validation, and the axis/channel rules.

Axis convention
---------------
Every reader returns a 3D array indexed ``array[z, y, x]`` (see :data:`al_annotator.types.AXES`);
``spacing`` is given in the same ``(z, y, x)`` order.

Channel rule (:func:`to_zyx`)
-----------------------------
* Singleton axes are squeezed away while the array has more than 3 axes
  (``(1, Z, Y, X)`` -> ``(Z, Y, X)``; non-spatial singleton axes go first).
* A 2D array is an error: a 2D image is not a volume.
* A 4D array needs ``channel=k``. The channel axis is the axis that the file names as
  channel/sample/time (TIFF ``C``/``S``/``T``..., OME-Zarr ``type: channel``, NIfTI's 4th
  dimension). When the file names no axes (HDF5, ``.npy``, raw), the channel axis is the
  *last* axis if it has at most 4 elements and the first axis has more (``(Z, Y, X, C)``,
  interleaved RGB), otherwise the *first* axis (``(C, Z, Y, X)``).
* 5 or more non-singleton axes are an error.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..config import parse_spacing
from ..errors import InputError
from ._lazy import is_lazy, take, transpose

__all__ = ["VolumeData", "validate_volume", "to_zyx", "normalize_unit", "slab_size"]

_UNIT_ALIASES: dict[str, str | None] = {
    "micron": "micrometer", "microns": "micrometer", "um": "micrometer", "µm": "micrometer", "μm": "micrometer",
    "\\u00b5m": "micrometer", "micrometre": "micrometer", "micrometer": "micrometer",
    "nm": "nanometer", "nanometre": "nanometer", "nanometer": "nanometer",
    "mm": "millimeter", "millimetre": "millimeter", "millimeter": "millimeter",
    "cm": "centimeter", "centimetre": "centimeter", "centimeter": "centimeter",
    "m": "meter", "metre": "meter", "meter": "meter",
    "in": "inch", "inch": "inch", "inches": "inch",
    "å": "angstrom", "angstrom": "angstrom", "\\u00c5": "angstrom",
    "pixel": None, "pixels": None, "px": None, "": None, "none": None, "unknown": None,
}


def normalize_unit(unit: Any) -> str | None:
    """Map a length unit as files spell it (``"micron"``, ``"µm"``, ``"mm"``...) to its OME-NGFF name.

    ``"pixel"``, ``""`` and ``None`` mean *no physical unit* and give ``None``; unknown names are
    returned unchanged (stripped).

    Examples
    --------
    >>> normalize_unit("micron"), normalize_unit("\\u00b5m"), normalize_unit("pixel")
    ('micrometer', 'micrometer', None)
    """
    if unit is None:
        return None
    if isinstance(unit, bytes):
        unit = unit.decode("utf-8", "replace")
    text = str(unit).strip()
    key = text.lower()
    return _UNIT_ALIASES[key] if key in _UNIT_ALIASES else text


def slab_size(shape: Sequence[int], itemsize: int, target_bytes: int = 64 << 20) -> int:
    """How many z-slices make a slab of about ``target_bytes`` (at least 1)."""
    plane = int(np.prod(shape[1:], dtype=np.int64)) * itemsize
    return max(1, int(target_bytes // max(plane, 1)))


@dataclass(frozen=True)
class VolumeData:
    """A 3D volume opened for import, with its voxel spacing.

    Parameters
    ----------
    array
        3D ``(Z, Y, X)`` array-like: ``numpy.ndarray``, ``numpy.memmap``, or a lazy array
        (:class:`~al_annotator.io._lazy.LazyView` over ``h5py.Dataset``/``zarr.Array``,
        :class:`~al_annotator.io._lazy.PlaneStackArray`...). All support ``.shape``, ``.dtype``,
        ``arr[z0:z1]`` (returning a ``numpy`` array) and ``np.asarray(arr)``.
    spacing
        Voxel size in ``(z, y, x)`` order, or ``None`` when the file stores none.
    spacing_unit
        OME-NGFF unit name (``"micrometer"``, ``"millimeter"``...) or ``None``.
    format
        The reader's registry name (``"tiff"``, ``"hdf5"``...).
    source
        The path read.
    metadata
        Format details worth keeping (HDF5 dataset path, TIFF axes, DICOM series UID...).
    resources
        Open objects (files) that :meth:`close` closes; the array may need them until then.

    Examples
    --------
    >>> with VolumeData.from_array(np.zeros((2, 3, 4), np.uint8), spacing=(2, 1, 1)) as vol:
    ...     vol.shape, vol.spacing
    ((2, 3, 4), (2.0, 1.0, 1.0))
    """

    array: Any
    spacing: tuple[float, float, float] | None
    spacing_unit: str | None
    format: str
    source: str
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)
    resources: tuple[Any, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def from_array(
        cls,
        array: Any,
        *,
        spacing: Sequence[float] | str | None = None,
        spacing_unit: str | None = None,
        source: str = "<array>",
    ) -> "VolumeData":
        """Wrap an in-memory (or any array-like) volume; ``spacing`` is validated by :func:`parse_spacing`."""
        return cls(array, parse_spacing(spacing), normalize_unit(spacing_unit), "array", source)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    @property
    def ndim(self) -> int:
        return len(self.array.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def is_lazy(self) -> bool:
        """True when the array reads from disk on demand (memmap, HDF5, zarr, page readers)."""
        return is_lazy(self.array)

    def iter_slabs(self, slab: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(z0, block)`` with ``block = np.asarray(array[z0:z0 + slab])`` over the whole volume.

        ``slab`` defaults to about 64 MB worth of slices.
        """
        n = slab or slab_size(self.shape, self.dtype.itemsize)
        for z0 in range(0, self.shape[0], n):
            yield z0, np.asarray(self.array[z0 : z0 + n])

    def to_numpy(self) -> np.ndarray:
        """Read the whole volume into memory."""
        return np.asarray(self.array[...])

    def close(self) -> None:
        """Close the files held open for lazy reading (HDF5, TIFF, gzip); safe to call twice."""
        for res in self.resources:
            with contextlib.suppress(Exception):
                res.close()

    def __enter__(self) -> "VolumeData":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _shape_error(shape: tuple[int, ...], source: str) -> InputError | None:
    nd = len(shape)
    if nd == 3:
        return None
    if nd == 2:
        return InputError(
            f"{source}: a 2D image is not a volume (shape {shape}); al_annotator needs a 3D (Z, Y, X) volume: "
            "give a multipage TIFF, a folder of 2D slices (format='slices') or another 3D file"
        )
    if nd == 4:
        return InputError(
            f"{source}: the array is 4D with shape {shape}; pick one channel with channel=k "
            "(read_volume(..., channel=0)) to get a 3D (Z, Y, X) volume"
        )
    return InputError(
        f"{source}: the array has {nd} dimensions (shape {shape}) but a (Z, Y, X) volume has 3; "
        "save a single 3D channel / time point and import that"
    )


def to_zyx(array: Any, *, axes: str | None = None, channel: int | None = None, source: str = "the volume") -> tuple[Any, dict[str, Any]]:
    """Apply the squeeze and channel rules (see the module docstring) and return a 3D array.

    Parameters
    ----------
    array
        The array as stored.
    axes
        One letter per axis of ``array`` as the file names them (``"ZYX"``, ``"TZCYX"``,
        ``"ZYXS"``...), or ``None`` when unknown.
    channel
        The channel to keep from a 4D array.
    source
        Named in error messages.

    Returns
    -------
    array, info
        The 3D view (numpy view or lazy view, nothing is read) and a dict describing what was done
        (``squeezed`` axes, ``channel_axis``, ``axes_seen``, ``shape_seen``).

    Raises
    ------
    InputError
        2D arrays, 4D arrays without ``channel``, a ``channel`` out of range, 5D+ arrays.
    """
    shape = tuple(int(n) for n in array.shape)
    axes = axes.upper() if axes else None
    if axes is not None and len(axes) != len(shape):
        axes = None
    info: dict[str, Any] = {"shape_seen": shape, "axes_seen": axes}
    spatial = set("ZYX")

    # squeeze singleton axes while there are more than 3 (non-spatial ones first)
    squeezed: list[int] = []
    while len(array.shape) > 3:
        cur = tuple(int(n) for n in array.shape)
        ones = [i for i, n in enumerate(cur) if n == 1]
        if not ones:
            break
        if axes is not None:
            ones.sort(key=lambda i: axes[i] in spatial)
        i = ones[0]
        array = take(array, i, 0, source=source)
        squeezed.append(i)
        if axes is not None:
            axes = axes[:i] + axes[i + 1 :]
    if squeezed:
        info["squeezed"] = squeezed
    shape_now = tuple(int(n) for n in array.shape)

    if len(shape_now) == 3:
        if axes is not None and axes[-1] == "S" and "Z" not in axes:
            raise InputError(
                f"{source}: a 2D image is not a volume: it is a 2D colour image of shape {shape} (axes {info['axes_seen']}); "
                "al_annotator needs a 3D (Z, Y, X) volume: give a multipage TIFF or a folder of slices"
            )
        if channel not in (None, 0):
            raise InputError(
                f"{source}: channel={channel} was given but the volume has no channel axis (shape seen {shape}); "
                "leave channel unset (or 0)"
            )
        if axes is not None and set(axes) == spatial and axes != "ZYX":
            array = transpose(array, [axes.index(a) for a in "ZYX"], source=source)
            info["transposed_from"] = axes
        return array, info

    if len(shape_now) == 4:
        if axes is not None:
            others = [i for i, a in enumerate(axes) if a not in spatial]
            pref = [i for i in others if axes[i] in "CS"] + [i for i in others if axes[i] not in "CS"]
            cax = pref[0] if pref else 0
            how = f"axis {cax} (named {axes[cax]!r} in the file's axes {axes})"
        elif shape_now[-1] <= 4 < shape_now[0]:
            cax = 3
            how = f"the last axis (axis 3, length {shape_now[3]}), as in (Z, Y, X, C)"
        else:
            cax = 0
            how = f"the first axis (axis 0, length {shape_now[0]}), as in (C, Z, Y, X)"
        n = shape_now[cax]
        if channel is None:
            raise InputError(
                f"{source}: the array is 4D with shape {shape_now} (as stored: {shape}); {how} is taken as the "
                f"channel axis: pass channel=k with 0 <= k < {n} to pick one channel and get a (Z, Y, X) volume"
            )
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or not 0 <= int(channel) < n:
            raise InputError(
                f"{source}: channel={channel!r} is out of range: the channel axis ({how}) has {n} channels; "
                f"pass channel=k with 0 <= k < {n}"
            )
        array = take(array, cax, int(channel), source=source)
        info["channel_axis"] = cax
        info["channel"] = int(channel)
        if axes is not None:
            axes = axes[:cax] + axes[cax + 1 :]
            if set(axes) == spatial and axes != "ZYX":
                array = transpose(array, [axes.index(a) for a in "ZYX"], source=source)
                info["transposed_from"] = axes
        return array, info

    err = _shape_error(shape_now, source)
    assert err is not None
    if len(shape_now) > 4:
        err = InputError(
            f"{source}: the array has {len(shape_now)} non-singleton dimensions (shape {shape}"
            + (f", axes {info['axes_seen']}" if info["axes_seen"] else "")
            + "); al_annotator needs a 3D (Z, Y, X) volume: save a single channel and time point and import that"
        )
    raise err


def validate_volume(vol: VolumeData | Any, *, check_finite: bool = True, slab: int = 64) -> None:
    """Check that a volume can be annotated; raise :class:`InputError` naming the problem and the remedy.

    Checks, in order: 3D shape (2D/4D/other ranks rejected), no empty axis, numeric dtype (``bool``,
    integers and floats are accepted; strings, objects, complex, datetimes are not), and, when
    ``check_finite``, no NaN/inf in a float volume (read ``slab`` z-slices at a time, so it works
    on memory-mapped volumes larger than memory).

    Parameters
    ----------
    vol
        A :class:`VolumeData`, or a bare array-like.
    check_finite
        Scan float volumes for NaN and inf (reads the whole volume).
    slab
        Number of z-slices read at a time by the scan.
    """
    if not isinstance(vol, VolumeData):
        vol = VolumeData(vol, None, None, "array", "<array>")
    src = vol.source
    shape = vol.shape
    err = _shape_error(shape, src)
    if err is not None:
        raise err
    if any(n == 0 for n in shape):
        raise InputError(
            f"{src}: the volume is empty (shape {shape} has a zero-length axis); "
            "check the file / dataset / shape you gave: a volume needs at least one voxel along z, y and x"
        )
    dt = vol.dtype
    if dt.kind == "c":
        raise InputError(
            f"{src}: dtype {dt} is complex; a volume must hold real numbers: "
            "save np.abs(volume) or volume.real and import that"
        )
    if dt.kind not in "biuf":
        raise InputError(
            f"{src}: dtype {dt} is not numeric (kind {dt.kind!r}: strings, objects, dates... cannot be annotated); "
            "convert the volume to an integer or float dtype (e.g. array.astype(np.float32)) and import that"
        )
    if not check_finite or dt.kind != "f":
        return
    n_nan = n_inf = 0
    first: int | None = None
    step = max(1, int(slab))
    for z0 in range(0, shape[0], step):
        block = np.asarray(vol.array[z0 : z0 + step])
        bad = ~np.isfinite(block)
        if bad.any():
            nan = int(np.isnan(block).sum())
            n_nan += nan
            n_inf += int(bad.sum()) - nan
            if first is None:
                first = z0 + int(np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))[0])
    if n_nan or n_inf:
        raise InputError(
            f"{src}: the float volume has {n_nan} NaN and {n_inf} inf voxels (first in slice z={first}); "
            "replace them before importing, e.g. np.nan_to_num(volume, nan=0.0, posinf=..., neginf=...)"
        )
