"""Tier 1 against the RF peer at small budgets, per EM crop, before and after per-section standardisation (issue #11).

The simulator's exact setting for tier 1 alone (``al-annotator simulate --tiers --no-network``): the ``random``
strategy's picks per seed (2 slices a round), the scribble oracle (3 %) or the slice oracle (phantom), test =
every 5th slice along the first candidate axis, ~10 % of the revealed voxels held out as the product holds them
out (``training.holdout.split_voxels``, seed 0); tier 1 is :class:`al_annotator.simulate.tiers.InstantTier`
(the product's live set: ``auto_features(spacing)`` in 3D, ExtraTrees 50 trees on at most 16k voxels, 1 thread),
refitted on every revealed voxel for the test score (what serves), and the RF peer is
:func:`al_annotator.simulate.peer.run_peer` on the same voxels (its picks are asserted equal).

Variants: ``before`` = tier 1 with one intensity mapping for the volume (``section_norm=None``, the product until
this change); ``after`` = the product now (``section_norm="auto"``: every z section standardised where the
sections are imaged at different brightness).

    .venv/bin/python benchmarks/bench_tier1_small.py --work /tmp/bench_tier1 --parts c,q00,q01,q10,q11
    .venv/bin/python benchmarks/bench_tier1_small.py --work /tmp/bench_tier1 --parts full --budget 8
    .venv/bin/python benchmarks/bench_tier1_small.py --work /tmp/bench_tier1 --parts phantom
    .venv/bin/python benchmarks/bench_tier1_small.py --work /tmp/bench_tier1 --report-only --write-md docs/BENCHMARKS.md

Parts: ``c`` the central 256 x 256 of the 30 ssTEM sections (the served benchmark's crop), ``q00`` ... ``q11`` the
four 256 x 256 quadrants, ``full`` the whole 512 x 512 sections, ``phantom`` ``make_phantom((48, 96, 96), seed=0)``.
Results go to ``--work/<part>.json`` (``{"peer": {seed: [Dice per round]}, "before"|"after": {seed: [[test Dice,
held-out Dice] per round]}}``); a rerun adds to them.
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

EM = Path("/work/shared/data/drosophila_l1_sstem/drosophila_l1_sstem.npz")
CROPS = {"c": (slice(128, 384), slice(128, 384)), "q00": (slice(0, 256), slice(0, 256)), "q01": (slice(0, 256), slice(256, 512)),
         "q10": (slice(256, 512), slice(0, 256)), "q11": (slice(256, 512), slice(256, 512)), "full": (slice(None), slice(None))}
CROP_NAMES = {"c": "central 256 x 256 (the served benchmark's crop)", "q00": "quadrant y 0-256, x 0-256",
              "q01": "quadrant y 0-256, x 256-512", "q10": "quadrant y 256-512, x 0-256", "q11": "quadrant y 256-512, x 256-512",
              "full": "whole 512 x 512 sections", "phantom": "phantom 48 x 96 x 96 (slice oracle)"}
VARIANTS = {"before": {"section_norm": None}, "after": {}}
SEED_LIST = (0, 1, 2)


def volume_of(part: str, work: Path) -> tuple[Path, str, int]:
    """(npz path, oracle, labels offset) of a part, written into ``work`` once."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{part}.npz"
    if part == "phantom":
        if not path.exists():
            from al_annotator.datasets import make_phantom

            p = make_phantom((48, 96, 96), seed=0)
            np.savez(path, image=p.image, labels=p.labels, class_names=np.array(p.classes))
        return path, "slice", 0
    if not path.exists():
        ys, xs = CROPS[part]
        with np.load(EM) as z:
            np.savez(path, image=z["image"][:, ys, xs], labels=z["labels"][:, ys, xs], class_names=z["class_names"],
                     voxel_size_zyx_nm=z["voxel_size_zyx_nm"])
    return path, "scribble", 1


def revealed_rounds(gt, candidates, test_mask, oracle, seed: int, budget: int, per_round: int = 2):
    """The peer's (= the ``random`` run's) picks and the oracle's voxels, as ``LabelledSlice`` lists per round."""
    from al_annotator.acquisition import ScoredPool, suggest
    from al_annotator.simulate.oracle import slice_rng
    from al_annotator.training.data import LabelledSlice

    annotated = np.zeros(len(candidates), bool)
    pos = {ref: i for i, ref in enumerate(candidates)}
    rounds, r = [], 0
    while annotated.sum() < budget:
        n = min(per_round, budget - int(annotated.sum()))
        picks = [s.ref for s in suggest(ScoredPool(candidates, annotated_mask=annotated), "random", n=n, seed=seed * 1000 + r)]
        got = []
        for ref in picks:
            annotated[pos[ref]] = True
            sel = ref.selection()
            lab2d = np.asarray(gt.labels[sel])
            allowed = ~np.asarray(test_mask[sel])
            mask = (oracle.scribble(lab2d, allowed, slice_rng(seed, ref))[0] if hasattr(oracle, "scribble")
                    else oracle.mask(lab2d, allowed, slice_rng(seed, ref))) & allowed
            got.append(LabelledSlice(ref, np.zeros(1, np.float32), np.where(mask, lab2d.astype(np.int64) - 1, -1), "annotated"))
        rounds.append(got)
        r += 1
    return rounds


def run_part(part: str, work: Path, budget: int, variants: list[str], peer: bool) -> dict:
    from al_annotator.simulate.data import choose_axes, load_ground_truth, make_test_split
    from al_annotator.simulate.oracle import make_oracle
    from al_annotator.simulate.peer import run_peer
    from al_annotator.simulate.tiers import InstantTier
    from al_annotator.store import create_project
    from al_annotator.training.holdout import split_voxels
    from al_annotator.types import AXES, SliceRef

    path, oracle_kind, offset = volume_of(part, work)
    gt = load_ground_truth(str(path), labels_offset=offset)
    axes = choose_axes(gt.shape, gt.spacing)
    split = make_test_split(gt.shape, axes[0], 5)
    test_mask = split.mask(gt.shape)
    test_set = set(split.indices)
    candidates = [SliceRef(a, i) for a in axes for i in range(gt.shape[AXES.index(a)]) if not (a == split.axis and i in test_set)]
    test_refs = [SliceRef(split.axis, i) for i in split.indices]
    oracle = make_oracle(oracle_kind, 0.03)
    out_path = work / f"{part}.json"
    res = json.loads(out_path.read_text()) if out_path.exists() else {}
    res["meta"] = {"shape": list(gt.shape), "spacing": None if gt.spacing is None else list(gt.spacing), "axes": axes,
                   "oracle": oracle_kind, "budget": budget, "seeds": list(SEED_LIST)}
    per_seed = {s: revealed_rounds(gt, candidates, test_mask, oracle, s, budget) for s in SEED_LIST}
    if peer:
        window = create_project(None, gt.image, classes=gt.classes, spacing=gt.spacing, author="oracle").display_window
        for s in SEED_LIST:
            p = run_peer(gt=gt, window=window, candidates=candidates, test_refs=test_refs, test_mask=test_mask, oracle=oracle,
                         seed=s, budget=budget, per_round=2, log=lambda m: None)
            assert [x["picked"] for x in p["rounds"]] == [[[x.ref.axis, x.ref.index] for x in rd] for rd in per_seed[s]]
            res.setdefault("peer", {})[str(s)] = [x["mean_dice"] for x in p["rounds"]]
            print(f"[{part}] peer seed {s}: " + " ".join(f"{d:.3f}" for d in res["peer"][str(s)]), flush=True)
        out_path.write_text(json.dumps(res, indent=1))
    for v in variants:
        t0 = time.perf_counter()
        tier = InstantTier(gt.image, gt.spacing, gt.n_classes, test_refs, features=VARIANTS[v])
        res.setdefault("describe", {})[v] = tier.bank.describe()
        for s in SEED_LIST:
            samples, rows = [], []
            for rd in per_seed[s]:
                samples = samples + rd
                train, held = split_voxels(samples, fraction=0.1, seed=0)
                o = tier.run_round(train, held, gt.labels, s)
                rows.append([o["test"] and o["test"]["mean_dice"], o["heldout_dice"]])
            res.setdefault(v, {})[str(s)] = rows
            print(f"[{part}] {v} seed {s}: " + " ".join("-" if d[0] is None else f"{d[0]:.3f}" for d in rows), flush=True)
        print(f"[{part}] {v}: {time.perf_counter() - t0:.0f} s", flush=True)
        out_path.write_text(json.dumps(res, indent=1))
    return res


def _med(xs):
    xs = [x for x in xs if x is not None]
    return float(np.median(xs)) if xs else None


def part_table(res: dict) -> tuple[str, list[str]]:
    n = len(res["peer"]["0"])
    seeds = [str(s) for s in SEED_LIST]
    lines = ["| slices | RF peer | tier 1 before | before - peer | tier 1 after | after - peer | after - before |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    notes = []
    for r in range(n):
        peer = [res["peer"][s][r] for s in seeds]
        cells = {}
        for v in ("before", "after"):
            cells[v] = [res[v][s][r][0] if v in res else None for s in seeds]
        mp, mb, ma = _med(peer), _med(cells["before"]), _med(cells["after"])

        def fmt(m, xs):
            return "-" if m is None else f"{m:.3f} ({', '.join('-' if x is None else f'{x:.3f}' for x in xs)})"

        def d(a, b):
            return "-" if a is None or b is None else f"{a - b:+.3f}"

        lines.append(f"| {2 * (r + 1)} | {fmt(mp, peer)} | {fmt(mb, cells['before'])} | {d(mb, mp)} | {fmt(ma, cells['after'])} | "
                     f"{d(ma, mp)} | {d(ma, mb)} |")
    for v in ("before", "after"):
        if v in res:
            diffs = [_med([res[v][s][r][0] for s in seeds]) - _med([res["peer"][s][r] for s in seeds]) for r in range(n)]
            ok = sum(x >= -0.01 for x in diffs)
            notes.append(f"{v}: >= peer - 0.01 at {ok} of {n} budgets (worst {min(diffs):+.3f}), at the largest {diffs[-1]:+.3f}")
    return "\n".join(lines), notes


def report(work: Path, md: Path, command: str, extra: str = "") -> None:
    parts = [p for p in ("c", "q00", "q01", "q10", "q11", "full", "phantom") if (work / f"{p}.json").exists()]
    body = [extra.strip()]
    for p in parts:
        res = json.loads((work / f"{p}.json").read_text())
        if "peer" not in res:
            continue
        tab, notes = part_table(res)
        m = res["meta"]
        desc = res.get("describe", {}).get("after", {})
        body.append(f"### {p}: {CROP_NAMES[p]}, {' x '.join(map(str, m['shape']))}, oracle {m['oracle']}, seeds 0..2\n\n"
                    "Test mean Dice, median over seeds (per-seed values in brackets, seed order).\n\n" + tab + "\n\n"
                    + "\n".join(f"- {x}" for x in notes)
                    + (f"\n- after: {desc.get('section_reason')}" if desc else ""))
    write_section(md, "bench_tier1_small_budget", "Tier 1 at small budgets vs the RF peer, per crop (`benchmarks/bench_tier1_small.py`)",
                  "\n\n".join(b for b in body if b), command)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_tier1"))
    ap.add_argument("--parts", default="c,q00,q01,q10,q11")
    ap.add_argument("--budget", type=int, default=16)
    ap.add_argument("--variants", default="before,after")
    ap.add_argument("--no-peer", action="store_true", help="keep the peer's figures of an earlier run")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--write-md", type=Path)
    ap.add_argument("--notes", type=Path, help="a markdown file whose text goes into the section before the tables")
    a = ap.parse_args()
    if not a.report_only:
        for part in a.parts.split(","):
            run_part(part, a.work, a.budget, [v for v in a.variants.split(",") if v], not a.no_peer)
    if a.write_md:
        extra = a.notes.read_text() if a.notes else ""
        report(a.work, a.write_md, "python benchmarks/bench_tier1_small.py --work /tmp/bench_tier1 --parts c,q00,q01,q10,q11 "
               "(then --parts full --budget 8, --parts phantom), then --report-only --write-md docs/BENCHMARKS.md", extra)


if __name__ == "__main__":
    main()
