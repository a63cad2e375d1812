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
