"""Numbers in widget messages: inf, NaN, negative, huge and wrongly typed values of every
numeric field get an error that names the field (never "internal error") and change nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("anywidget")

from al_annotator.store import open_project  # noqa: E402
from test_widget import fake_comm, make_widget, project, view  # noqa: E402,F401 - fixtures and helpers of the widget tests

BAD_NUMBERS = [float("inf"), float("-inf"), float("nan"), -1, 2**64, 10**30, 1e300, 2.5, "3", None, [1], {"a": 1}, True]

STROKE = {"type": "stroke", "seq": 1, "tool": "brush", "value": 2, "axis": "z", "index": 8}
FILL = {"type": "fill", "seq": 1, "axis": "z", "index": 8, "row": 3, "col": 3, "value": 2}
VIEW = {"type": "view", "req": 1, "axis": "z", "index": 8, "r0": 0, "r1": 64, "c0": 0, "c1": 64, "step": 1}
# (message, numeric field, values that are fine there although they look odd)
FIELDS = [
    (STROKE, "seq", {}), (STROKE, "index", {}), (STROKE, "value", {}),
    (FILL, "seq", {}), (FILL, "index", {}), (FILL, "row", {}), (FILL, "col", {}), (FILL, "value", {}),
    (VIEW, "index", {}), (VIEW, "step", {}),
    (VIEW, "r0", {-1}), (VIEW, "r1", {-1}), (VIEW, "c0", {-1}), (VIEW, "c1", {-1}),  # clipped: a view panned past the edge
    ({"type": "show", "axis": "y", "index": 3}, "index", {}),
    ({"type": "skip", "axis": "y", "index": 3}, "index", {}),
    ({"type": "cursor", "z": 1, "y": 2, "x": 3}, "z", {}), ({"type": "cursor", "z": 1, "y": 2, "x": 3}, "x", {}),
    ({"type": "colour", "value": 2, "colour": "#ff0000"}, "value", {}),
    ({"type": "ping", "t": 1.0, "te": 2.0}, "t", {-1, 2.5, None}),
]


def _fine(value, ok) -> bool:
    return any(value is o or (type(value) is type(o) and value == o) for o in ok)


CASES = [(msg, key, v) for msg, key, ok in FIELDS for v in BAD_NUMBERS if not _fine(v, ok)]


def _id(case):
    msg, key, v = case
    return f"{msg['type']}.{key}={v!r}"


@pytest.fixture
def project_path(project):
    return project


@pytest.fixture
def widget(project_path, fake_comm):
    w, c = make_widget(project_path, fake_comm)
    view(c, "z", 8, (64, 64))
    c.clear()
    yield w, c
    w.close()


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_a_bad_number_is_an_error_naming_the_field(widget, project_path, case):
    w, c = widget
    msg, key, value = case
    before = open_project(project_path).log.last_seq
    content = {"client": "c1", **msg, key: value}
    buffers = [memoryview(np.arange(3, dtype="<u4").tobytes())] if msg["type"] == "stroke" else []
    c.deliver(content, buffers)
    errors = [m["message"] for m, _ in c.custom("error")]
    assert len(errors) == 1, (errors, c.custom())
    assert f"'{key}'" in errors[0] and "internal error" not in errors[0], errors[0]
    for sent, _ in c.custom():  # everything the kernel sent back is JSON a browser can parse
        json.dumps(sent, allow_nan=False)
    store = open_project(project_path)
    assert store.log.last_seq == before and int(store.labels[...].max()) == 0
    if msg["type"] in ("stroke", "fill"):
        ack = c.custom("ack")[-1][0]
        assert ack["ok"] is False
        if key == "seq":  # a bad seq must not move what the browser drops from its pending strokes
            assert c.custom("labels")[-1][0]["applied"] == 0


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 2**60, [1, 2]])
def test_an_echoed_req_stays_valid_json(widget, value):
    w, c = widget
    c.deliver({**VIEW, "client": "c1", "req": value, "step": 0})  # an error that echoes req
    (err, _), = c.custom("error")
    assert err["req"] is None and "'step'" in err["message"]
    json.dumps(err, allow_nan=False)
    c.clear()
    c.deliver({**VIEW, "client": "c1", "req": value})
    slice_msg = c.custom("slice")[-1][0]
    assert slice_msg["req"] is None
    json.dumps(slice_msg, allow_nan=False)


@pytest.mark.parametrize("msg,key,value", [
    ({"type": "annotated"}, "annotated", "false"),
    ({"type": "annotated"}, "annotated", 0),
    ({"type": "skip", "axis": "z", "index": 3}, "then_next", "yes"),
    ({"type": "refresh"}, "strategy", 5),
    ({"type": "refresh"}, "strategy", float("nan")),
])
def test_flags_and_names_of_the_wrong_type(widget, project_path, msg, key, value):
    w, c = widget
    c.deliver({"client": "c1", **msg, key: value})
    errors = [m["message"] for m, _ in c.custom("error")]
    assert len(errors) == 1 and f"'{key}'" in errors[0], errors
    from al_annotator import SliceRef

    assert open_project(project_path).slice_state(SliceRef("z", 8)).state != "annotated"  # "false" did not mark it


def test_integral_floats_and_clipped_regions_still_work(widget, project_path):
    """JSON has one number type: 8.0 is index 8; a region past the edge is clipped, not refused."""
    w, c = widget
    c.deliver({**VIEW, "client": "c1", "index": 8.0, "r0": -10, "r1": 10**6, "step": 2.0})
    assert not c.custom("error")
    msg = c.custom("slice")[-1][0]
    assert msg["index"] == 8 and msg["r0"] == 0 and msg["r1"] == 64 and msg["step"] == 2
    c.deliver({**STROKE, "client": "c1", "seq": 2.0, "value": 3.0}, [memoryview(np.arange(3, dtype="<u4").tobytes())])
    assert c.custom("ack")[-1][0]["ok"] is True
    assert open_project(project_path).labels[8, 0, :3].tolist() == [3, 3, 3]
