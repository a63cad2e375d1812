"""Label reads through the store's chunk reader (al_annotator/store/chunkread.py) answer exactly as
zarr does: every axis, empty / sparse / dense labels, chunk edges not aligned to the volume, after
edits by this store, another store object and another process, and on damaged chunks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from al_annotator.errors import StoreIntegrityError
from al_annotator.store import create_project, open_project
from al_annotator.types import AXES, SliceRef

SHAPE = (37, 45, 53)  # no side a multiple of the chunk side
CHUNKS = (16, 16, 16)


def _zarr_read(store, sel, what="labels"):
    """The plain zarr read, as the store read before the chunk reader."""
    arr = {"labels": store.labels, "imported_labels": store._imported}[what]
    return np.asarray(arr[sel])


def _same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a, b)


def _every_plane(store):
    for axis, n in zip(AXES, store.shape):
        for index in sorted({0, 1, 15, 16, 17, n // 2, n - 1}):
            ref = SliceRef(axis, index)
            _same(store.read_slice(ref, "labels"), _zarr_read(store, ref.selection()))
            for level in (1, 2):
                _same(store.read_slice(ref, "labels", level=level), _zarr_read(store, ref.selection())[:: 2**level, :: 2**level])


def _some_boxes(store, rng, n=20):
    sels = [(...,), (slice(None),), (5,), (-1, ...), (..., -3), (slice(3, 30), 7, slice(None)),
            (slice(10, 10), slice(None), slice(None)), (slice(0, 100), slice(-20, None), slice(1, 2))]
    for _ in range(n):
        sel = []
        for size in store.shape:
            a, b = sorted(int(v) for v in rng.integers(0, size + 1, 2))
            sel.append(slice(a, b + 1))
        sels.append(tuple(sel))
    for sel in sels:
        _same(store.read_labels(sel), _zarr_read(store, sel))


@pytest.fixture()
def project(tmp_path):
    rng = np.random.default_rng(1)
    store = create_project(tmp_path / "p", rng.integers(0, 255, SHAPE, dtype=np.uint8), classes="a,b,c",
                           chunks=CHUNKS, fsync=False)
    yield store
    store.close()


def _scribble(store, ref, value, rng, n=40):
    h, w = ref.shape_in(store.shape)
    idx = rng.choice(h * w, size=min(n, h * w), replace=False)
    return store.paint(ref, idx, value)


def test_local_labels_use_the_chunk_reader_and_skip_unlabelled_chunks(project):
    reader = project._readers["labels"]
    before = reader.skipped
    plane = project.read_slice(SliceRef("z", 3), "labels")
    assert not plane.any()
    assert reader.skipped > before  # the unlabelled chunks were recognised, not decoded
    assert reader.missing == 0


def test_empty_sparse_and_dense_labels_read_as_zarr_reads_them_on_every_axis(project):
    rng = np.random.default_rng(2)
    _every_plane(project)  # empty
    _some_boxes(project, rng)
    for axis, index in (("z", 3), ("y", 16), ("x", 52), ("z", 36)):  # sparse scribbles, edge chunks included
        _scribble(project, SliceRef(axis, index), 1 + index % 3, rng)
    _every_plane(project)
    _some_boxes(project, rng)
    h, w = SliceRef("z", 20).shape_in(project.shape)  # one densely labelled slice
    project.paint(SliceRef("z", 20), np.arange(h * w), 2)
    dense = ((np.indices(SHAPE).sum(0) // 7) % 4).astype(np.uint8)  # every chunk labelled (a prediction's look)
    project.labels[:, :, 30:] = dense[:, :, 30:]
    decoded = project._readers["labels"].decoded
    _every_plane(project)
    assert project._readers["labels"].decoded > decoded  # labelled chunks decoded by the reader, not handed to zarr
    _some_boxes(project, rng)
    assert project.read_slice(SliceRef("z", 20), "labels")[:, :30].min() == 2


def test_erasing_a_chunk_back_to_unlabelled_and_painting_it_again_is_never_read_stale(project):
    ref = SliceRef("z", 5)
    atom = project.paint(ref, np.array([0, 1, 2]), "b")
    assert project.read_slice(ref, "labels")[0, :3].tolist() == [2, 2, 2]
    project.undo()  # the chunk's bytes are the unlabelled encoding again
    assert not project.read_slice(ref, "labels").any()
    project.redo()
    assert project.read_slice(ref, "labels")[0, :3].tolist() == [2, 2, 2]
    assert atom.seq is not None


def test_a_second_store_object_sees_every_edit_of_the_first_and_back(project):
    other = open_project(project.path, fsync=False)
    viewer = open_project(project.path, read_only=True)
    rng = np.random.default_rng(3)
    try:
        for axis in AXES:
            ref = SliceRef(axis, 16)
            for store in (other, viewer):
                store.read_slice(ref, "labels")  # read (and learn the unlabelled encoding) before the edit
            _scribble(project, ref, "a", rng)
            for store in (other, viewer):
                _same(store.read_slice(ref, "labels"), _zarr_read(project, ref.selection()))
            assert store.read_slice(ref, "labels").any()
            _scribble(other, ref, "c", rng)
            _same(project.read_slice(ref, "labels"), _zarr_read(other, ref.selection()))
            _same(viewer.read_slice(ref, "labels"), _zarr_read(other, ref.selection()))
        _every_plane(other)
        _every_plane(viewer)
    finally:
        other.close()
        viewer.close()


def test_edits_by_another_process_are_read_at_once(project):
    ref = SliceRef("y", 20)
    assert not project.read_slice(ref, "labels").any()
    code = (
        "import sys, numpy as np\n"
        "from al_annotator.store import open_project\n"
        "from al_annotator.types import SliceRef\n"
        "s = open_project(sys.argv[1], fsync=False)\n"
        "s.paint(SliceRef('y', 20), np.arange(0, 37 * 53, 3), 'c')\n"
        "s.paint(SliceRef('z', 36), np.arange(45 * 53), 'a')\n"
        "s.close()\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    subprocess.run([sys.executable, "-c", code, str(project.path)], check=True, env=env, timeout=120)
    plane = project.read_slice(ref, "labels")
    _same(plane, _zarr_read(project, ref.selection()))
    painted = plane[:36].reshape(-1)  # row z=36 was painted over by the second stroke
    assert (painted[::3] == 3).all() and not np.delete(painted, np.arange(0, painted.size, 3)).any()
    assert (project.read_slice(SliceRef("z", 36), "labels") == 1).all()
    _every_plane(project)


def test_imported_labels_read_as_zarr_reads_them(tmp_path):
    rng = np.random.default_rng(4)
    labels = np.zeros(SHAPE, np.uint8)
    labels[3:9, 10:20, 40:] = 2
    store = create_project(tmp_path / "p", rng.integers(0, 9, SHAPE, dtype=np.uint8), classes="a,b", labels=labels,
                           chunks=CHUNKS, fsync=False)
    try:
        assert "imported_labels" in store._readers
        _same(store._read_array("imported_labels", (...,), where="test"), labels)
        _every_plane(store)
        assert store.check() == []
    finally:
        store.close()


def test_a_memory_project_reads_with_zarr():
    store = create_project(None, np.zeros((4, 8, 8), np.uint8), classes="a,b")
    assert store._readers == {}
    store.paint(SliceRef("x", 2), np.array([0, 5]), "b")
    assert store.read_slice(SliceRef("x", 2), "labels").reshape(-1)[[0, 5]].tolist() == [2, 2]


def _outcome(store, sel):
    try:
        return "ok", store.read_labels(sel)
    except Exception as exc:  # noqa: BLE001 - compared as they come
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "missing", "oversized", "directory", "header_size"])
def test_a_damaged_chunk_behaves_exactly_as_before(project, damage):
    project.paint(SliceRef("z", 17), np.arange(0, 45 * 53, 2), "b")
    chunk = Path(project.path) / "data.zarr" / "labels" / "c" / "1" / "1" / "0"
    data = chunk.read_bytes()
    if damage == "garbage":
        chunk.write_bytes(os.urandom(len(data)))
    elif damage == "truncated":
        chunk.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        chunk.write_bytes(b"")
    elif damage == "missing":
        chunk.unlink()
    elif damage == "oversized":
        chunk.write_bytes(data + b"\0" * (16**3 + 64))
    elif damage == "directory":
        chunk.unlink()
        chunk.mkdir()
    elif damage == "header_size":  # a blosc header claiming another uncompressed size
        chunk.write_bytes(data[:4] + (16**3 // 2).to_bytes(4, "little") + data[8:])
    sels = [SliceRef("z", 17).selection(), SliceRef("y", 20).selection(), SliceRef("x", 3).selection(), (...,)]
    readers = project._readers
    for sel in sels:
        now = _outcome(project, sel)
        project._readers = {}
        try:
            before = _outcome(project, sel)
        finally:
            project._readers = readers
        assert now[0] == before[0]
        if now[0] == "ok":
            _same(now[1], before[1])
        else:
            assert now[1] == before[1]
    if damage in ("garbage", "truncated", "empty"):
        with pytest.raises(StoreIntegrityError):
            project.read_slice(SliceRef("z", 17), "labels")


def test_a_labelled_plane_read_again_decodes_only_the_chunks_that_changed(project):
    ref = SliceRef("z", 9)
    h, w = ref.shape_in(project.shape)
    project.paint(ref, np.arange(h * w), "a")  # every chunk of the plane labelled: 3 x 4 chunks
    reader = project._readers["labels"]
    project.read_slice(ref, "labels")
    decoded, cached = reader.decoded, reader.cached
    _same(project.read_slice(ref, "labels"), _zarr_read(project, ref.selection()))
    assert reader.decoded == decoded and reader.cached == cached + 12
    other = open_project(project.path, fsync=False)
    try:
        other.paint(ref, np.array([0, 1, w]), "c")  # one chunk rewritten by another store object
    finally:
        other.close()
    plane = project.read_slice(ref, "labels")
    _same(plane, _zarr_read(project, ref.selection()))
    assert plane.reshape(-1)[[0, 1, w, 2]].tolist() == [3, 3, 3, 1]
    assert reader.decoded == decoded + 1


def test_the_parts_cache_stays_within_its_budget(project):
    reader = project._readers["labels"]
    reader.cache_bytes = 40_000
    dense = ((np.indices(SHAPE).sum(0) // 5) % 4).astype(np.uint8)
    project.labels[...] = dense
    for axis, n in zip(AXES, SHAPE):
        for index in range(n):
            _same(project.read_slice(SliceRef(axis, index), "labels"), dense[SliceRef(axis, index).selection()])
    assert 0 < reader._parts_bytes <= 40_000


def _outputs_like_the_trainer(group, shape, chunks, rng):
    """Arrays as ``training.worker.write_model_outputs`` creates them (zarr's default codec, zstd;
    chunks never written are missing), part of the volume written."""
    c = 3
    probs = group.create_array("probabilities", shape=(c, *shape), dtype=np.float16, chunks=(1, *chunks), fill_value=0.0)
    pred = group.create_array("prediction", shape=shape, dtype=np.uint8, chunks=chunks, fill_value=0)
    p = rng.random((c, shape[0] - 16, *shape[1:])).astype(np.float32)
    p /= p.sum(0)
    probs[:, 16:] = p.astype(np.float16)
    pred[16:] = (p.argmax(0) + 1).astype(np.uint8)
    probs[0, 0, 0, 0] = -0.0  # a chunk all zeros by value but not by bytes (written: -0.0 is not the fill)
    return probs, pred


def test_model_outputs_read_through_the_chunk_reader_as_zarr_reads_them(project):
    from al_annotator.store.chunkread import ChunkArray
    from al_annotator.store.models import model_outputs

    rng = np.random.default_rng(5)
    group = project.root.require_group("models/v0001")
    probs, pred = _outputs_like_the_trainer(group, SHAPE, CHUNKS, rng)
    out = model_outputs(project, 1)
    assert isinstance(out["prediction"], ChunkArray) and out["prediction"].reader.codec == "zstd"
    assert out["prediction"].chunks == pred.chunks and hasattr(out["probabilities"], "get_coordinate_selection")
    for axis in AXES:
        for index in (0, 7, 8, 16, SHAPE[AXES.index(axis)] - 1):
            sel = SliceRef(axis, index).selection()
            _same(out["prediction"][sel], np.asarray(pred[sel]))
            a, b = out["probabilities"][(slice(None),) + sel], np.asarray(probs[(slice(None),) + sel])
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()  # bit for bit (-0.0 kept)
    assert out["prediction"].reader.missing > 0 and out["prediction"].reader.decoded > 0
    assert int(out["prediction"][10, 3, 4]) == int(pred[10, 3, 4])
    _same(np.asarray(out["prediction"]), np.asarray(pred[...]))


def test_a_damaged_model_output_chunk_behaves_exactly_as_before(project):
    from al_annotator.store.models import model_outputs

    group = project.root.require_group("models/v0001")
    _, pred = _outputs_like_the_trainer(group, SHAPE, CHUNKS, np.random.default_rng(6))
    chunk = Path(project.path) / "data.zarr" / "models" / "v0001" / "prediction" / "c" / "1" / "0" / "0"
    data = chunk.read_bytes()
    sel = SliceRef("z", 17).selection()
    for damaged in (data[: len(data) // 2], os.urandom(len(data)), data[:5] + b"\x00" * 4 + data[9:]):
        chunk.write_bytes(damaged)
        fast = model_outputs(project, 1)["prediction"]
        try:
            now = ("ok", np.asarray(fast[sel]))
        except Exception as exc:  # noqa: BLE001 - compared as they come
            now = (type(exc).__name__, str(exc))
        try:
            before = ("ok", np.asarray(pred[sel]))
        except Exception as exc:  # noqa: BLE001
            before = (type(exc).__name__, str(exc))
        assert now[0] == before[0]
        if now[0] == "ok":
            _same(now[1], before[1])
        else:
            assert now[1] == before[1]
