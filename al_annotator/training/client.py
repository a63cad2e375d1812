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
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import AlAnnotatorError, InputError

__all__ = ["TrainerClient", "read_status", "process_identity", "STATUS_FILE", "STOP_FILE", "HEARTBEAT_STALE_S"]

STATUS_FILE = "trainer/status.json"
STOP_FILE = "trainer/stop"
#: A status whose heartbeat is older than this (seconds) belongs to a worker that is gone.
HEARTBEAT_STALE_S = 30.0

_log = logging.getLogger(__name__)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True


def _proc_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot, /proc/PID/stat field 22);
    ``None`` where there is no /proc (then a pid cannot be told from a reused one)."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _is_zombie(pid: int) -> bool:
    """An exited process its parent has not reaped yet (it holds the pid but runs nothing)."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
        return stat[stat.rindex(")") + 2:].split()[0] in ("Z", "X", "x")
    except (OSError, ValueError, IndexError):
        return False


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _this_host() -> str:
    return socket.gethostname()


def process_identity(pid: int | None = None) -> dict[str, Any]:
    """What identifies a process beyond its pid (which the kernel reuses): the host, the boot
    and the process start time. The worker records it in ``trainer/status.json``."""
    pid = os.getpid() if pid is None else int(pid)
    return {"pid": pid, "host": _this_host(), "boot_id": _boot_id(), "pid_start": _proc_start_time(pid)}


def _status_pid(status: dict[str, Any]) -> int | None:
    pid = status.get("pid")
    return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None


def _same_host(status: dict[str, Any]) -> bool:
    return status.get("host") in (_this_host(), os.uname().nodename)


def _same_process(status: dict[str, Any]) -> bool | None:
    """True/False when the status's pid is/is not the process that wrote it; None when unknowable."""
    pid = _status_pid(status)
    if pid is None or not _same_host(status):
        return None
    if status.get("boot_id") and _boot_id() and status["boot_id"] != _boot_id():
        return False
    recorded = status.get("pid_start")
    if recorded is None:
        return None
    return _proc_start_time(pid) == recorded


def _is_trainer_of(status: dict[str, Any], project: Path) -> bool:
    """The status names a live process on this host that is provably the trainer of ``project``:
    same boot and start time as recorded, and a command line that runs al_annotator on it."""
    if _same_process(status) is not True:
        return False
    pid = _status_pid(status)
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return False
    if not any("al_annotator" in a or "al-annotator" in a for a in argv):
        return False
    target = project.resolve()
    for arg in argv[1:]:
        if arg and not arg.startswith("-"):
            try:
                if (cwd / arg).resolve() == target:
                    return True
            except (OSError, RuntimeError, ValueError):
                continue
    return False


def read_status(project: str | os.PathLike) -> dict[str, Any]:
    """The trainer status of a project, with ``alive`` (heartbeat fresh and process present).

    A damaged status file reads as "no trainer status" with a ``warning`` that says so.
    """
    path = Path(project) / STATUS_FILE
    try:
        status = json.loads(path.read_text())
    except FileNotFoundError:
        return {"state": "not started", "alive": False}
    except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError, a directory...
        return {"state": "unknown", "alive": False,
                "warning": f"{path} is unreadable ({type(exc).__name__}: {exc}); ignored it (a trainer start rewrites it)"}
    if not isinstance(status, dict):
        return {"state": "unknown", "alive": False,
                "warning": f"{path} is not a trainer status (a JSON {type(status).__name__}); ignored it (a trainer start rewrites it)"}
    try:
        heartbeat = float(status.get("heartbeat", 0))
    except (TypeError, ValueError):
        heartbeat = 0.0
    age = time.time() - heartbeat if heartbeat == heartbeat else float("inf")
    status["heartbeat_age"] = age
    pid = _status_pid(status)
    same_host = status.get("host") is None or _same_host(status)
    if same_host and pid is not None:
        pid_ok = _pid_alive(pid) and _same_process(status) is not False  # a reused pid is not our worker
    else:
        pid_ok = True  # another host (or no pid): only the heartbeat can tell
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
        #: What the last :meth:`stop` did (which process it signalled, or why none).
        self.stop_report: str | None = None

    def start(self, *, watch: bool = True, rounds: int | None = None, extra_args: list[str] | None = None, **options: Any) -> int:
        """Start the worker (a no-op if one is alive); returns its pid.

        ``options`` map to the worker's flags: ``device="cpu"``, ``steps=40``, ``axes="z"``...
        """
        status = read_status(self.project)
        if status.get("alive") and _status_pid(status) is not None:
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
        """Ask the worker to stop; wait up to ``timeout``; True when no trainer runs any more.

        The stop file (``trainer/stop``) is always written; a worker checks it between two
        steps, on any host. SIGTERM goes only to a process this client started, or to one that
        ``trainer/status.json`` names on this host *and* that is provably this project's
        trainer (same boot, same process start time, an al_annotator command line naming the
        project); never to a pid a stale or planted status names. ``self.stop_report`` says
        what was done.
        """
        (self.project / "trainer").mkdir(exist_ok=True)
        (self.project / STOP_FILE).write_text(str(time.time()))
        deadline = time.monotonic() + timeout
        if self.process is not None and self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            self.stop_report = f"sent SIGTERM to the trainer this client started (pid {self.process.pid})"
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return True
                time.sleep(0.1)
            return False
        status = read_status(self.project)
        pid = _status_pid(status)
        if pid is not None and _is_trainer_of(status, self.project):
            start = status.get("pid_start")
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self.stop_report = f"sent SIGTERM to this project's trainer (pid {pid})"
            while time.monotonic() < deadline:
                if not _pid_alive(pid) or _proc_start_time(pid) != start or _is_zombie(pid):
                    return True
                time.sleep(0.1)
            return False
        if not status.get("alive"):
            self.stop_report = "no trainer is running (wrote the stop request anyway)"
            return True
        self.stop_report = (
            f"{self.project / STATUS_FILE} names pid {status.get('pid')!r} on host {status.get('host')!r}, which this "
            f"machine cannot verify as this project's trainer: sent no signal, wrote the stop request "
            f"{self.project / STOP_FILE} (a live trainer stops at its next check)"
        )
        _log.warning(self.stop_report)
        while time.monotonic() < deadline:
            now = read_status(self.project)
            if now.get("state") == "stopped" or not now.get("alive"):
                return True
            time.sleep(0.2)
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
            except (OSError, ValueError, TypeError, KeyError):  # not there yet, or damaged (a trainer publish rewrites it)
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
