"""Training, prediction and the background trainer process.

Light on import: :class:`TrainConfig` and :class:`TrainerClient` import no torch; the heavy parts
(:mod:`.fit`, :mod:`.predict`, :mod:`.worker`) load torch, timm and MONAI when used.
"""

from __future__ import annotations

from .client import TrainerClient, read_status
from .config import TrainConfig

__all__ = ["TrainConfig", "TrainerClient", "read_status"]
