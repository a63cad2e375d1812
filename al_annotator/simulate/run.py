"""The simulation loop: an oracle annotates the slices a strategy picks; learning curves per strategy.

For every seed and strategy:

1. round 0: the strategy's cold-start pick of ``per_round`` candidate slices (no model yet:
   foreground-weighted random for every strategy except ``random``, which is uniform);
2. the oracle reveals them (painted into an in-memory project, slices marked annotated);
3. the network (the same initial weights for every strategy of a seed) is fine-tuned for
   ``steps_per_round`` steps on every labelled slice (``collect_labelled_slices`` + ``train_round``,
   the optimizer carried over between rounds, as the trainer worker does);
4. ``predict_volume`` predicts and soft-votes the candidate axes and scores every slice;
   the argmax is evaluated on the held-out test voxels (and on every voxel not revealed);
5. the strategy ranks the unannotated candidates (``scores.to_pool(annotated=...)``) and picks the
   next ``per_round``; back to 2 until ``budget`` slices are revealed.

The *full supervision* reference trains the same initial weights on the complete ground truth of
every candidate slice (test voxels excluded) for as many steps as the longest run
(``rounds x steps_per_round``), and is evaluated on the same test voxels.

Served mode (``tiers=True``, ``--tiers``): in every round the revealed voxels are also split as the
product splits them (``training.holdout.split_voxels``: ~10 %, whole strokes; the trainer
also holds out whole annotated slices for validation once ``val_every`` are annotated, as the
worker does): the network trains on the rest, tier 1 (the instant classifier, :mod:`.tiers`) is
fitted on every revealed voxel outside the blocks, both are scored on the blocks, and the tier with
the higher held-out Dice is *served* (``Session.served_tier``'s rule). Tier 1, tier 2 and the served
system are all evaluated on the test voxels.

Compute budget: ``steps_per_round`` steps (fixed-step mode), or, with ``seconds_per_round`` (or
``seconds_per_slice`` x the slices revealed that round: the time the expert spends annotating it),
that many seconds of training, converted to steps with ``step_rate`` (steps per second; measured
once at the start when not given, and recorded) so that a run is deterministic.

Annotation cost per round: strokes (the scribble oracle counts them) and seconds (strokes x
``seconds_per_stroke`` (3 s) for scribbles, slices x ``cost_per_slice`` (60 s) for complete slices),
besides voxels. The cost is independent of the training budget, which may be scaled down to fit a run.

Test split: every ``test_every``-th slice along the first candidate axis (from ``test_every // 2``)
is held out; its voxels are never revealed (slices of other axes are revealed except where they
cross a test slice) and are the same for every strategy and seed.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..acquisition import STRATEGIES, ScoredPool, suggest
from ..errors import InputError
from ..core.values import use_deep_features
from ..types import AXES, SliceRef
from .data import GroundTruth, TestSplit, choose_axes, make_test_split
from .metrics import confusion, evaluate_labels, scores_from_confusion
from .oracle import make_oracle, reveal_counted
from .progress import Progress, format_seconds

__all__ = ["SimulationConfig", "run_simulation", "summarise", "full_summary", "merge_seed_results", "rechoose_served", "measure_step_rate", "SECONDS_PER_SLICE_DEFAULT"]

#: Annotation cost of one complete slice (slice oracle) when ``seconds_per_slice`` is not given.
SECONDS_PER_SLICE_DEFAULT = 60.0


@dataclass
class SimulationConfig:
    """What ``al-annotator simulate`` runs (see :func:`run_simulation`)."""

    strategies: tuple[str, ...] = ("hybrid",)
    budget: int = 12
    per_round: int = 2
    seeds: int = 1
    seed_start: int = 0
    oracle: str = "slice"
    scribble_fraction: float = 0.03
    axes: str | None = None
    test_every: int = 5
    steps_per_round: int = 30
    crop: int = 256
    batch_size: int = 8
    #: "auto" (the trainer's default): a short range test picks it (``training.fit.lr_range_test``).
    lr: float | str = "auto"
    #: "auto" (the trainer's default): chosen from the volume (``training.data.choose_input_norm``).
    input_norm: str = "auto"
    model: str = "hrnet_w18_small"
    mc_samples: int = 8
    full_supervision: bool = True
    full_steps: int | None = None
    peer: bool = False
    peer_max_samples: int = 200_000
    device: str = "auto"
    threads: int | None = None
    predict_batch: int = 8
    #: Served mode: tier 1 (instant) and tier 2 (network) each round, the better on held-out voxels serves.
    tiers: bool = False
    holdout_fraction: float = 0.1
    #: Served mode: whole annotated slices held out for validation once this many are annotated (the worker's
    #: ``TrainConfig.val_every``); 0: none.
    val_every: int = 5
    #: Served mode without tier 2: tier 1 alone serves and ranks (fast; the product before a deep model).
    network: bool = True
    #: Served mode: the blend of both tiers (mean of their class probabilities) is one more candidate to serve.
    blend: bool = True
    #: Served mode: once the network has trained, tier 1 also gets its features (``instant.deep``: the fused
    #: head features, PCA to 16 channels; a self-trained convpaint), as the live tier does.
    deep_features: bool = True
    #: Served mode: which model's scores rank the next picks: "served" (the product's rule) or "network".
    acquire_from: str = "served"
    #: Options of tier 1's classifier (``InstantClassifier``) and feature bank (``FeatureBank``).
    instant_classifier: dict | None = None
    instant_features: dict | None = None
    #: Seconds mode: training seconds per round, or per slice revealed that round; converted with step_rate.
    seconds_per_round: float | None = None
    seconds_per_slice: float | None = None
    step_rate: float | None = None
    #: Annotation cost of one scribble stroke, and of one complete slice (slice oracle).
    seconds_per_stroke: float = 3.0
    cost_per_slice: float = SECONDS_PER_SLICE_DEFAULT

    @property
    def seconds_mode(self) -> bool:
        return self.seconds_per_round is not None or self.seconds_per_slice is not None

    def validate(self) -> None:
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown or not self.strategies:
            raise InputError(f"unknown strategy {unknown or self.strategies!r}; choose from {', '.join(sorted(STRATEGIES))}")
        if len(set(self.strategies)) != len(self.strategies):
            raise InputError(f"a strategy is listed twice: {list(self.strategies)}")
        for name in ("budget", "per_round", "seeds", "steps_per_round", "crop", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if "bald" in self.strategies and self.mc_samples < 2:
            raise InputError("the bald strategy needs MC-dropout samples: --mc-samples 2 or more")
        if self.full_steps is not None and self.full_steps < 1:
            raise InputError(f"--full-steps must be >= 1, got {self.full_steps}")
        if self.input_norm not in ("auto", "window", "slice"):
            raise InputError(f"--input-norm must be 'auto', 'window' or 'slice', got {self.input_norm!r}")
        if self.lr != "auto" and not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"--lr must be a positive number or 'auto', got {self.lr!r}")
        for name in ("seconds_per_round", "seconds_per_slice"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise InputError(f"--{name.replace('_', '-')} must be a positive number of seconds, got {v!r}")
        if self.seconds_per_round is not None and self.seconds_per_slice is not None:
            raise InputError("give --seconds-per-round or --seconds-per-slice, not both")
        if self.step_rate is not None and not (math.isfinite(self.step_rate) and self.step_rate >= 0):
            raise InputError(f"--step-rate must be a number of steps per second >= 0, got {self.step_rate!r}")
        if self.step_rate is not None and not self.seconds_mode:
            raise InputError("--step-rate converts seconds to steps: give --seconds-per-round or --seconds-per-slice too")
        for name in ("seconds_per_stroke", "cost_per_slice"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise InputError(f"--{name.replace('_', '-')} must be >= 0, got {v!r}")
        if not 0 < self.holdout_fraction < 0.5:
            raise InputError(f"--holdout must be in (0, 0.5), got {self.holdout_fraction!r}")
        if self.val_every < 0 or self.val_every == 1:
            raise InputError(f"--val-every must be 0 (off) or >= 2, got {self.val_every!r}")
        if not self.network and not self.tiers:
            raise InputError("--no-network runs tier 1 alone: it needs --tiers")
        if self.acquire_from not in ("served", "network"):
            raise InputError(f"--acquire-from must be 'served' or 'network', got {self.acquire_from!r}")
        if self.acquire_from == "network" and not self.network:
            raise InputError("--acquire-from network needs the network: drop --no-network")
        make_oracle(self.oracle, self.scribble_fraction)


def _log_default(msg: str) -> None:
    print(msg, flush=True)


def _parse_axes(axes: str) -> str:
    out = "".join(a for a in axes.lower() if a in "zyx")
    if not out or len(out) != len(axes) or len(set(out)) != len(out):
        raise InputError(f"--axes must be a combination of z, y, x such as 'z' or 'zyx', got {axes!r}")
    return out


def _train_config(cfg: SimulationConfig, axes: str, seed: int, steps: int, mc: int):
    from ..training.config import TrainConfig

    return TrainConfig(model=cfg.model, device=cfg.device, steps_per_round=steps, max_seconds_per_round=1e9,
                       batch_size=cfg.batch_size, crop=cfg.crop, lr=cfg.lr, axes=axes, mc_samples=mc, seed=seed,
                       predict_batch=cfg.predict_batch, threads=cfg.threads, input_norm=cfg.input_norm)


def _scores(test: dict[str, Any], n_slices: int, nvox: int, ctx: Any) -> dict[str, Any]:
    """The budget and test-voxel scores every result row carries."""
    return {
        "annotated_slices": n_slices,
        "annotated_voxels": nvox,
        "annotated_fraction": nvox / ctx.total_voxels,
        "dice_per_class": test["dice_per_class"],
        "iou_per_class": test["iou_per_class"],
        "mean_dice": test["mean_dice"],
        "miou": test["miou"],
    }


def _evaluate(probabilities: Any, gt: GroundTruth, test_mask: np.ndarray, revealed: np.ndarray | None) -> tuple[dict, dict | None]:
    pred = np.asarray(probabilities).argmax(0).astype(np.uint8) + 1
    test = evaluate_labels(gt.labels, pred, test_mask, gt.n_classes)
    unrev = None if revealed is None else evaluate_labels(gt.labels, pred, ~revealed, gt.n_classes)
    return test, unrev


def _brief(s: dict | None) -> dict | None:
    if s is None:
        return None
    return {k: s[k] for k in ("dice_per_class", "mean_dice", "miou", "voxels")}


class _Context:
    """Everything shared by the runs of one simulation."""

    def __init__(self, gt: GroundTruth, cfg: SimulationConfig, log: Callable[[str], None]) -> None:
        from ..acquisition.project import cold_start_foreground

        self.gt, self.cfg, self.log = gt, cfg, log
        self.axes = _parse_axes(cfg.axes) if cfg.axes else choose_axes(gt.shape, gt.spacing)
        self.split: TestSplit = make_test_split(gt.shape, self.axes[0], cfg.test_every)
        self.test_mask = self.split.mask(gt.shape)
        test_set = set(self.split.indices)
        self.candidates = [SliceRef(a, i) for a in self.axes for i in range(gt.shape[AXES.index(a)])
                           if not (a == self.split.axis and i in test_set)]
        self.test_refs = [SliceRef(self.split.axis, i) for i in self.split.indices]
        self.budget = min(cfg.budget, len(self.candidates))
        self.n_rounds = math.ceil(self.budget / cfg.per_round)
        self.oracle = make_oracle(cfg.oracle, cfg.scribble_fraction)
        self.base_store = self.new_store()
        self.window = self.base_store.display_window
        self.input_norm_reason = None
        if cfg.input_norm == "auto":  # as the trainer resolves it, once, from the volume
            from ..training.data import choose_input_norm

            cfg.input_norm, self.input_norm_reason = choose_input_norm(gt.image, self.window)
            log(f"simulate: {self.input_norm_reason}")
        fg = cold_start_foreground(self.base_store, tuple(self.axes))
        self.cold_fg = np.array([fg[r.axis][r.index] for r in self.candidates], np.float32)
        self.total_voxels = int(np.prod(gt.shape))
        #: Slices revealed in each round (the last one may be short).
        self.round_slices = [min(cfg.per_round, self.budget - r * cfg.per_round) for r in range(self.n_rounds)]
        self.step_rate: float | None = cfg.step_rate
        self.step_rate_measured = False
        self.instant = None
        if cfg.tiers:
            from .tiers import InstantTier

            self.instant = InstantTier(gt.image, gt.spacing, gt.n_classes, self.test_refs, classifier=cfg.instant_classifier,
                                       features=cfg.instant_features)

    def round_budget_seconds(self, r: int) -> float | None:
        """Seconds mode: the training seconds of round ``r`` (the expert's annotation time for it)."""
        cfg = self.cfg
        if cfg.seconds_per_round is not None:
            return float(cfg.seconds_per_round)
        if cfg.seconds_per_slice is not None:
            return float(cfg.seconds_per_slice) * self.round_slices[min(r, len(self.round_slices) - 1)]
        return None

    def round_steps(self, r: int) -> int:
        """Training steps of round ``r``: fixed, or the round's seconds x the step rate (deterministic)."""
        sec = self.round_budget_seconds(r)
        if sec is None:
            return int(self.cfg.steps_per_round)
        return int(round(sec * float(self.step_rate)))

    def total_steps(self) -> int:
        return sum(self.round_steps(r) for r in range(self.n_rounds))

    def new_store(self):
        from ..store import create_project

        return create_project(None, self.gt.image, classes=self.gt.classes, spacing=self.gt.spacing, author="oracle")

    def candidate_positions(self, refs: Sequence[SliceRef]) -> np.ndarray:
        where = {r: i for i, r in enumerate(refs)}
        return np.array([where[r] for r in self.candidates], np.int64)


def _run_strategy(ctx: _Context, strategy: str, seed: int, model: Any, init_state: dict, device: Any,
                  progress: Progress | None = None) -> dict[str, Any]:
    from dataclasses import replace

    from ..training.data import collect_labelled_slices, split_validation
    from ..training.fit import RoundResult, evaluate_dice, train_round
    from ..training.holdout import split_voxels
    from ..training.predict import predict_volume
    from .tiers import HOLDOUT_SEED

    cfg, gt = ctx.cfg, ctx.gt
    t_run = time.perf_counter()
    mc = cfg.mc_samples if strategy == "bald" else 0
    tcfg = _train_config(cfg, ctx.axes, seed, cfg.steps_per_round, mc)
    store = ctx.new_store()
    model.load_state_dict(init_state)
    optimizer = None
    revealed = np.zeros(gt.shape, bool)
    done: list[SliceRef] = []
    cold = ScoredPool(ctx.candidates, foreground_fraction=ctx.cold_fg)
    picks = [s.ref for s in suggest(cold, strategy, n=min(cfg.per_round, ctx.budget), seed=seed * 1000)]
    cand_pos = None
    rounds = []
    strokes_total, cost_total = 0, 0.0
    net_steps = 0  # the network's steps so far this run (tier 1 gets its features once it has trained)
    slice_cost = cfg.cost_per_slice
    for r in range(ctx.n_rounds + 1):
        if not picks:
            break
        t0 = time.perf_counter()
        strokes = 0
        for ref in picks:
            strokes += reveal_counted(store, ctx.oracle, ref, gt.labels, ctx.test_mask, revealed, seed)[1]
            done.append(ref)
        oracle_seconds = time.perf_counter() - t0
        cost = strokes * cfg.seconds_per_stroke if cfg.oracle == "scribble" else len(picks) * slice_cost
        strokes_total += strokes
        cost_total += cost
        samples = collect_labelled_slices(store, cfg.input_norm)
        train, val, held = samples, [], []
        if cfg.tiers:  # what the trainer worker trains on and scores by
            train, val = split_validation(samples, cfg.val_every) if cfg.val_every else (list(samples), [])
            train, held = split_voxels(train, fraction=cfg.holdout_fraction, seed=HOLDOUT_SEED)
        network = cfg.network
        steps = ctx.round_steps(r) if network else 0
        pred, probs_np = None, None
        if steps > 0:
            result, optimizer = train_round(model, train, replace(tcfg, steps_per_round=steps), device=device, optimizer=optimizer,
                                            seed=seed * 1000 + r)
        else:  # seconds mode with no time to train, or tier 1 alone: the weights stay as they are
            result = RoundResult(steps=0, seconds=0.0)
            model.eval()
        net_steps += result.steps
        t0 = time.perf_counter()
        if network:
            pred = predict_volume(store, model, axes=ctx.axes, device=device, batch_size=cfg.predict_batch, tile=tcfg.tile,
                                  mc_samples=mc, seed=r, model_version=r, input_norm=cfg.input_norm)
        predict_seconds = time.perf_counter() - t0
        inst = None
        if cfg.tiers:
            # tier 1 as the live preview fits it: every revealed voxel outside the same holdout blocks
            t1_train, t1_held = split_voxels(samples, fraction=cfg.holdout_fraction, seed=HOLDOUT_SEED)
            inst = ctx.instant.run_round(t1_train, t1_held, gt.labels, seed)
            inst_filters, inst_deep = inst, None
            if network and cfg.deep_features and net_steps > 0 and inst["test"] is not None:
                t_deep = time.perf_counter()
                deep_fn = _deep_features(ctx, model, samples, device, seed)
                inst_deep = ctx.instant.run_round(t1_train, t1_held, gt.labels, seed, deep=deep_fn)
                inst_deep["deep_seconds"] = time.perf_counter() - t_deep
                if use_deep_features(inst_deep["heldout_dice"], inst["heldout_dice"]):
                    inst = inst_deep  # as the live tier decides: the fit with the network's features scores higher held out
        if network:
            test, unrev = _evaluate(pred.probabilities, gt, ctx.test_mask, revealed)
        else:  # tier 1 alone: its test scores are the row's
            test, unrev = inst["test"] or _NO_SCORES(gt.n_classes), None
        nvox = int(revealed.sum())
        row = {
            "round": r,
            **_scores(test, len(done), nvox, ctx),
            "unrevealed": _brief(unrev),
            "train_seconds": result.seconds,
            "train_steps": result.steps,
            "train_budget_seconds": ctx.round_budget_seconds(r),
            "loss": result.loss,
            "predict_seconds": predict_seconds,
            "oracle_seconds": oracle_seconds,
            "strokes": int(strokes),
            "strokes_total": int(strokes_total),
            "annotation_seconds": float(cost),
            "annotation_seconds_total": float(cost_total),
            "picked": [[p.axis, p.index] for p in picks],
        }
        extra = ""
        tier = "network"
        if cfg.tiers:
            deep_score, held_d, val_d, blend = None, {"mean": None, "per_class": []}, {"mean": None, "per_class": []}, None
            if network:
                held_d = evaluate_dice(model, held, device=device) if held else held_d
                val_d = evaluate_dice(model, val, device=device) if val else val_d
                deep_score = held_d["mean"] if held_d["mean"] is not None else val_d["mean"]
            deep_same = None
            if network and inst["test"] is not None:
                probs_np = np.asarray(pred.probabilities, np.float32)
                deep_same = _deep_on_instant_heldout(inst, probs_np, gt)
                blend = _blend_round(inst, probs_np, gt) if cfg.blend else None
                if deep_same is not None:
                    # every candidate judged on the same voxels (tier 1's held-out strokes; the network never
                    # trained on them either), as the live tier scores them in the product
                    deep_score = deep_same
            if inst["test"] is None:
                tier, why = "deep", "the instant classifier is not fitted (it needs labels of two classes)"
            elif not network:
                tier, why = "instant", "tier 1 alone (--no-network)"
            else:
                tier, why = serve_rule(inst["heldout_dice"], deep_score, None if blend is None else blend["heldout_dice"],
                                       inst is inst_deep)
            served = {"instant": inst["test"], "deep": test, "blend": blend and blend["test"]}[tier]
            row["tiers"] = {
                "deep": {"heldout_dice": held_d["mean"], "heldout_per_class": held_d["per_class"], "val_dice": val_d["mean"],
                         "score": deep_score, "heldout_same_voxels": deep_same, "heldout_voxels": int(sum((h.target >= 0).sum() for h in held)),
                         "val_slices": len(val), "dice_per_class": test["dice_per_class"] if network else None,
                         "mean_dice": test["mean_dice"] if network else None, "miou": test["miou"] if network else None},
                "instant": {"heldout_dice": inst["heldout_dice"], "heldout_per_class": inst["heldout_per_class"],
                            "heldout_voxels": inst["heldout_voxels"], "train_voxels": inst["train_voxels"],
                            "fit_seconds": inst["fit_seconds"], "features_seconds": inst["features_seconds"],
                            "predict_seconds": inst["predict_seconds"],
                            **({k: inst["test"][k] for k in ("dice_per_class", "iou_per_class", "mean_dice", "miou")}
                               if inst["test"] is not None else {"dice_per_class": None, "mean_dice": None, "miou": None})},
                "served": {"tier": tier, "reason": why, "dice_per_class": served["dice_per_class"], "mean_dice": served["mean_dice"],
                           "miou": served["miou"]},
            }
            row["tiers"]["instant"]["deep_features"] = inst is inst_deep
            if inst_deep is not None:  # both tier-1 fits, for comparison (the filter-only one ranks the slices)
                for name, v in (("instant_filters", inst_filters), ("instant_deep", inst_deep)):
                    row["tiers"][name] = {"heldout_dice": v["heldout_dice"],
                                          **{k: v["test"][k] for k in ("dice_per_class", "mean_dice", "miou")}}
                row["tiers"]["instant_deep"]["deep_seconds"] = inst_deep["deep_seconds"]
            if blend is not None:
                row["tiers"]["blend"] = {"heldout_dice": blend["heldout_dice"], "deep_heldout_volume": blend["deep_heldout"],
                                         **{k: blend["test"][k] for k in ("dice_per_class", "mean_dice", "miou")}}
            extra = (f"; tier 1 {_fmt(inst['test'] and inst['test']['mean_dice'])} (held-out {_fmt(inst['heldout_dice'])}), "
                     f"tier 2 held-out {_fmt(deep_score)}"
                     + (f", blend {_fmt(blend['test']['mean_dice'])} (held-out {_fmt(blend['heldout_dice'])})" if blend else "")
                     + f", served {tier} {_fmt(served['mean_dice'])}")
        rounds.append(row)
        head = (f"tier 2 mean Dice {test['mean_dice']:.3f} ({result.steps} steps, train {result.seconds:.1f} s, "
                f"predict {predict_seconds:.1f} s)") if network else "tier 1 alone"
        msg = (f"[{strategy} seed {seed}] round {r}: {len(done)} slices, {100 * nvox / ctx.total_voxels:.3f}% voxels, "
               f"{strokes_total} strokes, {format_seconds(cost_total)} annotating; {head}{extra}")
        if progress is not None:
            progress.advance(msg)
        else:
            ctx.log("  " + msg)
        if len(done) >= ctx.budget:
            break
        if cfg.tiers and cfg.acquire_from == "served" and tier in ("instant", "blend"):
            # the product ranks with the served model's scores: tier 1's (Session._instant_pool), also
            # while the blend serves (tier 1 scores every slice live; the blend's deep half is a volume)
            pool = ctx.instant.candidate_pool(ctx.candidates, done)
        else:
            if cand_pos is None:
                cand_pos = ctx.candidate_positions(pred.scores.refs)
            pool = pred.scores.to_pool(annotated=done).subset(cand_pos)
        n = min(cfg.per_round, ctx.budget - len(done))
        picks = [s.ref for s in suggest(pool, strategy, n=n, seed=seed * 1000 + r + 1)]
    leaked = int((revealed & ctx.test_mask).sum())
    if leaked:  # cannot happen: the oracle masks test voxels; checked anyway
        raise RuntimeError(f"{leaked} test voxels were revealed in the {strategy} run")
    return {
        "strategy": strategy,
        "seed": int(seed),
        "mc_samples": mc,
        "rounds": rounds,
        "revealed_test_voxels": leaked,
        "seconds": time.perf_counter() - t_run,
    }


def _tiers_desc(cfg: SimulationConfig) -> str:
    if not cfg.tiers:
        return "network only"
    if not cfg.network:
        return "tier 1 alone, served and ranking"
    return ("tier 1 + tier 2" + (" + their blend" if cfg.blend else "") + ", served by held-out Dice; picks ranked by the "
            + ("served model" if cfg.acquire_from == "served" else "network"))


def _NO_SCORES(n_classes: int) -> dict[str, Any]:
    """Test scores of a round with nothing fitted yet (tier 1 alone, one class revealed): Dice 0."""
    return {"dice_per_class": [0.0] * n_classes, "iou_per_class": [0.0] * n_classes, "mean_dice": 0.0, "miou": 0.0, "voxels": 0}


def serve_rule(instant: float | None, deep: float | None, blend: float | None, tier1_deep: bool) -> tuple[str, str]:
    """The served tier of a round, as the Session serves: while tier 1 has the network's features it
    serves (no blend: it would count the network twice; the deep tier alone was below it on the test
    slices in every EM round measured, while held-out scribbles rated the network up to 0.18 higher);
    otherwise :func:`~al_annotator.core.values.choose_served` of the three."""
    from .tiers import choose_served

    if tier1_deep and instant is not None:
        return "instant", "the instant classifier has the deep tier's features (it holds the network's evidence)"
    return choose_served(instant, deep, blend)


def _deep_features(ctx: Any, model: Any, samples: Sequence[Any], device: Any, seed: int) -> Any:
    """``ref -> (k, H, W)``: the trained network's features for tier 1 this round (``instant.deep``; the
    PCA fitted on the labelled slices' maps), each plane computed once."""
    from ..instant.deep import DeepFeatures
    from ..training.data import normalise

    gt, cfg = ctx.gt, ctx.cfg
    model.eval()
    deep = DeepFeatures(model, lambda im: normalise(im, ctx.window, cfg.input_norm), device=device, seed=seed)
    deep.fit([np.asarray(gt.image[s.ref.selection()]) for s in samples])
    cache: dict[SliceRef, np.ndarray] = {}

    def plane(ref: SliceRef) -> np.ndarray:
        if ref not in cache:
            cache[ref] = deep.plane(np.asarray(gt.image[ref.selection()]))
        return cache[ref]

    return plane


def _deep_on_instant_heldout(inst: dict[str, Any], probs: np.ndarray, gt: GroundTruth) -> float | None:
    """The network's held-out Dice on tier 1's held-out voxels (its fused volume probabilities there)."""
    from .tiers import heldout_dice

    c = inst["held_coords"]
    if not len(c):
        return None
    return heldout_dice(inst["held_values"], np.moveaxis(probs[:, c[:, 0], c[:, 1], c[:, 2]], 0, -1), gt.n_classes)


def _blend_round(inst: dict[str, Any], probs: np.ndarray, gt: GroundTruth) -> dict[str, Any] | None:
    """The blend of the tiers this round: its held-out Dice (tier 1's held-out fit and the network's
    volume probabilities at tier 1's held-out voxels) and its test scores (the served tier-1 fit's test
    probabilities and the network's)."""
    from .tiers import blend_probabilities, heldout_dice

    if inst["held_probs"] is None or inst["test_probs"] is None:
        return None
    c = inst["held_coords"]
    deep_held = np.moveaxis(probs[:, c[:, 0], c[:, 1], c[:, 2]], 0, -1)
    n = gt.n_classes
    held = heldout_dice(inst["held_values"], blend_probabilities(inst["held_probs"], deep_held), n)
    cm = np.zeros((n, n), np.int64)
    for ref, p1 in inst["test_probs"].items():
        p2 = probs[(slice(None),) + ref.selection()]
        cm += confusion(np.asarray(gt.labels[ref.selection()]), blend_probabilities(p1, p2).argmax(0) + 1, n)
    return {"heldout_dice": held, "deep_heldout": heldout_dice(inst["held_values"], deep_held, n),
            "test": scores_from_confusion(cm)}


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def measure_step_rate(ctx: _Context, model: Any, device: Any, steps: int = 3) -> float:
    """Training steps per second of this machine for this configuration: one warm-up step, then
    ``steps`` timed steps on two fully labelled candidate slices, on a copy of the model."""
    from dataclasses import replace

    from ..training.data import LabelledSlice, normalise
    from ..training.fit import train_round

    gt, cfg = ctx.gt, ctx.cfg
    refs = [ctx.candidates[0], ctx.candidates[len(ctx.candidates) // 2]]
    samples = []
    for ref in refs:
        sel = ref.selection()
        target = np.asarray(gt.labels[sel]).astype(np.int64) - 1
        target[np.asarray(ctx.test_mask[sel])] = -1
        samples.append(LabelledSlice(ref, normalise(np.asarray(gt.image[sel]), ctx.window, cfg.input_norm), target, "annotated"))
    trial = copy.deepcopy(model)
    tcfg = _train_config(cfg, ctx.axes, 0, 1, 0)
    _, opt = train_round(trial, samples, tcfg, device=device, seed=0)  # warm-up (allocation, first-call costs)
    result, _ = train_round(trial, samples, replace(tcfg, steps_per_round=steps), device=device, optimizer=opt, seed=1)
    del trial
    return float(result.steps / max(result.seconds, 1e-9))


#: Full supervision trains on at most this many candidate slices (evenly spread), to bound memory.
FULL_MAX_SLICES = 256


def _full_supervision(ctx: _Context, seed: int, model: Any, init_state: dict, device: Any, steps: int,
                      progress: Progress | None = None) -> dict[str, Any]:
    from ..training.data import LabelledSlice, normalise
    from ..training.fit import train_round
    from ..training.predict import predict_volume

    gt = ctx.gt
    refs = ctx.candidates
    if len(refs) > FULL_MAX_SLICES:
        refs = [refs[i] for i in np.unique(np.linspace(0, len(refs) - 1, FULL_MAX_SLICES).round().astype(int))]
    samples = []
    revealed = np.zeros(gt.shape, bool)
    for ref in refs:
        sel = ref.selection()
        target = np.asarray(gt.labels[sel]).astype(np.int64) - 1
        target[np.asarray(ctx.test_mask[sel])] = -1
        revealed[sel] |= ~np.asarray(ctx.test_mask[sel])
        samples.append(LabelledSlice(ref, normalise(np.asarray(gt.image[sel]), ctx.window, ctx.cfg.input_norm), target, "annotated"))
    nvox = int(revealed.sum())
    out: dict[str, Any] = {"seed": int(seed), "steps": 0}
    parts, test = [], None
    if ctx.cfg.network:
        model.load_state_dict(init_state)
        tcfg = _train_config(ctx.cfg, ctx.axes, seed, steps, 0)
        result, _ = train_round(model, samples, tcfg, device=device, seed=seed * 1000 + 999)
        t0 = time.perf_counter()
        pred = predict_volume(ctx.base_store, model, axes=ctx.axes, device=device, batch_size=ctx.cfg.predict_batch, tile=tcfg.tile,
                              input_norm=ctx.cfg.input_norm)
        predict_seconds = time.perf_counter() - t0
        test, _ = _evaluate(pred.probabilities, gt, ctx.test_mask, None)
        out |= {"steps": int(result.steps), "network_mean_dice": test["mean_dice"], "train_seconds": result.seconds,
                "predict_seconds": predict_seconds}
        parts.append(f"network {steps} steps {test['mean_dice']:.3f} (train {result.seconds:.1f} s)")
    if ctx.instant is not None:
        # served mode: tier 1 fitted on every candidate voxel as the product fits it; the reference is
        # the better of the two (what the served system reaches with everything labelled)
        inst = ctx.instant.run_round(samples, [], gt.labels, seed)
        out["instant_mean_dice"] = inst["test"]["mean_dice"] if inst["test"] is not None else None
        parts.append(f"tier 1 {_fmt(out['instant_mean_dice'])}")
        if not ctx.cfg.network or (inst["test"] is not None and inst["test"]["mean_dice"] > test["mean_dice"]):
            test = inst["test"]
    test = test if test is not None else _NO_SCORES(gt.n_classes)
    out.update(_scores(test, len(refs), nvox, ctx))
    out["reference"] = "instant" if ctx.instant is not None and test is not None and out.get("instant_mean_dice") == test["mean_dice"] else "network"
    msg = f"[full supervision seed {seed}] {len(refs)} slices: " + ", ".join(parts)
    if progress is not None:
        progress.advance(msg, ctx.n_rounds)
    else:
        ctx.log("  " + msg)
    return out


def _mean(xs: Sequence[float | None]) -> float | None:
    v = [x for x in xs if x is not None]
    return float(np.mean(v)) if v else None


def _curve(runs: Sequence[dict]) -> list[dict[str, Any]]:
    """Mean (and spread) over seeds, per round index."""
    n = min(len(r["rounds"]) for r in runs)
    out = []
    for i in range(n):
        rows = [r["rounds"][i] for r in runs]
        md = [row["mean_dice"] for row in rows if row["mean_dice"] is not None]
        pt = {
            "annotated_slices": int(round(np.mean([row["annotated_slices"] for row in rows]))),
            "annotated_fraction": float(np.mean([row["annotated_fraction"] for row in rows])),
            "mean_dice": float(np.mean(md)) if md else None,
            "mean_dice_std": float(np.std(md)) if md else None,
            "mean_dice_median": float(np.median(md)) if md else None,
            "mean_dice_seeds": md,
            "miou": _mean([row["miou"] for row in rows]),
            "n_seeds": len(rows),
        }
        for key in ("strokes_total", "annotation_seconds_total", "heldout_dice"):
            if all(key in row for row in rows):
                pt[key] = _mean([row[key] for row in rows])
        if all("served_tier" in row for row in rows):
            pt["deep_served"] = sum(row["served_tier"] == "deep" for row in rows)
            pt["blend_served"] = sum(row["served_tier"] == "blend" for row in rows)
        out.append(pt)
    return out


def _reach(curve: Sequence[dict], target: float | None) -> dict | None:
    if target is None:
        return None
    for pt in curve:
        if pt["mean_dice"] is not None and pt["mean_dice"] >= target:
            return pt
    return None


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Per strategy (and the peer): the seed-mean curve, and the budgets at which it reaches
    90 % / 95 % of the full-supervision mean Dice (``None`` when it never does)."""
    full = (results.get("full_supervision") or {}).get("mean_dice")
    groups: dict[str, list[dict]] = {}
    for run in results.get("runs", []):
        groups.setdefault(run["strategy"], []).append(run)
    for run in results.get("runs", []):
        if run["rounds"] and "tiers" in run["rounds"][0]:
            base = {k: run[k] for k in ("strategy", "seed")}
            pairs = [("served", "served"), ("instant", "tier1")] + ([("blend", "blend")] if all("blend" in r["tiers"] for r in run["rounds"]) else [])
            for tier, name in pairs:
                rows = []
                for row in run["rounds"]:
                    t = row["tiers"]
                    rows.append({k: row[k] for k in ("annotated_slices", "annotated_fraction", "strokes_total", "annotation_seconds_total")}
                                | {k: t[tier][k] for k in ("mean_dice", "miou")}
                                | ({"served_tier": t["served"]["tier"]} if tier == "served" else {"heldout_dice": t["instant"]["heldout_dice"]}))
                groups.setdefault(f"{name}:{run['strategy']}", []).append(base | {"rounds": rows})
    for peer in results.get("peer", []) or []:
        groups.setdefault(f"peer:{peer['method']}({peer['picks_from']})", []).append(peer)
    out = {}
    for name, runs in groups.items():
        curve = _curve(runs)
        p90 = _reach(curve, None if full is None else 0.9 * full)
        p95 = _reach(curve, None if full is None else 0.95 * full)
        out[name] = {
            "budget_to_90pct": None if p90 is None else p90["annotated_slices"],
            "budget_to_95pct": None if p95 is None else p95["annotated_slices"],
            "fraction_voxels_at_90pct": None if p90 is None else p90["annotated_fraction"],
            "fraction_voxels_at_95pct": None if p95 is None else p95["annotated_fraction"],
            "final_mean_dice": curve[-1]["mean_dice"] if curve else None,
            "relative_to_full": (curve[-1]["mean_dice"] / full) if curve and full and curve[-1]["mean_dice"] is not None else None,
            "curve": curve,
        }
    return out


def _clean(obj: Any) -> Any:
    """JSON-safe: numpy scalars to Python, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    return obj


def run_simulation(gt: GroundTruth, cfg: SimulationConfig, out: str | Path | None = None, *,
                   log: Callable[[str], None] = _log_default, plot: bool = True) -> dict[str, Any]:
    """Run every strategy for every seed (plus full supervision and, optionally, the peer).

    Writes ``out/results.json`` and ``out/learning_curves.png`` when ``out`` is given; returns the
    results dict (schema in :mod:`al_annotator.simulate`).
    """
    import torch

    from ..models import create_model
    from ..training.fit import resolve_device

    cfg.validate()
    cfg = copy.copy(cfg)  # "auto" settings are resolved on this copy (the results record what they became)
    t_start = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    ctx = _Context(gt, cfg, log)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(cfg.seed_start, cfg.seed_start + cfg.seeds))
    if cfg.seconds_mode and ctx.step_rate is None and cfg.network:
        torch.manual_seed(cfg.seed_start)
        probe = create_model(cfg.model, n_classes=gt.n_classes, dropout=0.1).to(device)
        log("simulate: measuring this machine's training step rate (seconds mode) ...")
        ctx.step_rate, ctx.step_rate_measured = measure_step_rate(ctx, probe, device), True
        del probe
    if not cfg.network:
        train_desc = "tier 1 alone (no network)"
    elif cfg.seconds_mode:
        budget = (f"{cfg.seconds_per_round:g} s of training per round" if cfg.seconds_per_round is not None
                  else f"{cfg.seconds_per_slice:g} s of training per slice revealed")
        train_desc = (f"{budget} at {ctx.step_rate:.3f} steps/s ({'measured here' if ctx.step_rate_measured else 'given'}): "
                      f"{[ctx.round_steps(r) for r in range(ctx.n_rounds)]} steps per round")
    else:
        train_desc = f"{cfg.steps_per_round} steps per round"
    log(f"simulate: volume {' x '.join(map(str, gt.shape))}, {gt.n_classes} classes ({', '.join(gt.classes)}), "
        f"candidate axes {ctx.axes} ({len(ctx.candidates)} slices), test: every {ctx.split.every}th {ctx.split.axis} slice "
        f"({len(ctx.split.indices)} slices, {int(ctx.test_mask.sum())} voxels); oracle {cfg.oracle}; budget {ctx.budget} slices, "
        f"{cfg.per_round} per round ({ctx.n_rounds} rounds), {train_desc}; "
        f"strategies {', '.join(cfg.strategies)}; seeds {seeds}; tiers {_tiers_desc(cfg)}; "
        f"device {device}, {torch.get_num_threads()} threads")
    runs, fulls, peers = [], [], []
    timing: dict[str, Any] = {"runs": [], "full_supervision": [], "peer": []}
    full_steps = cfg.full_steps or max(1, ctx.total_steps())
    do_full = cfg.full_supervision
    per_seed = len(cfg.strategies) * ctx.n_rounds + (ctx.n_rounds if do_full else 0) + (1 if cfg.peer else 0)
    progress = Progress(per_seed * len(seeds), log)
    try:
        for seed in seeds:
            torch.manual_seed(seed)
            model = create_model(cfg.model, n_classes=gt.n_classes, dropout=0.1)
            model.to(device)
            init_state = copy.deepcopy(model.state_dict())
            for strategy in cfg.strategies:
                run = _run_strategy(ctx, strategy, seed, model, init_state, device, progress)
                runs.append(run)
                timing["runs"].append({"strategy": strategy, "seed": seed, "seconds": run["seconds"]})
                progress.log(f"  [{strategy} seed {seed}] done in {run['seconds']:.1f} s")
                _save(out, cfg, ctx, runs, fulls, peers, timing, t_start, partial=True)
            if do_full:
                t0 = time.perf_counter()
                fulls.append(_full_supervision(ctx, seed, model, init_state, device, full_steps, progress))
                timing["full_supervision"].append({"seed": seed, "seconds": time.perf_counter() - t0})
            if cfg.peer:
                from .peer import run_peer

                peer = run_peer(gt=gt, window=ctx.window, candidates=ctx.candidates, test_refs=ctx.test_refs, test_mask=ctx.test_mask,
                                oracle=ctx.oracle, seed=seed, budget=ctx.budget, per_round=cfg.per_round,
                                max_samples=cfg.peer_max_samples, log=progress.log)
                same = [r for r in runs if r["strategy"] == peer["picks_from"] and r["seed"] == seed]
                if same:
                    peer["same_picks_as_network_run"] = [x["picked"] for x in same[0]["rounds"]] == [x["picked"] for x in peer["rounds"]]
                peers.append(peer)
                timing["peer"].append({"seed": seed, "seconds": peer["seconds"]})
                progress.advance(f"[rf peer seed {seed}] done in {peer['seconds']:.1f} s")
            _save(out, cfg, ctx, runs, fulls, peers, timing, t_start, partial=True)
    finally:
        progress.close()
    results = _save(out, cfg, ctx, runs, fulls, peers, timing, t_start, partial=False, plot=plot)
    log(f"simulate: done in {results['timing']['total_seconds']:.1f} s" + (f"; wrote {out / 'results.json'}" if out else ""))
    return results


def full_summary(fulls: Sequence[dict], n_classes: int) -> dict[str, Any] | None:
    """The full-supervision reference of ``results.json`` from the per-seed runs (means over the seeds)."""
    if not fulls:
        return None
    return {
        "steps": fulls[0]["steps"],
        "reference": [f.get("reference", "network") for f in fulls],
        "network_mean_dice": _mean([f.get("network_mean_dice") for f in fulls]),
        "instant_mean_dice": _mean([f.get("instant_mean_dice") for f in fulls]),
        "annotated_slices": fulls[0]["annotated_slices"],
        "annotated_fraction": fulls[0]["annotated_fraction"],
        "mean_dice": _mean([f["mean_dice"] for f in fulls]),
        "miou": _mean([f["miou"] for f in fulls]),
        "dice_per_class": [_mean([f["dice_per_class"][c] for f in fulls]) for c in range(n_classes)],
        "seeds": fulls,
    }


def rechoose_served(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` with every round's served tier chosen again by the current :func:`choose_served` from the
    held-out scores the run recorded (tier 1's, tier 2's on the same voxels, the blend's), and the summary
    recomputed. Exact for a run whose picks do not depend on the served model (``random``, and the peer's
    picks): the choice changes nothing else in a round. Rounds whose choice changed are counted in
    ``config["served_rechosen"]``."""
    out = json.loads(json.dumps(results))
    changed = total = 0
    for run in out.get("runs", []):
        for row in run["rounds"]:
            t = row.get("tiers")
            if not t or t["instant"].get("mean_dice") is None or t["deep"].get("mean_dice") is None:
                continue
            total += 1
            blend = t.get("blend", {}).get("heldout_dice")
            tier, why = serve_rule(t["instant"]["heldout_dice"], t["deep"]["score"], blend, bool(t["instant"].get("deep_features")))
            if tier != t["served"]["tier"]:
                changed += 1
            src = t[tier]
            t["served"] = {"tier": tier, "reason": why, **{k: src.get(k) for k in ("dice_per_class", "mean_dice", "miou")}}
    out["config"]["served_rechosen"] = {"rounds": total, "changed": changed}
    out["summary"] = summarise(out)
    return out


def merge_seed_results(parts: list[dict]) -> dict:
    """One results.json from single-seed runs of the same command (``--seeds 1 --seed-start k``): runs and peers
    concatenated in seed order, the full-supervision reference's means over every seed's, the summary recomputed."""
    parts = sorted(parts, key=lambda r: r["config"]["seed_start"])
    if not parts:
        raise InputError("no seed runs to merge")

    def comparable(cfg: dict) -> dict:
        out = {k: v for k, v in cfg.items() if k not in ("seed_start", "seeds")}
        out["train_config"] = {k: v for k, v in (cfg.get("train_config") or {}).items() if k != "seed"}
        return out

    base = comparable(parts[0]["config"])
    for r in parts[1:]:
        other = comparable(r["config"])
        if other != base:
            diff = sorted(k for k in set(base) | set(other) if base.get(k) != other.get(k))
            raise InputError(f"the seed runs differ in their configuration ({', '.join(diff)}); they cannot be merged: run them with the same arguments")
    merged = dict(parts[0])
    merged["config"] = dict(parts[0]["config"], seeds=sum(r["config"]["seeds"] for r in parts))
    merged["runs"] = [run for r in parts for run in r["runs"]]
    merged["peer"] = [p for r in parts for p in (r.get("peer") or [])]
    fulls = [f for r in parts for f in ((r.get("full_supervision") or {}).get("seeds") or [])]
    merged["full_supervision"] = full_summary(fulls, len(parts[0]["dataset"]["classes"]))
    merged["complete"] = all(r.get("complete", True) for r in parts)
    timing = dict(parts[0].get("timing") or {})
    for key in ("runs", "full_supervision", "peer"):
        timing[key] = [t for r in parts for t in (r.get("timing") or {}).get(key, [])]
    timing["total_seconds"] = max(r["timing"]["total_seconds"] for r in parts)  # they ran at the same time
    timing["per_process_seconds"] = [r["timing"]["total_seconds"] for r in parts]
    merged["timing"] = timing
    merged["summary"] = summarise(merged)
    return merged


def _assemble(cfg: SimulationConfig, ctx: _Context, runs, fulls, peers, timing, t_start) -> dict[str, Any]:
    gt = ctx.gt
    test_lab = gt.labels[ctx.test_mask]
    full = full_summary(fulls, gt.n_classes)
    results = {
        "config": asdict(cfg) | {"axes": ctx.axes, "budget": ctx.budget, "rounds": ctx.n_rounds,
                                 "full_steps": cfg.full_steps or max(1, ctx.total_steps()),
                                 "step_rate": ctx.step_rate, "step_rate_measured": ctx.step_rate_measured,
                                 "round_steps": [ctx.round_steps(r) for r in range(ctx.n_rounds)],
                                 "round_budget_seconds": [ctx.round_budget_seconds(r) for r in range(ctx.n_rounds)],
                                 "instant": ctx.instant.describe() if ctx.instant is not None else None,
                                 "input_norm_reason": ctx.input_norm_reason,
                                 "oracle_detail": ctx.oracle.to_json(),
                                 "train_config": _train_config(cfg, ctx.axes, cfg.seed_start, cfg.steps_per_round, 0).to_json()},
        "dataset": {
            **gt.source,
            "shape": list(gt.shape),
            "image_dtype": str(gt.image.dtype),
            "classes": list(gt.classes),
            "spacing": None if gt.spacing is None else list(gt.spacing),
            "axes": ctx.axes,
            "candidates": len(ctx.candidates),
            "test": {"axis": ctx.split.axis, "every": ctx.split.every, "indices": list(ctx.split.indices),
                     "voxels": int(ctx.test_mask.sum()),
                     "class_fraction": (np.bincount(test_lab, minlength=gt.n_classes + 1)[1:] / max(test_lab.size, 1)).tolist()},
            "total_voxels": ctx.total_voxels,
        },
        "full_supervision": full,
        "runs": runs,
        "peer": peers,
    }
    results["summary"] = summarise(results)
    results["timing"] = dict(timing, total_seconds=time.perf_counter() - t_start,
                             instant_feature_seconds=ctx.instant.feature_seconds if ctx.instant is not None else None)
    return _clean(results)


def _save(out, cfg, ctx, runs, fulls, peers, timing, t_start, *, partial: bool, plot: bool = False) -> dict[str, Any]:
    results = _assemble(cfg, ctx, runs, fulls, peers, timing, t_start)
    results["complete"] = not partial
    if out is not None:
        tmp = out / "results.json.tmp"
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(out / "results.json")
        if plot and not partial:
            from .plot import plot_learning_curves

            plot_learning_curves(results, out / "learning_curves.png")
    return results
