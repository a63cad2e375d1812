"""Benchmark k-center greedy (coreset) selection on random embeddings.

10^4 and 10^5 candidates, 128-dim float32 embeddings, n = 8 and n = 32 picks, seeded with 100
labelled embeddings; median of 5 runs (after one warm-up). Also times the full ``coreset`` and
``hybrid`` strategies on a :class:`ScoredPool` (which adds pool bookkeeping).

Usage::

    python benchmarks/bench_coreset.py
    python benchmarks/bench_coreset.py --write-md docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from report import cpu_name, replace_section  # noqa: E402

from al_annotator.acquisition import ScoredPool, get_strategy, k_center_greedy  # noqa: E402

SECTION = "bench_coreset"


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000])
    ap.add_argument("--picks", nargs="+", type=int, default=[8, 32])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--seeds", type=int, default=100, help="labelled embeddings the greedy starts from")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--write-md", type=Path, default=None)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    rows = []
    for n_cand in args.sizes:
        x = rng.normal(size=(n_cand, args.dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        seeds = rng.normal(size=(args.seeds, args.dim)).astype(np.float32)
        seeds /= np.linalg.norm(seeds, axis=1, keepdims=True)
        pool = ScoredPool(
            [("z", i) for i in range(n_cand)],
            {"entropy": rng.random(n_cand).astype(np.float32)},
            embeddings=x,
            labelled_embeddings=seeds,
            model_version=1,
        )
        for n in args.picks:
            t_kc = _median_time(lambda: k_center_greedy(x, n, seeds=seeds), args.repeats)
            t_cs = _median_time(lambda: get_strategy("coreset")(None, pool, n), args.repeats)
            t_hy = _median_time(lambda: get_strategy("hybrid")(None, pool, n), args.repeats)
            rows.append((n_cand, n, t_kc, t_cs, t_hy))
            print(f"N={n_cand:>7d} n={n:>3d}  k_center_greedy {t_kc * 1e3:8.1f} ms  coreset {t_cs * 1e3:8.1f} ms  hybrid {t_hy * 1e3:8.1f} ms", flush=True)

    if args.write_md:
        command = "python benchmarks/bench_coreset.py " + " ".join(argv if argv is not None else sys.argv[1:])
        lines = [
            "## Coreset (k-center greedy) selection (`benchmarks/bench_coreset.py`)",
            "",
            f"Date: {_dt.date.today().isoformat()}  ",
            f"Command: `{command.strip()}`  ",
            f"Device: {cpu_name()}, {os.cpu_count()} CPUs, numpy {np.__version__}  ",
            f"{args.dim}-dim float32 unit embeddings, {args.seeds} labelled seeds; median of {args.repeats} runs after a warm-up. "
            "`coreset` / `hybrid` = the full strategies on a `ScoredPool` (hybrid: coreset among the 4n most uncertain).",
            "",
            "| candidates | picks n | k_center_greedy (ms) | coreset strategy (ms) | hybrid strategy (ms) |",
            "|---:|---:|---:|---:|---:|",
        ]
        lines += [f"| {a:,} | {b} | {c * 1e3:.1f} | {d * 1e3:.1f} | {e * 1e3:.1f} |" for a, b, c, d, e in rows]
        replace_section(args.write_md, SECTION, "\n".join(lines) + "\n")
        print(f"wrote section {SECTION!r} of {args.write_md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
