"""The annotation widget: one anywidget that drives a :class:`~al_annotator.core.Session`.

The browser paints; the kernel stores. A stroke is drawn on the canvas as the mouse moves
(client-side, 1.5-2.5 ms per painted move measured here) and sent to the kernel once, on
mouse-up, as one binary message; the kernel applies it with ``Session.paint`` (on disk when the
message is handled) and sends back the authoritative labels of the tile the browser shows.
A canvas driven from the kernel (ipycanvas) costs a kernel round trip per move, ~40 ms here, which
a painting hand feels; that is why this is an anywidget with plain ES-module JavaScript
(``static/annotator.js``, no build step) and not ipycanvas. The message protocol is in
:mod:`al_annotator.jupyter._protocol`; the pixel transport in :mod:`al_annotator.jupyter._imaging`.

The kernel polls the project (``Session.poll``) on a timer, an asyncio task on the kernel's own
event loop, so cell execution is never blocked and the browser gets only what changed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import os
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import anywidget
import numpy as np
import traitlets as t

from ..core import Session, TrainerStatus
from ..errors import AlAnnotatorError, InputError
from ..store import ProjectStore, create_project
from ..types import AXES, EditAtom, SliceRef
from . import _protocol as P
from ._cache import SlabCache, TileCache
from ._imaging import Quantiser, Region, block_mean, fit_step, sample, thumbnail, window_to_uint8

__all__ = ["Annotator"]

log = logging.getLogger(__name__)
_STATIC = Path(__file__).parent / "static"
#: Orthogonal views and suggestion thumbnails: longest side in pixels.
ORTHO_PX = 160
THUMB_PX = 56
#: Thumbnails are drawn only for slices that read at most this many chunks (or are in memory).
THUMB_MAX_CHUNKS = 256
#: Move what the kernel holds when the first widget opens out of the garbage collector's reach
#: (``gc.freeze()``, once per process). Measured (``benchmarks/bench_widget.py``): the only kernel
#: pause over 50 ms while the trainer ran was a full (generation 2) collection, 205 ms, walking the
#: objects of every module a notebook kernel has imported; after a freeze a full collection walks
#: only what was made since. Set to False before creating a widget to leave the collector alone.
FREEZE_GC = True
_gc_frozen = False


def _freeze_gc() -> None:
    global _gc_frozen
    if _gc_frozen or not FREEZE_GC:
        return
    import gc

    _gc_frozen = True
    gc.collect()  # what is garbage now is collected, not frozen
    gc.freeze()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _json_safe(obj: Any) -> Any:
    """Make a status dict JSON-clean: non-finite floats -> None, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


@dataclass(frozen=True, slots=True)
class _View:
    """What one browser view shows: a region of a slice."""

    ref: SliceRef
    region: Region


class _LRU:
    """A tiny thread-safe LRU (the reader thread fills the image cache too)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._d: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
        return None

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)

    def pop(self, key: Any) -> None:
        with self._lock:
            self._d.pop(key, None)

    def keys(self) -> list:
        with self._lock:
            return list(self._d)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()


class Annotator(anywidget.AnyWidget):
    """Paint labels on slices of a 3D volume and steer active learning, in a notebook.

    Parameters
    ----------
    source
        A project directory, an open :class:`~al_annotator.core.Session` or
        :class:`~al_annotator.store.ProjectStore`, a volume file (creates a project beside it, or
        at ``project``), or an array (creates a project at ``project``; in memory when none is
        given, which keeps nothing and cannot train).
    project
        Where to create the project when ``source`` is a volume.
    volume
        With a new project directory as ``source``: the volume to create it from.
    classes, author, strategy, n_suggestions
        Passed to :class:`~al_annotator.core.Session` (``classes`` only when creating).
    canvas_size
        Side of the main canvas in CSS pixels.
    poll_interval
        Seconds between ``Session.poll`` calls on the kernel's event loop (``None``: no timer;
        call :meth:`poll` yourself).
    trainer_options
        Passed to ``Session.start_trainer`` by the Start button (e.g. ``{"device": "cpu", "steps": 40}``).
    brush_size, tool, active_class, opacity
        Initial tool state (also settable later, e.g. ``w.brush_size = 9``).

    Examples
    --------
    >>> from al_annotator import Annotator, make_phantom          # doctest: +SKIP
    >>> w = Annotator("myproj")                                   # doctest: +SKIP
    >>> w                                                         # doctest: +SKIP
    >>> w.goto("y", 40); w.session.labels().max()                 # doctest: +SKIP
    """

    _esm = _STATIC / "annotator.js"
    _css = _STATIC / "annotator.css"

    # ---- the volume (kernel -> browser)
    shape = t.List(t.Int()).tag(sync=True)
    classes = t.List(t.Dict()).tag(sync=True)
    value_range = t.List(t.Float()).tag(sync=True)
    default_window = t.List(t.Float()).tag(sync=True)
    project_name = t.Unicode("").tag(sync=True)
    persistent = t.Bool(True).tag(sync=True)
    # ---- where the session is (kernel -> browser; the browser asks with a "view" message)
    axis = t.Unicode("z").tag(sync=True)
    index = t.Int(0).tag(sync=True)
    cursor = t.List(t.Int()).tag(sync=True)
    slice_state = t.Unicode("unlabelled").tag(sync=True)
    can_undo = t.Bool(False).tag(sync=True)
    can_redo = t.Bool(False).tag(sync=True)
    # ---- display and tools (both ways)
    window = t.List(t.Float()).tag(sync=True)
    tool = t.Unicode("brush").tag(sync=True)
    tools = t.List(t.Dict(), default_value=P.tool_table()).tag(sync=True)  # the toolbar: _protocol.TOOLS
    active_class = t.Int(1).tag(sync=True)
    brush_size = t.Int(5).tag(sync=True)
    opacity = t.Float(0.5).tag(sync=True)
    show_labels = t.Bool(True).tag(sync=True)
    show_prediction = t.Bool(False).tag(sync=True)
    show_uncertainty = t.Bool(False).tag(sync=True)
    canvas_size = t.Int(512).tag(sync=True)
    # ---- suggestions and training (kernel -> browser)
    suggestions = t.List(t.Dict()).tag(sync=True)
    strategy = t.Unicode("hybrid").tag(sync=True)
    strategies = t.List(t.Unicode()).tag(sync=True)
    #: Re-rank when a new model version lands (the Session's policy; else suggestions turn stale).
    auto_rerank = t.Bool(True).tag(sync=True)
    model_version = t.Int(None, allow_none=True).tag(sync=True)
    trainer = t.Dict().tag(sync=True)
    history = t.List(t.Dict()).tag(sync=True)

    def __init__(
        self,
        source: Any,
        *,
        project: str | os.PathLike | None = None,
        volume: Any = None,
        classes: Any = None,
        author: str | None = None,
        strategy: str = "hybrid",
        n_suggestions: int = 8,
        canvas_size: int = 512,
        poll_interval: float | None = 0.5,
        trainer_options: dict[str, Any] | None = None,
        brush_size: int = 5,
        tool: str = "brush",
        active_class: int = 1,
        opacity: float = 0.5,
    ) -> None:
        self._closed = True  # until the signals are connected: nothing to close
        self.session, self._owns_session = _open_session(source, project=project, volume=volume, classes=classes,
                                                         author=author, strategy=strategy, n_suggestions=n_suggestions)
        s = self.session
        s.auto_rerank = self.auto_rerank
        store = s.store
        self.trainer_options = dict(trainer_options or {})
        self.poll_interval = poll_interval
        self.errors: list[str] = []  # every error shown in the widget, newest last (for scripts and tests)
        info = store.volume_info
        lo, hi = store.display_window
        vmin, vmax = float(info.get("min", lo)), float(info.get("max", hi))
        self._quant = Quantiser(store.dtype, (vmin, vmax), (lo, hi))
        image_arr, label_arr = store.image, store.labels
        self._images = SlabCache(lambda sel: image_arr[sel], store.shape, image_arr.chunks, store.dtype.itemsize)
        self._labels = SlabCache(lambda sel: label_arr[sel], store.shape, label_arr.chunks, 1, budget_bytes=128 << 20)
        # slices whose chunk slab is too large to keep (a 2048^2 z slice): what is shown, for 16 slices at once
        self._tiles = TileCache(lambda sel: image_arr[sel], lambda sel: label_arr[sel], store.shape, image_arr.chunks,
                                self._quant.encode)
        self._edits: collections.deque[tuple[int, Any]] = collections.deque(maxlen=256)  # (epoch, atom or None)
        self._last_index: dict[str, int] = {}
        self._tile_reads: dict[tuple, Future] = {}
        self._pred_tiles: tuple[int, TileCache | None] | None = None  # (model version, its prediction tiles)
        self._tile_lock = threading.Lock()
        self._preds = _LRU(4)
        self.poll_ms: collections.deque[float] = collections.deque(maxlen=5000)  # how long each poll took
        self._thumbs: dict[SliceRef, np.ndarray] = {}
        self._views: dict[str, _View] = {}
        self._applied: dict[str, int] = {}
        self._deferred: dict[str, tuple] = {}
        self._deferred_scheduled: set[str] = set()
        self._executors: dict[str, ThreadPoolExecutor] = {}
        self._poll_task: asyncio.Task | None = None
        self._poll_error: str | None = None
        self._browser_goto = False
        self._labels_epoch = 0  # +1 on every labels change (a read that started before is stale)
        self._ortho_sent: dict[str, tuple[int, int]] = {}
        cur = s.current
        super().__init__(
            shape=list(store.shape),
            classes=self._class_list(),
            value_range=[vmin, vmax],
            default_window=[lo, hi],
            window=[lo, hi],
            project_name=str(store.path.name) if store.path is not None else "(in memory)",
            persistent=store.path is not None,
            axis=cur.axis,
            index=cur.index,
            cursor=[n // 2 for n in store.shape],
            canvas_size=int(canvas_size),
            strategy=s.strategy,
            strategies=_strategy_names(),
            brush_size=int(brush_size),
            tool=tool,
            active_class=int(active_class),
            opacity=float(opacity),
        )
        self.cursor = [cur.index if AXES[i] == cur.axis else c for i, c in enumerate(self.cursor)]
        self.on_msg(self._handle_message)
        self._signals = [
            (s.slice_changed, self._on_slice_changed),
            (s.labels_changed, self._on_labels_changed),
            (s.slice_state_changed, self._on_slice_state),
            (s.suggestions_changed, self._on_suggestions),
            (s.model_version_changed, self._on_model_version),
            (s.trainer_status_changed, self._on_trainer_status),
        ]
        for signal, slot in self._signals:
            signal.connect(slot)
        self._closed = False
        self._update_edit_state()
        self._on_slice_state(store.slice_state(cur))
        self.model_version = s.model_version
        self._refresh_history()
        if store.path is not None:
            self._on_trainer_status(s.trainer_status())
        if s.queue:
            self._on_suggestions(list(s.queue))
        else:
            self._guard(lambda: s.refresh_suggestions())
        _freeze_gc()
        self._start_polling()

    # ================================================================== public API
    def goto(self, axis: str | SliceRef, index: int | None = None) -> SliceRef:
        """Show a slice: ``w.goto("y", 40)`` (the browser follows)."""
        return self.session.goto(axis, index)

    def poll(self) -> dict[str, bool]:
        """Pick up what the trainer and other processes did (the timer calls this)."""
        t0 = time.perf_counter()
        try:
            return self._poll()
        finally:
            self.poll_ms.append((time.perf_counter() - t0) * 1000)

    def _poll(self) -> dict[str, bool]:
        try:
            changed = self.session.poll()  # emits trainer_status_changed on progress and phase too
        except Exception as exc:  # noqa: BLE001 - a poll failure is shown, never raised on the timer
            msg = f"could not read the project: {_describe(exc)}"
            if msg != self._poll_error:
                self._poll_error = msg
                self._report(msg, exc)
            return {}
        self._poll_error = None
        return changed

    def close(self) -> None:
        """Stop the timer, disconnect from the session (and close it if this widget opened it)."""
        if getattr(self, "_closed", True):  # closed already, or __init__ failed before there was anything to close
            return
        self._closed = True
        if self._poll_task is not None:
            self._poll_task.cancel()
        for signal, slot in self._signals:
            try:
                signal.disconnect(slot)
            except Exception:  # noqa: BLE001
                pass
        for executor in self._executors.values():
            executor.shutdown(wait=False)
        if self._owns_session:
            self.session.close()
        super().close()

    # ================================================================== messages
    def _handle_message(self, _widget: Any, content: Any, buffers: list[Any]) -> None:
        if not isinstance(content, dict) or "type" not in content:
            self._report(f"the widget got a message it cannot read: {str(content)[:100]!r}")
            return
        kind = content["type"]
        handler = getattr(self, f"_msg_{kind}", None) if isinstance(kind, str) else None
        client = content.get("client")
        client = client if isinstance(client, str) and len(client) <= 200 else str(P.echo_value(client) or "")
        if handler is None:
            self._report(f"unknown widget message type {str(kind)[:60]!r}", client=client)
            return
        # what is sent back as is must stay valid JSON (a NaN ``req`` would make the reply unreadable)
        content = dict(content, client=client, **{k: P.echo_value(content[k]) for k in ("req", "seq") if k in content})
        try:
            handler(client, content, buffers or [])
        except Exception as exc:  # noqa: BLE001 - every failure is shown in the widget
            self._report(_describe(exc), exc, client=client, seq=content.get("seq"), req=content.get("req"))
            if kind in ("stroke", "fill"):
                try:  # the stroke is done with (not stored); only a valid seq moves what the browser drops
                    self._applied[client] = max(self._applied.get(client, 0), P.parse_int(content, "seq", 0))
                except InputError:
                    pass
                self.send({"type": "ack", "client": client, "seq": content.get("seq"), "ok": False})
                view = self._views.get(client)
                if view is not None:
                    self._send_labels(client, view)  # the browser drops its optimistic paint

    def _msg_hello(self, client: str, content: dict, buffers: list) -> None:
        if len(self._views) > 16:  # views of closed notebook tabs
            self._views.pop(next(iter(self._views)))
        self._schedule_ortho(delay=0.0, full=True)
        self._schedule_thumbs(resend=True)

    def _msg_ping(self, client: str, content: dict, buffers: list) -> None:
        t, te = P.parse_number(content, "t", default=None), P.parse_number(content, "te", default=None)
        self.send({"type": "pong", "client": client, "t": t, "te": te, "tk": time.time() * 1000})

    def _msg_view(self, client: str, content: dict, buffers: list) -> None:
        ref = P.parse_ref(content, self.session.shape)
        region = P.parse_region(content, ref.shape_in(self.session.shape))
        self._views[client] = _View(ref, region)
        if ref != self.session.current:
            self._browser_goto = True  # the browser asked: no "navigate" back to it
            try:
                self.session.goto(ref)
            finally:
                self._browser_goto = False
        req = content.get("req")
        if self._tiled(ref, region):
            self._view_tiled(client, req, ref, region)
            return
        if _running_loop() is None or (ref in self._images and ref in self._labels):
            self._send_slice(client, req, ref, region)
            return
        # not in memory: read off the event loop (a 2048^2 z slice takes ~0.3-1 s), then send
        epoch = self._labels_epoch

        def compute() -> tuple:
            self._images.slice(ref)
            self._prediction_of(ref)
            key = self._labels.key(ref)
            return key, (None if ref in self._labels else self._labels.read_slab(key))

        def deliver(result: tuple) -> None:
            key, slab = result
            if slab is not None and epoch == self._labels_epoch:
                self._labels.install(key, slab)
            view = self._views.get(client)
            if view is not None and view.ref == ref:  # else a newer request is on its way
                self._send_slice(client, req, view.ref, view.region)

        self._defer(f"view:{client}", compute, deliver, delay=0.0, pool="view",
                    on_error=lambda exc: self._report(_describe(exc), exc, client=client, req=req))

    # ---- large slices: served from the TileCache (what is shown, 16 slices at a time)
    def _tiled(self, ref: SliceRef, region: Region) -> bool:
        """Whether this view is served from the tile cache: its chunk slab is too large to keep whole."""
        return self._images.too_large(ref) and self._tiles.nbytes(self._tiles.key(ref, region)) * 2 <= self._tiles.budget_bytes

    def _view_tiled(self, client: str, req: Any, ref: SliceRef, region: Region) -> None:
        last = self._last_index.get(client)
        self._last_index[client] = ref.index
        if self._tiles.has(ref, region) and (self._prediction_tiled(ref, region) or _running_loop() is None):
            self._send_slice(client, req, ref, region)
        else:
            self._read_tiles(ref, region, f"view:{client}", "view", client=client, req=req)
        # prefetch the next slices in the direction of travel (stepping with the arrow keys)
        if last is not None and last != ref.index and _running_loop() is not None:
            ahead = ref.index + (self._tiles.depth // 2 if ref.index > last else -(self._tiles.depth // 2))
            n = self.session.shape[ref.axis_number]
            if 0 <= ahead < n:
                nxt = SliceRef(ref.axis, ahead)
                if not self._tiles.has(nxt, region):
                    self._read_tiles(nxt, region, "prefetch", "prefetch", delay=0.1)

    def _read_tiles(self, ref: SliceRef, region: Region, key: str, pool: str, *, client: str | None = None, req: Any = None,
                    delay: float = 0.0) -> None:
        """Read the tile-cache entry of ``ref`` off the event loop; then send the view (if ``client``)."""
        tiles = self._tiles
        entry = tiles.key(ref, region)

        def compute() -> tuple:
            got = self._read_tile_entry(entry) if not tiles.has(ref, region) else None
            preds = self._prediction_tiles()
            pred = None
            if preds is not None and not preds.has(ref, region):
                pentry = preds.key(ref, region)
                pred = (preds, pentry, preds.read(pentry))
            return got, pred

        def deliver(result: tuple) -> None:
            got, pred = result
            if got is not None:
                self._install_tiles(entry, *got)
            if pred is not None:
                pred[0].install(pred[1], *pred[2])
            if client is None:
                return
            view = self._views.get(client)
            if view is not None and view.ref == ref:  # else a newer request is on its way
                self._send_slice(client, req, view.ref, view.region)

        on_error = None if client is None else (lambda exc: self._report(_describe(exc), exc, client=client, req=req))
        self._defer(key, compute, deliver, delay=delay, pool=pool, on_error=on_error)

    def _read_tile_entry(self, entry: tuple) -> tuple:
        """``(epoch, codes, labels)`` of a tile-cache entry (reader threads); a read of the same entry
        already running (a prefetch) is waited for, not repeated."""
        with self._tile_lock:
            future = self._tile_reads.get(entry)
            owner = future is None
            if owner:
                future = self._tile_reads[entry] = Future()
        if not owner:
            return future.result()
        try:
            epoch = self._labels_epoch  # every edit up to this one is on disk: later ones are replayed on install
            future.set_result((epoch, *self._tiles.read(entry, image=not self._tiles.image_cached(entry))))
        except BaseException as exc:
            future.set_exception(exc)
        finally:
            with self._tile_lock:
                self._tile_reads.pop(entry, None)
        return future.result()

    def _install_tiles(self, entry: tuple, epoch: int, codes: np.ndarray | None, labels: np.ndarray) -> None:
        """Keep a tile-cache entry read in the background, with the edits made since its read began."""
        tiles = self._tiles
        replay = [a for e, a in self._edits if e > epoch]
        if epoch != self._labels_epoch and (len(replay) < self._labels_epoch - epoch or any(a is None for a in replay)):
            labels = None  # edits came in that cannot be replayed on what was read: read again when needed
        tiles.install(entry, codes, labels)
        if labels is not None:
            for atom in replay:  # edits made while this was read (setting values is idempotent)
                tiles.apply(atom.slice_ref, atom.indices, atom.new_values)

    def _prediction_tiles(self) -> TileCache | None:
        """The current model's prediction (as labels) and confidence (as image), tiled; None before a model."""
        version = self.session.model_version
        if version is None:
            return None
        if self._pred_tiles is None or self._pred_tiles[0] != version:
            root, cache = self.session.store.root, None
            try:
                pred, conf = root[f"models/v{int(version):04d}/prediction"], root[f"models/v{int(version):04d}/confidence"]
            except KeyError:
                pass
            else:
                cache = TileCache(lambda sel: conf[sel], lambda sel: pred[sel], self.session.shape, pred.chunks,
                                  lambda v: v, budget_bytes=96 << 20, sample_image=True)
            self._pred_tiles = (version, cache)
        return self._pred_tiles[1]

    def _load_prediction(self, ref: SliceRef, region: Region) -> None:
        """Read the prediction a view shows into memory (reader threads; a model version never changes)."""
        preds = self._prediction_tiles() if self._tiled(ref, region) else None
        if preds is None:
            self._prediction_of(ref)
        elif not preds.has(ref, region):
            key = preds.key(ref, region)
            preds.install(key, *preds.read(key))

    def _prediction_tiled(self, ref: SliceRef, region: Region) -> bool:
        """Whether the prediction of a tiled view is in memory (or there is none)."""
        if self.session.model_version is None:
            return True
        preds = self._prediction_tiles()
        return preds is not None and preds.has(ref, region)

    def _msg_stroke(self, client: str, content: dict, buffers: list) -> None:
        seq = P.parse_int(content, "seq", 0)
        ref = P.parse_ref(content, self.session.shape)
        tool = content.get("tool")
        if tool not in P.STROKE_TOOLS:
            raise InputError(f"unknown tool {tool!r}; the tools are {list(P.STROKE_TOOLS)}")
        h, w = ref.shape_in(self.session.shape)
        value = 0 if tool != "brush" else self._class_value(content)
        idx = P.parse_indices(buffers, h * w)
        self._applied[client] = max(self._applied.get(client, 0), seq)
        if tool == "accept":
            atom = self.session.accept_prediction(idx, ref=ref)
        else:
            atom = self.session.paint(idx, value, ref=ref, tool=tool)
        self.send({"type": "ack", "client": client, "seq": seq, "ok": True, "edit_seq": atom.seq, "n": atom.n})

    def _msg_fill(self, client: str, content: dict, buffers: list) -> None:
        seq = P.parse_int(content, "seq", 0)
        ref = P.parse_ref(content, self.session.shape)
        h, w = ref.shape_in(self.session.shape)
        row, col = P.parse_int(content, "row", 0, h - 1), P.parse_int(content, "col", 0, w - 1)
        value = self._class_value(content, allow_zero=True)
        self._applied[client] = max(self._applied.get(client, 0), seq)
        atom = self.session.flood_fill(row, col, value, ref=ref)
        self.send({"type": "ack", "client": client, "seq": seq, "ok": True, "edit_seq": atom.seq, "n": atom.n})

    def _msg_undo(self, client: str, content: dict, buffers: list) -> None:
        self._undo_redo(self.session.undo, "undo")

    def _msg_redo(self, client: str, content: dict, buffers: list) -> None:
        self._undo_redo(self.session.redo, "redo")

    def _undo_redo(self, fn: Callable[[], EditAtom | None], what: str) -> None:
        atom = fn()
        self._update_edit_state()
        if atom is None:
            self._notice(f"nothing to {what}")
        elif atom.slice_ref != self.session.current:
            self.session.goto(atom.slice_ref)
            self._notice(f"{what}: the edit was on {atom.slice_ref}; showing it")

    def _msg_next(self, client: str, content: dict, buffers: list) -> None:
        if self.session.next_suggestion() is None:
            self._notice("no suggestion left: press Refresh (or train a model for better ones)")

    def _msg_show(self, client: str, content: dict, buffers: list) -> None:
        self.session.goto(P.parse_ref(content, self.session.shape))

    def _msg_skip(self, client: str, content: dict, buffers: list) -> None:
        ref = P.parse_ref(content, self.session.shape) if "axis" in content else self.session.current
        then_next = P.parse_bool(content, "then_next", False)
        self.session.skip(ref)
        if then_next and self.session.next_suggestion() is None:
            self._notice("no suggestion left: press Refresh (or train a model for better ones)")

    def _msg_annotated(self, client: str, content: dict, buffers: list) -> None:
        annotated = P.parse_bool(content, "annotated", True)
        self.session.mark_annotated(self.session.current, annotated)
        if annotated:
            self.session.refresh_suggestions()

    def _msg_refresh(self, client: str, content: dict, buffers: list) -> None:
        strategy = P.parse_optional_str(content, "strategy")
        self.session.refresh_suggestions(strategy)
        self.strategy = self.session.strategy

    def _msg_cursor(self, client: str, content: dict, buffers: list) -> None:
        shape = self.session.shape
        self.cursor = [P.parse_int(content, a, 0, n - 1) for a, n in zip(AXES, shape)]
        self._schedule_ortho()

    def _msg_trainer(self, client: str, content: dict, buffers: list) -> None:
        action = content.get("action")
        if action == "start":
            self.session.start_trainer(**self.trainer_options)
            self._notice("trainer started: it trains a round whenever you mark a slice annotated")
        elif action == "stop":
            self.session.stop_trainer(timeout=0.0)
            self._notice("trainer asked to stop (it finishes its current step)")
        else:
            raise InputError(f"trainer action must be 'start' or 'stop', got {action!r}")
        self.poll()

    def _msg_colour(self, client: str, content: dict, buffers: list) -> None:
        value = self._class_value(content)
        colour = content.get("colour")
        if not isinstance(colour, str) or not P.HEX_COLOUR.match(colour):
            raise InputError(f"a colour must be '#rrggbb', got {colour!r}")
        setter = getattr(self.session, "set_class_colour", None)
        if setter is not None:  # persisted in project.json when the session can
            setter(value, colour)
        classes = [dict(c) for c in self.classes]
        classes[value - 1]["colour"] = colour.lower()
        self.classes = classes

    # ================================================================== sending pixels
    def _send_slice(self, client: str, req: Any, ref: SliceRef, region: Region) -> None:
        t0 = time.perf_counter()
        tile = self._tiles.get(ref, region) if self._tiled(ref, region) else None
        if tile is not None:
            image, labels = tile
        else:
            image, labels = self._quant.encode(block_mean(self._image(ref), region)), sample(self._labels_of(ref), region)
        layers, bufs = ["image", "labels"], [image, labels]
        ptile = self._prediction_tile(ref, region) if tile is not None else None
        if ptile is not None:
            layers += ["prediction", "confidence"]
            bufs += list(ptile)
        else:
            pred = self._prediction_of(ref)
            if pred is not None:
                layers += ["prediction", "confidence"]
                bufs += [sample(pred[0], region), sample(pred[1], region)]
        content = {"type": "slice", "client": client, "req": req, "axis": ref.axis, "index": ref.index,
                   **region.to_json(), "image": self._quant.to_json(), "layers": layers,
                   "applied": self._applied.get(client, 0), "model_version": self.session.model_version,
                   "kernel_ms": round((time.perf_counter() - t0) * 1000, 2)}
        self.send(content, buffers=[memoryview(b) for b in bufs])

    def _send_labels(self, client: str, view: _View) -> None:
        labels = self._tiles.get_labels(view.ref, view.region) if self._tiled(view.ref, view.region) else None
        if labels is None:
            labels = sample(self._labels_of(view.ref), view.region)
        self.send({"type": "labels", "client": client, "applied": self._applied.get(client, 0),
                   "axis": view.ref.axis, "index": view.ref.index, **view.region.to_json()},
                  buffers=[memoryview(labels)])

    def _prediction_tile(self, ref: SliceRef, region: Region) -> tuple[np.ndarray, np.ndarray] | None:
        """``(prediction, confidence)`` of a tiled view from memory, or None."""
        preds = self._prediction_tiles() if self._tiled(ref, region) else None
        got = preds.get(ref, region) if preds is not None else None
        return None if got is None else (got[1], got[0])

    def _send_overlays(self, client: str, view: _View) -> None:
        ptile = self._prediction_tile(view.ref, view.region)
        if ptile is None:
            pred = self._prediction_of(view.ref)
            if pred is None:
                return
            ptile = (sample(pred[0], view.region), sample(pred[1], view.region))
        self.send({"type": "overlays", "client": client, "axis": view.ref.axis, "index": view.ref.index,
                   **view.region.to_json(), "model_version": self.session.model_version},
                  buffers=[memoryview(ptile[0]), memoryview(ptile[1])])

    def _image(self, ref: SliceRef) -> np.ndarray:
        """The image of a slice (from a cached chunk slab; any thread)."""
        return self._images.slice(ref)

    def _labels_of(self, ref: SliceRef) -> np.ndarray:
        """The labels of a slice, equal to the store (event-loop thread only: it may install a slab)."""
        return self._labels.slice(ref)

    def _labels_readonly(self, ref: SliceRef) -> np.ndarray:
        """The labels of a slice from any thread: from the cache, else read (not installed)."""
        lab = self._labels.cached(ref)
        return lab if lab is not None else self.session.store.read_slice(ref, "labels")

    def _prediction_of(self, ref: SliceRef) -> tuple[np.ndarray, np.ndarray] | None:
        version = self.session.model_version
        if version is None:
            return None
        key = (ref, version)
        got = self._preds.get(key)
        if got is None:
            pred = self.session.prediction(ref)
            conf = self.session.confidence(ref)
            if pred is None or conf is None:
                return None
            got = (np.ascontiguousarray(pred, dtype=np.uint8), np.rint(conf * 255).astype(np.uint8))
            self._preds.put(key, got)
        return got

    # ================================================================== session signals
    def _on_slice_changed(self, ref: SliceRef) -> None:
        cursor = list(self.cursor)
        cursor[ref.axis_number] = ref.index
        with self.hold_sync():
            self.axis, self.index = ref.axis, ref.index
            self.cursor = cursor
            self.slice_state = self.session.store.slice_state(ref).state
        if not self._browser_goto:  # moved by the kernel (next suggestion, undo, w.goto): the browser follows
            self.send({"type": "navigate", "axis": ref.axis, "index": ref.index})
        self._schedule_ortho()

    def _on_labels_changed(self, payload: Any) -> None:
        atom = payload if isinstance(payload, EditAtom) else None
        self._labels_epoch += 1
        self._edits.append((self._labels_epoch, atom))
        if atom is not None:
            self._labels.apply(atom.slice_ref, atom.indices, atom.new_values)
            self._tiles.apply(atom.slice_ref, atom.indices, atom.new_values)
        else:  # edits by another process: which voxels is unknown here
            self._labels.clear()
            self._tiles.clear_labels()
        self._update_edit_state()
        for client, view in list(self._views.items()):
            if atom is None or _touches(atom, view.ref, self.session.shape):
                self._send_labels(client, view)
        self._schedule_ortho(delay=0.3)

    def _on_slice_state(self, state: Any) -> None:
        if state.ref == self.session.current:
            self.slice_state = state.state
        if any(s.get("axis") == state.ref.axis and s.get("index") == state.ref.index for s in self.suggestions):
            self._on_suggestions(list(self.session.queue))

    def _on_suggestions(self, items: list) -> None:
        store = self.session.store
        rows = []
        for item in items:
            row = _json_safe(item.to_json())
            row["key"] = f"{item.ref.axis}:{item.ref.index}"
            row["state"] = store.slice_state(item.ref).state
            rows.append(row)
        self.suggestions = rows
        self._schedule_thumbs()

    def _on_model_version(self, current: dict) -> None:
        self.model_version = self.session.model_version
        self._preds.clear()
        self._refresh_history()
        views = list(self._views.items())
        # the new prediction is read off the event loop (a 2048^2 slice: two reads of 1024 chunks)
        self._defer("overlays", lambda: [self._load_prediction(view.ref, view.region) for _, view in views],
                    lambda _: [self._send_overlays(client, view) for client, view in views if self._views.get(client) == view],
                    delay=0.0, pool="view")

    @t.observe("auto_rerank")
    def _auto_rerank_changed(self, change: dict) -> None:
        session = getattr(self, "session", None)
        if session is not None:
            session.auto_rerank = bool(change["new"])

    def _on_trainer_status(self, status: TrainerStatus) -> None:
        self.trainer = _json_safe(status.to_json())

    # ================================================================== helpers
    def _class_list(self) -> list[dict[str, Any]]:
        cfg = self.session.store.config
        return [{"value": i + 1, "name": n, "colour": c} for i, (n, c) in enumerate(zip(cfg.classes, cfg.colours))]

    def _class_value(self, content: dict, allow_zero: bool = False) -> int:
        n = self.session.store.config.n_classes
        try:
            return P.parse_int(content, "value", 0 if allow_zero else 1, n)
        except InputError:
            names = ", ".join(f"{i + 1}={c}" for i, c in enumerate(self.session.store.config.classes))
            raise InputError(f"message field 'value': class value {P.shown_value(content.get('value'))} is not a class of this "
                             f"project ({'0=unlabelled, ' if allow_zero else ''}{names})") from None

    def _update_edit_state(self) -> None:
        store = self.session.store
        with self.hold_sync():
            self.can_undo = store.can_undo(self.session.author)
            self.can_redo = store.can_redo(self.session.author)

    def _refresh_history(self) -> None:
        if self.session.store.path is None:
            return
        from ..store.models import list_model_versions

        rows = []
        for v in list_model_versions(self.session.store):
            m = v.get("metrics", {})
            rows.append({"version": int(v["version"]), "loss": m.get("loss"), "val_dice": m.get("val_dice"),
                         "round_seconds": m.get("round_seconds"), "labelled_voxels": m.get("labelled_voxels")})
        self.history = _json_safe(rows)

    def _notice(self, message: str) -> None:
        self.send({"type": "notice", "message": message})

    def _report(self, message: str, exc: BaseException | None = None, *, client: str | None = None, seq: Any = None,
                req: Any = None) -> None:
        """Show an error in the widget (and keep it in ``self.errors``)."""
        if exc is not None and not isinstance(exc, (AlAnnotatorError, IndexError, ValueError, KeyError)):
            log.error("al_annotator widget: %s", message, exc_info=exc)
        self.errors.append(message)
        del self.errors[:-50]
        self.send({"type": "error", "message": message, "client": client, "seq": seq, "req": req})

    def _guard(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001
            self._report(_describe(exc), exc)
            return None

    # ================================================================== timers and background reads
    def _start_polling(self) -> None:
        loop = _running_loop()
        if loop is None or self.poll_interval is None:
            return

        async def run() -> None:
            while not self._closed:
                await asyncio.sleep(self.poll_interval)
                self.poll()

        self._poll_task = loop.create_task(run())

    def _defer(self, key: str, compute: Callable[[], Any], deliver: Callable[[Any], None], delay: float = 0.05,
               *, pool: str = "background", on_error: Callable[[BaseException], None] | None = None) -> None:
        """Run ``compute`` (reads only) off the kernel's event loop, ``deliver`` its result on it.

        Coalesced by ``key``: a request queued behind a running one replaces the queued one. With
        no running loop (scripts, tests) both run at once. ``pool`` "view" has a reader thread of its
        own, so a slice the user asked for never waits behind thumbnails.
        """
        loop = _running_loop()
        if loop is None:
            try:
                result = compute()
            except Exception as exc:  # noqa: BLE001
                if on_error is None:
                    raise
                on_error(exc)
                return
            deliver(result)
            return
        self._deferred[key] = (compute, deliver, on_error)
        if key in self._deferred_scheduled:
            return
        self._deferred_scheduled.add(key)
        if pool not in self._executors:
            self._executors[pool] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"al-annotator-{pool}")
        executor = self._executors[pool]

        async def run() -> None:
            await asyncio.sleep(delay)
            self._deferred_scheduled.discard(key)
            job = self._deferred.pop(key, None)
            if job is None or self._closed:
                return
            try:
                result = await loop.run_in_executor(executor, job[0])
            except Exception as exc:  # noqa: BLE001
                if job[2] is not None:
                    job[2](exc)
                else:
                    self._report(_describe(exc), exc)
                return
            if not self._closed:
                job[1](result)

        loop.create_task(run())

    def _schedule_ortho(self, delay: float = 0.15, full: bool = False) -> None:
        """Send the orthogonal planes through the crosshair that changed since last sent (coalesced)."""
        if full:
            self._ortho_sent.clear()
        quant = self._quant

        def compute() -> tuple:
            cursor, epoch = tuple(self.cursor), self._labels_epoch
            planes, bufs, installs = [], [], []
            for axis, index in zip(AXES, cursor):
                if self._ortho_sent.get(axis) == (index, epoch):
                    continue
                ref = SliceRef(axis, index)
                shape2d = ref.shape_in(self.session.shape)
                region = Region.full(shape2d, fit_step(shape2d, ORTHO_PX))
                # a large slice: from the tile cache entry the main view uses (read once for both,
                # 16 slices at a time), subsampled to the orthogonal view's size
                main = Region.full(shape2d, fit_step(shape2d, self.canvas_size))
                if self._tiled(ref, main):
                    tile = self._tiles.get(ref, main)
                    if tile is None:
                        entry = self._tiles.key(ref, main)
                        got = self._read_tile_entry(entry)  # waits for the main view's read of it, if running
                        installs.append((entry, got))
                        d = ref.index - entry[1]
                        codes = got[1][d] if got[1] is not None else self._tiles.image_tile(ref, main)
                        tile = (codes, got[2][d])
                    if tile[0] is not None:
                        k = -(-region.step // main.step)
                        sub = Region.full(shape2d, main.step * k)
                        planes.append({"axis": axis, "index": index, **sub.to_json()})
                        bufs += [np.ascontiguousarray(tile[0][::k, ::k]), np.ascontiguousarray(tile[1][::k, ::k])]
                        continue
                img = self._image(ref)
                lab = self._labels.cached(ref)
                if lab is None:  # read here, installed on the loop if no edit came in between
                    key = self._labels.key(ref)
                    slab = self._labels.read_slab(key)
                    installs.append((key, slab))
                    lab = np.take(slab, ref.index - key[1], axis=key[0])
                planes.append({"axis": axis, "index": index, **region.to_json()})
                bufs += [quant.encode(block_mean(img, region)), sample(lab, region)]
            return cursor, epoch, planes, bufs, installs

        def deliver(result: tuple) -> None:
            cursor, epoch, planes, bufs, installs = result
            for key, slab in installs:
                if len(key) > 3:  # a tile-cache entry (epoch, codes, labels): edits since are replayed
                    self._install_tiles(key, *slab)
                elif epoch == self._labels_epoch:
                    self._labels.install(key, slab)
            for plane in planes:
                self._ortho_sent[plane["axis"]] = (plane["index"], epoch)
            self.send({"type": "ortho", "cursor": list(cursor), "planes": planes, "image": quant.to_json()},
                      buffers=[memoryview(b) for b in bufs])

        self._defer("ortho", compute, deliver, delay)

    def _schedule_thumbs(self, resend: bool = False) -> None:
        store = self.session.store
        refs = [SliceRef(s["axis"], s["index"]) for s in self.suggestions]
        # a slice that touches many chunks (a z slice of a 2048^2 volume: 1024) is not read for a thumbnail
        missing = [r for r in refs if r not in self._thumbs and (r in self._images or _chunks_in(r, store) <= THUMB_MAX_CHUNKS)]
        if not missing and not resend:
            return
        window = tuple(self.window)

        def compute() -> dict[SliceRef, np.ndarray]:
            def image(ref: SliceRef) -> np.ndarray:  # no caching: thumbnails would evict the slabs in view
                cached = self._images.cached(ref)
                return cached if cached is not None else store.read_slice(ref, "image")

            return {r: window_to_uint8(thumbnail(image(r), THUMB_PX), window) for r in missing}

        def deliver(new: dict[SliceRef, np.ndarray]) -> None:
            self._thumbs.update(new)
            keep = {SliceRef(s["axis"], s["index"]) for s in self.suggestions}
            items, bufs = [], []
            for ref in list(self._thumbs):
                if ref not in keep and len(self._thumbs) > 64:
                    del self._thumbs[ref]
                elif ref in keep:
                    th = np.ascontiguousarray(self._thumbs[ref])
                    items.append({"key": f"{ref.axis}:{ref.index}", "h": th.shape[0], "w": th.shape[1]})
                    bufs.append(memoryview(th))
            self.send({"type": "thumbs", "items": items}, buffers=bufs)

        self._defer("thumbs", compute, deliver)

    # ================================================================== trait validation
    @t.validate("tool")
    def _valid_tool(self, proposal: Any) -> str:
        value = proposal["value"]
        return value if value in P.TOOL_NAMES else "brush"

    @t.validate("brush_size")
    def _valid_brush(self, proposal: Any) -> int:
        return int(min(max(1, proposal["value"]), 512))

    @t.validate("opacity")
    def _valid_opacity(self, proposal: Any) -> float:
        value = float(proposal["value"])
        return min(max(0.0, value), 1.0) if math.isfinite(value) else 0.5

    @t.validate("active_class")
    def _valid_class(self, proposal: Any) -> int:
        n = len(self.classes) or self.session.store.config.n_classes
        return int(min(max(1, proposal["value"]), n))

    @t.validate("window")
    def _valid_window(self, proposal: Any) -> list[float]:
        value = list(proposal["value"])
        if len(value) != 2 or not all(math.isfinite(v) for v in value) or value[1] <= value[0]:
            return list(self.default_window) or [0.0, 1.0]
        return value


def _chunks_in(ref: SliceRef, store: Any) -> int:
    """How many chunks a read of slice ``ref`` touches."""
    n = 1
    for axis, (size, chunk) in enumerate(zip(store.shape, store.image.chunks)):
        if axis != ref.axis_number:
            n *= -(-size // chunk)
    return n


def _touches(atom: EditAtom, ref: SliceRef, shape: tuple[int, int, int]) -> bool:
    """Whether an edit changed any voxel of slice ``ref``."""
    if atom.slice_ref.axis == ref.axis:
        return atom.slice_ref.index == ref.index
    h, w = atom.slice_ref.shape_in(shape)
    rows, cols = np.divmod(np.asarray(atom.indices, dtype=np.int64), w)
    # the edited slice's 2D axes are the other two volume axes, in order
    others = [a for a in range(3) if a != atom.slice_ref.axis_number]
    along = rows if others[0] == ref.axis_number else cols
    return bool((along == ref.index).any())


def _strategy_names() -> list[str]:
    from ..acquisition import STRATEGIES

    return list(STRATEGIES)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (AlAnnotatorError, IndexError, KeyError, ValueError)):
        return str(exc) if not isinstance(exc, KeyError) else f"not found: {exc}"
    return f"internal error ({type(exc).__name__}: {exc}); the kernel log has the traceback"


def _open_session(source: Any, *, project: Any, volume: Any, classes: Any, author: str | None, strategy: str,
                  n_suggestions: int) -> tuple[Session, bool]:
    """Accept a Session, a store, a project directory, a volume file or an array."""
    kw: dict[str, Any] = {"author": author, "strategy": strategy, "n_suggestions": n_suggestions}
    create_kw = {"classes": classes} if classes is not None else {}
    if isinstance(source, Session):
        return source, False
    if isinstance(source, ProjectStore):
        return Session(source, **kw), True
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if (path / "project.json").exists():
            return Session(path, **kw), True
        if volume is not None:  # a new project directory from a volume
            return Session(path, volume=volume, **kw, **create_kw), True
        if path.exists() and not path.is_dir() or (path.is_dir() and any(path.iterdir())):
            target = Path(project) if project is not None else path.with_name(path.stem + ".alproj")
            return Session(target, volume=str(path), **kw, **create_kw), True
        raise InputError(f"{path} is not an al_annotator project; pass volume=... to create one there, "
                         "or give a volume file as the first argument")
    if hasattr(source, "shape") and hasattr(source, "dtype"):
        if project is not None:
            return Session(project, volume=source, **kw, **create_kw), True
        return Session(create_project(None, source, author=author, **create_kw), **kw), True
    raise InputError(f"Annotator needs a project directory, a Session, a volume file or an array; got {type(source).__name__}")
