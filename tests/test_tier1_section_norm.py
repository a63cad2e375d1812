"""Tier 1's per-section standardisation (``FeatureBank(section_norm=...)``, issue #11): the rule fires on a
stack whose sections are imaged at different brightness and not on the phantom; tiles equal the whole
volume; from two labelled sections the classifier then carries to sections of other brightness."""

from __future__ import annotations

import numpy as np
import pytest

from al_annotator.datasets import make_phantom
from al_annotator.errors import InputError
from al_annotator.instant import FeatureBank, InstantSegmenter, compute_features
from al_annotator.instant.features import choose_section_norm, section_statistics


def _sections(seed: int = 0, shape=(12, 48, 48)):
    """Two classes (dark discs on a brighter background, noise) in sections whose brightness and contrast
    jump from one section to the next, as serial-section EM's do; returns (image, labels 1..2)."""
    rng = np.random.default_rng(seed)
    Z, Y, X = shape
    yy, xx = np.mgrid[:Y, :X]
    labels = np.ones(shape, np.uint8)
    for z in range(Z):
        for _ in range(6):
            cy, cx, r = rng.integers(6, Y - 6), rng.integers(6, X - 6), rng.integers(3, 6)
            labels[z][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 2
    base = np.where(labels == 2, 0.0, 1.0) + rng.normal(0, 0.12, shape)
    gain = 1.0 + 0.3 * rng.standard_normal(Z)[:, None, None]
    offset = 1.5 * np.where(np.arange(Z) % 2, 1.0, -1.0)[:, None, None] + 0.2 * rng.standard_normal(Z)[:, None, None]
    return (100 + 40 * (gain * base + offset)).astype(np.float32), labels


def test_rule_fires_on_sections_imaged_differently_and_not_on_the_phantom():
    img, _ = _sections()
    axis, why = choose_section_norm(img)
    assert axis == 0 and "z slices differ" in why
    bank = FeatureBank(img, (10.0, 1.0, 1.0), section_norm="auto", sigmas=(1.0, 2.0))
    assert bank.section_axis == 0 and bank.describe()["section_norm"] == 0
    ph = make_phantom((32, 64, 64), seed=0).image  # the network's rule too: window there
    assert choose_section_norm(ph)[0] is None
    assert FeatureBank(ph, None, section_norm="auto", sigmas=(1.0, 2.0)).section_axis is None
    # the same phantom with every z slice re-imaged at another brightness: now it fires
    shifted = ph + np.float32(0.5 * ph.std()) * np.where(np.arange(ph.shape[0]) % 2, 1, -1)[:, None, None].astype(np.float32)
    assert choose_section_norm(shifted)[0] == 0
    assert FeatureBank(img, section_norm=None, sigmas=(1.0,)).section_axis is None
    with pytest.raises(InputError, match="section_norm must be"):
        FeatureBank(img, section_norm="z", sigmas=(1.0,))


@pytest.mark.parametrize("spacing, mode", [((10.0, 1.0, 1.0), "3d"), (None, "3d"), (None, "inplane")])
def test_tiles_equal_the_whole_volume_standardised_per_section(spacing, mode):
    img, _ = _sections(1, (10, 30, 26))
    bank = FeatureBank(img, spacing, sigmas=(1.0, 2.0), mode=mode, tile_shape=(3, 11, 13), boundary="nearest", section_norm=0)
    full = compute_features(img, spacing, sigmas=(1.0, 2.0), mode=mode, boundary="nearest", section_norm=0)
    np.testing.assert_allclose(bank.features((slice(None),) * 3), full, atol=2e-4, rtol=1e-4)
    mean, std = section_statistics(img, 0)
    np.testing.assert_allclose(mean, img.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(std, img.std(axis=(1, 2)), rtol=1e-4)
    # the standardisation changes the features (a bank without it differs)
    assert not np.allclose(FeatureBank(img, spacing, sigmas=(1.0, 2.0), mode=mode).features((4, slice(None), slice(None))),
                           bank.features((4, slice(None), slice(None))), atol=1e-2)


def test_two_labelled_sections_carry_to_sections_of_other_brightness():
    """Strokes on two sections (both of the darker kind); test on the others: with the auto rule the
    classifier carries over, with one intensity mapping for the volume it does not."""
    img, labels = _sections(2)
    lab = np.zeros_like(labels)
    for z in (2, 4):  # even sections: the same brightness group
        lab[z] = labels[z]
    test = [z for z in range(img.shape[0]) if z % 2 == 1]

    def accuracy(section_norm):
        seg = InstantSegmenter(img, (10.0, 1.0, 1.0), n_classes=2, sigmas=(1.0, 2.0), section_norm=section_norm, n_jobs=1)
        seg.update(lab)
        return float(np.mean([((seg.predict_plane("z", z).argmax(0) + 1) == labels[z]).mean() for z in test]))

    auto, off = accuracy("auto"), accuracy(None)
    assert auto > 0.9, auto
    assert auto > off + 0.1, (auto, off)
