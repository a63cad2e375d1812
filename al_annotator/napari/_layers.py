"""What a project looks like as napari layers: lazy image, store-backed labels, model outputs.

Everything comes from the :class:`~al_annotator.core.Session` (never the store): layer data are
lazy, the image layer is a read-only view of ``session.image_array`` (napari reads the displayed
plane only; contrast limits come from ``session.volume.display_window``, so no pass over the
volume) or, when the store has an image pyramid, a multiscale layer over ``session.image_levels``
(:func:`image_layer_data`: napari reads the level that fits the zoom, the coarsest in 3D), the labels layer is a :class:`StoreLabels` over ``session.labels_array`` keyed by
``session.labels_seq``, the prediction a read-only view of ``session.model_outputs().prediction``
and the uncertainty map a :class:`MappedArray` ``1 - confidence``. Each keeps a small plane cache that the dock fills on its
background thread before it shows a slice (:func:`prefetch_planes`).

With tier 1 live (``session.live_preview``) the prediction and uncertainty layers show the *served*
tier (:class:`ServedOutputs`): each plane is tier 1's preview of that plane when the instant
classifier serves and has predicted it (``session.preview``), else the deep model version's plane
(the arrays above), else zeros; what :meth:`Session.prediction <al_annotator.core.Session.prediction>`
and ``confidence`` return for that plane.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..types import AXES, SliceRef
from ._arrays import LevelShown, MappedArray, ServedPlanes, StoreLabels, _plane_key, image_levels, read_only

__all__ = [
    "class_colormap",
    "class_color_dict",
    "image_layer_data",
    "image_layer_kwargs",
    "shown_arrays",
    "volume_level",
    "model_arrays",
    "uncertainty_array",
    "layer_names",
    "labels_array",
    "prefetch_planes",
    "ServedOutputs",
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


def image_layer_kwargs(volume: Any, name: str, *, multiscale: bool = False) -> dict[str, Any]:
    """The image layer's keyword arguments from the session's :class:`~al_annotator.core.VolumeFacts`
    (contrast limits from the project's display window: no pass over the volume). ``scale`` is
    level 0's voxel size; napari derives the coarser levels' from their shapes."""
    lo, hi = volume.display_window
    return {
        "name": layer_names(name)["image"],
        "contrast_limits": [lo, hi],
        "scale": tuple(volume.spacing),
        "colormap": "gray",
        "axis_labels": AXES,
        "metadata": {"al_annotator_project": volume.path},
        "multiscale": bool(multiscale),
    }


def image_layer_data(session: Any) -> Any:
    """The image layer's data: ``[image, level 1, ...]`` (lazy :class:`~._arrays.ImageLevel` each)
    when the store has a pyramid, else one lazy read-only view of the image.

    Why: a zoomed-out 2048^2 z slice from the full image reads its 1024 chunks (~0.5 s on the GUI
    thread); napari's multiscale reads the level whose pixels fit the canvas (1:4 -> level 2, 64
    chunks). Level ``k`` is the whole volume averaged over ``2^k`` cubes, ``ceil(n / 2^k)`` a side,
    which is napari's rule for a multiscale level (each halved from the one before). The labels
    and model layers stay full resolution: they line up because napari scales level ``k`` by
    ``shape_0 / shape_k`` (2^k, or slightly less on an odd side: under one screen pixel at the zoom
    that shows that level). In 3D napari renders the coarsest level."""
    return image_levels(session.image_levels)


#: napari's 3D view of a multiscale image: the finest level within these (a GPU texture of at most
#: 2048 a side, as GL_MAX_TEXTURE_SIZE is on many GPUs, and 256 MiB: a 512^3 uint16 volume at full resolution).
VOLUME_MAX_SIDE = 2048
VOLUME_MAX_BYTES = 256 << 20


def volume_level(level_shapes: Any, itemsize: int) -> int:
    """The level the 3D view renders: the finest within :data:`VOLUME_MAX_SIDE` and
    :data:`VOLUME_MAX_BYTES` (else the coarsest). napari's own choice in 3D is always the coarsest,
    which would show a 512^3 project at 256^3.

    >>> volume_level([(512, 512, 512), (256, 256, 256)], 2), volume_level([(1024,) * 3, (512,) * 3, (256,) * 3], 2)
    (0, 1)
    """
    shapes = [tuple(int(n) for n in s) for s in level_shapes]
    for k, shape in enumerate(shapes):
        if max(shape) <= VOLUME_MAX_SIDE and int(np.prod(shape, dtype=np.int64)) * int(itemsize) <= VOLUME_MAX_BYTES:
            return k
    return len(shapes) - 1


def shown_arrays(layers: Any) -> list[Any]:
    """What the dock prefetches for ``layers`` (GUI thread): a layer's data, or for a multiscale
    layer the planes of the levels napari will read (:class:`~._arrays.LevelShown`)."""
    out = []
    for layer in layers:
        if getattr(layer, "multiscale", False):
            shown = {int(layer.data_level), int(getattr(layer, "_thumbnail_level", len(layer.level_shapes) - 1))}
            sliced = list(layer._slice_input.not_displayed) if layer._slice_input.ndisplay == 2 else []
            levels = [(layer.data[k], layer.downsample_factors[k]) for k in range(len(layer.level_shapes))]
            out.append(LevelShown(levels, shown, sliced[0] if len(sliced) == 1 else None))
        else:
            out.append(layer.data)
    return out


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


class _Same:
    """A cache token part equal only to itself (a tier 1 preview: compared by identity, not by its arrays)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


class ServedOutputs:
    """The prediction and uncertainty layers' data when tier 1 is live: each plane from the tier
    that serves it now.

    A plane shows tier 1's newest preview of it (``session.preview(ref)``) while the instant
    classifier serves (``session.prediction_token[0] == "instant"``) and ``live()`` is true; else the
    deep model version the dock opened (:meth:`set_deep`), else zeros. The choice is made per read,
    from in-memory values only (cheap on the GUI thread); each plane is cached under what it was read
    from, so a new preview, a switch of the served tier or a new deep version is a cache miss, and
    the dock's worker thread reads that plane first (:meth:`prefetch`).

    Parameters
    ----------
    session
        The open Session (read only here: ``prediction_token``, ``preview``, ``shape``).
    deep
        ``(version, prediction, uncertainty)``: the deep version's layer data (:func:`model_arrays`),
        ``(None, None, None)`` before one.
    live
        Whether tier 1's previews are shown (the dock's "live" checkbox).
    """

    def __init__(self, session: Any, deep: tuple[Any, Any, Any] = (None, None, None), *, live: Any = lambda: True) -> None:
        self.session = session
        self.live = live
        self._deep = tuple(deep)
        shape = tuple(session.shape)
        self.prediction = ServedPlanes(shape, np.uint8, lambda a, i: self._source(a, i, 0), volume=lambda: self._deep[1])
        self.uncertainty = ServedPlanes(shape, np.float32, lambda a, i: self._source(a, i, 1), volume=lambda: self._deep[2])

    @property
    def deep_version(self) -> int | None:
        return self._deep[0]

    @property
    def has_deep(self) -> bool:
        return self._deep[1] is not None

    def set_deep(self, version: int | None, prediction: Any, uncertainty: Any) -> None:
        """Show deep model ``version`` where tier 1 does not serve (one assignment: read atomically)."""
        self._deep = (version, prediction, uncertainty)

    def served_preview(self, ref: SliceRef) -> Any:
        """Tier 1's preview that plane ``ref`` shows now, or ``None`` (the deep version or zeros)."""
        if not self.live():
            return None
        s = self.session
        if s.prediction_token[0] != "instant":
            return None
        return s.preview(ref)

    def token(self, ref: SliceRef) -> Any:
        """What plane ``ref`` of the prediction layer shows now (the cache key: the preview, the deep version or nothing)."""
        return self._source(ref.axis_number, int(ref.index), 0)[0]

    def _source(self, axis: int, index: int, which: int) -> tuple[Any, Any]:
        preview = self.served_preview(SliceRef(AXES[axis], int(index)))
        if preview is not None:
            if which == 0:
                return ("instant", _Same(preview)), lambda: preview.prediction
            return ("instant", _Same(preview)), lambda: np.float32(1.0) - preview.confidence.astype(np.float32) * np.float32(1.0 / 255.0)
        version, pred, unc = self._deep
        deep = pred if which == 0 else unc
        if deep is None:
            return ("none",), lambda: None
        key = _plane_key(axis, int(index), 3)
        return ("deep", version), lambda: deep[key]

    def prefetch(self, ref: SliceRef, *, uncertainty: bool = True) -> int:
        """Read ``ref``'s served planes into the caches (the worker thread). Returns how many were read."""
        arrays = [self.prediction] + ([self.uncertainty] if uncertainty else [])
        return prefetch_planes(arrays, ref.axis_number, int(ref.index))
