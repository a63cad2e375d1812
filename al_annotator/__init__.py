"""al_annotator: interactive annotation and active learning for 3D tomography, in Jupyter and napari.

``import al_annotator`` is light: it imports no Qt, napari, ipywidgets or torch. Heavy parts load
when first used.

Examples
--------
>>> import numpy as np, al_annotator as al
>>> store = al.create_project(None, np.zeros((4, 8, 8), np.uint8), classes="background,bone")
>>> store.paint(al.SliceRef("z", 1), np.array([0, 9]), "bone").seq
1
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "ProjectConfig": ".config",
    "SliceRef": ".types",
    "EditAtom": ".types",
    "AXES": ".types",
    "ProjectStore": ".store",
    "Session": ".core",
    "TrainerClient": ".training",
    "create_project": ".store",
    "open_project": ".store",
    "read_volume": ".io",
    "write_volume": ".io",
    "make_phantom": ".datasets",
    "load_demo": ".datasets",
    "Annotator": ".jupyter",
}

__all__ = sorted([*_LAZY, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'al_annotator' has no attribute {name!r}")


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the prebuilt JupyterLab extension lives (for ``jupyter labextension develop``)."""
    from .jupyter_ext import _jupyter_labextension_paths as paths

    return paths()


def __dir__() -> list[str]:
    return __all__
