"""OME-Zarr export of a project: time and peak memory (the volume must never be loaded whole).

A project of an N^3 uint16 volume (built from a memory-mapped .npy), then ``export`` to OME-Zarr
(image pyramid at the root, labels pyramid in ``labels/labels``, both by ome-zarr-py through
dask) in a fresh process whose peak resident memory is reported beside the image's size.

    .venv/bin/python benchmarks/bench_ngff_export.py --sizes 256,512,1024 --write-md docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import write_section  # noqa: E402

_EXPORT = """
import json, re, sys, time
from pathlib import Path
from al_annotator.store import open_project
from al_annotator.store.export import export
st = open_project(sys.argv[1])
t = time.perf_counter()
export(st, sys.argv[2])
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so it would report the parent's peak
hwm = int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))
print(json.dumps({"s": time.perf_counter() - t, "rss_mb": hwm / 1024}))
"""


def run(n: int, tmp: Path) -> dict:
    from al_annotator.store import create_project

    rng = np.random.default_rng(0)
    img = np.lib.format.open_memmap(tmp / "img.npy", mode="w+", dtype=np.uint16, shape=(n, n, n))
    for z in range(0, n, 64):
        img[z : z + 64] = rng.integers(0, 4000, (min(64, n - z), n, n), dtype=np.uint16)
    img.flush()
    del img
    st = create_project(tmp / "p", tmp / "img.npy", classes="a,b", spacing=(1, 1, 1), unit="um", fsync=False)
    st.labels[: n // 4] = 1
    st.close()
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _EXPORT, str(tmp / "p"), str(tmp / "out.zarr")],
                         check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return {"n": n, "image_mb": n**3 * 2 / 2**20, "export_s": got["s"], "process_s": wall, "rss_mb": got["rss_mb"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--write-md", default=None)
    args = ap.parse_args()
    rows = ["| volume | image | export | peak RSS of the exporting process |", "| --- | --- | --- | --- |"]
    for n in (int(s) for s in args.sizes.split(",")):
        tmp = Path(tempfile.mkdtemp(prefix="bench_ngff-"))
        try:
            r = run(n, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        rows.append(f"| {n}^3 uint16 | {r['image_mb']:.0f} MiB | {r['export_s']:.1f} s | {r['rss_mb']:.0f} MiB |")
    md = "\n".join([
        "`export(store, 'out.zarr')`: NGFF 0.4, image and labels pyramids (64^3 chunks), written chunk by chunk "
        "by ome-zarr-py through dask; the peak memory includes Python, zarr, dask and numpy themselves.",
        "",
        *rows,
    ])
    print(md)
    if args.write_md:
        write_section(args.write_md, "bench_ngff_export", "OME-Zarr export: time and memory", md,
                      "python benchmarks/bench_ngff_export.py --sizes 256,512,1024 --write-md docs/BENCHMARKS.md")


if __name__ == "__main__":
    main()
