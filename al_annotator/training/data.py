"""Training samples from what experts painted: every slice with labels, on any axis.

Label value 0 (unlabelled) becomes target ``-1`` and is ignored by the loss; class value ``i + 1``
becomes target ``i``. A slice with three strokes is a valid sample; a fully painted slice is a
dense one.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..types import SliceRef

__all__ = ["LabelledSlice", "collect_labelled_slices", "normalise", "split_validation", "CropSampler", "class_weights",
           "section_shift", "choose_input_norm"]


#: ``input_norm="slice"``: every slice is re-centred and re-scaled to this mean and spread (about those
#: of a typical slice after the window mapping), so that a section cut thicker or imaged brighter looks
#: like its neighbours; the spread of a nearly flat slice is floored at :data:`SLICE_STD_FLOOR`.
SLICE_MEAN, SLICE_STD, SLICE_STD_FLOOR = 0.45, 0.2, 0.02
INPUT_NORMS = ("window", "slice")
#: ``input_norm="auto"`` picks ``"slice"`` when :func:`section_shift` is at least this. Measured (window-mapped
#: intensities, every axis, docs/BENCHMARKS.md "bench_defaults"): the ssTEM stack along z 0.19 (0.20 on its central
#: 256^2); every other axis of it, the qim3d micro-CT volumes (bone = the demo volume, cement, shell) and the phantom
#: 0.002-0.033. 0.08 sits between the two groups (a factor of about 2.4 from each).
SECTION_SHIFT_SLICE = 0.08
#: :func:`section_shift` reads at most this many voxels along each axis (a central block) and this many neighbour pairs.
SHIFT_BLOCK, SHIFT_PAIRS = 256, 32


def normalise(image: np.ndarray, window: tuple[float, float], input_norm: str = "window") -> np.ndarray:
    """The network's input, float32: the display window mapped to [0, 1] (clipped to [-1, 2]).

    ``input_norm="slice"`` then standardises each 2D slice (the last two axes of ``image``) on its
    own mean and standard deviation, to mean :data:`SLICE_MEAN` and spread :data:`SLICE_STD`
    (the ssTEM sections of the learning-curve benchmark differ by +-0.5 standard deviations in mean
    brightness; see docs/BENCHMARKS.md).
    """
    if input_norm not in INPUT_NORMS:
        raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")
    lo, hi = window
    out = (np.asarray(image, np.float32) - np.float32(lo)) / np.float32(max(hi - lo, 1e-6))
    out = np.clip(out, -1.0, 2.0, out=out)
    if input_norm == "slice" and out.ndim >= 2:
        mean = out.mean(axis=(-2, -1), keepdims=True, dtype=np.float64)
        std = np.maximum(out.std(axis=(-2, -1), keepdims=True, dtype=np.float64), SLICE_STD_FLOOR)
        out -= mean.astype(np.float32)
        out *= (SLICE_STD / std).astype(np.float32)
        out += np.float32(SLICE_MEAN)
    return out


def slice_statistics(image: Any, window: tuple[float, float]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per axis, the mean and standard deviation of every whole slice of the window-mapped image
    (as :func:`normalise` computes them for ``input_norm="slice"``), in one pass of z slabs: a slice
    predicted in blocks is then standardised as the whole slice was in training, not block by block."""
    shape = tuple(int(n) for n in image.shape)
    s1 = [np.zeros(n, np.float64) for n in shape]
    s2 = [np.zeros(n, np.float64) for n in shape]
    step = max(1, (1 << 24) // max(1, shape[1] * shape[2]))
    for z0 in range(0, shape[0], step):
        x = normalise(np.asarray(image[z0:z0 + step]), window).astype(np.float64)
        for a, other in ((0, (1, 2)), (1, (0, 2)), (2, (0, 1))):
            sl = slice(z0, z0 + x.shape[0]) if a == 0 else slice(None)
            s1[a][sl] += x.sum(axis=other)
            s2[a][sl] += (x * x).sum(axis=other)
    out = {}
    for a in range(3):
        n = np.prod([shape[i] for i in range(3) if i != a])
        mean = s1[a] / n
        out[a] = (mean, np.maximum(np.sqrt(np.maximum(s2[a] / n - mean * mean, 0.0)), SLICE_STD_FLOOR))
    return out


def standardise(stack: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``input_norm="slice"``'s step with given statistics, one ``(mean, std)`` per plane of ``stack`` (N, H, W)."""
    out = (stack - mean.astype(np.float32)[:, None, None]) * (np.float32(SLICE_STD) / std.astype(np.float32)[:, None, None])
    return out + np.float32(SLICE_MEAN)


def section_shift(image: Any, window: tuple[float, float]) -> tuple[float, str]:
    """How much neighbouring slices differ in mean brightness, relative to the spread within a slice.

    For each axis: the median over neighbouring pairs of ``|mean(slice i+1) - mean(slice i)|``, divided by
    the median in-slice standard deviation, on the window-mapped intensities of a central block of at
    most :data:`SHIFT_BLOCK` voxels per axis. Returns ``(the largest of the three, its axis)``.

    Neighbour differences, not the spread of all slice means: a structure that comes and goes along
    an axis (an implant, a bone) moves the mean slowly, while a section cut or imaged differently
    shifts it from one slice to the next. ``image`` is anything numpy-sliceable (a zarr array).
    """
    shape = tuple(int(n) for n in image.shape)
    block = tuple(slice(max(0, (n - SHIFT_BLOCK) // 2), max(0, (n - SHIFT_BLOCK) // 2) + min(n, SHIFT_BLOCK)) for n in shape)
    x = normalise(np.asarray(image[block]), window).astype(np.float64)
    best, best_axis = 0.0, "z"
    for a, name in enumerate("zyx"):
        n = x.shape[a]
        if n < 2:
            continue
        xm = np.moveaxis(x, a, 0)
        idx = np.unique(np.linspace(0, n - 2, min(n - 1, SHIFT_PAIRS)).round().astype(int))
        first, second = xm[idx], xm[idx + 1]
        diffs = np.abs(second.mean(axis=(1, 2)) - first.mean(axis=(1, 2)))
        spread = np.median(np.concatenate([first.std(axis=(1, 2)), second.std(axis=(1, 2))]))
        value = float(np.median(diffs) / max(spread, 1e-6))
        if value > best:
            best, best_axis = value, name
    return best, best_axis


def choose_input_norm(image: Any, window: tuple[float, float]) -> tuple[str, str]:
    """``input_norm="auto"``: ``("slice" | "window", why)`` by :func:`section_shift` against
    :data:`SECTION_SHIFT_SLICE` (serial-section EM: slice; calibrated tomography: window)."""
    shift, axis = section_shift(image, window)
    if shift >= SECTION_SHIFT_SLICE:
        return "slice", (f"input_norm=slice: neighbouring {axis} slices differ in mean brightness by {shift:.3f} of the "
                         f"in-slice spread (>= {SECTION_SHIFT_SLICE}: sections imaged differently)")
    return "window", (f"input_norm=window: neighbouring slices differ in mean brightness by at most {shift:.3f} of the "
                      f"in-slice spread (along {axis}; < {SECTION_SHIFT_SLICE}: intensities consistent across slices)")


@dataclass(frozen=True)
class LabelledSlice:
    ref: SliceRef
    image: np.ndarray  # (H, W) float32, normalised
    target: np.ndarray  # (H, W) int64, -1 = unlabelled
    state: str

    @property
    def n_labelled(self) -> int:
        return int((self.target >= 0).sum())


def collect_labelled_slices(store: Any, input_norm: str = "window") -> list[LabelledSlice]:
    """Every slice the experts worked on (in progress or annotated) that holds labels
    (images normalised with :func:`normalise` and ``input_norm``)."""
    window = store.display_window
    out = []
    for st in store.slice_states():
        if st.state not in ("in_progress", "annotated"):
            continue
        labels = store.read_slice(st.ref, "labels")
        if not labels.any():
            continue
        image = normalise(store.read_slice(st.ref, "image"), window, input_norm)
        out.append(LabelledSlice(st.ref, image, labels.astype(np.int64) - 1, st.state))
    if store.has_imported_labels and not out:
        out.extend(_imported_slices(store, window, input_norm))
    return out


def _imported_slices(store: Any, window, input_norm: str = "window") -> list[LabelledSlice]:
    """Slices of imported labels (a project started in another tool), along z."""
    out = []
    for z in range(store.shape[0]):
        ref = SliceRef("z", z)
        labels = store.read_slice(ref, "labels")
        if labels.any():
            out.append(LabelledSlice(ref, normalise(store.read_slice(ref, "image"), window, input_norm), labels.astype(np.int64) - 1, "imported"))
    return out


def split_validation(samples: Sequence[LabelledSlice], every: int = 5) -> tuple[list[LabelledSlice], list[LabelledSlice]]:
    """Hold out about 1/``every`` of the *annotated* slices (stable: by a hash of the slice), when
    at least ``every`` are annotated; the rest train."""
    annotated = [s for s in samples if s.state == "annotated"]
    if len(annotated) < every:
        return list(samples), []
    held = {s.ref for s in annotated if zlib.crc32(str(s.ref).encode()) % every == 0}
    if not held:
        held = {annotated[-1].ref}
    if len(held) == len(annotated):
        held.pop()
    return [s for s in samples if s.ref not in held], [s for s in samples if s.ref in held]


def class_weights(samples: Sequence[LabelledSlice], n_classes: int) -> np.ndarray:
    """Inverse square-root frequency of labelled voxels, normalised to mean 1 (rare classes count more)."""
    counts = np.zeros(n_classes, np.float64)
    for s in samples:
        t = s.target[s.target >= 0]
        counts += np.bincount(t, minlength=n_classes)[:n_classes]
    present = counts > 0
    w = np.zeros(n_classes, np.float64)
    w[present] = 1.0 / np.sqrt(counts[present])
    if present.any():
        w[present] /= w[present].mean()
    w[~present] = 1.0
    return w.astype(np.float32)


class CropSampler:
    """Draw square crops centred near labelled voxels, with MONAI augmentations.

    Each sample picks a slice (weighted by the square root of its labelled voxel count, so a
    dense slice does not drown the strokes), a labelled voxel in it, and a crop around it with
    random jitter. Slices smaller than the crop are padded (image: reflect, target: -1).
    """

    def __init__(self, samples: Sequence[LabelledSlice], crop: int, seed: int = 0, augment: bool = True) -> None:
        if not samples:
            raise ValueError("no labelled slices to train on")
        self.samples = list(samples)
        # never crop larger than the largest slice (rounded up to 32): padding costs compute for nothing
        largest = max(max(s.image.shape) for s in self.samples)
        self.crop = int(min(crop, -(-largest // 32) * 32))
        self.rng = np.random.default_rng(seed)
        w = np.sqrt(np.array([max(s.n_labelled, 1) for s in self.samples], np.float64))
        self.p = w / w.sum()
        self._where = [np.flatnonzero(s.target.reshape(-1) >= 0) for s in self.samples]
        self.transform = _monai_augment(seed) if augment else None

    def _crop(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.samples[k]
        h, w = s.image.shape
        c = self.crop
        img, tgt = s.image, s.target
        if h < c or w < c:
            ph, pw = max(0, c - h), max(0, c - w)
            mode = "reflect" if ph < h and pw < w else "edge"
            img = np.pad(img, ((0, ph), (0, pw)), mode=mode)
            tgt = np.pad(tgt, ((0, ph), (0, pw)), constant_values=-1)
            h, w = img.shape
        flat = self._where[k][self.rng.integers(len(self._where[k]))]
        cy, cx = divmod(int(flat), s.image.shape[1])
        y0 = int(np.clip(cy - c // 2 + self.rng.integers(-c // 4, c // 4 + 1), 0, h - c))
        x0 = int(np.clip(cx - c // 2 + self.rng.integers(-c // 4, c // 4 + 1), 0, w - c))
        return img[y0 : y0 + c, x0 : x0 + c], tgt[y0 : y0 + c, x0 : x0 + c]

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(images (B, 1, c, c) float32, targets (B, c, c) int64)``."""
        ks = self.rng.choice(len(self.samples), size=size, p=self.p)
        imgs, tgts = [], []
        for k in ks:
            img, tgt = self._crop(int(k))
            if self.transform is not None:
                d = self.transform({"image": img[None].copy(), "label": tgt[None].astype(np.float32)})
                img, tgt = np.asarray(d["image"])[0], np.asarray(d["label"])[0].round().astype(np.int64)
            imgs.append(img)
            tgts.append(tgt)
        return np.stack(imgs)[:, None].astype(np.float32), np.stack(tgts).astype(np.int64)


def _monai_augment(seed: int):
    """Flips, 90-degree rotations, intensity scale/shift and noise (MONAI dictionary transforms keep
    image and label aligned)."""
    from monai.data import set_track_meta
    from monai.transforms import (
        Compose,
        RandFlipd,
        RandGaussianNoised,
        RandRotate90d,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    set_track_meta(False)
    t = Compose(
        [
            RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=0),
            RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=1),
            RandRotate90d(keys=("image", "label"), prob=0.5, max_k=3),
            RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
            RandShiftIntensityd(keys="image", offsets=0.05, prob=0.5),
            RandGaussianNoised(keys="image", prob=0.3, std=0.03),
        ]
    )
    t.set_random_state(seed=seed)
    return t
