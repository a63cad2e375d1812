"""Acquisition strategies as the product ranks (issue #11): tier 1 (the instant classifier) serves and
scores every candidate slice, each strategy picks one slice a round from those scores, up to 16.

    .venv/bin/python benchmarks/bench_acquisition.py --write-md docs/BENCHMARKS.md

Runs ``al-annotator simulate --tiers --no-network`` (tier 1 alone: what serves at these budgets in
most rounds of ``bench_served``, and fast enough for many strategies x seeds) on the EM central crop
(scribble oracle) and the phantom (slice oracle), and reports the median over seeds of the served
test Dice per budget, each strategy minus foreground-aware random, and the target "best strategy >=
foreground_random + 0.03 at half the budgets or more".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_learning_curves import em_args, phantom_args  # noqa: E402
from report import write_section  # noqa: E402

STRATEGIES = "foreground_random,entropy,margin,clasp_pe"


def args_for(part: str, work: Path, seeds: int, budget: int, strategies: str = STRATEGIES) -> list[str]:
    base = em_args(work) if part == "em" else phantom_args(work)
    base = base[: base.index("--strategy")]
    return [*base, "--strategy", strategies, "--seeds", str(seeds), "--per-round", "1", "--budget", str(budget), "--tiers",
            "--no-network", "--no-full", "--no-plot", "--threads", "1", "--out", str(work / f"acq_{part}")]


def table(res: dict) -> tuple[str, list[str], dict]:
    strategies = res["config"]["strategies"]
    curves = {s: res["summary"][s]["curve"] for s in strategies}
    budgets = [p["annotated_slices"] for p in curves[strategies[0]]]
    med = {s: [p["mean_dice_median"] for p in curves[s]] for s in strategies}
    head = "| strategy | " + " | ".join(f"{b}" for b in budgets) + " |"
    lines = [head, "|---|" + "---:|" * len(budgets)]
    for s in strategies:
        lines.append(f"| {s} | " + " | ".join(f"{v:.3f}" for v in med[s]) + " |")
    base = np.array(med["foreground_random"])
    others = [s for s in strategies if s != "foreground_random"]
    mean_gain = {s: float(np.mean(np.array(med[s]) - base)) for s in others}
    best = max(others, key=lambda s: mean_gain[s])
    diff = np.array(med[best]) - base
    ahead = int((diff >= 0.03).sum())
    notes = [
        f"Best strategy by mean gain over foreground_random: **{best}** ({mean_gain[best]:+.3f}); others: "
        + ", ".join(f"{s} {mean_gain[s]:+.3f}" for s in others if s != best) + ".",
        f"{best} minus foreground_random per budget: " + ", ".join(f"{b}: {d:+.3f}" for b, d in zip(budgets, diff)) + ".",
        f"best >= foreground_random + 0.03 at {ahead} of {len(budgets)} budgets: **{'met' if ahead * 2 >= len(budgets) else 'NOT met'}** "
        "(target: half the budgets or more).",
    ]
    return "\n".join(lines), notes, {"best": best, "ahead": ahead, "budgets": len(budgets)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_acquisition"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=16, help="slices, EM part (default 16)")
    ap.add_argument("--budget-phantom", type=int, default=8, help="slices, phantom part (default 8: tier 1 is within 0.02 of its "
                    "full-supervision Dice from 2 slices on there, bench_served)")
    ap.add_argument("--strategies", default=STRATEGIES)
    ap.add_argument("--only", choices=("em", "phantom"))
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--write-md", type=Path)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    from al_annotator.cli import main as cli_main

    body = ["Tier 1 alone serves and ranks (`--tiers --no-network`): every round the strategy picks **one** slice from tier 1's "
            "scores of every candidate slice (as `Session` ranks while tier 1 serves: each slice subsampled to ~64 px a side; "
            "entropy/margin = mean pixel measure, coreset on the class make-up, clasp_pe = class-stratified power acquisition, "
            "`acquisition.strategies.clasp_pe`, implemented from the paper's one-line description: it was not reachable here). "
            "The first pick is the shared foreground-weighted cold start. Dice = served (tier 1) test-voxel mean Dice, "
            f"**median over seeds 0..{args.seeds - 1}**; columns = slices annotated."]
    verdicts = {}
    for part in [p for p in ("em", "phantom") if args.only in (None, p)]:
        a = args_for(part, args.work, args.seeds, args.budget if part == "em" else args.budget_phantom, args.strategies)
        out = Path(a[a.index("--out") + 1])
        t0 = time.perf_counter()
        if not args.report_only and cli_main(["simulate", *a]) != 0:
            raise SystemExit(f"simulate failed for {part}")
        res = json.loads((out / "results.json").read_text())
        minutes = res["timing"]["total_seconds"] / 60 if args.report_only else (time.perf_counter() - t0) / 60
        tab, notes, verdicts[part] = table(res)
        body.append(f"### {part}\n\n`al-annotator simulate {' '.join(a)}` ({minutes:.1f} min)\n\n{tab}\n\n" + "\n".join(f"- {n}" for n in notes))
        print(body[-1], flush=True)
    if args.write_md:
        write_section(args.write_md, "bench_acquisition", "Acquisition as the product ranks: tier 1's scores, one slice a round (`benchmarks/bench_acquisition.py`)",
                      "\n\n".join(body), "python benchmarks/bench_acquisition.py --write-md docs/BENCHMARKS.md")
    print(verdicts)


if __name__ == "__main__":
    main()
