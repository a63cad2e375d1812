"""A real tier-2 trainer process training for the length of a latency benchmark ("while tier 2 trains").

``TrainingLoad(tmp)`` creates a phantom project of its own (32 x 128 x 128, three committed z slices
scribbled from the ground truth), starts the real trainer on it (``TrainerClient``, CPU, nice 10 as
the product spawns it, watch mode, continuous training) and waits until it trains. While the
benchmark runs, a thread reads the trainer's status every second; when the trainer has stopped
training (converged, or idle between rounds) for 3 s it paints one more scribble on that project, so
a new round starts: the load stays on. ``summary()`` says how much of the time the trainer was
training (or predicting) and samples the 1-minute load average.

Its own project, not the benchmark's: a deep model of the benchmark's project would take over the
served tier at some point and the figure would no longer be tier 1's stroke-to-overlay; the
machine's load is the same.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

BUSY = ("training", "predicting")


class TrainingLoad:
    def __init__(self, tmp: str | os.PathLike, *, start_timeout: float = 180.0) -> None:
        self.path = Path(tmp) / "trainer_load_project"
        self.start_timeout = float(start_timeout)
        self.samples: list[tuple[float, str, float]] = []  # (time, trainer state, 1-min load)
        self.kicks = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.client = None
        self.session = None

    def __enter__(self) -> "TrainingLoad":
        from al_annotator.core import Session
        from al_annotator.datasets import make_phantom
        from al_annotator.store import create_project
        from al_annotator.training.client import TrainerClient
        from al_annotator.types import SliceRef

        ph = make_phantom((32, 128, 128), seed=7)
        self._labels = ph.labels
        create_project(self.path, ph.image, classes=ph.classes).close()
        self.session = Session(self.path, author="load")
        self._rng = np.random.default_rng(7)
        for z in (8, 16, 24):
            self._scribble(SliceRef("z", z))
            self.session.mark_annotated(SliceRef("z", z))
        self.client = TrainerClient(self.path)
        self.client.start(watch=True, device="cpu", axes="z", continuous=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline and self.state() not in BUSY:
            time.sleep(0.5)
        if self.state() not in BUSY:
            raise RuntimeError(f"the trainer did not start training within {self.start_timeout:.0f} s "
                               f"(state {self.state()!r}; see {self.path / 'trainer' / 'worker.log'})")
        self._thread = threading.Thread(target=self._watch, name="trainer-load", daemon=True)
        self._thread.start()
        return self

    def _scribble(self, ref) -> None:
        plane = self._labels[ref.selection()].reshape(-1)
        for c in np.unique(plane):
            idx = np.flatnonzero(plane == c)
            self.session.paint(self._rng.choice(idx, min(200, idx.size), replace=False), int(c), ref=ref)

    def state(self) -> str:
        from al_annotator.training.client import read_status

        st = read_status(self.path)
        return str(st.get("state") or "unknown") if st.get("alive", True) else "dead"

    def _watch(self) -> None:
        from al_annotator.types import SliceRef

        quiet_since = None
        while not self._stop.wait(1.0):
            state = self.state()
            self.samples.append((time.monotonic(), state, os.getloadavg()[0]))
            if state in BUSY:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > 3.0:  # fresh labels: a new round
                self._scribble(SliceRef("z", int(self._rng.integers(0, 32))))
                self.kicks += 1
                quiet_since = None

    def summary(self) -> dict:
        busy = [s for _, s, _ in self.samples if s in BUSY]
        loads = [ld for _, _, ld in self.samples]
        return {"trainer_busy_share": round(len(busy) / max(1, len(self.samples)), 3), "samples": len(self.samples),
                "kicks": self.kicks, "load_p50": round(float(np.median(loads)), 2) if loads else None,
                "load_max": round(float(max(loads)), 2) if loads else None,
                "states": sorted({s for _, s, _ in self.samples})}

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.client is not None:
            self.client.stop(timeout=60)
        if self.session is not None:
            self.session.close()
