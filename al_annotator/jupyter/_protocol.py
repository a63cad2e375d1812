"""The messages between the browser view and the kernel (anywidget custom messages).

Every message is a JSON object with a ``type`` plus, for pixels and strokes, binary buffers.
Small state (classes, current slice, tool, suggestions, trainer status) travels as synced
traits instead; see :class:`al_annotator.jupyter.Annotator`.

Browser -> kernel
-----------------
``hello``     ``{client}``: a view was rendered (the kernel sends the orthogonal views and thumbnails).
``view``      ``{client, req, axis, index, r0, r1, c0, c1, step}``: show this region of this slice
              (moves the session there) -> ``slice``.
``stroke``    ``{client, seq, tool, value, axis, index}`` + buffer 0: the stroke's flat indices into
              the slice it was painted on (little-endian uint32, no duplicates needed). ``tool`` is
              ``brush`` (value 1..C), ``eraser`` (value ignored, 0) or ``accept`` (copy the prediction).
              Applied with ``Session.apply_edit`` (on disk when handled) -> ``ack`` + ``labels``.
``fill``      ``{client, seq, axis, index, row, col, value}``: ``Session.flood_fill`` -> ``ack`` + ``labels``.
``undo``, ``redo``                   -> ``labels`` (and the widget moves to the slice the edit was on).
``next``, ``skip {axis, index}``, ``show {axis, index}``, ``annotated {annotated}``, ``refresh {strategy}``
``cursor``    ``{client, z, y, x}``: move the crosshair -> ``ortho``.
``trainer``   ``{action: "start" | "stop"}``
``colour``    ``{value, colour}``: change a class colour.
``ping``      ``{client, t}`` -> ``pong`` ``{client, t}`` (the comm round trip, for benchmarks).

Kernel -> browser
-----------------
``slice``     ``{client, req, axis, index, r0, r1, c0, c1, step, h, w, image: {dtype, qlo, qscale},
              layers, applied, model_version}``; buffers in the order of ``layers``
              (``image`` uint8/uint16, ``labels`` uint8, then ``prediction`` and ``confidence`` uint8
              when a model exists). ``value = qlo + code * qscale``.
``labels``    ``{client, applied, axis, index, r0, ..., step, h, w}`` + the authoritative labels of the
              client's current tile. ``applied`` is the last stroke ``seq`` of that client the kernel
              has handled: the browser re-applies its own later strokes on top, so nothing flickers.
``overlays``  as ``labels`` with ``prediction`` and ``confidence`` (a new model version landed).
``navigate``  ``{axis, index}``: the kernel moved the session (next suggestion, undo elsewhere, ``w.goto``);
              the browser shows that slice (it asks with ``view``).
``ack``       ``{client, seq, ok, edit_seq, n}``; ``error`` ``{message, client?, seq?}``; ``notice`` ``{message}``.
``ortho``     ``{client, cursor, planes: [{axis, index, h, w, step}] * 3, image}`` + buffers
              image z, labels z, image y, labels y, image x, labels x.
``thumbs``    ``{items: [{key, h, w}]}`` + one uint8 buffer per item (window/level applied).
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from ..types import AXES, SliceRef
from ._imaging import MAX_STEP, MAX_TILE_PIXELS, Region

__all__ = ["parse_ref", "parse_region", "parse_indices", "parse_int", "TOOLS", "HEX_COLOUR"]

TOOLS = ("brush", "eraser", "accept")
HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


def parse_int(content: dict[str, Any], key: str, lo: int | None = None, hi: int | None = None) -> int:
    """An integer field, with a message that names it when it is missing or out of range."""
    value = content.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise InputError(f"message field {key!r} must be an integer, got {value!r}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise InputError(f"message field {key!r} = {value} is outside {lo}..{hi}")
    return value


def parse_ref(content: dict[str, Any], shape: tuple[int, int, int]) -> SliceRef:
    """The slice a message is about (``axis``, ``index``), checked against the volume."""
    axis = content.get("axis")
    if axis not in AXES:
        raise InputError(f"message field 'axis' must be one of {list(AXES)}, got {axis!r}")
    n = shape[AXES.index(axis)]
    return SliceRef(axis, parse_int(content, "index", 0, n - 1))


def parse_region(content: dict[str, Any], shape2d: tuple[int, int]) -> Region:
    """A requested region, clipped to the slice; refuses steps and sizes no canvas needs."""
    step = parse_int(content, "step", 1, MAX_STEP)
    region = Region(*(parse_int(content, k) for k in ("r0", "r1", "c0", "c1")), step).clamp(shape2d)
    h, w = region.shape
    if h * w > MAX_TILE_PIXELS:
        raise InputError(f"a {h}x{w} tile is larger than any canvas needs ({MAX_TILE_PIXELS} pixels); raise 'step'")
    return region


def parse_indices(buffers: Sequence[Any], n_pixels: int) -> np.ndarray:
    """The stroke's flat slice indices from buffer 0 (little-endian uint32), sorted and unique."""
    if not buffers:
        raise InputError("a stroke message needs one binary buffer of uint32 pixel indices; it had none")
    raw = memoryview(buffers[0]).cast("B")
    if raw.nbytes == 0 or raw.nbytes % 4:
        raise InputError(f"a stroke buffer must hold whole uint32 indices; got {raw.nbytes} bytes")
    idx = np.frombuffer(raw, dtype="<u4")
    if int(idx.max()) >= n_pixels:
        raise InputError(f"stroke index {int(idx.max())} is outside the slice ({n_pixels} pixels)")
    return np.unique(idx)
