"""Shared test configuration: GPU tests skip cleanly without CUDA; torch runs on 2 threads."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


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
