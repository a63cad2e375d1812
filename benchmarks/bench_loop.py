"""Time from a committed slice to a new model version and fresh suggestions, default CPU settings.

The demo project (real micro-CT, 128^3), a trainer process started the way the front ends start
it (TrainerClient, watch mode, nice 10, default TrainConfig), then for each of a few rounds: paint
strokes on a suggested slice, mark it annotated, and time until the trainer has published a new
model version and ``suggest`` returns suggestions scored by it.

    .venv/bin/python benchmarks/bench_loop.py --write-md docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import write_section  # noqa: E402

from al_annotator.acquisition.project import suggest_for_project  # noqa: E402
from al_annotator.datasets import create_demo_project  # noqa: E402
from al_annotator.store.models import current_model  # noqa: E402
from al_annotator.training import TrainerClient  # noqa: E402
from al_annotator.types import SliceRef  # noqa: E402


def scribble(store, ref: SliceRef, rng) -> None:
    """Strokes like an expert's: a few hundred voxels of bright (bone) and dark (background)."""
    from skimage.filters import threshold_otsu

    img = store.read_slice(ref).astype(np.float32)
    t = threshold_otsu(img)
    flat = img.reshape(-1)
    for cls, mask in (("bone", flat > t * 1.1), ("background", flat < t * 0.7)):
        idx = np.flatnonzero(mask)
        if idx.size:
            store.paint(ref, rng.choice(idx, min(300, idx.size), replace=False), cls)
    store.set_slice_state(ref, "annotated")


def wait_for_training_on(store, client, seq: int, timeout: float = 600) -> dict:
    """Wait until a published model version was trained on the edit log up to ``seq``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cur = current_model(store)
        if cur is not None and int(cur.get("trained_on_seq", 0)) >= seq:
            return cur
        if client.process is not None and client.process.poll() is not None:
            raise RuntimeError(f"trainer exited: {client.log_tail()}")
        time.sleep(0.1)
    raise TimeoutError(f"no model trained on edit {seq} within {timeout} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--write-md", type=Path)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = create_demo_project(Path(tmp) / "demo")
        client = TrainerClient(store.path)
        t_start = time.perf_counter()
        client.start(watch=True)
        ref = SliceRef("z", 64)
        try:
            for r in range(1, args.rounds + 1):
                scribble(store, ref, rng)
                committed = store.log.last_seq
                t0 = time.perf_counter()
                meta = wait_for_training_on(store, client, committed)
                t_version = time.perf_counter() - t0
                sug = suggest_for_project(store, strategy="hybrid", n=8)
                t_suggest = time.perf_counter() - t0
                assert sug and sug[0].model_version == meta["version"], sug[:1]
                m = meta["metrics"]
                rows.append((r, t_version, t_suggest, m["train_seconds"], m["steps"], m["predict_seconds"]))
                print(f"round {r}: version after {t_version:.1f} s, suggestions after {t_suggest:.1f} s "
                      f"(train {m['train_seconds']:.1f} s / {m['steps']} steps, predict {m['predict_seconds']:.1f} s)", flush=True)
                ref = sug[0].ref
        finally:
            client.stop()
        total = time.perf_counter() - t_start
    lines = [
        "Demo project (real micro-CT, 128^3, 2 classes), trainer spawned by `TrainerClient` (watch, nice 10, default "
        "`TrainConfig`: hrnet_w18_small, up to 60 steps or 45 s, batch 8, predict and soft-vote z, y, x). Each round: "
        "~600 scribbled voxels on the top suggestion, slice marked annotated; time until the new model version is "
        "published and `suggest` (hybrid) returns suggestions scored by it. Round 1 includes the worker's start-up "
        "(imports, model build). Target: < 60 s.",
        "",
        "| round | to a model trained on the slice (s) | to fresh suggestions (s) | of which training (s, steps) | predict + score 384 slices (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r, tv, ts, tt, steps, tp in rows:
        lines.append(f"| {r} | {tv:.1f} | {ts:.1f} | {tt:.1f} ({steps}) | {tp:.1f} |")
    lines.append(f"\nWhole run {total:.0f} s.")
    md = "\n".join(lines)
    print(md)
    if args.write_md:
        write_section(args.write_md, "bench_loop", "Stroke to new suggestions (the loop, CPU defaults)", md,
                      "python benchmarks/bench_loop.py --write-md docs/BENCHMARKS.md")


if __name__ == "__main__":
    main()
