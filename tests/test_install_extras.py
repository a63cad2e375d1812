"""Installs sized to where the package runs: the wheel in a fresh venv, per extra.

Each environment is a new ``venv`` (no system site-packages) with the built wheel installed by pip
(``--no-deps``) and exactly the distributions its requirements resolve to, for the extras asked,
linked from this test environment's site-packages (so nothing is downloaded and an extra's
absence is real: the module is not on the path). The tests check what imports there and that
what is missing is named with the extra that installs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from al_annotator.extras import requirement_closure

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(sysconfig.get_paths()["purelib"])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (whl,) = out.glob("al_annotator-*.whl")
    return whl


def fresh_env(where: Path, wheel: Path, extras: set[str]) -> Path:
    """A new venv holding the wheel and the closure of ``al-annotator[extras]``; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    python = where / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    for name in requirement_closure(extras):
        dist = metadata.distribution(name)
        tops = {Path(f).parts[0] for f in dist.files or ()}  # the packages and the .dist-info (RECORD lists it)
        assert tops, f"{name} has no RECORD: it cannot be linked into a fresh environment"
        for top in tops:
            src = SITE / top
            if top != ".." and src.exists() and not (site / top).exists():
                (site / top).symlink_to(src)
    return python


def run_in(python: Path, code: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["AL_ANNOTATOR_DEBUG"] = ""
    return subprocess.run([str(python), "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def core_env(tmp_path_factory, wheel) -> Path:
    return fresh_env(tmp_path_factory.mktemp("core") / "venv", wheel, set())


def test_the_core_install_leaves_out_every_extra(core_env, tmp_path):
    out = run_in(core_env, """
        import importlib.util, sys
        print(sorted(m for m in ("torch", "timm", "monai", "matplotlib", "anywidget", "ipywidgets", "jupyterlab",
                                 "jupyter_client", "napari", "qtpy", "PyQt5", "PyQt6", "magicgui", "dask_jobqueue", "distributed")
                     if importlib.util.find_spec(m) is not None))
        import al_annotator
        assert al_annotator.__file__.startswith(sys.prefix), al_annotator.__file__   # the wheel, not the checkout
    """, tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_core_install_creates_paints_and_exports(core_env, tmp_path):
    """store, io, CLI and Session: the whole core loop runs where no extra is installed."""
    out = run_in(core_env, """
        import numpy as np, sys
        from al_annotator.cli import main
        np.save("vol.npy", (np.random.default_rng(0).random((8, 16, 16)) * 1000).astype("uint16"))
        assert main(["init", "proj", "--volume", "vol.npy", "--classes", "background,bone", "--no-napari"]) == 0
        from al_annotator import Session
        s = Session("proj")
        s.goto("z", 3)
        s.paint(np.arange(20), "bone"); s.undo(); s.redo()
        s.close()
        assert main(["export", "proj", "labels.tif", "--format", "tiff"]) == 0
        assert main(["check", "proj"]) == 0
        import tifffile
        assert int((tifffile.imread("labels.tif") == 2).sum()) == 20
        print("ok", sorted(m for m in ("torch", "anywidget", "napari", "qtpy") if m in sys.modules))
    """, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1] == "ok []", out.stdout


def test_each_front_end_names_the_extra_it_is_missing(core_env, tmp_path):
    out = run_in(core_env, """
        import numpy as np
        from al_annotator.cli import main
        from al_annotator.extras import MissingExtraError
        np.save("vol.npy", np.zeros((4, 8, 8), np.uint8))
        assert main(["init", "proj", "--volume", "vol.npy", "--no-napari"]) == 0
        assert main(["train", "proj", "--rounds", "1"]) == 2
        assert main(["install-kernels", "--prefix", "k"]) == 2
        from al_annotator.jupyter_ext import main as jupyter_main
        assert jupyter_main(["demo", "--print-command", "--dir", "d"]) == 2
        try:
            from al_annotator import Annotator
        except MissingExtraError as exc:
            print("widget:", exc)
        else:
            raise SystemExit("Annotator imported without anywidget")
        from al_annotator.core import Session
        s = Session.open("proj")
        try:
            s.start_trainer()
        except MissingExtraError as exc:
            print("trainer:", exc)
        else:
            raise SystemExit("a trainer started without torch")
        finally:
            s.close()
    """, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    err = out.stderr
    assert "`al-annotator train` needs the optional dependency 'torch'" in err and 'pip install "al-annotator[train]"' in err, err
    assert "`al-annotator install-kernels` needs the optional dependency 'jupyter_client'" in err, err
    assert "`python -m al_annotator.jupyter_ext demo` needs the optional dependency 'jupyter_core'" in err, err
    assert 'pip install "al-annotator[jupyter]"' in out.stdout and "anywidget" in out.stdout, out.stdout
    assert "trainer: the trainer needs the optional dependency 'torch'" in out.stdout, out.stdout
    assert "Traceback" not in err


def test_install_kernels_from_the_wheel_into_a_prefix(tmp_path, wheel):
    """pip alone (no checkout) carries the kernel specs: `al-annotator install-kernels --prefix P`."""
    python = fresh_env(tmp_path / "venv", wheel, {"jupyter"})
    prefix = tmp_path / "prefix"
    cli = python.parent / "al-annotator"
    out = subprocess.run([str(cli), "install-kernels", "--prefix", str(prefix), "--slurm-partition", "gpu"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    import json

    kdir = prefix / "share" / "jupyter" / "kernels"
    assert sorted(p.name for p in kdir.iterdir()) == ["al-annotator-cpu", "al-annotator-gpu", "al-annotator-slurm-gpu",
                                                      "al-annotator-slurm-trainer"]
    cpu = json.loads((kdir / "al-annotator-cpu" / "kernel.json").read_text())
    assert cpu["argv"][0] == str(python)
    slurm = json.loads((kdir / "al-annotator-slurm-gpu" / "kernel.json").read_text())
    assert slurm["argv"][-1] == "--partition=gpu"
    trainer = json.loads((kdir / "al-annotator-slurm-trainer" / "kernel.json").read_text())
    assert trainer["env"]["AL_ANNOTATOR_TRAINER_SRUN_ARGS"].endswith("--partition=gpu")
    assert (kdir / "al-annotator-slurm-gpu" / "slurm_kernel.py").is_file()
    # the kernel runs: its python is the fresh environment's, and it imports the wheel's al_annotator
    check = run_in(python, "import al_annotator, sys; print(al_annotator.__file__.startswith(sys.prefix))", tmp_path)
    assert check.stdout.strip() == "True", check.stdout + check.stderr


@pytest.mark.slow
def test_the_train_extra_runs_the_trainer_parts(tmp_path, wheel):
    python = fresh_env(tmp_path / "venv", wheel, {"train"})
    out = run_in(python, """
        import importlib.util
        import numpy as np
        from al_annotator.models import create_model, predict_proba_slices
        probs, _ = predict_proba_slices(create_model("hrnet_w18_small", n_classes=2), np.random.rand(2, 64, 64).astype(np.float32))
        assert probs.shape == (2, 2, 64, 64)
        assert importlib.util.find_spec("anywidget") is None and importlib.util.find_spec("napari") is None
        print("ok")
    """, tmp_path, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr


def test_the_jupyter_extra_builds_the_widget_without_torch(tmp_path, wheel):
    python = fresh_env(tmp_path / "venv", wheel, {"jupyter"})
    out = run_in(python, """
        import importlib.util, numpy as np
        from al_annotator import Annotator, create_project
        create_project("proj", np.zeros((4, 16, 16), np.uint8), classes="a,b").close()
        w = Annotator("proj")
        w.close()
        print("ok", importlib.util.find_spec("torch") is None)
    """, tmp_path, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok True"), out.stdout + out.stderr


@pytest.mark.slow
def test_the_napari_extra_runs_the_dock_on_qt6(tmp_path, wheel):
    """A fresh [napari] environment has Qt 6 only (no PyQt5, whose napari backend is deprecated),
    and the dock builds on it (offscreen, no display needed)."""
    python = fresh_env(tmp_path / "venv", wheel, {"napari"})
    out = run_in(python, """
        import importlib.util, os
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        import numpy as np, napari, qtpy
        from al_annotator import create_project
        from al_annotator.napari._widget import AnnotatorWidget
        create_project("proj", np.zeros((4, 16, 16), np.uint8), classes="a,b").close()
        viewer = napari.Viewer(show=False)
        dock = AnnotatorWidget(viewer, poll_ms=0)
        dock.open_project("proj")
        dock.wait_idle()
        dock.close_project()
        viewer.close()
        print("ok", qtpy.API_NAME, importlib.util.find_spec("PyQt5") is None, importlib.util.find_spec("torch") is None)
    """, tmp_path, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "ok PyQt6 True True", out.stdout + out.stderr


def test_the_demo_extra_is_what_run_demo_needs(tmp_path, wheel):
    """`./run demo` installs the demo extra (train + jupyter, no test tooling): the demo project, its
    notebook and the JupyterLab command come from that environment alone."""
    python = fresh_env(tmp_path / "venv", wheel, {"demo"})
    out = run_in(python, """
        import importlib.util, subprocess, sys
        for m in ("jupyterlab", "ipykernel", "anywidget", "torch", "timm"):
            assert importlib.util.find_spec(m) is not None, m
        assert all(importlib.util.find_spec(m) is None for m in ("pytest", "playwright", "voila", "napari")), "test tooling installed"
        r = subprocess.run([sys.executable, "-m", "al_annotator.jupyter_ext", "demo", "--print-command", "--dir", "."],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        print(r.stdout.strip().splitlines()[-1])
    """, tmp_path, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "jupyterlab" in out.stdout and (tmp_path / "al_annotator_quickstart.ipynb").is_file(), out.stdout
    assert (tmp_path / "al_annotator_demo" / "project.json").is_file()


def test_the_cluster_extra_brings_dask_jobqueue_without_the_training_stack(tmp_path, wheel):
    python = fresh_env(tmp_path / "venv", wheel, {"cluster"})
    out = run_in(python, """
        import importlib.util
        import dask_jobqueue, distributed
        print(sorted(m for m in ("torch", "anywidget", "napari") if importlib.util.find_spec(m) is not None))
    """, tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.slow
def test_pip_resolves_every_extra_together_under_the_ci_constraints(tmp_path, wheel):
    """A real resolution (the package index, no install): [all] has no conflicting pins, and pip picks
    the same distributions the tests above link (a difference: this environment is stale, refresh it
    with ./run test)."""
    import json

    report = tmp_path / "report.json"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "-q", "--ignore-installed",
                          "-c", str(ROOT / ".ci" / "constraints.txt"), "--report", str(report), f"al-annotator[all] @ {wheel.as_uri()}"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    from packaging.utils import canonicalize_name

    resolved = {canonicalize_name(i["metadata"]["name"]) for i in json.loads(report.read_text())["install"]}
    linked = requirement_closure({"all"}) | {"al-annotator"}
    assert resolved == linked, f"pip only: {sorted(resolved - linked)}; linked only: {sorted(linked - resolved)}"
