"""Nine-plane fusion: the diagonal plane families cover every voxel once, a per-voxel model gives the
same answer on all nine planes (so the fused result is exact, whatever the blocks), and bad
``planes`` requests name the remedy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from al_annotator.errors import InputError
from al_annotator.models.base import ModelConfig, SegmentationModel
from al_annotator.store import create_project
from al_annotator.training.planes import diagonal_planes, plane_families, plane_view


class ThresholdModel(SegmentationModel):
    """A real :class:`SegmentationModel` that decides each pixel on its own intensity: class 1 above
    ``threshold`` (the window-mapped 0.5), with logits ``+-gain * (x - 0.5)``. It has no spatial
    context, so every plane through a voxel gives it the same probabilities: a rotation-invariant case
    where nine-plane fusion must reproduce the per-voxel answer exactly, and where any voxel whose vote
    lands somewhere else shows up."""

    embedding_dim = 1
    pad_multiple = 1

    def __init__(self, gain: float = 8.0) -> None:
        super().__init__(ModelConfig("threshold", n_classes=2, dropout=0.0))
        self.classifier = nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.classifier.weight[:] = torch.tensor([-gain, gain]).view(2, 1, 1, 1)
            self.classifier.bias[:] = torch.tensor([gain / 2, -gain / 2])

    def _features(self, x):
        return x, x


def _expected(store, model) -> np.ndarray:
    from al_annotator.training.data import normalise

    x = torch.from_numpy(normalise(np.asarray(store.image[...]), store.display_window)).reshape(1, 1, -1, 1)
    with torch.inference_mode():
        return model(x).softmax(1).reshape(2, *store.shape).numpy()


@pytest.mark.parametrize("family", [f for f in plane_families(9) if not f.orthogonal], ids=lambda f: f.name)
def test_each_diagonal_family_covers_every_voxel_once(family):
    shape = (5, 7, 9)
    seen = np.zeros(shape, np.int32)
    view = plane_view(seen, family)
    for length, (p, q) in diagonal_planes(shape, family):
        assert view[:, p, q].shape[1] == length
        view[:, p, q] += 1
    assert (seen == 1).all()
    # along a plane, the two in-plane axes other than the family's axis step together (+) or oppositely (-)
    idx = np.indices(shape)
    _, (p, q) = diagonal_planes(shape, family)[0]
    coords = [plane_view(idx[i], family)[:, p, q][0] for i in range(3)]
    others = [c for i, c in enumerate(coords) if i != family.axis]
    assert set(np.diff(others[0])) == {1}
    assert set(np.diff(others[1])) == {family.sign}


@pytest.mark.parametrize("blocks", [dict(), dict(block=16, halo=4)], ids=["one block", "blocks with halo"])
def test_nine_planes_are_exact_for_a_per_voxel_model(blocks):
    from al_annotator.training.predict import predict_volume

    rng = np.random.default_rng(0)
    image = rng.integers(0, 1000, size=(20, 26, 33)).astype(np.uint16)  # no symmetry to hide a misplaced vote
    store = create_project(None, image, classes=["dark", "bright"], chunks=(16, 16, 16))
    model = ThresholdModel()
    expected = _expected(store, model)
    nine = predict_volume(store, model, planes=9, **blocks)
    three = predict_volume(store, model, planes=3, **blocks)
    assert list(nine.seconds) == ["z", "y", "x", "z+", "z-", "y+", "y-", "x+", "x-"]
    np.testing.assert_allclose(nine.probabilities, expected, rtol=0, atol=2e-7)
    np.testing.assert_allclose(three.probabilities, expected, rtol=0, atol=2e-7)
    assert np.array_equal(nine.probabilities.argmax(0), expected.argmax(0))
    assert len(nine.scores) == sum(store.shape)  # every orthogonal slice scored once, blocks merged


def test_blocks_give_each_slice_one_score_in_axis_order():
    from al_annotator.training.predict import predict_volume

    image = np.random.default_rng(1).integers(0, 1000, size=(20, 26, 33)).astype(np.uint16)
    store = create_project(None, image, classes=["dark", "bright"], chunks=(16, 16, 16))
    whole = predict_volume(store, ThresholdModel(), axes="zx")
    blocked = predict_volume(store, ThresholdModel(), axes="zx", block=16, halo=0)
    assert [(r.axis, r.index) for r in blocked.scores.refs] == [(r.axis, r.index) for r in whole.scores.refs]
    # a per-pixel model: a slice's mean entropy over blocks (pixel-weighted) is the whole slice's
    np.testing.assert_allclose(blocked.scores.uncertainty["entropy"], whole.scores.uncertainty["entropy"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(blocked.scores.foreground_fraction, whole.scores.foreground_fraction, atol=1e-6)


def test_bad_planes_requests_name_the_remedy():
    from al_annotator.training import TrainConfig
    from al_annotator.training.predict import predict_volume

    with pytest.raises(InputError, match="planes must be 3 .* or 9"):
        plane_families(5)
    with pytest.raises(InputError, match="needs axes='zyx'"):
        plane_families(9, "zy")
    with pytest.raises(InputError, match="planes 9 .* needs axes 'zyx'"):
        TrainConfig(planes=9, axes="z")
    store = create_project(None, np.zeros((8, 8, 8), np.uint8), classes=["a", "b"])
    with pytest.raises(InputError, match="halo must be an integer >= 0"):
        predict_volume(store, ThresholdModel(), halo=-1)
    with pytest.raises(InputError, match="block must be a positive integer"):
        predict_volume(store, ThresholdModel(), block=0)


@pytest.mark.gpu
def test_nine_planes_on_cuda_agree_with_the_cpu():
    """The CUDA path (bf16 autocast, large batches) gives the CPU's answer up to bf16 rounding."""
    from al_annotator.training.predict import predict_volume

    image = np.random.default_rng(2).integers(0, 1000, size=(40, 48, 56)).astype(np.uint16)
    store = create_project(None, image, classes=["dark", "bright"], chunks=(32, 32, 32))
    cpu = predict_volume(store, ThresholdModel(), planes=9, block=32, halo=8)
    gpu = predict_volume(store, ThresholdModel(), planes=9, block=32, halo=8, device=torch.device("cuda"), batch_size=64)
    np.testing.assert_allclose(gpu.probabilities, cpu.probabilities, atol=0.03)
    assert (gpu.probabilities.argmax(0) == cpu.probabilities.argmax(0)).mean() > 0.98


def test_slice_normalisation_uses_whole_slices_when_a_slice_is_split_over_blocks():
    """input_norm="slice" standardises each orthogonal slice on the whole slice (as training does):
    a per-voxel model's three-plane prediction in 16^3 blocks equals the one-block prediction; with
    each block's own statistics (what the block path did first) it would not."""
    from al_annotator.training.data import normalise
    from al_annotator.training.predict import predict_volume

    rng = np.random.default_rng(1)
    image = rng.integers(0, 1000, size=(20, 26, 33)).astype(np.uint16)
    image[:, :, 20:] += 1500  # one side brighter: block statistics differ from the slice's
    store = create_project(None, image, classes=["dark", "bright"], chunks=(16, 16, 16))
    model = ThresholdModel()
    whole = predict_volume(store, model, planes=3, input_norm="slice")
    blocks = predict_volume(store, model, planes=3, input_norm="slice", block=16, halo=4)
    np.testing.assert_allclose(blocks.probabilities, whole.probabilities, rtol=0, atol=2e-6)
    from al_annotator.training.predict import whole_slice_statistics  # computed once per image, not every round

    assert whole_slice_statistics(store) is whole_slice_statistics(store)
    # the one-block result is the per-slice standardisation of the whole slices, voted over z, y, x
    x = normalise(np.asarray(store.image[...]), store.display_window)
    per_axis = []
    for a in range(3):
        v = np.moveaxis(x, a, 0)
        s = normalise(v, (0.0, 1.0), "slice")
        with torch.inference_mode():
            p = model(torch.from_numpy(np.ascontiguousarray(s)).reshape(1, 1, -1, 1)).softmax(1).reshape(2, *v.shape).numpy()
        per_axis.append(np.moveaxis(p, 1, 1 + a))
    np.testing.assert_allclose(whole.probabilities, np.mean(per_axis, axis=0), rtol=0, atol=2e-6)
