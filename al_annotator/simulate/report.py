"""Markdown of a served-mode simulation: served / tier 1 / tier 2 / RF peer side by side, per budget."""

from __future__ import annotations

from typing import Any

__all__ = ["served_table", "served_rows"]


def _f(v: Any, fmt: str = "{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


def served_rows(results: dict[str, Any], strategy: str | None = None) -> list[dict[str, Any]]:
    """One row per budget of ``strategy`` (default: the first): the seed medians of the served system,
    tier 1, tier 2 and the RF peer (``None`` where absent), with annotation cost and how often tier 2 served."""
    summary = results["summary"]
    strategy = strategy or results["config"]["strategies"][0]
    served = summary.get(f"served:{strategy}", {}).get("curve", [])
    tier1 = summary.get(f"tier1:{strategy}", {}).get("curve", [])
    tier2 = summary.get(strategy, {}).get("curve", [])
    blend = summary.get(f"blend:{strategy}", {}).get("curve", [])
    peer = next((v["curve"] for k, v in summary.items() if k.startswith("peer:")), [])
    peer_by_budget = {p["annotated_slices"]: p for p in peer}
    rows = []
    for i, s in enumerate(served):
        b = s["annotated_slices"]
        t1 = tier1[i] if i < len(tier1) else {}
        t2 = tier2[i] if i < len(tier2) else {}
        bl = blend[i] if i < len(blend) else {}
        pr = peer_by_budget.get(b, {})
        rows.append({
            "slices": b, "fraction": s["annotated_fraction"], "strokes": s.get("strokes_total"),
            "annotation_seconds": s.get("annotation_seconds_total"),
            "served": s.get("mean_dice_median"), "tier1": t1.get("mean_dice_median"), "tier2": t2.get("mean_dice_median"), "blend": bl.get("mean_dice_median"),
            "blend_served": s.get("blend_served"),
            "peer": pr.get("mean_dice_median"), "deep_served": s.get("deep_served"), "n_seeds": s.get("n_seeds"),
            "served_seeds": s.get("mean_dice_seeds"), "peer_seeds": pr.get("mean_dice_seeds"),
        })
    return rows


def served_table(results: dict[str, Any], strategy: str | None = None) -> str:
    """Markdown table (medians over seeds) of :func:`served_rows`."""
    rows = served_rows(results, strategy)
    network = results["config"].get("network", True)
    blend = network and any(r["blend"] is not None for r in rows)
    head = ("| slices | voxels | strokes | annotating | **served** | tier 1 (instant) | tier 2 (network) | " + ("blend | " if blend else "")
            + "RF peer | served - peer | served: deep / blend |")
    lines = [head, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if blend else "")]
    for r in rows:
        diff = None if r["served"] is None or r["peer"] is None else r["served"] - r["peer"]
        minutes = None if r["annotation_seconds"] is None else r["annotation_seconds"] / 60
        lines.append(f"| {r['slices']} | {_f(r['fraction'], '{:.3%}')} | {_f(r['strokes'], '{:.0f}')} | {_f(minutes, '{:.1f} min')} | "
                     f"**{_f(r['served'])}** | {_f(r['tier1'])} | {_f(r['tier2'] if network else None)} | "
                     + (f"{_f(r['blend'])} | " if blend else "")
                     + f"{_f(r['peer'])} | {_f(diff, '{:+.3f}')} | "
                     f"{_f(r['deep_served'], '{}')} / {_f(r['blend_served'], '{}')} of {_f(r['n_seeds'], '{}')} |")
    return "\n".join(lines)
