"""Through a real SLURM (issue #12): the one-node cluster .ci/slurm.sh starts on this machine.

* the trainer as a batch job (sbatch) sharing the project directory with a Session here: the test
  paints, the job trains and publishes a model version, the Session sees it, scancel ends the job;
* the SLURM kernel spec (kernels/al-annotator-slurm-gpu) started by jupyter_client: the kernel runs
  under srun, in a job of its own, and its channels are relayed here;
* the SLURM trainer spec (kernels/al-annotator-slurm-trainer): its srun-python wrapper runs the
  worker as a job step of its own, and the stop file ends it;
* dask-jobqueue prediction on two SLURM jobs equals the single-process prediction voxel for voxel.

About 1.5-2 min together on 2 busy cores (trainer job ~20 s, kernel ~2 s, srun trainer ~20 s,
Dask ~40 s plus the single-process reference), so none is marked slow.

They skip only where SLURM cannot start (not root, no apt-get); under CI=true they fail instead
(tests/slurm_fixtures.py).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from al_annotator.core import Session
from al_annotator.datasets import make_phantom
from al_annotator.training.client import TrainerLock
from al_annotator.types import SliceRef
from tests.slurm_fixtures import JOB_PREFIX, slurm, slurm_env  # noqa: F401 (the fixture)
from tests.test_distributed import SMALL, _outputs, project  # noqa: F401 (the project with a checkpoint)

pytest.importorskip("torch")

#: A worker that trains a few steps on small crops, predicts one axis and waits for labels
#: (TrainerClient.start() keywords; worker_flags() gives the command-line flags).
TRAINER = {"device": "cpu", "steps": 4, "crop": 48, "batch_size": 2, "axes": "z", "threads": 1, "poll": 0.2,
           "debounce": 0, "continuous": False}
#: What a site admin would give the kernels on this CPU-only test node (kernels/README.md, "For site admins").
SRUN_ARGS = ["--cpus-per-task=1", "--mem=2G", "--time=00:10:00"]


def wait_for(cond, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@pytest.fixture(scope="module")
def phantom():
    return make_phantom((16, 48, 48), seed=3)


def paint_slice(session: Session, labels_gt: np.ndarray, ref: SliceRef, per_class: int = 120, seed: int = 0) -> None:
    """Scribbles through the Session, as a front end sends them: a sparse subset of each class."""
    rng = np.random.default_rng(seed)
    gt = labels_gt[ref.selection()].reshape(-1)
    for c in np.unique(gt):
        idx = np.flatnonzero(gt == c)
        session.paint(rng.choice(idx, min(per_class, idx.size), replace=False), int(c), ref=ref)
    session.mark_annotated(ref)


def test_trainer_as_a_batch_job_shares_the_project_with_a_session(slurm, phantom, tmp_path):
    path = tmp_path / "proj"
    session = Session.create(path, phantom.image, classes=phantom.classes)
    job = slurm.sbatch([sys.executable, "-m", "al_annotator.training.worker", str(path), "--watch", *worker_flags(TRAINER)],
                       name="trainer", output=tmp_path / "trainer-job.out")
    try:
        wait_for(lambda: slurm.state(job) == "RUNNING", 60, f"job {job} to run")
        paint_slice(session, phantom.labels, SliceRef("z", 8))

        def published():
            session.poll()
            return session.model_version

        wait_for(published, 240, "the batch job to publish a model version", every=0.5)
        assert session.model_version == 1
        outputs = session.model_outputs()
        assert outputs is not None and outputs.prediction is not None
        assert session.prediction(SliceRef("z", 8)).shape == phantom.image.shape[1:]
        # the trainer that published is the job's own process, on the cluster's node
        status = session.trainer_status()
        assert status.alive and status.host == slurm.node and status.device == "cpu", status
        assert status.pid in slurm.pids(job), (status.pid, slurm.pids(job))
        wait_for(lambda: session.trainer_status().state == "waiting", 60, "the trainer to wait for labels")
        slurm.scancel(job)
        slurm.wait_gone(job)
    finally:
        if slurm.state(job) is not None:
            slurm.scancel(job)
        session.close()
    # scancel's SIGTERM stopped it cleanly: status says so, the trainer lock is free, labels intact
    again = Session.open(path)
    try:
        assert again.trainer_status().state == "stopped" and not again.trainer_status().alive
        assert again.store.check() == []
        assert (np.asarray(again.labels_array[8]) > 0).sum() > 0
    finally:
        again.close()
    lock = TrainerLock.acquire(path)
    assert lock.held
    lock.close()


def test_slurm_kernel_spec_runs_the_kernel_under_srun(slurm, tmp_path):
    name = f"{JOB_PREFIX}-kernel-{os.getpid()}"
    km, kc = start_kernel("slurm-gpu", tmp_path, srun_args=[*SRUN_ARGS, f"--job-name={name}"],
                          slurm_partition=slurm.partition)
    try:
        (job,) = slurm.jobs_named(name)
        slurm.jobs.append(job["id"])
        assert job["state"] == "RUNNING" and job["node"] == slurm.node and job["partition"] == slurm.partition
        code = "import os, socket; print(os.environ['SLURM_JOB_ID'], os.environ['SLURM_STEP_ID'], socket.gethostname())"
        reply, out = execute(kc, code)
        assert reply["status"] == "ok", reply
        job_id, step, host = out.split()
        assert job_id == job["id"] and step == "0" and host == socket.gethostname()
        # interrupt travels over the relayed control channel ("interrupt_mode": "message")
        msg_id = kc.execute("import time; time.sleep(120)")
        wait_for(lambda: busy(kc, msg_id), 30, "the kernel to start sleeping")
        km.interrupt_kernel()
        reply = shell_reply(kc, msg_id, timeout=30)
        assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    # shutting the kernel down ends srun and with it the job
    wait_for(lambda: not slurm.jobs_named(name), 60, "the kernel's job to end")


def test_slurm_trainer_spec_runs_the_trainer_as_a_job_step_from_a_kernel(slurm, phantom, tmp_path):
    """The "trainer on SLURM GPU" kernel: a local kernel whose slurm_trainer_client starts the worker
    through the spec's srun-python; this process paints through a Session and sees the version."""
    path = tmp_path / "proj"
    session = Session.create(path, phantom.image, classes=phantom.classes)
    name = f"{JOB_PREFIX}-srun-trainer-{os.getpid()}"
    km, kc = start_kernel("slurm-trainer", tmp_path, trainer_srun_args=" ".join([*SRUN_ARGS, f"--job-name={name}"]),
                          slurm_partition=slurm.partition)
    try:
        options = ", ".join(f"{k}={v!r}" for k, v in TRAINER.items())
        reply, out = execute(kc, "from al_annotator.jupyter_ext import slurm_trainer_client\n"
                                 f"trainer = slurm_trainer_client({str(path)!r})\n"
                                 f"print(trainer.start({options}))")
        assert reply["status"] == "ok", reply
        (job,) = wait_for(lambda: slurm.jobs_named(name), 60, "the trainer's job step")
        slurm.jobs.append(job["id"])
        assert job["partition"] == slurm.partition
        paint_slice(session, phantom.labels, SliceRef("z", 8))

        def published():
            session.poll()
            return session.model_version

        wait_for(published, 240, "the srun trainer to publish a model version", every=0.5)
        status = session.trainer_status()
        assert status.alive and status.device == "cpu" and status.pid in slurm.pids(job["id"]), status
        reply, out = execute(kc, "print(trainer.stop(timeout=60))", timeout=90)
        assert reply["status"] == "ok" and out.strip() == "True", (reply, out)
        wait_for(lambda: not slurm.jobs_named(name), 60, "the trainer's job to end")
        assert session.trainer_status().state == "stopped"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        session.close()


def worker_flags(options: dict[str, object]) -> list[str]:
    """TrainerClient.start() keywords as the worker's flags (continuous=False -> --no-continuous)."""
    flags: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        flags += ([flag] if value else ["--no-" + flag[2:]]) if isinstance(value, bool) else [flag, str(value)]
    return flags


def start_kernel(short: str, tmp_path: Path, **install_options):
    """Install one of kernels/ into a prefix under ``tmp_path`` (as ``al-annotator install-kernels
    --prefix`` does) and start it as JupyterLab would."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    from al_annotator.kernelspecs import installer

    (dest,) = installer().install([short], prefix=str(tmp_path / "prefix"), **install_options)
    km = KernelManager(kernel_name=dest.name, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(dest.parent)]))
    km.start_kernel(env=slurm_env())
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
    except BaseException:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        raise
    return km, kc


def execute(kc, code: str, timeout: float = 60) -> tuple[dict, str]:
    """Run ``code``; its shell reply and what it printed."""
    msg_id = kc.execute(code)
    out = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    return shell_reply(kc, msg_id, timeout), "".join(out)


def shell_reply(kc, msg_id: str, timeout: float) -> dict:
    """The shell reply to ``msg_id`` (skipping replies to earlier requests, such as the extra
    kernel_info replies wait_for_ready leaves behind)."""
    deadline = time.monotonic() + timeout
    while True:
        msg = kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg["content"]


def busy(kc, msg_id: str) -> bool:
    """True once the kernel reports it is executing ``msg_id``."""
    try:
        msg = kc.get_iopub_msg(timeout=0.5)
    except Exception:  # queue.Empty: nothing yet
        return False
    return msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_input"



def test_dask_jobqueue_prediction_on_two_slurm_jobs_equals_one_process(slurm, project, tmp_path):
    """``predict_project(..., cluster=<a client of a SLURMCluster>)``: two SLURM jobs, one Dask worker
    each, each loading the checkpoint once; the result is the single-process one voxel for voxel.
    Three planes: the engine through SLURM is what is tested here (nine-plane fusion on Dask is
    tests/test_distributed.py's, on a LocalCluster), and nine took ~95 s of this file's ~150 s."""
    pytest.importorskip("dask_jobqueue")
    import torch

    from al_annotator.training.distributed import open_client, worker_loads
    from al_annotator.training.predict_cli import predict_project

    torch.set_num_threads(1)  # as each 1-thread Dask worker runs it: float sums in one order
    predict_project(str(project), planes=3, device="cpu", **SMALL)
    single = _outputs(project)
    name = f"{JOB_PREFIX}-dask-{os.getpid()}"
    kwargs = {"cores": 1, "memory": "2GB", "walltime": "00:10:00", "job_name": name, "queue": slurm.partition,
              "log_directory": str(tmp_path), "scheduler_options": {"dashboard_address": None}}
    with open_client("slurm", jobs=2, cluster_kwargs=kwargs, wait=120) as client:
        jobs = slurm.jobs_named(name)
        slurm.jobs.extend(job["id"] for job in jobs)
        assert len(jobs) == 2 and all(job["state"] == "RUNNING" and job["partition"] == slurm.partition for job in jobs), jobs
        where = client.run(lambda: os.environ.get("SLURM_JOB_ID"))
        assert sorted(where.values()) == sorted(job["id"] for job in jobs), (where, jobs)
        meta = predict_project(str(project), planes=3, device="cpu", cluster=client, **SMALL)
        loads = client.run(worker_loads)
    assert meta["predicted_on"].startswith("dask")
    on_slurm = _outputs(project)
    for key in single:
        assert np.array_equal(single[key], on_slurm[key]), key
    assert len(loads) == 2 and all(n == 1 for n in loads.values()), loads  # 8 blocks, one checkpoint load per worker
    # closing the client closes the SLURMCluster, which cancels both jobs
    wait_for(lambda: not slurm.jobs_named(name), 60, "the Dask jobs to end")
