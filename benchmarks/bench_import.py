"""Import throughput (MB/s) of ``read_volume`` + a slab-wise read of the whole array: TIFF and HDF5.

For each file layout the volume (``--size``^3 uint16, CT-like: smooth field + noise) is written to a
temporary folder, then read back with ``read_volume`` and ``np.array(v.array[z0:z0 + 64])`` over all
slabs, twice:

* **cold**: the file's pages are dropped from the page cache first (``fsync`` then
  ``posix_fadvise(DONTNEED)``), so the figure includes the disk;
* **warm**: read again right away (page cache hot): the reader's own cost.

The last column is ``create_project`` from the file (read, NaN check, write 64^3 chunks,
percentiles), i.e. what ``al-annotator init`` does (warm cache).

    .venv/bin/python benchmarks/bench_import.py --write-md docs/BENCHMARKS.md
    .venv/bin/python benchmarks/bench_import.py --size 128          # quick check, prints only
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from report import cpu_name, write_section  # noqa: E402

from al_annotator.io import read_volume  # noqa: E402

SLAB = 64


def make_volume(n: int) -> np.ndarray:
    from scipy import ndimage

    rng = np.random.default_rng(0)
    field = ndimage.gaussian_filter(rng.standard_normal((n, n, n), dtype=np.float32), 2)
    field *= 1000 / max(float(field.std()), 1e-6)  # std 1000 around 1000: CT-like range
    field += 1000 + rng.normal(0, 30, (n, n, n)).astype(np.float32)
    return field.clip(0, 65535).astype(np.uint16)


def write_inputs(vol: np.ndarray, d: Path) -> dict[str, tuple[Path, Callable[[np.ndarray, Path], None]]]:
    import h5py
    import tifffile

    def h5(chunks):
        def w(v: np.ndarray, p: Path) -> None:
            with h5py.File(p, "w") as f:
                f.create_dataset("data", data=v, chunks=chunks)
        return w

    n = vol.shape[0]
    layouts: dict[str, tuple[Path, Callable[[np.ndarray, Path], None]]] = {
        "TIFF multipage, uncompressed (memmap)": (d / "plain.tif", lambda v, p: tifffile.imwrite(p, v)),
        "TIFF multipage, zlib pages (page reader)": (d / "zlib.tif", lambda v, p: tifffile.imwrite(p, v, compression="zlib", compressionargs={"level": 1})),
        "HDF5 contiguous": (d / "contig.h5", h5(None)),
        f"HDF5 chunked (1, {n}, {n})": (d / "chunk_plane.h5", h5((1, n, n))),
        "HDF5 chunked (64, 64, 64)": (d / "chunk_cube.h5", h5(tuple(min(64, s) for s in vol.shape))),
    }
    for path, write in layouts.values():
        write(vol, path)
    return layouts


def drop_cache(path: Path) -> None:
    """Evict ``path`` from the page cache (works without root on Linux)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def timed_read(path: Path, expected_sum: int) -> float:
    t = time.perf_counter()
    total = 0
    with read_volume(path) as v:
        for z0 in range(0, v.shape[0], SLAB):
            block = np.array(v.array[z0 : z0 + SLAB], copy=True)  # force the read (a memmap slice reads nothing)
            total += int(block.sum(dtype=np.int64))
    dt = time.perf_counter() - t
    if total != expected_sum:
        raise SystemExit(f"{path.name}: read back a different volume (sum {total} != {expected_sum})")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512, help="edge of the cubic test volume (default 512: 256 MB uint16)")
    ap.add_argument("--write-md", type=Path, help="replace (or append) the bench_import section of this markdown file")
    ap.add_argument("--no-init", action="store_true", help="skip the create_project column")
    args = ap.parse_args()

    n = args.size
    load0 = os.getloadavg()
    vol = make_volume(n)
    mb = vol.nbytes / 1e6
    expected = int(vol.sum(dtype=np.int64))
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        layouts = write_inputs(vol, Path(tmp))
        for name, (path, _) in layouts.items():
            drop_cache(path)
            t_cold = timed_read(path, expected)
            t_warm = timed_read(path, expected)
            init = float("nan")
            if not args.no_init:
                from al_annotator.store import create_project

                t = time.perf_counter()
                store = create_project(Path(tmp) / "proj", path, classes="background,bone")
                init = mb / (time.perf_counter() - t)
                store.close()
                shutil.rmtree(Path(tmp) / "proj")
            rows.append((name, path.stat().st_size / 1e6, mb / t_cold, mb / t_warm, init))
            print(f"{name}: cold {rows[-1][2]:.0f} MB/s, warm {rows[-1][3]:.0f} MB/s, init {init:.0f} MB/s", flush=True)

    lines = [
        f"Volume {n}^3 uint16 ({mb:.0f} MB), CT-like. Read = `read_volume(path)` + `np.array(v.array[z0:z0 + {SLAB}])` over "
        "all slabs (values checked). Cold = file evicted from the page cache first (fsync + posix_fadvise DONTNEED); "
        "warm = read again at once. Import = `create_project` from the file (read, NaN check, 64^3 chunks, percentiles), "
        "as `al-annotator init`.",
        "",
        "| file layout | size on disk (MB) | read, cold (MB/s) | read, warm (MB/s) | import into a project (MB/s) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ] + [
        f"| {r[0]} | {r[1]:.0f} | {r[2]:.0f} | {r[3]:.0f} | {'-' if r[4] != r[4] else f'{r[4]:.0f}'} |" for r in rows
    ]
    load = os.getloadavg()
    lines += ["", f"Machine: `nproc` = {os.cpu_count()}, CPU: {cpu_name('unknown CPU')}; load average {load0[0]:.1f} before, "
              f"{load[0]:.1f} after the run (other jobs share the cores: figures vary with it)."]
    md = "\n".join(lines)
    print(md)
    if args.write_md:
        cmd = "python benchmarks/bench_import.py" + (f" --size {n}" if n != 512 else "") + (" --no-init" if args.no_init else "")
        write_section(args.write_md, "bench_import", "Import throughput (TIFF, HDF5)", md, cmd + f" --write-md {args.write_md}")


if __name__ == "__main__":
    main()
