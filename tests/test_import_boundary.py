"""The front ends reach a project only through the Session (issue #10's "one door").

Every module under ``al_annotator/jupyter``, ``al_annotator/napari`` and ``al_annotator/jupyter_ext``
is parsed (not imported: this runs without Qt or a browser) and each import of an
``al_annotator`` module is checked against what a front end may use: the core (Session and its
values), the plain types, errors and config, the readers' registry, the sample volumes, and its own package. The
store, the trainer and the acquisition functions are the core's business; a front end that
imports them grows its own caches and policies, which is how the two front ends came to disagree.
A front end may not spell ``session.store`` either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "al_annotator"
FRONT_ENDS = {"jupyter": PKG / "jupyter", "napari": PKG / "napari", "jupyter_ext": PKG / "jupyter_ext.py"}
#: What a front end may import from the package (module prefixes, dotted, under ``al_annotator``):
#: the core, plain values, the readers' registry, the bundled sample volumes (napari's sample data), and
#: the helpers that reach no project: progress bars of a callback, the extra a missing import belongs to.
ALLOWED = ("core", "types", "errors", "config", "io", "datasets", "progress", "extras")
FORBIDDEN = ("store", "training", "acquisition")


def _modules() -> list[tuple[str, Path]]:
    out = []
    for name, path in FRONT_ENDS.items():
        files = [path] if path.is_file() else sorted(path.rglob("*.py"))
        out += [(name, f) for f in files]
    return out


def _package_of(path: Path) -> list[str]:
    """``al_annotator/napari/_widget.py`` -> ["al_annotator", "napari"] (the module's package)."""
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return parts[:-1] if parts[-1] != "__init__" else parts[:-1]


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every absolute module name imported by ``path`` (relative imports resolved), with its line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    pkg = _package_of(path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.append((node.lineno, mod))
            # ``from .. import store`` imports a module by name
            found += [(node.lineno, f"{mod}.{a.name}") for a in node.names if mod == "al_annotator"]
    return found


def _violations(front_end: str, path: Path) -> list[str]:
    own = "al_annotator.jupyter" if front_end in ("jupyter", "jupyter_ext") else f"al_annotator.{front_end}"
    bad = []
    for line, mod in _imports(path):
        if mod != "al_annotator" and not mod.startswith("al_annotator."):
            continue  # third party or the standard library
        if mod == "al_annotator" or mod.startswith(own):
            continue
        sub = mod[len("al_annotator."):]
        if any(sub == a or sub.startswith(a + ".") for a in ALLOWED) and not any(
            sub == f or sub.startswith(f + ".") for f in FORBIDDEN
        ):
            continue
        bad.append(f"{path.relative_to(PKG.parent)}:{line} imports {mod}")
    return bad


def _store_reach(path: Path) -> list[str]:
    """Attribute chains that reach past the Session: ``<x>.session.store`` or ``session.store``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "store":
            value = node.value
            name = value.attr if isinstance(value, ast.Attribute) else getattr(value, "id", "")
            if name in ("session", "_session", "s"):
                bad.append(f"{path.relative_to(PKG.parent)}:{node.lineno} reaches {ast.unparse(node)}")
    return bad


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The check can fail: a module importing the store is caught, relative or absolute."""
    fake = PKG / "napari" / "_boundary_probe.py"
    assert not fake.exists()
    try:
        fake.write_text("from ..store import open_project\nimport al_annotator.training.fit\nfrom .. import acquisition\n"
                        "from ..core import Session\nx = obj.session.store\n")
        bad = _violations("napari", fake)
        assert len(bad) == 3, bad
        assert any("al_annotator.store" in b for b in bad)
        assert any("al_annotator.acquisition" in b for b in bad)
        assert len(_store_reach(fake)) == 1
    finally:
        fake.unlink()


@pytest.mark.parametrize("front_end,path", _modules(), ids=lambda v: v if isinstance(v, str) else v.name)
def test_front_ends_import_only_the_core(front_end: str, path: Path) -> None:
    bad = _violations(front_end, path) + _store_reach(path)
    assert not bad, "front ends reach the project only through al_annotator.core.Session:\n" + "\n".join(bad)
