"""Fault injection on every importer: malformed inputs must end in a clear error or a correct volume.

For each importer format (npy, raw, TIFF memmap/zlib, TIFF and PNG slice folders, HDF5
contiguous/gzip-chunked, OME-Zarr on zarr v2/v3, NIfTI ``.nii``/``.nii.gz``, a DICOM series) a small
valid volume (8x16x16) is written and then damaged:

* **truncated**: the file (for folders: one slice file, one zarr chunk, one zarr metadata file) cut
  at several fractions of its length, or by one byte;
* **bitflip**: a few seeded random bit flips, anywhere or in the first kilobyte (headers);
* **empty**: the file (or one slice / chunk / metadata file) made 0 bytes long;
* **garbage**: the file replaced by random bytes with the right suffix;
* **dtype**: a volume of bool, int64, uint64, float16, complex, str or object, where the format can
  store it;
* **shape**: a 1D, 2D, 4D (no channel given), 5D, zero-length-axis or absurdly large declared volume
  (a tiny file whose header or metadata declares terabytes), and DICOM series with slices of two
  sizes, two slices at one position or a missing slice.

Each input goes through ``read_volume(path)`` (the whole array is read when it is small) and then
through ``create_project(tmp / "p", path)``. The outcome of each stage is one of

``clear-error``
    an :class:`~al_annotator.errors.AlAnnotatorError` whose message names the file (good);
``correct``
    a volume equal to the source (a bool volume read as uint8 0/1) (good);
``plausible``
    a bit flip in a format without checksums gave a readable volume of the source's shape and a
    numeric dtype with other values (allowed: the bytes are valid, only the values changed);
``plausible-reshaped``
    a bit flip in text metadata (a digit of a zarr array's JSON shape) gave a readable 3D volume of
    another sane shape (each axis within 1/16..16 times the source's); allowed for the same reason;
``lazy``
    an absurdly large declared volume opened lazily, not read (allowed for ``read_volume``; the
    project build must then refuse it for lack of disk space);
``skipped``
    ``create_project`` not tried on an absurd volume because the store does not check free disk
    space yet (it would fill the disk);
``unnamed-error``, ``wrong``, ``silent-accept``, ``missed``, ``traceback``
    failures: an error not naming the file, a volume with wrong data or shape, a success where an
    error was due (complex, str...), an error where a success was due (bool), any other exception.

    .venv/bin/python benchmarks/bench_malformed.py --write-md docs/BENCHMARKS.md
    .venv/bin/python benchmarks/bench_malformed.py --seeds 3 --formats npy,tiff -v   # quick look

``tests/test_bad_input.py`` imports :func:`cases` and :func:`run_case` from here.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import inspect
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from al_annotator.errors import AlAnnotatorError  # noqa: E402

SHAPE = (8, 16, 16)
#: Declared by the "huge" cases: 16 TB of uint16, more than any disk holds.
HUGE = (20000, 20000, 20000)
#: Whole arrays up to this size are read by :func:`run_case`.
READ_LIMIT = 64 << 20

FORMATS = (
    "npy", "raw", "tiff", "tiff-zlib", "slices-tif", "slices-png", "hdf5", "hdf5-gzip",
    "zarr-v2", "zarr-v3", "nii", "nii.gz", "dicom",
)
KINDS = ("truncated", "bitflip", "empty", "garbage", "dtype", "shape")
GOOD = frozenset({"clear-error", "correct", "plausible", "plausible-reshaped", "lazy", "skipped"})
FAILURES = ("unnamed-error", "wrong", "silent-accept", "missed", "traceback")


def source_volume(dtype: Any = np.uint16, shape: tuple[int, ...] = SHAPE, seed: int = 0) -> np.ndarray:
    """A small seeded volume of ``dtype`` (values 0..3999 for integers, bool: about half True)."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return rng.random(shape) < 0.5
    if dt.kind in "iu":
        hi = min(4000, int(np.iinfo(dt).max))
        return rng.integers(0, hi, shape).astype(dt)
    if dt.kind == "c":
        return (rng.random(shape) + 1j * rng.random(shape)).astype(dt)
    if dt.kind == "U":
        return np.full(shape, "ab", dtype=dt)
    if dt.kind == "S":
        return np.full(shape, b"ab", dtype=dt)
    if dt.kind == "O":
        return np.full(shape, None, dtype=object)
    return (rng.random(shape) * 1000).astype(dt)


# ============================================================================ writers of valid inputs


def _dicom_series(folder: Path, vol: np.ndarray, *, positions: list[float] | None = None, shapes: dict[int, tuple[int, int]] | None = None) -> Path:
    """An uncompressed CT series, one file per z slice (``im000.dcm``...); ``positions``: z of each slice."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    uid = "1.2.826.0.1.3680043.8.498.1"
    for i, plane in enumerate(vol):
        if shapes and i in shapes:
            plane = np.zeros(shapes[i], vol.dtype)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID = uid
        ds.Modality = "CT"
        ds.Rows, ds.Columns = plane.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelSpacing = [0.5, 0.5]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, (positions[i] if positions else 2.0 * i)]
        ds.InstanceNumber = i + 1
        ds.PixelData = np.ascontiguousarray(plane, dtype=np.uint16).tobytes()
        ds.save_as(folder / f"im{i:03d}.dcm", enforce_file_format=True)
    return folder


def _ngff(path: Path, data: np.ndarray, zarr_format: int) -> Path:
    """An OME-NGFF image (0.4 on zarr v2, 0.5 on zarr v3) with one level ``0``."""
    import zarr

    nd, shape = data.ndim, data.shape
    axes = [{"name": a, "type": "space"} for a in "zyx"][-nd:] if nd <= 3 else (
        [{"name": f"q{i}", "type": "channel" if i == 0 else "time"} for i in range(nd - 3)] + [{"name": a, "type": "space"} for a in "zyx"]
    )
    ms = {"axes": axes, "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0] * nd}]}]}
    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    if zarr_format == 2:
        root.attrs["multiscales"] = [{"version": "0.4", **ms}]
    else:
        root.attrs["ome"] = {"version": "0.5", "multiscales": [ms]}
    a = root.create_array("0", shape=shape, dtype=data.dtype, chunks=tuple(max(1, min(4, n)) for n in shape))
    if data.size:
        a[...] = data
    return path


def write_valid(fmt: str, d: Path, data: np.ndarray) -> tuple[Path, dict[str, Any]]:
    """Write ``data`` as a valid input of ``fmt`` under ``d``; return (path, read_volume keywords)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile warns about the zero-size arrays written on purpose
        return _write_valid(fmt, d, data)


def _write_valid(fmt: str, d: Path, data: np.ndarray) -> tuple[Path, dict[str, Any]]:
    import h5py
    import tifffile

    d.mkdir(parents=True, exist_ok=True)
    if fmt == "npy":
        p = d / "vol.npy"
        np.save(p, data, allow_pickle=data.dtype.hasobject)
        return p, {}
    if fmt == "raw":
        p = d / "vol.raw"
        p.write_bytes(np.ascontiguousarray(data).tobytes())
        return p, {"shape": data.shape, "dtype": data.dtype.str}
    if fmt in ("tiff", "tiff-zlib"):
        p = d / "vol.tif"
        tifffile.imwrite(p, data, **({"compression": "zlib"} if fmt == "tiff-zlib" else {}))
        return p, {}
    if fmt == "slices-tif":
        p = d / "slices"
        p.mkdir()
        for i, plane in enumerate(data):
            tifffile.imwrite(p / f"z{i:03d}.tif", plane)
        return p, {}
    if fmt == "slices-png":
        from PIL import Image

        p = d / "slices"
        p.mkdir()
        for i, plane in enumerate(data):
            Image.fromarray(plane).save(p / f"z{i:03d}.png")
        return p, {}
    if fmt in ("hdf5", "hdf5-gzip"):
        p = d / "vol.h5"
        with h5py.File(p, "w") as f:
            kw = {"chunks": tuple(max(1, min(4, n)) for n in data.shape), "compression": "gzip"} if fmt == "hdf5-gzip" and data.size else {}
            f.create_dataset("data", data=data, **kw)
        return p, {}
    if fmt in ("zarr-v2", "zarr-v3"):
        return _ngff(d / "vol.ome.zarr", data, 2 if fmt == "zarr-v2" else 3), {}
    if fmt in ("nii", "nii.gz"):
        import nibabel as nib

        p = d / f"vol.{fmt}"
        nib.save(nib.Nifti1Image(data.T, np.eye(4), dtype=data.dtype), p)
        return p, {}
    if fmt == "dicom":
        return _dicom_series(d / "series", data), {}
    raise ValueError(f"unknown format {fmt!r}")


# ============================================================================ damage


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def targets(fmt: str, path: Path) -> dict[str, Path]:
    """The files a damage applies to: ``{"file": ...}`` for one-file formats, else one slice / chunk / metadata file."""
    if not path.is_dir():
        return {"file": path}
    if fmt.startswith("zarr"):
        files = _files(path / "0")
        meta = [p for p in files if p.name in (".zarray", "zarr.json")]
        chunks = [p for p in files if p.name not in (".zarray", "zarr.json", ".zattrs")]
        return {"chunk": chunks[len(chunks) // 2], "meta": meta[0]}
    files = _files(path)
    return {"slice": files[len(files) // 2]}


def _truncate(p: Path, keep: float | int) -> None:
    data = p.read_bytes()
    n = len(data) + keep if isinstance(keep, int) else int(len(data) * keep)
    p.write_bytes(data[: max(0, n)])


def _bitflip(p: Path, seed: int) -> None:
    data = bytearray(p.read_bytes())
    if not data:
        return
    rng = np.random.default_rng(seed)
    span = len(data) if seed % 2 == 0 else min(len(data), 1024)  # odd seeds hit the headers
    for _ in range(1 + seed % 4):
        i = int(rng.integers(0, span))
        data[i] ^= 1 << int(rng.integers(0, 8))
    p.write_bytes(bytes(data))


def _garbage(p: Path, seed: int) -> None:
    size = max(64, p.stat().st_size if p.exists() else 0)
    p.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())


# ============================================================================ cases


@dataclass
class Case:
    """One malformed input: ``build(dir) -> (path, read keywords)``, and what a success must look like.

    ``expected`` is the array a success must equal (``None``: any success is wrong); ``plausible``
    allows a success of the source's shape and a numeric dtype with other values (bit flips);
    ``must_succeed`` makes an error a failure (bool volumes); ``huge`` marks a declared volume too
    large to read; ``culprit`` is the file name that an error must name (default: the input's name).
    """

    fmt: str
    kind: str
    name: str
    build: Callable[[Path], tuple[Path, dict[str, Any]]]
    expected: np.ndarray | None = None
    plausible: bool = False
    must_succeed: bool = False
    huge: bool = False
    culprit: str | None = None

    @property
    def id(self) -> str:
        return f"{self.fmt}-{self.kind}-{self.name}"


#: dtypes each format can store (only these get a "dtype" case).
DTYPES: dict[str, tuple[str, ...]] = {
    "npy": ("bool", "int64", "uint64", "float16", "complex64", "str", "object"),
    "raw": ("bool", "int64", "uint64", "float16", "complex64"),
    "tiff": ("bool", "int64", "uint64", "float16", "complex64"),
    "tiff-zlib": ("bool", "int64", "uint64", "float16", "complex64"),
    "slices-tif": ("bool", "int64", "uint64", "complex64"),
    "slices-png": ("bool",),
    "hdf5": ("bool", "int64", "uint64", "float16", "complex64", "bytes"),
    "hdf5-gzip": ("bool", "int64", "uint64", "float16", "complex64", "bytes"),
    "zarr-v2": ("bool", "int64", "uint64", "float16", "complex64", "str"),
    "zarr-v3": ("bool", "int64", "uint64", "float16", "complex64"),
    "nii": ("int64", "uint64", "complex64"),
    "nii.gz": ("int64", "uint64", "complex64"),
    "dicom": (),
}
_NP_DTYPE = {"str": "<U2", "bytes": "S2", "object": "object"}


def _base_dtype(fmt: str) -> np.dtype:
    return np.dtype(np.uint8 if fmt == "slices-png" else np.uint16)


def _damage_cases(fmt: str, seeds: range) -> Iterator[Case]:
    base = source_volume(_base_dtype(fmt))
    probe_dir = Path(tempfile.mkdtemp(prefix="malformed-probe-"))
    try:
        names = list(targets(fmt, write_valid(fmt, probe_dir, base)[0]))
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)

    def damaged(where: str, op: Callable[[Path], None]) -> Callable[[Path], tuple[Path, dict[str, Any]]]:
        def build(d: Path) -> tuple[Path, dict[str, Any]]:
            path, kw = write_valid(fmt, d, base)
            op(targets(fmt, path)[where])
            return path, kw

        return build

    def culprit(where: str) -> str | None:
        return "im004.dcm" if (fmt == "dicom" and where == "slice") else ("z004." + fmt[-3:] if where == "slice" else None)

    for where in names:
        tag = "" if where == "file" else f"{where}-"
        for keep in (0.1, 0.5, 0.9, -1):
            label = "minus1byte" if keep == -1 else f"at{int(keep * 100)}"
            yield Case(fmt, "truncated", tag + label, damaged(where, lambda p, k=keep: _truncate(p, k)), base, culprit=culprit(where))
        for s in seeds:
            yield Case(fmt, "bitflip", f"{tag}seed{s}", damaged(where, lambda p, s=s: _bitflip(p, s)), base, plausible=True, culprit=culprit(where))
        yield Case(fmt, "empty", tag + "0bytes", damaged(where, lambda p: p.write_bytes(b"")), base, culprit=culprit(where))
        # raw has no structure: random bytes of the right size are a valid raw volume
        yield Case(fmt, "garbage", tag + "random", damaged(where, lambda p: _garbage(p, 7)), base, plausible=fmt == "raw", culprit=culprit(where))


def _dtype_cases(fmt: str) -> Iterator[Case]:
    for name in DTYPES[fmt]:
        dt = np.dtype(_NP_DTYPE.get(name, name))
        data = source_volume(dt)
        if name == "bool":
            expected, must = data.astype(np.uint8), True
        elif dt.kind in "iuf":
            expected, must = data, False  # int64 / uint64 / float16: the values, or a clear error
        else:
            expected, must = None, False  # complex, strings, objects: a clear error
        yield Case(fmt, "dtype", name, lambda d, data=data: write_valid(fmt, d, data), expected, must_succeed=must)


def _write_huge(fmt: str, d: Path, *, one_chunk: bool = False) -> tuple[Path, dict[str, Any]]:
    """A tiny file whose header or metadata declares a :data:`HUGE` uint16 volume.

    ``one_chunk`` (HDF5, zarr): one 64^3 chunk is written, so the data are partly there and a reader
    may open it; the project build must then refuse it for lack of disk space.
    """
    import h5py

    d.mkdir(parents=True, exist_ok=True)
    dt = np.dtype(np.uint16)
    if fmt == "npy":
        p = d / "vol.npy"
        with open(p, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": dt.str, "fortran_order": False, "shape": HUGE})
            f.write(b"\0" * 4096)
        return p, {}
    if fmt == "raw":
        p = d / "vol.raw"
        p.write_bytes(b"\0" * 4096)
        return p, {"shape": HUGE, "dtype": "uint16"}
    if fmt in ("hdf5", "hdf5-gzip"):
        p = d / "vol.h5"
        with h5py.File(p, "w") as f:
            ds = f.create_dataset("data", shape=HUGE, dtype=dt, chunks=(64, 64, 64), **({"compression": "gzip"} if fmt == "hdf5-gzip" else {}))
            if one_chunk:
                ds[:64, :64, :64] = source_volume(dt, (64, 64, 64))
        return p, {}
    if fmt in ("zarr-v2", "zarr-v3"):
        return _huge_zarr(fmt, d, one_chunk), {}
    if fmt in ("nii", "nii.gz"):
        import nibabel as nib

        hdr = nib.Nifti1Header()
        hdr.set_data_dtype(dt)
        hdr.set_data_shape(HUGE)
        raw = hdr.binaryblock + b"\0" * 4 + b"\0" * 4096  # header, extension flag, a little data
        p = d / f"vol.{fmt}"
        p.write_bytes(gzip.compress(raw) if fmt == "nii.gz" else raw)
        return p, {}
    raise ValueError(fmt)


def _huge_zarr(fmt: str, d: Path, one_chunk: bool = False) -> Path:
    import zarr

    path = d / "vol.ome.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=2 if fmt == "zarr-v2" else 3)
    ms = {"axes": [{"name": a, "type": "space"} for a in "zyx"], "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0] * 3}]}]}
    if fmt == "zarr-v2":
        root.attrs["multiscales"] = [{"version": "0.4", **ms}]
    else:
        root.attrs["ome"] = {"version": "0.5", "multiscales": [ms]}
    a = root.create_array("0", shape=HUGE, dtype=np.uint16, chunks=(64, 64, 64))
    if one_chunk:
        a[:64, :64, :64] = source_volume(np.uint16, (64, 64, 64))
    return path


def _dicom_huge(d: Path) -> tuple[Path, dict[str, Any]]:
    """A series whose headers declare 60000 x 60000 slices with 16x16 pixel data."""
    import pydicom

    path = _dicom_series(d / "series", source_volume(np.uint16))
    for p in _files(path):
        ds = pydicom.dcmread(p)
        ds.Rows = ds.Columns = 60000
        ds.save_as(p)
    return path, {}


def _shape_cases(fmt: str) -> Iterator[Case]:
    base_dt = _base_dtype(fmt)
    shapes: dict[str, tuple[int, ...]] = {"1d": (16,), "2d": (16, 16), "4d": (3, 8, 16, 16), "5d": (2, 3, 4, 8, 8), "zero-axis": (0, 16, 16)}
    if fmt.startswith("slices") or fmt == "dicom":
        shapes = {"2d-one-slice": (1, 16, 16), "zero-width": (4, 16, 0)} if fmt != "dicom" else {"2d-one-slice": (1, 16, 16)}
    if fmt in ("nii", "nii.gz"):
        shapes.pop("zero-axis")  # nibabel refuses to write a zero-length axis
    for name, shape in shapes.items():
        data = source_volume(base_dt, shape)
        if fmt == "slices-png" and name == "zero-width":
            continue  # PIL cannot write a 0-pixel-wide image
        yield Case(fmt, "shape", name, lambda d, data=data: write_valid(fmt, d, data))
    if fmt in ("npy", "raw", "hdf5", "hdf5-gzip", "zarr-v2", "zarr-v3", "nii", "nii.gz"):
        yield Case(fmt, "shape", "huge-declared", lambda d: _write_huge(fmt, d), huge=True)
    if fmt in ("hdf5", "hdf5-gzip", "zarr-v2", "zarr-v3"):
        yield Case(fmt, "shape", "huge-declared-one-chunk", lambda d: _write_huge(fmt, d, one_chunk=True), huge=True)
    if fmt == "dicom":
        base = source_volume(np.uint16)
        yield Case(fmt, "shape", "huge-declared", _dicom_huge, huge=True)
        yield Case(fmt, "shape", "slice-sizes-differ", lambda d: (_dicom_series(d / "series", base, shapes={5: (16, 15)}), {}), culprit="im005.dcm")
        dup = [2.0 * i for i in range(8)]
        dup[5] = dup[4]
        yield Case(fmt, "shape", "duplicate-position", lambda d: (_dicom_series(d / "series", base, positions=dup), {}))
        gap = [2.0 * i + (2.0 if i >= 5 else 0.0) for i in range(8)]
        yield Case(fmt, "shape", "missing-position", lambda d: (_dicom_series(d / "series", base, positions=gap), {}))


def cases(formats: tuple[str, ...] = FORMATS, kinds: tuple[str, ...] = KINDS, seeds: range = range(3)) -> list[Case]:
    """Every malformed-input case for ``formats`` x ``kinds`` (bit flips with ``seeds``)."""
    out: list[Case] = []
    for fmt in formats:
        if {"truncated", "bitflip", "empty", "garbage"} & set(kinds):
            out += [c for c in _damage_cases(fmt, seeds) if c.kind in kinds]
        if "dtype" in kinds:
            out += list(_dtype_cases(fmt))
        if "shape" in kinds:
            out += list(_shape_cases(fmt))
    return out


# ============================================================================ running a case


@dataclass
class Outcome:
    stage: str  # "read" or "create"
    result: str  # see the module docstring
    detail: str = ""

    @property
    def good(self) -> bool:
        return self.result in GOOD


def _judge_error(case: Case, path: Path, exc: BaseException, stage: str) -> Outcome:
    msg = str(exc)
    if not isinstance(exc, AlAnnotatorError):
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
        return Outcome(stage, "traceback", f"{type(exc).__name__}: {msg}\n{tb}")
    if case.must_succeed:
        return Outcome(stage, "missed", f"{type(exc).__name__}: {msg}")
    wanted = case.culprit or path.name
    if wanted not in msg:
        return Outcome(stage, "unnamed-error", f"{type(exc).__name__} does not name {wanted!r}: {msg}")
    return Outcome(stage, "clear-error", msg)


def _plausible_shape(shape: tuple[int, ...], source: tuple[int, ...]) -> bool:
    """3D, and every axis within 1/16..16 times the source's."""
    return len(shape) == 3 and all(n > 0 and m / 16 <= n <= m * 16 for n, m in zip(shape, source))


def _judge_array(case: Case, arr: np.ndarray, stage: str) -> Outcome:
    exp = case.expected
    if exp is None:
        return Outcome(stage, "silent-accept", f"accepted shape {arr.shape} dtype {arr.dtype}")
    if arr.shape == exp.shape and arr.dtype.kind in "biuf" and np.array_equal(arr, exp) and not (case.must_succeed and arr.dtype != exp.dtype):
        return Outcome(stage, "correct")
    if case.plausible and arr.shape == exp.shape and arr.dtype.kind in "biuf":
        return Outcome(stage, "plausible", f"dtype {arr.dtype}, {int(np.sum(arr != exp))} voxels differ")
    if case.plausible and _plausible_shape(arr.shape, exp.shape) and arr.dtype.kind in "biuf":
        # a flipped digit in text metadata (zarr JSON) declares another, still sane, shape: the bytes are valid
        return Outcome(stage, "plausible-reshaped", f"shape {arr.shape} instead of {exp.shape}, dtype {arr.dtype}")
    return Outcome(stage, "wrong", f"shape {arr.shape} dtype {arr.dtype} (expected {exp.shape} {exp.dtype}, equal={arr.shape == exp.shape and np.array_equal(arr, exp)})")


def store_checks_free_space() -> bool:
    """True when ``create_project`` checks free disk space (calls ``require_free_space``)."""
    try:
        from al_annotator.store import project

        return "require_free_space" in inspect.getsource(project)
    except (ImportError, OSError, TypeError):
        return False


def run_case(case: Case, workdir: Path, *, create: bool = True) -> list[Outcome]:
    """Build ``case`` under ``workdir``; judge ``read_volume`` (and ``create_project``) on it."""
    from al_annotator.io import read_volume
    from al_annotator.store import create_project

    path, kw = case.build(workdir / "in")
    outcomes: list[Outcome] = []
    read_arr: np.ndarray | None = None
    try:
        with read_volume(path, **kw) as vol:
            if case.huge and vol.nbytes > READ_LIMIT:
                corner = np.asarray(vol.array[:2, :64, :64])  # a lazy volume must still read right
                if "one-chunk" in case.name and not np.array_equal(corner, source_volume(np.uint16, (64, 64, 64))[:2]):
                    outcomes.append(Outcome("read", "wrong", "the one stored chunk reads back wrong"))
                else:
                    outcomes.append(Outcome("read", "lazy", f"shape {vol.shape}"))
            elif vol.nbytes > READ_LIMIT:
                outcomes.append(Outcome("read", "wrong", f"declares {vol.shape} ({vol.nbytes} bytes) from a small file"))
            else:
                read_arr = np.asarray(vol.array)
                outcomes.append(_judge_array(case, read_arr, "read"))
    except Exception as exc:  # noqa: BLE001 - judged, not swallowed
        outcomes.append(_judge_error(case, path, exc, "read"))
    if not create:
        return outcomes
    if case.huge and outcomes[0].result == "lazy" and not store_checks_free_space():
        outcomes.append(Outcome("create", "skipped", "the store does not check free disk space yet; it would fill the disk"))
        return outcomes
    target = workdir / "p"
    try:
        store = create_project(target, path, read_kw=kw or None, fsync=False)
    except Exception as exc:  # noqa: BLE001
        outcomes.append(_judge_error(case, path, exc, "create"))
    else:
        try:
            img = np.asarray(store.image[...])
        finally:
            store.close()
        if read_arr is None:
            outcomes.append(Outcome("create", "wrong", f"read_volume failed ({outcomes[0].result}) but create_project built {img.shape} {img.dtype}"))
        elif not np.array_equal(img, read_arr) or img.shape != read_arr.shape:
            outcomes.append(Outcome("create", "wrong", f"the project image differs from what read_volume returned ({img.dtype} vs {read_arr.dtype})"))
        else:
            outcomes.append(_judge_array(case, img, "create") if not outcomes[0].result.startswith("plausible") else Outcome("create", outcomes[0].result))
            if case.must_succeed and img.dtype != np.uint8:
                outcomes[-1] = Outcome("create", "wrong", f"bool volume stored as {img.dtype}, not uint8")
        shutil.rmtree(target, ignore_errors=True)
    return outcomes


# ============================================================================ benchmark


@dataclass
class Tally:
    tried: int = 0
    results: collections.Counter = field(default_factory=collections.Counter)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20, help="bit-flip seeds per damaged file (default 20)")
    ap.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated subset of {','.join(FORMATS)}")
    ap.add_argument("--no-create", action="store_true", help="judge read_volume only, skip create_project")
    ap.add_argument("--write-md", type=Path, help="replace (or append) the bench_malformed section of this markdown file")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every failure with its message")
    args = ap.parse_args()

    formats = tuple(f for f in args.formats.split(",") if f)
    all_cases = cases(formats, KINDS, range(args.seeds))
    per_fmt: dict[str, Tally] = collections.defaultdict(Tally)
    per_kind: dict[str, Tally] = collections.defaultdict(Tally)
    failures: list[tuple[Case, Outcome]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-malformed-") as tmp:
        for i, case in enumerate(all_cases):
            work = Path(tmp) / f"c{i}"
            work.mkdir()
            for out in run_case(case, work, create=not args.no_create):
                for t in (per_fmt[case.fmt], per_kind[case.kind]):
                    t.tried += 1
                    t.results[out.result] += 1
                if not out.good:
                    failures.append((case, out))
                    if args.verbose:
                        print(f"FAIL {case.id} [{out.stage}] {out.result}: {out.detail}")
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - t0

    cols = ["clear-error", "correct", "plausible", "plausible-reshaped", "lazy", "skipped", *FAILURES]

    def table(title: str, rows: dict[str, Tally]) -> str:
        head = f"| {title} | tried | " + " | ".join(cols) + " |\n|---|" + "---:|" * (len(cols) + 1) + "\n"
        body = "".join(f"| {k} | {t.tried} | " + " | ".join(str(t.results.get(c, 0)) for c in cols) + " |\n" for k, t in rows.items())
        tot = Tally(sum(t.tried for t in rows.values()), sum((t.results for t in rows.values()), collections.Counter()))
        return head + body + f"| **all** | **{tot.tried}** | " + " | ".join(f"**{tot.results.get(c, 0)}**" for c in cols) + " |\n"

    total = sum(t.tried for t in per_fmt.values())
    counts = sum((t.results for t in per_fmt.values()), collections.Counter())
    summary = (
        f"{len(all_cases)} malformed inputs, {total} judged stages (read_volume"
        + ("" if args.no_create else " and create_project")
        + f"): {counts['clear-error']} clear errors naming the file, {counts['correct']} correct volumes, "
        f"{counts['plausible']} plausible bit-flipped volumes (+{counts['plausible-reshaped']} with another sane shape), {counts['lazy']} lazily opened absurd volumes, "
        f"{counts['skipped']} skipped, {sum(counts[c] for c in FAILURES)} failures "
        f"({', '.join(f'{counts[c]} {c}' for c in FAILURES)}); {elapsed:.0f} s."
    )
    print(summary)
    print(table("format", dict(per_fmt)))
    print(table("kind", dict(per_kind)))
    if failures and not args.verbose:
        for case, out in failures[:30]:
            print(f"FAIL {case.id} [{out.stage}] {out.result}: {out.detail.splitlines()[0] if out.detail else ''}")
    if args.write_md:
        fail_lines = "".join(f"* `{c.id}` [{o.stage}] {o.result}: {(o.detail.splitlines() or [''])[0][:160]}\n" for c, o in failures[:20])
        md = (
            "Every importer fed truncated, bit-flipped, empty and garbage files, unusual dtypes and absurd shapes "
            f"(8x16x16 source volumes, {args.seeds} bit-flip seeds per damaged file). Each stage ends in a clear "
            "error naming the file, a correct volume, or (bit flips only, formats without checksums) a plausible "
            "volume of the right shape with other values. `tried` counts judged stages: each input goes through "
            "`read_volume` (whole array read) and `create_project`.\n\n"
            + summary + "\n\n" + table("format", dict(per_fmt)) + "\n" + table("kind", dict(per_kind))
            + ("\nFailures:\n\n" + fail_lines if failures else "")
        )
        cmd = f".venv/bin/python benchmarks/bench_malformed.py --seeds {args.seeds}"
        from report import write_section

        write_section(args.write_md, "bench_malformed", "Malformed inputs (fault injection on every importer)", md, cmd + f" --write-md {args.write_md}")
    sys.exit(0)


if __name__ == "__main__":
    main()
