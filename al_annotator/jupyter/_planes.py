"""The notebook widget's plane server: pixels for the browser, read through the Session.

:class:`PlaneServer` keeps what the browser views show in memory (chunk slabs in
:class:`~al_annotator.jupyter._cache.SlabCache`, downsampled tiles of large slices in
:class:`~al_annotator.jupyter._cache.TileCache`, the current model's prediction, suggestion
thumbnails), quantises and packs it (:mod:`al_annotator.jupyter._imaging`) and sends it with the
``send(content, buffers)`` it is given: ``slice``, ``labels``, ``overlays``, ``ortho`` and
``thumbs`` messages. Slow reads run on reader threads off the kernel's event loop
(:meth:`PlaneServer.defer`); with no running loop (scripts, tests) they run at once.

Everything is read through :class:`~al_annotator.core.Session` (``image_array``,
``labels_array``, ``plane``, ``prediction``/``confidence``, ``model_outputs``); labels in memory
stay equal to the project by applying every edit the session reports (:meth:`labels_changed`).
No anywidget or traitlets here: the widget (:mod:`al_annotator.jupyter.widget`) and the message
controller (:mod:`al_annotator.jupyter._controller`) drive it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..core import Session
from ..errors import AlAnnotatorError
from ..types import AXES, EditAtom, SliceRef
from ._cache import SlabCache, TileCache
from ._imaging import Quantiser, Region, block_mean, fit_step, sample, thumbnail, window_to_uint8

__all__ = ["ORTHO_PX", "THUMB_MAX_CHUNKS", "THUMB_PX", "PlaneServer", "View", "describe", "running_loop", "thumb_level"]

log = logging.getLogger(__name__)

#: Orthogonal views and suggestion thumbnails: longest side in pixels.
ORTHO_PX = 160
THUMB_PX = 56
#: Thumbnails are drawn only for slices that read at most this many chunks (or are in memory).
THUMB_MAX_CHUNKS = 256

Send = Callable[[dict, Sequence[Any]], None]


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def describe(exc: BaseException) -> str:
    """What the widget shows for an exception: the message of an expected error, else a pointer to the log."""
    if isinstance(exc, (AlAnnotatorError, IndexError, KeyError, ValueError)):
        return str(exc) if not isinstance(exc, KeyError) else f"not found: {exc}"
    return f"internal error ({type(exc).__name__}: {exc}); the kernel log has the traceback"


@dataclass(frozen=True, slots=True)
class View:
    """What one browser view shows: a region of a slice."""

    ref: SliceRef
    region: Region


def thumb_level(shape2d: tuple[int, int]) -> int:
    """The pyramid level a thumbnail of a slice is read at: 2 to 4 times the thumbnail's size, so
    the store reads a coarse level (a 2048^2 slice: 128^2 from level 4) and the block mean has
    enough pixels left to smooth.

    >>> thumb_level((2048, 2048)), thumb_level((100, 80))
    (4, 0)
    """
    step = fit_step(shape2d, THUMB_PX)
    return max(0, step.bit_length() - 2)


class _LRU:
    """A tiny thread-safe LRU (the reader thread fills the prediction cache too)."""

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

    def clear(self) -> None:
        with self._lock:
            self._d.clear()


def touches(atom: EditAtom, ref: SliceRef, shape: tuple[int, int, int]) -> bool:
    """Whether an edit changed any voxel of slice ``ref``."""
    if atom.slice_ref.axis == ref.axis:
        return atom.slice_ref.index == ref.index
    h, w = atom.slice_ref.shape_in(shape)
    rows, cols = np.divmod(np.asarray(atom.indices, dtype=np.int64), w)
    # the edited slice's 2D axes are the other two volume axes, in order
    others = [a for a in range(3) if a != atom.slice_ref.axis_number]
    along = rows if others[0] == ref.axis_number else cols
    return bool((along == ref.index).any())


class PlaneServer:
    """Serve the planes browser views show, from memory where it can, through ``session``.

    Parameters
    ----------
    session
        Where every pixel is read from.
    send
        ``send(content, buffers)``: delivers one message (a JSON-able dict, binary buffers) to the browser.
    on_error
        ``on_error(message, exc, client=..., req=...)``: a background read failed (default: logged).

    State the controller reads and writes: :attr:`views` (client id -> :class:`View`) and
    :attr:`applied` (client id -> the last stroke ``seq`` handled, echoed in every pixels message so
    the browser knows which of its optimistic strokes the labels already contain).
    """

    def __init__(self, session: Session, send: Send, *, on_error: Callable[..., None] | None = None) -> None:
        self.session = session
        self._send = send
        self.on_error = on_error
        vol = session.volume
        self.volume = vol
        self.shape = tuple(vol.shape)
        self.quant = Quantiser(vol.dtype, vol.value_range, vol.display_window)
        image_arr, label_arr = session.image_array, session.labels_array
        self.images = SlabCache(lambda sel: image_arr[sel], self.shape, image_arr.chunks, vol.dtype.itemsize)
        self.labels = SlabCache(lambda sel: label_arr[sel], self.shape, label_arr.chunks, 1, budget_bytes=128 << 20)
        # slices whose chunk slab is too large to keep (a 2048^2 z slice): what is shown, for 16 slices at once
        # zoomed out (step >= 2), their image comes from the store's pyramid (a 2048^2 z slice at 1:4: 64
        # chunks of level 2 instead of 1024 of the image)
        self.tiles = TileCache(lambda sel: image_arr[sel], lambda sel: label_arr[sel], self.shape, image_arr.chunks,
                               self.quant.encode, levels=session.image_levels)
        self.views: dict[str, View] = {}
        self.applied: dict[str, int] = {}
        self.closed = False
        #: +1 on every labels change (a read that started before is stale).
        self.labels_epoch = 0
        self._edits: collections.deque[tuple[int, Any]] = collections.deque(maxlen=256)  # (epoch, atom or None)
        self._last_index: dict[str, int] = {}
        self._tile_reads: dict[tuple, Future] = {}
        self._pred_tiles: tuple[int, TileCache | None] | None = None  # (model version, its prediction tiles)
        self._tile_lock = threading.Lock()
        self._preds = _LRU(4)
        self._overlays_sent: dict[str, tuple] = {}  # client -> overlay_key of what its view shows
        self._thumbs: dict[SliceRef, np.ndarray] = {}
        self._ortho_sent: dict[str, tuple[int, int]] = {}
        self._deferred: dict[str, tuple] = {}
        self._deferred_scheduled: set[str] = set()
        self._executors: dict[str, ThreadPoolExecutor] = {}

    def send(self, content: dict, buffers: Sequence[Any] = ()) -> None:
        self._send(content, [memoryview(b) for b in buffers])

    def close(self) -> None:
        """Stop delivering background reads; the reader threads end when their read does."""
        self.closed = True
        for executor in self._executors.values():
            executor.shutdown(wait=False)

    def _error(self, exc: BaseException, **where: Any) -> None:
        if self.on_error is not None:
            self.on_error(describe(exc), exc, **where)
        else:
            log.error("al_annotator widget: %s", describe(exc), exc_info=exc)

    # ================================================================== views
    def forget_old_views(self, keep: int = 16) -> None:
        """Drop the oldest views past ``keep`` (views of closed notebook tabs)."""
        while len(self.views) > keep:
            self.views.pop(next(iter(self.views)))

    def view(self, client: str, req: Any, ref: SliceRef, region: Region) -> None:
        """Show ``region`` of ``ref`` in ``client``'s view: a ``slice`` message, now or once read."""
        self.views[client] = View(ref, region)
        if self.tiled(ref, region):
            self._view_tiled(client, req, ref, region)
            return
        if running_loop() is None or (ref in self.images and ref in self.labels):
            self.send_slice(client, req, ref, region)
            return
        # not in memory: read off the event loop (a 2048^2 z slice takes ~0.3-1 s), then send
        epoch = self.labels_epoch

        def compute() -> tuple:
            self.images.slice(ref)
            self.prediction_of(ref)
            key = self.labels.key(ref)
            return key, (None if ref in self.labels else self.labels.read_slab(key))

        def deliver(result: tuple) -> None:
            key, slab = result
            if slab is not None and epoch == self.labels_epoch:
                self.labels.install(key, slab)
            view = self.views.get(client)
            if view is not None and view.ref == ref:  # else a newer request is on its way
                self.send_slice(client, req, view.ref, view.region)

        self.defer(f"view:{client}", compute, deliver, delay=0.0, pool="view",
                   on_error=lambda exc: self._error(exc, client=client, req=req))

    # ---- large slices: served from the TileCache (what is shown, 16 slices at a time)
    def tiled(self, ref: SliceRef, region: Region) -> bool:
        """Whether this view is served from the tile cache: its chunk slab is too large to keep whole."""
        return self.images.too_large(ref) and self.tiles.nbytes(self.tiles.key(ref, region)) * 2 <= self.tiles.budget_bytes

    def _view_tiled(self, client: str, req: Any, ref: SliceRef, region: Region) -> None:
        last = self._last_index.get(client)
        self._last_index[client] = ref.index
        if self.tiles.has(ref, region) and (self.prediction_tiled(ref, region) or running_loop() is None):
            self.send_slice(client, req, ref, region)
        else:
            self._read_tiles(ref, region, f"view:{client}", "view", client=client, req=req)
        # prefetch the next slices in the direction of travel (stepping with the arrow keys)
        if last is not None and last != ref.index and running_loop() is not None:
            ahead = ref.index + (self.tiles.depth // 2 if ref.index > last else -(self.tiles.depth // 2))
            if 0 <= ahead < self.shape[ref.axis_number]:
                nxt = SliceRef(ref.axis, ahead)
                if not self.tiles.has(nxt, region):
                    self._read_tiles(nxt, region, "prefetch", "prefetch", delay=0.1)

    def _read_tiles(self, ref: SliceRef, region: Region, key: str, pool: str, *, client: str | None = None, req: Any = None,
                    delay: float = 0.0) -> None:
        """Read the tile-cache entry of ``ref`` off the event loop; then send the view (if ``client``)."""
        tiles = self.tiles
        entry = tiles.key(ref, region)

        def compute() -> tuple:
            got = self.read_tile_entry(entry) if not tiles.has(ref, region) else None
            preds = self.prediction_tiles()
            pred = None
            if preds is not None and not preds.has(ref, region):
                pentry = preds.key(ref, region)
                pred = (preds, pentry, preds.read(pentry))
            return got, pred

        def deliver(result: tuple) -> None:
            got, pred = result
            if got is not None:
                self.install_tiles(entry, *got)
            if pred is not None:
                pred[0].install(pred[1], *pred[2])
            if client is None:
                return
            view = self.views.get(client)
            if view is not None and view.ref == ref:  # else a newer request is on its way
                self.send_slice(client, req, view.ref, view.region)

        on_error = None if client is None else (lambda exc: self._error(exc, client=client, req=req))
        self.defer(key, compute, deliver, delay=delay, pool=pool, on_error=on_error)

    def read_tile_entry(self, entry: tuple) -> tuple:
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
            epoch = self.labels_epoch  # every edit up to this one is on disk: later ones are replayed on install
            future.set_result((epoch, *self.tiles.read(entry, image=not self.tiles.image_cached(entry))))
        except BaseException as exc:
            future.set_exception(exc)
        finally:
            with self._tile_lock:
                self._tile_reads.pop(entry, None)
        return future.result()

    def install_tiles(self, entry: tuple, epoch: int, codes: np.ndarray | None, labels: np.ndarray | None) -> None:
        """Keep a tile-cache entry read in the background, with the edits made since its read began."""
        replay = [a for e, a in self._edits if e > epoch]
        if epoch != self.labels_epoch and (len(replay) < self.labels_epoch - epoch or any(a is None for a in replay)):
            labels = None  # edits came in that cannot be replayed on what was read: read again when needed
        self.tiles.install(entry, codes, labels)
        if labels is not None:
            for atom in replay:  # edits made while this was read (setting values is idempotent)
                self.tiles.apply(atom.slice_ref, atom.indices, atom.new_values)

    # ================================================================== the served tier's prediction
    # What the overlays show is the Session's served tier (``Session.prediction_token``): a deep model
    # version (read from its volume outputs; large slices through a tile cache of them) or tier 1's
    # newest fit (previews of single planes, in memory: ``Session.preview``). Cached planes are keyed by
    # that token, so a switch of tier or a new fit never shows a stale plane.
    def deep_served(self) -> bool:
        return self.session.prediction_token[0] == "deep"

    def prediction_tiles(self) -> TileCache | None:
        """The served model version's prediction (as labels) and confidence (as image), tiled; None before
        a model, or while tier 1 serves (its planes are previews in memory, not volume outputs)."""
        version = self.session.model_version
        if version is None or not self.deep_served():
            return None
        if self._pred_tiles is None or self._pred_tiles[0] != version:
            cache = None
            outputs = self.session.model_outputs()
            if outputs is not None and outputs.prediction is not None and outputs.confidence is not None:
                pred, conf = outputs.prediction, outputs.confidence
                cache = TileCache(lambda sel: conf[sel], lambda sel: pred[sel], self.shape, pred.chunks,
                                  lambda v: v, budget_bytes=96 << 20, sample_image=True)
            self._pred_tiles = (version if outputs is None else outputs.version, cache)
        return self._pred_tiles[1]

    def _load_prediction(self, ref: SliceRef, region: Region) -> None:
        """Read the prediction a view shows into memory (reader threads; a model version never changes)."""
        preds = self.prediction_tiles() if self.tiled(ref, region) else None
        if preds is None:
            self.prediction_of(ref)
        elif not preds.has(ref, region):
            key = preds.key(ref, region)
            preds.install(key, *preds.read(key))

    def prediction_tiled(self, ref: SliceRef, region: Region) -> bool:
        """Whether the prediction of a tiled view is in memory (or there is none, or tier 1 serves it)."""
        if self.session.model_version is None or not self.deep_served():
            return True
        preds = self.prediction_tiles()
        return preds is not None and preds.has(ref, region)

    def prediction_of(self, ref: SliceRef) -> tuple[np.ndarray, np.ndarray] | None:
        """``(prediction, confidence as 0..255)`` of a slice under the served tier, or None (any thread).

        Cached by ``(ref, Session.prediction_token)``: ``("instant", fit)`` planes are tier 1's
        previews (in memory), ``("deep", version)`` planes are read from that version's outputs. While
        tier 1 serves a plane it has not previewed yet, the deep version's plane stands in (as
        ``Session.prediction`` does) until the preview comes (:meth:`preview_changed`)."""
        s = self.session
        token = s.prediction_token
        got = self._preds.get((ref, token))
        if got is not None:
            return got
        if token[0] == "instant":
            preview = s.preview(ref)
            if preview is not None:
                got = (np.ascontiguousarray(preview.prediction, dtype=np.uint8), np.ascontiguousarray(preview.confidence, dtype=np.uint8))
                self._preds.put((ref, token), got)
                return got
            if s.model_version is None:
                return None
            got = self._preds.get((ref, ("deep", s.model_version)))
            if got is not None:
                return got
        elif token[1] is None:
            return None
        outputs = s.model_outputs()
        if outputs is None or outputs.prediction is None or outputs.confidence is None:
            return None
        sel = ref.selection()
        got = (np.ascontiguousarray(outputs.prediction[sel], dtype=np.uint8), np.ascontiguousarray(outputs.confidence[sel], dtype=np.uint8))
        self._preds.put((ref, ("deep", outputs.version)), got)
        return got

    def _prediction_tile(self, ref: SliceRef, region: Region) -> tuple[np.ndarray, np.ndarray] | None:
        """``(prediction, confidence)`` of a tiled view from memory, or None."""
        preds = self.prediction_tiles() if self.tiled(ref, region) else None
        got = preds.get(ref, region) if preds is not None else None
        return None if got is None else (got[1], got[0])

    def model_changed(self) -> None:
        """A new model version, or another served tier: read its prediction for every view (off the
        loop), then send overlays."""
        self._preds.clear()
        views = list(self.views.items())
        # the new prediction is read off the event loop (a 2048^2 slice: two reads of 1024 chunks)
        self.defer("overlays", lambda: [self._load_prediction(view.ref, view.region) for _, view in views],
                   lambda _: [self.send_overlays(client, view) for client, view in views if self.views.get(client) == view],
                   delay=0.0, pool="view")

    def preview_changed(self, preview: Any) -> None:
        """Tier 1 previewed a plane (``Session.preview_changed``): while it serves, send the new overlays
        to every view showing that plane (a view of a large slice gets them sampled to its region)."""
        if self.deep_served():
            return  # the deep tier serves: what the views show did not change
        ref = preview.ref
        got = (np.ascontiguousarray(preview.prediction, dtype=np.uint8), np.ascontiguousarray(preview.confidence, dtype=np.uint8))
        self._preds.put((ref, self.session.prediction_token), got)
        for client, view in list(self.views.items()):
            if view.ref == ref:
                self.send_overlays(client, view)

    # ================================================================== sending pixels
    def send_slice(self, client: str, req: Any, ref: SliceRef, region: Region) -> None:
        t0 = time.perf_counter()
        tile = self.tiles.get(ref, region) if self.tiled(ref, region) else None
        if tile is not None:
            image, labels = tile
        else:
            image, labels = self.quant.encode(block_mean(self.image(ref), region)), sample(self.labels_of(ref), region)
        layers, bufs = ["image", "labels"], [image, labels]
        key = self._overlays_sent[client] = self.overlay_key(View(ref, region))
        ptile = self._prediction_tile(ref, region) if tile is not None else None
        if ptile is not None:
            layers += ["prediction", "confidence"]
            bufs += list(ptile)
        else:
            pred = self.prediction_of(ref)
            if pred is not None:
                layers += ["prediction", "confidence"]
                bufs += [sample(pred[0], region), sample(pred[1], region)]
        level = self.tiles.level_for(region.step) if tile is not None else 0
        content = {"type": "slice", "client": client, "req": req, "axis": ref.axis, "index": ref.index,
                   **region.to_json(), "image": self.quant.to_json(), "level": level, "layers": layers,
                   "applied": self.applied.get(client, 0), "model_version": self.session.model_version,
                   "tier": key[1], "fit": key[2], "labels_seq": key[3], "kernel_ms": round((time.perf_counter() - t0) * 1000, 2)}
        self.send(content, bufs)

    def send_labels(self, client: str, view: View | None = None) -> None:
        """The labels ``client`` shows (after an edit, or to drop its optimistic paint)."""
        view = view or self.views.get(client)
        if view is None:
            return
        labels = self.tiles.get_labels(view.ref, view.region) if self.tiled(view.ref, view.region) else None
        if labels is None:
            labels = sample(self.labels_of(view.ref), view.region)
        self.send({"type": "labels", "client": client, "applied": self.applied.get(client, 0),
                   "axis": view.ref.axis, "index": view.ref.index, **view.region.to_json()}, [labels])

    def overlay_key(self, view: View) -> tuple:
        """What decides the overlays of a view: its region, the served token, the deep version (a
        stand-in while tier 1 has not previewed the plane) and the labels a tier 1 preview was made from."""
        tier, fit = self.session.prediction_token
        seq = stand_in = None
        if tier == "instant":
            preview = self.session.preview(view.ref)
            if preview is None:
                stand_in = self.session.model_version
            else:
                seq = int(preview.seq)
        return (view, tier, fit, seq, stand_in)

    def send_overlays(self, client: str, view: View, *, force: bool = False) -> None:
        """The served tier's prediction and confidence of ``client``'s view, unless that view already
        has them (same :meth:`overlay_key`). ``tier`` and ``fit`` are ``Session.prediction_token``;
        ``labels_seq`` is the edit-log position a tier 1 preview was made from (the page times
        stroke -> overlay with it). No prediction (tier 1 dropped its fit, no model): no buffers."""
        key = self.overlay_key(view)
        if not force and self._overlays_sent.get(client) == key:
            return
        ptile = self._prediction_tile(view.ref, view.region)
        if ptile is None:
            pred = self.prediction_of(view.ref)
            ptile = () if pred is None else (sample(pred[0], view.region), sample(pred[1], view.region))
        self._overlays_sent[client] = key
        self.send({"type": "overlays", "client": client, "axis": view.ref.axis, "index": view.ref.index,
                   **view.region.to_json(), "model_version": self.session.model_version, "tier": key[1],
                   "fit": key[2], "labels_seq": key[3], "layers": ["prediction", "confidence"] if ptile else []}, list(ptile))

    def image(self, ref: SliceRef) -> np.ndarray:
        """The image of a slice (from a cached chunk slab; any thread)."""
        return self.images.slice(ref)

    def labels_of(self, ref: SliceRef) -> np.ndarray:
        """The labels of a slice, equal to the project (event-loop thread only: it may install a slab)."""
        return self.labels.slice(ref)

    # ================================================================== edits
    def labels_changed(self, atom: EditAtom | None) -> None:
        """Keep the label caches equal to the project and send the labels of every view an edit touched.

        ``atom`` is the edit (here: a stroke, undo, redo), or None for edits by another process
        (which voxels is unknown: the label caches are dropped).
        """
        self.labels_epoch += 1
        self._edits.append((self.labels_epoch, atom))
        if atom is not None:
            self.labels.apply(atom.slice_ref, atom.indices, atom.new_values)
            self.tiles.apply(atom.slice_ref, atom.indices, atom.new_values)
        else:
            self.labels.clear()
            self.tiles.clear_labels()
        for client, view in list(self.views.items()):
            if atom is None or touches(atom, view.ref, self.shape):
                self.send_labels(client, view)

    # ================================================================== orthogonal views and thumbnails
    def schedule_ortho(self, cursor: Sequence[int], canvas_size: int, delay: float = 0.15, full: bool = False) -> None:
        """Send the orthogonal planes through ``cursor`` (z, y, x) that changed since last sent (coalesced:
        a newer request replaces a queued one)."""
        if full:
            self._ortho_sent.clear()
        quant = self.quant
        cursor = tuple(int(c) for c in cursor)

        def compute() -> tuple:
            epoch = self.labels_epoch
            planes, bufs, installs = [], [], []
            for axis, index in zip(AXES, cursor):
                if self._ortho_sent.get(axis) == (index, epoch):
                    continue
                ref = SliceRef(axis, index)
                shape2d = ref.shape_in(self.shape)
                region = Region.full(shape2d, fit_step(shape2d, ORTHO_PX))
                # a large slice: from the tile cache entry the main view uses (read once for both,
                # 16 slices at a time), subsampled to the orthogonal view's size
                main = Region.full(shape2d, fit_step(shape2d, canvas_size))
                if self.tiled(ref, main):
                    tile = self.tiles.get(ref, main)
                    if tile is None:
                        entry = self.tiles.key(ref, main)
                        got = self.read_tile_entry(entry)  # waits for the main view's read of it, if running
                        installs.append((entry, got))
                        d = ref.index - entry[1]
                        codes = got[1][d] if got[1] is not None else self.tiles.image_tile(ref, main)
                        tile = (codes, got[2][d])
                    if tile[0] is not None:
                        k = -(-region.step // main.step)
                        sub = Region.full(shape2d, main.step * k)
                        planes.append({"axis": axis, "index": index, **sub.to_json()})
                        bufs.extend([np.ascontiguousarray(tile[0][::k, ::k]), np.ascontiguousarray(tile[1][::k, ::k])])
                        continue
                img = self.image(ref)
                lab = self.labels.cached(ref)
                if lab is None:  # read here, installed on the loop if no edit came in between
                    key = self.labels.key(ref)
                    slab = self.labels.read_slab(key)
                    installs.append((key, slab))
                    lab = np.take(slab, ref.index - key[1], axis=key[0])
                planes.append({"axis": axis, "index": index, **region.to_json()})
                bufs.extend([quant.encode(block_mean(img, region)), sample(lab, region)])
            return epoch, planes, bufs, installs

        def deliver(result: tuple) -> None:
            epoch, planes, bufs, installs = result
            for key, slab in installs:
                if len(key) > 3:  # a tile-cache entry (epoch, codes, labels): edits since are replayed
                    self.install_tiles(key, *slab)
                elif epoch == self.labels_epoch:
                    self.labels.install(key, slab)
            for plane in planes:
                self._ortho_sent[plane["axis"]] = (plane["index"], epoch)
            self.send({"type": "ortho", "cursor": list(cursor), "planes": planes, "image": quant.to_json()}, bufs)

        self.defer("ortho", compute, deliver, delay)

    def schedule_thumbs(self, refs: Sequence[SliceRef], window: Sequence[float], resend: bool = False) -> None:
        """Send thumbnails of the suggested slices ``refs`` (grey values windowed to ``window``)."""
        refs = list(refs)
        # a slice that touches many chunks (a z slice of a 2048^2 volume: 1024) is not read for a thumbnail
        missing = [r for r in refs if r not in self._thumbs
                   and (r in self.images or self.volume.chunks_in(r.axis) <= THUMB_MAX_CHUNKS)]
        if not missing and not resend:
            return
        window = tuple(window)
        session = self.session

        def compute() -> dict[SliceRef, np.ndarray]:
            def image(ref: SliceRef) -> np.ndarray:  # no caching: thumbnails would evict the slabs in view
                cached = self.images.cached(ref)
                return cached if cached is not None else session.plane("image", ref, level=thumb_level(ref.shape_in(self.shape)))

            return {r: window_to_uint8(thumbnail(image(r), THUMB_PX), window) for r in missing}

        def deliver(new: dict[SliceRef, np.ndarray]) -> None:
            self._thumbs.update(new)
            keep = set(refs)
            items, bufs = [], []
            for ref in list(self._thumbs):
                if ref not in keep and len(self._thumbs) > 64:
                    del self._thumbs[ref]
                elif ref in keep:
                    th = np.ascontiguousarray(self._thumbs[ref])
                    items.append({"key": f"{ref.axis}:{ref.index}", "h": th.shape[0], "w": th.shape[1]})
                    bufs.append(th)
            self.send({"type": "thumbs", "items": items}, bufs)

        self.defer("thumbs", compute, deliver)

    # ================================================================== background reads
    def defer(self, key: str, compute: Callable[[], Any], deliver: Callable[[Any], None], delay: float = 0.05,
              *, pool: str = "background", on_error: Callable[[BaseException], None] | None = None) -> None:
        """Run ``compute`` (reads only) off the kernel's event loop, ``deliver`` its result on it.

        Coalesced by ``key``: a request queued behind a running one replaces the queued one. With
        no running loop (scripts, tests) both run at once. ``pool`` "view" has a reader thread of its
        own, so a slice the user asked for never waits behind thumbnails.
        """
        loop = running_loop()
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
            if job is None or self.closed:
                return
            try:
                result = await loop.run_in_executor(executor, job[0])
            except Exception as exc:  # noqa: BLE001
                if job[2] is not None:
                    job[2](exc)
                else:
                    self._error(exc)
                return
            if not self.closed:
                job[1](result)

        loop.create_task(run())
