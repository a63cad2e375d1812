"""``npy``: a NumPy ``.npy`` file, memory-mapped (``np.load(mmap_mode="r")``); axes as stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ..volume import VolumeData
from ._common import ReadOptions, _file_size, _finish, _head, _reject, _truncated
from ._registry import Format

__all__ = ["FORMAT", "read_npy"]


def read_npy(path: Path, opts: ReadOptions) -> VolumeData:
    """Read a ``.npy`` file memory-mapped (axes as stored)."""
    _reject(opts, ".npy")
    src = str(path)
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(f)
            else:
                shape, fortran, dtype = fmt._read_array_header(f, version)  # noqa: SLF001
            offset = f.tell()
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise InputError(
            f"cannot read {src} as .npy: {exc}. The file is not a NumPy .npy file or its header is truncated; "
            "save the volume again with np.save"
        ) from exc
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise InputError(
            f"{src}: dtype {dtype} holds Python objects, which are not numeric and cannot be memory-mapped; "
            "save a numeric array (e.g. np.save(path, volume.astype(np.float32)))"
        )
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = _file_size(path)
    if size < need:
        raise _truncated(path, f"the .npy array (shape {tuple(shape)}, {dtype})", need, size)
    if size > need:  # np.save writes the header and the array, nothing after: the header was damaged
        raise InputError(
            f"cannot read {src}: the file is corrupted: its header declares shape {tuple(shape)} of {dtype} "
            f"({need} bytes with the header) but the file has {size} bytes; save the volume again with np.save"
        )
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot read {src} as .npy: {exc}; save the volume again with np.save") from exc
    meta: dict[str, Any] = {"fortran_order": bool(fortran)}
    arr = _finish(arr, opts=opts, axes=None, source=src, meta=meta)
    return VolumeData(arr, None, None, "npy", src, meta)


def _sniff_npy(p: Path) -> bool:
    return p.is_file() and _head(p, 6) == b"\x93NUMPY"


FORMAT = Format("npy", read_npy, suffixes=(".npy",), sniff=_sniff_npy)
