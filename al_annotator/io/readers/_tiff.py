"""``tiff``: multipage TIFF, ImageJ hyperstack, OME-TIFF.

The first series (``dataset="1"`` picks another) with tifffile's axes: pages are z; the channel axis
is the file's ``C``/``S``/``T`` axis. Spacing from ImageJ metadata (``spacing`` = z, resolution tags =
y, x, ``unit``) or OME ``PhysicalSize{Z,Y,X}``. Memory-mapped when the pixel data are contiguous and
uncompressed, else read page by page on demand. tifffile is imported when a file is read.
"""

from __future__ import annotations

import contextlib
import logging
import re
import struct
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ...errors import AlAnnotatorError, InputError
from .._lazy import PlaneStackArray
from ..volume import VolumeData, normalize_unit
from ._common import ReadOptions, _file_size, _finish, _head, _reject, _spacing3, _truncated
from ._registry import Format

__all__ = ["FORMAT", "read_tiff"]


class _TiffLog(logging.Handler):
    """Collects tifffile's warnings while a file is parsed (tifffile logs instead of raising)."""

    _lock = threading.Lock()

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _tifffile_log() -> Iterator[_TiffLog]:
    logger = logging.getLogger("tifffile")
    handler = _TiffLog()
    with _TiffLog._lock:
        old = logger.propagate
        logger.addHandler(handler)
        logger.propagate = False
        try:
            yield handler
        finally:
            logger.removeHandler(handler)
            logger.propagate = old


_CORRUPT = re.compile(r"invalid|corrupt|truncat|failed|out of range|beyond|incomplete", re.I)


def _tiff_spacing(tf: Any, series: Any, sidx: int) -> tuple[tuple[float, float, float] | None, str | None]:
    if tf.is_ome and tf.ome_metadata:
        try:
            root = ET.fromstring(tf.ome_metadata)
        except ET.ParseError:
            root = None
        if root is not None:
            images = [el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Image"]
            if sidx < len(images):
                px = next((el for el in images[sidx].iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
                if px is not None:
                    sp = _spacing3([px.get("PhysicalSizeZ"), px.get("PhysicalSizeY"), px.get("PhysicalSizeX")])
                    unit = normalize_unit(px.get("PhysicalSizeXUnit", "µm"))
                    return sp, (unit if sp else None)
    page = series.keyframe
    try:
        xres, yres = (float(r) for r in page.resolution)
    except (TypeError, ValueError, ZeroDivisionError):
        xres = yres = 0.0
    resunit = int(getattr(page, "resolutionunit", 1) or 1)
    tag_unit = {2: "inch", 3: "centimeter"}.get(resunit)
    ij = tf.imagej_metadata if tf.is_imagej else None
    if ij:
        unit = normalize_unit(ij.get("unit")) or tag_unit
        has_z = "spacing" in ij
        z = float(ij.get("spacing", 1.0))
        if xres <= 0 or yres <= 0:
            return None, None
        if unit is None and not has_z and xres == 1.0 and yres == 1.0:
            return None, None
        return _spacing3((z, 1.0 / yres, 1.0 / xres)), unit
    return None, None


def read_tiff(path: Path, opts: ReadOptions) -> VolumeData:
    """Read a multipage / ImageJ / OME TIFF (see the module docstring)."""
    import tifffile

    _reject(opts, "TIFF", allow_dataset=True)
    src = str(path)
    try:
        sidx = int(opts.dataset) if opts.dataset is not None else 0
    except ValueError:
        raise InputError(f"dataset={opts.dataset!r}: for a TIFF, dataset is the series index (0, 1, ...)") from None
    tf = None
    try:
        with _tifffile_log() as log:
            tf = tifffile.TiffFile(path)
            if not tf.series:
                raise InputError(f"cannot read {src}: the TIFF has no image series; export the volume again")
            if not 0 <= sidx < len(tf.series):
                raise InputError(f"dataset={opts.dataset!r}: {src} has {len(tf.series)} series (0..{len(tf.series) - 1})")
            series = tf.series[sidx]
            shape, dtype, axes = tuple(series.shape), np.dtype(series.dtype), series.axes
            keyshape = tuple(series.keyframe.shape)
            dataoffset = series.dataoffset
            pages = list(series.pages) if dataoffset is None else []
        corrupt = [m for m in log.messages if _CORRUPT.search(m)]
        if corrupt:
            raise InputError(
                f"cannot read {src}: the TIFF is truncated or corrupted (tifffile: {'; '.join(corrupt[:3])}); "
                "copy or export the file again"
            )
        size = _file_size(path)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        meta: dict[str, Any] = {"series": sidx, "tiff_axes": axes, "imagej": bool(tf.is_imagej), "ome": bool(tf.is_ome)}
        spacing, unit = _tiff_spacing(tf, series, sidx)
        if dataoffset is not None:
            if dataoffset + nbytes > size:
                raise _truncated(path, f"the TIFF's pixel data (shape {shape}, {dtype})", dataoffset + nbytes, size)
            arr: Any = np.memmap(path, dtype=dtype.newbyteorder(tf.byteorder), mode="r", offset=dataoffset, shape=shape)
            tf.close()
            tf = None
            resources: tuple[Any, ...] = ()
            meta["access"] = "memmap"
        else:
            for i, p in enumerate(pages):
                if p is None:
                    raise InputError(f"cannot read {src}: page {i} of the TIFF is missing or corrupted; export the file again")
                end = max((o + c for o, c in zip(p.dataoffsets, p.databytecounts)), default=0)
                if end > size:
                    raise _truncated(path, f"page {i} of the TIFF", end, size)
            npd = len(keyshape)
            lead = shape[: len(shape) - npd]
            if shape[len(shape) - npd :] == keyshape and len(pages) == int(np.prod(lead, dtype=np.int64)):
                tiff = tf

                def read_planes(i0: int, i1: int) -> np.ndarray:
                    data = tiff.asarray(key=range(i0, i1), series=sidx)
                    return np.asarray(data).reshape((i1 - i0,) + keyshape)

                arr = PlaneStackArray(lead, keyshape, dtype, read_planes, source=src)
                resources = (tf,)
                meta["access"] = "pages"
            else:  # exotic layout (volumetric tiles...): read into memory
                arr = series.asarray()
                tf.close()
                tf = None
                resources = ()
                meta["access"] = "memory"
        arr = _finish(arr, opts=opts, axes=axes, source=src, meta=meta, resources=resources)
        return VolumeData(arr, spacing, unit, "tiff", src, meta, resources)
    except AlAnnotatorError:
        if tf is not None and "resources" not in locals():
            tf.close()
        raise
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError, struct.error) as exc:
        if tf is not None:
            tf.close()
        raise InputError(
            f"cannot read {src} as TIFF: {type(exc).__name__}: {exc}. The file is not a valid TIFF or is truncated/"
            "corrupted; check it opens in Fiji, or export it again"
        ) from exc


def _sniff_tiff(p: Path) -> bool:
    return p.is_file() and _head(p, 4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


FORMAT = Format(
    "tiff", read_tiff, suffixes=(".tif", ".tiff", ".btf", ".tf8", ".tf2"), sniff=_sniff_tiff,
    aliases=("tif", "ome-tiff", "ome.tiff", "imagej"),
)
