"""Zoomed-out main views read the store's image pyramid: the notebook widget's plane server (no
browser) and ``Session.image_levels``. napari's multiscale layer: tests/test_pyramid_views_napari.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from al_annotator.core import Session
from al_annotator.jupyter._cache import _block_mean3
from al_annotator.jupyter._controller import Controller, ViewState
from al_annotator.jupyter._planes import PlaneServer
from al_annotator.store.pyramid import level_shape
from al_annotator.types import SliceRef

SHAPE = (20, 1030, 96)  # longest side 1030: pyramid levels 1 and 2; odd sizes exercise the edges


class Browser:
    def __init__(self) -> None:
        self.sent: list[tuple[dict, list[bytes]]] = []

    def __call__(self, content: dict, buffers=()) -> None:
        json.dumps(content, allow_nan=False)
        self.sent.append((content, [bytes(memoryview(b)) for b in buffers]))

    def of(self, kind: str) -> list[tuple[dict, list[bytes]]]:
        return [m for m in self.sent if m[0].get("type") == kind]


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(3)
    ramp = np.linspace(0, 30000, SHAPE[1])[None, :, None]
    return (ramp + rng.integers(0, 20000, SHAPE)).astype(np.uint16)


@pytest.fixture
def ctl(tmp_path, image):
    session = Session.create(tmp_path / "proj", image, classes="a,b,c")
    browser = Browser()
    planes = PlaneServer(session, browser)
    planes.images.max_slab_bytes = planes.labels.max_slab_bytes = 0  # every slice "large": served as tiles
    controller = Controller(session, browser, planes, view=ViewState(cursor=[5, 16, 16], window=list(session.volume.display_window)))
    connections = controller.connections()
    for signal, slot in connections:
        signal.connect(slot)
    controller.start()
    yield controller, browser
    for signal, slot in connections:
        signal.disconnect(slot)
    planes.close()
    session.close()


def view(controller, browser, *, axis="y", index=7, step=1, r0=0, r1=None, c0=0, c1=None, req=1):
    h, w = SliceRef(axis, index).shape_in(SHAPE)
    controller.handle({"type": "view", "client": "c1", "req": req, "axis": axis, "index": index,
                       "r0": r0, "r1": h if r1 is None else r1, "c0": c0, "c1": w if c1 is None else c1, "step": step})
    msg, bufs = browser.of("slice")[-1]
    assert msg["req"] == req
    image = np.frombuffer(bufs[0], np.uint16).reshape(msg["h"], msg["w"])
    labels = np.frombuffer(bufs[1], np.uint8).reshape(msg["h"], msg["w"])
    return msg, image, labels


def test_image_levels_are_the_image_then_the_pyramid_read_only(tmp_path, image):
    session = Session.create(tmp_path / "p", image, classes="a,b")
    levels = session.image_levels
    assert [lv.shape for lv in levels] == [SHAPE, level_shape(SHAPE, 1), level_shape(SHAPE, 2)]
    np.testing.assert_array_equal(levels[0][3], image[3])
    np.testing.assert_array_equal(levels[2][...], np.asarray(session.store.pyramid[2][...]))
    with pytest.raises(TypeError, match="read-only"):
        levels[1][0, 0, 0] = 1
    session.close()
    small = Session.create(None, image[:, :300], classes="a,b")  # no pyramid: the image alone
    assert len(small.image_levels) == 1
    small.close()


@pytest.mark.parametrize("axis, index", [("y", 7), ("z", 13), ("x", 95)])
def test_zoomed_out_view_reads_the_level_the_step_needs_and_full_when_zoomed_in(ctl, axis, index):
    controller, browser = ctl
    planes = controller.planes
    store = controller.session.store
    n = "zyx".index(axis)
    tiles = planes.tiles
    reading, full_reads = [], []  # the step of the tile entry being read; the steps that read the full image
    read_entry, read_full = tiles.read, tiles._read_image

    def read(key, image=True):
        reading.append(key[3])
        try:
            return read_entry(key, image)
        finally:
            reading.pop()

    tiles.read = read
    tiles._read_image = lambda sel: full_reads.append(reading[-1]) or read_full(sel)

    msg, img, _ = view(controller, browser, axis=axis, index=index, step=4)
    assert msg["level"] == 2 and msg["step"] == 4 and 4 not in full_reads  # the full image was not read for it
    coarse = np.take(np.asarray(store.pyramid[2][...]), index >> 2, axis=n)  # level 2's plane through the slice
    np.testing.assert_array_equal(img, coarse[: msg["h"], : msg["w"]])
    assert img.shape == tuple(-(-s // 4) for s in SliceRef(axis, index).shape_in(SHAPE))

    msg, img, _ = view(controller, browser, axis=axis, index=index, step=8, req=2)  # 2x2 means of level 2
    assert msg["level"] == 2 and 8 not in full_reads
    np.testing.assert_array_equal(img, np.rint(_block_mean3(coarse[None], 2)[0]).astype(np.uint16))

    msg, img, _ = view(controller, browser, axis=axis, index=index, step=1, req=3)  # zoomed in: the full image
    assert msg["level"] == 0 and 1 in full_reads
    np.testing.assert_array_equal(img, store.read_slice(SliceRef(axis, index)))


def test_a_step_not_a_power_of_two_samples_the_level_below_it(ctl):
    controller, browser = ctl
    store = controller.session.store
    msg, img, _ = view(controller, browser, axis="z", index=5, step=3)
    assert msg["level"] == 1
    coarse = np.asarray(store.pyramid[1][5 >> 1])
    h, w = SliceRef("z", 5).shape_in(SHAPE)
    rows = np.minimum((np.arange(msg["h"]) * 3 + 1) >> 1, coarse.shape[0] - 1)
    cols = np.minimum((np.arange(msg["w"]) * 3 + 1) >> 1, coarse.shape[1] - 1)
    np.testing.assert_array_equal(img, coarse[rows][:, cols])
    assert img.shape == (-(-h // 3), -(-w // 3))


def test_a_stroke_painted_zoomed_out_lands_at_full_resolution(ctl):
    controller, browser = ctl
    session = controller.session
    ref = SliceRef("z", 9)
    h, w = ref.shape_in(SHAPE)
    msg, _, labels = view(controller, browser, axis="z", index=9, step=4)
    assert msg["level"] == 2 and not labels.any()
    # what the browser sends for a brush dab at full-resolution rows 401..409, columns 41..49 (not on the step grid)
    rows, cols = np.mgrid[401:410, 41:50]
    flat = (rows * w + cols).ravel().astype("<u4")
    controller.handle({"type": "stroke", "client": "c1", "seq": 1, "tool": "brush", "value": 2, "axis": "z", "index": 9},
                      [flat.tobytes()])
    (ack, _), = browser.of("ack")
    assert ack["ok"] and ack["n"] == 81
    on_disk = session.plane("labels", ref)
    assert (on_disk[401:410, 41:50] == 2).all() and int((on_disk != 0).sum()) == 81  # exactly the painted voxels
    lmsg, lbufs = browser.of("labels")[-1]
    assert lmsg["step"] == 4
    sampled = np.frombuffer(lbufs[0], np.uint8).reshape(lmsg["h"], lmsg["w"])
    np.testing.assert_array_equal(sampled, on_disk[::4, ::4])  # the tile's labels: the full plane sampled
    # and zoomed back in, the same voxels
    _, _, labels = view(controller, browser, axis="z", index=9, step=1, r0=384, r1=448, c0=0, c1=96, req=5)
    np.testing.assert_array_equal(labels, on_disk[384:448, :96])


def test_a_level_that_cannot_be_read_falls_back_to_the_full_image(ctl, caplog):
    controller, browser = ctl
    store = controller.session.store

    class Broken:
        shape = store.pyramid[2].shape

        def __getitem__(self, key):
            raise OSError("chunk missing")

    controller.planes.tiles.levels[2] = Broken()
    msg, img, _ = view(controller, browser, axis="y", index=3, step=4)
    assert msg["level"] == 0
    full = store.read_slice(SliceRef("y", 3)).astype(np.float32)
    assert abs(float(img.mean()) - float(full.mean())) < 50  # the block means of the full image
    assert "cannot be read" in caplog.text
