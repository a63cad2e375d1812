"""Project files get the user's umask, and a group-writable project stays usable by its group.

The shared-project test runs a second, real account (created here with ``useradd``; root only) in
the project's group, which paints into a project another user created under a strict umask.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

from al_annotator.store import create_project, open_project
from al_annotator.types import SliceRef

ROOT = Path(__file__).resolve().parents[1]


def modes(root: Path) -> dict[str, int]:
    """Permission bits (with setgid) of everything under ``root``, by relative path ('.' is root)."""
    out = {".": stat.S_IMODE(os.stat(root).st_mode)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = stat.S_IMODE(os.stat(p).st_mode)
    return out


@pytest.fixture
def umask():
    """Set the process umask for one test (restored after it)."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def _project_with_an_edit(path: Path) -> None:
    store = create_project(path, np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8), classes="a,b")
    store.paint(SliceRef("z", 1), np.arange(5), "b")  # edits.log, labels chunk and state.json rewritten
    store.close()


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_a_new_project_follows_the_umask(tmp_path, umask, mask):
    umask(mask)
    _project_with_an_edit(tmp_path / "p")
    got = modes(tmp_path / "p")
    want_dir, want_file = 0o777 & ~mask, 0o666 & ~mask
    for rel in (".", "data.zarr", "data.zarr/labels"):
        assert got[rel] == want_dir, (rel, oct(got[rel]))
    for rel in ("project.json", "project.json.bak", "state.json", "edits.log", ".lock", "data.zarr/labels/zarr.json"):
        assert got[rel] == want_file, (rel, oct(got[rel]))
    chunks = [rel for rel in got if rel.startswith("data.zarr/labels/c/") and os.path.isfile(tmp_path / "p" / rel)]
    assert chunks and {got[c] for c in chunks} == {want_file}


def test_an_atomic_rewrite_keeps_the_file_mode(tmp_path, umask):
    umask(0o022)
    _project_with_an_edit(tmp_path / "p")
    state = tmp_path / "p" / "state.json"
    os.chmod(state, 0o640)
    store = open_project(tmp_path / "p")
    store.paint(SliceRef("z", 2), np.arange(3), "a")
    store.close()
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o640


@pytest.fixture
def colleague():
    """A second account and a group the test's user and it share; removed after the test."""
    if os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("setpriv") is None:
        pytest.skip("needs root, useradd and setpriv to create a second user (run the suite as root, as .ci/run does)")
    tag = uuid.uuid4().hex[:6]
    group, user = f"alshare{tag}", f"alcolleague{tag}"
    subprocess.run(["groupadd", group], check=True)
    subprocess.run(["useradd", "--no-create-home", "--gid", group, "--shell", "/bin/sh", user], check=True)
    base = Path(tempfile.mkdtemp(prefix="al_shared_", dir="/tmp"))
    try:
        os.chown(base, 0, grp.getgrnam(group).gr_gid)
        os.chmod(base, 0o2775)  # a lab's shared folder: setgid, group-writable
        probe = run_as(user, "import numpy, al_annotator", base)
        if probe.returncode != 0:  # e.g. a checkout or venv under a 0700 directory (mktemp -d, /root)
            pytest.skip(f"the second account cannot use this interpreter and checkout ({sys.executable}, {ROOT}): a "
                        f"directory above them is not readable by other users; run the suite from a world-readable "
                        f"clone ({probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else 'no output'})")
        yield user, group, base
    finally:
        shutil.rmtree(base, ignore_errors=True)
        subprocess.run(["userdel", user], check=False)
        subprocess.run(["groupdel", group], check=False)


def run_as(user: str, code: str, cwd: Path, mask: int = 0o022) -> subprocess.CompletedProcess:
    """``code`` in this interpreter as ``user`` (its own uid and groups, umask ``mask``)."""
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(ROOT)}
    prog = f"import os; os.umask({mask:#o})\n" + textwrap.dedent(code)
    return subprocess.run(["setpriv", f"--reuid={user}", f"--regid={pwd.getpwnam(user).pw_gid}", "--init-groups",
                           sys.executable, "-c", prog], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_a_group_writable_project_is_read_and_written_by_a_second_uid(colleague, umask, capsys):
    user, group, base = colleague
    umask(0o077)  # the creator's strict umask must not lock the colleague out
    store = create_project(base / "shared", np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8), classes="a,b",
                           group_writable=True)
    store.paint(SliceRef("z", 0), np.arange(4), "a")
    store.close()
    gid = grp.getgrnam(group).gr_gid
    for rel, mode in modes(base / "shared").items():
        p = base / "shared" / rel
        assert os.stat(p).st_gid == gid, rel
        want = 0o2770 if p.is_dir() else 0o660
        assert mode & want == want, (rel, oct(mode))
    out = run_as(user, """
        import numpy as np
        from al_annotator.store import open_project
        from al_annotator.types import SliceRef
        s = open_project("shared", author="colleague")
        assert int((np.asarray(s.labels[0]) == 1).sum()) == 4
        s.paint(SliceRef("z", 3), np.arange(7), "b")
        s.close()
        print("painted")
    """, base)
    assert out.returncode == 0 and "painted" in out.stdout, out.stdout + out.stderr
    # what the colleague rewrote (state.json, the labels chunk) is still the group's to read and write
    colleague_uid = pwd.getpwnam(user).pw_uid
    rewritten = [rel for rel, mode in modes(base / "shared").items() if os.stat(base / "shared" / rel).st_uid == colleague_uid]
    assert "state.json" in rewritten and any(r.startswith("data.zarr/labels/c/") for r in rewritten), rewritten
    for rel in rewritten:
        p = base / "shared" / rel
        assert stat.S_IMODE(os.stat(p).st_mode) & 0o060 == 0o060 and os.stat(p).st_gid == gid, rel
    again = open_project(base / "shared")
    assert int((np.asarray(again.labels[3]) == 2).sum()) == 7
    again.close()
    # `info` says who shares it
    from al_annotator.cli import main

    capsys.readouterr()
    assert main(["info", str(base / "shared")]) == 0
    assert f"access       group-writable: the members of {group} read and write it" in capsys.readouterr().out


def test_without_group_write_a_second_uid_reads_but_cannot_write(colleague, umask):
    user, _, base = colleague
    umask(0o022)
    _project_with_an_edit(base / "mine")
    out = run_as(user, """
        import numpy as np
        from al_annotator.store import open_project
        s = open_project("mine", read_only=True)
        print("read", int((np.asarray(s.labels[1]) == 2).sum()))
    """, base)
    assert out.returncode == 0 and out.stdout.strip() == "read 5", out.stdout + out.stderr


def test_install_kernels_into_a_folder_the_user_cannot_write_says_use_user(colleague):
    """A JupyterHub user's environment is often read-only: the command says --user or --prefix."""
    pytest.importorskip("jupyter_client", reason="install-kernels needs the jupyter extra")
    user, _, base = colleague
    locked = base / "readonly_prefix"
    locked.mkdir()
    os.chmod(locked, 0o755)  # root's, not the colleague's
    out = run_as(user, f"""
        from al_annotator.cli import main
        raise SystemExit(main(["install-kernels", "--prefix", {str(locked)!r}, "--only", "cpu"]))
    """, base)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "cannot install the kernel specs there" in out.stderr and "--user" in out.stderr and "Traceback" not in out.stderr


def test_the_trainer_of_a_group_writable_project_writes_its_files_for_the_group(tmp_path):
    """The worker process (under a strict umask) adopts the project's sharing for what it writes itself."""
    create_project(tmp_path / "shared", np.zeros((4, 8, 8), np.uint16), classes="a,b", group_writable=True).close()
    prog = ("import os, sys; from pathlib import Path; os.umask(0o077)\n"
            "from al_annotator.training.worker import LOG_FILE, _append_to_log, main\n"
            f"rc = main([{str(tmp_path / 'shared')!r}, '--rounds', '1'])\n"
            f"_append_to_log(Path({str(tmp_path / 'shared')!r}) / LOG_FILE, 'a line')  # a file it makes itself, after the run\n"
            "sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "no labelled slices" in out.stderr, out.stdout + out.stderr  # refused, after writing its files
    for rel in ("trainer/worker.log", "trainer/status.json"):
        mode = stat.S_IMODE(os.stat(tmp_path / "shared" / rel).st_mode)
        assert mode & 0o060 == 0o060, (rel, oct(mode))
