"""Progress of the dock's long work (creating a project from a layer) in napari's activity panel.

The work runs on the dock's worker thread (``_jobs``) and reports ``progress(done, total, what)``;
the bars are ``napari.utils.progress`` objects (napari's tqdm, shown with counts and an ETA in the
activity panel), created and updated only on the GUI thread, since napari connects a bar's events
straight to Qt widgets. Reports are queued and applied in order by a drain posted to the GUI thread
with superqt's ``ensure_main_thread``; creating a bar can process events (napari builds its widget),
so a drain started inside another one returns at once and the outer one keeps the order.
"""

from __future__ import annotations

import collections
import threading

from ..progress import ProgressBars

__all__ = ["NapariProgress"]


class NapariProgress:
    """A ``progress(done, total, what)`` callback, callable from any thread, drawing napari bars."""

    def __init__(self, unit: str = "slice") -> None:
        from napari.utils import progress
        from superqt.utils import ensure_main_thread

        self.bars = ProgressBars(unit=unit, bar=progress)
        self._pending: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self._draining = False
        self._post = ensure_main_thread(self._drain)
        self._post_close = ensure_main_thread(self._close)

    def __call__(self, done: int, total: int, what: str) -> None:
        with self._lock:
            self._pending.append((done, total, what))
        self._post()

    def close(self) -> None:
        """Apply what is still queued, then close the open bar (on the GUI thread)."""
        self._post_close()

    def _drain(self) -> None:  # GUI thread
        if self._draining:
            return
        self._draining = True
        try:
            while True:
                with self._lock:
                    if not self._pending:
                        return
                    report = self._pending.popleft()
                self.bars(*report)
        finally:
            self._draining = False

    def _close(self) -> None:  # GUI thread
        self._drain()
        self.bars.close()
