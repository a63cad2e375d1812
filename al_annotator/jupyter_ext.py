"""Jupyter integration on the server and launcher side.

* :func:`_jupyter_labextension_paths`: where the prebuilt JupyterLab extension lies in the
  package (``al_annotator/labextension``; installed by pip into
  ``share/jupyter/labextensions/al-annotator``). The extension adds a launcher card
  "AL Annotator" and a file-browser item "Open in AL Annotator".
* :func:`annotator_notebook` / :func:`write_annotator_notebook`: the notebook the extension
  creates for a volume or project (first cell ``Annotator("<path>")``), written from Python.
* :func:`quickstart_notebook`: the quickstart notebook (``notebooks/quickstart.ipynb`` is
  written from it, so the package carries it).
* :func:`launch_demo`: create the demo project and the quickstart notebook in the current
  directory, then exec JupyterLab on the notebook (``python -m al_annotator.jupyter_ext demo``).
* :func:`slurm_trainer_client`: a trainer started as a SLURM GPU job while the kernel stays here.

Importing this module imports no Jupyter package (they load when a function needs them).

Examples
--------
>>> nb = annotator_notebook("scan.tif")
>>> nb["cells"][0]["source"]
'from al_annotator import Annotator\\nAnnotator("scan.tif")'
>>> notebook_name("scan.nii.gz", taken={"scan_annotator.ipynb"})
'scan_annotator-1.ipynb'
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import quote

__all__ = [
    "LABEXTENSION_NAME",
    "DEMO_PROJECT",
    "QUICKSTART_NAME",
    "VOLUME_SUFFIXES",
    "labextension_dir",
    "labextension_installed",
    "annotator_notebook",
    "notebook_name",
    "write_annotator_notebook",
    "quickstart_notebook",
    "write_notebook",
    "lab_command",
    "launch_demo",
    "slurm_trainer_client",
    "main",
]

#: The npm package name of the extension, and its directory under ``share/jupyter/labextensions``.
LABEXTENSION_NAME = "al-annotator"
#: The demo project's directory (the same default as ``al-annotator demo``).
DEMO_PROJECT = "al_annotator_demo"
#: The quickstart notebook :func:`launch_demo` writes next to the demo project.
QUICKSTART_NAME = "al_annotator_quickstart.ipynb"

_HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------------------------
# the labextension
# ------------------------------------------------------------------------------------------------
def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt extension for ``jupyter labextension develop/install`` (src relative to this package)."""
    return [{"src": "labextension", "dest": LABEXTENSION_NAME}]


def labextension_dir() -> Path:
    """The prebuilt extension inside the package (``package.json``, ``static/remoteEntry.*.js``)."""
    return _HERE / "labextension"


def labextension_installed() -> Path | None:
    """Where JupyterLab finds the extension (a ``labextensions`` path entry), or ``None``.

    A wheel install (and an editable install with a backend that installs shared data) puts it
    in ``sys.prefix/share/jupyter/labextensions/al-annotator``.
    """
    from jupyter_core.paths import jupyter_path

    for base in jupyter_path("labextensions"):
        candidate = Path(base) / LABEXTENSION_NAME
        if (candidate / "package.json").is_file():
            return candidate
    return None


def _fallback_labextensions_dir() -> Path | None:
    """A directory holding ``al-annotator`` -> the package's built extension (for ``extra_labextensions_path``).

    Used only when JupyterLab would not find the extension by itself (e.g. an editable install by
    a build backend that skips data files), so that the launcher card is there all the same.
    """
    src = labextension_dir()
    if not (src / "package.json").is_file():
        return None
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "al_annotator" / "labextensions"
    link = base / LABEXTENSION_NAME
    try:
        base.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() and link.resolve() != src.resolve():
            link.unlink()
        if not link.exists():
            link.symlink_to(src, target_is_directory=True)
    except OSError:
        base = Path(tempfile.mkdtemp(prefix="al_annotator_labext_"))
        (base / LABEXTENSION_NAME).symlink_to(src, target_is_directory=True)
    return base


# ------------------------------------------------------------------------------------------------
# notebooks
# ------------------------------------------------------------------------------------------------
_HELP = (
    "**The loop.** Paint strokes on a slice (any axis) with the class brushes; **commit** the slice when it is done.\n"
    "Start the **trainer** (a separate process; it may run on a SLURM GPU node sharing this directory):\n"
    "it trains a round for every committed slice and scores every slice. The **suggestions** list the slices\n"
    "worth annotating next, each with its reason and the model version that scored it.\n"
    "\n"
    "From a terminal: `al-annotator info PROJECT`, `al-annotator train PROJECT --watch`, `al-annotator suggest PROJECT`."
)


def _cell(kind: str, source: str, cell_id: str, tags: Sequence[str] = ()) -> dict[str, Any]:
    cell: dict[str, Any] = {"cell_type": kind, "id": cell_id, "metadata": {"tags": list(tags)} if tags else {}, "source": source}
    if kind == "code":
        cell["execution_count"] = None
        cell["outputs"] = []
    return cell


def _notebook(cells: list[dict[str, Any]], **metadata: Any) -> dict[str, Any]:
    meta = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        **metadata,
    }
    return {"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5}


def __getattr__(name: str) -> Any:
    if name == "VOLUME_SUFFIXES":  # live, from the reader registry: a reader registered later is offered too
        return _volume_suffixes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _volume_suffixes() -> tuple[str, ...]:
    """Volume file suffixes (lower case) that open from the path alone, longest first (``.nii.gz`` before ``.nii``)."""
    from .io.readers import openable_suffixes

    return tuple(sorted({s.lower() for s in openable_suffixes()}, key=len, reverse=True))


def _stem(name: str) -> str:
    lower = name.lower()
    for suffix in _volume_suffixes():
        if lower.endswith(suffix) and len(name) > len(suffix):
            stem = name[: -len(suffix)]
            # OME-TIFF and OME-Zarr: ``scan.ome.tif`` is ``scan``
            return stem[:-4] if stem.lower().endswith(".ome") and len(stem) > 4 else stem
    return name


def notebook_name(target: str | os.PathLike, taken: Iterable[str] = ()) -> str:
    """``<stem>_annotator.ipynb`` for a volume or project, with ``-1``, ``-2``... if taken.

    The same rule as the JupyterLab extension (``labextension/src/paths.ts``).

    Examples
    --------
    >>> notebook_name("data/scan.tif")
    'scan_annotator.ipynb'
    >>> notebook_name("myproj", taken=["myproj_annotator.ipynb", "myproj_annotator-1.ipynb"])
    'myproj_annotator-2.ipynb'
    """
    names = set(taken)
    base = f"{_stem(Path(target).name)}_annotator"
    name, i = f"{base}.ipynb", 0
    while name in names:
        i += 1
        name = f"{base}-{i}.ipynb"
    return name


def annotator_notebook(path: str | os.PathLike, *, create_demo: bool = False) -> dict[str, Any]:
    """The notebook that opens ``path`` (relative to the notebook) in the annotator widget.

    Its first cell is ``from al_annotator import Annotator`` and ``Annotator("<path>")``; with
    ``create_demo`` it first creates the demo project at ``path``. The JupyterLab extension writes
    the same notebook.
    """
    text = json.dumps(str(path))  # a JSON string is a valid Python string literal
    lines = ["from al_annotator import Annotator"]
    if create_demo:
        lines += [
            "from al_annotator.datasets import create_demo_project",
            "",
            f"create_demo_project({text}).close()  # a real micro-CT scan of bone (qim3d, MIT); reused if it exists",
        ]
    lines.append(f"Annotator({text})")
    cells = [_cell("code", "\n".join(lines), "al-annotator-open"), _cell("markdown", _HELP, "al-annotator-help")]
    return _notebook(cells, al_annotator={"target": str(path), "created_by": "al_annotator.jupyter_ext"})


def write_notebook(notebook: dict[str, Any], path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a notebook dict as ``.ipynb`` (refuses to overwrite unless asked)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; not overwriting it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_annotator_notebook(target: str | os.PathLike, directory: str | os.PathLike | None = None) -> Path:
    """Write a NEW notebook that opens ``target`` and return its path.

    The notebook goes next to ``target`` (or into ``directory``), named by :func:`notebook_name`,
    never over an existing file; the path in its cell is relative to the notebook.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); (d / "scan.npy").touch()
    >>> write_annotator_notebook(d / "scan.npy").name, write_annotator_notebook(d / "scan.npy").name
    ('scan_annotator.ipynb', 'scan_annotator-1.ipynb')
    """
    target = Path(target)
    folder = Path(directory) if directory is not None else target.resolve().parent
    rel = os.path.relpath(target.resolve(), folder.resolve())
    taken = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    return write_notebook(annotator_notebook(rel), folder / notebook_name(target, taken))


_QUICKSTART: list[tuple[str, str, tuple[str, ...]]] = [
    ("markdown", """# al_annotator quickstart

Segment a 3D micro-CT scan by painting a few slices: a model (HRNet) learns from your strokes in a
background process and tells you which slices to annotate next.

This notebook uses the bundled demo scan (real micro-CT of bone, an example volume of the
[qim3d](https://platform.qim.dk/qim3d) project, MIT license) with two classes, `background` and `bone`.
Run the cells from the top (**Run > Run All Cells** is fine).""", ()),
    ("code", """from al_annotator.datasets import create_demo_project

PROJECT = "al_annotator_demo"  # a directory next to this notebook; created once, reused after that

store = create_demo_project(PROJECT)
print(f"{store.path}: {' x '.join(map(str, store.shape))} voxels, classes {', '.join(store.config.classes)}")
store.close()""", ()),
    ("markdown", """## Annotate

The widget below shows one slice of the project. The loop:

1. **Paint.** Pick a class and paint strokes on the slice; erase, flood-fill, undo and redo as you go. Every
   stroke is on disk (an append-only edit log) when it is drawn: nothing to save.
2. **Commit.** When a slice is done, mark it annotated. Move along z, y or x: any axis can be annotated.
3. **Train.** Start the trainer. It is a separate process (it survives this kernel, and can run on a SLURM GPU
   node that shares this directory). It trains one round for every committed slice, publishes a model
   version, predicts the volume along the three axes and scores every slice.
4. **Follow the suggestions.** The queue lists the slices worth annotating next, each with its reason
   (entropy, margin, diversity, ...) and the model version that scored it; a suggestion made by an older
   model is marked stale. Jump to the first one, paint, commit, repeat. Accept the prediction inside the
   brush where it is already right.""", ()),
    ("code", """from al_annotator import Annotator

annotator = Annotator(PROJECT)
annotator""", ()),
    ("markdown", """## The same loop from Python

The widget drives a `Session`; a second `Session` on the same directory sees the same labels (the project
directory is the only thing the widget, the trainer and napari share). Before the first model, suggestions
are a foreground-weighted cold start.""", ()),
    ("code", """from al_annotator import Session

session = Session(PROJECT)
for item in session.refresh_suggestions("hybrid", n=5):
    s = item.suggestion
    print(f"{s.axis}={s.index:<4} {s.reason}")""", ()),
    ("markdown", """Start the trainer from here if you prefer (on this machine's CPU it uses `hrnet_w18_small`; a round takes
tens of seconds): set `START_TRAINER = True` and run the cell. Run All leaves it off, so no trainer starts
behind your back. `session.trainer_status()` tells what it is doing; `session.stop_trainer()` stops it.""", ()),
    ("code", """START_TRAINER = False  # True starts the background trainer process for this project
if START_TRAINER:
    session.start_trainer()
print(session.trainer_status().summary())""", ()),
    ("markdown", """## Next

* `active_learning_simulation.ipynb`: how many annotated slices each strategy needs, on a phantom with ground truth.
* `custom_strategy.ipynb`: plug in your own query strategy (modAL's signature).
* `export.ipynb`: labels and predictions to OME-Zarr, TIFF or NIfTI.
* `napari.ipynb`: the same project in napari.
* Own data: `Annotator("scan.tif")`, or right-click a volume in the file browser > *Open in AL Annotator*.""", ()),
]


def quickstart_notebook() -> dict[str, Any]:
    """The quickstart notebook (demo project, the widget, the loop explained).

    ``notebooks/quickstart.ipynb`` is this notebook (``python -m al_annotator.jupyter_ext quickstart
    notebooks/quickstart.ipynb`` rewrites it); :func:`launch_demo` writes it next to the demo project.
    Cells tagged ``skip-execution`` start processes and are left out by the headless notebook tests.
    """
    cells = [_cell(kind, src, f"quickstart-{i}", tags) for i, (kind, src, tags) in enumerate(_QUICKSTART)]
    return _notebook(cells)


# ------------------------------------------------------------------------------------------------
# launching JupyterLab
# ------------------------------------------------------------------------------------------------
def lab_command(
    notebook: str | os.PathLike | None = None,
    *,
    root_dir: str | os.PathLike | None = None,
    open_browser: bool = True,
    port: int | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``jupyter lab`` command line :func:`launch_demo` execs (this interpreter's JupyterLab).

    Listens on 127.0.0.1 only, keeps JupyterLab's token (printed with the URL), adds
    ``--allow-root`` when run as root, and points JupyterLab at the package's extension when it is
    not installed where JupyterLab looks (see :func:`labextension_installed`). The URL JupyterLab
    prints (and opens) is the notebook's.
    """
    root = Path(root_dir or os.getcwd()).resolve()
    cmd = [sys.executable, "-m", "jupyterlab"]
    opens = None
    if notebook is not None:
        nb = Path(notebook).resolve()
        if nb.is_relative_to(root):
            rel = nb.relative_to(root).as_posix()
            cmd.append(rel)
            opens = f"--LabApp.default_url=/lab/tree/{quote(rel)}"  # the printed URL opens the notebook too
        else:
            cmd.append(str(nb))
    cmd += ["--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={root}"]
    if opens:
        cmd.append(opens)
    if port is not None:
        cmd.append(f"--ServerApp.port={int(port)}")
    if not open_browser:
        cmd.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    if labextension_installed() is None:
        fallback = _fallback_labextensions_dir()
        if fallback is not None:
            cmd.append(f"--LabApp.extra_labextensions_path={fallback}")
    cmd += list(extra)
    return cmd


def _create_demo_project(path: Path, name: str) -> None:
    """Create (or reuse) the demo project at ``path``, as ``al-annotator demo`` does (in a child
    process: this module reaches the project only through the CLI and the Session)."""
    import subprocess

    from .errors import InputError

    done = subprocess.run([sys.executable, "-m", "al_annotator.cli", "demo", "--dir", str(path), "--name", name],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise InputError(f"could not create the demo project at {path}: {(done.stderr or done.stdout).strip()[-2000:]}")


def launch_demo(
    open_browser: bool = True,
    port: int | None = None,
    *,
    directory: str | os.PathLike = ".",
    name: str = "bone",
    exec_lab: bool = True,
) -> list[str]:
    """Create the demo project and the quickstart notebook, then exec JupyterLab on the notebook.

    In ``directory`` (default: the current one): ``al_annotator_demo/`` (the demo project, reused if
    it exists, as ``al-annotator demo`` makes it) and ``al_annotator_quickstart.ipynb`` (written once,
    never overwritten: your edits stay). JupyterLab serves ``directory`` on 127.0.0.1 with its usual
    token. With ``exec_lab=False`` nothing is started and the command line is returned.

    Examples
    --------
    >>> import tempfile
    >>> cmd = launch_demo(False, 8899, directory=tempfile.mkdtemp(), exec_lab=False)
    >>> cmd[1:4], "--no-browser" in cmd
    (['-m', 'jupyterlab', 'al_annotator_quickstart.ipynb'], True)
    """
    root = Path(directory).resolve()
    root.mkdir(parents=True, exist_ok=True)
    _create_demo_project(root / DEMO_PROJECT, name)
    notebook = root / QUICKSTART_NAME
    if not notebook.exists():
        write_notebook(quickstart_notebook(), notebook)
    cmd = lab_command(notebook, root_dir=root, open_browser=open_browser, port=port)
    if exec_lab:
        print(f"demo project: {root / DEMO_PROJECT}\nnotebook:     {notebook}\nstarting:     {shlex.join(cmd)}", file=sys.stderr, flush=True)
        os.chdir(root)
        os.execv(cmd[0], cmd)
    return cmd


# ------------------------------------------------------------------------------------------------
# SLURM: the trainer on a GPU node, the kernel here
# ------------------------------------------------------------------------------------------------
def slurm_trainer_client(project: str | os.PathLike, python: str | None = None):
    """A :class:`~al_annotator.training.TrainerClient` whose worker runs as a SLURM GPU job step.

    ``python`` (default ``$AL_ANNOTATOR_TRAINER_PYTHON``, set by the "al_annotator (trainer on SLURM
    GPU)" kernel) is a wrapper that runs ``srun --gres=gpu:1 ... python "$@"``; the worker is then
    ``python -m al_annotator.training.worker PROJECT --watch --device cuda`` on the GPU node, sharing
    the project directory. ``client.start(device="cuda")`` starts it; ``client.stop()`` stops it (stop
    file, seen across nodes).
    """
    from .core import Session
    from .errors import InputError

    wrapper = python or os.environ.get("AL_ANNOTATOR_TRAINER_PYTHON")
    if not wrapper:
        raise InputError(
            "no SLURM trainer wrapper: use the 'al_annotator (trainer on SLURM GPU)' kernel (kernels/README.md) "
            "or pass python='/path/to/srun-python'"
        )
    session = Session.open(project, read_only=True)  # the project's trainer client, through the one door
    try:
        client = session.trainer
    finally:
        session.close()
    client.python, client.nice = wrapper, 0  # the worker runs through the srun wrapper, not niced
    return client


# ------------------------------------------------------------------------------------------------
# command line: python -m al_annotator.jupyter_ext ...
# ------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m al_annotator.jupyter_ext", description="al_annotator's Jupyter helpers")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="create the demo project + quickstart notebook here and open JupyterLab on it")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser (print the URL)")
    p.add_argument("--port", type=int, help="JupyterLab's port (default 8888, or the next free one)")
    p.add_argument("--dir", default=".", help="where the demo project and notebook go (default: here)")
    p.add_argument("--print-command", action="store_true", help="only print the jupyter lab command line")
    p = sub.add_parser("notebook", help="write a new notebook that opens a volume or project; print its path")
    p.add_argument("target", help="volume file or project directory")
    p = sub.add_parser("quickstart", help="write the quickstart notebook")
    p.add_argument("out", help="output .ipynb")
    p.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            cmd = launch_demo(not args.no_browser, args.port, directory=args.dir, exec_lab=not args.print_command)
            print(shlex.join(cmd))
        elif args.command == "notebook":
            print(write_annotator_notebook(args.target))
        else:
            print(write_notebook(quickstart_notebook(), args.out, overwrite=args.overwrite))
    except ModuleNotFoundError as exc:  # JupyterLab or the widget not installed: say which extra
        from .extras import missing_extra

        missing = missing_extra(exc, f"`python -m al_annotator.jupyter_ext {args.command}`")
        if missing is None:
            raise
        print(f"error: {missing}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
