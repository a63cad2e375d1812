"""The ``al-annotator`` command line.

Every sub-command is a thin wrapper over the Python API; errors print one line that names the
problem and the remedy, and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Callable, Sequence

from .errors import AlAnnotatorError

__all__ = ["main", "build_parser", "COMMANDS", "int_arg", "float_arg"]

#: Set to 1 to see the traceback of an unexpected error instead of the one-line summary.
DEBUG_ENV = "AL_ANNOTATOR_DEBUG"

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def deco(fn):
        COMMANDS[name] = fn
        return fn

    return deco


def _range_text(lo: float | None, hi: float | None, lo_open: bool = False) -> str:
    def num(v: float) -> str:
        return str(v) if isinstance(v, int) else f"{v:g}"

    if lo is not None and hi is not None:
        return f"> {num(lo)} and <= {num(hi)}" if lo_open else f"from {num(lo)} to {num(hi)}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {num(lo)}"
    return f"<= {num(hi)}" if hi is not None else "any"


def int_arg(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` for an integer in ``[lo, hi]``; the error says the valid range.

    Examples
    --------
    >>> int_arg(1)("3")
    3
    >>> int_arg(1)("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be an integer >= 1, got '0'
    """
    want = f"an integer {_range_text(lo, hi)}" if (lo is not None or hi is not None) else "an integer"

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except (ValueError, AttributeError):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
        return value

    parse.__name__ = "int"
    return parse


def float_arg(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type`` for a finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``).

    Examples
    --------
    >>> float_arg(0, lo_open=True)("1e-3")
    0.001
    >>> float_arg(0, lo_open=True)("nan")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be a finite number > 0, got 'nan'
    """
    want = f"a finite number {_range_text(lo, hi, lo_open)}" if (lo is not None or hi is not None) else "a finite number"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except (ValueError, TypeError):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}") from None
        if not math.isfinite(value) or (lo is not None and (value <= lo if lo_open else value < lo)) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
        return value

    parse.__name__ = "float"
    return parse


def _shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(p) for p in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(n < 1 for n in shape):
        raise AlAnnotatorError(f"--shape must be positive integers Z,Y,X such as 512,512,512; got {text!r}")
    return shape


def _read_kw(args: argparse.Namespace, prefix: str = "") -> dict[str, Any]:
    kw: dict[str, Any] = {}
    for name in ("format", "dataset", "channel", "dtype", "offset"):
        value = getattr(args, prefix + name, None)
        if value is not None:
            kw[name] = value
    shape = _shape(getattr(args, prefix + "shape", None))
    if shape is not None:
        kw["shape"] = shape
    return kw


def _access(path: Any) -> dict[str, Any]:
    """Who may use the project: the group of a group-writable one, else the directory's mode."""
    import grp
    import stat

    from .store.perms import is_shared

    st = os.stat(path)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return {"group_writable": is_shared(path), "group": group, "mode": oct(stat.S_IMODE(st.st_mode))}


def _print_info(info: dict[str, Any], as_json: bool) -> None:
    if info.get("path") and os.path.isdir(info["path"]):
        info = {**info, "access": _access(info["path"])}
    if as_json:
        print(json.dumps(info, indent=2))
        return
    print(f"project      {info['path']}")
    print(f"volume       {' x '.join(map(str, info['shape']))} (z, y, x)  {info['dtype']}  chunks {tuple(info['chunks'])}")
    print(f"spacing      {tuple(info['spacing'])} {info['spacing_unit']}")
    print(f"source       {info['source']}")
    if "access" in info:
        acc = info["access"]
        print("access       " + (f"group-writable: the members of {acc['group']} read and write it" if acc["group_writable"]
                                  else f"mode {acc['mode']} (your umask; `init --group-writable` shares a project with a group)"))
    print(f"window       {info['display_window'][0]:.6g} .. {info['display_window'][1]:.6g}")
    print("classes      " + ", ".join(f"{c['value']}={c['name']} ({c['colour']})" for c in info["classes"]))
    per_class = ", ".join(f"{k} {v}" for k, v in info["labelled_voxels_per_class"].items())
    print(f"labelled     {info['labelled_voxels']} voxels ({per_class})")
    for ax, s in info["slices"].items():
        print(f"slices {ax}     {s['annotated']} annotated, {s['in_progress']} in progress, of {s['slices']}")
    print(f"edits        {info['edits']} log records")
    versions = info["model_versions"]
    if versions:
        last = versions[-1]
        print(f"models       {len(versions)} versions, latest v{last['version']} " + json.dumps(last.get("metrics", {})))
    else:
        print("models       none yet (start the trainer: al-annotator train PROJECT --watch)")


@command("init")
def cmd_init(args: argparse.Namespace) -> int:
    from .progress import ProgressBars
    from .store import create_project

    with ProgressBars(unit="slice") as bars:
        store = create_project(
            args.project,
            args.volume,
            classes=args.classes,
            spacing=args.spacing,
            unit=args.unit,
            labels=args.labels,
            read_kw=_read_kw(args),
            labels_read_kw=_read_kw(args, "labels_"),
            group_writable=args.group_writable,
            progress=bars,
        )
    print(f"created {store.path}")
    _print_info(store.info(), False)
    store.close()
    if not args.no_napari and _remember_napari_reader(store.path):
        print(f"napari: `napari {store.path}` opens it in the AL Annotator dock")
    return 0


def _remember_napari_reader(path: Any) -> bool:
    """Where napari is installed, record this plugin as napari's reader for the new project folder
    (napari offers every folder reader for any folder, its builtin one too, and would ask which)."""
    import importlib.util

    if importlib.util.find_spec("napari") is None or importlib.util.find_spec("npe2") is None:
        return False
    try:
        from .napari import prefer_this_reader

        return bool(prefer_this_reader(path))
    except Exception:  # noqa: BLE001 - a preference napari cannot save never fails the init
        return False


@command("info")
def cmd_info(args: argparse.Namespace) -> int:
    from .store import open_project

    with open_project(args.project) as store:
        _print_info(store.info(), args.json)
    return 0


@command("check")
def cmd_check(args: argparse.Namespace) -> int:
    from .store import open_project
    from .store.models import check_models, repair_models

    store = open_project(args.project)  # opening sets torn tails aside and skips damaged records
    with store:
        if store.recovered:
            print(f"recovered {len(store.recovered)} edits from the log that the labels had missed")
        found = store.problems_found_on_open()
        problems = [f"found on open: {note}" for note in found] + store.check(repair=args.repair)
        model_problems = check_models(store)
        if model_problems and args.repair:
            for note in repair_models(store):
                print(note)
            model_problems = check_models(store)
        problems = list(problems) + model_problems
    for p in problems:
        print(f"problem: {p}")
    if not problems:
        print("ok: every chunk present, labels equal the replayed edit log")
    return 1 if problems and not args.repair else 0


@command("export")
def cmd_export(args: argparse.Namespace) -> int:
    from .progress import ProgressBars
    from .store import open_project
    from .store.export import export

    with open_project(args.project) as store, ProgressBars(unit="vox", unit_scale=True) as bars:
        # without --format the output's suffix names it (export says which suffixes when it cannot tell)
        out = export(store, args.out, what=args.what, format=args.format, overwrite=args.overwrite,
                     ngff_version=args.ngff_version, progress=bars)
    print(f"wrote {args.what} to {out}")
    return 0


@command("install-kernels")
def cmd_install_kernels(args: argparse.Namespace) -> int:
    from .kernelspecs import run

    return run(args)


@command("demo")
def cmd_demo(args: argparse.Namespace) -> int:
    from .datasets import create_demo_project

    store = create_demo_project(args.dir, name=args.name)
    _print_info(store.info(), False)
    print()
    print(f"Open it: al-annotator info {store.path}")
    if not getattr(args, "no_napari", False) and _remember_napari_reader(store.path):
        print(f"napari: `napari {store.path}` opens it in the AL Annotator dock")
    store.close()
    return 0


def _add_read_options(p: argparse.ArgumentParser, prefix: str = "", what: str = "volume") -> None:
    dash = f"--{prefix.replace('_', '-')}"
    p.add_argument(f"{dash}format", dest=f"{prefix}format", help=f"{what} format (default: by file type): tiff, slices, hdf5, ome-zarr, nifti, dicom, npy, raw")
    p.add_argument(f"{dash}dataset", dest=f"{prefix}dataset", help="HDF5/NeXus dataset path (e.g. /entry/data/data) or DICOM SeriesInstanceUID")
    p.add_argument(f"{dash}shape", dest=f"{prefix}shape", help="raw files: Z,Y,X")
    p.add_argument(f"{dash}dtype", dest=f"{prefix}dtype", help="raw files: numpy dtype, e.g. uint16 or <f4")
    p.add_argument(f"{dash}offset", dest=f"{prefix}offset", type=int_arg(0), help="raw files: header bytes to skip")
    p.add_argument(f"{dash}channel", dest=f"{prefix}channel", type=int_arg(0), help="4D data: the channel to import")


class _Parser(argparse.ArgumentParser):
    """Bad arguments give one line, like every other error of the command line (sub-command
    parsers inherit this class)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="al-annotator", description="Interactive annotation and active learning for 3D tomography.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="create a project from a volume")
    p.add_argument("project", help="new project directory")
    p.add_argument("--volume", required=True, help="volume file or folder")
    p.add_argument("--classes", default="background,bone,implant,degradation", help="comma-separated class names (label value = position, from 1)")
    p.add_argument("--spacing", help="voxel spacing Z,Y,X (default: from the file, else 1,1,1)")
    p.add_argument("--unit", help="the spacing's length unit, e.g. micrometer, um, nm, mm (default: from the file, else none)")
    p.add_argument("--labels", help="existing labels to import (same shape; 0 = unlabelled)")
    p.add_argument("--group-writable", action="store_true",
                   help="a project shared by the members of the directory's group: its directories are setgid and "
                        "group-writable, every file the group can read and write, whoever writes it later")
    p.add_argument("--no-napari", action="store_true",
                   help="do not record AL Annotator as napari's reader for the new folder (napari's settings are left alone)")
    _add_read_options(p)
    _add_read_options(p, "labels_", "labels")

    p = sub.add_parser("info", help="print what a project holds")
    p.add_argument("project")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("check", help="verify chunks and labels against the edit log")
    p.add_argument("project")
    p.add_argument("--repair", action="store_true", help="rebuild labels from the edit log where they differ")

    p = sub.add_parser("export", help="export labels or predictions")
    p.add_argument("project")
    p.add_argument("out", help="output path: .ome.zarr (a directory), .tif/.tiff, .nii/.nii.gz; its suffix sets the format")
    p.add_argument("--what", choices=("labels", "predictions"), default="labels")
    p.add_argument("--format", choices=("ome-zarr", "tiff", "nifti"), help="the format, when the output's suffix does not say it")
    p.add_argument("--ngff-version", choices=("0.4", "0.5"), default="0.4",
                   help="OME-Zarr: 0.4 (zarr v2, read by napari-ome-zarr, ome-zarr-py, Fiji) or 0.5 (zarr v3)")
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("demo", help="create the demo project (a real micro-CT scan) and show it")
    p.add_argument("--dir", default="al_annotator_demo", help="project directory (reused if it exists)")
    p.add_argument("--name", default="bone", help="demo volume name")
    p.add_argument("--no-napari", action="store_true", help="do not record AL Annotator as napari's reader for the folder")

    p = sub.add_parser("install-kernels", help="install the Jupyter kernel specs (CPU, GPU, SLURM) of this environment")
    from .kernelspecs import add_arguments

    add_arguments(p)

    _register_extra_commands(sub)
    return parser


def _register_extra_commands(sub: Any) -> None:
    """Sub-commands that live with their subsystem (training, acquisition, simulation)."""
    from .simulate.cli import register as register_simulate
    from .training.cli import register as register_training

    register_training(sub, command)
    register_simulate(sub, command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command; returns the exit status (2: bad input or a missing extra, with a one-line message).

    An unexpected exception (a damaged project file no check caught, or a bug) prints its type
    and message and the way on (``al-annotator check PROJECT``) instead of a traceback; with
    ``AL_ANNOTATOR_DEBUG=1`` it is re-raised.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage and what is wrong (or --help)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        return COMMANDS[args.command](args)
    except AlAnnotatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the last resort of a command line; see DEBUG_ENV
        from .extras import missing_extra

        missing = missing_extra(exc, f"`al-annotator {args.command}`")  # a module of an extra not installed
        if missing is not None:
            print(f"error: {missing}", file=sys.stderr)
            return 2
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        project = getattr(args, "project", None)
        print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        where = f"run `al-annotator check {project}` to find a damaged project file; " if project else ""
        print(f"  {where}if that finds nothing, this is a bug: rerun with {DEBUG_ENV}=1 for the traceback and report it",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
