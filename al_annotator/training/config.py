"""Training configuration (no torch import)."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ..errors import InputError

__all__ = ["TrainConfig", "LR_FRESH", "LR_RESUMED", "LR_CANDIDATES", "LR_TEST_STEPS"]

#: ``lr="auto"``: the rate for a network trained from fresh weights, and for one that fine-tunes a checkpoint
#: or --pretrained weights. 3e-3 beat 1e-3 from fresh weights in every comparison measured on the EM crop
#: (docs/BENCHMARKS.md, "Training recipe: what we tried" and "bench_defaults"; 5e-3 diverged for a class);
#: 1e-3 for trained weights is a precaution (a new AdamW at 3e-3 on them was not measured).
LR_FRESH, LR_RESUMED = 3e-3, 1e-3
#: ``training.fit.lr_range_test`` (measured in bench_defaults, not the default: its 8-step losses picked 1e-3 on
#: the EM crop, which then scored below 3e-3 after 80 and 160 steps).
LR_CANDIDATES = (1e-3, 3e-3)
LR_TEST_STEPS = 8

_CUDA = re.compile(r"^cuda(:\d+)?$")


def np_integer() -> type:
    import numpy as np

    return np.integer


def np_floating() -> type:
    import numpy as np

    return np.floating


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """How a round of training and prediction runs.

    The defaults are the small CPU settings: HRNet-W18-small with raw branches (~0.5 s per step
    of 8 x 256^2 on 2 cores), a bounded round, predictions on all three axes.

    Parameters
    ----------
    model
        Registry name; ``None`` picks ``hrnet_w18_small`` on the CPU and ``hrnet_w48`` on CUDA.
    device
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda[:i]"``.
    steps_per_round, max_seconds_per_round
        A round stops at whichever comes first.
    crop
        Training crops (square, drawn around labelled voxels); slices smaller than this are padded.
    axes
        Axes predicted each round; their probabilities are soft-voted (Baltruschat et al.).
    planes
        3: soft-vote the orthogonal ``axes``; 9: also the six diagonal plane families
        (``training.planes``; needs ``axes="zyx"``, costs 3x the prediction time).
    mc_samples
        MC-dropout samples for BALD scores (0 = no BALD; each sample costs one classifier pass).
    pretrained
        Optional local weights file (ImageNet HRNet or an earlier project checkpoint).
    lr
        AdamW learning rate, or ``"auto"`` (the default): :data:`LR_FRESH` when the network starts
        from fresh weights, :data:`LR_RESUMED` when it fine-tunes a checkpoint or ``pretrained`` weights.
    input_norm
        ``"window"``: the display window mapped to [0, 1]; ``"slice"``: then every slice
        standardised on its own mean and spread (for stacks whose sections differ in brightness,
        such as serial-section EM; see ``al_annotator.training.data.normalise``); ``"auto"`` (the
        default): ``"slice"`` when neighbouring slices differ in mean brightness by at least
        ``training.data.SECTION_SHIFT_SLICE`` of the in-slice spread, else ``"window"``
        (``training.data.choose_input_norm``; a resumed model keeps the normalisation it was trained with).
        What ``"auto"`` resolved to, and why, is in the trainer's status and each model version's metrics.
    continuous
        Watch mode: when no new labels came in, keep training on the ones there are (a round with
        no prediction) instead of idling while the expert paints, and publish a version only when
        its held-out score improved by ``min_improvement`` (or after ``publish_every`` seconds
        when there is no held-out score); after ``patience`` such rounds without improvement the
        trainer waits for new labels ("converged").
    holdout_fraction
        Share of labelled voxels held out (whole strokes, stable; ``training.holdout``) to
        score each round and choose what to publish; 0 turns it off.
    """

    model: str | None = None
    device: str = "auto"
    steps_per_round: int = 60
    max_seconds_per_round: float = 45.0
    batch_size: int = 8
    crop: int = 256
    lr: float | str = "auto"
    weight_decay: float = 1e-4
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    dropout: float = 0.1
    val_every: int = 5
    axes: str = "zyx"
    planes: int = 3
    predict_batch: int = 8
    tile: int | None = 1024
    mc_samples: int = 0
    keep_versions: int = 3
    seed: int = 0
    threads: int | None = None
    amp: bool = True
    pretrained: str | None = None
    input_norm: str = "auto"
    continuous: bool = True
    holdout_fraction: float = 0.1
    min_improvement: float = 0.005
    publish_every: float = 600.0
    patience: int = 4

    def __post_init__(self) -> None:
        def is_int(v: Any) -> bool:
            return isinstance(v, (int, np_integer())) and not isinstance(v, bool)

        def is_real(v: Any) -> bool:
            return isinstance(v, (int, float, np_floating(), np_integer())) and not isinstance(v, bool) and math.isfinite(v)

        for name in ("steps_per_round", "batch_size", "crop", "predict_batch", "keep_versions", "val_every", "patience"):
            v = getattr(self, name)
            if not is_int(v) or v < 1:
                raise InputError(f"{name} must be an integer >= 1, got {v!r}")
        for name, lo in (("mc_samples", 0), ("seed", 0)):
            v = getattr(self, name)
            if not is_int(v) or v < lo:
                raise InputError(f"{name} must be an integer >= {lo}, got {v!r}")
        for name in ("threads", "tile"):
            v = getattr(self, name)
            if v is not None and (not is_int(v) or v < 1):
                raise InputError(f"{name} must be an integer >= 1 or None, got {v!r}")
        if not (self.lr == "auto" and isinstance(self.lr, str)) and (not is_real(self.lr) or self.lr <= 0):
            raise InputError(f"lr must be 'auto' or a finite number > 0, got {self.lr!r}")
        for name in ("max_seconds_per_round",):
            v = getattr(self, name)
            if not is_real(v) or v <= 0:
                raise InputError(f"{name} must be a finite number > 0, got {v!r}")
        for name in ("weight_decay", "dice_weight", "ce_weight"):
            v = getattr(self, name)
            if not is_real(v) or v < 0:
                raise InputError(f"{name} must be a finite number >= 0, got {v!r}")
        if not isinstance(self.continuous, bool):
            raise InputError(f"continuous must be true or false, got {self.continuous!r}")
        if not is_real(self.holdout_fraction) or not 0 <= self.holdout_fraction <= 0.5:
            raise InputError(f"holdout_fraction must be a number from 0 to 0.5, got {self.holdout_fraction!r}")
        for name in ("min_improvement", "publish_every"):
            v = getattr(self, name)
            if not is_real(v) or v < 0:
                raise InputError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.dice_weight + self.ce_weight <= 0:
            raise InputError("dice_weight and ce_weight cannot both be 0: the loss would be zero")
        if not is_real(self.dropout) or not 0 <= self.dropout < 1:
            raise InputError(f"dropout must be a number from 0 to below 1, got {self.dropout!r}")
        if not isinstance(self.axes, str):
            raise InputError(f"axes must be a string such as 'zyx' or 'z', got {self.axes!r}")
        axes = "".join(a for a in self.axes.lower() if a in "zyx")
        if not axes or len(axes) != len(self.axes) or len(set(axes)) != len(axes):
            raise InputError(f"axes must be a non-empty combination of z, y, x such as 'zyx' or 'z', got {self.axes!r}")
        if self.planes not in (3, 9) or isinstance(self.planes, bool):
            raise InputError(f"planes must be 3 (orthogonal) or 9 (orthogonal and diagonal), got {self.planes!r}")
        if self.planes == 9 and sorted(axes) != ["x", "y", "z"]:
            raise InputError(f"planes 9 soft-votes all nine planes, so it needs axes 'zyx', got {self.axes!r}; "
                             "use planes 3 to predict along fewer axes")
        if self.input_norm not in ("auto", "window", "slice"):
            raise InputError(f"input_norm must be 'auto', 'window' or 'slice', got {self.input_norm!r}")
        if not isinstance(self.device, str) or not (self.device in ("auto", "cpu") or _CUDA.match(self.device)):
            raise InputError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {self.device!r}")
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise InputError(f"model must be a registered model name, got {self.model!r}")
        if self.pretrained is not None and not isinstance(self.pretrained, str):
            raise InputError(f"pretrained must be the path of a weights file, got {self.pretrained!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict):
            raise InputError(f"training options must be a JSON object, got {type(data).__name__}")
        unknown = set(data) - names
        if unknown:
            raise InputError(f"unknown training options {sorted(unknown)}; known: {sorted(names)}")
        return cls(**data)

    def with_(self, **kw: Any) -> "TrainConfig":
        return replace(self, **{k: v for k, v in kw.items() if v is not None})
