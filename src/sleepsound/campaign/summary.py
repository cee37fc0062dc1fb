"""Across seeds: mean, spread and a 95 % interval per configuration, and a significance test.

One seed cannot tell a 1-point difference from run-to-run noise. :func:`summarize` groups runs
that differ only by their seed (and run name / teacher run) and reports, per configuration,
``n_seeds``, mean and standard deviation (ddof=1) of test and validation macro-F1 and a 95 %
t-interval of the test macro-F1::

    mean +- t(0.975, n - 1) * std / sqrt(n)          (NaN interval when n = 1)

:func:`compare` says whether two configurations differ (Welch's t-test on per-seed values), so a
report can say "not distinguishable with these seeds" instead of ranking noise.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from sleepsound.runs.leaderboard import run_row

# Leaderboard columns that define a configuration: runs equal in all of them are seeds of one
# configuration. The teacher run is left out on purpose: each seed has its own teacher.
CONFIG_COLUMNS = [
    "kind", "model", "model_kwargs", "classes", "channels", "data_source", "cache_fingerprint",
    "epochs", "batch_size", "lr", "weight_decay", "grad_clip", "class_weights", "frames",
    "bucket_frames", "alpha", "tau", "augment",
]  # fmt: skip
METRIC = "test_macro_f1"
CONFIDENCE = 0.95
SIGNIFICANCE_LEVEL = 0.05
SEED_SUFFIX = re.compile(r"_s-?\d+$")
NUMERIC_COLUMNS = [
    "seed", "val_macro_f1", "test_macro_f1", "test_acc", "params", "latency_median_ms",
    "duration_s", "epochs", "batch_size", "lr", "weight_decay", "grad_clip", "bucket_frames",
]  # fmt: skip


def _frame(runs: pd.DataFrame | Iterable[dict] | Iterable[Path | str]) -> pd.DataFrame:
    """Leaderboard rows (a DataFrame, dicts) or run directories -> one DataFrame."""
    if isinstance(runs, pd.DataFrame):
        df = runs.copy()
    else:
        items = list(runs)
        rows = [r if isinstance(r, dict) else run_row(Path(r)) for r in items]
        df = pd.DataFrame(rows)
    for col in NUMERIC_COLUMNS:
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    if "augment" in df:  # leaderboards written before the column: no augmentation recorded
        df["augment"] = df["augment"].fillna("").astype(str)
    else:
        df["augment"] = ""
    for col in ("alpha", "tau"):  # empty for baselines: one representation for both sources
        if col in df:
            df[col] = df[col].map(_short_number)
    return df


def _short_number(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return ""
    return f"{float(value):g}"


def configuration_name(run_name: str) -> str:
    """The run name without its seed: ``demo-p1_tinycnn_s42`` -> ``demo-p1_tinycnn``."""
    return SEED_SUFFIX.sub("", str(run_name))


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Two-sided t-interval of the mean; (nan, nan) with fewer than two values."""
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    n = len(x)
    if n < 2:
        return math.nan, math.nan
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n)
    return float(x.mean() - half), float(x.mean() + half)


def summarize(
    runs: pd.DataFrame | Iterable[dict] | Iterable[Path | str],
    by: Sequence[str] = CONFIG_COLUMNS,
) -> pd.DataFrame:
    """One row per configuration (runs equal in ``by`` columns), best mean test macro-F1 first.

    Args:
        runs: leaderboard rows (DataFrame or dicts, e.g. from ``read_leaderboard``) or run
            directories (read with :func:`sleepsound.runs.leaderboard.run_row`).
        by: the columns that define a configuration (those present are used).

    Returns:
        Columns: ``configuration`` (run name without seed), the ``by`` columns, ``n_seeds``,
        ``seeds``, ``test_macro_f1_mean/std/ci_low/ci_high``, ``val_macro_f1_mean/std``,
        ``test_acc_mean``, ``params``, ``latency_median_ms``, ``n_collapsed``, ``run_names``.
        A seed that appears twice for one configuration counts once (the last row).
    """
    df = _frame(runs)
    columns = [
        "configuration", *by, "n_seeds", "seeds", "test_macro_f1_mean", "test_macro_f1_std",
        "test_macro_f1_ci_low", "test_macro_f1_ci_high", "val_macro_f1_mean", "val_macro_f1_std",
        "test_acc_mean", "params", "latency_median_ms", "n_collapsed", "run_names",
    ]  # fmt: skip
    if df.empty:
        return pd.DataFrame(columns=columns)
    keys = [c for c in by if c in df]
    df = df.astype({k: str for k in keys})
    if "finished_at" in df:
        df = df.sort_values("finished_at", kind="stable")
    df = df.drop_duplicates([*keys, "seed"], keep="last")
    out = []
    for group_key, g in df.groupby(keys, sort=False, dropna=False):
        test = g[METRIC].astype(float)
        low, high = t_interval(test.tolist())  # nan, nan for a single seed
        row = dict(
            zip(keys, group_key if isinstance(group_key, tuple) else (group_key,), strict=True)
        )
        collapsed = g["collapsed"].astype(str).str.lower() == "true" if "collapsed" in g else []
        out.append(
            {
                "configuration": configuration_name(g["run_name"].iloc[0]),
                **row,
                "n_seeds": int(g["seed"].nunique()),
                "seeds": ",".join(str(int(s)) for s in sorted(g["seed"])),
                "test_macro_f1_mean": test.mean(),
                "test_macro_f1_std": test.std(ddof=1) if len(g) > 1 else math.nan,
                "test_macro_f1_ci_low": low,
                "test_macro_f1_ci_high": high,
                "val_macro_f1_mean": g["val_macro_f1"].astype(float).mean(),
                "val_macro_f1_std": g["val_macro_f1"].astype(float).std(ddof=1),
                "test_acc_mean": g["test_acc"].astype(float).mean()
                if "test_acc" in g
                else math.nan,
                "params": g["params"].iloc[0] if "params" in g else math.nan,
                "latency_median_ms": (
                    g["latency_median_ms"].astype(float).median()
                    if "latency_median_ms" in g
                    else math.nan
                ),
                "n_collapsed": int(sum(collapsed)),
                "run_names": ";".join(g["run_name"]),
            }
        )
    result = pd.DataFrame(out, columns=[c for c in columns if c in out[0]])
    return result.sort_values("test_macro_f1_mean", ascending=False, ignore_index=True)


@dataclass(frozen=True)
class Comparison:
    """Whether two sets of per-seed scores differ: Welch's t-test and interval overlap."""

    mean_a: float
    mean_b: float
    n_a: int
    n_b: int
    p_value: float  # Welch's t-test, two-sided; nan when either side has fewer than 2 seeds
    intervals_overlap: bool | None  # None when an interval is undefined (n < 2)
    significant: bool
    reason: str

    @property
    def difference(self) -> float:
        return self.mean_a - self.mean_b


def welch_test(
    a: Sequence[float], b: Sequence[float], level: float = SIGNIFICANCE_LEVEL
) -> Comparison:
    """Compare two samples (e.g. test macro-F1 per seed of two configurations).

    ``significant`` is True only when both sides have at least two values and Welch's test
    gives p < ``level``: a difference seen on one seed is never called significant.
    """
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    mean_a = float(xa.mean()) if len(xa) else math.nan
    mean_b = float(xb.mean()) if len(xb) else math.nan
    if len(xa) < 2 or len(xb) < 2:
        return Comparison(
            mean_a, mean_b, len(xa), len(xb), math.nan, None, False,
            "needs at least 2 seeds per configuration to tell a difference from seed noise",
        )  # fmt: skip
    (la, ha), (lb, hb) = t_interval(xa), t_interval(xb)
    overlap = not (ha < lb or hb < la)
    if xa.std(ddof=1) == 0 and xb.std(ddof=1) == 0:
        p = 1.0 if mean_a == mean_b else 0.0  # no spread at all: equal or not, exactly
    else:
        p = float(stats.ttest_ind(xa, xb, equal_var=False).pvalue)
    significant = p < level
    intervals = "95% intervals do not overlap"
    if overlap:  # overlapping intervals of two means do not rule out a difference of them
        intervals = "95% intervals overlap"
        if significant:
            intervals += ", as they can for a real one"
    reason = f"Welch t-test p={p:.3g} {'<' if significant else '>='} {level}; {intervals}"
    return Comparison(mean_a, mean_b, len(xa), len(xb), p, overlap, significant, reason)


def compare(
    runs: pd.DataFrame | Iterable[dict] | Iterable[Path | str],
    a: str,
    b: str,
    metric: str = METRIC,
    level: float = SIGNIFICANCE_LEVEL,
) -> Comparison:
    """Compare configurations ``a`` and ``b`` (names as in ``summarize``'s ``configuration``
    column, i.e. run names without ``_s<seed>``) on ``metric``, per seed."""
    df = _frame(runs)
    names = df["run_name"].map(configuration_name)
    values = {}
    for name in (a, b):
        picked = df[names == name]
        if picked.empty:
            known = ", ".join(sorted(set(names)))
            raise ValueError(f"no runs of configuration {name!r}; known: {known}")
        values[name] = picked.drop_duplicates("seed", keep="last")[metric].astype(float).tolist()
    return welch_test(values[a], values[b], level)
