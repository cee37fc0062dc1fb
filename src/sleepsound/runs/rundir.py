"""A run's directory: complete or marked incomplete, never ambiguous.

``status.json`` says ``running``, ``failed`` or ``complete``; it is the last file written when a
run finishes, and every other file is written through a temporary name and renamed, so a reader
that sees ``complete`` sees every artifact whole.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from sleepsound.runs import layout
from sleepsound.runs.io import read_json, write_csv, write_json

STATES = ("running", "failed", "complete")


def set_status(run_dir: Path, state: str, **extra) -> None:
    """Write ``status.json`` (``state`` one of :data:`STATES`) atomically."""
    if state not in STATES:
        raise ValueError(f"unknown run state {state!r}; one of {STATES}")
    write_json(layout.status_path(run_dir), {"state": state, "time": time.time(), **extra})


def run_status(run_dir: Path) -> str:
    """``complete``, ``running``, ``failed`` or ``missing`` (no or unreadable status.json)."""
    path = layout.status_path(run_dir)
    if not path.is_file():
        return "missing"
    try:
        state = read_json(path).get("state", "missing")
    except (ValueError, OSError, AttributeError):
        return "missing"
    return state if state in STATES else "missing"


def fresh_run_dir(run_dir: Path) -> None:
    """Start a run directory from nothing (an old one is removed), marked ``running``."""
    run_dir = Path(run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    layout.checkpoints_dir(run_dir).mkdir(parents=True)
    set_status(run_dir, "running")


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete the ``.<name>.*tmp*`` files a killed writer left in ``folder`` and its
    ``checkpoints/``; returns them. Call only while no other process writes there."""
    folder = Path(folder)
    gone = []
    for where in (folder, layout.checkpoints_dir(folder)):
        if where.is_dir():
            for path in where.iterdir():
                if path.name.startswith(".") and ".tmp" in path.name and path.is_file():
                    path.unlink(missing_ok=True)
                    gone.append(path)
    return gone


def write_config(run_dir: Path, resolved: dict) -> None:
    write_json(layout.config_path(run_dir), resolved)


def read_config(run_dir: Path) -> dict:
    """The run's resolved config; raises ValueError naming the file when it is unreadable."""
    path = layout.config_path(run_dir)
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found (is {run_dir} a run directory?)") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable run config ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a run config is a JSON object, got {type(data).__name__}")
    return data


def write_metrics(run_dir: Path, metrics: dict) -> None:
    write_json(layout.metrics_path(run_dir), metrics)


def read_metrics(run_dir: Path) -> dict:
    """The run's metrics.json; raises OSError / ValueError naming the file."""
    path = layout.metrics_path(run_dir)
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable metrics ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: metrics are a JSON object, got {type(data).__name__}")
    return data


def write_env(run_dir: Path, device: str) -> None:
    write_json(layout.env_path(run_dir), environment(device))


def write_epochs(run_dir: Path, fields: list[str], history: list[dict]) -> None:
    rows = [[r.get(k, "") for k in fields] for r in history]  # "": a field older runs lack
    write_csv(layout.epochs_path(run_dir), fields, rows)


def environment(device: str) -> dict:
    import torch  # here, not at the top: reports read runs without loading torch

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
    write_csv(layout.split_metrics_path(run_dir, split), keys, [[metrics.get(k) for k in keys]])
    write_csv(
        layout.per_class_path(run_dir, split),
        ["class", "precision", "recall", "f1", "support"],
        [[c, *metrics["per_class"][c].values()] for c in classes],
    )
    write_csv(
        layout.confusion_path(run_dir, split),
        ["true\\predicted", *classes],
        [[c, *map(int, cm[i])] for i, c in enumerate(classes)],
    )
