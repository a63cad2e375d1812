"""Which optional extra provides which import, and the error that says so.

The core (``pip install al-annotator``) is the store, the readers and writers, the command line and
``Session``; the trainer, the notebook widget, the napari plugin and the cluster backends each need
an extra (``pyproject.toml``). A front end or command that reaches a module of a missing extra raises
:class:`MissingExtraError`, whose message is the ``pip install`` line to run.

Examples
--------
>>> extra_for("torch.nn")
'train'
>>> print(MissingExtraError("jupyter", "anywidget", "the notebook widget"))
the notebook widget needs the optional dependency 'anywidget', which is not installed: pip install "al-annotator[jupyter]"
"""

from __future__ import annotations

from .errors import AlAnnotatorError

__all__ = ["EXTRAS", "MissingExtraError", "extra_for", "missing_extra", "requirement_closure"]

#: top-level import name -> the extra that installs it
EXTRAS: dict[str, str] = {
    "torch": "train", "torchvision": "train", "timm": "train", "monai": "train", "modAL": "train",
    "matplotlib": "train",
    "anywidget": "jupyter", "ipywidgets": "jupyter", "jupyterlab": "jupyter", "jupyter_client": "jupyter",
    "jupyter_server": "jupyter", "jupyter_core": "jupyter", "ipykernel": "jupyter", "traitlets": "jupyter",
    "napari": "napari", "npe2": "napari", "qtpy": "napari", "superqt": "napari", "magicgui": "napari",
    "dask": "cluster", "distributed": "cluster", "dask_jobqueue": "cluster",
}


class MissingExtraError(AlAnnotatorError, ModuleNotFoundError):
    """A module of an optional extra is not installed; the message is the install line."""

    def __init__(self, extra: str, module: str, what: str = "this") -> None:
        super().__init__(
            f"{what} needs the optional dependency {module!r}, which is not installed: pip install \"al-annotator[{extra}]\"",
            name=module,
        )
        self.extra = extra


def extra_for(module: str | None) -> str | None:
    """The extra that installs ``module`` (a dotted name), ``None`` for a core or unknown one."""
    return EXTRAS.get((module or "").split(".")[0])


def missing_extra(exc: BaseException, what: str = "this") -> MissingExtraError | None:
    """``exc`` as a :class:`MissingExtraError` when it is the import error of an extra's module."""
    if isinstance(exc, MissingExtraError):
        return exc
    if isinstance(exc, ModuleNotFoundError):
        extra = extra_for(exc.name)
        if extra is not None:
            return MissingExtraError(extra, exc.name.split(".")[0], what)
    return None


def requirement_closure(extras: set[str] | frozenset[str] = frozenset(), dist: str = "al-annotator") -> set[str]:
    """Canonical names of the *installed* distributions ``dist[extras]`` resolves to, ``dist`` left out.

    What a fresh environment with that extra would hold (``tests/test_install_extras.py`` builds such
    environments, ``benchmarks/bench_install.py`` sizes them)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: dict[str, set[str]] = {}
    todo = [(dist, set(extras))]
    while todo:
        name, wanted = todo.pop()
        key = canonicalize_name(name)
        if key in seen and wanted <= seen[key]:
            continue
        seen.setdefault(key, set()).update(wanted)
        for text in metadata.distribution(name).requires or []:
            req = Requirement(text)
            envs = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((req.name, set(req.extras)))
    seen.pop(canonicalize_name(dist))
    return set(seen)
