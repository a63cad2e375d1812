"""The front ends before and after a refactor, side by side in one run (A B A B).

Issue #10 split the notebook widget (controller, plane server, thin anywidget) and the napari dock
(UI, one jobs thread, the dock) and moved every read behind the Session. This runs the widget's
latency benchmark (``bench_widget.py``: real JupyterLab + headless Chromium, 512^2 and 2048^2
phantoms, no trainer) and the napari stroke benchmark (``bench_napari.py --part strokes``: napari's
own drag callbacks on a 256^3 project under Xvfb) against two trees, alternating, and reports the
median of each figure over the runs of each tree with the ratio after/before.

The "before" tree is a ``git worktree`` of ``--before`` (default: the commit before the split); both
run with this venv, each tree first on ``PYTHONPATH`` (the kernels and napari processes the
benchmarks start inherit it). Usage::

    xvfb-run -a .venv/bin/python benchmarks/bench_split.py --before 99dbac3 --runs 2 --write-md docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from report import write_section  # noqa: E402

COMMAND = ("xvfb-run -a .venv/bin/python benchmarks/bench_split.py --before 99dbac3 --after 1ffb0a4 --runs 3 "
           "--write-md docs/BENCHMARKS.md")

#: (label, path into the JSON result, lower is better)
WIDGET_FIGURES = [
    ("512^2 paint move (page), p50 ms", ("512", "paint", "p50")),
    ("512^2 paint move (page), p95 ms", ("512", "paint", "p95")),
    ("512^2 mouse-up -> on disk, p50 ms", ("512", "on_disk", "p50")),
    ("512^2 mouse-up -> on disk, p95 ms", ("512", "on_disk", "p95")),
    ("512^2 mouse-up -> ack, p50 ms", ("512", "ack", "p50")),
    ("512^2 slice switch (warm), p50 ms", ("512", "switch", "p50")),
    ("512^2 slice switch (warm), p95 ms", ("512", "switch", "p95")),
    ("512^2 slice switch (cold), p50 ms", ("512", "switch_cold", "p50")),
    ("512^2 ping round trip, p50 ms", ("512", "ping", "p50")),
    ("2048^2 paint move (page), p95 ms", ("2048", "paint", "p95")),
    ("2048^2 mouse-up -> on disk, p50 ms", ("2048", "on_disk", "p50")),
    ("2048^2 slice switch, p50 ms", ("2048", "switch", "p50")),
    ("2048^2 slice switch (cold), p50 ms", ("2048", "switch_cold", "p50")),
]
NAPARI_FIGURES = [
    ("napari 256^3 release -> on disk, p50 ms", ("commit_p50",)),
    ("napari 256^3 release -> on disk, p95 ms", ("commit_p95",)),
    ("napari brush dab, p50 ms", ("dab_p50",)),
    ("napari brush dab, p95 ms", ("dab_p95",)),
    ("napari mouse release (GUI thread), p95 ms", ("release_p95",)),
]


def log(*a: object) -> None:
    print(*a, flush=True)


def _get(doc: dict, path: tuple) -> float | None:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return float(doc) if isinstance(doc, (int, float)) else None


def run_widget(tree: Path, out: Path, switches: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, str(tree / "benchmarks" / "bench_widget.py"), "--only", "512,2048", "--skip-training",
           "--switches", str(switches), "--artifacts", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tree)
    if proc.returncode:
        raise SystemExit(f"bench_widget failed in {tree}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads((out / "bench_widget.json").read_text())


def run_napari(tree: Path, strokes: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, str(tree / "benchmarks" / "bench_napari.py"), "--part", "strokes", "--strokes", str(strokes)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tree)
    if proc.returncode:
        raise SystemExit(f"bench_napari failed in {tree}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _which(tree: Path) -> str:
    """Check that a tree's benchmark imports that tree's package (PYTHONPATH beats the editable install)."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", "import al_annotator, os; print(os.path.dirname(al_annotator.__file__))"],
                         env=env, capture_output=True, text=True, cwd=tempfile.gettempdir()).stdout.strip()
    if not out.startswith(str(tree)):
        raise SystemExit(f"PYTHONPATH={tree} imports al_annotator from {out}, not from the tree")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default="99dbac3", help="the commit to compare against")
    ap.add_argument("--after", default=None, help="the commit to compare (default: this working tree)")
    ap.add_argument("--runs", type=int, default=2, help="runs per tree (alternating A B A B)")
    ap.add_argument("--switches", type=int, default=20)
    ap.add_argument("--strokes", type=int, default=12, help="napari strokes per axis")
    ap.add_argument("--only", default="widget,napari")
    ap.add_argument("--write-md", type=Path)
    args = ap.parse_args()
    parts = set(args.only.split(","))

    head = subprocess.run(["git", "rev-parse", "--short", args.after or "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()
    before = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="al_bench_split_"))
    wt = tmp / "before"
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(wt), before], cwd=REPO, check=True)
    trees = {"before": wt, "after": REPO}
    if args.after:
        trees["after"] = tmp / "after"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(trees["after"]), head], cwd=REPO, check=True)
    results: dict[str, list] = {"before": [], "after": []}
    dirty = not args.after and bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                                   capture_output=True, text=True).stdout.strip())
    try:
        for name, tree in trees.items():
            log(name, "imports", _which(tree))
        for run in range(args.runs):
            for name, tree in trees.items():
                t0 = time.perf_counter()
                res: dict = {"load": os.getloadavg()[0]}
                if "widget" in parts:
                    res["widget"] = run_widget(tree, tmp / f"{name}{run}", args.switches)
                if "napari" in parts:
                    res["napari"] = run_napari(tree, args.strokes)
                results[name].append(res)
                log(f"run {run + 1} {name}: {time.perf_counter() - t0:.0f} s")
    finally:
        for tree in {wt, trees["after"]} - {REPO}:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False)
        shutil.rmtree(tmp, ignore_errors=True)

    rows = ["| figure | before (" + before + ") | after (" + head + (" + uncommitted" if dirty else "") + ") | after / before |",
            "| --- | --- | --- | --- |"]
    figures = ([("widget",) + f for f in WIDGET_FIGURES] if "widget" in parts else []) + \
              ([("napari",) + f for f in NAPARI_FIGURES] if "napari" in parts else [])
    for part, label, path in figures:
        vals = {}
        for name in trees:
            xs = [v for v in (_get(r[part], path) for r in results[name]) if v is not None]
            vals[name] = statistics.median(xs) if xs else None
        b, a = vals["before"], vals["after"]
        ratio = f"{a / b:.2f}" if a is not None and b else "–"
        fmt = lambda v: "–" if v is None else f"{v:.1f}"  # noqa: E731
        spread = lambda name: ", ".join(  # noqa: E731
            fmt(_get(r[part], path)) for r in results[name])
        rows.append(f"| {label} | {fmt(b)} ({spread('before')}) | {fmt(a)} ({spread('after')}) | {ratio} |")
    loads = {n: [round(r["load"], 1) for r in results[n]] for n in trees}
    md = "\n".join([
        f"Both trees measured in one run, alternating (before, after) x {args.runs}, with this venv; each cell is "
        "the median over the runs, the runs' values in brackets. The widget figures come from `bench_widget.py "
        f"--only 512,2048 --skip-training --switches {args.switches}` (JupyterLab 4 + headless Chromium), the napari "
        f"ones from `bench_napari.py --part strokes --strokes {args.strokes}` (256^3 uint16, Xvfb). "
        f"1-min load average at the start of each run: before {loads['before']}, after {loads['after']}.",
        "",
        *rows,
    ])
    print(md)
    if args.write_md:
        write_section(args.write_md, "bench_split", "Front ends before and after the one-door split (`benchmarks/bench_split.py`)",
                      md, COMMAND)
        log(f"wrote {args.write_md}")


if __name__ == "__main__":
    main()
