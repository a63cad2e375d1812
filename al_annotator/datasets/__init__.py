"""Data to try the annotator on: a seeded synthetic phantom with ground truth, and real demo scans.

* :func:`make_phantom` builds a synthetic micro-CT volume of a degrading magnesium screw in bone with
  complete ground truth (labels 1..4 = background, bone, implant, degradation); see
  :mod:`al_annotator.datasets.phantom` for the intensity conventions.
* :func:`load_demo` loads a bundled real (unlabelled) micro-CT scan; :data:`DEMO_NAMES` lists them.

Importing this package needs only numpy and scipy (no torch, Qt, napari or ipywidgets).

Examples
--------
>>> from al_annotator.datasets import make_phantom, load_demo, DEMO_NAMES
>>> int(make_phantom((16, 32, 32)).labels.min())
1
>>> "bone" in DEMO_NAMES
True
"""

from __future__ import annotations

from . import demo as _demo, phantom as _phantom
from .demo import DEMO_CLASSES, DEMO_NAMES, DemoVolume, create_demo_project, demo_attribution, demo_path, load_demo
from .phantom import (
    BACKGROUND,
    BONE,
    CLASS_ATTENUATION,
    DEGRADATION,
    GREY_MAPPING,
    IMPLANT,
    PHANTOM_CLASSES,
    Phantom,
    make_phantom,
)

__all__ = [*_phantom.__all__, *_demo.__all__]
