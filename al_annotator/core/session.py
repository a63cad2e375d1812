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
from typing import Any, Sequence

import numpy as np
from psygnal import Signal

from ..errors import InputError
from ..store import ProjectStore, create_project, open_project
from ..store.models import current_model
from ..store.project import PROJECT_FILE
from ..types import AXES, EditAtom, SliceRef

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
    trainer_status_changed = Signal(dict)
    classes_changed = Signal(list)  # [{"value", "name", "colour"}, ...] after a palette edit here or elsewhere

    def __init__(
        self,
        project: str | os.PathLike | ProjectStore,
        *,
        volume: Any = None,
        author: str | None = None,
        strategy: str = "hybrid",
        n_suggestions: int = 8,
        **create_kw: Any,
    ) -> None:
        if isinstance(project, ProjectStore):
            self.store = project
        elif volume is not None and not (Path(project) / PROJECT_FILE).exists():
            self.store = create_project(project, volume, author=author, **create_kw)
        else:
            self.store = open_project(project, author=author)
        if author:
            self.store.author = author
        self.author = self.store.author
        self.strategy = strategy
        self.n_suggestions = n_suggestions
        self.current = SliceRef("z", self.store.shape[0] // 2)
        self.queue: list[QueueItem] = []
        self._skipped: set[SliceRef] = set()
        self._model = current_model(self.store)
        self._trainer = None
        self._trainer_status: dict[str, Any] = {}
        self._prediction_cache: tuple[int, Any] | None = None
        self._classes_seen = self._project_file_stamp()  # project.json as last read (palette edits)

    # ------------------------------------------------------------------ navigation
    @property
    def shape(self) -> tuple[int, int, int]:
        return self.store.shape

    @property
    def classes(self) -> tuple[str, ...]:
        return self.store.config.classes

    @property
    def model_version(self) -> int | None:
        return None if self._model is None else int(self._model["version"])

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
        return ref

    def image(self, ref: SliceRef | None = None) -> np.ndarray:
        return self.store.read_slice(ref or self.current, "image")

    def labels(self, ref: SliceRef | None = None) -> np.ndarray:
        return self.store.read_slice(ref or self.current, "labels")

    def prediction(self, ref: SliceRef | None = None) -> np.ndarray | None:
        """Predicted labels (1..C) of the current model on a slice, or ``None`` before any model."""
        arr = self._prediction_array("prediction")
        return None if arr is None else np.asarray(arr[(ref or self.current).selection()])

    def confidence(self, ref: SliceRef | None = None) -> np.ndarray | None:
        """Voxel confidence (max probability, 0..1) of the current model, or ``None``."""
        arr = self._prediction_array("confidence")
        return None if arr is None else np.asarray(arr[(ref or self.current).selection()]).astype(np.float32) / 255.0

    def _prediction_array(self, name: str) -> Any:
        if self._model is None:
            return None
        key = f"models/v{int(self._model['version']):04d}/{name}"
        try:
            return self.store.root[key]
        except KeyError:
            return None

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
        if annotated and any(item.ref == ref for item in self.queue):
            self.queue = [item for item in self.queue if item.ref != ref]
            self.suggestions_changed.emit(list(self.queue))

    def _emit_state(self, ref: SliceRef) -> None:
        self.slice_state_changed.emit(self.store.slice_state(ref))

    # ------------------------------------------------------------------ suggestions
    def refresh_suggestions(self, strategy: str | None = None, n: int | None = None, seed: int = 0) -> list[QueueItem]:
        """Rank the next slices with the current model's scores (or a cold-start pick)."""
        from ..acquisition.project import suggest_for_project

        self.strategy = strategy or self.strategy
        n = n or self.n_suggestions
        suggestions = suggest_for_project(self.store, strategy=self.strategy, n=n + len(self._skipped), seed=seed)
        items = [QueueItem(s) for s in suggestions if SliceRef(s.axis, s.index) not in self._skipped][:n]
        self.queue = items
        self.suggestions_changed.emit(list(self.queue))
        return list(self.queue)

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

    def trainer_status(self) -> dict[str, Any]:
        if self.store.path is None:
            return {"state": "not available (in-memory project)", "alive": False}
        from ..training.client import read_status

        return read_status(self.store.path)

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

        Returns which things changed: ``{"labels", "model", "trainer"}``.
        """
        changed = {"labels": False, "model": False, "trainer": False}
        if self._reload_classes():
            changed["classes"] = True
        new = self.store.refresh()
        if new:
            refs = sorted({SliceRef(r.meta["axis"], r.meta["index"]) for r in new if "axis" in r.meta})
            changed["labels"] = True
            self.labels_changed.emit(refs)
        cur = current_model(self.store)
        if cur is not None and (self._model is None or int(cur["version"]) != int(self._model["version"])):
            self._model = cur
            changed["model"] = True
            for item in self.queue:
                item.stale = item.suggestion.model_version != cur["version"]
            self.model_version_changed.emit(dict(cur))
            if self.queue:
                self.suggestions_changed.emit(list(self.queue))
        if self.store.path is not None:
            status = self.trainer_status()
            key = (status.get("state"), status.get("round"), status.get("step"), status.get("model_version"), status.get("alive"))
            old = self._trainer_status
            if key != (old.get("state"), old.get("round"), old.get("step"), old.get("model_version"), old.get("alive")):
                self._trainer_status = status
                changed["trainer"] = True
                self.trainer_status_changed.emit(status)
        return changed

    def close(self) -> None:
        self.store.close()

    def __repr__(self) -> str:
        return f"Session({self.store!r}, at {self.current}, model v{self.model_version})"
