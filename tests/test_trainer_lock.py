"""One trainer per project (the flock on trainer/.lock), and a trainer that dies of an exception
says so in trainer/status.json at once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from al_annotator.datasets import make_phantom
from al_annotator.errors import StoreIntegrityError
from al_annotator.store import create_project
from al_annotator.training import TrainConfig, TrainerClient, read_status
from al_annotator.training.client import LOCK_FILE, TrainerLock, TrainerRunningError, process_identity
from al_annotator.types import SliceRef

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="process identity needs /proc")

#: The quickest real worker: watch mode on an unlabelled project waits without training.
FAST = dict(steps=2, crop=32, axes="z", threads=1, poll=0.2)
FAST_ARGS = ["--watch", "--steps", "2", "--crop", "32", "--axes", "z", "--threads", "1", "--poll", "0.2"]


@pytest.fixture
def project(tmp_path):
    phantom = make_phantom((16, 32, 32), seed=3)
    path = tmp_path / "p"
    create_project(path, phantom.image, classes=phantom.classes).close()
    return path


def _wait(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _waiting_with(path, pid: int, timeout: float = 120) -> dict:
    return _wait(lambda: (s := read_status(path)).get("state") == "waiting" and s.get("pid") == pid and s, timeout,
                 f"trainer pid {pid} waiting for labels (status {read_status(path)})")


def _worker(path, cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "al_annotator.training.worker", str(path), *FAST_ARGS], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _kill(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


# ---------------------------------------------------------------------- the lock itself
def test_the_lock_is_exclusive_names_its_holder_and_goes_with_the_handle(project):
    lock = TrainerLock.acquire(project)
    assert lock.held
    lock.record(process_identity())
    (project / "trainer" / "status.json").write_text(json.dumps(
        process_identity() | {"state": "training", "heartbeat": time.time()}))
    with pytest.raises(TrainerRunningError) as info:
        TrainerLock.acquire(project)  # another open file, even in this process: refused
    message = str(info.value)
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in message and "state training" in message
    assert f"al-annotator train {project} --stop" in message and "Stop button" in message and "wait" in message
    assert info.value.holder["pid"] == os.getpid()
    # a descriptor that is not the lock is not adopted: the start is refused all the same
    with open(project / "project.json") as other, pytest.raises(TrainerRunningError):
        TrainerLock.acquire(project, inherited_fd=other.fileno())
    lock.close()
    again = TrainerLock.acquire(project)
    assert again.held and (project / LOCK_FILE).read_text() == ""  # the last holder's record is gone
    again.close()


def test_a_planted_link_is_not_followed(project, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (project / "trainer").mkdir()
    (project / LOCK_FILE).symlink_to(victim)
    with pytest.raises(StoreIntegrityError, match=r"\.lock is a symbolic link.*remove it"):
        TrainerLock.acquire(project)
    client = TrainerClient(project, nice=0)
    with pytest.raises(StoreIntegrityError, match="symbolic link"):
        client.start(watch=True, **FAST)
    assert client.process is None and victim.read_text() == "keep me"


# ---------------------------------------------------------------------- real workers
def test_two_clients_start_one_trainer_and_a_sigkill_frees_the_project(project):
    a, b = TrainerClient(project, nice=0), TrainerClient(project, nice=0)
    pid_a = a.start(watch=True, **FAST)
    try:
        assert a.start(watch=True, **FAST) == pid_a  # this client's own trainer: a no-op
        with pytest.raises(TrainerRunningError, match=rf"another trainer is running on .*: pid {pid_a} on host "):
            b.start(watch=True, **FAST)  # still starting (no status yet): the lock says who
        assert b.process is None
        _waiting_with(project, pid_a)
        assert b.start(watch=True, **FAST) == pid_a  # alive in status.json: returned as is
        assert b.process is None
        os.kill(pid_a, signal.SIGKILL)
        a.process.wait(timeout=30)
        pid_b = b.start(watch=True, **FAST)  # the kernel dropped the lock with the process
        assert pid_b != pid_a
        status = _waiting_with(project, pid_b)
        assert status["alive"] and "lock" not in status  # it holds a real flock
        assert b.stop(timeout=60)
        assert b.process.wait(timeout=30) == 0
    finally:
        _kill(a.process)
        _kill(b.process)
    assert read_status(project)["state"] == "stopped"


def test_two_worker_processes_one_runs_the_other_says_who(project, capsys):
    from al_annotator.cli import main

    first, second = _worker(project, project.parent), _worker(project, project.parent)
    third = None
    try:
        loser = _wait(lambda: next((p for p in (first, second) if p.poll() is not None), None), 120, "one worker to give up")
        winner = second if loser is first else first
        out, err = loser.communicate()
        assert loser.returncode == 2, err
        assert "error: another trainer is running on" in err and f"al-annotator train {project} --stop" in err
        assert "Traceback" not in err
        _waiting_with(project, winner.pid)
        assert f"pid {winner.pid} on host {socket.gethostname()}" in err or "has not recorded its pid" in err
        assert winner.poll() is None
        # `al-annotator train` a second time: one line naming the running trainer, exit status 2, no traceback
        capsys.readouterr()
        assert main(["train", str(project), "--watch", "--device", "cpu"]) == 2
        cli_err = capsys.readouterr().err
        assert cli_err.startswith("error: another trainer is running") and f"pid {winner.pid}" in cli_err
        assert "state waiting" in cli_err and "Traceback" not in cli_err
        assert read_status(project)["pid"] == winner.pid  # the refused start touched nothing
        # SIGKILL: the kernel drops the lock, a new worker starts
        os.kill(winner.pid, signal.SIGKILL)
        winner.wait(timeout=30)
        third = _worker(project, project.parent)
        _waiting_with(project, third.pid)
        # `al-annotator train PROJECT --stop`, the remedy the message names
        assert main(["train", str(project), "--stop", "--stop-timeout", "60"]) == 0
        assert "SIGTERM" in capsys.readouterr().out
        assert third.wait(timeout=30) == 0
        assert read_status(project)["state"] == "stopped"
    finally:
        for proc in (first, second, third):
            _kill(proc)


# ---------------------------------------------------------------------- failed, at once
def test_a_worker_that_dies_in_a_round_says_failed_at_once(project):
    """A real failure: the image chunks are damaged after the trainer started; the round that
    the next committed slice starts cannot read them."""
    client = TrainerClient(project, nice=0)
    pid = client.start(watch=True, **FAST)
    try:
        _waiting_with(project, pid)
        for chunk in (project / "data.zarr" / "image").rglob("*"):
            if chunk.is_file() and chunk.name != "zarr.json":
                chunk.write_bytes(b"not a chunk")
        from al_annotator.store import open_project

        store = open_project(project)
        ref = SliceRef("z", 8)
        store.paint(ref, np.arange(0, 32 * 32, 7), 1)
        store.paint(ref, np.arange(3, 32 * 32, 11), 2)
        store.set_slice_state(ref, "annotated")
        store.close()
        t = time.monotonic()
        status = _wait(lambda: (s := read_status(project)).get("state") == "failed" and s, 60, "a failed status")
        assert time.monotonic() - t < 30
        assert status["error"].startswith("StoreIntegrityError: the image at z=8 cannot be read")
        assert status["alive"] is False and status["pid"] == pid
        assert client.process.wait(timeout=30) != 0
        log = client.log_tail(20000)
        assert "Traceback (most recent call last)" in log and "run_round" in log and "collect_labelled_slices" in log
        assert not client.is_running()
        TrainerLock.acquire(project).close()  # the lock went with the process
    finally:
        _kill(client.process)


def test_a_start_up_failure_is_failed_with_the_traceback_in_the_log(project):
    from al_annotator.training.worker import Worker

    (project / "models").mkdir(exist_ok=True)
    (project / "models" / "index.json").write_text("{not json")
    with pytest.raises(StoreIntegrityError):
        Worker(str(project), TrainConfig(), rounds=1)
    status = read_status(project)
    assert status["state"] == "failed" and status["error"].startswith("StoreIntegrityError: ") and "index.json" in status["error"]
    assert status["alive"] is False and status["pid"] == os.getpid()
    log = (project / "trainer" / "worker.log").read_text()
    assert "failed: StoreIntegrityError" in log and "Traceback (most recent call last)" in log
    TrainerLock.acquire(project).close()  # a failed start let go of the lock


def test_ctrl_c_still_ends_as_stopped(project, monkeypatch):
    from al_annotator.training.worker import Worker

    worker = Worker(str(project), TrainConfig(), rounds=1)

    def interrupted():
        worker._write_status(force=True, state="training")
        raise KeyboardInterrupt

    monkeypatch.setattr(worker, "_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        worker.run()
    worker.close()
    status = read_status(project)
    assert status["state"] == "stopped" and "error" not in status and status["alive"] is False
