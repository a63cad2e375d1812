"""Active-learning simulation: an oracle with the ground truth plays the expert.

``al-annotator simulate --volume V [--labels L] --strategy S[,S2...] --out DIR`` runs, for every
strategy and seed, rounds of *pick slices -> oracle reveals them -> fine-tune -> predict, score,
evaluate*, plus a full-supervision reference and optionally a random-forest peer, and writes
``DIR/results.json`` and ``DIR/learning_curves.png``. See :mod:`.run` for the loop,
:mod:`.oracle` for the slice and scribble oracles, :mod:`.data` for inputs and the test split,
:mod:`.peer` for the peer.

results.json
------------
::

    {"config": {strategies, budget, per_round, seeds, oracle, axes, steps_per_round, crop, ...,
                oracle_detail, train_config},
     "dataset": {volume, labels, labels_offset, shape, classes, spacing, axes, candidates,
                 test: {axis, every, indices, voxels, class_fraction}, total_voxels},
     "full_supervision": {steps, annotated_slices, annotated_fraction, mean_dice, miou,
                          dice_per_class, seeds: [...]} or null,
     "runs": [{"strategy", "seed", "mc_samples", "seconds", "revealed_test_voxels",
               "rounds": [{"round", "annotated_slices", "annotated_voxels", "annotated_fraction",
                           "dice_per_class", "iou_per_class", "mean_dice", "miou",
                           "unrevealed": {dice_per_class, mean_dice, miou, voxels},
                           "train_seconds", "train_steps", "train_budget_seconds", "loss", "predict_seconds",
                           "strokes", "strokes_total", "annotation_seconds", "annotation_seconds_total",
                           "picked": [[axis, index], ...],
                           "tiers" (--tiers only): {"deep": {heldout_dice, val_dice, score, heldout_voxels, mean_dice, ...},
                                     "instant": {heldout_dice, heldout_voxels, train_voxels, mean_dice, dice_per_class, ...},
                                     "served": {tier, reason, mean_dice, dice_per_class, miou}}}]}],
     "peer": [{"method": "random_forest", "picks_from": "random", "seed", "rounds": [...same keys...]}],
     "summary": {strategy, "served:STRATEGY", "tier1:STRATEGY" (--tiers) or "peer:random_forest(random)": {"budget_to_90pct", "budget_to_95pct",
                 "fraction_voxels_at_90pct", "fraction_voxels_at_95pct", "final_mean_dice",
                 "relative_to_full", "curve": [{annotated_slices, annotated_fraction, mean_dice,
                 mean_dice_std, mean_dice_median, mean_dice_seeds, miou, n_seeds, strokes_total,
                 annotation_seconds_total, deep_served (served: in how many seeds tier 2 served)}]}},
     "timing": {...}, "complete": true}

Served mode (``--tiers``, :mod:`.tiers`): tier 1 (instant classifier) and tier 2 (the network) each
round, scored on the same held-out revealed voxels; the better one is served and all three are
evaluated on the test voxels. ``--seconds-per-round`` / ``--seconds-per-slice`` give the network a
training time per round, converted to steps with ``--step-rate`` (measured at the start when not
given; ``config.step_rate``). :func:`.report.served_table` is the markdown of the comparison.

Scores (``dice_per_class``, ``mean_dice``, ``miou``) are on the held-out test voxels; ``mean_dice``
averages the classes present there. ``annotated_fraction`` is revealed voxels / all voxels of the
volume. Budgets in the summary are in slices, at the first round whose seed-mean Dice reaches 90 % /
95 % of the full-supervision Dice.

Data note: the Drosophila ssTEM stack used in the benchmarks is from Cardona et al. (2010), PLoS
Biol 8(10): e1000502 (non-commercial research use, with citation of that paper and TrakEM2).
"""

from __future__ import annotations

from .data import GroundTruth, TestSplit, choose_axes, load_ground_truth, make_test_split
from .metrics import evaluate_labels, scores_from_confusion
from .oracle import ScribbleOracle, SliceOracle, make_oracle, reveal
from .run import SimulationConfig, run_simulation, summarise

__all__ = [
    "GroundTruth",
    "TestSplit",
    "choose_axes",
    "load_ground_truth",
    "make_test_split",
    "evaluate_labels",
    "scores_from_confusion",
    "SliceOracle",
    "ScribbleOracle",
    "make_oracle",
    "reveal",
    "SimulationConfig",
    "run_simulation",
    "summarise",
]
