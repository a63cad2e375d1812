"""Contract tests of the project store, run against a directory and against memory."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from al_annotator.errors import (
    EditLogCorruptError,
    InputError,
    LabelValueError,
    ProjectExistsError,
    ProjectNotFoundError,
)
from al_annotator.store import create_project, open_project
from al_annotator.types import EditAtom, SliceRef

CLASSES = ("background", "bone", "implant", "degradation")


def _volume(shape=(20, 24, 28), seed=0):
    return np.random.default_rng(seed).integers(0, 4000, shape).astype(np.uint16)


@pytest.fixture(params=["local", "memory"])
def make_store(request, tmp_path):
    def make(volume=None, **kw):
        volume = _volume() if volume is None else volume
        path = tmp_path / "proj" if request.param == "local" else None
        return create_project(path, volume, classes=kw.pop("classes", CLASSES), **kw)

    make.kind = request.param
    return make


class TestStoreContract:
    def test_image_round_trips_exactly_on_every_axis(self, make_store):
        vol = _volume()
        store = make_store(vol)
        assert store.shape == vol.shape and store.dtype == vol.dtype
        for axis, n in zip("zyx", vol.shape):
            for idx in (0, n // 2, n - 1):
                ref = SliceRef(axis, idx)
                np.testing.assert_array_equal(store.read_slice(ref), vol[ref.selection()])

    def test_paint_is_visible_on_every_crossing_axis(self, make_store):
        store = make_store()
        ref = SliceRef("y", 7)
        h, w = ref.shape_in(store.shape)
        idx = np.ravel_multi_index((np.array([3, 3, 4]), np.array([5, 6, 5])), (h, w))
        atom = store.paint(ref, idx, "implant")
        assert atom.seq is not None and atom.old_values.tolist() == [0, 0, 0]
        vol_labels = np.asarray(store.labels[...])
        assert vol_labels[3, 7, 5] == vol_labels[3, 7, 6] == vol_labels[4, 7, 5] == 3
        # the same voxel seen from a z slice and an x slice
        assert store.read_slice(SliceRef("z", 3), "labels")[7, 5] == 3
        assert store.read_slice(SliceRef("x", 6), "labels")[3, 7] == 3
        assert store.labelled_voxels()["implant"] == 3

    def test_undo_redo_restore_exact_values(self, make_store):
        store = make_store()
        ref = SliceRef("z", 2)
        store.paint(ref, np.arange(0, 40), "bone")
        before = store.read_slice(ref, "labels").copy()
        store.paint(ref, np.arange(20, 60), "degradation")
        store.undo()
        np.testing.assert_array_equal(store.read_slice(ref, "labels"), before)
        store.redo()
        after = store.read_slice(ref, "labels").reshape(-1)
        assert (after[20:60] == 4).all() and (after[:20] == 2).all()
        store.undo()
        store.undo()
        assert not store.read_slice(ref, "labels").any()
        assert store.undo() is None
        assert store.labelled_voxels() == {c: 0 for c in CLASSES}

    def test_new_edit_clears_redo(self, make_store):
        store = make_store()
        ref = SliceRef("x", 1)
        store.paint(ref, np.arange(5), 1)
        store.undo()
        assert store.can_redo()
        store.paint(ref, np.arange(5, 9), 2)
        assert not store.can_redo()

    def test_undo_is_per_author(self, make_store):
        store = make_store()
        ref = SliceRef("z", 0)
        store.paint(ref, np.arange(3), 1, author="ana")
        store.paint(ref, np.arange(3, 6), 2, author="ben")
        store.undo("ana")
        flat = store.read_slice(ref, "labels").reshape(-1)
        assert flat[:3].tolist() == [0, 0, 0] and flat[3:6].tolist() == [2, 2, 2]

    def test_slice_states(self, make_store):
        store = make_store()
        store.paint(SliceRef("y", 3), np.arange(4), 1)
        assert store.slice_state(SliceRef("y", 3)).state == "in_progress"
        store.set_slice_state(SliceRef("y", 3), "annotated", author="ana")
        st = store.slice_state(SliceRef("y", 3))
        assert st.state == "annotated" and st.by == "ana" and st.at > 0
        assert store.annotated_slices() == [SliceRef("y", 3)]
        assert store.slice_state(SliceRef("z", 3)).state == "unlabelled"

    def test_labels_equal_replayed_log(self, make_store):
        store = make_store()
        rng = np.random.default_rng(1)
        for _ in range(30):
            ref = SliceRef("zyx"[rng.integers(3)], 0)
            n = store.shape[ref.axis_number]
            ref = SliceRef(ref.axis, int(rng.integers(n)))
            h, w = ref.shape_in(store.shape)
            store.paint(ref, rng.choice(h * w, 25, replace=False), int(rng.integers(0, 5)))
            if rng.random() < 0.2:
                store.undo()
        np.testing.assert_array_equal(store.replay(), np.asarray(store.labels[...]))
        assert store.check() == []

    def test_bad_edits_are_refused_and_change_nothing(self, make_store):
        store = make_store()
        ref = SliceRef("z", 1)
        with pytest.raises(LabelValueError, match="0 \\(unlabelled\\) or 1..4"):
            store.apply_edit(EditAtom(ref, np.array([1, 2]), np.array([7], np.uint8)))
        with pytest.raises(InputError, match="indices must be integers in 0.."):
            store.apply_edit(EditAtom(ref, np.array([10**7]), np.array([1], np.uint8)))
        with pytest.raises(IndexError, match="outside the volume"):
            store.paint(SliceRef("z", 999), np.array([0]), 1)
        with pytest.raises(InputError, match="unknown class 'metal'"):
            store.paint(ref, np.array([0]), "metal")
        assert store.log.last_seq == 0 and not np.asarray(store.labels[...]).any()

    def test_imported_labels_are_kept(self, make_store):
        vol = _volume()
        labels = np.zeros(vol.shape, np.uint8)
        labels[5, 2:6, 3:9] = 2
        labels[9, :, 0] = 4
        store = make_store(vol, labels=labels)
        np.testing.assert_array_equal(np.asarray(store.labels[...]), labels)
        assert store.labelled_voxels()["bone"] == 24 and store.labelled_voxels()["degradation"] == vol.shape[1]
        store.paint(SliceRef("z", 5), np.arange(3), 3)
        np.testing.assert_array_equal(store.replay(), np.asarray(store.labels[...]))


def test_reopen_keeps_everything(tmp_path):
    store = create_project(tmp_path / "p", _volume(), classes=CLASSES, spacing="2,1,1")
    store.paint(SliceRef("x", 3), np.arange(10), "bone", author="ana")
    store.set_slice_state(SliceRef("x", 3), "annotated", author="ana")
    store.paint(SliceRef("z", 1), np.arange(5), "implant", author="ana")
    store.close()
    fresh = open_project(tmp_path / "p", author="ana")
    assert not fresh.can_undo(), "a new session has its own (empty) undo stack"
    fresh.close()
    again = open_project(tmp_path / "p", author="ana", session=store.session)
    assert again.config.spacing == (2.0, 1.0, 1.0)
    assert again.labelled_voxels()["bone"] == 10 and again.labelled_voxels()["implant"] == 5
    assert again.slice_state(SliceRef("x", 3)).state == "annotated"
    assert again.can_undo()
    again.undo()  # resuming a session rebuilds its undo stack from the log
    assert again.labelled_voxels()["implant"] == 0
    assert again.recovered == []


def test_labels_behind_the_log_are_repaired_on_open(tmp_path):
    """A crash between the log write and the labels write: opening replays the edit."""
    store = create_project(tmp_path / "p", _volume(), classes=CLASSES)
    store.paint(SliceRef("z", 4), np.arange(12), "bone")
    # simulate the crash: the labels chunk never got the stroke, state.json says nothing was applied
    store.labels[...] = 0
    state = store.backend.read_json("state.json")
    state["applied_seq"] = 0
    store.backend.write_json("state.json", state)
    store.close()
    again = open_project(tmp_path / "p")
    assert again.recovered == [1]
    assert (again.read_slice(SliceRef("z", 4), "labels").reshape(-1)[:12] == 2).all()


def test_torn_last_record_is_set_aside(tmp_path):
    from al_annotator.store.editlog import encode_record

    store = create_project(tmp_path / "p", _volume(), classes=CLASSES)
    store.paint(SliceRef("z", 4), np.arange(12), "bone")
    store.close()
    log = tmp_path / "p" / "edits.log"
    good = log.read_bytes()
    # a writer killed in the middle of its log write leaves a prefix of the record, and no labels
    blob = encode_record(2, {"type": "edit", "axis": "z", "index": 5, "author": "x", "time": 0, "tool": "brush"},
                         {"idx": np.arange(12, dtype=np.uint32), "old": np.zeros(12, np.uint8), "new": np.array([2], np.uint8)})
    log.write_bytes(good + blob[:30])
    again = open_project(tmp_path / "p")
    assert again.torn_tail == len(good)
    assert (tmp_path / "p" / "edits.log.torn").read_bytes() == blob[:30]
    assert log.read_bytes() == good
    assert again.log.last_seq == 1
    again.paint(SliceRef("z", 6), np.arange(3), "bone")  # appending continues cleanly
    assert again.check() == []
    assert again.labelled_voxels()["bone"] == 15


def test_corrupt_log_is_reported_not_dropped(tmp_path):
    """Damage inside the first record: the project opens with every other record, reports the damaged
    bytes, keeps a copy of them and never rewrites the log."""
    store = create_project(tmp_path / "p", _volume(), classes=CLASSES)
    for i in range(3):
        store.paint(SliceRef("z", i), np.arange(12), "bone")
    first_size = store._records[1][1]
    store.close()
    log = tmp_path / "p" / "edits.log"
    data = bytearray(log.read_bytes())
    data[40] ^= 0xFF  # damage inside the first record
    log.write_bytes(bytes(data))
    again = open_project(tmp_path / "p")
    assert [r.offset for r in again.log.damaged] == [0] and again.log.damaged[0].size == first_size
    assert sorted(again._records) == [2, 3]
    notes = again.problems_found_on_open()
    assert any("damaged bytes" in n and "byte 0" in n for n in notes), notes
    assert (tmp_path / "p" / "edits.log.damaged-0").read_bytes() == bytes(data[:first_size])
    assert log.read_bytes() == bytes(data), "a corrupt log must never be rewritten silently"
    again.paint(SliceRef("z", 5), np.arange(4), "implant")  # appending continues after the damage
    again.close()
    third = open_project(tmp_path / "p")
    assert sorted(third._records) == [2, 3, 4] and third.log.last_seq == 4


def test_missing_chunk_is_reported(tmp_path):
    store = create_project(tmp_path / "p", _volume((70, 20, 20)), classes=CLASSES)
    chunk = tmp_path / "p" / "data.zarr" / "labels" / "c" / "1" / "0" / "0"
    assert chunk.exists()
    chunk.unlink()
    problems = store.check()
    assert any("labels: 1 of 2 chunks are missing" in p for p in problems)


def test_two_processes_painting_the_same_chunk_lose_nothing(tmp_path):
    """The writer lock makes concurrent label writers safe (raw zarr loses updates here)."""
    create_project(tmp_path / "p", _volume((8, 32, 32)), classes=CLASSES).close()
    script = f"""
import sys, numpy as np
from al_annotator.store import open_project
from al_annotator.types import SliceRef
store = open_project({str(tmp_path / 'p')!r}, fsync=False)
offset = int(sys.argv[1])
for i in range(60):
    store.paint(SliceRef("z", 3), np.array([offset + 2 * i]), 1 + offset)
"""
    procs = [subprocess.Popen([sys.executable, "-c", script, str(k)]) for k in (0, 1)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    store = open_project(tmp_path / "p")
    flat = store.read_slice(SliceRef("z", 3), "labels").reshape(-1)
    assert (flat[0:120:2] == 1).all() and (flat[1:121:2] == 2).all()
    assert store.log.last_seq == 120
    assert store.check() == []


# ---------------------------------------------------------------------------- bad input table
def _bad_inputs(tmp_path):
    vol = _volume((6, 8, 8))
    nan = vol.astype(np.float32)
    nan[2, 3, 3] = np.nan
    inf = vol.astype(np.float32)
    inf[4, 0, 0] = np.inf
    wrong_labels = np.zeros(vol.shape, np.uint8)
    wrong_labels[1, 1, 1] = 9
    return [
        ("2d", dict(volume=np.zeros((8, 8))), InputError, "2D"),
        ("4d", dict(volume=np.zeros((2, 3, 8, 8))), InputError, "4D"),
        ("strings", dict(volume=np.full((2, 3, 4), "a")), InputError, "not numeric"),
        ("complex", dict(volume=np.zeros((2, 3, 4), complex)), InputError, "not numeric"),
        ("nan", dict(volume=nan), InputError, "NaN/inf.*first at z=2"),
        ("inf", dict(volume=inf), InputError, "NaN/inf.*first at z=4"),
        ("empty", dict(volume=np.zeros((0, 8, 8))), InputError, "empty"),
        ("labels outside classes", dict(volume=vol, labels=wrong_labels), LabelValueError, "values \\[9\\] outside 0..4"),
        ("labels wrong shape", dict(volume=vol, labels=np.zeros((6, 8, 9), np.uint8)), InputError, "must match"),
        ("missing file", dict(volume=str(tmp_path / "nope.tif")), InputError, "does not exist"),
        ("bad classes", dict(volume=vol, classes="bone"), InputError, "at least 2 classes"),
        ("bad spacing", dict(volume=vol, spacing="1,0,1"), InputError, "positive"),
    ]


BAD_IDS = [row[0] for row in _bad_inputs(__import__("pathlib").Path("/x"))]


@pytest.mark.parametrize("case", BAD_IDS)
def test_bad_input_names_the_problem_and_writes_nothing(tmp_path, case):
    row = {r[0]: r for r in _bad_inputs(tmp_path)}[case]
    _, kw, exc, pattern = row
    kw = dict(kw)
    kw.setdefault("classes", CLASSES)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(exc, match=pattern):
        create_project(tmp_path / "proj", kw.pop("volume"), **kw)
    assert sorted(os.listdir(tmp_path)) == before, "a failed create must leave nothing behind"


def test_existing_directory_is_never_overwritten(tmp_path):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "precious.txt").write_text("keep")
    with pytest.raises(ProjectExistsError, match="already exists"):
        create_project(tmp_path / "proj", _volume((4, 4, 4)), classes=CLASSES)
    assert (tmp_path / "proj" / "precious.txt").read_text() == "keep"
    assert sorted(os.listdir(tmp_path / "proj")) == ["precious.txt"]


def test_open_errors(tmp_path):
    with pytest.raises(ProjectNotFoundError, match="does not exist"):
        open_project(tmp_path / "nothing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ProjectNotFoundError, match="not an al_annotator project"):
        open_project(tmp_path / "plain")
