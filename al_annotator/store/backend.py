"""Where a project lives: a directory on disk, or memory (tests and throw-away sessions).

A backend provides the zarr store, small JSON documents written atomically, the edit-log
file and a lock that serialises label writers across threads *and* processes (two processes
writing the same zarr chunk lose updates: ``../shared/STACK.md`` measured 3 of 240).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

from ..errors import StoreIntegrityError
from .editlog import FileLogBackend, MemoryLogBackend
from .editlog import _symlink_message as symlink_message
from .perms import SHARED_FILE_BITS, chmod_new_file, ensure_shared_dirs, file_mode, is_shared

#: The entries of a project directory that al_annotator writes (none may be a symbolic link).
PROJECT_ENTRIES = ("project.json", "project.json.bak", "state.json", "edits.log", "edits.log.torn", ".lock", "data.zarr", "models", "trainer")

__all__ = ["LocalBackend", "MemoryBackend", "atomic_write_bytes", "atomic_write_json"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never half of one.

    The new file keeps the mode of the one it replaces (a new one gets the umask's, plus group rw in a
    group-writable project: :mod:`~al_annotator.store.perms`), not ``mkstemp``'s 0600."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        chmod_new_file(fd, path.parent, keep=path)
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
        #: a group-writable project (setgid + group-writable directory): every file made group rw
        self.shared = is_shared(self.root)
        self._thread_lock = threading.RLock()
        self._lock_fd: int | None = None
        self._depth = 0

    @property
    def description(self) -> str:
        return str(self.root)

    def zarr_store(self, mode: str = "r+"):
        import zarr

        cls = _shared_local_store() if self.shared else zarr.storage.LocalStore
        return cls(str(self.root / "data.zarr"), read_only=(mode == "r"))

    def read_json(self, name: str) -> Any | None:
        """The parsed document, ``None`` when the file does not exist; a damaged file (not JSON,
        not UTF-8, a symbolic link) raises :class:`StoreIntegrityError` naming it."""
        path = self.root / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StoreIntegrityError(symlink_message(path)) from exc
            raise StoreIntegrityError(f"{path} cannot be read ({exc}); check its permissions") from exc
        with os.fdopen(fd, "rb") as fh:
            raw = fh.read()
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise StoreIntegrityError(
                f"{path} is damaged ({exc.__class__.__name__}: {exc}); restore it from a backup, or run "
                f"`al-annotator check {self.root} --repair`, which rebuilds what can be rebuilt from the edit log"
            ) from exc

    def write_json(self, name: str, obj: Any, *, fsync: bool = False) -> None:
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(target, obj, fsync=fsync)

    def log_backend(self) -> FileLogBackend:
        return FileLogBackend(self.root / self.LOG_NAME, fsync=self.fsync)

    def keep_aside(self, name: str, data: bytes) -> str:
        """Save bytes next to the project under a new name (never overwriting or following a link,
        even a dangling one); returns where."""
        n = 0
        while True:
            target = self.root / (name if n == 0 else f"{name}.{n}")
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            except FileExistsError:  # also a (dangling) symbolic link of that name
                n += 1
                continue
            chmod_new_file(fd, self.root)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            return str(target)

    def check_no_symlinks(self) -> None:
        """Refuse a project whose own files are symbolic links (the directory itself may be one)."""
        for name in PROJECT_ENTRIES:
            path = self.root / name
            if path.is_symlink():
                raise StoreIntegrityError(symlink_message(path))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive writer lock: re-entrant within a thread, exclusive across threads and processes."""
        with self._thread_lock:
            if self._depth == 0:
                fd = self._open_lock()
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


    def _open_lock(self) -> int:
        """The lock file, created with the project's mode; read-only when another user made it
        without group write (``flock`` needs no write access)."""
        path = self.root / self.LOCK_NAME
        try:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, file_mode(self.root))
            except FileExistsError:
                try:
                    return os.open(path, os.O_RDWR | os.O_NOFOLLOW)
                except PermissionError:
                    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StoreIntegrityError(symlink_message(path)) from exc
            raise
        chmod_new_file(fd, self.root)
        return fd


@functools.cache
def _shared_local_store():
    """zarr's ``LocalStore`` whose written chunks (and the folders it makes for them) are group rw:
    zarr writes through a temporary file with the writer's umask."""
    import zarr

    class SharedLocalStore(zarr.storage.LocalStore):
        def _share(self, key: str) -> None:
            path = Path(self.root) / key
            with contextlib.suppress(OSError):  # the chunk is written; a mode the filesystem refuses is no error
                st = path.stat()
                if st.st_uid == os.geteuid() and st.st_mode & SHARED_FILE_BITS != SHARED_FILE_BITS:
                    os.chmod(path, st.st_mode & 0o777 | SHARED_FILE_BITS)
                ensure_shared_dirs(path, Path(self.root))

        async def set(self, key, value) -> None:
            await super().set(key, value)
            await asyncio.to_thread(self._share, key)

        async def set_if_not_exists(self, key, value) -> None:
            await super().set_if_not_exists(key, value)
            await asyncio.to_thread(self._share, key)

    return SharedLocalStore


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
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise StoreIntegrityError(f"<memory>/{name} is damaged ({exc})") from exc

    def check_no_symlinks(self) -> None:
        pass

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
