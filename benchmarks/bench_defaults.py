"""Training defaults that need no recipe (issue #11): the old defaults, the README's EM recipe and ``auto``.

Trains HRNet-W18-small (same initial weights per seed for every arm) for two rounds of ``--steps`` steps
(optimizer carried over, as the trainer's rounds are) with

  (i)   the old defaults: ``input_norm="window"``, lr 1e-3;
  (ii)  the hand recipe the README asked EM users to type: ``input_norm="slice"``, lr 3e-3;
  (iii) ``auto``: ``training.data.choose_input_norm`` on the volume and ``LR_FRESH`` (what the trainer does at the
        start of a run on fresh weights),
  (iv)  ``range``: the same normalisation and the lr ``training.fit.lr_range_test`` picks on the labelled slices
        (measured, not adopted),

on (a) the central 256 x 256 of the ssTEM stack with 3 % scribbles (the simulator's ``ScribbleOracle``) on 8 random
candidate z slices and (b) the 48 x 96 x 96 phantom with 4 whole z slices (``SliceOracle``); test = every 5th z slice
(``simulate.data.make_test_split``), never revealed. Reports test-voxel mean Dice after each round, medians over seeds,
and the section-shift measurement behind ``input_norm="auto"`` on every volume at hand. Section ``bench_defaults``.

    nice -n 19 .venv/bin/python benchmarks/bench_defaults.py --seeds 3 --write-md docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import write_section  # noqa: E402

EM = Path("/work/shared/data/drosophila_l1_sstem/drosophila_l1_sstem.npz")
MICROCT = Path("/work/shared/data/qim3d_microct/qim3d_microct.npz")
EM_ROI = (slice(None), slice(128, 384), slice(128, 384))
PHANTOM_SHAPE = (48, 96, 96)
ARMS = {"old defaults (window, 1e-3)": ("window", 1e-3), "hand recipe (slice, 3e-3)": ("slice", 3e-3), "auto": ("auto", "auto"),
        "range test (not adopted)": ("auto", "range")}
SHORT = ("old", "recipe", "auto", "range")


def _window(image: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(image[::2, ::2, ::2], [0.5, 99.5])  # as the store's display window
    return float(lo), float(hi)


def load_part(name: str):
    from al_annotator.datasets import make_phantom
    from al_annotator.simulate.data import GroundTruth

    if name == "em":
        with np.load(EM) as z:
            return GroundTruth.from_arrays(z["image"][EM_ROI], z["labels"][EM_ROI], [str(c) for c in z["class_names"]], labels_offset=1)
    p = make_phantom(PHANTOM_SHAPE, seed=0)
    return GroundTruth.from_arrays(p.image, p.labels, p.classes)


def reveal_slices(gt, part: str, seed: int):
    """A store holding what the oracle reveals on the picked z slices, and the test split."""
    from al_annotator.simulate.data import make_test_split
    from al_annotator.simulate.oracle import make_oracle, reveal
    from al_annotator.store import create_project
    from al_annotator.types import SliceRef

    split = make_test_split(gt.shape, "z", 5)
    test_mask = split.mask(gt.shape)
    cands = [i for i in range(gt.shape[0]) if i not in split.indices]
    n, oracle = (8, make_oracle("scribble", 0.03)) if part == "em" else (4, make_oracle("slice"))
    picks = sorted(int(i) for i in np.random.default_rng(1000 + seed).choice(cands, n, replace=False))
    store = create_project(None, gt.image, classes=gt.classes)
    revealed = np.zeros(gt.shape, bool)
    for z in picks:
        reveal(store, oracle, SliceRef("z", z), gt.labels, test_mask, revealed, seed)
    return store, split, picks, int(revealed.sum())


def test_dice(model, gt, split, window, norm) -> float:
    import torch

    from al_annotator.models import predict_proba_slices
    from al_annotator.simulate.metrics import evaluate_labels
    from al_annotator.training.data import normalise

    idx = list(split.indices)
    probs, _ = predict_proba_slices(model, normalise(gt.image[idx], window, norm), batch_size=8, device=torch.device("cpu"))
    pred = probs.argmax(1) + 1
    return evaluate_labels(gt.labels[idx], pred, np.ones(pred.shape, bool), gt.n_classes)["mean_dice"]


def run_arm(gt, store, split, arm, seed: int, steps: int, crop: int, batch: int) -> dict:
    import torch

    from al_annotator.models import create_model
    from al_annotator.training.config import TrainConfig
    from al_annotator.training.data import choose_input_norm, collect_labelled_slices
    from al_annotator.training.fit import lr_range_test, train_round

    norm, lr = arm
    window = store.display_window
    out: dict = {}
    t0 = time.perf_counter()
    if norm == "auto":
        norm, why = choose_input_norm(gt.image, window)
        out["input_norm_why"] = why
    samples = collect_labelled_slices(store, norm)
    cfg = TrainConfig(device="cpu", steps_per_round=steps, max_seconds_per_round=1e9, batch_size=batch, crop=crop, threads=1,
                      input_norm=norm, lr=lr)
    torch.manual_seed(seed)
    model = create_model("hrnet_w18_small", n_classes=gt.n_classes, dropout=cfg.dropout)
    if lr == "auto":
        from al_annotator.training.config import LR_FRESH

        lr = LR_FRESH
        out["lr_why"] = f"lr={LR_FRESH:g}: fresh weights"
    if lr == "range":
        test = lr_range_test(model, samples, cfg, device=torch.device("cpu"), seed=seed)
        lr = test["lr"]
        out |= {"lr_why": test["reason"], "range_test_seconds": test["seconds"], "range_test_losses": test["losses"]}
    from dataclasses import replace

    cfg = replace(cfg, lr=lr)
    out |= {"input_norm": norm, "lr": lr, "dice": [], "train_seconds": []}
    opt = None
    for r in range(2):
        res, opt = train_round(model, samples, cfg, device=torch.device("cpu"), optimizer=opt, seed=seed * 100 + r)
        out["train_seconds"].append(res.seconds)
        out["dice"].append(test_dice(model, gt, split, window, norm))
    out["seconds"] = time.perf_counter() - t0
    return out


def shift_table() -> str:
    from al_annotator.datasets import load_demo, make_phantom
    from al_annotator.training.data import SECTION_SHIFT_SLICE, choose_input_norm, section_shift

    vols = []
    with np.load(EM) as z:
        vols += [("ssTEM stack (30 x 512 x 512)", z["image"]), ("ssTEM central 256^2", z["image"][EM_ROI])]
    with np.load(MICROCT) as z:
        vols += [(f"qim3d micro-CT {k} {'x'.join(map(str, z[k].shape))}", z[k]) for k in z.files if z[k].ndim == 3]
    vols += [("demo volume (qim3d bone)", load_demo("bone").image), ("phantom 48 x 96 x 96", make_phantom(PHANTOM_SHAPE, seed=0).image)]
    rows = ["| volume | section shift (max over axes) | axis | auto picks | seconds |", "|---|---:|---|---|---:|"]
    for name, img in vols:
        t = time.perf_counter()
        w = _window(img)
        s, a = section_shift(img, w)
        norm, _ = choose_input_norm(img, w)
        rows.append(f"| {name} | {s:.3f} | {a} | {norm} | {time.perf_counter() - t:.2f} |")
    return "\n".join(rows) + f"\n\nThreshold `SECTION_SHIFT_SLICE` = {SECTION_SHIFT_SLICE}."


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=80, help="steps per round (two rounds)")
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--only", choices=("em", "phantom"))
    ap.add_argument("--reuse-identical", action="store_true",
                    help="where auto resolves to exactly another arm's values, reuse that arm's run (the training is "
                         "deterministic given the seed) instead of training it again")
    ap.add_argument("--arms", default="old,recipe,auto", help="which arms to run: old, recipe, auto (results accumulate in --json)")
    ap.add_argument("--json", default="/tmp/bench_defaults.json")
    ap.add_argument("--write-md")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    parts = [args.only] if args.only else ["em", "phantom"]
    # --json A,B,...: results are read from all, written to A (parallel runs write separate files)
    out_json, *more = args.json.split(",")
    results: dict = {}
    for f in more[::-1] + [out_json]:
        if Path(f).exists():
            results |= json.loads(Path(f).read_text())
    t_all = time.perf_counter()
    for part in parts:
        gt = load_part(part)
        for seed in range(args.seeds):
            store, split, picks, nrev = reveal_slices(gt, part, seed)
            done: dict = {n: results[f"{part}/{seed}/{n}"] for n in ARMS if f"{part}/{seed}/{n}" in results}
            for (name, arm), short in zip(ARMS.items(), SHORT):
                key = f"{part}/{seed}/{name}"
                if short not in args.arms.split(",") and key not in results:
                    continue
                if key in results:
                    done[name] = results[key]
                    continue
                if arm[0] == "auto" and args.reuse_identical:
                    from al_annotator.training.data import choose_input_norm
                    from al_annotator.training.data import collect_labelled_slices
                    from al_annotator.training.config import TrainConfig
                    from al_annotator.training.fit import lr_range_test
                    from al_annotator.models import create_model

                    norm, why = choose_input_norm(gt.image, store.display_window)
                    torch.manual_seed(seed)
                    model = create_model("hrnet_w18_small", n_classes=gt.n_classes, dropout=0.1)
                    cfg = TrainConfig(device="cpu", steps_per_round=args.steps, batch_size=args.batch_size, crop=args.crop,
                                      threads=1, input_norm=norm)
                    if arm[1] == "range":
                        test = lr_range_test(model, collect_labelled_slices(store, norm), cfg, device=torch.device("cpu"), seed=seed)
                    else:
                        from al_annotator.training.config import LR_FRESH

                        test = {"lr": LR_FRESH, "reason": f"lr={LR_FRESH:g}: fresh weights", "seconds": 0.0, "losses": {}}
                    same = [n for n, (a_norm, a_lr) in ARMS.items() if (a_norm, a_lr) == (norm, test["lr"])]
                    if not same:  # the range test's runs that resolved to the same values
                        same = [n for n in done if n != name and "dice" in done[n] and "reused" not in done[n]
                                and (done[n]["input_norm"], done[n]["lr"]) == (norm, test["lr"])]
                    if same:  # the run would repeat that arm's (deterministic); its Dice is filled in by the report
                        r = {"input_norm": norm, "lr": test["lr"], "input_norm_why": why, "lr_why": test["reason"],
                             "range_test_seconds": test["seconds"], "range_test_losses": test["losses"], "reused": same[0]}
                        results[key] = done[name] = r
                        print(f"{key}: resolved to {norm}, {test['lr']:g} = {same[0]}: reused", flush=True)
                        Path(out_json).write_text(json.dumps(results, indent=1))
                        continue
                r = run_arm(gt, store, split, arm, seed, args.steps, args.crop, args.batch_size)
                r |= {"picks": picks, "revealed_voxels": nrev}
                results[key] = done[name] = r
                Path(out_json).write_text(json.dumps(results, indent=1))
                print(f"{key}: {r['input_norm']}, lr {r['lr']:g}: dice {[round(d, 3) for d in r['dice']]} "
                      f"({r['seconds']:.0f} s){' ' + r.get('lr_why', '') if 'lr_why' in r else ''}", flush=True)
            store.close()
    body = report(results, args)
    print(body)
    if args.write_md:
        body = (shift_table() + "\n\n" + body + "\n\n" + NOTE).rstrip()
        cmd = "nice -n 19 .venv/bin/python benchmarks/bench_defaults.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_section(args.write_md, "bench_defaults", "Training defaults with no recipe (input_norm and lr auto)", body, cmd)
    print(f"total {time.perf_counter() - t_all:.0f} s", file=sys.stderr)
    return 0


NOTE = """An arm whose values equal another arm's is not trained twice ("reused"): the training is deterministic given
the seed and 1 thread (the phantom's old-defaults and recipe arms, run in two processes, gave identical Dice). So on EM
`auto` (slice, 3e-3 from fresh weights) *is* the hand recipe, and on the phantom (window, 3e-3) it is the run the range
test also chose. The range test (arm iv: 8 steps each at 1e-3 and 3e-3 from the same weights and crops, lowest loss over
steps 5-8) picked 1e-3 on every EM seed, 0.07 below 3e-3 at 160 steps (median); that is why `lr="auto"` is the
rule `LR_FRESH` / `LR_RESUMED` (3e-3 from fresh weights, 1e-3 when fine-tuning a checkpoint or pretrained weights; the
latter not measured here) rather than the test. Seconds per run are not comparable: load average 5-8 from other jobs.
The training runs were three parallel invocations (`--seeds 3 --steps 80` with `--arms old,recipe`; `--only phantom
--arms old,recipe,auto --reuse-identical`; `--only em --arms auto --reuse-identical`, `auto` then being the range test,
since renamed arm iv), merged into one JSON; the command above adds arm iii to it and writes this section."""


def report(results: dict, args) -> str:
    s1, s2 = args.steps, 2 * args.steps
    results = dict(results)
    for k, r in list(results.items()):
        if "reused" in r:
            other = results.get(k.rsplit("/", 1)[0] + "/" + r["reused"])
            if other is None or "dice" not in other:
                del results[k]
                continue
            results[k] = r | {"dice": other["dice"]}
    lines = [f"Test-voxel mean Dice after {s1} and {s2} steps (two rounds of {s1}, optimizer carried; batch {args.batch_size}, "
             f"crop {args.crop}, 1 torch thread), median over seeds, [min - max] in brackets; EM = central 256^2, 3 % scribbles "
             "on 8 random z slices; phantom = 4 whole z slices; test = every 5th z slice.", "",
             f"| part | arm | seeds | Dice @{s1} | Dice @{s2} | resolved (auto) |", "|---|---|---:|---|---|---|"]
    for part in ("em", "phantom"):
        for name in ARMS:
            rs = [v for k, v in results.items() if k.startswith(f"{part}/") and k.endswith(f"/{name}")]
            if not rs:
                continue
            cells = []
            for i in range(2):
                d = [r["dice"][i] for r in rs]
                cells.append(f"{np.median(d):.3f} [{min(d):.3f} - {max(d):.3f}]")
            res = ""
            if name in ("auto", "range test (not adopted)"):
                picks = sorted({f"{r['input_norm']}, {r['lr']:g}" for r in rs})
                reused = sum("reused" in r for r in rs)
                res = " / ".join(picks)
                if name != "auto":
                    res += f"; range test {np.median([r['range_test_seconds'] for r in rs]):.0f} s median"
                res += f"; {reused} run(s) identical to another arm's, reused" if reused else ""
            lines.append(f"| {part} | {name} | {len(rs)} | {cells[0]} | {cells[1]} | {res} |")
    lines += ["", "Per seed (Dice @%d / @%d):" % (s1, s2), ""]
    for k, r in sorted(results.items()):
        lines.append(f"- {k}: {r['dice'][0]:.3f} / {r['dice'][1]:.3f} ({r['input_norm']}, lr {r['lr']:g})"
                     + (f"; {r['lr_why']}" if "lr_why" in r else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
