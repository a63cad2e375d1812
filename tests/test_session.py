"""Session: the core every front end drives."""

from __future__ import annotations

import numpy as np
import pytest

from al_annotator import Session
from al_annotator.errors import InputError
from al_annotator.store import create_project, open_project
from al_annotator.store.models import publish_version
from al_annotator.types import SliceRef

CLASSES = ("background", "bone", "implant", "degradation")


@pytest.fixture
def session(tmp_path):
    vol = np.random.default_rng(0).integers(0, 1000, (16, 24, 32)).astype(np.uint16)
    return Session(tmp_path / "p", volume=vol, classes=CLASSES, author="ana")


def test_session_creates_or_opens(tmp_path, session):
    assert (tmp_path / "p" / "project.json").exists()
    again = Session(tmp_path / "p")
    assert again.shape == (16, 24, 32) and again.classes == CLASSES


def test_goto_and_signals(session):
    seen = []
    session.slice_changed.connect(seen.append)
    session.goto("x", 5)
    session.goto(SliceRef("x", 5))  # no change, no signal
    session.goto("y", 2)
    assert seen == [SliceRef("x", 5), SliceRef("y", 2)]
    assert session.image().shape == (16, 32)
    with pytest.raises(IndexError):
        session.goto("z", 16)


def test_edit_is_on_disk_when_apply_returns(tmp_path, session):
    changed = []
    session.labels_changed.connect(changed.append)
    session.goto("y", 4)
    atom = session.paint(np.arange(10, 20), "implant")
    assert changed and changed[-1].seq == atom.seq
    # a separate reader (another process would see the same) finds it on disk
    other = open_project(tmp_path / "p")
    assert (other.read_slice(SliceRef("y", 4), "labels").reshape(-1)[10:20] == 3).all()
    session.undo()
    other.refresh()
    assert not open_project(tmp_path / "p").read_slice(SliceRef("y", 4), "labels").any()
    session.redo()
    assert (open_project(tmp_path / "p").read_slice(SliceRef("y", 4), "labels").reshape(-1)[10:20] == 3).all()


def test_eraser_and_flood_fill(session):
    session.goto("z", 3)
    h, w = session.labels().shape
    # a closed square outline of class 1; fill inside with class 2
    ring = np.zeros((h, w), bool)
    ring[5:15, 5:15] = True
    ring[6:14, 6:14] = False
    session.paint(np.flatnonzero(ring), "background")
    session.flood_fill(10, 10, "bone")
    lab = session.labels()
    assert (lab[6:14, 6:14] == 2).all() and (lab[ring] == 1).all() and lab[0, 0] == 0
    session.erase(np.flatnonzero(ring))
    assert not session.labels()[ring].any()
    with pytest.raises(InputError, match="outside"):
        session.flood_fill(100, 0, "bone")


def test_mark_annotated_is_persisted(tmp_path, session):
    states = []
    session.slice_state_changed.connect(states.append)
    session.goto("x", 7)
    session.paint(np.arange(3), "bone")
    session.mark_annotated()
    assert states[-1].state == "annotated" and states[-1].by == "ana"
    assert open_project(tmp_path / "p").slice_state(SliceRef("x", 7)).state == "annotated"


def _fake_version(session, version, refs_scores):
    """Publish a model version with scores, as the trainer would (without training)."""
    from al_annotator.acquisition.pool import SliceCandidates

    root = session.store.path
    d = root / "models" / f"v{version:04d}.partial"
    d.mkdir(parents=True)
    refs = [r for r, _ in refs_scores]
    cand = SliceCandidates(refs, {"entropy": np.array([s for _, s in refs_scores], np.float32)},
                           embeddings=np.eye(len(refs), 8, dtype=np.float32), model_version=version)
    np.savez(d / "scores.npz", **cand.to_arrays())
    publish_version(session.store, version, {"created": 0, "trained_on_seq": 0, "metrics": {}})


def test_queue_follows_new_scores_and_flags_stale(session):
    session.auto_rerank = False  # the manual policy: a new version marks the queue stale
    assert session.refresh_suggestions("entropy", n=3)  # cold start works without a model
    _fake_version(session, 1, [(SliceRef("z", i), s) for i, s in enumerate([0.1, 0.9, 0.5, 0.7])])
    versions = []
    session.model_version_changed.connect(versions.append)
    assert session.poll()["model"] and versions[-1]["version"] == 1
    queue = session.refresh_suggestions("entropy", n=2)
    assert [item.ref for item in queue] == [SliceRef("z", 1), SliceRef("z", 3)]
    assert all(item.suggestion.model_version == 1 and not item.stale for item in queue)
    # the next model version makes the queue stale until it is refreshed
    _fake_version(session, 2, [(SliceRef("z", i), s) for i, s in enumerate([0.8, 0.1, 0.2, 0.3])])
    session.poll()
    assert all(item.stale for item in session.queue)
    queue = session.refresh_suggestions("entropy", n=2)
    assert [item.ref for item in queue] == [SliceRef("z", 0), SliceRef("z", 3)] and not queue[0].stale
    # next goes to the top suggestion; annotating it removes it; skip drops one
    assert session.next_suggestion().ref == SliceRef("z", 0) and session.current == SliceRef("z", 0)
    session.paint(np.arange(4), "bone")
    session.mark_annotated()
    assert [item.ref for item in session.queue] == [SliceRef("z", 3)]
    session.skip(SliceRef("z", 3))
    assert session.queue == []
    assert SliceRef("z", 0) not in [i.ref for i in session.refresh_suggestions("entropy", n=4)]
    assert SliceRef("z", 3) not in [i.ref for i in session.refresh_suggestions("entropy", n=4)]


def test_the_default_policy_reranks_on_a_new_version_and_after_annotated(session):
    assert session.auto_rerank
    session.refresh_suggestions("entropy", n=2)
    _fake_version(session, 1, [(SliceRef("z", i), s) for i, s in enumerate([0.1, 0.9, 0.5, 0.7])])
    queues = []
    session.suggestions_changed.connect(queues.append)
    session.poll()
    assert [item.ref for item in session.queue] == [SliceRef("z", 1), SliceRef("z", 3)]
    assert queues and not any(item.stale for item in session.queue)
    session.goto(SliceRef("z", 1))
    session.paint(np.arange(4), "bone")
    session.mark_annotated()  # re-ranked at once: the annotated slice is out, the next one in
    assert [item.ref for item in session.queue] == [SliceRef("z", 3), SliceRef("z", 2)]


def test_poll_sees_edits_of_another_process(tmp_path, session):
    seen = []
    session.labels_changed.connect(seen.append)
    other = open_project(tmp_path / "p", author="ben")
    other.paint(SliceRef("z", 9), np.arange(5), "bone")
    assert session.poll()["labels"]
    assert seen[-1] == [SliceRef("z", 9)]
    assert (session.labels(SliceRef("z", 9)).reshape(-1)[:5] == 2).all()


def test_accept_prediction_needs_a_model(session):
    with pytest.raises(InputError, match="no prediction yet"):
        session.accept_prediction(np.arange(3))


def test_in_memory_session():
    s = Session(create_project(None, np.zeros((4, 8, 8), np.uint8), classes="a,b"))
    s.paint(np.arange(4), "b")
    assert int(s.labels().sum()) == 8
    assert s.trainer_status().alive is False and "in-memory" in s.trainer_status().summary()


def test_palette_edits_are_saved_and_reach_another_session(tmp_path):
    from al_annotator.errors import InputError
    from al_annotator.store import create_project

    create_project(tmp_path / "p", np.zeros((4, 16, 16), np.uint8), classes="background,bone,implant")
    a, b = Session(tmp_path / "p"), Session(tmp_path / "p")
    a.paint(np.arange(10), "bone")
    seen = []
    b.classes_changed.connect(seen.append)
    a.set_class_colour("bone", "#00FF00")
    a.rename_class(2, "cortical bone")
    # a bad edit is refused whole and changes nothing
    with pytest.raises(InputError, match="unique"):
        a.rename_class(3, "cortical bone")
    with pytest.raises(InputError, match="outside"):
        a.set_class_colour(7, "#123456")
    with pytest.raises(InputError, match="rrggbb"):
        a.set_class_colour(3, "red")
    assert b.poll().get("classes") and seen
    assert seen[-1][1] == {"value": 2, "name": "cortical bone", "colour": "#00ff00"}
    reopened = Session(tmp_path / "p")
    assert reopened.classes == ("background", "cortical bone", "implant")
    assert reopened.store.config.colours[1] == "#00ff00"
    # the labels kept their value: the painted voxels are still class 2
    assert int((reopened.labels(SliceRef("z", 2)) == 2).sum()) == 10
    assert not b.poll().get("classes")


# ---------------------------------------------------------------------- the one door
def _fake_outputs(session, version, value):
    grp = session.store.root.require_group(f"models/v{version:04d}")
    shape = session.shape
    grp.create_array("prediction", shape=shape, dtype=np.uint8, chunks=(8, 8, 8), overwrite=True)[...] = value
    grp.create_array("confidence", shape=shape, dtype=np.uint8, chunks=(8, 8, 8), overwrite=True)[...] = 204


def test_volume_facts_and_planes_on_every_axis_and_level(session):
    facts = session.volume
    assert facts.shape == (16, 24, 32) and facts.dtype == np.uint16 and facts.persistent and facts.name == "p"
    assert facts.display_window[0] < facts.display_window[1] and facts.spacing == (1.0, 1.0, 1.0)
    assert facts.chunks_in("z") == 1
    for axis, shape in (("z", (24, 32)), ("y", (16, 32)), ("x", (16, 24))):
        ref = SliceRef(axis, 3)
        np.testing.assert_array_equal(session.plane("image", ref), session.store.read_slice(ref, "image"))
        assert session.plane("image", ref, level=1).shape == tuple((n + 1) // 2 for n in shape)
        assert session.plane("prediction", ref) is None and session.plane("uncertainty", ref) is None
    with pytest.raises(InputError, match="what must be"):
        session.plane("bogus")
    with pytest.raises(TypeError, match="read-only"):
        session.labels_array[0, 0, 0] = 1
    assert session.image_array.shape == facts.shape and session.image_array[2].shape == (24, 32)


def test_label_planes_carry_the_log_position(session):
    ref = SliceRef("y", 4)
    plane, seq = session.label_plane(ref)
    assert seq == 0 and not plane.any()
    session.paint(np.arange(5), "bone", ref=ref)
    plane, seq = session.label_plane(ref)
    assert seq == session.labels_seq == 1 and plane.reshape(-1)[:5].tolist() == [2] * 5
    assert session.can_undo and not session.can_redo
    session.undo()
    assert not session.can_undo and session.can_redo and session.labels_seq == 2


def test_model_outputs_history_and_pins(session):
    from al_annotator.store.models import pinned_versions

    assert session.model_outputs() is None and session.history() == []
    _fake_outputs(session, 1, 3)
    _fake_version(session, 1, [(SliceRef("z", 0), 0.5)])
    session.poll()
    out = session.model_outputs()
    assert out.version == 1 and out.prediction[0, 0, 0] == 3 and out.probabilities is None
    assert [v["version"] for v in session.history()] == [1]
    assert float(session.plane("uncertainty")[0, 0]) == pytest.approx(0.2)
    assert pinned_versions(session.store) == {1}  # shown here: a trainer's pruning keeps it
    for v in (2, 3, 4):  # keep=3 would drop v1's outputs, but v1 is pinned by this session
        _fake_outputs(session, v, v)
        _fake_version(session, v, [(SliceRef("z", 0), 0.5)])
    assert "models/v0001/prediction" in session.store.root
    session.close()
    assert pinned_versions(open_project(session.store.path)) == set()


def test_read_only_session(tmp_path, session):
    session.paint(np.arange(3), "bone")
    viewer = Session.open(tmp_path / "p", read_only=True)
    assert viewer.read_only and not viewer.can_undo
    assert viewer.labels().reshape(-1)[:3].tolist() == [2, 2, 2]
    with pytest.raises(InputError, match="read-only"):
        viewer.paint(np.arange(2), "bone")
    session.paint(np.arange(3, 6), "implant")
    assert viewer.poll()["labels"] and viewer.labels().reshape(-1)[3:6].tolist() == [3, 3, 3]


def test_trainer_status_is_typed_and_phrased_once(tmp_path, session):
    import json

    from al_annotator.core import TrainerStatus

    assert session.trainer_status().state == "not started" and not session.trainer_status().running
    (tmp_path / "p" / "trainer").mkdir()
    (tmp_path / "p" / "trainer" / "status.json").write_text(json.dumps(
        {"state": "training", "round": 2, "step": 7, "loss": float("nan"), "n_val": 0, "heartbeat": 0, "pid": 1, "host": "elsewhere"}))
    st = session.trainer_status()
    assert isinstance(st, TrainerStatus) and st.loss is None and st.stalled
    assert st.summary().startswith("training (not running) · round 2 · step 7 · val Dice: none yet")
    assert json.loads(json.dumps(st.to_json(), allow_nan=False))["summary"] == st.summary()
    assert TrainerStatus.from_json({"state": "failed", "error": "RuntimeError: boom"}).summary() == "failed · error: RuntimeError: boom"
    assert "hybrid" in Session.strategies()


# ---------------------------------------------------------------------------- the one door, more
def test_create_in_memory_or_on_disk_and_refuse_an_existing_project(tmp_path):
    vol = np.zeros((4, 8, 8), np.uint8)
    mem = Session.create(None, vol, classes="a,b")
    assert mem.volume.path is None and not mem.volume.persistent and mem.n_classes == 2 and mem.history() == []
    disk = Session.create(tmp_path / "q", vol, classes="a,b,c")
    assert disk.volume.persistent and disk.classes == ("a", "b", "c") and len(disk.colours) == 3
    with pytest.raises(InputError, match="Session.open"):
        Session.create(tmp_path / "q", vol)
    with pytest.raises(InputError, match="volume="):
        Session(None)


def test_class_values_by_name_or_number_and_clear_errors(session):
    assert session.class_value("bone") == 2 and session.class_value(0) == 0 and session.class_value(4) == 4
    with pytest.raises(InputError, match="outside 0..4 .*1=background"):
        session.class_value(5)
    with pytest.raises(InputError, match="bogus"):
        session.class_value("bogus")


def test_default_colours_are_visible_on_grey(session):
    """A class colour near the grey axis vanishes on grey CT (the background class was #7f7f7f)."""
    from al_annotator.config import DEFAULT_COLOURS

    for colour in DEFAULT_COLOURS:
        rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
        assert max(rgb) - min(rgb) >= 60, colour
    assert session.class_table()[0]["colour"] != "#7f7f7f"


def test_a_slice_annotated_elsewhere_reranks_this_queue(tmp_path, session):
    """The policy of mark_annotated holds for a commit made in another process too."""
    _fake_version(session, 1, [(SliceRef("z", i), s) for i, s in enumerate([0.1, 0.9, 0.5, 0.7])])
    session.poll()
    session.refresh_suggestions("entropy", n=2)
    assert [i.ref for i in session.queue] == [SliceRef("z", 1), SliceRef("z", 3)]
    labels_seen, states_seen = [], []
    session.labels_changed.connect(labels_seen.append)
    session.slice_state_changed.connect(states_seen.append)
    other = Session.open(tmp_path / "p", author="ben")
    other.goto(SliceRef("z", 1))
    other.paint(np.arange(4), "bone")
    other.mark_annotated()
    changed = session.poll()
    assert changed["labels"] and changed["states"]
    assert labels_seen == [[SliceRef("z", 1)]]  # a state record is not a labels change
    assert [(s.ref, s.state) for s in states_seen][-1] == (SliceRef("z", 1), "annotated")
    assert [i.ref for i in session.queue] == [SliceRef("z", 3), SliceRef("z", 2)]


def test_without_auto_rerank_a_slice_annotated_elsewhere_only_leaves_the_queue(tmp_path, session):
    _fake_version(session, 1, [(SliceRef("z", i), s) for i, s in enumerate([0.1, 0.9, 0.5, 0.7])])
    session.poll()
    session.auto_rerank = False
    session.refresh_suggestions("entropy", n=3)
    other = Session.open(tmp_path / "p", author="ben")
    other.mark_annotated(SliceRef("z", 3))
    session.poll()
    assert [i.ref for i in session.queue] == [SliceRef("z", 1), SliceRef("z", 2)]
    _fake_version(session, 2, [(SliceRef("z", i), s) for i, s in enumerate([0.9, 0.1, 0.5, 0.7])])
    session.poll()
    assert all(session.is_stale(i) and i.stale for i in session.queue)


def test_next_suggestion_skips_annotated_and_skipped_slices(session):
    _fake_version(session, 1, [(SliceRef("z", i), s) for i, s in enumerate([0.1, 0.9, 0.5, 0.7])])
    session.poll()
    session.refresh_suggestions("entropy", n=3)
    session.skip(SliceRef("z", 1))
    assert session.next_suggestion().ref == SliceRef("z", 3)
    session.mark_annotated()
    assert session.next_suggestion().ref == SliceRef("z", 2)
    assert SliceRef("z", 1) not in [i.ref for i in session.refresh_suggestions(n=4)]  # skipped stays out


def test_undo_redo_availability_follows_this_session_only(tmp_path, session):
    other = Session.open(tmp_path / "p", author="ana")  # same user, another session
    other.paint(np.arange(3), "bone")
    session.poll()
    assert not session.can_undo and other.can_undo  # an undo never reverts another session's stroke
    session.paint(np.arange(3, 6), "implant")
    assert session.can_undo
    assert session.undo() is not None and session.can_redo
    assert session.redo() is not None and not session.can_redo
    assert session.labels().reshape(-1)[:6].tolist() == [2, 2, 2, 3, 3, 3]


def test_palette_poll_reports_classes_and_updates_the_table(tmp_path, session):
    tables = []
    session.classes_changed.connect(tables.append)
    other = Session.open(tmp_path / "p", author="ben")
    other.set_class_colour("implant", "#112233")
    assert session.poll().get("classes")
    assert session.class_table()[2] == {"value": 3, "name": "implant", "colour": "#112233"}
    assert tables and tables[-1] == session.class_table()
    assert not session.poll().get("classes")  # once
