"""A cold plane's features on each axis of a 512^3 volume, this tree against an older commit, A B A B.

A stroke on a plane not seen before (or the goto's prefetch) waits for tier 1's features of that
plane, computed as one block (``FeatureBank.block_features``: the live preview's bank, spacing-scaled
3D features at the octaves 1..16, edges repeated). The kept positions along the plane's normal are
weighted sums of the 2r+1 planes they need; summed after moving that axis to the front, an x plane
(normal = the last, contiguous axis) gathered one float per cache line. Each side runs in its own
process on the same random 512^3 uint8 volume (seed 0); ``--before`` is a git commit checked out into
a temporary worktree and put first on ``PYTHONPATH``. Medians of ``--pairs`` A B pairs.

    .venv/bin/python benchmarks/bench_plane_axes.py --before c2521ad --write-md docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench_plane_axes"
TITLE = "A cold plane's features on each axis of a 512^3 volume (`benchmarks/bench_plane_axes.py`)"

CHILD = r"""
import json, time, numpy as np
import al_annotator, os
print("TREE " + os.path.dirname(os.path.dirname(al_annotator.__file__)))
from al_annotator.instant.features import FeatureBank
from al_annotator.instant.segmenter import auto_features
img = (np.random.default_rng(0).random((512, 512, 512)) * 255).astype(np.uint8)
bank = FeatureBank(img, None, **dict(auto_features(None), mode="3d"))
out = {}
for name, sel in (("z", (256, slice(None), slice(None))), ("y", (slice(None), 160, slice(None))),
                  ("x", (slice(None), slice(None), 352))):
    t = time.perf_counter()
    a = bank.block_features(sel)
    out[name] = time.perf_counter() - t
    out[name + "_sum"] = float(np.float64(a.sum(dtype=np.float64)))
print("RESULT " + json.dumps(out))
"""


def run_side(pythonpath: str | None) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    # run from the side's own tree: with ``-c`` the working directory comes first on sys.path, before PYTHONPATH
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=pythonpath or str(ROOT), capture_output=True, text=True,
                         check=True).stdout
    tree = next(line for line in out.splitlines() if line.startswith("TREE "))[5:]
    want = os.path.realpath(pythonpath or str(ROOT))
    if os.path.realpath(tree) != want:
        raise SystemExit(f"the side ran the code of {tree}, not {want}")
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="the older commit (B)")
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--write-md", type=Path)
    args = ap.parse_args()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        wt = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(wt), args.before], cwd=ROOT, check=True, capture_output=True)
        try:
            runs: dict[str, list[dict]] = {"after": [], "before": []}
            for k in range(args.pairs):
                runs["after"].append(run_side(str(ROOT)))
                runs["before"].append(run_side(str(wt)))
                print(f"pair {k}: after {runs['after'][-1]}, before {runs['before'][-1]}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(wt)], cwd=ROOT, capture_output=True)
    load1 = os.getloadavg()[0]
    rows = ["| plane | before (s) | after (s) | before / after | largest feature-sum difference |", "|---|---:|---:|---:|---:|"]
    for ax in "zyx":
        b = statistics.median(r[ax] for r in runs["before"])
        a = statistics.median(r[ax] for r in runs["after"])
        diff = max(abs(x[ax + "_sum"] - y[ax + "_sum"]) / max(1.0, abs(y[ax + "_sum"])) for x, y in zip(runs["after"], runs["before"]))
        rows.append(f"| {ax} (one 512^2 plane, 50 features) | {b:.1f} | {a:.1f} | {b / a:.2f}x | {diff:.1e} (relative) |")
    body = (f"Before = {args.before}, after = {head} (this tree), each in its own process, A B A B, medians of {args.pairs} pairs; "
            f"1-minute load average at start / end {load0:.1f} / {load1:.1f} on 2 cores (other jobs ran: both sides share it).\n\n"
            + "\n".join(rows))
    print(body)
    if args.write_md:
        cmd = "python benchmarks/bench_plane_axes.py " + " ".join(sys.argv[1:])
        write_section(args.write_md, KEY, TITLE, body, cmd)


if __name__ == "__main__":
    main()
