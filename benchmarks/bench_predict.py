"""Fused prediction: nine planes against three (Dice, cost), and out of core at scale (time, peak RSS).

``--part dice``: HRNet-W18-small (the CPU default) trained from fresh weights for ``--steps`` steps on
fully labelled slices (the phantom: 2 per axis; the ssTEM EM stack's central 256x256: every 5th z
section), then the whole volume predicted with 3 and with 9 planes; Dice (mean over classes) on the
voxels not trained on, and the prediction seconds of each.

``--part scale``: a tiny untrained network (:class:`TinyNet`, two 3x3 convolutions of 4 channels: the
network's cost is not what is measured here, the block pipeline is) predicts a tiled phantom of 256^3, 512^3 and
1024^3 uint16 voxels in a child process of its own, which reports its wall time and peak RSS
(``VmHWM``); ``--fraction`` limits the 1024^3 run to its first blocks (one block row:
the reading, halo, per-plane prediction, voting and writing per block are the same for every block).
On a CUDA device the same runs use bf16 autocast and ``--cuda-batch`` slices per batch.

    python benchmarks/bench_predict.py                  # both parts, writes docs/BENCHMARKS.md
    python benchmarks/bench_predict.py --part scale --sizes 256 512 --no-write
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EM = Path("/work/shared/data/drosophila_l1_sstem/drosophila_l1_sstem.npz")


def tiny_net():
    """:class:`TinyNet` (built here so that torch loads only where it runs)."""
    import torch
    from torch import nn

    from al_annotator.models.base import ModelConfig, SegmentationModel

    class TinyNet(SegmentationModel):
        """A real, tiny :class:`SegmentationModel`: 3x3 conv (1 -> 4), ReLU, 3x3 conv (4 -> 4), ReLU, 1x1 classifier."""

        embedding_dim = 4  # pad_multiple stays the models' 32, so diagonal planes batch as they do for HRNet

        def __init__(self) -> None:
            super().__init__(ModelConfig("tiny_bench", n_classes=2, dropout=0.0))
            self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
            self.classifier = nn.Conv2d(4, 2, 1)

        def _features(self, x: torch.Tensor):
            f = self.body(x)
            return f, f

    torch.manual_seed(0)
    return TinyNet()


def mean_dice(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    ds = []
    for c in np.unique(gt[mask]):
        t, p = gt[mask] == c, pred[mask] == c
        ds.append(2 * (t & p).sum() / max(1, t.sum() + p.sum()))
    return float(np.mean(ds))


def dice_run(name: str, image: np.ndarray, labels: np.ndarray, classes: list[str], train_refs, steps: int, work: Path) -> dict:
    import torch

    from al_annotator.models import create_model
    from al_annotator.store import create_project
    from al_annotator.training import TrainConfig
    from al_annotator.training.data import collect_labelled_slices
    from al_annotator.training.fit import train_round
    from al_annotator.training.predict import predict_volume

    shutil.rmtree(work / name, ignore_errors=True)  # a run of its own each time
    store = create_project(work / name, image, classes=classes)
    for ref in train_refs:
        gt = labels[ref.selection()].reshape(-1)
        for c in np.unique(gt):
            store.paint(ref, np.flatnonzero(gt == c), int(c))
    trained = np.asarray(store.labels[...]) > 0
    torch.manual_seed(0)
    model = create_model("hrnet_w18_small", n_classes=len(classes))
    cfg = TrainConfig(steps_per_round=steps, max_seconds_per_round=1e6, crop=128, lr=3e-3)
    t = time.perf_counter()
    train_round(model, collect_labelled_slices(store), cfg, device=torch.device("cpu"), seed=0)
    out = {"train_seconds": time.perf_counter() - t, "steps": steps, "shape": list(image.shape),
           "trained_voxels": int(trained.sum())}
    for planes in (3, 9):
        t = time.perf_counter()
        res = predict_volume(store, model, planes=planes)
        out[f"seconds_{planes}"] = time.perf_counter() - t
        out[f"dice_{planes}"] = mean_dice(res.probabilities.argmax(0) + 1, labels, ~trained)
    store.close()
    return out


def part_dice(steps: int, work: Path) -> dict:
    from al_annotator.datasets import make_phantom
    from al_annotator.types import SliceRef

    ph = make_phantom((96, 96, 96), seed=0)
    refs = [SliceRef(a, i) for a in "zyx" for i in (32, 64)]
    results = {"phantom": dice_run("phantom", ph.image, ph.labels, list(ph.classes), refs, steps, work)}
    if EM.exists():
        with np.load(EM) as z:
            roi = (slice(None), slice(128, 384), slice(128, 384))
            image, labels, names = z["image"][roi], z["labels"][roi] + 1, [str(n) for n in z["class_names"]]
        refs = [SliceRef("z", i) for i in range(0, image.shape[0], 5)]
        results["em"] = dice_run("em", image, labels, names, refs, steps, work)
    return results


def scale_child(size: int, planes: int, fraction: float, device: str, batch: int, project: str) -> dict:
    """Runs in a process of its own so that its peak RSS is the prediction's alone."""
    import torch
    import zarr

    from al_annotator.store import open_project
    from al_annotator.training.planes import plane_families
    from al_annotator.training.predict import DEFAULT_BLOCK, block_grid, predict_block, predict_volume

    torch.set_num_threads(1)  # the shared 2-core machine: two threads thrash when other jobs run (bench_learning_curves)
    model = tiny_net().to(device).eval()
    store = open_project(project, read_only=True)
    t = time.perf_counter()
    if fraction >= 1:
        with tempfile.TemporaryDirectory(dir=Path(project).parent) as tmp:
            scratch = zarr.open_group(tmp, mode="w")
            predict_volume(store, model, planes=planes, device=device, batch_size=batch, scratch=scratch)
            voxels = size ** 3
    else:
        cores = block_grid(store.shape, store.image.chunks, DEFAULT_BLOCK)
        cores = cores[: max(1, int(round(len(cores) * fraction)))]
        with tempfile.TemporaryDirectory(dir=Path(project).parent) as tmp:
            acc = zarr.open_group(tmp, mode="w").create_array("vote_accumulator", shape=(2, *store.shape), dtype=np.float32,
                                                              chunks=(1, *store.image.chunks), fill_value=0.0)
            families = plane_families(planes)
            for core in cores:
                res = predict_block(store.image, store.display_window, model, core, families=families, device=device,
                                    batch_size=batch)
                acc[(slice(None), *core)] = res.probabilities
        voxels = sum(int(np.prod([s.stop - s.start for s in c])) for c in cores)
    seconds = time.perf_counter() - t
    rss = peak_rss()
    return {"size": size, "planes": planes, "voxels": voxels, "seconds": seconds, "voxels_per_s": voxels / seconds,
            "peak_rss_bytes": rss, "device": device, "batch": batch}


def peak_rss() -> int:
    """This process's peak resident set (``VmHWM``), in bytes. Not ``getrusage``'s ``ru_maxrss``: Linux
    carries that over from the parent across fork and exec, so a child reported its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def make_volume(size: int, work: Path) -> Path:
    """A ``size``^3 uint16 project: the 128^3 phantom tiled (real structure, any size, cheap to make)."""
    from al_annotator.datasets import make_phantom
    from al_annotator.store import create_project

    path = work / f"tiled_{size}"
    if not path.exists():
        tile = make_phantom((128, 128, 128), seed=0).image
        reps = -(-size // 128)
        vol = np.tile(tile, (reps, reps, reps))[:size, :size, :size]
        create_project(path, vol, classes=["a", "b"]).close()
        del vol
    return path


def part_scale(sizes, planes_list, fraction: float, work: Path, cuda_batch: int) -> list[dict]:
    import torch

    devices = [("cpu", 8)] + ([("cuda", cuda_batch)] if torch.cuda.is_available() else [])
    rows = []
    for size in sizes:
        project = make_volume(size, work)
        for device, batch in devices:
            for planes in planes_list:
                frac = fraction if size >= 1024 and device == "cpu" else 1.0
                cmd = [sys.executable, __file__, "--child", json.dumps([size, planes, frac, device, batch, str(project)])]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                print(row, flush=True)
                rows.append(row)
    return rows


def dice_table(res: dict) -> str:
    lines = ["| volume | trained on | 3-plane Dice | 9-plane Dice | 3-plane s | 9-plane s |", "| --- | --- | --- | --- | --- | --- |"]
    for name, r in res.items():
        lines.append(f"| {name} {'x'.join(map(str, r['shape']))} | {r['trained_voxels']} voxels, {r['steps']} steps | "
                     f"{r['dice_3']:.3f} | {r['dice_9']:.3f} | {r['seconds_3']:.1f} | {r['seconds_9']:.1f} |")
    return "\n".join(lines)


def scale_table(rows: list[dict]) -> str:
    lines = ["| volume | planes | device | voxels predicted | seconds | voxels/s | peak RSS |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        part = "" if r["voxels"] == r["size"] ** 3 else f" ({r['voxels'] / r['size'] ** 3:.4g} of it)"
        lines.append(f"| {r['size']}^3 uint16 | {r['planes']} | {r['device']} (batch {r['batch']}) | {r['voxels']:,}{part} | "
                     f"{r['seconds']:.1f} | {r['voxels_per_s'] / 1e6:.2f} M | {r['peak_rss_bytes'] / 2**30:.2f} GiB |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("dice", "scale", "all"), default="all")
    p.add_argument("--steps", type=int, default=120, help="training steps for the Dice part")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    p.add_argument("--planes", type=int, nargs="+", default=[3, 9])
    p.add_argument("--fraction", type=float, default=1 / 16, help="share of the 1024^3 blocks predicted on the CPU")
    p.add_argument("--cuda-batch", type=int, default=64)
    p.add_argument("--work", type=Path, help="keep the projects here (default: a temporary folder)")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(scale_child(*json.loads(args.child))))
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_predict-"))
    work.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/bench_predict.py " + " ".join(a for a in sys.argv[1:])
    if args.part in ("dice", "all"):
        res = part_dice(args.steps, work)
        print(json.dumps(res, indent=1))
        if not args.no_write:
            write_section(ROOT / "docs" / "BENCHMARKS.md", f"bench_predict_dice_steps{args.steps}",
                          f"Nine-plane against three-plane fusion, {args.steps} training steps (bench_predict)",
                          dice_table(res) + "\n\nDice: mean over classes on the voxels not trained on. HRNet-W18-small from "
                          "fresh weights, crop 128, lr 3e-3; the phantom trained on 2 fully labelled slices per axis, the EM "
                          "stack (central 256x256 of the 30 ssTEM sections) on every 5th z section.", command.strip())
    if args.part in ("scale", "all"):
        rows = part_scale(args.sizes, args.planes, args.fraction, work, args.cuda_batch)
        if not args.no_write:
            write_section(ROOT / "docs" / "BENCHMARKS.md", "bench_predict_scale", "Out-of-core fused prediction (bench_predict)",
                          scale_table(rows) + "\n\nA tiny untrained network (TinyNet: two 3x3 convolutions of 4 channels), so the block pipeline "
                          "(read with a 32-voxel halo, predict every plane, vote, write) is what is timed, not a real network; "
                          "blocks of 256^3; peak RSS of the predicting process alone (a child of its own). A 1024^3 CPU row "
                          "with a fraction predicted its first blocks only (the same work per block as every other block).",
                          command.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
