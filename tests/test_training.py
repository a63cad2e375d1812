"""The learning engine: a small model learns from strokes; the worker process picks up labels,
publishes versions, survives SIGKILL and resumes."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest

from al_annotator.datasets import make_phantom
from al_annotator.store import create_project, open_project
from al_annotator.store.models import current_model, list_model_versions, read_scores
from al_annotator.training import TrainConfig, TrainerClient, read_status
from al_annotator.types import SliceRef

torch = pytest.importorskip("torch")


def paint_strokes(store, labels_gt, ref: SliceRef, per_class: int, seed: int) -> None:
    """Scribbles: a sparse random subset of each class's voxels on one slice, as strokes would give."""
    rng = np.random.default_rng(seed)
    gt = labels_gt[ref.selection()].reshape(-1)
    for c in np.unique(gt):
        idx = np.flatnonzero(gt == c)
        store.paint(ref, rng.choice(idx, min(per_class, idx.size), replace=False), int(c))


def mean_dice(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, n_classes: int) -> float:
    ds = []
    for c in range(1, n_classes + 1):
        t, p = gt[mask] == c, pred[mask] == c
        if t.sum():
            ds.append(2 * (t & p).sum() / (t.sum() + p.sum()))
    return float(np.mean(ds))


@pytest.fixture(scope="module")
def phantom():
    return make_phantom((32, 48, 48), seed=3)


def test_a_small_model_learns_from_a_few_strokes(phantom):
    from al_annotator.models import create_model
    from al_annotator.training.data import collect_labelled_slices
    from al_annotator.training.fit import train_round
    from al_annotator.training.predict import predict_volume

    torch.manual_seed(0)
    store = create_project(None, phantom.image, classes=phantom.classes)
    for z in (6, 16, 26):
        paint_strokes(store, phantom.labels, SliceRef("z", z), per_class=150, seed=z)
    revealed = np.asarray(store.labels[...]) > 0
    held_out = ~revealed
    model = create_model("hrnet_w18_small", n_classes=4)
    before = predict_volume(store, model, axes="z").probabilities.argmax(0) + 1
    dice_before = mean_dice(before, phantom.labels, held_out, 4)
    samples = collect_labelled_slices(store)
    result, _ = train_round(model, samples, TrainConfig(steps_per_round=60, crop=48, batch_size=4, max_seconds_per_round=120),
                            device=torch.device("cpu"))
    after = predict_volume(store, model, axes="z").probabilities.argmax(0) + 1
    dice_after = mean_dice(after, phantom.labels, held_out, 4)
    print(f"held-out mean Dice before {dice_before:.3f} after {dice_after:.3f}")
    assert result.losses[-1] < result.losses[0]
    assert dice_after > dice_before + 0.2, (dice_before, dice_after)
    assert dice_after > 0.5, dice_after


def test_soft_vote_averages_axes(phantom):
    from al_annotator.models import create_model
    from al_annotator.training.predict import predict_volume

    store = create_project(None, phantom.image[:16, :32, :32], classes=phantom.classes)
    torch.manual_seed(0)
    model = create_model("hrnet_w18_small", n_classes=4).eval()
    per_axis = [np.asarray(predict_volume(store, model, axes=a).probabilities) for a in "zyx"]
    voted = predict_volume(store, model, axes="zyx")
    np.testing.assert_allclose(voted.probabilities, np.mean(per_axis, axis=0), atol=1e-5)
    np.testing.assert_allclose(voted.probabilities.sum(0), 1.0, atol=1e-4)
    assert len(voted.scores) == 16 + 32 + 32
    assert set(voted.scores.uncertainty) >= {"entropy", "margin", "least_confidence"}
    assert voted.scores.embeddings.shape[0] == len(voted.scores)


def _wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_worker_picks_up_labels_survives_sigkill_and_resumes(tmp_path, phantom):
    path = tmp_path / "proj"
    store = create_project(path, phantom.image, classes=phantom.classes)
    paint_strokes(store, phantom.labels, SliceRef("z", 10), 100, 1)
    store.set_slice_state(SliceRef("z", 10), "annotated")
    client = TrainerClient(path, nice=0)
    client.start(watch=True, steps=8, crop=48, axes="zx", threads=1, poll=0.2, continuous=False)
    try:
        first = client.wait_for_version(1, timeout=240)
        assert first["trained_on_seq"] >= store.log.last_seq
        scores = read_scores(store)
        assert len(scores) == 32 + 48 and scores.embeddings.shape[0] == len(scores)
        status = client.status()
        assert status["alive"] and status["device"] == "cpu" and status["model_version"] == 1
        # a new stroke -> a new model version with new scores
        paint_strokes(store, phantom.labels, SliceRef("x", 20), 100, 2)
        second = client.wait_for_version(2, timeout=240)
        assert second["trained_on_seq"] > first["trained_on_seq"]
        # kill it mid-round: paint, wait until it is training, SIGKILL
        paint_strokes(store, phantom.labels, SliceRef("y", 30), 100, 3)
        _wait(lambda: read_status(path).get("state") in ("training", "predicting") and read_status(path).get("round") == 3, 120, "round 3")
        os.kill(client.process.pid, signal.SIGKILL)
        client.process.wait(timeout=30)
    finally:
        if client.process.poll() is None:
            client.process.kill()
    # the store is consistent: version 2 is current, labels equal the log, nothing half-published
    again = open_project(path)
    assert current_model(again)["version"] == 2
    assert [v["version"] for v in list_model_versions(again)] == [1, 2]
    assert again.check() == []
    # restart: it cleans the unpublished round, resumes from v2's checkpoint and trains on the new labels
    client2 = TrainerClient(path, nice=0)
    client2.start(watch=True, steps=8, crop=48, axes="z", threads=1, poll=0.2, continuous=False)
    try:
        third = client2.wait_for_version(3, timeout=240)
        assert third["trained_on_seq"] == again.log.last_seq
        status = client2.status()
        assert status["resumed_from"] == 2
        assert client2.stop(timeout=60)
    finally:
        if client2.process.poll() is None:
            client2.process.kill()
    assert read_status(path)["state"] == "stopped"
    assert not any(p.name.endswith(".partial") for p in (path / "models").iterdir())
    history = json.loads((path / "models" / "index.json").read_text())["versions"]
    assert [h["version"] for h in history] == [1, 2, 3]


def test_worker_without_labels_says_so(tmp_path, phantom):
    from al_annotator.training.worker import Worker

    create_project(tmp_path / "p", phantom.image[:8], classes=phantom.classes).close()
    assert Worker(str(tmp_path / "p"), TrainConfig(), rounds=1).run() == 2
    assert "no labelled slices" in read_status(tmp_path / "p")["error"]


@pytest.mark.gpu
def test_a_round_on_cuda_with_amp(phantom):
    """The CUDA path for real: bf16 autocast training and prediction on the GPU (skipped without one)."""
    from al_annotator.models import create_model
    from al_annotator.training.data import collect_labelled_slices
    from al_annotator.training.fit import train_round
    from al_annotator.training.predict import predict_volume

    dev = torch.device("cuda")
    store = create_project(None, phantom.image, classes=phantom.classes)
    for z in (6, 16, 26):
        paint_strokes(store, phantom.labels, SliceRef("z", z), per_class=150, seed=z)
    model = create_model("hrnet_w18_small", n_classes=4)
    result, _ = train_round(model, collect_labelled_slices(store), TrainConfig(steps_per_round=40, crop=48, batch_size=4),
                            device=dev)
    assert next(model.parameters()).is_cuda and result.losses[-1] < result.losses[0]
    pred = predict_volume(store, model, axes="zyx", device=dev)
    assert np.isfinite(np.asarray(pred.probabilities)).all()


def test_per_slice_input_norm():
    from al_annotator.errors import InputError
    from al_annotator.training.data import SLICE_MEAN, SLICE_STD, normalise

    rng = np.random.default_rng(0)
    block = rng.normal(100, 20, (3, 32, 32)).astype(np.float32)
    block[1] += 40  # a brighter section
    block[2] = 90.0  # a flat slice: not blown up
    win = normalise(block, (0.0, 255.0))
    assert win.dtype == np.float32 and abs(win[1].mean() - win[0].mean()) > 0.1
    out = normalise(block, (0.0, 255.0), "slice")
    assert out.dtype == np.float32 and out.shape == block.shape
    for k in (0, 1):
        assert abs(out[k].mean() - SLICE_MEAN) < 1e-4 and abs(out[k].std() - SLICE_STD) < 1e-3
    assert np.allclose(out[2], SLICE_MEAN)
    # per slice: a 2D slice normalises exactly as it does inside a block
    assert np.allclose(normalise(block[1], (0.0, 255.0), "slice"), out[1], atol=1e-6)
    with pytest.raises(ValueError):
        normalise(block, (0.0, 255.0), "volume")
    with pytest.raises(InputError, match="input_norm"):
        TrainConfig(input_norm="volume")
    assert TrainConfig().input_norm == "auto" and TrainConfig.from_json(TrainConfig(input_norm="slice").to_json()).input_norm == "slice"


def test_per_slice_input_norm_trains_and_predicts(phantom):
    from al_annotator.models import create_model
    from al_annotator.training.data import collect_labelled_slices
    from al_annotator.training.fit import train_round
    from al_annotator.training.predict import predict_volume

    store = create_project(None, phantom.image, classes=phantom.classes)
    paint_strokes(store, phantom.labels, SliceRef("z", 16), per_class=100, seed=1)
    samples = collect_labelled_slices(store, "slice")
    assert abs(float(samples[0].image.mean()) - 0.45) < 1e-3
    cfg = TrainConfig(steps_per_round=3, crop=48, batch_size=2, input_norm="slice")
    outs = []
    for _ in range(2):  # deterministic under the seed
        torch.manual_seed(0)
        model = create_model("hrnet_w18_small", n_classes=4)
        result, _ = train_round(model, samples, cfg, device=torch.device("cpu"), seed=5)
        pred = predict_volume(store, model, axes="z", input_norm="slice")
        outs.append((result.losses, np.asarray(pred.probabilities)))
    assert outs[0][0] == outs[1][0] and np.array_equal(outs[0][1], outs[1][1])


def test_worker_flags_for_the_recipe():
    from al_annotator.training.worker import _parser, config_from_args

    cfg = config_from_args(_parser().parse_args(["proj", "--lr", "3e-3", "--input-norm", "slice"]))
    assert cfg.lr == 3e-3 and cfg.input_norm == "slice"
    assert config_from_args(_parser().parse_args(["proj"])) == TrainConfig()
