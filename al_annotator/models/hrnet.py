"""HRNet segmentation models built from timm backbones (never downloaded).

The backbone is ``timm.create_model(variant, features_only=True, in_chans=..., pretrained=False,
out_indices=(1, 2, 3, 4))``: the four parallel branches at reductions 4, 8, 16 and 32. With
``feature_location=""`` (the default) timm returns the *raw* branch outputs (e.g. 16/32/64/128
channels for ``hrnet_w18_small``), which is several times cheaper on a CPU than the "incre"
features (128/256/512/1024 channels) used for ImageNet classification.

Head: every branch is upsampled bilinearly to 1/4 resolution and concatenated; the GPU variants
(``hrnet_w18``, ``hrnet_w32``, ``hrnet_w48``) then fuse them HRNetV2-style with a 1x1 conv +
BatchNorm + ReLU of ``head_channels`` channels, the CPU variants (``hrnet_w18_small``,
``hrnet_w18_small_v2``) skip the fusion by default (for ``hrnet_w18_small`` it added up to about a third to the
CPU training step in ``benchmarks/bench_models.py``; pass ``head_channels=N`` to add it). Then dropout and a 1x1
conv to the classes, upsampled to the input size. The embedding is the global-average-pooled
1/32 branch (``embedding_dim`` = its channel count), L2-normalised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .base import ModelConfig, SegmentationModel

__all__ = ["HRNetSegmentation", "HRNET_VARIANTS"]

#: Registry name -> timm model name.
HRNET_VARIANTS: dict[str, str] = {
    "hrnet_w18_small": "hrnet_w18_small",
    "hrnet_w18_small_v2": "hrnet_w18_small_v2",
    "hrnet_w18": "hrnet_w18",
    "hrnet_w32": "hrnet_w32",
    "hrnet_w48": "hrnet_w48",
}

_OPTIONS = {"feature_location", "head_channels"}
#: Variants meant for CPUs: no fusion conv in the head by default.
_CPU_VARIANTS = frozenset({"hrnet_w18_small", "hrnet_w18_small_v2"})


class HRNetSegmentation(SegmentationModel):
    """HRNet backbone (timm) + multi-branch fusion head.

    Options (``create_model(..., **options)``)
    ------------------------------------------
    feature_location : ``""`` (default, raw branches) or ``"incre"`` (timm's ImageNet features)
    head_channels : int or None
        Width of the 1x1 fusion conv; ``0`` = no fusion layer (concatenation straight into
        dropout + classifier). ``None`` (default) = ``0`` for the small CPU variants; for the
        others the sum of the branch channels if <= 768, else 256.

    Examples
    --------
    >>> from al_annotator.models import create_model
    >>> m = create_model("hrnet_w18_small", n_classes=4)
    >>> m.embedding_dim, m.branch_channels
    (128, (16, 32, 64, 128))
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        opts = config.checked_kwargs(_OPTIONS)
        if config.name not in HRNET_VARIANTS:
            raise InputError(f"{config.name!r} is not an HRNet variant; choose one of {sorted(HRNET_VARIANTS)}")
        location = opts.get("feature_location", "")
        if location not in ("", "incre"):
            raise InputError(f"feature_location must be '' (raw branches) or 'incre', got {location!r}")
        import timm  # lazy: importing timm takes seconds

        self.backbone = timm.create_model(
            HRNET_VARIANTS[config.name],
            features_only=True,
            feature_location=location,
            in_chans=config.in_channels,
            pretrained=False,
            out_indices=(1, 2, 3, 4),
        )
        chs = tuple(int(c) for c in self.backbone.feature_info.channels())
        self.branch_channels = chs
        total = sum(chs)
        head = opts.get("head_channels")
        if head is None:
            head = 0 if config.name in _CPU_VARIANTS else (total if total <= 768 else 256)
        if not isinstance(head, int) or head < 0:
            raise InputError(f"head_channels must be a non-negative integer or None, got {head!r}")
        if head == 0:
            self.fuse: nn.Module = nn.Identity()
            head = total
        else:
            self.fuse = nn.Sequential(nn.Conv2d(total, head, 1, bias=False), nn.BatchNorm2d(head), nn.ReLU(inplace=True))
        self.classifier = nn.Conv2d(head, config.n_classes, 1)
        self.embedding_dim = chs[-1]

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        branches = self.backbone(x)
        size = branches[0].shape[-2:]
        up = [branches[0]] + [F.interpolate(b, size=size, mode="bilinear", align_corners=False) for b in branches[1:]]
        return self.fuse(torch.cat(up, dim=1)), branches[-1]


def build_hrnet(config: ModelConfig) -> HRNetSegmentation:
    """Registry factory for every HRNet variant."""
    return HRNetSegmentation(config)
