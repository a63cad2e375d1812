"""Zoomed-out reads of 2048^2 slices: the full image strided (before) against the store's pyramid (after).

A (Z, 2048, 2048) uint16 project; a z slice shown at 1:2, 1:4, 1:8 and as a 64 px overview
(1:32) is read with ``ProjectStore.read_slice(ref, level=k)``, once with the pyramid and once with
it switched off (what every zoomed-out read cost before: the whole plane, 1024 chunks, then every
2^k-th voxel). Reads are warm (the files in the page cache) and at random slices; also the time
to build the pyramid and the disk it takes.

    .venv/bin/python benchmarks/bench_pyramid.py --write-md docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import write_section  # noqa: E402

from al_annotator.store import create_project, open_project  # noqa: E402
from al_annotator.types import SliceRef  # noqa: E402


def _dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _times(store, levels, n_reads: int, rng) -> dict[int, float]:
    out = {}
    for level in levels:
        store.read_slice(SliceRef("z", 0), level=level)  # warm up
        ts = []
        for idx in rng.integers(0, store.shape[0], n_reads):
            t = time.perf_counter()
            store.read_slice(SliceRef("z", int(idx)), level=level)
            ts.append((time.perf_counter() - t) * 1e3)
        out[level] = float(np.median(ts))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=64, help="Z of the (Z, 2048, 2048) volume")
    ap.add_argument("--side", type=int, default=2048)
    ap.add_argument("--reads", type=int, default=7)
    ap.add_argument("--write-md", default=None)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    shape = (args.depth, args.side, args.side)
    image = (1000 + rng.normal(0, 300, shape)).clip(0, 65535).astype(np.uint16)
    tmp = Path(tempfile.mkdtemp(prefix="bench_pyramid-"))
    try:
        store = create_project(tmp / "p", image, classes="a,b", fsync=False)
        del image
        t = time.perf_counter()
        levels = store.build_pyramid()
        build_s = time.perf_counter() - t
        pyr_mb = _dir_bytes(tmp / "p" / "data.zarr" / "pyramid") / 2**20
        img_mb = _dir_bytes(tmp / "p" / "data.zarr" / "image") / 2**20
        zooms = [1, 2, 3, 5]
        after = _times(store, zooms, args.reads, rng)
        store.close()
        plain = open_project(tmp / "p", read_only=True)
        plain.pyramid = {}  # as before the pyramid: every zoom reads the full plane
        before = _times(plain, zooms, args.reads, rng)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [
        "| zoom | plane shown | full image, strided (before) ms | pyramid (after) ms | speed-up |",
        "| --- | --- | --- | --- | --- |",
    ]
    for k in zooms:
        side = -(-args.side // 2**k)
        rows.append(f"| 1:{2**k} | {side}^2 | {before[k]:.1f} | {after[k]:.1f} | {before[k] / after[k]:.1f}x |")
    md = "\n".join([
        f"A z slice of a {' x '.join(map(str, shape))} uint16 project (64^3 chunks), median of {args.reads} warm reads "
        f"at random slices (`ProjectStore.read_slice(ref, level=k)`).",
        "",
        *rows,
        "",
        f"Pyramid levels {levels}: {pyr_mb:.0f} MiB beside the image's {img_mb:.0f} MiB "
        f"({100 * pyr_mb / img_mb:.0f} %), built in {build_s:.1f} s (at creation, or by `check --repair`).",
    ])
    print(md)
    if args.write_md:
        write_section(args.write_md, "bench_pyramid", "Image pyramid: zoomed-out reads of 2048^2 slices", md,
                      "python benchmarks/bench_pyramid.py --write-md docs/BENCHMARKS.md")


if __name__ == "__main__":
    main()
