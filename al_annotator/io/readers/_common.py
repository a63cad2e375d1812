"""What every reader shares: the options it is given, and helpers for its checks and errors."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

from ...errors import InputError
from .._lazy import native
from ..volume import VolumeData, to_zyx

__all__ = ["ReadOptions", "Reader", "natural_key"]


@dataclass(frozen=True)
class ReadOptions:
    """The options of :func:`read_volume`, passed to every reader.

    Attributes
    ----------
    dataset
        HDF5 dataset path, OME-Zarr node path, DICOM SeriesInstanceUID, or TIFF series index.
    shape, dtype, byte_order, offset
        Raw binary layout (``raw`` only).
    channel
        Channel to keep from a 4D array.
    """

    dataset: str | None = None
    shape: tuple[int, ...] | None = None
    dtype: Any = None
    channel: int | None = None
    byte_order: str = "<"
    offset: int = 0


class Reader(Protocol):
    """A reader: ``reader(path, options) -> VolumeData`` (array 3D, or N-D for :func:`to_zyx` to fix)."""

    def __call__(self, path: Path, options: ReadOptions) -> VolumeData: ...


def natural_key(name: str) -> list[Any]:
    """Sort key that orders digit runs numerically: ``slice_2`` < ``slice_10``."""
    return [(0, int(t), t) if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", name) if t != ""]


def _head(path: Path, n: int = 512) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _reject(opts: ReadOptions, fmt: str, *, allow_dataset: bool = False) -> None:
    """Refuse raw-only options (and ``dataset`` where meaningless) for a format that ignores them."""
    bad = []
    if opts.shape is not None:
        bad.append("shape")
    if opts.dtype is not None:
        bad.append("dtype")
    if opts.offset:
        bad.append("offset")
    if opts.byte_order not in ("<", "little"):
        bad.append("byte_order")
    if opts.dataset is not None and not allow_dataset:
        bad.append("dataset")
    if bad:
        raise InputError(
            f"option(s) {', '.join(bad)} do not apply to {fmt} files (shape/dtype/offset/byte_order are for "
            "format='raw'); leave them out, or pass format='raw' if this is a headerless binary file"
        )


def _finish(
    array: Any,
    *,
    opts: ReadOptions,
    axes: str | None,
    source: str,
    meta: dict[str, Any],
    resources: Sequence[Any] = (),
) -> Any:
    """``array`` in ZYX order with the channel picked; closes ``resources`` when that fails."""
    try:
        arr, info = to_zyx(native(array, source=source), axes=axes, channel=opts.channel, source=source)
    except InputError:
        for r in resources:
            r.close()
        raise
    meta.update({k: v for k, v in info.items() if v is not None})
    return arr


def _spacing3(values: Sequence[Any] | None) -> tuple[float, float, float] | None:
    """Three positive finite floats, or ``None``."""
    if values is None:
        return None
    try:
        vals = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None
    if len(vals) != 3 or not all(math.isfinite(v) and v > 0 for v in vals):
        return None
    return vals  # type: ignore[return-value]


def _file_size(path: Path) -> int:
    return os.stat(path).st_size


def _truncated(path: Path, what: str, need: int, have: int, remedy: str = "") -> InputError:
    return InputError(
        f"cannot read {path}: the file is truncated: {what} needs {need} bytes but the file has {have} bytes. "
        + (remedy or "Copy or export the file again (it was probably cut short by an interrupted transfer)")
    )
