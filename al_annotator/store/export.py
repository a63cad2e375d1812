"""Export labels and predictions to the formats other tools read (OME-Zarr, TIFF, NIfTI)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InputError
from .models import prediction_array

__all__ = ["export", "EXPORT_FORMATS"]

EXPORT_FORMATS = ("ome-zarr", "tiff", "nifti")


def export(store: Any, out: str | os.PathLike, *, what: str = "labels", format: str = "ome-zarr", overwrite: bool = False, version: int | None = None) -> Path:
    """Write the project's labels (0 = unlabelled, 1..C) or a model's predicted labels to ``out``.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from al_annotator.store import create_project
    >>> store = create_project(None, np.zeros((4, 8, 8), np.uint8), classes="a,b")
    >>> p = export(store, os.path.join(tempfile.mkdtemp(), "labels.tif"), format="tiff")
    >>> p.name
    'labels.tif'
    """
    from ..io import write_volume

    if format not in EXPORT_FORMATS:
        raise InputError(f"export format must be one of {EXPORT_FORMATS}, got {format!r}")
    if what == "labels":
        array = store.labels
    elif what == "predictions":
        array = prediction_array(store, version)
    else:
        raise InputError(f"--what must be 'labels' or 'predictions', got {what!r}")
    return Path(
        write_volume(
            array,
            out,
            format=format,
            spacing=store.config.spacing,
            kind="labels",
            name=what,
            overwrite=overwrite,
        )
    )
