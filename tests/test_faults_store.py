"""Fault classes of the project store, kept in the suite so they stay fixed: a full disk, a writer
killed between its log and labels writes while another process has the project open, damaged
bytes in every project file, symbolic links, bad edits, and undo with several authors and sessions."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pytest

from al_annotator.errors import AlAnnotatorError, DiskFullError, InputError, LabelValueError, StoreIntegrityError
from al_annotator.store import create_project, open_project
from al_annotator.store import editlog as editlog_mod
from al_annotator.store.editlog import encode_record
from al_annotator.types import EditAtom, SliceRef

CLASSES = "background,bone,implant,degradation"
SHAPE = (12, 20, 24)


def _volume() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 1000, SHAPE).astype(np.uint16)


def _project(tmp_path, name="p"):
    return create_project(tmp_path / name, _volume(), classes=CLASSES, chunks=(8, 8, 8))


def _labels(store) -> np.ndarray:
    return np.asarray(store.labels[...])


def _assert_consistent(path) -> None:
    """Reopen (no --repair): the labels are exactly the replayed log and the counts match them."""
    store = open_project(path)
    labels = _labels(store)
    np.testing.assert_array_equal(labels, store.replay())
    counts = np.bincount(labels.reshape(-1), minlength=5)[1:5].tolist()
    assert list(store.labelled_voxels().values()) == counts
    assert store.check() == []
    store.close()


# ---------------------------------------------------------------------- disk full
class TestDiskFull:
    @pytest.mark.parametrize("fault", ["enospc", "short", "fsync"])
    def test_a_failed_log_write_leaves_no_garbage(self, tmp_path, monkeypatch, fault):
        store = _project(tmp_path)
        store.paint(SliceRef("z", 1), np.arange(30), "bone")
        size, seq = (tmp_path / "p" / "edits.log").stat().st_size, store.log.last_seq
        real_write, real_fsync = os.write, os.fsync

        def bad_write(fd, blob):
            if fault == "enospc":
                real_write(fd, blob[: len(blob) // 3])  # part of it reaches the disk, then ENOSPC
                raise OSError(errno.ENOSPC, "No space left on device")
            if fault == "short":
                return real_write(fd, blob[: len(blob) // 2])
            return real_write(fd, blob)

        def bad_fsync(fd):
            if fault == "fsync":
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_fsync(fd)

        monkeypatch.setattr(editlog_mod.os, "write", bad_write)
        monkeypatch.setattr(editlog_mod.os, "fsync", bad_fsync)
        with pytest.raises(DiskFullError, match="not saved.*Free space"):
            store.paint(SliceRef("z", 2), np.arange(40), "implant")
        monkeypatch.undo()
        assert (tmp_path / "p" / "edits.log").stat().st_size == size and store.log.last_seq == seq
        store.paint(SliceRef("z", 3), np.arange(10), "implant")  # space again: the next stroke lands cleanly
        store.close()
        again = open_project(tmp_path / "p")
        assert again.torn_tail is None and not again.log.damaged and again.log.last_seq == seq + 1
        again.close()
        _assert_consistent(tmp_path / "p")

    def test_a_failed_labels_write_rolls_the_edit_back(self, tmp_path, monkeypatch):
        store = _project(tmp_path)
        store.paint(SliceRef("y", 4), np.arange(50), "bone")
        before, seq = _labels(store), store.log.last_seq
        real = type(store.labels).__setitem__
        calls = {"n": 0}

        def failing(arr, sel, value):
            calls["n"] += 1
            if calls["n"] == 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(arr, sel, value)

        monkeypatch.setattr(type(store.labels), "__setitem__", failing)
        with pytest.raises(DiskFullError, match="this edit was not saved"):
            store.paint(SliceRef("y", 4), np.arange(20, 90), "degradation")
        monkeypatch.undo()
        assert store.log.last_seq == seq
        np.testing.assert_array_equal(_labels(store), before)
        store.close()
        _assert_consistent(tmp_path / "p")

    def test_labels_that_cannot_be_put_back_are_rewritten_from_the_kept_record(self, tmp_path, monkeypatch):
        store = _project(tmp_path)
        monkeypatch.setattr(type(store.labels), "__setitem__", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
        monkeypatch.setattr(editlog_mod.EditLog, "drop_last", lambda self, rec: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
        with pytest.raises(DiskFullError, match="saved in the edit log"):
            store.paint(SliceRef("x", 2), np.arange(25), "bone")
        monkeypatch.undo()
        assert store.log.last_seq == 1 and not _labels(store).any()
        store.paint(SliceRef("x", 5), np.arange(5), "implant")  # the next edit first rewrites the kept one
        assert (store.read_slice(SliceRef("x", 2), "labels").reshape(-1)[:25] == 2).all()
        store.close()
        _assert_consistent(tmp_path / "p")

    def test_a_real_full_file_system(self, tmp_path):
        """A 1.5 MiB tmpfs filled by strokes: every acknowledged stroke survives, nothing is corrupt."""
        mnt = tmp_path / "small"
        mnt.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(mnt)], capture_output=True).returncode:
            pytest.skip("cannot mount a tmpfs here (needs root); the injected-ENOSPC tests cover the same paths")
        try:
            import shutil

            create_project(tmp_path / "src", np.zeros((8, 64, 64), np.uint8), classes=CLASSES, chunks=(8, 64, 64)).close()
            shutil.copytree(tmp_path / "src", mnt / "p")  # (create_project itself refuses a disk this small)
            store = open_project(mnt / "p")
            rng = np.random.default_rng(3)
            acked, failures = [], 0
            for k in range(4000):
                ref = SliceRef("z", int(rng.integers(8)))
                idx = np.unique(rng.integers(0, 64 * 64, 400))
                try:
                    atom = store.paint(ref, idx, int(rng.integers(1, 5)), tool=f"s{k}")
                    acked.append((atom.seq, k))
                except DiskFullError:
                    failures += 1
                    if failures >= 5:
                        break
            assert failures, "the file system never filled up"
            store.close()
            try:  # still full: opening works or says why not, and loses nothing
                open_project(mnt / "p").close()
            except DiskFullError as exc:
                assert "Nothing is lost" in str(exc)
            subprocess.run(["mount", "-o", "remount,size=8m", str(mnt)], check=True)  # space is freed
            again = open_project(mnt / "p")
            tools = {r.seq: r.meta["tool"] for r in again.log.read_all().records}
            assert all(tools.get(seq) == f"s{k}" for seq, k in acked), "an acknowledged stroke was lost"
            assert not again.log.damaged and again.quarantined == []
            np.testing.assert_array_equal(_labels(again), again.replay())
            again.close()
        finally:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# ---------------------------------------------------------------------- two writers, one killed
KILLED_WRITER = """
import os, sys
import numpy as np
from al_annotator.store import open_project
from al_annotator.store.project import ProjectStore
from al_annotator.types import SliceRef
store = open_project({path!r}, author="killed")
# die exactly between the fsync'ed log write and the labels write
ProjectStore._write_values = lambda *a, **k: os._exit(9)
store.paint(SliceRef("z", 3), np.arange(0, 200), 2)
"""


def test_a_writer_killed_between_log_and_labels_while_another_has_the_project_open(tmp_path):
    path = tmp_path / "p"
    other = _project(tmp_path)  # the second writer: open the whole time
    other.paint(SliceRef("z", 3), np.arange(150, 260), 4)
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER.format(path=str(path))], capture_output=True, timeout=120)
    assert proc.returncode == 9, proc.stderr.decode()[-2000:]
    # the survivor catches up and paints over part of the dead writer's stroke
    other.paint(SliceRef("z", 3), np.arange(190, 210), 1)
    flat = other.read_slice(SliceRef("z", 3), "labels").reshape(-1)
    assert (flat[:190] == 2).all() and (flat[190:210] == 1).all() and (flat[210:260] == 4).all()
    np.testing.assert_array_equal(_labels(other), other.replay())
    assert list(other.labelled_voxels().values()) == np.bincount(_labels(other).reshape(-1), minlength=5)[1:5].tolist()
    other.close()
    _assert_consistent(path)


# ---------------------------------------------------------------------- damaged bytes
def test_a_damaged_last_record_is_kept_and_reported_not_truncated(tmp_path):
    store = _project(tmp_path)
    store.paint(SliceRef("z", 1), np.arange(10), "bone")
    store.paint(SliceRef("z", 2), np.arange(10), "implant")
    offset, size = store._records[2]
    store.close()
    log = tmp_path / "p" / "edits.log"
    data = bytearray(log.read_bytes())
    data[offset + size - 3] ^= 0x10  # one flipped bit in the last complete record
    log.write_bytes(bytes(data))
    again = open_project(tmp_path / "p")
    assert again.torn_tail is None, "a full-length record with a bad checksum is damage, not a torn write"
    assert [(r.offset, r.size) for r in again.log.damaged] == [(offset, size)]
    assert log.read_bytes() == bytes(data)
    assert (tmp_path / "p" / f"edits.log.damaged-{offset}").read_bytes() == bytes(data[offset:])
    assert again.info()["problems_found_on_open"]
    # the labels hold that stroke; check reports it, and --repair keeps what it replaces
    problems = again.check(repair=True)
    assert any("differ" in p and "kept in" in p for p in problems), problems
    assert (tmp_path / "p" / "labels.before-repair.npz").exists()
    again.close()


def test_a_record_with_only_its_length_damaged_is_recovered(tmp_path):
    store = _project(tmp_path)
    store.paint(SliceRef("z", 1), np.arange(10), "bone")
    store.paint(SliceRef("z", 2), np.arange(10), "implant")
    offset, _ = store._records[1]
    store.close()
    log = tmp_path / "p" / "edits.log"
    data = bytearray(log.read_bytes())
    data[offset + 5] ^= 0x01  # the payload length field of record 1
    log.write_bytes(bytes(data))
    again = open_project(tmp_path / "p")
    assert sorted(again._records) == [1, 2] and not again.log.damaged
    again.close()


def test_a_bad_record_that_passed_its_checksum_is_quarantined(tmp_path):
    store = _project(tmp_path)
    store.paint(SliceRef("z", 1), np.arange(10), "bone")
    store.close()
    log = tmp_path / "p" / "edits.log"
    meta = {"type": "edit", "axis": "z", "index": 1, "author": "x", "time": 1.0, "tool": "brush"}
    bad = encode_record(2, meta, {"idx": np.arange(6, dtype=np.uint32), "old": np.zeros(6, np.uint8),
                                  "new": np.ones((2, 3), np.uint8)})  # what a 2-D new_values used to log
    with open(log, "ab") as fh:
        fh.write(bad)
    again = open_project(tmp_path / "p")  # opens: the record is skipped and reported
    assert [q[0] for q in again.quarantined] == [2]
    assert any("record 2" in n for n in again.problems_found_on_open())
    again.paint(SliceRef("z", 2), np.arange(4), "implant")
    assert again.check() == []
    again.close()
    _assert_consistent(tmp_path / "p")


def _flip(path, pos) -> None:
    data = bytearray(path.read_bytes())
    if not data:
        return
    data[pos % len(data)] ^= 0x5A
    path.write_bytes(bytes(data))


def _project_files(root):
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".") and ".partial" not in p.name)


@pytest.fixture(scope="module")
def painted_project(tmp_path_factory):
    base = tmp_path_factory.mktemp("bitflip") / "p"
    store = create_project(base, _volume(), classes=CLASSES, chunks=(8, 8, 8), labels=np.zeros(SHAPE, np.uint8))
    rng = np.random.default_rng(5)
    for _ in range(12):
        ref = SliceRef("zyx"[int(rng.integers(3))], 1)
        store.paint(ref, np.unique(rng.integers(0, 200, 60)), int(rng.integers(1, 5)))
    store.set_slice_state(SliceRef("z", 1), "annotated")
    store.close()
    return base


def test_a_flipped_byte_in_any_project_file_gives_a_named_error_or_a_consistent_project(painted_project, tmp_path):
    """Each file of the project (JSON documents, zarr metadata, image and label chunks, the log), a
    byte flipped at three places: opening, info, reading every slice and check either work or raise
    an al_annotator error naming the problem; the edit log is never rewritten."""
    import shutil

    files = [p.relative_to(painted_project) for p in _project_files(painted_project)]
    assert any(f.name == "edits.log" for f in files) and any("labels" in f.parts for f in files)
    tried = 0
    for rel in files:
        for pos in (0, 7, -5):
            case = tmp_path / f"c{tried}"
            shutil.copytree(painted_project, case)
            _flip(case / rel, pos)
            log_before = (case / "edits.log").read_bytes()
            try:
                store = open_project(case)
                store.info()
                for axis in "zyx":
                    for i in range(0, SHAPE["zyx".index(axis)], 5):
                        store.read_slice(SliceRef(axis, i), "labels")
                store.check()
                store.paint(SliceRef("z", 0), np.arange(3), "bone")
                store.close()
            except AlAnnotatorError as exc:
                assert str(exc), rel
            assert (case / "edits.log").read_bytes()[: len(log_before)] == log_before, f"{rel}: the log was rewritten"
            shutil.rmtree(case)
            tried += 1
    assert tried == 3 * len(files)


def test_damaged_state_json_is_rebuilt_from_the_log(tmp_path):
    store = _project(tmp_path)
    store.paint(SliceRef("z", 1), np.arange(10), "bone")
    store.set_slice_state(SliceRef("z", 1), "annotated")
    store.close()
    (tmp_path / "p" / "state.json").write_text('{"applied_seq": 2, "counts": [1, 2')
    again = open_project(tmp_path / "p")
    assert any("state.json was damaged" in r for r in again.repairs)
    assert again.labelled_voxels()["bone"] == 10 and again.slice_state(SliceRef("z", 1)).state == "annotated"
    again.close()
    _assert_consistent(tmp_path / "p")


def test_damaged_project_json_is_restored_from_its_backup_or_named(tmp_path):
    store = _project(tmp_path)
    store.edit_classes(names={2: "cortical bone"})
    store.close()
    (tmp_path / "p" / "project.json").write_text("{not json")
    again = open_project(tmp_path / "p")
    assert again.config.classes[1] == "cortical bone" and again.repairs
    again.close()
    (tmp_path / "p" / "project.json").write_text("[]")
    (tmp_path / "p" / "project.json.bak").write_text("")
    with pytest.raises(StoreIntegrityError, match="project.json is damaged.*restore it from a backup"):
        open_project(tmp_path / "p")


def test_a_damaged_label_chunk_is_named_and_repaired_from_the_log(tmp_path):
    store = _project(tmp_path)
    store.paint(SliceRef("z", 1), np.arange(30), "bone")
    store.close()
    chunk = tmp_path / "p" / "data.zarr" / "labels" / "c" / "0" / "0" / "0"
    chunk.write_bytes(b"garbage" + chunk.read_bytes()[7:])
    again = open_project(tmp_path / "p")
    with pytest.raises(StoreIntegrityError, match="labels at z=1 cannot be read.*check .* --repair"):
        again.read_slice(SliceRef("z", 1), "labels")
    with pytest.raises(StoreIntegrityError):  # a stroke there is refused before it reaches the log
        again.paint(SliceRef("z", 1), np.arange(3), "implant")
    assert again.log.last_seq == 1
    problems = again.check(repair=True)
    assert any("cannot be read" in p for p in problems)
    assert (again.read_slice(SliceRef("z", 1), "labels").reshape(-1)[:30] == 2).all()
    again.close()
    _assert_consistent(tmp_path / "p")


# ---------------------------------------------------------------------- symbolic links
def test_symbolic_links_in_a_project_are_refused_and_never_followed(tmp_path):
    store = _project(tmp_path)
    store.paint(SliceRef("z", 1), np.arange(10), "bone")
    store.close()
    proj = tmp_path / "p"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    log = proj / "edits.log"
    log.rename(tmp_path / "real.log")
    log.symlink_to(victim)
    with pytest.raises(StoreIntegrityError, match="edits.log is a symbolic link"):
        open_project(proj)
    assert victim.read_text() == "precious"
    log.unlink()
    (tmp_path / "real.log").rename(log)
    for name in ("edits.log.torn", ".lock"):
        target = tmp_path / f"created-by-{name}"
        (proj / name).unlink(missing_ok=True)
        (proj / name).symlink_to(target)  # dangling
        with pytest.raises(StoreIntegrityError, match="symbolic link"):
            open_project(proj)
        assert not target.exists()
        (proj / name).unlink()
    # keep_aside never writes through a dangling link of the name it picks
    target = tmp_path / "aside-target"
    (proj / "edits.log.damaged-0").symlink_to(target)
    again = open_project(proj)
    where = again.backend.keep_aside("edits.log.damaged-0", b"x")
    assert not target.exists() and where.endswith(".1")
    again.close()
    # the project directory itself may be a link (users link projects into place)
    (tmp_path / "alias").symlink_to(proj)
    open_project(tmp_path / "alias").close()


# ---------------------------------------------------------------------- bad edits
@pytest.mark.parametrize(
    "atom_kw, error",
    [
        ({"indices": np.arange(6), "new_values": np.ones((2, 3), np.uint8)}, "flat array"),
        ({"indices": np.arange(6), "new_values": np.array([300])}, "0 \\(unlabelled\\) or 1..4"),
        ({"indices": np.arange(6), "new_values": np.array([-1])}, "0 \\(unlabelled\\) or 1..4"),
        ({"indices": np.arange(6), "new_values": np.array([1.5])}, "integers"),
        ({"indices": np.arange(6.0), "new_values": np.array([1])}, "indices must be integers"),
        ({"indices": np.arange(6), "new_values": np.array([1]), "meta": {"undo_of": 99}}, "undo_of"),
        ({"indices": np.arange(6), "new_values": np.array([1]), "meta": {"redo_of": "x"}}, "undo_of/redo_of"),
        ({"indices": np.arange(6), "new_values": np.array([1]), "author": 5}, "author"),
        ({"indices": np.arange(6), "new_values": np.array([1]), "time": float("inf")}, "finite"),
        ({"indices": np.arange(6), "new_values": np.array([1]), "meta": {"note": {"a": 1}}}, "note"),
    ],
)
def test_bad_edits_are_refused_before_the_log(tmp_path, atom_kw, error):
    store = _project(tmp_path)
    size = (tmp_path / "p" / "edits.log").stat().st_size if (tmp_path / "p" / "edits.log").exists() else 0
    with pytest.raises((InputError, LabelValueError), match=error):
        store.apply_edit(EditAtom(SliceRef("z", 1), **atom_kw))
    assert store.log.last_seq == 0
    assert ((tmp_path / "p" / "edits.log").stat().st_size if (tmp_path / "p" / "edits.log").exists() else 0) == size
    store.close()
    open_project(tmp_path / "p").close()  # and the project still opens


@pytest.mark.parametrize("value", [256, 300, -1, 10**12])
def test_out_of_range_label_values_in_paint_are_a_clear_error(tmp_path, value):
    store = _project(tmp_path)
    with pytest.raises(LabelValueError, match="label values must be"):
        store.paint(SliceRef("z", 1), np.arange(3), value)
    assert store.log.last_seq == 0


def test_an_undo_that_empties_a_chunk_leaves_no_chunk_missing(tmp_path):
    for _ in range(5):
        store = create_project(tmp_path / uuid.uuid4().hex, _volume(), classes=CLASSES, chunks=(8, 8, 8))
        store.close()
        store = open_project(store.path)
        store.paint(SliceRef("z", 0), np.arange(5), "bone")
        store.undo()
        assert store.missing_chunks() == []
        store.close()


# ---------------------------------------------------------------------- undo
def test_undo_never_clobbers_another_authors_later_stroke(tmp_path):
    path = tmp_path / "p"
    _project(tmp_path).close()
    ana, ben = open_project(path, author="ana"), open_project(path, author="ben")
    ref = SliceRef("z", 4)
    ana.paint(ref, np.arange(0, 100), "bone")
    ben.paint(ref, np.arange(50, 150), "implant")  # over half of ana's stroke
    atom = ana.undo()
    assert atom.indices.size == 50  # only the voxels that still hold ana's value
    flat = ana.read_slice(ref, "labels").reshape(-1)
    assert (flat[:50] == 0).all() and (flat[50:150] == 3).all()
    ana.redo()
    flat = ana.read_slice(ref, "labels").reshape(-1)
    assert (flat[:50] == 2).all() and (flat[50:150] == 3).all()
    ana.close(), ben.close()
    _assert_consistent(path)


def test_two_sessions_of_one_author_have_their_own_undo(tmp_path):
    path = tmp_path / "p"
    _project(tmp_path).close()
    one, two = open_project(path, author="sam"), open_project(path, author="sam")
    one.paint(SliceRef("z", 1), np.arange(10), "bone")
    two.paint(SliceRef("z", 2), np.arange(10), "implant")
    one.undo()
    assert not one.read_slice(SliceRef("z", 1), "labels").any()
    assert (two.read_slice(SliceRef("z", 2), "labels").reshape(-1)[:10] == 3).all(), "session one undid session two's stroke"
    assert one.undo() is None and two.can_undo()
    one.close(), two.close()


def test_many_undos_by_several_authors_only_revert_their_own_voxels(tmp_path):
    """The fault-injection run: 161 undos by interleaved authors overwrote 263 voxels of others."""
    path = tmp_path / "p"
    _project(tmp_path).close()
    stores = [open_project(path, author=a) for a in ("ana", "ben", "cy")]
    rng = np.random.default_rng(11)
    undos = 0
    for _ in range(200):
        s = stores[int(rng.integers(3))]
        if rng.random() < 0.35 and s.can_undo():
            s.refresh()
            snap = _labels(s)
            atom = s.undo()
            undos += 1
            ref = atom.slice_ref
            undone = s._read_record(s._read_record(atom.seq).meta["undo_of"])
            wrote = dict(zip(undone.arrays["idx"].tolist(), np.broadcast_to(undone.arrays["new"], undone.arrays["idx"].shape).tolist()))
            before = snap[ref.selection()].reshape(-1)
            after = _labels(s)[ref.selection()].reshape(-1)
            # only voxels that still held what the undone stroke wrote were reverted
            assert all(before[i] == wrote[i] for i in atom.indices.tolist())
            assert set(np.flatnonzero(before != after).tolist()) <= set(atom.indices.tolist())
            outside = np.ones(snap.shape, bool)
            outside[ref.selection()] = False
            assert (snap[outside] == _labels(s)[outside]).all()
        else:
            ref = SliceRef("z", int(rng.integers(3)))
            s.paint(ref, np.unique(rng.integers(0, 480, 80)), int(rng.integers(1, 5)))
    assert undos > 30
    for s in stores:
        s.close()
    _assert_consistent(path)


def test_replayed_undo_stacks_survive_bogus_undo_of(tmp_path):
    store = _project(tmp_path)
    store.paint(SliceRef("z", 1), np.arange(10), "bone")
    session = store.session
    store.close()
    meta = {"type": "edit", "axis": "z", "index": 1, "author": store.author, "time": 1.0, "tool": "undo",
            "session": session, "undo_of": "not-a-seq"}
    with open(tmp_path / "p" / "edits.log", "ab") as fh:
        fh.write(encode_record(2, meta, {"idx": np.arange(2, dtype=np.uint32), "old": np.ones(2, np.uint8) * 2,
                                         "new": np.zeros(1, np.uint8)}))
    again = open_project(tmp_path / "p", session=session)
    assert [q[0] for q in again.quarantined] == [2]
    assert again.undo() is not None and again.redo() is not None  # stacks still work
    again.close()


@pytest.mark.parametrize("value", [256, -1, 2.5])
def test_session_paint_with_an_out_of_range_value_is_a_label_error(tmp_path, value):
    from al_annotator.core import Session

    session = Session(_project(tmp_path))
    with pytest.raises(LabelValueError, match="label values must be"):
        session.paint(np.arange(3), value)
    assert session.store.log.last_seq == 0


def test_a_read_only_store_writes_nothing(tmp_path):
    store = _project(tmp_path)
    store.paint(SliceRef("z", 1), np.arange(10), "bone")
    store.close()
    proj = tmp_path / "p"
    before = {p: p.read_bytes() for p in proj.rglob("*") if p.is_file() and p.name != ".lock"}
    os.chmod(proj, 0o555)  # a viewer of a colleague's project may not be able to write at all
    try:
        viewer = open_project(proj, read_only=True)
        assert viewer.labelled_voxels()["bone"] == 10
        assert (viewer.read_slice(SliceRef("z", 1), "labels").reshape(-1)[:10] == 2).all()
        with pytest.raises(InputError, match="read-only"):
            viewer.paint(SliceRef("z", 2), np.arange(3), "bone")
        with pytest.raises(InputError, match="read-only"):
            viewer.undo()
        viewer.info(), viewer.check(), viewer.refresh()
        assert {p: p.read_bytes() for p in proj.rglob("*") if p.is_file() and p.name != ".lock"} == before
        writer = open_project(proj) if os.geteuid() == 0 else None  # root ignores the mode bits
        if writer is not None:
            writer.paint(SliceRef("z", 3), np.arange(4), "implant")
            assert [r.seq for r in viewer.refresh()] == [2] and viewer.labelled_voxels()["implant"] == 4
            writer.close()
        viewer.close()
    finally:
        os.chmod(proj, 0o755)
