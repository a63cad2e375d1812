"""The project store: volume, labels, edit log, slice states and model outputs on zarr v3."""

from __future__ import annotations

from .editlog import EditLog, LogRecord
from .models import current_model, list_model_versions
from .project import DEFAULT_CHUNKS, ProjectStore, SliceState, create_project, open_project

__all__ = [
    "DEFAULT_CHUNKS",
    "EditLog",
    "LogRecord",
    "ProjectStore",
    "SliceState",
    "create_project",
    "current_model",
    "list_model_versions",
    "open_project",
]
