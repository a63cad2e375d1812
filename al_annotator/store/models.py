"""Model versions in a project: what the trainer publishes and every front end reads.

A version ``N`` lives in ``models/vNNNN/`` (checkpoint, per-slice scores, embeddings, metrics)
and in the zarr group ``data.zarr/models/vNNNN`` (probabilities, prediction, confidence). It
becomes visible only when ``models/current.json`` is atomically replaced to name it, so a reader
never sees a half-written version.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "clean_unpublished",
    "current_model",
    "list_model_versions",
    "next_version",
    "prediction_array",
    "publish_version",
    "read_scores",
    "version_dir",
    "version_name",
]


def list_model_versions(store: Any) -> list[dict[str, Any]]:
    """Published model versions, oldest first (each: version, created, metrics...)."""
    doc = store.backend.read_json("models/index.json") or {"versions": []}
    return list(doc.get("versions", []))


def current_model(store: Any) -> dict[str, Any] | None:
    """The newest published model version, or ``None`` before the first round."""
    return store.backend.read_json("models/current.json")


def prediction_array(store: Any, version: int | None = None) -> Any:
    """The zarr array of predicted labels (values 1..C) of a model version (default: current)."""
    from ..errors import InputError

    if version is None:
        cur = current_model(store)
        if cur is None:
            raise InputError(
                f"{store.backend.description} has no predictions yet: train a model "
                "(al-annotator train PROJECT --rounds 1) and run al-annotator predict PROJECT"
            )
        version = int(cur["version"])
    key = f"models/v{version:04d}/prediction"
    if key not in store.root:
        raise InputError(f"model version {version} has no full-volume prediction; run al-annotator predict PROJECT")
    return store.root[key]


def version_name(version: int) -> str:
    return f"v{int(version):04d}"


def next_version(store: Any) -> int:
    versions = list_model_versions(store)
    return (max(int(v["version"]) for v in versions) + 1) if versions else 1


def version_dir(store: Any, version: int):
    """The directory of a published version's files (checkpoint, scores, metrics)."""
    from ..errors import InputError

    if store.backend.root is None:
        raise InputError("model versions need a project directory (an in-memory project cannot host a trainer)")
    return store.backend.root / "models" / version_name(version)


def clean_unpublished(store: Any) -> list[str]:
    """Remove what a trainer killed mid-round left: ``*.partial`` dirs and zarr groups of unpublished versions."""
    import shutil

    removed = []
    root = store.backend.root
    if root is None:
        return removed
    published = {version_name(v["version"]) for v in list_model_versions(store)}
    models_dir = root / "models"
    if models_dir.is_dir():
        for p in models_dir.iterdir():
            if p.name.endswith(".partial"):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(str(p))
    zdir = root / "data.zarr" / "models"
    if zdir.is_dir():
        for p in zdir.iterdir():
            if p.is_dir() and p.name.startswith("v") and p.name not in published:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(str(p))
    return removed


def publish_version(store: Any, version: int, meta: dict[str, Any], *, keep: int = 3) -> None:
    """Make ``version`` current: rename its ``.partial`` dir into place, then atomically update
    ``models/index.json`` and ``models/current.json``. Older versions beyond ``keep`` lose their
    checkpoint and volume outputs (their scores and metrics stay, for the learning curve)."""
    import os
    import shutil

    root = store.backend.root
    partial = root / "models" / (version_name(version) + ".partial")
    final = root / "models" / version_name(version)
    if partial.exists():
        os.replace(partial, final)
    entry = dict(meta, version=int(version))
    index = store.backend.read_json("models/index.json") or {"versions": []}
    index["versions"] = [v for v in index["versions"] if int(v["version"]) != int(version)] + [entry]
    store.backend.write_json("models/index.json", index)
    store.backend.write_json("models/current.json", entry)
    for old in index["versions"][:-keep]:
        name = version_name(old["version"])
        shutil.rmtree(root / "data.zarr" / "models" / name, ignore_errors=True)
        ckpt = root / "models" / name / "checkpoint.pt"
        if ckpt.exists():
            ckpt.unlink()


def read_scores(store: Any, version: int | None = None):
    """The scored candidate slices of a version (default: current) as
    :class:`~al_annotator.acquisition.SliceCandidates`; ``None`` before the first version."""
    import numpy as np

    from ..acquisition.pool import SliceCandidates
    from ..errors import InputError

    cur = current_model(store) if version is None else {"version": version}
    if cur is None:
        return None
    path = version_dir(store, cur["version"]) / "scores.npz"
    if not path.exists():
        raise InputError(f"model version {cur['version']} has no scores file ({path})")
    with np.load(path) as data:
        return SliceCandidates.from_arrays({k: data[k] for k in data.files})
