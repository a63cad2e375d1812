"""The real one-node SLURM that ``.ci/slurm.sh`` starts on this machine, as a pytest fixture.

``slurm`` runs the script (installs slurm-wlm and munge if missing, starts munged, slurmctld and
slurmd; 0.01 s when they already run) and hands the tests a :class:`Slurm` to submit through. The
tests skip only where SLURM cannot start here (not root, no apt-get: the script exits 2). With
``CI=true`` they fail instead: CI must run them. Every job a test submits is cancelled at the end.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "slurm.sh"
#: Exit status of .ci/slurm.sh when SLURM cannot be started on this machine (not root, no apt-get).
CANNOT_START = 2
#: Every test job's name starts with this (squeue -n finds leftovers).
JOB_PREFIX = "al-annotator-test"


def slurm_env() -> dict[str, str]:
    """This environment without the variables of an enclosing SLURM job, so a submission is a job
    of its own (as kernels/slurm_kernel.py and srun-python do)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}


def _run(args: list[str], timeout: float = 30) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=slurm_env())
    if proc.returncode:
        raise AssertionError(f"{shlex.join(args)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


class Slurm:
    """Submit to, and look at, the running cluster; remembers every job it submitted."""

    def __init__(self) -> None:
        self.node = _run(["sinfo", "-h", "-N", "-o", "%N"]).split()[0]
        self.partition = _run(["sinfo", "-h", "-o", "%R"]).split()[0]
        self.jobs: list[str] = []

    def sbatch(self, command: list[str], *, name: str, output: Path, cpus: int = 1, mem: str = "2G",
               time_limit: str = "00:10:00", cwd: Path | None = None) -> str:
        """Submit ``command`` as a batch job (``exec``'d by the batch shell, so scancel's SIGTERM
        reaches it directly); returns the job id."""
        out = _run(["sbatch", "--parsable", f"--job-name={JOB_PREFIX}-{name}", f"--output={output}",
                    f"--cpus-per-task={cpus}", f"--mem={mem}", f"--time={time_limit}",
                    f"--chdir={cwd or output.parent}", "--wrap", "exec " + shlex.join(command)])
        job = out.strip().split(";")[0]
        self.jobs.append(job)
        return job

    def state(self, job: str) -> str | None:
        """The job's state as squeue shows it (PENDING, RUNNING, ...), None once it has left the queue."""
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True,
                             env=slurm_env(), timeout=30).stdout.strip()
        return out or None

    def jobs_named(self, name: str) -> list[dict[str, str]]:
        """The queued or running jobs whose name is ``name``: id, state, node, partition and name."""
        out = _run(["squeue", "-h", "-n", name, "-o", "%i|%T|%N|%P|%j"])
        return [dict(zip(("id", "state", "node", "partition", "name"), line.split("|"))) for line in out.splitlines() if line]

    def pids(self, job: str) -> set[int]:
        """The processes of a running job on this node (``scontrol listpids``: what SLURM tracks)."""
        out = _run(["scontrol", "listpids", job])
        return {int(m.group(1)) for m in re.finditer(r"^\s*(\d+)\s", out, re.M)}

    def scancel(self, job: str) -> None:
        _run(["scancel", job])

    def wait_gone(self, job: str, timeout: float = 60) -> None:
        """Wait until the job has left the queue (scancel's SIGTERM, then SIGKILL after KillWait)."""
        deadline = time.monotonic() + timeout
        while self.state(job) is not None:
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job} still {self.state(job)} {timeout:g} s after it should have ended")
            time.sleep(0.3)

    def cancel_all(self) -> None:
        for job in self.jobs:
            subprocess.run(["scancel", job], capture_output=True, env=slurm_env(), timeout=30)


@pytest.fixture(scope="session")
def slurm():
    """The running one-node cluster (started by .ci/slurm.sh if it is not up)."""
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    try:
        proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{SCRIPT} did not finish within 600 s")
    if proc.returncode == CANNOT_START and not in_ci:
        pytest.skip(f"SLURM cannot start here: {proc.stderr.strip()}")
    if proc.returncode:
        pytest.fail(f"{SCRIPT} failed ({proc.returncode}): {proc.stderr.strip()}")
    cluster = Slurm()
    yield cluster
    cluster.cancel_all()
