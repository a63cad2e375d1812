"""Bind a napari Labels layer to a :class:`~al_annotator.core.Session`.

Every stroke painted with napari's own tools (brush, eraser, fill, polygon, on any displayed
axis) becomes :meth:`Session.apply_edit` calls, one :class:`EditAtom` per slice, when napari
closes the stroke (``events.paint``). napari's undo/redo (Ctrl+Z / Ctrl+Shift+Z) become
:meth:`Session.undo` / :meth:`Session.redo`, so they are logged edits too. Edits other processes
make show up after :meth:`Session.poll`.

Where the commit runs: every Session call the bridge makes (a stroke's ``apply_edit`` calls,
undo, redo) goes through one :class:`~al_annotator.napari._jobs.Jobs`, the dock's single worker
thread (the threading rule is in ``_jobs``). Without one (no Qt event loop: scripts, tests) the
bridge makes a synchronous :class:`Jobs` and the stroke is on disk when napari's paint event
returns. With the dock's, the GUI thread never waits on the edit log's ``fsync``, which took
0.1-2 s under disk load while a trainer wrote its outputs (``benchmarks/bench_napari.py``). Until a
commit lands the layer shows the stroke from its stroke buffer; :meth:`drain` waits for pending
commits.

Writes that reach the layer's data outside a stroke and without a paint event (code doing
``layer.data[...] = v``, napari's stroke abort) are diffed against the store and sent to the
session as well, so the layer never shows labels the store does not hold.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import numpy as np
from psygnal import Signal

from ..errors import AlAnnotatorError
from ..types import EditAtom, SliceRef
from ._arrays import StoreLabels
from ._edits import guess_axis, voxels_from_history, voxels_to_atoms
from ._jobs import Job, Jobs

__all__ = ["LabelsBridge"]

log = logging.getLogger(__name__)


class LabelsBridge:
    """Route a Labels layer's edits into a session.

    Parameters
    ----------
    session
        The open :class:`~al_annotator.core.Session`.
    layer
        A napari ``Labels`` layer whose ``data`` is a :class:`StoreLabels` of the session's labels
        (:func:`~al_annotator.napari._layers.labels_array`).
    current_slice
        Returns the slice napari shows (a :class:`SliceRef` on the axis not displayed), or ``None``
        in 3D display; edits are grouped into slices along its axis.
    notify
        Shows a message to the user (default: log a warning).
    jobs
        The one worker thread every Session call goes through (the dock's). Not given: a
        synchronous one (strokes are committed inside napari's paint event). With a threaded one
        the session's signals must be delivered on the GUI thread (the bridge connects its own slot
        with ``thread="main"``; so must other listeners).
    """

    #: Emitted (GUI thread) after a stroke is on disk, with the list of applied :class:`EditAtom`.
    stroke_committed = Signal(list)
    #: Emitted with the error message when the store refused a stroke (the layer was reverted).
    stroke_refused = Signal(str)

    def __init__(
        self,
        session: Any,
        layer: Any,
        *,
        current_slice: Callable[[], SliceRef | None] | None = None,
        notify: Callable[[str], None] | None = None,
        jobs: Jobs | None = None,
    ) -> None:
        if not isinstance(layer.data, StoreLabels):
            raise TypeError("the layer's data must be a StoreLabels of the session's labels (_layers.labels_array(session))")
        self.session = session
        self.layer = layer
        self.data: StoreLabels = layer.data
        self.current_slice = current_slice or (lambda: None)
        self._notify = notify or (lambda msg: log.warning("%s", msg))
        self.jobs = jobs if jobs is not None else Jobs()
        self._jobs: list[Job] = []  # strokes handed to the worker, not yet finished on the GUI thread
        self._own_seqs: set[int] = set()
        self._busy = False
        self._undo_counts: list[int] = []
        self._redo_counts: list[int] = []
        self._stroking = False
        #: ``time.perf_counter()`` when the last stroke was on disk (for latency measurements).
        self.last_on_disk = 0.0
        self.data.on_write = self._on_write
        # First in the drag callbacks: marks the stroke open before napari's brush paints its first
        # dab (press) and closed before napari commits the stroke (release). napari's own flag for
        # this is private, and plugins see layers through a proxy that refuses private attributes.
        layer.mouse_drag_callbacks.insert(0, self._track_stroke)
        layer.events.paint.connect(self._on_paint)
        layer.events.selected_label.connect(self._clamp_label)
        session.labels_changed.connect(self._on_labels_changed, thread="main")
        # napari's key bindings call layer.undo()/redo(): make them the session's (logged) undo.
        layer.undo = self.undo
        layer.redo = self.redo

    def disconnect(self) -> None:
        """Finish pending commits and unbind (the layer is made read-only)."""
        self.drain()
        self.layer.events.paint.disconnect(self._on_paint)
        if self._track_stroke in self.layer.mouse_drag_callbacks:
            self.layer.mouse_drag_callbacks.remove(self._track_stroke)
        self.layer.events.selected_label.disconnect(self._clamp_label)
        self.session.labels_changed.disconnect(self._on_labels_changed)
        self.data.on_write = None
        self.layer.editable = False

    @property
    def pending(self) -> int:
        """Strokes handed to the worker thread and not yet handled on the GUI thread."""
        return len(self._jobs)

    # ------------------------------------------------------------------ napari -> session
    def in_stroke(self) -> bool:
        """True while a mouse stroke is open on the layer (between press and release)."""
        return self._stroking

    def _track_stroke(self, layer: Any, event: Any):
        self._stroking = True
        try:
            yield
            while event.type == "mouse_move":
                yield
        finally:
            self._stroking = False

    def _on_paint(self, event: Any) -> None:
        coords, values = voxels_from_history(event.value, self.data.ndim)
        self._commit(coords, values, tool=self._tool_name())

    def _on_write(self) -> None:
        # Writes during a stroke wait for events.paint; a lone write is compared with the store.
        if not self._busy and not self.in_stroke():
            self.flush()

    def flush(self) -> list[EditAtom]:
        """Send what the layer holds and the store does not to the session.

        A no-op mid-stroke and while strokes are being committed (the buffer then holds them).
        """
        if self._busy or self.in_stroke() or self._jobs or not self.data.pending:
            return []
        coords, values = self.data.take_differences()
        return self._commit(coords, values, tool="data") if coords.shape[1] else []

    def _commit(self, coords: np.ndarray, values: np.ndarray, *, tool: str) -> list[EditAtom]:
        if coords.shape[1] == 0:
            if not self._jobs:
                self.data.discard()
            return []
        shown = self.current_slice()
        axis = guess_axis(coords, None if shown is None else shown.axis_number)
        atoms = voxels_to_atoms(coords, values, axis, self.data.shape, tool=tool, author=self.session.author)
        if self.jobs.synchronous:
            self._busy = True  # the session's labels_changed for these edits arrives inside apply_edit
            try:
                done, error = self._apply(atoms)
            finally:
                self._busy = False
            self.last_on_disk = time.perf_counter()
            self._finish(done, error)
            return done
        holder: list[Job] = []
        job = self.jobs.submit("stroke", lambda: self._apply(atoms, own=True),
                               lambda result, error: self._finish_job(holder[0], result, error))
        holder.append(job)
        self._jobs.append(job)
        return []

    def _apply(self, atoms: list[EditAtom], *, own: bool = False) -> tuple[list[EditAtom], AlAnnotatorError | None]:
        """Apply a stroke's atoms (the worker thread, or here when synchronous). ``own``: remember
        their log positions, so their ``labels_changed`` (delivered later on the GUI thread) is
        known as ours and refreshes nothing."""
        done: list[EditAtom] = []
        token = self.data.token
        before = token() if token is not None else None
        try:
            for atom in atoms:
                applied = self.session.apply_edit(atom)
                done.append(applied)
                if own and applied.seq is not None:
                    self._own_seqs.add(int(applied.seq))
        except AlAnnotatorError as exc:
            return done, exc
        finally:
            if done and isinstance(before, int):
                self._update_cached_planes(done, before)
        return done, None

    def _update_cached_planes(self, done: list[EditAtom], before: int) -> None:
        """Write applied edits into the layer's cached planes read at edit-log position ``before``,
        unless other records came in between (another process's edits caught up with on the way:
        those planes are then read again)."""
        seqs = [a.seq for a in done]
        after = self.data.token()
        if seqs == list(range(before + 1, before + 1 + len(done))) and after == seqs[-1]:
            self.data.apply_atoms(done, before, after)

    def _finish_job(self, job: Job, result: Any, error: BaseException | None) -> None:  # GUI thread
        if job in self._jobs:
            self._jobs.remove(job)
        if error is not None:  # an OSError (disk full...) must reach the user, not a thread
            done, refused = [], error
        else:
            done, refused = result
        self.last_on_disk = job.done_at
        self._finish(done, refused)

    def _finish(self, done: list[EditAtom], error: BaseException | None) -> None:
        if done:
            self._undo_counts.append(len(done))
            self._redo_counts.clear()
            self.stroke_committed.emit(done)
        if not self._jobs and not self.in_stroke() and self.data.pending:
            # everything buffered is in the store now (or was refused): read it from there again
            coords, values = self.data.take_differences()
            if coords.shape[1] and error is None:
                self._commit(coords, values, tool="data")
        if error is not None:
            self._notify(f"the stroke was not saved: {error}")
            self.stroke_refused.emit(str(error))
            self.layer.refresh()

    def drain(self) -> None:
        """Wait for the strokes being committed and handle them now (on the calling GUI thread;
        the jobs submitted before the last stroke are finished too, in order)."""
        if self._jobs:
            self.jobs.drain(upto=self._jobs[-1])

    def _tool_name(self) -> str:
        mode = str(getattr(self.layer, "mode", "paint"))
        return {"paint": "brush", "erase": "eraser", "fill": "fill", "polygon": "polygon"}.get(mode, mode)

    def _clamp_label(self, event: Any = None) -> None:
        n = self.session.n_classes
        if self.layer.selected_label > n:
            self._notify(f"label {self.layer.selected_label} is not a class; this project has labels 1..{n} (0 erases)")
            self.layer.selected_label = n

    # ------------------------------------------------------------------ undo / redo
    def undo(self) -> list[EditAtom]:
        """Undo the last stroke (all of its slices) through the session's logged undo."""
        return self._replay(self._undo_counts, self._redo_counts, self.session.undo)

    def redo(self) -> list[EditAtom]:
        return self._replay(self._redo_counts, self._undo_counts, self.session.redo)

    def _replay(self, source: list[int], target: list[int], action: Callable[[], EditAtom | None]) -> list[EditAtom]:
        """Undo or redo the last stroke on the worker thread (after the strokes before it); returns
        its atoms when synchronous, ``[]`` otherwise (the layer refreshes when it is done)."""
        self.drain()
        self.flush()
        n = source.pop() if source else 1
        token = self.data.token
        own = not self.jobs.synchronous
        name = "undo" if source is self._undo_counts else "redo"

        def work() -> list[EditAtom]:  # the worker thread (or here, synchronous)
            done: list[EditAtom] = []
            before = token() if token is not None else None
            try:
                for _ in range(n):
                    atom = action()
                    if atom is None:
                        break
                    done.append(atom)
                    if own and atom.seq is not None:
                        self._own_seqs.add(int(atom.seq))
            finally:
                if done and isinstance(before, int):
                    self._update_cached_planes(done, before)
            return done

        out: list[EditAtom] = []

        def finished(done: list[EditAtom] | None, error: BaseException | None) -> None:  # GUI thread
            if error is not None:
                self._notify(f"{name} failed: {error}")
            if done:
                target.append(len(done))
                self.data.discard()
                self.layer.refresh()
                out.extend(done)

        if own:
            self.jobs.submit(name, work, finished)
            return []
        self._busy = True  # the session's labels_changed arrives inside undo(): refreshed once, below
        try:
            self.jobs.submit(name, work, finished)
        finally:
            self._busy = False
        return out

    # ------------------------------------------------------------------ session -> napari
    def _on_labels_changed(self, change: Any) -> None:
        if self._busy:
            return  # our own undo/redo: refreshed once at the end
        if isinstance(change, EditAtom):
            if change.seq is not None and int(change.seq) in self._own_seqs:
                self._own_seqs.discard(int(change.seq))
                return  # our own stroke: the layer already shows it
            refs = [change.slice_ref]
        else:
            refs = list(change or [])
        shown = self.current_slice()
        if shown is not None and refs and all(r.axis == shown.axis and r.index != shown.index for r in refs):
            return  # other slices of the axis on screen: nothing visible changed
        self.layer.refresh()
