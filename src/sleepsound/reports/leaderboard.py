"""``results/leaderboard.csv``: one row per finished run, safe under concurrent writers.

Schema (column order is stable; new columns are only ever appended at the end):

==========================  ==========================================================
identity                    run_name, kind (baseline | kd), model, model_kwargs (JSON), seed
data                        classes, channels, data_source, cache_fingerprint
config                      epochs, batch_size, lr, weight_decay, grad_clip, class_weights,
                            frames, bucket_frames
distillation                teacher_run, alpha, tau, teacher_params, compression_ratio
training                    epochs_ran, best_epoch, stopped_early, collapsed, duration_s,
                            train_samples_per_s
validation (best ckpt)      val_loss, val_acc, val_balanced_acc, val_macro_f1
test (best ckpt, once)      test_loss, test_acc, test_balanced_acc, test_macro_f1,
                            test_macro_precision, test_macro_recall
deployment                  params, fp32_bytes, checkpoint_bytes, macs_5s,
                            latency_median_ms, latency_p90_ms
artifacts                   run_dir, checkpoint, metrics_path, finished_at
==========================  ==========================================================

A re-run replaces its row (keyed by run_dir); writers hold a file lock and replace the file
atomically, so concurrent appends lose nothing and a reader never sees half a file.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

from filelock import FileLock

from sleepsound.data.provenance import source_title
from sleepsound.training.artifacts import atomic_write, read_json

COLUMNS = [
    "run_name", "kind", "model", "model_kwargs", "seed",
    "classes", "channels", "data_source", "cache_fingerprint",
    "epochs", "batch_size", "lr", "weight_decay", "grad_clip", "class_weights", "frames",
    "bucket_frames",
    "teacher_run", "alpha", "tau", "teacher_params", "compression_ratio",
    "epochs_ran", "best_epoch", "stopped_early", "collapsed", "duration_s",
    "train_samples_per_s",
    "val_loss", "val_acc", "val_balanced_acc", "val_macro_f1",
    "test_loss", "test_acc", "test_balanced_acc", "test_macro_f1", "test_macro_precision",
    "test_macro_recall",
    "params", "fp32_bytes", "checkpoint_bytes", "macs_5s", "latency_median_ms", "latency_p90_ms",
    "run_dir", "checkpoint", "metrics_path", "finished_at",
]  # fmt: skip


def leaderboard_path(run_dir: Path) -> Path:
    """``<results>/leaderboard.csv`` for ``<results>/runs/<name>``."""
    return Path(run_dir).resolve().parent.parent / "leaderboard.csv"


def run_row(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    cfg = read_json(run_dir / "config.json")
    m = read_json(run_dir / "metrics.json")
    val, test, dep = m["validation"], m["test"], m["deployment"]
    teacher = m.get("teacher", {})
    return {
        "run_name": cfg["run_name"],
        "kind": "kd" if cfg.get("teacher_run") else "baseline",
        "model": cfg["model"],
        "model_kwargs": json.dumps(cfg.get("model_kwargs", {}), sort_keys=True),
        "seed": cfg["seed"],
        "classes": ",".join(cfg["classes"]),
        "channels": cfg.get("channels", "mean"),
        "data_source": source_title(cfg.get("data_source")),
        "cache_fingerprint": cfg["cache_fingerprints"]["train"][:16],
        **{k: cfg[k] for k in ("epochs", "batch_size", "lr", "weight_decay", "grad_clip",
                               "class_weights", "frames", "bucket_frames")},
        "teacher_run": cfg.get("teacher_run") or "",
        "alpha": cfg.get("alpha") if cfg.get("alpha") is not None else "",
        "tau": cfg.get("tau") if cfg.get("tau") is not None else "",
        "teacher_params": teacher.get("params", ""),
        "compression_ratio": teacher.get("compression_ratio", ""),
        "epochs_ran": m["epochs_ran"],
        "best_epoch": m["best_epoch"],
        "stopped_early": m["early_stopping"]["stopped_early"],
        "collapsed": m["collapsed"]["validation"],
        "duration_s": round(m["duration_s"], 2),
        "train_samples_per_s": round(m["train_samples_per_s"], 1),
        **{f"val_{k}": val[k] for k in ("loss", "acc", "balanced_acc", "macro_f1")},
        **{f"test_{k}": test[k] for k in ("loss", "acc", "balanced_acc", "macro_f1",
                                          "macro_precision", "macro_recall")},
        "params": dep["params"],
        "fp32_bytes": dep["fp32_bytes"],
        "checkpoint_bytes": dep["checkpoint_bytes"],
        "macs_5s": dep["macs"],
        "latency_median_ms": round(dep["latency_median_ms"], 3),
        "latency_p90_ms": round(dep["latency_p90_ms"], 3),
        "run_dir": str(run_dir.resolve()),
        "checkpoint": str((run_dir / "checkpoints" / "best.pt").resolve()),
        "metrics_path": str((run_dir / "metrics.json").resolve()),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }  # fmt: skip


def read_leaderboard(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buf.getvalue())


def upsert_row(path: Path, row: dict) -> None:
    """Insert or replace (by run_dir) one row, under a lock, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        rows = [r for r in read_leaderboard(path) if r.get("run_dir") != row["run_dir"]]
        rows.append({k: row.get(k, "") for k in COLUMNS})
        _write(path, rows)


def remove_runs(path: Path, run_dirs: list[Path]) -> int:
    """Drop the rows of these run dirs (deleted runs); returns how many went."""
    path = Path(path)
    if not path.is_file():
        return 0
    gone = {str(Path(d).resolve()) for d in run_dirs}
    with FileLock(str(path) + ".lock"):
        rows = read_leaderboard(path)
        keep = [r for r in rows if r.get("run_dir") not in gone]
        if len(keep) != len(rows):
            _write(path, keep)
    return len(rows) - len(keep)


def upsert_run(run_dir: Path, path: Path | None = None) -> None:
    upsert_row(path or leaderboard_path(run_dir), run_row(run_dir))
