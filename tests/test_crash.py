"""Crash safety: a writer killed with SIGKILL at random moments never loses an acknowledged stroke."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time

import numpy as np

from al_annotator.store import create_project, open_project
from al_annotator.types import SliceRef

SHAPE = (24, 40, 48)
KILLS = 20

WRITER = """
import sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_crash import stroke
from al_annotator.store import open_project
store = open_project({path!r})
print("READY", store.log.last_seq, flush=True)
while True:
    k = store.log.last_seq + 1
    ref, idx, value = stroke(k)
    atom = store.paint(ref, idx, value)
    assert atom.seq == k, (atom.seq, k)
    sys.stdout.write(f"ACK {{atom.seq}}\\n"); sys.stdout.flush()  # one write: no half line
"""


def stroke(k: int) -> tuple[SliceRef, np.ndarray, int]:
    """The k-th stroke of the test, the same in the writer and in the checker."""
    rng = np.random.default_rng(k)
    axis = "zyx"[int(rng.integers(3))]
    index = int(rng.integers(SHAPE["zyx".index(axis)]))
    ref = SliceRef(axis, index)
    h, w = ref.shape_in(SHAPE)
    # a brush stroke: a disk of radius 2..6 dragged along a short random walk
    centre = rng.integers([0, 0], [h, w])
    radius = int(rng.integers(2, 7))
    yy, xx = np.mgrid[:h, :w]
    mask = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(1, 12))):
        mask |= (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2
        centre = np.clip(centre + rng.integers(-3, 4, 2), 0, [h - 1, w - 1])
    return ref, np.flatnonzero(mask), int(rng.integers(0, 5))


def expected_labels(n: int) -> np.ndarray:
    labels = np.zeros(SHAPE, np.uint8)
    for k in range(1, n + 1):
        ref, idx, value = stroke(k)
        view = labels[ref.selection()]
        rows, cols = np.unravel_index(idx, view.shape)
        view[rows, cols] = value
    return labels


def _read_rest(proc: subprocess.Popen, until: float) -> bytes:
    buf = b""
    while time.monotonic() < until:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, until - time.monotonic()))
        if not ready:
            break
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
    return buf


def test_sigkill_never_loses_an_acknowledged_stroke(tmp_path):
    path = tmp_path / "proj"
    rng = np.random.default_rng(12345)
    volume = rng.integers(0, 1000, SHAPE).astype(np.uint16)
    create_project(path, volume, classes="background,bone,implant,degradation").close()
    tests_dir = os.path.dirname(__file__)
    code = WRITER.format(tests=tests_dir, path=str(path))
    acknowledged: list[int] = []
    kills_mid_run = 0
    recovered = torn = 0
    for attempt in range(KILLS):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            # wait until the writer is streaming, then kill it at a random moment
            head = b""
            deadline = time.monotonic() + 60
            while not re.search(rb"^ACK \d+\n", head, re.M) and time.monotonic() < deadline:  # a whole ACK line
                ready, _, _ = select.select([proc.stdout], [], [], 1.0)
                if ready:
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    head += chunk
            assert re.search(rb"^ACK \d+\n", head, re.M), f"writer did not start: {proc.stderr.read().decode()[-2000:]}"
            time.sleep(float(rng.uniform(0.0, 0.25)))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            rest = _read_rest(proc, time.monotonic() + 2)
        finally:
            if proc.poll() is None:
                proc.kill()
        lines = (head + rest).decode().splitlines()  # a line may be split across two reads
        acks = [int(line.split()[1]) for line in lines if line.startswith("ACK") and len(line.split()) == 2]
        assert acks, lines
        kills_mid_run += 1
        acknowledged.extend(acks)

        store = open_project(path)
        recovered += len(store.recovered)
        torn += store.torn_tail is not None
        last = store.log.last_seq
        # every acknowledged stroke is in the log (at most the one in flight is missing)...
        assert last >= max(acknowledged), (attempt, last, max(acknowledged))
        # ...and the labels are exactly the replayed log, which is exactly the strokes 1..last
        labels = np.asarray(store.labels[...])
        np.testing.assert_array_equal(labels, store.replay())
        np.testing.assert_array_equal(labels, expected_labels(last))
        counts = np.bincount(labels.reshape(-1), minlength=5)
        assert [store.labelled_voxels()[c] for c in ("background", "bone", "implant", "degradation")] == counts[1:5].tolist()
        store.close()
    assert kills_mid_run == KILLS
    print(f"{KILLS} kills: {recovered} edits replayed into the labels on reopen, {torn} torn records set aside")
    assert len(set(acknowledged)) == len(acknowledged)


def test_sigkill_with_two_writers_loses_nothing_and_labels_equal_the_log(tmp_path):
    """Two processes paint the same slices; each is SIGKILLed at a random moment while the other
    goes on (catching up with what the dead one left). After each round, reopened without
    ``--repair``: every acknowledged stroke is in the log and the labels are the replayed log.
    ``benchmarks/bench_faults.py`` runs the same harness for >= 100 kills."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
    from bench_faults import run_two_writer_kills

    stats = run_two_writer_kills(tmp_path / "p", rounds=4, seed=7)
    assert stats["kills"] == 8 and stats["lost"] == 0 and stats["acknowledged"] > 8
    assert stats["rounds_labels_equal_log"] == 4
