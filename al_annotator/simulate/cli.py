"""``al-annotator simulate`` (registered into the main CLI; imports no torch at parse time)."""

from __future__ import annotations

import argparse
from typing import Any, Callable

__all__ = ["register", "config_from_args"]

EPILOG = """\
examples:
  # the ssTEM stack (labels 0=other,1=membrane,2=mitochondria: 0 is a real class, so --labels-offset 1)
  al-annotator simulate --volume drosophila_l1_sstem.npz --labels-offset 1 --strategy entropy,foreground_random --out sim_em
  # scribbles instead of complete slices, 2 seeds, the random-forest peer
  al-annotator simulate --volume vol.npz --strategy hybrid --oracle scribble --seeds 2 --peer --out sim
  # the product as it serves: tier 1 + tier 2 each round, the better on held-out voxels served; the network
  # trains 60 s per slice the expert scribbled (steps = seconds x the step rate measured at the start)
  al-annotator simulate --volume vol.npz --strategy random --oracle scribble --tiers --seconds-per-slice 60 --peer --out sim

Writes OUT/results.json (config, dataset, full_supervision, runs[].rounds[], peer, summary) and
OUT/learning_curves.png.
"""


def _lr_arg(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive learning rate or 'auto', got {text!r}")
    return v


def register(sub: Any, command: Callable) -> None:
    from ..cli import float_arg, int_arg

    p = sub.add_parser(
        "simulate",
        help="simulate active learning with a ground-truth oracle and plot learning curves",
        description="Simulate annotation rounds: an oracle reveals the ground truth of the slices each strategy picks; "
        "the network is fine-tuned each round and evaluated on held-out test slices.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--volume", required=True, help=".npz (key --volume-key, default 'image'), .npy, .tif or a project directory")
    p.add_argument("--labels", help="complete ground truth: .npz (key --labels-key, default 'labels'), .npy, .tif or a project "
                   "(default: the --volume file when it is an .npz or a project)")
    p.add_argument("--volume-key", help="array name in a volume .npz (default image)")
    p.add_argument("--labels-key", help="array name in a labels .npz (default labels)")
    p.add_argument("--labels-offset", type=int_arg(-255, 255), default=0,
                   help="added to the labels so that classes are 1..C; use 1 when 0 is a real class (e.g. the ssTEM npz)")
    p.add_argument("--classes", help="comma-separated class names (default: the file's class_names, else class1..classC)")
    p.add_argument("--spacing", help="voxel spacing Z,Y,X (default: from the file); used to choose --axes")
    p.add_argument("--strategy", default="hybrid", help="one or more, comma-separated: random, foreground_random, least_confidence, "
                   "margin, entropy, bald, coreset, hybrid (default hybrid)")
    p.add_argument("--budget", type=int_arg(1), default=12, help="slices revealed in all (default 12)")
    p.add_argument("--per-round", type=int_arg(1), default=2, help="slices picked per round (default 2)")
    p.add_argument("--seeds", type=int_arg(1), default=1, help="number of seeds, 0..N-1 (default 1)")
    p.add_argument("--seed-start", type=int_arg(0), default=0, help="first seed (default 0)")
    p.add_argument("--oracle", choices=("slice", "scribble"), default="slice",
                   help="slice: the full ground truth of a picked slice; scribble: sparse brush strokes inside each class")
    p.add_argument("--scribble-fraction", type=float_arg(0, 1, lo_open=True), default=0.03, help="scribble oracle: share of a slice's voxels painted (default 0.03)")
    p.add_argument("--axes", help="candidate axes, e.g. z or zyx (default: z-like coarse axis for anisotropic volumes, else zyx)")
    p.add_argument("--test-every", type=int_arg(2), default=5, help="hold out every Nth slice along the first candidate axis (default 5)")
    p.add_argument("--steps-per-round", type=int_arg(1), default=30, help="training steps per round, the same for every strategy (default 30)")
    p.add_argument("--crop", type=int_arg(32), default=256, help="training crop size (default 256)")
    p.add_argument("--batch-size", type=int_arg(1), default=8)
    p.add_argument("--lr", type=_lr_arg, default="auto",
                   help="AdamW learning rate, or auto (default: a short range test on the first round's labels, as the trainer does)")
    p.add_argument("--input-norm", default="auto", choices=("auto", "window", "slice"),
                   help="network input: auto (default: chosen from the volume, as the trainer does), the display window, or "
                   "every slice standardised on its own mean and spread")
    p.add_argument("--model", default="hrnet_w18_small")
    p.add_argument("--mc-samples", type=int_arg(0), default=8, help="MC-dropout samples when predicting for the bald strategy (default 8)")
    p.add_argument("--full-steps", type=int_arg(1), help="steps of the full-supervision reference (default: rounds x steps-per-round)")
    p.add_argument("--no-full", action="store_true", help="skip the full-supervision reference")
    p.add_argument("--peer", action="store_true", help="also run the scikit-image random-forest peer on the random strategy's picks")
    p.add_argument("--peer-max-samples", type=int_arg(1), default=200_000, help="the forest is fitted on at most this many revealed voxels")
    g = p.add_argument_group("served mode and compute budget (issue #11)")
    g.add_argument("--tiers", action="store_true",
                   help="also fit tier 1 (the instant classifier) each round and evaluate tier 1, tier 2 and the served system "
                   "(the tier with the higher Dice on the held-out labelled voxels)")
    g.add_argument("--no-network", dest="network", action="store_false",
                   help="--tiers: tier 1 alone serves and ranks the picks (no network is trained: fast; the product before a deep model)")
    g.add_argument("--no-deep-features", dest="deep_features", action="store_false",
                   help="--tiers: tier 1 on the filter bank alone (default: it also gets the trained network's features)")
    g.add_argument("--no-blend", dest="blend", action="store_false",
                   help="--tiers: do not offer the blend of the tiers (mean of their probabilities) as a third choice to serve")
    g.add_argument("--acquire-from", choices=("served", "network"), default="served",
                   help="--tiers: rank the next picks with the served model's scores, as the product does (default), or the network's")
    g.add_argument("--holdout", type=float_arg(0, 0.5, lo_open=True), default=0.1, dest="holdout_fraction",
                   help="--tiers: share of the revealed voxels held out (whole strokes, blocks of large regions) to score the tiers (default 0.1)")
    g.add_argument("--val-every", type=int_arg(0), default=5,
                   help="--tiers: the trainer holds out 1 in N annotated slices for validation once N are annotated, as the "
                   "worker does (default 5; 0: none)")
    g.add_argument("--seconds-per-round", type=float_arg(0, lo_open=True),
                   help="train the network this many seconds per round (the expert's annotation time), instead of --steps-per-round")
    g.add_argument("--seconds-per-slice", type=float_arg(0, lo_open=True),
                   help="train the network this many seconds per slice revealed in the round (e.g. 60, the time an expert "
                   "spends on a scribbled slice)")
    g.add_argument("--step-rate", type=float_arg(0),
                   help="training steps per second that converts seconds to steps (default: measured once at the start, recorded)")
    g.add_argument("--seconds-per-stroke", type=float_arg(0), default=3.0, help="annotation cost of one scribble stroke (default 3 s)")
    g.add_argument("--cost-per-slice", type=float_arg(0), default=60.0,
                   help="annotation cost of one complete slice, slice oracle (default 60 s)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int_arg(1), help="torch threads (default: torch's choice)")
    p.add_argument("--no-plot", action="store_true", help="do not write learning_curves.png")
    p.add_argument("--out", required=True, help="output directory (results.json, learning_curves.png)")
    command("simulate")(_simulate)


def config_from_args(args: argparse.Namespace):
    from .run import SimulationConfig

    strategies = tuple(s.strip() for s in args.strategy.split(",") if s.strip())
    return SimulationConfig(
        strategies=strategies, budget=args.budget, per_round=args.per_round, seeds=args.seeds, seed_start=args.seed_start,
        oracle=args.oracle, scribble_fraction=args.scribble_fraction, axes=args.axes, test_every=args.test_every,
        steps_per_round=args.steps_per_round, crop=args.crop, batch_size=args.batch_size, lr=args.lr, input_norm=args.input_norm, model=args.model,
        mc_samples=args.mc_samples, full_supervision=not args.no_full, full_steps=args.full_steps, peer=args.peer,
        peer_max_samples=args.peer_max_samples, device=args.device, threads=args.threads,
        tiers=args.tiers, holdout_fraction=args.holdout_fraction, val_every=args.val_every, seconds_per_round=args.seconds_per_round,
        seconds_per_slice=args.seconds_per_slice, step_rate=args.step_rate, seconds_per_stroke=args.seconds_per_stroke,
        cost_per_slice=args.cost_per_slice, network=args.network, blend=args.blend, deep_features=args.deep_features, acquire_from=args.acquire_from,
    )


def _simulate(args: argparse.Namespace) -> int:
    from .data import load_ground_truth
    from .run import run_simulation

    cfg = config_from_args(args)
    cfg.validate()  # before loading anything big
    gt = load_ground_truth(args.volume, args.labels, volume_key=args.volume_key, labels_key=args.labels_key,
                           labels_offset=args.labels_offset, classes=args.classes, spacing=args.spacing)
    results = run_simulation(gt, cfg, args.out, plot=not args.no_plot)
    print()
    print(f"{'strategy':<34}{'final Dice':>11}{'x full':>8}{'slices@90%':>12}{'slices@95%':>12}{'voxels@95%':>12}")
    for name, s in results["summary"].items():
        def fmt(v, f="{:.3f}"):
            return "-" if v is None else f.format(v)
        print(f"{name:<34}{fmt(s['final_mean_dice']):>11}{fmt(s['relative_to_full'], '{:.2f}'):>8}{fmt(s['budget_to_90pct'], '{}'):>12}"
              f"{fmt(s['budget_to_95pct'], '{}'):>12}{fmt(s['fraction_voxels_at_95pct'], '{:.3%}'):>12}")
    if cfg.tiers:
        from .report import served_table

        print()
        print(served_table(results))
    full = results.get("full_supervision")
    if full:
        print(f"full supervision: mean Dice {full['mean_dice']:.3f} ({full['annotated_slices']} slices, {full['steps']} steps)")
    t = results["timing"]
    per_run = [r["seconds"] for r in t["runs"]]
    print(f"time: {t['total_seconds']:.1f} s in all; {len(per_run)} runs, {sum(per_run) / max(len(per_run), 1):.1f} s per run"
          + (f"; full supervision {sum(x['seconds'] for x in t['full_supervision']):.1f} s" if t["full_supervision"] else "")
          + (f"; peer {sum(x['seconds'] for x in t['peer']):.1f} s" if t["peer"] else ""))
    print(f"wrote {args.out}/results.json" + ("" if args.no_plot else f" and {args.out}/learning_curves.png"))
    return 0
