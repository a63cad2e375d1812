"""MONAI ``BasicUNet`` wrapped as a :class:`~al_annotator.models.base.SegmentationModel`.

BasicUNet has no separate encoder, so the bottleneck for embeddings is captured by a forward hook
on its deepest down block (``down_4``). Its own ``final_conv`` is replaced by the shared
dropout + 1x1 classifier so MC dropout works the same way as for HRNet.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError
from .base import ModelConfig, SegmentationModel

__all__ = ["BasicUNetSegmentation"]

_OPTIONS = {"features", "norm", "upsample"}
DEFAULT_FEATURES = (16, 32, 64, 128, 256, 16)


class BasicUNetSegmentation(SegmentationModel):
    """MONAI BasicUNet (2D) with the shared MC-dropout classifier.

    Options
    -------
    features : six ints, default ``(16, 32, 64, 128, 256, 16)`` (``embedding_dim`` = ``features[4]``)
    norm : MONAI norm name, default ``"instance"`` (affine)
    upsample : ``"deconv"`` (default), ``"pixelshuffle"`` or ``"nontrainable"``

    Examples
    --------
    >>> from al_annotator.models import create_model
    >>> create_model("basic_unet", n_classes=2).embedding_dim
    256
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        opts = config.checked_kwargs(_OPTIONS)
        features = tuple(opts.get("features", DEFAULT_FEATURES))
        if len(features) != 6 or not all(isinstance(f, int) and f > 0 for f in features):
            raise InputError(f"basic_unet features must be six positive integers, got {features!r}")
        norm = opts.get("norm", "instance")
        norm_arg = ("instance", {"affine": True}) if norm == "instance" else norm
        from monai.networks.nets import BasicUNet  # lazy: importing monai takes seconds

        self.unet = BasicUNet(
            spatial_dims=2,
            in_channels=config.in_channels,
            out_channels=config.n_classes,
            features=features,
            norm=norm_arg,
            dropout=0.0,
            upsample=opts.get("upsample", "deconv"),
        )
        self.unet.final_conv = nn.Identity()
        self.classifier = nn.Conv2d(features[5], config.n_classes, 1)
        self.embedding_dim = features[4]
        self._bottleneck: torch.Tensor | None = None
        self.unet.down_4.register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        self._bottleneck = output

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            feats = self.unet(x)
            bottleneck = self._bottleneck
        finally:
            self._bottleneck = None
        assert bottleneck is not None
        return feats, bottleneck


def build_basic_unet(config: ModelConfig) -> BasicUNetSegmentation:
    """Registry factory for ``basic_unet``."""
    return BasicUNetSegmentation(config)
