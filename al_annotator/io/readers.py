"""Volume readers: a registry of formats, format detection and :func:`read_volume`.

Formats (registry names) and axis conventions
---------------------------------------------
Every reader returns a 3D ``(Z, Y, X)`` array and spacing in ``(z, y, x)`` order.

``tiff``
    Multipage TIFF, ImageJ hyperstack, OME-TIFF (``.tif .tiff .btf .tf8``). The first series
    (``dataset="1"`` picks another) with tifffile's axes: pages are z; the channel axis is the
    file's ``C``/``S``/``T`` axis. Spacing from ImageJ metadata (``spacing`` = z, resolution
    tags = y, x, ``unit``) or OME ``PhysicalSize{Z,Y,X}``. Memory-mapped when the pixel data are
    contiguous and uncompressed, else read page by page on demand.
``slices``
    A folder of 2D TIFF or PNG slices, naturally sorted by file name (``slice_2`` < ``slice_10``);
    file i is ``z = i``. No spacing. Read slice by slice on demand.
``hdf5``
    HDF5 / NeXus (``.h5 .hdf5 .hdf .nxs .nx5 .he5``): the array axes as stored are taken as
    ``(Z, Y, X)``. ``dataset="/entry/data/data"`` picks the dataset; else the NeXus default
    ``NXdata``'s ``signal``, else the only dataset with 3 or more dimensions. Spacing from the
    attributes ``element_size_um`` (z, y, x in µm) or ``spacing``/``voxel_size`` + ``unit``, or
    evenly spaced NeXus axis datasets. Lazy (``h5py.Dataset``).
``ome-zarr``
    OME-NGFF 0.4 (zarr v2) or 0.5 (zarr v3) image (``.zarr``, ``.ome.zarr`` or a folder with zarr
    metadata): the first multiscale's full-resolution dataset; axes from ``axes`` (channel axis =
    ``type: channel``); spacing from the ``coordinateTransformations`` scale of the spatial axes.
    ``dataset="labels/cells"`` picks a sub-image (e.g. a label image). Lazy (``zarr.Array``).
``nifti``
    ``.nii`` / ``.nii.gz``. NIfTI stores voxels as ``(X, Y, Z)`` (i fastest); the array is returned
    transposed to ``(Z, Y, X)`` = ``data.T`` (no reorientation by the affine: voxel order as stored),
    and spacing is the header zooms reversed. A 4th dimension is the channel axis. Memory-mapped
    (``.nii``) or streamed (``.nii.gz``). Scaling (``scl_slope``/``scl_inter``) is applied only when
    not identity.
``dicom``
    A folder with one DICOM series (or ``dataset=SeriesInstanceUID``): slices sorted by
    ``ImagePositionPatient`` along the slice normal (fallback ``InstanceNumber``), z = slice order,
    y = rows, x = columns; spacing from slice positions and ``PixelSpacing`` (mm). Rescale
    slope/intercept applied only when not identity. Read slice by slice on demand.
``npy``
    ``np.load(mmap_mode="r")``; axes as stored.
``raw``
    Headerless binary: ``shape=(Z, Y, X)`` and ``dtype`` required, ``offset`` header bytes,
    ``byte_order``; memory-mapped.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import logging
import math
import os
import re
import threading
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from ..errors import AlAnnotatorError, InputError
from ._lazy import LazyView, PlaneStackArray, native
from ._zarr import BloscChunkCheck, blosc_chunk_dir, has_stored_chunks
from .volume import VolumeData, normalize_unit, to_zyx, validate_volume

__all__ = [
    "ReadOptions",
    "Reader",
    "READERS",
    "register_reader",
    "detect_format",
    "read_volume",
    "natural_key",
    "SUFFIXES",
]


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


#: Registry: format name -> reader. Extend with :func:`register_reader`.
READERS: dict[str, Reader] = {}
#: File-name endings -> format name, used by :func:`detect_format` (longest match first).
SUFFIXES: dict[str, str] = {}
_SUFFIXES = SUFFIXES
_SNIFFERS: dict[str, Callable[[Path], bool]] = {}
_ALIASES = {
    "tif": "tiff", "ome-tiff": "tiff", "ome.tiff": "tiff", "imagej": "tiff",
    "h5": "hdf5", "hdf": "hdf5", "nexus": "hdf5", "nxs": "hdf5",
    "zarr": "ome-zarr", "ngff": "ome-zarr", "omezarr": "ome-zarr", "ome_zarr": "ome-zarr",
    "nii": "nifti", "nii.gz": "nifti",
    "dcm": "dicom",
    "png": "slices", "stack": "slices", "folder": "slices",
    "bin": "raw",
}


def register_reader(
    name: str,
    reader: Reader,
    *,
    suffixes: Sequence[str] = (),
    sniff: Callable[[Path], bool] | None = None,
) -> None:
    """Add (or replace) a reader in :data:`READERS`.

    Parameters
    ----------
    name
        Registry name, used as ``read_volume(..., format=name)`` and as ``VolumeData.format``.
    reader
        ``reader(path: Path, options: ReadOptions) -> VolumeData``. It should raise
        :class:`InputError` on bad input; other exceptions are wrapped by :func:`read_volume`.
        A non-3D array is passed through :func:`~al_annotator.io.volume.to_zyx`.
    suffixes
        File-name endings (``".mrc"``) that :func:`detect_format` maps to this reader.
    sniff
        ``sniff(path) -> bool`` used by :func:`detect_format` when no suffix matches.
    """
    if not name or not isinstance(name, str):
        raise InputError(f"a reader needs a non-empty string name, got {name!r}")
    if not callable(reader):
        raise InputError(f"reader for {name!r} must be callable as reader(path, options), got {reader!r}")
    READERS[name] = reader
    for s in suffixes:
        _SUFFIXES[s.lower() if s.startswith(".") else "." + s.lower()] = name
    if sniff is not None:
        _SNIFFERS[name] = sniff


# --------------------------------------------------------------------------------------------- helpers


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


# --------------------------------------------------------------------------------------------- TIFF


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
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError, struct_error()) as exc:
        if tf is not None:
            tf.close()
        raise InputError(
            f"cannot read {src} as TIFF: {type(exc).__name__}: {exc}. The file is not a valid TIFF or is truncated/"
            "corrupted; check it opens in Fiji, or export it again"
        ) from exc


def struct_error() -> type[BaseException]:
    import struct

    return struct.error


# --------------------------------------------------------------------------------------------- slices

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


# --------------------------------------------------------------------------------------------- HDF5


def _attr_str(v: Any) -> str:
    if isinstance(v, (bytes, np.bytes_)):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray) and v.shape == ():
        return _attr_str(v[()])
    return str(v)


def _nx_class(obj: Any) -> str:
    return _attr_str(obj.attrs.get("NX_class", ""))


def _nx_signal(group: Any) -> Any | None:
    import h5py

    sig = group.attrs.get("signal")
    if sig is None:
        return None
    ds = group.get(_attr_str(sig))
    return ds if isinstance(ds, h5py.Dataset) else None


def _hdf5_spacing(f: Any, ds: Any) -> tuple[tuple[float, float, float] | None, str | None]:
    import h5py

    if ds.ndim != 3:
        return None, None
    for holder in (ds, ds.parent):
        if "element_size_um" in holder.attrs:
            sp = _spacing3(np.ravel(holder.attrs["element_size_um"]))
            if sp:
                return sp, "micrometer"
        for key in ("spacing", "voxel_size", "voxel_spacing", "pixel_size"):
            if key in holder.attrs:
                sp = _spacing3(np.ravel(holder.attrs[key]))
                if sp:
                    unit = next((holder.attrs[u] for u in ("unit", "units", "spacing_unit") if u in holder.attrs), None)
                    return sp, normalize_unit(_attr_str(unit)) if unit is not None else None
    grp = ds.parent
    if _nx_class(grp) == "NXdata" and "axes" in grp.attrs:
        names = [_attr_str(a) for a in np.ravel(grp.attrs["axes"])]
        if len(names) == 3:
            steps, units = [], []
            for name, n in zip(names, ds.shape):
                ax = grp.get(name)
                if not isinstance(ax, h5py.Dataset) or ax.ndim != 1 or ax.shape[0] != n or n < 2:
                    return None, None
                vals = np.asarray(ax[()], dtype=np.float64)
                d = np.diff(vals)
                if not np.allclose(d, d[0], rtol=1e-3, atol=0):
                    return None, None
                steps.append(abs(float(d[0])))
                units.append(normalize_unit(_attr_str(ax.attrs["units"])) if "units" in ax.attrs else None)
            sp = _spacing3(steps)
            return sp, (units[2] if sp else None)
    return None, None


def _check_hdf5_storage(src: str, ds: Any) -> None:
    """Refuse a dataset none of whose data was ever written (every voxel would read as the fill value).

    A tiny file can declare a huge shape (a chunked dataset created and never filled); importing it
    would write terabytes of fill values. Virtual and external datasets keep their data elsewhere.
    """
    if ds.size == 0 or ds.is_virtual or ds.external:
        return
    try:
        stored = int(ds.id.get_storage_size())
    except Exception:  # noqa: BLE001 - an unusual layout: no check rather than a false alarm
        return
    if stored == 0:
        fill = ds.fillvalue.item() if hasattr(ds.fillvalue, "item") else ds.fillvalue
        raise InputError(
            f"{src}: the dataset {ds.name} declares shape {tuple(ds.shape)} of {ds.dtype} "
            f"({ds.size * ds.dtype.itemsize} bytes) but none of its data was ever written: every voxel would read as "
            f"the fill value {fill!r}. The file is incomplete (the writer stopped before writing the data); "
            "write or export the volume again, or pass dataset= to choose another dataset"
        )


def read_hdf5(path: Path, opts: ReadOptions) -> VolumeData:
    """Read a dataset of an HDF5 / NeXus file (see the module docstring for how it is chosen)."""
    import h5py

    _reject(opts, "HDF5", allow_dataset=True)
    src = str(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(
            f"cannot read {src} as HDF5: {exc}. The file is not HDF5, or is truncated/corrupted; "
            "check it with `h5ls -r` (or h5py) and copy or export it again"
        ) from exc
    try:
        datasets: list[tuple[str, Any]] = []
        nxdata: list[Any] = []

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                datasets.append(("/" + name, obj))
            elif isinstance(obj, h5py.Group) and _nx_class(obj) == "NXdata":
                nxdata.append(obj)

        f.visititems(visit)

        def listing(items: list[tuple[str, Any]]) -> str:
            return ", ".join(f"{n} {tuple(d.shape)} {d.dtype}" for n, d in items[:20]) + (" ..." if len(items) > 20 else "")

        big = [(n, d) for n, d in datasets if d.ndim >= 3]
        ds = None
        how = ""
        if opts.dataset is not None:
            node = f.get(opts.dataset)
            if isinstance(node, h5py.Group):
                node = _nx_signal(node)
                if node is None:
                    raise InputError(
                        f"{src}: {opts.dataset!r} is a group, not a dataset (and has no NeXus signal); "
                        f"datasets with 3+ dimensions: {listing(big) or 'none'}"
                    )
            if not isinstance(node, h5py.Dataset):
                raise InputError(
                    f"{src}: there is no dataset {opts.dataset!r}; pass dataset= one of: {listing(big) or listing(datasets) or 'none (empty file)'}"
                )
            ds, how = node, "dataset option"
        else:
            # NeXus: follow the @default chain, else the only NXdata whose signal is 3D+
            grp: Any = f
            for _ in range(3):
                d = grp.attrs.get("default")
                nxt = grp.get(_attr_str(d)) if d is not None else None
                if not isinstance(nxt, h5py.Group):
                    break
                grp = nxt
            sig = _nx_signal(grp) if _nx_class(grp) == "NXdata" else None
            if sig is not None and sig.ndim >= 3:
                ds, how = sig, "NeXus default signal"
            else:
                sigs = [s for s in (_nx_signal(g) for g in nxdata) if s is not None and s.ndim >= 3]
                if len({s.name for s in sigs}) == 1:
                    ds, how = sigs[0], "NeXus NXdata signal"
            if ds is None:
                if len(big) == 1:
                    ds, how = big[0][1], "only 3D+ dataset"
                elif not big:
                    raise InputError(
                        f"{src}: no dataset with 3 or more dimensions; datasets found: {listing(datasets) or 'none'}. "
                        "A volume must be stored as one 3D dataset"
                    )
                else:
                    raise InputError(
                        f"{src}: several candidate datasets ({len(big)}) with 3+ dimensions: {listing(big)}; "
                        "pass dataset='/path/to/data' to choose one"
                    )
        _check_hdf5_storage(src, ds)
        spacing, unit = _hdf5_spacing(f, ds)
        meta: dict[str, Any] = {"dataset": ds.name, "chosen_by": how, "hdf5_chunks": ds.chunks}
        arr = LazyView(ds, source=f"{src}:{ds.name}")
        arr = _finish(arr, opts=opts, axes=None, source=f"{src}:{ds.name}", meta=meta)
        return VolumeData(arr, spacing, unit, "hdf5", src, meta, (f,))
    except AlAnnotatorError:
        f.close()
        raise
    except Exception as exc:
        f.close()
        raise InputError(f"cannot read {src} as HDF5: {type(exc).__name__}: {exc}; the file may be corrupted") from exc


# --------------------------------------------------------------------------------------------- OME-Zarr


def _zarr_attrs(node: Any) -> dict[str, Any]:
    attrs = dict(node.attrs)
    ome = attrs.get("ome")
    if isinstance(ome, dict):  # NGFF 0.5 keeps everything under "ome"
        merged = dict(attrs)
        merged.update(ome)
        return merged
    return attrs


def _ngff_image(group: Any, src: str) -> tuple[Any, tuple[float, float, float] | None, str | None, str | None, dict[str, Any]]:
    attrs = _zarr_attrs(group)
    ms_all = attrs.get("multiscales")
    if not isinstance(ms_all, list) or not ms_all:
        raise InputError(f"{src}: no OME-NGFF 'multiscales' metadata in group {group.path or '/'}")
    ms = ms_all[0]
    dsets = ms.get("datasets") or []
    if not dsets:
        raise InputError(f"{src}: the multiscales metadata lists no datasets; the OME-Zarr image is incomplete")
    level0 = dsets[0]
    try:
        arr = group[level0["path"]]
    except KeyError as exc:
        raise InputError(f"{src}: the multiscales' full-resolution dataset {level0.get('path')!r} is missing from the store") from exc
    ndim = len(arr.shape)
    version = str(ms.get("version", attrs.get("version", "")))
    raw_axes = ms.get("axes")
    if raw_axes is None:  # NGFF <= 0.2: always 5D tczyx
        axes_list = [{"name": n, "type": t} for n, t in zip("tczyx", ["time", "channel", "space", "space", "space"])][-ndim:]
    else:
        axes_list = [a if isinstance(a, dict) else {"name": str(a)} for a in raw_axes]
    letters = ""
    for a in axes_list:
        name, typ = str(a.get("name", "")).lower(), str(a.get("type", "")).lower()
        if typ == "channel" or name == "c":
            letters += "C"
        elif typ == "time" or name == "t":
            letters += "T"
        elif name in ("z", "y", "x"):
            letters += name.upper()
        elif typ == "space":
            letters += "Z"
        else:
            letters += "Q"
    if len(letters) != ndim:
        letters = ""

    scale = [1.0] * ndim
    for transforms in (level0.get("coordinateTransformations") or [], ms.get("coordinateTransformations") or []):
        for t in transforms:
            if t.get("type") == "scale" and isinstance(t.get("scale"), list) and len(t["scale"]) == ndim:
                scale = [s * float(v) for s, v in zip(scale, t["scale"])]
    spacing = unit = None
    space_idx = [i for i, a in enumerate(axes_list) if str(a.get("type", "")).lower() == "space" or str(a.get("name", "")).lower() in "zyx"]
    if len(space_idx) == 3:
        spacing = _spacing3([scale[i] for i in space_idx])
        units = [a.get("unit") for a in (axes_list[i] for i in space_idx)]
        unit = normalize_unit(units[-1]) if spacing else None
    meta = {"ngff_version": version, "dataset": f"{group.path + '/' if group.path else ''}{level0['path']}", "ngff_axes": letters or None}
    if "image-label" in attrs:
        meta["image_label"] = True
    return arr, spacing, unit, letters or None, meta


def read_ome_zarr(path: Path, opts: ReadOptions) -> VolumeData:
    """Read an OME-NGFF (0.4 / 0.5) image, or a plain zarr array (see the module docstring)."""
    import zarr

    _reject(opts, "OME-Zarr", allow_dataset=True)
    src = str(path)
    try:
        root = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise InputError(
            f"cannot read {src} as OME-Zarr: {type(exc).__name__}: {exc}. It must be a zarr v2 or v3 store "
            "(a folder with .zgroup/.zattrs or zarr.json); check the path points at the store's top folder"
        ) from exc
    try:
        node = root
        if opts.dataset is not None:
            if not isinstance(root, zarr.Group):
                raise InputError(f"{src} is a single zarr array; dataset={opts.dataset!r} only applies to groups")
            try:
                node = root[opts.dataset.strip("/")]
            except KeyError:
                names = sorted(k for k, _ in root.members(max_depth=None))
                raise InputError(f"{src}: no node {opts.dataset!r} in the store; nodes: {', '.join(names[:30]) or 'none'}") from None
        if isinstance(node, zarr.Array):
            arr, spacing, unit, axes, meta = node, None, None, None, {"dataset": node.path}
            parent_path = node.path.rsplit("/", 1)[0] if "/" in node.path else ""
            parent = root[parent_path] if parent_path and isinstance(root, zarr.Group) else (root if isinstance(root, zarr.Group) else None)
            if parent is not None and "multiscales" in _zarr_attrs(parent):
                arr0, sp0, unit0, axes0, meta0 = _ngff_image(parent, src)
                if arr0.path == node.path:
                    arr, spacing, unit, axes, meta = arr0, sp0, unit0, axes0, meta0
        else:
            attrs = _zarr_attrs(node)
            if "multiscales" in attrs:
                arr, spacing, unit, axes, meta = _ngff_image(node, src)
            else:
                labels_grp = node.get("labels") if hasattr(node, "get") else None
                label_names = _zarr_attrs(labels_grp).get("labels", []) if isinstance(labels_grp, zarr.Group) else []
                if len(label_names) == 1:
                    arr, spacing, unit, axes, meta = _ngff_image(labels_grp[label_names[0]], src)
                elif label_names:
                    raise InputError(
                        f"{src}: the store has no image but {len(label_names)} label images {label_names}; "
                        f"pass dataset='labels/{label_names[0]}' to choose one"
                    )
                else:
                    arrays = [(k, a) for k, a in node.arrays()] if hasattr(node, "arrays") else []
                    big = [(k, a) for k, a in node.members(max_depth=None) if isinstance(a, zarr.Array) and a.ndim >= 3]
                    if len(big) == 1:
                        arr, spacing, unit, axes, meta = big[0][1], None, None, None, {"dataset": big[0][0]}
                    else:
                        found = ", ".join(f"{k} {a.shape}" for k, a in (big or arrays)[:20]) or "none"
                        raise InputError(
                            f"{src}: the zarr group has no OME-NGFF 'multiscales' metadata and "
                            f"{len(big)} arrays with 3+ dimensions ({found}); pass dataset='path/in/store' to choose one"
                        )
        meta["zarr_format"] = int(arr.metadata.zarr_format)
        if arr.size and has_stored_chunks(arr) is False:
            raise InputError(
                f"{src}: the array {arr.path or '/'} declares shape {tuple(arr.shape)} of {arr.dtype} but the store holds "
                f"none of its chunks: every voxel would read as the fill value {getattr(arr.fill_value, 'item', lambda: arr.fill_value)()!r}. The image was never "
                "written, or its chunk files were not copied: copy the whole .zarr folder again, or pass dataset= to "
                "choose another array"
            )
        chunk_dir = blosc_chunk_dir(arr)
        view = LazyView(BloscChunkCheck(arr, chunk_dir, src) if chunk_dir is not None else arr, source=src)
        view = _finish(view, opts=opts, axes=axes, source=src, meta=meta)
        return VolumeData(view, spacing, unit, "ome-zarr", src, meta)
    except AlAnnotatorError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read {src} as OME-Zarr: {type(exc).__name__}: {exc}; the store may be incomplete or corrupted") from exc


# --------------------------------------------------------------------------------------------- NIfTI


class _GzipPlanes:
    """Sequential-friendly reader of planes from a gzip stream (forward seeks do not restart)."""

    def __init__(self, path: Path, offset: int, plane_shape: tuple[int, int], dtype: np.dtype, n_planes: int = -1) -> None:
        self.path, self.offset, self.plane_shape, self.dtype = path, offset, plane_shape, dtype
        self.n_planes = n_planes
        self.plane_bytes = int(np.prod(plane_shape)) * dtype.itemsize
        self._f: gzip.GzipFile | None = None

    def __call__(self, i0: int, i1: int) -> np.ndarray:
        if self._f is None:
            self._f = gzip.open(self.path, "rb")  # type: ignore[assignment]
        assert self._f is not None
        start = self.offset + i0 * self.plane_bytes
        if self._f.tell() > start:
            self._f.seek(0)
        self._f.seek(start)
        need = (i1 - i0) * self.plane_bytes
        buf = self._f.read(need)
        if len(buf) < need:
            raise EOFError(f"the compressed stream ended after {start + len(buf)} bytes; {start + need} needed (truncated file)")
        if i1 == self.n_planes:
            # read on to the gzip trailer: gzip checks the CRC-32 of the whole stream only there, so a
            # corrupted byte that still inflates is found when the last plane is read
            self._f.read(1 << 16)
        return np.frombuffer(buf, dtype=self.dtype).reshape((i1 - i0,) + self.plane_shape)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _check_gzip(path: Path, expected: int) -> None:
    """Raise if a .gz file is truncated/corrupted. Cheap check of the size trailer; full scan on mismatch."""
    size = _file_size(path)
    with open(path, "rb") as fh:
        if size < 18:
            raise _truncated(path, "a gzip stream", 18, size)
        fh.seek(size - 4)
        isize = int.from_bytes(fh.read(4), "little")
    if isize == expected % (1 << 32):
        return
    total = 0
    try:
        with gzip.open(path, "rb") as g:
            while chunk := g.read(16 << 20):
                total += len(chunk)
    except (EOFError, OSError, zlib.error) as exc:
        raise InputError(
            f"cannot read {path}: the gzip stream is truncated or corrupted ({type(exc).__name__}: {exc}); "
            "copy or export the file again"
        ) from exc
    if total < expected:
        raise _truncated(path, "the NIfTI header and voxels (uncompressed)", expected, total)


def _nifti_header(path: Path) -> Any:
    """Parse the NIfTI-1/2 header (and extensions) of a single-file image, gzip-compressed or not."""
    import nibabel as nib

    gz = _head(path, 2) == b"\x1f\x8b"
    with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
        first = f.read(4)
        if len(first) < 4:
            raise EOFError("the file is shorter than a NIfTI header")
        sizes = {int.from_bytes(first, "little"), int.from_bytes(first, "big")}
        size = 348 if 348 in sizes else 540 if 540 in sizes else int.from_bytes(first, "little")
        klass = {348: nib.Nifti1Header, 540: nib.Nifti2Header}.get(size)
        if klass is None:
            raise ValueError(f"the first 4 bytes give a header size of {size}, not 348 (NIfTI-1) or 540 (NIfTI-2)")
        f.seek(0)
        hdr = klass.from_fileobj(f, check=True)
    magic = bytes(hdr["magic"]).rstrip(b"\0")
    if magic not in (b"n+1", b"n+2"):
        raise InputError(f"{path}: header magic {magic!r} is a .hdr/.img pair header; convert the pair to a single .nii file")
    return hdr


def read_nifti(path: Path, opts: ReadOptions) -> VolumeData:
    """Read ``.nii`` / ``.nii.gz``; voxels returned as ``(Z, Y, X)`` = the stored ``(X, Y, Z)`` transposed."""
    _reject(opts, "NIfTI")
    src = str(path)
    try:
        hdr = _nifti_header(path)
        shape = tuple(int(n) for n in hdr.get_data_shape())
        dtype = np.dtype(hdr.get_data_dtype())
        offset = int(hdr.get_data_offset())
        affine = np.asarray(hdr.get_best_affine()).tolist()
    except AlAnnotatorError:
        raise
    except Exception as exc:
        raise InputError(
            f"cannot read {src} as NIfTI: {type(exc).__name__}: {exc}. The file is not NIfTI-1/2 or is truncated/"
            "corrupted; check it opens in nibabel/ITK-SNAP, or export it again"
        ) from exc
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    c_shape = shape[::-1]  # on disk i (x) is fastest: C order of the reversed shape
    axes = "".join(reversed("XYZTUVW"[: len(shape)]))
    gz = _head(path, 2) == b"\x1f\x8b"
    resources: tuple[Any, ...] = ()
    if gz:
        _check_gzip(path, offset + nbytes)
        if len(c_shape) < 2:
            raise InputError(f"{src}: the NIfTI image has shape {shape}; a volume needs 3 dimensions")
        reader = _GzipPlanes(path, offset, (c_shape[-2], c_shape[-1]), dtype, int(np.prod(c_shape[:-2], dtype=np.int64)))
        arr: Any = PlaneStackArray(c_shape[:-2], c_shape[-2:], dtype, reader, source=src)
        resources = (reader,)
    else:
        size = _file_size(path)
        if offset + nbytes > size:
            raise _truncated(path, f"the NIfTI voxels (shape {shape}, {dtype}, from byte {offset})", offset + nbytes, size)
        arr = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=c_shape)
    slope, inter = hdr.get_slope_inter()  # (None, None) when the header has no scaling
    slope = 1.0 if slope is None else float(slope)
    inter = 0.0 if inter is None else float(inter)
    meta: dict[str, Any] = {"nifti_shape_xyz": shape, "affine": affine}
    if not (slope == 1.0 and inter == 0.0):
        s, b = slope, inter
        out = np.result_type(dtype, np.float32)
        arr = LazyView(arr, convert=lambda a: a.astype(out) * out.type(s) + out.type(b), dtype=out, source=src)
        meta["scaling"] = (s, b)
    zooms = [float(z) for z in hdr.get_zooms()[:3]]
    spacing = _spacing3(zooms[::-1]) if len(zooms) == 3 else None
    unit = normalize_unit(hdr.get_xyzt_units()[0]) if spacing else None
    arr = _finish(arr, opts=opts, axes=axes, source=src, meta=meta, resources=resources)
    return VolumeData(arr, spacing, unit, "nifti", src, meta, resources)


# --------------------------------------------------------------------------------------------- DICOM

_DICOM_TAGS = [
    "SeriesInstanceUID", "SeriesDescription", "ImagePositionPatient", "ImageOrientationPatient", "InstanceNumber",
    "PixelSpacing", "Rows", "Columns", "RescaleSlope", "RescaleIntercept", "SliceThickness", "SpacingBetweenSlices",
    "NumberOfFrames", "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel", "Modality",
    "SharedFunctionalGroupsSequence",
]


def _is_dicom_file(p: Path) -> bool:
    head = _head(p, 132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _rescale_dtype(raw: np.dtype, bits_stored: int | None, pairs: list[tuple[float, float]]) -> np.dtype:
    if all(float(s).is_integer() and float(b).is_integer() for s, b in pairs):
        if raw.kind in "iu":
            info = np.iinfo(raw)
            lo, hi = int(info.min), int(info.max)
            if bits_stored and bits_stored < raw.itemsize * 8:
                lo, hi = (0, 2**bits_stored - 1) if raw.kind == "u" else (-(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1)
            vals = [v * s + b for s, b in pairs for v in (lo, hi)]
            for cand in (np.int16, np.int32, np.int64):
                ci = np.iinfo(cand)
                if ci.min <= min(vals) and max(vals) <= ci.max:
                    return np.dtype(cand)
    return np.dtype(np.float64) if raw.itemsize >= 4 else np.dtype(np.float32)


_DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".ima", ".dic"})
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little-endian


def _dicom_pixels_short(ds: Any, p: Path, pixel_pos: int, size: int) -> str | None:
    """Why an uncompressed DICOM file holds fewer pixel bytes than its header needs, or ``None``."""
    try:
        ts = ds.file_meta.TransferSyntaxUID if "TransferSyntaxUID" in getattr(ds, "file_meta", {}) else None
        if ts is not None and (ts.is_compressed or ts.is_deflated or not ts.is_little_endian):
            return None
        bits = int(ds.get("BitsAllocated", 0) or 0)
        if bits <= 0:
            return None
        n = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * int(ds.get("NumberOfFrames", 1) or 1)
        need = (n * bits + 7) // 8
        if pixel_pos >= size:
            return f"the header ends at byte {pixel_pos} and the pixel data ({need} bytes) are missing"
        with open(p, "rb") as fh:
            fh.seek(pixel_pos)
            if fh.read(4) != _PIXEL_DATA_TAG:
                return None  # float pixel data or an unusual layout: decoding will tell
        if pixel_pos + 8 + need > size:
            return f"the pixel data need {need} bytes from byte {pixel_pos} but the file has {size} bytes"
    except (TypeError, ValueError, AttributeError, OSError):
        return None
    return None


def read_dicom(path: Path, opts: ReadOptions) -> VolumeData:
    """Read a DICOM series from a folder (or one multi-frame DICOM file)."""
    import pydicom

    _reject(opts, "DICOM", allow_dataset=True)
    src = str(path)
    files = sorted((p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")), key=lambda p: natural_key(p.name)) if path.is_dir() else [path]
    headers: list[tuple[Path, Any]] = []
    skipped = 0
    in_folder = path.is_dir()

    def unreadable(p: Path, why: str) -> InputError:
        where = f"the series in {src} would miss this slice: " if in_folder else ""
        return InputError(
            f"cannot read {p} as DICOM: {why}. The file is truncated, empty or corrupted; {where}replace it with a good "
            "copy (copy it again from the scanner / PACS)" + (", or move it out of the folder if it does not belong to the series" if in_folder else "")
        )

    for p in files:
        if p.name.upper() == "DICOMDIR":
            continue
        named = p.suffix.lower() in _DICOM_SUFFIXES
        try:
            size = _file_size(p)
        except OSError as exc:
            raise unreadable(p, f"{type(exc).__name__}: {exc}") from exc
        # a file that says it is DICOM (by name or by its preamble) must read; an empty file without
        # a suffix in a DICOM folder is a lost slice too. Other files (README, notes) are skipped.
        claims = named or _is_dicom_file(p) or (size == 0 and not p.suffix) or not in_folder
        try:
            with open(p, "rb") as fh:
                ds = pydicom.dcmread(fh, stop_before_pixels=True, force=named or not in_folder)
                pixel_pos = fh.tell()
            # decode every value now: a damaged one fails here, naming this file
            for _elem in itertools.chain(getattr(ds, "file_meta", None) or (), ds.iterall()):
                pass
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types (BytesLengthException...) on damaged files
            if claims:
                raise unreadable(p, f"{type(exc).__name__}: {exc}") from exc
            skipped += 1
            continue
        meta_uid = getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
        if "SOPClassUID" not in ds and meta_uid is None and "Rows" not in ds:
            if claims:  # forced parsing of a file with no DICOM content (0 bytes, random bytes)
                raise unreadable(p, f"it holds no DICOM data elements ({size} bytes)")
            skipped += 1
            continue
        if "Rows" not in ds or "Columns" not in ds:
            sop = ds.get("SOPClassUID", meta_uid)
            if claims and "Image" in str(getattr(sop, "name", "")):  # an image whose header was cut short
                raise unreadable(p, f"it is a {sop.name} but its header ends ({size} bytes) before the image size (Rows, Columns)")
            skipped += 1  # not an image (structured report, presentation state...)
            continue
        short = _dicom_pixels_short(ds, p, pixel_pos, size)
        if short:
            raise unreadable(p, short)
        headers.append((p, ds))
    if not headers:
        raise InputError(f"{src}: no DICOM image files found ({skipped} other files); give the folder holding the series")
    series: dict[str, list[tuple[Path, Any]]] = {}
    for p, ds in headers:
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((p, ds))
    if opts.dataset is not None:
        if opts.dataset not in series:
            raise InputError(f"{src}: no series with SeriesInstanceUID {opts.dataset!r}; series found: {', '.join(series)}")
        items = series[opts.dataset]
        uid = opts.dataset
    elif len(series) > 1:
        def files_of(v: list[tuple[Path, Any]]) -> str:
            names = f": {', '.join(p.name for p, _ in v)}" if len(v) <= 3 else ""
            return f"{len(v)} file{'s' if len(v) != 1 else ''}{names}"

        listing = "; ".join(
            f"{uid} ({files_of(v)}{', ' + str(v[0][1].get('SeriesDescription')) if v[0][1].get('SeriesDescription') else ''})"
            for uid, v in series.items()
        )
        raise InputError(
            f"{src}: the folder holds several series ({len(series)}): {listing}; pass dataset='<SeriesInstanceUID>' to pick one, "
            "or put each series in its own folder"
        )
    else:
        uid, items = next(iter(series.items()))
    p0, h0 = items[0]
    meta: dict[str, Any] = {"series_uid": uid, "files": len(items), "skipped_files": skipped, "modality": str(h0.get("Modality", ""))}
    rows, cols = int(h0.Rows), int(h0.Columns)
    spp = int(h0.get("SamplesPerPixel", 1) or 1)
    for p, h in items:
        if int(h.Rows) != rows or int(h.Columns) != cols:
            raise InputError(f"{src}: {p.name} is {h.Rows}x{h.Columns} but {p0.name} is {rows}x{cols}; a series' slices must have one size")

    def pixels(p: Path) -> np.ndarray:
        try:
            return pydicom.dcmread(p).pixel_array
        except Exception as exc:
            raise InputError(
                f"cannot decode the pixels of {p}: {type(exc).__name__}: {exc}. The file may be truncated or corrupted "
                "(replace it with a good copy); if the series is compressed (JPEG/JPEG2000), install a pydicom pixel "
                "handler (pylibjpeg with its plugins, or gdcm), or decompress it with `gdcmconv --raw`"
            ) from exc

    ps = h0.get("PixelSpacing")
    yx = (float(ps[0]), float(ps[1])) if ps is not None and len(ps) == 2 else None
    nframes = int(h0.get("NumberOfFrames", 1) or 1)
    if len(items) == 1 and nframes > 1:  # enhanced multi-frame: one file holds the volume
        data = pixels(p0)
        z = h0.get("SpacingBetweenSlices") or h0.get("SliceThickness")
        with contextlib.suppress(Exception):
            pm = h0.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
            yx = (float(pm.PixelSpacing[0]), float(pm.PixelSpacing[1]))
            z = pm.get("SpacingBetweenSlices") or pm.get("SliceThickness") or z
        slope, inter = float(h0.get("RescaleSlope", 1) or 1), float(h0.get("RescaleIntercept", 0) or 0)
        if (slope, inter) != (1.0, 0.0):
            out = _rescale_dtype(data.dtype, int(h0.get("BitsStored", 0) or 0), [(slope, inter)])
            data = (data.astype(out) * out.type(slope) + out.type(inter)).astype(out)
        spacing = _spacing3((z, *yx)) if yx and z else None
        arr = _finish(data, opts=opts, axes="ZYXS" if spp > 1 else "ZYX", source=src, meta=meta)
        return VolumeData(arr, spacing, "millimeter" if spacing else None, "dicom", src, meta)
    if len(items) == 1:
        raise InputError(f"{src}: a single DICOM slice is a 2D image, not a volume; give the folder holding the whole series")

    # sort slices along the slice normal
    z_spacing: float | None = None
    positions = [h.get("ImagePositionPatient") for _, h in items]
    iop = h0.get("ImageOrientationPatient")
    if all(pos is not None and len(pos) == 3 for pos in positions) and iop is not None and len(iop) == 6:
        normal = np.cross(np.array(iop[:3], float), np.array(iop[3:], float))
        dist = np.array([float(np.dot(normal, np.array(pos, float))) for pos in positions])
        order = np.argsort(dist, kind="stable")
        d = np.diff(dist[order])
        if np.any(np.abs(d) < 1e-6):
            dup = [items[order[i]][0].name for i in np.flatnonzero(np.abs(d) < 1e-6)[:3]]
            raise InputError(
                f"{src}: several slices share one position (e.g. {dup}); the folder probably mixes acquisitions or echoes "
                "of one series: keep one slice per position"
            )
        z_spacing = float(np.median(d))
        gaps = np.flatnonzero(d > 1.5 * z_spacing)
        rest = np.delete(d, gaps)
        if len(gaps) and len(rest) and np.allclose(rest, z_spacing, rtol=0.05):  # an even series with a hole
            g = int(gaps[0])
            a, b = items[order[g]][0].name, items[order[g + 1]][0].name
            missing = int(round(d[g] / z_spacing)) - 1
            raise InputError(
                f"{src}: {missing} slice(s) missing: the slices are {z_spacing:g} mm apart but {a} and {b} are "
                f"{d[g]:g} mm apart ({len(gaps)} such gap(s)). Copy the missing file(s) into the folder (check that "
                "the transfer was complete); if the series really has a gap, convert it to one file (e.g. NIfTI with "
                "dcm2niix) and import that"
            )
        meta["sorted_by"] = "ImagePositionPatient"
        meta["uniform_spacing"] = bool(np.allclose(d, z_spacing, rtol=1e-2))
    else:
        inst = [int(h.get("InstanceNumber", 0) or 0) for _, h in items]
        order = np.argsort(inst, kind="stable")
        z = h0.get("SpacingBetweenSlices") or h0.get("SliceThickness")
        z_spacing = float(z) if z else None
        meta["sorted_by"] = "InstanceNumber"
    items = [items[i] for i in order]
    pairs = [(float(h.get("RescaleSlope", 1) or 1), float(h.get("RescaleIntercept", 0) or 0)) for _, h in items]
    first = pixels(items[0][0])
    out_dtype = first.dtype
    rescale = any(pr != (1.0, 0.0) for pr in pairs)
    if rescale:
        out_dtype = _rescale_dtype(first.dtype, int(h0.get("BitsStored", 0) or 0), pairs)
        meta["rescaled"] = True

    def read_plane(i: int) -> np.ndarray:
        data = pixels(items[i][0])
        if rescale:
            s, b = pairs[i]
            data = data.astype(out_dtype) * out_dtype.type(s) + out_dtype.type(b)
        return data.astype(out_dtype, copy=False)

    arr = PlaneStackArray.from_plane_reader((len(items),), first.shape, out_dtype, read_plane, source=src)
    spacing = _spacing3((z_spacing, *yx)) if yx and z_spacing else None
    arr = _finish(arr, opts=opts, axes="ZYXS" if first.ndim == 3 else "ZYX", source=src, meta=meta)
    return VolumeData(arr, spacing, "millimeter" if spacing else None, "dicom", src, meta)


# --------------------------------------------------------------------------------------------- npy / raw


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


# --------------------------------------------------------------------------------------------- detection


def _sniff_tiff(p: Path) -> bool:
    return p.is_file() and _head(p, 4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _sniff_hdf5(p: Path) -> bool:
    return p.is_file() and _head(p, 8) == b"\x89HDF\r\n\x1a\n"


def _sniff_npy(p: Path) -> bool:
    return p.is_file() and _head(p, 6) == b"\x93NUMPY"


def _sniff_nifti(p: Path) -> bool:
    if not p.is_file():
        return False
    head = _head(p, 540)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(p, "rb") as g:
                head = g.read(540)
        except (OSError, EOFError, zlib.error):
            return False
    return (len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00")) or (len(head) >= 8 and head[4:8] == b"n+2\x00")


def _sniff_zarr(p: Path) -> bool:
    return p.is_dir() and any((p / n).is_file() for n in (".zgroup", ".zarray", ".zattrs", "zarr.json"))


def _sniff_dicom_dir(p: Path) -> bool:
    if p.is_file():
        return _is_dicom_file(p)
    if not p.is_dir():
        return False
    for i, f in enumerate(sorted(p.iterdir())):
        if i >= 50:
            break
        if f.is_file() and (f.suffix.lower() == ".dcm" or _is_dicom_file(f)):
            return True
    return False


def _sniff_slices(p: Path) -> bool:
    return p.is_dir() and bool(_slice_files(p))


register_reader("tiff", read_tiff, suffixes=(".tif", ".tiff", ".btf", ".tf8", ".tf2"), sniff=_sniff_tiff)
register_reader("hdf5", read_hdf5, suffixes=(".h5", ".hdf5", ".hdf", ".nxs", ".nx5", ".he5"), sniff=_sniff_hdf5)
register_reader("ome-zarr", read_ome_zarr, suffixes=(".zarr",), sniff=_sniff_zarr)
register_reader("nifti", read_nifti, suffixes=(".nii", ".nii.gz"), sniff=_sniff_nifti)
register_reader("dicom", read_dicom, suffixes=(".dcm",), sniff=_sniff_dicom_dir)
register_reader("slices", read_slices, sniff=_sniff_slices)
register_reader("npy", read_npy, suffixes=(".npy",), sniff=_sniff_npy)
register_reader("raw", read_raw, suffixes=(".raw", ".bin", ".dat", ".vol"))


def _not_found(path: Path) -> InputError:
    parent = path.parent
    hint = ""
    if parent.is_dir():
        near = sorted(p.name for p in parent.iterdir() if p.name.lower().startswith(path.name[:3].lower()))[:5]
        if near:
            hint = f" (similar names there: {near})"
    elif str(parent) not in ("", "."):
        hint = f" (its folder {parent} does not exist either)"
    return InputError(f"{path} does not exist{hint}; check the path (relative paths start at {Path.cwd()})")


def detect_format(path: str | os.PathLike[str]) -> str:
    """The registry name of the reader for ``path``, by file-name ending, then by content.

    Folders: a zarr store -> ``ome-zarr``, DICOM files -> ``dicom``, TIFF/PNG slices -> ``slices``.

    Raises
    ------
    InputError
        When the path does not exist or no reader recognises it.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise _not_found(p)
    name = p.name.lower()
    if p.is_file() or name.endswith(".zarr"):
        for suffix in sorted(_SUFFIXES, key=len, reverse=True):
            if name.endswith(suffix) and suffix != ".dcm":
                return _SUFFIXES[suffix]
    if p.is_file() and name.endswith(".dcm"):
        return "dicom"
    if p.is_file() and name.endswith(".png"):
        raise InputError(f"{p}: a single PNG is a 2D image, not a volume; give the folder holding all the PNG slices")
    for fmt in ("ome-zarr", "dicom", "slices"):
        if fmt in _SNIFFERS and _SNIFFERS[fmt](p):
            return fmt
    for fmt, sniff in _SNIFFERS.items():
        if fmt in ("ome-zarr", "dicom", "slices"):
            continue
        with contextlib.suppress(Exception):
            if sniff(p):
                return fmt
    what = "folder" if p.is_dir() else "file"
    raise InputError(
        f"cannot detect the format of the {what} {p}; pass format= one of {sorted(READERS)} "
        "(for a headerless binary file: format='raw', shape=(Z, Y, X), dtype=...)"
    )


def _format_name(fmt: str) -> str:
    key = fmt.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in READERS:
        raise InputError(f"unknown format {fmt!r}; known formats: {sorted(READERS)} (add one with register_reader)")
    return key


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
        raise _not_found(p)
    fmt = _format_name(format) if format is not None else detect_format(p)
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
