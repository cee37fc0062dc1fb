"""Loading finished runs for the results report: the leaderboard, run folders, campaign files.

- :func:`locate_results_dir`, :func:`locate_campaign` - where to read from;
- :func:`load_runs` - one row per finished run (the leaderboard, numeric, plus run paths);
- :func:`read_status`, :func:`read_gate`, :func:`gate_decisions` - the campaign folder;
- :func:`read_epochs`, :func:`read_confusion` - per-run artifacts.

Phase names and run-name prefixes are the campaign's (:mod:`sleepsound.campaign.manifest`);
nothing here re-defines them. The data-source line is text from a data file: it is returned as
is and escaped where it is rendered (:mod:`sleepsound.reports.markdown`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from sleepsound import runs
from sleepsound.campaign import summary as seedstats
from sleepsound.campaign.manifest import PHASE_PREFIXES
from sleepsound.config import augment_label
from sleepsound.data.provenance import source_title
from sleepsound.training.metrics import convergence

ENV_RESULTS = "SLEEPSOUND_RESULTS_DIR"
ENV_CAMPAIGN = "SLEEPSOUND_CAMPAIGN"
NO_CAMPAIGN = "none"  # SLEEPSOUND_CAMPAIGN=none: every leaderboard row, no campaign audit
METRIC_COLUMNS = [
    "val_acc", "val_balanced_acc", "val_macro_f1", "test_acc", "test_balanced_acc",
    "test_macro_f1", "test_macro_precision", "test_macro_recall",
]  # fmt: skip
NUMERIC_COLUMNS = [
    *METRIC_COLUMNS, "seed", "epochs", "batch_size", "lr", "weight_decay", "grad_clip",
    "bucket_frames", "alpha", "tau", "teacher_params", "compression_ratio", "epochs_ran",
    "best_epoch", "duration_s", "train_samples_per_s", "val_loss", "test_loss", "params",
    "fp32_bytes", "checkpoint_bytes", "macs_5s", "latency_median_ms", "latency_p90_ms",
]  # fmt: skip


# ----------------------------------------------------------------------------- locating


def locate_results_dir(start: Path | None = None) -> Path:
    """``$SLEEPSOUND_RESULTS_DIR``, else ``results/`` in ``start`` (default: CWD) or its parent."""
    if os.environ.get(ENV_RESULTS):
        return Path(os.environ[ENV_RESULTS])
    cwd = Path(start or Path.cwd())
    root = next((p for p in (cwd, cwd.parent) if (p / "results").is_dir()), cwd)
    return root / "results"


def locate_campaign(results_dir: Path, name: str | None = None) -> Path | None:
    """The campaign folder to audit.

    ``name`` (else ``$SLEEPSOUND_CAMPAIGN``): a campaign name under ``results/campaigns/``, a
    path, or ``"none"`` for no campaign. Unset: the most recently modified campaign folder, or
    None when there is none. A named campaign that does not exist is an error.
    """
    name = name if name is not None else os.environ.get(ENV_CAMPAIGN, "")
    name = str(name).strip()
    campaigns = Path(results_dir) / "campaigns"
    if name.lower() == NO_CAMPAIGN:
        return None
    if name:
        path = Path(name) if Path(name).is_dir() else campaigns / name
        if not path.is_dir():
            known = sorted(p.name for p in campaigns.glob("*") if p.is_dir())
            raise FileNotFoundError(
                f"campaign {name!r} not found under {campaigns}; known: {known}"
            )
        return path
    found = [p for p in campaigns.glob("*") if p.is_dir()] if campaigns.is_dir() else []
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


# ----------------------------------------------------------------------------- reading


def read_json(path: Path) -> dict | None:
    """A JSON file's content, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def student_label(model: str, model_kwargs: str | dict | None) -> str:
    """``tinycnn`` or ``tinycnn_cbam r8 k3``: a model with its keyword arguments."""
    kwargs = model_kwargs
    if isinstance(kwargs, str):
        kwargs = json.loads(kwargs) if kwargs.strip() else {}
    parts = [str(model)] + [f"{k}{v}" for k, v in (kwargs or {}).items()]
    return " ".join(parts)


def read_status(campaign_dir: Path | None) -> pd.DataFrame:
    """A campaign's ``status.csv`` with columns normalised to ``run_name``, ``state``, ``phase``
    (empty frame when there is none)."""
    path = Path(campaign_dir) / "status.csv" if campaign_dir else None
    if path is None or not path.is_file():
        return pd.DataFrame(columns=["run_name", "state", "phase"])
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    rename = {}
    for target, options in {
        "run_name": ("run_name", "run", "name"),
        "state": ("state", "status"),
        "phase": ("phase",),
    }.items():
        col = next((c for c in options if c in df.columns), None)
        if col:
            rename[col] = target
    df = df.rename(columns=rename)
    for col in ("run_name", "state", "phase"):
        if col not in df:
            df[col] = ""
    df["state"] = df["state"].str.strip().str.lower()
    return df.drop_duplicates("run_name", keep="last").reset_index(drop=True)


def read_gate(campaign_dir: Path | None) -> dict | None:
    """The campaign runner's ``gate.json``, or None."""
    return read_json(Path(campaign_dir) / "gate.json") if campaign_dir else None


def gate_decisions(campaign_dir: Path | None) -> pd.DataFrame:
    """The campaign runner's gate decisions (``gate.json``), one row per seed."""
    gate = read_gate(campaign_dir) or {}
    rows = [{"seed": seed, **decision} for seed, decision in (gate.get("seeds") or {}).items()]
    return pd.DataFrame(rows)


def read_epochs(run_path: Path) -> pd.DataFrame:
    """A run's per-epoch log."""
    return pd.read_csv(runs.epochs_path(run_path))


def read_confusion(run_path: Path, split: str = "test") -> pd.DataFrame:
    """Confusion matrix (rows true, columns predicted) as counts."""
    return pd.read_csv(runs.layout.confusion_path(run_path, split), index_col=0)


def _leaderboard(results_dir: Path, campaign_dir: Path | None) -> pd.DataFrame:
    paths = [runs.leaderboard_file(results_dir)]
    if campaign_dir is not None:
        paths.insert(0, runs.leaderboard_file(campaign_dir))
    frames = [
        pd.DataFrame(rows, dtype=str)
        for rows in (runs.read_leaderboard(p) for p in paths if p.is_file())
        if rows
    ]
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    return df.drop_duplicates("run_dir", keep="first").reset_index(drop=True)


def _resolve_run_dir(results_dir: Path, row) -> Path:
    """The run directory of a leaderboard row: ``runs/<run_name>`` next to the leaderboard when
    it exists (the same path unless the results folder was moved or copied), else the path the
    row recorded."""
    local = runs.run_dir(results_dir, str(row["run_name"]))
    recorded = str(row.get("run_dir") or "")
    return local if local.is_dir() or not recorded else Path(recorded)


def phase_of(run_name: str, kind: str, status_phase: str = "") -> str:
    """The campaign phase (``phase1`` / ``tuning`` / ``phase2``) from status.csv, else from the
    run name's ``-<prefix>_`` part (the campaign's :data:`PHASE_PREFIXES`), else ``kind``
    (``baseline`` / ``kd``) for a run outside any campaign."""
    if status_phase:
        return status_phase
    for phase, prefix in PHASE_PREFIXES.items():
        if f"-{prefix}_" in run_name:
            return phase
    return kind


def load_runs(
    results_dir: Path = Path("results"), campaign_dir: Path | None = None
) -> pd.DataFrame:
    """One row per finished run: the leaderboard columns (numbers as numbers) plus ``run_path``
    (Path), ``student`` (model label), ``configuration`` (run name without seed), ``phase``,
    ``teacher_name``, ``collapsed_test`` and ``source`` (data-source line from the run's
    config, unescaped). With a campaign folder, only that campaign's runs (names in its
    status.csv, else names starting with ``<campaign>-``)."""
    results_dir = Path(results_dir)
    df = _leaderboard(results_dir, campaign_dir)
    if df.empty:
        return df
    status = read_status(campaign_dir)
    if campaign_dir is not None:
        if len(status):
            df = df[df["run_name"].isin(set(status["run_name"]))]
        else:
            df = df[df["run_name"].str.startswith(f"{Path(campaign_dir).name}-")]
        df = df.reset_index(drop=True)
    for col in NUMERIC_COLUMNS:
        if col in df:
            df[col] = pd.to_numeric(df[col].replace("", np.nan), errors="coerce")
    df["collapsed"] = df["collapsed"].map(_truthy)
    df["stopped_early"] = df["stopped_early"].map(_truthy)
    df["kind"] = np.where(df["teacher_run"].astype(str).str.len() > 0, "kd", "baseline")
    df["run_path"] = [_resolve_run_dir(results_dir, r) for r in df.to_dict("records")]
    df["student"] = [
        student_label(m, k) for m, k in zip(df["model"], df["model_kwargs"], strict=True)
    ]
    df["configuration"] = df["run_name"].map(seedstats.configuration_name)
    phases = dict(zip(status["run_name"], status["phase"], strict=True))
    df["phase"] = [
        phase_of(n, k, phases.get(n, "")) for n, k in zip(df["run_name"], df["kind"], strict=True)
    ]
    df["teacher_name"] = [Path(t).name if t else "" for t in df["teacher_run"].astype(str)]
    sources, collapsed_test, augment, ended = [], [], [], []
    for path, fallback in zip(df["run_path"], df["data_source"], strict=True):
        cfg = read_json(runs.config_path(path)) or {}
        metrics = read_json(runs.metrics_path(path)) or {}
        sources.append(source_title(cfg["data_source"]) if "data_source" in cfg else fallback)
        collapsed_test.append(bool(metrics.get("collapsed", {}).get("test", False)))
        augment.append(augment_label(cfg.get("augment")))
        ended.append(run_convergence(path, cfg, metrics))
    df["source"] = sources
    df["collapsed_test"] = collapsed_test
    df["augment"] = augment
    df["convergence"] = ended
    return df


def run_convergence(run_dir: Path, cfg: dict, metrics: dict) -> str:
    """How a run ended (:func:`sleepsound.training.metrics.convergence`): from its metrics, or
    for runs older than that field from its epochs.csv; "unknown" without them."""
    stopping = metrics.get("early_stopping") or {}
    if stopping.get("convergence"):
        return str(stopping["convergence"])
    try:
        epochs = pd.read_csv(runs.epochs_path(run_dir))
        history = [{"val_macro_f1": float(v)} for v in epochs["val_macro_f1"]]
        return convergence(history, bool(stopping["stopped_early"]))
    except (OSError, KeyError, ValueError, TypeError, pd.errors.ParserError):
        return "unknown"


def data_sources(df: pd.DataFrame) -> list[str]:
    """The distinct data-source lines of the runs (from their configs; unescaped)."""
    return sorted(set(df["source"])) if len(df) else []


def source_line(df: pd.DataFrame) -> str:
    """One line for a title block (unescaped); several sources are announced loudly."""
    sources = data_sources(df)
    if not sources:
        return "no runs yet (data source unknown)"
    if len(sources) == 1:
        return sources[0]
    return f"MIXED DATA SOURCES ({len(sources)}): " + " | ".join(sources)
