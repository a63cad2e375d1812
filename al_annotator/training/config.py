"""Training configuration (no torch import)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ..errors import InputError

__all__ = ["TrainConfig"]


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
    mc_samples
        MC-dropout samples for BALD scores (0 = no BALD; each sample costs one classifier pass).
    pretrained
        Optional local weights file (ImageNet HRNet or an earlier project checkpoint).
    input_norm
        ``"window"``: the display window mapped to [0, 1]; ``"slice"``: then every slice
        standardised on its own mean and spread (for stacks whose sections differ in brightness,
        such as serial-section EM; see ``al_annotator.training.data.normalise``).
    """

    model: str | None = None
    device: str = "auto"
    steps_per_round: int = 60
    max_seconds_per_round: float = 45.0
    batch_size: int = 8
    crop: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    dropout: float = 0.1
    val_every: int = 5
    axes: str = "zyx"
    predict_batch: int = 8
    tile: int | None = 1024
    mc_samples: int = 0
    keep_versions: int = 3
    seed: int = 0
    threads: int | None = None
    amp: bool = True
    pretrained: str | None = None
    input_norm: str = "window"

    def __post_init__(self) -> None:
        for name in ("steps_per_round", "batch_size", "crop", "predict_batch", "keep_versions", "val_every"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.max_seconds_per_round <= 0:
            raise InputError(f"max_seconds_per_round must be > 0, got {self.max_seconds_per_round!r}")
        axes = "".join(a for a in self.axes.lower() if a in "zyx")
        if not axes or len(axes) != len(self.axes) or len(set(axes)) != len(axes):
            raise InputError(f"axes must be a non-empty combination of z, y, x such as 'zyx' or 'z', got {self.axes!r}")
        if self.mc_samples < 0:
            raise InputError(f"mc_samples must be >= 0, got {self.mc_samples}")
        if self.input_norm not in ("window", "slice"):
            raise InputError(f"input_norm must be 'window' or 'slice', got {self.input_norm!r}")
        if not (self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda")):
            raise InputError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {self.device!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise InputError(f"unknown training options {sorted(unknown)}; known: {sorted(names)}")
        return cls(**data)

    def with_(self, **kw: Any) -> "TrainConfig":
        return replace(self, **{k: v for k, v in kw.items() if v is not None})
