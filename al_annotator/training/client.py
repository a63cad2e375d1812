"""Start, stop and watch a trainer process from Python (no torch import here).

The notebook widget and the napari dock use :class:`TrainerClient`; it talks to the worker only
through the project directory (``trainer/status.json``, ``trainer/stop``) and signals.

Examples
--------
>>> client = TrainerClient("my_project")            # doctest: +SKIP
>>> client.start(watch=True)                         # doctest: +SKIP
>>> client.status()["state"]                         # doctest: +SKIP
'training'
>>> client.stop()                                    # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import AlAnnotatorError, InputError

__all__ = ["TrainerClient", "read_status", "STATUS_FILE", "STOP_FILE", "HEARTBEAT_STALE_S"]

STATUS_FILE = "trainer/status.json"
STOP_FILE = "trainer/stop"
#: A status whose heartbeat is older than this (seconds) belongs to a worker that is gone.
HEARTBEAT_STALE_S = 30.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_status(project: str | os.PathLike) -> dict[str, Any]:
    """The trainer status of a project, with ``alive`` (heartbeat fresh and process present)."""
    path = Path(project) / STATUS_FILE
    try:
        status = json.loads(path.read_text())
    except FileNotFoundError:
        return {"state": "not started", "alive": False}
    except json.JSONDecodeError:  # never happens with atomic writes; be safe anyway
        return {"state": "unknown", "alive": False}
    age = time.time() - float(status.get("heartbeat", 0))
    status["heartbeat_age"] = age
    same_host = status.get("host") in (None, os.uname().nodename)
    pid_ok = _pid_alive(int(status["pid"])) if same_host and "pid" in status else True
    status["alive"] = status.get("state") not in ("stopped",) and pid_ok and (age < HEARTBEAT_STALE_S or status.get("state") == "loading")
    return status


class TrainerClient:
    """Controls the trainer worker of one project.

    Parameters
    ----------
    project
        Project directory.
    nice
        Niceness added to the worker (a trainer at nice 10 kept the UI's p99 latency at 9.5 ms
        instead of 13 ms with no loss of training speed, ``../shared/STACK.md``).
    python
        Interpreter for the worker (default: ``$AL_ANNOTATOR_TRAINER_PYTHON``, else this one; the
        SLURM trainer kernel sets it to a wrapper that runs the worker on a GPU node).
    """

    def __init__(self, project: str | os.PathLike, *, nice: int = 10, python: str | None = None) -> None:
        self.project = Path(project)
        if not (self.project / "project.json").exists():
            raise InputError(f"{self.project} is not an al_annotator project")
        self.nice = nice
        # AL_ANNOTATOR_TRAINER_PYTHON lets a kernel run the trainer elsewhere (e.g. `srun ... python` on a GPU node)
        self.python = python or os.environ.get("AL_ANNOTATOR_TRAINER_PYTHON") or sys.executable
        self.process: subprocess.Popen | None = None
        self.log_path = self.project / "trainer" / "worker.log"

    def start(self, *, watch: bool = True, rounds: int | None = None, extra_args: list[str] | None = None, **options: Any) -> int:
        """Start the worker (a no-op if one is alive); returns its pid.

        ``options`` map to the worker's flags: ``device="cpu"``, ``steps=40``, ``axes="z"``...
        """
        status = read_status(self.project)
        if status.get("alive"):
            return int(status["pid"])
        args = [self.python, "-m", "al_annotator.training.worker", str(self.project)]
        if watch:
            args.append("--watch")
        if rounds is not None:
            args += ["--rounds", str(rounds)]
        for key, value in options.items():
            if value is not None:
                args += [f"--{key.replace('_', '-')}", str(value)]
        args += list(extra_args or [])
        (self.project / "trainer").mkdir(exist_ok=True)
        stop = self.project / STOP_FILE
        if stop.exists():
            stop.unlink()
        log = open(self.log_path, "ab")
        nice = self.nice

        def preexec() -> None:  # pragma: no cover - runs in the child
            if nice:
                os.nice(nice)

        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        preexec_fn=preexec, start_new_session=True)
        log.close()
        return self.process.pid

    def status(self) -> dict[str, Any]:
        return read_status(self.project)

    def is_running(self) -> bool:
        if self.process is not None and self.process.poll() is None:
            return True
        return bool(read_status(self.project).get("alive"))

    def stop(self, timeout: float = 30.0) -> bool:
        """Ask the worker to stop (stop file + SIGTERM); wait up to ``timeout``; True when it is gone."""
        (self.project / "trainer").mkdir(exist_ok=True)
        (self.project / STOP_FILE).write_text(str(time.time()))
        pid = self.process.pid if self.process is not None else read_status(self.project).get("pid")
        if pid and _pid_alive(int(pid)):
            try:
                os.kill(int(pid), signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None:
                if self.process.poll() is not None:
                    return True
            elif not pid or not _pid_alive(int(pid)):
                return True
            time.sleep(0.1)
        return False

    def wait_for_version(self, version: int, timeout: float = 300.0, poll: float = 0.5) -> dict[str, Any]:
        """Block until model ``version`` (or newer) is published; returns current.json."""
        deadline = time.monotonic() + timeout
        cur_path = self.project / "models" / "current.json"
        while time.monotonic() < deadline:
            try:
                cur = json.loads(cur_path.read_text())
                if int(cur["version"]) >= version:
                    return cur
            except (FileNotFoundError, json.JSONDecodeError):
                pass
            if self.process is not None and self.process.poll() is not None:
                raise AlAnnotatorError(f"the trainer exited with code {self.process.returncode}; see {self.log_path}:\n{self.log_tail()}")
            time.sleep(poll)
        raise TimeoutError(f"no model version {version} within {timeout} s; trainer status: {self.status()}")

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text()[-n:]
        except FileNotFoundError:
            return ""
