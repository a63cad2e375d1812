"""The command line, as a user runs it: init, info, check, export, demo, suggest."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from al_annotator.cli import main
from al_annotator.store import open_project
from al_annotator.types import SliceRef


@pytest.fixture
def volume_file(tmp_path):
    vol = np.random.default_rng(0).integers(0, 3000, (12, 20, 24)).astype(np.uint16)
    path = tmp_path / "vol.npy"
    np.save(path, vol)
    return path, vol


def test_init_info_and_labels_import(tmp_path, volume_file, capsys):
    path, vol = volume_file
    labels = np.zeros(vol.shape, np.uint8)
    labels[3, 2:5, 2:5] = 2
    np.save(tmp_path / "lab.npy", labels)
    assert main(["init", str(tmp_path / "p"), "--volume", str(path), "--labels", str(tmp_path / "lab.npy"), "--spacing", "2,1,1"]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "p"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == [12, 20, 24] and info["dtype"] == "uint16" and info["spacing"] == [2.0, 1.0, 1.0]
    assert [c["name"] for c in info["classes"]] == ["background", "bone", "implant", "degradation"]
    assert info["labelled_voxels_per_class"]["bone"] == 9
    assert set(info["slices"]) == {"z", "y", "x"} and info["model_versions"] == []
    store = open_project(tmp_path / "p")
    np.testing.assert_array_equal(store.read_slice(SliceRef("z", 5)), vol[5])


def test_errors_print_one_line_and_exit_2(tmp_path, volume_file, capsys):
    path, _ = volume_file
    assert main(["init", str(tmp_path / "p"), "--volume", str(tmp_path / "missing.tif")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "p").exists()
    assert main(["init", str(tmp_path / "p"), "--volume", str(path), "--classes", "bone"]) == 2
    assert "at least 2 classes" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_check_and_export(tmp_path, volume_file, capsys):
    path, vol = volume_file
    main(["init", str(tmp_path / "p"), "--volume", str(path)])
    store = open_project(tmp_path / "p")
    store.paint(SliceRef("x", 4), np.arange(30), "degradation")
    store.close()
    capsys.readouterr()
    assert main(["check", str(tmp_path / "p")]) == 0
    assert "ok" in capsys.readouterr().out
    for fmt, out in (("tiff", "lab.tif"), ("nifti", "lab.nii.gz"), ("ome-zarr", "lab.ome.zarr")):
        assert main(["export", str(tmp_path / "p"), str(tmp_path / out), "--format", fmt]) == 0, capsys.readouterr().err
        from al_annotator.io import read_volume

        if fmt == "ome-zarr":
            back = read_volume(tmp_path / out / "labels" / "labels")
        else:
            back = read_volume(tmp_path / out)
        arr = np.asarray(back.array[...])
        assert arr.shape == vol.shape and int((arr == 4).sum()) == 30
        assert arr[:, :, 4].reshape(-1)[:30].tolist() == [4] * 30
    # predictions need a model first
    assert main(["export", str(tmp_path / "p"), str(tmp_path / "pred.tif"), "--format", "tiff", "--what", "predictions"]) == 2
    assert "no predictions yet" in capsys.readouterr().err


def test_suggest_cold_start_json(tmp_path, volume_file, capsys):
    path, _ = volume_file
    main(["init", str(tmp_path / "p"), "--volume", str(path)])
    capsys.readouterr()
    assert main(["suggest", str(tmp_path / "p"), "-n", "5", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 5 and all({"axis", "index", "score", "reason", "model_version"} <= set(r) for r in rows)
    assert all(r["model_version"] is None and "cold start" in r["reason"] for r in rows)


def test_demo_command_creates_a_real_project(tmp_path):
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-m", "al_annotator.cli", "demo", "--dir", str(tmp_path / "demo")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "128 x 128 x 128" in out.stdout
    assert "MIT" in (tmp_path / "demo" / "SOURCE.txt").read_text()


def test_import_al_annotator_is_light():
    code = "import sys, al_annotator, al_annotator.cli; al_annotator.cli.build_parser(); " \
           "bad = [m for m in ('torch', 'timm', 'monai', 'napari', 'qtpy', 'PyQt5', 'ipywidgets') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_check_repair_sets_a_damaged_log_aside(tmp_path, volume_file, capsys):
    path, _ = volume_file
    main(["init", str(tmp_path / "p"), "--volume", str(path)])
    store = open_project(tmp_path / "p")
    for i in range(4):
        store.paint(SliceRef("z", i), np.arange(10), "bone")
    store.close()
    log = tmp_path / "p" / "edits.log"
    data = bytearray(log.read_bytes())
    second = data.index(b"ALE1", 10)  # start of record 2
    data[second + 30] ^= 0xFF
    log.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["check", str(tmp_path / "p")]) == 1
    out = capsys.readouterr().out
    assert "damaged bytes" in out and f"at byte {second}" in out and "after record 1" in out
    assert main(["check", str(tmp_path / "p"), "--repair"]) == 0
    out = capsys.readouterr().out
    assert "repaired from the log" in out and "labels.before-repair.npz" in out
    # the damaged record stays in the log (never rewritten) and a copy lies beside it
    assert log.read_bytes() == bytes(data)
    size = data.index(b"ALE1", second + 1) - second
    assert (tmp_path / "p" / f"edits.log.damaged-{second}").read_bytes() == bytes(data[second : second + size])
    again = open_project(tmp_path / "p")
    assert sorted(again._records) == [1, 3, 4] and again.check() == []
    assert again.labelled_voxels()["bone"] == 30


def test_export_predictions(tmp_path, volume_file, capsys):
    from al_annotator.store.models import publish_version

    path, vol = volume_file
    main(["init", str(tmp_path / "p"), "--volume", str(path)])
    store = open_project(tmp_path / "p")
    (tmp_path / "p" / "models" / "v0001.partial").mkdir(parents=True)
    grp = store.root.require_group("models/v0001")
    pred = grp.create_array("prediction", shape=vol.shape, dtype=np.uint8, chunks=(8, 8, 8))
    pred[:] = (vol % 4 + 1).astype(np.uint8)
    publish_version(store, 1, {"created": 0, "trained_on_seq": 0, "metrics": {}})
    capsys.readouterr()
    assert main(["export", str(tmp_path / "p"), str(tmp_path / "pred.tif"), "--format", "tiff", "--what", "predictions"]) == 0
    from al_annotator.io import read_volume

    with read_volume(tmp_path / "pred.tif") as v:
        np.testing.assert_array_equal(np.asarray(v.array[...]), vol % 4 + 1)
