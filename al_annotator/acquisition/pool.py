"""Data the acquisition strategies work on.

* :class:`SliceCandidates`: what the trainer computes for a model version and writes to the
  store: slice references plus per-slice uncertainty scores (reduced from per-pixel maps with
  :mod:`.measures`), embeddings and predicted foreground fraction.
* :class:`ScoredPool`: candidates plus the annotation state (which slices are already annotated,
  embeddings of labelled slices): the ``X`` every strategy accepts.
* :class:`Suggestion`: one ranked pick with a human-readable reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import InputError
from ..types import AXES, SliceRef
from .measures import bald, foreground_fraction, pixel_entropy, pixel_least_confidence, pixel_margin, slice_score

__all__ = ["MEASURES", "SliceCandidates", "ScoredPool", "Suggestion", "as_refs"]

#: Names of the per-slice uncertainty measures (keys of ``uncertainty`` dicts). Higher = more uncertain.
MEASURES: tuple[str, ...] = ("entropy", "margin", "least_confidence", "bald")

_PIXEL_MEASURES = {"entropy": pixel_entropy, "margin": pixel_margin, "least_confidence": pixel_least_confidence}


def as_refs(refs: Iterable[SliceRef | tuple[str | int, int]]) -> tuple[SliceRef, ...]:
    """``[("z", 3), SliceRef("y", 4)]`` -> ``(SliceRef("z", 3), SliceRef("y", 4))``."""
    out = []
    for r in refs:
        if isinstance(r, SliceRef):
            out.append(r)
        else:
            try:
                axis, index = r
            except (TypeError, ValueError):
                raise InputError(f"a slice reference must be SliceRef or (axis, index), got {r!r}") from None
            out.append(SliceRef(axis, index))
    return tuple(out)


def _vector(name: str, value: Any, n: int, dtype: Any = np.float32) -> np.ndarray:
    a = np.asarray(value, dtype=dtype)
    if a.shape != (n,):
        raise InputError(f"{name} must have shape ({n},) (one value per candidate), got {a.shape}")
    return a


def _matrix(name: str, value: Any, n: int | None, d: int | None = None) -> np.ndarray:
    a = np.asarray(value, dtype=np.float32)
    if a.ndim != 2 or (n is not None and a.shape[0] != n) or (d is not None and a.shape[1] != d):
        want = f"({n if n is not None else 'M'}, {d if d is not None else 'D'})"
        raise InputError(f"{name} must have shape {want}, got {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return a


def _uncertainty(u: Mapping[str, Any] | None, n: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for k, v in dict(u or {}).items():
        out[str(k)] = _vector(f"uncertainty[{k!r}]", v, n)
    return out


def _check_slice_stats(obj: "SliceCandidates | ScoredPool") -> tuple[int, int | None]:
    """Check and convert, in place, the fields a frozen :class:`SliceCandidates` and :class:`ScoredPool`
    share (refs, uncertainty, embeddings, foreground_fraction); return ``(N, D)`` (``D`` is ``None``
    without embeddings)."""
    refs = as_refs(obj.refs)
    n = len(refs)
    object.__setattr__(obj, "refs", refs)
    object.__setattr__(obj, "uncertainty", _uncertainty(obj.uncertainty, n))
    d = None
    if obj.embeddings is not None:
        emb = _matrix("embeddings", obj.embeddings, n)
        d = emb.shape[1]
        object.__setattr__(obj, "embeddings", emb)
    if obj.foreground_fraction is not None:
        object.__setattr__(obj, "foreground_fraction", _vector("foreground_fraction", obj.foreground_fraction, n))
    return n, d


@dataclass(frozen=True, eq=False)
class SliceCandidates:
    """Per-slice statistics of one model version for ``N`` candidate slices.

    Attributes
    ----------
    refs : tuple of SliceRef
    uncertainty : dict name -> (N,) float32
        Per-slice scores (higher = more uncertain), keys from :data:`MEASURES`; NaN = not scored.
    embeddings : (N, D) float32 or None
    foreground_fraction : (N,) float32 or None
        Predicted non-background fraction (or, before any model, an intensity-based estimate).
    model_version : int, str or None

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.full((2, 3, 4, 4), 1 / 3, np.float32); probs[1] = [[[1.0]], [[0.0]], [[0.0]]]
    >>> cand = SliceCandidates.from_predictions([("z", 0), ("z", 1)], probs, model_version=1)
    >>> cand.uncertainty["entropy"].round(3), cand.foreground_fraction
    (array([1.099, 0.   ], dtype=float32), array([0., 0.], dtype=float32))
    >>> pool = cand.to_pool(annotated=[("z", 1)])
    >>> pool.annotated_mask
    array([False,  True])
    """

    refs: tuple[SliceRef, ...]
    uncertainty: Mapping[str, np.ndarray] = field(default_factory=dict)
    embeddings: np.ndarray | None = None
    foreground_fraction: np.ndarray | None = None
    model_version: int | str | None = None

    def __post_init__(self) -> None:
        _check_slice_stats(self)

    def __len__(self) -> int:
        return len(self.refs)

    @classmethod
    def from_predictions(
        cls,
        refs: Sequence[SliceRef | tuple[str | int, int]],
        probs: np.ndarray,
        *,
        embeddings: np.ndarray | None = None,
        mutual_info: np.ndarray | None = None,
        mc: np.ndarray | None = None,
        reduce: str = "mean",
        top_k: int | float = 0.05,
        fg_masks: np.ndarray | None = None,
        background: int | None = 0,
        model_version: int | str | None = None,
    ) -> "SliceCandidates":
        """Reduce per-pixel predictions of a batch of slices to per-slice scores.

        Parameters
        ----------
        refs
            One reference per slice.
        probs
            ``(N, C, H, W)`` class probabilities (e.g. from ``models.predict_proba_slices``).
        embeddings
            ``(N, D)`` slice embeddings.
        mutual_info
            ``(N, H, W)`` BALD map (``predict_proba_slices(..., mc_samples=T)``), or
        mc
            ``(T, N, C, H, W)`` MC-dropout samples (``models.mc_dropout_proba``); gives ``"bald"``.
        reduce, top_k
            How a pixel map becomes a slice score (:func:`.measures.slice_score`).
        fg_masks
            Optional ``(N, H, W)`` boolean masks of the pixels that count.
        background
            Index of the background class for ``foreground_fraction`` (``None``: no background).
        """
        refs = as_refs(refs)
        p = np.asarray(probs)
        if p.ndim != 4 or p.shape[0] != len(refs):
            raise InputError(f"probs must be (N, C, H, W) with N = {len(refs)} refs, got shape {p.shape}")
        n = p.shape[0]
        if fg_masks is not None and np.shape(fg_masks) != (n,) + p.shape[2:]:
            raise InputError(f"fg_masks must have shape {(n,) + p.shape[2:]}, got {np.shape(fg_masks)}")
        maps = {name: f(p) for name, f in _PIXEL_MEASURES.items()}
        if mc is not None:
            mc = np.asarray(mc)
            if mc.ndim != 5 or mc.shape[1:] != p.shape:
                raise InputError(f"mc must be (T, {', '.join(map(str, p.shape))}), got shape {mc.shape}")
            maps["bald"] = bald(mc)
        elif mutual_info is not None:
            mi = np.asarray(mutual_info, dtype=np.float32)
            if mi.shape != (n,) + p.shape[2:]:
                raise InputError(f"mutual_info must have shape {(n,) + p.shape[2:]}, got {mi.shape}")
            maps["bald"] = mi
        unc = {
            name: np.array(
                [slice_score(m[i], reduce, None if fg_masks is None else fg_masks[i], top_k=top_k) for i in range(n)],
                dtype=np.float32,
            )
            for name, m in maps.items()
        }
        fg = np.atleast_1d(foreground_fraction(p, background)).astype(np.float32) if n else np.zeros(0, np.float32)
        return cls(refs, unc, embeddings, fg, model_version)

    @classmethod
    def concat(cls, parts: Sequence["SliceCandidates"]) -> "SliceCandidates":
        """Join candidates computed batch by batch (same measures, same model version)."""
        parts = list(parts)
        if not parts:
            raise InputError("concat needs at least one SliceCandidates")
        keys = set(parts[0].uncertainty)
        for p in parts[1:]:
            if set(p.uncertainty) != keys:
                raise InputError(f"cannot concat candidates with measures {sorted(keys)} and {sorted(p.uncertainty)}")
        versions = {p.model_version for p in parts}
        if len(versions) > 1:
            raise InputError(f"cannot concat candidates of different model versions {sorted(map(str, versions))}")

        def cat(getter):
            vals = [getter(p) for p in parts]
            if all(v is None for v in vals):
                return None
            if any(v is None for v in vals):
                raise InputError("cannot concat candidates where only some parts have embeddings / foreground")
            return np.concatenate(vals)

        return cls(
            refs=sum((p.refs for p in parts), ()),
            uncertainty={k: np.concatenate([p.uncertainty[k] for p in parts]) for k in keys},
            embeddings=cat(lambda p: p.embeddings),
            foreground_fraction=cat(lambda p: p.foreground_fraction),
            model_version=parts[0].model_version,
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat dict of numpy arrays (``np.savez``-friendly); inverse of :meth:`from_arrays`."""
        out: dict[str, np.ndarray] = {
            "axis": np.array([r.axis_number for r in self.refs], np.uint8),
            "index": np.array([r.index for r in self.refs], np.int64),
        }
        for k, v in self.uncertainty.items():
            out[f"uncertainty.{k}"] = v
        if self.embeddings is not None:
            out["embeddings"] = self.embeddings
        if self.foreground_fraction is not None:
            out["foreground_fraction"] = self.foreground_fraction
        if self.model_version is not None:
            out["model_version"] = np.array(str(self.model_version) if isinstance(self.model_version, str) else int(self.model_version))
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "SliceCandidates":
        """Rebuild from :meth:`to_arrays` output (e.g. an ``np.load``-ed ``.npz``)."""
        try:
            refs = [SliceRef(AXES[int(a)], int(i)) for a, i in zip(arrays["axis"], arrays["index"])]
        except KeyError as exc:
            raise InputError(f"candidate arrays lack {exc.args[0]!r}; expected the output of SliceCandidates.to_arrays") from None
        unc = {k.split(".", 1)[1]: np.asarray(v) for k, v in arrays.items() if k.startswith("uncertainty.")}
        # also read the trainer's older layout: "m_<measure>" and "foreground"
        unc.update({k[2:]: np.asarray(v) for k, v in arrays.items() if k.startswith("m_") and k[2:] not in unc})
        fg = arrays.get("foreground_fraction", arrays.get("foreground"))
        version = arrays.get("model_version")
        if version is not None:
            version = np.asarray(version).item()
        return cls(refs, unc, arrays.get("embeddings"), fg, version)

    def to_pool(
        self,
        annotated: Iterable[SliceRef | tuple[str | int, int]] | np.ndarray | None = None,
        labelled_embeddings: np.ndarray | None = None,
    ) -> "ScoredPool":
        """A :class:`ScoredPool` with the given annotated slices (refs or an ``(N,)`` bool mask)."""
        if annotated is None:
            mask = np.zeros(len(self.refs), bool)
        elif isinstance(annotated, np.ndarray) and annotated.dtype == bool:
            mask = annotated
        else:
            done = set(as_refs(annotated))
            mask = np.array([r in done for r in self.refs], bool)
        return ScoredPool(
            refs=self.refs,
            uncertainty=self.uncertainty,
            embeddings=self.embeddings,
            foreground_fraction=self.foreground_fraction,
            annotated_mask=mask,
            labelled_embeddings=labelled_embeddings,
            model_version=self.model_version,
        )


@dataclass(frozen=True, eq=False)
class ScoredPool:
    """The candidate slices a strategy ranks (``X`` of every strategy).

    Attributes
    ----------
    refs : tuple of SliceRef
        ``N`` candidates (``(axis, index)`` tuples are converted).
    uncertainty : dict name -> (N,) float32
        Per-slice uncertainty, higher = more uncertain (keys from :data:`MEASURES`); NaN means
        "not scored by this model version" and ranks last.
    embeddings : (N, D) float32 or None
        Slice embeddings for coreset / hybrid.
    foreground_fraction : (N,) float32 or None
        Predicted non-background fraction, or before any model an intensity-based fraction
        (:func:`.measures.intensity_foreground_fraction`).
    annotated_mask : (N,) bool
        Already annotated candidates (never suggested; their embeddings seed the coreset).
    labelled_embeddings : (M, D) float32 or None
        Embeddings of annotated slices that are not among the candidates.
    model_version : int, str or None
        ``None`` before the first model.

    Examples
    --------
    >>> import numpy as np
    >>> pool = ScoredPool([("z", 0), ("z", 1), ("y", 5)], {"entropy": [0.1, 0.9, 0.5]},
    ...                   annotated_mask=[False, True, False], model_version=2)
    >>> pool.n, pool.available_indices(), pool.is_cold
    (3, array([0, 2]), False)
    """

    refs: tuple[SliceRef, ...]
    uncertainty: Mapping[str, np.ndarray] = field(default_factory=dict)
    embeddings: np.ndarray | None = None
    foreground_fraction: np.ndarray | None = None
    annotated_mask: np.ndarray | None = None
    labelled_embeddings: np.ndarray | None = None
    model_version: int | str | None = None

    def __post_init__(self) -> None:
        n, d = _check_slice_stats(self)
        mask = np.zeros(n, bool) if self.annotated_mask is None else _vector("annotated_mask", self.annotated_mask, n, bool)
        object.__setattr__(self, "annotated_mask", mask)
        if self.labelled_embeddings is not None:
            lab = _matrix("labelled_embeddings", self.labelled_embeddings, None, d)
            object.__setattr__(self, "labelled_embeddings", lab)

    def __len__(self) -> int:
        return len(self.refs)

    @property
    def n(self) -> int:
        """Number of candidates (annotated ones included)."""
        return len(self.refs)

    @property
    def is_cold(self) -> bool:
        """No model information yet: no uncertainty scores and no embeddings."""
        return not self.uncertainty and self.embeddings is None

    def available_indices(self) -> np.ndarray:
        """Indices of candidates that are not annotated."""
        return np.flatnonzero(~self.annotated_mask)

    def seed_embeddings(self) -> np.ndarray | None:
        """Embeddings the coreset starts from: labelled ones plus those of annotated candidates."""
        parts = []
        if self.labelled_embeddings is not None and len(self.labelled_embeddings):
            parts.append(self.labelled_embeddings)
        if self.embeddings is not None and self.annotated_mask.any():
            parts.append(self.embeddings[self.annotated_mask])
        return np.concatenate(parts) if parts else None

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ScoredPool":
        """The pool restricted to ``indices`` (annotated candidates left out become labelled seeds)."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1 or (idx.size and (idx.min() < -self.n or idx.max() >= self.n)):
            raise InputError(f"subset indices must be a 1D array of indices into {self.n} candidates")
        dropped = np.ones(self.n, bool)
        dropped[idx] = False
        labelled = self.labelled_embeddings
        if self.embeddings is not None and (dropped & self.annotated_mask).any():
            extra = self.embeddings[dropped & self.annotated_mask]
            labelled = extra if labelled is None else np.concatenate([labelled, extra])
        return ScoredPool(
            refs=tuple(self.refs[i] for i in idx),
            uncertainty={k: v[idx] for k, v in self.uncertainty.items()},
            embeddings=None if self.embeddings is None else self.embeddings[idx],
            foreground_fraction=None if self.foreground_fraction is None else self.foreground_fraction[idx],
            annotated_mask=self.annotated_mask[idx],
            labelled_embeddings=labelled,
            model_version=self.model_version,
        )


@dataclass(frozen=True)
class Suggestion:
    """One suggested slice to annotate next.

    Examples
    --------
    >>> s = Suggestion("z", 12, 0.83, "entropy 0.83, rank 1 of 90 unannotated slices", 3, "entropy", 1)
    >>> s.ref
    SliceRef(axis='z', index=12)
    """

    axis: str
    index: int
    score: float
    reason: str
    model_version: int | str | None = None
    strategy: str = ""
    rank: int = 0

    @property
    def ref(self) -> SliceRef:
        return SliceRef(self.axis, self.index)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (a non-finite score becomes ``None``)."""
        score = float(self.score)
        return {
            "axis": self.axis,
            "index": int(self.index),
            "score": score if np.isfinite(score) else None,
            "reason": self.reason,
            "model_version": self.model_version,
            "strategy": self.strategy,
            "rank": int(self.rank),
        }
