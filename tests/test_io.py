"""Import/export: a round trip for every reader and writer format, detection, lazy access, and the
bad inputs each must refuse with an InputError naming the problem."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from al_annotator.errors import InputError
from al_annotator.io import (
    READERS,
    SUFFIXES,
    VolumeData,
    detect_format,
    natural_key,
    read_volume,
    register_reader,
    to_zyx,
    validate_volume,
    write_volume,
)
from al_annotator.io._lazy import LazyView, PlaneStackArray
from al_annotator.io.readers import formats, openable_suffixes

SPACING = (2.0, 0.5, 0.25)  # (z, y, x), anisotropic so that any axis mix-up shows


@pytest.fixture
def vol() -> np.ndarray:
    """(7, 9, 11) uint16 with values above 255."""
    rng = np.random.default_rng(7)
    return rng.integers(0, 60000, (7, 9, 11)).astype(np.uint16)


def _check(v: VolumeData, expected: np.ndarray, spacing=SPACING, fmt: str | None = None) -> None:
    arr = np.asarray(v.array[...])
    assert arr.shape == expected.shape
    assert arr.dtype == expected.dtype
    np.testing.assert_array_equal(arr, expected)
    if spacing is None:
        assert v.spacing is None
    else:
        assert v.spacing == pytest.approx(spacing, rel=1e-5)
    if fmt:
        assert v.format == fmt
    # slab and single-slice reads of the (lazy) array agree with numpy
    np.testing.assert_array_equal(np.asarray(v.array[2:5]), expected[2:5])
    k = min(3, len(expected) - 1)
    np.testing.assert_array_equal(np.asarray(v.array[k]), expected[k])
    np.testing.assert_array_equal(np.asarray(v.array[1:6:2, 2:7, -3:]), expected[1:6:2, 2:7, -3:])
    np.testing.assert_array_equal(np.asarray(v.array[::-2, 1, ::-3]), expected[::-2, 1, ::-3])


# ============================================================================ readers: TIFF
def test_tiff_imagej_spacing_and_memmap(tmp_path, vol):
    import tifffile

    p = tmp_path / "v.tif"
    # tifffile's resolution is (x, y) in pixels per unit
    tifffile.imwrite(p, vol, imagej=True, resolution=(1 / SPACING[2], 1 / SPACING[1]),
                     metadata={"spacing": SPACING[0], "unit": "micron", "axes": "ZYX"})
    with read_volume(p) as v:
        _check(v, vol, fmt="tiff")
        assert v.spacing_unit == "micrometer"
        assert isinstance(v.array, np.memmap)  # contiguous and uncompressed: no copy


def test_ome_tiff_physical_size(tmp_path, vol):
    import tifffile

    p = tmp_path / "v.ome.tif"
    data = vol.astype(np.int32) - 30000
    tifffile.imwrite(p, data, ome=True, metadata={"axes": "ZYX", "PhysicalSizeZ": SPACING[0], "PhysicalSizeY": SPACING[1],
                                                 "PhysicalSizeX": SPACING[2], "PhysicalSizeXUnit": "nm"})
    with read_volume(p) as v:
        _check(v, data)
        assert v.spacing_unit == "nanometer"


def test_tiff_compressed_pages_read_on_demand(tmp_path, vol):
    import tifffile

    p = tmp_path / "v.tiff"
    tifffile.imwrite(p, vol, compression="zlib")
    with read_volume(p) as v:
        assert isinstance(v.array, PlaneStackArray)
        _check(v, vol, spacing=None)
        np.testing.assert_array_equal(v.array[::-2], vol[::-2])


def test_tiff_hyperstack_channel_and_singletons(tmp_path, vol):
    import tifffile

    p = tmp_path / "hs.tif"
    stack = np.stack([vol, vol // 3], axis=1)[None]  # T=1, Z, C=2, Y, X
    tifffile.imwrite(p, stack, imagej=True, metadata={"axes": "TZCYX"})
    with pytest.raises(InputError, match=r"4D.*'C'.*channel=k"):
        read_volume(p)
    with read_volume(p, channel=1) as v:
        _check(v, vol // 3, spacing=None)
    with pytest.raises(InputError, match="out of range"):
        read_volume(p, channel=2)
    q = tmp_path / "one.tif"
    tifffile.imwrite(q, vol[None, :, :, :, None])  # singleton leading axis and singleton sample axis
    with read_volume(q) as v:
        _check(v, vol, spacing=None)


# ============================================================================ readers: slice folders
def test_slice_folder_natural_order_tiff_and_png(tmp_path, vol):
    import tifffile
    from PIL import Image

    d = tmp_path / "slices"
    d.mkdir()
    big = np.concatenate([vol, vol[::-1]])  # 14 slices: slice_10 must come after slice_9
    for i, plane in enumerate(big):
        tifffile.imwrite(d / f"slice_{i}.tif", plane)
    (d / "notes.txt").write_text("ignored")
    assert detect_format(d) == "slices"
    with read_volume(d) as v:
        _check(v, big, spacing=None, fmt="slices")
        assert v.metadata["last"] == "slice_13.tif"
    assert sorted(["s_10.png", "s_2.png", "s_1.png"], key=natural_key) == ["s_1.png", "s_2.png", "s_10.png"]

    png = tmp_path / "png"
    png.mkdir()
    for i, plane in enumerate(big):  # 16-bit PNGs keep their values
        Image.fromarray(plane).save(png / f"s{i}.png")
    with read_volume(png) as v:
        _check(v, big, spacing=None)


# ============================================================================ readers: HDF5 / NeXus
def test_hdf5_nexus_signal_and_axes_spacing(tmp_path, vol):
    import h5py

    p = tmp_path / "scan.nxs"
    with h5py.File(p, "w") as f:
        f.attrs["default"] = "entry"
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["default"] = "data"
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        data.attrs["signal"] = "data"
        data.attrs["axes"] = ["z", "y", "x"]
        data.create_dataset("data", data=vol, chunks=(1, 9, 11))
        for name, n, step in zip("zyx", vol.shape, SPACING):
            ax = data.create_dataset(name, data=10 + step * np.arange(n))
            ax.attrs["units"] = "um"
        f.create_dataset("/entry/instrument/dark", data=np.zeros((3, 9, 11)))  # a second 3D dataset
    assert detect_format(p) == "hdf5"
    with read_volume(p) as v:  # the NeXus signal wins without dataset=
        _check(v, vol, fmt="hdf5")
        assert v.metadata["dataset"] == "/entry/data/data"
        assert v.spacing_unit == "micrometer"
    with read_volume(p, dataset="/entry/instrument/dark") as v:
        _check(v, np.zeros((3, 9, 11)), spacing=None)


def test_hdf5_plain_spacing_attrs_and_candidates(tmp_path, vol):
    import h5py

    p = tmp_path / "v.h5"
    with h5py.File(p, "w") as f:
        ds = f.create_dataset("volume", data=vol)
        ds.attrs["element_size_um"] = SPACING
        f["meta/line"] = np.arange(5)
    with read_volume(p) as v:  # the only 3D dataset
        _check(v, vol)
        assert v.spacing_unit == "micrometer"
    p2 = tmp_path / "two.h5"
    with h5py.File(p2, "w") as f:
        f["a"] = vol
        f["grp/b"] = vol
    with pytest.raises(InputError, match=r"several candidate.*/a \(7, 9, 11\).*/grp/b.*dataset="):
        read_volume(p2)
    with read_volume(p2, dataset="/grp/b") as v:
        _check(v, vol, spacing=None)
    with pytest.raises(InputError, match="no dataset '/c'.*/a"):
        read_volume(p2, dataset="/c")


def test_hdf5_4d_channel_first(tmp_path, vol):
    import h5py

    p = tmp_path / "c.h5"
    with h5py.File(p, "w") as f:
        f["d"] = np.stack([vol, vol + 1, vol + 2])
    with pytest.raises(InputError, match=r"4D with shape \(3, 7, 9, 11\).*first axis"):
        read_volume(p)
    with read_volume(p, channel=2) as v:
        _check(v, vol + 2, spacing=None)


# ============================================================================ readers: OME-Zarr
def _ngff04(path, data, scale, unit="micrometer"):
    """An OME-NGFF 0.4 image on zarr v2 with two resolution levels, written with zarr directly."""
    import zarr

    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    root.attrs["multiscales"] = [{
        "version": "0.4",
        "axes": [{"name": a, "type": "space", "unit": unit} for a in "zyx"],
        "datasets": [
            {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": list(scale)}]},
            {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [s * 2 for s in scale]}]},
        ],
    }]
    a = root.create_array("0", shape=data.shape, dtype=data.dtype, chunks=(4, 5, 6),
                          chunk_key_encoding={"name": "v2", "separator": "/"})
    a[:] = data
    b = root.create_array("1", shape=tuple((n + 1) // 2 for n in data.shape), dtype=data.dtype)
    b[:] = data[::2, ::2, ::2]


def test_ome_zarr_v04_zarr_v2(tmp_path, vol):
    _ngff04(tmp_path / "v.ome.zarr", vol, SPACING)
    with read_volume(tmp_path / "v.ome.zarr") as v:
        _check(v, vol, fmt="ome-zarr")  # level 0, not the downsampled level 1
        assert v.spacing_unit == "micrometer"
        assert v.metadata["zarr_format"] == 2
    # a store whose folder name does not end in .zarr is detected by its metadata
    _ngff04(tmp_path / "store", vol, SPACING)
    assert detect_format(tmp_path / "store") == "ome-zarr"


def test_ome_zarr_v05_zarr_v3_with_channel(tmp_path, vol):
    import zarr

    root = zarr.open_group(str(tmp_path / "c.zarr"), mode="w", zarr_format=3)
    root.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "c", "type": "channel"}, {"name": "z", "type": "space", "unit": "millimeter"},
                 {"name": "y", "type": "space", "unit": "millimeter"}, {"name": "x", "type": "space", "unit": "millimeter"}],
        "datasets": [{"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, *SPACING]}]}]}]}
    a = root.create_array("s0", shape=(2, *vol.shape), dtype=vol.dtype, chunks=(1, 4, 9, 11))
    a[0] = vol
    a[1] = vol // 2
    with pytest.raises(InputError, match="4D.*channel=k"):
        read_volume(tmp_path / "c.zarr")
    with read_volume(tmp_path / "c.zarr", channel=1) as v:
        _check(v, vol // 2)
        assert v.spacing_unit == "millimeter"
        assert v.metadata["zarr_format"] == 3


def test_plain_zarr_array(tmp_path, vol):
    import zarr

    a = zarr.create_array(store=str(tmp_path / "a.zarr"), shape=vol.shape, dtype=vol.dtype, chunks=(2, 9, 11))
    a[:] = vol
    with read_volume(tmp_path / "a.zarr") as v:
        _check(v, vol, spacing=None)


# ============================================================================ readers: NIfTI
@pytest.mark.parametrize("name", ["n.nii", "n.nii.gz"])
def test_nifti_written_by_nibabel(tmp_path, vol, name):
    import nibabel as nib

    img = nib.Nifti1Image(vol.transpose(2, 1, 0), np.diag([SPACING[2], SPACING[1], SPACING[0], 1]))  # NIfTI is (X, Y, Z)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(tmp_path / name))
    assert detect_format(tmp_path / name) == "nifti"
    with read_volume(tmp_path / name) as v:
        _check(v, vol, fmt="nifti")
        assert v.spacing_unit == "millimeter"
        if name.endswith(".nii"):
            assert isinstance(v.array, np.memmap)


def test_nifti_scaling_applied_only_when_not_identity(tmp_path, vol):
    import nibabel as nib

    img = nib.Nifti1Image(vol.transpose(2, 1, 0), np.eye(4))
    img.header.set_slope_inter(0.5, -10)
    nib.save(img, str(tmp_path / "s.nii"))
    with read_volume(tmp_path / "s.nii") as v:
        assert v.dtype == np.float32
        np.testing.assert_allclose(np.asarray(v.array[...]), vol * 0.5 - 10)


def test_nifti_4d_channel(tmp_path, vol):
    import nibabel as nib

    data = np.stack([vol, vol // 2], axis=-1).transpose(2, 1, 0, 3)  # (X, Y, Z, 2)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "c.nii.gz"))
    with pytest.raises(InputError, match=r"4D.*'T'.*channel=k"):
        read_volume(tmp_path / "c.nii.gz")
    with read_volume(tmp_path / "c.nii.gz", channel=1) as v:
        _check(v, vol // 2, spacing=(1, 1, 1))


# ============================================================================ readers: DICOM
def _dicom_series(folder, vol, uid="1.2.3.4", *, reverse_files=True, intercept=None, positions=True, name="im"):
    """A real CT series written with pydicom; file names in reverse order of the slice positions."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(exist_ok=True)
    n = len(vol)
    for i, plane in enumerate(vol):
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
        ds.PixelSpacing = [SPACING[1], SPACING[2]]  # (row spacing = y, column spacing = x)
        if positions:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.ImagePositionPatient = [0, 0, -50 + i * SPACING[0]]
        else:
            ds.SliceThickness = SPACING[0]
        ds.InstanceNumber = i + 1
        if intercept is not None:
            ds.RescaleSlope, ds.RescaleIntercept = 1, intercept
        ds.PixelData = np.ascontiguousarray(plane).tobytes()
        fname = f"{name}{(n - 1 - i) if reverse_files else i:03d}.dcm"
        ds.save_as(folder / fname, enforce_file_format=True)


def test_dicom_series_sorted_by_position(tmp_path, vol):
    _dicom_series(tmp_path / "dcm", vol)
    (tmp_path / "dcm" / "README").write_text("not dicom")
    assert detect_format(tmp_path / "dcm") == "dicom"
    with read_volume(tmp_path / "dcm") as v:
        _check(v, vol, fmt="dicom")  # identity rescale: original uint16 intensities
        assert v.spacing_unit == "millimeter"
        assert v.metadata["sorted_by"] == "ImagePositionPatient"


def test_dicom_rescale_and_instance_number_fallback(tmp_path, vol):
    small = (vol // 20).astype(np.uint16)  # < 3000: fits int16 after the intercept
    _dicom_series(tmp_path / "ct", small, intercept=-1024, positions=False)
    with read_volume(tmp_path / "ct") as v:
        arr = np.asarray(v.array[...])
        assert v.metadata["sorted_by"] == "InstanceNumber"
        np.testing.assert_array_equal(arr, small.astype(np.int64) - 1024)
        assert arr.dtype.kind == "i"
        assert v.spacing == pytest.approx(SPACING)


def test_dicom_several_series(tmp_path, vol):
    _dicom_series(tmp_path / "dcm", vol)
    _dicom_series(tmp_path / "dcm", vol[:3], uid="9.9.9", name="other")
    with pytest.raises(InputError, match=r"several series.*1\.2\.3\.4.*9\.9\.9.*dataset="):
        read_volume(tmp_path / "dcm")
    with read_volume(tmp_path / "dcm", dataset="1.2.3.4") as v:
        _check(v, vol)
    with read_volume(tmp_path / "dcm", dataset="9.9.9") as v:
        _check(v, vol[:3])


# ============================================================================ readers: npy / raw
def test_npy_and_raw(tmp_path, vol):
    np.save(tmp_path / "v.npy", vol)
    with read_volume(tmp_path / "v.npy") as v:
        _check(v, vol, spacing=None, fmt="npy")
        assert isinstance(v.array, np.memmap)
    raw = tmp_path / "v.raw"
    raw.write_bytes(b"H" * 16 + vol.astype(">u2").tobytes())
    with read_volume(raw, shape=vol.shape, dtype="uint16", byte_order=">", offset=16) as v:
        _check(v, vol, spacing=None, fmt="raw")
        assert v.dtype.isnative  # big-endian on disk, ordinary values in memory
    raw.write_bytes(vol.tobytes())
    with read_volume(raw, shape=vol.shape, dtype="uint16") as v:
        _check(v, vol, spacing=None, fmt="raw")
        assert isinstance(v.array, np.memmap)


# ============================================================================ writers
@pytest.mark.parametrize("fmt,name", [("ome-zarr", "o.ome.zarr"), ("tiff", "o.tif"), ("nifti", "o.nii"),
                                      ("nifti", "o.nii.gz"), ("npy", "o.npy")])
def test_writer_round_trip_from_lazy_source(tmp_path, vol, fmt, name):
    import zarr

    src = zarr.create_array(store=zarr.storage.MemoryStore(), shape=vol.shape, dtype=vol.dtype, chunks=(3, 9, 11))
    src[:] = vol  # a lazy source, written slab by slab
    out = write_volume(src, tmp_path / name, spacing=SPACING, spacing_unit="micrometer")
    assert out == tmp_path / name
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary left behind
    with read_volume(out) as v:
        _check(v, vol, spacing=None if fmt == "npy" else SPACING, fmt=fmt)
        if fmt != "npy":
            assert v.spacing_unit == "micrometer"
    with pytest.raises(InputError, match="already exists.*overwrite=True"):
        write_volume(vol, out)
    write_volume(vol[::-1].copy(), out, overwrite=True)
    with read_volume(out) as v:
        np.testing.assert_array_equal(np.asarray(v.array[...]), vol[::-1])


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "uint32", "float64", "bool"])
def test_writers_other_dtypes(tmp_path, vol, dtype):
    data = (vol % 100 - (50 if np.dtype(dtype).kind in "if" else 0)).astype(dtype)
    expected = data.astype(np.uint8) if dtype == "bool" else data
    for name in ("t.tif", "t.nii.gz", "t.zarr"):
        out = write_volume(data, tmp_path / name, spacing=SPACING)
        with read_volume(out) as v:
            _check(v, expected)


def test_nifti_written_matches_nibabel_axis_order(tmp_path, vol):
    import nibabel as nib

    out = write_volume(vol, tmp_path / "w.nii.gz", spacing=SPACING, spacing_unit="mm")
    img = nib.load(str(out))
    np.testing.assert_array_equal(np.asarray(img.dataobj), vol.transpose(2, 1, 0))  # (X, Y, Z) on disk
    assert img.header.get_zooms() == pytest.approx(SPACING[::-1])
    assert img.header.get_xyzt_units()[0] == "mm"


def test_tiff_written_is_imagej(tmp_path, vol):
    import tifffile

    out = write_volume(vol, tmp_path / "w.tif", spacing=SPACING, spacing_unit="micrometer")
    with tifffile.TiffFile(out) as tf:
        assert tf.is_imagej
        assert tf.imagej_metadata["spacing"] == pytest.approx(SPACING[0])
        assert tf.pages[0].resolution == pytest.approx((1 / SPACING[2], 1 / SPACING[1]))
        assert len(tf.pages) == vol.shape[0]


def test_ome_zarr_labels_group(tmp_path):
    import zarr

    labels = np.zeros((4, 5, 6), np.uint8)
    labels[1, 2, 3] = 2
    out = write_volume(labels, tmp_path / "seg.ome.zarr", kind="labels", name="labels", spacing=SPACING)
    root = zarr.open_group(str(out), mode="r")
    assert root.metadata.zarr_format == 2
    assert root.attrs["labels"] == ["labels"]
    assert root["labels"].attrs["labels"] == ["labels"]  # the NGFF labels group
    grp = root["labels/labels"]
    assert grp.attrs["image-label"]["version"] == "0.4"
    assert grp.attrs["image-label"]["source"] == {"image": "../../"}
    assert [c["label-value"] for c in grp.attrs["image-label"]["colors"]] == [0, 2]
    ms = grp.attrs["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == list(SPACING)
    with read_volume(out / "labels" / "labels") as v:
        _check(v, labels)
    with read_volume(out) as v:  # a store holding one label image only: that image
        _check(v, labels)
    with pytest.raises(InputError, match="already holds a label image 'labels'"):
        write_volume(labels, out, kind="labels")
    write_volume(labels * 2, out, kind="labels", overwrite=True)
    with read_volume(out, dataset="labels/labels") as v:
        np.testing.assert_array_equal(np.asarray(v.array[...]), labels * 2)
    with pytest.raises(InputError, match="labels must be integers"):
        write_volume(labels.astype(np.float32), tmp_path / "f.zarr", kind="labels")


def test_labels_added_to_an_existing_image(tmp_path, vol):
    import zarr

    img = write_volume(vol, tmp_path / "img.ome.zarr", spacing=SPACING)
    seg = (vol % 3).astype(np.uint8)
    write_volume(seg, img, kind="labels", name="cells", spacing=SPACING)
    write_volume(seg[::-1].copy(), img, kind="labels", name="nuclei", spacing=SPACING)
    with read_volume(img) as v:  # the image itself is unchanged
        _check(v, vol)
    with read_volume(img, dataset="labels/nuclei") as v:
        _check(v, seg[::-1])
    assert zarr.open_group(str(img), mode="r")["labels"].attrs["labels"] == ["cells", "nuclei"]


def test_ome_zarr_ngff_05_writer(tmp_path, vol):
    out = write_volume(vol, tmp_path / "v5.zarr", spacing=SPACING, ngff_version="0.5")
    assert (out / "zarr.json").is_file()
    with read_volume(out) as v:
        _check(v, vol)
        assert v.metadata["ngff_version"] == "0.5"


def test_writer_refuses_bad_targets(tmp_path, vol):
    folder = tmp_path / "docs.zarr"
    folder.mkdir()
    (folder / "keep.txt").write_text("precious")
    with pytest.raises(InputError, match="not a zarr store; refusing"):
        write_volume(vol, folder, overwrite=True)
    assert (folder / "keep.txt").exists()
    with pytest.raises(InputError, match="does not exist"):
        write_volume(vol, tmp_path / "missing" / "a.tif")
    with pytest.raises(InputError, match="cannot tell the export format"):
        write_volume(vol, tmp_path / "a.xyz")
    with pytest.raises(InputError, match="2D"):
        write_volume(vol[0], tmp_path / "a.tif")


# ============================================================================ detection, registry
@pytest.mark.parametrize("name,fmt", [
    ("a.tif", "tiff"), ("a.TIFF", "tiff"), ("a.ome.tif", "tiff"), ("a.h5", "hdf5"), ("a.hdf5", "hdf5"), ("a.hdf", "hdf5"),
    ("a.nxs", "hdf5"), ("a.nii", "nifti"), ("a.nii.gz", "nifti"), ("a.npy", "npy"), ("a.raw", "raw"), ("a.dcm", "dicom"),
])
def test_detect_by_name(tmp_path, name, fmt):
    (tmp_path / name).write_bytes(b"x")
    assert detect_format(tmp_path / name) == fmt


def test_detect_by_content(tmp_path, vol):
    import h5py
    import tifffile

    tifffile.imwrite(tmp_path / "scan_tif", vol)
    np.save(tmp_path / "arr.npy", vol)
    (tmp_path / "arr.npy").rename(tmp_path / "arr_data")
    with h5py.File(tmp_path / "scan_h5", "w") as f:
        f["v"] = vol
    write_volume(vol, tmp_path / "n.nii.gz")
    (tmp_path / "n.nii.gz").rename(tmp_path / "n_gz")
    assert [detect_format(tmp_path / n) for n in ("scan_tif", "arr_data", "scan_h5", "n_gz")] == ["tiff", "npy", "hdf5", "nifti"]
    with read_volume(tmp_path / "n_gz") as v:
        _check(v, vol, spacing=(1, 1, 1))


def test_register_reader(tmp_path, vol):
    def read_mine(path, options):
        return VolumeData(np.load(path)[None], (1.0, 1.0, 1.0), None, "mine", str(path))  # 4D: (1, Z, Y, X)

    register_reader("mine", read_mine, suffixes=(".mine",))
    try:
        with open(tmp_path / "v.mine", "wb") as fh:
            np.save(fh, vol)
        assert detect_format(tmp_path / "v.mine") == "mine"
        with read_volume(tmp_path / "v.mine") as v:  # squeezed to (Z, Y, X) for it
            _check(v, vol, spacing=(1, 1, 1), fmt="mine")
    finally:
        READERS.pop("mine")  # unregisters the format: its suffix goes with it
    assert ".mine" not in SUFFIXES and "mine" not in READERS
    assert detect_format(tmp_path / "v.mine") == "npy"  # no suffix rule left: found by its content


# ============================================================================ every format round-trips
def _dicom_multiframe(path, vol):
    """One enhanced multi-frame DICOM file holding the whole volume."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = "1.2.3.5"
    ds.Modality = "CT"
    ds.NumberOfFrames = len(vol)
    ds.Rows, ds.Columns = vol.shape[1:]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelSpacing = [SPACING[1], SPACING[2]]
    ds.SpacingBetweenSlices = SPACING[0]
    ds.PixelData = np.ascontiguousarray(vol).tobytes()
    ds.save_as(path, enforce_file_format=True)


def _write_tiff(vol, path):
    write_volume(vol, path, format="tiff", spacing=SPACING, spacing_unit="micrometer")
    return SPACING


def _write_hdf5(vol, path):
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("entry/volume", data=vol, chunks=(2, 9, 11)).attrs["element_size_um"] = SPACING
    return SPACING


def _write_ome_zarr(vol, path):  # NGFF 0.4 (zarr v2) by name, 0.5 (zarr v3) for a store found by its metadata
    write_volume(vol, path, format="ome-zarr", spacing=SPACING, ngff_version="0.4" if path.suffix else "0.5")
    return SPACING


def _write_nifti(vol, path):
    write_volume(vol, path, format="nifti", spacing=SPACING)
    return SPACING


def _write_dicom(vol, path):  # a multi-frame file by name, a series folder by content
    if path.suffix:
        _dicom_multiframe(path, vol)
    else:
        _dicom_series(path, vol)
    return SPACING


def _write_slices(vol, path):
    import tifffile

    path.mkdir()
    for i, plane in enumerate(vol):
        tifffile.imwrite(path / f"z{i}.tif", plane)
    return None


def _write_npy(vol, path):
    write_volume(vol, path, format="npy")
    return None


def _write_raw(vol, path):
    vol.tofile(path)
    return None


#: How each registered format is written for the round trip; a new format must add its writer here.
WRITE_AS = {
    "tiff": _write_tiff, "hdf5": _write_hdf5, "ome-zarr": _write_ome_zarr, "nifti": _write_nifti,
    "dicom": _write_dicom, "slices": _write_slices, "npy": _write_npy, "raw": _write_raw,
}
#: Formats detected by content: a folder's markers or a file's sniffer (files renamed to drop the suffix).
BY_CONTENT = [f.name for f in formats() if f.sniff is not None or f.markers]


def test_every_registered_format_has_a_round_trip():
    assert set(WRITE_AS) == set(READERS)
    assert set(SUFFIXES.values()) | set(BY_CONTENT) == set(READERS)  # each format is detectable somehow


def _round_trip(path, fmt, vol):
    spacing = WRITE_AS[fmt](vol, path)
    assert detect_format(path) == fmt
    layout = {"shape": vol.shape, "dtype": vol.dtype} if fmt == "raw" else {}
    with read_volume(path, **layout) as v:  # no format=: detection picks the reader
        _check(v, vol, spacing=spacing, fmt=fmt)
    for alias in (fmt.upper(), *next(f.aliases for f in formats() if f.name == fmt)):  # format= by any registered name
        with read_volume(path, format=alias, **layout) as v:
            assert v.format == fmt and np.array_equal(np.asarray(v.array[...]), vol)


@pytest.mark.parametrize("suffix,fmt", sorted(SUFFIXES.items()))
def test_each_suffix_detects_its_format_and_round_trips(tmp_path, vol, suffix, fmt):
    _round_trip(tmp_path / f"volume{suffix}", fmt, vol)


@pytest.mark.parametrize("fmt", BY_CONTENT)
def test_each_format_without_its_suffix_is_detected_by_content_and_round_trips(tmp_path, vol, fmt):
    if fmt in ("ome-zarr", "dicom", "slices"):  # folder formats: a folder with no telling name
        _round_trip(tmp_path / "volume", fmt, vol)
        return
    named = tmp_path / f"volume{next(s for s, f in SUFFIXES.items() if f == fmt)}"
    WRITE_AS[fmt](vol, named)
    plain = named.rename(tmp_path / "volume")
    assert detect_format(plain) == fmt
    with read_volume(plain) as v:
        _check(v, vol, spacing=SPACING if fmt in ("tiff", "hdf5", "nifti") else None, fmt=fmt)


def test_import_al_annotator_io_leaves_the_heavy_readers_unimported():
    import subprocess
    import sys

    heavy = ("h5py", "nibabel", "pydicom", "tifffile", "imagecodecs", "zarr", "PIL")
    code = f"import sys, al_annotator.io, al_annotator.io.readers; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# ============================================================================ napari reader from the registry
def _manifest():
    from pathlib import Path

    import yaml

    import al_annotator.napari

    return yaml.safe_load((Path(al_annotator.napari.__file__).parent / "napari.yaml").read_text())["contributions"]


def test_napari_manifest_reader_patterns_are_the_registry_suffixes():
    patterns = _manifest()["readers"][0]["filename_patterns"]
    expected = [f"*{s}" for s in openable_suffixes()] + ["project.json"]
    assert patterns == expected, (
        "al_annotator/napari/napari.yaml's reader filename_patterns must list the reader registry's suffixes "
        "(al_annotator.io.readers.openable_suffixes()); replace them with:\n"
        + "\n".join(f'        - "{p}"' for p in expected)
    )
    assert ".raw" not in openable_suffixes() and "*.raw" not in patterns  # raw needs shape and dtype


def test_napari_manifest_writer_extensions_are_the_labels_writer_suffixes():
    from al_annotator.io import WRITERS
    from al_annotator.napari._io import LABEL_SUFFIXES

    assert sorted(_manifest()["writers"][0]["filename_extensions"]) == sorted(LABEL_SUFFIXES)
    assert set(LABEL_SUFFIXES.values()) <= set(WRITERS)


def test_napari_get_reader_asks_the_registry(tmp_path, vol):
    from al_annotator.napari import _io

    assert _io.VOLUME_SUFFIXES == openable_suffixes()
    for suffix in openable_suffixes():
        assert _io.get_reader(str(tmp_path / f"a{suffix.upper()}")) is _io.read_volume_layers, suffix
    assert _io.get_reader(str(tmp_path / "a.raw")) is None  # a headerless file cannot be opened from its name
    assert _io.get_reader(str(tmp_path / "notes.txt")) is None
    for fmt in ("ome-zarr", "dicom", "slices"):  # folders by the registry's markers and sniffers
        WRITE_AS[fmt](vol, tmp_path / fmt.replace("-", "_"))
        assert _io.get_reader(str(tmp_path / fmt.replace("-", "_"))) is _io.read_volume_layers, fmt
    (tmp_path / "empty").mkdir()
    assert _io.get_reader(str(tmp_path / "empty")) is None

    register_reader("mine", lambda path, options: None, suffixes=(".mine",))  # a format registered later
    try:
        assert ".mine" in _io.VOLUME_SUFFIXES and _io.get_reader(str(tmp_path / "v.mine")) is _io.read_volume_layers
    finally:
        READERS.pop("mine")
    assert _io.get_reader(str(tmp_path / "v.mine")) is None


# ============================================================================ lazy views, channel rule
def test_lazy_views_match_numpy(vol):
    base = np.stack([vol, vol + 1])  # (C, Z, Y, X)
    view = LazyView(base).take(0, 1).transpose((2, 0, 1))  # channel 1, then (X, Z, Y)
    expected = base[1].transpose(2, 0, 1)
    assert view.shape == expected.shape
    for key in [(slice(None),), (3,), (slice(2, 9, 3), 1), (Ellipsis, -1), (slice(None, None, -1), slice(1, 5), 2)]:
        np.testing.assert_array_equal(view[key], expected[key])
    planes = PlaneStackArray.from_plane_reader((2, 7), (9, 11), vol.dtype, lambda i: base.reshape(14, 9, 11)[i])
    for key in [(1,), (slice(None), slice(6, 1, -2)), (0, 3, 4), (Ellipsis, slice(2, 3))]:
        np.testing.assert_array_equal(planes[key], base[key])
    with pytest.raises(TypeError, match="integers, slices"):
        planes[[0, 1]]


def test_to_zyx_channel_last_heuristic(vol):
    rgb = np.stack([vol, vol // 2, vol // 3], axis=-1)  # (Z, Y, X, 3)
    with pytest.raises(InputError, match=r"last axis.*\(Z, Y, X, C\)"):
        to_zyx(rgb)
    arr, info = to_zyx(rgb, channel=2)
    np.testing.assert_array_equal(arr, vol // 3)
    assert info["channel_axis"] == 3


# ============================================================================ bad input
def _save(path, array, **kw):
    np.save(path, array, **kw)
    return path


def _cut(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _tiff(path, vol, **kw):
    import tifffile

    tifffile.imwrite(path, vol, **kw)
    return path


def _h5(path, data):
    import h5py

    with h5py.File(path, "w") as f:
        f["v"] = data
    return path


def _dicom_two(t, v):
    _dicom_series(t / "d", v)
    _dicom_series(t / "d", v[:2], uid="5.6.7", name="x")
    return t / "d"


def _dicom_one(t, v):
    _dicom_series(t / "one", v[:1])
    return t / "one"


def _nifti_cut(t, v, name):
    write_volume(v, t / name)
    return _cut(t / name, 0.6)


def _mixed_slices(t, v):
    import tifffile
    from PIL import Image

    (t / "mix").mkdir()
    tifffile.imwrite(t / "mix" / "a1.tif", v[0])
    Image.fromarray(v[1]).save(t / "mix" / "a2.png")
    return t / "mix"


def _uneven_slices(t, v):
    import tifffile

    (t / "uneven").mkdir()
    tifffile.imwrite(t / "uneven" / "a1.tif", v[0])
    tifffile.imwrite(t / "uneven" / "a2.tif", v[1, :5])
    return t / "uneven"


def _empty_dir(t, v):
    (t / "empty").mkdir()
    return t / "empty"


BAD = {
    "missing path": (lambda t, v: t / "nope.tif", {}, "does not exist"),
    "2D npy": (lambda t, v: _save(t / "a.npy", v[0]), {}, "2D image is not a volume"),
    "2D tiff": (lambda t, v: _tiff(t / "a.tif", v[0]), {}, "2D image is not a volume"),
    "2D rgb tiff": (lambda t, v: _tiff(t / "rgb.tif", np.zeros((9, 11, 3), np.uint8), photometric="rgb"), {}, "2D"),
    "4D npy": (lambda t, v: _save(t / "b.npy", np.stack([v, v, v])), {}, r"4D.*shape \(3, 7, 9, 11\).*channel=k"),
    "channel out of range": (lambda t, v: _save(t / "c.npy", np.stack([v, v])), {"channel": 5}, "out of range"),
    "channel on a 3D volume": (lambda t, v: _save(t / "c3.npy", v), {"channel": 1}, "no channel axis"),
    "5D npy": (lambda t, v: _save(t / "f.npy", np.zeros((2, 2, 3, 4, 5))), {}, "5 non-singleton"),
    "empty npy": (lambda t, v: _save(t / "e.npy", np.zeros((0, 9, 11), np.uint16)), {}, "empty"),
    "string dtype npy": (lambda t, v: _save(t / "s.npy", np.full((2, 3, 4), "ab")), {}, "dtype <U2 is not numeric"),
    "complex npy": (lambda t, v: _save(t / "x.npy", np.zeros((2, 3, 4), complex)), {}, "dtype complex128 is complex"),
    "object npy": (lambda t, v: _save(t / "o.npy", np.array([None] * 8).reshape(2, 2, 2), allow_pickle=True), {}, "dtype object"),
    "truncated npy": (lambda t, v: _cut(_save(t / "d.npy", v)), {}, r"truncated.*needs 1514 bytes but the file has 757"),
    "npy header cut": (lambda t, v: _cut(_save(t / "h.npy", v), 0.02), {}, "cannot read.*npy"),
    "truncated tiff": (lambda t, v: _cut(_tiff(t / "cut.tif", np.tile(v, (4, 1, 1)))), {}, "truncated|corrupted"),
    "truncated imagej tiff": (lambda t, v: _cut(_tiff(t / "cij.tif", v, imagej=True)), {}, "truncated|corrupted"),
    "truncated zlib tiff": (lambda t, v: _cut(_tiff(t / "cz.tif", v, compression="zlib")), {}, "truncated|corrupted"),
    "garbage tiff": (lambda t, v: _write(t / "g.tif", b"II*\x00" + b"\xff" * 50), {}, "cannot read .*TIFF"),
    "garbage hdf5": (lambda t, v: _write(t / "g.h5", b"\x89HDF\r\n\x1a\n" + b"garbage" * 100), {}, "cannot read .*g.h5 as HDF5"),
    "truncated hdf5": (lambda t, v: _cut(_h5(t / "t.h5", v)), {}, "cannot read .*t.h5 as HDF5.*truncated"),
    "hdf5 without volume": (lambda t, v: _h5(t / "n.h5", v[0]), {}, "no dataset with 3 or more dimensions"),
    "garbage nifti": (lambda t, v: _write(t / "g.nii.gz", gzip.compress(b"xx" * 50)), {}, "cannot read .*as NIfTI"),
    "truncated nii": (lambda t, v: _nifti_cut(t, v, "c.nii"), {}, "truncated.*needs 1738 bytes"),
    "truncated nii.gz": (lambda t, v: _nifti_cut(t, v, "c.nii.gz"), {}, "truncated"),
    "raw without shape": (lambda t, v: _write(t / "r.raw", v.tobytes()), {}, "shape and dtype must be given"),
    "raw wrong size": (lambda t, v: _write(t / "s.raw", v.tobytes()), {"shape": (7, 9, 12), "dtype": "uint16"},
                       r"file has 1386 bytes but shape \(7, 9, 12\).*needs 1512 bytes"),
    "raw bad dtype": (lambda t, v: _write(t / "b.raw", v.tobytes()), {"shape": (7, 9, 11), "dtype": "nonsense"}, "not a NumPy dtype"),
    "raw option on tiff": (lambda t, v: _tiff(t / "o.tif", v), {"dtype": "uint16"}, "do not apply to TIFF"),
    "undetectable": (lambda t, v: _write(t / "x.foo", b"1234"), {}, "cannot detect the format"),
    "unknown format name": (lambda t, v: _save(t / "u.npy", v), {"format": "mrc"}, "unknown format 'mrc'"),
    "single png": (lambda t, v: _write(t / "p.png", b"\x89PNG"), {}, "single PNG is a 2D image"),
    "several dicom series": (_dicom_two, {}, "several series"),
    "single dicom slice": (_dicom_one, {}, "single DICOM slice is a 2D image"),
    "empty folder": (_empty_dir, {}, "cannot detect the format of the folder"),
    "mixed slice types": (_mixed_slices, {}, "mixes slice types"),
    "slices of different sizes": (_uneven_slices, {}, "same size"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(tmp_path, vol, case):
    make, kw, pattern = BAD[case]
    path = make(tmp_path, vol)
    with pytest.raises(InputError, match=pattern) as err:
        with read_volume(path, **kw) as v:
            validate_volume(v)
            np.asarray(v.array[...])
    if case not in ("unknown format name", "raw option on tiff"):
        assert path.name in str(err.value)  # the message names the file


@pytest.mark.parametrize("array,pattern", [
    (np.full((2, 3, 4), "a"), "not numeric"),
    (np.zeros((2, 3, 4), complex), "complex"),
    (np.zeros((2, 0, 4)), "empty"),
    (np.zeros((3, 4)), "2D"),
    (np.zeros((2, 3, 4, 5)), "4D.*channel"),
])
def test_validate_volume_rejects(array, pattern):
    with pytest.raises(InputError, match=pattern):
        validate_volume(array)


def test_validate_nan_inf_slab_by_slab(tmp_path):
    mm = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float32, shape=(9, 4, 5))
    mm[:] = 1.0
    mm[5, 1, 1] = np.nan
    mm[7, 0, 0:2] = np.inf
    mm.flush()
    del mm
    with read_volume(tmp_path / "f.npy") as v:  # reading does not scan; validate_volume does
        with pytest.raises(InputError, match=r"1 NaN and 2 inf voxels \(first in slice z=5\).*nan_to_num"):
            validate_volume(v, slab=2)
    validate_volume(np.ones((2, 3, 4), bool))  # bool is accepted
    validate_volume(np.ones((2, 3, 4), np.float32))
    validate_volume(np.full((2, 3, 4), np.nan, np.float32), check_finite=False)
