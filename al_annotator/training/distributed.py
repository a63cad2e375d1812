"""Prediction on a Dask cluster: one task per block, on a ``LocalCluster`` or a dask-jobqueue ``SLURMCluster``.

The blocks of :func:`.predict.predict_volume` are independent, so the engine is a flat graph: one
``dask.distributed`` task per block, each reading its block and halo straight from the project's
``data.zarr/image`` (the workers share the project's filesystem, as a SLURM node running the trainer
does) and returning the block's fused probabilities and slice scores to the client, which writes
them. The task is :func:`.predict.predict_block`, the function the single-process path runs, so the
result is the same voxel for voxel. Each worker process loads the checkpoint once: the model is kept
on the Dask worker, keyed by the checkpoint's path, size and modification time (the pattern of
NeMo Curator's ``load_object_on_worker``), and torch there uses the worker's threads.

``cluster="local"``: ``LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True)``;
``cluster="slurm"``: ``SLURMCluster(**cluster_kwargs)`` scaled to ``jobs`` jobs (one worker each),
with the site's ``jobqueue.slurm`` Dask configuration as the defaults (partition ``queue``, ``account``,
``walltime``, ``job_extra_directives=["--gres=gpu:1"]``; see kernels/README.md), the worker Python
being this one. ``cluster`` may also be a running ``distributed.Client``, which is used as it is.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..errors import AlAnnotatorError, InputError

__all__ = ["CLUSTERS", "ClusterError", "DaskEngine", "open_client", "worker_loads"]

#: ``cluster`` names :func:`open_client` starts.
CLUSTERS = ("local", "slurm")
#: Seconds to wait for the SLURM jobs' workers to join (a pending job is the usual reason they do not).
WORKER_WAIT = 600.0
#: Worker attribute holding the models loaded there, keyed by checkpoint.
_MODELS_ATTR = "_al_annotator_models"


class ClusterError(AlAnnotatorError, RuntimeError):
    """A Dask cluster could not be started or its workers did not come up."""


def _need(module: str, extra: str = "cluster") -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        pip = "dask[distributed] dask-jobqueue" if module == "dask_jobqueue" else "dask[distributed]"
        raise InputError(f"--cluster needs {module}, which is not installed: pip install 'al_annotator[{extra}]' "
                         f"(or pip install {pip})") from None


@contextmanager
def open_client(cluster: Any = "local", jobs: int = 2, cluster_kwargs: Mapping[str, Any] | None = None,
                wait: float = WORKER_WAIT) -> Iterator[Any]:
    """A ``distributed.Client`` on the cluster named ``cluster`` (closed, with the cluster, on exit),
    or ``cluster`` itself when it is a ``Client`` already (left open).

    ``jobs``: LocalCluster worker processes, or SLURM jobs (one Dask worker each unless
    ``cluster_kwargs`` says ``processes``). ``cluster_kwargs`` go to ``LocalCluster`` / ``SLURMCluster``
    as they are (e.g. ``queue``, ``account``, ``walltime``, ``cores``, ``memory``,
    ``job_extra_directives``). Waits up to ``wait`` seconds for the SLURM workers.
    """
    distributed = _need("distributed")
    if isinstance(cluster, distributed.Client):
        yield cluster
        return
    if cluster not in CLUSTERS:
        raise InputError(f"cluster must be one of {', '.join(CLUSTERS)} (or a distributed.Client), got {cluster!r}")
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise InputError(f"jobs must be an integer >= 1 (worker processes or SLURM jobs), got {jobs!r}")
    kwargs = dict(cluster_kwargs or {})
    if cluster == "local":
        kwargs = {"n_workers": jobs, "threads_per_worker": 1, "processes": True, "dashboard_address": None} | kwargs
        made = distributed.LocalCluster(**kwargs)
    else:
        made, workers = _slurm_cluster(jobs, kwargs)
    try:
        client = distributed.Client(made)
        try:
            if cluster == "slurm":
                _wait_for_workers(client, workers, jobs, wait)
            yield client
        finally:
            client.close()
    finally:
        made.close()


def _slurm_cluster(jobs: int, kwargs: dict[str, Any]) -> tuple[Any, int]:
    """The SLURMCluster, scaled to ``jobs`` jobs, and how many Dask workers those jobs start."""
    import dask

    jobqueue = _need("dask_jobqueue")
    defaults: dict[str, Any] = {"python": sys.executable}
    for key, value in (("cores", 1), ("memory", "4GB"), ("processes", 1)):  # only where the site config sets none
        if dask.config.get(f"jobqueue.slurm.{key}", None) is None:
            defaults[key] = value
    try:
        made = jobqueue.SLURMCluster(**(defaults | kwargs))
    except (TypeError, ValueError) as exc:
        raise InputError(f"cluster_kwargs for SLURMCluster: {exc}") from None
    made.scale(jobs=jobs)
    processes = kwargs.get("processes", defaults.get("processes", dask.config.get("jobqueue.slurm.processes", 1)))
    return made, jobs * int(processes or 1)


def _wait_for_workers(client: Any, workers: int, jobs: int, wait: float) -> None:
    try:
        client.wait_for_workers(workers, timeout=wait)
    except (TimeoutError, OSError) as exc:
        raise ClusterError(
            f"the {jobs} SLURM job(s) did not start their Dask workers within {wait:g} s ({exc}); `squeue --me` shows "
            "whether they are pending (partition, account, walltime or GPU gres the site does not allow: set them in "
            "cluster_kwargs or the jobqueue.slurm Dask config) and the job logs (log_directory) why a worker exited"
        ) from None


class DaskEngine:
    """Runs :func:`.predict.predict_block` for each block as a task on ``client``'s workers, the model
    loaded there from ``checkpoint``. Pass it as ``predict_volume(..., engine=...)``.

    ``device``: where the workers run the model (``"auto"``: CUDA where the worker sees a GPU).
    """

    def __init__(self, client: Any, checkpoint: str | os.PathLike, device: str = "auto") -> None:
        self.client = client
        self.checkpoint = str(Path(checkpoint).resolve())
        self.device = str(device)

    def map_blocks(self, store: Any, cores: list[tuple[slice, slice, slice]], options: dict[str, Any]) -> Iterator[Any]:
        """The blocks' :class:`~.predict.BlockResult` in the order they finish; closing the iterator
        cancels the blocks not yet done."""
        distributed = _need("distributed")
        if store.path is None:
            raise InputError("distributed prediction reads the image from the project directory; "
                             "an in-memory project has none: create it with a path")
        image = str((Path(store.path) / "data.zarr" / "image").resolve())
        opts = {k: v for k, v in options.items() if k != "device"}
        futures = [self.client.submit(_predict_task, image, tuple(store.display_window), self.checkpoint, self.device, core,
                                      opts, pure=False) for core in cores]
        try:
            for future in distributed.as_completed(futures):
                yield future.result()
                future.release()
        finally:
            self.client.cancel(futures)


def _worker_model(checkpoint: str, device: str) -> tuple[Any, Any]:
    """The model of ``checkpoint`` on this Dask worker, loaded the first time a task asks for it."""
    import distributed
    import torch

    from ..models import load_checkpoint
    from .fit import resolve_device

    worker = distributed.get_worker()
    st = os.stat(checkpoint)
    key = (checkpoint, st.st_size, st.st_mtime_ns, device)
    models = getattr(worker, _MODELS_ATTR, None)
    if models is None:
        models = {}
        setattr(worker, _MODELS_ATTR, models)
        torch.set_num_threads(max(1, int(getattr(worker.state, "nthreads", 1))))
    if key not in models:
        dev = resolve_device(device)
        model, _ = load_checkpoint(checkpoint, map_location="cpu")
        models.clear()  # a newer checkpoint replaces the old one
        models[key] = (model.to(dev).eval(), dev)
        setattr(worker, _MODELS_ATTR + "_loads", getattr(worker, _MODELS_ATTR + "_loads", 0) + 1)
    return models[key]


def _predict_task(image_path: str, window: tuple[float, float], checkpoint: str, device: str,
                  core: tuple[slice, slice, slice], options: dict[str, Any]) -> Any:
    import zarr

    from .predict import predict_block

    model, dev = _worker_model(checkpoint, device)
    image = zarr.open_array(image_path, mode="r")
    return predict_block(image, window, model, core, device=dev, **options)


def worker_loads(dask_worker: Any = None) -> int:
    """How many times this Dask worker has loaded a checkpoint (``client.run(worker_loads)``)."""
    import distributed

    worker = dask_worker if dask_worker is not None else distributed.get_worker()
    return int(getattr(worker, _MODELS_ATTR + "_loads", 0))
