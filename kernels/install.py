#!/usr/bin/env python3
"""Install al_annotator's Jupyter kernel specs (see kernels/README.md).

    python kernels/install.py                          # all four, into this environment (--sys-prefix)
    python kernels/install.py --user --only cpu,slurm-gpu
    python kernels/install.py --gpu-devices 1 --srun-args "--partition=gpu --gres=gpu:a100:1 --time=4:00:00"
    al-annotator install-kernels --prefix /opt/conda --slurm-partition gpu   # the same, from the installed package

Each spec's ``python`` becomes this interpreter (or ``--python``), so the kernel, the trainer and a
SLURM job all use the environment al_annotator is installed in (it must be on a filesystem the GPU
nodes see, for the SLURM kernels). ``{resource_dir}`` in ``env`` values becomes the installed spec's
directory (Jupyter substitutes it in ``argv`` only).

The wheel carries this folder as ``al_annotator/kernels``; ``al-annotator install-kernels`` runs
:func:`run` with the same options, so a pip install needs no checkout.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import stat
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
KERNELS = {
    "cpu": "al-annotator-cpu",
    "gpu": "al-annotator-gpu",
    "slurm-gpu": "al-annotator-slurm-gpu",
    "slurm-trainer": "al-annotator-slurm-trainer",
}


def spec_dirs() -> dict[str, Path]:
    """The kernel spec templates in this folder, by short name."""
    return {short: HERE / name for short, name in KERNELS.items()}


def render(spec: dict, *, python: str, resource_dir: str, gpu_devices: str | None = None,
           srun_args: list[str] | None = None, trainer_srun_args: str | None = None,
           slurm_partition: str | None = None) -> dict:
    """A template's kernel.json made concrete for one installation (``slurm_partition`` replaces any
    ``--partition`` of the SLURM kernels' srun options)."""
    spec = json.loads(json.dumps(spec))
    argv = spec["argv"]
    if argv and argv[0] in ("python", "python3"):
        argv[0] = python
    if srun_args is not None and "srun" in argv:
        i = argv.index("srun")
        argv[i + 1:] = srun_args
    env = spec.setdefault("env", {})
    for key, value in list(env.items()):
        env[key] = value.replace("{resource_dir}", resource_dir)
    if gpu_devices is not None and "CUDA_VISIBLE_DEVICES" in env and env["CUDA_VISIBLE_DEVICES"]:
        env["CUDA_VISIBLE_DEVICES"] = gpu_devices
        spec["display_name"] = f"al_annotator (GPU {gpu_devices})"
    if trainer_srun_args is not None and "AL_ANNOTATOR_TRAINER_SRUN_ARGS" in env:
        env["AL_ANNOTATOR_TRAINER_SRUN_ARGS"] = trainer_srun_args
    if slurm_partition is not None:
        if "srun" in argv:
            i = argv.index("srun")
            argv[i + 1:] = [*_without_partition(argv[i + 1:]), f"--partition={slurm_partition}"]
        if "AL_ANNOTATOR_TRAINER_SRUN_ARGS" in env:
            trainer = _without_partition(shlex.split(env["AL_ANNOTATOR_TRAINER_SRUN_ARGS"]))
            env["AL_ANNOTATOR_TRAINER_SRUN_ARGS"] = shlex.join([*trainer, f"--partition={slurm_partition}"])
    if "AL_ANNOTATOR_TRAINER_PYTHON" in env or any("slurm_kernel.py" in a for a in argv):
        env.setdefault("AL_ANNOTATOR_REMOTE_PYTHON", python)
    return spec


def _without_partition(args: list[str]) -> list[str]:
    """srun options minus ``--partition=P`` / ``-p P`` / ``--partition P``."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in ("-p", "--partition"):
            skip = True
        elif not a.startswith("--partition="):
            out.append(a)
    return out


def install(names: list[str], *, user: bool = False, prefix: str | None = None, python: str = sys.executable,
            gpu_devices: str | None = None, srun_args: list[str] | None = None,
            trainer_srun_args: str | None = None, slurm_partition: str | None = None) -> list[Path]:
    from jupyter_client.kernelspec import KernelSpecManager

    ksm = KernelSpecManager()
    installed = []
    for short in names:
        src = spec_dirs()[short]
        with tempfile.TemporaryDirectory() as tmp:
            staged = Path(tmp) / src.name
            shutil.copytree(src, staged)
            dest = Path(ksm.install_kernel_spec(str(staged), src.name, user=user, prefix=prefix))
        spec = json.loads((dest / "kernel.json").read_text())
        spec = render(spec, python=python, resource_dir=str(dest), gpu_devices=gpu_devices, srun_args=srun_args,
                      trainer_srun_args=trainer_srun_args, slurm_partition=slurm_partition)
        (dest / "kernel.json").write_text(json.dumps(spec, indent=2) + "\n")
        for script in dest.iterdir():
            if script.suffix in (".py", "") and script.is_file() and script.name != "kernel.json":
                text = script.read_text()
                if "@PYTHON@" in text:
                    script.write_text(text.replace("@PYTHON@", python))
                script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        installed.append(dest)
    return installed


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of this script and of ``al-annotator install-kernels``."""
    where = p.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="into ~/.local/share/jupyter/kernels")
    where.add_argument("--sys-prefix", action="store_true", help="into this environment (the default)")
    where.add_argument("--prefix", help="into PREFIX/share/jupyter/kernels")
    p.add_argument("--only", default=",".join(KERNELS), help=f"comma-separated subset of {', '.join(KERNELS)}")
    p.add_argument("--python", default=sys.executable, help="interpreter of the kernels and the trainer (default: this one)")
    p.add_argument("--gpu-devices", help="CUDA_VISIBLE_DEVICES of the local GPU kernel (default 0)")
    p.add_argument("--srun-args", help='srun options of the SLURM kernel (default "--gres=gpu:1 --cpus-per-task=8 --mem=32G --time=08:00:00 ...")')
    p.add_argument("--trainer-srun-args", help="srun options of the SLURM trainer (AL_ANNOTATOR_TRAINER_SRUN_ARGS)")
    p.add_argument("--slurm-partition", help="the SLURM partition of both SLURM kernels (added to their srun options)")


def run(args: argparse.Namespace) -> int:
    """Install what ``args`` (from :func:`add_arguments`) asks for; print where each went.

    An unknown name in ``--only`` raises ``ValueError`` before anything is installed."""
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in KERNELS]
    if unknown:
        raise ValueError(f"unknown kernel(s) {unknown} in --only; choose from {', '.join(KERNELS)}")
    prefix = args.prefix if args.prefix else (None if args.user else sys.prefix)
    dests = install(names, user=args.user, prefix=prefix, python=args.python, gpu_devices=args.gpu_devices,
                    srun_args=shlex.split(args.srun_args) if args.srun_args else None,
                    trainer_srun_args=args.trainer_srun_args, slurm_partition=args.slurm_partition)
    for d in dests:
        print(f"installed {d.name}: {d}")
    print("list them with: jupyter kernelspec list")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    try:
        return run(p.parse_args(argv))
    except ValueError as exc:
        p.error(str(exc))


if __name__ == "__main__":
    sys.exit(main())
