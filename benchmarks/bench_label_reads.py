"""Label-plane reads of 2048^2 slices: zarr (before) against the store's chunk reader (after).

A (64, 2048, 2048) uint16 project (64^3 chunks, blosc-lz4 labels) with scribbles on a few slices
(12 strokes of 6 x 300 voxels on three z slices, one on a y slice), then with one z slice densely
labelled as well (a piecewise-constant class map over the whole 2048^2, one edit). In one process,
each read timed with the chunk reader switched off (``store._readers = {}``: zarr reads, as every
label read did before) and on, alternately, medians of ``--reads``; warm page cache:

- ``ProjectStore.read_slice`` of z slices (scribbled, unlabelled) and of a y and an x slice;
- ``Session.label_plane``: tier 1 re-reads the labelled slice so on every stroke;
- the notebook widget's zoomed-out view of the whole 2048^2 z slice at 1:4 (``PlaneServer.view``,
  tile-cache miss, image from the pyramid) and its labels' part alone (``TileCache.read(image=False)``),
  with the labels read through ``Session.labels_array`` (zarr) against ``ProjectStore.labels_view``;
- napari's labels layer data (``StoreLabels``, uncached) slicing one z plane, over the same two.

    .venv/bin/python benchmarks/bench_label_reads.py --write-md docs/BENCHMARKS.md
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

from al_annotator.store import create_project  # noqa: E402
from al_annotator.store import models as _models  # noqa: E402
from al_annotator.types import EditAtom, SliceRef  # noqa: E402


def _loadavg() -> str:
    try:
        return " / ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _cold(store) -> None:
    """Empty the chunk reader's cache of decoded parts: the next read is a first read."""
    reader = store._readers["labels"]
    with reader._lock:
        reader._parts.clear()
        reader._parts_bytes = 0


def _pair(store, before, after, n: int, prepare=None) -> tuple[float, float]:
    """Median ms of ``before()`` with zarr reads and ``after()`` with the chunk reader, alternated;
    ``prepare()`` runs untimed before each (default: the reader's parts cache emptied)."""
    readers = store._readers
    prepare = prepare or (lambda: _cold(store))
    tb, ta = [], []
    for i in range(n + 1):
        prepare()
        store._readers = {}
        t = time.perf_counter()
        before()
        dt_b = time.perf_counter() - t
        store._readers = readers
        prepare()
        t = time.perf_counter()
        after()
        dt_a = time.perf_counter() - t
        if i:  # the first of each is a warm-up
            tb.append(dt_b * 1e3)
            ta.append(dt_a * 1e3)
    store._readers = readers
    return float(np.median(tb)), float(np.median(ta))


def _scribble(store, rng) -> None:
    side = store.shape[1]
    for z in (5, 20, 40):
        for k in range(4):
            r, c = int(rng.integers(0, side - 6)), int(rng.integers(0, side - 300))
            rr, cc = np.mgrid[r : r + 6, c : c + 300]
            store.paint(SliceRef("z", z), (rr * side + cc).ravel(), 1 + k % 3)
    rr, cc = np.mgrid[10:16, side // 4 : side // 4 + 300]
    store.paint(SliceRef("y", side // 2), (rr * side + cc).ravel(), 2)


def _prediction(store) -> None:
    """A model version's prediction as the trainer writes it (zarr's default codec), a smooth class map."""
    group = store.root.require_group("models/v0001")
    z, y, x = store.shape
    pred = group.create_array("prediction", shape=store.shape, dtype=np.uint8, chunks=store.labels.chunks, fill_value=0)
    yy, xx = np.mgrid[:y, :x]
    for z0 in range(0, z, 16):
        zz = np.arange(z0, min(z, z0 + 16))[:, None, None]
        pred[z0 : z0 + len(zz)] = (1 + (np.sin(yy / 83.1 + zz / 40.0) + np.cos(xx / 57.9) > 0)).astype(np.uint8)


def _measure(session, n: int, rng) -> dict[str, tuple[float, float]]:
    from al_annotator.jupyter._imaging import Region
    from al_annotator.jupyter._planes import PlaneServer
    from al_annotator.napari._arrays import StoreLabels

    store = session.store
    mid = store.shape[1] // 2
    out: dict[str, tuple[float, float]] = {}
    for name, ref in (("z slice, scribbled", SliceRef("z", 20)), ("z slice, unlabelled", SliceRef("z", 10)),
                      ("y slice", SliceRef("y", mid)), ("x slice", SliceRef("x", mid))):
        read = (lambda r: lambda: store.read_slice(r, "labels"))(ref)
        out[f"`read_slice` {name}"] = _pair(store, read, read, n)
    plane = lambda: session.label_plane(SliceRef("z", 20))  # noqa: E731
    side = store.shape[2]

    def stroke():  # what tier 1 re-reads its slice after: one more 3 x 200 voxel scribble
        r, c = int(rng.integers(0, side - 3)), int(rng.integers(0, side - 200))
        rr, cc = np.mgrid[r : r + 3, c : c + 200]
        session.store.paint(SliceRef("z", 20), (rr * side + cc).ravel(), 1)

    plane()
    out["tier 1's re-read after a stroke (`Session.label_plane`, z)"] = _pair(store, plane, plane, n, prepare=stroke)

    sent: list = []
    planes = PlaneServer(session, lambda content, bufs: sent.append(content))
    tiles = planes.tiles
    zarr_labels, view = session.labels_array, store.labels_view
    shape2d = SliceRef("z", 0).shape_in(session.shape)
    region = Region.full(shape2d, 4)
    ref = SliceRef("z", 20)

    def widget(read):
        def go():
            tiles._read_labels = read
            tiles.clear()
            planes.view("bench", 0, ref, region)
        return go

    out["widget: zoomed-out view (1:4) `view` -> `slice`"] = _pair(store, widget(lambda s: zarr_labels[s]), widget(lambda s: view[s]), n)

    def labels_part(read):
        def go():
            tiles._read_labels = read
            tiles.read(tiles.key(ref, region), image=False)
        return go

    out["widget: its labels' part (16-slice entry)"] = _pair(store, labels_part(lambda s: zarr_labels[s]), labels_part(lambda s: view[s]), n)
    outputs = _models.model_outputs(store, 1)
    if outputs:
        pred = outputs["prediction"]
        for name, ref in (("z", SliceRef("z", 20)), ("y", SliceRef("y", mid))):
            sel = ref.selection()
            out[f"model prediction, {name} slice (zstd, what `Session.prediction` reads)"] = _pair(
                store, (lambda a, q: lambda: np.asarray(a[q]))(pred.array, sel), (lambda a, q: lambda: np.asarray(a[q]))(pred, sel), n)
    out["napari labels layer: one z plane (uncached)"] = _pair(
        store, lambda: np.asarray(StoreLabels(zarr_labels)[20]), lambda: np.asarray(StoreLabels(view)[20]), n)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=64)
    ap.add_argument("--side", type=int, default=2048)
    ap.add_argument("--reads", type=int, default=7)
    ap.add_argument("--write-md", default=None)
    args = ap.parse_args()
    from al_annotator.core import Session

    rng = np.random.default_rng(0)
    shape = (args.depth, args.side, args.side)
    image = (1000 + rng.normal(0, 300, shape)).clip(0, 65535).astype(np.uint16)
    tmp = Path(tempfile.mkdtemp(prefix="bench_label_reads-"))
    try:
        store = create_project(tmp / "p", image, classes="a,b,c", fsync=False)
        del image
        _scribble(store, rng)
        _prediction(store)
        store.close()
        load0 = _loadavg()
        session = Session.open(tmp / "p")
        sparse = _measure(session, args.reads, rng)
        yy, xx = np.mgrid[: args.side, : args.side]
        # regions with curved boundaries (no two chunks across a boundary alike), as a model's accepted prediction
        classes = (1 + (np.sin(yy / 97.3) + np.cos(xx / 61.7 + yy / 203.1) > 0)
                   + (np.sin((xx + yy) / 151.9) > 0.5)).astype(np.uint8)
        session.store.apply_edit(EditAtom(SliceRef("z", 30), np.arange(args.side**2), classes.reshape(-1)))
        dense = _measure(session, args.reads, rng)
        reader = session.store._readers["labels"]
        stats = (reader.decoded, reader.skipped, reader.cached)
        session.close()
        load1 = _loadavg()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [
        "| read | scribbles: zarr (before) ms | chunk reader (after) ms | speed-up | + one dense z slice: before ms | after ms | speed-up |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in sparse:
        (b0, a0), (b1, a1) = sparse[name], dense[name]
        rows.append(f"| {name} | {b0:.1f} | {a0:.1f} | {b0 / a0:.1f}x | {b1:.1f} | {a1:.1f} | {b1 / a1:.1f}x |")
    body = "\n".join([
        f"A {' x '.join(map(str, shape))} uint16 project (64^3 chunks, blosc-lz4 labels): 12 scribbles of 6 x 300 voxels "
        f"on z = 5, 20, 40 and one on the middle y slice; then z = 30 labelled densely as well (three classes in regions with curved "
        f"boundaries over the whole slice, a model's accepted prediction's look: every chunk of its 64-slice slab then holds labels, so every z slice of the slab decodes all its {(-(-args.side // 64)) ** 2} chunks). "
        f"Each read with zarr (the chunk reader off) and with the store's chunk reader, alternated in one process, "
        f"median of {args.reads}, warm page cache; every read a first read (the reader's cache of decoded parts emptied) but "
        f"tier 1's, which follows a new 3 x 200 voxel stroke on its slice (what it does on every stroke). The prediction rows read a model version's prediction (as the trainer writes it: zarr's default zstd, a "
        f"smooth two-class map) through the zarr array before and `store.models.model_outputs`' view after. The widget's and napari's rows take their labels from "
        f"`Session.labels_array` (zarr) before and `ProjectStore.labels_view` after. Load average {load0} at the start, "
        f"{load1} at the end (a shared 2-core machine).",
        "",
        *rows,
        "",
        f"Chunk reader over the run: {stats[0]} chunks decoded, {stats[1]} skipped as unlabelled by their bytes, "
        f"{stats[2]} parts served from its cache (a re-read, or a chunk with the same bytes as one already decoded: "
        f"the inside of a region, all one class, encodes alike wherever it is). "
        "Where the time went before: not in finding or opening the chunks (opening and reading 1024 chunk files: "
        "~17 ms; all of them exist, the labels are written with `write_empty_chunks`) but in zarr decoding every chunk "
        "into a freshly allocated 256 KiB buffer (1024 unlabelled chunks: ~0.6 s fresh, ~0.07 s into one reused "
        "buffer, blosc alone). The reader skips chunks whose bytes are the unlabelled encoding and decodes the rest "
        "into one buffer, keeping the part it took keyed by the chunk's bytes (`al_annotator/store/chunkread.py`).",
    ])
    print(body)
    if args.write_md:
        write_section(args.write_md, "bench_label_reads", "Label-plane reads of 2048^2 slices: zarr vs the store's chunk reader",
                      body, "python benchmarks/bench_label_reads.py --write-md docs/BENCHMARKS.md")


if __name__ == "__main__":
    main()
