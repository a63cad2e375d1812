"""napari front end: the "AL Annotator" dock, reader, writer and sample data (an npe2 plugin).

Importing this package imports neither napari nor Qt (the manifest ``napari.yaml`` points at the
private modules, which napari imports when a contribution is used).

Examples
--------
>>> import napari                                                      # doctest: +SKIP
>>> viewer = napari.Viewer()                                           # doctest: +SKIP
>>> _, dock = viewer.window.add_plugin_dock_widget("al-annotator", "AL Annotator")  # doctest: +SKIP
>>> dock.open_project("my_project")                                    # doctest: +SKIP
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "AnnotatorWidget": "._widget",
    "LabelsBridge": "._bridge",
    "Jobs": "._jobs",
    "StoreLabels": "._arrays",
    "MappedArray": "._arrays",
    "ServedPlanes": "._arrays",
    "ServedOutputs": "._layers",
    "voxels_from_history": "._edits",
    "voxels_to_atoms": "._edits",
    "class_colormap": "._layers",
    "get_reader": "._io",
    "prefer_this_reader": "._io",
    "write_labels": "._io",
    "sample_bone": "._io",
    "sample_cement": "._io",
    "sample_phantom": "._io",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'al_annotator.napari' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
