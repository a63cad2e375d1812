"""The model contract every segmentation network in al_annotator fulfils.

A :class:`SegmentationModel` maps a batch of 2D slices ``(B, in_channels, H, W)`` to class logits
``(B, n_classes, H, W)`` at the input size, for *any* ``H, W`` (it pads internally to a multiple
of :attr:`SegmentationModel.pad_multiple` and crops back). It also exposes

* :meth:`~SegmentationModel.forward_with_embedding`: logits plus a per-slice embedding, the
  global-average-pooled deepest (bottleneck) features, **L2-normalised** (unit length), used by
  the coreset / hybrid acquisition strategies;
* a single :class:`MCDropout2d` right before the 1x1 classifier, which
  :meth:`~SegmentationModel.enable_mc_dropout` / :meth:`~SegmentationModel.mc_dropout` keep
  active in eval mode for Monte-Carlo dropout (BALD). Because it is the *only* stochastic layer,
  :meth:`~SegmentationModel.forward_mc` runs the backbone once and only the classifier ``T`` times.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

__all__ = ["ModelConfig", "MCDropout2d", "SegmentationModel"]

_PRIMITIVES = (str, int, float, bool, type(None))


def _check_option_value(name: str, value: Any) -> Any:
    """Options must be plain values so a checkpoint loads with ``torch.load(weights_only=True)``."""
    if isinstance(value, (list, tuple)):
        return tuple(_check_option_value(name, v) for v in value)
    if isinstance(value, _PRIMITIVES):
        return value
    raise InputError(
        f"model option {name}={value!r} is a {type(value).__name__}; options must be str, int, float, bool, "
        "None or tuples of those so that a checkpoint can rebuild the model"
    )


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model: ``create_model(**config.to_dict())``.

    Parameters
    ----------
    name
        Registry name (see :func:`al_annotator.models.list_models`).
    n_classes
        Number of output classes ``C`` (class ``i`` is stored as label value ``i + 1``).
    in_channels
        Input channels (1 for tomography).
    dropout
        Drop probability of the channel dropout before the classifier (MC dropout needs > 0).
    options
        Model-specific options as sorted ``(key, value)`` pairs (see :attr:`kwargs`).

    Examples
    --------
    >>> cfg = ModelConfig("hrnet_w18_small", n_classes=3, options=(("feature_location", ""),))
    >>> cfg.kwargs
    {'feature_location': ''}
    >>> ModelConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    name: str
    n_classes: int
    in_channels: int = 1
    dropout: float = 0.1
    options: tuple[tuple[str, Any], ...] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.n_classes, int) or isinstance(self.n_classes, bool) or self.n_classes < 1:
            raise InputError(f"n_classes must be a positive integer, got {self.n_classes!r}")
        if not isinstance(self.in_channels, int) or isinstance(self.in_channels, bool) or self.in_channels < 1:
            raise InputError(f"in_channels must be a positive integer, got {self.in_channels!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise InputError(f"dropout must be in [0, 1), got {self.dropout!r}")
        object.__setattr__(self, "dropout", float(self.dropout))
        opts = dict(self.options)
        object.__setattr__(
            self, "options", tuple(sorted((str(k), _check_option_value(str(k), v)) for k, v in opts.items()))
        )

    @property
    def kwargs(self) -> dict[str, Any]:
        """The model-specific options as a dict."""
        return dict(self.options)

    def checked_kwargs(self, allowed: Iterable[str]) -> dict[str, Any]:
        """:attr:`kwargs`, after checking that each option is one of ``allowed`` (else :class:`InputError`)."""
        opts, known = self.kwargs, set(allowed)
        unknown = set(opts) - known
        if unknown:
            raise InputError(f"unknown option(s) {sorted(unknown)} for {self.name}; allowed: {sorted(known)}")
        return opts

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (what a checkpoint stores)."""
        return {
            "name": self.name,
            "n_classes": self.n_classes,
            "in_channels": self.in_channels,
            "dropout": self.dropout,
            "options": dict(self.options),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(
                name=str(d["name"]),
                n_classes=int(d["n_classes"]),
                in_channels=int(d.get("in_channels", 1)),
                dropout=float(d.get("dropout", 0.1)),
                options=tuple(dict(d.get("options", {})).items()),
            )
        except KeyError as exc:
            raise InputError(f"model config {dict(d)!r} lacks the key {exc.args[0]!r}") from None


class MCDropout2d(nn.Dropout2d):
    """``Dropout2d`` that stays active in eval mode while :attr:`mc_active` is set."""

    def __init__(self, p: float = 0.1) -> None:
        super().__init__(p=p)
        self.mc_active = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout2d(x, self.p, self.training or self.mc_active, self.inplace)


class SegmentationModel(nn.Module):
    """Base class: a 2D segmentation network with embeddings and MC dropout.

    Subclasses set :attr:`embedding_dim`, build ``self.classifier`` (a 1x1 conv to ``n_classes``)
    and implement :meth:`_features`, which returns the classifier input (at any resolution) and
    the bottleneck feature map.

    Attributes
    ----------
    name : str
        Registry name.
    n_classes, in_channels : int
    config : ModelConfig
        Rebuilds the model (stored in checkpoints).
    embedding_dim : int
        ``D`` of :meth:`forward_with_embedding`.
    pad_multiple : int
        Inputs are padded (reflect, or replicate when too small) to a multiple of this.
    """

    pad_multiple: int = 32
    embedding_dim: int
    classifier: nn.Module

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.name = config.name
        self.n_classes = config.n_classes
        self.in_channels = config.in_channels
        self.dropout = MCDropout2d(config.dropout)

    # -- to be implemented by subclasses -------------------------------------------------------
    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (padded) -> (classifier input ``(B, F, h, w)``, bottleneck ``(B, D, h', w')``)."""
        raise NotImplementedError

    # -- shared machinery ----------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != self.in_channels:
            shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
            raise InputError(
                f"{self.name} expects a (B, {self.in_channels}, H, W) float tensor, got {shape}"
            )

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.pad_multiple
        ph, pw = (-h) % m, (-w) % m
        if ph == 0 and pw == 0:
            return x
        mode = "reflect" if ph < h and pw < w else "replicate"
        return F.pad(x, (0, pw, 0, ph), mode=mode)

    def _logits(self, feats: torch.Tensor, size: tuple[int, int], crop: tuple[int, int], *, dropout: bool | None = None) -> torch.Tensor:
        if dropout is None:
            feats = self.dropout(feats)
        elif dropout:
            feats = F.dropout2d(feats, self.dropout.p, True)
        logits = self.classifier(feats)
        if tuple(logits.shape[-2:]) != tuple(size):
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits[..., : crop[0], : crop[1]]

    @staticmethod
    def _embed(bottleneck: torch.Tensor) -> torch.Tensor:
        return F.normalize(bottleneck.float().mean(dim=(-2, -1)), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_classes, H, W)`` for input ``(B, in_channels, H, W)``.

        Examples
        --------
        >>> import torch
        >>> from al_annotator.models import create_model
        >>> model = create_model("hrnet_w18_small", n_classes=3).eval()
        >>> model(torch.zeros(1, 1, 72, 56)).shape
        torch.Size([1, 3, 72, 56])
        """
        self._check_input(x)
        xp = self._pad(x)
        feats, _ = self._features(xp)
        return self._logits(feats, tuple(xp.shape[-2:]), tuple(x.shape[-2:]))

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, C, H, W)`` and L2-normalised embeddings ``(B, embedding_dim)`` (float32).

        The embedding is the global average of the deepest (bottleneck) feature map, divided by
        its Euclidean norm; it does not depend on dropout.

        Examples
        --------
        >>> import torch
        >>> from al_annotator.models import create_model
        >>> model = create_model("hrnet_w18_small", n_classes=2).eval()
        >>> logits, emb = model.forward_with_embedding(torch.zeros(2, 1, 64, 64))
        >>> tuple(emb.shape) == (2, model.embedding_dim)
        True
        """
        self._check_input(x)
        xp = self._pad(x)
        feats, bottleneck = self._features(xp)
        logits = self._logits(feats, tuple(xp.shape[-2:]), tuple(x.shape[-2:]))
        return logits, self._embed(bottleneck)

    def forward_mc(self, x: torch.Tensor, samples: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``samples`` MC-dropout logits and the embedding, running the backbone only once.

        Dropout is applied (training-style) whatever the module mode, because the pre-classifier
        dropout is the only stochastic layer.

        Returns
        -------
        logits : list of ``samples`` tensors ``(B, C, H, W)``
        embedding : ``(B, embedding_dim)``
        """
        self._check_input(x)
        if self.dropout.p <= 0.0:
            raise InputError(
                f"{self.name} was built with dropout=0, so MC-dropout samples would all be equal; "
                "create the model with dropout>0 (e.g. 0.1) or use mc_samples=0"
            )
        if samples < 1:
            raise InputError(f"samples must be >= 1, got {samples!r}")
        xp = self._pad(x)
        feats, bottleneck = self._features(xp)
        size, crop = tuple(xp.shape[-2:]), tuple(x.shape[-2:])
        return [self._logits(feats, size, crop, dropout=True) for _ in range(samples)], self._embed(bottleneck)

    # -- MC dropout -----------------------------------------------------------------------------
    def enable_mc_dropout(self, enabled: bool = True) -> bool:
        """Keep the pre-classifier dropout active in eval mode (``True``) or not; returns the previous state."""
        previous = self.mc_dropout_active
        for m in self.modules():
            if isinstance(m, MCDropout2d):
                m.mc_active = bool(enabled)
        return previous

    @property
    def mc_dropout_active(self) -> bool:
        return any(m.mc_active for m in self.modules() if isinstance(m, MCDropout2d))

    @contextlib.contextmanager
    def mc_dropout(self, enabled: bool = True) -> Iterator["SegmentationModel"]:
        """Context manager: MC dropout on inside the block, previous state restored after.

        Examples
        --------
        >>> import torch
        >>> from al_annotator.models import create_model
        >>> model = create_model("hrnet_w18_small", n_classes=2, dropout=0.5).eval()
        >>> x = torch.randn(1, 1, 64, 64)
        >>> with model.mc_dropout():
        ...     a, b = model(x), model(x)
        >>> bool((a != b).any())
        True
        """
        previous = self.enable_mc_dropout(enabled)
        try:
            yield self
        finally:
            self.enable_mc_dropout(previous)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, n_classes={self.n_classes}, in_channels={self.in_channels}, embedding_dim={self.embedding_dim}"
