"""Knowledge distillation: the loss, and teacher outputs computed once and stored.

loss = alpha * tau^2 * KL(softmax(teacher / tau) || softmax(student / tau))
       + (1 - alpha) * weighted cross-entropy

The teacher never runs inside the training loop: its logits over the training split are computed
once per (teacher checkpoint, cache) and stored under
``results/cache/teacher_logits/<teacher sha>_<cache fingerprint>.npy``; a changed teacher or
cache gives a new key, so a stale file is never used.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from sleepsound import runs
from sleepsound.progress import say
from sleepsound.training.augment import mixed_loss
from sleepsound.training.checkpoint import input_spec_of, load_model, place
from sleepsound.training.data import SplitData


def kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor,
    alpha: float,
    tau: float,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """The distillation loss above (no mixup; see training.augment.mixed_loss)."""
    return mixed_loss(student, target, weight, None, teacher, alpha, tau)


def teacher_checkpoint(teacher_run: Path) -> Path:
    """The checkpoint a teacher run is used through: its best one."""
    return runs.best_checkpoint(teacher_run)


def teacher_digest(teacher_run: Path) -> str | None:
    """First 16 hex digits of the teacher checkpoint's sha256 (None when unreadable): the key
    under which its logits are stored."""
    try:
        return runs.file_sha256(teacher_checkpoint(teacher_run))[:16]
    except OSError:
        return None


def check_logits(logits: np.ndarray, n_rows: int, classes, where: str) -> np.ndarray:
    """Teacher logits must be finite, shape [n_rows, len(classes)]; ValueError naming
    ``where`` otherwise."""
    k = len(classes)
    if logits.ndim != 2 or logits.shape[1] != k:
        raise ValueError(
            f"{where}: teacher logits of shape {tuple(logits.shape)}, expected [{n_rows}, {k}] "
            f"for the {k} classes {list(classes)}"
        )
    bad = int((~np.isfinite(logits)).any(axis=1).sum())
    if bad:
        raise ValueError(f"{where}: teacher logits are not finite (NaN/inf) for {bad} clip(s)")
    return logits


def teacher_logits(
    teacher_run: Path,
    split: SplitData,
    store_dir: Path,
    predict_fn,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, Path, bool]:
    """Teacher logits [N, K] for every row of ``split``; returns (logits, file, reused)."""
    ckpt_path = teacher_checkpoint(teacher_run)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"{ckpt_path}: no teacher checkpoint (is {teacher_run} a run?)")
    digest = runs.file_sha256(ckpt_path)[:16]
    key = f"{digest}_{split.fingerprint.removeprefix('content:')[:16]}_{split.path.stem}"
    store = Path(store_dir) / f"{key}.npy"
    if store.is_file():
        try:
            logits = np.load(store, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{store}: unreadable teacher logits ({exc}); delete it") from None
        if logits.ndim == 2 and logits.shape[0] == len(split):
            where = f"{store} (delete it to recompute)"
            return check_logits(logits, len(split), split.classes, where), store, True
    model, ckpt = load_model(ckpt_path)
    place(model, torch.device(device))
    if tuple(ckpt["classes"]) != split.classes:
        raise ValueError(
            f"teacher {teacher_run} was trained on classes {ckpt['classes']}, "
            f"the cache has {list(split.classes)}"
        )
    say(f"computing teacher logits once: {teacher_run} over {split.path} ({len(split)} clips)")
    logits = predict_fn(model, split, input_spec_of(ckpt, ckpt_path), batch_size, device)
    check_logits(logits, len(split), split.classes, f"teacher {ckpt_path}")
    store.parent.mkdir(parents=True, exist_ok=True)
    tmp = store.with_name(f".{store.stem}.tmp.npy")
    np.save(tmp, logits.astype(np.float32))
    os.replace(tmp, store)
    return logits, store, False
