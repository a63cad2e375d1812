"""Shared test configuration: GPU tests skip cleanly without CUDA; torch runs on 2 threads."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
# napari's settings (reader preferences written by `al-annotator init` and the dock) go to a file of
# the test run's own, never the user's ~/.config/napari
if "NAPARI_CONFIG" not in os.environ:
    import tempfile

    os.environ["NAPARI_CONFIG"] = os.path.join(tempfile.mkdtemp(prefix="al_napari_cfg_"), "settings.yaml")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config, items):
    if any("gpu" in item.keywords for item in items) and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (none here)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
