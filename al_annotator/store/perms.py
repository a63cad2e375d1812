"""The permissions of project files: the user's umask, or a project shared by a group.

A project is created with the creating user's umask (a ``mkdtemp``/``mkstemp`` alone would make it
0700 with 0600 files whatever the umask, so a colleague, or a trainer running under another account
on a beamline or cluster filesystem, could not read it).

A **group-writable** project (``create_project(..., group_writable=True)``, ``al-annotator init
--group-writable``) follows ``git init --shared=group``: its directories are setgid (new files and
directories take the directory's group, and Linux passes the setgid bit on to new subdirectories)
and group-writable, and every file is readable and writable by the group, whoever writes it later
and whatever their umask. The setting *is* the directory mode: a directory with both the setgid
bit and group write is shared, so every process (another user's napari, a trainer on a GPU node)
sees it without reading a setting. Files replaced by an atomic write keep their mode.

Examples
--------
>>> import os, tempfile
>>> d = tempfile.mkdtemp()
>>> os.chmod(d, 0o2770)
>>> is_shared(d), oct(file_mode(d) & 0o060)
(True, '0o60')
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from ..errors import InputError

__all__ = ["current_umask", "is_shared", "file_mode", "dir_mode", "set_project_dir_mode", "chmod_new_file", "share_tree",
           "ensure_shared_dirs", "adopt_shared_umask"]

SHARED_DIR_BITS = stat.S_ISGID | stat.S_IRWXG
SHARED_FILE_BITS = stat.S_IRGRP | stat.S_IWGRP


def current_umask() -> int:
    """The process umask, read without changing it (Linux ``/proc``; elsewhere set and restored)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def adopt_shared_umask(directory: str | os.PathLike) -> int:
    """In a group-writable project, clear the group bits of this process's umask, so what a process
    of the project's own writes outside the store (the trainer's checkpoints, scores, metrics and
    log) stays the group's to read and write, as the store's writes do. Returns the umask in force."""
    mask = current_umask()
    if is_shared(directory) and mask & 0o070:
        mask &= ~0o070
        os.umask(mask)
    return mask


def is_shared(directory: str | os.PathLike) -> bool:
    """Whether files made in ``directory`` belong to a group-writable project (setgid + group write)."""
    try:
        mode = os.stat(directory).st_mode
    except OSError:
        return False
    return mode & (stat.S_ISGID | stat.S_IWGRP) == (stat.S_ISGID | stat.S_IWGRP)


def file_mode(directory: str | os.PathLike) -> int:
    """The mode of a new file in ``directory``: what the umask allows, plus group rw when shared."""
    mode = 0o666 & ~current_umask()
    return mode | SHARED_FILE_BITS if is_shared(directory) else mode


def dir_mode(shared: bool) -> int:
    """The mode of a new project directory: what the umask allows, plus setgid and group rwx when shared."""
    mode = 0o777 & ~current_umask()
    return mode | SHARED_DIR_BITS if shared else mode


def set_project_dir_mode(path: str | os.PathLike, group_writable: bool) -> None:
    """Give a new project directory (``mkdtemp`` makes it 0700) the umask's mode, or the group's.

    A filesystem without Unix modes keeps what it gives, unless the project must be the group's:
    then :class:`InputError` says so before anything is written."""
    try:
        os.chmod(path, dir_mode(group_writable))
    except OSError as exc:
        if group_writable:
            raise InputError(f"cannot make {path} group-writable ({exc.strerror}): this filesystem keeps no Unix group "
                             "permissions; create the project without --group-writable, or on one that does") from exc
        return
    if group_writable and not is_shared(path):
        raise InputError(f"{path}'s filesystem ignored the setgid and group-write bits, so a group-writable project "
                         "cannot be kept so; create it without --group-writable, or on a filesystem with Unix permissions")


def chmod_new_file(fd: int, directory: str | os.PathLike, keep: str | os.PathLike | None = None) -> None:
    """Give a file just created in ``directory`` (open as ``fd``) its project mode.

    ``keep``: the file it replaces; its permission bits are kept (plus group rw when shared), so an
    atomic rewrite never narrows what another user may do with the file."""
    mode = file_mode(directory)
    if keep is not None:
        try:
            old = os.stat(keep, follow_symlinks=False)
        except OSError:
            old = None
        if old is not None and stat.S_ISREG(old.st_mode):
            mode = stat.S_IMODE(old.st_mode) & 0o777 | (mode & SHARED_FILE_BITS)
    try:
        os.fchmod(fd, mode)
    except OSError:  # a filesystem without Unix modes (some SMB/FUSE mounts): the write itself must not fail
        pass


def share_tree(root: str | os.PathLike) -> None:
    """Make every directory under ``root`` setgid and group rwx and every file group rw (at creation).

    Directories and files get the root's group (``chown`` to a group the owner belongs to)."""
    root = Path(root)
    gid = os.stat(root).st_gid
    for dirpath, dirnames, filenames in os.walk(root):
        for d in [dirpath, *(os.path.join(dirpath, n) for n in dirnames)]:
            st = os.stat(d, follow_symlinks=False)
            if st.st_gid != gid:
                os.chown(d, -1, gid, follow_symlinks=False)
            os.chmod(d, stat.S_IMODE(st.st_mode) | SHARED_DIR_BITS)
        for name in filenames:
            f = os.path.join(dirpath, name)
            st = os.stat(f, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                continue
            if st.st_gid != gid:
                os.chown(f, -1, gid, follow_symlinks=False)
            os.chmod(f, stat.S_IMODE(st.st_mode) | SHARED_FILE_BITS)


def ensure_shared_dirs(path: Path, root: Path) -> None:
    """Directories between ``root`` and ``path`` (a new file) that this process owns get group rwx
    in a shared project (zarr creates chunk folders with the writer's umask)."""
    for d in path.parents:
        if d == root or root not in d.parents:
            break
        st = os.stat(d)
        if st.st_uid == os.geteuid() and st.st_mode & SHARED_DIR_BITS != SHARED_DIR_BITS:
            with contextlib.suppress(OSError):  # as chmod_new_file: never fail the write for a mode
                os.chmod(d, stat.S_IMODE(st.st_mode) | SHARED_DIR_BITS)
