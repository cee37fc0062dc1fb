"""Markdown rendering for the results report and notebook: cell formatting, tables, escaping.

Text that comes from data files (the data-source line from ``sleepsound_source.json``, run
settings) goes through :func:`escape_md` before it lands in Markdown: HTML is neutralised and
Markdown punctuation is backslash-escaped, so a label cannot inject markup, links or HTML.
"""

from __future__ import annotations

import html
import math
import re

import numpy as np
import pandas as pd

HEADERS = {
    "run_name": "run", "student": "model", "val_macro_f1": "val macro-F1 %",
    "test_macro_f1": "test macro-F1 %", "test_acc": "test acc %",
    "latency_median_ms": "latency ms", "best_epoch": "best epoch", "epochs_ran": "epochs",
    "stopped_early": "early stop",
    "baseline_val_macro_f1": "baseline val F1 %", "baseline_test_macro_f1": "baseline test F1 %",
    "delta_val_macro_f1": "delta val (points)", "delta_test_macro_f1": "delta test (points)",
    "teacher_test_macro_f1": "teacher test F1 %", "gap_closed": "gap closed %",
    "n_seeds": "seeds (n)", "test_macro_f1_mean": "test F1 mean %",
    "test_macro_f1_std": "test F1 std (points)", "test_macro_f1_ci_low": "95 % CI low %",
    "test_macro_f1_ci_high": "95 % CI high %", "val_macro_f1_mean": "val F1 mean %",
}  # fmt: skip
PHASE1_COLUMNS = [
    "run_name", "student", "phase", "seed", "params", "val_macro_f1", "test_macro_f1",
    "test_acc", "latency_median_ms", "best_epoch", "epochs_ran", "stopped_early", "collapsed",
]  # fmt: skip
KD_COLUMNS = ["run_name", "student", "alpha", "tau", "seed", "test_macro_f1", "baseline",
              "baseline_test_macro_f1", "delta_test_macro_f1", "delta_val_macro_f1",
              "teacher_test_macro_f1", "gap_closed"]  # fmt: skip
SEED_COLUMNS = ["configuration", "student", "augment", "n_seeds", "seeds",
                "test_macro_f1_mean", "test_macro_f1_std", "test_macro_f1_ci_low",
                "test_macro_f1_ci_high", "val_macro_f1_mean"]  # fmt: skip
# Inline Markdown punctuation a label could use for markup: emphasis, code, links and images
# (no ``[``, no link), tables, strike-through, headings, and ``$`` (math in Jupyter).
MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]#!|~$])")


def escape_md(text) -> str:
    """Untrusted text as literal Markdown on one line: HTML special characters become entities
    (``<`` -> ``&lt;``), Markdown punctuation is backslash-escaped, line breaks become spaces."""
    one_line = " ".join(str(text).split())
    return MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(one_line, quote=False))


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


def _cell(text: str) -> str:
    """A table cell: HTML neutralised, pipes escaped, one line."""
    return html.escape(" ".join(text.split()), quote=False).replace("|", "\\|")


def markdown_table(df: pd.DataFrame, columns: list[str] | None = None) -> str:
    """A pipe table of ``formatted(df, columns)``; ``_(none)_`` when empty."""
    if df.empty:
        return "_(none)_"
    table = formatted(df, columns)
    head = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in table.values]
    return "\n".join([head, rule, *body])
