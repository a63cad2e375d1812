"""The napari front end: stroke-to-disk latency, GUI pauses while the trainer runs, opening 1024^3.

Three parts, each in a fresh process (clean memory figures, no napari state carried over):

* ``strokes``: mouse strokes through napari's own drag callbacks on z, y and x slices of a
  256^3 uint16 project; time from the mouse release (napari closes the stroke and emits
  ``events.paint``) until the stroke is in the edit log and the labels on disk, and the time of
  each brush dab (a mouse move).
* ``trainer``: the dock with its 500 ms poll timer, a real trainer process (CPU) training rounds
  while strokes are painted and slices committed; a 10 ms heartbeat ``QTimer`` measures how late
  the GUI thread gets (the longest pause), including when new model versions land and the
  prediction/uncertainty layers and the suggestion queue reload.
* ``big``: a 1024^3 uint8 project (written slab-wise from a synthetic volume, ~1 GB on disk,
  deleted afterwards); time and memory to open it in the dock, time to show a z, y and x slice
  (``go_to`` alone, and as Next does it: planes read on the dock's worker thread first), and stroke
  latency there.
* ``live``: tier 1 live (issue #11) on a phantom with 512 x 512 slices: strokes alternating two
  classes through napari's drag callbacks on one z slice; time from each stroke's mouse release
  until the dock's prediction layer shows tier 1's preview of that plane made from labels including
  the stroke (``AnnotatorWidget.preview_shown``), and the longest GUI pause meanwhile (10 ms
  heartbeat). Written to its own section (``bench_napari_live``)::

    xvfb-run -a .venv/bin/python benchmarks/bench_napari.py --only live --write-md docs/BENCHMARKS.md

Needs a display: run under ``xvfb-run -a`` (or it starts Xvfb through pyvirtualdisplay when installed)::

    xvfb-run -a .venv/bin/python benchmarks/bench_napari.py --write-md docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import write_section  # noqa: E402

HERE = Path(__file__).resolve()


# ---------------------------------------------------------------------- helpers
def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values, float), q)) if len(values) else float("nan")


def make_viewer():
    import napari
    from qtpy.QtWidgets import QApplication

    from al_annotator.napari._widget import AnnotatorWidget

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 900)
    widget = AnnotatorWidget(viewer, poll_ms=0)
    viewer.window.add_dock_widget(widget, name="AL Annotator")
    settle(0.3)
    return viewer, widget, QApplication.instance()


def settle(seconds: float = 0.0) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    QApplication.processEvents()
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.005)


class Stroker:
    """Strokes through napari's own mouse drag callbacks; records dab and commit latencies."""

    def __init__(self, viewer, widget) -> None:
        self.viewer, self.widget = viewer, widget
        self.commit_ms: list[float] = []  # mouse release -> stroke in the fsync'ed log and the labels
        self.release_ms: list[float] = []  # GUI thread time of the release (napari closes the stroke)
        self.dab_ms: list[float] = []
        self._releases: list[float] = []
        widget.bridge.stroke_committed.connect(self._committed)

    def _committed(self, atoms) -> None:
        if self._releases:
            self.commit_ms.append((self.widget.bridge.last_on_disk - self._releases.pop(0)) * 1e3)

    def _event(self, type_: str, position, is_dragging: bool):
        from napari.utils._proxies import ReadOnlyWrapper

        dims = self.viewer.dims
        event = type("Event", (), {})()
        event.__dict__.update({"type": type_, "position": tuple(position), "is_dragging": is_dragging, "handled": False,
                               "view_direction": None, "dims_displayed": tuple(dims.displayed), "dims_point": tuple(dims.point),
                               "pos": (0, 0), "button": 1, "modifiers": ()})
        return ReadOnlyWrapper(event)

    def press(self, point) -> None:
        from napari.utils.interactions import mouse_press_callbacks

        t = time.perf_counter()
        mouse_press_callbacks(self.widget.layers["labels"], self._event("mouse_press", point, False))
        self.dab_ms.append((time.perf_counter() - t) * 1e3)

    def move(self, point) -> None:
        from napari.utils.interactions import mouse_move_callbacks

        t = time.perf_counter()
        mouse_move_callbacks(self.widget.layers["labels"], self._event("mouse_move", point, True))
        self.dab_ms.append((time.perf_counter() - t) * 1e3)

    def release(self, point) -> None:
        from napari.utils.interactions import mouse_release_callbacks

        t = time.perf_counter()
        self._releases.append(t)
        mouse_release_callbacks(self.widget.layers["labels"], self._event("mouse_release", point, False))
        self.release_ms.append((time.perf_counter() - t) * 1e3)

    def stroke(self, points) -> None:
        """The whole stroke at once (press, moves, release)."""
        self.press(points[0])
        for p in points[1:]:
            self.move(p)
        self.release(points[-1])

    def schedule(self, points, actions: list, interval_ms: int = 16) -> None:
        """The stroke as separate Qt events, one mouse event every ``interval_ms`` (as a hand moves)."""
        from qtpy.QtCore import QTimer

        steps = [("dab", self.press, points[0])] + [("dab", self.move, p) for p in points[1:]] + [("stroke commit", self.release, points[-1])]
        for k, (label, fn, p) in enumerate(steps):
            QTimer.singleShot(k * interval_ms, timed(actions, label, lambda fn=fn, p=p: fn(p)))


def timed(actions: list, label: str, fn):
    """``fn`` recording (start, end, label) into ``actions`` (to attribute GUI pauses)."""

    def run(*a):
        t = time.perf_counter()
        try:
            return fn(*a)
        finally:
            actions.append((t, time.perf_counter(), label))

    return run


def stroke_points(ref, shape, rng, n: int = 12, step: int = 3):
    """World positions (scale 1) of a wiggly stroke on ``ref``."""
    a, b = (d for d in range(3) if d != ref.axis_number)
    pos = np.array([rng.integers(20, shape[a] - 20), rng.integers(20, shape[b] - 20)], float)
    pts = []
    for _ in range(n):
        p = [0.0, 0.0, 0.0]
        p[ref.axis_number] = ref.index
        p[a], p[b] = float(np.clip(pos[0], 0, shape[a] - 1)), float(np.clip(pos[1], 0, shape[b] - 1))
        pts.append(tuple(p))
        pos += rng.integers(-step, step + 1, 2)
    return pts


def ct_like(shape, dtype, seed=0) -> np.ndarray:
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), 2)
    info = np.iinfo(dtype)
    mid = (int(info.max) + 1) // 2
    return (mid + field * mid * 0.4 + rng.normal(0, mid * 0.02, shape)).clip(0, info.max).astype(dtype)


class SyntheticVolume:
    """A large synthetic volume produced slab by slab (never whole in memory)."""

    def __init__(self, n: int, dtype="uint8") -> None:
        self.shape = (n, n, n)
        self.dtype = np.dtype(dtype)
        yy, xx = np.mgrid[0:n, 0:n]
        r = np.hypot(yy - n / 2, xx - n / 2)
        self._base = np.where(r < n * 0.4, 170, 60).astype(np.int16) + (((yy // 32 + xx // 32) % 2) * 20).astype(np.int16)

    def __getitem__(self, key):
        z = key[0] if isinstance(key, tuple) else key
        z0, z1, _ = z.indices(self.shape[0])
        rng = np.random.default_rng(z0)
        slab = np.broadcast_to(self._base, (z1 - z0, *self._base.shape)) + rng.integers(-15, 16, (z1 - z0, *self._base.shape), dtype=np.int16)
        return slab.clip(0, 255).astype(self.dtype)


# ---------------------------------------------------------------------- parts
def part_strokes(args) -> dict:
    from al_annotator.store import create_project, open_project
    from al_annotator.types import SliceRef

    n = args.stroke_size
    shape = (n, n, n)
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        create_project(Path(tmp) / "p", ct_like(shape, np.uint16), classes="background,bone,implant,degradation")
        viewer, widget, _ = make_viewer()
        widget.open_project(Path(tmp) / "p")
        layer = widget.layers["labels"]
        layer.brush_size = 10
        stroker = Stroker(viewer, widget)
        per_axis = {}
        for axis in "zyx":
            start = len(stroker.commit_ms)
            for k in range(args.strokes):
                ref = SliceRef(axis, int(rng.integers(0, n)))
                widget.go_to(ref)
                widget.select_label(1 + k % 4)
                stroker.stroke(stroke_points(ref, shape, rng))
                while widget.bridge.pending:
                    settle(0.002)
            per_axis[axis] = stroker.commit_ms[start:]
        problems = open_project(Path(tmp) / "p").check()
        viewer.close()
    return {
        "shape": shape, "strokes": len(stroker.commit_ms), "brush": 10, "moves": 11,
        "commit_p50": pct(stroker.commit_ms, 50), "commit_p95": pct(stroker.commit_ms, 95), "commit_max": max(stroker.commit_ms),
        "per_axis_p95": {a: pct(v, 95) for a, v in per_axis.items()},
        "dab_p50": pct(stroker.dab_ms, 50), "dab_p95": pct(stroker.dab_ms, 95), "dab_max": max(stroker.dab_ms),
        "release_p50": pct(stroker.release_ms, 50), "release_p95": pct(stroker.release_ms, 95), "release_max": max(stroker.release_ms),
        "check_problems": problems,
    }


def part_trainer(args) -> dict:
    from qtpy.QtCore import QTimer

    from al_annotator.core import Session
    from al_annotator.datasets import make_phantom
    from al_annotator.store import create_project
    from al_annotator.types import SliceRef

    ph = make_phantom((64, 128, 128), dtype="uint16")
    rng = np.random.default_rng(2)
    out: dict = {}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        path = Path(tmp) / "p"
        create_project(path, ph.image, classes=ph.classes)
        # a few committed slices with sparse ground-truth scribbles so the first round can start
        seed = Session(path, author="seed")
        for z in (16, 32, 48):
            ref = SliceRef("z", z)
            gt = ph.labels[z].reshape(-1)
            idx = np.flatnonzero(rng.random(gt.size) < 0.05)
            for value in np.unique(gt[idx]):
                seed.paint(idx[gt[idx] == value], int(value), ref=ref)
            seed.mark_annotated(ref)
        seed.close()

        viewer, widget, app = make_viewer()
        widget.open_project(path)
        widget.timer.start(500)
        stroker = Stroker(viewer, widget)
        beats: list[float] = []
        heartbeat = QTimer()
        heartbeat.setInterval(10)
        heartbeat.timeout.connect(lambda: beats.append(time.perf_counter()))
        versions: list[tuple[float, float]] = []  # (time landed, handler ms)
        actions: list[tuple[float, float, str]] = []
        signal = widget.session.model_version_changed
        signal.disconnect(widget._on_model_version)

        def timed_handler(cur):  # the dock's own handler, timed (layers re-pointed + auto-refreshed suggestions)
            t = time.perf_counter()
            widget._on_model_version(cur)
            versions.append((time.perf_counter(), (time.perf_counter() - t) * 1e3))
            actions.append((t, time.perf_counter(), "new model version"))

        signal.connect(timed_handler, thread="main")  # as the dock connects it: handled on the GUI thread
        widget.timer.timeout.disconnect(widget._tick)
        widget.timer.timeout.connect(timed(actions, "poll tick", widget._tick))
        finish_job = widget.jobs.finish  # GUI-thread side of the session work done on the dock's worker thread

        def finish_job_timed(job):
            t = time.perf_counter()
            try:
                finish_job(job)
            finally:
                actions.append((t, time.perf_counter(), f"{job.name} done"))

        widget.jobs.finish = finish_job_timed

        def commit_slice():
            widget.mark_annotated()
            QTimer.singleShot(300, timed(actions, "next suggestion", next_slice))

        def next_slice():  # Next: picked and read on the worker thread; shown in "next suggestion done"
            if widget._queue:
                widget.next_suggestion()
            else:
                widget.go_to(SliceRef("z", int(rng.integers(0, 64))), wait=False)

        def paint():
            widget.select_label(int(rng.integers(1, 5)))
            stroker.schedule(stroke_points(widget.session.current, (64, 128, 128), rng, n=10), actions)

        t0 = time.perf_counter()
        heartbeat.start()
        session = widget.session  # Session calls go through the dock's one worker thread, as the dock's own do
        widget.jobs.call("start trainer", lambda: session.start_trainer(
            device="cpu", steps=args.train_steps, max_seconds=args.train_seconds, axes="z", debounce=1.0))
        widget._started_trainer = True
        last_stroke = last_commit = time.perf_counter()
        poll_before = dict(widget.poll_stats)
        while time.perf_counter() - t0 < args.trainer_seconds and len(versions) < args.versions:
            settle(0.05)
            now = time.perf_counter()
            if now - last_stroke > 2.0 and now - last_commit > 1.0:  # an expert painting every 2 s, one mouse event every 16 ms
                QTimer.singleShot(0, timed(actions, "choose class", paint))
                last_stroke = now
            if now - last_commit > 12.0 and now - last_stroke > 0.6:  # ... and committing a slice every 12 s, then Next
                QTimer.singleShot(0, timed(actions, "mark annotated", commit_slice))
                last_commit = now
        heartbeat.stop()
        elapsed = time.perf_counter() - t0
        if args.screenshot:
            pred = widget.layers.get("prediction")
            if pred is not None:
                pred.opacity = 0.5
            settle(0.5)
            import imageio.v3 as iio

            iio.imwrite(args.screenshot, viewer.screenshot(canvas_only=False, flash=False))
        status = widget.session.trainer_status()
        widget.jobs.call("stop trainer", lambda: session.stop_trainer(timeout=60))
        widget._started_trainer = False
        gaps = np.diff(np.asarray(beats)) * 1e3
        late = gaps - 10.0
        # lateness around the moments versions landed (handler + following repaint)
        around = []
        for t_land, _ms in versions:
            sel = (np.asarray(beats[1:]) > t_land - 1.0) & (np.asarray(beats[1:]) < t_land + 1.0)
            if sel.any():
                around.append(float(late[sel].max()))
        # the longest pauses, split into time inside our handlers (by name) and the rest (Qt/vispy
        # painting with Mesa's software GL, garbage collection, the OS giving the CPU to others)
        longest = []
        beat_t = np.asarray(beats[1:])
        for i in np.argsort(late)[::-1][:5]:
            end, start = beat_t[i], beat_t[i] - gaps[i] / 1e3
            inside: dict[str, float] = {}
            spans = []
            for a, b, label in actions:
                overlap = min(b, end) - max(a, start)
                if overlap > 0:
                    inside[label] = inside.get(label, 0.0) + overlap * 1e3
                    spans.append((max(a, start), min(b, end)))
            covered, reach = 0.0, start  # union of the handler spans (a version lands inside a poll)
            for a, b in sorted(spans):
                if b > reach:
                    covered += b - max(a, reach)
                    reach = b
            rest = gaps[i] - covered * 1e3
            longest.append((round(float(late[i])), {k: round(v) for k, v in sorted(inside.items(), key=lambda kv: -kv[1]) if v >= 1}, round(float(rest))))
        gui_max: dict[str, float] = {}
        for a, b, label in actions:
            gui_max[label] = max(gui_max.get(label, 0.0), (b - a) * 1e3)
        out = {
            "longest": longest, "gui_max_ms": {k: round(v, 1) for k, v in sorted(gui_max.items())},
            "seconds": elapsed, "versions": len(versions), "version_handler_ms": [round(ms, 1) for _, ms in versions],
            "late_p50": pct(late, 50), "late_p99": pct(late, 99), "late_max": float(late.max()) if late.size else float("nan"),
            "late_around_versions_max": max(around) if around else float("nan"),
            "poll_n": widget.poll_stats["n"] - poll_before["n"], "poll_max_ms": widget.poll_stats["max_s"] * 1e3,
            "poll_mean_ms": 1e3 * (widget.poll_stats["total_s"] - poll_before["total_s"]) / max(1, widget.poll_stats["n"] - poll_before["n"]),
            "strokes": len(stroker.commit_ms), "commit_p95": pct(stroker.commit_ms, 95), "dab_p95": pct(stroker.dab_ms, 95),
            "release_p95": pct(stroker.release_ms, 95), "commit_max": max(stroker.commit_ms) if stroker.commit_ms else float("nan"),
            "trainer_state": status.state, "trainer_round": status.round,
        }
        viewer.close()
    return out


def part_big(args) -> dict:
    from al_annotator.store import create_project
    from al_annotator.types import SliceRef

    n = args.big
    path = Path(args.tmp) / f"bench_napari_{n}"
    if path.exists():
        shutil.rmtree(path)
    try:
        t = time.perf_counter()
        create_project(path, SyntheticVolume(n, args.big_dtype), classes="background,bone,implant,degradation", fsync=False).close()
        t_create = time.perf_counter() - t
        disk_gb = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e9
        # the page cache would hide the cost of reading: drop this file set from it where allowed
        _drop_cache(path)
        viewer, widget, _ = make_viewer()
        from qtpy.QtCore import QTimer

        rss0, _ = rss_mb()
        t = time.perf_counter()
        widget.open_project(path)
        settle()
        t_open = time.perf_counter() - t
        rss1, hwm1 = rss_mb()
        # cold-start suggestions are prepared on a thread: time until the queue fills, GUI pauses meanwhile
        beats: list[float] = []
        heartbeat = QTimer()
        heartbeat.setInterval(10)
        heartbeat.timeout.connect(lambda: beats.append(time.perf_counter()))
        heartbeat.start()
        while widget.suggestion_table.rowCount() == 0 and time.perf_counter() - t < 600:
            settle(0.02)
        heartbeat.stop()
        t_suggest = time.perf_counter() - t
        late_cold = float((np.diff(beats) * 1e3 - 10).max()) if len(beats) > 1 else float("nan")
        slice_ms = {}
        for axis in "zyx":  # go_to alone: napari reads the planes on the GUI thread
            times = []
            for k in range(3):
                ref = SliceRef(axis, int(n * (0.3 + 0.2 * k)))
                t = time.perf_counter()
                widget.go_to(ref, wait=False)
                settle()
                times.append((time.perf_counter() - t) * 1e3)
            slice_ms[axis] = times
        # as Next and a click in the suggestion table do it: the planes read on the worker thread, then
        # go_to (GUI thread, planes from the layers' caches); other slices than above (no warm page cache)
        shown_ms: dict[str, list[tuple[float, float]]] = {}
        for axis in "zyx":
            times = []
            for k in range(3):
                ref = SliceRef(axis, int(n * (0.35 + 0.2 * k)))
                t = time.perf_counter()
                widget._submit("show", widget._prefetch_job(ref))
                while widget.busy:
                    settle(0.002)
                t_read = time.perf_counter() - t
                t = time.perf_counter()
                widget.go_to(ref, wait=False)
                settle()
                times.append((t_read * 1e3, (time.perf_counter() - t) * 1e3))
            shown_ms[axis] = times
        stroker = Stroker(viewer, widget)
        rng = np.random.default_rng(3)
        widget.layers["labels"].brush_size = 20
        for k in range(15):
            ref = SliceRef("zyx"[k % 3], int(rng.integers(0, n)))
            widget.go_to(ref)
            stroker.stroke(stroke_points(ref, (n, n, n), rng, n=12, step=8))
            while widget.bridge.pending:
                settle(0.002)
        rss2, hwm2 = rss_mb()
        viewer.close()
        return {
            "n": n, "dtype": args.big_dtype, "create_s": t_create, "disk_gb": disk_gb, "open_s": t_open,
            "suggestions_s": t_suggest, "late_cold_start_max_ms": late_cold,
            "rss_before_mb": rss0, "rss_after_open_mb": rss1, "open_delta_mb": rss1 - rss0, "peak_mb": hwm2,
            "rss_after_strokes_mb": rss2, "slice_ms": slice_ms, "shown_ms": shown_ms,
            "commit_p50": pct(stroker.commit_ms, 50), "commit_p95": pct(stroker.commit_ms, 95), "dab_p95": pct(stroker.dab_ms, 95),
            "volume_gb": n**3 * np.dtype(args.big_dtype).itemsize / 1e9,
        }
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _drop_cache(path: Path) -> None:
    try:
        subprocess.run(["sync"], check=False)
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError:
        pass  # not root: the figures then include a warm page cache (said in the report)


def part_live(args) -> dict:
    from qtpy.QtCore import QTimer
    from scipy import ndimage

    from al_annotator.datasets import make_phantom
    from al_annotator.store import create_project
    from al_annotator.types import SliceRef

    shape = tuple(int(n) for n in args.live_shape.split(","))
    ph = make_phantom(shape, dtype="uint16")
    ref = SliceRef("z", shape[0] // 2)
    gt = ph.labels[ref.selection()]
    rng = np.random.default_rng(4)
    values = [int(v) for v in np.unique(gt)][:2]  # two classes of the slice, alternated
    inside = {v: np.argwhere(ndimage.binary_erosion(gt == v, iterations=8)) for v in values}
    inside = {v: pts if len(pts) else np.argwhere(gt == v) for v, pts in inside.items()}  # thin classes: anywhere inside
    import contextlib

    from trainer_load import TrainingLoad

    plane_px = shape[1] * shape[2]
    live_timeout = args.live_timeout * max(1.0, (plane_px / 512 ** 2) ** 0.5)  # a cold 2048^2 plane takes minutes
    n_strokes = args.live_strokes if plane_px <= 512 ** 2 else max(6, args.live_strokes // 2)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp, \
            (TrainingLoad(tmp) if not args.no_trainer else contextlib.nullcontext()) as trainer:
        path = Path(tmp) / "p"
        create_project(path, ph.image, classes=ph.classes)
        viewer, widget, _ = make_viewer()  # the dock's 100 ms preview timer runs (preview_ms default)
        widget.open_project(path)
        widget.timer.start(500)  # and its poll, as for a user
        widget.go_to(ref)
        layer = widget.layers["labels"]
        layer.brush_size = 10
        stroker = Stroker(viewer, widget)
        seqs: list[int] = []
        widget.bridge.stroke_committed.connect(lambda atoms: seqs.append(max(int(a.seq) for a in atoms)))
        shown: list[tuple[float, object]] = []
        widget.preview_shown.connect(lambda p: shown.append((time.perf_counter(), p)))
        beats: list[float] = []
        heartbeat = QTimer()
        heartbeat.setInterval(10)
        heartbeat.timeout.connect(lambda: beats.append(time.perf_counter()))
        actions: list[tuple[float, float, str]] = []  # GUI-thread handlers, to attribute the pauses
        finish_job = widget.jobs.finish

        def finish_job_timed(job):
            t = time.perf_counter()
            try:
                finish_job(job)
            finally:
                actions.append((t, time.perf_counter(), f"{job.name} done"))

        widget.jobs.finish = finish_job_timed
        latency, compute, timeouts, cold = [], [], 0, None
        t_start = time.perf_counter()
        heartbeat.start()
        for k in range(n_strokes + 2):  # the first: one class only, nothing to fit; the second: the cold fit
            value = values[k % 2]
            r, c = inside[value][rng.integers(len(inside[value]))]
            pts = []
            for j in range(10):
                p = [0.0, 0.0, 0.0]
                p[0], p[1], p[2] = float(ref.index), float(np.clip(r + rng.integers(-3, 4), 0, shape[1] - 1)), float(
                    np.clip(c - 15 + 3 * j, 0, shape[2] - 1))
                pts.append(tuple(p))
            widget.select_label(value)
            t = time.perf_counter()
            stroker.press(pts[0])
            for p in pts[1:]:
                stroker.move(p)
            t_release = time.perf_counter()
            stroker.release(pts[-1])
            actions.append((t, time.perf_counter(), "stroke (dabs + release)"))
            n_seen = len(shown)
            deadline = time.perf_counter() + live_timeout
            while (widget.bridge.pending or len(seqs) <= k) and time.perf_counter() < deadline:
                settle(0.002)
            if k == 0:
                settle(0.5)
                continue
            want = seqs[k]
            done = None
            while done is None and time.perf_counter() < deadline:
                settle(0.002)
                done = next(((t, p) for t, p in shown[n_seen:] if p.ref == ref and p.seq >= want), None)
            if done is None:
                timeouts += 1
                continue
            ms = (done[0] - t_release) * 1e3
            if cold is None:
                cold = ms  # the first fit computes the plane's features (the cache is cold)
            else:
                latency.append(ms)
                compute.append(done[1].seconds * 1e3)
            settle(args.live_gap)
        heartbeat.stop()
        gaps = np.diff(np.asarray(beats)) * 1e3
        late = gaps - 10.0
        longest = []
        beat_t = np.asarray(beats[1:])
        for i in np.argsort(late)[::-1][:3]:
            end, start = beat_t[i], beat_t[i] - gaps[i] / 1e3
            inside: dict[str, float] = {}
            for a, b, label in actions:
                overlap = min(b, end) - max(a, start)
                if overlap > 0:
                    inside[label] = inside.get(label, 0.0) + overlap * 1e3
            longest.append((round(float(late[i])), round(start - t_start, 1), {k: round(v) for k, v in inside.items() if v >= 1}))
        served = widget.session.served_tier()
        timings = dict(widget.session._live.timings) if widget.session._live is not None else {}
        viewer.close()
        trainer_summary = trainer.summary() if trainer is not None else None
    return {"trainer": trainer_summary, "live_timeout": live_timeout,
        "shape": shape, "plane": list(gt.shape), "strokes": len(latency), "timeouts": timeouts, "brush": 10,
        "cold_ms": cold, "p50": pct(latency, 50), "p95": pct(latency, 95), "max": max(latency) if latency else float("nan"),
        "compute_p50": pct(compute, 50), "compute_p95": pct(compute, 95),
        "overhead_p50": pct(np.subtract(latency, compute), 50) if latency else float("nan"),
        "late_p50": pct(late, 50), "late_p99": pct(late, 99), "late_max": float(late.max()) if late.size else float("nan"),
        "commit_p95": pct(stroker.commit_ms, 95), "dab_p95": pct(stroker.dab_ms, 95), "release_p95": pct(stroker.release_ms, 95),
        "longest": longest, "served": served, "timings": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in timings.items()},
    }


def report_live(r: dict, args: dict) -> str:
    shape = "x".join(str(n) for n in r["shape"])
    return "\n".join([
        f"**Stroke to tier 1 preview on screen** (phantom {shape} uint16, {r['plane'][0]} x {r['plane'][1]} z slice; "
        f"{r['strokes']} strokes of 10 dabs with a {r['brush']}-voxel brush alternating two classes, through napari's mouse drag "
        f"callbacks; dock with its 100 ms preview timer and 500 ms poll). From the mouse release until the prediction layer "
        "shows tier 1's preview of that plane made from labels that include the stroke (`AnnotatorWidget.preview_shown`, "
        "emitted after the layer's refresh):",
        "",
        "| | p50 (ms) | p95 (ms) | max (ms) |",
        "| --- | --- | --- | --- |",
        f"| release -> preview shown | {r['p50']:.0f} | {r['p95']:.0f} | {r['max']:.0f} |",
        f"| of which tier 1 refit + plane prediction (`PlanePreview.seconds`, its own thread) | {r['compute_p50']:.0f} | {r['compute_p95']:.0f} | |",
        "",
        f"The rest (p50 {r['overhead_p50']:.0f} ms) is the stroke's commit on the worker thread (p95 {r['commit_p95']:.0f} ms), "
        "tier 1 picking the request up, the preview timer (<= 100 ms) and the worker reading the plane into the layers' caches, "
        f"then the layer refresh. The first preview (cold feature cache: the filter bank computes the plane's tiles) took "
        f"{(r['cold_ms'] or float('nan')) / 1e3:.1f} s and is not in the table; {r['timeouts']} strokes timed out ({r.get('live_timeout', args.get('live_timeout')):.0f} s). "
        "Why 8 slices deep: LivePreview's filter bank caches 768 MB of tiles, and a z plane of a 32 x 512 x 512 volume touches "
        "8 tiles of 244 MB (61 features), so there every preview recomputes every feature (~2 min per stroke measured under load); "
        "8 x 512 x 512 holds in the cache, as a warm feature cache does for a volume's working set. "
        f"GUI thread meanwhile (10 ms heartbeat): lateness p50 {r['late_p50']:.1f} ms, p99 {r['late_p99']:.0f} ms, "
        f"longest pause {r['late_max']:.0f} ms (the three longest, at seconds into the run, with the dock's GUI handlers "
        "inside them; the rest is Qt/vispy drawing on software GL, the GIL held by tier 1's thread and the CPU given to others: "
        + "; ".join(f"{ms} ms at {at} s" + (" = " + " + ".join(f"{v} {k}" for k, v in inside.items()) if inside else "")
                    for ms, at, inside in r["longest"]) + f"); dab p95 {r['dab_p95']:.1f} ms, release p95 {r['release_p95']:.1f} ms. "
        f"Served at the end: {r['served']['tier']} (held-out Dice instant {r['served']['instant']}, deep {r['served']['deep']}). "
        f"Tier 1's last fit: {r['timings']}." + _load(r) + " " + _trainer_words(r.get("trainer")),
    ])


def _trainer_words(t: dict | None) -> str:
    if not t:
        return "No trainer process ran."
    return (f"A real tier-2 trainer process (CPU, nice 10, continuous, on a 32x128x128 phantom project of its own: "
            f"`benchmarks/trainer_load.py`) was training or predicting in {100 * t['trainer_busy_share']:.0f} % of "
            f"{t['samples']} one-second samples; load average p50 {t['load_p50']} / max {t['load_max']} during the part.")


PARTS = {"strokes": part_strokes, "trainer": part_trainer, "big": part_big, "live": part_live}


# ---------------------------------------------------------------------- driver
def run_part(name: str, argv: list[str]) -> dict:
    t = time.perf_counter()
    load_before = os.getloadavg()[0]
    proc = subprocess.run([sys.executable, str(HERE), "--part", name, *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"part {name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    result["load"] = (round(load_before, 2), round(os.getloadavg()[0], 2))  # 1-min load average before / after
    print(f"{name}: {time.perf_counter() - t:.0f} s  {json.dumps(result)}", flush=True)
    return result


def _load(part: dict) -> str:
    load = part.get("load")
    return f" Load average (1 min) before / after this part: {load[0]} / {load[1]}." if load else ""


def report(res: dict) -> str:
    lines = []
    s = res.get("strokes")
    if s:
        lines += [
            f"**Stroke to disk** ({s['shape'][0]}^3 uint16 project, {s['strokes']} strokes of 12 dabs with a "
            f"{s['brush']}-voxel brush through napari's mouse drag callbacks, on z, y and x slices). From the mouse release "
            "(napari emits `events.paint`) to the stroke being in the fsync'ed edit log and the zarr labels:",
            "",
            "| | p50 (ms) | p95 (ms) | max (ms) |",
            "| --- | --- | --- | --- |",
            f"| stroke commit (release -> on disk) | {s['commit_p50']:.1f} | {s['commit_p95']:.1f} | {s['commit_max']:.1f} |",
            f"| GUI thread blocked by the release (stroke handed to the worker thread) | {s['release_p50']:.1f} | {s['release_p95']:.1f} | {s['release_max']:.1f} |",
            f"| one brush dab (mouse move, into the stroke buffer) | {s['dab_p50']:.1f} | {s['dab_p95']:.1f} | {s['dab_max']:.1f} |",
            "",
            "Commit p95 per axis: " + ", ".join(f"{a} {v:.1f} ms" for a, v in s["per_axis_p95"].items())
            + f". `check()` after the run (labels == replayed log): {s['check_problems'] or 'no problems'}."
            + _load(s),
            "",
        ]
    t = res.get("trainer")
    if t:
        lines += [
            f"**GUI pauses while the trainer runs** (phantom 64x128x128, trainer process on the CPU, rounds of "
            f"{res['args']['train_steps']} steps, a stroke every 2 s and a committed slice every 12 s, dock polling every 500 ms; "
            f"{t['seconds']:.0f} s, {t['versions']} model versions landed). A 10 ms heartbeat `QTimer` on the GUI thread:",
            "",
            "| heartbeat lateness p50 | p99 | longest pause | longest within 1 s of a version landing | `Session.poll()` on the worker thread, mean / max |",
            "| --- | --- | --- | --- | --- |",
            f"| {t['late_p50']:.1f} ms | {t['late_p99']:.1f} ms | {t['late_max']:.0f} ms | {t['late_around_versions_max']:.0f} ms "
            f"| {t['poll_mean_ms']:.1f} / {t['poll_max_ms']:.1f} ms |",
            "",
            "GUI-thread time per action (max ms): " + ", ".join(f"{k} {v:.1f}" for k, v in t.get("gui_max_ms", {}).items())
            + ". Session work (polling, committing a slice, ranking) runs on the worker thread; the GUI thread only hands it over "
            "(`poll tick`, `mark annotated`) and applies the results (`... done`: queued session signals, widgets, layers).",
            "",
            f"New-version handler on the GUI thread (prediction + uncertainty layers re-pointed; re-ranking handed to the worker thread): "
            f"{', '.join(f'{ms:.0f}' for ms in t['version_handler_ms'])} ms. Strokes under trainer load: commit p95 "
            f"{t['commit_p95']:.1f} ms (max {t['commit_max']:.0f} ms, off the GUI thread), release handler p95 {t['release_p95']:.1f} ms, "
            f"dab p95 {t['dab_p95']:.1f} ms. The five longest pauses, split into time in the dock's "
            "handlers (nested: a new version is handled inside a poll) and the rest (Qt/vispy painting on Mesa's software GL, GC, CPU taken by the trainer and other processes): "
            + "; ".join(f"{ms} ms = " + " + ".join([f"{v} {k}" for k, v in inside.items()] + [f"{rest} rest"]) for ms, inside, rest in t["longest"]) + "."
            + _load(t),
            "",
        ]
    b = res.get("big")
    if b:
        sl = "; ".join(f"{a}: " + ", ".join(f"{v:.0f}" for v in b["slice_ms"][a]) for a in "zyx")
        lines += [
            f"**Opening a {b['n']}^3 {b['dtype']} project** ({b['volume_gb']:.1f} GB volume, {b['disk_gb']:.2f} GB on disk; "
            f"created slab-wise in {b['create_s']:.0f} s, deleted afterwards):",
            "",
            "| open in the dock (4 layers added, first slice drawn) | cold-start suggestions listed (ranked on the worker thread) "
            "| longest GUI pause meanwhile | RSS added by opening | peak RSS of the napari process |",
            "| --- | --- | --- | --- | --- |",
            f"| {b['open_s']:.1f} s | {b['suggestions_s']:.1f} s | {b['late_cold_start_max_ms']:.0f} ms | {b['open_delta_mb']:.0f} MB "
            f"| {b['peak_mb']:.0f} MB |",
            "",
            f"Showing a slice with `go_to` alone (napari reads the image + labels planes from 64^3 chunks on the GUI thread, then draws), ms: {sl}. "
            + (("As Next and a click in the suggestion table show one (planes read on the worker thread, then `go_to` + draw on the GUI "
                "thread from the layers' plane caches), read / GUI ms: "
                + "; ".join(f"{a}: " + ", ".join(f"{r:.0f} / {g:.0f}" for r, g in b["shown_ms"][a]) for a in "zyx") + ". ")
               if b.get("shown_ms") else "") +
            f"Strokes there (20-voxel brush): commit p50 {b['commit_p50']:.1f} ms, p95 {b['commit_p95']:.1f} ms; dab p95 {b['dab_p95']:.1f} ms. "
            "The cold start reads a sub-grid of at most 216 image chunks (`COLD_START_MAX_CHUNKS`), not whole slices." + _load(b),
            "",
        ]
    lines += [
        "The machine is shared (2 cores, other test suites running; each part gives the load average it ran under): "
        "the same run varies 2-5x with the load (commit p95 ranged 30-400 ms in repeated runs, fsync-bound), and at a load "
        "of 6-9 on 2 cores the longest GUI pauses are time the GUI thread does not get the CPU (\"rest\"), not time in the dock's handlers.",
        "",
        "Design read from these figures: the Labels layer's data is a `StoreLabels` view of the zarr labels "
        "(no full-size copy; the volume is never read whole) whose writes go to a per-stroke buffer of 64^3 chunks; "
        "the stroke reaches the store only through `Session.apply_edit` (logged, locked) when napari closes it, on the dock's one worker thread (every Session call runs there), so the GUI thread never waits on the edit log's fsync. "
        "Every layer's data wrapper keeps a few whole planes (`PlaneCache`); Next, a click in the suggestion table and the poll "
        "(another process's labels, a new model version) read the planes about to be shown on the worker thread first, so "
        "napari's slicing on the GUI thread reads no zarr chunk for them (`tests/test_napari.py` counts zarr reads on the GUI thread). "
        "An axis change also holds napari's slider panel at its height (napari shows the new slider before hiding the old one: "
        "two canvas resizes and redraws on the GUI thread otherwise).",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=sorted(PARTS), help="run one part in this process and print its RESULT")
    ap.add_argument("--only", default="strokes,trainer,big", help="parts to run (comma-separated)")
    ap.add_argument("--strokes", type=int, default=20, help="strokes per axis")
    ap.add_argument("--stroke-size", type=int, default=256)
    ap.add_argument("--trainer-seconds", type=float, default=240)
    ap.add_argument("--versions", type=int, default=3, help="stop the trainer part after this many model versions")
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--train-seconds", type=float, default=20)
    ap.add_argument("--big", type=int, default=1024)
    ap.add_argument("--big-dtype", default="uint8")
    ap.add_argument("--live-shape", default="8,512,512", help="phantom shape of one live part (z, y, x)")
    ap.add_argument("--live-shapes", default="8,512,512", help="live: the shapes to run, '/'-separated, e.g. 8,512,512/8,2048,2048")
    ap.add_argument("--no-trainer", action="store_true", help="live: no tier-2 trainer process training meanwhile")
    ap.add_argument("--live-strokes", type=int, default=20, help="strokes timed in the live part (after a one-class stroke and the cold fit)")
    ap.add_argument("--live-timeout", type=float, default=180.0, help="seconds to wait for one stroke's preview")
    ap.add_argument("--live-gap", type=float, default=0.3, help="seconds between a preview shown and the next stroke")
    ap.add_argument("--tmp", default=tempfile.gettempdir(), help="where the projects are created")
    ap.add_argument("--write-md", type=Path)
    ap.add_argument("--screenshot", help="save the viewer at the end of the trainer part to this PNG")
    args = ap.parse_args()

    display = None
    if not os.environ.get("DISPLAY"):
        try:
            from pyvirtualdisplay import Display

            display = Display(visible=False, size=(1600, 1000))
            display.start()
        except Exception as exc:  # noqa: BLE001
            raise SystemExit(f"no display: run under `xvfb-run -a` ({exc})") from exc
    try:
        if args.part:
            result = PARTS[args.part](args)
            print("RESULT " + json.dumps(result, default=float), flush=True)
            return
        argv = [a for a in sys.argv[1:] if not a.startswith("--write-md") and a != str(args.write_md)]
        res = {"args": vars(args) | {"write_md": None}}
        for name in args.only.split(","):
            if name == "live":  # one process per plane size
                res[name] = [run_part(name, argv + ["--live-shape", shape]) for shape in args.live_shapes.split("/")]
            else:
                res[name] = run_part(name, argv)
        if "live" in res:  # its own section: the other parts' figures stay as they were measured
            md = "\n\n".join(report_live(r, res["args"]) for r in res.pop("live"))
            print(md)
            if args.write_md:
                write_section(args.write_md, "bench_napari_live", "napari front end, tier 1 live (`benchmarks/bench_napari.py --only live`)",
                              md, "xvfb-run -a .venv/bin/python benchmarks/bench_napari.py --only live "
                              + ("" if args.live_shapes == "8,512,512" else f"--live-shapes {args.live_shapes} ") + "--write-md docs/BENCHMARKS.md")
            if len(res) == 1:
                return
        md = report(res)
        print(md)
        if args.write_md:
            write_section(args.write_md, "bench_napari", "napari front end (`benchmarks/bench_napari.py`)", md,
                          "xvfb-run -a .venv/bin/python benchmarks/bench_napari.py --write-md docs/BENCHMARKS.md")
    finally:
        if display is not None:
            display.stop()


if __name__ == "__main__":
    main()
