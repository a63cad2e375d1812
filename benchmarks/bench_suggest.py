"""Commit to suggestions ranked by the served model (issue #11: <= 10 s on the 128^3 demo, <= 30 s at 512^3).

An expert paints strokes on a slice, one every ``--gap`` seconds (tier 1 refits after each, as it
runs live), and commits it (``Session.mark_annotated``). Timed: from the commit until the
``Session``'s queue is re-ranked with the served model's scores, i.e. ``suggestions_changed``
delivers a queue whose every item was ranked by tier 1's fit that includes the last stroke
(``model_version == "instant:SEQ"`` with ``SEQ`` the fitted edit-log position, and scored by that
fit only: ``LivePreview.candidates(fresh_only=True)``). The front end's timer is played by calling
``Session.take_previews()`` every 0.1 s, as both front ends do. Tier 1 serves (no deep version on
this project); a real tier-2 trainer trains on a project of its own meanwhile
(``benchmarks/trainer_load.py``; ``--no-trainer`` leaves it out).

Volumes: the bundled real micro-CT demo (``bone``, 128^3, the ``al-annotator demo`` project) and the
same scan upsampled to 512^3 (each voxel repeated 4 x 4 x 4). Strokes: short lines of pixels on
either side of the slice's Otsu threshold (background / bone), seeded.

    python benchmarks/bench_suggest.py --write-md docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import write_section  # noqa: E402

COMMAND = "python benchmarks/bench_suggest.py --write-md docs/BENCHMARKS.md"


def strokes_of(plane: np.ndarray, n: int, rng: np.random.Generator, length: int) -> list[tuple[np.ndarray, int]]:
    """``n`` horizontal line strokes (flat indices, class value) alternating background (1) and bone (2)."""
    from skimage.filters import threshold_otsu

    h, w = plane.shape
    fg = plane > threshold_otsu(plane)
    out = []
    for k in range(n):
        value = 1 + k % 2
        mask = fg if value == 2 else ~fg
        pts = np.argwhere(mask)
        r, c = pts[rng.integers(len(pts))]
        cols = np.arange(c, min(w, c + length))
        cols = cols[mask[r, cols]]  # stay inside the class
        rows = np.clip(np.concatenate([np.full(cols.size, r), np.full(cols.size, min(h - 1, r + 1))]), 0, h - 1)
        cols = np.concatenate([cols, cols])
        out.append((np.unique(rows * w + cols), value))
    return out


def pump(session, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        session.take_previews()
        time.sleep(0.1)


def measure(project: Path, refs: list, n_strokes: int, gap: float, timeout: float, seed: int) -> dict:
    from al_annotator.core import Session

    s = Session.open(project, live_preview=True)
    rng = np.random.default_rng(seed)
    ranked: list[tuple[float, list]] = []
    s.suggestions_changed.connect(lambda q: ranked.append((time.perf_counter(), [i.suggestion.model_version for i in q])))
    rows = []
    t_open = time.perf_counter()
    try:
        for ref in refs:
            s.goto(ref)
            plane = np.asarray(s.image(ref), np.float32)
            for idx, value in strokes_of(plane, n_strokes, rng, max(8, plane.shape[1] // 8)):
                s.paint(idx, value, ref=ref)
                pump(s, gap)
            t0 = time.perf_counter()
            n0 = len(ranked)
            seq0 = s.labels_seq  # the last stroke's: the ranking must come from a fit that includes it
            s.mark_annotated(ref)
            first = ranked[n0][1] if len(ranked) > n0 else []
            done = None
            while done is None and time.perf_counter() - t0 < timeout:
                s.take_previews()
                live = s._live  # private, for this benchmark: which fit ranked the queue
                want = (None if live is None or live.fitted_seq is None or live.fitted_seq < seq0
                        else f"instant:{live.fitted_seq}")
                for t, versions in ranked[n0:]:
                    if want is not None and versions and all(v == want for v in versions) and s._ranked_fresh:
                        done = t
                        break
                time.sleep(0.1)
            live = s._live
            rows.append({
                "ref": str(ref), "seconds": None if done is None else done - t0,
                "first_rank_with": sorted({str(v) for v in first}), "fresh_coverage": round(live.fresh_coverage(), 3),
                "labelled": live.timings.get("labelled"), "scores_whole_volume": live.scores_whole_volume,
                "timings": {k: round(v, 3) if isinstance(v, float) else v for k, v in live.timings.items()},
            })
            print(json.dumps(rows[-1]), flush=True)
    finally:
        s.close()
    return {"rows": rows, "open_to_end_s": time.perf_counter() - t_open}


def make_projects(tmp: Path, sizes: list[int]) -> dict[int, Path]:
    from al_annotator.datasets import load_demo
    from al_annotator.datasets.demo import DEMO_CLASSES
    from al_annotator.store import create_project

    demo = load_demo("bone")
    out = {}
    for side in sizes:
        f = side // demo.image.shape[0]
        img = demo.image if f == 1 else np.repeat(np.repeat(np.repeat(demo.image, f, 0), f, 1), f, 2)
        path = tmp / f"bone{side}"
        create_project(path, img, classes=DEMO_CLASSES["bone"]).close()
        out[side] = path
    return out


def markdown(res: dict) -> str:
    t = res.get("trainer")
    trainer = (res.get("note") or "no trainer process of its own ran" if not t else
               f"a real tier-2 trainer process (CPU, nice 10, continuous, on a 32x128x128 phantom project of its own, "
               f"`benchmarks/trainer_load.py`) was training or predicting in {100 * t['trainer_busy_share']:.0f} % of "
               f"{t['samples']} one-second samples, load average p50 {t['load_p50']} / max {t['load_max']}")
    lines = [
        f"Real micro-CT demo (`bone`, qim3d) at 128^3 and upsampled to 512^3; per slice {res['args']['strokes']} line strokes "
        f"(background / bone by the slice's Otsu threshold) painted {res['args']['gap']} s apart, then `mark_annotated`. "
        "Timed from the commit until `suggestions_changed` delivers a queue ranked entirely by tier 1's fit that includes "
        "the last stroke, from that fit's own scores (`candidates(fresh_only=True)`, >= 25 % of the slices scored), with "
        f"`take_previews()` every 0.1 s as the front ends' timer. Not under nice; {trainer}. 1-minute load average at "
        f"start / end: {res['load'][0]} / {res['load'][1]} on 2 cores. Seed {res['args']['seed']}.",
        "",
        "| volume | slice committed | commit -> queue ranked by the served fit (s) | first ranking at the commit | "
        "slices scored by that fit | labelled voxels | idle scoring may filter the whole volume |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for side, r in res["cases"].items():
        for row in r["rows"]:
            sec = "not reached in %.0f s" % res["args"]["timeout"] if row["seconds"] is None else f"{row['seconds']:.1f}"
            lines.append(f"| {side}^3 | {row['ref']} | {sec} | {', '.join(row['first_rank_with']) or '–'} | "
                         f"{100 * row['fresh_coverage']:.0f} % | {row['labelled']} | {row['scores_whole_volume']} |")
    for side, r in res["cases"].items():
        secs = [row["seconds"] for row in r["rows"] if row["seconds"] is not None]
        if secs:
            lines.append("")
            lines.append(f"{side}^3: median {np.median(secs):.1f} s, max {max(secs):.1f} s over {len(secs)} commits "
                         f"({len(r['rows']) - len(secs)} not reached).")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="128,512")
    ap.add_argument("--strokes", type=int, default=6, help="strokes per committed slice")
    ap.add_argument("--gap", type=float, default=1.5, help="seconds between strokes (an expert's pace)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the re-ranked queue after a commit")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-trainer", action="store_true")
    ap.add_argument("--write-md")
    ap.add_argument("--from-json", help="write the section from an earlier run's JSON (with --note) instead of measuring")
    ap.add_argument("--note", help="with --from-json: what else ran meanwhile (replaces 'no trainer process of its own ran')")
    ap.add_argument("--json", default=str(Path(__file__).resolve().parent.parent / "tests" / "zz_e2e" / "artifacts" / "bench_suggest.json"))
    args = ap.parse_args()
    if args.from_json:
        res = json.loads(Path(args.from_json).read_text())
        res["note"] = args.note
        md = markdown(res)
        print(md)
        if args.write_md:
            write_section(args.write_md, "bench_suggest", "Commit to suggestions ranked by the served model", md, COMMAND)
        return
    from al_annotator.types import SliceRef
    from trainer_load import TrainingLoad

    sizes = [int(x) for x in args.sizes.split(",")]
    load0 = os.getloadavg()[0]
    res: dict = {"args": vars(args), "cases": {}}
    with tempfile.TemporaryDirectory(prefix="al_bench_suggest_") as tmp:
        projects = make_projects(Path(tmp), sizes)
        trainer = TrainingLoad(tmp) if not args.no_trainer else None
        with (trainer or contextlib.nullcontext()):
            for side, path in projects.items():
                refs = [SliceRef("z", side // 2), SliceRef("y", side * 5 // 16), SliceRef("x", side * 11 // 16)]
                res["cases"][side] = measure(path, refs, args.strokes, args.gap, args.timeout, args.seed)
        res["trainer"] = trainer.summary() if trainer is not None else None
    res["load"] = [round(load0, 1), round(os.getloadavg()[0], 1)]
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    md = markdown(res)
    print(md)
    if args.write_md:
        write_section(args.write_md, "bench_suggest", "Commit to suggestions ranked by the served model", md, COMMAND)


if __name__ == "__main__":
    main()
