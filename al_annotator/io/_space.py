"""Disk-space checks before a project is built: refuse up front instead of filling the disk.

A tiny file can declare a huge volume (a chunked HDF5 / zarr array that compresses to almost
nothing, a header with a wrong shape); the project stores the image uncompressed, so building it
would write until the disk is full. :func:`create_project` calls :func:`require_free_space` with
:func:`estimate_project_bytes` before it writes anything.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError

__all__ = ["estimate_project_bytes", "format_bytes", "require_free_space", "SPACE_MARGIN_BYTES", "SPACE_MARGIN_FRACTION"]

#: Kept free on top of the estimate: room for the edit log, models, scores and the file system itself.
SPACE_MARGIN_BYTES = 256 << 20
#: ... or this fraction of the estimate, whichever is larger (chunk padding, metadata).
SPACE_MARGIN_FRACTION = 0.05


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``; binary units up to PiB."""
    n = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024:
            return f"{int(n)} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def estimate_project_bytes(shape: Sequence[int], dtype: Any) -> int:
    """An upper bound of the bytes a project of this volume writes: the image uncompressed plus uint8 labels.

    Labels are compressed on disk, but a fully painted volume can compress badly, so they count at
    one byte per voxel. A bool volume is stored as uint8.

    Examples
    --------
    >>> estimate_project_bytes((100, 200, 300), "uint16")  # 2 bytes image + 1 byte labels per voxel
    18000000
    """
    try:
        voxels = 1
        for n in shape:
            n = int(n)
            if n < 0:
                raise ValueError(n)
            voxels *= n
        itemsize = max(1, np.dtype(dtype).itemsize)
    except (TypeError, ValueError) as exc:
        raise InputError(f"cannot estimate the project size of shape {tuple(shape)!r} and dtype {dtype!r}: {exc}") from exc
    return voxels * (itemsize + 1)


def require_free_space(directory: str | os.PathLike[str], nbytes: int, what: str) -> None:
    """Raise :class:`InputError` unless ``directory`` has ``nbytes`` plus a margin free.

    The margin is :data:`SPACE_MARGIN_BYTES` or :data:`SPACE_MARGIN_FRACTION` of ``nbytes``,
    whichever is larger. ``directory`` (or, when it does not exist yet, its nearest existing
    parent) is where the data will be written; ``what`` names it in the message (e.g.
    ``"the project for scan.h5 (2000 x 2000 x 2000 float32)"``).

    Examples
    --------
    >>> require_free_space(".", 1024, "a small test project")  # passes on any machine with 300 MB free
    """
    target = Path(directory).expanduser().absolute()
    probe = target
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        free = int(shutil.disk_usage(probe).free)
    except OSError as exc:
        raise InputError(f"cannot check the free disk space at {probe} for {what}: {exc}; check that the directory is reachable") from exc
    need = int(nbytes)
    margin = max(SPACE_MARGIN_BYTES, int(need * SPACE_MARGIN_FRACTION))
    if free < need + margin:
        raise InputError(
            f"not enough disk space for {what}: it needs about {format_bytes(need)} ({need} bytes) plus a "
            f"{format_bytes(margin)} margin, but {probe} has {format_bytes(free)} ({free} bytes) free. "
            "Free some space there, or choose a project directory on another disk; if the volume should not be "
            "this large, check its shape and dtype (a damaged header can declare a huge volume)"
        )
