"""Prediction on a real Dask cluster (``dask.distributed.LocalCluster``, worker processes) equals the
single-process path voxel for voxel, and each worker loads the checkpoint once."""

from __future__ import annotations

import numpy as np
import pytest

from al_annotator.datasets import make_phantom
from al_annotator.errors import InputError
from al_annotator.store import create_project, open_project
from al_annotator.store.models import begin_version, current_model, model_outputs

torch = pytest.importorskip("torch")
distributed = pytest.importorskip("distributed")

#: Blocks of one chunk with a small halo, so the 32x48x48 volume is 2x2x2 blocks that share borders.
SMALL = dict(block=24, halo=6)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project on disk whose current version is a freshly initialised tiny U-Net (seed 0)."""
    from al_annotator.models import create_model, save_checkpoint

    ph = make_phantom((32, 48, 48), seed=5)
    path = tmp_path_factory.mktemp("dask") / "p"
    store = create_project(path, ph.image, classes=ph.classes, chunks=(24, 24, 24))
    torch.manual_seed(0)
    model = create_model("basic_unet", n_classes=len(ph.classes), features=(4, 4, 8, 8, 16, 4))
    with begin_version(store) as out:
        save_checkpoint(model, out.partial_dir / "checkpoint.pt", version=out.version)
        out.meta = {"input_norm": "window", "model": model.name}
    store.close()
    return path


def _outputs(path):
    with open_project(path, read_only=True) as store:
        out = model_outputs(store, current_model(store)["version"])
        return {k: np.asarray(out[k][...]) for k in ("probabilities", "prediction", "confidence")}


@pytest.mark.slow
def test_local_cluster_equals_single_process_voxel_for_voxel(project):
    from al_annotator.training.predict_cli import predict_project

    torch.set_num_threads(1)  # as each 1-thread Dask worker runs it: float sums in one order
    here = predict_project(str(project), planes=9, device="cpu", **SMALL)
    single = _outputs(project)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        there = predict_project(str(project), planes=9, device="cpu", cluster=client, **SMALL)
        from al_annotator.training.distributed import worker_loads

        loads = client.run(worker_loads)
    dask = _outputs(project)
    assert here["predicted_planes"] == there["predicted_planes"] == 9
    assert there["predicted_on"].startswith("dask")
    for key in single:
        assert np.array_equal(single[key], dask[key]), key
    assert len(loads) == 2 and all(n == 1 for n in loads.values()), loads  # 8 blocks, one checkpoint load per worker


def test_cluster_local_by_name_starts_its_own_cluster_with_the_same_result(project):
    from al_annotator.training.predict_cli import predict_project

    torch.set_num_threads(1)
    predict_project(str(project), planes=3, device="cpu", **SMALL)
    single = _outputs(project)
    meta = predict_project(str(project), planes=3, device="cpu", cluster="local", jobs=2, **SMALL)
    assert meta["predicted_on"] == "dask local x2"
    dask = _outputs(project)
    assert all(np.array_equal(single[k], dask[k]) for k in single)


def test_predict_command_runs_on_a_local_cluster(project, capsys):
    from al_annotator.cli import main

    assert main(["predict", str(project), "--planes", "3", "--cluster", "local", "--jobs", "2", "--device", "cpu",
                 "--block", "24", "--halo", "6", "--cluster-option", "threads_per_worker=1"]) == 0
    assert "(3 planes, dask local x2)" in capsys.readouterr().out
    assert main(["predict", str(project), "--cluster-option", "queue=gpu"]) == 2
    assert "--cluster-option needs --cluster" in capsys.readouterr().err


def test_bad_cluster_requests_name_the_remedy(project):
    from al_annotator.training.distributed import open_client

    with pytest.raises(InputError, match="cluster must be one of local, slurm"):
        with open_client("kubernetes"):
            pass
    with pytest.raises(InputError, match="jobs must be an integer >= 1"):
        with open_client("local", jobs=0):
            pass
    mem = create_project(None, np.zeros((8, 8, 8), np.uint8), classes=["a", "b"])
    from al_annotator.training.distributed import DaskEngine

    with pytest.raises(InputError, match="in-memory project"):
        next(DaskEngine(None, project / "models" / "v0001" / "checkpoint.pt").map_blocks(mem, [], {}))
