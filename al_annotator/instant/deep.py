"""Tier 1's features from the deep tier: a self-trained "convpaint" (issue #11).

Once the network of tier 2 has trained, tier 1's forest also sees the network's own features: the
fused multi-resolution maps of the HRNet's branches (the segmentation head's input, 240 channels
for ``hrnet_w18_small``, at a quarter of the slice's resolution). They are reduced to
:data:`DEFAULT_COMPONENTS` channels by a PCA fitted on the maps of the labelled slices (unsupervised:
the pixels of those maps, not the labels), then upsampled bilinearly to the slice. The reduction is
affine, so projecting at the head's resolution and then upsampling equals upsampling all 240
channels first and projecting (bilinear weights sum to one) at 1/15 of the memory: 16 MB for a
512^2 slice instead of 250 MB.

Convpaint (Hinderling et al.) puts a pretrained network's features into a random forest; here the
network is the project's own, trained on the expert's labels, and nothing is downloaded.

Measured on the EM stack (docs/BENCHMARKS.md, "The served system"): see the benchmark for figures.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..types import SliceRef

__all__ = ["DEFAULT_COMPONENTS", "DeepFeatures", "deep_at", "upsample_bilinear"]

#: Channels tier 1 gets from the network (the PCA's components).
DEFAULT_COMPONENTS = 16
#: At most this many head-resolution pixels fit the PCA (a random subsample of the labelled slices').
PCA_MAX_PIXELS = 50_000


class DeepFeatures:
    """The features of one trained network (one deep version) for tier 1.

    ``model``: a :class:`~al_annotator.models.base.SegmentationModel` in eval mode; ``normalise``:
    the network's input normalisation of a 2D slice (``training.data.normalise`` with the version's
    window and ``input_norm``). Call :meth:`fit` with the labelled slices' images once, then
    :meth:`plane` for any slice: ``(k, H, W)`` float32. Not thread-safe (one caller: tier 1's thread).
    """

    def __init__(self, model: Any, normalise: Callable[[np.ndarray], np.ndarray], *, version: int | None = None,
                 components: int = DEFAULT_COMPONENTS, device: Any = None, seed: int = 0) -> None:
        if components < 1:
            raise ValueError(f"components must be >= 1, got {components!r}")
        self.model = model
        self.normalise = normalise
        self.version = version
        self.components = int(components)
        self.device = device
        self.seed = int(seed)
        self._mean: np.ndarray | None = None
        self._proj: np.ndarray | None = None  # (k, F)

    @property
    def fitted(self) -> bool:
        return self._proj is not None

    def head_features(self, image: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
        """``(F, h, w)`` float32, the network's fused features of one 2D slice at the head's resolution
        (the part of the head's grid that covers the unpadded slice), and the head's stride (HRNet: 4)."""
        import torch

        img = np.asarray(self.normalise(np.asarray(image)), np.float32)
        if img.ndim != 2:
            raise ValueError(f"a 2D slice is needed, got shape {img.shape}")
        x = torch.from_numpy(img[None, None])
        if self.device is not None:
            x = x.to(self.device)
        with torch.no_grad():
            xp = self.model._pad(x)
            feats, _ = self.model._features(xp)
        f = feats[0].float().cpu().numpy()
        stride = (xp.shape[-2] / f.shape[-2], xp.shape[-1] / f.shape[-1])
        h, w = (int(np.ceil(n / s)) + 1 for n, s in zip(img.shape, stride))  # +1: the last pixels interpolate to it
        return np.ascontiguousarray(f[:, :h, :w]), stride

    def fit(self, images: Sequence[np.ndarray]) -> "DeepFeatures":
        """The PCA of the head features of ``images`` (the labelled slices; at most
        :data:`PCA_MAX_PIXELS` of their pixels, seeded)."""
        if not len(images):
            raise ValueError("fitting the deep features needs at least one slice")
        return self.fit_maps([self.head_features(im)[0] for im in images])

    def fit_maps(self, maps: Sequence[np.ndarray]) -> "DeepFeatures":
        """:meth:`fit` from head features already computed (:meth:`head_features`), e.g. one slice at a
        time by a caller that yields between them."""
        if not len(maps):
            raise ValueError("fitting the deep features needs at least one slice")
        X = np.concatenate([m.reshape(m.shape[0], -1).T for m in maps])  # (N, F)
        if X.shape[0] > PCA_MAX_PIXELS:
            X = X[np.random.default_rng(self.seed).choice(X.shape[0], PCA_MAX_PIXELS, replace=False)]
        mean = X.mean(0, dtype=np.float64)
        Xc = X - mean
        # the top components of the covariance (F x F: 240 x 240), largest first
        _, v = np.linalg.eigh(Xc.T @ Xc / max(1, Xc.shape[0] - 1))
        k = min(self.components, v.shape[1])
        self._mean = mean.astype(np.float32)
        self._proj = np.ascontiguousarray(v[:, ::-1][:, :k].T, np.float32)
        return self

    def plane(self, image: np.ndarray) -> np.ndarray:
        """``(k, H, W)`` float32: the reduced network features of one 2D slice at its full resolution."""
        if self._proj is None or self._mean is None:
            raise RuntimeError("DeepFeatures.fit first")
        f, stride = self.head_features(image)
        return self.project(f, stride, np.asarray(image).shape[-2:])

    def project(self, head: np.ndarray, stride: tuple[float, float], size: tuple[int, int]) -> np.ndarray:
        """:meth:`plane` from a slice's head features already computed (:meth:`head_features`: ``head``
        and ``stride``; ``size`` the slice's ``(H, W)``), e.g. those the PCA was fitted on."""
        if self._proj is None or self._mean is None:
            raise RuntimeError("DeepFeatures.fit first")
        F_, h, w = head.shape
        low = (self._proj @ (head.reshape(F_, -1) - self._mean[:, None])).reshape(-1, h, w)
        return upsample_bilinear(low, tuple(size), stride)


def upsample_bilinear(low: np.ndarray, size: tuple[int, int], scale: tuple[float, float]) -> np.ndarray:
    """``(k, h, w)`` -> ``(k, H, W)`` as ``torch.nn.functional.interpolate(..., mode="bilinear",
    align_corners=False)`` of the head's full grid, cropped to ``size`` (``scale`` = the head's stride)."""
    H, W = size
    out = low
    for axis, (n, s) in enumerate(((H, scale[0]), (W, scale[1]))):
        src = (np.arange(n, dtype=np.float64) + 0.5) / s - 0.5
        src = np.clip(src, 0, out.shape[1 + axis] - 1)
        i0 = np.floor(src).astype(np.int64)
        i1 = np.minimum(i0 + 1, out.shape[1 + axis] - 1)
        t = (src - i0).astype(np.float32)
        a, b = np.take(out, i0, axis=1 + axis), np.take(out, i1, axis=1 + axis)
        shp = [1, 1, 1]
        shp[1 + axis] = n
        out = a + (b - a) * t.reshape(shp)
    return np.ascontiguousarray(out, np.float32)


def deep_at(deep: Any, coords: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """``(N, k)``: the deep features (``deep(ref) -> (k, H, W)``) of labelled voxels, each from the
    plane of the slice it was labelled on."""
    out: np.ndarray | None = None
    planes = np.unique(np.stack([axes.astype(np.int64), coords[np.arange(len(coords)), axes.astype(np.int64)]], 1), axis=0)
    for a, i in planes:
        m = (axes == a) & (coords[:, a] == i)
        f = deep(SliceRef("zyx"[a], int(i)))
        if out is None:
            out = np.empty((len(coords), f.shape[0]), np.float32)
        o = [b for b in range(3) if b != a]
        out[m] = f[:, coords[m, o[0]], coords[m, o[1]]].T
    return out if out is not None else np.zeros((0, 0), np.float32)
