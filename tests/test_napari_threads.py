"""The napari dock's threading rule: every Session call that changes state runs on one thread.

``al_annotator/napari/_jobs.py`` states the rule: the dock calls mutating Session methods (and
assigns Session attributes) only on the single worker thread of its :class:`Jobs`, never on the
GUI thread, never on a second worker. The test records ``threading.get_ident()`` of every such call
while the dock is driven through its whole workflow, and fails if any came from another thread.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

napari = pytest.importorskip("napari", reason="napari is not installed (pip install 'al-annotator[napari]')")

from psygnal import SignalInstance  # noqa: E402

from al_annotator.core import Session  # noqa: E402
from al_annotator.store import open_project  # noqa: E402
from al_annotator.types import SliceRef  # noqa: E402
from test_napari import SHAPE, _drag, _publish, _skip_without_qt, gui, phantom, plugin, project  # noqa: E402,F401

#: Session methods that change the session or the project (``__setattr__`` catches the rest).
MUTATING = ("__init__", "goto", "apply_edit", "paint", "erase", "flood_fill", "accept_prediction", "undo", "redo",
            "mark_annotated", "refresh_suggestions", "next_suggestion", "skip", "poll", "set_class_colour",
            "rename_class", "start_trainer", "stop_trainer", "close", "take_previews", "request_preview", "wait_preview")


@pytest.fixture
def session_calls(monkeypatch):
    """``(what, thread ident)`` of every mutating Session call and attribute assignment, from now on."""
    calls: list[tuple[str, int]] = []

    def wrap(name, method):
        def recorded(self, *args, **kwargs):
            calls.append((name, threading.get_ident()))
            return method(self, *args, **kwargs)

        return recorded

    for name in MUTATING:
        method = getattr(Session, name)
        if name == "start_trainer":  # no real trainer process here
            method = lambda self, **kw: 4242  # noqa: E731
        elif name == "stop_trainer":
            method = lambda self, timeout=30.0: True  # noqa: E731
        monkeypatch.setattr(Session, name, wrap(name, method))

    def setattr_recorded(self, name, value):
        if not isinstance(value, SignalInstance):  # psygnal caches a signal's instance on first access
            calls.append((f"set {name}", threading.get_ident()))
        object.__setattr__(self, name, value)

    monkeypatch.setattr(Session, "__setattr__", setattr_recorded)
    return calls


@pytest.mark.gui
@pytest.mark.skipif("_skip_without_qt()", reason="needs a display for Qt")
def test_every_mutating_session_call_runs_on_the_one_worker_thread(gui, plugin, make_napari_viewer, project, qtbot, session_calls):
    from al_annotator.napari._widget import AnnotatorWidget

    viewer = make_napari_viewer()
    w = AnnotatorWidget(viewer, poll_ms=0)
    viewer.window.add_dock_widget(w, name="AL Annotator")
    w.open_project(project, author="ana")  # the session is created on the worker too
    w.wait_idle()
    # napari's dims move (a scroll): the session follows
    w.go_to(SliceRef("y", 17))
    viewer.dims.set_point(1, 12.0)
    qtbot.waitUntil(lambda: w.session.current == SliceRef("y", 12) and not w.busy, timeout=10_000)
    # a stroke, napari's undo and redo
    layer = w.layers["labels"]
    w.select_label(3)
    layer.brush_size = 3
    _drag(layer, viewer, [(4, 12, 10), (4, 12, 14), (8, 12, 20)])
    layer.undo()
    layer.redo()
    w.wait_idle()
    assert int((np.asarray(open_project(project).labels[:, 12]) == 3).sum()) > 5
    # the queue: a click in the table, Next, Annotated, Skip, Refresh, the "auto" checkbox
    w._suggestion_clicked(0)
    w.next_suggestion(wait=True)
    w.mark_annotated(wait=True)
    w.suggestion_table.selectRow(0)
    w.skip()
    w.refresh_suggestions(wait=True)
    w.auto_refresh_check.setChecked(False)
    # tier 1 live: the dock's preview timer collects previews; the "live" checkbox off and on again
    w.take_previews()
    w.live_check.setChecked(False)
    w.live_check.setChecked(True)
    w.wait_idle()
    # a new model version picked up by the poll, palette edits, the trainer's buttons
    pred = np.ones(SHAPE, np.uint8)
    conf = np.full(SHAPE, 200, np.uint8)
    _publish(open_project(project), 1, pred, conf, [(SliceRef("z", i), s) for i, s in enumerate([0.2, 0.9, 0.5])])
    assert w.poll()["model"]
    w.set_class_colour(2, "#00ff00")
    w.rename_class(3, "magnesium")
    w.start_trainer(wait=True)
    w.stop_trainer()
    w.wait_idle()
    assert w.class_buttons[3].text() == "magnesium (3)" and w.session.auto_rerank is False
    worker = w.jobs.thread_ident
    w.close_project()

    seen = {what.split(" ")[0] if not what.startswith("set ") else what for what, _ in session_calls}
    for name in ("__init__", "goto", "apply_edit", "undo", "redo", "mark_annotated", "refresh_suggestions",
                 "next_suggestion", "skip", "poll", "set_class_colour", "rename_class", "start_trainer",
                 "stop_trainer", "close", "set auto_rerank", "take_previews", "request_preview", "set live_preview"):
        assert name in seen, f"the workflow never called Session.{name}: the test does not cover it"
    assert worker is not None and worker != threading.main_thread().ident
    elsewhere = [(what, ident) for what, ident in session_calls if ident != worker]
    assert not elsewhere, (
        "mutating Session calls off the dock's one worker thread (main thread is "
        f"{threading.main_thread().ident}, worker {worker}): {elsewhere}"
    )


def test_jobs_run_in_order_on_one_thread_and_finish_on_the_posting_thread():
    """Without Qt: a poster that queues callables for this thread; jobs run in order on one worker."""
    import queue

    from al_annotator.napari._jobs import Jobs

    posted: queue.Queue = queue.Queue()
    jobs = Jobs(posted.put)
    ran, finished = [], []
    for k in range(20):
        jobs.submit(f"job {k}", lambda k=k: ran.append((k, threading.get_ident())) or k,
                    lambda result, error: finished.append((result, threading.get_ident())))
    failing = jobs.submit("fails", lambda: 1 / 0, lambda result, error: finished.append((type(error).__name__, threading.get_ident())))
    jobs.drain()  # waits and finishes each here, in order
    assert [k for k, _ in ran] == list(range(20)) and len({ident for _, ident in ran}) == 1
    assert ran[0][1] == jobs.thread_ident != threading.get_ident()
    assert finished == [(k, threading.get_ident()) for k in range(20)] + [("ZeroDivisionError", threading.get_ident())]
    assert failing.handled and jobs.pending == 0
    while not posted.empty():  # the posted completions come later: each job is finished once
        posted.get()()
    assert len(finished) == 21
    assert jobs.call("call", lambda: threading.get_ident()) == jobs.thread_ident
    with pytest.raises(ZeroDivisionError):
        jobs.call("call", lambda: 1 / 0)
    sync = Jobs()  # no poster: synchronous, in the calling thread
    out = []
    sync.submit("now", lambda: threading.get_ident(), lambda result, error: out.append(result))
    assert out == [threading.get_ident()] and sync.synchronous and sync.pending == 0
    jobs.shutdown()
