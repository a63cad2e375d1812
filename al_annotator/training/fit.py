"""The fit loop: Dice + cross-entropy on labelled voxels only, bounded in steps and seconds."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .config import LR_CANDIDATES, LR_FRESH, LR_TEST_STEPS, TrainConfig
from .data import CropSampler, LabelledSlice, class_weights

__all__ = ["MaskedDiceCELoss", "RoundResult", "resolve_device", "train_round", "evaluate_dice", "lr_range_test"]


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from ..errors import InputError

        raise InputError("device 'cuda' was asked for but torch sees no CUDA GPU here; use --device cpu or auto")
    return dev


class MaskedDiceCELoss(torch.nn.Module):
    """Cross-entropy (ignoring target -1, class-weighted) plus MONAI's masked Dice.

    Unlabelled voxels (target ``-1``) contribute nothing to either term. The Dice term uses
    ``batch=True`` so a class absent from one crop does not add a spurious Dice of zero.
    """

    def __init__(self, n_classes: int, weight: torch.Tensor | None = None, dice_weight: float = 1.0, ce_weight: float = 1.0) -> None:
        super().__init__()
        from monai.losses import MaskedDiceLoss

        self.n_classes = n_classes
        self.register_buffer("weight", weight if weight is not None else torch.ones(n_classes))
        self.dice = MaskedDiceLoss(to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        mask = (target >= 0).unsqueeze(1)
        if not mask.any():
            return logits.sum() * 0.0
        ce = F.cross_entropy(logits, target, weight=self.weight.to(logits.device), ignore_index=-1)
        safe = target.clamp(min=0).unsqueeze(1)
        dice = self.dice(logits, safe, mask=mask.to(logits.dtype))
        return self.ce_weight * ce + self.dice_weight * dice


@dataclass
class RoundResult:
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    stopped: bool = False

    @property
    def loss(self) -> float:
        tail = self.losses[-10:]
        return float(np.mean(tail)) if tail else float("nan")


def train_round(
    model: torch.nn.Module,
    samples: Sequence[LabelledSlice],
    cfg: TrainConfig,
    *,
    device: torch.device,
    optimizer: torch.optim.Optimizer | None = None,
    seed: int = 0,
    should_stop: Callable[[], bool] = lambda: False,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[RoundResult, torch.optim.Optimizer]:
    """Fine-tune ``model`` on ``samples`` for at most ``cfg.steps_per_round`` steps and
    ``cfg.max_seconds_per_round`` seconds. ``progress(step, total, loss)`` is called every step.
    ``cfg.lr="auto"`` with no ``optimizer``: :data:`~al_annotator.training.config.LR_FRESH`."""
    torch.manual_seed(seed)
    model.to(device).train()
    n_classes = model.n_classes
    weight = torch.from_numpy(class_weights(samples, n_classes))
    loss_fn = MaskedDiceCELoss(n_classes, weight, cfg.dice_weight, cfg.ce_weight).to(device)
    if optimizer is None:
        # "auto": the worker resolves it (fresh or resumed weights) and reports it first; a direct caller
        # (the simulator, benchmarks) trains fresh weights
        lr = LR_FRESH if cfg.lr == "auto" else cfg.lr
        optimizer = torch.optim.AdamW(model.parameters(), lr=float(lr), weight_decay=cfg.weight_decay)
    sampler = CropSampler(samples, cfg.crop, seed=seed)
    use_amp = cfg.amp and device.type == "cuda"
    result = RoundResult(steps=0, seconds=0.0)
    start = time.perf_counter()
    for step in range(cfg.steps_per_round):
        if should_stop():
            result.stopped = True
            break
        if time.perf_counter() - start > cfg.max_seconds_per_round:
            break
        images, targets = sampler.batch(cfg.batch_size)
        x = torch.from_numpy(images).to(device, non_blocking=True)
        y = torch.from_numpy(targets).to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
            logits = model(x)
        loss = loss_fn(logits, y)
        loss.backward()
        optimizer.step()
        result.losses.append(float(loss.detach()))
        result.steps = step + 1
        if progress is not None:
            progress(step + 1, cfg.steps_per_round, result.losses[-1])
    result.seconds = time.perf_counter() - start
    model.eval()
    return result, optimizer


def lr_range_test(
    model: torch.nn.Module,
    samples: Sequence[LabelledSlice],
    cfg: TrainConfig,
    *,
    device: torch.device,
    candidates: Sequence[float] = LR_CANDIDATES,
    steps: int = LR_TEST_STEPS,
    seed: int = 0,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """A learning-rate range test (measured in benchmarks/bench_defaults.py; not what ``lr="auto"`` does, see
    :data:`~al_annotator.training.config.LR_CANDIDATES`): train a few steps at each candidate learning rate, from the same weights on the
    same crops (same sampler seed), and pick the lowest mean loss over the second half of the steps.

    The model's weights and BatchNorm statistics are restored afterwards. Returns ``{"lr", "losses"
    (candidate -> that mean), "steps", "seconds", "reason"}``; ``"lr"`` is ``None`` when stopped.
    """
    import copy

    start = time.perf_counter()
    state = copy.deepcopy(model.state_dict())
    losses: dict[float, float] = {}
    probe = dataclasses_replace(cfg, steps_per_round=int(steps), max_seconds_per_round=1e9)
    try:
        for lr in candidates:
            model.load_state_dict(state)
            result, _ = train_round(model, samples, dataclasses_replace(probe, lr=float(lr)), device=device, seed=seed,
                                    should_stop=should_stop)
            if result.stopped:
                return {"lr": None, "losses": losses, "steps": int(steps), "seconds": time.perf_counter() - start, "reason": "stopped"}
            tail = result.losses[len(result.losses) // 2:]
            losses[float(lr)] = float(np.mean(tail)) if tail and np.all(np.isfinite(tail)) else float("inf")
    finally:
        model.load_state_dict(state)
        model.eval()
    best = min(losses, key=lambda k: (losses[k], k))
    seconds = time.perf_counter() - start
    shown = ", ".join(f"{k:g}: {v:.3f}" for k, v in losses.items())
    return {"lr": best, "losses": losses, "steps": int(steps), "seconds": seconds,
            "reason": f"lr={best:g}: lowest loss over steps {int(steps) // 2 + 1}-{int(steps)} of a range test ({shown}; {seconds:.1f} s)"}


def dataclasses_replace(cfg: TrainConfig, **kw: Any) -> TrainConfig:
    from dataclasses import replace

    return replace(cfg, **kw)


def evaluate_dice(model: torch.nn.Module, samples: Sequence[LabelledSlice], *, device: torch.device, batch_size: int = 8) -> dict[str, Any]:
    """Dice per class on the labelled voxels of held-out slices (``None`` for a class with no voxels)."""
    from ..models import predict_proba_slices

    if not samples:
        return {"mean": None, "per_class": []}
    n_classes = model.n_classes
    inter = np.zeros(n_classes)
    total_pred = np.zeros(n_classes)
    total_true = np.zeros(n_classes)
    by_shape: dict[tuple[int, int], list[LabelledSlice]] = {}
    for s in samples:
        by_shape.setdefault(s.image.shape, []).append(s)
    for group in by_shape.values():
        probs, _ = predict_proba_slices(model, np.stack([s.image for s in group]), batch_size=batch_size, device=device)
        pred = probs.argmax(1)
        for p, s in zip(pred, group):
            m = s.target >= 0
            t, q = s.target[m], p[m]
            for c in range(n_classes):
                inter[c] += np.sum((t == c) & (q == c))
                total_pred[c] += np.sum(q == c)
                total_true[c] += np.sum(t == c)
    per_class = [float(2 * inter[c] / (total_pred[c] + total_true[c])) if total_true[c] > 0 else None for c in range(n_classes)]
    valid = [d for d in per_class if d is not None]
    return {"mean": float(np.mean(valid)) if valid else None, "per_class": per_class}
