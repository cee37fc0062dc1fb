"""The results analysis: tables and conclusions computed from finished runs' artifacts only.

    report_results(Path("results"))  # results/report.md, results/figures/results_analysis_*.png

Everything is read from the leaderboard, the run directories it points to (their config,
metrics, per-epoch log and confusion matrices, see :mod:`sleepsound.runs`) and, when there is one,
a campaign folder ``results/campaigns/<name>/`` (``status.csv``, ``gate.json``); nothing is
retrained. The notebook ``notebooks/results_analysis.ipynb`` imports the functions below, so the
tables it shows and the tables in ``report.md`` are computed once, by the same code:

- :func:`load_runs` - one row per finished run (the leaderboard, numeric, plus run paths);
- :func:`check_artifacts` - the invariants a report relies on (the notebook asserts them);
- :func:`completeness` - the campaign audit (planned vs complete / failed / skipped);
- :func:`phase1_table`, :func:`kd_table`, :func:`seed_table` - the tables;
- :func:`takeaways` - conclusions generated from the numbers (markdown).

Across-seed statistics (mean, std, 95 % t-interval, Welch's test) come from
:mod:`sleepsound.campaign.summary`; they are not re-implemented here.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from sleepsound import runs
from sleepsound.atomic import atomic_write
from sleepsound.campaign import summary as seedstats
from sleepsound.config import NOTEBOOKS_DIR
from sleepsound.data.provenance import source_title

ENV_RESULTS = "SLEEPSOUND_RESULTS_DIR"
ENV_CAMPAIGN = "SLEEPSOUND_CAMPAIGN"
NO_CAMPAIGN = "none"  # SLEEPSOUND_CAMPAIGN=none: every leaderboard row, no campaign audit
FIGURE_STEM = "results_analysis"
NOTEBOOK = NOTEBOOKS_DIR / f"{FIGURE_STEM}.ipynb"
TEACHER_MODELS_DEFAULT = ("crnn",)  # the reference teacher, when no KD run names one yet
GATE_MARGIN_DEFAULT = 0.03  # the reference gate (validation macro-F1)
NOISE_POINTS = 0.02  # one seed: differences below ~1-2 points are indistinguishable from noise
NEAR_BEST = 0.01  # "within 1 point of the best"
REQUIRED_FILES = runs.REQUIRED_FILES
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
# Runs equal in these (and in model/model_kwargs) are the same student recipe: a KD run's
# baseline is the non-KD run of its student trained with the same settings.
RECIPE_COLUMNS = [
    "classes", "channels", "cache_fingerprint", "epochs", "batch_size", "lr", "weight_decay",
    "grad_clip", "class_weights", "frames", "bucket_frames",
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


# ----------------------------------------------------------------------------- loading


def _read_json(path: Path) -> dict | None:
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
    """``phase1`` / ``tuning`` / ``phase2`` from the campaign (status.csv or the run name's
    ``-p1_``/``-tune_``/``-p2_`` part), else ``baseline`` / ``kd``."""
    if status_phase:
        return status_phase
    for tag, phase in (("-p1_", "phase1"), ("-tune_", "tuning"), ("-p2_", "phase2")):
        if tag in run_name:
            return phase
    return kind


def load_runs(
    results_dir: Path = Path("results"), campaign_dir: Path | None = None
) -> pd.DataFrame:
    """One row per finished run: the leaderboard columns (numbers as numbers) plus ``run_path``
    (Path), ``student`` (model label), ``configuration`` (run name without seed), ``phase``,
    ``teacher_name``, ``collapsed_test`` and ``source`` (data-source line from the run's
    config). With a campaign folder, only that campaign's runs (names in its status.csv,
    else names starting with ``<campaign>-``)."""
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
    sources, collapsed_test = [], []
    for path, fallback in zip(df["run_path"], df["data_source"], strict=True):
        cfg = _read_json(runs.config_path(path)) or {}
        metrics = _read_json(runs.metrics_path(path)) or {}
        sources.append(source_title(cfg["data_source"]) if "data_source" in cfg else fallback)
        collapsed_test.append(bool(metrics.get("collapsed", {}).get("test", False)))
    df["source"] = sources
    df["collapsed_test"] = collapsed_test
    return df


def data_sources(df: pd.DataFrame) -> list[str]:
    """The distinct data-source lines of the runs (from their configs)."""
    return sorted(set(df["source"])) if len(df) else []


def source_line(df: pd.DataFrame) -> str:
    """One line for a title block; several sources are announced loudly."""
    sources = data_sources(df)
    if not sources:
        return "no runs yet (data source unknown)"
    if len(sources) == 1:
        return sources[0]
    return f"MIXED DATA SOURCES ({len(sources)}): " + " | ".join(sources)


# ----------------------------------------------------------------------------- checks and audit


def check_artifacts(df: pd.DataFrame) -> list[str]:
    """Every problem with the runs a report would rely on: a missing or incomplete run
    directory, a missing artifact, a metric outside [0, 1], a leaderboard row that disagrees
    with its metrics file. An empty list means the artifacts are sound."""
    problems = []
    for row in df.to_dict("records"):
        name, path = row["run_name"], Path(row["run_path"])
        if not path.is_dir():
            problems.append(f"{name}: run directory {path} does not exist")
            continue
        missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
        if missing:
            problems.append(f"{name}: missing {', '.join(missing)} in {path}")
        state = runs.run_status(path)
        if state != "complete":
            problems.append(f"{name}: status is {state!r}, not 'complete' ({path})")
        bad = [c for c in METRIC_COLUMNS if not 0.0 <= row.get(c, math.nan) <= 1.0]
        if bad:
            problems.append(f"{name}: metrics outside [0, 1] or missing: {bad}")
        metrics = _read_json(runs.metrics_path(path))
        if metrics is not None:
            for split, prefix in (("validation", "val"), ("test", "test")):
                value = metrics.get(split, {}).get("macro_f1")
                if value is None or not math.isclose(
                    value, row[f"{prefix}_macro_f1"], abs_tol=1e-9
                ):
                    problems.append(
                        f"{name}: leaderboard {prefix}_macro_f1 {row[f'{prefix}_macro_f1']} "
                        f"differs from {runs.METRICS_FILE} ({value})"
                    )
        if row["kind"] == "kd" and not Path(row["teacher_run"]).is_dir():
            if _teacher_row(df, row) is None:
                problems.append(f"{name}: teacher run {row['teacher_run']} not found")
    return problems


def completeness(df: pd.DataFrame, campaign_dir: Path | None) -> pd.DataFrame:
    """One row per run the campaign planned (status.csv) or the leaderboard holds: ``state``
    (from status.csv, else ``complete`` for a leaderboard row), ``in_leaderboard``,
    ``artifacts`` (``ok`` or what is wrong), ``collapsed``."""
    status = read_status(campaign_dir)
    status = status[status["phase"] != "gate"]  # the gate is a decision step, not a run
    problems = check_artifacts(df) if len(df) else []
    rows = []
    names = list(status["run_name"]) + [
        n for n in df.get("run_name", []) if n not in set(status["run_name"])
    ]
    by_name = {r["run_name"]: r for r in df.to_dict("records")} if len(df) else {}
    states = dict(zip(status["run_name"], status["state"], strict=True))
    for name in names:
        run = by_name.get(name)
        mine = [p.split(": ", 1)[1] for p in problems if p.startswith(f"{name}: ")]
        state = states.get(name) or ("complete" if run is not None else "unknown")
        if run is None and state == "complete":
            mine.append("marked complete but missing from the leaderboard")
        rows.append(
            {
                "run_name": name,
                "phase": run["phase"] if run is not None else phase_of(name, ""),
                "state": state,
                "in_leaderboard": run is not None,
                "artifacts": "; ".join(mine) if mine else ("ok" if run is not None else "-"),
                "collapsed": bool(run is not None and (run["collapsed"] or run["collapsed_test"])),
            }
        )
    return pd.DataFrame(
        rows, columns=["run_name", "phase", "state", "in_leaderboard", "artifacts", "collapsed"]
    )


def completeness_counts(audit: pd.DataFrame) -> dict[str, int]:
    """planned, complete, failed, skipped, other (pending/running), missing artifacts, collapsed."""
    states = audit["state"] if len(audit) else pd.Series(dtype=str)
    known = {"complete", "failed", "skipped"}
    return {
        "planned": len(audit),
        "complete": int((states == "complete").sum()),
        "failed": int((states == "failed").sum()),
        "skipped": int((states == "skipped").sum()),
        "other": int((~states.isin(known)).sum()),
        "missing_artifacts": int((~audit["artifacts"].isin(["ok", "-"])).sum())
        if len(audit)
        else 0,
        "collapsed": int(audit["collapsed"].sum()) if len(audit) else 0,
    }


# ----------------------------------------------------------------------------- tables


def _teacher_row(df: pd.DataFrame, row) -> dict | None:
    """The leaderboard row of a KD run's teacher (by path, else by run name)."""
    target = str(row["teacher_run"])
    try:
        resolved = str(Path(target).resolve())
    except OSError:
        resolved = target
    for cand in df.to_dict("records"):
        if str(cand["run_dir"]) in (target, resolved) or str(cand["run_path"]) in (
            target,
            resolved,
        ):
            return cand
    named = df[df["run_name"] == Path(target).name]
    return named.iloc[0].to_dict() if len(named) else None


def teacher_models(df: pd.DataFrame) -> set[str]:
    """Models used as teachers by the KD runs (the reference teacher when there are none)."""
    kd = df[df["kind"] == "kd"] if len(df) else df
    found = {t["model"] for r in kd.to_dict("records") if (t := _teacher_row(df, r)) is not None}
    return found or set(TEACHER_MODELS_DEFAULT)


def phase1_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every run trained without distillation, best test macro-F1 first."""
    cols = [
        "run_name", "student", "phase", "seed", "params", "val_macro_f1", "test_macro_f1",
        "test_acc", "latency_median_ms", "best_epoch", "epochs_ran", "collapsed",
    ]  # fmt: skip
    if df.empty:
        return pd.DataFrame(columns=cols)
    base = df[df["kind"] == "baseline"]
    return base[cols].sort_values(
        ["test_macro_f1", "val_macro_f1"], ascending=False, ignore_index=True
    )


def _same_recipe(df: pd.DataFrame, row) -> pd.Series:
    mask = (df["model"] == row["model"]) & (df["model_kwargs"] == row["model_kwargs"])
    for col in RECIPE_COLUMNS:
        if col in df:
            mask &= df[col].astype(str) == str(row[col])
    return mask


def baseline_of(df: pd.DataFrame, row) -> pd.DataFrame:
    """The non-KD runs of a KD run's student: same model, kwargs and training recipe (any
    recipe when none matches); the same seed when there is one."""
    base = df[(df["kind"] == "baseline") & _same_recipe(df, row)]
    if base.empty:
        base = df[
            (df["kind"] == "baseline")
            & (df["model"] == row["model"])
            & (df["model_kwargs"] == row["model_kwargs"])
        ]
    same_seed = base[base["seed"] == row["seed"]]
    return same_seed if len(same_seed) else base


def gap_closed(kd: float, student: float, teacher: float) -> float:
    """(kd - student) / (teacher - student); NaN when the teacher is not better than the
    student (there is no gap to close)."""
    gap = teacher - student
    return (kd - student) / gap if gap > 0 else math.nan


def kd_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per KD run: its student's baseline (same seed, else the mean over seeds), the
    deltas in macro-F1 and the share of the teacher-student gap it closed."""
    cols = [
        "run_name", "student", "alpha", "tau", "seed", "val_macro_f1", "test_macro_f1",
        "baseline", "baseline_val_macro_f1", "baseline_test_macro_f1", "delta_val_macro_f1",
        "delta_test_macro_f1", "teacher", "teacher_test_macro_f1", "gap_closed", "collapsed",
    ]  # fmt: skip
    kd = df[df["kind"] == "kd"] if len(df) else df
    rows = []
    for row in kd.to_dict("records"):
        base = baseline_of(df, row)
        teacher = _teacher_row(df, row)
        b_val = base["val_macro_f1"].mean() if len(base) else math.nan
        b_test = base["test_macro_f1"].mean() if len(base) else math.nan
        t_test = teacher["test_macro_f1"] if teacher is not None else math.nan
        rows.append(
            {
                **{k: row[k] for k in ("run_name", "student", "alpha", "tau", "seed")},
                "val_macro_f1": row["val_macro_f1"],
                "test_macro_f1": row["test_macro_f1"],
                "baseline": ", ".join(base["run_name"]) if len(base) else "(none)",
                "baseline_val_macro_f1": b_val,
                "baseline_test_macro_f1": b_test,
                "delta_val_macro_f1": row["val_macro_f1"] - b_val,
                "delta_test_macro_f1": row["test_macro_f1"] - b_test,
                "teacher": teacher["run_name"] if teacher is not None else row["teacher_name"],
                "teacher_test_macro_f1": t_test,
                "gap_closed": gap_closed(row["test_macro_f1"], b_test, t_test),
                "collapsed": bool(row["collapsed"]),
            }
        )
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values(["student", "test_macro_f1"], ascending=[True, False], ignore_index=True)


def seed_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per configuration (runs that differ only by seed): n_seeds, mean and std of test and
    validation macro-F1, 95 % t-interval of test macro-F1 (via
    :func:`sleepsound.campaign.summary.summarize`), best mean test macro-F1 first."""
    if df.empty:
        return seedstats.summarize(df)
    table = seedstats.summarize(df.drop(columns=["run_path"]))
    first = df.drop_duplicates("configuration").set_index("configuration")
    table["student"] = table["configuration"].map(first["student"])
    table["kind"] = table["configuration"].map(first["kind"])
    return table


def heatmap_frame(df: pd.DataFrame, student: str, metric: str = "test_macro_f1") -> pd.DataFrame:
    """alpha (rows) x tau (columns) of a student's KD runs, mean over seeds."""
    kd = df[(df["kind"] == "kd") & (df["student"] == student)]
    if kd.empty:
        return pd.DataFrame()
    return kd.pivot_table(index="alpha", columns="tau", values=metric, aggfunc="mean").sort_index()


def best_run(runs: pd.DataFrame) -> dict | None:
    """The run a practitioner would pick: best validation macro-F1 (test only breaks ties)."""
    if runs.empty:
        return None
    return runs.sort_values(["val_macro_f1", "test_macro_f1"], ascending=False).iloc[0].to_dict()


def kd_students(df: pd.DataFrame) -> list[str]:
    return sorted(df.loc[df["kind"] == "kd", "student"].unique()) if len(df) else []


def pareto_mask(cost, score) -> np.ndarray:
    """True for points no other point beats (lower or equal cost and higher or equal score,
    strictly better in one)."""
    cost, score = np.asarray(cost, float), np.asarray(score, float)
    keep = np.ones(len(cost), dtype=bool)
    for i in range(len(cost)):
        better = (cost <= cost[i]) & (score >= score[i]) & ((cost < cost[i]) | (score > score[i]))
        keep[i] = not better.any()
    return keep


def read_epochs(run_path: Path) -> pd.DataFrame:
    return pd.read_csv(runs.epochs_path(run_path))


def read_confusion(run_path: Path, split: str = "test") -> pd.DataFrame:
    """Confusion matrix (rows true, columns predicted) as counts."""
    return pd.read_csv(runs.layout.confusion_path(run_path, split), index_col=0)


def row_normalised(cm: pd.DataFrame) -> pd.DataFrame:
    totals = cm.sum(axis=1).replace(0, np.nan)
    return cm.div(totals, axis=0).fillna(0.0)


def read_gate(campaign_dir: Path | None) -> dict | None:
    return _read_json(Path(campaign_dir) / "gate.json") if campaign_dir else None


# ----------------------------------------------------------------------------- takeaways


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f} %"


def _pts(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:+.2f} points"


def _config_values(df: pd.DataFrame, configuration: str, metric: str = "test_macro_f1") -> dict:
    """{seed: value} of one configuration (the last run of a repeated seed)."""
    runs = df[df["configuration"] == configuration].drop_duplicates("seed", keep="last")
    return dict(zip(runs["seed"].astype(int), runs[metric].astype(float), strict=True))


def _spread_note(n_max: int, spread: float) -> str:
    if n_max < 2:
        return (
            f"Only one seed per configuration: differences below ~{100 * NOISE_POINTS / 2:.0f}-"
            f"{100 * NOISE_POINTS:.0f} points cannot be distinguished from run-to-run noise."
        )
    return f"Seed-to-seed spread (pooled std of test macro-F1): {100 * spread:.2f} points."


def pooled_std(table: pd.DataFrame) -> float:
    """Pooled standard deviation of test macro-F1 over configurations with several seeds."""
    multi = table[table["n_seeds"] > 1]
    if multi.empty:
        return math.nan
    dof = (multi["n_seeds"] - 1).sum()
    return float(math.sqrt(((multi["n_seeds"] - 1) * multi["test_macro_f1_std"] ** 2).sum() / dof))


def _describe(row) -> str:
    """A configuration of :func:`seed_table` in one phrase."""
    if row["n_seeds"] > 1:
        seeds = f" +- {100 * row['test_macro_f1_std']:.2f} points over {row['n_seeds']} seeds"
    else:
        seeds = " (one seed)"
    return (
        f"`{row['configuration']}` ({row['student']}, {int(row['params']):,} parameters): "
        f"test macro-F1 {_pct(row['test_macro_f1_mean'])}{seeds}"
    )


def _noise_verdict(delta: float, cmp, spread: float) -> str:
    """Whether a difference between two configurations exceeds what seeds alone produce."""
    if cmp.n_a >= 2 and cmp.n_b >= 2:
        verdict = "a real difference" if cmp.significant else "NOT distinguishable from seed noise"
        return f"{verdict} ({cmp.reason})"
    if not math.isnan(spread):
        size = "larger" if abs(delta) > 2 * spread else "not larger"
        return (
            f"{size} than twice the seed-to-seed std ({100 * spread:.2f} points), "
            "but the comparison rests on a single seed"
        )
    within = abs(delta) < NOISE_POINTS
    return "one seed: below ~1-2 points this cannot be told from noise" + (
        " - and this difference is within that range"
        if within
        else " - this difference is larger, but one seed cannot show that it holds"
    )


def gate_decisions(campaign_dir: Path | None) -> pd.DataFrame:
    """The campaign runner's gate decisions (``gate.json``), one row per seed."""
    gate = read_gate(campaign_dir) or {}
    rows = [{"seed": seed, **decision} for seed, decision in (gate.get("seeds") or {}).items()]
    return pd.DataFrame(rows)


def _runner_up(df: pd.DataFrame, table: pd.DataFrame) -> str:
    """How far ahead of the second configuration the best one is, against seed noise."""
    if len(table) < 2:
        return ""
    first, second = table.iloc[0], table.iloc[1]
    gap = first["test_macro_f1_mean"] - second["test_macro_f1_mean"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cmp = seedstats.welch_test(
            list(_config_values(df, first["configuration"]).values()),
            list(_config_values(df, second["configuration"]).values()),
        )
    if cmp.n_a >= 2 and cmp.n_b >= 2:
        noise = "a real difference" if cmp.significant else "not distinguishable from seed noise"
    elif gap < NOISE_POINTS:
        noise = "within one seed's noise"
    else:
        noise = "on one seed only"
    return f"; ahead of `{second['configuration']}` by {_pts(gap)} ({noise})"


def _kd_verdict(delta: float, cmp) -> str:
    """Did KD help? Only as strongly as the seeds allow."""
    direction = "helped" if delta > 0 else "hurt"
    if delta == 0:
        return "KD made no difference"
    if cmp.n_a >= 2 and cmp.n_b >= 2:
        return f"**KD {direction}**" if cmp.significant else "no evidence that KD helped or hurt"
    if abs(delta) < NOISE_POINTS:
        return "no distinguishable effect of KD (within one seed's noise)"
    return f"KD seems to have {direction}, on one seed"


def _gate_line(df: pd.DataFrame, teachers: set[str], campaign_dir: Path | None) -> str | None:
    decisions = gate_decisions(campaign_dir)
    if len(decisions) and "passed" in decisions:
        parts = []
        for d in decisions.to_dict("records"):
            verdict = {True: "passed", False: "FAILED"}.get(d.get("passed"), "not decided")
            chosen = d.get("chosen_teacher_run") or "none"
            parts.append(f"seed {d['seed']} {verdict} (teacher used: `{chosen}`)")
        return "- Gate (campaign gate.json): " + "; ".join(parts) + "."
    teacher_runs = df[df["model"].isin(teachers) & (df["kind"] == "baseline")]
    student_runs = df[~df["model"].isin(teachers) & (df["kind"] == "baseline")]
    if teacher_runs.empty or student_runs.empty:
        return None
    margin = float((read_gate(campaign_dir) or {}).get("min_margin") or GATE_MARGIN_DEFAULT)
    t, s = best_run(teacher_runs), best_run(student_runs)
    diff = t["val_macro_f1"] - s["val_macro_f1"]
    verdict = "passes" if diff >= margin - 1e-9 else "FAILS"
    return (
        f"- Gate: teacher `{t['run_name']}` vs the best student baseline `{s['run_name']}`: "
        f"{_pts(diff)} validation macro-F1; it {verdict} the {100 * margin:.0f}-point margin."
    )


def _kd_line(df: pd.DataFrame, table: pd.DataFrame, student: str, spread: float) -> str:
    kd_cfgs = table[(table["student"] == student) & (table["kind"] == "kd")]
    base_cfgs = table[(table["student"] == student) & (table["kind"] == "baseline")]
    if base_cfgs.empty:
        return f"- `{student}`: KD runs but no baseline run to compare them with."
    by_val = ["val_macro_f1_mean", "test_macro_f1_mean"]  # picked on validation, as in training
    kd = kd_cfgs.sort_values(by_val, ascending=False).iloc[0]
    base = base_cfgs.sort_values(by_val, ascending=False).iloc[0]
    kd_vals = _config_values(df, kd["configuration"])
    base_vals = _config_values(df, base["configuration"])
    common = sorted(set(kd_vals) & set(base_vals))  # like for like: the seeds both have
    seeds = common or sorted(set(kd_vals) | set(base_vals))
    a = [kd_vals[s] for s in (common or kd_vals)]
    b = [base_vals[s] for s in (common or base_vals)]
    delta = float(np.mean(a) - np.mean(b))
    with warnings.catch_warnings():  # identical per-seed scores: scipy warns, the test copes
        warnings.simplefilter("ignore", RuntimeWarning)
        cmp = seedstats.welch_test(a, b)
    verdict = _kd_verdict(delta, cmp)
    teacher_scores = [
        t["test_macro_f1"]
        for r in df[df["configuration"] == kd["configuration"]].to_dict("records")
        if int(r["seed"]) in seeds and (t := _teacher_row(df, r)) is not None
    ]
    teacher_f1 = float(np.mean(teacher_scores)) if teacher_scores else math.nan
    closed = gap_closed(float(np.mean(a)), float(np.mean(b)), teacher_f1)
    if math.isnan(closed):
        gap = f"no teacher gap to close (teacher {_pct(teacher_f1)} is not above the baseline)"
    elif closed < 0:
        gap = f"it widened the gap to the teacher ({_pct(teacher_f1)}) instead of closing it"
    else:
        gap = f"it closed {100 * closed:.0f} % of the teacher gap (teacher {_pct(teacher_f1)})"
    on = ", ".join(map(str, seeds))
    return (
        f"- **{student}** - {verdict}: best KD configuration `{kd['configuration']}` "
        f"(alpha {kd['alpha']}, tau {kd['tau']}, picked on validation) "
        f"{_pct(float(np.mean(a)))} vs baseline `{base['configuration']}` "
        f"{_pct(float(np.mean(b)))} (test macro-F1, seed(s) {on}): {_pts(delta)}, "
        f"{_noise_verdict(delta, cmp, spread)}; {gap}."
    )


def takeaways(df: pd.DataFrame, campaign_dir: Path | None = None) -> str:
    """Conclusions generated from the numbers, as markdown bullets: best model, best student,
    the gate, whether KD helped each student (against seed noise) and the teacher gap it
    closed, collapsed runs, the cheapest model within 1 point of the best."""
    if df.empty:
        return "- No finished runs yet: nothing to conclude."
    table = seed_table(df)
    n_max = int(table["n_seeds"].max())
    spread = pooled_std(table)
    lines = [
        f"- Data source: **{source_line(df)}**; {len(df)} finished runs, {len(table)} "
        f"configurations, up to {n_max} seed(s) each."
    ]
    best = table.iloc[0]
    tied = table[table["test_macro_f1_mean"] == best["test_macro_f1_mean"]]["configuration"]
    tie = f" (tied with {', '.join(f'`{c}`' for c in tied[1:])})" if len(tied) > 1 else ""
    lines.append(f"- **Best model overall:** {_describe(best)}{tie}{_runner_up(df, table)}.")
    teachers = teacher_models(df)
    model_of = df.drop_duplicates("configuration").set_index("configuration")["model"]
    students = table[~table["configuration"].map(model_of).isin(teachers)]
    if len(students):
        role = "/".join(sorted(teachers))
        best_student = _describe(students.iloc[0])
        lines.append(f"- **Best student** (any model but the {role} teacher): {best_student}.")
    gate = _gate_line(df, teachers, campaign_dir)
    if gate:
        lines.append(gate)
    students_kd = kd_students(df)
    if not students_kd:
        lines.append("- No distillation runs yet: nothing to say about KD.")
    lines += [_kd_line(df, table, student, spread) for student in students_kd]
    collapsed = df[df["collapsed"] | df["collapsed_test"]]
    names = ", ".join(f"`{n}`" for n in collapsed["run_name"])
    lines.append(
        f"- Collapsed runs (one class predicted for everything, on validation or test): "
        f"{len(collapsed)} of {len(df)}" + (f": {names}." if names else ".")
    )
    near = table[table["test_macro_f1_mean"] >= best["test_macro_f1_mean"] - NEAR_BEST]
    cheap = near.sort_values(["params", "latency_median_ms"]).iloc[0]
    itself = " (the best model itself)" if cheap["configuration"] == best["configuration"] else ""
    lines.append(
        f"- Cheapest model within {100 * NEAR_BEST:.0f} point of the best: {_describe(cheap)}, "
        f"{cheap['latency_median_ms']:.2f} ms per 5 s clip on CPU{itself}."
    )
    lines.append(f"- {_spread_note(n_max, spread)}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- markdown


HEADERS = {
    "run_name": "run", "student": "model", "val_macro_f1": "val macro-F1 %",
    "test_macro_f1": "test macro-F1 %", "test_acc": "test acc %",
    "latency_median_ms": "latency ms", "best_epoch": "best epoch", "epochs_ran": "epochs",
    "baseline_val_macro_f1": "baseline val F1 %", "baseline_test_macro_f1": "baseline test F1 %",
    "delta_val_macro_f1": "delta val (points)", "delta_test_macro_f1": "delta test (points)",
    "teacher_test_macro_f1": "teacher test F1 %", "gap_closed": "gap closed %",
    "n_seeds": "seeds (n)", "test_macro_f1_mean": "test F1 mean %",
    "test_macro_f1_std": "test F1 std (points)", "test_macro_f1_ci_low": "95 % CI low %",
    "test_macro_f1_ci_high": "95 % CI high %", "val_macro_f1_mean": "val F1 mean %",
}  # fmt: skip


def format_cell(column: str, value) -> str:
    """Fractions as percent with 2 decimals, deltas as signed points, counts with separators."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else ""
    if column.startswith("delta_"):
        return f"{100 * value:+.2f}"
    if column.endswith("_std"):
        return f"{100 * value:.2f}"
    if "macro_f1" in column or column.endswith("_acc") or column == "gap_closed":
        return f"{100 * value:.2f}"
    if column in ("params", "teacher_params"):
        return f"{int(value):,}"
    if column.endswith("_ms"):
        return f"{value:.2f}"
    if (
        isinstance(value, float)
        and value.is_integer()
        and column in ("seed", "best_epoch", "epochs_ran")
    ):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def formatted(df: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """A table as display strings, with readable headers (notebook and report.md share it)."""
    columns = [c for c in (columns or list(df.columns)) if c in df]
    out = pd.DataFrame({c: [format_cell(c, v) for v in df[c]] for c in columns}, index=df.index)
    return out.rename(columns=HEADERS)


def markdown_table(df: pd.DataFrame, columns: list[str] | None = None) -> str:
    if df.empty:
        return "_(none)_"
    table = formatted(df, columns)
    head = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in table.values]
    return "\n".join([head, rule, *body])


PHASE1_COLUMNS = [
    "run_name", "student", "phase", "seed", "params", "val_macro_f1", "test_macro_f1",
    "test_acc", "latency_median_ms", "best_epoch", "epochs_ran", "collapsed",
]  # fmt: skip
KD_COLUMNS = ["run_name", "student", "alpha", "tau", "seed", "test_macro_f1", "baseline",
              "baseline_test_macro_f1", "delta_test_macro_f1", "delta_val_macro_f1",
              "teacher_test_macro_f1", "gap_closed"]  # fmt: skip
SEED_COLUMNS = ["configuration", "student", "n_seeds", "seeds", "test_macro_f1_mean",
                "test_macro_f1_std", "test_macro_f1_ci_low", "test_macro_f1_ci_high",
                "val_macro_f1_mean"]  # fmt: skip


def _audit_line(df: pd.DataFrame, campaign_dir: Path | None) -> str:
    c = completeness_counts(completeness(df, campaign_dir))
    what = "planned" if campaign_dir else "in the leaderboard"
    return (
        f"Audit: {c['planned']} runs {what}: {c['complete']} complete, {c['failed']} failed, "
        f"{c['skipped']} skipped, {c['other']} pending/running; {c['missing_artifacts']} with "
        f"missing artifacts; {c['collapsed']} collapsed."
    )


def render_report(
    df: pd.DataFrame, campaign_dir: Path | None, figures: list[Path], out_md: Path
) -> str:
    """The text of report.md."""
    seeds = seed_table(df)
    multi = seeds[seeds["n_seeds"] > 1] if len(seeds) else seeds
    parts = [
        "# Results analysis",
        "",
        f"**Data source: {source_line(df)}**",
        "",
        f"Campaign: `{campaign_dir.name if campaign_dir else '(none: every leaderboard run)'}` - "
        f"{len(df)} finished runs - generated {time.strftime('%Y-%m-%d %H:%M:%S')} from the run "
        "artifacts (no retraining). Percentages are macro-F1 / accuracy x 100.",
        "",
        _audit_line(df, campaign_dir),
        "",
        "## Takeaways",
        "",
        takeaways(df, campaign_dir),
        "",
        "## Phase 1: models trained without distillation",
        "",
        markdown_table(phase1_table(df), PHASE1_COLUMNS),
        "",
        "## Distillation vs the same student's baseline",
        "",
        "delta = KD - baseline (points of macro-F1); gap closed = (KD - student) / "
        "(teacher - student).",
        "",
        markdown_table(kd_table(df), KD_COLUMNS) if len(df) and (df["kind"] == "kd").any()
        else "_No distillation runs yet._",
        "",
        "## Seeds: mean, spread and 95 % interval per configuration",
        "",
        markdown_table(multi, SEED_COLUMNS) if len(multi)
        else "_No runs._" if df.empty
        else "_Every configuration has one seed: no spread can be estimated; differences below "
        "~1-2 points cannot be distinguished from noise._",
        "",
        "## Figures",
        "",
    ]  # fmt: skip
    for fig in figures:
        rel = Path(os.path.relpath(fig, out_md.parent)).as_posix()
        parts += [f"![{fig.stem}]({rel})", ""]
    if not figures:
        parts.append("_No figures._")
    return "\n".join(parts) + "\n"


def report_results(
    results_dir: Path = Path("results"),
    campaign: str | None = None,
    out_md: Path | None = None,
    figures_dir: Path | None = None,
    notebook: Path = NOTEBOOK,
    executed_path: Path | None = None,
    timeout: int = 600,
) -> Path:
    """Execute the results notebook on ``results_dir`` and write ``report.md``.

    ``campaign``: a campaign name (or folder), ``"none"`` for every leaderboard row, or None
    for the most recently modified campaign (or every row when there is no campaign folder).
    Figures go to ``figures_dir`` (default ``results/figures/``) as ``results_analysis_*.png``;
    the report (default ``results/report.md``) is written atomically. A notebook assert that
    fails (a broken artifact) raises :class:`sleepsound.reports.notebook.NotebookError` and
    leaves any previous report untouched.
    """
    from sleepsound.reports.notebook import run_notebook

    results_dir = Path(results_dir).resolve()
    runs.reconcile(results_dir)  # complete runs killed before their leaderboard row
    out_md = Path(out_md or results_dir / "report.md")
    figures_dir = Path(figures_dir or results_dir / "figures")
    campaign_dir = locate_campaign(results_dir, campaign)
    env = {
        ENV_RESULTS: str(results_dir),
        ENV_CAMPAIGN: str(campaign_dir.resolve()) if campaign_dir else NO_CAMPAIGN,
    }
    result = run_notebook(
        notebook, figures_dir, executed_path=executed_path, env=env, timeout=timeout
    )
    df = load_runs(results_dir, campaign_dir)
    atomic_write(out_md, render_report(df, campaign_dir, result.figures, out_md))
    return out_md
