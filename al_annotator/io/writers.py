"""Volume writers for export: OME-Zarr (NGFF 0.4 / 0.5, pyramids, labels groups), multipage TIFF, NIfTI, npy.

Every writer reads its input slab by slab along z (a zarr or memory-mapped array of any size is
exported without being loaded), writes to a hidden temporary path next to the output and renames
it when complete (an interrupted export leaves no half-written file), and refuses to replace an
existing output unless ``overwrite=True``.

Axis conventions match the readers, so ``read_volume(write_volume(a, p)).array == a``:

* OME-Zarr (written by ome-zarr-py): axes ``z, y, x`` (type ``space``, ``unit``), ``scale`` =
  spacing, a multiscale pyramid (``s0`` full resolution, then halved per level).
* TIFF: one page per z slice; ImageJ hyperstack (``spacing`` = z, resolution = y, x) for uint8,
  uint16 and float32, OME-TIFF (``PhysicalSize{Z,Y,X}``) for the other dtypes.
* NIfTI: stored ``(X, Y, Z)`` (the transpose of ``(Z, Y, X)``), zooms ``(x, y, z)``, affine
  ``diag(x, y, z, 1)``.
* npy: as given.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from ..config import parse_spacing
from ..errors import AlAnnotatorError, InputError
from .volume import VolumeData, normalize_unit, slab_size, validate_volume

__all__ = ["WriteOptions", "Writer", "WRITERS", "pyramid_factors", "register_writer", "write_volume", "writer_name"]

#: Most distinct label values listed in an NGFF ``image-label`` ``colors`` list.
MAX_LABEL_COLOURS = 1024


@dataclass(frozen=True)
class WriteOptions:
    """What :func:`write_volume` passes to a writer (already validated)."""

    spacing: tuple[float, float, float] | None
    spacing_unit: str | None
    kind: str
    name: str
    overwrite: bool
    chunks: tuple[int, int, int] | None
    ngff_version: str
    dtype: np.dtype
    #: OME-Zarr: pyramid levels below full resolution (``None``: :func:`pyramid_factors` decides).
    levels: int | None = None
    #: Labels: ``(label value, class name, "#rrggbb")`` per class, for NGFF ``image-label``.
    classes: tuple[tuple[int, str, str], ...] = ()
    #: OME-Zarr labels: the image written at the root under them (``None``: labels only).
    image: Any = None
    image_name: str = "image"


class Writer(Protocol):
    """``writer(array, path, options) -> Path``: write a 3D ``(Z, Y, X)`` array."""

    def __call__(self, array: Any, path: Path, options: WriteOptions) -> Path: ...


#: Registry: format name -> writer. Extend with :func:`register_writer`.
WRITERS: dict[str, Writer] = {}
_WRITE_SUFFIXES: dict[str, str] = {}
_ALIASES = {"zarr": "ome-zarr", "ngff": "ome-zarr", "ome_zarr": "ome-zarr", "tif": "tiff", "nii": "nifti", "nii.gz": "nifti"}


def register_writer(name: str, writer: Writer, *, suffixes: Sequence[str] = ()) -> None:
    """Add (or replace) a writer; ``suffixes`` (``".mrc"``) let :func:`write_volume` pick it by file name."""
    if not name or not callable(writer):
        raise InputError(f"register_writer needs a name and a callable writer(array, path, options), got {name!r}, {writer!r}")
    WRITERS[name] = writer
    for s in suffixes:
        _WRITE_SUFFIXES[s.lower() if s.startswith(".") else "." + s.lower()] = name


# --------------------------------------------------------------------------------------------- helpers


def _slabs(array: Any, dtype: np.dtype, n: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(z0, block)`` over the array, ``block`` converted to ``dtype``; about 64 MB per slab by default."""
    n = n or slab_size(array.shape, dtype.itemsize)
    for z0 in range(0, int(array.shape[0]), n):
        block = np.asarray(array[z0 : z0 + n])
        yield z0, block.astype(dtype, copy=False)


def _is_zarr_store(p: Path) -> bool:
    return p.is_dir() and any((p / n).is_file() for n in (".zgroup", ".zarray", ".zattrs", "zarr.json"))


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def _check_target(p: Path, overwrite: bool) -> None:
    if not p.parent.is_dir():
        raise InputError(f"cannot write {p}: its folder {p.parent} does not exist; create it first")
    if p.exists() or p.is_symlink():
        if not overwrite:
            raise InputError(f"{p} already exists; choose another output path or pass overwrite=True (CLI: --overwrite)")
        if p.is_dir() and not _is_zarr_store(p):
            raise InputError(
                f"{p} is an existing folder that is not a zarr store; refusing to delete it even with overwrite=True: "
                "remove it yourself or choose another output path"
            )


@contextlib.contextmanager
def _atomic(p: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary sibling path; on success it replaces ``p``, on failure it is removed."""
    _check_target(p, overwrite)
    tmp = p.with_name(f".{p.name}.partial-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(OSError):
            _remove(tmp)
        raise
    if p.exists() or p.is_symlink():
        _remove(p)
    os.replace(tmp, p)


# --------------------------------------------------------------------------------------------- OME-Zarr

#: Pyramid levels stop once the coarsest level's longest side would drop below this.
MIN_LEVEL_SIDE = 32
#: At most this many levels below full resolution (a 2048^3 volume gets 6: 2048 -> 32).
MAX_LEVELS = 8


def pyramid_factors(shape: Sequence[int], levels: int | None = None) -> list[dict[str, int]]:
    """Downsampling factors per level (``[{"z": 2, "y": 2, "x": 2}, {"z": 4, ...}, ...]``), all
    three axes halved per level, an axis never below one voxel; ``levels`` below full resolution
    (default: until the longest side would drop below :data:`MIN_LEVEL_SIDE`).

    Examples
    --------
    >>> [f["x"] for f in pyramid_factors((40, 256, 256))]
    [2, 4, 8]
    >>> pyramid_factors((3, 256, 256))[1]  # a thin axis stops at its size
    {'z': 2, 'y': 4, 'x': 4}
    """
    shape = [int(n) for n in shape]
    if levels is None:
        levels = 0
        while levels < MAX_LEVELS and max(shape) // 2 ** (levels + 1) >= MIN_LEVEL_SIDE:
            levels += 1
    out = []
    for k in range(1, int(levels) + 1):
        out.append({a: 2 ** min(k, n.bit_length() - 1) for a, n in zip("zyx", shape)})
    return out


def _set_ome(group: Any, version: str, **entries: Any) -> None:
    """Write NGFF metadata: top-level attributes for 0.4, under ``"ome"`` (with its version) for 0.5."""
    if version == "0.4":
        group.attrs.update(entries)
    else:
        ome = dict(group.attrs.get("ome", {}))
        ome.update({"version": "0.5", **entries})
        group.attrs["ome"] = ome


def _get_ome(group: Any) -> dict[str, Any]:
    attrs = dict(group.attrs)
    return dict(attrs["ome"]) if isinstance(attrs.get("ome"), dict) else attrs


class _Counted:
    """A read-only view of a 3D array that reports the voxels read so far: ``progress(done, total, what)``
    (every writer reads its input once, slab by slab or chunk by chunk; counts past ``total``, a
    second pass such as the label colours' scan, are held at it)."""

    def __init__(self, source: Any, progress: Callable[[int, int, str], None], what: str) -> None:
        self.source = source
        self.shape = tuple(int(n) for n in source.shape)
        self.dtype = source.dtype
        self.ndim = 3
        self.total = int(np.prod(self.shape))
        self.what = what
        self._progress = progress
        self._done = 0
        self._lock = threading.Lock()

    def __getitem__(self, key: Any) -> np.ndarray:
        block = np.asarray(self.source[key])
        with self._lock:
            self._done = min(self.total, self._done + block.size)
            done = self._done
        self._progress(done, self.total, self.what)
        return block

    def finish(self) -> None:
        """The bar to its end when the writer read less than every voxel once (an empty input)."""
        if self._done < self.total:
            self._done = self.total
            self._progress(self.total, self.total, self.what)


def _dask(array: Any, o: WriteOptions, chunks: tuple[int, ...]) -> Any:
    """The input as a dask array of output-sized chunks: read chunk by chunk, never whole."""
    import dask.array as da

    # numpy and zarr arrays are read from many threads; h5py datasets and page readers one read at a time
    src = array.source if isinstance(array, _Counted) else array
    lock = not isinstance(src, np.ndarray) and type(src).__module__.split(".")[0] != "zarr"
    return da.from_array(array, chunks=chunks, lock=lock, asarray=True).astype(o.dtype)


def _rgba(value: int, hexcol: str) -> dict[str, Any]:
    rgb = [int(hexcol[i : i + 2], 16) for i in (1, 3, 5)]
    return {"label-value": int(value), "rgba": rgb + [255]}


def _label_colours(array: Any, o: WriteOptions) -> dict[str, Any]:
    """``image-label`` ``colors`` (and ``properties``): the classes' colours and names when given,
    else the values present (read slab by slab; left out past :data:`MAX_LABEL_COLOURS`) in the
    project palette's colours. Every entry has an ``rgba``: ome-zarr-models requires one. 0 is
    transparent."""
    from ..config import DEFAULT_COLOURS

    colours = [{"label-value": 0, "rgba": [0, 0, 0, 0]}]
    if o.classes:
        props = [{"label-value": 0, "name": "unlabelled"}]
        for value, name, hexcol in o.classes:
            colours.append(_rgba(value, hexcol))
            props.append({"label-value": int(value), "name": str(name)})
        return {"colors": colours, "properties": props}
    values: set[int] = set()
    for _, block in _slabs(array, o.dtype):
        values.update(int(v) for v in np.unique(block))
        if len(values) > MAX_LABEL_COLOURS:
            return {}
    palette = DEFAULT_COLOURS
    return {"colors": colours + [_rgba(v, palette[(v - 1) % len(palette)]) for v in sorted(values - {0})]}


def _write_ngff(group: Any, array: Any, o: WriteOptions, version: str, *, labels: bool) -> None:
    """One NGFF multiscale image (a pyramid: means for an image, nearest voxels for labels, never
    a mean of class values) into ``group`` with ome-zarr-py, chunk by chunk through dask."""
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.scale import Methods
    from ome_zarr.writer import write_image

    shape = tuple(int(n) for n in array.shape)
    chunks = o.chunks or tuple(max(1, min(64, n)) for n in shape)
    spacing = o.spacing or (1.0, 1.0, 1.0)
    write_image(
        _dask(array, o, chunks), group,
        scale_factors=pyramid_factors(shape, o.levels),
        method=Methods.NEAREST if labels else Methods.LOCAL_MEAN,
        fmt=FormatV04() if version == "0.4" else FormatV05(),
        axes=["z", "y", "x"],
        scale=dict(zip("zyx", (float(v) for v in spacing))),
        axes_units=dict.fromkeys("zyx", o.spacing_unit) if o.spacing_unit else None,
        name=o.name,
        # every chunk on disk, zeros too: a missing chunk then means an incomplete copy (our reader refuses those)
        storage_options={"chunks": chunks, "config": {"write_empty_chunks": True}},
    )
    if labels:
        image_label: dict[str, Any] = {"source": {"image": "../../"}, **_label_colours(array, o)}
        if version == "0.4":
            image_label["version"] = "0.4"
        _set_ome(group, version, **{"image-label": image_label})


def write_ome_zarr(array: Any, path: Path, o: WriteOptions) -> Path:
    """OME-Zarr image (``kind="image"``), or an NGFF label image ``path/labels/<name>`` (``kind="labels"``).

    Every image is a multiscale pyramid (:func:`pyramid_factors`) written by ome-zarr-py. For
    labels with ``image`` given (what :func:`al_annotator.store.export.export` does), the image is
    written at the root and the labels in its ``labels`` group, so napari-ome-zarr, Fiji and
    ome-zarr-models see an image with its segmentation. Without ``image``, ``path`` may be an
    existing OME-Zarr image (the label image is added to its ``labels`` group; one of the same
    name needs ``overwrite=True``), or a new store holding the labels only. The ``labels`` group
    (NGFF) lists the label names (and, in a store of labels only, ``path`` itself).
    """
    import zarr

    version = o.ngff_version
    zf = 2 if version == "0.4" else 3
    if o.kind == "image" or o.image is not None:
        with _atomic(path, o.overwrite) as tmp:
            root = zarr.open_group(str(tmp), mode="w-", zarr_format=zf)
            if o.kind == "image":
                _write_ngff(root, array, o, version, labels=False)
            else:
                _write_ngff(root, o.image, replace(o, name=o.image_name, dtype=np.dtype(o.image.dtype)), version, labels=False)
                _add_labels(root, tmp, array, o, version)
        return path

    if (path.exists() or path.is_symlink()) and not _is_zarr_store(path):
        _check_target(path, o.overwrite)  # raises unless overwrite (and refuses non-zarr folders)
        _remove(path)
    created = not path.exists()
    if created:
        _check_target(path, False)
        root = zarr.open_group(str(path), mode="w-", zarr_format=zf)
    else:
        try:
            root = zarr.open_group(str(path), mode="r+")
        except Exception as exc:
            raise InputError(f"cannot add labels to {path}: it is not a zarr group ({exc}); choose another output path") from exc
        zf = int(root.metadata.zarr_format)
        version = "0.4" if zf == 2 else "0.5"
    try:
        _add_labels(root, path, array, o, version)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                _remove(path)
        raise
    return path


def _add_labels(root: Any, path: Path, array: Any, o: WriteOptions, version: str) -> None:
    """Write ``labels/<name>`` under ``root`` (a temporary sibling renamed into place when complete)."""
    labels_grp = root.require_group("labels")
    names = list(_get_ome(labels_grp).get("labels", []))
    target = path / "labels" / o.name
    if o.name in names or target.exists():
        if not o.overwrite:
            raise InputError(
                f"{path} already holds a label image {o.name!r}; pass overwrite=True (CLI: --overwrite) "
                "to replace it, or choose another name"
            )
        _remove(target)
    tmp_name = f".{o.name}.partial-{os.getpid()}"
    _remove(path / "labels" / tmp_name)
    try:
        _write_ngff(labels_grp.create_group(tmp_name), array, o, version, labels=True)
        os.replace(path / "labels" / tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            _remove(path / "labels" / tmp_name)
        raise
    if o.name not in names:
        names.append(o.name)
    _set_ome(labels_grp, version, labels=names)
    root_attrs = _get_ome(root)
    if "multiscales" not in root_attrs:
        # a store of labels only lists them at its root too; under an image it must not: napari-ome-zarr
        # takes a root with a "labels" list for a labels group and then finds no image
        root_labels = list(root_attrs.get("labels", []))
        if o.name not in root_labels:
            _set_ome(root, version, labels=root_labels + [o.name])


# --------------------------------------------------------------------------------------------- TIFF

_IJ_UNITS = {"micrometer": "micron", "nanometer": "nm", "millimeter": "mm", "centimeter": "cm", "meter": "m", "inch": "inch"}
_OME_UNITS = {"micrometer": "µm", "nanometer": "nm", "millimeter": "mm", "centimeter": "cm", "meter": "m", "inch": "in", "angstrom": "Å"}
_IMAGEJ_DTYPES = {np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32)}


def write_tiff(array: Any, path: Path, o: WriteOptions) -> Path:
    """Multipage TIFF, one page per z slice, written page by page (contiguous, uncompressed).

    uint8, uint16 and float32 are written as an ImageJ hyperstack (z spacing in the ImageJ
    ``spacing`` entry, y/x in the resolution tags, ``unit``); other dtypes as OME-TIFF with
    ``PhysicalSize{Z,Y,X}``, which ImageJ/Fiji opens through Bio-Formats.
    """
    import tifffile

    dt = o.dtype
    shape = tuple(int(n) for n in array.shape)

    def planes() -> Iterator[np.ndarray]:
        for _, block in _slabs(array, dt):
            yield from block

    kw: dict[str, Any] = {}
    meta: dict[str, Any] = {"axes": "ZYX"}
    if dt in _IMAGEJ_DTYPES:
        if o.spacing is not None:
            dz, dy, dx = o.spacing
            kw["resolution"] = (1.0 / dx, 1.0 / dy)  # tifffile: (x, y) pixels per unit
            meta["spacing"] = dz
            meta["unit"] = _IJ_UNITS.get(o.spacing_unit or "", o.spacing_unit or "pixel")
        kw.update(imagej=True, metadata=meta)
    else:
        if o.spacing is not None:
            dz, dy, dx = o.spacing
            u = _OME_UNITS.get(o.spacing_unit or "", "pixel" if o.spacing_unit is None else o.spacing_unit)
            meta.update(PhysicalSizeZ=dz, PhysicalSizeY=dy, PhysicalSizeX=dx,
                        PhysicalSizeZUnit=u, PhysicalSizeYUnit=u, PhysicalSizeXUnit=u)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        kw.update(ome=True, metadata=meta, bigtiff=nbytes > 2**32 - 2**25)
    with _atomic(path, o.overwrite) as tmp:
        tifffile.imwrite(tmp, planes(), shape=shape, dtype=dt, photometric="minisblack", **kw)
    return path


# --------------------------------------------------------------------------------------------- NIfTI

#: NGFF unit -> (NIfTI unit, factor applied to the spacing)
_NIFTI_UNITS = {
    "micrometer": ("micron", 1.0), "millimeter": ("mm", 1.0), "meter": ("meter", 1.0),
    "nanometer": ("micron", 1e-3), "centimeter": ("mm", 10.0), "inch": ("mm", 25.4), "angstrom": ("micron", 1e-4),
}


def write_nifti(array: Any, path: Path, o: WriteOptions) -> Path:
    """NIfTI-1 (``.nii``, or gzip-compressed ``.nii.gz``), streamed slab by slab.

    The ``(Z, Y, X)`` array is stored as NIfTI ``(X, Y, Z)``; because NIfTI stores x fastest, its
    bytes are exactly the C-order bytes of the ``(Z, Y, X)`` array, so slabs are appended as they
    are read. Zooms and affine ``diag(x, y, z, 1)`` come from ``spacing``; units other than
    micron/mm/m are converted (nanometer -> micron, centimeter/inch -> mm).
    """
    import nibabel as nib

    dt = o.dtype.newbyteorder("<") if o.dtype.itemsize > 1 else o.dtype
    z, y, x = (int(n) for n in array.shape)
    sp = o.spacing or (1.0, 1.0, 1.0)
    nunit, factor = _NIFTI_UNITS.get(o.spacing_unit or "", ("unknown", 1.0))
    sz, sy, sx = (s * factor for s in sp)
    hdr = nib.Nifti1Header(endianness="<")
    hdr.set_data_shape((x, y, z))
    hdr.set_data_dtype(dt)
    hdr.set_zooms((sx, sy, sz))
    hdr.set_xyzt_units(nunit)
    affine = np.diag([sx, sy, sz, 1.0])
    hdr.set_qform(affine, code="aligned")
    hdr.set_sform(affine, code="aligned")
    hdr["descrip"] = b"al_annotator.io.write_volume"
    gz = path.name.lower().endswith(".gz")
    with _atomic(path, o.overwrite) as tmp:
        opener: Callable[..., Any] = (lambda p: gzip.open(p, "wb", compresslevel=1)) if gz else (lambda p: open(p, "wb"))
        with opener(tmp) as fh:
            hdr.write_to(fh)
            pad = int(hdr.get_data_offset()) - fh.tell()
            if pad > 0:
                fh.write(b"\0" * pad)
            for _, block in _slabs(array, dt):
                fh.write(np.ascontiguousarray(block).tobytes())
    return path


# --------------------------------------------------------------------------------------------- npy


def write_npy(array: Any, path: Path, o: WriteOptions) -> Path:
    """``.npy`` (no spacing stored), written slab by slab through a memory map."""
    with _atomic(path, o.overwrite) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=o.dtype, shape=tuple(int(n) for n in array.shape))
        try:
            for z0, block in _slabs(array, o.dtype):
                out[z0 : z0 + block.shape[0]] = block
            out.flush()
        finally:
            del out
    return path


register_writer("ome-zarr", write_ome_zarr, suffixes=(".zarr",))
register_writer("tiff", write_tiff, suffixes=(".tif", ".tiff"))
register_writer("nifti", write_nifti, suffixes=(".nii", ".nii.gz"))
register_writer("npy", write_npy, suffixes=(".npy",))


def writer_name(fmt: str | None, p: Path) -> str:
    """The registry name of the writer for ``fmt`` (or its alias), or, when ``fmt`` is ``None``, for the name of ``p``."""
    if fmt is not None:
        key = _ALIASES.get(fmt.strip().lower(), fmt.strip().lower())
        if key not in WRITERS:
            raise InputError(f"unknown export format {fmt!r}; known: {sorted(WRITERS)} (add one with register_writer)")
        return key
    name = p.name.lower()
    for suffix in sorted(_WRITE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return _WRITE_SUFFIXES[suffix]
    raise InputError(
        f"cannot tell the export format from the name {p.name!r}; use a name ending in "
        f"{', '.join(sorted(_WRITE_SUFFIXES))} or pass format= one of {sorted(WRITERS)}"
    )


def _check_classes(classes: Sequence[tuple[int, str, str]] | None) -> tuple[tuple[int, str, str], ...]:
    import re

    out = []
    for item in classes or ():
        try:
            value, name, colour = item
            ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 < int(value) < 2**31
            ok = ok and isinstance(name, str) and bool(name) and bool(re.fullmatch(r"#[0-9a-fA-F]{6}", str(colour)))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InputError(f"classes must be (label value >= 1, name, '#rrggbb') per class, got {item!r}")
        out.append((int(value), name, str(colour).lower()))
    return tuple(out)


def write_volume(
    array: Any,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    spacing: Sequence[float] | str | None = None,
    spacing_unit: str | None = None,
    kind: str = "image",
    name: str = "labels",
    overwrite: bool = False,
    chunks: Sequence[int] | None = None,
    ngff_version: str = "0.4",
    levels: int | None = None,
    classes: Sequence[tuple[int, str, str]] | None = None,
    image: Any = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> Path:
    """Write a ``(Z, Y, X)`` volume (numpy, memmap, zarr, h5py, :class:`VolumeData`...) slab by slab.

    Parameters
    ----------
    array
        3D array-like, or a :class:`VolumeData` (its spacing and unit are used unless given).
    path
        Output file, or folder for OME-Zarr.
    format
        ``"ome-zarr"``, ``"tiff"``, ``"nifti"``, ``"npy"`` (see :data:`WRITERS`); default: from the
        name (``.zarr``/``.ome.zarr``, ``.tif``/``.tiff``, ``.nii``/``.nii.gz``, ``.npy``).
    spacing, spacing_unit
        Voxel size ``(z, y, x)`` and its unit (``"micrometer"``, ``"mm"``...), written into the
        file's metadata (npy stores none).
    kind
        ``"image"`` or ``"labels"``. Labels must be integers (``bool`` is written as ``uint8``);
        for OME-Zarr they become an NGFF label image ``path/labels/<name>`` (``image-label``
        metadata), added to ``path`` if it is already an OME-Zarr image.
    name
        Name of the label image / multiscale.
    overwrite
        Replace an existing output (a folder is only replaced if it is a zarr store).
    chunks
        OME-Zarr chunk shape (default ``64^3``).
    ngff_version
        ``"0.4"`` (zarr format 2; the default: ome-zarr-py, ome-zarr-models, napari-ome-zarr and Fiji
        all read and validate it) or ``"0.5"`` (zarr format 3).
    levels
        OME-Zarr pyramid levels below full resolution (default: halve all axes until the longest
        side would drop below 32; ``0`` for one level). Images are averaged, labels sampled.
    classes
        Labels: ``(label value, name, "#rrggbb")`` per class; OME-Zarr writes them as the
        ``image-label`` ``colors`` and ``properties`` (napari shows the colours and names).
    image
        OME-Zarr labels: an image of the same shape written at the root, the labels in its
        ``labels`` group (the layout other tools expect).
    progress
        ``progress(done, total, what)`` with the voxels read so far of each input (``what``: ``"write
        <name>"``, and ``"write image"`` for ``image``), e.g. :class:`al_annotator.progress.ProgressBars`.

    Returns
    -------
    pathlib.Path
        The path written (for OME-Zarr labels, the group ``path``).

    Raises
    ------
    InputError
        Existing output without ``overwrite``, missing folder, unknown format, a volume that is not
        3D/numeric, float labels.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> out = write_volume(np.zeros((2, 3, 4), np.uint8), os.path.join(tempfile.mkdtemp(), "a.tif"), spacing=(2, 1, 1))
    >>> out.suffix
    '.tif'
    """
    p = Path(path).expanduser()
    fmt = writer_name(format, p)
    if isinstance(array, VolumeData):
        if spacing is None:
            spacing = array.spacing
            spacing_unit = spacing_unit or array.spacing_unit
        array = array.array
    if not hasattr(array, "shape") or not hasattr(array, "dtype"):
        array = np.asarray(array)
    validate_volume(VolumeData(array, None, None, "array", f"the volume to write to {p}"), check_finite=False)
    if kind not in ("image", "labels"):
        raise InputError(f"kind must be 'image' or 'labels', got {kind!r}")
    dtype = np.dtype(array.dtype).newbyteorder("=")
    if kind == "labels" and dtype.kind == "f":
        raise InputError(f"labels must be integers, got dtype {dtype}; convert them first (e.g. np.rint(labels).astype(np.uint16))")
    if dtype.kind == "b":
        dtype = np.dtype(np.uint8)
    if fmt == "nifti" and dtype == np.float16:
        dtype = np.dtype(np.float32)  # NIfTI-1 has no float16
    if not name or "/" in name or name.startswith("."):
        raise InputError(f"name must be a plain non-empty name such as 'labels', got {name!r}")
    if ngff_version not in ("0.4", "0.5"):
        raise InputError(f"ngff_version must be '0.4' (zarr v2) or '0.5' (zarr v3), got {ngff_version!r}")
    ch = None
    if chunks is not None:
        ch = tuple(int(c) for c in chunks)
        if len(ch) != 3 or any(c < 1 for c in ch):
            raise InputError(f"chunks must be three positive integers (z, y, x), got {chunks!r}")
    if levels is not None and (isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or not 0 <= levels <= MAX_LEVELS):
        raise InputError(f"levels must be an integer 0..{MAX_LEVELS} (pyramid levels below full resolution), got {levels!r}")
    label_classes = _check_classes(classes)
    if image is not None:
        if fmt != "ome-zarr" or kind != "labels":
            raise InputError("image= puts an image under OME-Zarr labels; it applies to kind='labels' written as OME-Zarr only")
        if isinstance(image, VolumeData):
            image = image.array
        if tuple(int(n) for n in image.shape) != tuple(int(n) for n in array.shape):
            raise InputError(f"the image has shape {tuple(image.shape)} but the labels {tuple(array.shape)}; they must match")
    counted = []
    if progress is not None:
        if image is not None:
            image = _Counted(image, progress, "write image")
            counted.append(image)
        array = _Counted(array, progress, f"write {name}")
        counted.append(array)
    opts = WriteOptions(
        spacing=parse_spacing(spacing),
        spacing_unit=normalize_unit(spacing_unit),
        kind=kind,
        name=name,
        overwrite=bool(overwrite),
        chunks=ch,  # type: ignore[arg-type]
        ngff_version=ngff_version,
        dtype=dtype,
        levels=None if levels is None else int(levels),
        classes=label_classes,
        image=image,
    )
    try:
        out = Path(WRITERS[fmt](array, p, opts))
        for c in counted:
            c.finish()
        return out
    except AlAnnotatorError:
        raise
    except OSError as exc:
        raise InputError(f"cannot write {p}: {exc}; check free disk space and write permission") from exc
