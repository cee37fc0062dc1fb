"""``<results>/leaderboard.csv``: one row per finished run, safe under concurrent writers.

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

A re-run replaces its row (the row with its run_dir or its run_name: names are unique in one
results folder, and a moved results folder keeps its names); writers hold a file lock and
replace the file atomically, so concurrent appends lose nothing and a reader never sees half
a file. The
leaderboard is derived from the run directories: :func:`reconcile` adds the row of a run that
completed but was killed before its row was written.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path

from filelock import FileLock

from sleepsound.atomic import atomic_write
from sleepsound.config import augment_label
from sleepsound.data.provenance import source_title
from sleepsound.runs import layout
from sleepsound.runs.rundir import read_config, read_metrics, run_status

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
    "augment",
]  # fmt: skip
# Columns a readable file must have (those of the first schema: appended ones may be absent).
REQUIRED_COLUMNS = tuple(COLUMNS[:48])
# Columns that hold numbers when not empty.
NUMERIC_COLUMNS = (
    "seed", "epochs", "batch_size", "lr", "weight_decay", "grad_clip", "bucket_frames",
    "teacher_params", "compression_ratio", "epochs_ran", "best_epoch", "duration_s",
    "train_samples_per_s", "val_loss", "val_acc", "val_balanced_acc", "val_macro_f1",
    "test_loss", "test_acc", "test_balanced_acc", "test_macro_f1", "test_macro_precision",
    "test_macro_recall", "params", "fp32_bytes", "checkpoint_bytes", "macs_5s",
    "latency_median_ms", "latency_p90_ms",
)  # fmt: skip
REBUILD_HINT = "delete it and run `sleepsound leaderboard` to rebuild it from the run folders"


class LeaderboardError(ValueError):
    """An unreadable leaderboard; the message names the file and what is wrong."""


def leaderboard_path(run_dir: Path) -> Path:
    """``<results>/leaderboard.csv`` for ``<results>/runs/<name>``."""
    return layout.leaderboard_of(run_dir)


def run_row(run_dir: Path) -> dict:
    """The leaderboard row of a finished run, from its config.json and metrics.json."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    m = read_metrics(run_dir)
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
        "checkpoint": str(layout.best_checkpoint(run_dir).resolve()),
        "metrics_path": str(layout.metrics_path(run_dir).resolve()),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "augment": augment_label(cfg.get("augment")),
    }  # fmt: skip


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def parse_leaderboard(path: Path, data: bytes) -> list[dict]:
    """Rows of a leaderboard file's bytes; raises :class:`LeaderboardError` naming ``path``
    when they are not UTF-8 text, lack a header or columns, or hold a bad number."""
    if not data.strip():
        raise LeaderboardError(f"{path}: empty file, no header; {REBUILD_HINT}")
    if b"\x00" in data:
        raise LeaderboardError(f"{path}: binary data, not a CSV file; {REBUILD_HINT}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LeaderboardError(
            f"{path}: not UTF-8 text (byte {exc.start}); {REBUILD_HINT}"
        ) from None
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            shown = ", ".join(missing[:5]) + (
                f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            )
            raise LeaderboardError(f"{path}: missing column(s) {shown}; {REBUILD_HINT}")
        rows = []
        for line, row in enumerate(reader, start=2):
            if None in row or any(v is None for v in row.values()):
                raise LeaderboardError(
                    f"{path}:{line}: {len(header)} columns expected; {REBUILD_HINT}"
                )
            bad = [c for c in NUMERIC_COLUMNS if c in row and row[c] and not _is_number(row[c])]
            if bad:
                raise LeaderboardError(
                    f"{path}:{line}: {bad[0]} {row[bad[0]]!r} is not a finite number; "
                    f"{REBUILD_HINT}"
                )
            rows.append(row)
    except csv.Error as exc:
        raise LeaderboardError(f"{path}: not a valid CSV file ({exc}); {REBUILD_HINT}") from None
    return rows


def read_leaderboard(path: Path) -> list[dict]:
    """Every row of a leaderboard file ([] when there is none); raises
    :class:`LeaderboardError` (a ValueError) naming the file when it is corrupt."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise LeaderboardError(f"{path}: a folder, not a leaderboard file") from None
    except OSError as exc:
        raise LeaderboardError(f"{path}: unreadable ({exc.strerror or exc})") from None
    return parse_leaderboard(path, data)


def _write(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buf.getvalue())


def _clean(path: Path) -> None:
    """Remove temporaries of this leaderboard a killed writer left (call under the lock)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def upsert_rows(path: Path, new_rows: list[dict]) -> None:
    """Insert or replace (by run_dir or run_name) rows, under a lock, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        _clean(path)
        dirs = {r.get("run_dir") for r in new_rows} - {None, ""}
        names = {r.get("run_name") for r in new_rows} - {None, ""}
        rows = [
            r
            for r in read_leaderboard(path)
            if r.get("run_dir") not in dirs and r.get("run_name") not in names
        ]
        rows.extend({k: r.get(k, "") for k in COLUMNS} for r in new_rows)
        _write(path, rows)


def upsert_row(path: Path, row: dict) -> None:
    """Insert or replace (by run_dir or run_name) one row, under a lock, atomically."""
    upsert_rows(path, [row])


def remove_runs(path: Path, run_dirs: list[Path]) -> int:
    """Drop the rows of these run dirs (deleted runs); returns how many went."""
    path = Path(path)
    if not path.is_file():
        return 0
    gone = {str(Path(d).resolve()) for d in run_dirs}
    with FileLock(str(path) + ".lock"):
        _clean(path)
        rows = read_leaderboard(path)
        keep = [r for r in rows if r.get("run_dir") not in gone]
        if len(keep) != len(rows):
            _write(path, keep)
    return len(rows) - len(keep)


def upsert_run(run_dir: Path, path: Path | None = None) -> None:
    upsert_row(path or leaderboard_path(run_dir), run_row(run_dir))


def ensure_row(run_dir: Path) -> bool:
    """Give a complete run its leaderboard row if it has none; returns True when added."""
    path = leaderboard_path(run_dir)
    if any(r.get("run_name") == Path(run_dir).name for r in read_leaderboard(path)):
        return False
    upsert_run(run_dir, path)
    return True


def reconcile(results_dir: Path) -> list[str]:
    """Add the rows of complete runs under ``<results>/runs`` that the leaderboard lacks (a
    run killed between its status and its row); returns their names. Runs whose artifacts
    cannot be read are left out (the report's audit lists them)."""
    runs = layout.runs_dir(results_dir)
    if not runs.is_dir():
        return []
    path = layout.leaderboard_file(results_dir)
    have = {r.get("run_name") for r in read_leaderboard(path)}
    missing = []
    for run_dir in sorted(p for p in runs.iterdir() if p.is_dir()):
        if run_dir.name in have or run_status(run_dir) != "complete":
            continue
        try:
            missing.append(run_row(run_dir))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    if missing:
        upsert_rows(path, missing)
    return [r["run_name"] for r in missing]
