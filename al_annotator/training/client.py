"""Start, stop and watch a trainer process from Python (no torch import here).

The notebook widget and the napari dock use :class:`TrainerClient`; it talks to the worker only
through the project directory (``trainer/status.json``, ``trainer/stop``) and signals.

Only one trainer per project runs: the worker holds :class:`TrainerLock` (an ``flock`` on
``trainer/.lock``) for its whole life, and the kernel drops it when the process ends, however it
ends (SIGKILL included), so the lock is never stale. Where ``flock`` does not reach across hosts
(NFS mounted with ``local_lock``, Lustre ``localflock``) or is missing, ``trainer/status.json``
(host, pid, heartbeat) is the second line: :meth:`TrainerClient.start` checks it first.

Examples
--------
>>> client = TrainerClient("my_project")            # doctest: +SKIP
>>> client.start(watch=True)                         # doctest: +SKIP
>>> client.status()["state"]                         # doctest: +SKIP
'training'
>>> client.stop()                                    # doctest: +SKIP
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock, status.json is the only line
    fcntl = None  # type: ignore[assignment]

from ..errors import AlAnnotatorError, InputError, ProjectNotFoundError, StoreIntegrityError, StoreWriteError

__all__ = ["TrainerClient", "TrainerLock", "TrainerRunningError", "read_status", "process_identity", "STATUS_FILE",
           "STOP_FILE", "LOCK_FILE", "HEARTBEAT_STALE_S"]

STATUS_FILE = "trainer/status.json"
STOP_FILE = "trainer/stop"
#: The trainer lock: whoever holds an ``flock`` on it is this project's one trainer.
LOCK_FILE = "trainer/.lock"
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
    status["alive"] = status.get("state") not in ("stopped", "failed") and pid_ok and (age < HEARTBEAT_STALE_S or status.get("state") == "loading")
    return status


class TrainerRunningError(AlAnnotatorError):
    """Another trainer holds this project's trainer lock; the message names it (pid, host) and the
    way on. ``holder`` is what is known of it (``pid``, ``host``, ``state``...)."""

    def __init__(self, message: str, holder: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.holder = dict(holder or {})


#: flock errors that mean "this filesystem has no (working) flock", not "someone holds it".
_FLOCK_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}


def _try_flock(fd: int) -> bool:
    """Take the exclusive lock without waiting: True when taken, False when another holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            return False
        raise
    return True


def _describe_holder(project: Path, recorded: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Who holds the lock, in words: what the holder wrote into the lock file, and
    ``trainer/status.json`` where it names the same process (or when the lock file names none)."""
    status = read_status(project)
    holder = {k: recorded.get(k) for k in ("pid", "host") if recorded.get(k) is not None}
    same = holder.get("pid") is None or (status.get("pid") == holder.get("pid") and status.get("host") == holder.get("host"))
    if same and _status_pid(status) is not None:
        holder.setdefault("pid", status["pid"])
        holder.setdefault("host", status.get("host"))
        holder["state"] = status.get("state")
        holder["heartbeat_age"] = status.get("heartbeat_age")
    if holder.get("pid") is None:
        return "a trainer that has not recorded its pid yet (it is starting)", holder
    words = f"pid {holder['pid']} on host {holder.get('host') or 'unknown'}"
    if holder.get("state"):
        age = holder.get("heartbeat_age")
        beat = f", heartbeat {age:.0f} s ago" if isinstance(age, (int, float)) and age == age and age != float("inf") else ""
        words += f" (state {holder['state']}{beat})"
    else:
        words += " (starting: it has not written trainer/status.json yet)"
    return words, holder


class TrainerLock:
    """The exclusive lock of a project's one trainer: an ``flock`` on ``PROJECT/trainer/.lock``.

    The worker takes it before it touches anything and holds it for its whole life; the kernel
    drops it when the process ends, however it ends (a SIGKILL included), so a lock is never stale.
    :meth:`TrainerClient.start` takes it before spawning and hands the open file to the worker
    (``--lock-fd``), so two starts cannot both spawn a worker. The file is opened with
    ``O_NOFOLLOW`` (a planted link is refused) and records who holds it (pid, host), which is what
    a refused start names.

    ``held`` is False where the filesystem has no working ``flock`` (``note`` says why); then
    ``trainer/status.json`` (host, pid, heartbeat) is the only line, as it is across hosts on a
    shared filesystem whose locks are local to each host.

    Examples
    --------
    >>> lock = TrainerLock.acquire("my_project")    # doctest: +SKIP
    >>> TrainerLock.acquire("my_project")           # doctest: +SKIP
    Traceback (most recent call last):
    TrainerRunningError: another trainer is running on my_project: pid 4242 on host node1 ...
    >>> lock.close()                                # doctest: +SKIP
    """

    def __init__(self, path: Path, fd: int, *, held: bool, note: str | None = None) -> None:
        self.path = path
        self.fd: int | None = fd
        self.held = held
        self.note = note

    @classmethod
    def acquire(cls, project: str | os.PathLike, *, inherited_fd: int | None = None) -> TrainerLock:
        """Take the lock of ``project`` without waiting (or adopt ``inherited_fd``, the lock a
        :class:`TrainerClient` took and passed on); raises :class:`TrainerRunningError` naming
        the trainer that holds it."""
        root = Path(project).expanduser()
        if not (root / "project.json").is_file():
            raise ProjectNotFoundError(f"{root} is not an al_annotator project (no project.json); create one with `al-annotator init`")
        path = root / LOCK_FILE
        if inherited_fd is not None:
            adopted = cls._adopt(path, inherited_fd)
            if adopted is not None:
                return adopted
        if fcntl is None:  # pragma: no cover
            return cls(path, -1, held=False, note="no flock on this platform: trainer/status.json is the only guard")
        fd = _open_lock_file(path)
        try:
            taken = _try_flock(fd)
        except OSError as exc:
            if exc.errno in _FLOCK_UNSUPPORTED:
                note = (f"flock on {path} is not supported here ({exc.strerror}); only trainer/status.json "
                        "(host, pid, heartbeat) guards against a second trainer")
                _log.warning(note)
                return cls(path, fd, held=False, note=note)
            os.close(fd)
            raise StoreWriteError(f"cannot lock {path} ({type(exc).__name__}: {exc}); the trainer needs a writable project") from None
        if not taken:
            try:
                recorded = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except (OSError, ValueError):
                recorded = {}
            finally:
                os.close(fd)
            words, holder = _describe_holder(root, recorded if isinstance(recorded, dict) else {})
            raise TrainerRunningError(
                f"another trainer is running on {root}: {words}. Only one trainer per project can run: stop it with "
                f"`al-annotator train {root} --stop` or the trainer's Stop button, or wait for it to finish", holder)
        os.ftruncate(fd, 0)  # whoever held it before is gone
        return cls(path, fd, held=True)

    @classmethod
    def _adopt(cls, path: Path, fd: int) -> TrainerLock | None:
        """The lock a client passed on, if ``fd`` really is this project's lock file (a worker
        that a wrapper ran on another host has no such descriptor: it takes the lock itself)."""
        if fcntl is None:  # pragma: no cover
            return None
        try:
            mine, there = os.fstat(fd), os.stat(path, follow_symlinks=False)
        except OSError:
            return None
        if not stat.S_ISREG(mine.st_mode) or (mine.st_dev, mine.st_ino) != (there.st_dev, there.st_ino):
            return None
        os.set_inheritable(fd, False)
        try:
            taken = _try_flock(fd)  # the same open file: succeeds when the client's lock came along
        except OSError:
            return None
        if not taken:
            return None  # not a lock this process was given; acquire() says who holds it
        return cls(path, fd, held=True)

    def record(self, identity: dict[str, Any]) -> None:
        """Write who holds the lock (``process_identity()``) into the lock file."""
        if self.fd is None or self.fd < 0 or not self.held:
            return
        data = json.dumps(identity).encode()
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, data, 0)
        except OSError as exc:  # only the message of a refused start loses its pid
            _log.warning("could not record the trainer in %s: %s", self.path, exc)

    def close(self) -> None:
        """Close this process's handle; the lock goes when the last process holding it closes it
        (never ``LOCK_UN``: that would also drop the lock of a worker it was handed to)."""
        if self.fd is not None and self.fd >= 0:
            os.close(self.fd)
        self.fd = None

    def __enter__(self) -> TrainerLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _open_lock_file(path: Path) -> int:
    path.parent.mkdir(exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StoreIntegrityError(f"{path} is a symbolic link, not the trainer lock; remove it (`rm {path}`) and start again") from None
        if exc.errno == errno.EISDIR:
            raise StoreIntegrityError(f"{path} is a directory, not the trainer lock; remove it and start again") from None
        raise StoreWriteError(f"cannot open the trainer lock {path} ({type(exc).__name__}: {exc}); "
                              "the trainer needs a writable project") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StoreIntegrityError(f"{path} is not a plain file, so it cannot be the trainer lock; remove it and start again")
    return fd


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
        ``lr`` and ``input_norm`` default to ``"auto"`` (chosen from the data at the start of the run,
        see :class:`~al_annotator.training.config.TrainConfig`); ``lr=3e-3, input_norm="slice"`` sets them.

        A trainer this client started, or one whose ``trainer/status.json`` is alive, is returned
        as is. Otherwise the trainer lock (:class:`TrainerLock`) is taken before spawning and
        handed to the worker, so two starts from two kernels cannot both run one; when another
        process holds it (a trainer still starting, or one whose status this host cannot see),
        :class:`TrainerRunningError` names it and the way on.
        """
        if self.process is not None and self.process.poll() is None:
            return self.process.pid
        status = read_status(self.project)
        if status.get("alive") and _status_pid(status) is not None:
            return int(status["pid"])
        if os.path.realpath(self.python) == os.path.realpath(sys.executable):
            import importlib.util

            if importlib.util.find_spec("torch") is None:  # the worker would die on its first import
                from ..extras import MissingExtraError

                raise MissingExtraError("train", "torch", "the trainer")
        args = [self.python, "-m", "al_annotator.training.worker", str(self.project)]
        if watch:
            args.append("--watch")
        if rounds is not None:
            args += ["--rounds", str(rounds)]
        for key, value in options.items():
            flag = key.replace("_", "-")
            if isinstance(value, bool):  # switches: continuous=False -> --no-continuous
                args.append(f"--{flag}" if value else f"--no-{flag}")
            elif value is not None:
                args += [f"--{flag}", str(value)]
        args += list(extra_args or [])
        (self.project / "trainer").mkdir(exist_ok=True)
        lock = TrainerLock.acquire(self.project)  # TrainerRunningError: another trainer holds it
        try:
            # The open lock goes to the worker (the same open file, so the same lock): no gap in
            # which a second start could spawn one. Not through a wrapper (srun...): the worker then
            # runs on another node and takes the lock there, and a wrapper holding it would block it.
            hand_off = lock.held and os.path.realpath(self.python) == os.path.realpath(sys.executable)
            if hand_off:
                args += ["--lock-fd", str(lock.fd)]
            stop = self.project / STOP_FILE
            if stop.exists():
                stop.unlink()
            log = open(self.log_path, "ab")
            nice = self.nice

            def preexec() -> None:  # pragma: no cover - runs in the child
                if nice:
                    os.nice(nice)

            try:
                self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                preexec_fn=preexec, start_new_session=True,
                                                pass_fds=(lock.fd,) if hand_off else ())
            finally:
                log.close()
            if hand_off:
                lock.record(process_identity(self.process.pid))  # the worker rewrites it; a refused start names it meanwhile
        finally:
            lock.close()  # the worker holds the lock now (or, without a hand-off, takes it itself)
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
