"""Batched (optionally tiled, optionally MC-dropout) prediction over 2D slices.

All functions take ``slices`` ``(N, H, W)`` already normalised (float32; anything indexable with
``slices[i:j]`` such as a zarr array or memmap works) and run under ``torch.inference_mode`` with
bfloat16 autocast only on CUDA. The model is moved to ``device`` and put in eval mode for the call
(its previous train/eval mode is restored afterwards).

For big pools prefer :func:`iter_predict_proba`, which yields one batch at a time, over
:func:`predict_proba_slices`, which holds all ``N x C x H x W`` probabilities in memory.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import InputError
from .base import SegmentationModel

__all__ = ["SliceBatchPrediction", "iter_predict_proba", "predict_proba_slices", "mc_dropout_proba", "tile_grid", "blend_window"]

_EPS = 1e-12


@dataclass(frozen=True)
class SliceBatchPrediction:
    """Predictions for ``slices[start:start + len(probs)]``.

    Attributes
    ----------
    start : int
    probs : (B, C, H, W) float32
        Softmax probabilities (the MC mean when ``mc_samples > 0``).
    embeddings : (B, D) float32
        L2-normalised bottleneck embeddings (a tiled slice: mean over tiles, renormalised).
    mutual_info : (B, H, W) float32 or None
        BALD mutual information per pixel (only with ``mc_samples > 0``).
    samples : (T, B, C, H, W) float32 or None
        Per-sample probabilities (only when asked for, see :func:`mc_dropout_proba`).
    """

    start: int
    probs: np.ndarray
    embeddings: np.ndarray
    mutual_info: np.ndarray | None = None
    samples: np.ndarray | None = None


def _pair(v: int | tuple[int, int], what: str) -> tuple[int, int]:
    t = (v, v) if isinstance(v, (int, np.integer)) else tuple(v)
    if len(t) != 2 or not all(isinstance(a, (int, np.integer)) and a > 0 for a in t):
        raise InputError(f"{what} must be a positive int or a pair of them, got {v!r}")
    return int(t[0]), int(t[1])


def tile_grid(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``size`` with at least ``overlap`` overlap.

    Examples
    --------
    >>> tile_grid(100, 64, 16)
    [0, 36]
    >>> tile_grid(50, 64, 16)
    [0]
    """
    if size <= tile:
        return [0]
    step = max(1, tile - overlap)
    n = -(-(size - tile) // step) + 1
    return [int(round(i * (size - tile) / (n - 1))) for i in range(n)]


def blend_window(shape: tuple[int, int], overlap: tuple[int, int]) -> np.ndarray:
    """Separable linear-ramp weights ``(h, w)`` for blending overlapping tiles (> 0 everywhere)."""

    def ramp(n: int, o: int) -> np.ndarray:
        if o <= 0:
            return np.ones(n, np.float32)
        i = np.arange(n, dtype=np.float32)
        d = np.minimum(i + 0.5, n - i - 0.5)
        return np.clip(d / o, 1e-3, 1.0).astype(np.float32)

    return np.outer(ramp(shape[0], overlap[0]), ramp(shape[1], overlap[1]))


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _run(model: SegmentationModel, x: torch.Tensor, mc_samples: int, keep_samples: bool, device: torch.device):
    """One batch of tiles -> (probs, emb, mi, samples) as float32 tensors on the CPU."""
    with _autocast(device):
        if mc_samples <= 0:
            logits, emb = model.forward_with_embedding(x)
            probs = logits.float().softmax(dim=1)
            return probs.cpu(), emb.float().cpu(), None, None
        logits_list, emb = model.forward_mc(x, mc_samples)
    mean = None
    mean_ent = None
    kept = []
    for logits in logits_list:
        p = logits.float().softmax(dim=1)
        ent = -(p * torch.log(p.clamp_min(_EPS))).sum(dim=1)
        mean = p if mean is None else mean + p
        mean_ent = ent if mean_ent is None else mean_ent + ent
        if keep_samples:
            kept.append(p.cpu())
    mean = mean / mc_samples
    mean_ent = mean_ent / mc_samples
    ent_mean = -(mean * torch.log(mean.clamp_min(_EPS))).sum(dim=1)
    mi = (ent_mean - mean_ent).clamp_min(0.0)
    samples = torch.stack(kept) if keep_samples else None
    return mean.cpu(), emb.float().cpu(), mi.cpu(), samples


def iter_predict_proba(
    model: SegmentationModel,
    slices: Any,
    *,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    tile: int | tuple[int, int] | None = None,
    tile_overlap: int | float = 0.25,
    mc_samples: int = 0,
    keep_samples: bool = False,
    seed: int | None = None,
) -> Iterator[SliceBatchPrediction]:
    """Yield :class:`SliceBatchPrediction` for consecutive batches of ``slices``.

    Parameters are those of :func:`predict_proba_slices`; ``keep_samples`` additionally returns
    the ``(T, B, C, H, W)`` per-sample probabilities.

    Examples
    --------
    >>> import numpy as np
    >>> from al_annotator.models import create_model, iter_predict_proba
    >>> model = create_model("hrnet_w18_small", n_classes=2)
    >>> [b.probs.shape for b in iter_predict_proba(model, np.zeros((3, 64, 64), np.float32), batch_size=2)]
    [(2, 2, 64, 64), (1, 2, 64, 64)]
    """
    if not isinstance(model, SegmentationModel):
        raise InputError(f"model must be a SegmentationModel, got {type(model).__name__}")
    shape = tuple(getattr(slices, "shape", ()))
    if len(shape) != 3:
        raise InputError(f"slices must be an (N, H, W) array of normalised slices, got shape {shape or type(slices).__name__}")
    if model.in_channels != 1:
        raise InputError(f"slice prediction feeds 1-channel slices, but {model.name} expects {model.in_channels} channels")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(mc_samples, (int, np.integer)) or mc_samples < 0:
        raise InputError(f"mc_samples must be a non-negative integer, got {mc_samples!r}")
    if keep_samples and mc_samples < 1:
        raise InputError("keep_samples=True needs mc_samples >= 1")
    n, h, w = (int(s) for s in shape)
    dev = torch.device(device)
    if tile is None:
        th, tw = h, w
        oy = ox = 0
    else:
        th, tw = _pair(tile, "tile")
        th, tw = min(th, h), min(tw, w)
        if isinstance(tile_overlap, float):
            if not 0.0 <= tile_overlap < 1.0:
                raise InputError(f"tile_overlap as a fraction must be in [0, 1), got {tile_overlap!r}")
            oy, ox = int(round(th * tile_overlap)), int(round(tw * tile_overlap))
        else:
            oy, ox = _pair(tile_overlap, "tile_overlap") if tile_overlap else (0, 0)
            oy, ox = min(oy, th - 1), min(ox, tw - 1)
    ys, xs = tile_grid(h, th, oy), tile_grid(w, tw, ox)
    tiled = len(ys) * len(xs) > 1
    window = torch.from_numpy(blend_window((th, tw), (oy, ox))) if tiled else None

    was_training = model.training
    model.to(dev).eval()
    rng_ctx = torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []) if seed is not None else contextlib.nullcontext()
    try:
        with rng_ctx, torch.inference_mode():
            if seed is not None:
                torch.manual_seed(int(seed))
            for start in range(0, n, batch_size):
                chunk = np.asarray(slices[start : start + batch_size], dtype=np.float32)
                b = chunk.shape[0]
                if not tiled:
                    x = torch.from_numpy(np.ascontiguousarray(chunk)).unsqueeze(1).to(dev)
                    probs, emb, mi, samples = _run(model, x, mc_samples, keep_samples, dev)
                    yield SliceBatchPrediction(
                        start,
                        probs.numpy(),
                        emb.numpy(),
                        None if mi is None else mi.numpy(),
                        None if samples is None else samples.numpy(),
                    )
                    continue
                yield _predict_tiled(model, chunk, start, ys, xs, (th, tw), window, batch_size, mc_samples, keep_samples, dev)
    finally:
        model.train(was_training)


def _predict_tiled(model, chunk, start, ys, xs, tsize, window, batch_size, mc_samples, keep_samples, dev) -> SliceBatchPrediction:
    b, h, w = chunk.shape
    th, tw = tsize
    c = model.n_classes
    acc = torch.zeros(b, c, h, w)
    wsum = torch.zeros(b, 1, h, w)
    mi_acc = torch.zeros(b, h, w) if mc_samples else None
    s_acc = torch.zeros(mc_samples, b, c, h, w) if keep_samples else None
    emb_acc: torch.Tensor | None = None
    jobs = [(i, y, x) for i in range(b) for y in ys for x in xs]
    for j in range(0, len(jobs), batch_size):
        part = jobs[j : j + batch_size]
        x = torch.from_numpy(np.stack([chunk[i, y : y + th, xx : xx + tw] for i, y, xx in part])).unsqueeze(1).to(dev)
        probs, emb, mi, samples = _run(model, x, mc_samples, keep_samples, dev)
        if emb_acc is None:
            emb_acc = torch.zeros(b, emb.shape[1])
        for k, (i, y, xx) in enumerate(part):
            acc[i, :, y : y + th, xx : xx + tw] += probs[k] * window
            wsum[i, :, y : y + th, xx : xx + tw] += window
            emb_acc[i] += emb[k]
            if mi_acc is not None:
                mi_acc[i, y : y + th, xx : xx + tw] += mi[k] * window
            if s_acc is not None:
                s_acc[:, i, :, y : y + th, xx : xx + tw] += samples[:, k] * window
    probs = acc / wsum
    emb = torch.nn.functional.normalize(emb_acc, dim=1)
    mi = None if mi_acc is None else (mi_acc / wsum[:, 0]).numpy()
    samples = None if s_acc is None else (s_acc / wsum.unsqueeze(0)).numpy()
    return SliceBatchPrediction(start, probs.numpy(), emb.numpy(), mi, samples)


def predict_proba_slices(
    model: SegmentationModel,
    slices: Any,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    tile: int | tuple[int, int] | None = None,
    mc_samples: int = 0,
    *,
    tile_overlap: int | float = 0.25,
    seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class probabilities and embeddings for every slice.

    Parameters
    ----------
    model
        A :class:`SegmentationModel` (moved to ``device``; eval mode during the call).
    slices
        ``(N, H, W)`` normalised slices.
    batch_size
        Slices (or tiles) per forward pass.
    device
        ``"cpu"`` or ``"cuda[:i]"``; CUDA runs under bfloat16 autocast, outputs are float32.
    tile
        Tile size (int or ``(th, tw)``) for slices too large for one pass; ``None`` = whole slices.
        Overlapping tiles are blended with linear-ramp weights.
    mc_samples
        ``T > 0``: MC dropout with ``T`` samples (backbone run once per tile, classifier ``T``
        times); the returned probabilities are the MC mean and a third array, the BALD mutual
        information per pixel ``(N, H, W)``, is returned too. For the raw samples use
        :func:`mc_dropout_proba`.
    tile_overlap
        Overlap between tiles: a fraction of the tile (float) or pixels (int).
    seed
        Seed for the dropout masks (MC only); ``None`` uses torch's global RNG.

    Returns
    -------
    probs : (N, C, H, W) float32
    embeddings : (N, D) float32, L2-normalised
    mutual_info : (N, H, W) float32, only when ``mc_samples > 0``

    Examples
    --------
    >>> import numpy as np
    >>> from al_annotator.models import create_model, predict_proba_slices
    >>> model = create_model("hrnet_w18_small", n_classes=3)
    >>> probs, emb = predict_proba_slices(model, np.zeros((2, 72, 56), np.float32))
    >>> probs.shape, emb.shape
    ((2, 3, 72, 56), (2, 128))
    >>> probs, emb, mi = predict_proba_slices(model, np.zeros((1, 64, 64), np.float32), mc_samples=4, seed=0)
    >>> mi.shape
    (1, 64, 64)
    """
    batches = list(
        iter_predict_proba(
            model, slices, batch_size=batch_size, device=device, tile=tile, tile_overlap=tile_overlap, mc_samples=mc_samples, seed=seed
        )
    )
    n, h, w = (int(s) for s in slices.shape)
    if not batches:
        empty = (np.zeros((0, model.n_classes, h, w), np.float32), np.zeros((0, model.embedding_dim), np.float32))
        return empty + ((np.zeros((0, h, w), np.float32),) if mc_samples else ())
    probs = np.concatenate([b.probs for b in batches])
    emb = np.concatenate([b.embeddings for b in batches])
    if mc_samples:
        return probs, emb, np.concatenate([b.mutual_info for b in batches])
    return probs, emb


def mc_dropout_proba(
    model: SegmentationModel,
    slices: Any,
    T: int,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    tile: int | tuple[int, int] | None = None,
    *,
    tile_overlap: int | float = 0.25,
    seed: int | None = None,
) -> np.ndarray:
    """``T`` MC-dropout probability samples ``(T, N, C, H, W)`` float32 (feed to ``acquisition.bald``).

    Examples
    --------
    >>> import numpy as np
    >>> from al_annotator.models import create_model, mc_dropout_proba
    >>> model = create_model("hrnet_w18_small", n_classes=2, dropout=0.3)
    >>> mc_dropout_proba(model, np.zeros((2, 64, 64), np.float32), T=3, seed=0).shape
    (3, 2, 2, 64, 64)
    """
    if not isinstance(T, (int, np.integer)) or T < 1:
        raise InputError(f"T (MC samples) must be a positive integer, got {T!r}")
    parts = [
        b.samples
        for b in iter_predict_proba(
            model, slices, batch_size=batch_size, device=device, tile=tile, tile_overlap=tile_overlap, mc_samples=int(T), keep_samples=True, seed=seed
        )
    ]
    if not parts:
        n, h, w = (int(s) for s in slices.shape)
        return np.zeros((int(T), 0, model.n_classes, h, w), np.float32)
    return np.concatenate(parts, axis=1)
