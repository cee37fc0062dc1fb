"""The layout of a results folder and of one run directory: every file name lives here.

::

    <results>/leaderboard.csv              one row per finished run (see runs.leaderboard)
    <results>/runs/<run name>/
        config.json        the resolved config (TrainConfig fields + classes, scaling, cache)
        env.json           versions and device
        epochs.csv         one row per epoch
        metrics.json       validation + the single test evaluation + deployment figures
        test_metrics.csv, validation_metrics.csv, per_class*.csv, confusion*.csv
        checkpoints/best.pt   best validation macro-F1 (what every consumer loads)
        checkpoints/last.pt   model, optimizer, RNG and early-stopping state (resume)
        status.json        ``running`` | ``failed`` | ``complete``; written LAST

Functions here only compute paths; they never touch the disk.
"""

from __future__ import annotations

from pathlib import Path

RUNS_SUBDIR = "runs"
LEADERBOARD_FILE = "leaderboard.csv"
CONFIG_FILE = "config.json"
ENV_FILE = "env.json"
METRICS_FILE = "metrics.json"
EPOCHS_FILE = "epochs.csv"
STATUS_FILE = "status.json"
CHECKPOINTS_SUBDIR = "checkpoints"
BEST_CHECKPOINT = f"{CHECKPOINTS_SUBDIR}/best.pt"  # relative to the run directory
LAST_CHECKPOINT = f"{CHECKPOINTS_SUBDIR}/last.pt"
CONFUSION_FILE = "confusion.csv"
PER_CLASS_FILE = "per_class.csv"
TEMPORARY_SUFFIX = ".tmp"  # partial files (atomic writes in flight, or killed mid-write)

# What a complete run must hold for a report to rely on it.
REQUIRED_FILES = (
    STATUS_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    EPOCHS_FILE,
    CONFUSION_FILE,
    PER_CLASS_FILE,
    BEST_CHECKPOINT,
)


def runs_dir(results_dir: Path | str) -> Path:
    """``<results>/runs``."""
    return Path(results_dir) / RUNS_SUBDIR


def run_dir(results_dir: Path | str, run_name: str) -> Path:
    """``<results>/runs/<run_name>`` (``run_name`` must already be a safe name, see config)."""
    return runs_dir(results_dir) / run_name


def leaderboard_file(results_dir: Path | str) -> Path:
    """``<results>/leaderboard.csv``."""
    return Path(results_dir) / LEADERBOARD_FILE


def leaderboard_of(run_dir: Path | str) -> Path:
    """The leaderboard of the results folder that holds ``<results>/runs/<name>``."""
    return leaderboard_file(Path(run_dir).resolve().parent.parent)


def config_path(run_dir: Path | str) -> Path:
    return Path(run_dir) / CONFIG_FILE


def env_path(run_dir: Path | str) -> Path:
    return Path(run_dir) / ENV_FILE


def metrics_path(run_dir: Path | str) -> Path:
    return Path(run_dir) / METRICS_FILE


def epochs_path(run_dir: Path | str) -> Path:
    return Path(run_dir) / EPOCHS_FILE


def status_path(run_dir: Path | str) -> Path:
    return Path(run_dir) / STATUS_FILE


def checkpoints_dir(run_dir: Path | str) -> Path:
    return Path(run_dir) / CHECKPOINTS_SUBDIR


def best_checkpoint(run_dir: Path | str) -> Path:
    return Path(run_dir) / BEST_CHECKPOINT


def last_checkpoint(run_dir: Path | str) -> Path:
    return Path(run_dir) / LAST_CHECKPOINT


def confusion_path(run_dir: Path | str, split: str = "test") -> Path:
    return Path(run_dir) / (CONFUSION_FILE if split == "test" else f"confusion_{split}.csv")


def per_class_path(run_dir: Path | str, split: str = "test") -> Path:
    return Path(run_dir) / (PER_CLASS_FILE if split == "test" else f"per_class_{split}.csv")


def split_metrics_path(run_dir: Path | str, split: str) -> Path:
    return Path(run_dir) / f"{split}_metrics.csv"
