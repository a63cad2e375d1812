"""The one entry point: :func:`read_volume` picks a reader from the registry and checks what it returns."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...errors import AlAnnotatorError, InputError
from .._lazy import LazyView
from ..volume import VolumeData, validate_volume
from ._common import ReadOptions, _finish
from ._registry import READERS, detect_format, format_name, not_found

__all__ = ["read_volume"]


def read_volume(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    dataset: str | None = None,
    shape: Sequence[int] | str | None = None,
    dtype: Any = None,
    channel: int | None = None,
    byte_order: str = "<",
    offset: int = 0,
) -> VolumeData:
    """Open a 3D volume lazily and return it as ``(Z, Y, X)`` with its spacing.

    Parameters
    ----------
    path
        File or folder.
    format
        Registry name (see :data:`READERS`); detected by :func:`detect_format` when ``None``.
    dataset
        HDF5 dataset path (``"/entry/data/data"``), OME-Zarr node (``"labels/cells"``), DICOM
        SeriesInstanceUID, or TIFF series index.
    shape, dtype, byte_order, offset
        Layout of a ``raw`` binary file (``shape`` in (Z, Y, X) order, ``offset`` header bytes).
    channel
        Channel to keep from a 4D array (see :func:`~al_annotator.io.volume.to_zyx`).

    Returns
    -------
    VolumeData
        Close it (or use ``with``) to release open files. Intensities are as stored (no rescaling to
        uint8); only DICOM/NIfTI rescale slope/intercept are applied, and only when not identity.

    Raises
    ------
    InputError
        Missing path, unknown/undetectable format, unreadable/truncated file, 2D/4D/empty/non-numeric
        volume. NaN/inf are only checked by :func:`validate_volume`.

    Examples
    --------
    >>> with read_volume("scan.h5", dataset="/entry/data/data") as vol:  # doctest: +SKIP
    ...     for z0, slab in vol.iter_slabs(64):
    ...         store[z0 : z0 + len(slab)] = slab
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise not_found(p)
    fmt = format_name(format) if format is not None else detect_format(p)
    opts = ReadOptions(
        dataset=str(dataset) if dataset is not None else None,
        shape=tuple(shape) if shape is not None and not isinstance(shape, str) else shape,  # type: ignore[arg-type]
        dtype=dtype,
        channel=channel,
        byte_order=byte_order,
        offset=offset,
    )
    try:
        vol = READERS[fmt](p, opts)
    except AlAnnotatorError:
        raise
    except Exception as exc:
        raise InputError(
            f"cannot read {p} as {fmt}: {type(exc).__name__}: {exc}; the file may be truncated, corrupted or not a "
            f"{fmt} file (pass format= to choose another reader)"
        ) from exc
    if not isinstance(vol, VolumeData):
        raise InputError(f"reader {fmt!r} returned {type(vol).__name__}, not VolumeData; fix the registered reader")
    try:
        if vol.ndim != 3:
            meta = dict(vol.metadata)
            arr = _finish(vol.array, opts=opts, axes=None, source=str(p), meta=meta)
            vol = replace(vol, array=arr, metadata=meta)
        if vol.format != fmt:
            vol = replace(vol, format=fmt)
        validate_volume(vol, check_finite=False)
        vol = _normalize_dtype(vol)
    except BaseException:
        vol.close()
        raise
    return vol


def _normalize_dtype(vol: VolumeData) -> VolumeData:
    """Bool volumes read as uint8 0/1; dtypes in their canonical numpy spelling.

    tifffile gives 64-bit TIFFs the ``long long`` dtype (``'q'``), which equals ``int64`` but is
    another numpy dtype class that zarr does not know: the project build would fail on it.
    """
    dt = vol.dtype
    meta = dict(vol.metadata)
    if dt == np.bool_:
        arr = LazyView(vol.array, convert=lambda a: a.astype(np.uint8), dtype=np.uint8, source=vol.source)
        meta["converted_from"] = "bool"
        return replace(vol, array=arr, metadata=meta)
    canon = np.dtype(dt.str)
    if type(canon) is type(dt):
        return vol
    arr = vol.array.view(canon) if isinstance(vol.array, np.ndarray) else LazyView(vol.array, dtype=canon, source=vol.source)
    return replace(vol, array=arr)
