"""``al-annotator train | predict | suggest`` (registered into the main CLI; imports no torch at parse time)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, Callable

__all__ = ["register"]

#: The smallest prediction tile (tiles overlap and the networks downsample 32x).
MIN_TILE = 64


def register(sub: Any, command: Callable) -> None:
    from ..cli import float_arg, int_arg
    from .predict_cli import add_predict_options
    from .worker import add_train_options

    p = sub.add_parser("train", help="run the trainer (a round per new annotation with --watch)")
    p.add_argument("project")
    add_train_options(p)
    p.add_argument("--stop", action="store_true",
                   help="stop this project's running trainer (started here or elsewhere) instead of starting one")
    p.add_argument("--stop-timeout", type=float_arg(0), default=30.0, help="with --stop: seconds to wait for it to end")

    p = sub.add_parser("predict", help="predict the whole volume with the current model, soft-voting over axes")
    p.add_argument("project")
    p.add_argument("--axes", default="zyx", help="axes to predict and average (default zyx)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int_arg(1), help="slices per forward pass (default 8 on the CPU, 64 on CUDA)")
    p.add_argument("--tile", type=int_arg(MIN_TILE), default=1024, help=f"tile size for slices larger than this (>= {MIN_TILE})")
    add_predict_options(p)

    p = sub.add_parser("suggest", help="rank the next slices to annotate")
    p.add_argument("project")
    p.add_argument("--strategy", default="hybrid", help="random | foreground_random | least_confidence | margin | entropy | bald | coreset | hybrid")
    p.add_argument("-n", type=int_arg(1), default=8, help="how many slices (>= 1)")
    p.add_argument("--axes", default="zyx", help="candidate axes")
    p.add_argument("--seed", type=int_arg(0, 2**63 - 1), default=0, help="random seed (>= 0)")
    p.add_argument("--json", action="store_true")

    command("train")(_train)
    command("predict")(_predict)
    command("suggest")(_suggest)


def _train(args: argparse.Namespace) -> int:
    if args.stop:
        return _stop(args)
    from .worker import LOG_FILE, run_from_args

    from ..errors import AlAnnotatorError

    try:
        return run_from_args(args)
    except (AlAnnotatorError, KeyboardInterrupt):
        raise
    except Exception:  # the main CLI prints it in one line; say where the whole story is
        print(f"the trainer failed; status in {args.project}/trainer/status.json, traceback in {args.project}/{LOG_FILE}",
              file=sys.stderr)
        raise


def _stop(args: argparse.Namespace) -> int:
    """``train PROJECT --stop``: the stop request, and SIGTERM where this host can verify the trainer."""
    from .client import TrainerClient

    client = TrainerClient(args.project)
    gone = client.stop(timeout=args.stop_timeout)
    print(client.stop_report)
    if not gone:
        print(f"the trainer has not ended within {args.stop_timeout:g} s; it stops at its next check between two steps "
              f"({args.project}/trainer/status.json says when), or run this again", file=sys.stderr)
    return 0 if gone else 1


def _predict(args: argparse.Namespace) -> int:
    from .config import TrainConfig
    from .predict_cli import predict_kwargs_from_args, predict_project

    from ..errors import InputError

    try:
        TrainConfig(axes=args.axes, device=args.device)  # says what is wrong before torch loads
    except InputError as exc:
        raise InputError(f"--{str(exc).split(' ', 1)[0]}: {exc}") from None
    from ..progress import ProgressBars

    with ProgressBars(unit="block-plane") as bars:
        meta = predict_project(args.project, axes=args.axes, device=args.device, batch_size=args.batch_size, tile=args.tile,
                               progress=bars, **predict_kwargs_from_args(args))
    print(f"model v{meta['version']}: predicted along {meta['predicted_axes']} ({meta['predicted_planes']} planes, "
          f"{meta['predicted_on']}) in {meta['predict_seconds']:.1f} s; "
          f"wrote prediction, probabilities and confidence (export: al-annotator export {args.project} --what predictions ...)")
    return 0


def _suggest(args: argparse.Namespace) -> int:
    from ..acquisition.project import suggest_for_project
    from ..store import open_project

    with open_project(args.project) as store:
        suggestions = suggest_for_project(store, strategy=args.strategy, n=args.n, axes=args.axes, seed=args.seed)
    if args.json:
        print(json.dumps([dataclasses.asdict(s) for s in suggestions], indent=1))
    else:
        print(f"{'axis':<5}{'index':>6}  {'score':>8}  {'reason':<40} model_version")
        for s in suggestions:
            mv = "-" if s.model_version is None else s.model_version
            print(f"{s.axis:<5}{s.index:>6}  {s.score:>8.4f}  {s.reason:<40} {mv}")
    return 0
