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

#: Chunks of the image read for the cold-start foreground estimate (a sub-grid of the chunk grid;
#: 216 chunks of 64^3 are 54 MB of uint8: ~0.5 s where reading whole slices took 11 s at 1024^3).
COLD_START_MAX_CHUNKS = 216
#: Voxels per chunk that feed Otsu's threshold (a strided subsample).
_OTSU_PER_CHUNK = 4096

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


def _chunk_grid_sample(n_chunks: tuple[int, ...], max_chunks: int) -> list[np.ndarray]:
    """Evenly spread chunk positions per axis whose product (the chunks read) is at most ``max_chunks``.

    Starts from the cube root per axis and gives what an axis with few chunks cannot use to the others.
    """
    m = [1] * len(n_chunks)
    grew = True
    while grew:
        grew = False
        for a in np.argsort([-n for n in n_chunks]):  # longest axis first
            if m[a] < n_chunks[a] and int(np.prod(m)) // m[a] * (m[a] + 1) <= max(1, max_chunks):
                m[a] += 1
                grew = True
    return [np.unique(np.linspace(0, n - 1, k).round().astype(int)) for n, k in zip(n_chunks, m)]


def cold_start_foreground(store: Any, axes: Iterable[str] = AXES, max_chunks: int = COLD_START_MAX_CHUNKS) -> dict[str, np.ndarray]:
    """Intensity-based foreground fraction of every slice on ``axes`` (for the cold start).

    Reads at most ``max_chunks`` storage chunks of the image: a regular sub-grid of the chunk grid
    (evenly spread chunk rows along each axis, the same tile positions in every row), so a 1024^3
    project reads 6x6x6 chunks instead of whole slices. Otsu's threshold is computed over a strided
    subsample of those voxels. A slice whose chunk row was read gets the fraction of its sampled
    voxels above the threshold (from the same tiles for every slice of an axis, so the estimates are
    comparable); the other slices are linearly interpolated. Volumes of at most ``max_chunks``
    chunks are read whole (exact fractions). Results are cached per project path and shape (the
    image never changes).
    """
    shape = tuple(int(s) for s in store.shape)
    axes = tuple(axes)
    key = (str(getattr(store, "path", None) or id(store)), shape, axes, int(max_chunks))
    if key in _FG_CACHE:
        return _FG_CACHE[key]
    image = store.image
    chunks = tuple(int(c) for c in (getattr(image, "chunks", None) or shape))
    n_chunks = tuple(-(-s // c) for s, c in zip(shape, chunks))
    picks = _chunk_grid_sample(n_chunks, max_chunks)
    # the index ranges read along each axis (whole chunks), in order
    ranges = [[(int(p) * c, min((int(p) + 1) * c, s)) for p in pick] for pick, c, s in zip(picks, chunks, shape)]
    blocks: dict[tuple[int, int, int], np.ndarray] = {}
    for i, (z0, z1) in enumerate(ranges[0]):
        for j, (y0, y1) in enumerate(ranges[1]):
            for k, (x0, x1) in enumerate(ranges[2]):
                blocks[i, j, k] = np.asarray(image[z0:z1, y0:y1, x0:x1])
    sample = np.concatenate([b.ravel()[:: max(1, b.size // _OTSU_PER_CHUNK)] for b in blocks.values()])
    thr = otsu_threshold(sample)
    # voxels above the threshold per index along each axis, over the tiles read
    above = [np.zeros(sum(b - a for a, b in r), np.int64) for r in ranges]
    total = [np.zeros_like(v) for v in above]
    offsets = [np.cumsum([0] + [b - a for a, b in r]) for r in ranges]
    for (i, j, k), block in blocks.items():
        fg = block > thr
        for a, pos in enumerate((i, j, k)):
            others = tuple(d for d in range(3) if d != a)
            lo, hi = offsets[a][pos], offsets[a][pos + 1]
            above[a][lo:hi] += fg.sum(axis=others)
            total[a][lo:hi] += int(np.prod([block.shape[d] for d in others]))
    out = {}
    for a in axes:
        n = AXES.index(a)
        known = np.concatenate([np.arange(lo, hi) for lo, hi in ranges[n]])
        frac = above[n] / np.maximum(total[n], 1)
        out[a] = np.interp(np.arange(shape[n]), known, frac).astype(np.float32)
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
