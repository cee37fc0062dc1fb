"""Classification metrics from a confusion matrix: the one implementation every stage uses."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

PLATEAU_TOL = 0.01  # validation macro-F1 gain that still counts as "plateaued" (convergence)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows true, columns predicted."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)


def metrics_from_confusion(cm: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy, balanced accuracy, macro P/R/F1 and per-class P/R/F1/support.

    Classes absent from y_true still count in the macro averages with recall 0 (as
    scikit-learn does with zero_division=0), so missing a class is never rewarded.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    present = support > 0
    total = cm.sum()
    return {
        "n": int(total),
        "acc": float(tp.sum() / total) if total else 0.0,
        "balanced_acc": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1.mean()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "collapsed": bool((predicted > 0).sum() <= 1),
    }


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]
) -> tuple[dict, np.ndarray]:
    cm = confusion_matrix(y_true, y_pred, len(classes))
    return metrics_from_confusion(cm, classes), cm


def convergence(history: list[dict], stopped_early: bool) -> str:
    """How a run ended: ``"early stop"`` (patience ran out), ``"plateau"`` (it used its whole
    epoch budget, and the mean validation macro-F1 of its last fifth of epochs - at least 2 -
    is at most :data:`PLATEAU_TOL` above the best single epoch before them) or ``"improving"``
    (stopped by the epoch budget while its recent level still beats everything before it: not
    converged). A mean of the last epochs, because one epoch's score on a small validation
    split jumps by more than the tolerance; the best before, so one bad epoch earlier does not
    make a flat run look like it is rising."""
    if stopped_early:
        return "early stop"
    f1 = [row["val_macro_f1"] for row in history]
    window = max(2, math.ceil(len(f1) / 5))
    if len(f1) <= window:
        return "improving"
    gain = sum(f1[-window:]) / window - max(f1[:-window])
    return "improving" if gain > PLATEAU_TOL else "plateau"
