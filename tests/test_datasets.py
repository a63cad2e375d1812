"""Tests of al_annotator.datasets: the synthetic Mg-screw phantom and the bundled real demo volumes."""

from __future__ import annotations

import dataclasses
import doctest
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

import al_annotator.datasets as datasets
from al_annotator.datasets import (
    BACKGROUND,
    BONE,
    DEGRADATION,
    DEMO_NAMES,
    IMPLANT,
    PHANTOM_CLASSES,
    demo_path,
    load_demo,
    make_phantom,
)
from al_annotator.datasets import demo as demo_module
from al_annotator.datasets import phantom as phantom_module
from al_annotator.errors import InputError

DEFAULT_SHAPE = (64, 128, 128)


@pytest.fixture(scope="module")
def default_phantom() -> datasets.Phantom:
    return make_phantom(DEFAULT_SHAPE)


def radial_distance(shape: tuple[int, int, int]) -> np.ndarray:
    """Distance of each (y, x) pixel from the rotation axis through the volume centre."""
    _, ny, nx = shape
    yy, xx = np.meshgrid(np.arange(ny) - (ny - 1) / 2, np.arange(nx) - (nx - 1) / 2, indexing="ij")
    return np.hypot(yy, xx)


# ------------------------------------------------------------------------------------------------
# determinism, shapes, dtypes


def test_same_seed_is_bit_identical_and_other_seed_differs() -> None:
    a = make_phantom((24, 48, 40), seed=7)
    b = make_phantom((24, 48, 40), seed=7)
    c = make_phantom((24, 48, 40), seed=8)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.labels.tobytes() == b.labels.tobytes()
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.labels, c.labels)


def test_output_does_not_depend_on_the_slab_size(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = make_phantom((30, 40, 40), seed=3, blur=1.5, dtype="float32")
    monkeypatch.setattr(phantom_module, "_SLAB_VOXELS", 40 * 40 * 4)  # 4 slices per slab, halo 6
    slabbed = make_phantom((30, 40, 40), seed=3, blur=1.5, dtype="float32")
    assert np.array_equal(whole.labels, slabbed.labels)
    assert np.array_equal(whole.image, slabbed.image)


def test_blur_equals_a_global_gaussian_filter() -> None:
    ph = make_phantom((20, 48, 48), noise=0, rings=0, blur=1.2, dtype="float32")
    lut = np.array((0.0, *ph.class_intensities), dtype=np.float32)
    expected = ndimage.gaussian_filter(lut[ph.labels], 1.2, mode="reflect", truncate=4.0)
    np.testing.assert_allclose(ph.image, expected, atol=1e-6)


@pytest.mark.parametrize("dtype", ["uint16", "uint8", "float32", np.uint16])
@pytest.mark.parametrize("shape", [(16, 16, 16), (20, 48, 40), (1, 64, 64)])
def test_shape_and_dtypes(shape: tuple[int, int, int], dtype: object) -> None:
    ph = make_phantom(shape, dtype=dtype)
    assert ph.image.shape == shape == ph.labels.shape == ph.shape
    assert ph.image.dtype == np.dtype(dtype)
    assert ph.labels.dtype == np.uint8
    assert ph.classes == PHANTOM_CLASSES == ("background", "bone", "implant", "degradation")
    assert ph.spacing == (1.0, 1.0, 1.0)
    assert np.isfinite(ph.image.astype(np.float64)).all()


def test_uint16_intensities_are_in_a_realistic_range(default_phantom: datasets.Phantom) -> None:
    img = default_phantom.image
    assert img.dtype == np.uint16
    assert 5_000 < np.percentile(img, 1) and np.percentile(img, 99) < 55_000
    assert img.min() > 0 and img.max() < 65_535  # nothing clipped at default settings


def test_spacing_is_recorded_and_phantom_is_frozen() -> None:
    ph = make_phantom((16, 32, 32), spacing=(2, 1, 1))
    assert ph.spacing == (2.0, 1.0, 1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ph.image = ph.image  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------
# labels


@pytest.mark.parametrize("shape,seed", [((32, 32, 32), 0), ((32, 32, 32), 1), ((40, 64, 48), 2), (DEFAULT_SHAPE, 0)])
def test_labels_are_complete_and_every_class_present(shape: tuple[int, int, int], seed: int) -> None:
    ph = make_phantom(shape, seed=seed)
    values, counts = np.unique(ph.labels, return_counts=True)
    assert values.tolist() == [1, 2, 3, 4]  # no 0 (ground truth is complete), nothing above 4
    assert counts.min() >= 0.005 * ph.labels.size  # each class is a real share of the volume


def test_mask_helper(default_phantom: datasets.Phantom) -> None:
    assert np.array_equal(default_phantom.mask("implant"), default_phantom.labels == IMPLANT)
    with pytest.raises(InputError, match="unknown class"):
        default_phantom.mask("titanium")


def test_implant_is_on_the_axis_and_bone_outside(default_phantom: datasets.Phantom) -> None:
    lab = default_phantom.labels
    r = np.broadcast_to(radial_distance(lab.shape), lab.shape)
    mean_r = {c: r[lab == c].mean() for c in (IMPLANT, DEGRADATION, BONE)}
    assert mean_r[IMPLANT] < mean_r[DEGRADATION] < mean_r[BONE]
    screw_radius = default_phantom.params["screw_radius"]
    assert r[lab == IMPLANT].max() <= screw_radius + 0.5
    # the axis itself is residual implant material on every slice
    cy, cx = lab.shape[1] // 2, lab.shape[2] // 2
    assert (lab[:, cy, cx] == IMPLANT).all()
    # a cortical ring: bone on most of the circle at 0.85 of the field-of-view radius
    fov = min(lab.shape[1:]) / 2
    ring = np.abs(radial_distance(lab.shape) - 0.865 * fov) < 0.5
    assert (lab[:, ring] == BONE).mean() > 0.9
    # outside the circular field of view: background
    assert (lab[:, radial_distance(lab.shape) > 0.99 * fov] == BACKGROUND).all()


def test_degradation_layer_covers_and_touches_the_implant(default_phantom: datasets.Phantom) -> None:
    lab = default_phantom.labels
    implant, degr = lab == IMPLANT, lab == DEGRADATION
    # every face-neighbour of the residual screw that is not screw is degradation (the layer covers it)
    shell = ndimage.binary_dilation(implant) & ~implant
    assert (lab[shell] == DEGRADATION).all()
    # ... and no degradation voxel is farther from the residual screw than the layer can be thick
    p = default_phantom.params
    max_thickness = 0.6 * p["screw_radius"] * p["degradation"] * (1 + 1 / 3)
    dist = ndimage.distance_transform_edt(~implant)
    assert dist[degr].max() <= max_thickness + 1.5
    # the layer's thickness varies over the surface (smooth random field)
    radial = [(lab[z, lab.shape[1] // 2, lab.shape[2] // 2 :] == DEGRADATION).sum() for z in range(lab.shape[0])]
    assert max(radial) - min(radial) >= 2


def test_degradation_replaces_implant_from_the_outside_in() -> None:
    counts = []
    for degradation in (0.0, 0.3, 0.6, 1.0):
        lab = make_phantom((32, 64, 64), degradation=degradation, seed=4).labels
        counts.append(((lab == IMPLANT).sum(), (lab == DEGRADATION).sum()))
    implant, degr = zip(*counts)
    assert degr[0] == 0  # no degradation layer at degradation=0
    assert all(a > b for a, b in zip(implant, implant[1:]))  # the residual screw shrinks
    assert all(a < b for a, b in zip(degr, degr[1:]))  # the layer grows
    assert implant[-1] > 0  # something is left even at degradation=1


@pytest.mark.parametrize("pitch", [16.0, 8.0, 6.4])
def test_thread_is_periodic_along_z_with_the_pitch(pitch: float) -> None:
    """The screw radius along a fixed ray varies along z with the thread pitch (FFT peak)."""
    ph = make_phantom(DEFAULT_SHAPE, thread_pitch=pitch, seed=1)
    lab = ph.labels
    nz = lab.shape[0]
    ray = lab[:, lab.shape[1] // 2, lab.shape[2] // 2 :]
    profile = (ray == IMPLANT).sum(axis=1).astype(float)  # residual screw radius on the ray, per z
    spectrum = np.abs(np.fft.rfft(profile - profile.mean()))
    k = np.arange(spectrum.size)
    peak = k[2:][np.argmax(spectrum[2:])]  # skip the smooth degradation-depth trend (k <= 1)
    assert abs(peak - nz / pitch) <= 1.0, (peak, nz / pitch)


def test_default_thread_pitch_is_visible(default_phantom: datasets.Phantom) -> None:
    assert default_phantom.params["thread_pitch"] == 16.0
    lab = default_phantom.labels
    screw = (lab == IMPLANT) | (lab == DEGRADATION)
    profile = screw[:, lab.shape[1] // 2, lab.shape[2] // 2 :].sum(axis=1).astype(float)
    ac = np.correlate(profile - profile.mean(), profile - profile.mean(), mode="full")[lab.shape[0] - 1 :]
    lag = 4 + int(np.argmax(ac[4:32]))  # first autocorrelation peak after the zero-lag lobe
    assert abs(lag - 16) <= 1


@pytest.mark.parametrize("fraction", [0.15, 0.35])
def test_trabecular_volume_fraction(fraction: float) -> None:
    ph = make_phantom(DEFAULT_SHAPE, trabecular_fraction=fraction, degradation=0.0, seed=5)
    fov = DEFAULT_SHAPE[1] / 2
    r = radial_distance(DEFAULT_SHAPE)
    compartment = (r > ph.params["screw_radius"] + 2) & (r < 0.7 * fov)
    bv_tv = (ph.labels[:, compartment] == BONE).mean()
    assert abs(bv_tv - fraction) < 0.05, bv_tv


def test_no_trabecular_bone_at_fraction_zero() -> None:
    ph = make_phantom((16, 64, 64), trabecular_fraction=0.0)
    r = radial_distance(ph.shape)
    inner = (r > ph.params["screw_radius"] * 1.3) & (r < 0.7 * 32)
    assert not (ph.labels[:, inner] == BONE).any()
    assert (ph.labels == BONE).any()  # the cortex is still there


# ------------------------------------------------------------------------------------------------
# intensities


def test_class_means_follow_the_documented_order(default_phantom: datasets.Phantom) -> None:
    """background < degradation < implant < bone, for the clean values and in the noisy, blurred image."""
    ph = default_phantom
    bg, bone, implant, degr = ph.class_intensities
    assert bg < degr < implant < bone
    means = [ph.image[ph.labels == c].mean() for c in (BACKGROUND, DEGRADATION, IMPLANT, BONE)]
    assert means == sorted(means), means


@pytest.mark.parametrize("dtype", ["uint16", "uint8", "float32"])
def test_clean_phantom_is_classwise_constant(dtype: str) -> None:
    ph = make_phantom((24, 64, 64), noise=0, rings=0, blur=0, dtype=dtype)
    for value, expected in enumerate(ph.class_intensities, start=1):
        vals = np.unique(ph.image[ph.labels == value])
        assert vals.tolist() == [np.array(expected, dtype=ph.image.dtype)], (value, vals)
    if dtype == "uint16":
        assert ph.class_intensities == (12000.0, 44000.0, 32000.0, 24000.0)


def test_noise_level_is_relative_to_the_contrast() -> None:
    ph = make_phantom((24, 64, 64), noise=0.05, rings=0, blur=0, dtype="float32")
    bg, bone = ph.class_intensities[0], ph.class_intensities[1]
    for value in (BACKGROUND, BONE, IMPLANT):
        std = ph.image[ph.labels == value].std()
        assert std == pytest.approx(0.05 * (bone - bg), rel=0.05)


def test_rings_are_concentric_and_the_same_on_every_slice() -> None:
    ph = make_phantom((12, 64, 64), noise=0, rings=0.05, blur=0, dtype="float32")
    lut = np.array((0.0, *ph.class_intensities), dtype=np.float32)
    artefact = ph.image - lut[ph.labels]
    assert np.abs(artefact).max() > 0
    np.testing.assert_allclose(artefact, np.broadcast_to(artefact[0], artefact.shape), atol=1e-6)
    r = np.rint(radial_distance(ph.shape)).astype(int)
    for radius in (3, 10, 20):  # constant on each ring ...
        assert np.ptp(artefact[0][r == radius]) < 1e-6
    per_radius = [artefact[0][r == k][0] for k in range(1, 30)]
    assert np.std(per_radius) > 0.01  # ... and varying between rings


# ------------------------------------------------------------------------------------------------
# argument checking


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(shape=(8, 8)), "three integers"),
        (dict(shape=(8, 8, 8)), "too small"),
        (dict(shape=(16, 32.5, 32)), "three integers"),
        (dict(degradation=1.5), "degradation"),
        (dict(trabecular_fraction=-0.1), "trabecular_fraction"),
        (dict(noise=-1), "noise"),
        (dict(dtype="int8"), "dtype"),
        (dict(screw_radius=30.0), "screw_radius"),
        (dict(thread_pitch=0), "thread_pitch"),
        (dict(seed=-1), "seed"),
        (dict(spacing=(1, 1)), "spacing"),
    ],
)
def test_invalid_arguments_raise_input_error(kwargs: dict, match: str) -> None:
    kwargs.setdefault("shape", (16, 32, 32))
    with pytest.raises(InputError, match=match):
        make_phantom(**kwargs)


# ------------------------------------------------------------------------------------------------
# bundled demo volumes


def test_demo_names() -> None:
    assert DEMO_NAMES == ["bone", "cement"]


@pytest.mark.parametrize("name", ["bone", "cement"])
def test_load_demo(name: str) -> None:
    vol = load_demo(name)
    assert vol.name == name
    assert vol.image.shape == (128, 128, 128)
    assert vol.image.dtype == np.uint8
    assert vol.spacing == (1.0, 1.0, 1.0)
    assert vol.image.std() > 10  # a real scan, not a constant array
    assert "MIT" in vol.attribution and "qim3d" in vol.attribution
    assert name in vol.attribution  # says which keys were copied
    assert demo_path(name).is_file()


def test_load_demo_default_is_bone() -> None:
    assert load_demo().name == "bone"


def test_unknown_demo_name_is_a_clear_error() -> None:
    with pytest.raises(InputError, match=r"unknown demo volume 'shell'.*\['bone', 'cement'\]"):
        load_demo("shell")
    with pytest.raises(InputError, match="unknown demo volume"):
        demo_path("nope")


def test_package_data_is_small_and_attributed() -> None:
    data = Path(demo_module.__file__).parent / "data"
    files = sorted(p.name for p in data.iterdir() if p.is_file())
    assert files == ["qim3d_bone.npz", "qim3d_cement.npz", "qim3d_microct_SOURCE.txt"]
    assert sum(p.stat().st_size for p in data.iterdir()) < 3_000_000
    text = (data / "qim3d_microct_SOURCE.txt").read_text(encoding="utf-8")
    assert "MIT" in text and "Technical University of Denmark" in text


# ------------------------------------------------------------------------------------------------
# packaging hygiene


def test_import_pulls_in_no_heavy_or_gui_dependencies() -> None:
    code = (
        "import sys, al_annotator.datasets\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'torch', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'qtpy', 'napari', 'ipywidgets', 'matplotlib'})\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("module", [datasets, phantom_module, demo_module])
def test_docstring_examples_run(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0
