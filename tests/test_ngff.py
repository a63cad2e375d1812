"""OME-Zarr that other tools open: exports validated by ome-zarr-models and opened by napari-ome-zarr.

An export holds the project's image at its root and the labels in ``labels/<what>``, both as
multiscale pyramids (the image averaged, labels sampled: never a mean of class values), with the
classes' colours and names in ``image-label`` and the spacing unit on every axis.
"""

from __future__ import annotations

import numpy as np
import pytest

from al_annotator.errors import InputError
from al_annotator.io import read_volume, write_volume
from al_annotator.io.writers import pyramid_factors
from al_annotator.store import create_project
from al_annotator.store.export import export
from al_annotator.types import SliceRef

SPACING = (2.0, 0.5, 0.25)
CLASSES = ("background", "bone", "implant")


@pytest.fixture
def store():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 60000, (20, 70, 66)).astype(np.uint16)
    st = create_project(None, image, classes=",".join(CLASSES), spacing=SPACING, unit="um")
    st.paint(SliceRef("z", 3), np.arange(66 * 10), "implant")  # a band of rows 0..9
    st.paint(SliceRef("y", 40), np.arange(66 * 5, 66 * 12), "bone")
    return st


def _models(version):
    if version == "0.4":
        from ome_zarr_models.v04 import Image
        from ome_zarr_models.v04.image_label import ImageLabel
    else:
        from ome_zarr_models.v05 import Image
        from ome_zarr_models.v05.image_label import ImageLabel
    return Image, ImageLabel


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_export_validates_with_ome_zarr_models(tmp_path, store, version):
    import zarr

    out = export(store, tmp_path / "seg.ome.zarr", ngff_version=version)
    Image, ImageLabel = _models(version)
    image = Image.from_zarr(zarr.open_group(str(out), mode="r"))  # raises on any spec violation
    ImageLabel.from_zarr(zarr.open_group(str(out / "labels" / "labels"), mode="r"))
    attrs = image.ome_attributes if version == "0.5" else image.attributes
    ms = attrs.multiscales[0]
    assert [a.unit for a in ms.axes] == ["micrometer"] * 3
    assert [d.path for d in ms.datasets] == ["s0", "s1"]  # a pyramid: 70 -> 35 (32 is the floor)
    assert list(ms.datasets[0].coordinateTransformations[0].scale) == list(SPACING)
    assert list(ms.datasets[1].coordinateTransformations[0].scale) == [4.0, 1.0, 0.5]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_napari_ome_zarr_opens_image_and_labels(tmp_path, store, version):
    from napari_ome_zarr import napari_get_reader

    out = export(store, tmp_path / "seg.zarr", ngff_version=version)
    reader = napari_get_reader(str(out))
    assert reader is not None
    layers = reader(str(out))
    kinds = [kind for _, _, kind in layers]
    assert kinds == ["image", "labels"]
    (img, img_meta, _), (lab, lab_meta, _) = layers
    np.testing.assert_array_equal(np.asarray(img[0]), np.asarray(store.image[...]))
    np.testing.assert_array_equal(np.asarray(lab[0]), np.asarray(store.labels[...]))
    assert len(img) == len(lab) == 2
    for meta in (img_meta, lab_meta):
        assert tuple(meta["units"]) == ("micrometer",) * 3
        assert list(meta["scale"]) == list(SPACING)
    assert lab_meta["properties"]["name"] == ["unlabelled", *CLASSES]
    colours = lab_meta["colormap"]
    for value, hexcol in enumerate(store.config.colours, start=1):
        rgb = [int(hexcol[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        assert list(colours[value][:3]) == pytest.approx(rgb)


def test_pyramids_average_the_image_and_sample_the_labels(tmp_path):
    import zarr

    image = np.zeros((8, 64, 64), np.uint16)
    image[:, :, 1::2] = 1000  # odd columns bright: a 2x2x2 mean is 500 everywhere
    labels = np.zeros((8, 64, 64), np.uint8)
    labels[:, :, 0::2], labels[:, :, 1::2] = 1, 3  # classes 1 and 3 side by side: a mean would give 2
    out = write_volume(labels, tmp_path / "p.zarr", kind="labels", image=image,
                       classes=[(1, "a", "#ff0000"), (2, "b", "#00ff00"), (3, "c", "#0000ff")])
    root = zarr.open_group(str(out), mode="r")
    assert np.all(np.asarray(root["s1"]) == 500)
    coarse = np.asarray(root["labels/labels/s1"])
    assert coarse.shape == (4, 32, 32)
    assert set(np.unique(coarse).tolist()) <= {1, 3}
    with read_volume(out) as v:  # our reader takes the full-resolution image at the root
        np.testing.assert_array_equal(np.asarray(v.array[...]), image)
    with read_volume(out, dataset="labels/labels") as v:
        np.testing.assert_array_equal(np.asarray(v.array[...]), labels)


def test_predictions_export_like_labels(tmp_path):
    from al_annotator.store.models import publish_version

    # a project on disk: model outputs live in its zarr group
    rng = np.random.default_rng(4)
    image = rng.integers(0, 1000, (16, 40, 40)).astype(np.uint16)
    st = create_project(tmp_path / "p", image, classes="a,b", spacing=(1, 1, 1), unit="nm")
    (tmp_path / "p" / "models" / "v0001.partial").mkdir(parents=True)
    pred = st.root.require_group("models/v0001").create_array("prediction", shape=image.shape, dtype=np.uint8, chunks=(8, 8, 8))
    pred[:] = (image % 2 + 1).astype(np.uint8)
    publish_version(st, 1, {"created": 0, "trained_on_seq": 0, "metrics": {}})
    out = export(st, tmp_path / "pred.zarr", what="predictions")
    from napari_ome_zarr import napari_get_reader

    (_, img_meta, _), (lab, lab_meta, kind) = napari_get_reader(str(out))(str(out))
    assert kind == "labels" and lab_meta["name"].endswith("predictions")
    np.testing.assert_array_equal(np.asarray(lab[0]), image % 2 + 1)
    assert tuple(lab_meta["units"]) == ("nanometer",) * 3


def test_pyramid_factors_and_bad_arguments(tmp_path):
    assert pyramid_factors((2048, 2048, 2048))[-1] == {"z": 64, "y": 64, "x": 64}  # 2048 -> 32
    assert pyramid_factors((10, 20, 30)) == []  # small: one level
    assert pyramid_factors((64, 64, 64), levels=0) == []
    labels = np.zeros((4, 8, 8), np.uint8)
    with pytest.raises(InputError, match="levels must be an integer"):
        write_volume(labels, tmp_path / "a.zarr", kind="labels", levels=-1)
    with pytest.raises(InputError, match="classes must be"):
        write_volume(labels, tmp_path / "a.zarr", kind="labels", classes=[(1, "a", "red")])
    with pytest.raises(InputError, match="OME-Zarr only"):
        write_volume(labels, tmp_path / "a.tif", kind="labels", image=labels)
    with pytest.raises(InputError, match="must match"):
        write_volume(labels, tmp_path / "a.zarr", kind="labels", image=np.zeros((4, 8, 9), np.uint8))
    assert not (tmp_path / "a.zarr").exists()


def test_lazy_sources_are_written_chunk_by_chunk(tmp_path):
    """An HDF5 dataset and a TIFF page reader (not thread-safe: read under a lock) export intact."""
    import h5py
    import tifffile

    data = np.random.default_rng(6).integers(0, 4000, (70, 40, 36)).astype(np.uint16)
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["volume"] = data
    tifffile.imwrite(tmp_path / "v.tif", data, compression="zlib")  # compressed: read page by page
    for name in ("v.h5", "v.tif"):
        with read_volume(tmp_path / name) as vol:
            out = write_volume(vol, tmp_path / f"{name}.zarr")
        with read_volume(out) as back:
            np.testing.assert_array_equal(np.asarray(back.array[...]), data)


def test_labels_without_classes_still_validate(tmp_path):
    """Without class names (the napari writer), the values present get the palette's colours: every
    ``colors`` entry needs an ``rgba`` for ome-zarr-models."""
    import zarr

    Image, ImageLabel = _models("0.4")
    image = np.random.default_rng(8).integers(0, 1000, (8, 64, 64)).astype(np.uint16)
    out = write_volume((image % 3).astype(np.uint8), tmp_path / "n.zarr", kind="labels", image=image)
    Image.from_zarr(zarr.open_group(str(out), mode="r"))
    label = ImageLabel.from_zarr(zarr.open_group(str(out / "labels" / "labels"), mode="r"))
    assert [c.label_value for c in label.attributes.image_label.colors] == [0, 1, 2]
