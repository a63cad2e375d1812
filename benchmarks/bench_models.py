"""Benchmark the segmentation models: training-step time and inference throughput.

Training step: AdamW, masked Dice + cross-entropy (label 0 = unlabelled; 10 % of the pixels
labelled), batch 8. Inference: ``predict_proba_slices`` (softmax + embeddings, numpy out) on 8
slices per batch. A few warm-up iterations, then the median of N. On the CPU torch uses
``--threads`` threads (default 2); when CUDA is available the same is measured on the GPU with
bfloat16 autocast.

Usage::

    python benchmarks/bench_models.py                       # print the table
    python benchmarks/bench_models.py --write-md docs/BENCHMARKS.md
    python benchmarks/bench_models.py --models hrnet_w18_small --sizes 256 --steps 3
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from report import cpu_name, replace_section  # noqa: E402

from al_annotator.models import create_model, predict_proba_slices  # noqa: E402

SECTION = "bench_models"
DEFAULT_MODELS = ["hrnet_w18_small", "hrnet_w18_small:head_channels=240", "hrnet_w18_small_v2", "basic_unet"]


def masked_dice_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy + soft Dice over labelled pixels only (labels: 0 = unlabelled, class i = i + 1)."""
    n_classes = logits.shape[1]
    target = labels.long() - 1
    mask = target >= 0
    safe = target.clamp_min(0)
    logits = logits.float()
    ce = F.cross_entropy(logits, safe, reduction="none")[mask].mean()
    m = mask.unsqueeze(1).float()
    probs = logits.softmax(dim=1) * m
    onehot = F.one_hot(safe, n_classes).permute(0, 3, 1, 2).float() * m
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    denom = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    dice = 1.0 - ((2 * inter + 1.0) / (denom + 1.0)).mean()
    return ce + dice


def parse_model(spec: str) -> tuple[str, dict]:
    """``"hrnet_w18_small:head_channels=0,feature_location="`` -> (name, options)."""
    name, _, opts = spec.partition(":")
    kw: dict = {}
    for item in filter(None, opts.split(",")):
        k, _, v = item.partition("=")
        try:
            kw[k] = int(v)
        except ValueError:
            kw[k] = v
    return name, kw


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_one(spec: str, size: int, device: torch.device, batch: int, n_classes: int, warmup: int, steps: int) -> dict:
    name, kw = parse_model(spec)
    torch.manual_seed(0)
    model = create_model(name, n_classes=n_classes, **kw).to(device)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, size, size, generator=gen).to(device)
    labels = torch.randint(1, n_classes + 1, (batch, size, size), generator=gen, dtype=torch.uint8)
    labels[torch.rand(batch, size, size, generator=gen) > 0.1] = 0
    labels = labels.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    model.train()
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t = time.perf_counter()
        with amp:
            logits = model(x)
        loss = masked_dice_ce(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    train_s = statistics.median(times)

    slices = x[:, 0].float().cpu().numpy().astype(np.float32)
    itimes = []
    for i in range(warmup + steps):
        _sync(device)
        t = time.perf_counter()
        predict_proba_slices(model, slices, batch_size=batch, device=device)
        _sync(device)
        if i >= warmup:
            itimes.append(time.perf_counter() - t)
    infer_s = statistics.median(itimes)
    return {
        "model": spec,
        "params_m": params,
        "size": size,
        "device": device.type,
        "train_s": train_s,
        "train_slices_s": batch / train_s,
        "infer_slices_s": batch / infer_s,
        "steps": steps,
    }


def device_description(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (bf16 autocast)"
    return f"{cpu_name()}, {threads} torch threads (float32)"


def render(rows: list[dict], devices: dict[str, str], command: str, batch: int) -> str:
    lines = [
        "## Models: training step and inference (`benchmarks/bench_models.py`)",
        "",
        f"Date: {_dt.date.today().isoformat()}  ",
        f"Command: `{command}`  ",
        "Devices: " + "; ".join(f"{k}: {v}" for k, v in devices.items()) + "  ",
        f"torch {torch.__version__}. Training step = forward + masked Dice+CE + backward + AdamW on a batch of {batch}; "
        f"inference = `predict_proba_slices` on {batch} slices (probabilities + embeddings). Medians after warm-up.",
        "",
        "| model | params (M) | input | device | train s/step | train slices/s | inference slices/s | steps |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['params_m']:.2f} | {r['size']}² | {r['device']} | {r['train_s']:.2f} | "
            f"{r['train_slices_s']:.1f} | {r['infer_slices_s']:.1f} | {r['steps']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="names, optionally name:opt=value,...")
    ap.add_argument("--sizes", nargs="+", type=int, default=[256, 512])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5, help="timed steps (median of these)")
    ap.add_argument("--steps-large", type=int, default=3, help="timed steps for inputs > 256² on the CPU (1 warm-up)")
    ap.add_argument("--no-cuda", action="store_true")
    ap.add_argument("--write-md", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.no_cuda:
        devices.append(torch.device("cuda"))
    rows = []
    t0 = time.perf_counter()
    for device in devices:
        for size in args.sizes:
            large = size > 256 and device.type == "cpu"
            steps = args.steps_large if large else args.steps
            warmup = 1 if large else args.warmup
            for spec in args.models:
                r = bench_one(spec, size, device, args.batch, args.classes, warmup, steps)
                rows.append(r)
                print(
                    f"{r['model']:34s} {size:4d}² {device.type:4s}  train {r['train_s']:.3f} s/step  "
                    f"infer {r['infer_slices_s']:.1f} slices/s  ({time.perf_counter() - t0:.0f} s elapsed)",
                    flush=True,
                )
    if args.write_md:
        descr = {d.type: device_description(d, args.threads) for d in devices}
        command = "python benchmarks/bench_models.py " + " ".join(argv if argv is not None else sys.argv[1:])
        replace_section(args.write_md, SECTION, render(rows, descr, command.strip(), args.batch))
        print(f"wrote section {SECTION!r} of {args.write_md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
