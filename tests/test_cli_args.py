"""Every bad command-line value is refused with exit status 2 and a message naming the option,
never a traceback; damaged project files give a one-line error and the way on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from al_annotator.cli import main


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_args")
    np.save(d / "vol.npy", np.random.default_rng(0).integers(0, 3000, (12, 20, 24)).astype(np.uint16))
    assert main(["init", str(d / "p"), "--volume", str(d / "vol.npy")]) == 0
    return d / "p"


# (sub-command and its required arguments, the option, bad values)
NUMERIC = [
    ("train", "--rounds", ["0", "-1", "1.5", "x"]),
    ("train", "--steps", ["0", "nan"]),
    ("train", "--max-seconds", ["0", "-3", "inf", "nan", "x"]),
    ("train", "--crop", ["0", "8"]),
    ("train", "--batch-size", ["0"]),
    ("train", "--mc-samples", ["-1"]),
    ("train", "--lr", ["-1", "0", "inf", "-inf", "nan", "1e999"]),
    ("train", "--threads", ["0", "-2"]),
    ("train", "--poll", ["0", "nan"]),
    ("train", "--debounce", ["-1", "inf"]),
    ("predict", "--batch-size", ["0", "-8"]),
    ("predict", "--tile", ["0", "-1", "nan"]),
    ("suggest", "-n", ["0", "-3", "nan"]),
    ("suggest", "--seed", ["-1", "1.5", str(2**64)]),
    ("init", "--offset", ["-1"]),
    ("init", "--channel", ["-1"]),
    ("init", "--labels-offset", ["-1"]),
    ("simulate", "--budget", ["0"]),
    ("simulate", "--per-round", ["0"]),
    ("simulate", "--seeds", ["0"]),
    ("simulate", "--seed-start", ["-1"]),
    ("simulate", "--scribble-fraction", ["0", "1.5", "nan"]),
    ("simulate", "--test-every", ["1"]),
    ("simulate", "--steps-per-round", ["0"]),
    ("simulate", "--lr", ["-1", "inf"]),
    ("simulate", "--mc-samples", ["-1"]),
    ("simulate", "--full-steps", ["0"]),
    ("simulate", "--threads", ["0"]),
]
CASES = [(cmd, opt, v) for cmd, opt, values in NUMERIC for v in values]


def _argv(cmd: str, project) -> list[str]:
    if cmd == "init":
        return ["init", str(project.parent / "new"), "--volume", str(project.parent / "vol.npy")]
    if cmd == "simulate":
        return ["simulate", "--volume", str(project.parent / "vol.npy"), "--out", str(project.parent / "sim")]
    return [cmd, str(project)]


@pytest.mark.parametrize("cmd,option,value", CASES, ids=[f"{c} {o} {v}" for c, o, v in CASES])
def test_a_bad_number_is_refused_naming_the_option(project, capsys, cmd, option, value):
    assert main(_argv(cmd, project) + [f"{option}={value}"]) == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and "must be" in err and "Traceback" not in err, err
    assert not (project.parent / "new").exists() and not (project.parent / "sim").exists()


@pytest.mark.parametrize("argv,needle", [
    (["train", "{p}", "--device", "tpu"], "--device"),
    (["train", "{p}", "--axes", "zq"], "--axes"),
    (["train", "{p}", "--pretrained", "/no/such.pt"], "--pretrained '/no/such.pt': no such file"),
    (["predict", "{p}", "--axes", "q"], "--axes"),
    (["predict", "{p}", "--device", "gpu"], "--device"),
    (["suggest", "{p}", "--strategy", "bogus"], "unknown acquisition strategy 'bogus'"),
    (["suggest", "{p}", "--axes", "q"], "axes"),
    (["init", "{d}/new", "--volume", "{d}/vol.npy", "--format", "raw", "--shape", "0,2,2"], "--shape"),
])
def test_a_bad_value_found_after_parsing_is_one_line(project, capsys, argv, needle):
    argv = [a.format(p=project, d=project.parent) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and "Traceback" not in err, err


def _fake_checkpoint(project, model_name: str = "basic_unet") -> None:
    """Publish v1 with a real checkpoint of a tiny model (no training)."""
    torch = pytest.importorskip("torch")  # noqa: F841
    from al_annotator.models import create_model, save_checkpoint
    from al_annotator.store import open_project
    from al_annotator.store.models import begin_version

    store = open_project(project)
    with begin_version(store) as out:
        model = create_model(model_name, n_classes=store.config.n_classes, features=(4, 4, 8, 8, 16, 4))
        save_checkpoint(model, out.partial_dir / "checkpoint.pt", version=out.version, round=1)
        out.meta = {"created": 0.0, "model": model_name, "trained_on_seq": 0, "metrics": {}}
    store.close()


def test_a_resumed_trainer_still_checks_model_and_pretrained(tmp_path, capsys):
    """A project with a checkpoint used to ignore --model and --pretrained silently."""
    np.save(tmp_path / "vol.npy", np.zeros((6, 16, 16), np.uint16))
    assert main(["init", str(tmp_path / "p"), "--volume", str(tmp_path / "vol.npy")]) == 0
    _fake_checkpoint(tmp_path / "p")
    capsys.readouterr()
    base = ["train", str(tmp_path / "p"), "--rounds", "1", "--device", "cpu"]
    assert main(base + ["--model", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "--model 'bogus' is not a registered model" in err and "hrnet_w18_small" in err
    assert main(base + ["--pretrained", str(tmp_path / "no.pt")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(base + ["--model", "hrnet_w18_small"]) == 2
    err = capsys.readouterr().err
    assert "is a basic_unet" in err and "Omit --model to resume" in err
    status = json.loads((tmp_path / "p" / "trainer" / "status.json").read_text())
    assert status["state"] == "stopped" and "basic_unet" in status["error"]


def test_an_unexpected_error_is_one_line_unless_debugging(project, capsys, monkeypatch):
    import al_annotator.cli as cli

    def broken(args):
        raise KeyError("classes")

    monkeypatch.setitem(cli.COMMANDS, "info", broken)
    assert main(["info", str(project)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unexpected KeyError: 'classes'") and f"al-annotator check {project}" in err
    assert "AL_ANNOTATOR_DEBUG=1" in err and "Traceback" not in err
    monkeypatch.setenv("AL_ANNOTATOR_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["info", str(project)])


def test_help_returns_0(capsys):
    assert main(["train", "--help"]) == 0
    assert "--rounds" in capsys.readouterr().out


@pytest.mark.parametrize("name,content", [("index.json", "{torn"), ("index.json", "[]"), ("current.json", '{"version": "x"}'),
                                          ("current.json", "\xff")])
def test_damaged_model_files_give_one_line_and_check_repairs_them(tmp_path, capsys, name, content):
    np.save(tmp_path / "vol.npy", np.zeros((6, 16, 16), np.uint16))
    assert main(["init", str(tmp_path / "p"), "--volume", str(tmp_path / "vol.npy")]) == 0
    p = tmp_path / "p"
    from al_annotator.store import open_project
    from al_annotator.store.models import begin_version

    store = open_project(p)
    with begin_version(store) as out:
        np.savez(out.partial_dir / "scores.npz", x=np.zeros(1))
        (out.partial_dir / "metrics.json").write_text(json.dumps({"created": 1.0, "metrics": {"loss": 0.5}}))
        out.meta = {"created": 1.0, "metrics": {"loss": 0.5}}
    store.close()
    (p / "models" / name).write_bytes(content.encode("latin-1"))
    capsys.readouterr()
    readers = {"index.json": [["info", str(p)]],  # the commands that read the damaged file
               "current.json": [["suggest", str(p)], ["predict", str(p)],
                                ["export", str(p), str(tmp_path / "o.tif"), "--format", "tiff", "--what", "predictions"]]}[name]
    for argv in readers:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and f"{name} is damaged" in err and "check" in err and "--repair" in err, (argv, err)
    assert main(["check", str(p)]) == 1
    assert f"{name} is damaged" in capsys.readouterr().out
    assert main(["check", str(p), "--repair"]) == 0
    assert "rebuilt models/index.json" in capsys.readouterr().out
    assert main(["info", str(p), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [v["version"] for v in info["model_versions"]] == [1] and info["model_versions"][0]["metrics"] == {"loss": 0.5}


def test_a_real_process_prints_no_traceback(project):
    env = dict(os.environ)
    env.pop("AL_ANNOTATOR_DEBUG", None)
    for argv, needle in ((["train", str(project), "--lr", "-1"], "argument --lr"),
                         (["suggest", str(project), "--seed", "-1"], "argument --seed"),
                         (["train", str(project), "--model", "bogus", "--device", "cpu"], "--model 'bogus'")):
        proc = subprocess.run([sys.executable, "-m", "al_annotator.cli", *argv], capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_predict_updates_the_published_entry(tmp_path, capsys):
    """`al-annotator predict` rewrites the version's index entry and current.json through the models API."""
    np.save(tmp_path / "vol.npy", np.random.default_rng(1).integers(0, 100, (6, 16, 16)).astype(np.uint16))
    assert main(["init", str(tmp_path / "p"), "--volume", str(tmp_path / "vol.npy")]) == 0
    _fake_checkpoint(tmp_path / "p")
    assert main(["predict", str(tmp_path / "p"), "--axes", "z", "--device", "cpu"]) == 0
    index = json.loads((tmp_path / "p" / "models" / "index.json").read_text())
    current = json.loads((tmp_path / "p" / "models" / "current.json").read_text())
    assert index["versions"][0]["predicted_axes"] == "z" == current["predicted_axes"] and current["version"] == 1
