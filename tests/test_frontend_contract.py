"""One contract for every front end (in the style of zarr-python's ``StoreTests``).

:class:`FrontEndContract` holds the tests; each front end gets a *driver* that does what a user
does there (paint with that front end's own path, go to a slice, undo) and reads back what that
front end shows (the labels on screen, the overlay, the palette, the queue). The notebook driver
plays the browser's messages through a fake comm and keeps what a browser would show from the
kernel's replies; the napari driver uses a real napari viewer and the dock (under Xvfb).

"Elsewhere" is a second :class:`~al_annotator.core.Session` on the same project directory, as
another kernel, another napari or a colleague would have it; a model version is published with the
store's one writer (``begin_version``), as the trainer does.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from al_annotator.core import Session
from al_annotator.datasets import make_phantom
from al_annotator.store import create_project
from al_annotator.store.models import begin_version
from al_annotator.types import SliceRef
from tests.test_widget import fake_comm  # noqa: F401 - the notebook driver's comm: the widget tests' fixture

SHAPE = (16, 40, 48)
CLASSES = ("background", "bone", "implant", "degradation")


# ============================================================================ publishing a model
def publish_model(project: Path, pred: np.ndarray, conf: np.ndarray, scores: dict[SliceRef, float]) -> int:
    """Publish a model version as the trainer does: outputs in zarr, scores, then current.json."""
    from al_annotator.acquisition.pool import SliceCandidates
    from al_annotator.store import open_project

    store = open_project(project, author="trainer")
    try:
        with begin_version(store) as out:
            group = out.group()
            for name, arr in (("prediction", pred), ("confidence", conf)):
                group.create_array(name, shape=arr.shape, dtype=arr.dtype, chunks=(16, 16, 16), overwrite=True)[...] = arr
            refs = list(scores)
            cand = SliceCandidates(refs, {"entropy": np.array([scores[r] for r in refs], np.float32)},
                                   embeddings=np.eye(len(refs), 8, dtype=np.float32), model_version=out.version)
            np.savez(out.partial_dir / "scores.npz", **cand.to_arrays())
            out.meta = {"created": time.time(), "trained_on_seq": store.applied_seq, "metrics": {}}
        return out.version
    finally:
        store.close()


# ============================================================================ drivers
class NotebookDriver:
    """The notebook widget, driven with the browser's messages; keeps what the browser shows."""

    name = "notebook"

    def __init__(self, project: Path, fake_comm: list, author: str = "ana") -> None:
        from al_annotator.jupyter import Annotator

        self.widget = Annotator(project, poll_interval=None, author=author)
        self.comm = next(c for c in fake_comm if c.opened.get("target_name") == "jupyter.widget"
                         and c.comm_id == self.widget.comm.comm_id)
        self.session = self.widget.session
        self._seq = 0
        self._shown: dict[str, Any] = {}
        self.ref: SliceRef | None = None

    # ---- what the browser does
    def go_to(self, ref: SliceRef) -> None:
        h, w = ref.shape_in(SHAPE)
        self.ref = ref
        self.comm.deliver({"type": "view", "client": "c1", "req": 1, "axis": ref.axis, "index": ref.index,
                           "r0": 0, "r1": h, "c0": 0, "c1": w, "step": 1})
        self._take()

    def paint(self, ref: SliceRef, flat: np.ndarray, value: int) -> None:
        if ref != self.ref:
            self.go_to(ref)
        self._seq += 1
        buf = np.asarray(flat, dtype="<u4").tobytes()
        self.comm.deliver({"type": "stroke", "client": "c1", "seq": self._seq, "tool": "brush", "value": value,
                           "axis": ref.axis, "index": ref.index}, [memoryview(buf)])
        acks = [m for m, _ in self.comm.custom("ack") if m.get("seq") == self._seq]
        assert acks and acks[-1]["ok"], self.widget.errors
        self._take()

    def undo(self) -> None:
        self.comm.deliver({"type": "undo", "client": "c1"})
        self._take()

    def poll(self) -> None:
        self.widget.poll()
        self._take()

    # ---- what the browser shows
    def _take(self) -> None:
        """Apply the kernel's replies as the browser does (slice, labels, overlays for the view)."""
        for content, bufs in self.comm.custom():
            kind = content.get("type")
            if kind not in ("slice", "labels", "overlays") or self.ref is None:
                continue
            if (content.get("axis"), content.get("index")) != (self.ref.axis, self.ref.index):
                continue
            shape = (content["r1"] - content["r0"], content["c1"] - content["c0"])
            if kind == "slice":
                arrays = dict(zip(content["layers"], bufs))
                self._shown["labels"] = np.frombuffer(arrays["labels"], np.uint8).reshape(shape)
                if "prediction" in arrays:
                    self._shown["prediction"] = np.frombuffer(arrays["prediction"], np.uint8).reshape(shape)
                else:
                    self._shown.pop("prediction", None)
            elif kind == "labels":
                self._shown["labels"] = np.frombuffer(bufs[0], np.uint8).reshape(shape)
            else:
                self._shown["prediction"] = np.frombuffer(bufs[0], np.uint8).reshape(shape)
        self.comm.clear()

    def shown_labels(self) -> np.ndarray:
        return self._shown["labels"]

    def shown_prediction(self) -> np.ndarray | None:
        return self._shown.get("prediction")

    def palette(self) -> dict[int, tuple[str, str]]:
        return {c["value"]: (c["name"], c["colour"].lower()) for c in self.widget.classes}

    def queue(self) -> list[tuple[str, int, Any]]:
        return [(s["axis"], int(s["index"]), s["model_version"]) for s in self.widget.suggestions]

    def close(self) -> None:
        self.widget.close()


class NapariDriver:
    """The napari dock on a real viewer: paints through the labels layer, reads the layers."""

    name = "napari"

    def __init__(self, project: Path, viewer: Any, author: str = "ana") -> None:
        from al_annotator.napari._widget import AnnotatorWidget

        self.viewer = viewer
        self.dock = AnnotatorWidget(viewer, poll_ms=0)
        viewer.window.add_dock_widget(self.dock, name="AL Annotator")
        self.dock.open_project(project, author=author)
        self.dock.wait_idle()
        self.session = self.dock.session
        self.ref: SliceRef | None = None

    def go_to(self, ref: SliceRef) -> None:
        self.ref = ref
        self.dock.go_to(ref)
        self.dock.wait_idle()

    def paint(self, ref: SliceRef, flat: np.ndarray, value: int) -> None:
        """A paint through the layer's data API, as napari's brush ends up doing (one stroke)."""
        if ref != self.ref:
            self.go_to(ref)
        layer = self.dock.layers["labels"]
        h, w = ref.shape_in(SHAPE)
        rows, cols = np.divmod(np.asarray(flat, np.int64), w)
        coords = [None, None, None]
        coords[ref.axis_number] = np.full(rows.shape, ref.index)
        others = [a for a in range(3) if a != ref.axis_number]
        coords[others[0]], coords[others[1]] = rows, cols
        layer.data_setitem(tuple(coords), value)
        self.dock.wait_idle()

    def undo(self) -> None:
        self.dock.undo()
        self.dock.wait_idle()

    def poll(self) -> None:
        self.dock.poll()
        self.dock.wait_idle()

    def _plane(self, layer: Any) -> np.ndarray:
        return np.asarray(layer.data[self.ref.selection()])

    def shown_labels(self) -> np.ndarray:
        return self._plane(self.dock.layers["labels"])

    def shown_prediction(self) -> np.ndarray | None:
        layer = self.dock.layers.get("prediction")
        if layer is None or not layer.visible or layer.metadata.get("model_version") is None:
            return None
        return self._plane(layer)

    def palette(self) -> dict[int, tuple[str, str]]:
        out = {}
        buttons = self.dock.class_buttons
        for value, button in (buttons.items() if isinstance(buttons, dict) else enumerate(buttons)):
            if not value:
                continue  # the eraser
            rgb = self.dock.layers["labels"].colormap.map(value)[:3]
            colour = "#" + "".join(f"{int(round(c * 255)):02x}" for c in rgb)
            out[value] = (button.text().rsplit(" (", 1)[0], colour)
        return out

    def queue(self) -> list[tuple[str, int, Any]]:
        return [(q.ref.axis, int(q.ref.index), q.suggestion.model_version) for q in self.dock.session.queue]

    def close(self) -> None:
        self.dock.close_project()


# ============================================================================ fixtures
@pytest.fixture(scope="module")
def phantom():
    return make_phantom(SHAPE, seed=3)


@pytest.fixture
def project(tmp_path, phantom) -> Path:
    create_project(tmp_path / "proj", phantom.image, classes=CLASSES, author="setup").close()
    return tmp_path / "proj"


@pytest.fixture
def elsewhere(project):
    other = Session.open(project, author="ben")
    yield other
    other.close()


# ============================================================================ the contract
class FrontEndContract:
    """What every front end does. Subclasses provide the ``front`` fixture (a driver)."""

    def test_a_stroke_elsewhere_appears(self, front, elsewhere):
        ref = SliceRef("z", 5)
        front.go_to(ref)
        assert not front.shown_labels().any()
        flat = np.arange(48 * 3, 48 * 3 + 20)
        elsewhere.paint(flat, 2, ref=ref)
        front.poll()
        shown = front.shown_labels().ravel()
        assert (shown[flat] == 2).all() and shown.sum() == 2 * len(flat)

    def test_a_stroke_here_is_on_disk_and_shown(self, front, project):
        ref = SliceRef("y", 7)
        flat = np.arange(10, 30)
        front.paint(ref, flat, 3)
        assert (front.shown_labels().ravel()[flat] == 3).all()
        reader = Session.open(project, read_only=True)
        try:
            assert (reader.labels(ref).ravel()[flat] == 3).all()
        finally:
            reader.close()

    def test_a_palette_edit_elsewhere_appears(self, front, elsewhere):
        elsewhere.rename_class(3, "magnesium")
        elsewhere.set_class_colour(3, "#0000ff")
        front.poll()
        assert front.palette()[3] == ("magnesium", "#0000ff")
        assert front.palette()[2][0] == "bone"

    def test_a_new_model_version_reranks_and_refreshes_the_overlay(self, front, project):
        ref = SliceRef("z", 4)
        front.go_to(ref)
        assert front.shown_prediction() is None
        assert all(v is None for *_, v in front.queue())  # cold start: no model yet
        pred = np.ones(SHAPE, np.uint8)
        pred[:, :20] = 2
        conf = np.full(SHAPE, 200, np.uint8)
        scores = {SliceRef("z", i): s for i, s in enumerate([0.1, 0.9, 0.5, 0.2, 0.7])}
        version = publish_model(project, pred, conf, scores)
        front.poll()
        shown = front.shown_prediction()
        assert shown is not None and (shown[:20] == 2).all() and (shown[20:] == 1).all()
        queue = front.queue()
        assert queue and all(v == version for *_, v in queue)  # re-ranked with the new version's scores

    def test_undo_of_a_stroke_on_another_slice(self, front, project):
        a, b = SliceRef("z", 2), SliceRef("x", 9)
        flat = np.arange(48 * 10, 48 * 10 + 15)
        front.paint(a, flat, 2)
        front.go_to(b)
        front.paint(b, np.arange(5, 9), 1)
        front.undo()  # the x stroke, then the z stroke though z is not on screen
        front.undo()
        front.go_to(a)
        assert not front.shown_labels().any()
        reader = Session.open(project, read_only=True)
        try:
            assert not reader.labels(a).any() and not reader.labels(b).any()
        finally:
            reader.close()


# ============================================================================ notebook
class TestNotebook(FrontEndContract):
    @pytest.fixture
    def front(self, project, fake_comm):
        driver = NotebookDriver(project, fake_comm)
        yield driver
        driver.close()


# ============================================================================ napari
def _qt_or_skip() -> None:
    pytest.importorskip("napari", reason="napari is not installed (pip install 'al-annotator[napari]')")
    from tests.test_napari import _qt_problem

    problem = _qt_problem()
    if problem:
        pytest.skip(problem)


@pytest.fixture
def napari_viewer(request):
    _qt_or_skip()
    return request.getfixturevalue("make_napari_viewer")()


@pytest.mark.gui
class TestNapari(FrontEndContract):
    @pytest.fixture
    def front(self, project, napari_viewer):
        driver = NapariDriver(project, napari_viewer)
        yield driver
        driver.close()


# ============================================================================ both at once
@pytest.mark.gui
def test_two_front_ends_on_one_project_agree_on_the_queue(project, fake_comm, napari_viewer):
    notebook = NotebookDriver(project, fake_comm, author="ana")
    napari_front = NapariDriver(project, napari_viewer, author="ben")
    try:
        assert notebook.queue() == napari_front.queue()  # cold start: the same ranking
        ref = SliceRef(*notebook.queue()[0][:2])
        notebook.paint(ref, np.arange(30, 60), 2)
        notebook.session.mark_annotated(ref)
        napari_front.poll()
        notebook.poll()
        assert notebook.queue() == napari_front.queue()
        assert (ref.axis, ref.index) not in [(a, i) for a, i, _ in notebook.queue()]
        pred = np.ones(SHAPE, np.uint8)
        conf = np.full(SHAPE, 180, np.uint8)
        publish_model(project, pred, conf, {SliceRef("y", i): float(i % 7) for i in range(0, 40, 3)})
        notebook.poll()
        napari_front.poll()
        assert notebook.queue() and notebook.queue() == napari_front.queue()
    finally:
        napari_front.close()
        notebook.close()
