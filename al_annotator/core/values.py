"""Typed values the Session hands to front ends: volume facts, trainer status, model outputs.

Front ends format these; they never read the project files these come from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ModelOutputs", "ReadOnlyArray", "TrainerStatus", "VolumeFacts", "TRAINER_STATES", "DEEP_ALONE_MARGIN", "choose_served", "use_deep_features", "served_summary"]

#: The states a trainer reports, in the order of a round.
TRAINER_STATES = ("not started", "loading", "idle", "waiting", "training", "predicting", "converged", "stopped", "failed", "unknown")


class ReadOnlyArray:
    """A lazily indexed view of a project array that cannot be written through (napari layers,
    slab caches). Indexing reads from disk; ``__setitem__`` raises."""

    __slots__ = ("_arr",)

    def __init__(self, arr: Any) -> None:
        self._arr = arr

    shape = property(lambda self: tuple(self._arr.shape))
    dtype = property(lambda self: np.dtype(self._arr.dtype))
    chunks = property(lambda self: tuple(getattr(self._arr, "chunks", self._arr.shape)))
    ndim = property(lambda self: len(self._arr.shape))
    size = property(lambda self: int(np.prod(self._arr.shape)))

    def __len__(self) -> int:
        return int(self._arr.shape[0])

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self._arr[key])

    def __setitem__(self, key: Any, value: Any) -> None:
        raise TypeError("a project array seen through the Session is read-only: edit labels with Session.paint/apply_edit")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.asarray(self._arr[...])
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"ReadOnlyArray(shape={self.shape}, dtype={self.dtype})"


@dataclass(frozen=True)
class VolumeFacts:
    """What a front end needs to know about the volume to lay out its views."""

    shape: tuple[int, int, int]
    dtype: np.dtype
    chunks: tuple[int, int, int]
    spacing: tuple[float, float, float]
    spacing_unit: str
    display_window: tuple[float, float]
    value_range: tuple[float, float]
    name: str
    path: str | None
    source: str

    @property
    def persistent(self) -> bool:
        return self.path is not None

    def chunks_in(self, axis: str | int, index: int | None = None) -> int:
        """How many image chunks a whole plane of ``axis`` touches (what a cold read costs)."""
        from ..types import axis_number

        n = axis_number(axis)
        count = 1
        for a, (size, chunk) in enumerate(zip(self.shape, self.chunks)):
            if a != n:
                count *= math.ceil(size / chunk)
        return count


def _num(value: Any, kind: type = float) -> Any:
    try:
        if value is None or isinstance(value, bool):
            return None
        out = kind(value)
        return out if not (isinstance(out, float) and not math.isfinite(out)) else None
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class TrainerStatus:
    """The trainer of a project as a typed value, with the one phrasing both front ends show."""

    state: str = "not started"
    alive: bool = False
    round: int | None = None
    step: int | None = None
    loss: float | None = None
    val_dice: float | None = None
    n_train: int | None = None
    n_val: int | None = None
    progress: float | None = None
    phase: str | None = None
    device: str | None = None
    model: str | None = None
    model_version: int | None = None
    version_in_progress: int | None = None
    time_per_round: float | None = None
    heartbeat_age: float | None = None
    host: str | None = None
    pid: int | None = None
    error: str | None = None
    warning: str | None = None
    heldout_dice: float | None = None
    best_heldout_dice: float | None = None
    continuing: bool = False
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, doc: dict[str, Any] | None) -> "TrainerStatus":
        doc = dict(doc or {})
        state = str(doc.get("state", "not started"))
        return cls(
            state=state if state in TRAINER_STATES else "unknown",
            alive=bool(doc.get("alive", False)),
            round=_num(doc.get("round"), int),
            step=_num(doc.get("step"), int),
            loss=_num(doc.get("loss")),
            val_dice=_num(doc.get("val_dice")),
            n_train=_num(doc.get("n_train"), int),
            n_val=_num(doc.get("n_val"), int),
            progress=_num(doc.get("progress")),
            phase=None if doc.get("phase") is None else str(doc["phase"]),
            device=None if doc.get("device") is None else str(doc["device"]),
            model=None if doc.get("model") is None else str(doc["model"]),
            model_version=_num(doc.get("model_version"), int),
            version_in_progress=_num(doc.get("version_in_progress"), int),
            time_per_round=_num(doc.get("time_per_round")),
            heartbeat_age=_num(doc.get("heartbeat_age")),
            host=None if doc.get("host") is None else str(doc["host"]),
            pid=_num(doc.get("pid"), int),
            error=None if not doc.get("error") else str(doc["error"]),
            warning=None if not doc.get("warning") else str(doc["warning"]),
            heldout_dice=_num(doc.get("heldout_dice")),
            best_heldout_dice=_num(doc.get("best_heldout_dice")),
            continuing=bool(doc.get("continuing", False)),
            raw=doc,
        )

    @property
    def running(self) -> bool:
        """A live worker in a state that does work (what a progress bar follows)."""
        return self.alive and self.state in ("loading", "idle", "waiting", "training", "predicting", "converged")

    @property
    def stalled(self) -> bool:
        """The status names a working state but no live process is behind it."""
        return not self.alive and self.state not in ("not started", "stopped", "failed", "unknown")

    def val_dice_text(self) -> str:
        """Why validation Dice is blank, or its value."""
        if self.val_dice is not None:
            return f"val Dice {self.val_dice:.3f}"
        if self.n_val == 0:
            return "val Dice: none yet (about 1 in 5 slices marked annotated is held out, from 5 on)"
        return ""

    def parts(self) -> list[str]:
        """The status as short phrases, state first: what both front ends show."""
        state = "training on (no new labels)" if self.state == "training" and self.continuing else self.state
        if self.state == "converged":
            state = "converged (waiting for new labels)"
        out = [state + (" (not running)" if self.stalled else "")]
        if self.round is not None:
            out.append(f"round {self.round}")
        if self.step is not None:
            out.append(f"step {self.step}")
        if self.loss is not None:
            out.append(f"loss {self.loss:.3f}")
        held = self.heldout_dice if self.heldout_dice is not None else self.best_heldout_dice
        if held is not None:
            out.append(f"held-out Dice {held:.3f}")
        vd = self.val_dice_text()
        if vd and self.state not in ("not started",):
            out.append(vd)
        if self.device:
            out.append(self.device)
        if self.model_version is not None:
            out.append(f"model v{self.model_version}")
        if self.error:
            out.append(f"error: {self.error}")
        elif self.warning:
            out.append(self.warning)
        return out

    def summary(self) -> str:
        return " · ".join(self.parts())

    def to_json(self) -> dict[str, Any]:
        """JSON-safe fields (no NaN: unknown numbers are None), plus ``summary`` and ``running``, for the notebook widget."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "raw"}
        out["summary"], out["running"] = self.summary(), self.running
        return out


@dataclass(frozen=True)
class ModelOutputs:
    """The volume outputs of one published model version (read-only, lazy); any may be ``None``."""

    version: int
    prediction: ReadOnlyArray | None = None
    confidence: ReadOnlyArray | None = None
    probabilities: ReadOnlyArray | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


#: The deep tier serves alone only when it beats the blend of the tiers by more than this on the held-out
#: voxels; otherwise the blend, the hedge, serves in its place. Held-out scribbles lie inside class regions,
#: where the network's smooth output is right, and hold no boundaries: on the EM stack (docs/BENCHMARKS.md,
#: "The served system") the deep tier scored 0.75-0.97 on them, up to 0.26 above tier 1, in four rounds
#: where it then lost 0.01-0.10 to tier 1 on the test slices; the blend, scored within 0.01 of it on the
#: same voxels, lost less or won.
DEEP_ALONE_MARGIN = 0.02


def use_deep_features(with_deep: float | None, filters: float | None) -> bool:
    """Whether tier 1 uses the deep tier's features (``instant.deep``): only when the fit with them scores
    strictly higher on the held-out voxels than the fit on the filter bank alone (two forests on the same
    voxels, judged on the same held-out strokes); without both scores, the filters alone. A network that
    has barely trained (the first round on EM: 86 steps, 0.50-0.61 Dice alone) cost tier 1 up to 0.075
    on the test slices through its features; the held-out comparison turned them down there.

    >>> use_deep_features(0.9, 0.8), use_deep_features(0.7, 0.8), use_deep_features(None, 0.8), use_deep_features(0.8, 0.8)
    (True, False, False, False)
    """
    return with_deep is not None and filters is not None and with_deep > filters


def choose_served(instant: float | None, deep: float | None, blend: float | None = None) -> tuple[str, str]:
    """``(tier, reason)``: which model serves, from the held-out Dice of tier 1 (``instant``), the deep
    tier and their blend, all scored on the same held-out labelled voxels (``training.holdout``).

    With all three: the deep tier alone serves only when it beats tier 1 and also beats the blend (the
    mean of the two tiers' class probabilities) by more than :data:`DEEP_ALONE_MARGIN`; otherwise the
    blend serves when it or the deep tier beats tier 1 (the evidence for the network that is not clear of
    the blend goes to the hedge), else tier 1. Without a blend score (no blend offered: tier 1 already
    has the deep tier's features, ``instant.deep``): the deep tier serves only when it beats tier 1 by
    more than the margin; a tie, or no deep score, serves the fresher instant classifier. The one rule of
    ``Session.served_tier`` and of ``al-annotator simulate --tiers``.

    >>> choose_served(0.80, 0.82, 0.86)[0], choose_served(0.80, 0.82, 0.81)[0], choose_served(0.8, 0.8)[0]
    ('blend', 'blend', 'instant')
    >>> choose_served(0.70, 0.90, 0.85)[0], choose_served(0.80, 0.79, 0.78)[0], choose_served(0.8, 0.85)[0]
    ('deep', 'instant', 'deep')
    >>> choose_served(0.8, 0.81)[0], choose_served(None, 0.5)[0]
    ('instant', 'deep')
    """
    if blend is not None and instant is not None and deep is not None:
        if deep > instant and deep > blend + DEEP_ALONE_MARGIN:
            return "deep", f"the deep model scores higher on the held-out voxels than tier 1 and the blend (by > {DEEP_ALONE_MARGIN:g})"
        if blend > instant:
            return "blend", "the blend of both tiers scores higher on the held-out voxels than the instant classifier"
        if deep > instant:
            return "blend", (f"the deep model scores higher than the instant classifier but within {DEEP_ALONE_MARGIN:g} of "
                             "the blend on the held-out voxels: the blend hedges")
        return "instant", "the instant classifier scores at least as high on the held-out voxels"
    if deep is not None and (instant is None or deep > instant + DEEP_ALONE_MARGIN):
        return "deep", "the deep model scores higher on the held-out voxels" + ("" if instant is None else f" (by > {DEEP_ALONE_MARGIN:g})")
    if instant is not None and deep is not None:
        return "instant", ("the instant classifier scores at least as high on the held-out voxels" if deep <= instant else
                           f"the deep model scores within {DEEP_ALONE_MARGIN:g} of the instant classifier on the held-out voxels")
    return "instant", "no held-out score for the deep model: the fresher instant classifier serves"


def _two(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def served_summary(served: dict[str, Any] | None, *, model_version: int | None = None, live: bool = True,
                   error: str | None = None) -> str:
    """The served tier in the words both front ends show (``Session.served_summary`` fills it in).

    Examples
    --------
    >>> served_summary({"tier": "instant", "instant": 0.834, "deep": None, "reason": "no deep model version yet"})
    'serving: instant classifier · held-out Dice 0.83'
    >>> served_summary({"tier": "deep", "instant": 0.8, "deep": 0.9, "reason": "..."}, model_version=3)
    'serving: model v3 · held-out Dice 0.90 (instant classifier 0.80)'
    >>> served_summary({"tier": None, "instant": None, "deep": None, "reason": "paint two classes and the instant classifier predicts"})
    'serving: nothing yet · paint two classes and the instant classifier predicts'
    >>> served_summary({"tier": "blend", "instant": 0.80, "deep": 0.82, "blend": 0.86, "reason": "..."}, model_version=3)
    'serving: instant classifier + model v3 blended · held-out Dice 0.86 (instant 0.80, model 0.82)'
    >>> served_summary({"tier": "instant", "instant": 0.86, "deep": 0.8, "deep_features": 4, "reason": "..."}, model_version=4)
    "serving: instant classifier with model v4's features · held-out Dice 0.86 (model v4 0.80)"
    >>> served_summary(None, live=False)
    'serving: nothing · live preview off'
    """
    served = served or {"tier": None, "instant": None, "deep": None, "reason": ""}
    tier = served.get("tier")

    def dice(value: Any) -> str:
        return "no held-out score yet" if value is None else f"held-out Dice {value:.2f}"

    if tier == "blend" and live:
        text = (f"serving: instant classifier + model v{model_version} blended · {dice(served.get('blend'))}"
                f" (instant {_two(served.get('instant'))}, model {_two(served.get('deep'))})")
    elif tier == "instant" and live:
        with_deep = f" with model v{served['deep_features']}'s features" if served.get("deep_features") is not None else ""
        text = f"serving: instant classifier{with_deep} · {dice(served.get('instant'))}"
        if served.get("deep") is not None:
            text += f" (model v{model_version} {served['deep']:.2f})"
    elif tier == "deep" or (tier in ("instant", "blend") and model_version is not None):
        text = f"serving: model v{model_version} · {dice(served.get('deep'))}"
        if live and served.get("instant") is not None:
            text += f" (instant classifier {served['instant']:.2f})"
    elif not live:
        text = "serving: nothing · live preview off"
    else:
        text = "serving: nothing yet" + (f" · {served['reason']}" if served.get("reason") else "")
    if error:
        text += f" · instant classifier failed: {error}"
    return text
