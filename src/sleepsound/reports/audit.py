"""The audit a results report relies on: are the runs' artifacts sound, and did the campaign
finish what it planned?

- :func:`check_artifacts` - invariants per run (the notebook asserts them);
- :func:`completeness`, :func:`completeness_counts` - planned vs complete / failed / skipped.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from sleepsound import runs
from sleepsound.campaign.runner import PHASES
from sleepsound.reports.load import METRIC_COLUMNS, phase_of, read_json, read_status
from sleepsound.reports.tables import teacher_row

REQUIRED_FILES = runs.REQUIRED_FILES
GATE_PHASE = "gate"  # the campaign's decision step in status.csv: not a run
assert GATE_PHASE in PHASES


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
        metrics = read_json(runs.metrics_path(path))
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
            if teacher_row(df, row) is None:
                problems.append(f"{name}: teacher run {row['teacher_run']} not found")
    return problems


def completeness(df: pd.DataFrame, campaign_dir: Path | None) -> pd.DataFrame:
    """One row per run the campaign planned (status.csv) or the leaderboard holds: ``state``
    (from status.csv, else ``complete`` for a leaderboard row), ``in_leaderboard``,
    ``artifacts`` (``ok`` or what is wrong), ``collapsed``."""
    status = read_status(campaign_dir)
    status = status[status["phase"] != GATE_PHASE]
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
