"""Tier 1's features from the deep tier (``instant.deep``): the network's fused head features,
reduced by a PCA and upsampled, equal the full-resolution computation, and they carry the class."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from al_annotator.instant.deep import DeepFeatures, upsample_bilinear  # noqa: E402


@pytest.fixture(scope="module")
def model():
    from al_annotator.models import create_model

    torch.manual_seed(0)
    return create_model("hrnet_w18_small", n_classes=2).eval()


def _norm(img):
    return (np.asarray(img, np.float32) - 0.5) / 0.25


@pytest.mark.parametrize("size", [(8, 5), (13, 31)])
def test_upsample_equals_torch_bilinear(size):
    import torch.nn.functional as F

    low = np.random.default_rng(0).normal(size=(3,) + size).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(low)[None], scale_factor=4, mode="bilinear", align_corners=False)[0].numpy()
    got = upsample_bilinear(low, ref.shape[1:], (4.0, 4.0))
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # cropped to a smaller slice: the first rows and columns of the same
    np.testing.assert_allclose(upsample_bilinear(low, (size[0] * 4 - 5, size[1] * 4 - 3), (4.0, 4.0)),
                               ref[:, : size[0] * 4 - 5, : size[1] * 4 - 3], atol=1e-5)


@pytest.mark.parametrize("shape", [(64, 64), (50, 70)])
def test_plane_equals_projecting_the_upsampled_full_features(model, shape):
    """Projected at the head's resolution, then upsampled: equal to upsampling all channels of the
    padded slice first, cropping, and projecting (the reduction is affine)."""
    import torch.nn.functional as F

    rng = np.random.default_rng(1)
    imgs = [rng.random(shape).astype(np.float32) for _ in range(2)]
    deep = DeepFeatures(model, _norm, components=4).fit(imgs)
    got = deep.plane(imgs[0])
    assert got.shape == (4, *shape) and got.dtype == np.float32
    x = torch.from_numpy(_norm(imgs[0])[None, None])
    with torch.no_grad():
        xp = model._pad(x)
        feats, _ = model._features(xp)
        full = F.interpolate(feats, size=xp.shape[-2:], mode="bilinear", align_corners=False)[0, :, : shape[0], : shape[1]].numpy()
    ref = np.einsum("kf,fhw->khw", deep._proj, full - deep._mean[:, None, None])
    np.testing.assert_allclose(got, ref, atol=1e-3, rtol=1e-3)
    # from head features computed once (LivePreview's refresh: the PCA's maps): the same plane
    np.testing.assert_array_equal(deep.project(*deep.head_features(imgs[0]), shape), got)


def test_components_are_the_largest_variance_directions(model):
    rng = np.random.default_rng(2)
    imgs = [rng.random((64, 64)).astype(np.float32) for _ in range(3)]
    deep = DeepFeatures(model, _norm, components=3).fit(imgs)
    P = deep._proj
    np.testing.assert_allclose(P @ P.T, np.eye(3), atol=1e-4)  # orthonormal
    f = np.concatenate([deep.head_features(im)[0].reshape(deep._proj.shape[1], -1).T for im in imgs])
    var = ((f - deep._mean) @ P.T).var(0)
    assert np.all(np.diff(var) <= 1e-6)  # largest first
    with pytest.raises(ValueError, match="at least one slice"):
        DeepFeatures(model, _norm).fit([])
    with pytest.raises(RuntimeError, match="fit first"):
        DeepFeatures(model, _norm).plane(imgs[0])
