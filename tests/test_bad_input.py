"""Malformed input never ends in a traceback, a missing slice or a silently wrong volume.

The table is :func:`benchmarks.bench_malformed.cases` (the fault-injection benchmark's generator):
for every importer format (npy, raw, TIFF memmap/zlib, TIFF and PNG slice folders, HDF5
contiguous/gzip, OME-Zarr on zarr v2 and v3, NIfTI .nii/.nii.gz, DICOM series) an 8x16x16 volume is
written and then truncated (10 %, 50 %, 90 %, minus one byte), bit-flipped (seeded), emptied (0
bytes), replaced by garbage with the right suffix, written with an unusual dtype (bool, int64,
uint64, float16, complex, str, object where the format stores it) or with an absurd shape (1D, 2D,
4D, 5D, a zero-length axis, a tiny file declaring terabytes; DICOM: slices of two sizes, a repeated
or a missing position). Folder formats damage one slice file (the error must name that file);
OME-Zarr damages one chunk file or the array's metadata.

Each input goes through ``read_volume`` + reading the whole array, then ``create_project``. A stage
passes when it ends in

* an ``AlAnnotatorError`` whose message names the file, or
* a volume equal to the source (bool volumes must succeed, as uint8 0/1), or
* for a **bit flip** only: a readable 3D numeric volume with other values. Formats without checksums
  (npy, raw, uncompressed TIFF, HDF5 data, NIfTI, DICOM pixel data, uncompressed or blosc zarr
  chunks) cannot tell a flipped voxel from a real one, so that is allowed as long as the shape is
  the source's (or, for a flipped digit in zarr's JSON metadata, another sane 3D shape), or
* for a tiny file declaring an absurd volume whose data are partly stored: a lazy open (a corner is
  read back and checked), with ``create_project`` refusing it for lack of disk space (not tried while
  the store does not call :func:`require_free_space` yet: it would fill the disk).

Any other exception type, an error not naming the file, or a wrong success fails the test.
"""

from __future__ import annotations

import shutil
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_malformed as malformed  # noqa: E402

from al_annotator.errors import InputError  # noqa: E402
from al_annotator.io import _space, estimate_project_bytes, read_volume, require_free_space  # noqa: E402

CASES = malformed.cases(seeds=range(3))
# pydicom warns about the damaged values it reads from bit-flipped files; the test judges the outcome
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*")


def test_the_table_covers_every_format_and_kind():
    from al_annotator.io import READERS

    covered = {c.fmt for c in CASES}
    assert {"npy", "raw", "tiff", "slices-tif", "slices-png", "hdf5", "zarr-v2", "zarr-v3", "nii", "nii.gz", "dicom"} <= covered
    # every registered reader is exercised by at least one generator format
    reader_of = {"npy": "npy", "raw": "raw", "tiff": "tiff", "tiff-zlib": "tiff", "slices-tif": "slices", "slices-png": "slices",
                 "hdf5": "hdf5", "hdf5-gzip": "hdf5", "zarr-v2": "ome-zarr", "zarr-v3": "ome-zarr", "nii": "nifti",
                 "nii.gz": "nifti", "dicom": "dicom"}
    assert set(READERS) <= {reader_of[f] for f in covered}
    for fmt in covered:
        assert {c.kind for c in CASES if c.fmt == fmt} >= {"truncated", "bitflip", "empty", "garbage", "shape"}
    assert {c.fmt for c in CASES if c.kind == "dtype" and c.name == "bool"} >= {"npy", "tiff", "hdf5", "zarr-v2", "zarr-v3", "slices-png"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input_is_a_clear_error_or_a_correct_volume(tmp_path, case):
    outcomes = malformed.run_case(case, tmp_path)
    assert [o.stage for o in outcomes] == ["read", "create"]
    bad = [o for o in outcomes if not o.good]
    assert not bad, "\n".join(f"[{o.stage}] {o.result}: {o.detail}" for o in bad)


# ---------------------------------------------------------------------------- the cases, spelt out


@pytest.mark.parametrize("fmt", ["npy", "raw", "tiff", "tiff-zlib", "slices-tif", "slices-png", "hdf5", "zarr-v2", "zarr-v3"])
def test_bool_volume_imports_as_uint8(tmp_path, fmt):
    from al_annotator.store import create_project

    src = malformed.source_volume(bool)
    path, kw = malformed.write_valid(fmt, tmp_path / "in", src)
    with read_volume(path, **kw) as vol:
        assert vol.dtype == np.uint8
        np.testing.assert_array_equal(np.asarray(vol.array), src.astype(np.uint8))
        np.testing.assert_array_equal(vol.array[2:5, ::-1, 3], src[2:5, ::-1, 3].astype(np.uint8))  # lazily, by slab
    store = create_project(tmp_path / "p", path, read_kw=kw or None, fsync=False)
    try:
        assert store.image.dtype == np.uint8
        np.testing.assert_array_equal(store.image[...], src.astype(np.uint8))
    finally:
        store.close()


@pytest.mark.parametrize("fmt", ["tiff", "tiff-zlib", "slices-tif"])
@pytest.mark.parametrize("dtype", ["int64", "uint64"])
def test_64bit_integer_tiff_keeps_its_values(tmp_path, fmt, dtype):
    """tifffile reads these as numpy's 'long long' dtype, which zarr has no data type for."""
    from al_annotator.store import create_project

    src = malformed.source_volume(dtype)
    src[0, 0, 0] = np.iinfo(dtype).max - 1  # a value that only fits 64 bits
    path, _ = malformed.write_valid(fmt, tmp_path / "in", src)
    with read_volume(path) as vol:
        assert vol.dtype == np.dtype(dtype) and type(vol.dtype) is type(np.dtype(dtype))
        np.testing.assert_array_equal(np.asarray(vol.array), src)
    store = create_project(tmp_path / "p", path, fsync=False)
    try:
        np.testing.assert_array_equal(store.image[...], src)
    finally:
        store.close()


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated"])
def test_dicom_series_with_a_broken_file_names_it(tmp_path, damage):
    path = malformed._dicom_series(tmp_path / "series", malformed.source_volume())
    victim = path / "im003.dcm"
    if damage == "empty":
        victim.write_bytes(b"")
    elif damage == "garbage":
        malformed._garbage(victim, 1)
    else:
        malformed._truncate(victim, 0.8)
    with pytest.raises(InputError, match=r"im003\.dcm.*(replace it with a good copy|move it out of the folder)"):
        read_volume(path)


def test_dicom_series_missing_a_slice_is_refused(tmp_path):
    path = malformed._dicom_series(tmp_path / "series", malformed.source_volume())
    (path / "im004.dcm").unlink()
    with pytest.raises(InputError, match=r"1 slice\(s\) missing.*im003\.dcm and im005\.dcm are 4 mm apart.*Copy the missing"):
        read_volume(path)


def test_dicom_folder_still_skips_non_dicom_notes(tmp_path):
    path = malformed._dicom_series(tmp_path / "series", malformed.source_volume())
    (path / "README").write_text("scanned on Tuesday")
    (path / "notes.txt").write_bytes(b"")
    with read_volume(path) as vol:
        assert vol.shape == malformed.SHAPE
        assert vol.metadata["skipped_files"] == 2


def test_npy_header_declaring_more_than_the_file_holds(tmp_path):
    path, _ = malformed._write_huge("npy", tmp_path)
    with pytest.raises(InputError, match=r"vol\.npy: the file is truncated: .*needs 16000000000128 bytes but the file has 4224 bytes"):
        read_volume(path)


@pytest.mark.parametrize("fmt", ["hdf5", "zarr-v3"])
def test_tiny_file_declaring_a_huge_empty_volume(tmp_path, fmt):
    path, _ = malformed._write_huge(fmt, tmp_path)
    with pytest.raises(InputError, match=r"declares shape \(20000, 20000, 20000\).*(none of its data was ever written|none of its chunks)"):
        read_volume(path)


def test_truncated_blosc_chunk_is_an_error_not_wrong_values(tmp_path):
    path, _ = malformed.write_valid("zarr-v2", tmp_path, malformed.source_volume())
    chunk = malformed.targets("zarr-v2", path)["chunk"]
    malformed._truncate(chunk, 0.5)
    with read_volume(path) as vol:
        np.asarray(vol.array[:1])  # the chunks of slice 0 are intact
        with pytest.raises(InputError, match=rf"chunk file .*{chunk.name} is truncated or corrupted.*copy the whole .zarr folder"):
            np.asarray(vol.array)


# ---------------------------------------------------------------------------- free disk space

Usage = namedtuple("Usage", "total used free")


def _free(monkeypatch, free):
    monkeypatch.setattr(_space.shutil, "disk_usage", lambda p: Usage(10 * free + 1, 0, free))


def test_estimate_project_bytes():
    assert estimate_project_bytes((8, 16, 16), "uint16") == 8 * 16 * 16 * 3
    assert estimate_project_bytes((8, 16, 16), bool) == 8 * 16 * 16 * 2  # bool is stored as uint8
    assert estimate_project_bytes((2000, 2000, 2000), np.float32) == 2000**3 * 5  # Python ints: no overflow
    with pytest.raises(InputError, match="cannot estimate"):
        estimate_project_bytes((8, -1, 16), "uint8")


def test_require_free_space_names_needed_available_and_remedy(tmp_path, monkeypatch):
    need = estimate_project_bytes((2000, 2000, 2000), np.uint16)
    _free(monkeypatch, 10 << 30)
    with pytest.raises(InputError) as err:
        require_free_space(tmp_path, need, "the project for scan.h5")
    msg = str(err.value)
    assert "the project for scan.h5" in msg and str(need) in msg and str(10 << 30) in msg and str(tmp_path) in msg
    assert "Free some space" in msg and "another disk" in msg


def test_require_free_space_keeps_a_margin(tmp_path, monkeypatch):
    need = 1 << 30
    margin = max(_space.SPACE_MARGIN_BYTES, int(need * _space.SPACE_MARGIN_FRACTION))
    _free(monkeypatch, need + margin)
    require_free_space(tmp_path, need, "a project")
    _free(monkeypatch, need + margin - 1)
    with pytest.raises(InputError, match="margin"):
        require_free_space(tmp_path, need, "a project")


def test_require_free_space_checks_the_nearest_existing_parent(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(_space.shutil, "disk_usage", lambda p: seen.append(Path(p)) or Usage(1, 0, 1 << 40))
    require_free_space(tmp_path / "new" / "project", 1 << 20, "a project")
    assert seen == [tmp_path]


def test_a_huge_declared_volume_does_not_fit_any_disk(tmp_path):
    """What create_project does with it: the estimate (24 TB) exceeds the real free space."""
    path, _ = malformed._write_huge("hdf5", tmp_path / "in", one_chunk=True)
    with read_volume(path) as vol:  # one chunk is stored: it opens lazily...
        assert vol.shape == malformed.HUGE
        need = estimate_project_bytes(vol.shape, vol.dtype)
    assert need > shutil.disk_usage(tmp_path).free
    with pytest.raises(InputError, match=r"not enough disk space for the project for vol\.h5"):  # ... and is refused
        require_free_space(tmp_path, need, f"the project for {path.name}")
