"""The notebook widget's kernel side, driven through a fake comm with the messages the browser sends.

No browser and no kernel: ``comm.create_comm`` is replaced by :class:`FakeComm`, which records
what the widget sends and delivers browser messages exactly as ipykernel would (a ``custom``
comm message with binary buffers). ``tests/zz_e2e`` drives the same widget from a real Chromium.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("anywidget")

import comm  # noqa: E402

from al_annotator import SliceRef, make_phantom  # noqa: E402
from al_annotator.core import Session  # noqa: E402
from al_annotator.jupyter import Annotator  # noqa: E402
from al_annotator.jupyter._imaging import Quantiser, Region, block_mean  # noqa: E402
from al_annotator.store import create_project, open_project  # noqa: E402

CLASSES = ("background", "bone", "implant", "degradation")


class FakeComm:
    """Stands in for the kernel's comm: records sends; ``deliver`` plays a browser message."""

    kernel = object()  # ipywidgets only sends when the comm has a kernel

    def __init__(self, **kwargs):
        self.comm_id = f"fake-{id(self):x}"
        self.opened = kwargs
        self.sent: list[tuple[dict, list]] = []
        self._callback = None

    def on_msg(self, callback):
        self._callback = callback

    def send(self, data=None, metadata=None, buffers=None):
        self.sent.append((data, [bytes(memoryview(b)) for b in (buffers or [])]))

    def close(self, *args, **kwargs):
        pass

    def deliver(self, content, buffers=()):
        self._callback({"content": {"data": {"method": "custom", "content": content}}, "buffers": list(buffers)})

    def custom(self, kind=None):
        """The custom messages the widget sent (content, buffers), optionally of one type."""
        out = [(d["content"], b) for d, b in self.sent if d and d.get("method") == "custom"]
        return [m for m in out if kind is None or m[0].get("type") == kind]

    def clear(self):
        self.sent.clear()


@pytest.fixture
def fake_comm(monkeypatch):
    comms: list[FakeComm] = []

    def create_comm(**kwargs):
        c = FakeComm(**kwargs)
        comms.append(c)
        return c

    monkeypatch.setattr(comm, "create_comm", create_comm)
    return comms


@pytest.fixture
def project(tmp_path):
    ph = make_phantom((16, 64, 64), seed=1)
    path = tmp_path / "proj"
    create_project(path, ph.image, classes=CLASSES).close()
    return path


def make_widget(source, fake_comm, **kw):
    w = Annotator(source, poll_interval=None, **kw)
    c = next(c for c in fake_comm if c.opened.get("target_name") == "jupyter.widget" and c.comm_id == w.comm.comm_id)
    return w, c


def view(c, axis, index, shape2d, step=1, client="c1", req=1, region=None):
    r0, r1, c0, c1 = region or (0, shape2d[0], 0, shape2d[1])
    c.deliver({"type": "view", "client": client, "req": req, "axis": axis, "index": index,
               "r0": r0, "r1": r1, "c0": c0, "c1": c1, "step": step})
    content, bufs = c.custom("slice")[-1]
    return content, bufs


def stroke(c, indices, value=2, *, seq=1, tool="brush", axis="z", index=8, client="c1"):
    buf = np.asarray(indices, dtype="<u4").tobytes()
    c.deliver({"type": "stroke", "client": client, "seq": seq, "tool": tool, "value": value,
               "axis": axis, "index": index}, [memoryview(buf)])


def disk_labels(path, ref):
    store = open_project(path)
    try:
        return store.read_slice(ref, "labels")
    finally:
        store.close()


def line_indices(row, c0, c1, width=64):
    return np.arange(c0, c1) + row * width


# ---------------------------------------------------------------------------------------- strokes
def test_stroke_is_on_disk_with_its_class_and_acknowledged(project, fake_comm):
    w, c = make_widget(project, fake_comm)
    view(c, "z", 8, (64, 64))
    idx = line_indices(20, 10, 40)
    c.clear()
    stroke(c, idx, value=3, seq=7)

    on_disk = disk_labels(project, SliceRef("z", 8)).reshape(-1)
    assert (on_disk[idx] == 3).all()
    assert np.count_nonzero(on_disk) == idx.size  # nothing else painted
    assert disk_labels(project, SliceRef("z", 7)).max() == 0  # neighbour slice untouched

    (ack, _), = c.custom("ack")
    assert ack["ok"] and ack["seq"] == 7 and ack["n"] == idx.size and ack["client"] == "c1"
    labels_msg, (lab_buf,) = c.custom("labels")[-1]
    assert labels_msg["applied"] == 7  # the browser drops its own stroke 7 from its pending list
    np.testing.assert_array_equal(np.frombuffer(lab_buf, np.uint8), on_disk)  # browser view == store
    assert w.can_undo and w.slice_state == "in_progress"
    w.close()


def test_stroke_on_another_axis_lands_on_that_slice(project, fake_comm):
    w, c = make_widget(project, fake_comm)
    view(c, "y", 30, (16, 64))
    idx = np.arange(5, 12) + 4 * 64  # row z=4, columns x=5..11 of slice y=30
    stroke(c, idx, value=2, axis="y", index=30)
    vol = open_project(project).labels[...]
    assert (vol[4, 30, 5:12] == 2).all() and np.count_nonzero(vol) == 7
    w.close()


def test_undo_removes_the_stroke_and_redo_restores_it(project, fake_comm):
    w, c = make_widget(project, fake_comm)
    view(c, "z", 8, (64, 64))
    idx = line_indices(20, 10, 40)
    stroke(c, idx, value=2)
    c.clear()
    c.deliver({"type": "undo", "client": "c1"})
    assert disk_labels(project, SliceRef("z", 8)).max() == 0
    labels_msg, (buf,) = c.custom("labels")[-1]
    assert np.frombuffer(buf, np.uint8).max() == 0
    assert not w.can_undo and w.can_redo

    c.deliver({"type": "redo", "client": "c1"})
    assert (disk_labels(project, SliceRef("z", 8)).reshape(-1)[idx] == 2).all()
    c.clear()
    c.deliver({"type": "undo"})
    c.deliver({"type": "undo"})  # nothing left: a notice, not an error
    assert [m["message"] for m, _ in c.custom("notice")] == ["nothing to undo"]
    assert not c.custom("error")
    w.close()


def test_undo_of_an_edit_on_another_slice_shows_that_slice(project, fake_comm):
    w, c = make_widget(project, fake_comm)
    view(c, "x", 10, (16, 64))
    stroke(c, [0, 1, 2], axis="x", index=10)
    view(c, "z", 3, (64, 64), req=2)
    c.deliver({"type": "undo", "client": "c1"})
    assert (w.axis, w.index) == ("x", 10) and w.session.current == SliceRef("x", 10)
    assert "x=10" in c.custom("notice")[-1][0]["message"]
    assert disk_labels(project, SliceRef("x", 10)).max() == 0
    w.close()


def test_fill_floods_the_clicked_region_in_the_kernel(project, fake_comm):
    w, c = make_widget(project, fake_comm)
    view(c, "z", 8, (64, 64))
    # a closed square outline of class 2, then fill its inside with class 3
    ring = [r * 64 + col for r in range(10, 21) for col in range(10, 21) if r in (10, 20) or col in (10, 20)]
    stroke(c, ring, value=2, seq=1)
    c.deliver({"type": "fill", "client": "c1", "seq": 2, "axis": "z", "index": 8, "row": 15, "col": 15, "value": 3})
    lab = disk_labels(project, SliceRef("z", 8))
    assert (lab[11:20, 11:20] == 3).all() and (lab[10, 10:21] == 2).all() and lab[30, 30] == 0
    assert c.custom("ack")[-1][0] == {"type": "ack", "client": "c1", "seq": 2, "ok": True,
                                      "edit_seq": c.custom("ack")[-1][0]["edit_seq"], "n": 81}
    w.close()


def test_eraser_and_a_stroke_on_an_old_slice_after_moving_on(project, fake_comm):
    w, c = make_widget(project, fake_comm)
    view(c, "z", 8, (64, 64))
    stroke(c, line_indices(5, 0, 20), value=4, seq=1)
    view(c, "z", 9, (64, 64), req=2)  # the user moved on before the stroke below was sent
    stroke(c, line_indices(5, 0, 10), tool="eraser", value=4, seq=2, index=8)  # value ignored for the eraser
    lab = disk_labels(project, SliceRef("z", 8))
    assert (lab[5, :10] == 0).all() and (lab[5, 10:20] == 4).all()
    w.close()


# ---------------------------------------------------------------------------------------- navigation
@pytest.mark.parametrize("axis,index,shape2d", [("z", 3, (64, 64)), ("y", 40, (16, 64)), ("x", 63, (16, 64))])
def test_view_sends_the_requested_slice_and_moves_the_session(project, fake_comm, axis, index, shape2d):
    w, c = make_widget(project, fake_comm)
    store = open_project(project)
    ref = SliceRef(axis, index)
    store.paint(ref, np.array([0, 5, 17]), "implant")
    w.poll()  # picks up the other process's edit
    content, bufs = view(c, axis, index, shape2d, req=42)
    assert (content["axis"], content["index"], content["req"], content["h"], content["w"]) == (axis, index, 42, *shape2d)
    assert content["layers"] == ["image", "labels"]  # no model yet: no prediction layers
    assert content["image"]["dtype"] == "u16"
    image = np.frombuffer(bufs[0], np.uint16).reshape(shape2d)
    np.testing.assert_array_equal(image, store.read_slice(ref, "image"))
    labels = np.frombuffer(bufs[1], np.uint8).reshape(shape2d)
    np.testing.assert_array_equal(labels, store.read_slice(ref, "labels"))
    assert w.session.current == ref and (w.axis, w.index) == (axis, index)
    assert w.cursor[ref.axis_number] == index
    w.close()


def test_zoomed_view_sends_the_visible_region_at_full_resolution(project, fake_comm):
    w, c = make_widget(project, fake_comm)
    content, bufs = view(c, "z", 8, (64, 64), region=(10, 30, 20, 52))
    assert (content["h"], content["w"], content["step"]) == (20, 32, 1)
    full = open_project(project).read_slice(SliceRef("z", 8), "image")
    np.testing.assert_array_equal(np.frombuffer(bufs[0], np.uint16).reshape(20, 32), full[10:30, 20:52])
    w.close()


def test_large_slice_is_downsampled_to_the_canvas(tmp_path, fake_comm):
    rng = np.random.default_rng(0)
    vol = rng.integers(0, 4000, (2, 1024, 1024), dtype=np.uint16)
    w, c = make_widget(create_project(None, vol, classes="background,bone"), fake_comm)
    w.session.paint(np.arange(0, 1024 * 1024, 4 * 1024 + 4), "bone", ref=SliceRef("z", 1))  # a diagonal
    content, bufs = view(c, "z", 1, (1024, 1024), step=4)
    assert (content["h"], content["w"], content["step"]) == (256, 256, 4)
    assert sum(len(b) for b in bufs) == 256 * 256 * 3  # uint16 image + uint8 labels: 1/16 of the slice
    image = np.frombuffer(bufs[0], np.uint16).reshape(256, 256)
    expected = vol[1].astype(np.float32).reshape(256, 4, 256, 4).mean(axis=(1, 3))
    np.testing.assert_array_equal(image, np.rint(expected).astype(np.uint16))
    labels = np.frombuffer(bufs[1], np.uint8).reshape(256, 256)
    assert (np.diag(labels) == 2).all() and np.count_nonzero(labels) == 256  # sampled, not averaged
    # an odd region at step 3 keeps the cell grid and covers the edge
    content, bufs = view(c, "z", 1, (1024, 1024), step=3, region=(1, 1024, 0, 1000), req=2)
    assert (content["r0"], content["h"], content["w"]) == (0, 342, 334)
    w.close()


def test_oversized_tile_is_refused_with_a_message(tmp_path, fake_comm):
    vol = np.zeros((1, 5000, 5000), np.uint8)
    w, c = make_widget(create_project(None, vol, classes="background,bone"), fake_comm)
    c.clear()
    c.deliver({"type": "view", "client": "c1", "req": 1, "axis": "z", "index": 0, "r0": 0, "r1": 5000, "c0": 0, "c1": 5000, "step": 1})
    assert not c.custom("slice")
    assert "raise 'step'" in c.custom("error")[-1][0]["message"]
    w.close()


def test_python_goto_moves_the_browser(project, fake_comm):
    w, c = make_widget(project, fake_comm)
    state_msgs_before = len(c.sent)
    w.goto("y", 12)
    assert (w.axis, w.index) == ("y", 12)
    # one state update carrying axis and index together (the browser then asks for the view)
    updates = [d["state"] for d, _ in c.sent[state_msgs_before:] if d.get("method") == "update"]
    assert any({"axis", "index"} <= set(u) for u in updates)
    assert c.custom("navigate")[-1][0] == {"type": "navigate", "axis": "y", "index": 12}
    # a move the browser asked for is not echoed back as a navigate
    c.clear()
    view(c, "z", 2, (64, 64))
    assert not c.custom("navigate") and (w.axis, w.index) == ("z", 2)
    w.close()


# ---------------------------------------------------------------------------------------- suggestions
def test_suggestions_are_listed_and_next_moves_to_the_first(project, fake_comm):
    w, c = make_widget(project, fake_comm)
    assert len(w.suggestions) == 8
    first = w.suggestions[0]
    assert {"axis", "index", "score", "reason", "model_version", "stale", "key", "state"} <= set(first)
    c.deliver({"type": "hello", "client": "c1"})
    thumbs, bufs = c.custom("thumbs")[-1]
    assert [it["key"] for it in thumbs["items"]] == [s["key"] for s in w.suggestions]
    assert all(len(b) == it["h"] * it["w"] and max(it["h"], it["w"]) <= 56 for it, b in zip(thumbs["items"], bufs))
    ortho, obufs = c.custom("ortho")[-1]
    assert [p["axis"] for p in ortho["planes"]] == ["z", "y", "x"] and len(obufs) == 6

    c.deliver({"type": "next"})
    assert (w.axis, w.index) == (first["axis"], first["index"])
    assert c.custom("navigate")[-1][0] == {"type": "navigate", "axis": first["axis"], "index": first["index"]}
    assert w.session.current == SliceRef(first["axis"], first["index"])
    w.close()


def test_skip_drops_the_suggestion_and_goes_on(project, fake_comm):
    w, c = make_widget(project, fake_comm)
    first, second = w.suggestions[0], w.suggestions[1]
    c.deliver({"type": "skip", "axis": first["axis"], "index": first["index"], "then_next": True})
    assert first["key"] not in [s["key"] for s in w.suggestions]
    assert (w.axis, w.index) == (second["axis"], second["index"])
    w.close()


def test_annotated_commits_the_slice_and_refreshes_suggestions(project, fake_comm):
    w, c = make_widget(project, fake_comm)
    c.deliver({"type": "next"})
    ref = w.session.current
    stroke(c, [1, 2, 3], axis=ref.axis, index=ref.index)
    c.deliver({"type": "annotated", "annotated": True})
    assert open_project(project).slice_state(ref).state == "annotated"
    assert w.slice_state == "annotated"
    assert f"{ref.axis}:{ref.index}" not in [s["key"] for s in w.suggestions]
    assert len(w.suggestions) == 8  # refreshed, not just shortened
    c.deliver({"type": "annotated", "annotated": False})
    assert open_project(project).slice_state(ref).state == "in_progress"
    w.close()


# ---------------------------------------------------------------------------------------- errors
BAD_MESSAGES = [
    ({"type": "stroke", "seq": 1, "tool": "brush", "value": 9, "axis": "z", "index": 8}, [np.arange(3, dtype="<u4").tobytes()], "class value 9"),
    ({"type": "stroke", "seq": 1, "tool": "brush", "value": 2, "axis": "z", "index": 8}, [np.array([4096], "<u4").tobytes()], "outside the slice"),
    ({"type": "stroke", "seq": 1, "tool": "brush", "value": 2, "axis": "z", "index": 8}, [], "needs one binary buffer"),
    ({"type": "stroke", "seq": 1, "tool": "brush", "value": 2, "axis": "z", "index": 8}, [b"abc"], "whole uint32"),
    ({"type": "stroke", "seq": 1, "tool": "spray", "value": 2, "axis": "z", "index": 8}, [np.arange(3, dtype="<u4").tobytes()], "unknown tool"),
    ({"type": "stroke", "seq": 1, "tool": "brush", "value": 2, "axis": "w", "index": 8}, [np.arange(3, dtype="<u4").tobytes()], "'axis'"),
    ({"type": "stroke", "seq": 1, "tool": "brush", "value": 2, "axis": "z", "index": 16}, [np.arange(3, dtype="<u4").tobytes()], "outside 0..15"),
    ({"type": "stroke", "seq": 1, "tool": "accept", "value": 2, "axis": "z", "index": 8}, [np.arange(3, dtype="<u4").tobytes()], "no prediction yet"),
    ({"type": "fill", "seq": 1, "axis": "z", "index": 8, "row": 99, "col": 0, "value": 2}, [], "'row'"),
    ({"type": "view", "req": 1, "axis": "z", "index": 8, "r0": 0, "r1": 64, "c0": 0, "c1": 64, "step": 0}, [], "'step'"),
    ({"type": "colour", "value": 2, "colour": "red"}, [], "#rrggbb"),
    ({"type": "trainer", "action": "explode"}, [], "'start' or 'stop'"),
    ({"type": "teleport"}, [], "unknown widget message type"),
    ("not a dict", [], "cannot read"),
]


@pytest.mark.parametrize("content,buffers,expected", BAD_MESSAGES, ids=[m[2] for m in BAD_MESSAGES])
def test_bad_messages_are_reported_and_change_nothing(project, fake_comm, content, buffers, expected):
    w, c = make_widget(project, fake_comm)
    view(c, "z", 8, (64, 64))
    before = open_project(project).log.last_seq
    c.clear()
    if isinstance(content, dict):
        content = {"client": "c1", **content}
    c.deliver(content, [memoryview(b) for b in buffers])
    errors = [m["message"] for m, _ in c.custom("error")]
    assert len(errors) == 1 and expected in errors[0], errors
    assert w.errors[-1] == errors[0]
    store = open_project(project)
    assert store.log.last_seq == before and int(store.labels[...].max()) == 0
    if isinstance(content, dict) and content["type"] in ("stroke", "fill"):
        assert c.custom("ack")[-1][0]["ok"] is False
        # the authoritative labels follow, so the browser drops its optimistic paint
        assert c.custom("labels")[-1][0]["applied"] >= 1
    w.close()


def test_trainer_needs_a_project_directory(fake_comm):
    w, c = make_widget(np.zeros((4, 32, 32), np.uint8), fake_comm, classes="background,bone")
    assert not w.persistent
    c.deliver({"type": "trainer", "action": "start"})
    assert "project directory" in c.custom("error")[-1][0]["message"]
    w.close()


# ---------------------------------------------------------------------------------------- the model
def _publish_fake_model(path, version=1):
    """A model version as the trainer publishes it: prediction and confidence arrays + current.json."""
    from al_annotator.store.models import publish_version

    store = open_project(path, author="trainer")
    group = store.root.require_group(f"models/v{version:04d}")
    pred = np.full(store.shape, 2, np.uint8)
    pred[:, :, 32:] = 3
    conf = np.full(store.shape, 200, np.uint8)
    group.create_array("prediction", shape=store.shape, dtype=np.uint8, chunks=(16, 64, 64), overwrite=True)[...] = pred
    group.create_array("confidence", shape=store.shape, dtype=np.uint8, chunks=(16, 64, 64), overwrite=True)[...] = conf
    (path / "models" / f"v{version:04d}.partial").mkdir(parents=True)
    publish_version(store, version, {"created": 0.0, "metrics": {"loss": 0.5, "val_dice": 0.7}})
    store.close()


def test_new_model_version_sends_overlays_and_marks_suggestions_stale(project, fake_comm):
    w, c = make_widget(project, fake_comm)
    view(c, "z", 8, (64, 64))
    c.clear()
    _publish_fake_model(project)
    w.poll()
    assert w.model_version == 1
    assert w.history == [{"version": 1, "loss": 0.5, "val_dice": 0.7, "round_seconds": None, "labelled_voxels": None}]
    # the Session's policy re-ranked the queue at once (this fake version has no scores: a cold start again)
    assert w.suggestions and not any(s["stale"] for s in w.suggestions)
    (ov, (pred, conf)), = c.custom("overlays")
    assert np.frombuffer(pred, np.uint8).reshape(64, 64)[0, 40] == 3 and set(np.frombuffer(conf, np.uint8)) == {200}
    content, bufs = view(c, "z", 8, (64, 64), req=2)
    assert content["layers"] == ["image", "labels", "prediction", "confidence"] and content["model_version"] == 1

    # accept the prediction inside a brush: the labels take the predicted classes
    stroke(c, [0, 1, 40, 41], tool="accept", seq=3)
    lab = disk_labels(project, SliceRef("z", 8)).reshape(-1)
    assert lab[[0, 1, 40, 41]].tolist() == [2, 2, 3, 3]
    w.close()


def test_trainer_status_reaches_the_widget(project, fake_comm):
    w, c = make_widget(project, fake_comm)
    (project / "trainer").mkdir()
    status = {"state": "training", "pid": 999999999, "host": "elsewhere", "heartbeat": 1e12, "round": 2, "step": 5,
              "loss": float("nan"), "val_dice": 0.8, "progress": 0.25, "device": "cpu"}
    (project / "trainer" / "status.json").write_text(json.dumps(status))
    w.poll()
    assert w.trainer["state"] == "training" and w.trainer["round"] == 2 and w.trainer["progress"] == 0.25
    assert w.trainer["loss"] is None  # NaN would break the browser's JSON
    # the browser shows the Session's phrasing of the status, not its own
    assert w.trainer["summary"] == w.session.trainer_status().summary() and "round 2" in w.trainer["summary"]
    w.close()


def test_the_auto_checkbox_sets_the_sessions_rerank_policy(project, fake_comm):
    w, c = make_widget(project, fake_comm)
    assert w.auto_rerank and w.session.auto_rerank
    w.auto_rerank = False  # what the browser's "auto" checkbox sets
    assert w.session.auto_rerank is False
    _publish_fake_model(project)
    w.poll()
    assert w.suggestions and all(s["stale"] for s in w.suggestions)  # kept, marked stale: not re-ranked
    w.close()


# ---------------------------------------------------------------------------------------- other
def test_colour_change_updates_the_palette(project, fake_comm):
    w, c = make_widget(project, fake_comm)
    c.deliver({"type": "colour", "value": 2, "colour": "#00FF00"})
    assert w.classes[1]["colour"] == "#00ff00" and w.classes[1]["name"] == "bone"
    w.close()


def test_annotator_from_an_existing_session_and_from_a_volume_file(tmp_path, project, fake_comm):
    s = Session(project)
    w, _ = make_widget(s, fake_comm)
    assert w.session is s and w.shape == [16, 64, 64]
    w.close()
    s.goto("z", 1)  # the session outlives a widget that did not open it

    npy = tmp_path / "scan.npy"
    np.save(npy, np.zeros((4, 16, 16), np.uint16))
    w2, _ = make_widget(str(npy), fake_comm, classes="background,bone")
    assert (tmp_path / "scan.alproj" / "project.json").exists() and w2.classes[1]["name"] == "bone"
    w2.close()


def test_browser_set_traits_are_clamped(project, fake_comm):
    w, _ = make_widget(project, fake_comm)
    w.brush_size, w.opacity, w.active_class, w.tool = 0, 3.0, 99, "laser"
    assert (w.brush_size, w.opacity, w.active_class, w.tool) == (1, 1.0, 4, "brush")
    w.window = [5.0, 1.0]
    assert w.window == w.default_window
    w.close()


def test_quantiser_keeps_the_display_window_resolution_for_float_data():
    q = Quantiser(np.dtype("float32"), (-1000.0, 1e6), (0.0, 1.0))
    assert q.kind == "u16" and q.qlo == -4.0  # the window (0, 1) widened by 4 widths, inside (min, max)
    values = np.linspace(0, 1, 1000, dtype=np.float32)
    decoded = q.qlo + q.encode(values).astype(np.float64) * q.qscale
    assert np.abs(decoded - values).max() <= q.qscale and q.qscale < 1 / 7000


def test_block_mean_matches_numpy_on_ragged_edges():
    a = np.arange(7 * 5, dtype=np.float32).reshape(7, 5)
    out = block_mean(a, Region(0, 7, 0, 5, 2))
    assert out.shape == (4, 3)
    assert out[0, 0] == a[:2, :2].mean() and out[3, 2] == a[6, 4]  # an edge cell repeats its edge


def test_static_files_ship_with_the_package():
    from importlib import resources

    static = resources.files("al_annotator.jupyter").joinpath("static")
    js = static.joinpath("annotator.js").read_text()
    # the esbuild bundle of js/src: anywidget reads its default export ({render})
    assert "as default" in js and "model.send" in js
    assert static.joinpath("annotator.css").read_text().strip()


# ---------------------------------------------------------------------------------------- caches
def test_cached_labels_stay_equal_to_the_store_under_edits_on_every_axis(project, fake_comm):
    w, c = make_widget(project, fake_comm)
    rng = np.random.default_rng(0)
    shape = (16, 64, 64)
    views = [SliceRef("z", 8), SliceRef("y", 30), SliceRef("x", 12)]
    for ref in views:  # fill the caches (z: one 16-slice slab; y, x: their 64-slice slabs)
        w._planes.labels_of(ref)
    for seq in range(1, 31):
        axis = "zyx"[seq % 3]
        ref = SliceRef(axis, int(rng.integers(0, shape["zyx".index(axis)])))
        h, wd = ref.shape_in(shape)
        stroke(c, rng.choice(h * wd, 40, replace=False), value=int(rng.integers(1, 5)), seq=seq, axis=axis, index=ref.index)
        if seq % 7 == 0:
            c.deliver({"type": "undo"})
    store = open_project(project)
    for ref in views + [SliceRef("y", 0), SliceRef("x", 63), SliceRef("z", 15)]:
        np.testing.assert_array_equal(w._planes.labels_of(ref), store.read_slice(ref, "labels"), err_msg=str(ref))
    w.close()


def test_a_stroke_across_the_shown_slice_updates_it(project, fake_comm):
    w, c = make_widget(project, fake_comm)
    view(c, "y", 30, (16, 64))
    c.clear()
    stroke(c, [30 * 64 + 5], axis="z", index=4)  # z=4, y=30, x=5: on the shown y slice
    (msg, (buf,)), = c.custom("labels")
    assert np.frombuffer(buf, np.uint8).reshape(16, 64)[4, 5] == 2
    c.clear()
    stroke(c, [31 * 64 + 5], axis="z", index=4, seq=2)  # y=31: not on it, nothing to send
    assert not c.custom("labels")
    w.close()


# ---------------------------------------------------------------------------------------- on a running event loop
def test_on_the_kernel_loop_reads_happen_off_it_and_the_timer_polls(project, fake_comm):
    """As in a kernel: slices not in memory are read on a reader thread, and the poll timer picks
    up another process's edits by itself."""
    import asyncio

    async def scenario():
        w, c = make_widget(project, fake_comm)
        w.poll_interval = 0.05
        w._start_polling()

        async def until(check, what):
            for _ in range(400):  # 20 s: generous on a loaded machine
                if check():
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"timed out waiting for {what}")

        c.deliver({"type": "view", "client": "c1", "req": 5, "axis": "y", "index": 33, "r0": 0, "r1": 16, "c0": 0, "c1": 64, "step": 1})
        await until(lambda: any(m["req"] == 5 for m, _ in c.custom("slice")), "the slice read off the loop")
        other = open_project(project, author="someone_else")
        other.paint(SliceRef("y", 33), np.array([3, 4]), "bone")
        await until(lambda: any(np.frombuffer(b[0], np.uint8)[3] == 2 for m, b in c.custom("labels")), "the poll to push labels")
        w.close()
        return True

    assert asyncio.run(scenario())


def test_the_nodelay_server_connection_sets_tcp_nodelay_then_connects(monkeypatch):
    from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection

    from al_annotator.jupyter.server import NoDelayKernelWebsocketConnection

    calls = []

    class Handler:
        def set_nodelay(self, value):
            calls.append(("nodelay", value))

    monkeypatch.setattr(ZMQChannelsWebsocketConnection, "connect", lambda self: calls.append("connect"))
    conn = NoDelayKernelWebsocketConnection.__new__(NoDelayKernelWebsocketConnection)
    conn._trait_values["websocket_handler"] = Handler()
    conn.connect()
    assert calls == [("nodelay", True), "connect"]


@pytest.mark.parametrize("dtype", ["uint8", "float32", "int16"])
def test_every_dtype_arrives_decodable(fake_comm, dtype):
    rng = np.random.default_rng(1)
    vol = (rng.normal(100, 30, (3, 20, 24))).astype(dtype)
    w, c = make_widget(vol, fake_comm, classes="background,bone")
    content, bufs = view(c, "z", 1, (20, 24))
    kind = content["image"]["dtype"]
    assert kind == ("u8" if dtype == "uint8" else "u16")
    codes = np.frombuffer(bufs[0], np.uint8 if kind == "u8" else np.uint16).reshape(20, 24)
    decoded = content["image"]["qlo"] + codes * content["image"]["qscale"]
    lo, hi = w.window
    inside = (vol[1] >= lo) & (vol[1] <= hi)  # values in the display window survive exactly or within one level
    assert np.abs(decoded - vol[1])[inside].max() <= content["image"]["qscale"]
    w.close()


def test_a_missing_project_without_a_volume_is_a_clear_error(tmp_path, fake_comm):
    from al_annotator.errors import InputError

    with pytest.raises(InputError, match="not an al_annotator project"):
        Annotator(tmp_path / "nothing_here")


# ---------------------------------------------------------------------------------------- large slices: the tile cache
def _tiled_widget(tmp_path, fake_comm, shape=(20, 96, 80)):
    """A widget whose chunk slabs all count as 'too large' (as a 2048^2 z slab does): the TileCache serves views."""
    rng = np.random.default_rng(3)
    vol = rng.integers(0, 4000, shape, dtype=np.uint16)
    path = tmp_path / "big"
    create_project(path, vol, classes=CLASSES).close()
    w, c = make_widget(path, fake_comm)
    w._planes.images.max_slab_bytes = 0  # every slab "too large": single slices, or tiles
    w._planes.labels.max_slab_bytes = 0
    return w, c, path, vol


@pytest.mark.parametrize("axis", ["z", "y", "x"])
def test_tiled_views_equal_the_per_tile_reduction_and_neighbours_need_no_read(tmp_path, fake_comm, axis):
    w, c, path, vol = _tiled_widget(tmp_path, fake_comm)
    a = "zyx".index(axis)
    shape2d = tuple(n for i, n in enumerate(vol.shape) if i != a)
    q = Quantiser(np.dtype("uint16"), (0, 4000), w.session.volume.display_window)
    for step, region in ((3, None), (1, (10, 40, 6, 37)), (2, (4, shape2d[0], 0, 31))):
        for k, index in enumerate((5, 6, 4)):
            content, bufs = view(c, axis, index, shape2d, step=step, region=region, req=10 * step + k)
            r = Region(content["r0"], content["r1"], content["c0"], content["c1"], step)
            img = np.take(vol, index, axis=a)
            h, wd = content["h"], content["w"]
            got = np.frombuffer(bufs[0], np.uint16).reshape(h, wd)
            expected = q.encode(block_mean(img, r))
            if r.r1 == shape2d[0] and r.c1 == shape2d[1] or step == 1:  # edge cells padded alike
                np.testing.assert_array_equal(got, expected)
            else:  # a cell cut by the region's edge is averaged over the whole cell: the inner cells agree
                np.testing.assert_array_equal(got[:-1, :-1], expected[:-1, :-1])
            assert not np.frombuffer(bufs[1], np.uint8).any()
        assert w._planes.tiles.reads <= 3 * 2  # the three neighbours came from one entry per step (two depth-16 blocks at most)
    assert not w.errors
    w.close()


def test_tiled_labels_follow_strokes_undo_and_other_processes(tmp_path, fake_comm):
    w, c, path, vol = _tiled_widget(tmp_path, fake_comm)
    shape2d = vol.shape[1:]
    view(c, "z", 6, shape2d, step=2)
    view(c, "y", 40, (20, 80), step=2, client="c2")
    rng = np.random.default_rng(1)
    for seq in range(1, 16):
        axis = "zyx"[seq % 3]
        n = vol.shape["zyx".index(axis)]
        index = [6, 40, 10][seq % 3] if seq % 2 else int(rng.integers(0, n))
        h, wd = SliceRef(axis, index).shape_in(vol.shape)
        stroke(c, rng.choice(h * wd, 300, replace=False), value=int(rng.integers(1, 5)), seq=seq, axis=axis, index=index)
        if seq % 5 == 0:
            c.deliver({"type": "undo"})
    other = open_project(path, author="someone_else")
    other.paint(SliceRef("z", 7), np.arange(0, 96 * 80, 2), "bone")
    other.close()
    w.poll()
    store = open_project(path)
    for axis, index, s2d in (("z", 6, shape2d), ("z", 7, shape2d), ("z", 15, shape2d), ("y", 40, (20, 80)), ("y", 41, (20, 80))):
        content, bufs = view(c, axis, index, s2d, step=2, req=100 + index)
        expected = store.read_slice(SliceRef(axis, index), "labels")[::2, ::2]
        np.testing.assert_array_equal(np.frombuffer(bufs[1], np.uint8).reshape(expected.shape), expected, err_msg=f"{axis}={index}")
    # the labels message after a stroke is the tile's labels too
    c.clear()
    stroke(c, [0, 2, 4], value=3, seq=99, axis="y", index=41)
    msg, (buf,) = c.custom("labels")[-1]
    expected = store.read_slice(SliceRef("y", 41), "labels")[::2, ::2]
    np.testing.assert_array_equal(np.frombuffer(buf, np.uint8).reshape(expected.shape), expected)
    assert not w.errors
    w.close()


def test_a_tile_read_overtaken_by_an_edit_replays_it(tmp_path, fake_comm):
    """A tile read in the background while a stroke lands must not hide the stroke."""
    w, c, path, vol = _tiled_widget(tmp_path, fake_comm)
    ref, region = SliceRef("z", 3), Region(0, 96, 0, 80, 2)
    entry = w._planes.tiles.key(ref, region)
    got = w._planes.read_tile_entry(entry)  # the read finished before the stroke ...
    stroke(c, [0, 2, 4], value=4, seq=1, axis="z", index=3)
    w._planes.install_tiles(entry, *got)  # ... and is installed after it
    labels = w._planes.tiles.get_labels(ref, region)
    assert labels.reshape(-1)[[0, 1, 2]].tolist() == [4, 4, 4]
    # an edit by another process in between cannot be replayed: the labels are not kept
    got = w._planes.read_tile_entry(entry)
    w._controller.on_labels_changed([ref])
    w._planes.install_tiles(entry, *got)
    assert w._planes.tiles.get_labels(ref, region) is None and w._planes.tiles.image_cached(entry)
    w.close()


def test_tiled_switches_on_the_kernel_loop_prefetch_the_next_slices(tmp_path, fake_comm):
    import asyncio

    async def scenario():
        w, c, path, vol = _tiled_widget(tmp_path, fake_comm, shape=(40, 64, 64))
        w._planes.tiles.depth = 8

        async def until(check, what):
            for _ in range(400):
                if check():
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"timed out waiting for {what}")

        for req, index in enumerate((2, 3, 4, 5), start=1):
            c.deliver({"type": "view", "client": "c1", "req": req, "axis": "z", "index": index, "r0": 0, "r1": 64, "c0": 0, "c1": 64, "step": 2})
            await until(lambda: any(m["req"] == req for m, _ in c.custom("slice")), f"slice {index}")
        # stepping up: the next block (z 8..15) is read in the background
        await until(lambda: w._planes.tiles.has(SliceRef("z", 9), Region(0, 64, 0, 64, 2)), "the prefetch")
        reads = w._planes.tiles.reads
        c.deliver({"type": "view", "client": "c1", "req": 9, "axis": "z", "index": 8, "r0": 0, "r1": 64, "c0": 0, "c1": 64, "step": 2})
        assert any(m["req"] == 9 for m, _ in c.custom("slice"))  # served at once, from memory
        assert w._planes.tiles.reads == reads
        w.close()
        return True

    assert asyncio.run(scenario())


def test_tiled_orthogonal_views_equal_the_reduction(tmp_path, fake_comm):
    from al_annotator.jupyter._imaging import fit_step, sample
    from al_annotator.jupyter._planes import ORTHO_PX

    w, c, path, vol = _tiled_widget(tmp_path, fake_comm, shape=(20, 400, 336))
    w.session.paint(np.arange(0, 400 * 336, 7), "bone", ref=SliceRef("z", 9))
    c.clear()
    w.cursor = [9, 100, 50]
    w._controller.schedule_ortho(full=True)
    msg, bufs = c.custom("ortho")[-1]
    q = Quantiser(np.dtype("uint16"), (0, 4000), w.session.volume.display_window)
    store = open_project(path)
    for k, plane in enumerate(msg["planes"]):
        ref = SliceRef(plane["axis"], plane["index"])
        img = np.take(vol, ref.index, axis=ref.axis_number)
        labels = store.read_slice(ref, "labels")
        region = Region.full(img.shape, fit_step(img.shape, ORTHO_PX))
        got_img = np.frombuffer(bufs[2 * k], np.uint16).reshape(plane["h"], plane["w"])
        got_lab = np.frombuffer(bufs[2 * k + 1], np.uint8).reshape(plane["h"], plane["w"])
        # every slab counts as large here: the main view's tile (1:1: 400 px fit a 512 canvas), subsampled
        main = Region.full(img.shape, fit_step(img.shape, w.canvas_size))
        k = -(-region.step // main.step)
        assert plane["step"] == main.step * k >= region.step
        np.testing.assert_array_equal(got_img, q.encode(block_mean(img, main))[::k, ::k])
        np.testing.assert_array_equal(got_lab, sample(labels, main)[::k, ::k])
    assert w._planes.tiles.reads >= 1  # the z plane came from the tile cache
    reads = w._planes.tiles.reads
    view(c, "z", 9, (400, 336), step=1)  # the main view at the canvas's resolution: the same entry
    view(c, "z", 10, (400, 336), step=1, req=2)
    assert w._planes.tiles.reads == reads
    w.close()


def test_tiled_views_carry_the_prediction_from_memory(tmp_path, fake_comm):
    w, c, path, vol = _tiled_widget(tmp_path, fake_comm, shape=(16, 64, 64))
    view(c, "z", 8, (64, 64), step=2)
    c.clear()
    _publish_fake_model(path)
    w.poll()
    (ov, (pred, conf)), = c.custom("overlays")
    assert (ov["h"], ov["w"]) == (32, 32)
    p = np.frombuffer(pred, np.uint8).reshape(32, 32)
    assert (p[:, :16] == 2).all() and (p[:, 16:] == 3).all() and set(np.frombuffer(conf, np.uint8)) == {200}
    preds = w._planes.prediction_tiles()
    assert preds is not None and preds.reads == 1
    for req, index in enumerate((9, 10, 7), start=2):  # neighbours: prediction from the same entry
        content, bufs = view(c, "z", index, (64, 64), step=2, req=req)
        assert content["layers"] == ["image", "labels", "prediction", "confidence"]
        np.testing.assert_array_equal(np.frombuffer(bufs[2], np.uint8).reshape(32, 32), p)
    assert preds.reads == 1
    w.close()


# ---------------------------------------------------------------------------------------------- tier 1 live
def _two_class_strokes(c, ref, seed=0, per_class=50, seq=1):
    gt = make_phantom((16, 64, 64), seed=1).labels[ref.selection()].reshape(-1)  # the project fixture's phantom
    rng = np.random.default_rng(seed)
    for k, value in enumerate((1, 2)):
        idx = np.sort(rng.choice(np.flatnonzero(gt == value), per_class, replace=False))
        stroke(c, idx, value, seq=seq + k, axis=ref.axis, index=ref.index)


def test_live_preview_updates_the_overlays_after_a_stroke(project, fake_comm):
    pytest.importorskip("sklearn")
    w, c = make_widget(project, fake_comm, live_preview=True)
    assert w.session.live_preview and w.live_preview and w.served["live"] and w.served["tier"] is None
    assert not w.show_prediction
    ref = SliceRef("z", 8)
    view(c, "z", 8, (64, 64))
    c.clear()
    _two_class_strokes(c, ref)
    w.session.wait_preview()
    preview = w.session.preview(ref)
    ov, (pred, conf) = c.custom("overlays")[-1]
    assert (ov["tier"], ov["labels_seq"]) == ("instant", w.session.labels_seq) and (ov["h"], ov["w"]) == (64, 64)
    np.testing.assert_array_equal(np.frombuffer(pred, np.uint8).reshape(64, 64), preview.prediction)
    np.testing.assert_array_equal(np.frombuffer(conf, np.uint8).reshape(64, 64), preview.confidence)
    assert w.served["tier"] == "instant" and w.served["summary"].startswith("serving: instant classifier")
    assert w.show_prediction  # the first served prediction turned the overlay on
    # the page's next view of the slice carries the preview too
    content, bufs = view(c, "z", 8, (64, 64), req=2)
    assert content["layers"][2:] == ["prediction", "confidence"] and content["tier"] == "instant"
    np.testing.assert_array_equal(np.frombuffer(bufs[2], np.uint8).reshape(64, 64), preview.prediction)
    w.live_preview = False  # from Python or the page: the Session follows
    assert not w.session.live_preview and not w.served["live"]
    w.close()


def test_a_chosen_prediction_toggle_is_left_alone(project, fake_comm):
    pytest.importorskip("sklearn")
    w, c = make_widget(project, fake_comm, live_preview=True, show_prediction=False)
    view(c, "z", 8, (64, 64))
    _two_class_strokes(c, SliceRef("z", 8))
    w.session.wait_preview()
    assert w.served["tier"] == "instant" and not w.show_prediction
    w.close()


def test_the_live_timer_sends_a_preview_without_a_poll(project, fake_comm):
    """With the kernel's loop running and no poll timer, the fast timer alone delivers the preview."""
    pytest.importorskip("sklearn")
    import asyncio

    async def scenario():
        w, c = make_widget(project, fake_comm, live_preview=True, live_interval=0.02)
        assert w._live_task is not None
        ref = SliceRef("z", 8)
        c.deliver({"type": "view", "client": "c1", "req": 1, "axis": "z", "index": 8, "r0": 0, "r1": 64, "c0": 0, "c1": 64, "step": 1})
        deadline = asyncio.get_running_loop().time() + 60
        while not c.custom("slice"):
            assert asyncio.get_running_loop().time() < deadline, "no slice"
            await asyncio.sleep(0.02)
        _two_class_strokes(c, ref)
        while not [m for m, b in c.custom("overlays") if b and m["labels_seq"] == w.session.labels_seq]:
            assert asyncio.get_running_loop().time() < deadline, "the preview never reached the page"
            await asyncio.sleep(0.02)
        ov, (pred, _) = c.custom("overlays")[-1]
        np.testing.assert_array_equal(np.frombuffer(pred, np.uint8).reshape(64, 64), w.session.preview(ref).prediction)
        w.close()
        return True

    assert asyncio.run(scenario())


def test_a_tiled_view_gets_the_live_preview_sampled_then_the_deep_tiles_when_the_model_wins(tmp_path, fake_comm):
    pytest.importorskip("sklearn")
    w, c, path, vol = _tiled_widget(tmp_path, fake_comm, shape=(16, 64, 64))
    w.live_preview = True
    ref = SliceRef("z", 8)
    view(c, "z", 8, (64, 64), step=2)
    assert w._planes.tiled(ref, w._planes.views["c1"].region)
    stroke(c, np.arange(0, 64 * 20), 1, seq=1)  # rows 0..19 class 1, rows 40..63 class 2
    stroke(c, np.arange(64 * 40, 64 * 64), 2, seq=2)
    w.session.wait_preview()
    ov, (pred, conf) = c.custom("overlays")[-1]
    assert (ov["h"], ov["w"], ov["step"], ov["tier"]) == (32, 32, 2, "instant")
    preview = w.session.preview(ref)
    np.testing.assert_array_equal(np.frombuffer(pred, np.uint8).reshape(32, 32), preview.prediction[::2, ::2])
    np.testing.assert_array_equal(np.frombuffer(conf, np.uint8).reshape(32, 32), preview.confidence[::2, ::2])
    c.clear()
    _publish_fake_model(path)  # val_dice 0.7 and no held-out score for tier 1 (too few voxels): the model serves
    w.poll()
    assert w.served["tier"] == "deep"
    ov, (pred, _) = c.custom("overlays")[-1]
    p = np.frombuffer(pred, np.uint8).reshape(32, 32)
    assert ov["tier"] == "deep" and (p[:, :16] == 2).all() and (p[:, 16:] == 3).all()  # from the model's tiles
    assert w._planes.prediction_tiles() is not None and w._planes.prediction_tiles().reads == 1
    w.close()
