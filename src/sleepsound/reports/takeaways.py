"""Conclusions generated from the numbers, as markdown bullets (:func:`takeaways`).

Every comparison is made on per-seed test macro-F1 with Welch's t-test and 95 % t-intervals
(:mod:`sleepsound.campaign.summary`); with one seed per side a difference is reported as such,
never as a finding. The gate is judged with the campaign's own rule (``gate.json`` and
:data:`sleepsound.campaign.runner.GATE_TOLERANCE`).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from sleepsound.campaign import summary as seedstats
from sleepsound.campaign.runner import GATE_TOLERANCE
from sleepsound.reports.load import gate_decisions, read_gate, source_line
from sleepsound.reports.markdown import escape_md
from sleepsound.reports.tables import (
    best_run,
    config_values,
    gap_closed,
    kd_students,
    pooled_std,
    seed_table,
    teacher_models,
    teacher_row,
)
from sleepsound.training.metrics import PLATEAU_TOL

NOISE_POINTS = 0.02  # one seed: differences below ~1-2 points are indistinguishable from noise
NEAR_BEST = 0.01  # "within 1 point of the best"
ATTENTION = ("tinycnn", "tinycnn_cbam")  # (plain model, the same model with attention)


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f} %"


def _pts(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:+.2f} points"


def _welch(a: list[float], b: list[float]) -> seedstats.Comparison:
    with warnings.catch_warnings():  # identical per-seed scores: scipy warns, the test copes
        warnings.simplefilter("ignore", RuntimeWarning)
        return seedstats.welch_test(a, b)


def _interval(row) -> str:
    if row["n_seeds"] > 1 and not math.isnan(row["test_macro_f1_ci_low"]):
        return (
            f" +- {100 * row['test_macro_f1_std']:.2f} (95 % CI "
            f"[{100 * row['test_macro_f1_ci_low']:.2f}, {100 * row['test_macro_f1_ci_high']:.2f}]"
            f") over {row['n_seeds']} seeds"
        )
    return " (one seed)"


def _describe(row) -> str:
    """A configuration of :func:`seed_table` in one phrase."""
    aug = f", augmentation {escape_md(row['augment'])}" if row.get("augment") else ""
    return (
        f"`{row['configuration']}` ({row['student']}{aug}, {int(row['params']):,} parameters): "
        f"test macro-F1 {_pct(row['test_macro_f1_mean'])}{_interval(row)}"
    )


def _spread_note(n_max: int, spread: float) -> str:
    if n_max < 2:
        return (
            f"Only one seed per configuration: differences below ~{100 * NOISE_POINTS / 2:.0f}-"
            f"{100 * NOISE_POINTS:.0f} points cannot be distinguished from run-to-run noise."
        )
    return f"Seed-to-seed spread (pooled std of test macro-F1): {100 * spread:.2f} points."


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


def _compare(df: pd.DataFrame, a, b, spread: float) -> tuple[float, str, list[int]]:
    """Configuration rows ``a`` vs ``b`` on the seeds both have (all seeds when none is
    shared): (mean difference, verdict against seed noise, seeds used)."""
    va, vb = config_values(df, a["configuration"]), config_values(df, b["configuration"])
    common = sorted(set(va) & set(vb))
    xa = [va[s] for s in (common or va)]
    xb = [vb[s] for s in (common or vb)]
    delta = float(np.mean(xa) - np.mean(xb))
    return delta, _noise_verdict(delta, _welch(xa, xb), spread), common or sorted({*va, *vb})


def _runner_up(df: pd.DataFrame, table: pd.DataFrame, spread: float) -> str:
    """How far ahead of the second configuration the best one is, against seed noise."""
    if len(table) < 2:
        return ""
    first, second = table.iloc[0], table.iloc[1]
    delta, verdict, _ = _compare(df, first, second, spread)
    return f"; ahead of `{second['configuration']}` by {_pts(delta)} ({verdict})"


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
    t, s = best_run(teacher_runs), best_run(student_runs)
    diff = t["val_macro_f1"] - s["val_macro_f1"]
    line = (
        f"- Gate: teacher `{t['run_name']}` vs the best student baseline `{s['run_name']}`: "
        f"{_pts(diff)} validation macro-F1"
    )
    margin = (read_gate(campaign_dir) or {}).get("min_margin")
    if margin is None:
        return line + " (no campaign gate decision to judge it by)."
    verdict = "passes" if diff >= float(margin) - GATE_TOLERANCE else "FAILS"
    return line + f"; it {verdict} the campaign's {100 * float(margin):.0f}-point margin."


def _teacher_line(df: pd.DataFrame, table: pd.DataFrame, teachers: set[str], spread) -> str:
    """Is the teacher stronger than the best student baseline, on test, across seeds?"""
    base = table[(table["kind"] == "baseline") & (table["augment"] == "")]
    teacher = base[base["model"].isin(teachers)]
    students = base[~base["model"].isin(teachers)]
    if teacher.empty or students.empty:
        return ""
    t, s = teacher.iloc[0], students.iloc[0]
    delta, verdict, _ = _compare(df, t, s, spread)
    return (
        f"- **Teacher vs best student baseline:** {_describe(t)} vs {_describe(s)}: "
        f"{_pts(delta)}, {verdict}."
    )


def _kd_line(df: pd.DataFrame, table: pd.DataFrame, student: str, spread: float) -> str:
    kd_cfgs = table[(table["student"] == student) & (table["kind"] == "kd")]
    base_cfgs = table[
        (table["student"] == student) & (table["kind"] == "baseline") & (table["augment"] == "")
    ]
    if base_cfgs.empty:
        return f"- `{student}`: KD runs but no baseline run to compare them with."
    by_val = ["val_macro_f1_mean", "test_macro_f1_mean"]  # picked on validation, as in training
    kd = kd_cfgs.sort_values(by_val, ascending=False).iloc[0]
    base = base_cfgs.sort_values(by_val, ascending=False).iloc[0]
    kd_vals = config_values(df, kd["configuration"])
    base_vals = config_values(df, base["configuration"])
    common = sorted(set(kd_vals) & set(base_vals))  # like for like: the seeds both have
    seeds = common or sorted(set(kd_vals) | set(base_vals))
    a = [kd_vals[s] for s in (common or kd_vals)]
    b = [base_vals[s] for s in (common or base_vals)]
    delta = float(np.mean(a) - np.mean(b))
    cmp = _welch(a, b)
    verdict = _kd_verdict(delta, cmp)
    teacher_scores = [
        t["test_macro_f1"]
        for r in df[df["configuration"] == kd["configuration"]].to_dict("records")
        if int(r["seed"]) in seeds and (t := teacher_row(df, r)) is not None
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


def _augment_lines(df: pd.DataFrame, table: pd.DataFrame, spread: float) -> list[str]:
    """Each augmented configuration against the same model's plain configuration (same kind)."""
    lines = []
    for row in table[table["augment"] != ""].to_dict("records"):
        plain = table[
            (table["augment"] == "")
            & (table["student"] == row["student"])
            & (table["kind"] == row["kind"])
        ]
        if plain.empty:
            lines.append(f"- Augmentation: {_describe(row)}; no plain run of it to compare.")
            continue
        base = plain.iloc[0]
        delta, verdict, _ = _compare(df, row, base, spread)
        lines.append(
            f"- **Augmentation** ({escape_md(row['augment'])}): {_describe(row)} vs "
            f"{_describe(base)}: {_pts(delta)}, {verdict}."
        )
    return lines


def _attention_line(df: pd.DataFrame, table: pd.DataFrame, spread: float) -> str:
    """What attention buys: the best plain attention model vs the plain model without it."""
    plain, attn = ATTENTION
    base = table[(table["kind"] == "baseline") & (table["augment"] == "")]
    a, b = base[base["model"] == attn], base[base["model"] == plain]
    if a.empty or b.empty:
        return ""
    a, b = a.iloc[0], b.iloc[0]
    delta, verdict, _ = _compare(df, a, b, spread)
    extra = int(a["params"]) - int(b["params"])
    return (
        f"- **Attention (CBAM)**: {_describe(a)} vs {_describe(b)}: {_pts(delta)} for "
        f"{extra:+,} parameters, {verdict}."
    )


def _convergence_line(df: pd.DataFrame) -> str:
    """How the runs ended: early stop, plateau at the epoch budget, or still improving there
    (not converged; named)."""
    ended = df["convergence"].value_counts()
    improving = df[df["convergence"] == "improving"]["run_name"]
    names = ", ".join(f"`{n}`" for n in improving)
    counts = ", ".join(
        f"{int(ended.get(kind, 0))} {words}"
        for kind, words in (
            ("early stop", "stopped early (patience)"),
            ("plateau", "reached their epoch budget on a plateau (mean validation macro-F1 of "
             f"the last fifth of the epochs within {PLATEAU_TOL:g} of the best epoch before)"),
        )
    )  # fmt: skip
    unknown = int(ended.get("unknown", 0))
    return (
        f"- Convergence: of {len(df)} runs, {counts}; **{len(improving)} still improving at "
        "their epoch budget** (not converged)"
        + (f": {names}" if names else "")
        + (f"; {unknown} without an epoch history" if unknown else "")
        + "."
    )


def takeaways(df: pd.DataFrame, campaign_dir: Path | None = None) -> str:
    """Conclusions generated from the numbers, as markdown bullets: best model and student,
    teacher vs students, the gate, KD per student (against seed noise) and the teacher gap it
    closed, attention and augmentation, convergence, collapsed runs, the cheapest model within
    1 point of the best, the seed spread."""
    if df.empty:
        return "- No finished runs yet: nothing to conclude."
    table = seed_table(df)
    n_max = int(table["n_seeds"].max())
    spread = pooled_std(table)
    lines = [
        f"- Data source: **{escape_md(source_line(df))}**; {len(df)} finished runs, "
        f"{len(table)} configurations, up to {n_max} seed(s) each."
    ]
    best = table.iloc[0]
    tied = table[table["test_macro_f1_mean"] == best["test_macro_f1_mean"]]["configuration"]
    tie = f" (tied with {', '.join(f'`{c}`' for c in tied[1:])})" if len(tied) > 1 else ""
    lines.append(
        f"- **Best model overall:** {_describe(best)}{tie}{_runner_up(df, table, spread)}."
    )
    teachers = teacher_models(df)
    students = table[~table["model"].isin(teachers)]
    if len(students):
        role = "/".join(sorted(teachers))
        best_student = _describe(students.iloc[0])
        lines.append(f"- **Best student** (any model but the {role} teacher): {best_student}.")
    lines += [line for line in (_teacher_line(df, table, teachers, spread),) if line]
    gate = _gate_line(df, teachers, campaign_dir)
    if gate:
        lines.append(gate)
    students_kd = kd_students(df)
    if not students_kd:
        lines.append("- No distillation runs yet: nothing to say about KD.")
    lines += [_kd_line(df, table, student, spread) for student in students_kd]
    lines += [line for line in (_attention_line(df, table, spread),) if line]
    lines += _augment_lines(df, table, spread)
    lines.append(_convergence_line(df))
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
