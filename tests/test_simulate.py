"""``al-annotator simulate``: the oracle loop, its JSON, the test split, the oracles, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from al_annotator.cli import main
from al_annotator.datasets import make_phantom
from al_annotator.simulate import (
    GroundTruth,
    ScribbleOracle,
    choose_axes,
    load_ground_truth,
    make_test_split,
    reveal,
)
from al_annotator.simulate.oracle import slice_rng
from al_annotator.store import create_project
from al_annotator.types import SliceRef

pytest.importorskip("torch")

ROUND_KEYS = {"round", "annotated_slices", "annotated_voxels", "annotated_fraction", "dice_per_class", "mean_dice", "miou",
              "train_seconds", "picked"}
FAST = ["--crop", "48", "--batch-size", "4", "--threads", "1"]


@pytest.fixture(scope="module")
def phantom_npz(tmp_path_factory):
    p = make_phantom((16, 48, 48), seed=1)
    path = tmp_path_factory.mktemp("sim") / "phantom.npz"
    np.savez(path, image=p.image, labels=p.labels, class_names=np.array(p.classes))
    return path, p


@pytest.fixture(scope="module")
def slice_run(phantom_npz, tmp_path_factory):
    """One CLI run: two strategies, slice oracle along z, full supervision and the RF peer.

    20 steps per round: every curve rose by >= 0.13 Dice over 3 rounds for phantom seeds 1, 2 and
    model seeds 0, 1, 2 (12 steps did not reliably)."""
    path, _ = phantom_npz
    out = tmp_path_factory.mktemp("sim_out")
    rc = main(["simulate", "--volume", str(path), "--strategy", "entropy,random", "--budget", "3", "--per-round", "1",
               "--steps-per-round", "20", "--full-steps", "20", "--axes", "z", "--peer", "--out", str(out), *FAST])
    assert rc == 0
    return json.loads((out / "results.json").read_text()), out


def test_results_schema(slice_run):
    res, out = slice_run
    assert (out / "learning_curves.png").stat().st_size > 10_000
    assert set(res) >= {"config", "dataset", "full_supervision", "runs", "peer", "summary"}
    assert res["complete"] is True
    assert res["dataset"]["classes"] == ["background", "bone", "implant", "degradation"]
    assert res["dataset"]["test"] == {**res["dataset"]["test"], "axis": "z", "every": 5, "indices": [2, 7, 12]}
    assert [(r["strategy"], r["seed"]) for r in res["runs"]] == [("entropy", 0), ("random", 0)]
    for run in res["runs"]:
        assert [r["annotated_slices"] for r in run["rounds"]] == [1, 2, 3]
        for r in run["rounds"]:
            assert ROUND_KEYS <= set(r)
            assert len(r["dice_per_class"]) == 4 and 0 <= r["mean_dice"] <= 1 and 0 <= r["miou"] <= 1
            assert r["annotated_voxels"] == r["annotated_slices"] * 48 * 48  # slice oracle, z slices: every voxel
            assert r["annotated_fraction"] == pytest.approx(r["annotated_voxels"] / (16 * 48 * 48))
        picked = [tuple(p) for r in run["rounds"] for p in r["picked"]]
        assert len(set(picked)) == 3
    full = res["full_supervision"]
    assert full["steps"] == 20 and full["annotated_slices"] == 16 - 3 and 0 < full["mean_dice"] <= 1
    (peer,) = res["peer"]
    assert peer["picks_from"] == "random" and peer["same_picks_as_network_run"] is True
    assert [r["annotated_voxels"] for r in peer["rounds"]] == [r["annotated_voxels"] for r in res["runs"][1]["rounds"]]
    summary = res["summary"]
    assert set(summary) == {"entropy", "random", "peer:random_forest(random)"}
    for s in summary.values():
        assert {"budget_to_90pct", "budget_to_95pct", "fraction_voxels_at_95pct", "curve"} <= set(s)


def test_revealed_voxels_never_in_the_test_set(slice_run):
    res, _ = slice_run
    test = set(res["dataset"]["test"]["indices"])
    for run in res["runs"] + res["peer"]:
        assert all(axis == "z" and index not in test for r in run["rounds"] for axis, index in r["picked"])
    assert all(run["revealed_test_voxels"] == 0 for run in res["runs"])


def test_learning_curve_rises(slice_run):
    res, _ = slice_run
    for run in res["runs"]:
        dice = [r["mean_dice"] for r in run["rounds"]]
        assert dice[-1] > dice[0] + 0.1, (run["strategy"], dice)


def test_scribble_oracle_reveals_a_strict_subset_and_never_test_voxels(phantom_npz):
    _, p = phantom_npz
    store = create_project(None, p.image, classes=p.classes)
    split = make_test_split(p.image.shape, "z", 5)
    test_mask = split.mask(p.image.shape)
    revealed = np.zeros(p.image.shape, bool)
    oracle = ScribbleOracle(0.05)
    ref = SliceRef("y", 24)  # crosses the test z slices 2, 7, 12
    mask = reveal(store, oracle, ref, p.labels, test_mask, revealed, seed=0)
    labels = store.read_slice(ref, "labels")
    gt = p.labels[ref.selection()]
    assert 0 < mask.sum() < mask.size  # strict subset
    assert np.array_equal(labels > 0, mask) and np.array_equal(labels[mask], gt[mask])
    assert int(mask.sum()) == int(revealed.sum()) and not (revealed & test_mask).any()
    assert 0.01 < mask.sum() / (~test_mask[ref.selection()]).sum() < 0.2
    # every class present on the slice (outside the test rows) gets some strokes
    assert set(np.unique(gt[~test_mask[ref.selection()]])) == set(np.unique(labels[mask]))
    assert store.slice_state(ref).state == "annotated"
    # same seed and slice: the same strokes (the peer relies on it)
    again = oracle.mask(gt, ~test_mask[ref.selection()], slice_rng(0, ref))
    assert np.array_equal(again, mask)


def test_scribble_run_on_three_axes_keeps_test_voxels_hidden(phantom_npz, tmp_path):
    path, _ = phantom_npz
    out = tmp_path / "o"
    rc = main(["simulate", "--volume", str(path), "--strategy", "coreset", "--budget", "4", "--per-round", "2", "--oracle", "scribble",
               "--steps-per-round", "2", "--no-full", "--no-plot", "--input-norm", "slice", "--lr", "3e-3", "--out", str(out), *FAST])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["axes"] == "zyx" and res["full_supervision"] is None
    assert res["config"]["train_config"]["input_norm"] == "slice" and res["config"]["train_config"]["lr"] == 3e-3
    (run,) = res["runs"]
    assert run["revealed_test_voxels"] == 0
    last = run["rounds"][-1]
    assert last["annotated_slices"] == 4 and 0 < last["annotated_voxels"] < 4 * 16 * 48 * 0.2


def test_axes_and_split_choice():
    assert choose_axes((30, 512, 512), (50.0, 4.0, 4.0)) == "z"
    assert choose_axes((64, 128, 128), (1.0, 1.0, 1.0)) == "zyx"
    assert choose_axes((30, 512, 512)) == "z"
    assert make_test_split((30, 8, 8), "z", 5).indices == (2, 7, 12, 17, 22, 27)


def test_labels_offset_for_zero_based_classes(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (6, 16, 16)).astype(np.uint8)
    lab = rng.integers(0, 3, (6, 16, 16)).astype(np.uint8)  # 0 is a real class, as in the ssTEM npz
    path = tmp_path / "em.npz"
    np.savez(path, image=img, labels=lab, class_names=np.array(["other", "membrane", "mitochondria"]),
             voxel_size_zyx_nm=np.array([50.0, 4.0, 4.0]))
    gt = load_ground_truth(path, labels_offset=1)
    assert gt.classes == ("other", "membrane", "mitochondria") and gt.spacing == (50.0, 4.0, 4.0)
    assert int(gt.labels.min()) == 1 and int(gt.labels.max()) == 3
    assert np.array_equal(gt.labels, lab + 1)


@pytest.mark.parametrize(
    "make, extra, message",
    [
        (lambda d: {"image": d["image"], "labels": d["labels"][:, :-1]}, [], "must match"),
        (lambda d: {"image": d["image"], "labels": d["labels"] - 1}, [], "--labels-offset 1"),
        (lambda d: {"image": d["image"][0], "labels": d["labels"][0]}, [], "3D"),
        (lambda d: {"image": d["image"], "labels": d["labels"]}, ["--labels-key", "gt"], "no array 'gt'"),
        (lambda d: {"image": d["image"], "labels": d["labels"]}, ["--strategy", "entropy,nonsense"], "unknown strategy"),
        (lambda d: {"image": d["image"], "labels": d["labels"]}, ["--strategy", "bald", "--mc-samples", "0"], "MC-dropout"),
        (lambda d: {"image": d["image"], "labels": d["labels"]}, ["--oracle", "scribble", "--scribble-fraction", "2"], "scribble-fraction"),
        (lambda d: {"image": d["image"], "labels": d["labels"]}, ["--test-every", "1"], "--test-every"),
        (lambda d: {"image": d["image"], "labels": d["labels"] + 4}, ["--classes", "a,b,c,d"], "only 4 classes"),
        (lambda d: {"image": d["image"], "labels": d["labels"]}, ["--input-norm", "volume"], "--input-norm"),
    ],
)
def test_bad_inputs_give_clear_errors(tmp_path, capsys, phantom_npz, make, extra, message):
    _, p = phantom_npz
    path = tmp_path / "bad.npz"
    d = make({"image": p.image, "labels": p.labels.astype(np.int16)})
    np.savez(path, **d, class_names=np.array(p.classes))
    rc = main(["simulate", "--volume", str(path), "--out", str(tmp_path / "o"), "--axes", "z", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and message in err, err


def test_missing_files_and_needed_labels(tmp_path, capsys):
    assert main(["simulate", "--volume", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    np.save(tmp_path / "v.npy", np.zeros((4, 8, 8), np.uint8))
    assert main(["simulate", "--volume", str(tmp_path / "v.npy"), "--out", str(tmp_path / "o")]) == 2
    assert "--labels is needed" in capsys.readouterr().err
    with pytest.raises(Exception, match="complete ground truth"):
        GroundTruth.from_arrays(np.zeros((4, 8, 8)), np.zeros((4, 8, 8), np.uint8))
