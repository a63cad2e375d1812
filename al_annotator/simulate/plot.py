"""Learning-curve figure: mean Dice vs annotated slices and vs annotated voxel fraction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_learning_curves"]


def plot_learning_curves(results: dict[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Two panels: test mean Dice vs annotated slices, and vs annotated voxel fraction (log x).

    In served mode (``--tiers``) each strategy has three curves: the network (tier 2), ``tier1:``
    (the instant classifier, dashed) and ``served:`` (bold). Each strategy: mean over seeds with a band of +/- one standard deviation; the random-forest
    peer as a black dotted curve; full supervision as a dashed horizontal line.
    """
    # A Figure of its own (no pyplot): the user's backend and open figures are left alone.
    import matplotlib
    from matplotlib.figure import Figure

    summary = results["summary"]
    full = results.get("full_supervision") or {}
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    axes = fig.subplots(1, 2)
    cmap = matplotlib.colormaps["tab10"]
    names = [n for n in summary if not n.startswith("peer:")] + [n for n in summary if n.startswith("peer:")]
    for k, name in enumerate(names):
        curve = [p for p in summary[name]["curve"] if p["mean_dice"] is not None]
        if not curve:
            continue
        y = np.array([p["mean_dice"] for p in curve])
        sd = np.array([p["mean_dice_std"] or 0.0 for p in curve])
        is_peer = name.startswith("peer:")
        style = dict(color="black", ls=":", marker="s", ms=4) if is_peer else dict(color=cmap(k % 10), marker="o", ms=3)
        if name.startswith("tier1:"):  # served mode: tier 1 dashed, the served system bold
            style |= dict(ls="--", marker="^")
        elif name.startswith("served:"):
            style |= dict(lw=2.6, marker="D", ms=4)
        label = "RF peer (random picks)" if is_peer else (f"{name} (tier 2)" if any(n.startswith("served:") for n in names)
                                                          and ":" not in name else name)
        for ax, key in ((axes[0], "annotated_slices"), (axes[1], "annotated_fraction")):
            x = np.array([p[key] for p in curve], float)
            ax.plot(x, y, label=label, **style)
            if len(curve) and curve[0]["n_seeds"] > 1:
                ax.fill_between(x, y - sd, y + sd, color=style["color"], alpha=0.12 if not is_peer else 0.08, lw=0)
    if full.get("mean_dice") is not None:
        for ax in axes:
            ax.axhline(full["mean_dice"], color="grey", ls="--", lw=1.2, label=f"full supervision ({full['mean_dice']:.3f})")
            ax.axhline(0.95 * full["mean_dice"], color="grey", ls=":", lw=0.8, label="95% of full")
    from matplotlib.ticker import MaxNLocator

    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_xlabel("annotated slices")
    axes[1].set_xlabel("annotated voxels (fraction of the volume, log)")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.set_ylabel("test mean Dice")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    ds = results.get("dataset", {})
    cfg = results.get("config", {})
    fig.suptitle(title or (f"{Path(str(ds.get('volume', 'volume'))).name} {tuple(ds.get('shape', ()))}, oracle {cfg.get('oracle')}, "
                           f"axes {cfg.get('axes')}, {cfg.get('steps_per_round')} steps/round, seeds {cfg.get('seeds')}"), fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
