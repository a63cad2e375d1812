"""``raw``: headerless binary, memory-mapped.

``shape=(Z, Y, X)`` and ``dtype`` are required, ``offset`` header bytes, ``byte_order``. Nothing in
the file says it is raw, so there is no sniffer and the format is not offered to napari.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ..volume import VolumeData
from ._common import ReadOptions, _file_size, _finish
from ._registry import Format

__all__ = ["FORMAT", "read_raw"]


_BYTE_ORDERS = {"<": "<", "little": "<", ">": ">", "big": ">", "=": "=", "native": "=", "|": "|"}


def _parse_shape(shape: Any) -> tuple[int, ...]:
    try:
        parts = shape.replace("x", ",").split(",") if isinstance(shape, str) else list(shape)
        out = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise InputError(f"shape must be integers such as (Z, Y, X) = (512, 512, 512), got {shape!r}") from None
    if any(n < 0 for n in out):
        raise InputError(f"shape must not have negative sizes, got {out}")
    return out


def read_raw(path: Path, opts: ReadOptions) -> VolumeData:
    """Memory-map a headerless binary file with the given ``shape`` (Z, Y, X), ``dtype``, ``offset``, ``byte_order``."""
    src = str(path)
    if opts.dataset is not None:
        raise InputError("dataset= does not apply to raw files; leave it out")
    if opts.shape is None or opts.dtype is None:
        missing = " and ".join(n for n, v in (("shape", opts.shape), ("dtype", opts.dtype)) if v is None)
        raise InputError(
            f"{src}: a raw binary file has no header, so {missing} must be given, e.g. "
            "read_volume(path, format='raw', shape=(Z, Y, X), dtype='uint16', offset=0, byte_order='<')"
        )
    shape = _parse_shape(opts.shape)
    try:
        dtype = np.dtype(opts.dtype)
    except TypeError as exc:
        raise InputError(f"{src}: dtype {opts.dtype!r} is not a NumPy dtype; use e.g. 'uint16', 'float32'") from exc
    bo = _BYTE_ORDERS.get(str(opts.byte_order).lower())
    if bo is None:
        raise InputError(f"byte_order must be '<' (little-endian), '>' (big-endian) or '=' (native), got {opts.byte_order!r}")
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(bo)
    offset = int(opts.offset)
    if offset < 0:
        raise InputError(f"offset must be >= 0 bytes, got {offset}")
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = _file_size(path)
    if size != need:
        raise InputError(
            f"{src}: the file size does not match the shape: the file has {size} bytes but shape {shape} of "
            f"{dtype.name} ({dtype.itemsize} bytes per voxel) with offset {offset} needs {need} bytes; "
            "check shape (Z, Y, X), dtype and offset (header bytes)"
        )
    if 0 in shape:
        raise InputError(f"{src}: the volume is empty (shape {shape} has a zero-length axis); give the real shape (Z, Y, X)")
    if dtype.kind not in "biuf":
        raise InputError(f"{src}: dtype {dtype} is not numeric; raw volumes need an integer or float dtype such as 'uint16'")
    arr = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    meta: dict[str, Any] = {"offset": offset, "byte_order": bo}
    arr = _finish(arr, opts=opts, axes=None, source=src, meta=meta)
    return VolumeData(arr, None, None, "raw", src, meta)


FORMAT = Format("raw", read_raw, suffixes=(".raw", ".bin", ".dat", ".vol"), aliases=("bin",), self_describing=False)
