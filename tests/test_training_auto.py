"""Defaults that need no recipe: input_norm and lr "auto" are chosen from the data and reported."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from al_annotator.errors import InputError
from al_annotator.store import create_project
from al_annotator.store.models import current_model, version_dir
from al_annotator.training import TrainConfig, read_status
from al_annotator.training.config import LR_FRESH, LR_RESUMED
from al_annotator.training.data import SECTION_SHIFT_SLICE, choose_input_norm, section_shift
from al_annotator.types import SliceRef


def _stack(shifted: bool, shape=(16, 64, 64), seed=0):
    """A smooth two-phase texture (a calibrated scan); ``shifted``: every section brighter or darker
    than its neighbours by a fraction of the in-slice spread (0.1-0.3; the ssTEM stack: 0.2), as serial-section EM sections are."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=shape), (3, 3, 3))
    labels = np.where(field > 0, 2, 1).astype(np.uint8)
    image = 100.0 + 40.0 * (labels == 2) + rng.normal(0, 8, shape)
    if shifted:
        offsets = rng.choice([-1.0, 1.0], shape[0]) * rng.uniform(2, 4, shape[0])
        image = image + offsets[:, None, None]
    return np.clip(image, 0, 255).astype(np.uint8), labels


def _window(image):
    lo, hi = np.percentile(image, [0.5, 99.5])
    return float(lo), float(hi)


def test_the_rule_picks_slice_for_shifted_sections_and_window_without():
    flat, _ = _stack(False)
    shifted, _ = _stack(True)
    s_flat, _ = section_shift(flat, _window(flat))
    s_shift, axis = section_shift(shifted, _window(shifted))
    assert s_flat < SECTION_SHIFT_SLICE <= s_shift and axis == "z"
    norm, why = choose_input_norm(shifted, _window(shifted))
    assert norm == "slice" and "z slices" in why and f"{s_shift:.3f}" in why
    assert choose_input_norm(flat, _window(flat))[0] == "window"
    # a slow trend along an axis (a structure that comes and goes) is not a section shift
    trend = flat.astype(np.float64) + np.linspace(0, 40, flat.shape[2])[None, None, :]
    assert choose_input_norm(trend, _window(trend))[0] == "window"


def test_auto_is_the_default_and_explicit_values_override_it():
    from al_annotator.training.worker import _parser, config_from_args

    assert TrainConfig().lr == "auto" and TrainConfig().input_norm == "auto"
    assert config_from_args(_parser().parse_args(["p"])) == TrainConfig()
    cfg = config_from_args(_parser().parse_args(["p", "--lr", "2e-3", "--input-norm", "window"]))
    assert cfg.lr == 2e-3 and cfg.input_norm == "window"
    assert config_from_args(_parser().parse_args(["p", "--lr", "auto", "--input-norm", "auto"])) == TrainConfig()
    assert TrainConfig.from_json(TrainConfig().to_json()) == TrainConfig()
    with pytest.raises(InputError, match="lr"):
        TrainConfig(lr="fast")
    with pytest.raises(InputError, match="lr"):
        TrainConfig(lr=0.0)
    with pytest.raises(SystemExit):
        _parser().parse_args(["p", "--lr", "-1"])


torch = pytest.importorskip("torch")


@pytest.fixture
def shifted_project(tmp_path):
    image, labels = _stack(True, (16, 64, 64), seed=3)
    store = create_project(tmp_path / "p", image, classes=["matrix", "phase"])
    rng = np.random.default_rng(1)
    for z in (4, 11):
        ref = SliceRef("z", z)
        plane = labels[z].reshape(-1)
        for c in (1, 2):
            idx = np.flatnonzero(plane == c)
            store.paint(ref, rng.choice(idx, 300, replace=False), c)
    store.close()
    return tmp_path / "p"


def _cfg(**kw):
    return TrainConfig(device="cpu", steps_per_round=2, crop=64, axes="z", threads=1, predict_batch=4, holdout_fraction=0.0, **kw)


def _published(path):
    from al_annotator.store import open_project

    with open_project(path) as store:
        cur = current_model(store)
        return cur, json.loads((version_dir(store, cur["version"]) / "metrics.json").read_text())


def test_resolved_values_reach_the_published_metrics_and_the_status(shifted_project):
    from al_annotator.training.worker import Worker

    worker = Worker(str(shifted_project), _cfg(), rounds=1)
    try:
        assert worker.run() == 0
    finally:
        worker.close()
    cur, meta = _published(shifted_project)
    assert meta["input_norm"] == "slice" == cur["input_norm"]
    assert meta["lr"] == LR_FRESH and meta["metrics"]["lr"] == meta["lr"]
    auto = meta["metrics"]["auto"]
    assert auto["input_norm"]["value"] == "slice" and "in-slice spread" in auto["input_norm"]["why"]
    assert auto["lr"]["value"] == meta["lr"] and "fresh weights" in auto["lr"]["why"]
    status = read_status(shifted_project)
    assert status["auto"]["input_norm"]["value"] == "slice"
    assert status["config"]["input_norm"] == "slice" and status["config"]["lr"] == meta["lr"]

    # a second run resumes the model and keeps the normalisation it was trained with
    worker = Worker(str(shifted_project), _cfg(), rounds=1)
    try:
        worker.run()
    finally:
        worker.close()
    _, meta2 = _published(shifted_project)
    assert meta2["input_norm"] == "slice" and "kept from model" in meta2["metrics"]["auto"]["input_norm"]["why"]
    assert meta2["lr"] == LR_RESUMED and "fine-tuning model" in meta2["metrics"]["auto"]["lr"]["why"]


def test_explicit_values_are_used_as_given(shifted_project):
    from al_annotator.training.worker import Worker

    worker = Worker(str(shifted_project), _cfg(lr=2e-3, input_norm="window"), rounds=1)
    try:
        worker.run()
    finally:
        worker.close()
    _, meta = _published(shifted_project)
    assert meta["input_norm"] == "window" and meta["lr"] == 2e-3 and meta["metrics"]["auto"] == {}
