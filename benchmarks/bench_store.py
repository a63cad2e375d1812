"""Slice read latency (z, y, x) and stroke commit latency of the project store.

Ours (64^3 chunks, uncompressed image) against the naive layout (one chunk per z slice), side by
side in one run, on a 512^3 uint16 volume.

    .venv/bin/python benchmarks/bench_store.py --write-md docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_line, write_section  # noqa: E402

from al_annotator.store import create_project  # noqa: E402
from al_annotator.types import SliceRef  # noqa: E402


def ct_like_volume(n: int, seed: int = 0) -> np.ndarray:
    """A smooth random field with noise: compresses like real CT (noise dominates)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(0, 1, (n, n, n)).astype(np.float32), 2)
    return (1000 + field * 3000 + rng.normal(0, 30, field.shape)).clip(0, 65535).astype(np.uint16)


def slice_latencies(store, n_reads: int, rng) -> dict[str, tuple[float, float]]:
    out = {}
    for axis in "zyx":
        n = store.shape["zyx".index(axis)]
        store.read_slice(SliceRef(axis, 0))  # warm up
        times = []
        for idx in rng.integers(0, n, n_reads):
            t = time.perf_counter()
            store.read_slice(SliceRef(axis, int(idx)))
            times.append((time.perf_counter() - t) * 1e3)
        out[axis] = (float(np.percentile(times, 50)), float(np.percentile(times, 95)))
    return out


def brush_stroke(ref: SliceRef, shape, rng, radius: int = 8, length: int = 120) -> np.ndarray:
    h, w = ref.shape_in(shape)
    pts = np.cumsum(rng.integers(-2, 3, (length, 2)), axis=0) + rng.integers([radius, radius], [h - radius, w - radius])
    pts = np.clip(pts, 0, [h - 1, w - 1])
    mask = np.zeros((h, w), bool)
    dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disk = dy**2 + dx**2 <= radius**2
    for y, x in pts:
        y0, y1, x0, x1 = max(0, y - radius), min(h, y + radius + 1), max(0, x - radius), min(w, x + radius + 1)
        mask[y0:y1, x0:x1] |= disk[y0 - y + radius : y1 - y + radius, x0 - x + radius : x1 - x + radius]
    return np.flatnonzero(mask)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--reads", type=int, default=40)
    ap.add_argument("--strokes", type=int, default=100)
    ap.add_argument("--write-md", type=Path)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    vol = ct_like_volume(args.size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        layouts = {"ours: 64^3 chunks": (64, 64, 64), "naive: (1, Y, X) chunks": (1, args.size, args.size)}
        stores = {}
        for name, chunks in layouts.items():
            t = time.perf_counter()
            stores[name] = create_project(Path(tmp) / name.split(":")[0], vol, classes="background,bone,implant,degradation", chunks=chunks)
            print(f"{name}: created in {time.perf_counter() - t:.1f} s", flush=True)
        for name, store in stores.items():
            lat = slice_latencies(store, args.reads, rng)
            rows.append((name, lat))
            print(name, lat, flush=True)
        # stroke commits (log append + fsync + labels write), ours only: the naive layout would be worse on y/x
        store = stores["ours: 64^3 chunks"]
        commit = []
        sizes = []
        for i in range(args.strokes):
            axis = "zyx"[i % 3]
            ref = SliceRef(axis, int(rng.integers(0, args.size)))
            idx = brush_stroke(ref, store.shape, rng)
            sizes.append(idx.size)
            t = time.perf_counter()
            store.paint(ref, idx, int(rng.integers(1, 5)))
            commit.append((time.perf_counter() - t) * 1e3)
        c50, c95 = float(np.percentile(commit, 50)), float(np.percentile(commit, 95))
        print(f"stroke commit p50 {c50:.1f} ms p95 {c95:.1f} ms (median stroke {int(np.median(sizes))} voxels)")
        undo = []
        for _ in range(20):
            t = time.perf_counter()
            store.undo()
            undo.append((time.perf_counter() - t) * 1e3)
    lines = [
        f"Volume {args.size}^3 uint16 (smooth random field + noise, CT-like), {args.reads} random slices per axis, "
        f"slice {args.size}x{args.size}. Target: p95 < 50 ms on every axis.",
        "",
        "| layout | z p50 / p95 (ms) | y p50 / p95 (ms) | x p50 / p95 (ms) |",
        "| --- | --- | --- | --- |",
    ]
    for name, lat in rows:
        lines.append(f"| {name} | " + " | ".join(f"{lat[a][0]:.1f} / {lat[a][1]:.1f}" for a in "zyx") + " |")
    lines += [
        "",
        f"Stroke commit (edit-log append with fsync, then labels write), {args.strokes} brush strokes of radius 8 "
        f"(median {int(np.median(sizes))} voxels) on random z/y/x slices: p50 {c50:.1f} ms, p95 {c95:.1f} ms "
        f"(target p95 < 20 ms). Undo: p50 {np.percentile(undo, 50):.1f} ms, p95 {np.percentile(undo, 95):.1f} ms.",
    ]
    md = "\n".join(lines)
    print(md)
    if args.write_md:
        write_section(args.write_md, "bench_store", "Project store: slice reads and stroke commits", md,
                      "python benchmarks/bench_store.py --write-md docs/BENCHMARKS.md")


if __name__ == "__main__":
    main()
