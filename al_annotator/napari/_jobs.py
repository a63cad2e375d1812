"""The one worker thread of the napari front end: every Session call that changes state runs here.

Threading rule (the napari dock, issue #10): **every Session call that mutates the session or the
project** (opening and closing it, :meth:`~al_annotator.core.Session.apply_edit` for a stroke,
undo/redo, :meth:`~al_annotator.core.Session.goto`, ``mark_annotated``, ``refresh_suggestions``,
``next_suggestion``, ``skip``, ``poll``, setting ``auto_rerank``, palette edits, starting and
stopping the trainer) **runs on the single thread of one** :class:`Jobs`, in the order it was
submitted. The GUI (main) thread never calls them; it only reads cheap in-memory values from the
session (volume facts, class table, slice states, the queue it was sent) and napari's slicing reads
the lazy arrays (from plane caches the worker fills beforehand). So no session state is ever changed
from two threads, and a slice state never overtakes the strokes painted before it.

Results come back on the GUI thread: when a job is done its completion is posted to the Qt event
loop (a queued signal of :class:`GuiPoster`), where :meth:`Jobs.finish` first delivers the
session's psygnal signals queued for the main thread (the dock connects them with
``thread="main"``; ``psygnal.emit_queued``), then calls the job's ``on_done(result, error)``.
:meth:`Jobs.drain` does the same, in order, for callers that must wait (scripts, tests, closing).

Why not napari's ``thread_worker``: it runs each worker on Qt's global thread pool, so two jobs
could run at once on two threads; superqt's ``ensure_main_thread`` runs a callback at once when
called on the main thread, so a job already finished could complete inside its own ``submit``. One
``ThreadPoolExecutor(max_workers=1)`` plus a queued Qt signal gives exactly one worker thread and
completions that always arrive later, on the GUI thread.

Without a poster (no Qt event loop: scripts, the bridge in tests) a :class:`Jobs` is
*synchronous*: ``submit`` runs the job and its ``on_done`` in the calling thread before returning.
No Qt import here: the poster is created by the dock (:class:`GuiPoster` imports qtpy lazily).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from psygnal import emit_queued

__all__ = ["Job", "Jobs", "GuiPoster"]

log = logging.getLogger(__name__)

OnDone = Callable[[Any, "BaseException | None"], None]


class Job:
    """One piece of session work: run on the worker thread, finished on the GUI thread."""

    __slots__ = ("name", "fn", "on_done", "future", "handled", "done_at")

    def __init__(self, name: str, fn: Callable[[], Any], on_done: OnDone | None) -> None:
        self.name = name
        self.fn = fn
        self.on_done = on_done
        self.future: Future = Future()
        self.handled = False
        #: ``time.perf_counter()`` when the worker finished it (latency measurements).
        self.done_at = 0.0

    def result(self) -> Any:
        """The job's return value, ``None`` when it raised (blocks until it is done)."""
        return None if self.future.exception() is not None else self.future.result()

    def __repr__(self) -> str:
        state = "handled" if self.handled else "done" if self.future.done() else "pending"
        return f"<Job {self.name!r} {state}>"


class Jobs:
    """The single worker thread that runs session work, and delivery of its results.

    Parameters
    ----------
    post
        Runs a callable on the GUI thread later, from any thread (:meth:`GuiPoster.post`). Not
        given: synchronous (each job runs in ``submit``).
    on_error
        Called on the GUI thread with ``(job, error)`` for a job without ``on_done`` that raised
        (default: log it).
    """

    def __init__(self, post: Callable[[Callable[[], None]], None] | None = None, *,
                 on_error: Callable[[Job, BaseException], None] | None = None, name: str = "al-annotator-session") -> None:
        self._post = post
        self._on_error = on_error or (lambda job, exc: log.error("%s failed", job.name, exc_info=exc))
        self._items: list[Job] = []
        self._lock = threading.Lock()
        #: ``threading.get_ident()`` of the worker thread (``None`` before the first job, or when synchronous).
        self.thread_ident: int | None = None
        self._executor = (ThreadPoolExecutor(max_workers=1, thread_name_prefix=name, initializer=self._started)
                          if post is not None else None)

    def _started(self) -> None:
        self.thread_ident = threading.get_ident()

    @property
    def synchronous(self) -> bool:
        """True without a poster: jobs run in the calling thread, inside :meth:`submit`."""
        return self._executor is None

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet finished on the GUI thread."""
        return len(self._items)

    def on_worker(self) -> bool:
        """Whether the calling thread is the worker thread."""
        return self.thread_ident is not None and threading.get_ident() == self.thread_ident

    # ------------------------------------------------------------------ submitting
    def submit(self, name: str, fn: Callable[[], Any], on_done: OnDone | None = None) -> Job:
        """Run ``fn()`` on the worker thread after every job submitted before it; then, on the GUI
        thread, deliver the session signals it queued and call ``on_done(result, error)``."""
        job = Job(name, fn, on_done)
        if self._executor is None:
            self._run(job)
            self.finish(job)
            return job
        with self._lock:
            self._items.append(job)
        self._executor.submit(self._run, job).add_done_callback(lambda _f, job=job: self._post(lambda: self.finish(job)))
        return job

    def call(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` on the worker thread and wait for it (after every job before it, which are
        finished here first); return its result or raise its error. Blocks the calling thread."""
        job = self.submit(name, fn, on_done=lambda result, error: None)
        self.drain(upto=job)
        return job.future.result()

    def _run(self, job: Job) -> None:  # the worker thread (or the caller's, when synchronous)
        try:
            job.future.set_result(job.fn())
        except BaseException as exc:  # noqa: BLE001 - handed to on_done on the GUI thread
            job.future.set_exception(exc)
        job.done_at = time.perf_counter()

    # ------------------------------------------------------------------ finishing (GUI thread)
    def finish(self, job: Job) -> None:
        """Handle a finished job on this (GUI) thread, once: queued session signals, then ``on_done``."""
        with self._lock:
            if job.handled:
                return  # both posted and waited for by drain
            job.handled = True
            if job in self._items:
                self._items.remove(job)
        emit_queued()  # the session's signals from the worker, on this thread now, in order
        error = job.future.exception()
        if job.on_done is not None:
            job.on_done(None if error is not None else job.future.result(), error)
        elif error is not None:
            self._on_error(job, error)

    def drain(self, upto: Job | None = None) -> None:
        """Wait for the jobs in flight and finish them here, in order (``upto``: stop after that one;
        jobs their ``on_done`` submits are waited for too). Blocks the calling (GUI) thread."""
        while upto is None or not upto.handled:
            with self._lock:
                items = list(self._items)
            if not items:
                return
            for job in items:
                job.future.exception()  # waits
                self.finish(job)
                if job is upto:
                    return

    def shutdown(self) -> None:
        """Finish what is in flight and stop the worker thread (no job can be submitted after)."""
        self.drain()
        if self._executor is not None:
            self._executor.shutdown(wait=True)


@functools.lru_cache(maxsize=1)
def _poster_class() -> type:
    from qtpy.QtCore import QObject, Signal

    class _Poster(QObject):
        call = Signal(object)

    return _Poster


class GuiPoster:
    """``post(fn)`` from any thread runs ``fn`` on the GUI thread later: a queued Qt signal (queued
    from the GUI thread too, so a job that is already done is never finished inside its own submit).
    Create it on the GUI thread."""

    def __init__(self) -> None:
        from qtpy.QtCore import Qt

        self._qobject = _poster_class()()
        self._qobject.call.connect(self._run, Qt.QueuedConnection)

    @staticmethod
    def _run(fn: Any) -> None:
        fn()

    def post(self, fn: Callable[[], None]) -> None:
        self._qobject.call.emit(fn)
