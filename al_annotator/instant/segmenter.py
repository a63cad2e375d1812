"""The instant tier end to end: labels in, class probabilities of any plane or block out.

:class:`InstantSegmenter` owns a :class:`~al_annotator.instant.features.FeatureBank` and an
:class:`~al_annotator.instant.classifier.InstantClassifier`. :meth:`~InstantSegmenter.update`
takes the *current* labelling (a label volume, or coordinates and values: the complete set each
time, so erased voxels drop out) and refits; the features of voxels labelled in an earlier update
are kept, so a new stroke costs only its own voxels' features (from the tile cache when the
tiles are warm). :meth:`~InstantSegmenter.predict_plane` computes features only for the tiles the
plane touches.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from ..types import AXES
from .classifier import InstantClassifier
from .features import ILASTIK_SIGMAS, OCTAVE_SIGMAS, FeatureBank

__all__ = ["InstantSegmenter", "auto_features", "ANISOTROPY_3D"]

#: ``mode="auto"`` uses the spacing-scaled 3D bank when the coarsest axis is at least this many times the finest.
ANISOTROPY_3D = 2.0


def auto_features(spacing: Sequence[float] | None) -> dict[str, Any]:
    """The feature set ``mode="auto"`` picks from the voxel spacing (measured in docs/BENCHMARKS.md, "Tier 1, instant").

    * anisotropic (coarsest / finest spacing >= :data:`ANISOTROPY_3D`, e.g. ssTEM 50 x 4 x 4 nm): 3D, each axis's
      sigma scaled by the spacing, at the octaves 1..16 with edge values repeated past the borders (best of all
      variants on the ssTEM stack, above ilastik's scales with reflecting edges);
    * otherwise: ``"inplane"`` 2D features in each voxel's own slice plane at the octaves 1..16 with edge values
      repeated past the borders, as the scikit-image forest peer computes them (on the isotropic phantom, labelled
      on z, y and x slices, each of those three choices mattered; the fixed-axis banks scored below the peer).
      With this set ``InstantSegmenter(mode="auto")`` fits a random forest (``kind="rf"``) instead of ExtraTrees:
      on the phantom it scored +0.02 mean Dice over ExtraTrees on these features (on the ssTEM stack -0.005, slower).

    Either way ``section_norm="auto"``: every slice along an axis whose neighbouring slices differ in brightness
    (serial sections) is standardised on its own statistics (:func:`~al_annotator.instant.features.choose_section_norm`;
    on the ssTEM stack +0.04-0.08 test Dice at 2 slices; the phantom is left as it was).
    """
    sp = None if spacing is None else [float(v) for v in spacing]
    if sp is not None and max(sp) / min(sp) >= ANISOTROPY_3D:
        return {"mode": "3d", "sigmas": OCTAVE_SIGMAS, "boundary": "nearest", "section_norm": "auto"}
    return {"mode": "inplane", "sigmas": OCTAVE_SIGMAS, "boundary": "nearest", "section_norm": "auto"}


def _axis_number(axis: Any) -> int:
    if isinstance(axis, str) and axis.lower() in AXES:
        return AXES.index(axis.lower())
    if isinstance(axis, (int, np.integer)) and 0 <= int(axis) < 3:
        return int(axis)
    raise InputError(f"axis must be 'z', 'y', 'x' or 0, 1, 2, got {axis!r}")


class InstantSegmenter:
    """Filter-bank features + a tree ensemble refitted on every stroke (see the module docs).

    Parameters
    ----------
    image
        3D ``(Z, Y, X)`` array-like (numpy, memmap, zarr).
    spacing
        Voxel size ``(z, y, x)``, e.g. ``(50, 4, 4)`` nm: sigmas are scaled per axis
        (``None``: equal sigmas on all axes).
    n_classes
        ``C`` (labels are values ``1..C``); default: the largest value seen so far (at least 2).
    mode
        ``"auto"`` (default: :func:`auto_features` picks the feature set, sigmas and boundary from ``spacing``,
        and a random forest for the in-plane set),
        ``"3d"``, ``"2d"`` (per-slice features across ``flat_axis``, default the coarsest axis) or ``"inplane"``
        (each labelled voxel gets the 2D features of the slice it was labelled on: pass ``axes`` to
        :meth:`update`; each plane predicted gets its own plane's features).
    classifier
        An :class:`InstantClassifier` to use (its ``n_classes`` is replaced as needed); default
        ExtraTrees, 50 trees, at most 16k voxels, ``n_jobs`` threads.
    **bank_options
        ``sigmas``, ``families``, ``tile_shape``, ``tile_voxels``, ``cache_bytes``, ``min_sigma``,
        ``intensity``, ``boundary``, ``section_norm``: see :class:`FeatureBank` (given ones override ``mode="auto"``'s choice).
    """

    def __init__(self, image: Any, spacing: Sequence[float] | None = None, *, n_classes: int | None = None, mode: str = "auto",
                 flat_axis: int | None = None, sigmas: Sequence[float] | None = None, classifier: InstantClassifier | None = None,
                 n_jobs: int = 2, seed: int = 0, **bank_options: Any) -> None:
        shape = tuple(getattr(image, "shape", ()))
        if len(shape) != 3:
            raise InputError(f"the image has shape {shape}; InstantSegmenter needs a 3D (Z, Y, X) volume "
                             "(for a 2D image use FeatureBank and InstantClassifier directly)")
        if flat_axis is None:
            flat_axis = int(np.argmax(spacing)) if spacing is not None else 0
        opts: dict[str, Any] = {"sigmas": ILASTIK_SIGMAS, "mode": mode}
        if mode == "auto":
            opts = auto_features(spacing)
        if sigmas is not None:
            opts["sigmas"] = sigmas
        opts |= bank_options
        self.bank = FeatureBank(image, spacing, flat_axis=flat_axis, **opts)
        self.shape = self.bank.shape
        self.n_classes = None if n_classes is None else int(n_classes)
        if self.n_classes is not None and self.n_classes < 2:
            raise InputError(f"n_classes must be at least 2, got {n_classes}")
        kind = "rf" if mode == "auto" and opts["mode"] == "inplane" else "et"
        self.classifier = classifier or InstantClassifier(max(self.n_classes or 2, 2), kind=kind, n_jobs=n_jobs, seed=seed)
        self._lin = np.empty(0, np.int64)  # sorted linear indices of the labelled voxels
        self._X = np.empty((0, self.bank.n_features), np.float32)
        self._y = np.empty(0, np.int64)
        self._ax = np.empty(0, np.int8)  # in-plane mode: the plane axis each labelled voxel's features were computed in
        self.last_update: dict[str, Any] = {}

    @property
    def fitted(self) -> bool:
        return self.classifier.model is not None

    @property
    def n_labelled(self) -> int:
        return int(self._lin.size)

    # ------------------------------------------------------------------ labels
    def _axes(self, axes: Any, n: int) -> np.ndarray:
        if axes is None:
            return np.full(n, self.bank.flat_axis, np.int64)
        a = np.asarray(axes)
        if a.dtype.kind in "US":
            a = np.vectorize(_axis_number, otypes=[np.int64])(a) if a.size else a.astype(np.int64)
        if a.ndim == 0:
            return np.full(n, _axis_number(int(a) if a.dtype.kind in "iu" else a.item()), np.int64)
        if a.shape != (n,) or a.dtype.kind not in "iu" or (a.size and (a.min() < 0 or a.max() > 2)):
            raise InputError(f"axes must be one axis (0-2 or 'z'/'y'/'x') or one per coordinate row ({n}), got shape {a.shape}")
        return a.astype(np.int64)

    def _labels_to_lin(self, labels: Any, coords: Any, values: Any, axes: np.ndarray | None = None):
        if labels is not None and (coords is not None or values is not None):
            raise InputError("pass either a label volume or coords and values, not both")
        if labels is not None:
            lab = np.asarray(labels)
            if lab.shape != self.shape:
                raise InputError(f"the label volume has shape {lab.shape} but the image has {self.shape}; they must match voxel for voxel")
            if lab.dtype.kind not in "biu":
                raise InputError(f"labels must be integer class values (0 = unlabelled), got dtype {lab.dtype}")
            lin = np.flatnonzero(lab)
            vals = lab.reshape(-1)[lin].astype(np.int64)
            return lin, vals, None
        if coords is None or values is None:
            raise InputError("update needs the labels: a label volume (0 = unlabelled) or coords (N, 3) and values (N,)")
        c = np.asarray(coords)
        v = np.asarray(values)
        if c.ndim != 2 or c.shape[1] != 3:
            raise InputError(f"coords must be an (N, 3) array of (z, y, x) voxel indices, got shape {c.shape}")
        if v.shape != (c.shape[0],):
            raise InputError(f"values must be an (N,) array matching the {c.shape[0]} coords, got shape {v.shape}")
        if c.size and c.dtype.kind not in "iu":
            raise InputError(f"coords must be integer voxel indices, got dtype {c.dtype}")
        if v.size and v.dtype.kind not in "biu":
            raise InputError(f"values must be integer class values, got dtype {v.dtype}")
        c = c.astype(np.int64)
        if c.size and ((c < 0).any() or (c >= np.array(self.shape)).any()):
            raise InputError(f"coords fall outside the volume of shape {self.shape}")
        keep = v != 0
        lin = np.ravel_multi_index(tuple(c[keep].T), self.shape) if c.size else np.empty(0, np.int64)
        vals = v[keep].astype(np.int64)
        # a voxel given twice keeps its last value
        rev_u, rev_i = np.unique(lin[::-1], return_index=True)
        return rev_u, vals[::-1][rev_i], None if axes is None else axes[keep][::-1][rev_i]

    def update(self, labels: Any = None, *, coords: Any = None, values: Any = None, axes: Any = None) -> dict[str, Any]:
        """Set the current labelling and refit. Returns timings (``features_seconds``, ``fit_seconds``).

        ``labels``: a label volume (class values ``1..C``, 0 = unlabelled), or ``coords`` ``(N, 3)`` and
        ``values`` ``(N,)``. Each call gives the *complete* labelling (voxels left out are unlabelled).
        ``axes`` (in-plane mode, with ``coords``): the axis (0-2 or 'z'/'y'/'x') of the slice each voxel was
        labelled on, one for all or ``(N,)``; default ``flat_axis``. Ignored in the other modes.
        """
        t0 = time.perf_counter()
        inplane = self.bank.mode == "inplane"
        if axes is not None and labels is not None:
            raise InputError("axes go with coords and values (the slice each voxel was labelled on), not with a label volume")
        ax_in = self._axes(axes, 0 if coords is None else len(np.asarray(coords))) if inplane else None
        lin, vals, ax = self._labels_to_lin(labels, coords, values, ax_in)
        order = np.argsort(lin, kind="stable")
        lin, vals = lin[order], vals[order]
        ax = np.full(lin.size, self.bank.flat_axis, np.int8) if ax is None else ax[order].astype(np.int8)
        if lin.size == 0:
            raise InputError("no labelled voxels: paint strokes of at least two classes before updating the instant classifier")
        if vals.min() < 1:
            raise InputError(f"label value {int(vals.min())} is negative; class values are 1..C (0 = unlabelled)")
        n_classes = self.n_classes if self.n_classes is not None else max(2, int(vals.max()))
        if vals.max() > n_classes:
            raise InputError(f"label value {int(vals.max())} exceeds n_classes={n_classes}; pass n_classes to InstantSegmenter")
        present = np.unique(vals)
        if present.size < 2:
            raise InputError(f"only class {int(present[0])} is labelled; paint a stroke of at least one other class so the "
                             "classifier has something to tell apart")
        # reuse the features of voxels labelled before; compute only the new ones
        pos = np.searchsorted(self._lin, lin)
        pos_c = np.minimum(pos, max(self._lin.size - 1, 0))
        known = (self._lin.size > 0) & (self._lin[pos_c] == lin) if self._lin.size else np.zeros(lin.size, bool)
        if known.any():
            known &= self._ax[pos_c] == ax  # relabelled on another slice orientation: its features change
        X = np.empty((lin.size, self.bank.n_features), np.float32)
        if known.any():
            X[known] = self._X[pos_c[known]]
        new = ~known
        if new.any():
            coords = np.column_stack(np.unravel_index(lin[new], self.shape))
            X[new] = self.bank.features_at(coords, axes=ax[new] if inplane else None)
        t_feat = time.perf_counter() - t0
        self._lin, self._X, self._y, self._ax = lin, X, vals, ax
        self.classifier.n_classes = n_classes
        self.classifier.fit(X, vals)
        self.last_update = {"features_seconds": t_feat, "fit_seconds": self.classifier.last_fit["seconds"],
                            "seconds": time.perf_counter() - t0, "labelled": int(lin.size), "new_voxels": int(new.sum()),
                            "samples": self.classifier.last_fit["samples"], "n_classes": n_classes}
        return dict(self.last_update)

    # --------------------------------------------------------------- predicting
    def _need_fit(self) -> None:
        if not self.fitted:
            raise InputError("the instant classifier has no labels yet: call update() with strokes of two classes first")

    def predict_block(self, block: Any, axis: Any = None) -> np.ndarray:
        """Probabilities ``(C, *block_shape)`` float32 of a block (one slice or index per axis; an index keeps its axis).

        ``axis``: in in-plane mode, whose plane features to use (default: the block's, see ``FeatureBank.orientation``)."""
        self._need_fit()
        f = self.bank.features(block, axis=None if axis is None else _axis_number(axis))
        p = self.classifier.predict_proba(f)
        return np.moveaxis(p, -1, 0)

    def predict_plane(self, axis: Any, index: int) -> np.ndarray:
        """Probabilities ``(C, H, W)`` float32 of one plane (``axis`` 'z'/'y'/'x' or 0-2); computes only the tiles it touches."""
        a = _axis_number(axis)
        n = self.shape[a]
        if not isinstance(index, (int, np.integer)) or not -n <= int(index) < n:
            raise InputError(f"index {index!r} is outside axis {AXES[a]} of length {n}")
        block: list[Any] = [slice(None)] * 3
        block[a] = int(index) % n
        p = self.predict_block(tuple(block), axis=a)
        return np.take(p, 0, axis=a + 1)

    def predict_volume(self, out: Any = None) -> np.ndarray:
        """Probabilities ``(C, Z, Y, X)`` float32 of the whole volume, tile by tile (written into ``out`` if given)."""
        self._need_fit()
        C = self.classifier.n_classes
        if out is None:
            out = np.empty((C,) + self.shape, np.float32)
        elif tuple(out.shape) != (C,) + self.shape:
            raise InputError(f"out has shape {tuple(out.shape)}, expected {(C,) + self.shape}")
        import itertools

        for tile in itertools.product(*[range(g) for g in self.bank.grid]):
            sl = self.bank.tile_slices(tile)
            f = self.bank.tile_features(tile)  # (F, ...) channel first
            X = f.reshape(f.shape[0], -1).T
            p = self.classifier.predict_proba(X)
            out[(slice(None),) + sl] = p.T.reshape((C,) + f.shape[1:])
        return out
