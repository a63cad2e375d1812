"""Whole-volume prediction with the current model (``al-annotator predict``)."""

from __future__ import annotations

import time
from typing import Any, Callable

from ..errors import InputError
from ..store import open_project
from ..store.models import current_model, update_version_meta, version_dir, version_name

__all__ = ["predict_project"]


def predict_project(project: str, *, axes: str = "zyx", device: str = "auto", batch_size: int = 8, tile: int | None = 1024,
                    progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Predict along ``axes`` with the current model version, soft-vote, and write the prediction,
    probabilities and confidence map of that version. Returns the updated version metadata."""
    from ..models import load_checkpoint
    from .config import TrainConfig
    from .fit import resolve_device
    from .predict import predict_volume
    from .worker import write_model_outputs

    TrainConfig(axes=axes)  # validates the axes
    store = open_project(project, author="predict")
    cur = current_model(store)
    if cur is None:
        raise InputError(f"{project} has no trained model yet: run `al-annotator train {project} --rounds 1` first")
    ckpt = version_dir(store, cur["version"]) / "checkpoint.pt"
    if not ckpt.exists():
        raise InputError(f"the checkpoint of model v{cur['version']} is missing ({ckpt})")
    dev = resolve_device(device)
    model, _ = load_checkpoint(ckpt, map_location="cpu")
    model.to(dev).eval()
    group = store.root.require_group(f"models/{version_name(cur['version'])}")
    t = time.perf_counter()
    result = predict_volume(store, model, axes=axes, device=dev, batch_size=batch_size, tile=tile, scratch=group, progress=progress,
                            input_norm=cur.get("input_norm") if cur.get("input_norm") in ("window", "slice") else "window")
    write_model_outputs(group, result.probabilities, store.image.chunks)
    meta = dict(cur, predicted_axes=axes, predict_seconds=time.perf_counter() - t)
    update_version_meta(store, cur["version"], meta)
    store.close()
    return meta
