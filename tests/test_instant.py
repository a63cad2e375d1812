"""Tier 1, instant: filter bank tiles vs a whole-volume computation, anisotropy, cache bound, classifier, planes, errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from al_annotator.errors import InputError
from al_annotator.instant import FeatureBank, InstantClassifier, InstantSegmenter, compute_features
from al_annotator.instant.features import eigvalsh_sym

SIGMAS = (0.3, 0.7, 1.6, 3.5)


@pytest.fixture(scope="module")
def noise():
    return np.random.default_rng(0).normal(size=(18, 34, 30)).astype(np.float32)


@pytest.mark.parametrize("spacing, mode, boundary", [((5.0, 1.0, 1.0), "3d", "reflect"), (None, "3d", "reflect"),
                                                     ((5.0, 1.0, 1.0), "2d", "reflect"), ((5.0, 1.0, 1.0), "3d", "nearest"),
                                                     (None, "2d", "nearest")])
def test_tiles_with_halo_equal_whole_volume(noise, spacing, mode, boundary):
    bank = FeatureBank(noise, spacing, sigmas=SIGMAS, mode=mode, tile_shape=(7, 12, 11), intensity=(0.0, 1.0), boundary=boundary)
    full = compute_features(noise, spacing, sigmas=SIGMAS, mode=mode, boundary=boundary)
    assert full.shape == noise.shape + (bank.n_features,) and full.dtype == np.float32
    got = bank.features((slice(None),) * 3)
    np.testing.assert_allclose(got, full, atol=1e-5, rtol=1e-5)
    block = (slice(3, 11), 20, slice(5, 29))  # an integer keeps its axis
    np.testing.assert_allclose(bank.features(block), full[3:11, 20:21, 5:29], atol=1e-5, rtol=1e-5)
    coords = np.random.default_rng(1).integers(0, noise.shape, size=(50, 3))
    np.testing.assert_allclose(bank.features_at(coords), full[tuple(coords.T)], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("boundary", ["nearest", "reflect"])
def test_inplane_tiles_equal_each_planes_2d_features(noise, boundary):
    """In-plane mode: a plane along axis a, and voxels labelled on a-slices, get the 2D features of that plane
    (pixel sigmas, spacing unused), tile by tile equal to the whole-volume computation; keys carry the axis."""
    sig = (1.0, 2.0, 4.0)
    bank = FeatureBank(noise, (5.0, 1.0, 1.0), sigmas=sig, mode="inplane", tile_shape=(7, 12, 11), intensity=(0.0, 1.0),
                       boundary=boundary)
    coords = np.random.default_rng(2).integers(0, noise.shape, size=(90, 3))
    axes = np.arange(90) % 3
    want = np.empty((90, bank.n_features), np.float32)
    for a in range(3):
        full = compute_features(noise, None, sigmas=sig, mode="2d", flat_axis=a, boundary=boundary)
        np.testing.assert_array_equal(full, compute_features(noise, (9.0, 1.0, 1.0), sigmas=sig, mode="inplane", flat_axis=a,
                                                             boundary=boundary))
        assert full.shape[-1] == bank.n_features
        block = [slice(None)] * 3
        block[a] = 5
        np.testing.assert_allclose(bank.features(tuple(block)), full[tuple(slice(5, 6) if d == a else slice(None) for d in range(3))],
                                   atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(bank.features((slice(None),) * 3, axis=a), full, atol=1e-5, rtol=1e-5)
        assert all(t[0] == a and len(t) == 4 for t in bank.tiles_of(tuple(block)))
        want[axes == a] = full[tuple(coords[axes == a].T)]
        if a == bank.flat_axis:  # the default orientation: features_at without axes, bare tile indices
            np.testing.assert_allclose(bank.features_at(coords), full[tuple(coords.T)], atol=1e-5, rtol=1e-5)
            np.testing.assert_array_equal(bank.tile_features((0, 1, 1)), bank.tile_features((a, 0, 1, 1)))
    np.testing.assert_allclose(bank.features_at(coords, axes=axes), want, atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError, match="axes must be axis numbers"):
        bank.features_at(coords, axes=np.full(90, 3))
    with pytest.raises(InputError, match="needs a 3D volume"):
        FeatureBank(noise[0], mode="inplane")
    with pytest.raises(InputError, match="boundary must be one of"):
        FeatureBank(noise, boundary="wrap")


def test_auto_features_rule():
    from al_annotator.instant.segmenter import auto_features

    assert auto_features((50.0, 4.0, 4.0)) == {"mode": "3d", "sigmas": (1.0, 2.0, 4.0, 8.0, 16.0), "boundary": "nearest",
                                               "section_norm": "auto"}
    assert auto_features(None) == {"mode": "inplane", "sigmas": (1.0, 2.0, 4.0, 8.0, 16.0), "boundary": "nearest",
                                   "section_norm": "auto"}
    assert auto_features((1.5, 1.0, 1.0))["mode"] == "inplane"
    vol = np.zeros((6, 20, 20), np.float32)
    assert InstantSegmenter(vol, (50, 4, 4), n_jobs=1).bank.mode == "3d"
    seg = InstantSegmenter(vol, None, sigmas=(1.0, 2.0), n_jobs=1)
    assert (seg.bank.mode, seg.bank.boundary, seg.bank.sigmas, seg.classifier.kind) == ("inplane", "nearest", (1.0, 2.0), "rf")
    assert InstantSegmenter(vol, (50, 4, 4), n_jobs=1).classifier.kind == "et"
    assert InstantSegmenter(vol, None, mode="3d", n_jobs=1).bank.boundary == "reflect"


def test_features_match_direct_scipy(noise):
    """Channels against scipy.ndimage on the whole array and numpy's eigvalsh (independent of the bank's code)."""
    sp = (5.0, 1.0, 1.0)
    bank = FeatureBank(noise, sp, sigmas=(1.6, 5.0), tile_shape=(9, 17, 15), intensity=(0.0, 1.0))
    f = bank.features((slice(None),) * 3)
    names = bank.feature_names
    # scale 1.6: z sigma 0.32 >= 0.3 is active; scale 5: z sigma 1.0
    sig = (1.6 / 5, 1.6, 1.6)
    w = (0.2, 1.0, 1.0)
    g = ndimage.gaussian_filter(noise.astype(np.float64), sig)
    np.testing.assert_allclose(f[..., names.index("gaussian s=1.6")], g, atol=1e-4)
    H = np.empty(noise.shape + (3, 3))
    for a in range(3):
        for b in range(3):
            order = [0, 0, 0]
            order[a] += 1
            order[b] += 1
            H[..., a, b] = ndimage.gaussian_filter(noise.astype(np.float64), sig, order=order) * w[a] * w[b]
    eig = np.linalg.eigvalsh(H)[..., ::-1]
    for i in range(3):
        np.testing.assert_allclose(f[..., names.index(f"hessian_eig{i} s=1.6")], eig[..., i], atol=1e-4)
    np.testing.assert_allclose(f[..., names.index("log s=1.6")], np.trace(H, axis1=-2, axis2=-1), atol=1e-4)
    grad = [ndimage.gaussian_filter(noise.astype(np.float64), sig, order=tuple(int(k == a) for k in range(3))) * w[a] for a in range(3)]
    np.testing.assert_allclose(f[..., names.index("ggm s=1.6")], np.sqrt(sum(d * d for d in grad)), atol=1e-4)


def test_eigenvalues_closed_form():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(500, 3, 3))
    A = A + np.swapaxes(A, 1, 2)
    A[:50] = np.eye(3) * 3.0 + 1e-6 * A[:50]  # near-degenerate
    got = np.stack(eigvalsh_sym({(i, j): A[:, i, j] for i in range(3) for j in range(i, 3)}, 3), 1)
    np.testing.assert_allclose(got, np.linalg.eigvalsh(A)[:, ::-1], atol=1e-5)
    B = A[:, :2, :2]
    got2 = np.stack(eigvalsh_sym({(0, 0): B[:, 0, 0], (0, 1): B[:, 0, 1], (1, 1): B[:, 1, 1]}, 2), 1)
    np.testing.assert_allclose(got2, np.linalg.eigvalsh(B)[:, ::-1], atol=1e-5)


def test_anisotropic_sigmas():
    img = np.zeros((12, 40, 40), np.float32)
    bank = FeatureBank(img, (50, 4, 4), intensity=(0.0, 1.0))
    axis = bank.describe()["axis_sigmas"]
    # z sigma = s * 4 / 50; below 0.3 the axis is not smoothed (0)
    assert axis["0.3"] == [0.0, 0.3, 0.3] and axis["3.5"] == [0.0, 3.5, 3.5]
    assert axis["5"] == pytest.approx([0.4, 5.0, 5.0]) and axis["10"] == pytest.approx([0.8, 10.0, 10.0])
    # z inactive at a scale: the tensors are 2x2 there (two eigenvalue channels), 3x3 where z is active
    assert "hessian_eig2 s=3.5" not in bank.feature_names and "hessian_eig2 s=10" in bank.feature_names
    assert bank.halo[0] == 5 and bank.halo[1] == 60  # z: 4*0.8 (+ ST outer 4*0.4); xy: 4*10 + 4*5
    iso = FeatureBank(img, None, intensity=(0.0, 1.0))
    assert iso.describe()["axis_sigmas"]["3.5"] == [3.5, 3.5, 3.5]
    flat = FeatureBank(img, (50, 4, 4), mode="2d", intensity=(0.0, 1.0))
    assert flat.halo[0] == 0 and all(v[0] == 0 for v in flat.describe()["axis_sigmas"].values())


def test_2d_mode_is_per_slice(noise):
    """mode='2d': each z slice's features are the 2D features of that slice alone."""
    bank = FeatureBank(noise, None, sigmas=SIGMAS, mode="2d", flat_axis=0, intensity=(0.0, 1.0))
    f = bank.features((5, slice(None), slice(None)))[0]
    ref = compute_features(noise[5], None, sigmas=SIGMAS)
    np.testing.assert_allclose(f, ref, atol=1e-5)


def test_cache_respects_byte_bound(noise):
    probe = FeatureBank(noise, None, sigmas=SIGMAS, tile_shape=(6, 12, 10), intensity=(0.0, 1.0))
    bound = int(2.5 * probe.tile_bytes)
    bank = FeatureBank(noise, None, sigmas=SIGMAS, tile_shape=(6, 12, 10), cache_bytes=bound, intensity=(0.0, 1.0))
    peak = 0
    for tile in [(i, j, k) for i in range(3) for j in range(3) for k in range(3)]:
        bank.tile_features(tile)
        peak = max(peak, bank.cached_bytes)
        assert bank.cached_bytes <= bound
    assert peak > bank.tile_bytes and bank.stats["evictions"] > 0
    computed = bank.stats["tiles_computed"]
    bank.tile_features((2, 2, 2))  # most recent: a hit
    assert bank.stats["tiles_computed"] == computed
    bank.tile_features((0, 0, 0))  # evicted long ago: recomputed
    assert bank.stats["tiles_computed"] == computed + 1
    with pytest.raises(InputError, match="raise cache_bytes or pass a smaller tile_shape"):
        FeatureBank(noise, None, sigmas=SIGMAS, tile_shape=(6, 12, 10), cache_bytes=probe.tile_bytes - 1)


def _two_class_volume():
    """A bright ball in a dark noisy background (classes 1 = background, 2 = ball)."""
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:16, :48, :48]
    ball = (z - 8) ** 2 * 4 + (y - 24) ** 2 + (x - 24) ** 2 < 14 ** 2
    img = (ball * 1.0 + rng.normal(0, 0.35, ball.shape)).astype(np.float32)
    return img, ball.astype(np.uint8) + 1


def _scribbles(truth):
    lab = np.zeros(truth.shape, np.uint8)
    lab[8, 22:26, 14:34] = truth[8, 22:26, 14:34]  # a stroke across the ball (both classes at its ends)
    lab[8, 3:6, 3:40] = 1
    lab[8, 20:28, 22:26] = 2
    return lab


def test_segmenter_learns_two_classes_and_all_axes():
    img, truth = _two_class_volume()
    seg = InstantSegmenter(img, (2.0, 1.0, 1.0), n_classes=2, sigmas=(0.7, 1.6, 3.5), n_jobs=1)
    info = seg.update(_scribbles(truth))
    assert info["labelled"] == int((_scribbles(truth) > 0).sum()) and info["fit_seconds"] < 5
    for axis, n in (("z", 16), ("y", 48), ("x", 48)):
        idx = n // 2
        p = seg.predict_plane(axis, idx)
        expected = tuple(s for a, s in enumerate(truth.shape) if a != "zyx".index(axis))
        assert p.shape == (2,) + expected and p.dtype == np.float32
        np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-5)
        t = np.take(truth, idx, axis="zyx".index(axis))
        acc = ((p.argmax(0) + 1) == t).mean()
        assert acc > 0.9, (axis, acc)
    vol = seg.predict_volume()
    assert vol.shape == (2,) + img.shape
    np.testing.assert_allclose(vol[:, :, 24, :], seg.predict_plane("y", 24), atol=1e-6)
    assert ((vol.argmax(0) + 1) == truth).mean() > 0.9


def test_plane_only_touches_its_tiles():
    img, truth = _two_class_volume()
    seg = InstantSegmenter(img, None, n_classes=2, sigmas=(0.7, 1.6), tile_shape=(4, 16, 16), n_jobs=1)
    seg.update(_scribbles(truth))
    before = seg.bank.stats["tiles_computed"]
    seg.predict_plane("z", 1)  # z tile 0: 3 x 3 tiles in y, x
    assert seg.bank.stats["tiles_computed"] - before <= 9
    assert len(seg.bank.tiles_of((1, slice(None), slice(None)))) == 9


def test_update_reuses_features_and_handles_erasing():
    img, truth = _two_class_volume()
    seg = InstantSegmenter(img, None, n_classes=2, sigmas=(0.7, 1.6), n_jobs=1)
    lab = _scribbles(truth)
    seg.update(lab)
    lab2 = lab.copy()
    lab2[10, 5:8, 5:8] = 1
    info = seg.update(lab2)
    assert info["new_voxels"] == 9 and info["labelled"] == int((lab2 > 0).sum())
    c = np.argwhere(lab2)
    info = seg.update(coords=c[: len(c) // 2 + 40], values=lab2[tuple(c[: len(c) // 2 + 40].T)])
    assert info["new_voxels"] == 0


def test_inplane_segmenter_uses_each_voxels_slice_plane():
    img, truth = _two_class_volume()
    seg = InstantSegmenter(img, None, n_classes=2, sigmas=(1.0, 2.0), mode="inplane", n_jobs=1)
    lab = _scribbles(truth)  # painted on z slice 8
    c = np.argwhere(lab)
    yc = np.argwhere(truth[:, 24:25, :] > 0)[::7] + [0, 24, 0]  # and some voxels of y slice 24
    yc = yc[yc[:, 0] != 8]  # (not those of the z slice: a voxel is labelled once)
    coords = np.concatenate([c, yc])
    axes = np.r_[np.zeros(len(c), int), np.ones(len(yc), int)]
    vals = np.r_[lab[tuple(c.T)], truth[tuple(yc.T)]]
    info = seg.update(coords=coords, values=vals, axes=axes)
    assert info["labelled"] == len(coords)
    np.testing.assert_array_equal(seg._X[np.searchsorted(seg._lin, np.ravel_multi_index(tuple(yc.T), img.shape))],
                                  seg.bank.features_at(yc, axes=1))
    # relabelled as seen from x slices: the same voxels, new features
    info = seg.update(coords=coords, values=vals, axes=np.where(axes == 1, 2, 0))
    assert info["new_voxels"] == len(yc)
    info = seg.update(coords=coords, values=vals, axes=np.array(["z"] * len(c) + ["x"] * len(yc)))
    assert info["new_voxels"] == 0
    p = seg.predict_plane("y", 24)
    f = np.squeeze(seg.bank.features((slice(None), 24, slice(None)), axis=1), 1)
    np.testing.assert_allclose(p, np.moveaxis(seg.classifier.predict_proba(f), -1, 0), atol=1e-6)
    assert ((p.argmax(0) + 1) == truth[:, 24]).mean() > 0.9
    with pytest.raises(InputError, match="axes go with coords"):
        seg.update(lab, axes=0)
    with pytest.raises(InputError, match="axes must be one axis"):
        seg.update(coords=coords, values=vals, axes=np.zeros(3, int))


def test_classifier_kinds_and_probabilities():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (300, 4)), rng.normal(3, 1, (300, 4))]).astype(np.float32)
    y = np.repeat([1, 3], 300)
    for kind in ("et", "rf", "hgb"):
        clf = InstantClassifier(3, kind=kind, n_estimators=20, n_jobs=1).fit(X, y)
        p = clf.predict_proba(X.reshape(20, 30, 4))
        assert p.shape == (20, 30, 3) and np.all(p[..., 1] == 0)  # class 2 unlabelled: probability 0
        assert (clf.predict(X) == y).mean() > 0.95
    clf = InstantClassifier(2, max_samples=100, n_jobs=1).fit(np.repeat(X, 2, 0), np.repeat(np.repeat([1, 2], 300), 2))
    assert clf.last_fit["samples"] <= 101


def test_bad_inputs_name_the_remedy():
    img, truth = _two_class_volume()
    with pytest.raises(InputError, match="3D"):
        InstantSegmenter(img[0])
    with pytest.raises(InputError, match="2D .* or 3D"):
        FeatureBank(np.zeros((2, 3, 4, 5)))
    with pytest.raises(InputError, match="spacing must be 3 positive"):
        FeatureBank(img, (1, 1))
    seg = InstantSegmenter(img, None, n_classes=2, sigmas=(0.7,), n_jobs=1)
    with pytest.raises(InputError, match="call update"):
        seg.predict_plane("z", 0)
    with pytest.raises(InputError, match="paint strokes of at least two classes"):
        seg.update(np.zeros(img.shape, np.uint8))
    one = np.zeros(img.shape, np.uint8)
    one[3, 3:9, 3:9] = 1
    with pytest.raises(InputError, match="only class 1 is labelled; paint a stroke of at least one other class"):
        seg.update(one)
    with pytest.raises(InputError, match="must match voxel for voxel"):
        seg.update(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(InputError, match="exceeds n_classes=2"):
        seg.update(np.where(one > 0, 3, _scribbles(truth)).astype(np.uint8))
    with pytest.raises(InputError, match=r"coords must be an \(N, 3\)"):
        seg.update(coords=np.zeros((4, 2), int), values=np.ones(4, int))
    with pytest.raises(InputError, match="outside the volume"):
        seg.update(coords=np.array([[0, 0, 0], [99, 0, 0]]), values=np.array([1, 2]))
    seg.update(_scribbles(truth))
    with pytest.raises(InputError, match="axis must be"):
        seg.predict_plane("w", 0)
    with pytest.raises(InputError, match="outside axis z"):
        seg.predict_plane("z", 16)
    clf = InstantClassifier(2, n_jobs=1)
    with pytest.raises(InputError, match=r"\(N, F\)"):
        clf.fit(np.zeros(5), np.ones(5))
    with pytest.raises(InputError, match="0 means unlabelled"):
        clf.fit(np.zeros((4, 2)), np.array([0, 1, 2, 1]))
    with pytest.raises(InputError, match="no labelled voxels"):
        clf.fit(np.zeros((0, 2)), np.zeros(0, int))
    clf.fit(np.arange(8.0).reshape(4, 2), np.array([1, 1, 2, 2]))
    with pytest.raises(InputError, match="same FeatureBank configuration"):
        clf.predict_proba(np.zeros((3, 5)))


@pytest.mark.parametrize("spacing", [(5.0, 1.0, 1.0), None])
def test_block_features_equal_the_tiles_and_whole_volume(noise, spacing):
    """A block computed directly (a plane whose tiles would not fit the cache) equals the tiled and
    whole-volume features, and does not fill the tile cache."""
    bank = FeatureBank(noise, spacing, sigmas=SIGMAS, tile_shape=(7, 12, 11), intensity=(0.0, 1.0), boundary="nearest")
    full = compute_features(noise, spacing, sigmas=SIGMAS, boundary="nearest")
    for block in [(9, slice(None), slice(None)), (slice(None), 0, slice(None)), (slice(2, 5), slice(None), 29)]:
        got = bank.block_features(block)
        sl = tuple(slice(b, b + 1) if isinstance(b, int) else b for b in block)
        assert got.shape == (bank.n_features,) + full[sl].shape[:3]
        np.testing.assert_allclose(np.moveaxis(got, 0, -1), full[sl], atol=1e-5, rtol=1e-5)
    assert bank.cached_tiles == 0


@pytest.mark.parametrize("kind", ["et", "rf"])
def test_a_partial_fit_grown_is_the_full_ensemble(kind):
    """fit(first_trees=k) then grow() in steps gives exactly the ensemble of one full fit (same seeds,
    same subsample), so a quick first look costs accuracy nothing once grown."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 12)).astype(np.float32)
    y = 1 + (X[:, 0] + 0.7 * rng.normal(size=3000) > 0) + (X[:, 1] > 1.2)
    full = InstantClassifier(3, kind=kind, n_estimators=20, max_samples=2000, seed=5).fit(X, y)
    part = InstantClassifier(3, kind=kind, n_estimators=20, max_samples=2000, seed=5).fit(X, y, first_trees=6)
    assert not part.complete and part.trees == 6
    quick = part.predict_proba(X)
    assert part.grow(6) is False and part.trees == 12
    assert part.grow() is True and part.complete and part.trees == 20
    np.testing.assert_array_equal(part.predict_proba(X), full.predict_proba(X))
    assert not np.array_equal(quick, full.predict_proba(X))
    assert full.complete and full.grow() is True  # a full fit has nothing to grow


@pytest.mark.parametrize("boundary", ["reflect", "nearest"])
@pytest.mark.parametrize("order", [0, 1, 2])
@pytest.mark.parametrize("n, keep", [(30, slice(0, 1)), (30, slice(29, 30)), (30, slice(11, 14)), (3, slice(1, 2)), (2, slice(0, 1)), (30, slice(4, 26))])
def test_filter_axis_equals_scipy(boundary, order, n, keep):
    """The direct weighted sums of a few kept planes (and the whole-axis path when more is kept)
    equal scipy's 1D filter followed by the crop, also where the kernel is longer than the axis
    (several reflections) and at both edges, along every axis (each sums in its own memory order)."""
    from al_annotator.instant.features import TRUNCATE, _filter_axis

    for axis in range(3):
        shape = [5, 6, 4]
        shape[axis] = n
        x = np.random.default_rng(n + order).normal(size=shape).astype(np.float32)
        crop = (slice(None),) * axis + (keep,)
        for sigma in (0.3, 1.6, 5.0):
            ref = ndimage.gaussian_filter1d(x, sigma, axis=axis, order=order, mode=boundary, truncate=TRUNCATE, output=np.float32)
            np.testing.assert_allclose(_filter_axis(x, sigma, order, axis, keep, boundary), ref[crop], atol=2e-5, rtol=1e-5)
        # 2D too (the in-plane features of a slice)
        x2 = x[0] if axis == 2 else x[..., 0]
        a2 = min(axis, 1)
        ref = ndimage.gaussian_filter1d(x2, 1.6, axis=a2, order=order, mode=boundary, truncate=TRUNCATE, output=np.float32)
        np.testing.assert_allclose(_filter_axis(x2, 1.6, order, a2, keep, boundary), ref[(slice(None),) * a2 + (keep,)],
                                   atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("boundary", ["reflect", "nearest"])
@pytest.mark.parametrize("spacing", [(5.0, 1.0, 1.0), (1.0, 2.0, 1.0), None])
def test_plane_features_equal_the_whole_volume_on_every_axis(noise, spacing, boundary):
    """Single planes (the live preview's unit of work) on each axis, at the edges and inside,
    computed axis by axis with the crop applied after each axis, equal the whole-volume reference."""
    bank = FeatureBank(noise, spacing, sigmas=(0.3, 1.0, 3.5, 10.0), intensity=(0.0, 1.0), boundary=boundary)
    full = compute_features(noise, spacing, sigmas=(0.3, 1.0, 3.5, 10.0), boundary=boundary)
    for axis, n in enumerate(noise.shape):
        for i in (0, n // 2, n - 1):
            block = [slice(None)] * 3
            block[axis] = i
            got = np.moveaxis(bank.block_features(tuple(block)), 0, -1)
            block[axis] = slice(i, i + 1)
            np.testing.assert_allclose(got, full[tuple(block)], atol=2e-5, rtol=2e-5)
