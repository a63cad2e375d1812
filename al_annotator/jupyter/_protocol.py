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
              level, layers, applied, model_version}``; buffers in the order of ``layers``
              (``image`` uint8/uint16, ``labels`` uint8, then ``prediction`` and ``confidence`` uint8
              when a tier serves one). ``value = qlo + code * qscale``. Zoom: the browser asks for
              the ``step`` its zoom needs (``floor(1 / (zoom * devicePixelRatio))``: the coarsest with
              at least one sample per device pixel) and draws the ``h x w`` tile scaled by ``step``
              onto full-resolution image coordinates; strokes always travel as full-resolution
              indices. ``level`` is the store's pyramid level the image was read from: 0 = the full
              image; a large slice (one whose chunk slab is not kept whole, e.g. 2048^2 z) at
              ``step >= 2`` reads level ``floor(log2(step))`` (1:4 -> level 2, 1/16 of the chunks);
              labels, prediction and confidence are always the full-resolution planes, sampled.
``labels``    ``{client, applied, axis, index, r0, ..., step, h, w}`` + the authoritative labels of the
              client's current tile. ``applied`` is the last stroke ``seq`` of that client the kernel
              has handled: the browser re-applies its own later strokes on top, so nothing flickers.
``overlays``  as ``labels`` with ``prediction`` and ``confidence`` (the served prediction changed: a
              tier 1 preview of the plane, a new model version, another tier serving), and ``tier``,
              ``fit`` (``Session.prediction_token``), ``labels_seq`` (the edit-log position a tier 1
              preview was made from) and ``layers`` (``[]``, no buffers: nothing serves any more).
              ``slice`` carries ``tier``, ``fit`` and ``labels_seq`` too.
``navigate``  ``{axis, index}``: the kernel moved the session (next suggestion, undo elsewhere, ``w.goto``);
              the browser shows that slice (it asks with ``view``).
``ack``       ``{client, seq, ok, edit_seq, n}``; ``error`` ``{message, client?, seq?}``; ``notice`` ``{message}``.
``ortho``     ``{client, cursor, planes: [{axis, index, h, w, step}] * 3, image}`` + buffers
              image z, labels z, image y, labels y, image x, labels x.
``thumbs``    ``{items: [{key, h, w}]}`` + one uint8 buffer per item (window/level applied).

Tools
-----
The toolbar is :data:`TOOLS` (name, label, shortcut key, tooltip, whether a drag sends a
``stroke``): the kernel sends it as the synced trait ``tools`` and the browser draws its buttons
and shortcut keys from it, so a tool is named once, here.

Validation
----------
Every numeric field is checked where the message is parsed (:func:`parse_int`,
:func:`parse_number`): an index or a class value must be a finite integer in range (``8.0`` is
8; ``inf``, ``NaN``, ``2.5``, ``"3"``, ``true`` and values beyond 2**53 are refused), flags must be
``true``/``false``. The error reply names the field. ``req`` and ``seq`` are echoed back only when
they are JSON a browser can parse, else as ``null``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from ..types import AXES, SliceRef
from ._imaging import MAX_STEP, MAX_TILE_PIXELS, Region

__all__ = ["parse_ref", "parse_region", "parse_indices", "parse_int", "parse_number", "parse_bool", "parse_optional_str",
           "echo_value", "shown_value", "Tool", "TOOLS", "TOOL_NAMES", "STROKE_TOOLS", "tool_table",
           "HEX_COLOUR", "MAX_SAFE_INT"]


@dataclasses.dataclass(frozen=True, slots=True)
class Tool:
    """A tool of the widget's toolbar.

    ``key`` is its keyboard shortcut (a letter, either case); ``stroke`` says whether a drag with
    it is painted in the browser and sent as a ``stroke`` message (the others send ``fill`` or
    move the view).
    """

    name: str
    label: str
    key: str
    tooltip: str
    stroke: bool


#: The widget's tools, in toolbar order: the one list the kernel checks and the browser draws.
TOOLS: tuple[Tool, ...] = (
    Tool("brush", "Brush", "B", "paint the active class", stroke=True),
    Tool("eraser", "Eraser", "E", "erase labels (0 also picks it)", stroke=True),
    Tool("fill", "Fill", "F", "flood-fill the clicked region with the active class (in the kernel)", stroke=False),
    Tool("accept", "Accept", "A", "copy the prediction into the labels inside the brush", stroke=True),
    Tool("pan", "Pan", "H", "drag to pan; click to move the crosshair", stroke=False),
)
TOOL_NAMES: tuple[str, ...] = tuple(tool.name for tool in TOOLS)
#: The tools a ``stroke`` message may name.
STROKE_TOOLS: tuple[str, ...] = tuple(tool.name for tool in TOOLS if tool.stroke)


def tool_table() -> list[dict[str, Any]]:
    """:data:`TOOLS` as the JSON the browser reads (the ``tools`` trait).

    Examples
    --------
    >>> tool_table()[0]
    {'name': 'brush', 'label': 'Brush', 'key': 'B', 'tooltip': 'paint the active class', 'stroke': True}
    """
    return [dataclasses.asdict(tool) for tool in TOOLS]

HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
#: The largest integer a browser's JSON numbers hold exactly (2**53 - 1): the bound of a field without one.
MAX_SAFE_INT = 2**53 - 1
_MISSING = object()


def shown_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_int(content: dict[str, Any], key: str, lo: int | None = None, hi: int | None = None, *,
              default: Any = _MISSING) -> int:
    """An integer field, with a message that names it when it is missing, not a finite integer
    (``inf``, ``NaN``, ``1.5``, a string) or out of range; ``default`` when the field is absent.

    Examples
    --------
    >>> parse_int({"index": 3.0}, "index", 0, 9)
    3
    >>> parse_int({"index": float("inf")}, "index", 0, 9)
    Traceback (most recent call last):
    ...
    al_annotator.errors.InputError: message field 'index' must be a finite integer, got inf
    """
    if default is not _MISSING and content.get(key) is None:
        return default
    value = content.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        what = "missing" if key not in content else f"got {shown_value(value)}"
        raise InputError(f"message field {key!r} must be an integer, {what}")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise InputError(f"message field {key!r} must be a finite integer, got {shown_value(value)}")
        value = int(value)
    lo_, hi_ = (-MAX_SAFE_INT if lo is None else lo), (MAX_SAFE_INT if hi is None else hi)
    if not lo_ <= value <= hi_:
        if lo is not None and hi is not None:
            raise InputError(f"message field {key!r} = {shown_value(value)} is outside {lo}..{hi}")
        raise InputError(f"message field {key!r} = {shown_value(value)} is outside {lo_}..{hi_}")
    return value


def parse_number(content: dict[str, Any], key: str, *, default: Any = _MISSING) -> float:
    """A finite number field (``default`` when absent or null)."""
    if default is not _MISSING and content.get(key) is None:
        return default
    value = content.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or abs(value) > MAX_SAFE_INT:
        what = "missing" if key not in content else f"got {shown_value(value)}"
        raise InputError(f"message field {key!r} must be a finite number, {what}")
    return value


def parse_bool(content: dict[str, Any], key: str, default: bool) -> bool:
    """A true/false field (``default`` when absent or null); ``"false"`` is not true."""
    value = content.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InputError(f"message field {key!r} must be true or false, got {shown_value(value)}")
    return value


def parse_optional_str(content: dict[str, Any], key: str, max_len: int = 200) -> str | None:
    """A string field or null (an empty string reads as null)."""
    value = content.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise InputError(f"message field {key!r} must be a string of at most {max_len} characters or null, got {shown_value(value)}")
    return value


def echo_value(value: Any) -> Any:
    """A field the kernel sends back as is (``req``, ``seq``): kept when it is a JSON scalar a
    browser can parse, else ``None`` (``NaN`` would make the whole reply unreadable)."""
    if value is None or isinstance(value, (bool, str)):
        return value if not isinstance(value, str) or len(value) <= 200 else None
    if isinstance(value, int):
        return value if abs(value) <= MAX_SAFE_INT else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return None


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
    # r0..c1 beyond the slice are clipped (a view panned past the edge), only non-integers are refused
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
