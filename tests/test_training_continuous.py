"""Tier 2 trains on while the expert paints: held-out voxels, continuation rounds, convergence."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from al_annotator.datasets import make_phantom
from al_annotator.store import create_project
from al_annotator.store.models import list_model_versions
from al_annotator.training import TrainConfig, read_status
from al_annotator.training.data import LabelledSlice
from al_annotator.training.holdout import holdout_mask, split_voxels
from al_annotator.types import SliceRef


def _sample(ref, target):
    return LabelledSlice(ref, np.zeros(target.shape, np.float32), target, "in_progress")


def test_holdout_blocks_are_stable_sized_and_per_slice():
    a = holdout_mask(SliceRef("z", 3), (256, 256), fraction=0.1)
    assert np.array_equal(a, holdout_mask(SliceRef("z", 3), (256, 256), fraction=0.1))  # stable
    assert not np.array_equal(a, holdout_mask(SliceRef("z", 4), (256, 256), fraction=0.1))  # per slice
    assert 0.05 < a.mean() < 0.15
    blocks = a[::16, ::16]
    assert np.array_equal(np.repeat(np.repeat(blocks, 16, 0), 16, 1), a)  # whole 16x16 blocks
    assert not holdout_mask(SliceRef("z", 3), (64, 64), fraction=0.0).any()
    with pytest.raises(ValueError, match="fraction"):
        holdout_mask(SliceRef("z", 3), (8, 8), fraction=1.0)


def test_split_voxels_partitions_the_labels():
    rng = np.random.default_rng(0)
    target = np.full((128, 128), -1, np.int64)
    idx = rng.choice(target.size, 6000, replace=False)
    target.flat[idx] = rng.integers(0, 3, idx.size)
    train, held = split_voxels([_sample(SliceRef("y", 2), target)])
    assert len(train) == len(held) == 1
    t, h = train[0].target, held[0].target
    assert not ((t >= 0) & (h >= 0)).any()  # disjoint
    assert np.array_equal(np.where(t >= 0, t, h), target)  # together: every label, unchanged
    assert 0.03 < (h >= 0).sum() / (target >= 0).sum() < 0.2


def test_too_few_or_single_class_held_out_voxels_hold_nothing_out():
    target = np.full((64, 64), -1, np.int64)
    target[10, 10:20] = 1  # ten voxels
    samples = [_sample(SliceRef("z", 0), target)]
    train, held = split_voxels(samples)
    assert held == [] and train[0] is samples[0]
    one_class = np.zeros((256, 256), np.int64)
    train, held = split_voxels([_sample(SliceRef("z", 0), one_class)])
    assert held == []


torch = pytest.importorskip("torch")


def _paint(store, gt, ref, per_class, seed):
    rng = np.random.default_rng(seed)
    plane = gt[ref.selection()].reshape(-1)
    for c in np.unique(plane):
        idx = np.flatnonzero(plane == c)
        store.paint(ref, rng.choice(idx, min(per_class, idx.size), replace=False), int(c))


@pytest.fixture
def worker_project(tmp_path):
    ph = make_phantom((16, 64, 64), seed=5)
    store = create_project(tmp_path / "p", ph.image, classes=ph.classes)
    _paint(store, ph.labels, SliceRef("z", 8), 400, 1)
    _paint(store, ph.labels, SliceRef("x", 30), 400, 2)
    store.close()
    return tmp_path / "p", ph


def _cfg(**kw):
    return TrainConfig(device="cpu", steps_per_round=3, crop=64, axes="z", threads=1, predict_batch=4, holdout_fraction=0.3, **kw)


def test_a_continuation_round_publishes_only_when_the_held_out_score_improves(worker_project):
    from al_annotator.training.worker import Worker

    path, ph = worker_project
    worker = Worker(str(path), _cfg(min_improvement=0.0), watch=True)
    try:
        device = torch.device("cpu")
        worker._load_model(device)
        first = worker.run_round(device)
        assert first["published"] and first["metrics"]["heldout_voxels"] > 0
        assert first["metrics"]["heldout_dice"] is not None and first["metrics"]["continuation"] is False
        seq = worker.store.log.last_seq
        worker._best = 2.0  # no Dice beats this: the round trains, and publishes nothing
        more = worker.run_round(device, seq, continuation=True)
        assert more == {"published": False, "heldout_dice": more["heldout_dice"]} and more["heldout_dice"] is not None
        assert [v["version"] for v in list_model_versions(worker.store)] == [1]
        assert read_status(path)["state"] == "training" and read_status(path)["continuing"] is True
        worker._best = -1.0  # anything beats this: published, marked a continuation
        better = worker.run_round(device, seq, continuation=True)
        assert better["published"] and better["metrics"]["continuation"] is True and better["trained_on_seq"] == seq
        assert worker._best == better["metrics"]["heldout_dice"]
        # a new stroke interrupts a continuation at once: fresh labels beat more of the same
        from al_annotator.store import open_project

        painter = open_project(path, author="ben")
        _paint(painter, ph.labels, SliceRef("y", 30), 50, 3)
        painter.close()
        assert worker.run_round(device, seq, continuation=True) == {"interrupted": True}
    finally:
        worker.close()


def test_watch_mode_trains_on_then_says_converged(worker_project):
    """Without new labels the trainer keeps training; ``patience`` rounds without a gain end it."""
    from al_annotator.training.worker import Worker

    path, _ = worker_project
    worker = Worker(str(path), _cfg(min_improvement=1.0, patience=2), watch=True, poll=0.05, debounce=0.0)
    rounds_seen = []
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            st = read_status(path)
            rounds_seen.append((st.get("state"), st.get("round"), st.get("continuing")))
            if st.get("state") == "converged":
                break
            time.sleep(0.05)
        st = read_status(path)
        assert st["state"] == "converged" and st["rounds_without_gain"] == 2, st
        assert [v["version"] for v in list_model_versions(worker.store)] == [1]  # no gain of 1.0 Dice: nothing more published
        assert any(s == "training" and c for s, _, c in rounds_seen)  # it trained on between
    finally:
        (path / "trainer" / "stop").write_text("")
        thread.join(60)
        worker.close()
    assert read_status(path)["state"] == "stopped"


def test_strokes_are_held_out_whole_and_large_regions_in_blocks():
    from al_annotator.training.holdout import heldout_voxels

    labels = np.zeros((256, 256), np.uint8)
    for k in range(40):  # forty separate scribbles, two classes
        labels[4 + 6 * k, 10:90] = 1 + k % 2
    labels[:, 150:] = 3  # one region annotated whole (26k voxels)
    held = heldout_voxels(SliceRef("z", 7), labels, fraction=0.3)
    assert not (held & (labels == 0)).any()
    strokes = [held[4 + 6 * k, 10:90] for k in range(40)]
    assert all(s.all() or not s.any() for s in strokes)  # whole strokes, never part of one
    n_held = sum(bool(s.all()) for s in strokes)
    assert 4 <= n_held <= 24
    region = held[:, 150:]
    assert 0.1 < region.mean() < 0.5 and not region.all()  # blocks of the large region
    again = heldout_voxels(SliceRef("z", 7), labels, fraction=0.3)
    assert np.array_equal(held, again)  # stable
