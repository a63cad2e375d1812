"""Suggestions for a project store: the glue between the store, the trainer's scores and :func:`suggest`.

The trainer writes the per-slice scores of each model version to ``models/vNNNN/scores.npz``
(:meth:`SliceCandidates.to_arrays`); :func:`suggest_for_project` reads the current version's
scores with ``store.models.read_scores``, marks the slices whose state is ``"annotated"``,
and ranks the rest. Before the first model it ranks every slice of the requested axes with a
cold-start pick weighted by an intensity-based foreground estimate.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ..errors import InputError
from ..types import AXES, SliceRef, axis_number
from .measures import otsu_threshold
from .pool import ScoredPool, SliceCandidates, Suggestion
from .strategies import suggest

__all__ = ["suggest_for_project", "project_pool", "cold_start_foreground"]

#: Slices sampled per axis for the cold-start foreground estimate (others are interpolated).
COLD_START_SAMPLES = 24

_FG_CACHE: dict[tuple, dict[str, np.ndarray]] = {}


def _parse_axes(axes: str | Iterable[str | int] | None) -> tuple[str, ...]:
    if axes is None:
        return AXES
    items = list(axes) if not isinstance(axes, str) else [a for a in axes.replace(",", "") if not a.isspace()]
    if not items:
        raise InputError(f"axes must name at least one of z, y, x; got {axes!r}")
    out = []
    for a in items:
        try:
            name = AXES[axis_number(a)]
        except ValueError:
            raise InputError(f"axes must be letters of 'zyx' (e.g. 'z' or 'zyx'), got {axes!r}") from None
        if name not in out:
            out.append(name)
    return tuple(out)


def cold_start_foreground(store: Any, axes: Iterable[str] = AXES, samples: int = COLD_START_SAMPLES) -> dict[str, np.ndarray]:
    """Intensity-based foreground fraction of every slice on ``axes`` (for the cold start).

    ``samples`` evenly spaced slices per axis are read; the fraction of their pixels above
    Otsu's threshold (computed over all sampled pixels) is linearly interpolated to the other
    slices. Results are cached per project path and shape (the image never changes).
    """
    shape = tuple(int(s) for s in store.shape)
    axes = tuple(axes)
    key = (str(getattr(store, "path", None) or id(store)), shape, axes, int(samples))
    if key in _FG_CACHE:
        return _FG_CACHE[key]
    picked: dict[str, np.ndarray] = {}
    images: dict[str, list[np.ndarray]] = {}
    for a in axes:
        n = shape[AXES.index(a)]
        idx = np.unique(np.linspace(0, n - 1, min(samples, n)).round().astype(int))
        picked[a] = idx
        images[a] = [np.asarray(store.read_slice(SliceRef(a, int(i)))) for i in idx]
    sample = np.concatenate([im.ravel()[:: max(1, im.size // 4096)] for ims in images.values() for im in ims])
    thr = otsu_threshold(sample)
    out = {}
    for a in axes:
        n = shape[AXES.index(a)]
        frac = np.array([(im > thr).mean() for im in images[a]], np.float64)
        out[a] = np.interp(np.arange(n), picked[a], frac).astype(np.float32)
    _FG_CACHE[key] = out
    return out


def project_pool(store: Any, axes: str | Iterable[str | int] | None = None) -> ScoredPool:
    """The :class:`ScoredPool` of a project: current model's scores, or a cold-start pool."""
    from ..store.models import read_scores

    axes_t = _parse_axes(axes)
    annotated = list(store.annotated_slices())
    cand: SliceCandidates | None = read_scores(store)
    if cand is None:
        shape = tuple(int(s) for s in store.shape)
        fg = cold_start_foreground(store, axes_t)
        refs = [SliceRef(a, i) for a in axes_t for i in range(shape[AXES.index(a)])]
        frac = np.concatenate([fg[a] for a in axes_t])
        done = set(annotated)
        mask = np.array([r in done for r in refs], bool)
        return ScoredPool(refs, foreground_fraction=frac, annotated_mask=mask)
    pool = cand.to_pool(annotated=annotated)
    keep = np.array([r.axis in axes_t for r in pool.refs], bool)
    if not keep.any():
        have = sorted({r.axis for r in pool.refs})
        raise InputError(f"model version {cand.model_version} scored slices on axes {have}, none on {list(axes_t)}")
    return pool if keep.all() else pool.subset(np.flatnonzero(keep))


def suggest_for_project(
    store: Any,
    strategy: str = "hybrid",
    n: int = 8,
    axes: str | Iterable[str | int] | None = None,
    seed: int = 0,
    **kw: Any,
) -> list[Suggestion]:
    """The next ``n`` slices to annotate in ``store`` (best first).

    Parameters
    ----------
    store
        An open :class:`~al_annotator.store.ProjectStore`.
    strategy
        A registered strategy name (see :data:`STRATEGIES`), default ``"hybrid"``.
    axes
        Candidate axes, e.g. ``"zyx"`` (default) or ``"z"``.
    seed
        Seed of the random parts (cold start, random strategies).
    **kw
        Passed to the strategy.

    Examples
    --------
    >>> import numpy as np
    >>> from al_annotator.store import create_project
    >>> store = create_project(None, np.random.default_rng(0).integers(0, 9, (6, 8, 8)).astype(np.uint8),
    ...                        classes="background,bone")
    >>> [s.axis for s in suggest_for_project(store, "entropy", n=3, axes="z")]
    ['z', 'z', 'z']
    """
    return suggest(project_pool(store, axes), strategy, n=n, seed=seed, **kw)
