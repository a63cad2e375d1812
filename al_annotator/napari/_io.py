"""npe2 reader, writer and sample-data contributions.

* Reader: a project directory (a folder with ``project.json``) opens in the "AL Annotator" dock
  when napari has a window (the labels layer is then bound to the dock's session); without a
  window it opens a read-only :class:`~al_annotator.core.Session` (``Session.open(path,
  read_only=True)``) and returns its image and a read-only labels layer (edits go through the
  dock's Session only).

  No reader chooser: npe2 offers *every* reader that declares ``accepts_directories`` for *any*
  folder (filename patterns are not looked at for folders), and napari's built-in reader accepts
  folders too. With two candidates napari raises ``MultipleReaderError`` and ``napari PROJECT_DIR``
  (``QtViewer._qt_open``) pops up "Choose reader", unless ``settings.plugins.extension2reader``
  names a reader for that folder (key: the folder's real path with a trailing separator, what the
  dialog's "Remember this choice" writes). :func:`prefer_this_reader` writes that preference; the
  dock calls it for every project it opens or creates and this reader for every project it reads,
  so from then on ``napari PROJECT_DIR`` goes straight to this reader. A project never opened in
  napari: ``napari PROJECT_DIR/project.json`` (only this plugin reads ``project.json``), or
  ``napari PROJECT_DIR --plugin al-annotator``. Volumes in the formats al_annotator imports
  are read with :func:`al_annotator.io.read_volume` (lazily when large); which paths it accepts
  comes from the reader registry (:data:`VOLUME_SUFFIXES` is
  :func:`al_annotator.io.readers.openable_suffixes`, the manifest's ``filename_patterns`` list
  the same endings: ``tests/test_io.py`` checks they agree).
* Writer: a labels layer to TIFF, NIfTI (``.nii``, ``.nii.gz``) or OME-Zarr with
  :func:`al_annotator.io.write_volume`.
* Sample data: the bundled real micro-CT scans (:func:`~al_annotator.datasets.load_demo`) and the
  synthetic bone-implant phantom with its ground truth as a labels layer.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..types import AXES
from ._arrays import MappedArray
from ._layers import class_colormap, image_layer_data, image_layer_kwargs, layer_names

__all__ = [
    "get_reader",
    "read_project",
    "read_volume_layers",
    "write_labels",
    "sample_bone",
    "sample_cement",
    "sample_phantom",
    "VOLUME_SUFFIXES",
    "LABEL_SUFFIXES",
    "prefer_this_reader",
    "PLUGIN_NAME",
]

#: The npe2 plugin name (``napari.yaml``).
PLUGIN_NAME = "al-annotator"

#: File name endings the labels writer produces, with the al_annotator.io format name.
LABEL_SUFFIXES = {".ome.zarr": "ome-zarr", ".zarr": "ome-zarr", ".nii.gz": "nifti", ".nii": "nifti", ".tiff": "tiff", ".tif": "tiff"}
#: Volumes up to this size are read into memory; larger ones stay lazy (read plane by plane).
IN_MEMORY_BYTES = 512 << 20
_LABEL_NAME_HINTS = ("label", "mask", "seg", "annot", "truth")

LayerData = list[tuple[Any, ...]]

log = logging.getLogger(__name__)


def _is_project(path: str | os.PathLike) -> bool:
    return (Path(path) / "project.json").is_file()


def get_reader(path: str | list[str]) -> Callable[[Any], LayerData] | None:
    """npe2 reader: a callable for a project directory or a volume file, ``None`` otherwise."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    p = str(path).rstrip("/")
    if Path(p).name == "project.json" and _is_project(Path(p).parent):
        return read_project
    if _is_project(p):
        return read_project
    return read_volume_layers if _opens_as_volume(Path(p)) else None


def _opens_as_volume(path: Path) -> bool:
    """Whether a reader of al_annotator.io's registry opens ``path`` with no options.

    A file by its name ending (napari only offers files matching the manifest's patterns, which
    are these endings); a folder by the registry's folder markers and sniffers (zarr store, DICOM
    series, slice folder). Formats that need options (headerless ``raw``) are never offered.
    """
    from ..errors import InputError
    from ..io.readers import detect_format, formats, openable_suffixes

    if not path.is_dir():
        return path.name.lower().endswith(openable_suffixes())
    try:
        name = detect_format(path)
    except (InputError, OSError):
        return False
    return any(f.name == name and f.self_describing for f in formats())


def __getattr__(name: str) -> Any:
    if name == "VOLUME_SUFFIXES":  # live: a reader registered later is offered too
        from ..io.readers import openable_suffixes

        return openable_suffixes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _one(path: Any) -> str:
    p = str(path[0] if isinstance(path, (list, tuple)) else path).rstrip("/")
    return str(Path(p).parent) if Path(p).name == "project.json" else p


def prefer_this_reader(path: str | os.PathLike) -> bool:
    """Make this plugin napari's reader for the project folder ``path`` (no reader chooser for it).

    Writes ``settings.plugins.extension2reader[<real path>/] = "al-annotator"``, the preference
    napari's "Choose reader" dialog saves with "Remember this choice", so ``napari PROJECT_DIR``
    and ``viewer.open(PROJECT_DIR)`` use this reader. Another reader the user chose for the folder
    is kept. Returns whether this plugin is now the folder's reader (``False`` without napari).
    """
    try:
        from napari.settings import get_settings
    except ImportError:  # pragma: no cover - called from the napari front end only
        return False
    key = glob.escape(os.path.realpath(os.fspath(path)).rstrip(os.sep) + os.sep)  # napari fnmatch-es the keys
    try:
        plugins = get_settings().plugins
        current = dict(plugins.extension2reader)
        if current.get(key, PLUGIN_NAME) != PLUGIN_NAME:
            return False  # the user's own choice for this folder
        if key not in current:
            plugins.extension2reader = {**current, key: PLUGIN_NAME}  # assigned: napari saves its settings
    except Exception as exc:  # noqa: BLE001 - a settings file napari cannot write must not stop the project opening
        log.warning("could not save napari's reader preference for %s: %s", path, exc)
        return False
    return True


def read_project(path: Any) -> LayerData:
    """Open a project: in the dock when napari has a window, else as image + read-only labels layers."""
    path = _one(path)
    try:
        import napari

        viewer = napari.current_viewer()
    except ImportError:  # pragma: no cover - the reader runs inside napari
        viewer = None
    prefer_this_reader(path)
    if viewer is not None and getattr(viewer, "window", None) is not None:
        _, dock = viewer.window.add_plugin_dock_widget(PLUGIN_NAME, "AL Annotator")
        dock.open_project(path)
        return [(None,)]  # napari's "read, nothing more to add" sentinel: the dock added the layers
    from ..core import Session

    session = Session.open(path, read_only=True)  # a viewer: nothing is written, edits raise
    volume = session.volume
    name = Path(path).name
    colours = list(session.colours)
    labels = MappedArray(session.labels_array, lambda a: a, np.uint8, cache=False)  # read-only: edits go through the dock's Session
    image = image_layer_data(session)  # multiscale when the store has a pyramid
    return [
        (image, image_layer_kwargs(volume, name, multiscale=isinstance(image, list)), "image"),
        (labels, {"name": layer_names(name)["labels"], "scale": tuple(volume.spacing), "axis_labels": AXES,
                  "colormap": class_colormap(colours), "opacity": 0.7}, "labels"),
    ]


def _looks_like_labels(path: str, array: Any) -> bool:
    dt = np.dtype(array.dtype)
    if dt.kind not in "biu":
        return False
    if any(h in Path(path).name.lower() for h in _LABEL_NAME_HINTS):
        return True
    mid = np.asarray(array[int(array.shape[0]) // 2])
    return np.unique(mid).size <= 16 and int(mid.max(initial=0)) < 256


def _ome_label_images(path: str) -> list[Path]:
    """The label images of an OME-Zarr container (``labels/`` group, NGFF ``{"labels": [...]}``)."""
    group = Path(path) / "labels"
    names: list[str] = []
    for meta in (group / ".zattrs", group / "zarr.json"):
        if meta.is_file():
            try:
                doc = json.loads(meta.read_text())
            except (OSError, ValueError):
                continue
            doc = doc.get("attributes", doc)
            doc = doc.get("ome", doc)
            names = [str(n) for n in doc.get("labels", [])]
            break
    return [group / n for n in names if (group / n).is_dir()]


def _volume_layer(path: str | Path, *, as_labels: bool | None = None) -> tuple[Any, dict[str, Any], str]:
    from ..io import read_volume

    vol = read_volume(path)
    array = vol.array
    if vol.nbytes <= IN_MEMORY_BYTES:
        array = vol.to_numpy()
        vol.close()
    meta: dict[str, Any] = {"name": Path(path).name.split(".")[0], "metadata": {"source": str(path), "format": vol.format}}
    if vol.metadata.get("image_label"):  # an OME-Zarr container holding only a label image
        as_labels = True
    if vol.spacing:
        meta["scale"] = tuple(vol.spacing)
    if len(array.shape) == 3:
        meta["axis_labels"] = AXES
    labels = _looks_like_labels(str(path), array) if as_labels is None else as_labels
    return (array, meta, "labels" if labels else "image")


def read_volume_layers(path: Any) -> LayerData:
    """Read a volume with :func:`al_annotator.io.read_volume` as an image (or labels) layer.

    An OME-Zarr container also gives one labels layer per label image in its ``labels/`` group.
    """
    from ..errors import InputError

    path = _one(path)
    label_images = _ome_label_images(path) if Path(path).is_dir() else []
    out: LayerData = []
    try:
        out.append(_volume_layer(path))
    except InputError:
        if not label_images:
            raise
    if out and out[0][2] == "labels":
        label_images = []  # the reader already resolved the container to its label image
    out += [_volume_layer(p, as_labels=True) for p in label_images]
    for (_, meta, _kind), p in zip(out[-len(label_images):] if label_images else [], label_images):
        meta["name"] = p.name
    return out


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer: labels to ``.tif``/``.tiff``, ``.nii``/``.nii.gz`` or ``.ome.zarr``."""
    from ..errors import InputError
    from ..io import write_volume

    lower = str(path).lower()
    fmt = next((f for suffix, f in LABEL_SUFFIXES.items() if lower.endswith(suffix)), None)
    if fmt is None:
        raise InputError(f"cannot write labels to {path}: use a name ending in {', '.join(LABEL_SUFFIXES)}")
    array = np.asarray(data[...]) if not isinstance(data, np.ndarray) else data
    if array.ndim != 3:
        raise InputError(f"al_annotator writes 3D (Z, Y, X) labels; this layer has shape {array.shape}")
    scale = meta.get("scale")
    spacing = tuple(float(s) for s in scale) if scale is not None and len(scale) == 3 else None
    out = write_volume(array.astype(np.uint8) if array.max(initial=0) < 256 else array, path, format=fmt, spacing=spacing,
                       kind="labels", name=str(meta.get("name") or "labels"), overwrite=True)
    return [str(out)]


# ---------------------------------------------------------------------- sample data
def _demo(name: str) -> LayerData:
    from ..datasets import load_demo

    demo = load_demo(name)
    lo, hi = (float(v) for v in np.percentile(demo.image[::4, ::4, ::4], [0.5, 99.5]))
    return [(demo.image, {"name": f"{name} micro-CT", "scale": tuple(demo.spacing), "axis_labels": AXES,
                          "contrast_limits": [lo, max(hi, lo + 1)], "metadata": {"attribution": demo.attribution}}, "image")]


def sample_bone() -> LayerData:
    """Real micro-CT of bone (qim3d example scan, MIT), 128^3 uint8."""
    return _demo("bone")


def sample_cement() -> LayerData:
    """Real micro-CT of cement paste with air pores (qim3d example scan, MIT), 128^3 uint8."""
    return _demo("cement")


def sample_phantom() -> LayerData:
    """Synthetic bone + degrading magnesium screw phantom (96x128x128) with its ground truth."""
    from ..config import DEFAULT_COLOURS
    from ..datasets import make_phantom

    ph = make_phantom((96, 128, 128))
    colours = [DEFAULT_COLOURS[i % len(DEFAULT_COLOURS)] for i in range(len(ph.classes))]
    lo, hi = (float(v) for v in np.percentile(ph.image[::4, ::4, ::4], [0.5, 99.5]))
    return [
        (ph.image, {"name": "phantom", "scale": tuple(ph.spacing), "axis_labels": AXES, "contrast_limits": [lo, max(hi, lo + 1)]}, "image"),
        (ph.labels, {"name": "phantom ground truth", "scale": tuple(ph.spacing), "axis_labels": AXES, "opacity": 0.5,
                     "colormap": class_colormap(colours), "metadata": {"classes": list(ph.classes)}}, "labels"),
    ]
