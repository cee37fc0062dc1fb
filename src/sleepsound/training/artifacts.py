"""A run's directory, ``results/runs/<run_name>/``: complete or marked incomplete, never ambiguous.

``status.json`` says ``running``, ``failed`` or ``complete``; it is the last file written when a
run finishes, and every other file is written through a temporary name and renamed, so a reader
that sees ``complete`` sees every artifact whole.

Files: config.json (resolved config), env.json, metrics.json, epochs.csv, test_metrics.csv,
per_class.csv, confusion.csv, checkpoints/{best,last}.pt, status.json.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from sleepsound.atomic import atomic_write, atomic_write_bytes  # noqa: F401 (re-exported)

STATUS_FILE = "status.json"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json(path: Path, data) -> None:
    atomic_write(path, json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write(path, buf.getvalue())


def set_status(run_dir: Path, state: str, **extra) -> None:
    write_json(run_dir / STATUS_FILE, {"state": state, "time": time.time(), **extra})


def run_status(run_dir: Path) -> str:
    """``complete``, ``running``, ``failed`` or ``missing``."""
    path = Path(run_dir) / STATUS_FILE
    if not path.is_file():
        return "missing"
    try:
        return read_json(path).get("state", "missing")
    except (json.JSONDecodeError, OSError):
        return "missing"


def fresh_run_dir(run_dir: Path) -> None:
    """Start a run directory from nothing (an old one is removed)."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True)
    set_status(run_dir, "running")


def environment(device: str) -> dict:
    import torch  # here, not at the top: reports read artifacts without loading torch

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


def write_evaluation(run_dir: Path, split: str, metrics: dict, cm: np.ndarray, classes) -> None:
    """{split}_metrics.csv, per_class.csv and confusion.csv (rows true, columns predicted)."""
    keys = ["loss", "acc", "balanced_acc", "macro_f1", "macro_precision", "macro_recall", "n"]
    write_csv(run_dir / f"{split}_metrics.csv", keys, [[metrics.get(k) for k in keys]])
    suffix = "" if split == "test" else f"_{split}"
    write_csv(
        run_dir / f"per_class{suffix}.csv",
        ["class", "precision", "recall", "f1", "support"],
        [[c, *metrics["per_class"][c].values()] for c in classes],
    )
    write_csv(
        run_dir / f"confusion{suffix}.csv",
        ["true\\predicted", *classes],
        [[c, *map(int, cm[i])] for i, c in enumerate(classes)],
    )
