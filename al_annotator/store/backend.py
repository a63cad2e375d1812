"""Where a project lives: a directory on disk, or memory (tests and throw-away sessions).

A backend provides the zarr store, small JSON documents written atomically, the edit-log
file and a lock that serialises label writers across threads *and* processes (two processes
writing the same zarr chunk lose updates: ``../shared/STACK.md`` measured 3 of 240).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

from .editlog import FileLogBackend, MemoryLogBackend

__all__ = ["LocalBackend", "MemoryBackend", "atomic_write_bytes", "atomic_write_json"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any, *, fsync: bool = False) -> None:
    atomic_write_bytes(path, json.dumps(obj, separators=(",", ":"), sort_keys=True).encode(), fsync=fsync)


class LocalBackend:
    """A project directory."""

    LOG_NAME = "edits.log"
    LOCK_NAME = ".lock"

    def __init__(self, root: str | os.PathLike, *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self._thread_lock = threading.RLock()
        self._lock_fd: int | None = None
        self._depth = 0

    @property
    def description(self) -> str:
        return str(self.root)

    def zarr_store(self, mode: str = "r+"):
        import zarr

        return zarr.storage.LocalStore(str(self.root / "data.zarr"), read_only=(mode == "r"))

    def read_json(self, name: str) -> Any | None:
        try:
            return json.loads((self.root / name).read_text())
        except FileNotFoundError:
            return None

    def write_json(self, name: str, obj: Any, *, fsync: bool = False) -> None:
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(target, obj, fsync=fsync)

    def log_backend(self) -> FileLogBackend:
        return FileLogBackend(self.root / self.LOG_NAME, fsync=self.fsync)

    def keep_aside(self, name: str, data: bytes) -> str:
        """Save bytes next to the project (never deleting them); returns where."""
        target = self.root / name
        n = 0
        while target.exists():
            n += 1
            target = self.root / f"{name}.{n}"
        target.write_bytes(data)
        return str(target)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive writer lock: re-entrant within a thread, exclusive across threads and processes."""
        with self._thread_lock:
            if self._depth == 0:
                fd = os.open(self.root / self.LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._lock_fd = fd
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._lock_fd is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                    os.close(self._lock_fd)
                    self._lock_fd = None


class MemoryBackend:
    """A project held in memory; same contract as :class:`LocalBackend`."""

    root = None

    def __init__(self) -> None:
        import zarr

        self._zarr = zarr.storage.MemoryStore()
        self._docs: dict[str, bytes] = {}
        self._log = MemoryLogBackend()
        self._lock = threading.RLock()
        self.aside: dict[str, bytes] = {}

    @property
    def description(self) -> str:
        return "<memory>"

    def zarr_store(self, mode: str = "r+"):
        return self._zarr

    def read_json(self, name: str) -> Any | None:
        raw = self._docs.get(name)
        return None if raw is None else json.loads(raw)

    def write_json(self, name: str, obj: Any, *, fsync: bool = False) -> None:
        self._docs[name] = json.dumps(obj, sort_keys=True).encode()

    def log_backend(self) -> MemoryLogBackend:
        return self._log

    def keep_aside(self, name: str, data: bytes) -> str:
        self.aside[name] = data
        return f"<memory>/{name}"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with self._lock:
            yield
