"""Multi-axis prediction, soft voting and per-slice scoring.

Each axis in ``axes`` is predicted slice by slice (tiled when a slice is large), in slabs of one
chunk so memory stays bounded; the class probabilities of all axes are averaged (soft voting,
as in Baltruschat et al., "Scaling the U-net"). The same pass scores every slice on that axis
(entropy, margin, least confidence, optionally BALD, predicted foreground, via
:meth:`SliceCandidates.from_predictions`) and keeps its
embedding, which is what acquisition ranks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..acquisition.pool import SliceCandidates
from ..types import AXES, SliceRef
from .data import normalise

__all__ = ["PredictionResult", "predict_volume", "IN_MEMORY_LIMIT", "SCORES_FILE"]

#: Probability volumes up to this many bytes are accumulated in memory; larger ones in a zarr scratch array.
IN_MEMORY_LIMIT = 1 << 30
#: Per-version file holding the scored candidates (``SliceCandidates.to_arrays``).
SCORES_FILE = "scores.npz"


@dataclass
class PredictionResult:
    probabilities: Any  # (C, Z, Y, X) float32 array-like (numpy or zarr), already averaged
    scores: SliceCandidates
    seconds: dict[str, float] = field(default_factory=dict)
    axes: str = "zyx"


def _slab_selection(axis: int, start: int, stop: int) -> tuple:
    sel: list[Any] = [slice(None)] * 3
    sel[axis] = slice(start, stop)
    return tuple(sel)


def predict_volume(
    store: Any,
    model: Any,
    *,
    axes: str = "zyx",
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
) -> PredictionResult | None:
    """Predict every slice along each axis in ``axes``; soft-vote; score every slice.

    ``input_norm`` must be the one the model was trained with (see :func:`~.data.normalise`).
    ``scratch`` is a zarr group for the accumulator when the probability volume is larger than
    :data:`IN_MEMORY_LIMIT`. Returns ``None`` when ``should_stop()`` became true.
    """
    from ..models import iter_predict_proba

    shape = tuple(store.shape)
    n_classes = model.n_classes
    window = store.display_window
    nbytes = n_classes * int(np.prod(shape)) * 4
    if nbytes <= IN_MEMORY_LIMIT or scratch is None:
        acc = np.zeros((n_classes, *shape), np.float32)
    else:
        acc = scratch.create_array("vote_accumulator", shape=(n_classes, *shape), dtype=np.float32,
                                   chunks=(1, *store.image.chunks), fill_value=0.0, overwrite=True)
    chunks = store.image.chunks
    total = sum(shape[AXES.index(a)] for a in axes)
    done = 0
    parts: list[SliceCandidates] = []
    seconds: dict[str, float] = {}
    for a in axes:
        t0 = time.perf_counter()
        axis = AXES.index(a)
        n = shape[axis]
        slab = chunks[axis]
        for start in range(0, n, slab):
            if should_stop():
                return None
            stop = min(n, start + slab)
            sel = _slab_selection(axis, start, stop)
            block = np.moveaxis(np.asarray(store.image[sel]), axis, 0)  # (n, h, w)
            x = normalise(block, window, input_norm)
            h, w = x.shape[1:]
            use_tile = tile if tile and max(h, w) > tile else None
            probs = np.empty((stop - start, n_classes, h, w), np.float32)
            embeds = []
            mutual_info = np.empty((stop - start, h, w), np.float32) if mc_samples else None
            for batch in iter_predict_proba(model, x, batch_size=batch_size, device=device, tile=use_tile,
                                            mc_samples=mc_samples, seed=seed):
                k = slice(batch.start, batch.start + len(batch.probs))
                probs[k] = batch.probs
                embeds.append(batch.embeddings.astype(np.float32))
                if mc_samples:
                    mutual_info[k] = batch.mutual_info
            refs = [SliceRef(a, i) for i in range(start, stop)]
            parts.append(SliceCandidates.from_predictions(refs, probs, embeddings=np.concatenate(embeds),
                                                          mutual_info=mutual_info, model_version=model_version))
            vote = np.moveaxis(probs, 0, axis + 1)  # (C, ...) in volume order
            full_sel = (slice(None), *sel)
            if isinstance(acc, np.ndarray):
                acc[full_sel] += vote
            else:
                acc[full_sel] = np.asarray(acc[full_sel]) + vote
            done += stop - start
            if progress is not None:
                progress(done, total, f"predict {a}")
        seconds[a] = time.perf_counter() - t0
    if isinstance(acc, np.ndarray):
        acc /= len(axes)
    else:
        for z0 in range(0, shape[0], chunks[0]):
            s = (slice(None), slice(z0, z0 + chunks[0]))
            acc[s] = np.asarray(acc[s]) / len(axes)
    scores = SliceCandidates.concat(parts)
    return PredictionResult(acc, scores, seconds, axes)
