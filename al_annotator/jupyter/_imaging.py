"""Pixels for the browser: regions at the shown resolution, quantised for transfer.

What goes over the comm is what the canvas shows, at the resolution it shows it:

* **Region + step.** The browser asks for rows ``r0:r1`` and columns ``c0:c1`` of a slice,
  every ``step``-th pixel (``step`` = 1 when zoomed in, larger for the overview of a big slice).
  Labels, prediction and confidence are *sampled* (pixel ``(i, j)`` of the tile is slice pixel
  ``(r0 + i*step, c0 + j*step)``), so a label the browser paints at a sampled pixel is exactly
  what the kernel sends back. The image is block-averaged over the same ``step x step`` cells
  (striding would alias CT noise into the overview).
* **Raw values, window/level in the browser.** The image goes as ``uint8`` (uint8 volumes) or
  ``uint16`` (everything else; exact for uint16 and int16, a 65536-level quantisation of a wide
  range around the display window for float and 32-bit data), and the browser maps it through a
  lookup table. Dragging window/level then redraws without a kernel round trip;
  ``benchmarks/bench_widget.py`` measures both choices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Quantiser", "Region", "block_mean", "sample", "thumbnail", "fit_step", "window_to_uint8"]

#: Largest tile (pixels) one request may ask for: 4096 x 4096.
MAX_TILE_PIXELS = 4096 * 4096
#: Largest downsampling step.
MAX_STEP = 256


@dataclass(frozen=True, slots=True)
class Region:
    """Rows ``r0:r1``, columns ``c0:c1`` of a slice, sampled every ``step`` pixels."""

    r0: int
    r1: int
    c0: int
    c1: int
    step: int = 1

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the tile: ``ceil(rows / step), ceil(cols / step)``."""
        return (-(-(self.r1 - self.r0) // self.step), -(-(self.c1 - self.c0) // self.step))

    @classmethod
    def full(cls, shape2d: tuple[int, int], step: int = 1) -> "Region":
        return cls(0, int(shape2d[0]), 0, int(shape2d[1]), int(step))

    def clamp(self, shape2d: tuple[int, int]) -> "Region":
        """Clip to the slice; keep ``r0``/``c0`` on the step grid (so tiles of one step line up)."""
        h, w = int(shape2d[0]), int(shape2d[1])
        step = int(min(max(1, self.step), MAX_STEP))
        r0 = min(max(0, int(self.r0)), h - 1) // step * step
        c0 = min(max(0, int(self.c0)), w - 1) // step * step
        r1 = min(max(r0 + 1, int(self.r1)), h)
        c1 = min(max(c0 + 1, int(self.c1)), w)
        return Region(r0, r1, c0, c1, step)

    def to_json(self) -> dict[str, int]:
        h, w = self.shape
        return {"r0": self.r0, "r1": self.r1, "c0": self.c0, "c1": self.c1, "step": self.step, "h": h, "w": w}


def fit_step(shape2d: tuple[int, int], canvas_px: int) -> int:
    """The downsampling step that fits a whole slice into ``canvas_px`` device pixels."""
    return max(1, math.ceil(max(shape2d) / max(1, int(canvas_px))))


def sample(arr2d: np.ndarray, region: Region) -> np.ndarray:
    """Nearest (top-left) sample of each ``step x step`` cell: for labels, prediction, confidence."""
    out = arr2d[region.r0 : region.r1 : region.step, region.c0 : region.c1 : region.step]
    return np.array(out, order="C", copy=True)  # a copy: labels change after they are sent


def block_mean(arr2d: np.ndarray, region: Region) -> np.ndarray:
    """Mean of each ``step x step`` cell (edge cells average what is there), in float32."""
    sub = arr2d[region.r0 : region.r1, region.c0 : region.c1]
    s = region.step
    if s == 1:
        return sub
    h, w = region.shape
    ph, pw = h * s - sub.shape[0], w * s - sub.shape[1]
    sub = sub.astype(np.float32, copy=False)
    if ph or pw:
        sub = np.pad(sub, ((0, ph), (0, pw)), mode="edge")
    return sub.reshape(h, s, w, s).mean(axis=(1, 3), dtype=np.float32)


class Quantiser:
    """How image values travel: ``value = qlo + q * qscale`` with ``q`` uint8 or uint16.

    Parameters
    ----------
    dtype
        The volume's dtype.
    value_range
        The volume's (min, max).
    window
        Its display window; for float and 32/64-bit data the quantised range is this window
        widened by four window widths on each side, intersected with ``value_range`` (so the
        display window always gets more than 7000 levels).

    Examples
    --------
    >>> q = Quantiser(np.dtype("uint16"), (0, 4000), (100, 900))
    >>> q.kind, q.qlo, q.qscale
    ('u16', 0.0, 1.0)
    >>> q.encode(np.array([[5, 70000]], np.int64)).tolist()
    [[5, 65535]]
    """

    def __init__(self, dtype: Any, value_range: tuple[float, float], window: tuple[float, float]) -> None:
        dtype = np.dtype(dtype)
        self.dtype = dtype
        if dtype == np.uint8:
            self.kind, self.qlo, self.qscale, self.qmax = "u8", 0.0, 1.0, 255
        elif dtype == np.uint16:
            self.kind, self.qlo, self.qscale, self.qmax = "u16", 0.0, 1.0, 65535
        elif dtype in (np.int16, np.int8, np.bool_):
            lo = float(np.iinfo(dtype).min) if dtype != np.bool_ else 0.0
            self.kind, self.qlo, self.qscale, self.qmax = "u16", lo, 1.0, 65535
        else:
            vmin, vmax = (float(v) for v in value_range)
            lo, hi = (float(v) for v in window)
            width = max(hi - lo, 1e-12)
            qlo, qhi = max(vmin, lo - 4 * width), min(vmax, hi + 4 * width)
            if not (math.isfinite(qlo) and math.isfinite(qhi)) or qhi <= qlo:
                qlo, qhi = lo - 4 * width, hi + 4 * width
            self.kind, self.qlo, self.qmax = "u16", qlo, 65535
            self.qscale = (qhi - qlo) / 65535.0

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Values (any numeric array, e.g. a block mean) -> contiguous uint8/uint16 codes."""
        out_t = np.uint8 if self.kind == "u8" else np.uint16
        if values.dtype == out_t and self.qlo == 0 and self.qscale == 1:
            return np.ascontiguousarray(values)
        if values.dtype.kind in "iub" and self.qscale == 1:
            v = values.astype(np.int64, copy=False) - int(self.qlo)
            return np.ascontiguousarray(np.clip(v, 0, self.qmax).astype(out_t))
        q = (values.astype(np.float32, copy=False) - np.float32(self.qlo)) / np.float32(self.qscale)
        return np.ascontiguousarray(np.clip(np.rint(q), 0, self.qmax).astype(out_t))

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.kind, "qlo": self.qlo, "qscale": self.qscale}


def window_to_uint8(values: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Window/level in the kernel: ``(v - lo) / (hi - lo)`` scaled to 0..255 (thumbnails)."""
    lo, hi = float(window[0]), float(window[1])
    scale = 255.0 / max(hi - lo, 1e-12)
    return np.clip((values.astype(np.float32, copy=False) - lo) * scale, 0, 255).astype(np.uint8)


def thumbnail(arr2d: np.ndarray, size: int, *, labels: bool = False) -> np.ndarray:
    """A slice shrunk so its longer side is at most ``size`` (block mean; sampled for labels)."""
    region = Region.full(arr2d.shape, fit_step(arr2d.shape, size))
    return sample(arr2d, region) if labels else np.asarray(block_mean(arr2d, region))
