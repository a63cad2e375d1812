"""Per-pixel uncertainty measures and their reduction to one score per slice.

Every measure follows one convention: **higher means more uncertain**, and the class axis is
axis ``-3`` so the same function works on one slice ``(C, H, W)`` and on a batch
``(N, C, H, W)``. MC-dropout samples put the sample axis first: ``(T, C, H, W)`` or
``(T, N, C, H, W)``.

* :func:`pixel_entropy`: ``-sum_c p log p`` in nats (``/ log C`` with ``normalize=True``);
  uniform ``p`` gives ``log C``, one-hot gives 0.
* :func:`pixel_margin`: ``1 - (p_(1) - p_(2))``; uniform 1, one-hot 0.
* :func:`pixel_least_confidence`: ``1 - max_c p``; uniform ``1 - 1/C``, one-hot 0.
* :func:`bald`: ``H(mean_t p_t) - mean_t H(p_t)``; 0 when all MC samples agree.

:func:`slice_score` reduces a pixel map to one number per slice (mean, top-k mean or max,
optionally inside a foreground mask).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..errors import InputError

__all__ = [
    "pixel_entropy",
    "pixel_margin",
    "pixel_least_confidence",
    "bald",
    "slice_score",
    "foreground_fraction",
    "intensity_foreground_fraction",
    "otsu_threshold",
]

_EPS = 1e-12


def _probs(p: np.ndarray, name: str) -> np.ndarray:
    p = np.asarray(p)
    if p.ndim < 3:
        raise InputError(f"{name} expects probabilities (C, H, W) or (N, C, H, W), got shape {p.shape}")
    if not np.issubdtype(p.dtype, np.floating):
        raise InputError(f"{name} expects float probabilities, got dtype {p.dtype}")
    return p


def pixel_entropy(p: np.ndarray, *, normalize: bool = False) -> np.ndarray:
    """Shannon entropy over the class axis (-3), in nats; ``normalize=True`` divides by ``log C``.

    Examples
    --------
    >>> import numpy as np
    >>> float(pixel_entropy(np.full((4, 1, 1), 0.25))[0, 0]) == float(np.log(4))
    True
    >>> float(pixel_entropy(np.eye(3)[:, :, None])[0, 0])
    0.0
    """
    p = _probs(p, "pixel_entropy")
    h = -np.sum(p * np.log(np.clip(p, _EPS, None)), axis=-3)
    if normalize:
        c = p.shape[-3]
        h = h / np.log(c) if c > 1 else np.zeros_like(h)
    return np.clip(h, 0.0, None).astype(p.dtype, copy=False)


def pixel_margin(p: np.ndarray) -> np.ndarray:
    """Margin uncertainty ``1 - (p_top1 - p_top2)`` over the class axis (-3).

    This is ``1 -`` modAL's ``classifier_margin``, so that larger means more uncertain like the
    other measures (modAL's ``margin_sampling`` takes the *smallest* margin instead).

    Examples
    --------
    >>> import numpy as np
    >>> pixel_margin(np.array([0.5, 0.3, 0.2])[:, None, None])
    array([[0.8]])
    """
    p = _probs(p, "pixel_margin")
    if p.shape[-3] < 2:
        return np.zeros(p.shape[:-3] + p.shape[-2:], p.dtype)
    top2 = -np.partition(-p, 1, axis=-3)
    top1 = np.take(top2, 0, axis=-3)
    second = np.take(top2, 1, axis=-3)
    return (1.0 - (top1 - second)).astype(p.dtype, copy=False)


def pixel_least_confidence(p: np.ndarray) -> np.ndarray:
    """Least confidence ``1 - max_c p`` over the class axis (-3) (modAL's ``classifier_uncertainty``).

    Examples
    --------
    >>> import numpy as np
    >>> pixel_least_confidence(np.array([0.7, 0.2, 0.1])[:, None, None]).round(6)
    array([[0.3]])
    """
    p = _probs(p, "pixel_least_confidence")
    return (1.0 - p.max(axis=-3)).astype(p.dtype, copy=False)


def bald(mc: np.ndarray) -> np.ndarray:
    """BALD mutual information from MC-dropout samples ``(T, C, H, W)`` or ``(T, N, C, H, W)``.

    ``I = H(mean_t p_t) - mean_t H(p_t)`` (nats, >= 0): zero when every sample agrees, large when
    the samples are individually confident but disagree.

    Examples
    --------
    >>> import numpy as np
    >>> same = np.stack([np.array([0.9, 0.1])[:, None, None]] * 4)
    >>> float(bald(same)[0, 0])
    0.0
    >>> flip = np.stack([np.array([1.0, 0.0])[:, None, None], np.array([0.0, 1.0])[:, None, None]])
    >>> round(float(bald(flip)[0, 0]), 4) == round(float(np.log(2)), 4)
    True
    """
    mc = np.asarray(mc)
    if mc.ndim < 4:
        raise InputError(f"bald expects MC samples (T, C, H, W) or (T, N, C, H, W), got shape {mc.shape}")
    mean = mc.mean(axis=0)
    return np.clip(pixel_entropy(mean) - pixel_entropy(mc).mean(axis=0), 0.0, None).astype(mean.dtype, copy=False)


Reduce = Literal["mean", "top_k_mean", "max"]


def slice_score(
    pixel_map: np.ndarray,
    reduce: Reduce = "mean",
    fg_mask: np.ndarray | None = None,
    *,
    top_k: int | float = 0.05,
) -> float:
    """Reduce a per-pixel uncertainty map ``(H, W)`` to one slice score.

    Parameters
    ----------
    pixel_map
        A map from :func:`pixel_entropy` & co.
    reduce
        ``"mean"``; ``"top_k_mean"``, the mean of the ``top_k`` most uncertain pixels (an int
        count, or a float fraction of the considered pixels, default 5%), which keeps a thin
        uncertain boundary from being averaged away by a large certain background; or ``"max"``.
    fg_mask
        Optional boolean ``(H, W)`` mask: only these pixels count (e.g. predicted foreground or the
        sample region). A mask with no pixel gives 0.0.

    Examples
    --------
    >>> import numpy as np
    >>> m = np.zeros((10, 10)); m[0, :5] = 1.0
    >>> slice_score(m), slice_score(m, "top_k_mean", top_k=5), slice_score(m, "max")
    (0.05, 1.0, 1.0)
    """
    m = np.asarray(pixel_map, dtype=np.float64)
    if m.ndim != 2:
        raise InputError(f"slice_score expects a 2D (H, W) pixel map, got shape {m.shape}")
    if fg_mask is not None:
        mask = np.asarray(fg_mask, dtype=bool)
        if mask.shape != m.shape:
            raise InputError(f"fg_mask shape {mask.shape} differs from the pixel map shape {m.shape}")
        values = m[mask]
    else:
        values = m.ravel()
    if values.size == 0:
        return 0.0
    if reduce == "mean":
        return float(values.mean())
    if reduce == "max":
        return float(values.max())
    if reduce == "top_k_mean":
        if isinstance(top_k, (float, np.floating)) and not isinstance(top_k, bool):
            if not 0.0 < top_k <= 1.0:
                raise InputError(f"top_k as a fraction must be in (0, 1], got {top_k!r}")
            k = max(1, int(np.ceil(top_k * values.size)))
        elif isinstance(top_k, (int, np.integer)) and top_k >= 1:
            k = min(int(top_k), values.size)
        else:
            raise InputError(f"top_k must be a positive int or a fraction in (0, 1], got {top_k!r}")
        return float(np.partition(values, values.size - k)[values.size - k :].mean())
    raise InputError(f"reduce must be 'mean', 'top_k_mean' or 'max', got {reduce!r}")


def foreground_fraction(p: np.ndarray, background: int | None = 0) -> np.ndarray | float:
    """Fraction of pixels whose most probable class is not ``background`` (class index, 0-based).

    ``p`` is ``(C, H, W)`` (returns a float) or ``(N, C, H, W)`` (returns ``(N,)``).
    ``background=None`` counts every pixel as foreground.
    """
    p = _probs(p, "foreground_fraction")
    if background is None:
        frac = np.ones(p.shape[:-3])
    else:
        frac = (p.argmax(axis=-3) != background).mean(axis=(-2, -1))
    return float(frac) if np.ndim(frac) == 0 else frac.astype(np.float32)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (finite entries), computed from a histogram.

    Examples
    --------
    >>> import numpy as np
    >>> v = np.r_[np.zeros(100), np.ones(100)]
    >>> 0.0 < otsu_threshold(v) < 1.0
    True
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise InputError("otsu_threshold needs at least one finite value")
    lo, hi = float(v.min()), float(v.max())
    if lo == hi:
        return lo
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centers)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def intensity_foreground_fraction(slices: np.ndarray, threshold: float | None = None, *, above: bool = True) -> np.ndarray:
    """Cold-start foreground estimate: fraction of pixels above ``threshold`` per slice.

    Parameters
    ----------
    slices
        ``(N, H, W)`` images (or ``(H, W)``).
    threshold
        Intensity threshold; default: Otsu's threshold over all given slices (compute it once over
        the whole volume, or a subsample, and pass it for consistent results across calls).
    above
        Foreground is brighter than the threshold (``False``: darker).

    Returns
    -------
    (N,) float32 in [0, 1]

    Examples
    --------
    >>> import numpy as np
    >>> s = np.zeros((2, 4, 4), np.float32); s[1, :2] = 1.0
    >>> intensity_foreground_fraction(s, threshold=0.5)
    array([0. , 0.5], dtype=float32)
    """
    s = np.asarray(slices)
    if s.ndim == 2:
        s = s[None]
    if s.ndim != 3:
        raise InputError(f"slices must be (N, H, W) or (H, W), got shape {s.shape}")
    t = otsu_threshold(s) if threshold is None else float(threshold)
    fg = s > t if above else s < t
    return fg.mean(axis=(1, 2)).astype(np.float32)
