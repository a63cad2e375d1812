"""Real micro-CT demo volumes bundled with the package (package data, no download).

The volumes are the example scans of the `qim3d <https://platform.qim.dk/qim3d>`_ package (QIM Center,
Technical University of Denmark), redistributed under its MIT license; see
``al_annotator/datasets/data/qim3d_microct_SOURCE.txt`` (also :attr:`DemoVolume.attribution`).

=========  ====================  =============================================================
name       shape, dtype          content
=========  ====================  =============================================================
``bone``   (128, 128, 128) u8    bone: cortical shell and trabecular network
``cement`` (128, 128, 128) u8    cement paste with air pores
=========  ====================  =============================================================

They are unlabelled; the voxel size is not recorded in the source, so ``spacing`` is ``(1, 1, 1)``.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["load_demo", "demo_path", "demo_attribution", "DemoVolume", "DEMO_NAMES", "DEMO_CLASSES", "create_demo_project"]

#: The names :func:`load_demo` accepts.
DEMO_NAMES: list[str] = ["bone", "cement"]

_DESCRIPTIONS: dict[str, str] = {
    "bone": "X-ray micro-CT of bone (cortical shell + trabecular network), qim3d example volume",
    "cement": "X-ray micro-CT of cement paste with air pores, qim3d example volume",
}
_ATTRIBUTION_FILE = "qim3d_microct_SOURCE.txt"


@dataclass(frozen=True, slots=True, eq=False)
class DemoVolume:
    """A bundled real micro-CT volume.

    Attributes
    ----------
    image : numpy.ndarray
        ``(Z, Y, X)`` intensities as scanned (uint8 for the qim3d volumes).
    spacing : tuple of float
        Voxel spacing ``(z, y, x)``; ``(1, 1, 1)`` where the source does not record one.
    name : str
        One of :data:`DEMO_NAMES`.
    attribution : str
        Origin and license text; keep it with any copy of the data.
    description : str
        One line on what the volume shows.

    Examples
    --------
    >>> vol = load_demo("bone")
    >>> vol.image.shape, "MIT" in vol.attribution
    ((128, 128, 128), True)
    """

    image: np.ndarray
    spacing: tuple[float, float, float]
    name: str
    attribution: str
    description: str = ""


def _data_dir() -> Traversable:
    return resources.files("al_annotator.datasets").joinpath("data")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name not in DEMO_NAMES:
        raise InputError(f"unknown demo volume {name!r}; available demo volumes are {DEMO_NAMES}")
    return name


def demo_path(name: str) -> Path:
    """The file of a bundled demo volume: an ``.npz`` archive holding one array named ``name``.

    Examples
    --------
    >>> demo_path("bone").name
    'qim3d_bone.npz'
    """
    res = _data_dir().joinpath(f"qim3d_{_check_name(name)}.npz")
    if not isinstance(res, Path):  # e.g. installed inside a zip archive
        raise InputError(
            f"the demo volume {name!r} is not a plain file in this installation ({res}); "
            "use load_demo(name), which reads package data from anywhere"
        )
    if not res.is_file():
        raise InputError(f"the demo volume file {res} is missing; reinstall al_annotator to restore its package data")
    return res


def demo_attribution() -> str:
    """The origin and license text of the bundled demo volumes (qim3d, MIT)."""
    return _data_dir().joinpath(_ATTRIBUTION_FILE).read_text(encoding="utf-8")


def load_demo(name: str = "bone") -> DemoVolume:
    """Load a bundled real micro-CT volume.

    Parameters
    ----------
    name
        One of :data:`DEMO_NAMES` (``"bone"``, ``"cement"``).

    Returns
    -------
    DemoVolume
        The image with its spacing, name, attribution text and description.

    Raises
    ------
    InputError
        For an unknown name, or package data that is missing or unreadable.

    Examples
    --------
    >>> vol = load_demo("cement")
    >>> vol.name, vol.image.dtype.name, vol.spacing
    ('cement', 'uint8', (1.0, 1.0, 1.0))
    """
    _check_name(name)
    res = _data_dir().joinpath(f"qim3d_{name}.npz")
    try:
        raw = res.read_bytes()
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            image = npz[name]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, RuntimeError) as exc:
        raise InputError(
            f"cannot read the demo volume {name!r} from the package data ({res}): {exc}; "
            "reinstall al_annotator to restore it"
        ) from exc
    return DemoVolume(
        image=image,
        spacing=(1.0, 1.0, 1.0),
        name=name,
        attribution=demo_attribution(),
        description=_DESCRIPTIONS[name],
    )


#: Classes of each demo scan (label value i + 1 is class i).
DEMO_CLASSES = {"bone": ("background", "bone"), "cement": ("background", "cement", "pore")}


def create_demo_project(path: str | Path = "al_annotator_demo", name: str = "bone"):
    """Create (or reopen, if it exists) a project on a bundled demo scan; returns the store.

    Examples
    --------
    >>> import tempfile, os
    >>> store = create_demo_project(os.path.join(tempfile.mkdtemp(), "demo"))
    >>> store.shape
    (128, 128, 128)
    """
    from ..store import create_project, open_project

    path = Path(path)
    if (path / "project.json").exists():
        return open_project(path)
    demo = load_demo(name)
    store = create_project(path, demo.image, classes=DEMO_CLASSES.get(_check_name(name), ("background", "foreground")), spacing=demo.spacing)
    (path / "SOURCE.txt").write_text(demo.attribution)
    return store
