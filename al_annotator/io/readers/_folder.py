"""``slices``: a folder of 2D TIFF or PNG slices.

Naturally sorted by file name (``slice_2`` < ``slice_10``); file i is ``z = i``. No spacing. Read
slice by slice on demand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import AlAnnotatorError, InputError
from .._lazy import PlaneStackArray
from ..volume import VolumeData
from ._common import ReadOptions, _file_size, _finish, _reject, natural_key
from ._registry import Format
from ._tiff import _CORRUPT, _tifffile_log

__all__ = ["FORMAT", "read_slices"]


_SLICE_SUFFIXES = {".tif": "tiff", ".tiff": "tiff", ".png": "png"}


_SLICE_SUFFIXES = {".tif": "tiff", ".tiff": "tiff", ".png": "png"}


def _slice_files(folder: Path) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    for p in folder.iterdir():
        if p.name.startswith(".") or not p.is_file():
            continue
        kind = _SLICE_SUFFIXES.get(p.suffix.lower())
        if kind:
            groups.setdefault(kind, []).append(p)
    return groups


def read_slices(path: Path, opts: ReadOptions) -> VolumeData:
    """Read a folder of 2D TIFF or PNG slices, naturally sorted by name."""
    _reject(opts, "slice-folder")
    src = str(path)
    if not path.is_dir():
        raise InputError(f"{src} is not a folder; format='slices' reads a folder of 2D TIFF/PNG slices")
    groups = _slice_files(path)
    if not groups:
        raise InputError(f"{src}: the folder holds no .tif/.tiff/.png slices; put the 2D slices of the volume in it")
    if len(groups) > 1:
        counts = ", ".join(f"{len(v)} {k.upper()}" for k, v in groups.items())
        raise InputError(f"{src}: the folder mixes slice types ({counts}); keep one kind of slice file per folder")
    kind, files = next(iter(groups.items()))
    files.sort(key=lambda p: natural_key(p.name))

    if len(files) == 1:
        raise InputError(
            f"{src}: the folder holds a single slice ({files[0].name}), a 2D image, not a volume; "
            "put all the slices of the volume in the folder (one 2D image per z)"
        )

    def broken(p: Path, exc: BaseException) -> InputError:
        return InputError(
            f"cannot read the slice {p} ({type(exc).__name__}: {exc}): it is not a readable {kind.upper()}, "
            f"probably truncated or corrupted; the volume in {src} would miss this slice: replace the file with a "
            "good copy (or re-export it), or move it out of the folder if it does not belong to the volume"
        )

    def header(p: Path) -> tuple[Any, ...]:
        try:
            if kind == "tiff":
                import tifffile

                with _tifffile_log() as log, tifffile.TiffFile(p) as tf:
                    if len(tf.series) != 1 or len(tf.series[0].pages) != 1:
                        raise InputError(f"{p} holds several pages; a slice folder needs one 2D image per file")
                    page = tf.series[0].pages[0]
                    end = max((o + c for o, c in zip(page.dataoffsets, page.databytecounts)), default=0)
                    head = (tuple(tf.series[0].shape), np.dtype(tf.series[0].dtype))
                corrupt = [m for m in log.messages if _CORRUPT.search(m)]
                if corrupt:
                    raise ValueError("; ".join(corrupt[:3]))
                if end > _file_size(p):
                    raise EOFError(f"the pixel data end at byte {end} but the file has {_file_size(p)} bytes (truncated)")
                return head
            from PIL import Image

            with Image.open(p) as im:
                return im.size, im.mode
        except AlAnnotatorError:
            raise
        except Exception as exc:  # PIL/tifffile raise many types on broken files
            raise broken(p, exc) from exc

    def read_plane(i: int) -> np.ndarray:
        p = files[i]
        try:
            if kind == "tiff":
                import tifffile

                return tifffile.imread(p)
            from PIL import Image

            with Image.open(p) as im:
                return np.asarray(im)
        except Exception as exc:  # noqa: BLE001 - PIL/tifffile raise many types on broken files
            raise broken(p, exc) from exc

    first = read_plane(0)
    h0 = header(files[0])
    for p in files[1:]:
        h = header(p)
        if h != h0:
            raise InputError(
                f"{src}: slice {p.name} has size/type {h} but {files[0].name} has {h0}; "
                "all slices of a volume must have the same size and pixel type"
            )
    if first.ndim == 3 and first.shape[-1] in (3, 4):
        axes = "ZYXS"
    elif first.ndim == 2:
        axes = "ZYX"
    else:
        raise InputError(f"{src}: slice {files[0].name} has shape {first.shape}; slices must be 2D (grey) or 2D RGB(A) images")
    arr = PlaneStackArray.from_plane_reader((len(files),), first.shape, first.dtype, read_plane, source=src)
    meta: dict[str, Any] = {"files": len(files), "first": files[0].name, "last": files[-1].name, "slice_type": kind}
    arr = _finish(arr, opts=opts, axes=axes, source=src, meta=meta)
    return VolumeData(arr, None, None, "slices", src, meta)


def _sniff_slices(p: Path) -> bool:
    return p.is_dir() and bool(_slice_files(p))


FORMAT = Format(
    "slices", read_slices, sniff=_sniff_slices, folder=True, member_suffixes=tuple(_SLICE_SUFFIXES),
    aliases=("png", "stack", "folder"),
)
