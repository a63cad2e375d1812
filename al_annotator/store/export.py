"""Export labels and predictions to the formats other tools read (OME-Zarr, TIFF, NIfTI).

Every format keeps the voxel spacing and its unit (``project.json``'s ``spacing_unit``: OME-Zarr
axes ``unit``, NIfTI ``xyzt_units``, ImageJ TIFF ``unit``). OME-Zarr holds the project's image at
its root (a multiscale pyramid) and the labels in ``labels/<what>`` with the classes' colours and
names in ``image-label``, so napari-ome-zarr, Fiji and ome-zarr-models open it as an image with
its segmentation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InputError
from .models import prediction_array

__all__ = ["export", "EXPORT_FORMATS"]

EXPORT_FORMATS = ("ome-zarr", "tiff", "nifti")


def export(store: Any, out: str | os.PathLike, *, what: str = "labels", format: str | None = "ome-zarr",
           overwrite: bool = False, version: int | None = None, ngff_version: str = "0.4",
           progress: Any = None) -> Path:
    """Write the project's labels (0 = unlabelled, 1..C) or a model's predicted labels to ``out``.

    ``format=None`` takes the format from the name (``.zarr``, ``.tif``/``.tiff``, ``.nii``/``.nii.gz``).
    ``progress(done, total, what)``: voxels read so far (:func:`al_annotator.io.write_volume`).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from al_annotator.store import create_project
    >>> store = create_project(None, np.zeros((4, 8, 8), np.uint8), classes="a,b", spacing=(2, 1, 1), unit="um")
    >>> p = export(store, os.path.join(tempfile.mkdtemp(), "labels.tif"), format=None)
    >>> p.name
    'labels.tif'
    """
    from ..io import write_volume
    from ..io.units import unit_or_none
    from ..io.writers import writer_name

    fmt = writer_name(format, Path(out))
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"export format must be one of {EXPORT_FORMATS}, got {format!r}")
    if what == "labels":
        array = store.labels
    elif what == "predictions":
        array = prediction_array(store, version)
    else:
        raise InputError(f"--what must be 'labels' or 'predictions', got {what!r}")
    cfg = store.config
    return Path(
        write_volume(
            array,
            out,
            format=fmt,
            spacing=cfg.spacing,
            spacing_unit=unit_or_none(cfg.spacing_unit),
            kind="labels",
            name=what,
            overwrite=overwrite,
            classes=[(i + 1, n, c) for i, (n, c) in enumerate(zip(cfg.classes, cfg.colours))],
            image=store.image if fmt == "ome-zarr" else None,
            ngff_version=ngff_version,
            progress=progress,
        )
    )
