"""Tier 1, instant (issue #11): learning curves of the filter-bank pixel classifier vs the scikit-image forest peer.

On the same picks, oracle and test split as ``al-annotator simulate --peer`` (the ``random`` strategy's picks per
seed, 2 per round up to 8 slices, ScribbleOracle 3 %, test = every 5th slice along the first candidate axis), compares

(a) the existing peer (:mod:`al_annotator.simulate.peer`: 2D ``multiscale_basic_features`` + RandomForest 50 trees),
(b) ours 2D (ilastik filter bank per slice across the coarsest axis),
(c) ours 3D with equal sigmas on every axis,
(d) ours 3D with each axis's sigma scaled by the voxel spacing,

on the Drosophila ssTEM stack (30 x 512 x 512, 50 x 4 x 4 nm) and the synthetic phantom (48 x 96 x 96, isotropic:
there (c) and (d) are the same bank, run once). Reports test-voxel mean Dice / mIoU (median over seeds, seeds listed),
refit and plane-predict times (median), the features cache size, and the live-preview cost: a new stroke arriving ->
refit + probabilities of the 512 x 512 slice it is on, with a warm feature cache.

    .venv/bin/python benchmarks/bench_instant.py --write-md docs/BENCHMARKS.md
    .venv/bin/python benchmarks/bench_instant.py --quick      # EM central 256 x 256, 2 seeds (a few minutes)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EM = Path("/work/shared/data/drosophila_l1_sstem/drosophila_l1_sstem.npz")
if not EM.exists():
    EM = ROOT.parent / "shared" / "data" / "drosophila_l1_sstem" / "drosophila_l1_sstem.npz"
KEY = "bench_instant"
TITLE = "Tier 1, instant: filter-bank pixel classifier (`benchmarks/bench_instant.py`)"
BUDGET, PER_ROUND = 8, 2
VARIANTS = {"2d": "ours 2D", "3d_equal": "ours 3D, equal sigmas", "3d_spacing": "ours 3D, spacing-scaled",
            "3d_octaves": "ours 3D, spacing-scaled, sigmas 1-16, nearest edges",
            "inplane": "ours in-plane 2D, sigmas 1-16, nearest edges", "inplane_rf": "ours in-plane 2D, sigmas 1-16, nearest, RF"}


def log(msg: str) -> None:
    print(msg, flush=True)


def load_em(crop: bool):
    from al_annotator.simulate.data import GroundTruth

    with np.load(EM) as z:
        img, lab = z["image"], z["labels"]
        names = [str(s) for s in z["class_names"]]
        sp = tuple(float(v) for v in z["voxel_size_zyx_nm"])
    if crop:
        img, lab = img[:, 128:384, 128:384], lab[:, 128:384, 128:384]
    return GroundTruth.from_arrays(np.ascontiguousarray(img), np.ascontiguousarray(lab), names, labels_offset=1, spacing=sp,
                                   source={"volume": str(EM), "crop": "[:, 128:384, 128:384]" if crop else None})


def load_phantom(shape=(48, 96, 96)):
    from al_annotator.datasets import make_phantom
    from al_annotator.simulate.data import GroundTruth

    p = make_phantom(shape, seed=0)
    return GroundTruth.from_arrays(p.image, p.labels, p.classes, source={"phantom": f"make_phantom({shape}, seed=0)"})


def context(gt):
    """The simulate context (candidates, test split, window, oracle) exactly as ``simulate --peer`` builds it."""
    from al_annotator.simulate.run import SimulationConfig, _Context

    cfg = SimulationConfig(oracle="scribble", scribble_fraction=0.03, budget=BUDGET, per_round=PER_ROUND, peer=True)
    return _Context(gt, cfg, log)


def replay_rounds(ctx, seed: int):
    """The peer's rounds: per round the picks and the revealed (coords, values), as run_peer draws them."""
    from al_annotator.acquisition import ScoredPool, suggest
    from al_annotator.simulate.peer import PEER_STRATEGY
    from al_annotator.simulate.oracle import slice_rng

    gt = ctx.gt
    annotated = np.zeros(len(ctx.candidates), bool)
    pos = {ref: i for i, ref in enumerate(ctx.candidates)}
    r = 0
    while annotated.sum() < ctx.budget:
        n = min(PER_ROUND, ctx.budget - int(annotated.sum()))
        pool = ScoredPool(ctx.candidates, annotated_mask=annotated)
        picks = [s.ref for s in suggest(pool, PEER_STRATEGY, n=n, seed=seed * 1000 + r)]
        if not picks:
            break
        new = []
        for ref in picks:
            annotated[pos[ref]] = True
            sel = ref.selection()
            lab2d = np.asarray(gt.labels[sel])
            allowed = ~np.asarray(ctx.test_mask[sel])
            mask = ctx.oracle.mask(lab2d, allowed, slice_rng(seed, ref)) & allowed
            ij = np.argwhere(mask)
            coords = np.insert(ij, ref.axis_number, ref.index, axis=1)
            new.append((coords, lab2d[mask].astype(np.int64)))
        yield r, picks, new
        r += 1


def run_peer_seed(ctx, seed: int) -> dict:
    from al_annotator.simulate.peer import run_peer

    res = run_peer(gt=ctx.gt, window=ctx.window, candidates=ctx.candidates, test_refs=ctx.test_refs, test_mask=ctx.test_mask,
                   oracle=ctx.oracle, seed=seed, budget=ctx.budget, per_round=PER_ROUND, n_jobs=2, log=log)
    return {"seed": seed, "rounds": [{k: r[k] for k in ("annotated_slices", "mean_dice", "miou", "train_seconds", "predict_seconds",
                                                         "picked", "annotated_voxels")} | {"predict_plane_seconds": r["predict_seconds"] / len(ctx.test_refs)}
                                     for r in res["rounds"]],
            "feature_seconds": res["feature_seconds"], "seconds": res["seconds"]}


def make_segmenter(gt, variant: str, cache_bytes: int):
    from al_annotator.instant import ILASTIK_SIGMAS, InstantClassifier, InstantSegmenter
    from al_annotator.instant.features import OCTAVE_SIGMAS

    sp = gt.spacing
    coarse = int(np.argmax(sp)) if sp is not None else 0
    kw = {"n_classes": gt.n_classes, "cache_bytes": cache_bytes, "n_jobs": 2}
    old = {"sigmas": ILASTIK_SIGMAS, "boundary": "reflect"}  # the bank before in-plane mode
    if variant == "2d":
        return InstantSegmenter(gt.image, sp, mode="2d", flat_axis=coarse, **old, **kw)
    if variant == "3d_equal":
        return InstantSegmenter(gt.image, None, mode="3d", **old, **kw)
    if variant == "3d_spacing":
        return InstantSegmenter(gt.image, sp, mode="3d", **old, **kw)
    if variant == "3d_octaves":
        return InstantSegmenter(gt.image, sp, mode="3d", sigmas=OCTAVE_SIGMAS, boundary="nearest", **kw)
    if variant in ("inplane", "inplane_rf"):
        clf = InstantClassifier(gt.n_classes, kind="rf", n_jobs=2) if variant == "inplane_rf" else None
        return InstantSegmenter(gt.image, sp, mode="inplane", flat_axis=coarse, sigmas=OCTAVE_SIGMAS, boundary="nearest",
                                classifier=clf, **kw)
    raise ValueError(variant)


def run_ours(ctx, variant: str, seeds, cache_bytes: int) -> dict:
    from al_annotator.simulate.metrics import confusion, scores_from_confusion

    gt = ctx.gt
    seg = make_segmenter(gt, variant, cache_bytes)
    # cold plane: features of the tiles one test plane touches, from nothing
    ref0 = ctx.test_refs[len(ctx.test_refs) // 2]
    t0 = time.perf_counter()
    seg.bank.features(tuple(slice(ref0.index, ref0.index + 1) if a == ref0.axis_number else slice(None) for a in range(3)))
    cold_plane = time.perf_counter() - t0
    cold_tiles = seg.bank.stats["tiles_computed"]
    out = {"variant": variant, "bank": seg.bank.describe(), "tile_bytes": seg.bank.tile_bytes, "cold_plane_seconds": cold_plane,
           "cold_plane_tiles": cold_tiles, "seeds": []}
    for seed in seeds:
        seg.classifier.seed = seed
        coords, values, axes = [], [], []
        rounds = []
        for r, picks, new in replay_rounds(ctx, seed):
            for ref, (c, v) in zip(picks, new):
                coords.append(c)
                values.append(v)
                axes.append(np.full(len(c), ref.axis_number))  # the slice each voxel was labelled on (used in-plane)
            C, V, A = np.concatenate(coords), np.concatenate(values), np.concatenate(axes)
            info = seg.update(coords=C, values=V, axes=A if seg.bank.mode == "inplane" else None)
            cm = np.zeros((gt.n_classes, gt.n_classes), np.int64)
            plane_t = []
            for ref in ctx.test_refs:
                t0 = time.perf_counter()
                p = seg.predict_plane(ref.axis, ref.index)
                plane_t.append(time.perf_counter() - t0)
                cm += confusion(np.asarray(gt.labels[ref.selection()]), p.argmax(0) + 1, gt.n_classes)
            sc = scores_from_confusion(cm)
            n_done = len(picks) + (rounds[-1]["annotated_slices"] if rounds else 0)
            rounds.append({"annotated_slices": int(n_done),
                           "annotated_voxels": int(C.shape[0]), "mean_dice": sc["mean_dice"], "miou": sc["miou"],
                           "dice_per_class": sc["dice_per_class"], "fit_seconds": info["fit_seconds"],
                           "update_seconds": info["seconds"], "features_seconds": info["features_seconds"],
                           "samples": info["samples"], "predict_plane_seconds": float(np.median(plane_t)),
                           "picked": [[p.axis, p.index] for p in picks]})
            log(f"  [{variant} seed {seed}] {rounds[-1]['annotated_slices']} slices, {C.shape[0]} voxels: mean Dice {sc['mean_dice']:.3f} "
                f"mIoU {sc['miou']:.3f} (update {info['seconds']:.2f} s, fit {info['fit_seconds']:.2f} s on {info['samples']}, "
                f"plane {np.median(plane_t):.2f} s)")
        # live preview: one new stroke (<= 300 voxels of the next pick's scribbles) -> refit + its plane (warm cache)
        nxt = next(iter(replay_rounds_after(ctx, seed, rounds)), None)
        if nxt is not None:
            ref, sc_coords, sc_vals = nxt
            stroke = slice(0, min(300, sc_coords.shape[0]))
            C2, V2 = np.concatenate([C, sc_coords[stroke]]), np.concatenate([V, sc_vals[stroke]])
            A2 = np.concatenate([A, np.full(stroke.stop, ref.axis_number)])
            seg.bank.features(tuple(slice(ref.index, ref.index + 1) if a == ref.axis_number else slice(None) for a in range(3)))  # warm
            t0 = time.perf_counter()
            info = seg.update(coords=C2, values=V2, axes=A2 if seg.bank.mode == "inplane" else None)
            seg.predict_plane(ref.axis, ref.index)
            preview = time.perf_counter() - t0
        else:
            preview = None
        out["seeds"].append({"seed": seed, "rounds": rounds, "stroke_to_plane_seconds": preview})
    out["cache_bytes_used"] = seg.bank.cached_bytes
    out["cached_tiles"] = seg.bank.cached_tiles
    out["tiles_total"] = int(np.prod(seg.bank.grid))
    out["feature_compute_seconds"] = seg.bank.stats["compute_seconds"]
    out["plane_shape"] = list(gt.shape[1:])
    return out


def replay_rounds_after(ctx, seed: int, rounds):
    """The first unannotated candidate's scribbles (the 'next stroke' of the live-preview timing)."""
    from al_annotator.simulate.oracle import slice_rng
    from al_annotator.types import SliceRef

    done = {tuple(p) for r in rounds for p in r["picked"]}
    for ref in ctx.candidates:
        if (ref.axis, ref.index) in done or ref.axis != ctx.test_refs[0].axis:
            continue
        sel = ref.selection()
        lab2d = np.asarray(ctx.gt.labels[sel])
        allowed = ~np.asarray(ctx.test_mask[sel])
        mask = ctx.oracle.mask(lab2d, allowed, slice_rng(seed, SliceRef(ref.axis, ref.index))) & allowed
        ij = np.argwhere(mask)
        yield ref, np.insert(ij, ref.axis_number, ref.index, axis=1), lab2d[mask].astype(np.int64)
        return


def _med(xs):
    xs = [x for x in xs if x is not None]
    return float(np.median(xs)) if xs else None


def summarise(method_runs: list[dict]) -> dict:
    n = min(len(s["rounds"]) for s in method_runs)
    curve = []
    for i in range(n):
        rows = [s["rounds"][i] for s in method_runs]
        curve.append({"annotated_slices": rows[0]["annotated_slices"], "mean_dice": _med([r["mean_dice"] for r in rows]),
                      "mean_dice_per_seed": [r["mean_dice"] for r in rows], "miou": _med([r["miou"] for r in rows]),
                      "annotated_fraction_voxels": _med([r["annotated_voxels"] for r in rows])})
    return {"curve": curve,
            "fit_seconds": _med([r.get("fit_seconds", r.get("train_seconds")) for s in method_runs for r in s["rounds"]]),
            "predict_plane_seconds": _med([r["predict_plane_seconds"] for s in method_runs for r in s["rounds"]])}


def run_dataset(name: str, gt, seeds, cache_bytes: int, variants, previous: dict | None = None) -> dict:
    ctx = context(gt)
    log(f"== {name}: {' x '.join(map(str, gt.shape))}, spacing {gt.spacing}, {gt.n_classes} classes, candidates {ctx.axes} "
        f"({len(ctx.candidates)}), test {ctx.split.axis} {list(ctx.split.indices)}, seeds {list(seeds)}")
    res = {"dataset": name, "shape": list(gt.shape), "spacing": gt.spacing, "classes": list(gt.classes), "axes": ctx.axes,
           "test": {"axis": ctx.split.axis, "indices": list(ctx.split.indices)}, "seeds": list(seeds), "methods": {}}
    t0 = time.perf_counter()
    if previous is not None and previous.get("seeds") == list(seeds):  # add variants to an earlier run: its peer's picks
        res["methods"] = dict(previous["methods"])
        peer = res["methods"]["peer"]["runs"]
    else:
        peer = [run_peer_seed(ctx, s) for s in seeds]
        res["methods"]["peer"] = {"runs": peer, "summary": summarise(peer), "seconds": time.perf_counter() - t0}
    for v in variants:
        t0 = time.perf_counter()
        run = run_ours(ctx, v, seeds, cache_bytes)
        # the picks must be the peer's, seed for seed
        for a, b in zip(run["seeds"], peer):
            assert [r["picked"] for r in a["rounds"]] == [r["picked"] for r in b["rounds"]], "picks differ from the peer's"
        run["summary"] = summarise(run["seeds"])
        run["seconds"] = time.perf_counter() - t0
        res["methods"][v] = run
        log(f"  {v}: {run['seconds']:.0f} s, features {run['feature_compute_seconds']:.0f} s, cache {run['cache_bytes_used'] / 2**20:.0f} MiB")
    return res


def table(res: dict) -> str:
    meths = res["methods"]
    budgets = [p["annotated_slices"] for p in meths["peer"]["summary"]["curve"]]
    head = ("| method | " + " | ".join(f"Dice @{b} sl." for b in budgets) + f" | mIoU @{budgets[-1]} | refit (s) | plane predict (s) "
            "| stroke -> plane (s) | features cache |")
    lines = [head, "|---|" + "---:|" * (len(budgets) + 5)]
    label = {"peer": "(a) peer: skimage 2D features + RF 50"} | {k: f"({c}) {VARIANTS[k]}" for k, c in zip(VARIANTS, "bcdefg")}
    for k, m in meths.items():
        s = m["summary"]
        cells = []
        for p in s["curve"]:
            per = ", ".join(f"{d:.3f}" for d in p["mean_dice_per_seed"])
            cells.append(f"**{p['mean_dice']:.3f}** ({per})")
        if k == "peer":
            extra = "-", "-"
        else:
            prev = _med([x["stroke_to_plane_seconds"] for x in m["seeds"]])
            extra = (f"{prev:.2f}" if prev is not None else "-",
                     f"{m['cache_bytes_used'] / 2**20:.0f} MiB ({m['cached_tiles']}/{m['tiles_total']} tiles, {m['bank']['n_features']} features)")
        lines.append(f"| {label[k]} | " + " | ".join(cells) + f" | {s['curve'][-1]['miou']:.3f} | {s['fit_seconds']:.2f} | "
                     f"{s['predict_plane_seconds']:.2f} | {extra[0]} | {extra[1]} |")
    return "\n".join(lines)


def details(res: dict) -> str:
    out = []
    for k in VARIANTS:
        m = res["methods"].get(k)
        if m is None:
            continue
        b = m["bank"]
        out.append(f"- {VARIANTS[k]}: {b['n_features']} features, tile {' x '.join(map(str, b['tile_shape']))} "
                   f"({m['tile_bytes'] / 2**20:.0f} MiB of features), halo {b['halo']}; the first plane from a cold cache "
                   f"took {m['cold_plane_seconds']:.1f} s ({m['cold_plane_tiles']} tiles); all features {m['feature_compute_seconds']:.0f} s.")
    return "\n".join(out)


def verdict(res: dict) -> str:
    """Each of ours minus the peer at equal budget (medians over seeds)."""
    peer = res["methods"]["peer"]["summary"]["curve"]
    out = []
    for k in VARIANTS:
        m = res["methods"].get(k)
        if m is None:
            continue
        d = [(p["annotated_slices"], q["mean_dice"] - p["mean_dice"]) for p, q in zip(peer, m["summary"]["curve"])]
        ahead = sum(x >= 0 for _, x in d)
        out.append(f"- {VARIANTS[k]} minus the peer: " + ", ".join(f"{b} sl. {x:+.3f}" for b, x in d)
                   + f" (not worse at {ahead} of {len(d)} budgets).")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write-md", type=Path)
    ap.add_argument("--quick", action="store_true", help="EM central 256 x 256 crop, 2 seeds")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--only", choices=("em", "phantom"))
    ap.add_argument("--cache-gib", type=float, default=2.5, help="feature cache bound per bank (GiB)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_instant"))
    ap.add_argument("--report-only", action="store_true", help="rewrite the section from --work/results.json of an earlier run")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                    help="run only these and add them to --work/results.json (same seeds: the peer is not rerun)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    seeds = list(range(2 if args.quick else args.seeds))
    cache = int(args.cache_gib * 2**30)
    t_all = time.perf_counter()
    results = {}
    if args.report_only:
        results = json.loads((args.work / "results.json").read_text())
        total = results.pop("total_seconds", None)
    else:
        prev = json.loads((args.work / "results.json").read_text()) if args.variants and (args.work / "results.json").exists() else {}
        if prev:
            results = {k: v for k, v in prev.items() if k != "total_seconds"}
        if args.only in (None, "em"):
            results["em"] = run_dataset("em", load_em(crop=args.quick), seeds, cache, args.variants or list(VARIANTS), prev.get("em"))
        if args.only in (None, "phantom"):
            # isotropic: 3D equal sigmas and spacing-scaled are the same bank
            want = [v for v in (args.variants or list(VARIANTS)) if v != "3d_spacing"]
            results["phantom"] = run_dataset("phantom", load_phantom(), seeds, cache, want, prev.get("phantom"))
        total = time.perf_counter() - t_all
        if prev:
            total = None  # the sections' runs were made at different times
        (args.work / "results.json").write_text(json.dumps(results | {"total_seconds": total}, indent=1, default=float))
        total = total if total is not None else time.perf_counter() - t_all
    parts = []
    for name, res in results.items():
        if name == "total_seconds":
            continue
        parts.append(f"### {name}: {' x '.join(map(str, res['shape']))}, spacing {res['spacing']}, test {res['test']['axis']} "
                     f"{res['test']['indices']}, candidate axes {res['axes']}, seeds {res['seeds']}\n\n{table(res)}\n\n{verdict(res)}\n{details(res)}")
    text = "\n\n".join(parts)
    print(text)
    if total is not None:
        print(f"total {total / 60:.1f} min")
    if args.write_md:
        cmd = "python benchmarks/bench_instant.py" + (" --quick" if args.quick else "") + (f" --only {args.only}" if args.only else "") \
              + (f" --seeds {args.seeds}" if args.seeds != 3 and not args.quick else "")
        cmd += f" --work {args.work}` (run), then `... --report-only --write-md {args.write_md}" if args.report_only else f" --write-md {args.write_md}"
        write_section(args.write_md, KEY, TITLE, DOC_HEAD + (f"\n\nWall time {total / 60:.1f} min." if total else "") + "\n\n" + text + "\n\n" + DOC_TAIL, cmd)


DOC_HEAD = """Same picks, oracle and test split as `al-annotator simulate --peer`: the `random` strategy's picks per seed (2 slices a
round, up to 8), ScribbleOracle (3 % of each picked slice, random-walk strokes of radius 1-2 inside the eroded class
regions, seeded per slice), test = every 5th slice along the first candidate axis (never revealed). Dice / mIoU on every
voxel of the test slices, **median over the seeds** (per-seed values in brackets, seed order). (a) is
`al_annotator.simulate.peer.run_peer` itself (skimage `multiscale_basic_features` per 2D slice in the plane of the
slice, sigma 1-16, RandomForest 50 trees depth 10). (b)-(g) are `al_annotator.instant.InstantSegmenter`, ilastik's six
filter families (Gaussian, LoG, gradient magnitude, DoG, structure-tensor and Hessian eigenvalues), ExtraTrees 50 trees
on at most 16k labelled voxels (stratified), 2 threads, unless stated: (b) per slice across the coarsest axis, (c) 3D
with the same sigma on every axis, (d) 3D with sigma_axis = sigma x min(spacing) / spacing_axis (an axis whose sigma
falls below 0.3 is neither smoothed nor differentiated at that scale), (b)-(d) at ilastik's sigmas 0.3-10 with
reflecting edges; (e) = (d) at the octaves 1, 2, 4, 8, 16 with edge values repeated past the borders (`boundary=
"nearest"`, scikit-image's `gaussian` default); (f) `mode="inplane"`: each labelled voxel gets the 2D features of the
slice it was labelled on and each test plane its own plane's (what the peer does), octaves, nearest; (g) = (f) with a
random forest (50 trees, unlimited depth). `mode="auto"` (the `InstantSegmenter` default now) is (e) for anisotropic
spacing (coarsest/finest >= 2: the EM stack) and (g) otherwise (the phantom). On the isotropic phantom (c), (d) and (e)'s
spacing scaling coincide ((e) is equal-sigma 3D there). Times: refit = `update()` fit (median over rounds and seeds);
plane predict = probabilities of one test plane with the features cached (for (a): the peer's `predict_segmenter` time
per test slice, features precomputed); stroke -> plane = one new stroke (300 voxels of a not-yet-annotated slice's
scribbles) arriving: `update()` with all strokes + `predict_plane` of that slice, warm feature cache: what the live
preview costs. Rows (a)-(d) are the 2026-12-02 15:21 run; (e)-(g) were added to it with `--variants` (same seeds, the
peer's picks asserted equal) at 16:05, load average ~4 on the 2 cores."""

DOC_TAIL = """Notes:

- **Cause of the phantom gap (measured, 3 seeds x 4 budgets, mean Dice over the 12 cells; ablation run with a scratch
  script on the same picks, not in the repository):** three differences between the peer's features and ours, which
  only together close it: (1) the peer computes 2D features **in the plane of the slice each voxel was labelled on**
  (the phantom's picks are z, y and x slices; the test planes are z), (2) its Gaussian **repeats edge values** past the
  borders (`mode="nearest"`) where ours reflected, (3) its **sigmas are the octaves 1..16**, not 0.3..10. The peer's
  own features with its depth-10 forest: 0.757; the same computed with reflecting edges: 0.724; with ilastik's sigmas:
  0.719; Sobel vs Gaussian gradient magnitude (0.757), finite-difference vs exact Gaussian Hessian (0.755), the display
  window vs min-max normalisation (0.758 / 0.758) and unlimited vs depth-10 trees (0.757) did not matter. Our bank
  in-plane, octaves, nearest: 0.731 (ExtraTrees) / 0.751 (RF); in-plane with reflecting edges 0.708, in-plane with
  ilastik's sigmas 0.707; fixed-axis 2D or 3D with octaves and nearest edges 0.717-0.729 (the old 3D: 0.723). The
  classifier is the fourth factor: ExtraTrees on the peer's own features 0.736 vs RF 0.757. The combination 3D +
  in-plane concatenated was only measured with ilastik's sigmas and reflecting edges (0.716, below both alone).
- **Phantom, (g) (the auto choice):** 0.755 mean over the 12 cells vs the peer's 0.754; medians +0.002 / +0.010 /
  +0.001 at 4 / 6 / 8 slices, **-0.064 at 2 slices** (seed 1: 0.688 vs 0.752; seed 0 +0.006, seed 2 -0.023): not
  reached there. (f) (ExtraTrees) is 0.732 mean, (c) 0.723.
- **EM: (e) (the auto choice) is the best row at every budget**, +0.015 to +0.021 over (d) and +0.019 to +0.042 over the
  peer, with fewer features (46 vs 53) so refit 0.8 s and plane 1.1 s (vs 1.5 / 1.6 s); its halo is larger (96 px:
  sigma 16 with the structure tensor's outer scale), so the cold first 512 x 512 plane took 17.3 s (14.8 s for (d)).
  (f) is z-plane 2D here (picks are z only) and also beats the peer at every budget (0.94 s stroke to plane);
  RF (g) on EM is 0.003-0.013 below ExtraTrees (f) and refits in 3.2 s. Whether (e)'s gain comes from the octaves
  or from the nearest edges was not separated (not measured).
- `FeatureBank`'s own defaults (3D, ilastik's sigmas, reflecting edges, which `core/live.py` and `simulate/tiers.py`
  use) are unchanged: in-plane features need the axis of the slice each labelled voxel was painted on
  (`features_at(coords, axes=...)`), which those callers do not pass yet.
- Seed 2's first round (two slices without every class) scores ~0.4 for every method.
- The features cache holds every tile the test and labelled planes touched (here: the whole volume, since the bound,
  `--cache-gib`, is above it; in-plane mode keeps one set of tiles per orientation used: 3 on the phantom); the live
  preview in the product only needs the tiles of the visible plane and of the labelled voxels.
- Machine shared with other sessions' jobs: timings vary with the load."""


if __name__ == "__main__":
    main()
