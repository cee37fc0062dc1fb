"""Operating points: per-class thresholds chosen on the validation split, instead of argmax.

An operating point is asked for as ``far=2/h`` (at most 2 false alarms per hour for every
class) or ``recall=0.9`` (every class keeps at least 90 % of its validation clips). For each
non-background class ``k`` a threshold ``t_k`` on its probability is chosen on the validation
split of the model's run (softmax of :func:`sleepsound.training.train.run_logits`):

* ``far=R/h``: each validation clip stands for one detection window, and an hour of recording
  holds ``3600 / hop`` windows (hop = 1 s by default). The allowed false alarms are
  ``floor(R * n_negatives * hop / 3600)`` clips of other classes scoring ``>= t_k``; ``t_k`` is
  the lowest threshold that allows no more. This counts every false *window* as an alarm, so it
  bounds the false events of a night from above (neighbouring false windows merge into one event,
  and events shorter than the minimum duration are dropped).
* ``recall=r``: ``t_k`` is the highest threshold keeping at least ``ceil(r * n_positives)`` of
  the class's own clips.

Deciding (:func:`~sleepsound.deploy.events.decide`): a window (or hop interval) gets the class
with the highest probability among those at or above their threshold, the background (``quiet``)
when none is; a task without the background class falls back to argmax. A class predicted so is
always above its threshold, so the decision rule has at most the false alarms chosen for; the
precision / recall / false alarms per hour the rule gives on validation are stored with the
thresholds (model card ``operating_points``) and shown in the night report.

Without an operating point, detection decides by argmax, as before.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from sleepsound.deploy.events import BACKGROUND, decide

DEFAULT_HOP_S = 1.0  # windows per hour = 3600 / hop (detect's default hop)
VALIDATION_SPLIT = "validation"
_SPEC = re.compile(
    r"^\s*(far)\s*=\s*([0-9.eE+-]+)\s*/\s*h\s*$|^\s*(recall)\s*=\s*([0-9.eE+-]+)\s*$"
)


class OperatingPointError(ValueError):
    """A malformed operating point, or one that cannot be chosen for a run."""


def parse(spec: str) -> tuple[str, float]:
    """``far=2/h`` -> ("far", 2.0); ``recall=0.9`` -> ("recall", 0.9)."""
    match = _SPEC.match(spec or "")
    if not match:
        raise OperatingPointError(
            f"--operating-point {spec!r}: expected far=<alarms>/h (e.g. far=2/h) or "
            "recall=<0..1> (e.g. recall=0.9)"
        )
    kind = match.group(1) or match.group(3)
    value = float(match.group(2) or match.group(4))
    if not math.isfinite(value) or value < 0 or (kind == "recall" and not 0 < value <= 1):
        raise OperatingPointError(
            f"--operating-point {spec!r}: far must be >= 0 alarms per hour, recall in (0, 1]"
        )
    return kind, value


def canonical(spec: str) -> str:
    """One spelling per operating point (the key it is stored under)."""
    kind, value = parse(spec)
    return f"far={value:g}/h" if kind == "far" else f"recall={value:g}"


def threshold_for(
    scores: np.ndarray, positive: np.ndarray, kind: str, target: float, hop_s: float
) -> float:
    """One class's threshold (see the module docstring). scores: that class's probability of
    every clip; positive: whether the clip is of that class."""
    pos = np.sort(scores[positive])[::-1]
    neg = np.sort(scores[~positive])[::-1]
    if kind == "far":
        allowed = int(math.floor(target * len(neg) * hop_s / 3600.0 + 1e-9))
        if allowed >= len(neg):
            return 0.0
        return float(np.nextafter(neg[allowed], np.inf))
    if not len(pos):
        return 1.0
    keep = max(1, int(math.ceil(target * len(pos) - 1e-9)))
    return float(pos[keep - 1])


def rule_figures(
    probs: np.ndarray, labels: np.ndarray, classes, thresholds: dict[str, float], hop_s: float
) -> dict:
    """Per class: threshold, precision, recall and false alarms per hour of the decision rule."""
    pred = decide(probs, classes, thresholds)
    out = {}
    for k, c in enumerate(classes):
        if c == BACKGROUND:
            continue
        tp = int(np.sum((pred == k) & (labels == k)))
        fp = int(np.sum((pred == k) & (labels != k)))
        n_pos, n_neg = int(np.sum(labels == k)), int(np.sum(labels != k))
        hours = n_neg * hop_s / 3600.0
        out[c] = {
            "threshold": thresholds[c],
            "precision": tp / (tp + fp) if tp + fp else 0.0,
            "recall": tp / n_pos if n_pos else 0.0,
            "false_alarms": fp,
            "far_per_h": fp / hours if hours else 0.0,
            "n_positive": n_pos,
            "n_negative": n_neg,
        }
    return out


def choose(
    probs: np.ndarray, labels: np.ndarray, classes, spec: str, hop_s: float = DEFAULT_HOP_S
) -> dict:
    """Thresholds for ``spec`` on validation probabilities [N, K] with true labels [N], and the
    figures they give: ``{"spec", "kind", "target", "hop_s", "split", "n_clips", "thresholds",
    "validation"}``."""
    kind, target = parse(spec)
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    thresholds = {
        c: threshold_for(probs[:, k], labels == k, kind, target, hop_s)
        for k, c in enumerate(classes)
        if c != BACKGROUND
    }
    return {
        "spec": canonical(spec),
        "kind": kind,
        "target": target,
        "hop_s": hop_s,
        "split": VALIDATION_SPLIT,
        "n_clips": int(len(labels)),
        "thresholds": thresholds,
        "validation": rule_figures(probs, labels, classes, thresholds, hop_s),
    }


def for_run(run_dir: Path | str, spec: str, classes) -> dict:
    """:func:`choose` on the validation split of a training run."""
    from sleepsound.deploy.runtime import softmax

    canonical(spec)  # a malformed spec fails before any work
    try:
        from sleepsound.training.train import run_logits
    except ImportError as exc:
        raise OperatingPointError(
            f"--operating-point {spec}: this version cannot compute validation logits"
        ) from exc
    logits, labels, run_classes = run_logits(Path(run_dir), split=VALIDATION_SPLIT)
    if list(run_classes) != list(classes):
        raise OperatingPointError(
            f"{run_dir}: validation classes {list(run_classes)} differ from the model's "
            f"{list(classes)}"
        )
    return choose(softmax(np.asarray(logits, dtype=np.float64)), np.asarray(labels), classes, spec)
