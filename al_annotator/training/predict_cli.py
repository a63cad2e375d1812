"""Whole-volume prediction with the current model (``al-annotator predict``), here or on a Dask cluster."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable, Mapping

from ..errors import InputError
from ..store import open_project
from ..store.models import current_model, update_version_meta, version_dir, version_name

__all__ = ["predict_project", "add_predict_options", "predict_kwargs_from_args", "BATCH_CPU", "BATCH_CUDA"]


#: Slices per forward pass: on the CPU a few (more only adds memory), on a CUDA device many (bf16 autocast, ~1 GB per 64 slices of 512^2 for HRNet-W18-small).
BATCH_CPU, BATCH_CUDA = 8, 64


def predict_project(project: str, *, axes: str = "zyx", planes: int = 3, device: str = "auto", batch_size: int | None = None,
                    tile: int | None = 1024, block: int | None = None, halo: int | None = None, cluster: Any = None,
                    jobs: int = 2, cluster_kwargs: Mapping[str, Any] | None = None,
                    progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Predict with the current model version along ``planes`` plane families (3: the orthogonal
    ``axes``; 9: those and the six diagonal ones), soft-vote, and write the prediction, probabilities
    and confidence of that version. Returns the updated version metadata.

    ``cluster``: ``None`` predicts in this process; ``"local"`` on a Dask ``LocalCluster`` of ``jobs``
    worker processes; ``"slurm"`` on a dask-jobqueue ``SLURMCluster`` of ``jobs`` SLURM jobs
    (``cluster_kwargs`` go to the cluster class: ``queue``, ``account``, ``walltime``, ``cores``,
    ``memory``, ``job_extra_directives``, ...); or a running ``distributed.Client``. Every way gives the
    same result voxel for voxel (:mod:`.distributed`). ``block``/``halo``: the block side and its
    context (:data:`~.predict.DEFAULT_BLOCK`, :data:`~.predict.DEFAULT_HALO`). ``batch_size``
    ``None``: :data:`BATCH_CUDA` where the model runs on CUDA (here, or ``device="cuda"`` for a
    cluster), else :data:`BATCH_CPU`.
    """
    from ..models import load_checkpoint
    from .config import TrainConfig
    from .fit import resolve_device
    from .planes import plane_families
    from .predict import DEFAULT_BLOCK, DEFAULT_HALO, predict_volume
    from .worker import write_model_outputs

    TrainConfig(axes=axes)  # validates the axes
    plane_families(planes, axes)  # and the planes, before anything loads
    store = open_project(project, author="predict")
    try:
        cur = current_model(store)
        if cur is None:
            raise InputError(f"{project} has no trained model yet: run `al-annotator train {project} --rounds 1` first")
        ckpt = version_dir(store, cur["version"]) / "checkpoint.pt"
        if not ckpt.exists():
            raise InputError(f"the checkpoint of model v{cur['version']} is missing ({ckpt})")
        model, _ = load_checkpoint(ckpt, map_location="cpu")
        group = store.root.require_group(f"models/{version_name(cur['version'])}")
        if batch_size is None:
            on_cuda = str(device).startswith("cuda") or (cluster is None and resolve_device(device).type == "cuda")
            batch_size = BATCH_CUDA if on_cuda else BATCH_CPU
        options = dict(axes=axes, planes=planes, batch_size=batch_size, tile=tile, scratch=group, progress=progress,
                       block=DEFAULT_BLOCK if block is None else block, halo=DEFAULT_HALO if halo is None else halo,
                       input_norm=cur.get("input_norm") if cur.get("input_norm") in ("window", "slice") else "window")
        t = time.perf_counter()
        if cluster is None:
            dev = resolve_device(device)
            result = predict_volume(store, model.to(dev).eval(), device=dev, **options)
            where = str(dev)
        else:
            from .distributed import DaskEngine, open_client

            with open_client(cluster, jobs, cluster_kwargs) as client:
                result = predict_volume(store, model, engine=DaskEngine(client, ckpt, device), **options)
            where = f"dask {cluster if isinstance(cluster, str) else 'client'} x{jobs}"
        write_model_outputs(group, result.probabilities, store.image.chunks)
        meta = dict(cur, predicted_axes=axes, predicted_planes=planes, predicted_on=where,
                    predict_seconds=time.perf_counter() - t)
        update_version_meta(store, cur["version"], meta)
        return meta
    finally:
        store.close()


def add_predict_options(p: argparse.ArgumentParser) -> None:
    """The ``predict`` subcommand's options (beside ``project``)."""
    from ..cli import int_arg
    from .distributed import CLUSTERS

    p.add_argument("--planes", type=int, choices=(3, 9), default=3,
                   help="3: soft-vote the orthogonal --axes (default); 9: also the six diagonal planes (Baltruschat et al. 2021)")
    p.add_argument("--cluster", choices=CLUSTERS,
                   help="run the blocks on a Dask cluster: local (LocalCluster, --jobs worker processes) or slurm "
                        "(dask-jobqueue, --jobs SLURM jobs); default: in this process")
    p.add_argument("--jobs", type=int_arg(1), default=2, help="with --cluster: worker processes or SLURM jobs (default 2)")
    p.add_argument("--cluster-option", action="append", default=[], metavar="KEY=JSON",
                   help="with --cluster: a LocalCluster / SLURMCluster argument, e.g. queue=\"gpu\" walltime=\"02:00:00\" "
                        "'job_extra_directives=[\"--gres=gpu:1\"]' (the value is JSON, or a plain string); repeatable")
    p.add_argument("--block", type=int_arg(1), help="block side in voxels, rounded down to whole chunks (default 256)")
    p.add_argument("--halo", type=int_arg(0), help="voxels of context read around each block (default 32)")


def predict_kwargs_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """``predict_project`` keyword arguments from the options of :func:`add_predict_options`."""
    if args.cluster_option and args.cluster is None:
        raise InputError("--cluster-option needs --cluster local or --cluster slurm")
    kwargs: dict[str, Any] = {}
    for item in args.cluster_option:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--cluster-option {item!r}: write KEY=VALUE, e.g. queue=\"gpu\"")
        try:
            kwargs[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            kwargs[key.strip()] = text
    return dict(planes=args.planes, cluster=args.cluster, jobs=args.jobs, cluster_kwargs=kwargs or None,
                block=args.block, halo=args.halo)
