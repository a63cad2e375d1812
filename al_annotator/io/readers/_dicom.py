"""``dicom``: a folder with one DICOM series (or ``dataset=SeriesInstanceUID``), or one multi-frame file.

Slices sorted by ``ImagePositionPatient`` along the slice normal (fallback ``InstanceNumber``),
z = slice order, y = rows, x = columns; spacing from slice positions and ``PixelSpacing`` (mm).
Rescale slope/intercept applied only when not identity. Read slice by slice on demand. pydicom is
imported when a series is read.
"""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from .._lazy import PlaneStackArray
from ..volume import VolumeData
from ._common import ReadOptions, _file_size, _finish, _head, _reject, _spacing3, natural_key
from ._registry import Format

__all__ = ["FORMAT", "read_dicom"]


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


FORMAT = Format("dicom", read_dicom, suffixes=(".dcm",), sniff=_sniff_dicom_dir, folder=True, aliases=("dcm",))
