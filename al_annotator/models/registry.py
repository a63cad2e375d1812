"""Registry of named model factories."""

from __future__ import annotations

from typing import Any, Callable

from ..errors import InputError
from .base import ModelConfig, SegmentationModel

__all__ = ["ModelFactory", "register_model", "create_model", "list_models", "default_model_name"]

#: A factory builds a model from its full config (name, classes, channels, dropout, options).
ModelFactory = Callable[[ModelConfig], SegmentationModel]

_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str, factory: ModelFactory, *, overwrite: bool = False) -> None:
    """Register ``factory(config) -> SegmentationModel`` under ``name``.

    Examples
    --------
    >>> from al_annotator.models import register_model, create_model
    >>> from al_annotator.models.unet import BasicUNetSegmentation
    >>> register_model("tiny_unet", lambda cfg: BasicUNetSegmentation(cfg), overwrite=True)
    >>> create_model("tiny_unet", n_classes=2, features=(4, 4, 8, 8, 16, 4)).embedding_dim
    16
    """
    if not isinstance(name, str) or not name:
        raise InputError(f"model name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise InputError(f"factory for model {name!r} must be callable, got {factory!r}")
    if name in _REGISTRY and not overwrite:
        raise InputError(f"a model named {name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[name] = factory


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def create_model(name: str, n_classes: int, in_channels: int = 1, dropout: float = 0.1, **kw: Any) -> SegmentationModel:
    """Build a registered model with freshly initialised weights (nothing is downloaded).

    Parameters
    ----------
    name
        One of :func:`list_models`: ``hrnet_w18_small`` (CPU default), ``hrnet_w18_small_v2``,
        ``hrnet_w18``, ``hrnet_w32``, ``hrnet_w48`` (GPU default), ``basic_unet``.
    n_classes
        Output classes ``C``.
    in_channels
        Input channels (1 for tomography).
    dropout
        Pre-classifier channel-dropout probability (needed > 0 for MC dropout).
    **kw
        Model options, e.g. ``feature_location=""``/``"incre"``, ``head_channels`` (HRNet) or
        ``features=(...)`` (basic_unet). They are stored in ``model.config``.

    Examples
    --------
    >>> import torch
    >>> from al_annotator.models import create_model
    >>> model = create_model("hrnet_w18_small", n_classes=3)
    >>> model.config.name, model.n_classes
    ('hrnet_w18_small', 3)
    >>> model.eval()(torch.zeros(1, 1, 64, 64)).shape
    torch.Size([1, 3, 64, 64])
    """
    if name not in _REGISTRY:
        raise InputError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    config = ModelConfig(name=name, n_classes=n_classes, in_channels=in_channels, dropout=dropout, options=tuple(kw.items()))
    model = _REGISTRY[name](config)
    if not isinstance(model, SegmentationModel):
        raise InputError(f"the factory of model {name!r} returned {type(model).__name__}, not a SegmentationModel")
    return model


def default_model_name(device: Any = "cpu") -> str:
    """The default architecture for a device.

    ``hrnet_w18_small`` (raw branches, ~1.5 M parameters, ~0.5 s per training step of 8 x 256^2
    on two CPU cores) for anything but CUDA; ``hrnet_w48`` (~65 M parameters) on a CUDA GPU.

    Examples
    --------
    >>> default_model_name("cpu"), default_model_name("cuda:0")
    ('hrnet_w18_small', 'hrnet_w48')
    """
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise InputError(f"not a torch device: {device!r} (use e.g. 'cpu' or 'cuda')") from None
    return "hrnet_w48" if kind == "cuda" else "hrnet_w18_small"
