"""The UI-agnostic annotation session that the notebook widget and the napari dock both drive."""

from __future__ import annotations

from .session import QueueItem, Session
from .values import ModelOutputs, ReadOnlyArray, TrainerStatus, VolumeFacts

__all__ = ["ModelOutputs", "QueueItem", "ReadOnlyArray", "Session", "TrainerStatus", "VolumeFacts"]
