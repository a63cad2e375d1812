"""Ground truth for a simulation: loading a volume and its complete labels, candidate axes, test split.

Accepted inputs (``--volume`` / ``--labels``):

* ``.npz``: the array under ``--volume-key`` (default ``image``) / ``--labels-key`` (default
  ``labels``); if the file holds ``class_names`` and ``voxel_size_zyx_nm`` (or ``spacing``) they
  name the classes and give the spacing. The same ``.npz`` may serve as volume and labels.
* ``.npy``: one 3D array.
* ``.tif`` / ``.tiff``: one 3D stack (read with tifffile).
* a project directory: its image, and its labels (which must then be complete).

Labels must be *complete* ground truth: after adding ``labels_offset`` every voxel holds a class
value ``1..C``. Files where ``0`` is a real class (the Drosophila ssTEM stack: 0 = "other") need
``labels_offset=1``; a ``0`` left after the offset is an error (0 means "unlabelled" to the store).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import parse_classes, parse_spacing
from ..errors import InputError
from ..types import AXES

__all__ = ["GroundTruth", "load_ground_truth", "choose_axes", "TestSplit", "make_test_split"]


@dataclass
class GroundTruth:
    """A volume with complete labels (values ``1..C``; class ``i`` is value ``i + 1``)."""

    image: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    spacing: tuple[float, float, float] | None = None
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.image.shape)  # type: ignore[return-value]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @classmethod
    def from_arrays(cls, image: Any, labels: Any, classes: Sequence[str] | str | None = None, *, labels_offset: int = 0,
                    spacing: Any = None, source: dict[str, Any] | None = None) -> "GroundTruth":
        """Validate and build (``labels_offset`` is added to the labels first)."""
        image = np.asarray(image)
        labels = np.asarray(labels)
        if image.ndim != 3:
            raise InputError(f"the volume has shape {image.shape} ({image.ndim}D); simulate needs a 3D (Z, Y, X) volume")
        if image.dtype.kind not in "biuf":
            raise InputError(f"the volume has dtype {image.dtype}, which is not numeric")
        if image.dtype == np.bool_:
            image = image.astype(np.uint8)
        if labels.shape != image.shape:
            raise InputError(f"the labels have shape {labels.shape} but the volume has {image.shape}; they must match voxel for voxel")
        if labels.dtype.kind == "f":
            if not np.all(np.isfinite(labels)) or not np.all(np.mod(labels, 1) == 0):
                raise InputError("the labels must be integer class values; these are floats with fractional or NaN values")
        elif labels.dtype.kind not in "biu":
            raise InputError(f"the labels must be integer class values, got dtype {labels.dtype}")
        if image.dtype.kind == "f" and not np.all(np.isfinite(image)):
            raise InputError("the volume holds NaN or infinite values; replace them (numpy.nan_to_num) first")
        lab = labels.astype(np.int64) + int(labels_offset)
        lo, hi = int(lab.min()), int(lab.max())
        if lo < 1:
            n0 = int(np.count_nonzero(lab < 1))
            hint = (
                " If 0 is a real class in this file (e.g. the ssTEM stack's 'other'), pass --labels-offset 1."
                if labels_offset == 0 and lo == 0
                else ""
            )
            raise InputError(
                f"the labels (after offset {labels_offset}) hold {n0} voxels with value {lo} < 1; simulate needs complete "
                f"ground truth where every voxel has a class value 1..C (0 means 'unlabelled').{hint}"
            )
        if hi > 255:
            raise InputError(f"the labels hold value {hi}; at most 255 classes fit (after offset {labels_offset})")
        if classes is None:
            names = tuple(f"class{i}" for i in range(1, hi + 1))
        else:
            names = parse_classes(classes) if isinstance(classes, str) else tuple(classes)
        if len(names) < 2:
            names = names + tuple(f"class{i}" for i in range(len(names) + 1, 3))
        if hi > len(names):
            raise InputError(
                f"the labels hold values up to {hi} (after offset {labels_offset}) but only {len(names)} classes are named "
                f"({', '.join(names)}); pass --classes with {hi} names or check --labels-offset"
            )
        return cls(image, lab.astype(np.uint8), tuple(names), parse_spacing(spacing) if spacing is not None else None, dict(source or {}))


def _read_array(path: str, key: str | None, what: str) -> tuple[np.ndarray, dict[str, Any]]:
    """(array, extras) from a .npz/.npy/.tif file or a project directory."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"the {what} {p} does not exist")
    extras: dict[str, Any] = {}
    if p.is_dir():
        from ..store import open_project

        with open_project(p) as store:
            name = {"volume": "image", "labels": "labels"}[what]
            arr = np.asarray(store.root[name][...])
            extras["classes"] = tuple(store.config.classes)
            extras["spacing"] = tuple(store.config.spacing)
        return arr, extras
    suffix = "".join(p.suffixes[-1:]).lower()
    if suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            keys = list(z.keys())
            want = key or {"volume": "image", "labels": "labels"}[what]
            if want not in keys:
                raise InputError(f"{p} has no array {want!r} (it holds {keys}); pick one with --{'volume' if what == 'volume' else 'labels'}-key")
            arr = np.asarray(z[want])
            if "class_names" in keys:
                extras["classes"] = tuple(str(s) for s in z["class_names"])
            for sk in ("voxel_size_zyx_nm", "voxel_size_zyx", "spacing"):
                if sk in keys and np.asarray(z[sk]).shape == (3,):
                    extras["spacing"] = tuple(float(v) for v in z[sk])
                    break
        return arr, extras
    if suffix == ".npy":
        return np.load(p, allow_pickle=False), extras
    if suffix in (".tif", ".tiff"):
        import tifffile

        return np.asarray(tifffile.imread(p)), extras
    raise InputError(f"cannot read {p}: simulate takes .npz, .npy, .tif/.tiff or a project directory")


def load_ground_truth(
    volume: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    *,
    volume_key: str | None = None,
    labels_key: str | None = None,
    labels_offset: int = 0,
    classes: Sequence[str] | str | None = None,
    spacing: Any = None,
) -> GroundTruth:
    """Load a volume and its complete labels (see the module docs for the accepted inputs).

    ``labels`` defaults to ``volume`` when that is an ``.npz`` or a project directory.
    """
    volume = str(volume)
    if labels is None:
        p = Path(volume)
        if p.is_dir() or p.suffix.lower() == ".npz":
            labels = volume
        else:
            raise InputError("--labels is needed: the complete ground-truth labels of the volume (.npz, .npy, .tif or a project)")
    image, ex_v = _read_array(volume, volume_key, "volume")
    lab, ex_l = _read_array(str(labels), labels_key, "labels")
    # a file's class_names list the classes in value order (values 0..C-1 before --labels-offset 1)
    names = classes if classes is not None else (ex_l.get("classes") or ex_v.get("classes"))
    sp = spacing if spacing is not None else (ex_v.get("spacing") or ex_l.get("spacing"))
    # file-provided class names that do not cover the label values are dropped (generic names instead)
    if classes is None and names is not None:
        hi = int(lab.max()) + int(labels_offset)
        if len(names) < hi:
            names = None
    src = {"volume": str(volume), "labels": str(labels), "volume_key": volume_key, "labels_key": labels_key, "labels_offset": int(labels_offset)}
    return GroundTruth.from_arrays(image, lab, names, labels_offset=labels_offset, spacing=sp, source=src)


def choose_axes(shape: Sequence[int], spacing: Sequence[float] | None = None) -> str:
    """Candidate axes: the coarse axis alone for a strongly anisotropic volume, else ``"zyx"``.

    Anisotropic means a spacing ratio of 2 or more (the ssTEM stack: 50 nm sections, 4 nm pixels),
    or, without spacing, an axis at least 4 times shorter than both others (30 x 512 x 512): slices
    across such an axis are thin strips, and along it the image is what the expert sees.

    Examples
    --------
    >>> choose_axes((30, 512, 512), (50, 4, 4)), choose_axes((64, 128, 128), (1, 1, 1)), choose_axes((20, 200, 200))
    ('z', 'zyx', 'z')
    """
    shape = [int(s) for s in shape]
    if spacing is not None:
        sp = [float(s) for s in spacing]
        if max(sp) / min(sp) >= 2.0:
            return AXES[int(np.argmax(sp))]
    for a in range(3):
        others = [shape[b] for b in range(3) if b != a]
        if shape[a] * 4 <= min(others):
            return AXES[a]
    return "zyx"


@dataclass(frozen=True)
class TestSplit:
    """The held-out slices: every ``every``-th slice along ``axis`` (from ``every // 2``)."""

    axis: str
    indices: tuple[int, ...]
    every: int

    def mask(self, shape: Sequence[int]) -> np.ndarray:
        m = np.zeros(tuple(shape), bool)
        sel: list[Any] = [slice(None)] * 3
        sel[AXES.index(self.axis)] = list(self.indices)
        m[tuple(sel)] = True
        return m


def make_test_split(shape: Sequence[int], axis: str, every: int = 5) -> TestSplit:
    """Every ``every``-th slice along ``axis`` (starting at ``every // 2``) is held out for testing.

    Examples
    --------
    >>> make_test_split((30, 8, 8), "z", 5).indices
    (2, 7, 12, 17, 22, 27)
    """
    if every < 2:
        raise InputError(f"--test-every must be >= 2 (1 would hold out everything), got {every}")
    n = int(shape[AXES.index(axis)])
    idx = tuple(range(every // 2, n, every))
    if not idx:
        raise InputError(f"axis {axis} has {n} slices, too few for a test slice every {every}; lower --test-every")
    if len(idx) >= n:
        raise InputError(f"holding out every {every}th slice of {n} leaves no candidate slices")
    return TestSplit(axis, idx, int(every))
