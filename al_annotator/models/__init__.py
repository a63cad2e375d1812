"""2D segmentation networks for slice-wise active learning.

Public API
----------
* :func:`create_model`, :func:`register_model`, :func:`list_models`, :func:`default_model_name`
* :class:`SegmentationModel` (``forward``, ``forward_with_embedding``, ``forward_mc``,
  ``enable_mc_dropout`` / ``mc_dropout()``), :class:`ModelConfig`
* :func:`save_checkpoint`, :func:`load_checkpoint`, :func:`load_pretrained`
* :func:`predict_proba_slices`, :func:`iter_predict_proba`, :func:`mc_dropout_proba`

Registered models: ``hrnet_w18_small`` (CPU default), ``hrnet_w18_small_v2``, ``hrnet_w18``,
``hrnet_w32``, ``hrnet_w48`` (CUDA default) from timm, and ``basic_unet`` from MONAI. timm and
MONAI are imported only when a model is built (they take seconds to import).

Examples
--------
>>> import numpy as np
>>> from al_annotator.models import create_model, predict_proba_slices
>>> model = create_model("hrnet_w18_small", n_classes=2)
>>> probs, emb = predict_proba_slices(model, np.random.rand(3, 64, 64).astype(np.float32))
>>> probs.shape, emb.shape
((3, 2, 64, 64), (3, 128))
"""

from __future__ import annotations

from .base import MCDropout2d, ModelConfig, SegmentationModel
from .checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    CheckpointNotFoundError,
    LoadReport,
    load_checkpoint,
    load_pretrained,
    save_checkpoint,
)
from .hrnet import HRNET_VARIANTS, build_hrnet
from .inference import SliceBatchPrediction, iter_predict_proba, mc_dropout_proba, predict_proba_slices
from .registry import create_model, default_model_name, list_models, register_model
from .unet import build_basic_unet

__all__ = [
    "ModelConfig",
    "SegmentationModel",
    "MCDropout2d",
    "create_model",
    "register_model",
    "list_models",
    "default_model_name",
    "save_checkpoint",
    "load_checkpoint",
    "load_pretrained",
    "LoadReport",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CHECKPOINT_FORMAT",
    "predict_proba_slices",
    "iter_predict_proba",
    "mc_dropout_proba",
    "SliceBatchPrediction",
]

for _name in HRNET_VARIANTS:
    register_model(_name, build_hrnet, overwrite=True)
register_model("basic_unet", build_basic_unet, overwrite=True)
del _name
