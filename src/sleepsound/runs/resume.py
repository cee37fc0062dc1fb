"""The one decision about an existing run directory: reuse it, continue it, or start again.

``train --resume`` and ``campaign --resume`` both ask :func:`resume_decision`; nothing else
decides whether a run matches its config.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sleepsound.config import TrainConfig
from sleepsound.runs import layout
from sleepsound.runs.rundir import read_config, read_metrics, run_status

MISSING = "missing"  # no run here yet: train afresh
COMPLETE = "complete"  # finished, same config/cache/teacher, artifacts whole: reuse
RESUMABLE = "resumable"  # same config, unfinished (or finish lost): continue from last.pt
RESTART = "restart"  # unfinished and nothing usable to continue from: train afresh
CHANGED = "changed"  # made with another config, cache or teacher
# TrainConfig fields that cannot change a run's result, so never make a run "changed": the
# memory limit only decides how the data path holds the split (tests/test_data_path.py shows
# identical metrics in and out of memory).
RESULT_NEUTRAL = frozenset({"memory_limit"})


def _saved_value(saved: Mapping, key: str):
    """A saved config's value of ``key``; a key that runs made before it existed lack counts
    as its TrainConfig default (e.g. ``schedule``: those runs trained at a constant rate)."""
    if key in saved or key not in TrainConfig.model_fields:
        return saved.get(key)
    field_info = TrainConfig.model_fields[key]
    if field_info.default_factory is not None:
        return None
    return field_info.default


@dataclass(frozen=True)
class Decision:
    """What to do with a run directory; ``reason`` says why in words, ``differences`` lists
    the config keys that differ (state ``changed`` only)."""

    state: str
    reason: str = ""
    differences: tuple[str, ...] = field(default_factory=tuple)


def _finite_score(metrics: dict, split: str) -> bool:
    try:
        return math.isfinite(float(metrics[split]["macro_f1"]))
    except (KeyError, TypeError, ValueError):
        return False


def resume_decision(
    run_dir: Path,
    config: Mapping,
    cache_fingerprints: Mapping[str, str | None] | None = None,
    teacher_digest: str | None = None,
) -> Decision:
    """Decide about ``run_dir`` given the config a new run would have.

    Args:
        run_dir: ``<results>/runs/<name>``.
        config: the JSON form of the TrainConfig (``model_dump(mode="json")``) with the run
            name filled in; every key but :data:`RESULT_NEUTRAL` must equal the saved config's.
        cache_fingerprints: ``{split: fingerprint}`` of the cache now (None for a split that
            cannot be read); must equal the saved ``cache_fingerprints``. None: not checked.
        teacher_digest: the first 16 hex digits of the teacher checkpoint's sha256 now (KD
            runs); the saved teacher-logits file name starts with it. None: not checked.

    Returns:
        A :class:`Decision`: ``missing``, ``complete``, ``resumable``, ``restart`` or
        ``changed`` (see the constants of this module).
    """
    run_dir = Path(run_dir)
    status = run_status(run_dir)
    if status == "missing":
        return Decision(MISSING, f"{run_dir}: no run yet")
    try:
        saved = read_config(run_dir)
    except (OSError, ValueError) as exc:
        return Decision(RESTART, f"config unreadable ({exc})")
    diffs = tuple(
        sorted(k for k in config if k not in RESULT_NEUTRAL and _saved_value(saved, k) != config[k])
    )
    if diffs:
        return Decision(CHANGED, f"the config differs in {list(diffs)}", diffs)
    if cache_fingerprints is not None and saved.get("cache_fingerprints") != dict(
        cache_fingerprints
    ):
        return Decision(CHANGED, "the cache changed (fingerprints differ)", ("cache",))
    if teacher_digest is not None:
        name = Path(str(saved.get("teacher_logits") or "")).name
        if not name.startswith(teacher_digest):
            return Decision(CHANGED, "the teacher checkpoint changed", ("teacher",))
    best = layout.best_checkpoint(run_dir).is_file()
    if status == "complete" and best:
        try:
            metrics = read_metrics(run_dir)
        except (OSError, ValueError):
            metrics = {}
        if _finite_score(metrics, "validation") and _finite_score(metrics, "test"):
            return Decision(COMPLETE, "complete, same config, cache and teacher")
    if best and layout.last_checkpoint(run_dir).is_file():
        why = "unfinished" if status != "complete" else "complete but its metrics are lost"
        return Decision(RESUMABLE, f"{why}: continuing from its last checkpoint")
    return Decision(RESTART, "unfinished and without the checkpoints to continue from")
