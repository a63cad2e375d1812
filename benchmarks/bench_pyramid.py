"""Zoomed-out reads of 2048^2 slices: the full image strided (before) against the store's pyramid (after).

A (Z, 2048, 2048) uint16 project; a z slice shown at 1:2, 1:4, 1:8 and as a 64 px overview
(1:32) is read with ``ProjectStore.read_slice(ref, level=k)``, once with the pyramid and once with
it switched off (what every zoomed-out read cost before: the whole plane, 1024 chunks, then every
2^k-th voxel). Reads are warm (the files in the page cache) and at random slices; also the time
to build the pyramid and the disk it takes.

    .venv/bin/python benchmarks/bench_pyramid.py --write-md docs/BENCHMARKS.md

``--part views`` (section ``bench_pyramid_views``): the main views end to end. The notebook
widget's kernel path (``PlaneServer.view`` as the controller calls it for a ``view`` message of
the whole 2048^2 z slice at ``step`` 4: tile-cache miss, chunk reads, block means, quantisation,
the ``slice`` message) with the pyramid switched off (before: the full image) and on (after:
level 2), the bytes read from the image arrays and sent to the browser; the labels' part of that
path, unlabelled and densely labelled (a piecewise-constant class map in every chunk, as a model's
prediction is), to decide whether overlays need a pyramid too; napari's slicing of the image
layer's data (the whole plane of a single-scale layer against level 2 of the multiscale one).

    .venv/bin/python benchmarks/bench_pyramid.py --part views --write-md docs/BENCHMARKS.md
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


class _Counting:
    """An array whose reads are counted in whole chunks' bytes (zarr reads whole chunks)."""

    def __init__(self, arr, counter: list) -> None:
        self.arr, self.counter = arr, counter
        self.shape, self.dtype, self.chunks = arr.shape, arr.dtype, arr.chunks

    def __getitem__(self, key):
        n = 1
        for k, size, c in zip(key, self.shape, self.chunks):
            start, stop, _ = k.indices(size) if isinstance(k, slice) else (int(k), int(k) + 1, 1)
            n *= -(-stop // c) - start // c
        self.counter[0] += n * int(np.prod(self.chunks)) * np.dtype(self.dtype).itemsize
        return self.arr[key]


def _loadavg() -> str:
    try:
        return " / ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def views(args, path: Path, rng) -> str:
    """The main views' section (see the module docstring)."""
    from al_annotator.core import Session
    from al_annotator.jupyter._imaging import Region
    from al_annotator.jupyter._planes import PlaneServer
    from al_annotator.napari._arrays import ImageLevel, read_only

    load0 = _loadavg()
    session = Session.open(path)
    sent: list = []
    planes = PlaneServer(session, lambda content, bufs: sent.append((content, [bytes(memoryview(b)) for b in bufs])))
    tiles = planes.tiles
    image_bytes = [0]
    tiles._read_image = (lambda arr: (lambda sel: _Counting(arr, image_bytes)[sel]))(session.image_array)
    levels = [None] + [_Counting(lv, image_bytes) for lv in session.image_levels[1:]]
    label_read = tiles._read_labels
    shape2d = SliceRef("z", 0).shape_in(session.shape)
    region = Region.full(shape2d, 4)
    slabs = rng.permutation(session.shape[0] // tiles.depth)[: args.reads + 1]

    def run(use_levels: bool) -> dict:
        tiles.levels = levels if use_levels else levels[:1]
        ts, nbytes, sent_bytes, lvl = [], [], [], None
        for i, slab in enumerate(slabs):
            tiles.clear()
            ref = SliceRef("z", int(slab) * tiles.depth + int(rng.integers(0, tiles.depth)))
            image_bytes[0] = 0
            sent.clear()
            t = time.perf_counter()
            planes.view("bench", i, ref, region)
            dt = (time.perf_counter() - t) * 1e3
            (msg, bufs), = [m for m in sent if m[0]["type"] == "slice"]
            if i:  # the first is a warm-up
                ts.append(dt)
                nbytes.append(image_bytes[0])
                sent_bytes.append(sum(len(b) for b in bufs))
            lvl = msg["level"]
        return {"ms": float(np.median(ts)), "read": float(np.median(nbytes)), "sent": float(np.median(sent_bytes)), "level": lvl}

    before, after = run(False), run(True)

    def labels_ms() -> float:
        ts = []
        for slab in slabs[1:]:
            key = tiles.key(SliceRef("z", int(slab) * tiles.depth), region)
            t = time.perf_counter()
            tiles.read(key, image=False)
            ts.append((time.perf_counter() - t) * 1e3)
        return float(np.median(ts))

    tiles._read_labels = label_read
    labels_empty = labels_ms()
    yy, xx = np.mgrid[: shape2d[0], : shape2d[1]]
    classes = ((yy // 300 + xx // 300) % 3 + 1).astype(np.uint8)  # dense, piecewise constant: a prediction's look
    store = session.store
    for z0 in range(0, session.shape[0], 16):
        store.labels[z0 : z0 + 16] = np.broadcast_to(classes, (min(16, session.shape[0] - z0), *shape2d))
    labels_dense = labels_ms()

    # napari: a zoomed-out z slice is one plane of the level shown
    def napari_ms(make, level_of) -> float:
        ts = []
        for slab in slabs[1:]:
            index = int(slab) * tiles.depth
            data = make()  # a fresh layer's data: no plane cached
            t = time.perf_counter()
            np.asarray(data[level_of(index), :, :] if isinstance(data, ImageLevel) else data[index : index + 1, :, :])
            ts.append((time.perf_counter() - t) * 1e3)
        return float(np.median(ts))

    nap_before = napari_ms(lambda: read_only(session.image_array), lambda i: i)
    nap_after = napari_ms(lambda: ImageLevel(session.image_levels[2]), lambda i: round(i / 4))
    session.close()
    load1 = _loadavg()
    mib = 2**20
    rows = [
        "| main view of a 2048^2 z slice at 1:4 | before: full image | after: pyramid | speed-up |",
        "| --- | --- | --- | --- |",
        f"| widget kernel, `view` -> `slice` message ms | {before['ms']:.0f} | {after['ms']:.0f} (level {after['level']}) | "
        f"{before['ms'] / after['ms']:.1f}x |",
        f"| image bytes read (whole chunks) | {before['read'] / mib:.0f} MiB | {after['read'] / mib:.0f} MiB | "
        f"{before['read'] / max(after['read'], 1):.0f}x less |",
        f"| bytes sent to the browser (image + labels) | {before['sent'] / mib:.2f} MiB | {after['sent'] / mib:.2f} MiB | same |",
        f"| napari, image layer's plane read ms | {nap_before:.0f} (whole plane, single scale) | {nap_after:.0f} (level 2) | "
        f"{nap_before / nap_after:.1f}x |",
    ]
    return "\n".join([
        f"A {' x '.join(map(str, session.shape))} uint16 project (64^3 chunks), the whole z slice shown at 1:4 "
        f"(`step` 4, a 512^2 tile); median of {args.reads} views of random slices in different 16-slice tile-cache "
        f"entries (cold tile cache, warm page cache). Load average {load0} at the start, {load1} at the end "
        f"(a shared machine).",
        "",
        *rows,
        "",
        f"The labels' part of the same path (their 16-slice entry at 1:4, full resolution sampled): {labels_empty:.0f} ms "
        f"unlabelled, {labels_dense:.0f} ms with every chunk labelled (a piecewise-constant class map, what a model's "
        f"prediction looks like). With the image from the pyramid, that is most of what the view still costs: zarr "
        f"visits all 1024 label chunks of the slab (written or not), and a deep model's prediction and confidence "
        f"are two more such reads. Overlays zoomed out would need coarse copies too (a labels level kept by every "
        f"edit, nearest-sampled on the 2^k grid; the model outputs' levels written when a version is published): "
        f"a store change, not made here. Labels stay exact at any zoom meanwhile (sampled from full resolution).",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=64, help="Z of the (Z, 2048, 2048) volume")
    ap.add_argument("--side", type=int, default=2048)
    ap.add_argument("--reads", type=int, default=7)
    ap.add_argument("--part", choices=["reads", "views", "all"], default="reads",
                    help="reads: ProjectStore.read_slice per level; views: the widget's and napari's main views")
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
        if args.part != "views":
            after = _times(store, zooms, args.reads, rng)
        store.close()
        if args.part != "views":
            plain = open_project(tmp / "p", read_only=True)
            plain.pyramid = {}  # as before the pyramid: every zoom reads the full plane
            before = _times(plain, zooms, args.reads, rng)
        if args.part != "reads":
            md_views = views(args, tmp / "p", rng)
            print(md_views)
            if args.write_md:
                write_section(args.write_md, "bench_pyramid_views", "Image pyramid: zoomed-out main views (widget, napari)",
                              md_views, "python benchmarks/bench_pyramid.py --part views --write-md docs/BENCHMARKS.md")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.part == "views":
        return
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
