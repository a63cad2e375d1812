"""The notebook widget's controller and plane server without a widget: no anywidget, no browser.

:class:`~al_annotator.jupyter._controller.Controller` gets a :class:`~al_annotator.core.Session`,
a ``send`` that collects what would go to the browser, a
:class:`~al_annotator.jupyter._planes.PlaneServer` and a plain
:class:`~al_annotator.jupyter._controller.ViewState` for the traits.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from al_annotator.core import Session
from al_annotator.datasets import make_phantom
from al_annotator.jupyter._controller import Controller, ViewState
from al_annotator.jupyter._planes import PlaneServer
from al_annotator.types import SliceRef

CLASSES = "background,bone,implant,degradation"


class Browser:
    """What the kernel sent: ``send(content, buffers)`` appends; ``of(type)`` filters."""

    def __init__(self) -> None:
        self.sent: list[tuple[dict, list[bytes]]] = []

    def __call__(self, content: dict, buffers=()) -> None:
        json.dumps(content, allow_nan=False)  # every message is JSON a browser can parse
        self.sent.append((content, [bytes(memoryview(b)) for b in buffers]))

    def of(self, kind: str) -> list[tuple[dict, list[bytes]]]:
        return [m for m in self.sent if m[0].get("type") == kind]


@pytest.fixture(params=["memory", "directory"])
def ctl(request, tmp_path):
    image = make_phantom((8, 32, 32), seed=2).image
    project = None if request.param == "memory" else tmp_path / "proj"
    session = Session.create(project, image, classes=CLASSES)
    browser = Browser()
    planes = PlaneServer(session, browser)
    view = ViewState(cursor=[4, 16, 16], window=list(session.volume.display_window))
    controller = Controller(session, browser, planes, view=view)
    connections = controller.connections()
    for signal, slot in connections:
        signal.connect(slot)
    controller.start()
    yield controller, browser
    for signal, slot in connections:
        signal.disconnect(slot)
    planes.close()
    session.close()


def stroke(ctl, indices, *, value=2, seq=1, axis="z", index=4, tool="brush"):
    ctl.handle({"type": "stroke", "client": "c1", "seq": seq, "tool": tool, "value": value, "axis": axis, "index": index},
               [np.asarray(indices, "<u4").tobytes()])


def test_a_view_sends_the_slice_and_moves_the_session_without_a_navigate_back(ctl):
    controller, browser = ctl
    controller.handle({"type": "view", "client": "c1", "req": 7, "axis": "y", "index": 3,
                       "r0": 0, "r1": 8, "c0": 0, "c1": 32, "step": 1})
    (msg, (image, labels)), = browser.of("slice")
    assert (msg["req"], msg["axis"], msg["index"], msg["h"], msg["w"]) == (7, "y", 3, 8, 32)
    assert msg["layers"] == ["image", "labels"] and len(labels) == 8 * 32
    assert controller.session.current == SliceRef("y", 3)
    assert (controller.view.axis, controller.view.index) == ("y", 3) and controller.view.cursor[1] == 3
    assert not browser.of("navigate")  # the browser asked for it: nothing to follow


def test_a_stroke_is_acknowledged_on_disk_and_the_view_gets_its_labels(ctl):
    controller, browser = ctl
    controller.handle({"type": "view", "client": "c1", "req": 1, "axis": "z", "index": 4,
                       "r0": 0, "r1": 32, "c0": 0, "c1": 32, "step": 1})
    stroke(controller, [0, 1, 33], value=3)
    (ack, _), = browser.of("ack")
    assert ack["ok"] is True and ack["seq"] == 1 and ack["n"] == 3
    assert controller.session.labels(SliceRef("z", 4)).reshape(-1)[[0, 1, 33]].tolist() == [3, 3, 3]
    msg, (labels,) = browser.of("labels")[-1]
    assert msg["applied"] == 1 and np.frombuffer(labels, np.uint8)[[0, 1, 33]].tolist() == [3, 3, 3]
    assert controller.view.can_undo and not controller.view.can_redo
    controller.handle({"type": "undo"})
    assert not controller.session.labels(SliceRef("z", 4)).any() and controller.view.can_redo


def test_bad_messages_are_errors_never_exceptions(ctl):
    controller, browser = ctl
    for content in ("nonsense", {"no": "type"}, {"type": "explode"}, {"type": "view", "axis": "w", "index": 1},
                    {"type": "trainer", "action": "dance"}):
        controller.handle(content, [])
    assert len(controller.errors) == 5 and len(browser.of("error")) == 5
    stroke(controller, [0], value=9)  # not a class: refused, the browser drops its optimistic paint
    (ack, _), = browser.of("ack")
    assert ack["ok"] is False and "not a class" in controller.errors[-1]
    assert not controller.session.labels(SliceRef("z", 4)).any()


def test_kernel_side_moves_are_followed_by_the_browser(ctl):
    controller, browser = ctl
    controller.session.goto("x", 5)
    (nav, _), = browser.of("navigate")
    assert (nav["axis"], nav["index"]) == ("x", 5) and controller.view.cursor[2] == 5
    assert browser.of("ortho")  # the planes through the moved crosshair


def test_suggestions_reach_the_view_and_the_policy_is_the_sessions(ctl):
    controller, browser = ctl
    rows = controller.view.suggestions
    assert rows and all(r["key"] == f"{r['axis']}:{r['index']}" and r["state"] for r in rows)
    controller.session.auto_rerank = False  # kept, not re-ranked: the annotated slice just leaves the queue
    first = SliceRef(rows[0]["axis"], rows[0]["index"])
    controller.handle({"type": "show", "axis": first.axis, "index": first.index})
    controller.handle({"type": "annotated", "annotated": True})
    assert first not in [SliceRef(r["axis"], r["index"]) for r in controller.view.suggestions]
    assert [r["key"] for r in controller.view.suggestions] == [r["key"] for r in rows[1:]]
    controller.handle({"type": "refresh", "strategy": "random"})
    assert controller.view.strategy == "random"


def test_the_palette_and_the_trainer_line_come_from_the_session(ctl):
    controller, browser = ctl
    controller.handle({"type": "colour", "value": 2, "colour": "#00FF00"})
    assert controller.view.classes[1] == {"value": 2, "name": "bone", "colour": "#00ff00"}
    assert controller.session.class_table()[1]["colour"] == "#00ff00"
    trainer = controller.view.trainer
    if controller.session.volume.persistent:
        assert trainer["summary"] == controller.session.trainer_status().summary()
    else:
        assert trainer == {}


def test_the_controller_and_plane_server_load_without_anywidget_or_traitlets():
    code = ("import sys; import al_annotator.jupyter._controller, al_annotator.jupyter._planes; "
            "print(sorted(m for m in ('anywidget', 'traitlets', 'ipywidgets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


# ---------------------------------------------------------------------------------------------- tier 1 live
LIVE_SHAPE = (16, 48, 48)


@pytest.fixture
def live(tmp_path):
    """A live-preview controller on a directory project, a full view of z = 8 for client c1, and the phantom."""
    pytest.importorskip("sklearn")
    ph = make_phantom(LIVE_SHAPE, seed=2)
    session = Session.create(tmp_path / "proj", ph.image, classes=CLASSES, live_preview=True)
    browser = Browser()
    planes = PlaneServer(session, browser)
    controller = Controller(session, browser, planes, view=ViewState(cursor=[8, 24, 24]))
    connections = controller.connections()
    for signal, slot in connections:
        signal.connect(slot)
    controller.start()
    controller.handle({"type": "view", "client": "c1", "req": 1, "axis": "z", "index": 8,
                       "r0": 0, "r1": 48, "c0": 0, "c1": 48, "step": 1})
    yield controller, browser, ph
    for signal, slot in connections:
        signal.disconnect(slot)
    planes.close()
    session.close()


def scribble(controller, ph, ref, classes=(1, 2), per_class=40, seq=1):
    """One stroke per class at voxels of that class in the phantom's ground truth (as the browser sends them)."""
    rng = np.random.default_rng(seq)
    plane = ph.labels[ref.selection()].reshape(-1)
    for k, c in enumerate(classes):
        idx = np.sort(rng.choice(np.flatnonzero(plane == c), per_class, replace=False))
        stroke(controller, idx, value=int(c), seq=seq + k, axis=ref.axis, index=ref.index)


def overlays(browser, client="c1"):
    return [(m, [np.frombuffer(b, np.uint8) for b in bufs]) for m, bufs in browser.of("overlays") if m["client"] == client]


def publish(session, version, metrics):
    """A fake deep model version: prediction 1 and confidence 250 everywhere."""
    from al_annotator.store.models import publish_version

    grp = session.store.root.require_group(f"models/v{version:04d}")
    for name, value in (("prediction", 1), ("confidence", 250)):
        grp.create_array(name, shape=LIVE_SHAPE, dtype=np.uint8, chunks=(8, 48, 48), overwrite=True)[...] = value
    (session.store.path / "models" / f"v{version:04d}.partial").mkdir(parents=True)
    publish_version(session.store, version, {"created": 0.0, "metrics": metrics})


def test_a_stroke_of_two_classes_sends_the_live_preview_of_the_view(live):
    controller, browser, ph = live
    session, ref = controller.session, SliceRef("z", 8)
    assert controller.view.served["tier"] is None and "paint two classes" in controller.view.served["summary"]
    assert not controller.view.show_prediction and not overlays(browser)
    scribble(controller, ph, ref)
    session.wait_preview()
    preview = session.preview(ref)
    assert preview is not None and preview.seq == session.labels_seq
    msg, (pred, conf) = overlays(browser)[-1]
    assert (msg["axis"], msg["index"], msg["h"], msg["w"], msg["step"]) == ("z", 8, 48, 48, 1)
    assert (msg["tier"], msg["fit"], msg["labels_seq"]) == ("instant", session.labels_seq, session.labels_seq)
    np.testing.assert_array_equal(pred.reshape(48, 48), preview.prediction)
    np.testing.assert_array_equal(conf.reshape(48, 48), preview.confidence)
    assert set(np.unique(pred)) <= {1, 2} and (pred.reshape(48, 48) == ph.labels[8]).mean() > 0.6
    served = controller.view.served
    assert served["tier"] == "instant" and served["live"] and served["error"] is None
    assert served["summary"].startswith("serving: instant classifier · ")
    assert controller.view.show_prediction  # turned on once, by the first served prediction
    # the same preview again (the poll's take_previews, a re-request): not sent twice
    n = len(overlays(browser))
    session.request_preview(ref)
    session.wait_preview()
    assert len(overlays(browser)) == n


def test_a_subsampled_view_of_a_region_gets_the_preview_sampled_to_it(live):
    controller, browser, ph = live
    session, ref = controller.session, SliceRef("z", 8)
    controller.handle({"type": "view", "client": "c2", "req": 1, "axis": "z", "index": 8,
                       "r0": 8, "r1": 40, "c0": 4, "c1": 48, "step": 2})
    controller.handle({"type": "view", "client": "c3", "req": 1, "axis": "y", "index": 20,
                       "r0": 0, "r1": 16, "c0": 0, "c1": 48, "step": 1})
    scribble(controller, ph, ref)
    session.wait_preview()
    preview = session.preview(ref)
    msg, (pred, conf) = overlays(browser, "c2")[-1]
    assert (msg["h"], msg["w"], msg["step"]) == (16, 22, 2)
    np.testing.assert_array_equal(pred.reshape(16, 22), preview.prediction[8:40:2, 4:48:2])
    np.testing.assert_array_equal(conf.reshape(16, 22), preview.confidence[8:40:2, 4:48:2])
    assert not any(bufs for _, bufs in overlays(browser, "c3"))  # a view of another plane: no prediction of it yet
    # it asked for its plane once tier 1 was fitted (Session.goto), and gets it on the next take
    controller.handle({"type": "view", "client": "c3", "req": 2, "axis": "y", "index": 20,
                       "r0": 0, "r1": 16, "c0": 0, "c1": 48, "step": 1})
    session.wait_preview()
    msg, (pred, _) = overlays(browser, "c3")[-1]
    np.testing.assert_array_equal(pred.reshape(16, 48), session.preview(SliceRef("y", 20)).prediction)


def test_a_served_tier_switch_resends_the_overlays_and_the_cache_follows_the_token(live):
    controller, browser, ph = live
    session, planes, ref = controller.session, controller.planes, SliceRef("z", 8)
    scribble(controller, ph, ref)
    session.wait_preview()
    instant = session.preview(ref).prediction.copy()
    assert session.served_tier()["instant"] is None  # too few held-out voxels: a deep score beats none
    assert (ref, ("instant", session.labels_seq)) in planes._preds._d
    n = len(overlays(browser))
    session.auto_rerank = False  # these fake versions have no scores to rank with
    publish(session, 1, {"heldout_dice": 0.9})
    controller.poll()
    assert not controller.errors
    assert session.prediction_token == ("deep", 1) and controller.view.served["tier"] == "deep"
    assert controller.view.served["summary"] == "serving: model v1 · held-out Dice 0.90"
    (msg, (pred, conf)), = overlays(browser)[n:]  # once, though both the version and the tier changed
    assert (msg["tier"], msg["fit"]) == ("deep", 1) and (pred == 1).all() and (conf == 250).all()
    got = planes.prediction_of(ref)
    assert (got[0] == 1).all() and (ref, ("deep", 1)) in planes._preds._d
    # a version with no held-out score: the fresher tier 1 serves again, its cached planes come back
    publish(session, 2, {})
    controller.poll()
    assert session.prediction_token == ("instant", session.labels_seq)
    msg, (pred, _) = overlays(browser)[-1]
    assert msg["tier"] == "instant" and (pred.reshape(48, 48) == instant).all()
    # a new fit while tier 1 serves: never the previous fit's planes
    scribble(controller, ph, ref, classes=(1, 2, 3), per_class=30, seq=10)
    session.wait_preview()
    assert session.prediction_token == ("instant", session.labels_seq)
    np.testing.assert_array_equal(planes.prediction_of(ref)[0], session.preview(ref).prediction)
    assert overlays(browser)[-1][0]["labels_seq"] == session.labels_seq


def test_back_to_one_class_clears_the_overlays_and_a_failure_is_on_the_served_line(live, monkeypatch):
    controller, browser, ph = live
    session = controller.session
    scribble(controller, ph, SliceRef("z", 8))
    session.wait_preview()
    controller.handle({"type": "undo"})  # one class left: tier 1 has no fit, nothing serves
    session.wait_preview()
    assert session.served_tier()["tier"] is None
    msg, bufs = overlays(browser)[-1]
    assert msg["layers"] == [] and bufs == []
    monkeypatch.setattr(Session, "live_error", property(lambda self: "MemoryError: no room for the features"))
    controller.take_previews()
    assert controller.view.served["error"] == "MemoryError: no room for the features"
    assert controller.view.served["summary"].endswith("instant classifier failed: MemoryError: no room for the features")
