"""The annotation session: one UI-agnostic core that every front end drives.

The notebook widget and the napari dock translate UI events into calls on :class:`Session` and
subscribe to its signals; they hold no state the session does not know. Signals fire only from
the thread that calls the session's methods (front ends call :meth:`Session.poll` on their own
timer), so they always arrive on the UI thread.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from psygnal import Signal

from ..errors import InputError
from ..store import ProjectStore, create_project, open_project
from ..store import models as _models
from ..store.models import current_model
from ..store.project import PROJECT_FILE, SliceState
from ..types import AXES, EditAtom, SliceRef
from .values import ModelOutputs, ReadOnlyArray, TrainerStatus, VolumeFacts

__all__ = ["Session", "QueueItem"]


class QueueItem:
    """A suggestion in the queue, with whether a newer model has scored since (``stale``)."""

    __slots__ = ("suggestion", "stale", "skipped")

    def __init__(self, suggestion: Any, stale: bool = False, skipped: bool = False) -> None:
        self.suggestion = suggestion
        self.stale = stale
        self.skipped = skipped

    @property
    def ref(self) -> SliceRef:
        return SliceRef(self.suggestion.axis, self.suggestion.index)

    def to_json(self) -> dict[str, Any]:
        s = self.suggestion
        return {"axis": s.axis, "index": int(s.index), "score": float(s.score), "reason": s.reason,
                "model_version": s.model_version, "strategy": getattr(s, "strategy", ""), "stale": self.stale}

    def __repr__(self) -> str:
        s = self.suggestion
        return f"QueueItem({s.axis}={s.index}, score={s.score:.3g}, v{s.model_version}{', stale' if self.stale else ''})"


class Session:
    """Open or create a project and annotate it.

    Parameters
    ----------
    project
        A project directory, an open :class:`ProjectStore`, or (with ``volume``) a new directory.
    volume
        Create the project from this volume (path or array) when ``project`` does not exist.
    author
        Who edits (default: ``$USER``).
    strategy, n_suggestions
        How the suggestion queue is filled.
    auto_rerank
        Re-rank the queue when a model version lands or a slice is annotated (else mark it stale).
    live_preview
        Tier 1 live: refit the instant classifier after every stroke and predict the plane on screen
        in a background thread (``preview_changed``); the notebook widget and the napari dock turn it on.

    Examples
    --------
    >>> import numpy as np
    >>> from al_annotator.store import create_project
    >>> s = Session(create_project(None, np.zeros((4, 16, 16), np.uint8), classes="background,bone"))
    >>> _ = s.goto("y", 3); s.current
    SliceRef(axis='y', index=3)
    >>> atom = s.paint(np.arange(5), "bone"); s.labels()[0, :5].tolist()
    [2, 2, 2, 2, 2]
    >>> _ = s.undo(); int(s.labels().sum())
    0
    """

    slice_changed = Signal(object)  # SliceRef
    labels_changed = Signal(object)  # EditAtom or list of refs changed by another process
    slice_state_changed = Signal(object)  # SliceState
    suggestions_changed = Signal(list)  # list[QueueItem]
    model_version_changed = Signal(dict)  # current.json of the new version
    trainer_status_changed = Signal(object)  # TrainerStatus
    classes_changed = Signal(list)  # [{"value", "name", "colour"}, ...] after a palette edit here or elsewhere
    preview_changed = Signal(object)  # PlanePreview: tier 1's new prediction of a plane (after a stroke or goto)
    served_changed = Signal(dict)  # served_tier(): the tier serving the overlays, or its held-out scores, changed

    def __init__(
        self,
        project: str | os.PathLike | ProjectStore | None,
        *,
        volume: Any = None,
        author: str | None = None,
        strategy: str = "hybrid",
        n_suggestions: int = 8,
        read_only: bool = False,
        auto_rerank: bool = True,
        live_preview: bool = False,
        **create_kw: Any,
    ) -> None:
        if isinstance(project, ProjectStore):
            self.store = project
        elif project is None:
            if volume is None:
                raise InputError("Session needs a project directory, or volume=... to create one (in memory with project=None)")
            self.store = create_project(None, volume, author=author, **create_kw)
        elif volume is not None and not (Path(project) / PROJECT_FILE).exists():
            self.store = create_project(project, volume, author=author, **create_kw)
        else:
            self.store = open_project(project, author=author, read_only=read_only)
        if author:
            self.store.author = author
        self.author = self.store.author
        self.strategy = strategy
        self.n_suggestions = n_suggestions
        #: Policy, the same in every front end: re-rank the queue when a new model version lands
        #: (``True``), or keep it and mark it stale until :meth:`refresh_suggestions` (``False``).
        self.auto_rerank = bool(auto_rerank)
        self.current = SliceRef("z", self.store.shape[0] // 2)
        self.queue: list[QueueItem] = []
        self._skipped: set[SliceRef] = set()
        self._model = current_model(self.store)
        self._deep_net: tuple[Any, Any, int] | None = None  # the current version's network for tier 1's deep features
        self._trainer = None
        self._trainer_status = TrainerStatus()
        self._prediction_cache: tuple[int, Any] | None = None
        self._classes_seen = self._project_file_stamp()  # project.json as last read (palette edits)
        self._pinned: tuple[int | None, float] = (None, 0.0)
        self._pin_current()
        #: Tier 1 (the instant classifier) refits after every stroke and predicts the plane on screen
        #: (:mod:`al_annotator.core.live`); the front ends turn it on, scripts need not pay for it.
        self._live_preview = bool(live_preview)
        self._live = None
        #: A commit's re-rank waits for tier 1's current fit to score enough slices (take_previews re-ranks then).
        self._rerank_when_scored = False
        self._ranked_fresh = False
        self._fresh_pool = None
        self._served = self.served_tier()
        self.labels_changed.connect(self._live_on_labels)
        if self._live_preview:
            self.live_preview = True  # starts warming the plane on screen

    @classmethod
    def open(cls, project: str | os.PathLike, *, read_only: bool = False, **kw: Any) -> "Session":
        """Open an existing project; ``read_only=True`` for viewers (nothing is written, edits raise)."""
        return cls(project, read_only=read_only, **kw)

    @classmethod
    def create(cls, project: str | os.PathLike | None, volume: Any, **kw: Any) -> "Session":
        """Create a project from ``volume`` (an array or a volume file) at ``project`` and open it;
        ``project=None`` keeps it in memory (nothing is saved, no trainer can run)."""
        if project is not None and (Path(project) / PROJECT_FILE).exists():
            raise InputError(f"{project} is a project already: open it with Session.open({str(project)!r})")
        return cls(project, volume=volume, **kw)

    @property
    def read_only(self) -> bool:
        return self.store.read_only

    @property
    def session_id(self) -> str:
        """This session's id: its undo stack and the model version it pins for display."""
        return self.store.session

    # ------------------------------------------------------------------ navigation
    @property
    def shape(self) -> tuple[int, int, int]:
        return self.store.shape

    @property
    def classes(self) -> tuple[str, ...]:
        return self.store.config.classes

    @property
    def n_classes(self) -> int:
        return self.store.config.n_classes

    @property
    def colours(self) -> tuple[str, ...]:
        return tuple(self.store.config.colours)

    @property
    def model_version(self) -> int | None:
        return None if self._model is None else int(self._model["version"])

    # ------------------------------------------------------------------ the one door: reads
    @property
    def volume(self) -> VolumeFacts:
        """Shape, dtype, chunks, spacing, display window and where the project lives."""
        st = self.store
        info = st.volume_info
        lo, hi = st.display_window
        path = st.path
        return VolumeFacts(
            shape=tuple(st.shape), dtype=st.dtype, chunks=tuple(st.image.chunks), spacing=tuple(st.config.spacing),
            spacing_unit=st.config.spacing_unit, display_window=(lo, hi),
            value_range=(float(info.get("min", lo)), float(info.get("max", hi))),
            name=path.name if path is not None else "(in memory)", path=None if path is None else str(path),
            source=str(info.get("source", "")),
        )

    @property
    def image_array(self) -> ReadOnlyArray:
        """The whole image, read lazily (for lazy layers and slab caches); never written."""
        return ReadOnlyArray(self.store.image)

    @property
    def image_levels(self) -> list[ReadOnlyArray]:
        """The image and its pyramid, finest first: ``[image, level 1, level 2, ...]``, read-only and
        lazy; level ``k`` is the image averaged over ``2^k`` cubes, ``ceil(n / 2^k)`` a side
        (:mod:`al_annotator.store.pyramid`). Only the image when the store has no pyramid (a small
        volume, or a project from before it until ``check --repair``). Item ``k`` is level ``k``."""
        pyramid, levels = self.store.pyramid, [ReadOnlyArray(self.store.image)]
        while len(levels) in pyramid:  # item k is level k (a gap ends the list)
            levels.append(ReadOnlyArray(pyramid[len(levels)]))
        return levels

    @property
    def labels_array(self) -> ReadOnlyArray:
        """The saved labels, read lazily; pair a cache with :attr:`labels_seq`. Edits go through
        :meth:`apply_edit`. Reads go through the store's chunk reader (``ProjectStore.labels_view``:
        unlabelled chunks skipped by their bytes, the rest decoded into one buffer; a 2048^2 plane
        ~0.3-0.6 s -> 16-80 ms, docs/BENCHMARKS.md "bench_label_reads")."""
        return ReadOnlyArray(self.store.labels_view)

    @property
    def labels_seq(self) -> int:
        """The edit-log position the labels read now reflect: the one cache key for label planes in
        every front end (it grows with every edit, here or in another process once :meth:`poll`
        picked it up)."""
        return self.store.applied_seq

    def plane(self, what: str, ref: SliceRef | None = None, *, level: int = 0) -> np.ndarray | None:
        """One 2D plane of ``what`` ("image", "labels", "prediction", "confidence", "uncertainty")
        on any axis, at pyramid ``level`` (each side ``ceil(n / 2**level)``: the image averaged from the
        store's pyramid where it has one, the rest every 2**level-th voxel). Model outputs are ``None``
        before a model (or when the served version has no volume outputs)."""
        ref = ref or self.current
        ref.check(self.store.shape)
        if what in ("image", "labels"):  # the image from the store's pyramid when it has one
            return self.store.read_slice(ref, what, level=level)
        if what == "prediction":
            plane = self.prediction(ref)
        elif what == "confidence":
            plane = self.confidence(ref)
        elif what == "uncertainty":
            plane = self.uncertainty(ref)
        else:
            raise InputError(f"what must be image, labels, prediction, confidence or uncertainty, got {what!r}")
        if plane is None or not level:
            return plane
        if not isinstance(level, int) or level < 0:
            raise InputError(f"level must be a non-negative integer, got {level!r}")
        step = 2 ** level
        return np.ascontiguousarray(plane[::step, ::step])

    def label_plane(self, ref: SliceRef | None = None) -> tuple[np.ndarray, int]:
        """The labels of a slice with the log position they reflect (read the position first, so a
        cache never stores a plane newer than its key)."""
        seq = self.labels_seq
        return self.store.read_slice(ref or self.current, "labels"), seq

    def slice_state(self, ref: SliceRef | None = None) -> SliceState:
        return self.store.slice_state(ref or self.current)

    def slice_states(self, axis: str | None = None) -> list[SliceState]:
        return self.store.slice_states(axis)

    @property
    def can_undo(self) -> bool:
        return not self.read_only and self.store.can_undo(self.author)

    @property
    def can_redo(self) -> bool:
        return not self.read_only and self.store.can_redo(self.author)

    def history(self) -> list[dict[str, Any]]:
        """Published model versions, oldest first (version, created, metrics, ...)."""
        if self.store.path is None:
            return []
        return _models.list_model_versions(self.store)

    def model_outputs(self, version: int | None = None) -> ModelOutputs | None:
        """The served (default: current) model version's volume outputs, lazily readable; ``None``
        before the first version."""
        if version is None:
            if self._model is None:
                return None
            version, meta = int(self._model["version"]), dict(self._model)
        else:
            meta = next((v for v in self.history() if int(v["version"]) == int(version)), {"version": int(version)})
        arrays = _models.model_outputs(self.store, int(version))
        return ModelOutputs(int(version), **{k: ReadOnlyArray(a) for k, a in arrays.items()}, meta=meta)

    @staticmethod
    def strategies() -> list[str]:
        """The acquisition strategies the queue can rank by."""
        from ..acquisition import STRATEGIES

        return sorted(STRATEGIES)

    def class_value(self, value: int | str) -> int:
        """A class's stored label value from its name or value (raises naming the classes)."""
        value = self._class_value(value)
        n = self.store.config.n_classes
        if not 0 <= value <= n:
            names = ", ".join(f"{i + 1}={c}" for i, c in enumerate(self.store.config.classes))
            raise InputError(f"class value {value} is outside 0..{n} ({names})")
        return value

    def goto(self, ref_or_axis: SliceRef | str, index: int | None = None) -> SliceRef:
        """Move to a slice: ``goto(SliceRef("y", 4))`` or ``goto("y", 4)``."""
        if isinstance(ref_or_axis, SliceRef):
            ref = ref_or_axis
        else:
            if index is None:
                index = self.store.shape[AXES.index(SliceRef(ref_or_axis, 0).axis)] // 2
            ref = SliceRef(ref_or_axis, index)
        ref.check(self.store.shape)
        if ref != self.current:
            self.current = ref
            self.slice_changed.emit(ref)
            if self._live is not None and self._live_preview:
                if self._live.classifier is not None:
                    self._live.request(ref)  # the new plane's preview from the fitted tier 1
                else:
                    self._live.prefetch(ref)  # its features, before the first strokes
        return ref

    def image(self, ref: SliceRef | None = None) -> np.ndarray:
        return self.store.read_slice(ref or self.current, "image")

    def labels(self, ref: SliceRef | None = None) -> np.ndarray:
        return self.store.read_slice(ref or self.current, "labels")

    def prediction(self, ref: SliceRef | None = None) -> np.ndarray | None:
        """Predicted labels (1..C) of the served tier on a slice (tier 1's preview of that plane when
        tier 1 serves and has one, else the current model version), or ``None`` before either."""
        ref = ref or self.current
        preview = self._served_preview(ref)
        if preview is not None:
            return preview.prediction
        arr = self._prediction_array("prediction")
        return None if arr is None else np.asarray(arr[ref.selection()])

    def confidence(self, ref: SliceRef | None = None) -> np.ndarray | None:
        """Voxel confidence (max probability, 0..1) of the served tier, or ``None``."""
        ref = ref or self.current
        preview = self._served_preview(ref)
        if preview is not None:
            return preview.confidence.astype(np.float32) / 255.0
        arr = self._prediction_array("confidence")
        return None if arr is None else np.asarray(arr[ref.selection()]).astype(np.float32) / 255.0

    # ------------------------------------------------------------------ tier 1 live, and the served tier
    @property
    def prediction_token(self) -> tuple:
        """What the overlays show now, as a cache key: ``("deep", version)`` or ``("instant", seq of the
        newest fit)``; front ends re-read overlay planes when it changes (and on ``preview_changed``)."""
        if self._served["tier"] in ("instant", "blend") and self._live is not None and self._live_preview:
            # blend: tier 1's previews, blended with the deep version's probabilities (still previews in memory)
            return ("instant", self._live.fitted_seq if self._served["tier"] == "instant" else (self._live.fitted_seq, "blend", self.model_version))
        return ("deep", self.model_version)

    def served_tier(self) -> dict[str, Any]:
        """Which tier serves the overlays, chosen by evidence: the Dice each scored on the same
        held-out labelled voxels (``training.holdout``): tier 1 (``instant``), the deep model, and the
        blend of the two (the mean of their class probabilities), by :func:`~al_annotator.core.values.choose_served`.
        ``{"tier": "instant" | "deep" | "blend" | None, "instant": dice | None, "deep": dice | None,
        "blend": dice | None, "reason": str}``. The deep model's score is the one tier 1 measured on its
        own held-out voxels from that version's volume probabilities when it has one, else the trainer's."""
        from .values import choose_served

        live = self._live if self._live_preview else None  # off: tier 1 neither serves nor scores
        instant = None if live is None else live.heldout_dice
        fitted = live is not None and live.classifier is not None
        deep = blend = None
        if self._model is not None:
            m = self._model.get("metrics") or {}
            deep = m.get("heldout_dice") if m.get("heldout_dice") is not None else m.get("val_dice")
            deep = float(deep) if isinstance(deep, (int, float)) else None
            if live is not None and live.heldout_deep is not None and live.heldout_deep_version == int(self._model["version"]):
                deep, blend = live.heldout_deep, live.heldout_blend  # the same voxels as tier 1's score
        if fitted and self._model is not None:
            if instant is not None and live._fit_deep is not None:
                # tier 1 has the deep tier's features (it holds the network's evidence): it serves; no blend (it
                # would count the network twice). On EM the network alone and the blend were below tier 1 with the
                # features on the test slices in every round measured, while held-out scribbles over-rated the
                # network (docs/BENCHMARKS.md, "The served system")
                tier, why = "instant", f"the instant classifier has model v{live._fit_deep}'s features"
            elif instant is not None and deep is not None:
                tier, why = choose_served(instant, deep, blend)
            elif deep is not None and instant is None:
                tier, why = "deep", "the deep model scores higher on the held-out voxels"
            else:
                tier, why = "instant", "no held-out score for the deep model yet: the fresher instant classifier serves"
        elif fitted:
            tier, why = "instant", "no deep model version yet"
        elif self._model is not None:
            tier, why = "deep", "the instant classifier is not fitted yet (it needs labels of two classes)"
        else:
            tier, why = None, "paint two classes and the instant classifier predicts"
        return {"tier": tier, "instant": instant, "deep": deep, "blend": blend, "reason": why,
                "deep_features": None if live is None else live._fit_deep}

    @property
    def live_preview(self) -> bool:
        """Tier 1 live on (see :mod:`al_annotator.core.live`); turning it on starts computing the
        features of the plane on screen in the background, so the first stroke's preview is quick."""
        return self._live_preview

    @live_preview.setter
    def live_preview(self, on: bool) -> None:
        was, self._live_preview = self._live_preview, bool(on)
        if self._live_preview:
            live = self._ensure_live()
            if not was:  # strokes painted while it was off: refit before the next preview
                live.labels_changed(None, self.labels_seq)
            if live.classifier is None:
                live.prefetch(self.current)
            else:
                live.request(self.current)
        self._update_served()  # off: tier 1 no longer serves, its previews are not shown

    def preview(self, ref: SliceRef | None = None) -> Any:
        """Tier 1's newest :class:`~al_annotator.core.live.PlanePreview` of a plane (whatever serves), or ``None``."""
        return None if self._live is None else self._live.latest(ref or self.current)

    def request_preview(self, ref: SliceRef | None = None) -> bool:
        """Ask tier 1 for a preview of a plane (the one on screen); False when live preview is off.
        The result arrives as ``preview_changed`` from :meth:`take_previews`."""
        live = self._ensure_live()
        if live is None:
            return False
        live.request(ref or self.current)
        return True

    def take_previews(self) -> list[Any]:
        """Emit ``preview_changed`` for each preview tier 1 finished (and ``served_changed`` when the
        served tier changed); cheap, call it often (``poll`` calls it too). Returns the previews."""
        if self._live is None:
            return []
        done = self._live.take()
        self._update_served()
        for p in done:
            self.preview_changed.emit(p)
        if self._rerank_when_scored and self.auto_rerank and self._served["tier"] in ("instant", "blend"):
            if self._live.fresh_coverage() >= self.INSTANT_SCORES_MIN_COVERAGE:
                self.refresh_suggestions()  # clears the flag: ranked by the served fit
        return done

    def wait_preview(self, timeout: float = 60.0) -> list[Any]:
        """Wait until tier 1 finished what it was asked, then :meth:`take_previews` (scripts, tests)."""
        if self._live is not None:
            self._live.wait_idle(timeout)
        return self.take_previews()

    def served_summary(self) -> str:
        """The served tier in words, as both front ends show it: ``serving: instant classifier ·
        held-out Dice 0.83`` (see :func:`al_annotator.core.values.served_summary`)."""
        from .values import served_summary

        return served_summary(self.served_tier(), model_version=self.model_version, live=self.live_preview, error=self.live_error)

    @property
    def live_busy(self) -> bool:
        """Tier 1 is refitting or predicting a plane (the front ends may say "updating")."""
        return self._live is not None and self._live_preview and self._live.busy

    @property
    def live_timings(self) -> dict[str, float]:
        """Tier 1's last fit and plane timings (seconds) and voxel counts: collect_s, features_s, fit_s,
        score_s, plane_s, labelled, held_out; empty before the first fit."""
        return {} if self._live is None else dict(self._live.timings)

    @property
    def live_error(self) -> str | None:
        """Why tier 1's last fit or prediction failed (front ends show it), or ``None``."""
        return None if self._live is None else self._live.last_error

    def _update_served(self) -> None:
        served = self.served_tier()
        key = lambda d: (d["tier"], d["instant"], d["deep"], d.get("blend"))  # noqa: E731
        if key(served) != key(self._served):
            self._served = served
            if self._live is not None:
                want = int(self._model["version"]) if served["tier"] == "blend" and self._model is not None else None
                if want != self._live.blend_version:  # previews blended (or no longer): the plane on screen again
                    self._live.blend_version = want
                    if self._live_preview and self._live.classifier is not None:
                        self._live.request(self.current)
            self.served_changed.emit(dict(served))

    def _served_preview(self, ref: SliceRef) -> Any:
        if self._live is None or not self._live_preview or self._served["tier"] not in ("instant", "blend"):
            return None
        return self._live.latest(ref)

    def _ensure_live(self) -> Any:
        if not self._live_preview:
            return None
        if self._live is None:
            from .live import LivePreview

            st = self.store
            self._live = LivePreview(
                st.image, tuple(st.config.spacing), self.label_plane,
                lambda: [s.ref for s in st.slice_states() if s.state in ("in_progress", "annotated")],
                st.config.n_classes, deep_prediction=self._deep_plane, deep_probabilities=self._deep_probabilities,
                deep_model=self._deep_network,
            )
        return self._live

    def _deep_network(self) -> tuple[Any, Any, int] | None:
        """The current deep version's network on the CPU, its input normalisation and the version, for
        tier 1's deep features (``LivePreview``; called on tier 1's thread); ``None`` without a version
        whose checkpoint is on disk (older ones lose it) or when it does not load."""
        model = self._model
        if model is None:
            return None
        version = int(model["version"])
        got = self._deep_net
        if got is not None and got[2] == version:
            return got
        ckpt = _models.version_dir(self.store, version) / "checkpoint.pt"
        if not ckpt.is_file():
            return None
        try:  # a kernel without torch (the light install) keeps tier 1 on its filters
            from ..models.checkpoint import load_checkpoint
            from ..training.data import INPUT_NORMS, normalise
        except ImportError:
            return None
        try:
            net, meta = load_checkpoint(ckpt, map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - tier 1 goes on with its filters; the reason is kept
            self._deep_net_error = f"model v{version}'s checkpoint did not load for tier 1's deep features: {exc}"
            return None
        net.eval()
        norm = model.get("input_norm") if model.get("input_norm") in INPUT_NORMS else meta.get("input_norm", "window")
        norm = norm if norm in INPUT_NORMS else "window"
        window = self.store.display_window
        self._deep_net = (net, lambda im: normalise(im, window, norm), version)
        return self._deep_net

    def _deep_plane(self, ref: SliceRef) -> np.ndarray | None:
        """The current deep version's prediction of a plane (for the tiers' disagreement), or ``None``."""
        arr = self._prediction_array("prediction")
        return None if arr is None else np.asarray(arr[ref.selection()])

    def _deep_probabilities(self, where: Any) -> tuple[np.ndarray, int] | None:
        """The current deep version's class probabilities, with that version: of a plane ``(C, H, W)``
        (``where`` a SliceRef) or at voxels ``(N, C)`` (``where`` ``(N, 3)`` coordinates); ``None``
        without a version that has volume probabilities. Called on tier 1's thread."""
        model = self._model
        if model is None:
            return None
        version = int(model["version"])
        arr = _models.model_outputs(self.store, version).get("probabilities")
        if arr is None:
            return None
        if isinstance(where, SliceRef):
            return np.asarray(arr[(slice(None),) + where.selection()], np.float32), version
        c = np.asarray(where, np.int64)
        if not len(c):
            return np.zeros((0, int(arr.shape[0])), np.float32), version
        n_c = int(arr.shape[0])
        if hasattr(arr, "get_coordinate_selection"):  # zarr: reads only the chunks holding those voxels
            k = np.repeat(np.arange(n_c), len(c))
            zyx = np.tile(c, (n_c, 1))
            vals = np.asarray(arr.get_coordinate_selection((k, zyx[:, 0], zyx[:, 1], zyx[:, 2])), np.float32)
            return vals.reshape(n_c, len(c)).T.copy(), version
        return np.moveaxis(np.asarray(arr)[:, c[:, 0], c[:, 1], c[:, 2]], 0, -1).astype(np.float32), version

    def _live_on_labels(self, payload: Any) -> None:
        """Labels changed (a stroke here, or edits polled from elsewhere): tier 1 refits, then
        predicts the plane on screen."""
        live = self._ensure_live()
        if live is None:
            return
        if isinstance(payload, EditAtom):
            refs = [payload.slice_ref] + _crossing_slices(payload, self.store.shape, live._planes)
        else:
            refs = None  # another process's edits: re-read every labelled slice (their voxels are unknown here)
        live.labels_changed(refs, self.labels_seq)
        live.request(self.current)

    def uncertainty(self, ref: SliceRef | None = None) -> np.ndarray | None:
        """1 - confidence of the current model on a slice (what the uncertainty overlay shows)."""
        conf = self.confidence(ref)
        return None if conf is None else 1.0 - conf

    def _prediction_array(self, name: str) -> Any:
        if self._model is None:
            return None
        return _models.model_outputs(self.store, int(self._model["version"])).get(name)

    def _pin_current(self) -> None:
        """Pin the served model version so a trainer's pruning keeps its outputs while shown."""
        version = self.model_version
        if self.read_only or self.store.path is None:
            return
        if version != self._pinned[0] or time.time() - self._pinned[1] > 3600:
            try:
                _models.pin_version(self.store, self.session_id, version)
                self._pinned = (version, time.time())
            except OSError:
                pass  # a full disk: pruning may then drop it, the views show "no prediction"

    # ------------------------------------------------------------------ editing
    def apply_edit(self, atom: EditAtom) -> EditAtom:
        """Apply an edit; it is on disk when this returns. Emits ``labels_changed``."""
        if atom.author == "":
            atom = replace(atom, author=self.author)
        done = self.store.apply_edit(atom)
        self.labels_changed.emit(done)
        self._emit_state(done.slice_ref)
        return done

    def paint(self, indices: np.ndarray, value: int | str, *, ref: SliceRef | None = None, tool: str = "brush") -> EditAtom:
        """Set voxels (flat indices into the slice) to a class (name or label value; 0 erases)."""
        label = self.store.config.label_value(value) if isinstance(value, str) else value
        # no uint8 cast here: the store validates the value (300 or -1 is a LabelValueError, not an OverflowError)
        return self.apply_edit(EditAtom(ref or self.current, np.asarray(indices), np.asarray([label]), tool=tool))

    def erase(self, indices: np.ndarray, *, ref: SliceRef | None = None) -> EditAtom:
        return self.paint(indices, 0, ref=ref, tool="eraser")

    def flood_fill(self, row: int, col: int, value: int | str, *, ref: SliceRef | None = None) -> EditAtom:
        """Fill the 4-connected region of equal label around ``(row, col)`` on the slice (as napari's fill)."""
        from skimage.segmentation import flood

        ref = ref or self.current
        labels = self.labels(ref)
        h, w = labels.shape
        if not (0 <= row < h and 0 <= col < w):
            raise InputError(f"fill point ({row}, {col}) is outside the {h}x{w} slice {ref}")
        mask = flood(labels, (int(row), int(col)), connectivity=1)
        return self.paint(np.flatnonzero(mask), value, ref=ref, tool="fill")

    def accept_prediction(self, indices: np.ndarray, *, ref: SliceRef | None = None) -> EditAtom:
        """Copy the current model's prediction into the labels at ``indices`` (e.g. inside a brush)."""
        ref = ref or self.current
        pred = self.prediction(ref)
        if pred is None:
            raise InputError("there is no prediction yet: start the trainer and wait for the first model version")
        idx = np.asarray(indices)
        return self.apply_edit(EditAtom(ref, idx, pred.reshape(-1)[idx].astype(np.uint8), tool="accept"))

    def undo(self) -> EditAtom | None:
        done = self.store.undo(self.author)
        if done is not None:
            self.labels_changed.emit(done)
        return done

    def redo(self) -> EditAtom | None:
        done = self.store.redo(self.author)
        if done is not None:
            self.labels_changed.emit(done)
        return done

    def mark_annotated(self, ref: SliceRef | None = None, annotated: bool = True) -> None:
        """Commit a slice as fully annotated (or back to in progress). Removes it from the queue."""
        ref = ref or self.current
        self.store.set_slice_state(ref, "annotated" if annotated else "in_progress", author=self.author)
        self._emit_state(ref)
        if annotated:
            self._after_annotated({ref})

    def _after_annotated(self, refs: set[SliceRef]) -> None:
        """Policy, one place: a newly annotated slice (here or in another process) changes what is
        most informative next: re-rank (``auto_rerank``), else drop it from the queue."""
        if self.auto_rerank:
            self.refresh_suggestions()
            # tier 1 serving: rank again once the fit with every stroke so far has scored enough slices
            self._rerank_when_scored = self._live is not None and self._live_preview and not self._ranked_fresh
        elif any(item.ref in refs for item in self.queue):
            self.queue = [item for item in self.queue if item.ref not in refs]
            self.suggestions_changed.emit(list(self.queue))

    def _emit_state(self, ref: SliceRef) -> None:
        self.slice_state_changed.emit(self.store.slice_state(ref))

    # ------------------------------------------------------------------ suggestions
    def refresh_suggestions(self, strategy: str | None = None, n: int | None = None, seed: int = 0) -> list[QueueItem]:
        """Rank the next slices with the current model's scores (or a cold-start pick)."""
        from ..acquisition.project import suggest_for_project

        self.strategy = strategy or self.strategy
        self.n_suggestions = n = n or self.n_suggestions  # the policy's re-ranks keep this length
        pool = self._instant_pool()
        self._ranked_fresh = pool is not None and pool is self._fresh_pool
        if self._ranked_fresh:
            self._rerank_when_scored = False
        if pool is not None:  # tier 1 (or the blend) serves: rank with tier 1's scores
            from ..acquisition import suggest

            suggestions = suggest(pool, self.strategy, n=n + len(self._skipped), seed=seed)
        else:
            suggestions = suggest_for_project(self.store, strategy=self.strategy, n=n + len(self._skipped), seed=seed)
        items = [QueueItem(s) for s in suggestions if SliceRef(s.axis, s.index) not in self._skipped][:n]
        self.queue = items
        self.suggestions_changed.emit(list(self.queue))
        return list(self.queue)

    #: Tier 1's scores rank the queue once they cover this share of the slices (spread over the volume).
    INSTANT_SCORES_MIN_COVERAGE = 0.25

    def _instant_pool(self) -> Any:
        if self._live is None or not self._live_preview or self._served["tier"] not in ("instant", "blend"):
            return None
        self._fresh_pool = None
        fresh = self._live.fresh_coverage() >= self.INSTANT_SCORES_MIN_COVERAGE
        cand, coverage = self._live.candidates(fresh_only=fresh)  # the current fit's scores once they cover enough
        if cand is None or coverage < self.INSTANT_SCORES_MIN_COVERAGE:
            return None
        pool = cand.to_pool(annotated=list(self.store.annotated_slices()))
        if fresh:
            self._fresh_pool = pool
        return pool

    def next_suggestion(self) -> QueueItem | None:
        """Go to the best suggestion not yet annotated; returns it (``None`` if the queue is empty)."""
        for item in self.queue:
            if self.store.slice_state(item.ref).state != "annotated" and item.ref not in self._skipped:
                self.goto(item.ref)
                return item
        return None

    def skip(self, ref: SliceRef | None = None) -> None:
        """Drop a suggestion from the queue for this session."""
        ref = ref or self.current
        self._skipped.add(ref)
        self.queue = [item for item in self.queue if item.ref != ref]
        self.suggestions_changed.emit(list(self.queue))

    # ------------------------------------------------------------------ trainer
    @property
    def trainer(self):
        if self._trainer is None:
            from ..training.client import TrainerClient

            if self.store.path is None:
                raise InputError("the trainer needs a project directory; this session's project is in memory")
            self._trainer = TrainerClient(self.store.path)
        return self._trainer

    def start_trainer(self, **options: Any) -> int:
        """Start the background trainer (``watch`` mode): a round for every new annotation."""
        return self.trainer.start(watch=True, **options)

    def stop_trainer(self, timeout: float = 30.0) -> bool:
        return self.trainer.stop(timeout=timeout)

    def trainer_status(self) -> TrainerStatus:
        """The trainer as a typed value; ``.summary()`` is what front ends show."""
        if self.store.path is None:
            return TrainerStatus(state="unknown", warning="an in-memory project has no trainer (give a project directory)")
        from ..training.client import read_status

        return TrainerStatus.from_json(read_status(self.store.path))

    # ------------------------------------------------------------------ the class palette
    def class_table(self) -> list[dict[str, Any]]:
        """The classes as ``[{"value": 1, "name": ..., "colour": "#rrggbb"}, ...]`` (value = stored label)."""
        cfg = self.store.config
        return [{"value": i + 1, "name": n, "colour": c} for i, (n, c) in enumerate(zip(cfg.classes, cfg.colours))]

    def set_class_colour(self, value: int | str, colour: str) -> None:
        """Change a class's display colour (saved in the project; other front ends pick it up on poll)."""
        self._edit_classes(colours={self._class_value(value): colour})

    def rename_class(self, value: int | str, name: str) -> None:
        """Rename a class; its label value, the saved labels and the trained model are unchanged."""
        self._edit_classes(names={self._class_value(value): name})

    def _class_value(self, value: int | str) -> int:
        return self.store.config.label_value(value) if isinstance(value, str) else int(value)

    def _edit_classes(self, **kw: Any) -> None:
        self.store.edit_classes(**kw)
        self._classes_seen = self._project_file_stamp()
        self.classes_changed.emit(self.class_table())

    def _project_file_stamp(self) -> tuple[int, int] | None:
        if self.store.path is None:
            return None
        try:
            st = os.stat(Path(self.store.path) / PROJECT_FILE)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _reload_classes(self) -> bool:
        """Re-read the palette when another process edited ``project.json``; True if it changed."""
        stamp = self._project_file_stamp()
        if stamp is None or stamp == self._classes_seen:
            return False
        self._classes_seen = stamp
        if not self.store.reload_config():
            return False
        self.classes_changed.emit(self.class_table())
        return True

    # ------------------------------------------------------------------ polling
    def poll(self) -> dict[str, bool]:
        """Pick up what other processes did; emit signals. Call it on the UI's own timer.

        Returns which things changed: ``{"labels", "model", "trainer"}``, plus ``"classes"`` after a
        palette edit elsewhere and ``"states"`` after a slice state set elsewhere (an annotated slice
        re-ranks the queue, as :meth:`mark_annotated` does here).
        """
        changed = {"labels": False, "model": False, "trainer": False}
        if self._reload_classes():
            changed["classes"] = True
        new = self.store.refresh()
        if new:
            edits = [r for r in new if r.meta.get("type") != "state"]
            states = [r for r in new if r.meta.get("type") == "state" and "axis" in r.meta]
            if edits:
                refs = sorted({SliceRef(r.meta["axis"], r.meta["index"]) for r in edits if "axis" in r.meta})
                changed["labels"] = True
                self.labels_changed.emit(refs)
            if states:
                changed["states"] = True
                annotated = set()
                for ref in dict.fromkeys(SliceRef(r.meta["axis"], r.meta["index"]) for r in states):
                    state = self.store.slice_state(ref)
                    self.slice_state_changed.emit(state)
                    if state.state == "annotated":
                        annotated.add(ref)
                # the same policy as mark_annotated here: another front end's commit re-ranks this queue too
                if annotated:
                    self._after_annotated(annotated)
        cur = current_model(self.store)
        if cur is not None and (self._model is None or int(cur["version"]) != int(self._model["version"])):
            self._model = cur
            changed["model"] = True
            self._pin_current()
            if self._live is not None:
                self._live.deep_changed()  # score the new version and the blend on tier 1's held-out voxels
            self.model_version_changed.emit(dict(cur))
            if self.auto_rerank:  # policy: rank with the new model's scores at once
                self.refresh_suggestions()
            else:
                for item in self.queue:
                    item.stale = self.is_stale(item)
                if self.queue:
                    self.suggestions_changed.emit(list(self.queue))
        else:
            self._pin_current()  # hourly re-pin while shown
        if self._live is not None:
            changed["preview"] = bool(self.take_previews())
        else:
            self._update_served()
        if self.store.path is not None:
            status = self.trainer_status()
            old = self._trainer_status
            key = lambda st: (st.state, st.round, st.step, st.model_version, st.alive, st.progress, st.phase, st.error)  # noqa: E731
            if key(status) != key(old):
                self._trainer_status = status
                changed["trainer"] = True
                self.trainer_status_changed.emit(status)
        return changed

    def is_stale(self, item: QueueItem) -> bool:
        """A suggestion is stale when it was ranked with another model version than the served one."""
        ranked_with = item.suggestion.model_version
        if isinstance(ranked_with, str):  # tier 1's scores: refreshed with every fit, never a stale version
            return False
        return self.model_version is not None and ranked_with != self.model_version

    def close(self) -> None:
        if self._live is not None:
            self._live.close()
            self._live = None
        if not self.read_only and self.store.path is not None:
            try:
                _models.pin_version(self.store, self.session_id, None)
            except OSError:
                pass
        self.store.close()

    def __repr__(self) -> str:
        return f"Session({self.store!r}, at {self.current}, model v{self.model_version})"


def _crossing_slices(atom: EditAtom, shape: tuple[int, int, int], cached: dict) -> list[SliceRef]:
    """Cached labelled slices of the other axes that an edit's voxels cross (their planes changed too)."""
    if not cached:
        return []
    ref = atom.slice_ref
    h, w = ref.shape_in(shape)
    rows, cols = np.divmod(np.asarray(atom.indices, dtype=np.int64), w)
    others = [a for a in range(3) if a != ref.axis_number]
    along = {others[0]: set(np.unique(rows).tolist()), others[1]: set(np.unique(cols).tolist())}
    return [r for r in cached if r.axis_number != ref.axis_number and r.index in along[r.axis_number]]
