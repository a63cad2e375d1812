"""``al-annotator install-kernels``: the Jupyter kernel specs of ``kernels/``, from the installed package.

The specs and their installer (``kernels/install.py``, which also runs as a script from a checkout)
are shipped in the wheel as ``al_annotator/kernels``; an editable install reads them from the
checkout's ``kernels/``. Both are the same files, so the command and the script install the same
specs with the same options.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from types import ModuleType

from .errors import InputError

__all__ = ["kernels_dir", "installer", "add_arguments", "run"]

_PACKAGE = Path(__file__).resolve().parent


def kernels_dir() -> Path:
    """The folder holding the kernel specs and ``install.py``: in the wheel, or in the checkout."""
    for candidate in (_PACKAGE / "kernels", _PACKAGE.parent / "kernels"):
        if (candidate / "install.py").is_file():
            return candidate
    raise InputError(
        f"the Jupyter kernel specs are not installed with al_annotator (looked in {_PACKAGE / 'kernels'}); "
        "reinstall it from a wheel or a checkout: pip install --force-reinstall al-annotator"
    )


def installer() -> ModuleType:
    """``install.py`` of :func:`kernels_dir`, loaded as a module."""
    path = kernels_dir() / "install.py"
    spec = importlib.util.spec_from_file_location("al_annotator_kernel_install", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The installer's own options (``--user | --prefix P``, ``--only``, ``--slurm-partition``...).

    Parsing needs the installer but not Jupyter; a missing ``jupyter_client`` (or a missing
    ``kernels`` folder) is reported when the command runs, so every other command still parses."""
    try:
        installer().add_arguments(p)
    except InputError:
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    """Install the specs; a bad ``--only`` or a folder this user cannot write is one line with the remedy."""
    module = installer()
    try:
        return module.run(args)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    except PermissionError as exc:  # a hub's read-only environment, a system prefix
        raise InputError(
            f"cannot install the kernel specs there ({exc.strerror}: {exc.filename}); use --user "
            "(~/.local/share/jupyter/kernels) or --prefix a folder you can write"
        ) from exc
