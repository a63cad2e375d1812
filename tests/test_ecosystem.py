"""The package as PyPI, the napari hub, JupyterHub and a shared filesystem expect it.

Metadata (classifiers, Project-URLs, a description that starts with what the package does and
``pip install``), the napari manifest (``npe2 validate``), extras sized to where the package runs,
and progress bars on the command line.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from email.parser import Parser
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def wheel_metadata(tmp_path_factory):
    """The METADATA of a freshly built wheel (what PyPI and the napari hub read)."""
    import zipfile

    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (whl,) = out.glob("al_annotator-*.whl")
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    return Parser().parsestr(meta), names, entry_points


def test_napari_hub_and_pypi_metadata(wheel_metadata):
    meta, _, entry_points = wheel_metadata
    classifiers = meta.get_all("Classifier")
    for c in ("Framework :: napari", "Framework :: Jupyter :: JupyterLab :: Extensions :: Prebuilt",
              "Topic :: Scientific/Engineering :: Image Processing", "Intended Audience :: Science/Research"):
        assert c in classifiers, c
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert {"Homepage", "Source", "Bug Tracker", "Documentation"} <= set(urls), urls
    assert all(u.startswith("https://") for u in urls.values())
    assert meta["Summary"].startswith("Interactive annotation and active learning")
    # the long description opens with what the package does and how to pip install it, not with ./run
    body = meta.get_payload()
    assert body.lstrip().startswith("# al_annotator"), body[:200]
    # while the checkout's README opens with exactly the two commands for a fresh machine
    head = (ROOT / "README.md").read_text().split("```")[1].strip().splitlines()
    assert [line.split()[0:2] for line in head] == [["bash"], ["./run", "demo"], ["./run", "test"]], head
    first_run = body.find("./run")
    assert "pip install al-annotator" in body[: body.index("## In a notebook")]
    assert first_run == -1 or body.index("pip install al-annotator") < first_run
    # what napari finds the plugin by, and the command line
    assert "[napari.manifest]\nal-annotator = al_annotator.napari:napari.yaml" in entry_points, entry_points
    assert "al-annotator = al_annotator.cli:main" in entry_points


def test_the_wheel_carries_the_lab_extension_and_the_kernel_specs(wheel_metadata):
    _, names, _ = wheel_metadata
    assert any(n.endswith("share/jupyter/labextensions/al-annotator/package.json") for n in names)
    for spec in ("al-annotator-cpu", "al-annotator-gpu", "al-annotator-slurm-gpu", "al-annotator-slurm-trainer"):
        assert f"al_annotator/kernels/{spec}/kernel.json" in names, spec
    assert "al_annotator/kernels/install.py" in names


def test_extras_are_sized_to_where_the_package_runs(pyproject):
    project = pyproject["project"]
    core = " ".join(project["dependencies"]).lower()
    for heavy in ("torch", "timm", "monai", "jupyterlab", "ipywidgets", "anywidget", "napari", "matplotlib", "magicgui", "pyqt"):
        assert heavy not in core, f"{heavy} is a core dependency"
    extras = project["optional-dependencies"]
    assert {"train", "jupyter", "napari", "napari-pyqt5", "cluster", "all", "demo", "dev"} <= set(extras)
    assert any(r.startswith("torch") for r in extras["train"])
    assert any(r.startswith("anywidget") for r in extras["jupyter"])
    assert any("napari[pyqt6]" in r for r in extras["napari"]) and not any("pyqt5" in r.lower() for r in extras["napari"])
    assert any("dask-jobqueue" in r for r in extras["cluster"])
    assert extras["all"] == ["al-annotator[train,jupyter,napari,cluster]"]
    assert "al-annotator[all]" in extras["dev"]
    # the demo installs what it shows (JupyterLab, the widget, a trainer), not the test tooling
    assert extras["demo"] == ["al-annotator[train,jupyter]"]
    assert "setup demo" in (ROOT / "run").read_text()
    # every extra's requirement is on the installed environment (the dev extra is what tests run on)
    installed = {d.metadata["Name"].lower().replace("_", "-") for d in metadata.distributions()}
    from packaging.requirements import Requirement

    for name in ("train", "jupyter", "napari", "cluster", "dev"):
        for text in extras[name]:
            req = Requirement(text)
            if req.name != "al-annotator":
                assert req.name.lower().replace("_", "-") in installed, f"{name}: {text} not installed"


def test_npe2_validates_the_napari_manifest():
    npe2 = shutil.which("npe2", path=str(Path(sys.executable).parent))
    if npe2 is None:
        pytest.skip("npe2 is not installed (it comes with the napari extra: pip install -e '.[napari]')")
    # --imports: every python_name of the manifest (dock, reader, writer, samples) imports
    out = subprocess.run([npe2, "validate", "al-annotator", "--imports"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in out.stdout.lower(), out.stdout


def test_init_shows_a_progress_bar_with_counts(tmp_path, capsys):
    """`al-annotator init` reports create_project's progress as a tqdm bar (counts, rate, ETA) on stderr."""
    import numpy as np

    from al_annotator.cli import main

    np.save(tmp_path / "vol.npy", np.zeros((70, 16, 16), np.uint16))  # 2 slabs of 64 slices
    assert main(["init", str(tmp_path / "p"), "--volume", str(tmp_path / "vol.npy"), "--no-napari"]) == 0
    err = capsys.readouterr().err
    assert "import: 100%" in err and "70/70" in err and "slice/s" in err, err


@pytest.mark.parametrize("out", ["lab.tif", "lab.ome.zarr"])
def test_export_shows_a_progress_bar_of_the_voxels_written(tmp_path, capsys, out):
    """`al-annotator export` draws the voxels read of each input as a tqdm bar (OME-Zarr: the image
    under the labels too), each reaching its total once."""
    import numpy as np

    from al_annotator.cli import main

    np.save(tmp_path / "vol.npy", np.zeros((70, 16, 16), np.uint16))
    assert main(["init", str(tmp_path / "p"), "--volume", str(tmp_path / "vol.npy"), "--no-napari"]) == 0
    capsys.readouterr()
    assert main(["export", str(tmp_path / "p"), str(tmp_path / out)]) == 0
    err = capsys.readouterr().err
    assert err.count("write labels: 100%") == 1 and "17.9k/17.9k" in err and "vox/s" in err, err
    assert ("write image: 100%" in err) == out.endswith(".zarr"), err



def test_export_takes_the_format_from_the_suffix_and_init_takes_a_unit(tmp_path, capsys):
    import json

    import numpy as np
    import tifffile

    from al_annotator.cli import main

    np.save(tmp_path / "vol.npy", np.zeros((4, 8, 8), np.uint16))
    assert main(["init", str(tmp_path / "p"), "--volume", str(tmp_path / "vol.npy"), "--spacing", "2,1,1", "--unit", "um",
                 "--no-napari"]) == 0
    assert json.loads((tmp_path / "p" / "project.json").read_text())["config"]["spacing_unit"] == "micrometer"
    assert main(["export", str(tmp_path / "p"), str(tmp_path / "labels.tif")]) == 0
    assert tifffile.imread(tmp_path / "labels.tif").shape == (4, 8, 8)
    assert main(["export", str(tmp_path / "p"), str(tmp_path / "labels.nii.gz")]) == 0
    assert (tmp_path / "labels.nii.gz").stat().st_size > 0
    capsys.readouterr()
    # a name that says no format: the error names the suffixes and --format
    assert main(["export", str(tmp_path / "p"), str(tmp_path / "labels.dat")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and ".tif" in err and ".nii.gz" in err and "format" in err, err
    assert main(["export", str(tmp_path / "p"), str(tmp_path / "labels.dat"), "--format", "tiff"]) == 0
    # a unit nobody knows: one line naming the accepted units
    assert main(["init", str(tmp_path / "q"), "--volume", str(tmp_path / "vol.npy"), "--unit", "furlong", "--no-napari"]) == 2
    err = capsys.readouterr().err
    assert "furlong" in err and "micrometer" in err, err
    assert not (tmp_path / "q").exists()


def test_the_notebook_widget_shows_the_import_of_a_new_project(tmp_path, capsys):
    """`Annotator(volume_file)` creates the project beside it with a tqdm.auto bar (an ipywidgets
    bar in Jupyter; text on stderr here, where there is no notebook)."""
    pytest.importorskip("anywidget", reason="the notebook widget needs the jupyter extra")
    import numpy as np

    from al_annotator import Annotator

    np.save(tmp_path / "scan.npy", np.zeros((70, 16, 16), np.uint16))
    w = Annotator(str(tmp_path / "scan.npy"), classes=["background", "bone"])
    try:
        assert (tmp_path / "scan.alproj" / "project.json").is_file()
    finally:
        w.close()
    err = capsys.readouterr().err
    assert "import: 100%" in err and "70/70" in err, err


def test_run_test_says_how_to_get_the_gui_tests_where_it_cannot_install():
    """`./run test` as a user who cannot apt-get: the missing system packages and the line to install them."""
    import os

    script = (ROOT / "run").read_text()
    start, end = script.index("GUI_PACKAGES="), script.index("\n}\n", script.index("gui_libraries() {")) + 3
    cmd = ["bash", "-c", script[start:end] + 'GUI_PACKAGES="xvfb al-annotator-no-such-package"; gui_libraries']
    if os.geteuid() == 0:  # as root it would install; run it as an account that cannot
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv to run the check as a user other than root")
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *cmd]
    if shutil.which("dpkg") is None:
        pytest.skip("the check reads dpkg's database (Debian/Ubuntu)")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    assert "the napari (GUI) and browser tests will skip: missing system packages: al-annotator-no-such-package" in out.stderr
    assert "sudo apt-get install -y al-annotator-no-such-package" in out.stderr and "xvfb" not in out.stderr.split("packages:")[1]


def test_the_notebook_trainer_bar_gets_an_eta(tmp_path):
    """The widget's trainer bar: a second report of the same round gives an ETA in the `trainer` state."""
    pytest.importorskip("anywidget", reason="the notebook widget needs the jupyter extra")
    import numpy as np

    from al_annotator.core import Session, TrainerStatus
    from al_annotator.jupyter._controller import Controller, ViewState
    from al_annotator.jupyter._planes import PlaneServer

    session = Session.create(None, np.zeros((4, 16, 16), np.uint8), classes="a,b")
    planes = PlaneServer(session, lambda content, buffers=(): None)
    view = ViewState()
    controller = Controller(session, lambda content, buffers=(): None, planes, view=view)
    try:
        controller.on_trainer_status(TrainerStatus(state="training", alive=True, round=2, progress=0.1))
        assert view.trainer["eta"] == ""  # no rate yet
        controller.on_trainer_status(TrainerStatus(state="training", alive=True, round=2, progress=0.4))
        assert view.trainer["eta"].startswith("ETA ") and view.trainer["progress"] == 0.4
        controller.on_trainer_status(TrainerStatus(state="idle", alive=True, round=2, progress=1.0))
        assert view.trainer["eta"] == ""
    finally:
        planes.close()
        session.close()


def test_a_wheel_built_from_the_sdist_carries_the_kernels_and_the_lab_extension(tmp_path, monkeypatch):
    """conda-forge and pip without a wheel build from the sdist: it must hold all the wheel needs."""
    import tarfile
    import zipfile

    hatchling_build = pytest.importorskip("hatchling.build", reason="hatchling builds the sdist (pip install hatchling)")
    monkeypatch.chdir(ROOT)  # hatchling builds the project in the current directory
    sdist = tmp_path / hatchling_build.build_sdist(str(tmp_path))
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path / "src", filter="data")
    (src,) = (tmp_path / "src").iterdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "w"), str(src)],
                   check=True, capture_output=True, timeout=300)
    (whl,) = (tmp_path / "w").glob("*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert "al_annotator/kernels/al-annotator-slurm-gpu/slurm_kernel.py" in names
    assert any(n.endswith("share/jupyter/labextensions/al-annotator/package.json") for n in names)
    assert "al_annotator/napari/napari.yaml" in names
