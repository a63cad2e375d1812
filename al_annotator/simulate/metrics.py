"""Segmentation scores from a confusion matrix: Dice and IoU per class, their means."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["confusion", "scores_from_confusion", "evaluate_labels"]


def confusion(true: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``(C, C)`` counts, rows = truth, columns = prediction; both hold class values ``1..C``."""
    t = np.asarray(true, np.int64).reshape(-1) - 1
    p = np.asarray(pred, np.int64).reshape(-1) - 1
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def scores_from_confusion(cm: np.ndarray) -> dict[str, Any]:
    """Dice and IoU per class (``None`` for a class absent from the truth); means over present classes.

    Examples
    --------
    >>> s = scores_from_confusion(np.array([[3, 1], [0, 4]]))
    >>> [round(d, 3) for d in s["dice_per_class"]], round(s["mean_dice"], 3), round(s["miou"], 3)
    ([0.857, 0.889], 0.873, 0.775)
    """
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    fn = cm.sum(1) - tp
    fp = cm.sum(0) - tp
    present = cm.sum(1) > 0
    dice = [float(2 * tp[c] / (2 * tp[c] + fp[c] + fn[c])) if present[c] else None for c in range(cm.shape[0])]
    iou = [float(tp[c] / (tp[c] + fp[c] + fn[c])) if present[c] else None for c in range(cm.shape[0])]
    vd = [d for d in dice if d is not None]
    vi = [d for d in iou if d is not None]
    return {
        "dice_per_class": dice,
        "iou_per_class": iou,
        "mean_dice": float(np.mean(vd)) if vd else None,
        "miou": float(np.mean(vi)) if vi else None,
        "voxels": int(cm.sum()),
    }


def evaluate_labels(true: np.ndarray, pred: np.ndarray, mask: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Scores of ``pred`` against ``true`` on the voxels where ``mask`` is true."""
    m = np.asarray(mask, bool)
    return scores_from_confusion(confusion(np.asarray(true)[m], np.asarray(pred)[m], n_classes))
