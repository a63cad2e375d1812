"""The background trainer: its own process, watching a project directory.

    python -m al_annotator.training.worker PROJECT [--watch] [--rounds N] [--device auto]

A round: collect every labelled slice, fine-tune from the last checkpoint (bounded in steps and
seconds), measure Dice on held-out annotated slices, predict every slice along each axis,
soft-vote, score every slice, write a new model version and publish it atomically. With
``--watch`` the worker waits for new annotations between rounds.

The worker never takes the label writers' lock for longer than a log read, so it never blocks an
annotator. SIGTERM or a stop request (``trainer/stop``) ends it cleanly between two steps; a
SIGKILL loses only the unpublished round, which the next start cleans up.

One trainer per project: before it touches anything the worker takes the trainer lock
(:class:`~al_annotator.training.client.TrainerLock`, ``trainer/.lock``) and holds it until it
exits; a second worker exits at once (status 2) naming the running one and how to stop it, and
leaves the project as it was.

How it ends, in ``trainer/status.json``: ``stopped`` (rounds done, a stop request, SIGTERM or
Ctrl-C; with ``error`` when it refused a bad option at start-up), or ``failed`` when it died of an
exception anywhere (start-up, model build, data loading, a round, publishing): ``error`` is
``"<Type>: <message>"``, the traceback is in ``trainer/worker.log``, and the exit status is non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AlAnnotatorError, InputError, StoreIntegrityError
from ..store import open_project
from ..store.models import begin_version, clean_unpublished, current_model, list_model_versions, version_dir
from ..store.backend import atomic_write_json
from .client import STATUS_FILE, STOP_FILE, TrainerLock, process_identity
from .config import TrainConfig

__all__ = ["Worker", "main", "write_model_outputs"]

#: The smallest training crop (the networks downsample 32x; smaller crops are padded anyway).
MIN_CROP = 32
LOG_FILE = "trainer/worker.log"
#: How much of a traceback goes into worker.log (its last lines: where it failed).
TRACEBACK_TAIL_CHARS = 8000


class Worker:
    """Runs rounds on one project. Use :meth:`run` (the process entry point does), then :meth:`close`.

    The trainer lock is taken first (``lock_fd``: the one a :class:`TrainerClient` passed on);
    :class:`~al_annotator.training.client.TrainerRunningError` when another trainer holds it.
    """

    def __init__(self, project: str, cfg: TrainConfig, *, watch: bool = False, rounds: int | None = None, poll: float = 1.0,
                 debounce: float = 2.0, lock_fd: int | None = None) -> None:
        self.project = project
        self.debounce = debounce
        self.cfg = cfg
        self.watch = watch
        self.rounds = rounds
        self.poll = poll
        self.stop_requested = False
        self.root = Path(project).expanduser()
        self.lock = TrainerLock.acquire(self.root, inherited_fd=lock_fd)  # before anything else touches the project
        identity = process_identity()  # pid + host + boot + start time: what tells this process from a reused pid
        self.lock.record(identity)
        self.status: dict[str, Any] = {**identity, "project": str(self.root.resolve()), "started": time.time(), "state": "starting",
                                       "round": 0, "config": cfg.to_json()}
        if not self.lock.held:
            self.status["lock"] = self.lock.note
        self._last_status_write = 0.0
        self.model = None
        self.optimizer = None
        self.store = None
        self._best: float | None = None  # held-out Dice of the last version published on these labels
        self._last_publish = time.monotonic()
        #: What the "auto" options resolved to this run, and why (also in status.json and each version's metrics).
        self.auto: dict[str, Any] = {}
        try:
            self.store = open_project(project, author="trainer")
            self.status["history"] = [_metrics(m) | {"version": m["version"]} for m in list_model_versions(self.store)]
        except Exception as exc:
            self._record_failure(exc)
            self.close()
            raise

    def close(self) -> None:
        """Close the project and let go of the trainer lock."""
        if self.store is not None:
            self.store.close()
            self.store = None
        self.lock.close()

    # ---------------------------------------------------------------- status
    def _write_status(self, force: bool = False, **updates: Any) -> None:
        self.status.update(updates)
        now = time.time()
        self.status["heartbeat"] = now
        if force or now - self._last_status_write > 0.5:
            atomic_write_json(self.root / STATUS_FILE, self.status)
            self._last_status_write = now

    def _record_failure(self, exc: BaseException) -> None:
        """``failed`` with the error into status.json and the traceback's tail into worker.log,
        as far as the disk lets (the exception itself still propagates)."""
        error = f"{type(exc).__name__}: {exc}"
        log = self.root / LOG_FILE
        tail = "".join(traceback.format_exception(exc))[-TRACEBACK_TAIL_CHARS:]
        try:
            _append_to_log(log, f"{time.strftime('%Y-%m-%d %H:%M:%S')} trainer pid {os.getpid()} failed: {error}\n{tail}")
        except OSError as log_exc:
            print(f"could not write {log}: {log_exc}", file=sys.stderr)
        try:
            self._write_status(force=True, state="failed", error=error, failed=time.time(), traceback_in=str(log))
        except Exception as status_exc:  # noqa: BLE001 - a full disk must not hide the first error
            print(f"could not write {self.root / STATUS_FILE}: {type(status_exc).__name__}: {status_exc}", file=sys.stderr)

    def _should_stop(self) -> bool:
        if self.stop_requested:
            return True
        if (self.root / STOP_FILE).exists():
            self.stop_requested = True
        return self.stop_requested

    # ---------------------------------------------------------------- model
    def _check_model_options(self) -> None:
        """Reject an unknown --model and a missing --pretrained file, resumed or not."""
        from ..models import list_models

        if self.cfg.model is not None and self.cfg.model not in list_models():
            raise InputError(f"--model {self.cfg.model!r} is not a registered model; registered: {', '.join(list_models())}")
        if self.cfg.pretrained is not None and not Path(self.cfg.pretrained).is_file():
            raise InputError(f"--pretrained {self.cfg.pretrained!r}: no such file; give the path of a local weights file "
                             "(ImageNet HRNet .pth or an earlier project's checkpoint.pt)")

    def _load_model(self, device) -> None:
        from ..models import create_model, default_model_name, load_checkpoint, load_pretrained

        self._check_model_options()
        cur = current_model(self.store)
        ckpt = version_dir(self.store, cur["version"]) / "checkpoint.pt" if cur else None
        if ckpt is not None and ckpt.exists():
            self.model, _meta = load_checkpoint(ckpt, map_location="cpu")
            if self.model.n_classes != self.store.config.n_classes:
                raise StoreIntegrityError(f"checkpoint {ckpt} has {self.model.n_classes} classes, the project "
                                          f"{self.store.config.n_classes}; train a new project or remove models/ to start over")
            if self.cfg.model is not None and self.cfg.model != self.model.name:
                raise InputError(
                    f"this project's model v{cur['version']} is a {self.model.name}; --model {self.cfg.model} would discard "
                    f"its training. Omit --model to resume it, or create a new project to train a {self.cfg.model}"
                )
            if self.cfg.pretrained:
                note = f"--pretrained {self.cfg.pretrained} ignored: resuming from model v{cur['version']}'s checkpoint"
                print(note, file=sys.stderr)
                self.status["pretrained"] = note
            self.status["resumed_from"] = int(cur["version"])
        else:
            name = self.cfg.model or default_model_name(device)
            self.model = create_model(name, n_classes=self.store.config.n_classes, dropout=self.cfg.dropout)
            if self.cfg.pretrained:
                report = load_pretrained(self.model, self.cfg.pretrained)
                self.status["pretrained"] = report.summary()
        self.model.to(device)
        self.optimizer = None

    def _resolve_input_norm(self) -> None:
        """``input_norm="auto"``, once per run: the normalisation a resumed model was trained with,
        else :func:`~al_annotator.training.data.choose_input_norm` on the project's volume."""
        from dataclasses import replace

        from .data import INPUT_NORMS, choose_input_norm

        if self.cfg.input_norm != "auto":
            return
        cur = current_model(self.store)
        if cur is not None and self.status.get("resumed_from") is not None and cur.get("input_norm") in INPUT_NORMS:
            norm, why = cur["input_norm"], f"input_norm={cur['input_norm']}: kept from model v{cur['version']}, which was trained with it"
        else:
            norm, why = choose_input_norm(self.store.image, self.store.display_window)
        self.cfg = replace(self.cfg, input_norm=norm)
        self._record_auto("input_norm", norm, why)

    def _resolve_lr(self) -> None:
        """``lr="auto"``, once per run: ``LR_FRESH`` for fresh weights, ``LR_RESUMED`` for a resumed
        checkpoint or --pretrained weights (after :meth:`_load_model`)."""
        from dataclasses import replace

        from .config import LR_FRESH, LR_RESUMED

        if self.cfg.lr != "auto":
            return
        if self.status.get("resumed_from") is not None:
            lr, why = LR_RESUMED, f"lr={LR_RESUMED:g}: fine-tuning model v{self.status['resumed_from']}'s trained weights"
        elif self.cfg.pretrained:
            lr, why = LR_RESUMED, f"lr={LR_RESUMED:g}: fine-tuning the pretrained weights {self.cfg.pretrained}"
        else:
            lr, why = LR_FRESH, f"lr={LR_FRESH:g}: training from fresh weights (better than 1e-3 there in every comparison measured)"
        self.cfg = replace(self.cfg, lr=lr)
        self._record_auto("lr", lr, why)

    def _record_auto(self, name: str, value: Any, why: str, **extra: Any) -> None:
        self.auto[name] = {"value": value, "why": why, **extra}
        self.status["auto"] = self.auto
        self.status["config"] = self.cfg.to_json()
        self._write_status(force=True)
        print(f"trainer: auto {why}", file=sys.stderr, flush=True)

    # ---------------------------------------------------------------- loop
    def run(self) -> int:
        """Train until done or stopped; 0, or 2 when there is nothing to train on.

        Any exception leaves ``failed`` with the error in status.json (the traceback in
        worker.log) and propagates; a bad option refused at start-up leaves ``stopped`` with the
        error; Ctrl-C leaves ``stopped``.
        """
        try:
            return self._run()
        except KeyboardInterrupt:
            self._write_status(force=True, state="stopped", stopped=time.time())
            raise
        except InputError as exc:
            if self.status.get("state") in ("starting", "loading"):  # refused an option (--device, --model...) before any work
                self._write_status(force=True, state="stopped", error=str(exc), stopped=time.time())
            else:
                self._record_failure(exc)
            raise
        except Exception as exc:
            self._record_failure(exc)
            raise

    def _run(self) -> int:
        import torch

        from .fit import resolve_device

        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        device = resolve_device(self.cfg.device)
        removed = clean_unpublished(self.store)
        stop_file = self.root / STOP_FILE
        if stop_file.exists():
            stop_file.unlink()
        self._write_status(force=True, state="loading", device=str(device), cleaned=removed)
        self._load_model(device)
        self._resolve_input_norm()
        self._resolve_lr()
        cur = current_model(self.store)
        trained_on = _trained_on(cur)
        done = 0
        self._write_status(force=True, state="idle", model=self.model.name)
        last_seq, last_change, committed = self.store.log.last_seq, 0.0, False
        self._best = _heldout_score(cur)
        self._last_publish = time.monotonic()
        unimproved = 0  # continuation rounds since the last improvement (continuous watch mode)
        while not self._should_stop():
            new = self.store.refresh()
            if new:
                last_seq, last_change = self.store.log.last_seq, time.monotonic()
                committed = any(r.kind == "state" and r.meta.get("state") == "annotated" for r in new)
            labelled = any(s.state in ("in_progress", "annotated") for s in self.store.slice_states()) or self.store.has_imported_labels
            fresh = last_seq > trained_on or cur is None
            # In watch mode a round starts when a slice is committed, or when painting paused for `debounce` s.
            settled = committed or time.monotonic() - last_change >= self.debounce
            if labelled and ((fresh and settled) or not self.watch):
                seq = self.store.log.last_seq
                committed = False
                unimproved = 0
                self._best = None  # new labels: the held-out set changed, scores are not comparable
                meta = self.run_round(device, seq)
                if meta is None:  # stopped mid-round
                    break
                cur = meta
                trained_on = seq
                done += 1
                if self.rounds is not None and done >= self.rounds:
                    break
                if not self.watch and self.rounds is None:
                    break
            elif self.watch and labelled and not fresh and self.cfg.continuous and unimproved < self.cfg.patience:
                # Nothing new to learn from, but the model has not converged on what there is: keep
                # training while the expert paints, instead of idling. New strokes interrupt.
                meta = self.run_round(device, trained_on, continuation=True)
                if meta is None:
                    break
                if meta.get("interrupted"):
                    continue
                if meta.get("published"):
                    cur, unimproved = meta, 0
                else:
                    unimproved += 1
                    if unimproved >= self.cfg.patience:
                        self._write_status(force=True, state="converged", progress=1.0,
                                           best_heldout_dice=self._best, rounds_without_gain=unimproved)
            elif not self.watch:
                if not labelled:
                    self._write_status(force=True, state="stopped", error="no labelled slices yet: paint some strokes first")
                    print("no labelled slices yet: paint some strokes first", file=sys.stderr)
                    return 2
                break
            else:
                if self.status.get("state") != "converged":
                    self._write_status(state="waiting")
                time.sleep(self.poll)
        self._write_status(force=True, state="stopped", stopped=time.time())
        return 0

    def run_round(self, device, seq: int | None = None, *, continuation: bool = False) -> dict[str, Any] | None:
        """One round; ``seq`` is the edit-log position the collected labels reflect.

        ``continuation``: more training on the same labels; the round predicts and publishes only
        when the held-out score improved (see ``TrainConfig.continuous``), and new labels in the log
        interrupt it (returns ``{"interrupted": True}``). Returns ``None`` when stopped.
        """
        import torch

        from .data import collect_labelled_slices, split_validation
        from .fit import evaluate_dice, train_round
        from .holdout import split_voxels
        from .predict import SCORES_FILE, predict_volume

        store = self.store
        rnd = int(self.status.get("round", 0)) + 1
        t_round = time.perf_counter()
        seq = store.log.last_seq if seq is None else seq
        self._resolve_input_norm()  # done once in run(); here too for a round run on its own
        self._resolve_lr()
        samples = collect_labelled_slices(store, self.cfg.input_norm)
        train, val = split_validation(samples, self.cfg.val_every)
        train, heldout = split_voxels(train, fraction=self.cfg.holdout_fraction, seed=self.cfg.seed)
        self._write_status(force=True, state="training", round=rnd, progress=0.0, n_train=len(train), n_val=len(val),
                           continuing=continuation, heldout_voxels=int(sum((h.target >= 0).sum() for h in heldout)))

        def on_step(step: int, total: int, loss: float) -> None:
            self._write_status(progress=0.7 * step / total, step=step, loss=loss)

        interrupted = False
        last_check = [0.0]  # the first check at once

        def should_stop() -> bool:
            nonlocal interrupted
            if self._should_stop():
                return True
            if continuation and time.monotonic() - last_check[0] > 1.0:  # new labels beat more of the same
                last_check[0] = time.monotonic()
                if store.refresh() or store.log.last_seq > seq:
                    interrupted = True
                    return True
            return False

        result, self.optimizer = train_round(
            self.model, train, self.cfg, device=device, optimizer=self.optimizer, seed=self.cfg.seed + rnd,
            should_stop=should_stop, progress=on_step,
        )
        if interrupted and not self._should_stop():
            self.status["round"] = rnd
            return {"interrupted": True}
        if result.stopped:
            return None
        val_dice = evaluate_dice(self.model, val, device=device) if val else {"mean": None, "per_class": []}
        held = evaluate_dice(self.model, heldout, device=device) if heldout else {"mean": None, "per_class": []}
        score = held["mean"] if held["mean"] is not None else val_dice["mean"]
        if continuation:
            best = self._best
            improved = score is not None and (best is None or score > best + self.cfg.min_improvement)
            clock = score is None and time.monotonic() - self._last_publish >= self.cfg.publish_every
            if not (improved or clock):
                self.status["round"] = rnd
                self._write_status(force=True, state="training", progress=1.0, loss=result.loss, heldout_dice=score,
                                   best_heldout_dice=best, continuing=True)
                return {"published": False, "heldout_dice": score}
        self._best = score if score is not None else self._best
        self._last_publish = time.monotonic()
        from ..models import save_checkpoint

        # One writer: files go into vNNNN.partial and the zarr group; published on a normal exit of
        # the block, discarded on a stop or an error (a SIGKILL leaves what clean_unpublished removes).
        with begin_version(store, keep=self.cfg.keep_versions) as out:
            version = out.version
            self._write_status(force=True, state="predicting", loss=result.loss, val_dice=val_dice["mean"], version_in_progress=version)

            def on_predict(done: int, total: int, what: str) -> None:
                self._write_status(progress=0.7 + 0.3 * done / total, phase=what)

            t_pred = time.perf_counter()
            scratch = out.group()
            pred = predict_volume(
                store, self.model, axes=self.cfg.axes, planes=self.cfg.planes, device=device, batch_size=self.cfg.predict_batch, tile=self.cfg.tile,
                mc_samples=self.cfg.mc_samples, scratch=scratch, should_stop=self._should_stop, progress=on_predict, seed=rnd,
                model_version=version, input_norm=self.cfg.input_norm,
            )
            if pred is None:
                out.abandon()
                return None
            predict_seconds = time.perf_counter() - t_pred
            write_model_outputs(scratch, pred.probabilities, store.image.chunks)
            np.savez(out.partial_dir / SCORES_FILE, **pred.scores.to_arrays())
            save_checkpoint(self.model, out.partial_dir / "checkpoint.pt", version=version, round=rnd)
            gpu_mem = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
            metrics = {
                "round": rnd,
                "loss": result.loss,
                "steps": result.steps,
                "train_seconds": result.seconds,
                "predict_seconds": predict_seconds,
                "round_seconds": time.perf_counter() - t_round,
                "val_dice": val_dice["mean"],
                "val_dice_per_class": val_dice["per_class"],
                "heldout_dice": held["mean"],
                "heldout_dice_per_class": held["per_class"],
                "heldout_voxels": int(sum((h.target >= 0).sum() for h in heldout)),
                "continuation": continuation,
                "n_train_slices": len(train),
                "n_val_slices": len(val),
                "labelled_voxels": int(sum(store.labelled_voxels().values())),
                "lr": self.cfg.lr,
                "input_norm": self.cfg.input_norm,
                "auto": dict(self.auto),
            }
            meta = {
                "created": time.time(),
                "model": self.model.name,
                "device": str(device),
                "axes": self.cfg.axes,
                "planes": self.cfg.planes,
                "input_norm": self.cfg.input_norm,
                "lr": self.cfg.lr,
                "auto": dict(self.auto),
                "trained_on_seq": seq,
                "metrics": metrics,
                "gpu_max_memory_bytes": gpu_mem,
            }
            (out.partial_dir / "metrics.json").write_text(json.dumps(meta, indent=1))
            out.meta = meta
        self.status.setdefault("history", []).append(metrics | {"version": version})
        self._write_status(force=True, state="idle", model_version=version, progress=1.0, last_round=metrics,
                           gpu_memory_bytes=gpu_mem, time_per_round=metrics["round_seconds"])
        return meta | {"version": version, "published": True}


def _append_to_log(path: Path, text: str) -> None:
    """Append to worker.log, unless this process's stderr already is that file (a worker a
    :class:`TrainerClient` started): then print it there, once."""
    try:
        err, there = os.fstat(sys.stderr.fileno()), os.stat(path)
        if (err.st_dev, err.st_ino) == (there.st_dev, there.st_ino):
            print(text, file=sys.stderr, end="" if text.endswith("\n") else "\n", flush=True)
            return
    except (OSError, ValueError, AttributeError):  # no such log yet, or stderr is not a file
        pass
    path.parent.mkdir(exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)  # the umask decides
    with os.fdopen(fd, "a") as f:
        f.write(text if text.endswith("\n") else text + "\n")


def _metrics(entry: dict[str, Any]) -> dict[str, Any]:
    m = entry.get("metrics")
    return m if isinstance(m, dict) else {}


def _heldout_score(entry: dict[str, Any] | None) -> float | None:
    """The held-out Dice a published version scored (``None`` when it had none)."""
    metrics = _metrics(entry or {})
    value = metrics.get("heldout_dice")
    value = metrics.get("val_dice") if value is None else value
    return float(value) if isinstance(value, (int, float)) else None


def _trained_on(entry: dict[str, Any] | None) -> int:
    """The edit-log position a model version was trained on (0, i.e. retrain, when unknown)."""
    seq = entry.get("trained_on_seq") if entry else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else 0


def write_model_outputs(group: Any, probabilities: Any, chunks: tuple[int, int, int]) -> None:
    """Probabilities (float16), prediction (uint8, class value 1..C) and confidence (uint8, max
    probability x 255) into ``group``, slab by slab."""
    c, z, y, x = probabilities.shape
    probs = group.create_array("probabilities", shape=(c, z, y, x), dtype=np.float16, chunks=(1, *chunks), fill_value=0.0, overwrite=True)
    pred = group.create_array("prediction", shape=(z, y, x), dtype=np.uint8, chunks=chunks, fill_value=0, overwrite=True)
    conf = group.create_array("confidence", shape=(z, y, x), dtype=np.uint8, chunks=chunks, fill_value=0, overwrite=True)
    for z0 in range(0, z, chunks[0]):
        s = slice(z0, min(z, z0 + chunks[0]))
        p = np.asarray(probabilities[:, s])
        probs[:, s] = p.astype(np.float16)
        pred[s] = (p.argmax(0) + 1).astype(np.uint8)
        conf[s] = np.round(p.max(0) * 255).astype(np.uint8)
    if "vote_accumulator" in group:
        del group["vote_accumulator"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m al_annotator.training.worker", description=__doc__.split("\n\n")[0])
    p.add_argument("project")
    add_train_options(p)
    p.add_argument("--lock-fd", type=int, help=argparse.SUPPRESS)  # the trainer lock a TrainerClient took and passed on
    return p


def add_train_options(p: argparse.ArgumentParser) -> None:
    from ..cli import float_arg, int_arg

    p.add_argument("--watch", action="store_true", help="wait for new annotations and train a round for each")
    p.add_argument("--rounds", type=int_arg(1), help="stop after N rounds (N >= 1)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    p.add_argument("--model", help="model name (default: hrnet_w18_small on CPU, hrnet_w48 on CUDA); "
                   "a project that has a checkpoint keeps its model")
    p.add_argument("--steps", type=int_arg(1), help="training steps per round")
    p.add_argument("--max-seconds", type=float_arg(0, lo_open=True), help="time limit of the training part of a round")
    p.add_argument("--crop", type=int_arg(MIN_CROP), help=f"training crop size (>= {MIN_CROP})")
    p.add_argument("--batch-size", type=int_arg(1))
    p.add_argument("--axes", help="axes to predict and soft-vote, e.g. zyx")
    p.add_argument("--planes", type=int, choices=(3, 9),
                   help="3: soft-vote the orthogonal --axes (default); 9: also the six diagonal planes (3x the prediction time)")
    p.add_argument("--mc-samples", type=int_arg(0), help="MC-dropout samples for BALD scores (0 = off)")
    p.add_argument("--pretrained", help="local weights file to start from (the first round only)")
    lr_number = float_arg(0, lo_open=True)
    p.add_argument("--lr", type=lambda text: "auto" if text.strip().lower() == "auto" else lr_number(text),
                   help="AdamW learning rate, or auto (default): 3e-3 from fresh weights, 1e-3 when resuming a checkpoint "
                        "or --pretrained weights")
    p.add_argument("--input-norm", choices=("auto", "window", "slice"),
                   help="network input: the display window, or every slice standardised on its own mean and spread; "
                        "auto (default): slice when neighbouring slices differ in brightness (serial-section EM), else window")
    p.add_argument("--threads", type=int_arg(1), help="torch CPU threads")
    p.add_argument("--continuous", dest="continuous", action="store_true", default=None,
                   help="watch mode: train on while no new labels come in, publish when the held-out score improves (default)")
    p.add_argument("--no-continuous", dest="continuous", action="store_false", default=None,
                   help="watch mode: idle between rounds instead of training on while no new labels come in")
    p.add_argument("--holdout", type=float_arg(0, 0.5), dest="holdout_fraction",
                   help="share of labelled voxels held out to score rounds (default 0.1; 0 = off)")
    p.add_argument("--poll", type=float_arg(0, lo_open=True), default=1.0, help="seconds between checks for new labels")
    p.add_argument("--debounce", type=float_arg(0), default=2.0,
                   help="watch mode: start a round this long after the last stroke (at once when a slice is committed)")


#: TrainConfig fields and the flags that set them (so an error names what the user typed).
_FLAGS = {"model": "--model", "device": "--device", "steps_per_round": "--steps", "max_seconds_per_round": "--max-seconds",
          "crop": "--crop", "batch_size": "--batch-size", "axes": "--axes", "planes": "--planes", "mc_samples": "--mc-samples",
          "pretrained": "--pretrained", "threads": "--threads", "lr": "--lr", "input_norm": "--input-norm",
          "holdout_fraction": "--holdout", "continuous": "--no-continuous"}


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    base = base or TrainConfig()
    try:
        return base.with_(
            device=args.device, model=args.model, steps_per_round=args.steps, max_seconds_per_round=args.max_seconds,
            crop=args.crop, batch_size=args.batch_size, axes=args.axes, planes=getattr(args, "planes", None), mc_samples=args.mc_samples,
            pretrained=args.pretrained, threads=args.threads, lr=getattr(args, "lr", None),
            input_norm=getattr(args, "input_norm", None), continuous=getattr(args, "continuous", None),
            holdout_fraction=getattr(args, "holdout_fraction", None),
        )
    except InputError as exc:
        field = str(exc).split(" ", 1)[0]
        if field in _FLAGS:
            raise InputError(f"{_FLAGS[field]}: {exc}") from None
        raise


def run_from_args(args: argparse.Namespace) -> int:
    from ..store.perms import adopt_shared_umask

    adopt_shared_umask(args.project)  # a shared project's trainer files stay the group's
    cfg = config_from_args(args)
    if cfg.pretrained is not None and not Path(cfg.pretrained).is_file():  # before the slow imports
        raise InputError(f"--pretrained {cfg.pretrained!r}: no such file; give the path of a local weights file")
    worker = Worker(args.project, cfg, watch=args.watch, rounds=args.rounds, poll=args.poll, debounce=args.debounce,
                    lock_fd=getattr(args, "lock_fd", None))

    def on_term(signum, frame):  # noqa: ARG001
        worker.stop_requested = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        return worker.run()
    finally:
        worker.close()


def main(argv: list[str] | None = None) -> int:
    """The process entry point: 0 done, 2 refused (bad input, another trainer runs), 1 failed."""
    args = _parser().parse_args(argv)
    try:
        return run_from_args(args)
    except AlAnnotatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - already in status.json ("failed") and worker.log
        print(f"error: the trainer failed: {type(exc).__name__}: {exc} (traceback in {Path(args.project) / LOG_FILE})",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
