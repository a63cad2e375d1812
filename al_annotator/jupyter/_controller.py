"""The notebook widget's controller: browser messages in, Session calls and replies out.

:class:`Controller` is plain Python (no anywidget, no traitlets): it takes a
:class:`~al_annotator.core.Session`, a ``send(content, buffers)`` callable and a
:class:`~al_annotator.jupyter._planes.PlaneServer`, and

* handles every message the browser sends (:meth:`Controller.handle`: ``hello``, ``ping``,
  ``view``, ``stroke``, ``fill``, ``undo``, ``redo``, ``next``, ``show``, ``skip``, ``annotated``,
  ``refresh``, ``cursor``, ``trainer``, ``colour``), validated with :mod:`._protocol`; every failure
  is an ``error`` message (and a line in :attr:`Controller.errors`), never an exception;
* turns the session's signals into view state and messages (``on_slice_changed``,
  ``on_labels_changed``, ...), which the widget connects.

View state (what the widget syncs to the browser as traits) is read and written as attributes
of ``view``: the widget passes itself; a script or a test passes a :class:`ViewState`.

Examples
--------
>>> import numpy as np
>>> from al_annotator.core import Session
>>> from al_annotator.jupyter._controller import Controller
>>> from al_annotator.jupyter._planes import PlaneServer
>>> s = Session.create(None, np.zeros((4, 16, 16), np.uint8), classes="background,bone")
>>> sent = []
>>> send = lambda content, buffers=(): sent.append((content, list(buffers)))
>>> ctl = Controller(s, send, PlaneServer(s, send))
>>> ctl.handle({"type": "stroke", "client": "c", "seq": 1, "tool": "brush", "value": 2, "axis": "z",
...             "index": 1}, [np.arange(3, dtype="<u4").tobytes()])
>>> [c for c, _ in sent if c["type"] == "ack"][0]["ok"], s.labels(s.goto("z", 1))[0, :4].tolist()
(True, [2, 2, 2, 0])
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..core import Session, TrainerStatus
from ..errors import AlAnnotatorError, InputError
from ..progress import PhaseEta
from ..types import AXES, EditAtom, SliceRef
from . import _protocol as P
from ._planes import PlaneServer, describe

__all__ = ["Controller", "ViewState", "json_safe"]

log = logging.getLogger(__name__)

NO_SUGGESTION = "no suggestion left: press Refresh (or train a model for better ones)"


def json_safe(obj: Any) -> Any:
    """Make a status dict JSON-clean: non-finite floats -> None, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


@dataclass
class ViewState:
    """The view state the controller reads and writes (the widget's synced traits of the same names)."""

    axis: str = "z"
    index: int = 0
    cursor: list[int] = field(default_factory=lambda: [0, 0, 0])
    slice_state: str = "unlabelled"
    can_undo: bool = False
    can_redo: bool = False
    classes: list[dict] = field(default_factory=list)
    window: list[float] = field(default_factory=lambda: [0.0, 1.0])
    canvas_size: int = 512
    suggestions: list[dict] = field(default_factory=list)
    strategy: str = "hybrid"
    model_version: int | None = None
    trainer: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    show_prediction: bool = False
    served: dict = field(default_factory=dict)


def served_state(session: Session) -> dict[str, Any]:
    """What the page shows about the served tier: ``Session.served_tier()`` plus ``live`` (tier 1 on),
    ``error`` (``Session.live_error``) and ``summary``, the line shown beside the trainer's, e.g.
    "serving: instant classifier · held-out Dice 0.83"."""
    served = json_safe(session.served_tier())
    live, error = bool(session.live_preview), session.live_error
    text = session.served_summary() if (live or served.get("tier") or error) else ""
    return dict(served, live=live, error=error, summary=text)


class Controller:
    """Browser messages -> :class:`~al_annotator.core.Session` calls; session signals -> view state.

    Parameters
    ----------
    session
        What every message acts on.
    send
        ``send(content, buffers)`` to the browser.
    planes
        The plane server that answers views with pixels (its background-read errors are reported here).
    view
        Where the view state lives (attributes named as :class:`ViewState`'s fields); default a new
        :class:`ViewState`. A ``hold_sync()`` context manager on it, if any, batches updates.
    trainer_options
        Passed to ``Session.start_trainer`` on a ``trainer`` ``start`` message.
    """

    def __init__(self, session: Session, send: Callable[..., None], planes: PlaneServer, *, view: Any = None,
                 trainer_options: dict[str, Any] | None = None) -> None:
        self.session = session
        self._send = send
        self.planes = planes
        if planes.on_error is None:
            planes.on_error = self.report
        self.view = view if view is not None else ViewState()
        self.trainer_options = dict(trainer_options or {})
        #: Every error shown in the widget, newest last (the last 50).
        self.errors: list[str] = []
        #: How long each :meth:`poll` took, in ms.
        self.poll_ms: collections.deque[float] = collections.deque(maxlen=5000)
        self._poll_error: str | None = None
        self._browser_goto = False
        #: Turn the prediction overlay on the first time a tier serves one (until the user sets it).
        self.auto_prediction = True
        self._preview_asked: tuple | None = None
        self._trainer_eta = PhaseEta()  # the trainer bar's ETA, from the round's progress so far

    # ================================================================== state out
    def send(self, content: dict, buffers: Sequence[Any] = ()) -> None:
        self._send(content, list(buffers))

    def set(self, **state: Any) -> None:
        """Set view state (in one sync when the view can hold it)."""
        hold = getattr(self.view, "hold_sync", None)
        with hold() if hold is not None else contextlib.nullcontext():
            for name, value in state.items():
                setattr(self.view, name, value)

    def connections(self) -> list[tuple[Any, Callable[..., None]]]:
        """``(session signal, slot)`` pairs: connect each (and disconnect on close) to follow the session."""
        s = self.session
        return [
            (s.slice_changed, self.on_slice_changed),
            (s.labels_changed, self.on_labels_changed),
            (s.slice_state_changed, self.on_slice_state),
            (s.suggestions_changed, self.on_suggestions),
            (s.model_version_changed, self.on_model_version),
            (s.trainer_status_changed, self.on_trainer_status),
            (s.classes_changed, self.on_classes),
            (s.preview_changed, self.on_preview),
            (s.served_changed, self.on_served),
        ]

    def start(self) -> None:
        """Bring the view state up to the session's (after connecting the signals)."""
        s = self.session
        self.update_edit_state()
        self.on_slice_state(s.slice_state(s.current))
        self.set(model_version=s.model_version)
        self.refresh_history()
        if s.volume.persistent:
            self.on_trainer_status(s.trainer_status())
        if s.queue:
            self.on_suggestions(list(s.queue))
        else:
            self.guard(lambda: s.refresh_suggestions())
        self.sync_served()
        if s.live_preview:
            self.request_preview(s.current)

    def request_preview(self, ref: SliceRef) -> None:
        """Ask tier 1 for a preview of ``ref`` when it has none (once per plane and labels state:
        ``Session.goto`` asks for itself once tier 1 is fitted, a stroke makes the Session ask)."""
        s = self.session
        key = (ref, s.labels_seq)
        if s.live_preview and key != self._preview_asked and s.preview(ref) is None:
            self._preview_asked = key
            self.guard(lambda: s.request_preview(ref))

    def take_previews(self) -> list:
        """``Session.take_previews`` (the fast timer calls this): finished tier 1 previews reach the
        views as ``overlays``; a failure is shown once, never raised."""
        try:
            done = self.session.take_previews()
        except Exception as exc:  # noqa: BLE001 - on a timer: shown, never raised
            msg = f"the instant classifier's preview failed: {describe(exc)}"
            if msg != self._poll_error:
                self._poll_error = msg
                self.report(msg, exc)
            return []
        if self.session.live_error != self.view.served.get("error"):
            self.sync_served()
        return done

    def sync_served(self) -> None:
        """Sync the ``served`` view state (and turn the prediction overlay on the first time a tier serves)."""
        state = served_state(self.session)
        if state != self.view.served:
            self.set(served=state)
        if self.auto_prediction and state.get("tier") is not None:
            self.auto_prediction = False
            if not self.view.show_prediction:
                self.set(show_prediction=True)

    def notice(self, message: str) -> None:
        self.send({"type": "notice", "message": message})

    def report(self, message: str, exc: BaseException | None = None, *, client: str | None = None, seq: Any = None,
               req: Any = None) -> None:
        """Show an error in the widget (and keep it in :attr:`errors`)."""
        if exc is not None and not isinstance(exc, (AlAnnotatorError, IndexError, ValueError, KeyError)):
            log.error("al_annotator widget: %s", message, exc_info=exc)
        self.errors.append(message)
        del self.errors[:-50]
        self.send({"type": "error", "message": message, "client": client, "seq": seq, "req": req})

    def guard(self, fn: Callable[[], Any]) -> Any:
        """``fn()``, with a failure reported instead of raised."""
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001
            self.report(describe(exc), exc)
            return None

    def poll(self) -> dict[str, bool]:
        """``Session.poll`` (its signals update the view); a failure is shown once, never raised."""
        t0 = time.perf_counter()
        try:
            try:
                changed = self.session.poll()  # emits trainer_status_changed on progress and phase too
            except Exception as exc:  # noqa: BLE001 - a poll failure is shown, never raised on the timer
                msg = f"could not read the project: {describe(exc)}"
                if msg != self._poll_error:
                    self._poll_error = msg
                    self.report(msg, exc)
                return {}
            self._poll_error = None
            return changed
        finally:
            self.poll_ms.append((time.perf_counter() - t0) * 1000)

    def schedule_ortho(self, delay: float = 0.15, full: bool = False) -> None:
        self.planes.schedule_ortho(tuple(self.view.cursor), int(self.view.canvas_size), delay=delay, full=full)

    def schedule_thumbs(self, resend: bool = False) -> None:
        refs = [SliceRef(s["axis"], s["index"]) for s in self.view.suggestions]
        self.planes.schedule_thumbs(refs, tuple(self.view.window), resend=resend)

    def update_edit_state(self) -> None:
        self.set(can_undo=self.session.can_undo, can_redo=self.session.can_redo)

    def refresh_history(self) -> None:
        rows = []
        for v in self.session.history():
            m = v.get("metrics", {})
            rows.append({"version": int(v["version"]), "loss": m.get("loss"), "val_dice": m.get("val_dice"),
                         "round_seconds": m.get("round_seconds"), "labelled_voxels": m.get("labelled_voxels")})
        self.set(history=json_safe(rows))

    def class_value(self, content: dict, allow_zero: bool = False) -> int:
        """The ``value`` field as a class of this project (0 too with ``allow_zero``)."""
        try:
            return P.parse_int(content, "value", 0 if allow_zero else 1, self.session.n_classes)
        except InputError:
            names = ", ".join(f"{c['value']}={c['name']}" for c in self.session.class_table())
            raise InputError(f"message field 'value': class value {P.shown_value(content.get('value'))} is not a class of this "
                             f"project ({'0=unlabelled, ' if allow_zero else ''}{names})") from None

    # ================================================================== messages in
    def handle(self, content: Any, buffers: Sequence[Any] = ()) -> None:
        """Handle one browser message; every failure is reported to the browser, none raised."""
        if not isinstance(content, dict) or "type" not in content:
            self.report(f"the widget got a message it cannot read: {str(content)[:100]!r}")
            return
        kind = content["type"]
        handler = getattr(self, f"_msg_{kind}", None) if isinstance(kind, str) else None
        client = content.get("client")
        client = client if isinstance(client, str) and len(client) <= 200 else str(P.echo_value(client) or "")
        if handler is None:
            self.report(f"unknown widget message type {str(kind)[:60]!r}", client=client)
            return
        # what is sent back as is must stay valid JSON (a NaN ``req`` would make the reply unreadable)
        content = dict(content, client=client, **{k: P.echo_value(content[k]) for k in ("req", "seq") if k in content})
        try:
            handler(client, content, list(buffers or []))
        except Exception as exc:  # noqa: BLE001 - every failure is shown in the widget
            self.report(describe(exc), exc, client=client, seq=content.get("seq"), req=content.get("req"))
            if kind in ("stroke", "fill"):
                applied = self.planes.applied
                try:  # the stroke is done with (not stored); only a valid seq moves what the browser drops
                    applied[client] = max(applied.get(client, 0), P.parse_int(content, "seq", 0))
                except InputError:
                    pass
                self.send({"type": "ack", "client": client, "seq": content.get("seq"), "ok": False})
                self.planes.send_labels(client)  # the browser drops its optimistic paint

    def _msg_hello(self, client: str, content: dict, buffers: list) -> None:
        self.planes.forget_old_views()
        self.schedule_ortho(delay=0.0, full=True)
        self.schedule_thumbs(resend=True)

    def _msg_ping(self, client: str, content: dict, buffers: list) -> None:
        t, te = P.parse_number(content, "t", default=None), P.parse_number(content, "te", default=None)
        self.send({"type": "pong", "client": client, "t": t, "te": te, "tk": time.time() * 1000})

    def _msg_view(self, client: str, content: dict, buffers: list) -> None:
        shape = self.session.shape
        ref = P.parse_ref(content, shape)
        region = P.parse_region(content, ref.shape_in(shape))
        if ref != self.session.current:
            self._browser_goto = True  # the browser asked: no "navigate" back to it
            try:
                self.session.goto(ref)
            finally:
                self._browser_goto = False
        self.planes.view(client, content.get("req"), ref, region)
        self.request_preview(ref)

    def _msg_stroke(self, client: str, content: dict, buffers: list) -> None:
        seq = P.parse_int(content, "seq", 0)
        ref = P.parse_ref(content, self.session.shape)
        tool = content.get("tool")
        if tool not in P.STROKE_TOOLS:
            raise InputError(f"unknown tool {tool!r}; the tools are {list(P.STROKE_TOOLS)}")
        h, w = ref.shape_in(self.session.shape)
        value = 0 if tool != "brush" else self.class_value(content)
        idx = P.parse_indices(buffers, h * w)
        self._applied(client, seq)
        if tool == "accept":
            atom = self.session.accept_prediction(idx, ref=ref)
        else:
            atom = self.session.paint(idx, value, ref=ref, tool=tool)
        self.send({"type": "ack", "client": client, "seq": seq, "ok": True, "edit_seq": atom.seq, "n": atom.n})
        self._preview_painted(ref)

    def _msg_fill(self, client: str, content: dict, buffers: list) -> None:
        seq = P.parse_int(content, "seq", 0)
        ref = P.parse_ref(content, self.session.shape)
        h, w = ref.shape_in(self.session.shape)
        row, col = P.parse_int(content, "row", 0, h - 1), P.parse_int(content, "col", 0, w - 1)
        value = self.class_value(content, allow_zero=True)
        self._applied(client, seq)
        atom = self.session.flood_fill(row, col, value, ref=ref)
        self.send({"type": "ack", "client": client, "seq": seq, "ok": True, "edit_seq": atom.seq, "n": atom.n})
        self._preview_painted(ref)

    def _preview_painted(self, ref: SliceRef) -> None:
        """The Session previews its current slice after an edit; a view painting another slice (a second
        view of the widget) wants the plane it painted on."""
        if self.session.live_preview and ref != self.session.current:
            self.guard(lambda: self.session.request_preview(ref))

    def _applied(self, client: str, seq: int) -> None:
        applied = self.planes.applied
        applied[client] = max(applied.get(client, 0), seq)

    def _msg_undo(self, client: str, content: dict, buffers: list) -> None:
        self._undo_redo(self.session.undo, "undo")

    def _msg_redo(self, client: str, content: dict, buffers: list) -> None:
        self._undo_redo(self.session.redo, "redo")

    def _undo_redo(self, fn: Callable[[], EditAtom | None], what: str) -> None:
        atom = fn()
        self.update_edit_state()
        if atom is None:
            self.notice(f"nothing to {what}")
        elif atom.slice_ref != self.session.current:
            self.session.goto(atom.slice_ref)
            self.notice(f"{what}: the edit was on {atom.slice_ref}; showing it")

    def _msg_next(self, client: str, content: dict, buffers: list) -> None:
        if self.session.next_suggestion() is None:
            self.notice(NO_SUGGESTION)

    def _msg_show(self, client: str, content: dict, buffers: list) -> None:
        self.session.goto(P.parse_ref(content, self.session.shape))

    def _msg_skip(self, client: str, content: dict, buffers: list) -> None:
        ref = P.parse_ref(content, self.session.shape) if "axis" in content else self.session.current
        then_next = P.parse_bool(content, "then_next", False)
        self.session.skip(ref)
        if then_next and self.session.next_suggestion() is None:
            self.notice(NO_SUGGESTION)

    def _msg_annotated(self, client: str, content: dict, buffers: list) -> None:
        annotated = P.parse_bool(content, "annotated", True)
        # the Session's policy re-ranks (auto_rerank) or drops the slice from the queue
        self.session.mark_annotated(self.session.current, annotated)

    def _msg_refresh(self, client: str, content: dict, buffers: list) -> None:
        strategy = P.parse_optional_str(content, "strategy")
        self.session.refresh_suggestions(strategy)
        self.set(strategy=self.session.strategy)

    def _msg_cursor(self, client: str, content: dict, buffers: list) -> None:
        cursor = [P.parse_int(content, a, 0, n - 1) for a, n in zip(AXES, self.session.shape)]
        self.set(cursor=cursor)
        self.schedule_ortho()

    def _msg_trainer(self, client: str, content: dict, buffers: list) -> None:
        action = content.get("action")
        if action == "start":
            self.session.start_trainer(**self.trainer_options)
            self.notice("trainer started: it trains a round whenever you mark a slice annotated")
        elif action == "stop":
            self.session.stop_trainer(timeout=0.0)
            self.notice("trainer asked to stop (it finishes its current step)")
        else:
            raise InputError(f"trainer action must be 'start' or 'stop', got {action!r}")
        self.poll()

    def _msg_colour(self, client: str, content: dict, buffers: list) -> None:
        value = self.class_value(content)
        colour = content.get("colour")
        if not isinstance(colour, str) or not P.HEX_COLOUR.match(colour):
            raise InputError(f"a colour must be '#rrggbb', got {colour!r}")
        self.session.set_class_colour(value, colour.lower())  # saved in project.json; emits classes_changed
        self.on_classes(self.session.class_table())

    # ================================================================== session signals
    def on_slice_changed(self, ref: SliceRef) -> None:
        cursor = list(self.view.cursor)
        cursor[ref.axis_number] = ref.index
        self.set(axis=ref.axis, index=ref.index, cursor=cursor, slice_state=self.session.slice_state(ref).state)
        if not self._browser_goto:  # moved by the kernel (next suggestion, undo, w.goto): the browser follows
            self.send({"type": "navigate", "axis": ref.axis, "index": ref.index})
        self.schedule_ortho()

    def on_labels_changed(self, payload: Any) -> None:
        """An edit here (an EditAtom) or by another process (a list of refs: which voxels is unknown)."""
        self.planes.labels_changed(payload if isinstance(payload, EditAtom) else None)
        self.update_edit_state()
        self.schedule_ortho(delay=0.3)

    def on_slice_state(self, state: Any) -> None:
        if state.ref == self.session.current:
            self.set(slice_state=state.state)
        if any(s.get("axis") == state.ref.axis and s.get("index") == state.ref.index for s in self.view.suggestions):
            self.on_suggestions(list(self.session.queue))

    def on_suggestions(self, items: list) -> None:
        rows = []
        for item in items:
            row = json_safe(item.to_json())
            row["key"] = f"{item.ref.axis}:{item.ref.index}"
            row["state"] = self.session.slice_state(item.ref).state
            rows.append(row)
        self.set(suggestions=rows)
        self.schedule_thumbs()

    def on_model_version(self, current: dict) -> None:
        self.set(model_version=self.session.model_version)
        self.refresh_history()
        self.planes.model_changed()
        self.sync_served()

    def on_preview(self, preview: Any) -> None:
        """Tier 1 previewed a plane: the views showing it get the new overlays (while it serves)."""
        self.planes.preview_changed(preview)
        if self.session.live_error != self.view.served.get("error"):
            self.sync_served()

    def on_served(self, served: dict) -> None:
        """Another tier serves, or its held-out scores changed: the line, and every view's overlays."""
        self.sync_served()
        self.planes.model_changed()

    def on_trainer_status(self, status: TrainerStatus) -> None:
        doc = json_safe(status.to_json())
        working = status.state in ("training", "predicting")
        doc["eta"] = self._trainer_eta.text(status.round, status.progress if working else None)  # the bar's "ETA 1:20 min"
        self.set(trainer=doc)

    def on_classes(self, table: list[dict]) -> None:
        self.set(classes=[dict(c) for c in table])
