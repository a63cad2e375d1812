"""The image pyramid in the store: written at creation, read for zoomed-out planes, built by
``check --repair`` for projects made before it, and never needed for correctness (reads fall back
to the full image)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from al_annotator.errors import InputError
from al_annotator.store import create_project, open_project
from al_annotator.store.pyramid import level_shape, pyramid_levels
from al_annotator.types import SliceRef

SHAPE = (12, 1030, 70)  # longest side 1030: levels 1 and 2; odd sides exercise the edges


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 60000, SHAPE).astype(np.uint16)


def _mean_cubes(a: np.ndarray, k: int) -> np.ndarray:
    """The reference: means over 2^k cubes, built level by level as the store builds them."""
    for _ in range(k):
        pad = [(0, n % 2) for n in a.shape]
        valid = np.pad(np.ones(a.shape), pad)
        data = np.pad(a.astype(np.float64), pad)
        s = tuple(n // 2 for n in data.shape)
        total = data.reshape(s[0], 2, s[1], 2, s[2], 2).sum(axis=(1, 3, 5))
        count = valid.reshape(s[0], 2, s[1], 2, s[2], 2).sum(axis=(1, 3, 5))
        a = np.rint(total / count).astype(np.uint16)
    return a


def test_levels_written_at_creation_hold_cube_means(tmp_path, image):
    st = create_project(tmp_path / "p", image, classes="a,b")
    assert pyramid_levels(SHAPE) == [1, 2] and sorted(st.pyramid) == [1, 2]
    assert st.info()["pyramid_levels"] == [1, 2]
    for k in (1, 2):
        assert tuple(st.pyramid[k].shape) == level_shape(SHAPE, k)
        np.testing.assert_array_equal(np.asarray(st.pyramid[k][...]), _mean_cubes(image, k))
    assert pyramid_levels((300, 300, 300)) == []
    assert create_project(None, image[:, :300], classes="a,b").pyramid == {}


@pytest.mark.parametrize("axis", ["z", "y", "x"])
def test_read_slice_at_a_level(tmp_path, image, axis):
    st = create_project(tmp_path / "p", image, classes="a,b")
    n = {"z": 0, "y": 1, "x": 2}[axis]
    index = SHAPE[n] - 1
    ref = SliceRef(axis, index)
    full = st.read_slice(ref)
    for level in range(4):
        plane = st.read_slice(ref, level=level)
        assert plane.shape == full[:: 2**level, :: 2**level].shape  # what striding gives, whatever the source
        if level:
            k = min(level, 2)
            coarse = np.take(_mean_cubes(image, k), index >> k, axis=n)
            np.testing.assert_array_equal(plane, coarse[:: 2 ** (level - k), :: 2 ** (level - k)])
    labels = st.read_slice(ref, "labels", level=2)  # labels are sampled, never averaged
    assert labels.shape == full[::4, ::4].shape and labels.dtype == np.uint8
    with pytest.raises(InputError, match="level must be a non-negative integer"):
        st.read_slice(ref, level=-1)


def test_old_project_reads_full_image_until_repair_builds_it(tmp_path, image):
    from al_annotator.cli import main

    st = create_project(tmp_path / "p", image, classes="a,b")
    ref = SliceRef("z", 5)
    strided = st.read_slice(ref)[::2, ::2]
    st.close()
    shutil.rmtree(tmp_path / "p" / "data.zarr" / "pyramid")  # as a project made before the pyramid
    old = open_project(tmp_path / "p")
    assert old.pyramid == {}
    np.testing.assert_array_equal(old.read_slice(ref, level=1), strided)
    assert old.check() == []  # a missing pyramid is no damage
    old.close()
    assert main(["check", str(tmp_path / "p"), "--repair"]) == 0
    again = open_project(tmp_path / "p")
    assert sorted(again.pyramid) == [1, 2]
    np.testing.assert_array_equal(again.read_slice(ref, level=1), _mean_cubes(image, 1)[2])
