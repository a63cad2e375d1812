"""Tier 1 live: the instant classifier refitted on every stroke, the visible plane predicted first.

A :class:`LivePreview` belongs to one :class:`~al_annotator.core.Session` and runs in the front
end's process on **one** background thread (the filters and the tree ensemble release the GIL:
scipy.ndimage ran 1.1 s of filtering beside a 10 ms asyncio-style timer that was at most 26 ms
late, measured here on 2 cores; see ``docs/BENCHMARKS.md``). The Session tells it what changed
(:meth:`labels_changed`) and what is on screen (:meth:`request`); the thread refits when the labels
moved on, predicts the requested plane, and leaves the result for :meth:`take`, which the Session
calls from the caller's thread (``Session.poll`` / ``Session.take_previews``) so that signals are
emitted where the front end expects them. Nothing here writes the project.

Which voxels train: every labelled voxel of the slices in progress or annotated (a stroke marks its
slice in progress), read once per slice and re-read only when an edit touched that slice. ~10 % of
them, the same whole strokes (and blocks of large regions) the deep trainer holds out
(``training.holdout``), are held out: the classifier is fitted on the rest and scored on them, so the Session can serve whichever
tier scores better on the same evidence.
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..types import SliceRef
from .values import use_deep_features

__all__ = ["LivePreview", "PlanePreview"]

# The trees fit and predict on this module's thread while the caller's thread may be inside
# ``warnings.catch_warnings`` (dask, zarr, pytest): scikit-learn then finds no warning filters to hand
# its joblib workers and warns once per tree, and every exit of a catch_warnings block resets the
# "print once" registry, so a notebook got thousands of identical lines (12519 in one benchmark run).
# The warning is about configuration propagation, which tier 1 does not use.
warnings.filterwarnings("ignore", message=r"`sklearn\.utils\.parallel\.delayed` should be used", category=UserWarning)


@dataclass(frozen=True)
class PlanePreview:
    """Tier 1's prediction of one plane, made from the labels at edit-log position ``seq``."""

    ref: SliceRef
    seq: int
    prediction: np.ndarray  # (H, W) uint8 class values 1..C
    confidence: np.ndarray  # (H, W) uint8, max probability * 255
    probabilities: np.ndarray = field(repr=False)  # (C, H, W) float32; a coarse look's at its stride (C, ceil(H/k), ceil(W/k))
    seconds: float = 0.0  # fit (when one was needed) + plane prediction
    coarse: bool = False  # predicted on every 2nd pixel (and repeated): the quick first look at a large plane
    blend_version: int | None = None  # blended with this deep model version's probabilities (the blend serves)


class LivePreview:
    """One background thread that keeps tier 1 fitted and predicts the planes asked for.

    Parameters
    ----------
    image
        The volume (lazy, read-only: ``Session.image_array``).
    spacing
        Voxel spacing (z, y, x): the filters' sigmas are scaled per axis.
    read_labels
        ``read_labels(ref) -> (plane uint8, seq)``: the saved labels of a slice (``Session.label_plane``).
    labelled_slices
        ``labelled_slices() -> list[SliceRef]``: slices in progress or annotated.
    n_classes
        Classes ``1..C``.
    classifier, feature_kw
        Passed to :class:`~al_annotator.instant.InstantClassifier` / :class:`~al_annotator.instant.FeatureBank`.
    """

    def __init__(self, image: Any, spacing: tuple[float, float, float], read_labels: Callable[[SliceRef], tuple[np.ndarray, int]],
                 labelled_slices: Callable[[], list[SliceRef]], n_classes: int, *, classifier: dict[str, Any] | None = None,
                 feature_kw: dict[str, Any] | None = None, holdout_fraction: float = 0.1, nice: int = 5,
                 deep_prediction: Callable[[SliceRef], np.ndarray | None] | None = None, score_px: int = 64,
                 deep_probabilities: Callable[[Any], tuple[np.ndarray, int] | None] | None = None,
                 coarse_scoring: bool = True, deep_model: Callable[[], tuple[Any, Callable, int] | None] | None = None) -> None:
        from ..instant.classifier import InstantClassifier
        from ..instant.features import FeatureBank
        from ..instant.segmenter import auto_features

        self.shape = tuple(int(n) for n in image.shape)
        # Spacing-scaled 3D features at the octaves 1..16 with edge values repeated: the set measured
        # best on the anisotropic ssTEM stack (docs/BENCHMARKS.md, "Tier 1, instant"), and used for
        # isotropic volumes too, where 2D features in each voxel's own slice plane (what
        # InstantSegmenter(mode="auto") picks there) scored as well on test slices of the picked axis
        # but carried badly to the other axes: trained on one z slice of the phantom, an x plane was
        # 70 % right in-plane and over 80 % with 3D features (tests/test_live.py). A live preview is
        # looked at on every axis. feature_kw overrides (mode="inplane" works too).
        auto = dict(auto_features(spacing), mode="3d")
        kw = {"cache_bytes": default_cache_bytes()} | auto | dict(feature_kw or {})
        self.bank = FeatureBank(image, spacing, **kw)
        self.inplane = self.bank.mode == "inplane"
        self.n_classes = int(n_classes)
        kind = {"kind": "rf"} if self.inplane else {}
        # two threads: the fit is most of a stroke's wait; the trees release the GIL and the thread runs at nice 5
        self._classifier_kw = {"n_jobs": 2} | kind | dict(classifier or {})
        self._make_classifier = lambda: InstantClassifier(self.n_classes, **self._classifier_kw)
        self.classifier = None
        self._read_labels = read_labels
        self._labelled_slices = labelled_slices
        self.holdout_fraction = holdout_fraction
        self.nice = nice
        #: Held-out Dice of the current fit (None: too few held-out voxels, or not fitted).
        self.heldout_dice: float | None = None
        self.heldout_per_class: list[float | None] = []
        #: The deep model and the blend of both tiers scored on the same held-out voxels as the fit
        #: (``heldout_deep_version``: the deep version they were scored with; None before one).
        self.heldout_deep: float | None = None
        self.heldout_blend: float | None = None
        self.heldout_deep_version: int | None = None
        #: Blend previews with this deep version's probabilities (set by the Session while the blend serves).
        self.blend_version: int | None = None
        self._deep_probabilities = deep_probabilities
        #: The deep tier's own features for the forest (``instant.deep``, a self-trained convpaint):
        #: ``deep_model()`` gives the current version's ``(network, normalise, version)``; once fitted on
        #: the labelled slices, every fit appends their 16 channels (planes cached per version, LRU).
        self._deep_model = deep_model
        self.deep_features = None  # instant.deep.DeepFeatures of the version in use, or None
        self._deep_planes: OrderedDict[SliceRef, np.ndarray] = OrderedDict()
        self._deep_vox: dict[SliceRef, tuple[np.ndarray, np.ndarray]] = {}  # per plane: labelled pixels, their features
        self._fit_deep: int | None = None  # the deep version the current fit's features include (None: filters only)
        self._fit_stale = False  # a refit is due although no labels changed (the deep features arrived)
        self._last_ref: SliceRef | None = None
        self._filters_fit: tuple[int, Any] | None = None  # (seq, filter-only classifier) for scoring slices
        self._filter_feats: np.ndarray | None = None  # the last fit's labelled voxels' filter features
        self._deep_pending: dict[str, Any] | None = None  # a new version's features in preparation (_deep_refresh_steps)
        #: Whether the fits use the deep features (decided by the held-out fits: ``values.use_deep_features``;
        #: off until a held-out comparison favours them) and the filter-only fit's held-out Dice of that comparison.
        self._use_deep = False
        self.heldout_filters: float | None = None
        self._deep_looked = False  # the first fit looked for a deep version published before this preview started
        self._held_eval: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # coords, labels, tier-1 probs
        self._deep_due = False
        self.fitted_seq: int | None = None
        self.last_error: str | None = None
        self.timings: dict[str, float] = {}
        self._planes: dict[SliceRef, tuple[np.ndarray, int]] = {}  # labels of the labelled slices, with their seq
        #: Per labelled slice, derived from the plane object in ``_planes``: (plane, coords, labels, held-out flags);
        #: a stroke recomputes only the slices it re-read (the held-out search of a 2048^2 plane is ~0.2 s).
        self._voxels: dict[SliceRef, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        self._dirty: set[SliceRef] | None = None  # None: re-read every labelled slice
        self._wanted: SliceRef | None = None
        self._prefetch: SliceRef | None = None
        self._pending_heldout: tuple | None = None
        self._seq_wanted = -1
        self._seq_taken = -1
        self._done: list[PlanePreview] = []
        #: Per-slice acquisition scores from tier 1 (filled when idle): ref -> (seq, scores, embedding, fg).
        self._scores: dict[SliceRef, tuple[int, dict[str, float], np.ndarray, float]] = {}
        self._score_order = _spread_order(self.shape)
        self._score_pos = 0
        #: Slices scored from the downsampled copy in the first pass over a volume whose features do fit
        #: the cache; the second pass re-scores them at full resolution (``_refine_pos`` into this list).
        self._refine: list[SliceRef] = []
        self._refine_pos = 0
        self._deep_prediction = deep_prediction
        self.score_px = int(score_px)
        self._latest: dict[SliceRef, PlanePreview] = {}
        #: The planes previewed, their features assembled: ref -> (H, W, F), LRU, at most a quarter of the
        #: tile cache's bound (always at least one plane: the one on screen). A plane whose feature
        #: tiles cannot stay in the tile cache is computed as one block (``FeatureBank.block_features``).
        self._plane_cache: OrderedDict[SliceRef, np.ndarray] = OrderedDict()
        self.plane_cache_bytes = self.bank.cache_bytes // 4
        #: A volume whose features do not fit the cache is scored (slice-level acquisition scores only)
        #: from a block-mean downsampled copy, with a classifier of its own fitted on the labelled voxels'
        #: coarse features: (factor, FeatureBank) once made; the coarse classifier and its seq.
        self.coarse_scoring = bool(coarse_scoring)
        self._coarse: tuple[int, Any] | None = None
        self._coarse_fit: tuple[int, Any] | None = None
        self._coarse_memo: dict[tuple[int, int], tuple] = {}  # (axis, grid plane) -> scores
        self._coarse_probs: tuple | None = None  # the copy's probability grid of one fit (_coarse_grid)
        self._imported = False  # sklearn's ensembles imported (_warmup_step)
        self._warmed = False  # the copy's features computed while idle before the first ranking
        self._warm_pos = 0
        self._train: tuple[np.ndarray, np.ndarray] | None = None  # coords, labels of the last fit
        self._feature_kw = kw
        self._cv = threading.Condition()
        self._closed = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name="al-annotator-tier1", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the caller's side
    def labels_changed(self, refs: list[SliceRef] | None, seq: int) -> None:
        """Labels changed on ``refs`` (``None``: anywhere) up to log position ``seq``; refit before the next plane."""
        with self._cv:
            if refs is None or self._dirty is None:
                self._dirty = None
            else:
                self._dirty.update(refs)
            self._seq_wanted = max(self._seq_wanted, int(seq))
            self._cv.notify()

    def request(self, ref: SliceRef) -> None:
        """Predict ``ref`` next (the plane on screen); replaces an earlier request not yet started."""
        with self._cv:
            self._wanted = ref
            self._cv.notify()

    def prefetch(self, ref: SliceRef) -> None:
        """Compute the features of ``ref``'s plane while idle (the plane on screen before the first
        stroke: the 3D filters of a cold 512^2 plane take seconds, the expert's first strokes longer)."""
        with self._cv:
            self._prefetch = ref
            self._cv.notify()

    def deep_changed(self) -> None:
        """A new deep model version: score it and the blend on the held-out voxels again (idle, cheap:
        the tier-1 probabilities of those voxels are kept from the held-out fit)."""
        with self._cv:
            self._deep_due = True
            self._cv.notify()

    def take(self) -> list[PlanePreview]:
        """Previews finished since the last call (the caller emits its signals for them)."""
        with self._cv:
            done, self._done = self._done, []
        return done

    def latest(self, ref: SliceRef) -> PlanePreview | None:
        """The newest preview made of ``ref`` (any seq), or ``None``."""
        with self._cv:
            return self._latest.get(ref)

    @property
    def busy(self) -> bool:
        with self._cv:
            return self._busy or self._wanted is not None

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until nothing is queued or running (tests, scripts); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while (self._busy or self._wanted is not None or self._prefetch is not None
                   or self._pending_heldout is not None or self._deep_due) and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.05))
        return True

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=10)

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)  # Linux: per thread; UI first
        except (AttributeError, OSError, PermissionError):
            pass
        while True:
            with self._cv:
                while not self._closed and self._wanted is None:
                    if (self._prefetch is not None or self._pending_heldout is not None or self._deep_due or self._scoring_due()
                            or self._warmup_due() or self._deep_pending is not None):
                        break
                    self._cv.wait()
                if self._closed:
                    return
                if self._wanted is None:  # idle: score a few more slices for the queue
                    self._busy = True
                    scoring = True
                else:
                    scoring = False
            if scoring:
                try:
                    with self._cv:
                        pending, self._pending_heldout = self._pending_heldout, None
                        deep_due, self._deep_due = self._deep_due and pending is None, self._deep_due and pending is not None
                        warm = None
                        if pending is None and not deep_due:
                            warm, self._prefetch = self._prefetch, None
                    if pending is not None:
                        self._score_heldout(*pending)
                    elif deep_due:
                        self._start_deep_refresh()
                        self._score_deep()
                        self._deep_refresh_steps()
                    elif warm is not None and self._block_first(warm):
                        # a cold plane as one block, what its first stroke would compute (not interruptible):
                        # its tiles cost their whole depth (a tile of the 128^3 demo is the volume: 64 s of
                        # filtering at load 5, where the plane as a block took 9 s); they follow while idle
                        self._plane_features(warm, block=True)
                        if self.deep_features is not None:
                            self._deep_plane(warm)  # and the network's features of it: its first stroke's wait
                    elif warm is not None and self.deep_features is not None and warm not in self._deep_planes:
                        self._deep_plane(warm)
                    elif self._deep_pending is not None:
                        self._deep_refresh_steps()
                    elif warm is not None and self.inplane:  # tile by tile, a stroke's request waits at most one
                        for tile in self._plane_tiles(warm):
                            with self._cv:
                                if self._wanted is not None or self._closed:
                                    break
                            self.bank.tile_features(tile)
                    elif self._scoring_due():
                        self._score_some(budget_s=0.5)
                    elif self._warmup_due():
                        self._warmup_step()
                except Exception as exc:  # noqa: BLE001
                    self.last_error = f"scoring slices: {type(exc).__name__}: {exc}"
                    self._deep_pending = None  # no retry loop either (the filters serve on)
                    self._score_pos, self._refine_pos = len(self._score_order), len(self._refine)  # no retry loop on a persistent error
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()
                continue
            with self._cv:
                ref, self._wanted = self._wanted, None
                self._last_ref = ref
                dirty, self._dirty = self._dirty, set()
                self._seq_taken = self._seq_wanted  # the labels this fit reads are at least this new
                self._busy = True
            try:
                preview = self._predict(ref, dirty, coarse=self._coarse_first(ref))
                if preview is not None and preview.coarse:
                    self._deliver(preview)  # the quick look now; the full plane next, unless asked for another
                    if not self._superseded() and self._complete_fit():
                        preview = self._predict(ref, set())  # None when a newer stroke or request came in meanwhile
                    else:
                        preview = None
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - shown by the front end, never raised on a thread
                preview = None
                self.last_error = f"{type(exc).__name__}: {exc}" if not hasattr(exc, "remedy") else str(exc)
                with self._cv:
                    if dirty is None or self._dirty is None:
                        self._dirty = None
                    else:
                        self._dirty |= dirty
            if preview is not None and not (preview.coarse and self._latest.get(preview.ref) is preview):
                self._deliver(preview)
            with self._cv:
                self._busy = False
                self._cv.notify_all()

    def _deliver(self, preview: PlanePreview) -> None:
        with self._cv:
            self._done.append(preview)
            self._latest[preview.ref] = preview
            if len(self._latest) > 32:
                self._latest.pop(next(iter(self._latest)))
            self._cv.notify_all()

    #: Planes with more pixels than this get a coarse preview before the full one: every ``k``-th pixel
    #: of every ``k``-th row, ``k`` the smallest stride that predicts at most this many pixels (2 at
    #: 512^2, 8 at 2048^2), so the quick look costs the same at any plane size.
    COARSE_FIRST_PIXELS = 256 * 256
    #: The full plane is predicted in row blocks of about this many pixels; a newer stroke or request
    #: between two blocks abandons it (at 2048^2 the full plane takes seconds a next stroke would wait).
    FULL_BLOCK_PIXELS = 128 * 1024

    def _coarse_first(self, ref: SliceRef) -> bool:
        h, w = ref.shape_in(self.shape)
        return h * w > self.COARSE_FIRST_PIXELS

    def coarse_stride(self, ref: SliceRef) -> int:
        """The pixel stride of ``ref``'s coarse first look (1: the plane is small enough to predict in full)."""
        h, w = ref.shape_in(self.shape)
        return max(1, math.ceil(math.sqrt(h * w / self.COARSE_FIRST_PIXELS)))

    def _superseded(self) -> bool:
        with self._cv:
            return self._closed or self._wanted is not None or self._dirty is None or bool(self._dirty)

    # ------------------------------------------------------------------ acquisition scores from tier 1
    def fresh_coverage(self) -> float:
        """Share of all slices scored by the current fit (0 while a refit is due, or running: a fit
        taken up but not finished yet is older than the labels; a commit made meanwhile was ranked as
        fresh by the fit before its slice's strokes, and never again)."""
        with self._cv:
            if (self.classifier is None or self._dirty is None or self._dirty or self.fitted_seq is None
                    or self.fitted_seq < self._seq_wanted):
                return 0.0
        seq = self.fitted_seq
        return sum(1 for v in list(self._scores.values()) if v[0] == seq) / max(1, len(self._score_order))

    def _warmup_due(self) -> bool:
        """Work left that the first ranking will need whatever is painted (called with the lock held)."""
        # after the plane on screen (its features first: the expert paints there next)
        return not self._warmed and self.coarse_scoring and bool(self._plane_cache or self.classifier is not None)

    def _warmup_step(self) -> None:
        """One step of it while nothing else is due: import the tree ensembles (the first fit imported
        them: 3 s of a cold commit at load 9), then the downsampled copy's feature tiles one at a time
        (the first ranking scores the cold volume from them: 8 s of the 128^3 demo's first commit at
        load 9, now computed while the expert paints the first slice)."""
        if not self._imported:
            import sklearn.ensemble  # noqa: F401

            self._imported = True
            return
        _, bank = self._coarse_bank()
        tiles = bank.tiles_of((slice(None),) * 3)
        if self._warm_pos < len(tiles):  # each tile once (an evicted tile is not chased)
            bank.tile_features(tiles[self._warm_pos])
            self._warm_pos += 1
        self._warmed = self._warm_pos >= len(tiles)

    def _scoring_due(self) -> bool:
        """Slices are left to score with the current fit (called with the lock held)."""
        if self.classifier is None or self._dirty is None or self._dirty:
            return False  # a refit is due first (it comes with the next request)
        return self._score_pos < len(self._score_order) or self._refine_pos < len(self._refine)

    @property
    def scores_whole_volume(self) -> bool:
        """Whether idle scoring may compute features anywhere: the whole volume's features fit the
        cache. Otherwise only slices whose feature tiles are already cached are scored (a large
        volume is not filtered end to end on a laptop's two cores behind the expert's back)."""
        orientations = 3 if self.inplane else 1  # in-plane features are computed per viewing axis
        return int(np.prod(self.shape)) * self.bank.n_features * 4 * orientations <= self.bank.cache_bytes

    def _score_some(self, budget_s: float) -> None:
        """Score slices in spread order (every axis, coarse to fine) until ``budget_s`` or a request.

        A slice whose features are not cached is scored from the downsampled copy (``coarse_scoring``),
        so a ranking of the whole volume comes within seconds of a fit; where the whole volume's
        features fit the cache, a second pass then re-scores those slices at full resolution (the
        first pass of a cold 128^3 volume costs an eighth of filtering it, the second all of it)."""
        if not self._complete_fit():
            return
        t0 = time.perf_counter()
        seq = int(self.fitted_seq)
        whole = self.scores_whole_volume
        while self._score_pos < len(self._score_order) and time.perf_counter() - t0 < budget_s:
            with self._cv:
                if self._wanted is not None or self._closed:
                    return
            ref = self._score_order[self._score_pos]
            if not self._cached(ref):
                if self.coarse_scoring:
                    got = self._score_coarse(ref, seq)
                    if got is not None:
                        self._score_pos += 1
                        self._scores[ref] = (seq, *got)
                        if whole:
                            self._refine.append(ref)
                        continue
                    if self._superseded():
                        return  # this slice is scored next time
                    if not whole:
                        self._score_pos += 1
                        return  # nothing to fit on the copy yet: the next fit tries again
                elif not whole:
                    self._score_pos += 1
                    continue  # only cached slices are scored
            self._score_pos += 1
            self._scores[ref] = (seq, *self._score_plane(ref))
        while (self._score_pos >= len(self._score_order) and self._refine_pos < len(self._refine)
               and time.perf_counter() - t0 < budget_s):
            with self._cv:
                if self._wanted is not None or self._closed:
                    return
            ref = self._refine[self._refine_pos]
            self._refine_pos += 1
            self._scores[ref] = (seq, *self._score_plane(ref))

    def _cached(self, ref: SliceRef) -> bool:
        if ref in self._plane_cache:
            return True
        cache = self.bank._cache
        return all(t in cache for t in self._plane_tiles(ref))

    def plane_by_block(self, ref: SliceRef) -> bool:
        """Whether ``ref``'s features are computed as one block (its tiles would take more than half of
        the tile cache, so a preview would recompute and evict them every time) rather than from tiles."""
        if self.inplane:
            return False
        return len(self._plane_tiles(ref)) * self.bank.tile_bytes > self.bank.cache_bytes // 2

    def _block_first(self, ref: SliceRef) -> bool:
        """Whether a stroke's preview of ``ref`` computes the plane as one block first: its tiles do not
        fit the cache, or they are not all computed yet. A cold plane as a block costs about the plane
        (axis by axis, cropped after each axis: ``FeatureBank.block_features``) where its tiles cost
        their whole depth (every voxel of the 128^3 demo for a y or x plane); the tiles follow while idle."""
        if self.inplane or ref in self._plane_cache:
            return False
        return self.plane_by_block(ref) or not self._cached(ref)

    def _plane_block(self, ref: SliceRef) -> tuple:
        block = [slice(None)] * 3
        block[ref.axis_number] = ref.index
        return tuple(block)

    def _plane_features(self, ref: SliceRef, keep: bool = True, block: bool = False) -> np.ndarray:
        """``(H, W, F)`` features of a plane (in-plane features of that plane's own orientation).

        The planes previewed are kept assembled (``keep``; the image never changes, so neither do they):
        a stroke's preview then does not copy the plane's features out of the tiles again (64 MB at
        512^2), and a plane whose tiles do not fit the cache (or, with ``block``, are not computed yet)
        is computed once as one block."""
        arr = self._plane_cache.get(ref)
        if arr is not None:
            self._plane_cache.move_to_end(ref)
            return arr
        sel = self._plane_block(ref)
        if (block and not self.inplane) or self.plane_by_block(ref):
            arr = np.squeeze(self.bank.block_features(sel), axis=1 + ref.axis_number)  # (F, H, W)
            arr = np.ascontiguousarray(np.moveaxis(arr, 0, -1))
            keep = True  # computed at this cost, always kept
        else:
            feats = self.bank.features(sel, axis=ref.axis_number) if self.inplane else self.bank.features(sel)
            arr = np.squeeze(feats, axis=ref.axis_number)
        if keep:
            arr.flags.writeable = False
            used = sum(a.nbytes for a in self._plane_cache.values())
            while self._plane_cache and used + arr.nbytes > self.plane_cache_bytes:
                used -= self._plane_cache.popitem(last=False)[1].nbytes
            self._plane_cache[ref] = arr
        return arr

    def _labelled_features(self, coords: np.ndarray, axes: np.ndarray) -> np.ndarray:
        """Features ``(N, F)`` of labelled voxels: from a block-computed plane they lie on when there is
        one (3D features do not depend on the plane a voxel is seen in), else from the tiles."""
        if self.inplane or not self._plane_cache:
            return self.bank.features_at(coords, axes=axes) if self.inplane else self.bank.features_at(coords)
        out = np.empty((coords.shape[0], self.bank.n_features), np.float32)
        done = np.zeros(coords.shape[0], bool)
        for ref, arr in list(self._plane_cache.items()):
            a = ref.axis_number
            m = ~done & (coords[:, a] == ref.index)
            if m.any():
                o = [b for b in range(3) if b != a]
                out[m] = arr[coords[m, o[0]], coords[m, o[1]]]
                done |= m
        if not done.all():
            out[~done] = self.bank.features_at(coords[~done])
        return out

    def _plane_tiles(self, ref: SliceRef) -> list:
        block = self._plane_block(ref)
        return self.bank.tiles_of(block, axis=ref.axis_number) if self.inplane else self.bank.tiles_of(block)

    #: The downsampled copy's features take at most this share of the feature cache's bound.
    COARSE_CACHE_SHARE = 0.25

    def coarse_factor(self) -> int:
        """The block size (a power of 2) of the downsampled copy idle scoring uses: 2 where the whole
        volume's features fit the cache (the copy serves the first pass only), else the smallest whose
        features fit :attr:`COARSE_CACHE_SHARE` of it; then doubled while the copy has more than twice
        the voxels of a score grid (``score_px``^3)."""
        f, budget = 2, self.bank.cache_bytes * self.COARSE_CACHE_SHARE
        voxels = lambda f: int(np.prod([-(-n // f) for n in self.shape]))  # noqa: E731
        while voxels(f) * self.bank.n_features * 4 > budget:
            f *= 2
        # and no more voxels than two score grids (:meth:`_coarse_grid`, score_px per side): the copy
        # is read at that grid anyway, so a finer one only costs filtering (512^3: the 4x copy's features
        # took 36 s of a cold commit's 55 s, for the same 8-voxel granularity as the 8x copy's)
        while voxels(f) > 2 * self.score_px ** 3:
            f *= 2
        return f

    def _coarse_bank(self) -> tuple[int, Any]:
        if self._coarse is None:
            from ..instant.features import FeatureBank

            f = self.coarse_factor()
            small = np.empty(tuple(-(-n // f) for n in self.shape), np.float32)
            Y, X = self.shape[1], self.shape[2]
            for k, z0 in enumerate(range(0, self.shape[0], f)):  # f z slices at a time: bounded memory
                slab = np.asarray(self.bank.image[z0:z0 + f], np.float32)
                pad = [(0, 0), (0, -Y % f), (0, -X % f)]
                cnt = np.pad(np.ones(slab.shape, np.float32), pad)
                slab = np.pad(slab, pad)
                d = slab.shape[0]
                sums = slab.reshape(d, -(-Y // f), f, -(-X // f), f).sum(axis=(0, 2, 4))
                small[k] = sums / cnt.reshape(d, -(-Y // f), f, -(-X // f), f).sum(axis=(0, 2, 4))
            kw = dict(self._feature_kw, cache_bytes=max(int(self.bank.cache_bytes * self.COARSE_CACHE_SHARE), 1 << 26))
            kw.pop("tile_shape", None)
            self._coarse = (f, FeatureBank(small, self.bank.spacing, **kw))
        return self._coarse

    def _score_coarse(self, ref: SliceRef, seq: int) -> tuple | None:
        """Scores of ``ref`` from the downsampled copy's probability grid (:meth:`_coarse_grid`; the
        slices that fall on one grid plane share them); ``None`` until the grid of fit ``seq`` exists."""
        got = self._coarse_grid(seq)
        if got is None:
            return None
        _, f, strides, probs = got
        a = ref.axis_number
        gi = min((ref.index // f) // strides[a], probs.shape[1 + a] - 1)
        key = (a, gi)
        if key not in self._coarse_memo:
            o = [b for b in range(3) if b != a]
            plane = np.take(probs, gi, axis=1 + a)[None]  # (1, C, h, w)
            self._coarse_memo[key] = self._scores_from(ref, plane, (f * strides[o[0]], f * strides[o[1]]))
        return self._coarse_memo[key]

    def _coarse_grid(self, seq: int) -> tuple | None:
        """``(seq, f, strides, probs (C, gz, gy, gx))``: the class probabilities of the downsampled copy
        (block size ``f``) at every ``strides[axis]``-th voxel, at most :attr:`score_px` per side, from a
        classifier of its own fitted on the labelled voxels' coarse features. One prediction ranks every
        slice on every axis: a slice at a time, a cold 128^3 volume's first quarter of slices took
        ~0.5 s each at load 5 (a tree ensemble's fixed cost per call), ~25 s in all before the first
        ranking (docs/BENCHMARKS.md, "Commit to suggestions"). ``None`` while a stroke or request waits,
        or before labels of two classes."""
        if self._coarse_probs is not None and self._coarse_probs[0] == seq:
            return self._coarse_probs
        f, bank = self._coarse_bank()
        if self._coarse_fit is None or self._coarse_fit[0] != seq:
            if self._train is None:
                return None
            coords, labels = self._train
            small = coords // f
            _, first = np.unique(np.ravel_multi_index(small.T, bank.shape), return_index=True)
            if np.unique(labels[first]).size < 2:
                return None
            tiles = {tuple(t) for t in np.unique(small[first] // np.array(bank.tile_shape), axis=0)}
            if not self._warm(bank, sorted(tiles)):
                return None
            clf = self._make_classifier()
            clf.fit(bank.features_at(small[first]), labels[first])
            self._coarse_fit, self._coarse_memo = (seq, clf), {}
        clf = self._coarse_fit[1]
        if not self._warm(bank, bank.tiles_of((slice(None),) * 3)):
            return None
        # where every slice is re-scored from its own features afterwards (_refine), the grid only
        # orders that second pass and the first queue: half the side, an eighth of the trees' work
        # (each stroke's refit starts it again; 262k voxels took most of a cold 128^3 commit's 17 s)
        side = self.score_px // 2 if self.scores_whole_volume else self.score_px
        strides = tuple(max(1, -(-n // max(1, side))) for n in bank.shape)
        axes = [np.arange(0, n, st) for n, st in zip(bank.shape, strides)]
        gshape = tuple(len(x) for x in axes)
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        probs = np.empty((grid.shape[0], self.n_classes), np.float32)
        rows = self.FULL_BLOCK_PIXELS
        for r0 in range(0, grid.shape[0], rows):  # in blocks: a stroke waits for one block at most
            if self._superseded():
                return None
            probs[r0:r0 + rows] = clf.predict_proba(bank.features_at(grid[r0:r0 + rows]))
        self._coarse_probs = (seq, f, strides, np.moveaxis(probs.reshape(*gshape, self.n_classes), -1, 0))
        self._coarse_memo = {}
        return self._coarse_probs

    def _warm(self, bank: Any, tiles: list) -> bool:
        """Compute a bank's tiles one at a time; False as soon as a stroke or request is waiting."""
        for t in tiles:
            if self._superseded():
                return False
            bank.tile_features(t)
        return True

    def _score_plane(self, ref: SliceRef) -> tuple[dict[str, float], np.ndarray, float]:
        """Scores of ``ref`` from its own features and the current fit (see :meth:`_scores_from`)."""
        feats = self._plane_features(ref, keep=False)
        step = max(1, -(-max(feats.shape[:2]) // self.score_px))
        probs = np.moveaxis(self._scoring_classifier().predict_proba(feats[::step, ::step]), -1, 0)[None]  # (1, C, h, w)
        return self._scores_from(ref, probs, (step, step))

    def _scoring_classifier(self) -> Any:
        """The fit that scores slices from their filter features alone: the current fit, or, when that one
        also has the deep features (each plane would need the network's forward pass), a second fit on the
        same voxels' filter features, made once per fit."""
        if self._fit_deep is None:
            return self.classifier
        seq = int(self.fitted_seq)
        if self._filters_fit is None or self._filters_fit[0] != seq:
            clf = self._make_classifier()
            clf.fit(self._filter_feats, self._train[1])
            self._filters_fit = (seq, clf)
        return self._filters_fit[1]

    #: The deep tier's features are used where every plane of the volume has at most this many pixels
    #: (the network's forward pass of a plane, and its 16 channels, grow with it: at 2048^2 about 270 MB).
    DEEP_MAX_PIXELS = 1024 * 1024
    #: Planes of deep features kept (LRU), per deep version.
    DEEP_PLANES = 8

    def deep_features_possible(self) -> bool:
        """Whether this volume's planes are small enough for the deep features (:attr:`DEEP_MAX_PIXELS`)."""
        a, b = sorted(self.shape)[1:]
        return a * b <= self.DEEP_MAX_PIXELS

    def _deep_plane(self, ref: SliceRef) -> np.ndarray:
        """``(k, H, W)``: the current deep version's features of ``ref``'s plane (computed once, kept LRU)."""
        arr = self._deep_planes.get(ref)
        if arr is not None:
            self._deep_planes.move_to_end(ref)
            return arr
        arr = self.deep_features.plane(np.asarray(self.bank.image[ref.selection()]))
        arr.flags.writeable = False
        self._deep_planes[ref] = arr
        while len(self._deep_planes) > self.DEEP_PLANES:
            self._deep_planes.popitem(last=False)
        return arr

    def _deep_at(self, coords: np.ndarray, axes: np.ndarray) -> np.ndarray:
        """``(N, k)`` deep features of labelled voxels, each from the plane of the slice it was labelled
        on. Per plane the values at its labelled pixels are kept (``_deep_vox``), so a stroke runs the
        network on the planes that gained pixels only (the one painted), not on every labelled slice."""
        k = self.deep_features.components
        out = np.empty((len(coords), k), np.float32)
        ax = axes.astype(np.int64)
        keys = np.unique(np.stack([ax, coords[np.arange(len(coords)), ax]], 1), axis=0) if len(coords) else []
        for a, i in keys:
            ref = SliceRef("zyx"[a], int(i))
            m = (ax == a) & (coords[:, a] == i)
            o = [b for b in range(3) if b != a]
            w = self.shape[o[1]]
            flat = coords[m, o[0]] * w + coords[m, o[1]]
            got = self._deep_vox.get(ref)
            if got is not None:
                pos = np.searchsorted(got[0], flat)
                hit = (pos < got[0].size) & (got[0][np.minimum(pos, got[0].size - 1)] == flat)
                if hit.all():
                    out[m] = got[1][pos]
                    continue
            plane = self._deep_plane(ref)
            self._deep_vox[ref] = _pixels_of(plane, np.unique(flat) if got is None else np.union1d(got[0], flat))
            out[m] = plane.reshape(k, -1)[:, flat].T
        return out

    #: The PCA of the deep features is fitted on the head features of at most this many labelled slices.
    DEEP_FIT_SLICES = 8
    #: Those slices' head features are kept for their planes' values up to this many bytes in all.
    DEEP_KEEP_MAPS_BYTES = 256 * 2**20

    def _start_deep_refresh(self) -> None:
        """A new deep version: prepare its features for the next fits, in steps a stroke interrupts
        (:meth:`_deep_refresh_steps`: the head features of up to :attr:`DEEP_FIT_SLICES` labelled slices
        for the PCA, then each labelled plane's voxels); the current features serve until it is done."""
        if self._deep_model is None or not self.deep_features_possible():
            return
        got = self._deep_model()
        if got is None:
            return
        net, normalise, version = got
        version = int(version)
        if (self.deep_features is not None and self.deep_features.version == version) or (
                self._deep_pending is not None and self._deep_pending["deep"].version == version):
            return
        refs = list(dict.fromkeys(self._labelled_slices()))
        if not refs:
            return
        from ..instant.deep import DeepFeatures

        pick = np.unique(np.linspace(0, len(refs) - 1, min(len(refs), self.DEEP_FIT_SLICES)).round().astype(int))
        self._deep_pending = {"deep": DeepFeatures(net, normalise, version=version), "fit": [refs[i] for i in pick], "maps": [],
                              "refs": refs, "pos": 0, "planes": OrderedDict(), "vox": {}, "t": 0.0}

    def _deep_refresh_steps(self) -> None:
        """Steps of the pending refresh until it is done or a stroke or request waits; then the switch:
        tier 1 refits with the new features and predicts the plane on screen again."""
        job = self._deep_pending
        if job is None:
            return
        deep = job["deep"]
        while not self._superseded():
            t0 = time.perf_counter()
            if len(job["maps"]) < len(job["fit"]):
                ref = job["fit"][len(job["maps"])]
                job["maps"].append(deep.head_features(np.asarray(self.bank.image[ref.selection()])))
                if len(job["maps"]) == len(job["fit"]):
                    deep.fit_maps([m for m, _ in job["maps"]])
                    # the fit slices' maps project below instead of running the network on them again,
                    # where they are small enough to keep (a 512^2 slice's: 16 MB; 8 of 1024^2: 500 MB)
                    keep = sum(m.nbytes for m, _ in job["maps"]) <= self.DEEP_KEEP_MAPS_BYTES
                    job["kept"] = dict(zip(job["fit"], job["maps"])) if keep else {}
                    job["maps"] = [None] * len(job["fit"])
            elif job["pos"] < len(job["refs"]):
                ref = job["refs"][job["pos"]]
                job["pos"] += 1
                got = self._voxels.get(ref)
                if got is not None and got[1].shape[0]:
                    kept = job.get("kept", {}).pop(ref, None)
                    size = tuple(n for a, n in enumerate(self.shape) if a != ref.axis_number)
                    plane = deep.project(*kept, size) if kept is not None else deep.plane(np.asarray(self.bank.image[ref.selection()]))
                    a = ref.axis_number
                    o = [b for b in range(3) if b != a]
                    job["vox"][ref] = _pixels_of(plane, np.unique(got[1][:, o[0]] * self.shape[o[1]] + got[1][:, o[1]]))
                    plane.flags.writeable = False
                    job["planes"][ref] = plane
                    while len(job["planes"]) > self.DEEP_PLANES:
                        job["planes"].popitem(last=False)
            else:
                with self._cv:
                    self.deep_features, self._deep_planes, self._deep_vox = deep, job["planes"], job["vox"]
                    self._deep_pending = None
                    self._fit_stale = True
                    if self._wanted is None and self._last_ref is not None:
                        self._wanted = self._last_ref  # the plane on screen again, with the new features
                    self._cv.notify_all()
                self.timings["deep_refresh_s"] = job["t"] + time.perf_counter() - t0
                return
            job["t"] += time.perf_counter() - t0

    def _scores_from(self, ref: SliceRef, probs: np.ndarray, step: tuple[int, int]) -> tuple[dict[str, float], np.ndarray, float]:
        """Acquisition scores, embedding and foreground share of ``ref`` from its class probabilities
        ``(1, C, h, w)`` at every ``step``-th full-resolution pixel (rows, columns)."""
        from ..acquisition.pool import SliceCandidates

        cand = SliceCandidates.from_predictions([ref], probs)
        scores = {k: float(v[0]) for k, v in cand.uncertainty.items()}
        if self._deep_prediction is not None:
            deep = self._deep_prediction(ref)
            if deep is not None:  # disagreement between the tiers: one more uncertainty signal
                h, w = probs.shape[2:]
                deep = deep[::step[0], ::step[1]][:h, :w]
                pred = (probs[0].argmax(0) + 1)[:deep.shape[0], :deep.shape[1]]
                scores["disagreement"] = float((pred != deep).mean())
        mean = probs[0].mean(axis=(1, 2))
        emb = np.concatenate([mean, probs[0].std(axis=(1, 2))]).astype(np.float32)  # class make-up of the slice
        return scores, emb, float(cand.foreground_fraction[0])

    def candidates(self, fresh_only: bool = False) -> tuple[Any, float]:
        """The slices tier 1 scored, as ``SliceCandidates`` (``model_version`` ``"instant:SEQ"``), and the
        share of all slices they cover (0..1); ``(None, 0.0)`` before any. ``fresh_only``: only the slices
        scored by the current fit (the others keep an earlier fit's scores until re-scored)."""
        from ..acquisition.pool import SliceCandidates

        items = list(self._scores.items())
        if fresh_only:
            items = [(r, v) for r, v in items if v[0] == self.fitted_seq]
        if not items or self.fitted_seq is None:
            return None, 0.0
        keys = set.intersection(*(set(v[1]) for _, v in items))
        refs = [r for r, _ in items]
        unc = {k: np.array([v[1][k] for _, v in items], np.float32) for k in keys}
        emb = np.stack([v[2] for _, v in items])
        fg = np.array([v[3] for _, v in items], np.float32)
        cand = SliceCandidates(refs, unc, emb, fg, model_version=f"instant:{self.fitted_seq}")
        return cand, len(items) / max(1, len(self._score_order))

    def _collect(self, dirty: set[SliceRef] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """Coordinates ``(N, 3)``, labels ``(N,)``, held-out flags and the axis of the slice each
        labelled voxel was painted on; and the seq."""
        from ..training.holdout import heldout_voxels

        refs = list(dict.fromkeys(self._labelled_slices()))
        seq = -1
        for ref in refs:
            if dirty is None or ref in dirty or ref not in self._planes:
                self._planes[ref] = self._read_labels(ref)
        for gone in [r for r in self._planes if r not in refs]:
            del self._planes[gone]
        for gone in [r for r in self._voxels if r not in self._planes]:
            del self._voxels[gone]
        coords, labels, held, axes = [], [], [], []
        for ref in refs:
            plane, s = self._planes[ref]
            seq = max(seq, s)
            got = self._voxels.get(ref)
            if got is None or got[0] is not plane:  # re-read: its voxels and held-out strokes again
                rows, cols = np.nonzero(plane)
                c = np.empty((rows.size, 3), np.int64)
                others = [a for a in range(3) if a != ref.axis_number]
                c[:, ref.axis_number] = ref.index
                c[:, others[0]], c[:, others[1]] = rows, cols
                h = (heldout_voxels(ref, plane, fraction=self.holdout_fraction)[rows, cols] if self.holdout_fraction and rows.size
                     else np.zeros(rows.size, bool))
                got = self._voxels[ref] = (plane, c, plane[rows, cols], h)
            if not got[1].shape[0]:
                continue
            coords.append(got[1])
            axes.append(np.full(got[1].shape[0], ref.axis_number, np.int8))
            labels.append(got[2])
            held.append(got[3])
        if not coords:
            return np.zeros((0, 3), np.int64), np.zeros(0, np.uint8), np.zeros(0, bool), np.zeros(0, np.int8), seq
        c, y, h, a = np.concatenate(coords), np.concatenate(labels), np.concatenate(held), np.concatenate(axes)
        flat = np.ravel_multi_index(c.T, self.shape)  # a voxel painted on two crossing slices counts once
        _, first = np.unique(flat, return_index=True)
        return c[first], y[first], h[first], a[first], seq

    #: A stroke's coarse first look comes from the first this many trees of the ensemble; the rest are
    #: grown (``InstantClassifier.grow``, the same ensemble as a full fit) before the full plane and
    #: before slices are scored, in steps that a newer stroke interrupts.
    QUICK_TREES = 16

    def _complete_fit(self) -> bool:
        """Grow the partial fit to the whole ensemble; False when a newer stroke or request came first."""
        clf = self.classifier
        t0 = time.perf_counter()
        while clf is not None and not clf.complete:
            if self._superseded():
                return False
            clf.grow(self.QUICK_TREES)
        self.timings["grow_s"] = self.timings.get("grow_s", 0.0) + time.perf_counter() - t0
        return True

    def _fit(self, dirty: set[SliceRef] | None, quick: bool = False) -> None:
        t0 = time.perf_counter()
        coords, labels, held, axes, seq = self._collect(dirty)
        seq = max(seq, self._seq_taken)  # also when the change emptied a slice (no plane of it is read)
        t1 = time.perf_counter()
        if np.unique(labels).size < 2:
            self.classifier, self.fitted_seq, self.heldout_dice = None, seq, None
            return
        feats = self._labelled_features(coords, axes)
        self._filter_feats = feats
        deep = self.deep_features
        every = feats  # with the deep columns when there are any: the held-out fit compares both sets
        if deep is not None:
            every = np.concatenate([feats, self._deep_at(coords, axes)], axis=1)
            if self._use_deep:
                feats = every
        self._fit_deep = None if deep is None or not self._use_deep else deep.version
        self._fit_stale = False
        t2 = time.perf_counter()
        train = ~held
        use_holdout = held.sum() >= 200 and np.unique(labels[held]).size >= 2 and np.unique(labels[train]).size >= 2
        # The preview comes from a fit on every labelled voxel (what serves); the held-out score, which
        # only decides which tier serves, from a second fit without the held-out strokes, made while
        # idle so the stroke's preview does not wait for it.
        clf = self._make_classifier()
        clf.fit(feats, labels, first_trees=self.QUICK_TREES if quick else None)
        t3 = time.perf_counter()
        self._pending_heldout = (every, labels, held, coords) if use_holdout else None
        if not use_holdout:
            self.heldout_dice, self.heldout_per_class = None, []
            self._held_eval, self.heldout_deep, self.heldout_blend, self.heldout_deep_version = None, None, None, None
        self.classifier, self.fitted_seq = clf, seq
        self._train = (coords, labels)
        self._score_pos = 0  # re-score every slice with the new fit (old scores serve meanwhile)
        self._refine, self._refine_pos = [], 0
        self.timings = {"collect_s": t1 - t0, "features_s": t2 - t1, "fit_s": t3 - t2, "score_s": time.perf_counter() - t3,
                        "labelled": int(labels.size), "held_out": int(held.sum()) if use_holdout else 0,
                        "deep_features": self._fit_deep}
        if self._deep_model is not None and not self._deep_looked and self.deep_features_possible():
            self._deep_looked = True  # later versions come through deep_changed
            with self._cv:
                self._deep_due = True  # a deep version may exist already (a reopened project): look once idle

    def _score_heldout(self, feats: np.ndarray, labels: np.ndarray, held: np.ndarray, coords: np.ndarray | None = None) -> None:
        """Fit without the held-out strokes and score on them (the evidence for the served tier); then
        the deep model and the blend of both tiers on the same voxels (:meth:`_score_deep`)."""
        t0 = time.perf_counter()
        nf = self.bank.n_features

        def score(x: np.ndarray) -> tuple[Any, np.ndarray]:
            clf = self._make_classifier()
            clf.fit(x[~held], labels[~held])
            p = clf.predict_proba(x[held]).astype(np.float32, copy=False)  # (N, C)
            return _dice((p.argmax(-1) + 1).astype(labels.dtype), labels[held], self.n_classes), p

        (dice, per_class), probs = score(feats[:, :nf])
        if feats.shape[1] > nf:  # the deep tier's features too: tier 1 uses them only where they score higher
            (d_deep, pc_deep), p_deep = score(feats)
            use = use_deep_features(d_deep, dice)
            self.heldout_filters = dice
            if use:
                dice, per_class, probs = d_deep, pc_deep, p_deep
            if use != self._use_deep:
                with self._cv:
                    self._use_deep, self._fit_stale = use, True
                    if self._wanted is None and self._last_ref is not None:
                        self._wanted = self._last_ref  # refit with the chosen set and predict the plane on screen again
                    self._cv.notify_all()
        self.heldout_dice, self.heldout_per_class = dice, per_class
        self._held_eval = None if coords is None else (coords[held], labels[held], probs)
        self.timings["heldout_fit_s"] = time.perf_counter() - t0
        self._score_deep()

    def _score_deep(self) -> None:
        """The deep version's and the blend's held-out Dice on tier 1's held-out voxels (``None`` without
        a deep version that has volume probabilities)."""
        got = None
        if self._held_eval is not None and self._deep_probabilities is not None:
            coords, labels, probs = self._held_eval
            got = self._deep_probabilities(coords)
        if got is None:
            self.heldout_deep, self.heldout_blend, self.heldout_deep_version = None, None, None
            return
        deep, version = got
        deep = np.asarray(deep, np.float32)
        self.heldout_deep = _dice((deep.argmax(-1) + 1).astype(labels.dtype), labels, self.n_classes)[0]
        self.heldout_blend = _dice((blend(probs, deep).argmax(-1) + 1).astype(labels.dtype), labels, self.n_classes)[0]
        self.heldout_deep_version = int(version)

    def _predict(self, ref: SliceRef, dirty: set[SliceRef] | None, coarse: bool = False) -> PlanePreview | None:
        t0 = time.perf_counter()
        block_s = None
        if self._block_first(ref):
            self._plane_features(ref, block=True)  # first: the strokes on this plane take their features from it
            block_s = time.perf_counter() - t0
        if dirty is None or dirty or self.classifier is None or self._fit_stale:
            self._fit(dirty, quick=coarse)
        if not coarse and self.classifier is not None and not self.classifier.complete:
            while not self.classifier.complete:
                self.classifier.grow()
        if block_s is not None:
            self.timings["plane_features_s"] = block_s
        if self.classifier is None:
            return None
        t1 = time.perf_counter()
        feats = self._plane_features(ref)
        deep = None if self._fit_deep is None else np.moveaxis(self._deep_plane(ref), 0, -1)  # (H, W, k) view
        h, w = feats.shape[:2]
        k = self.coarse_stride(ref) if coarse else 1

        def rows_of(r0: int, r1: int, step: int = 1) -> np.ndarray:
            f = feats[r0:r1:step, ::step]
            return f if deep is None else np.concatenate([f, deep[r0:r1:step, ::step]], axis=-1)

        if coarse:  # 1 / k^2 of the pixels: the tree ensemble's cost is per pixel
            probs = self.classifier.predict_proba(rows_of(0, h, k))
        else:
            probs = np.empty((h, w, self.n_classes), np.float32)  # (H, W, C), in row blocks
            rows = max(1, self.FULL_BLOCK_PIXELS // max(1, w))
            for r0 in range(0, h, rows):
                if r0 and self._superseded():
                    return None
                probs[r0:r0 + rows] = self.classifier.predict_proba(rows_of(r0, r0 + rows))
        probs = np.moveaxis(probs.astype(np.float32, copy=False), -1, 0)
        blended = None
        if self.blend_version is not None and self._deep_probabilities is not None:
            got = self._deep_probabilities(ref)
            if got is not None and int(got[1]) == self.blend_version:
                probs, blended = blend(probs, np.asarray(got[0], np.float32)[:, ::k, ::k]), int(got[1])
        pred = (probs.argmax(0) + 1).astype(np.uint8)
        conf = np.clip(np.round(probs.max(0) * 255), 0, 255).astype(np.uint8)
        if k > 1:  # the coarse look: each pixel's answer repeated over its k x k block (uint8: cheap at 2048^2)
            pred, conf = (np.repeat(np.repeat(a, k, 0), k, 1)[:h, :w] for a in (pred, conf))
        self.timings["coarse_plane_s" if coarse else "plane_s"] = time.perf_counter() - t1
        return PlanePreview(ref, int(self.fitted_seq), pred, conf, probs, time.perf_counter() - t0, coarse, blended)


def _pixels_of(plane: np.ndarray, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(flat, (N, k) values)``: a ``(k, H, W)`` plane's values at the sorted flat pixel indices ``flat``
    (what ``LivePreview._deep_vox`` keeps of a labelled plane)."""
    return flat, np.ascontiguousarray(plane.reshape(plane.shape[0], -1)[:, flat].T)


def blend(instant: np.ndarray, deep: np.ndarray) -> np.ndarray:
    """The blend of the tiers: the mean of their class probabilities (same shapes, float32)."""
    return np.float32(0.5) * (np.asarray(instant, np.float32) + np.asarray(deep, np.float32))


def default_cache_bytes() -> int:
    """The feature cache: a fifth of the machine's memory, between 768 MiB and 6 GiB. A 512^2 plane
    of a 32 x 512 x 512 volume touches 8 tiles of 244 MB (61 features, float32): a smaller cache
    recomputed them at every stroke (120 s each, measured in the napari dock)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        total = 8 << 30
    return int(min(6 << 30, max(768 << 20, total // 5)))


def _dice(pred: np.ndarray, true: np.ndarray, n_classes: int) -> tuple[float | None, list[float | None]]:
    """Mean Dice over the classes present in ``true`` (class values 1..C)."""
    per = []
    for c in range(1, n_classes + 1):
        t, p = true == c, pred == c
        per.append(float(2 * (t & p).sum() / (t.sum() + p.sum())) if t.any() else None)
    valid = [d for d in per if d is not None]
    return (float(np.mean(valid)) if valid else None), per


def _spread_order(shape: tuple[int, ...]) -> list[SliceRef]:
    """Every slice of every axis, axes interleaved, each axis coarse to fine (0, n/2, n/4, 3n/4, ...):
    a partial pass already covers the volume evenly."""
    from ..types import AXES

    per_axis = []
    for a, n in enumerate(shape):
        order, seen, step = [], set(), 1 << max(0, int(n - 1).bit_length())
        while step >= 1:
            for i in range(0, n, step):
                if i not in seen:
                    seen.add(i)
                    order.append(SliceRef(AXES[a], i))
            step //= 2
        per_axis.append(order)
    out = []
    for k in range(max(len(o) for o in per_axis)):
        out += [o[k] for o in per_axis if k < len(o)]
    return out
