"""Fault figures of the project store: SIGKILLs with two writers, and strokes on a full disk.

    python benchmarks/bench_faults.py --kills 100 --disk-full-runs 5 --write-md docs/BENCHMARKS.md

* **Kills with two writers.** Two processes paint the same project at once (the same slices, so
  their strokes overlap); each is SIGKILLed at a random moment, the other one going on painting
  after it (catching up with the dead writer's records). After every round the project is reopened
  *without* ``check --repair``: every acknowledged stroke must be in the log, and the labels must be
  exactly the replayed log, with matching per-class counts.
* **Disk full.** A small tmpfs (root only; otherwise an injected ENOSPC) is filled by strokes until
  they fail; the file system is then grown, the project reopened, and every acknowledged stroke
  must be there, with no damaged or torn record and labels equal to the log.

``tests/test_crash.py`` runs a few rounds of the same harness in the default suite.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

SHAPE = (24, 40, 48)
CLASSES = "background,bone,implant,degradation"

WRITER = """
import sys
import numpy as np
sys.path.insert(0, {here!r})
from bench_faults import stroke
from al_annotator.store import open_project
store = open_project({path!r}, author={wid!r})
sys.stdout.write("READY\\n"); sys.stdout.flush()
k = 0
while True:
    k += 1
    ref, idx, value = stroke({wid!r}, {round!r}, k)
    note = f"{wid}:{round}:{{k}}"
    atom = store.paint(ref, idx, value, tool="brush") if k % 7 else None
    if atom is None:  # every 7th action is an undo (only this session's strokes, only voxels still its own)
        atom = store.undo() or store.paint(ref, idx, value)
    sys.stdout.write(f"ACK {{atom.seq}} {{note}}\\n"); sys.stdout.flush()  # one write: no half line
"""


def stroke(wid: str, rnd: int, k: int):
    """The k-th stroke of writer ``wid`` in round ``rnd``: a brush disk dragged a few steps, on one of
    a few slices both writers share (so strokes overlap)."""
    from al_annotator.types import SliceRef

    rng = np.random.default_rng([ord(wid[0]), rnd, k])
    axis = "zyx"[int(rng.integers(3))]
    ref = SliceRef(axis, int(rng.integers(3)) * 5)
    h, w = ref.shape_in(SHAPE)
    centre = rng.integers([0, 0], [h, w])
    radius = int(rng.integers(2, 7))
    yy, xx = np.mgrid[:h, :w]
    mask = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(1, 10))):
        mask |= (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2
        centre = np.clip(centre + rng.integers(-3, 4, 2), 0, [h - 1, w - 1])
    return ref, np.flatnonzero(mask), int(rng.integers(0, 5))


class _Writer:
    def __init__(self, path: Path, wid: str, rnd: int) -> None:
        code = WRITER.format(here=str(Path(__file__).resolve().parent), path=str(path), wid=wid, round=rnd)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.buf = b""

    def pump(self, until: float) -> None:
        while time.monotonic() < until:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, min(0.05, until - time.monotonic())))
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    return
                self.buf += chunk

    def acks(self) -> list[tuple[int, str]]:
        out = []
        for line in self.buf.decode().splitlines():
            m = re.fullmatch(r"ACK (\d+) (\S+)", line)
            if m:
                out.append((int(m.group(1)), m.group(2)))
        return out

    def wait_streaming(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(rb"^ACK \d+ \S+\n", self.buf, re.M) and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            self.pump(time.monotonic() + 0.1)
        if not re.search(rb"^ACK \d+ \S+\n", self.buf, re.M):
            raise RuntimeError(f"writer did not start: {self.proc.stderr.read().decode()[-2000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.pump(time.monotonic() + 0.5)


def run_two_writer_kills(path: Path, rounds: int, seed: int = 0) -> dict:
    """``rounds`` rounds of two concurrent writers, each SIGKILLed (2 kills a round); checks after each.
    Raises AssertionError on the first lost stroke or labels != log."""
    from al_annotator.store import create_project, open_project

    if not (path / "project.json").exists():
        vol = np.random.default_rng(seed).integers(0, 1000, SHAPE).astype(np.uint16)
        create_project(path, vol, classes=CLASSES, chunks=(16, 16, 16)).close()
    rng = np.random.default_rng(seed)
    stats = {"kills": 0, "acknowledged": 0, "lost": 0, "replayed_on_open": 0, "torn_set_aside": 0, "rounds_labels_equal_log": 0}
    for rnd in range(rounds):
        a, b = _Writer(path, "A", rnd), _Writer(path, "B", rnd)
        try:
            a.wait_streaming()
            b.wait_streaming()
            first, second = (a, b) if rng.random() < 0.5 else (b, a)
            first.pump(time.monotonic() + float(rng.uniform(0.0, 0.3)))
            second.pump(time.monotonic() + 0.001)
            first.kill()  # the other one goes on, catching up with what the dead one left
            second.pump(time.monotonic() + float(rng.uniform(0.05, 0.4)))
            second.kill()
            stats["kills"] += 2
        finally:
            for w in (a, b):
                if w.proc.poll() is None:
                    w.proc.kill()
                    w.proc.wait()
        acked = a.acks() + b.acks()
        store = open_project(path)
        stats["replayed_on_open"] += len(store.recovered)
        stats["torn_set_aside"] += store.torn_tail is not None
        by_seq = {r.seq: r for r in store.log.read_all().records}
        lost = [note for seq, note in acked if seq not in by_seq or by_seq[seq].meta.get("author") != note.split(":")[0]]
        stats["acknowledged"] += len(acked)
        stats["lost"] += len(lost)
        assert not lost, f"round {rnd}: acknowledged strokes lost: {lost[:5]}"
        assert not store.log.damaged and not store.quarantined, (store.log.damaged, store.quarantined)
        labels = np.asarray(store.labels[...])
        replayed = store.replay()
        assert np.array_equal(labels, replayed), f"round {rnd}: {int((labels != replayed).sum())} label voxels differ from the log"
        counts = np.bincount(labels.reshape(-1), minlength=5)[1:5].tolist()
        assert list(store.labelled_voxels().values()) == counts, f"round {rnd}: per-class counts drifted"
        stats["rounds_labels_equal_log"] += 1
        store.close()
    return stats


def run_disk_full(workdir: Path, runs: int) -> dict:
    """Fill a small file system with strokes ``runs`` times; returns acknowledged / lost counts."""
    from al_annotator.errors import DiskFullError
    from al_annotator.store import create_project, open_project
    from al_annotator.types import SliceRef

    stats = {"runs": 0, "mode": "tmpfs", "acknowledged": 0, "refused_disk_full": 0, "lost": 0, "damaged_or_torn": 0, "labels_equal_log": 0}
    for run in range(runs):
        mnt = workdir / f"fs{run}"
        mnt.mkdir()
        size_kib = 1024 + 256 * run
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(mnt)], capture_output=True).returncode:
            stats["mode"] = "unavailable (needs root for a tmpfs)"
            break
        try:
            src = workdir / f"src{run}"
            create_project(src, np.zeros((8, 64, 64), np.uint8), classes=CLASSES, chunks=(8, 64, 64)).close()
            shutil.copytree(src, mnt / "p")
            store = open_project(mnt / "p")
            rng = np.random.default_rng(run)
            acked, failures = [], 0
            while failures < 10:
                ref = SliceRef("z", int(rng.integers(8)))
                try:
                    atom = store.paint(ref, np.unique(rng.integers(0, 64 * 64, int(rng.integers(50, 800)))), int(rng.integers(1, 5)),
                                       tool=f"s{len(acked)}")
                    acked.append((atom.seq, atom.tool))
                except DiskFullError:
                    failures += 1
            store.close()
            stats["refused_disk_full"] += failures
            subprocess.run(["mount", "-o", "remount,size=16m", str(mnt)], check=True)
            again = open_project(mnt / "p")
            tools = {r.seq: r.meta.get("tool") for r in again.log.read_all().records}
            stats["acknowledged"] += len(acked)
            stats["lost"] += sum(tools.get(seq) != tool for seq, tool in acked)
            stats["damaged_or_torn"] += bool(again.log.damaged) + (again.torn_tail is not None)
            stats["labels_equal_log"] += bool(np.array_equal(np.asarray(again.labels[...]), again.replay()))
            again.close()
            stats["runs"] += 1
        finally:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    return stats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=100, help="SIGKILLs in all (two a round)")
    ap.add_argument("--disk-full-runs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write-md", default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        kills = run_two_writer_kills(Path(tmp) / "p", rounds=(args.kills + 1) // 2, seed=args.seed)
        t_kills = time.perf_counter() - t0
        full = run_disk_full(Path(tmp), args.disk_full_runs)
    print(kills, f"{t_kills:.0f} s")
    print(full)
    md = (
        "| fault | runs | acknowledged strokes | lost | labels == log after reopen, no `--repair` |\n"
        "| --- | --- | --- | --- | --- |\n"
        f"| SIGKILL, two writers on the same slices (each killed at a random moment, the other painting on) | "
        f"{kills['kills']} kills | {kills['acknowledged']} | {kills['lost']} | {kills['rounds_labels_equal_log']} of {kills['kills'] // 2} rounds |\n"
        f"| disk full ({full['mode']}, 1-2 MiB, filled until 10 strokes were refused, then grown) | {full['runs']} | "
        f"{full['acknowledged']} | {full['lost']} | {full['labels_equal_log']} of {full['runs']} |\n\n"
        f"Kills: {kills['replayed_on_open']} edits were written into the labels on reopen or by the survivor's catch-up, "
        f"{kills['torn_set_aside']} torn records were set aside (never acknowledged). Disk full: {full['refused_disk_full']} strokes were refused "
        f"with `DiskFullError` (not saved, said so), {full['damaged_or_torn']} damaged or torn records were found after space came back. "
        f"Seed {args.seed}; {t_kills:.0f} s for the kills."
    )
    print(md)
    if args.write_md:
        from report import write_section

        cmd = f"python benchmarks/bench_faults.py --kills {args.kills} --disk-full-runs {args.disk_full_runs} --write-md {args.write_md}"
        write_section(args.write_md, "bench_faults", "Store under faults: SIGKILLs with two writers, full disks", md, cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
