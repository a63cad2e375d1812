"""``al-annotator simulate --tiers``: tier 1 + tier 2 each round, the served choice by held-out Dice,
the seconds budget converted with a fixed step rate, annotation cost in strokes, progress lines."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from al_annotator.cli import main
from al_annotator.core.values import DEEP_ALONE_MARGIN
from al_annotator.simulate import GroundTruth, ScribbleOracle, SimulationConfig, run_simulation
from al_annotator.simulate.oracle import slice_rng
from al_annotator.simulate.tiers import choose_served
from al_annotator.types import SliceRef

pytest.importorskip("torch")
pytest.importorskip("sklearn")

#: Tier 1 reduced to a single depth-1 tree: it can name at most 2 of the 4 classes, so a network
#: that has trained long enough scores higher on the held-out voxels (a case where tier 2 wins).
STUMP = {"max_depth": 1, "n_estimators": 1}
TIMING = re.compile(r"seconds$")


@pytest.fixture(scope="module")
def stripes():
    """4 classes in 12-voxel stripes along x, told apart by intensity (plus noise): easy for both tiers."""
    rng = np.random.default_rng(0)
    x = np.broadcast_to(np.arange(48), (16, 48, 48))
    lab = (1 + (x // 12) % 4).astype(np.uint8)
    img = (100.0 * (lab - 1) + rng.normal(0, 20, lab.shape)).astype(np.float32)
    return GroundTruth.from_arrays(img, lab, ("a", "b", "c", "d"))


def _cfg(**kw) -> SimulationConfig:
    base = dict(strategies=("random",), budget=2, per_round=1, axes="z", tiers=True, full_supervision=False, crop=48, batch_size=4,
                threads=1, lr=3e-3, val_every=0)
    return SimulationConfig(**(base | kw))


def _strip_timing(obj):
    if isinstance(obj, dict):
        return {k: _strip_timing(v) for k, v in obj.items() if not TIMING.search(k) or k.startswith(("annotation", "train_budget"))}
    if isinstance(obj, list):
        return [_strip_timing(v) for v in obj]
    return obj


def _check_served(rounds):
    for row in rounds:
        t = row["tiers"]
        inst, deep = t["instant"]["heldout_dice"], t["deep"]["score"]
        blend = t.get("blend", {}).get("heldout_dice")
        want = "deep" if deep is not None and (inst is None or deep > inst + DEEP_ALONE_MARGIN) else "instant"
        if blend is not None and inst is not None and deep is not None:
            want = ("deep" if deep > inst and deep > blend + DEEP_ALONE_MARGIN else
                    "blend" if blend > inst or deep > inst else "instant")
        if t["instant"].get("deep_features") and inst is not None:
            want = "instant"  # tier 1 with the network's features serves (simulate.run.serve_rule)
        assert t["served"]["tier"] == want, t
        assert t["served"]["mean_dice"] == t[want]["mean_dice"]
        assert t["served"]["dice_per_class"] == t[want]["dice_per_class"]
        assert t["deep"]["mean_dice"] == row["mean_dice"]  # tier 2 alone is the run's network score


def test_choose_served_follows_the_session_rule():
    assert choose_served(0.8, 0.9)[0] == "deep"
    assert choose_served(0.8, 0.81)[0] == "instant"  # not clear of tier 1 by DEEP_ALONE_MARGIN
    assert choose_served(0.9, 0.8)[0] == "instant"
    assert choose_served(0.8, 0.8)[0] == "instant"  # a tie serves the fresher instant classifier
    assert choose_served(None, 0.5)[0] == "deep"
    assert choose_served(0.5, None)[0] == "instant" and choose_served(None, None)[0] == "instant"
    # the blend serves only when it beats both tiers alone, and only when both are scored
    assert choose_served(0.8, 0.7, 0.85)[0] == "blend"
    assert choose_served(0.8, 0.7, 0.8)[0] == "instant"
    assert choose_served(0.7, 0.8, 0.75)[0] == "deep"
    assert choose_served(0.7, 0.8, 0.79)[0] == "blend"  # not clear of the blend: the blend hedges
    assert choose_served(0.8, None, 0.9)[0] == "instant"


def test_blend_and_heldout_dice():
    from al_annotator.simulate.tiers import blend_probabilities, heldout_dice

    a = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    b = np.array([[0.2, 0.8], [0.1, 0.9]], np.float32)
    np.testing.assert_allclose(blend_probabilities(a, b), [[0.55, 0.45], [0.15, 0.85]], rtol=1e-6)
    np.testing.assert_allclose(blend_probabilities(a, b, weight=1.0), a)
    assert heldout_dice(np.array([1, 2]), a, 2) == 1.0
    assert heldout_dice(np.array([1, 2]), b, 2) < 1.0
    assert heldout_dice(np.zeros(0, np.int64), np.zeros((0, 2)), 2) is None


def test_trained_rounds_score_the_blend_and_serve_by_the_three_way_rule(stripes):
    res = run_simulation(stripes, _cfg(seconds_per_round=1.0, step_rate=20.0), None, plot=False, log=lambda m: None)
    (run,) = res["runs"]
    _check_served(run["rounds"])
    last = run["rounds"][-1]["tiers"]
    assert 0.0 <= last["blend"]["heldout_dice"] <= 1.0 and 0.0 <= last["blend"]["mean_dice"] <= 1.0
    # the network has trained: tier 1 is also fitted with its features (instant.deep) and uses them only where
    # that fit scores higher on the held-out voxels than the filter bank alone (both fits recorded)
    from al_annotator.core.values import use_deep_features

    for r in run["rounds"]:
        t = r["tiers"]
        assert 0.0 <= t["instant_filters"]["mean_dice"] <= 1.0 and 0.0 <= t["instant_deep"]["mean_dice"] <= 1.0
        use = use_deep_features(t["instant_deep"]["heldout_dice"], t["instant_filters"]["heldout_dice"])
        assert t["instant"]["deep_features"] == use
        assert t["instant"]["mean_dice"] == t["instant_deep" if use else "instant_filters"]["mean_dice"]
    off = run_simulation(stripes, _cfg(seconds_per_round=1.0, step_rate=20.0, blend=False, deep_features=False), None, plot=False,
                         log=lambda m: None)
    assert all("blend" not in r["tiers"] and r["tiers"]["served"]["tier"] != "blend" for r in off["runs"][0]["rounds"])
    assert all(not r["tiers"]["instant"]["deep_features"] and "instant_filters" not in r["tiers"] for r in off["runs"][0]["rounds"])
    # the filter-only fit is the same with and without the deep features (it ranks the slices)
    assert [r["tiers"]["instant"]["mean_dice"] for r in off["runs"][0]["rounds"]] == [r["tiers"]["instant_filters"]["mean_dice"] for r in run["rounds"]]
    # the rule replayed on the recorded held-out scores: the same rule changes nothing; another rule
    # serves its own choice with that tier's test scores, and the summary follows
    from al_annotator.simulate import run as run_mod

    again = run_mod.rechoose_served(res)
    assert again["config"]["served_rechosen"] == {"rounds": len(run["rounds"]), "changed": 0}
    assert again["runs"] == res["runs"] and again["summary"] == res["summary"]
    import al_annotator.simulate.tiers as tiers_mod

    monkey = pytest.MonkeyPatch()
    monkey.setattr(tiers_mod, "choose_served", lambda i, d, b=None: ("blend", "test: always the blend"))
    try:
        forced = run_mod.rechoose_served(res)
    finally:
        monkey.undo()
    rounds = forced["runs"][0]["rounds"]
    assert all(r["tiers"]["served"]["tier"] == "blend" and r["tiers"]["served"]["mean_dice"] == r["tiers"]["blend"]["mean_dice"]
               for r in rounds)
    assert forced["config"]["served_rechosen"]["changed"] == sum(r["tiers"]["served"]["tier"] != "blend" for r in run["rounds"])
    curve = forced["summary"]["served:random"]["curve"]
    assert [c["mean_dice"] for c in curve] == pytest.approx([r["tiers"]["blend"]["mean_dice"] for r in rounds])


def test_tier1_alone_serves_and_ranks_with_its_own_scores(stripes):
    from al_annotator.acquisition import suggest
    from al_annotator.simulate.run import _Context

    cfg = _cfg(network=False, strategies=("entropy",), budget=3)
    res = run_simulation(stripes, cfg, None, plot=False, log=lambda m: None)
    (run,) = res["runs"]
    assert [r["train_steps"] for r in run["rounds"]] == [0, 0, 0]
    for row in run["rounds"]:
        assert row["tiers"]["served"]["tier"] == "instant" and row["tiers"]["deep"]["mean_dice"] is None
        assert row["mean_dice"] == row["tiers"]["instant"]["mean_dice"]
    assert run["rounds"][-1]["mean_dice"] > 0.9
    # round 1's pick is the top of tier 1's entropy ranking after round 0 (the product's rule), recomputed here
    from al_annotator.simulate.oracle import reveal_counted
    from al_annotator.training.data import collect_labelled_slices
    from al_annotator.training.holdout import split_voxels

    ctx = _Context(stripes, cfg, lambda m: None)
    store = ctx.new_store()
    revealed = np.zeros(stripes.shape, bool)
    first = [SliceRef(*p) for p in run["rounds"][0]["picked"]]
    for ref in first:
        reveal_counted(store, ctx.oracle, ref, stripes.labels, ctx.test_mask, revealed, 0)
    tr, he = split_voxels(collect_labelled_slices(store, cfg.input_norm), fraction=cfg.holdout_fraction, seed=0)
    ctx.instant.run_round(tr, he, stripes.labels, 0)
    pool = ctx.instant.candidate_pool(ctx.candidates, first)
    want = [s.ref for s in suggest(pool, "entropy", n=1, seed=1)]
    assert [SliceRef(*p) for p in run["rounds"][1]["picked"]] == want
    with pytest.raises(Exception, match="needs --tiers"):
        SimulationConfig(tiers=False, network=False).validate()


def test_served_is_the_tier_with_the_higher_heldout_score(stripes):
    # tier 2 with no training time: the instant classifier serves every round
    untrained = run_simulation(stripes, _cfg(seconds_per_round=1.0, step_rate=0.0), None, plot=False, log=lambda m: None)
    (run,) = untrained["runs"]
    assert [r["train_steps"] for r in run["rounds"]] == [0, 0]
    _check_served(run["rounds"])
    assert [r["tiers"]["served"]["tier"] for r in run["rounds"]] == ["instant", "instant"]
    assert run["rounds"][-1]["tiers"]["instant"]["heldout_dice"] > 0.9
    # tier 1 reduced to a stump, tier 2 trained 30 steps a round: the network serves once it is ahead
    lines: list[str] = []
    trained = run_simulation(stripes, _cfg(seconds_per_round=1.0, step_rate=30.0, instant_classifier=STUMP, blend=False, deep_features=False), None, plot=False,
                             log=lines.append)
    (run,) = trained["runs"]
    assert [r["train_steps"] for r in run["rounds"]] == [30, 30]
    _check_served(run["rounds"])
    last = run["rounds"][-1]["tiers"]
    assert last["served"]["tier"] == "deep" and last["deep"]["score"] > last["instant"]["heldout_dice"]
    # held-out voxels: revealed, never the test set, and neither tier is fitted on them
    assert last["instant"]["heldout_voxels"] > 0 and last["deep"]["heldout_voxels"] == last["instant"]["heldout_voxels"]
    assert last["instant"]["train_voxels"] + last["instant"]["heldout_voxels"] == run["rounds"][-1]["annotated_voxels"]
    # the summary carries served / tier 1 / tier 2 side by side
    s = trained["summary"]
    assert {"random", "served:random", "tier1:random"} <= set(s)
    assert s["served:random"]["curve"][-1]["deep_served"] == 1
    # progress: a line per round with the count and an ETA
    prog = [m for m in lines if re.match(r"\[\d+/2 rounds, .* elapsed, ETA .*\]", m)]
    assert [int(m[1]) for m in prog] == [1, 2] and "served deep" in prog[-1]


def test_seconds_mode_is_deterministic_with_a_fixed_step_rate(stripes):
    cfg = dict(oracle="scribble", scribble_fraction=0.05, seconds_per_slice=2.0, step_rate=3.0, seconds_per_stroke=3.0, peer=True)
    a = run_simulation(stripes, _cfg(**cfg), None, plot=False, log=lambda m: None)
    b = run_simulation(stripes, _cfg(**cfg), None, plot=False, log=lambda m: None)
    assert a["config"]["step_rate"] == 3.0 and a["config"]["step_rate_measured"] is False
    assert a["config"]["round_steps"] == [6, 6] and a["config"]["round_budget_seconds"] == [2.0, 2.0]
    ra, rb = _strip_timing(a["runs"]), _strip_timing(b["runs"])
    assert ra == rb
    assert _strip_timing(a["peer"]) == _strip_timing(b["peer"])
    rounds = a["runs"][0]["rounds"]
    assert [r["train_steps"] for r in rounds] == [6, 6]
    # annotation cost: strokes counted by the scribble oracle, seconds = strokes x 3 s
    assert all(r["strokes"] >= 4 for r in rounds)  # every class on the slice gets a stroke
    assert rounds[-1]["strokes_total"] == sum(r["strokes"] for r in rounds)
    assert rounds[-1]["annotation_seconds_total"] == pytest.approx(3.0 * rounds[-1]["strokes_total"])


def test_scribble_reports_its_strokes(stripes):
    lab = stripes.labels[8]
    allowed = np.ones(lab.shape, bool)
    o = ScribbleOracle(0.05)
    mask, strokes = o.scribble(lab, allowed, slice_rng(0, SliceRef("z", 8)))
    again = o.mask(lab, allowed, slice_rng(0, SliceRef("z", 8)))
    assert np.array_equal(mask, again)  # counting strokes changes nothing about what is painted
    assert 4 <= strokes <= mask.sum()


def test_cli_tiers_measures_the_step_rate_and_prints_the_served_table(stripes, tmp_path, capsys):
    path = tmp_path / "stripes.npz"
    np.savez(path, image=stripes.image, labels=stripes.labels, class_names=np.array(stripes.classes))
    out = tmp_path / "o"
    rc = main(["simulate", "--volume", str(path), "--strategy", "random", "--budget", "2", "--per-round", "2", "--axes", "z", "--tiers",
               "--seconds-per-round", "0.5", "--no-full", "--no-plot", "--crop", "48", "--batch-size", "2", "--threads", "1",
               "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    cfg = res["config"]
    assert cfg["tiers"] is True and cfg["step_rate_measured"] is True and cfg["step_rate"] > 0
    assert cfg["round_steps"] == [int(round(0.5 * cfg["step_rate"]))]
    assert "ETA" in printed and "| **served** |" in printed and "tier 1 (instant)" in printed
    assert res["runs"][0]["rounds"][0]["annotation_seconds"] == 2 * 60.0  # slice oracle: 60 s per complete slice


@pytest.mark.parametrize("extra, message", [
    (["--step-rate", "2"], "--seconds-per-round or --seconds-per-slice"),
    (["--seconds-per-round", "5", "--seconds-per-slice", "5"], "not both"),
])
def test_bad_budget_flags(stripes, tmp_path, capsys, extra, message):
    path = tmp_path / "s.npz"
    np.savez(path, image=stripes.image, labels=stripes.labels)
    rc = main(["simulate", "--volume", str(path), "--out", str(tmp_path / "o"), "--axes", "z", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err, err


def test_full_supervision_in_served_mode_is_the_better_of_the_tiers(stripes):
    res = run_simulation(stripes, _cfg(network=False, full_supervision=True, budget=1), None, plot=False, log=lambda m: None)
    full = res["full_supervision"]
    assert full["reference"] == ["instant"] and full["network_mean_dice"] is None
    assert full["mean_dice"] == full["instant_mean_dice"] > 0.9
    res = run_simulation(stripes, _cfg(full_supervision=True, full_steps=2, budget=1), None, plot=False, log=lambda m: None)
    full = res["full_supervision"]
    assert full["mean_dice"] == max(full["network_mean_dice"], full["instant_mean_dice"])
    assert full["reference"] == ["instant" if full["instant_mean_dice"] >= full["network_mean_dice"] else "network"]


def test_auto_defaults_are_resolved_from_the_volume_as_the_trainer_does(stripes):
    rng = np.random.default_rng(1)
    shifted = GroundTruth.from_arrays(stripes.image + rng.normal(0, 60, (16, 1, 1)).astype(np.float32), stripes.labels, stripes.classes)
    cfg = _cfg(lr="auto", input_norm="auto", network=True, seconds_per_round=1.0, step_rate=4.0, budget=1)
    lines: list[str] = []
    res = run_simulation(shifted, cfg, None, plot=False, log=lines.append)
    assert cfg.input_norm == "auto"  # the caller's config is left as it was
    assert res["config"]["input_norm"] == "slice" and "input_norm=slice" in res["config"]["input_norm_reason"]
    assert any("input_norm=slice" in m for m in lines)
    assert res["runs"][0]["rounds"][0]["train_steps"] == 4
    flat = run_simulation(stripes, _cfg(input_norm="auto", network=False, budget=1), None, plot=False, log=lambda m: None)
    assert flat["config"]["input_norm"] == "window"
    with pytest.raises(Exception, match="--lr"):
        SimulationConfig(lr="fast").validate()


def test_single_seed_runs_merge_into_the_multi_seed_result(stripes):
    """The benchmark runs seeds as parallel processes (``--seeds 1 --seed-start k``) and merges them: the merge is the
    two-seed run (same per-seed rounds, peers, full-supervision means and summary); other arguments refuse to merge."""
    from al_annotator.errors import InputError
    from al_annotator.simulate.run import merge_seed_results

    cfg = dict(network=False, peer=True, full_supervision=True, oracle="scribble", scribble_fraction=0.05)
    quiet = dict(plot=False, log=lambda m: None)
    both = run_simulation(stripes, _cfg(seeds=2, **cfg), None, **quiet)
    one = [run_simulation(stripes, _cfg(seeds=1, seed_start=k, **cfg), None, **quiet) for k in (1, 0)]
    merged = merge_seed_results(one)
    assert [r["seed"] for r in merged["runs"]] == [0, 1]
    for key in ("runs", "peer", "full_supervision", "summary"):
        assert _strip_timing(merged[key]) == _strip_timing(both[key]), key
    assert merged["config"]["seeds"] == 2 and merged["config"]["seed_start"] == 0
    assert len(merged["timing"]["per_process_seconds"]) == 2
    other = run_simulation(stripes, _cfg(seeds=1, seed_start=1, **(cfg | {"scribble_fraction": 0.1})), None, **quiet)
    with pytest.raises(InputError, match="scribble_fraction"):
        merge_seed_results([one[1], other])


def test_tier1_uses_the_deep_features_at_the_right_voxels():
    """``InstantTier.run_round(deep=...)``: a volume of pure noise whose classes only the 'deep' feature
    shows (the class map itself, as a network would see it): the filter bank alone is at chance, with the
    deep features tier 1 is right, on the held-out voxels and on the test slices (features aligned to
    the voxels of slices labelled on two axes, and of the test planes)."""
    from al_annotator.simulate.tiers import InstantTier
    from al_annotator.training.data import LabelledSlice

    rng = np.random.default_rng(0)
    shape = (12, 40, 40)
    y = np.broadcast_to(np.arange(40)[None, :, None], shape)
    lab = (1 + (y // 5) % 2).astype(np.uint8)
    img = rng.normal(0, 1, shape).astype(np.float32)
    test = [SliceRef("z", 6)]

    def sample(ref):
        t = np.full(ref.shape_in(shape), -1, np.int64)
        t[::2, ::2] = np.asarray(lab[ref.selection()])[::2, ::2] - 1
        return LabelledSlice(ref, np.zeros(t.shape, np.float32), t, "annotated")

    train = [sample(SliceRef("z", 2)), sample(SliceRef("x", 30))]
    held = [sample(SliceRef("z", 9))]
    train.append(LabelledSlice(held[0].ref, held[0].image, np.full(held[0].target.shape, -1, np.int64), "annotated"))
    tier = InstantTier(img, None, 2, test, features={"sigmas": (1.0,)})
    plain = tier.run_round(train, held, lab, 0)
    deep = tier.run_round(train, held, lab, 0, deep=lambda ref: np.asarray(lab[ref.selection()], np.float32)[None])
    assert plain["test"]["mean_dice"] < 0.75 and plain["heldout_dice"] < 0.75
    assert deep["test"]["mean_dice"] > 0.99 and deep["heldout_dice"] > 0.99
