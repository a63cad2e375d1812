"""Fault injection on the trainer's side of the project: a SIGKILL at every step of a model
publish, stale or planted trainer status files, damaged model JSON documents."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from al_annotator.errors import StoreIntegrityError
from al_annotator.store import create_project, open_project
from al_annotator.store import models as store_models

SHAPE = (4, 8, 8)


def _write_fake_version(out, tag: str = "") -> None:
    """What a round writes, in miniature: a zarr prediction, a checkpoint, scores and metrics."""
    out.group().create_array("prediction", shape=SHAPE, dtype=np.uint8, chunks=SHAPE, overwrite=True)[...] = out.version
    (out.partial_dir / "checkpoint.pt").write_bytes(b"checkpoint of v%d %s" % (out.version, tag.encode()))
    np.savez(out.partial_dir / "scores.npz", score=np.arange(3, dtype=np.float32))
    meta = {"created": time.time(), "trained_on_seq": 0, "metrics": {"round": out.version}}
    (out.partial_dir / "metrics.json").write_text(json.dumps(meta))
    out.meta = meta


def _publish_fake(store, keep: int = 2) -> int:
    store_models.clean_unpublished(store)  # what a trainer start does
    with store_models.begin_version(store, keep=keep) as out:
        _write_fake_version(out)
    assert out.published
    return out.version


def _assert_consistent(path) -> list[int]:
    """current/index name complete versions; returns the published version numbers."""
    store = open_project(path)
    versions = [v["version"] for v in store_models.list_model_versions(store)]
    assert versions == sorted(set(versions)), versions
    cur = store_models.current_model(store)
    assert cur is not None and cur["version"] in versions
    for v in versions:
        d = store_models.version_dir(store, v)
        assert (d / "metrics.json").is_file() and (d / "scores.npz").is_file(), f"v{v} is listed but incomplete"
    # the current version is complete: checkpoint and volume outputs
    d = store_models.version_dir(store, cur["version"])
    assert (d / "checkpoint.pt").is_file()
    assert int(store.root[f"models/{store_models.version_name(cur['version'])}/prediction"][0, 0, 0]) == cur["version"]
    store.close()
    return versions


@pytest.fixture
def two_versions(tmp_path):
    path = tmp_path / "template"
    store = create_project(path, np.zeros(SHAPE, np.uint8), classes="a,b")
    assert [_publish_fake(store), _publish_fake(store)] == [1, 2]
    store.close()
    return path


DRIVER = textwrap.dedent(
    """
    import builtins, io, json, os, shutil, signal, sys, time
    from pathlib import Path
    import numpy as np
    sys.path.insert(0, sys.argv[3])
    from test_faults_trainer import _write_fake_version
    from al_annotator.store import open_project
    from al_annotator.store import models as store_models

    template, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    counter = {"n": 0, "kill_at": None}

    def step(what):
        if counter["kill_at"] is None:
            return
        counter["n"] += 1
        if counter["n"] == counter["kill_at"]:
            os.kill(os.getpid(), signal.SIGKILL)

    def wrap(mod, name, writes_only=False):
        real = getattr(mod, name)
        def hooked(*a, **kw):
            mode = kw.get("mode", a[1] if len(a) > 1 else "r")
            if not writes_only or (isinstance(mode, str) and any(c in mode for c in "wax+")):
                step(name)
            return real(*a, **kw)
        setattr(mod, name, hooked)

    for name in ("replace", "rename", "mkdir", "unlink", "rmdir"):
        wrap(os, name)
    wrap(shutil, "rmtree")
    wrap(io, "open", writes_only=True)
    builtins.open = io.open

    results = []
    for k in range(1, 500):
        proj = out_dir / f"k{k:03d}"
        shutil.copytree(template, proj)
        pid = os.fork()
        if pid == 0:
            try:
                store = open_project(proj, author="trainer")
                store_models.clean_unpublished(store)
                counter["kill_at"] = k
                with store_models.begin_version(store, keep=2) as out:
                    _write_fake_version(out)
                os._exit(0)
            except BaseException as exc:
                sys.stderr.write(f"k={k}: {type(exc).__name__}: {exc}\\n")
                os._exit(3)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        results.append({"k": k, "killed": killed, "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None})
        if not killed:
            break
    print(json.dumps(results))
    """
)


def test_sigkill_at_every_step_of_a_publish_leaves_a_project_that_publishes_again(tmp_path, two_versions):
    """A trainer SIGKILLed at any filesystem step of publishing v3 (zarr writes, checkpoint,
    rename, index, current, pruning): the project is consistent, and the next publish succeeds
    with a number no leftover uses (the ENOTEMPTY-at-every-restart bug)."""
    out_dir = tmp_path / "runs"
    out_dir.mkdir()
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(two_versions), str(out_dir), os.path.dirname(__file__)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results[-1]["killed"] is False and results[-1]["exit"] == 0, (results[-1], proc.stderr)
    kills = [r["k"] for r in results if r["killed"]]
    assert len(kills) >= 8, results  # every step: reserve, zarr, files, rename, index, current, prune
    outcomes = set()
    for r in results:
        path = out_dir / f"k{r['k']:03d}"
        before = _assert_consistent(path)
        assert before in ([1, 2], [1, 2, 3]), (r, before)
        outcomes.add(len(before))
        store = open_project(path)
        new = _publish_fake(store)
        assert new == before[-1] + 1 or new > before[-1]
        store.close()
        after = _assert_consistent(path)
        assert after == before + [new]
        assert store_models.current_model(open_project(path))["version"] == new
        assert not any(p.name.endswith(".partial") for p in (path / "models").iterdir())
        # pruning kept `keep` checkpoints and never the current one
        assert (path / "models" / store_models.version_name(new) / "checkpoint.pt").is_file()
    assert outcomes == {2, 3}  # kills before the index update lose v3, kills after keep it


def test_a_leftover_version_dir_does_not_block_publishing(tmp_path, two_versions):
    """The state the old code left (v3 renamed but unpublished, its zarr group written) and a
    stray v0007.partial: the next number skips past them and clean_unpublished removes them."""
    store = open_project(two_versions)
    (two_versions / "models" / "v0003").mkdir()
    (two_versions / "models" / "v0003" / "checkpoint.pt").write_bytes(b"orphan")
    store.root.require_group("models/v0003")
    (two_versions / "models" / "v0007.partial").mkdir()
    assert store_models.next_version(store) == 8
    removed = store_models.clean_unpublished(store)
    assert any(r.endswith("v0003") for r in removed) and any(r.endswith("v0007.partial") for r in removed)
    assert store_models.next_version(store) == 3
    assert _publish_fake(store) == 3
    # the legacy API still publishes over an unpublished leftover directory
    (two_versions / "models" / "v0004").mkdir()
    (two_versions / "models" / "v0004" / "junk").write_text("x")
    (two_versions / "models" / "v0004.partial").mkdir()
    (two_versions / "models" / "v0004.partial" / "metrics.json").write_text("{}")
    store.root.require_group("models/v0004").create_array("prediction", shape=SHAPE, dtype=np.uint8, chunks=SHAPE)[...] = 4
    (two_versions / "models" / "v0004.partial" / "scores.npz").write_bytes((two_versions / "models" / "v0003" / "scores.npz").read_bytes())
    (two_versions / "models" / "v0004.partial" / "checkpoint.pt").write_bytes(b"c")
    store_models.publish_version(store, 4, {"created": 0})
    assert _assert_consistent(two_versions) == [1, 2, 3, 4]
    assert not (two_versions / "models" / "v0004" / "junk").exists()


def test_a_kill_between_index_and_current_is_rolled_forward(tmp_path, two_versions):
    store = open_project(two_versions)
    index = json.loads((two_versions / "models" / "index.json").read_text())
    (two_versions / "models" / "current.json").write_text(json.dumps(index["versions"][0]))
    assert store_models.current_model(store)["version"] == 1
    store_models.clean_unpublished(store)
    assert store_models.current_model(store)["version"] == 2


def test_an_error_or_a_stop_discards_the_version(tmp_path, two_versions):
    store = open_project(two_versions)
    with pytest.raises(RuntimeError, match="boom"):
        with store_models.begin_version(store) as out:
            _write_fake_version(out)
            raise RuntimeError("boom")
    assert not out.published and not out.partial_dir.exists() and "models/v0003" not in store.root
    with store_models.begin_version(store) as out:
        _write_fake_version(out)
        out.abandon()
    assert not out.published and not out.partial_dir.exists()
    assert [v["version"] for v in store_models.list_model_versions(store)] == [1, 2]
    assert store_models.current_model(store)["version"] == 2


def test_pruning_never_deletes_the_version_a_front_end_shows(tmp_path, two_versions):
    """keep=1: publishing v3 keeps v2's outputs (current.json named it until now), v1 loses its."""
    store = open_project(two_versions)
    assert _publish_fake(store, keep=1) == 3
    models = two_versions / "models"
    assert (models / "v0002" / "checkpoint.pt").is_file() and "models/v0002/prediction" in store.root
    assert not (models / "v0001" / "checkpoint.pt").exists() and "models/v0001" not in store.root
    assert (models / "v0001" / "metrics.json").is_file()  # the learning curve stays


# ---------------------------------------------------------------------- damaged JSON
@pytest.mark.parametrize("name", ["index.json", "current.json"])
@pytest.mark.parametrize("content", ["{not json", "[]", '{"version": "x"}', '{"versions": [{"version": -1}]}', "\xff\xfe"])
def test_damaged_model_documents_raise_a_clear_error(two_versions, name, content):
    (two_versions / "models" / name).write_bytes(content.encode("latin-1"))
    store = open_project(two_versions)
    with pytest.raises(StoreIntegrityError, match=rf"{name} is damaged .*al-annotator check .* --repair"):
        store_models.list_model_versions(store) if name == "index.json" else store_models.current_model(store)
        store_models.next_version(store)
    assert store_models.check_models(store) and "damaged" in store_models.check_models(store)[0]
    notes = store_models.repair_models(store)
    assert "v0001, v0002" in notes[0]
    assert store_models.check_models(store) == []
    assert store_models.current_model(store)["version"] == 2
    assert (two_versions / "models" / f"{name}.damaged").exists()


# ---------------------------------------------------------------------- stop: which pid gets a signal
def _plant_status(project, **fields) -> None:
    (project / "trainer").mkdir(exist_ok=True)
    status = {"state": "training", "heartbeat": time.time(), "host": socket.gethostname()} | fields
    (project / "trainer" / "status.json").write_text(json.dumps(status))


@pytest.fixture
def bystander():
    """An unrelated process whose pid a stale or planted status names."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


linux_only = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="process identity needs /proc")


@linux_only
@pytest.mark.parametrize("case", ["same host, no identity", "same host, copied start time", "other host", "pid reused"])
def test_stop_never_signals_a_process_the_status_merely_names(tmp_path, bystander, case):
    from al_annotator.training import TrainerClient, read_status
    from al_annotator.training.client import process_identity

    project = tmp_path / "p"
    create_project(project, np.zeros(SHAPE, np.uint8), classes="a,b").close()
    ident = process_identity(bystander.pid)
    if case == "same host, no identity":
        _plant_status(project, pid=bystander.pid)
    elif case == "same host, copied start time":  # a planted file that copies /proc/PID/stat still fails the cmdline check
        _plant_status(project, **ident)
    elif case == "other host":
        _plant_status(project, pid=bystander.pid, host="some-other-node")
    else:  # the worker that wrote it is gone and the kernel gave its pid to `sleep`
        _plant_status(project, **(ident | {"pid_start": ident["pid_start"] - 1}))
        assert read_status(project)["alive"] is False
    client = TrainerClient(project)
    t = time.monotonic()
    gone = client.stop(timeout=1.0)
    time.sleep(0.2)
    assert bystander.poll() is None, f"{case}: stop() killed an unrelated process"
    assert (project / "trainer" / "stop").exists()
    assert "SIGTERM" not in client.stop_report
    if case == "pid reused":
        assert gone and "no trainer is running" in client.stop_report
    else:
        assert not gone and "sent no signal" in client.stop_report and time.monotonic() - t >= 0.9


@linux_only
def test_stop_signals_this_projects_trainer_on_this_host(tmp_path):
    """The status of a trainer another client started (its real identity, its command line
    names the project): stop() sends it SIGTERM."""
    from al_annotator.training import TrainerClient
    from al_annotator.training.client import process_identity

    project = tmp_path / "p"
    create_project(project, np.zeros(SHAPE, np.uint8), classes="a,b").close()
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "al_annotator.training.worker", "p"],
                               cwd=tmp_path)
    try:
        deadline = time.monotonic() + 10
        while b"al_annotator" not in open(f"/proc/{trainer.pid}/cmdline", "rb").read() and time.monotonic() < deadline:
            time.sleep(0.05)
        _plant_status(project, **process_identity(trainer.pid))
        client = TrainerClient(project)
        assert client.stop(timeout=10)
        assert trainer.wait(timeout=5) == -signal.SIGTERM
        assert "SIGTERM" in client.stop_report
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait()


@pytest.mark.parametrize("content", ["{torn", "[]", '"x"', "\xff"])
def test_a_damaged_status_file_reads_as_no_status(tmp_path, content):
    from al_annotator.training import read_status

    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "status.json").write_bytes(content.encode("latin-1"))
    status = read_status(tmp_path)
    assert status["alive"] is False and "status.json" in status["warning"]


def test_odd_status_fields_do_not_raise(tmp_path):
    from al_annotator.training import read_status

    _plant_status(tmp_path, pid="12", heartbeat="soon")
    assert read_status(tmp_path)["alive"] is False
    _plant_status(tmp_path, pid=2**80)
    assert read_status(tmp_path)["alive"] is False


def test_odd_but_valid_version_entries_do_not_crash_the_worker(two_versions):
    """Valid JSON of a slightly wrong shape inside an entry (metrics not an object, no
    trained_on_seq): the worker starts and treats the version as trained on nothing."""
    from al_annotator.training import TrainConfig
    from al_annotator.training.worker import Worker, _trained_on

    index = json.loads((two_versions / "models" / "index.json").read_text())
    index["versions"][0]["metrics"] = []
    (two_versions / "models" / "index.json").write_text(json.dumps(index))
    cur = dict(index["versions"][1], trained_on_seq="many")
    (two_versions / "models" / "current.json").write_text(json.dumps(cur))
    worker = Worker(str(two_versions), TrainConfig())
    assert worker.status["history"][0] == {"version": 1}
    assert _trained_on(store_models.current_model(worker.store)) == 0
