"""Multi-plane prediction, soft voting and per-slice scoring, block by block.

The volume is cut into blocks of ``block`` voxels per side (whole chunks, so blocks write disjoint
chunks); each block is read with a ``halo`` of context on every side and predicted slice by slice
along each plane family (:mod:`.planes`: the orthogonal axes, and with ``planes=9`` the six diagonal
families too; tiled when a plane is larger than ``tile``); the class probabilities of all families
are averaged (soft voting, as in Baltruschat et al., "Scaling the U-net") and the block's core is
kept. Memory is bounded by the block, not the volume, and the blocks are independent: the same
:func:`predict_block` runs in this process (one block after the other) or as one task per block on a
Dask cluster (:mod:`.distributed`), with the same result. A volume no larger than one block is one
block with no halo, i.e. whole slices. The same pass scores every orthogonal slice (entropy, margin,
least confidence, optionally BALD, predicted foreground, via :meth:`SliceCandidates.from_predictions`
on each block's share, pixel-weighted across blocks) and keeps its embedding (mean over blocks,
renormalised, as tiles are), which is what acquisition ranks.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..acquisition.pool import SliceCandidates
from ..errors import InputError
from ..types import AXES, SliceRef
from .data import normalise, slice_statistics, standardise
from .planes import Plane, diagonal_planes, plane_families, plane_view

__all__ = ["PredictionResult", "BlockResult", "predict_volume", "predict_block", "block_grid", "merge_scores", "IN_MEMORY_LIMIT",
           "SCORES_FILE", "DEFAULT_BLOCK", "DEFAULT_HALO"]

#: Probability volumes up to this many bytes are accumulated in memory; larger ones in a zarr scratch array
#: (256 MiB: with a block's working set and torch, prediction then peaks below 2 GB at any size; bench_predict).
IN_MEMORY_LIMIT = 1 << 28
#: Per-version file holding the scored candidates (``SliceCandidates.to_arrays``).
SCORES_FILE = "scores.npz"
#: Block side (rounded down to whole chunks): a 256^3 block with its halo holds ~0.5 GB of float32 at 2 classes.
DEFAULT_BLOCK = 256
#: Context read around a block on each side, so slices cut at a block border still see their neighbourhood.
DEFAULT_HALO = 32


class _Stopped(Exception):
    """``should_stop()`` turned true inside a block."""


@dataclass
class PredictionResult:
    probabilities: Any  # (C, Z, Y, X) float32 array-like (numpy or zarr), already averaged
    scores: SliceCandidates
    seconds: dict[str, float] = field(default_factory=dict)
    axes: str = "zyx"
    planes: int = 3


@dataclass
class BlockResult:
    """What one block gives: its core's fused probabilities and its share of the slice scores.

    ``scores`` holds, per orthogonal axis predicted, the candidates of the core's slices computed on
    the core's part of each slice, with ``weight`` the pixels of that part (to average across blocks).
    """

    core: tuple[slice, slice, slice]
    probabilities: np.ndarray  # (C, *core shape) float32, the mean over the plane families
    scores: list[tuple[SliceCandidates, int]]
    seconds: dict[str, float]


def block_grid(shape: tuple[int, ...], chunks: tuple[int, ...], block: int) -> list[tuple[slice, slice, slice]]:
    """The blocks (cores) that tile a ``shape`` volume: ``block`` voxels per side rounded down to
    whole ``chunks`` (at least one chunk), so that no two blocks write one chunk."""
    if not isinstance(block, (int, np.integer)) or isinstance(block, bool) or block < 1:
        raise InputError(f"block must be a positive integer (voxels per side), got {block!r}")
    sides = [max(int(c), int(block) // int(c) * int(c)) for c in chunks]
    ranges = [[slice(s, min(n, s + b)) for s in range(0, n, b)] for n, b in zip(shape, sides)]
    return [(a, b, c) for a in ranges[0] for b in ranges[1] for c in ranges[2]]


def _outer(core: tuple[slice, ...], shape: tuple[int, ...], halo: int) -> tuple[slice, ...]:
    return tuple(slice(max(0, s.start - halo), min(n, s.stop + halo)) for s, n in zip(core, shape))


#: Whole-slice statistics per open store and display window: a project's image never changes, so a
#: trainer computes them once, not in every round's prediction.
_SLICE_STATS: "weakref.WeakKeyDictionary[Any, dict[tuple[float, float], Any]]" = weakref.WeakKeyDictionary()


def whole_slice_statistics(store: Any) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """:func:`~.data.slice_statistics` of a store's image in its display window, remembered while the store lives."""
    window = store.display_window
    per_window = _SLICE_STATS.setdefault(store, {})
    key = (float(window[0]), float(window[1]))
    if key not in per_window:
        per_window[key] = slice_statistics(store.image, window)
    return per_window[key]


def predict_block(
    image: Any,
    window: tuple[float, float],
    model: Any,
    core: tuple[slice, slice, slice],
    *,
    families: list[Plane],
    halo: int = DEFAULT_HALO,
    device: Any = "cpu",
    batch_size: int = 8,
    tile: int | None = 1024,
    mc_samples: int = 0,
    seed: int = 0,
    input_norm: str = "window",
    model_version: int | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    progress: Callable[[str], None] | None = None,
    slice_stats: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
) -> BlockResult:
    """Predict the block ``core`` of ``image`` (read with ``halo`` voxels of context, clipped at the
    volume) along every plane family, soft-vote, and score the core's orthogonal slices.

    ``input_norm="slice"`` standardises each orthogonal slice on the whole slice's statistics when
    ``slice_stats`` gives them (:func:`~.data.slice_statistics`; what training did), else, and each
    diagonal plane always, on the haloed block's own.
    Raises :class:`_Stopped` when ``should_stop()`` turns true (checked between batches).
    """
    from ..models import iter_predict_proba

    shape = tuple(int(n) for n in image.shape)
    outer = _outer(core, shape, halo)
    inner = tuple(slice(c.start - o.start, c.stop - o.start) for c, o in zip(core, outer))
    x = normalise(np.asarray(image[outer]), window)
    n_classes = model.n_classes
    acc = np.zeros((n_classes, *x.shape), np.float32)
    scores: list[tuple[SliceCandidates, int]] = []
    seconds: dict[str, float] = {}

    def planes_of(stack: np.ndarray, mc: int, stats: tuple[np.ndarray, np.ndarray] | None = None):
        """Predicted batches of ``stack`` (N, H, W) (with ``slice``: standardised on ``stats``, else each on its own)."""
        if input_norm != "window" and stats is not None:
            stack = standardise(stack, *stats)
        elif input_norm != "window":
            stack = normalise(stack, (0.0, 1.0), input_norm)  # x is window-mapped already: only the standardising step
        h, w = stack.shape[1:]
        use_tile = tile if tile and max(h, w) > tile else None
        for batch in iter_predict_proba(model, stack, batch_size=batch_size, device=device, tile=use_tile,
                                        mc_samples=mc, seed=seed):
            if should_stop():
                raise _Stopped
            yield batch

    for fam in families:
        t0 = time.perf_counter()
        view = plane_view(x, fam)
        votes = plane_view(acc, fam, lead=1)
        a = fam.axis
        if fam.orthogonal:
            i0, i1 = inner[a].start, inner[a].stop
            p_in, q_in = (inner[i] for i in range(3) if i != a)
            g0, g1 = core[a].start, core[a].stop
            stats = None if slice_stats is None else (slice_stats[a][0][g0:g1], slice_stats[a][1][g0:g1])
            for batch in planes_of(view[i0:i1], mc_samples, stats):
                k = slice(i0 + batch.start, i0 + batch.start + len(batch.probs))
                votes[:, k] += batch.probs.transpose(1, 0, 2, 3)
                first = core[a].start + batch.start
                refs = [SliceRef(AXES[a], first + j) for j in range(len(batch.probs))]
                crop = (slice(None), slice(None), p_in, q_in)
                mi = None if batch.mutual_info is None else batch.mutual_info[crop[1:]]
                cand = SliceCandidates.from_predictions(refs, batch.probs[crop], embeddings=batch.embeddings.astype(np.float32),
                                                        mutual_info=mi, model_version=model_version)
                scores.append((cand, (p_in.stop - p_in.start) * (q_in.stop - q_in.start)))
        else:
            p_in, q_in = (inner[i] for i in range(3) if i != a)
            planes = diagonal_planes(x.shape, fam, keep=((p_in.start, p_in.stop), (q_in.start, q_in.stop)))
            step = getattr(model, "pad_multiple", 1)
            for group in _same_length(planes, batch_size, step):
                length = -(-group[0][0] // step) * step  # the model pads to this anyway: one tensor per batch
                stack = np.stack([_pad_to(view[:, p, q], length) for _, (p, q) in group])  # (g, n_a, length)
                probs = np.concatenate([b.probs for b in planes_of(stack, 0)])
                for k, (n, (p, q)) in enumerate(group):
                    votes[:, :, p, q] += probs[k, :, :, :n]
        seconds[fam.name] = time.perf_counter() - t0
        if progress is not None:
            progress(fam.name)
    fused = acc[(slice(None), *inner)]
    fused /= len(families)
    return BlockResult(core, np.ascontiguousarray(fused), scores, seconds)


def _same_length(planes: list[tuple[int, Any]], size: int, step: int) -> Iterator[list[tuple[int, Any]]]:
    """Batches of at most ``size`` diagonal planes (longest first) whose lengths round up to the same
    multiple of ``step``, so a batch is one tensor."""
    group: list[tuple[int, Any]] = []
    for item in planes:
        if group and (-(-item[0] // step) != -(-group[0][0] // step) or len(group) == size):
            yield group
            group = []
        group.append(item)
    if group:
        yield group


def _pad_to(plane: np.ndarray, length: int) -> np.ndarray:
    """``plane`` (h, n) padded on the right to ``length`` columns as the models pad (reflect, edge when too short)."""
    extra = length - plane.shape[1]
    if extra == 0:
        return plane
    return np.pad(plane, ((0, 0), (0, extra)), mode="reflect" if extra < plane.shape[1] else "edge")


def merge_scores(parts: Iterable[tuple[SliceCandidates, int]], axes: str) -> SliceCandidates:
    """One candidate per slice from the blocks' shares: scores averaged by pixels, embeddings summed
    and renormalised (a slice seen by one block keeps its own numbers), ordered by ``axes`` then index."""
    by_ref: dict[SliceRef, list[tuple[SliceCandidates, int, int]]] = {}
    for cand, weight in parts:
        for i, ref in enumerate(cand.refs):
            by_ref.setdefault(ref, []).append((cand, i, weight))
    refs = sorted(by_ref, key=lambda r: (axes.index(r.axis), r.index))
    pieces = []
    for ref in refs:
        shares = by_ref[ref]
        if len(shares) == 1:
            cand, i, _ = shares[0]
            pieces.append(SliceCandidates(
                (ref,), {k: v[i : i + 1] for k, v in cand.uncertainty.items()},
                None if cand.embeddings is None else cand.embeddings[i : i + 1],
                None if cand.foreground_fraction is None else cand.foreground_fraction[i : i + 1], cand.model_version))
            continue
        w = np.array([s[2] for s in shares], np.float64)
        w /= w.sum()

        def mean(get):
            return np.array([sum(wk * float(get(c)[i]) for wk, (c, i, _) in zip(w, shares))], np.float32)

        first = shares[0][0]
        emb = None
        if first.embeddings is not None:
            e = np.sum([c.embeddings[i] for c, i, _ in shares], axis=0, dtype=np.float64)
            emb = (e / max(np.linalg.norm(e), 1e-12)).astype(np.float32)[None]
        fg = None if first.foreground_fraction is None else mean(lambda c: c.foreground_fraction)
        pieces.append(SliceCandidates((ref,), {k: mean(lambda c, k=k: c.uncertainty[k]) for k in first.uncertainty},
                                      emb, fg, first.model_version))
    return SliceCandidates.concat(pieces)


def predict_volume(
    store: Any,
    model: Any,
    *,
    axes: str = "zyx",
    planes: int = 3,
    device: Any = "cpu",
    batch_size: int = 8,
    tile: int | None = 1024,
    mc_samples: int = 0,
    scratch: Any = None,
    should_stop: Callable[[], bool] = lambda: False,
    progress: Callable[[int, int, str], None] | None = None,
    seed: int = 0,
    model_version: int | None = None,
    input_norm: str = "window",
    block: int = DEFAULT_BLOCK,
    halo: int = DEFAULT_HALO,
    engine: Any = None,
) -> PredictionResult | None:
    """Predict every block along each plane family (the orthogonal ``axes``; with ``planes=9`` the six
    diagonal families too); soft-vote; score every slice along ``axes``.

    ``input_norm`` must be the one the model was trained with (see :func:`~.data.normalise`).
    ``scratch`` is a zarr group for the fused probabilities when they are larger than
    :data:`IN_MEMORY_LIMIT`. ``engine`` runs the blocks elsewhere (a
    :class:`~.distributed.DaskEngine`: one task per block on a Dask cluster, the model loaded there
    from its checkpoint; ``model`` then only gives the class count); ``None`` runs them here, one after
    the other. Returns ``None`` when ``should_stop()`` became true.
    """
    families = plane_families(planes, axes)
    if not isinstance(halo, (int, np.integer)) or isinstance(halo, bool) or halo < 0:
        raise InputError(f"halo must be an integer >= 0 (voxels of context around a block), got {halo!r}")
    shape = tuple(int(n) for n in store.shape)
    n_classes = model.n_classes
    window = store.display_window
    chunks = tuple(int(c) for c in store.image.chunks)
    nbytes = n_classes * int(np.prod(shape)) * 4
    if nbytes <= IN_MEMORY_LIMIT or scratch is None:
        acc = np.zeros((n_classes, *shape), np.float32)
    else:
        acc = scratch.create_array("vote_accumulator", shape=(n_classes, *shape), dtype=np.float32,
                                   chunks=(1, *chunks), fill_value=0.0, overwrite=True)
    cores = block_grid(shape, chunks, block)
    total = len(cores) * len(families)
    done = 0
    options = dict(families=families, halo=int(halo), device=device, batch_size=batch_size, tile=tile, mc_samples=mc_samples,
                   seed=seed, input_norm=input_norm, model_version=model_version)
    if input_norm == "slice" and len(cores) > 1:  # a slice split over blocks: standardised as a whole, as in training
        options["slice_stats"] = whole_slice_statistics(store)

    def step(name: str) -> None:  # noqa: ARG001 - one stage: (block, plane family) pairs done
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, f"predict {planes} planes")

    if engine is None:
        results: Iterator[BlockResult] = (
            predict_block(store.image, window, model, core, should_stop=should_stop, progress=step, **options) for core in cores)
    else:
        results = engine.map_blocks(store, cores, options)
    parts: list[tuple[tuple[int, ...], list[tuple[SliceCandidates, int]]]] = []
    seconds = {f.name: 0.0 for f in families}
    try:
        for res in results:
            acc[(slice(None), *res.core)] = res.probabilities
            parts.append((tuple(s.start for s in res.core), res.scores))
            for k, v in res.seconds.items():
                seconds[k] += v
            if engine is not None:
                for f in families:
                    step(f.name)
            if should_stop():
                return None
    except _Stopped:
        return None
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()  # a stopped engine cancels its outstanding blocks
    parts.sort(key=lambda t: t[0])  # blocks finish in any order on a cluster; the averages must not depend on it
    return PredictionResult(acc, merge_scores((s for _, block in parts for s in block), axes), seconds, axes, planes)
