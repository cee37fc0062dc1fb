"""The results tables, computed from :func:`sleepsound.reports.load.load_runs` output.

- :func:`phase1_table` - every run trained without distillation;
- :func:`kd_table` - every KD run against its student's baseline;
- :func:`seed_table` - per configuration: seeds, mean, std, 95 % interval;
- :func:`heatmap_frame`, :func:`pareto_mask`, :func:`row_normalised` - figure data.

Across-seed statistics (mean, std, 95 % t-interval, Welch's test) come from
:mod:`sleepsound.campaign.summary`; they are not re-implemented here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from sleepsound.campaign import summary as seedstats

TEACHER_MODELS_DEFAULT = ("crnn",)  # the reference teacher, when no KD run names one yet
# Runs equal in these (and in model/model_kwargs) are the same student recipe: a KD run's
# baseline is the non-KD run of its student trained with the same settings.
RECIPE_COLUMNS = [
    "classes", "channels", "cache_fingerprint", "epochs", "batch_size", "lr", "weight_decay",
    "grad_clip", "class_weights", "frames", "bucket_frames", "augment",
]  # fmt: skip
# A configuration is the campaign's (runs equal in its columns, augmentation included) AND one
# run name without the seed.
GROUP_NAME = "run_configuration"  # a copy of ``configuration`` to group by
SEED_GROUP_COLUMNS = [*seedstats.CONFIG_COLUMNS, GROUP_NAME]


def teacher_row(df: pd.DataFrame, row) -> dict | None:
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
    found = {t["model"] for r in kd.to_dict("records") if (t := teacher_row(df, r)) is not None}
    return found or set(TEACHER_MODELS_DEFAULT)


def phase1_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every run trained without distillation, best test macro-F1 first."""
    cols = [
        "run_name", "student", "phase", "seed", "params", "val_macro_f1", "test_macro_f1",
        "test_acc", "latency_median_ms", "best_epoch", "epochs_ran", "stopped_early",
        "collapsed",
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
        teacher = teacher_row(df, row)
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
    :func:`sleepsound.campaign.summary.summarize`), best mean test macro-F1 first; with the
    ``student``, ``kind`` (baseline / kd) and ``augment`` label of each."""
    if df.empty:
        return seedstats.summarize(df)
    runs = df.drop(columns=["run_path"]).assign(**{GROUP_NAME: df["configuration"]})
    table = seedstats.summarize(runs, by=SEED_GROUP_COLUMNS).drop(columns=[GROUP_NAME])
    first = df.drop_duplicates("configuration").set_index("configuration")
    for col in ("student", "kind", "model"):
        table[col] = table["configuration"].map(first[col])
    if "augment" not in table:
        table["augment"] = table["configuration"].map(first["augment"])
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
    """The students that have distillation runs."""
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


def row_normalised(cm: pd.DataFrame) -> pd.DataFrame:
    """A confusion matrix with each row summing to 1 (recall on the diagonal)."""
    totals = cm.sum(axis=1).replace(0, np.nan)
    return cm.div(totals, axis=0).fillna(0.0)


def pooled_std(table: pd.DataFrame) -> float:
    """Pooled standard deviation of test macro-F1 over configurations with several seeds."""
    multi = table[table["n_seeds"] > 1]
    if multi.empty:
        return math.nan
    dof = (multi["n_seeds"] - 1).sum()
    return float(math.sqrt(((multi["n_seeds"] - 1) * multi["test_macro_f1_std"] ** 2).sum() / dof))


def config_values(df: pd.DataFrame, configuration: str, metric: str = "test_macro_f1") -> dict:
    """{seed: value} of one configuration (the last run of a repeated seed)."""
    picked = df[df["configuration"] == configuration].drop_duplicates("seed", keep="last")
    return dict(zip(picked["seed"].astype(int), picked[metric].astype(float), strict=True))
