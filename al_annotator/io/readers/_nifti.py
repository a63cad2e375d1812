"""``nifti``: ``.nii`` / ``.nii.gz`` (NIfTI-1 and NIfTI-2 single files).

NIfTI stores voxels as ``(X, Y, Z)`` (i fastest); the array is returned transposed to
``(Z, Y, X)`` = ``data.T`` (no reorientation by the affine: voxel order as stored), and spacing is
the header zooms reversed. A 4th dimension is the channel axis. Memory-mapped (``.nii``) or
streamed (``.nii.gz``). Scaling (``scl_slope``/``scl_inter``) is applied only when not identity.
nibabel is imported when a file is read.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import AlAnnotatorError, InputError
from .._lazy import LazyView, PlaneStackArray
from ..volume import VolumeData, normalize_unit
from ._common import ReadOptions, _file_size, _finish, _head, _reject, _spacing3, _truncated
from ._registry import Format

__all__ = ["FORMAT", "read_nifti"]


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


FORMAT = Format("nifti", read_nifti, suffixes=(".nii", ".nii.gz"), sniff=_sniff_nifti, aliases=("nii", "nii.gz"))
