"""The spacing unit end to end: a file's unit is read, kept in project.json, and written by every
exporter in that format's own field (OME-Zarr axes ``unit``, NIfTI ``xyzt_units``, ImageJ TIFF
``unit``, OME-TIFF ``PhysicalSizeXUnit``)."""

from __future__ import annotations

import numpy as np
import pytest

from al_annotator.errors import InputError
from al_annotator.io import read_volume, write_volume
from al_annotator.io.units import parse_unit
from al_annotator.store import create_project, open_project
from al_annotator.store.export import export

SPACING = (2.0, 0.5, 0.25)


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 4000, (6, 10, 12)).astype(np.uint16)


def _raw_unit(path) -> str:
    """The unit as the file itself stores it, read with the format's own library."""
    name = path.name
    if name.endswith(".zarr"):
        import zarr

        attrs = dict(zarr.open_group(str(path), mode="r").attrs)
        attrs = attrs.get("ome", attrs)
        units = {a["unit"] for a in attrs["multiscales"][0]["axes"]}
        assert len(units) == 1
        return units.pop()
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        return nib.load(str(path)).header.get_xyzt_units()[0]
    import tifffile

    with tifffile.TiffFile(path) as tf:
        return tf.imagej_metadata["unit"] if tf.is_imagej else tf.ome_metadata


def test_parse_unit_accepts_spellings_and_names_the_remedy():
    assert [parse_unit(u) for u in ("um", "µm", "micron", "Micrometer", "mm", "nm", "Å")] == [
        "micrometer", "micrometer", "micrometer", "micrometer", "millimeter", "nanometer", "angstrom"]
    assert parse_unit("pixel") is None and parse_unit(None) is None
    with pytest.raises(InputError, match="not a length unit.*micrometer"):
        parse_unit("furlongs")


def test_create_project_unit_in_project_json(tmp_path, image):
    st = create_project(tmp_path / "p", image, classes="a,b", spacing=SPACING, unit="um")
    assert st.config.spacing_unit == "micrometer"
    st.close()
    again = open_project(tmp_path / "p")
    assert again.config.spacing_unit == "micrometer" and again.info()["spacing_unit"] == "micrometer"
    assert create_project(None, image, classes="a,b").config.spacing_unit == "pixel"
    with pytest.raises(InputError, match="unit= 'parsec-ish' is not a length unit"):
        create_project(tmp_path / "q", image, classes="a,b", unit="parsec-ish")
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("name,unit,raw", [
    ("v.tif", "micrometer", "micron"),
    ("v.nii.gz", "millimeter", "mm"),
    ("v.ome.zarr", "nanometer", "nanometer"),
])
def test_imported_unit_is_kept_and_exported_in_every_format(tmp_path, image, name, unit, raw):
    src = write_volume(image, tmp_path / name, spacing=SPACING, spacing_unit=unit)
    assert _raw_unit(src) == raw
    st = create_project(None, src, classes="a,b")
    assert st.config.spacing_unit == unit and st.config.spacing == pytest.approx(SPACING)
    for out_name, out_raw in (("l.tif", {"micrometer": "micron", "millimeter": "mm", "nanometer": "nm"}[unit]),
                              ("l.nii", {"micrometer": "micron", "millimeter": "mm", "nanometer": "micron"}[unit]),
                              ("l.zarr", unit)):
        out = export(st, tmp_path / f"from-{name.split('.')[1]}-{out_name}", format=None)
        assert _raw_unit(out) == out_raw
        sub = {"dataset": "labels/labels"} if out_name.endswith(".zarr") else {}
        with read_volume(out, **sub) as back:
            if out_name == "l.nii" and unit == "nanometer":  # NIfTI has no nm: micrometres, spacing scaled
                assert back.spacing_unit == "micrometer" and back.spacing == pytest.approx(tuple(s * 1e-3 for s in SPACING))
            else:
                assert back.spacing_unit == unit and back.spacing == pytest.approx(SPACING)


def test_ome_tiff_unit_for_dtypes_imagej_cannot_hold(tmp_path, image):
    out = write_volume(image.astype(np.int32), tmp_path / "i.tif", spacing=SPACING, spacing_unit="micrometer")
    assert 'PhysicalSizeXUnit="µm"' in _raw_unit(out)
    with read_volume(out) as v:
        assert v.spacing_unit == "micrometer"


def test_a_project_without_unit_exports_none(tmp_path, image):
    st = create_project(None, image, classes="a,b")
    out = export(st, tmp_path / "l.zarr")
    import zarr

    axes = zarr.open_group(str(out), mode="r").attrs["multiscales"][0]["axes"]
    assert all("unit" not in a for a in axes)
    with read_volume(export(st, tmp_path / "l.nii", format="nifti")) as v:
        assert v.spacing_unit is None
