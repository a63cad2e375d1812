"""Volume writers for export: OME-Zarr (NGFF 0.4 / 0.5, labels groups), multipage TIFF, NIfTI, npy.

Every writer reads its input slab by slab along z (a zarr or memory-mapped array of any size is
exported without being loaded), writes to a hidden temporary path next to the output and renames
it when complete (an interrupted export leaves no half-written file), and refuses to replace an
existing output unless ``overwrite=True``.

Axis conventions match the readers, so ``read_volume(write_volume(a, p)).array == a``:

* OME-Zarr: axes ``z, y, x`` (type ``space``), ``scale`` = spacing.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from ..config import parse_spacing
from ..errors import AlAnnotatorError, InputError
from .volume import VolumeData, normalize_unit, slab_size, validate_volume

__all__ = ["WriteOptions", "Writer", "WRITERS", "register_writer", "write_volume"]

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


def _multiscale(name: str, spacing: tuple[float, float, float] | None, unit: str | None, version: str) -> dict[str, Any]:
    axes: list[dict[str, Any]] = []
    for a in "zyx":
        ax: dict[str, Any] = {"name": a, "type": "space"}
        if unit:
            ax["unit"] = unit
        axes.append(ax)
    ms: dict[str, Any] = {
        "name": name,
        "axes": axes,
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": list(spacing or (1.0, 1.0, 1.0))}]}],
        "metadata": {"method": "al_annotator.io.write_volume"},
    }
    if version == "0.4":
        ms = {"version": "0.4", **ms}
    return ms


def _set_ome(group: Any, version: str, **entries: Any) -> None:
    """Write NGFF metadata: top-level attributes for 0.4, under ``"ome"`` for 0.5."""
    if version == "0.4":
        group.attrs.update(entries)
    else:
        ome = dict(group.attrs.get("ome", {}))
        ome.update({"version": "0.5", **entries})
        group.attrs["ome"] = ome


def _get_ome(group: Any) -> dict[str, Any]:
    attrs = dict(group.attrs)
    return dict(attrs["ome"]) if isinstance(attrs.get("ome"), dict) else attrs


def _write_image_group(group: Any, array: Any, o: WriteOptions, zarr_format: int, version: str, *, labels: bool) -> None:
    import numcodecs
    import zarr

    shape = tuple(int(n) for n in array.shape)
    chunks = o.chunks or tuple(max(1, min(64, n)) for n in shape)
    kw: dict[str, Any] = {}
    if zarr_format == 2:
        shuffle = numcodecs.Blosc.BITSHUFFLE if o.dtype.itemsize == 1 else numcodecs.Blosc.SHUFFLE
        kw["compressors"] = numcodecs.Blosc(cname="zstd", clevel=3, shuffle=shuffle)
        kw["chunk_key_encoding"] = {"name": "v2", "separator": "/"}  # NGFF 0.4: '/'-separated chunk keys
    else:
        kw["compressors"] = zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle" if o.dtype.itemsize == 1 else "shuffle")
        kw["dimension_names"] = ("z", "y", "x")
    arr = group.create_array("0", shape=shape, dtype=o.dtype, chunks=chunks, fill_value=0, **kw)
    step = chunks[0] * max(1, slab_size(shape, o.dtype.itemsize) // chunks[0])
    values: set[int] | None = set() if labels else None
    for z0, block in _slabs(array, o.dtype, step):
        arr[z0 : z0 + block.shape[0]] = block
        if values is not None:
            values.update(int(v) for v in np.unique(block))
            if len(values) > MAX_LABEL_COLOURS:
                values = None
    _set_ome(group, version, multiscales=[_multiscale(o.name, o.spacing, o.spacing_unit, version)])
    if labels:
        image_label: dict[str, Any] = {"source": {"image": "../../"}}
        if version == "0.4":
            image_label["version"] = "0.4"
        if values is not None:
            image_label["colors"] = [{"label-value": v} for v in sorted(values)]
        _set_ome(group, version, **{"image-label": image_label})


def write_ome_zarr(array: Any, path: Path, o: WriteOptions) -> Path:
    """OME-Zarr image (``kind="image"``), or an NGFF label image ``path/labels/<name>`` (``kind="labels"``).

    For labels, ``path`` may be an existing OME-Zarr image: the label image is added to its
    ``labels`` group (an existing label of the same name needs ``overwrite=True``); otherwise a new
    group is created. The ``labels`` group (NGFF) and ``path`` itself list the label names.
    """
    import zarr

    version = o.ngff_version
    zf = 2 if version == "0.4" else 3
    if o.kind == "image":
        with _atomic(path, o.overwrite) as tmp:
            root = zarr.open_group(str(tmp), mode="w-", zarr_format=zf)
            _write_image_group(root, array, o, zf, version, labels=False)
        return path

    # labels
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
            grp = labels_grp.create_group(tmp_name)
            _write_image_group(grp, array, o, zf, version, labels=True)
            os.replace(path / "labels" / tmp_name, target)
        except BaseException:
            with contextlib.suppress(OSError):
                _remove(path / "labels" / tmp_name)
            raise
        if o.name not in names:
            names.append(o.name)
        _set_ome(labels_grp, version, labels=names)
        root_labels = list(_get_ome(root).get("labels", []))
        if o.name not in root_labels:
            _set_ome(root, version, labels=root_labels + [o.name])
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                _remove(path)
        raise
    return path


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


def _writer_name(fmt: str | None, p: Path) -> str:
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
        ``"0.4"`` (zarr format 2, read by napari-ome-zarr / ome-zarr-py / Fiji) or ``"0.5"`` (zarr format 3).

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
    fmt = _writer_name(format, p)
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
    opts = WriteOptions(
        spacing=parse_spacing(spacing),
        spacing_unit=normalize_unit(spacing_unit),
        kind=kind,
        name=name,
        overwrite=bool(overwrite),
        chunks=ch,  # type: ignore[arg-type]
        ngff_version=ngff_version,
        dtype=dtype,
    )
    try:
        return Path(WRITERS[fmt](array, p, opts))
    except AlAnnotatorError:
        raise
    except OSError as exc:
        raise InputError(f"cannot write {p}: {exc}; check free disk space and write permission") from exc
