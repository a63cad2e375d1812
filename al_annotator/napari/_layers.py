"""What a project looks like as napari layers: lazy image, store-backed labels, model outputs.

Everything comes from the :class:`~al_annotator.core.Session` (never the store): layer data are
lazy, the image layer is a read-only view of ``session.image_array`` (napari reads the displayed
plane only; contrast limits come from ``session.volume.display_window``, so no pass over the
volume), the labels layer is a :class:`StoreLabels` over ``session.labels_array`` keyed by
``session.labels_seq``, the prediction a read-only view of ``session.model_outputs().prediction``
and the uncertainty map a :class:`MappedArray` ``1 - confidence``. Each keeps a small plane cache that the dock fills on its
background thread before it shows a slice (:func:`prefetch_planes`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..types import AXES
from ._arrays import MappedArray, StoreLabels, read_only

__all__ = [
    "class_colormap",
    "class_color_dict",
    "image_layer_kwargs",
    "model_arrays",
    "uncertainty_array",
    "layer_names",
    "labels_array",
    "prefetch_planes",
]

TRANSPARENT = (0.0, 0.0, 0.0, 0.0)


def _rgba(hex_colour: str, alpha: float = 1.0) -> tuple[float, float, float, float]:
    h = hex_colour.lstrip("#")
    return (int(h[0:2], 16) / 255, int(h[2:4], 16) / 255, int(h[4:6], 16) / 255, float(alpha))


def class_color_dict(colours: tuple[str, ...] | list[str]) -> dict[Any, tuple[float, float, float, float]]:
    """``{None: transparent, 0: transparent, i + 1: colour of class i}`` (napari's direct colormap form).

    Examples
    --------
    >>> d = class_color_dict(["#ff0000", "#00ff00"])
    >>> d[0], d[2]
    ((0.0, 0.0, 0.0, 0.0), (0.0, 1.0, 0.0, 1.0))
    """
    out: dict[Any, tuple[float, float, float, float]] = {None: TRANSPARENT, 0: TRANSPARENT}
    for i, c in enumerate(colours):
        out[i + 1] = _rgba(c)
    return out


def class_colormap(colours: tuple[str, ...] | list[str]) -> Any:
    """A napari ``DirectLabelColormap``: label value ``i + 1`` gets class ``i``'s colour, 0 is transparent."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict=class_color_dict(colours), background_value=0)


def layer_names(name: str) -> dict[str, str]:
    return {k: f"{name} {k}" for k in ("image", "labels", "prediction", "uncertainty")}


def image_layer_kwargs(volume: Any, name: str) -> dict[str, Any]:
    """The image layer's keyword arguments from the session's :class:`~al_annotator.core.VolumeFacts`
    (contrast limits from the project's display window: no pass over the volume)."""
    lo, hi = volume.display_window
    return {
        "name": layer_names(name)["image"],
        "contrast_limits": [lo, hi],
        "scale": tuple(volume.spacing),
        "colormap": "gray",
        "axis_labels": AXES,
        "metadata": {"al_annotator_project": volume.path},
    }


def labels_array(session: Any) -> StoreLabels:
    """The labels layer's data: the session's saved labels (read-only, lazy), whole planes cached
    per edit-log position (:attr:`Session.labels_seq <al_annotator.core.Session.labels_seq>`)."""
    return StoreLabels(session.labels_array, token=lambda: session.labels_seq)


def prefetch_planes(arrays: Any, axis: int, index: int) -> int:
    """Read plane ``index`` of ``axis`` of every array that has a plane cache (not the GUI thread:
    napari's slicing then finds them in memory). Returns how many were read from disk."""
    n = 0
    for array in arrays:
        fetch = getattr(array, "prefetch", None)
        if fetch is not None and fetch(axis, index):
            n += 1
    return n


def uncertainty_array(confidence: Any) -> MappedArray:
    """``1 - confidence`` as float32 in 0..1, computed on the displayed plane only."""
    scale = np.float32(1.0 / 255.0)
    return MappedArray(confidence, lambda c: np.float32(1.0) - c.astype(np.float32) * scale, np.float32)


def model_arrays(session: Any, version: int | None = None) -> tuple[Any, Any]:
    """The prediction and uncertainty layers' data of a model version (default: the one the session
    serves), ``None`` where absent (opens the version's arrays: zarr metadata reads)."""
    if version is None and session.model_version is None:
        return None, None
    outputs = session.model_outputs(None if version is None or version == session.model_version else version)
    if outputs is None:
        return None, None
    pred, conf = outputs.prediction, outputs.confidence
    return (read_only(pred) if pred is not None else None, uncertainty_array(conf) if conf is not None else None)
