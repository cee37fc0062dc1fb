"""The results report: ``report.md`` and the results notebook, from finished runs' artifacts.

    report_results(Path("results"))  # results/report.md, results/figures/results_analysis_*.png

Everything is read from the leaderboard, the run directories it points to and, when there is
one, a campaign folder ``results/campaigns/<name>/``; nothing is retrained. The work is split
by job, and the notebook ``notebooks/results_analysis.ipynb`` imports the same modules, so the
tables it shows and those in ``report.md`` are computed once, by the same code:

- :mod:`sleepsound.reports.load` - locating and loading runs and campaign files;
- :mod:`sleepsound.reports.audit` - artifact invariants and the campaign audit;
- :mod:`sleepsound.reports.tables` - phase-1, KD and seed tables, figure data;
- :mod:`sleepsound.reports.takeaways` - conclusions generated from the numbers;
- :mod:`sleepsound.reports.markdown` - formatting, tables, escaping of data-file text.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd

from sleepsound import runs
from sleepsound.atomic import atomic_write
from sleepsound.config import NOTEBOOKS_DIR
from sleepsound.reports.audit import completeness, completeness_counts
from sleepsound.reports.load import (
    ENV_CAMPAIGN,
    ENV_RESULTS,
    NO_CAMPAIGN,
    load_runs,
    locate_campaign,
    source_line,
)
from sleepsound.reports.markdown import (
    KD_COLUMNS,
    PHASE1_COLUMNS,
    SEED_COLUMNS,
    escape_md,
    markdown_table,
)
from sleepsound.reports.tables import kd_table, phase1_table, seed_table
from sleepsound.reports.takeaways import takeaways

FIGURE_STEM = "results_analysis"
NOTEBOOK = NOTEBOOKS_DIR / f"{FIGURE_STEM}.ipynb"


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
        f"**Data source: {escape_md(source_line(df))}**",
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
