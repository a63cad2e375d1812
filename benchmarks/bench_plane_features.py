"""Tier 1's cold plane features: the separable path (crop after each axis) vs whole-block filters.

A stroke on a plane whose features are not cached yet waits for the filter bank of that plane. The
bank the live preview uses (``core/live.py``: spacing-scaled 3D features, sigmas 1-16, edge values
repeated) is computed for one plane, cold, two ways in one run, A B A B:

- **whole-block** (``FeatureBank.separable = False``, what tier 1 did before): each Gaussian
  (derivative) filter runs over the plane's block grown by the halo, then the plane is cut out;
- **separable** (the default): each filter runs axis by axis, the most-cropped axis first, cropping
  that axis right after it is filtered, and sharing the partial results between the filters of a
  scale; a plane of a volume filtered along its normal reads 2r+1 planes per kept plane.

Cases: the ssTEM stack's z plane (30 x 512^2, 50 x 4 x 4 nm) through the tiles (the cached path) and
as one block; the 128^3 demo volume's z and x planes through the tiles; a 512^3 volume's z plane and
a 2048^2 plane of an 8 x 2048^2 stack as one block (``block_features``: planes whose tiles do not fit
the cache). Medians of ``--reps`` pairs; the largest difference between the two results is printed
(float32 rounding only).

    .venv/bin/python benchmarks/bench_plane_features.py --write-md docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EM = ROOT.parent / "shared" / "data" / "drosophila_l1_sstem" / "drosophila_l1_sstem.npz"
KEY = "bench_plane_features"
TITLE = "Tier 1 cold plane features: separable vs whole-block filters (`benchmarks/bench_plane_features.py`)"


def cases(quick: bool):
    from al_annotator.datasets.demo import load_demo

    rng = np.random.default_rng(0)
    with np.load(EM) as z:
        em, em_sp = z["image"], tuple(float(v) for v in z["voxel_size_zyx_nm"])
    demo = load_demo("bone")
    demo_img = np.asarray(demo.image)
    yield "ssTEM 30x512^2, z plane 15, tiles", em, em_sp, (15, slice(None), slice(None)), "tiles"
    yield "ssTEM 30x512^2, z plane 15, block", em, em_sp, (15, slice(None), slice(None)), "block"
    yield f"demo {'x'.join(map(str, demo_img.shape))}, z plane, tiles", demo_img, demo.spacing, (demo_img.shape[0] // 2, slice(None), slice(None)), "tiles"
    yield f"demo {'x'.join(map(str, demo_img.shape))}, x plane, tiles", demo_img, demo.spacing, (slice(None), slice(None), demo_img.shape[2] // 2), "tiles"
    if not quick:
        big = rng.normal(1000, 100, size=(512, 512, 512)).astype(np.uint16)
        yield "512^3, z plane 256, block", big, (1.0, 1.0, 1.0), (256, slice(None), slice(None)), "block"
        del big
        wide = rng.normal(1000, 100, size=(8, 2048, 2048)).astype(np.uint16)
        yield "8x2048^2, z plane 4, block", wide, (1.0, 1.0, 1.0), (4, slice(None), slice(None)), "block"


def once(image, spacing, block, how: str, separable: bool) -> tuple[float, np.ndarray]:
    from al_annotator.instant.features import FeatureBank
    from al_annotator.instant.segmenter import auto_features

    bank = FeatureBank(image, spacing, **(dict(auto_features(spacing), mode="3d") | {"cache_bytes": 4 << 30}))
    bank.separable = separable
    t0 = time.perf_counter()
    out = bank.block_features(block) if how == "block" else bank.features(block)
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write-md", type=Path)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="the ssTEM and demo cases only")
    args = ap.parse_args()
    import os

    rows = []
    for name, image, spacing, block, how in cases(args.quick):
        old, new, diff = [], [], 0.0
        for _ in range(args.reps):
            t_old, a = once(image, spacing, block, how, False)
            t_new, b = once(image, spacing, block, how, True)
            old.append(t_old)
            new.append(t_new)
            diff = max(diff, float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(a))))))
            del a, b
        mo, mn = statistics.median(old), statistics.median(new)
        rows.append((name, mo, mn, diff))
        print(f"{name}: whole-block {mo:.2f} s, separable {mn:.2f} s ({mo / mn:.1f}x), max rel diff {diff:.1e}", flush=True)
    lines = ["| plane (cold) | whole-block s | separable s | speed-up | max diff / max |", "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {n} | {o:.2f} | {s:.2f} | {o / s:.1f}x | {d:.0e} |" for n, o, s, d in rows]
    load = os.getloadavg()[0]
    body = (__doc__.split("\n\n")[1] + "\n\n" + "\n".join(lines) + f"\n\nMedians of {args.reps} A B pairs, fresh banks each time"
            f" (cold: nothing cached); 1-min load average at the end {load:.1f} on {os.cpu_count()} cores.")
    if args.write_md:
        write_section(args.write_md, KEY, TITLE, body, " ".join([".venv/bin/python", "benchmarks/bench_plane_features.py"] + sys.argv[1:]))


if __name__ == "__main__":
    main()
