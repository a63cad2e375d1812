"""Checkpoints (atomic save / load) and loading of user-supplied pretrained weights."""

from __future__ import annotations

import logging
import os
import pickle
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..errors import AlAnnotatorError, InputError
from .base import ModelConfig, SegmentationModel
from .registry import create_model

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "CheckpointNotFoundError",
    "LoadReport",
    "save_checkpoint",
    "load_checkpoint",
    "load_pretrained",
]

log = logging.getLogger(__name__)

#: Value of the ``format`` key of every checkpoint this module writes.
CHECKPOINT_FORMAT = "al_annotator.checkpoint/1"


class CheckpointError(AlAnnotatorError, ValueError):
    """A checkpoint or weights file is unreadable or does not fit the model."""


class CheckpointNotFoundError(AlAnnotatorError, FileNotFoundError):
    """A checkpoint or pretrained-weights file does not exist."""


def _plain(value: Any) -> Any:
    """numpy values -> Python / torch so that ``torch.load(weights_only=True)`` can read the meta."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def save_checkpoint(model: SegmentationModel, path: str | os.PathLike, **meta: Any) -> Path:
    """Save ``model`` (name, config, weights) and ``meta`` atomically.

    The file is written to a temporary sibling, fsynced and moved into place with ``os.replace``,
    so a concurrent reader sees the old file or the new one, never a partial one. ``meta``
    should hold plain values (numbers, strings, lists, dicts, tensors; numpy values are converted).

    Returns
    -------
    Path
        The checkpoint path.

    Examples
    --------
    >>> import tempfile, os
    >>> from al_annotator.models import create_model, save_checkpoint, load_checkpoint
    >>> path = os.path.join(tempfile.mkdtemp(), "model.pt")
    >>> _ = save_checkpoint(create_model("hrnet_w18_small", n_classes=2), path, round=3)
    >>> model, meta = load_checkpoint(path)
    >>> model.name, meta["round"]
    ('hrnet_w18_small', 3)
    """
    if not isinstance(model, SegmentationModel):
        raise InputError(f"save_checkpoint needs a SegmentationModel, got {type(model).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_name": model.name,
        "config": model.config.to_dict(),
        "n_classes": model.n_classes,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": _plain(dict(meta)),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _torch_load(path: Path, map_location: Any, trusted: bool) -> Any:
    if not path.is_file():
        raise CheckpointNotFoundError(f"no such checkpoint or weights file: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:  # pragma: no cover - timm depends on safetensors
            raise CheckpointError(f"{path} is a .safetensors file but the safetensors package is not installed") from None
        return load_file(str(path), device=str(map_location) if isinstance(map_location, (str, torch.device)) else "cpu")
    try:
        return torch.load(path, map_location=map_location, weights_only=not trusted)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} holds objects that the safe loader refuses ({exc}); "
            "if you trust the file, pass trusted=True"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable torch file: {exc}") from None


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", *, trusted: bool = False) -> tuple[SegmentationModel, dict[str, Any]]:
    """Rebuild the model saved by :func:`save_checkpoint`; returns ``(model, meta)``.

    The model is returned in eval mode. ``trusted=True`` allows arbitrary pickled objects in
    ``meta`` (``torch.load(weights_only=False)``); only use it for files you made.
    """
    path = Path(path)
    payload = _torch_load(path, map_location, trusted)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        fmt = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path} is not an al_annotator checkpoint (format {fmt!r}, expected {CHECKPOINT_FORMAT!r}); "
            "for bare weights use load_pretrained(model, path)"
        )
    config = ModelConfig.from_dict(payload["config"])
    model = create_model(config.name, config.n_classes, config.in_channels, config.dropout, **config.kwargs)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit {config.name}: {exc}") from None
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    return model.eval(), dict(payload.get("meta", {}))


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_pretrained` did.

    Attributes
    ----------
    source : str
        ``"al_annotator checkpoint"`` or ``"state dict"``.
    prefix : str
        Prefix added to the file's keys to match the model (``"backbone."`` for a timm backbone).
    loaded : tuple of str
        Model keys that received weights.
    adapted : tuple of str
        Keys whose input-channel dimension was adapted (e.g. RGB first conv summed to 1 channel).
    missing : tuple of str
        Model keys the file did not provide (keep their fresh initialisation; e.g. the head).
    unexpected : tuple of str
        File keys with no counterpart in the model (e.g. timm's ImageNet classifier).
    mismatched : tuple of str
        Keys present in both with incompatible shapes (skipped), e.g. a classifier for a different number of classes.
    """

    source: str
    prefix: str
    loaded: tuple[str, ...] = field(default=())
    adapted: tuple[str, ...] = field(default=())
    missing: tuple[str, ...] = field(default=())
    unexpected: tuple[str, ...] = field(default=())
    mismatched: tuple[str, ...] = field(default=())

    def summary(self) -> str:
        return (
            f"loaded {len(self.loaded)} tensors from {self.source} (key prefix {self.prefix!r}), "
            f"adapted {len(self.adapted)}, missing {len(self.missing)}, unexpected {len(self.unexpected)}, "
            f"mismatched {len(self.mismatched)}"
        )


def _adapt_in_channels(src: torch.Tensor, target_shape: torch.Size) -> torch.Tensor | None:
    """Adapt a conv weight ``(O, I_src, k, k)`` to ``(O, I_dst, k, k)``, or ``None`` if not possible."""
    if src.ndim != 4 or len(target_shape) != 4:
        return None
    if src.shape[0] != target_shape[0] or tuple(src.shape[2:]) != tuple(target_shape[2:]):
        return None
    i_src, i_dst = src.shape[1], target_shape[1]
    if i_dst == 1:
        return src.float().sum(dim=1, keepdim=True).to(src.dtype)
    # like timm's adapt_input_conv: repeat the channels and rescale to keep activations comparable
    reps = -(-i_dst // i_src)
    out = src.float().repeat(1, reps, 1, 1)[:, :i_dst] * (i_src / float(i_dst))
    return out.to(src.dtype)


def load_pretrained(model: SegmentationModel, path: str | os.PathLike, *, strict: bool = False) -> LoadReport:
    """Load weights from a LOCAL file into ``model`` (in place); nothing is ever downloaded.

    Accepted files: an al_annotator checkpoint (:func:`save_checkpoint`), a state dict of the
    whole model, or a backbone state dict such as timm's ImageNet HRNet weights (``.pth``/``.bin``
    or ``.safetensors``; keys are matched with the prefix ``backbone.`` / ``unet.``; a
    ``"state_dict"`` or ``"model"`` wrapper and DDP's ``module.`` prefix are unwrapped). A
    first conv trained on ``I`` input channels is adapted to the model's channels (summed over
    the input channels for 1-channel tomography). Keys that do not fit are reported, not loaded.

    Parameters
    ----------
    strict
        Raise :class:`CheckpointError` if anything is missing, unexpected or mismatched.

    Returns
    -------
    LoadReport
        Also logged at INFO level.

    Examples
    --------
    >>> import tempfile, os, torch, timm
    >>> from al_annotator.models import create_model, load_pretrained
    >>> rgb = timm.create_model("hrnet_w18_small", pretrained=False)  # stands in for ImageNet weights
    >>> path = os.path.join(tempfile.mkdtemp(), "hrnet_w18_small.pth")
    >>> torch.save(rgb.state_dict(), path)
    >>> report = load_pretrained(create_model("hrnet_w18_small", n_classes=2), path)
    >>> report.prefix, report.adapted
    ('backbone.', ('backbone.conv1.weight',))
    """
    path = Path(path)
    obj = _torch_load(path, "cpu", trusted=False)
    source = "state dict"
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        source = "al_annotator checkpoint"
        obj = obj["state_dict"]
    elif isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of parameter names to tensors)")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}

    own = model.state_dict()
    best_prefix, best_hits = "", -1
    for prefix in ("", "backbone.", "unet."):
        hits = sum((prefix + k) in own for k in state)
        if hits > best_hits:
            best_prefix, best_hits = prefix, hits
    if best_hits <= 0:
        raise CheckpointError(
            f"no key of {path} matches {model.name} (file keys look like {sorted(state)[:3]}, "
            f"model keys like {sorted(own)[:3]}); is it weights for another architecture?"
        )
    new_state: dict[str, torch.Tensor] = {}
    loaded, adapted, unexpected, mismatched = [], [], [], []
    for k, v in state.items():
        key = best_prefix + k
        if key not in own:
            unexpected.append(k)
            continue
        target = own[key]
        if tuple(v.shape) == tuple(target.shape):
            new_state[key] = v.to(target.dtype)
            loaded.append(key)
            continue
        conv = _adapt_in_channels(v, target.shape)
        if conv is not None:
            new_state[key] = conv.to(target.dtype)
            loaded.append(key)
            adapted.append(key)
        else:
            mismatched.append(key)
    missing = [k for k in own if k not in new_state]
    report = LoadReport(
        source=source,
        prefix=best_prefix,
        loaded=tuple(loaded),
        adapted=tuple(adapted),
        missing=tuple(missing),
        unexpected=tuple(unexpected),
        mismatched=tuple(mismatched),
    )
    if strict and (missing or unexpected or mismatched):
        raise CheckpointError(
            f"{path} does not fit {model.name} exactly: {report.summary()}; "
            f"first missing {missing[:3]}, unexpected {unexpected[:3]}, mismatched {mismatched[:3]}"
        )
    model.load_state_dict(new_state, strict=False)
    log.info("load_pretrained(%s): %s", path, report.summary())
    if missing:
        log.info("missing keys (kept fresh): %s", missing[:20])
    if unexpected:
        log.info("unexpected keys (ignored): %s", unexpected[:20])
    if mismatched:
        log.info("mismatched keys (ignored): %s", mismatched)
    return report
