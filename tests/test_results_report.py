"""The results report: a real (tiny) finished set of runs -> notebook -> report.md and figures.

One module-scoped fixture writes real WAV files, builds the cache, trains a teacher (CRNN), a
student (TinyCNN, two seeds) and two distilled students (1 epoch each), writes a small campaign
folder, and runs :func:`report_results` once; the tests read what it produced. The numbers in
the tables are checked against each run's metrics.json, and a broken artifact must stop the
notebook through its live assert.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from sleepsound.config import PreprocessConfig, TrainConfig
from sleepsound.data.provenance import source_title
from sleepsound.features.cache import preprocess
from sleepsound.reports import audit as A
from sleepsound.reports import load as L
from sleepsound.reports import markdown as M
from sleepsound.reports import results as R
from sleepsound.reports import tables as T
from sleepsound.reports import takeaways as K
from sleepsound.reports.notebook import NotebookError
from sleepsound.training.train import train_run

SR = 16_000
CLIPS = {"train": 60, "validation": 10, "test": 10}
TONES = {"quiet": 3000.0, "breathe": 800.0, "snore": 150.0}  # class-distinct, learnable in 1 epoch
FAST = dict(epochs=1, batch_size=4, lr=3e-3, device="cpu", threads=1)
PNG = b"\x89PNG\r\n\x1a\n"


def write_wavs(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in CLIPS.items():
        for label, f0 in TONES.items():
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                t = np.arange(int(SR * rng.uniform(0.4, 0.6))) / SR
                f = f0 * rng.uniform(0.95, 1.05)
                x = 0.5 * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(t.size)
                sf.write(folder / f"{label}_{i:03d}.wav", x.astype(np.float32), SR)
    return root


def write_campaign(results: Path, runs: dict[str, Path]) -> Path:
    """A campaign folder in the runner's format: every finished run, one failed, one skipped,
    the gate step, and gate.json."""
    folder = results / "campaigns" / "demo"
    folder.mkdir(parents=True)
    rows = [
        ["phase1" if "kd" not in n else "phase2", n, 42, "complete", str(p)]
        for n, p in runs.items()
    ]
    rows += [
        ["gate", "demo-gate_s42", 42, "complete", ""],
        ["phase2", "tinycnn_kd-a0.6-t4_s42", 42, "failed", ""],
        ["tuning", "crnn_lr0.002_s42", 42, "skipped", ""],
    ]  # fmt: skip
    with open(folder / "status.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["phase", "run_name", "seed", "state", "run_dir"])
        writer.writerows(rows)
    gate = {"min_margin": 0.03, "seeds": {"42": {"passed": True, "chosen_teacher_run": "crnn_s42"}}}
    (folder / "gate.json").write_text(json.dumps(gate))
    return folder


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("results_report")
    data = write_wavs(root / "audio")
    cache = root / "cache"
    preprocess(PreprocessConfig(data_dir=data, cache_dir=cache, workers=1))
    results = root / "results"
    common = dict(cache_dir=cache, results_dir=results, **FAST)
    teacher = train_run(TrainConfig(model="crnn", **common), progress=False)
    runs = {
        "crnn_s42": teacher,
        "tinycnn_s42": train_run(TrainConfig(model="tinycnn", **common), progress=False),
        "tinycnn_s7": train_run(TrainConfig(model="tinycnn", seed=7, **common), progress=False),
    }
    for alpha, tau in ((0.3, 3.0), (0.9, 5.0)):
        cfg = TrainConfig(model="tinycnn", teacher_run=teacher, alpha=alpha, tau=tau, **common)
        run = train_run(cfg, progress=False)
        runs[run.name] = run
    campaign = write_campaign(results, runs)
    t0 = time.perf_counter()
    report = R.report_results(results, executed_path=root / "executed.ipynb")
    seconds = time.perf_counter() - t0
    metrics = {n: json.loads((p / "metrics.json").read_text()) for n, p in runs.items()}
    config = json.loads((teacher / "config.json").read_text())
    return SimpleNamespace(
        root=root, results=results, runs=runs, metrics=metrics, report=report, campaign=campaign,
        text=report.read_text(), seconds=seconds, source=source_title(config["data_source"]),
    )  # fmt: skip


def _table(text: str, heading: str) -> list[str]:
    """The markdown table lines of the section that starts with ``heading``."""
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ")]


def _row(lines: list[str], run_name: str) -> list[str]:
    found = [line for line in lines if line.startswith(f"| {run_name} |")]
    assert len(found) == 1, (run_name, lines)
    return [cell.strip() for cell in found[0].strip("|").split("|")]


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


# ----------------------------------------------------------------------------- the report


def test_report_title_block_names_the_data_source(finished):
    assert finished.report == finished.results / "report.md"
    head = finished.text.splitlines()[:4]
    assert head[0] == "# Results analysis"
    assert f"**Data source: {M.escape_md(finished.source)}**" in head
    assert finished.source.startswith("user audio folder")  # no provenance file: a folder
    assert "`demo`" in finished.text  # the campaign that was audited
    assert "Audit: 7 runs planned: 5 complete, 1 failed, 1 skipped, 0 pending" in finished.text
    assert not list(finished.results.glob(".report.md*"))  # atomic write left no temp file


def test_phase1_table_matches_metrics_json(finished):
    lines = _table(finished.text, "## Phase 1")
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert len(lines) == 1 + 3  # header, crnn and two tinycnn seeds
    for name in ("crnn_s42", "tinycnn_s42", "tinycnn_s7"):
        m, row = finished.metrics[name], dict(zip(header, _row(lines, name), strict=True))
        assert row["test macro-F1 %"] == _pct(m["test"]["macro_f1"])
        assert row["val macro-F1 %"] == _pct(m["validation"]["macro_f1"])
        assert row["test acc %"] == _pct(m["test"]["acc"])
        assert row["params"] == f"{m['deployment']['params']:,}"
    assert _row(lines, "crnn_s42")[header.index("params")] == "73,411"
    assert _row(lines, "tinycnn_s42")[header.index("params")] == "23,491"
    assert _row(lines, "tinycnn_s42")[header.index("phase")] == "phase1"  # from status.csv
    # the frame behind it holds the exact values
    df = L.load_runs(finished.results, finished.campaign)
    table = T.phase1_table(df).set_index("run_name")
    for name in ("crnn_s42", "tinycnn_s42", "tinycnn_s7"):
        assert table.loc[name, "test_macro_f1"] == finished.metrics[name]["test"]["macro_f1"]
        assert table.loc[name, "val_macro_f1"] == finished.metrics[name]["validation"]["macro_f1"]
    assert list(table["test_macro_f1"]) == sorted(table["test_macro_f1"], reverse=True)


def test_kd_table_deltas_and_gap_closed(finished):
    lines = _table(finished.text, "## Distillation vs")
    kd_names = [n for n in finished.runs if "kd" in n]
    assert len(kd_names) == 2 and len(lines) == 1 + 2
    teacher = finished.metrics["crnn_s42"]["test"]["macro_f1"]
    base = finished.metrics["tinycnn_s42"]["test"]["macro_f1"]  # the same seed's baseline
    df = L.load_runs(finished.results, finished.campaign)
    kd = T.kd_table(df).set_index("run_name")
    for name in kd_names:
        f1 = finished.metrics[name]["test"]["macro_f1"]
        row = _row(lines, name)
        assert row[5] == _pct(f1) and row[6] == "tinycnn_s42" and row[7] == _pct(base)
        assert row[8] == f"{100 * (f1 - base):+.2f}"
        assert kd.loc[name, "test_macro_f1"] == f1
        assert kd.loc[name, "delta_test_macro_f1"] == pytest.approx(f1 - base, abs=1e-12)
        assert kd.loc[name, "teacher"] == "crnn_s42"
        closed = kd.loc[name, "gap_closed"]
        if teacher > base:
            assert closed == pytest.approx((f1 - base) / (teacher - base))
        else:
            assert math.isnan(closed) and row[11] == "-"
    assert kd.loc[kd_names[0], "alpha"] in (0.3, 0.9)


def test_seed_table_uses_both_seeds(finished):
    lines = _table(finished.text, "## Seeds")
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    row = dict(zip(header, _row(lines, "tinycnn"), strict=True))
    values = [finished.metrics[n]["test"]["macro_f1"] for n in ("tinycnn_s42", "tinycnn_s7")]
    assert row["seeds (n)"] == "2" and row["seeds"] == "7,42"
    assert row["test F1 mean %"] == _pct(np.mean(values))
    assert row["test F1 std (points)"] == f"{100 * np.std(values, ddof=1):.2f}"
    assert len(lines) == 1 + 1  # only the configuration with more than one seed


def test_figures_are_pngs_linked_from_the_report(finished):
    figures = sorted((finished.results / "figures").glob("results_analysis_*.png"))
    assert len(figures) >= 5, figures
    for fig in figures:
        assert fig.read_bytes()[:8] == PNG, fig
        assert f"](figures/{fig.name})" in finished.text
    slugs = " ".join(f.name for f in figures)
    for part in ("heatmaps", "validation-curves", "confusion", "pareto", "seeds"):
        assert part in slugs, slugs


def test_takeaways_are_generated_from_the_numbers(finished):
    takeaways = finished.text.split("## Takeaways", 1)[1].split("\n## ", 1)[0]
    table = T.seed_table(L.load_runs(finished.results, finished.campaign))
    best = table.iloc[0]
    assert table["test_macro_f1_mean"].max() == best["test_macro_f1_mean"]
    assert f"**Best model overall:** `{best['configuration']}`" in takeaways
    assert _pct(best["test_macro_f1_mean"]) in takeaways
    assert "**Best student**" in takeaways and "tinycnn" in takeaways
    assert "- **tinycnn** - " in takeaways  # the KD verdict for the student
    assert "best KD configuration `tinycnn_kd-a" in takeaways
    assert "Gate (campaign gate.json): seed 42 passed" in takeaways
    n_collapsed = sum(
        m["collapsed"]["validation"] or m["collapsed"]["test"] for m in finished.metrics.values()
    )
    assert f"on validation or test): {n_collapsed} of 5" in takeaways
    assert "Cheapest model within 1 point of the best" in takeaways
    assert "seed-to-seed" in takeaways.lower()


def test_campaign_audit_counts(finished):
    df = L.load_runs(finished.results, finished.campaign)
    audit = A.completeness(df, finished.campaign)
    counts = A.completeness_counts(audit)
    assert counts["planned"] == 7  # the gate step is not a run
    assert (counts["complete"], counts["failed"], counts["skipped"]) == (5, 1, 1)
    assert counts["missing_artifacts"] == 0
    assert set(audit.loc[audit["state"] == "complete", "artifacts"]) == {"ok"}
    assert A.check_artifacts(df) == []


def test_notebook_is_fast_and_saved_clean(finished):
    # ~15-20 s on an idle 2-core machine (kernel start and imports dominate); generous here
    # because CI machines are shared
    assert finished.seconds < 90, finished.seconds
    import nbformat

    nb = nbformat.read(R.NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    executed = nbformat.read(finished.root / "executed.ipynb", as_version=4)
    shown = json.dumps([c.get("outputs", []) for c in executed.cells])
    assert "DATA SOURCE:" in shown and finished.source.split(" (")[0] in shown


# ----------------------------------------------------------------------------- degraded inputs


def _copy_results(finished, dest: Path, keep: set[str]) -> Path:
    """A copy of the results folder that holds only the runs in ``keep`` (run folders and
    leaderboard rows: the report reconciles the leaderboard with the run folders)."""
    results = dest / "results"
    shutil.copytree(finished.results, results, ignore=shutil.ignore_patterns("cache", "figures"))
    shutil.rmtree(results / "campaigns")
    for run in (results / "runs").iterdir():
        if run.name not in keep:
            shutil.rmtree(run)
    path = results / "leaderboard.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if r["run_name"] in keep)
    return results


def test_one_seed_no_kd_no_campaign_degrades_to_notes(finished, tmp_path):
    results = _copy_results(finished, tmp_path, {"crnn_s42", "tinycnn_s42"})
    df = L.load_runs(results, L.locate_campaign(results))
    assert len(df) == 2 and T.kd_table(df).empty
    text = K.takeaways(df)
    assert "No distillation runs yet" in text
    assert "Only one seed per configuration" in text and "cannot be distinguished" in text
    # the notebook runs through (notes instead of sections) and the report says so
    report = R.report_results(results, out_md=tmp_path / "out" / "report.md")
    body = report.read_text()
    assert "_No distillation runs yet._" in body and "Every configuration has one seed" in body
    assert "`(none: every leaderboard run)`" in body
    for link in body.split("](")[1:]:
        assert (report.parent / link.split(")")[0]).is_file()  # relative links resolve


def test_broken_artifact_fires_the_live_assert(finished, tmp_path):
    results = _copy_results(finished, tmp_path, set(finished.runs))
    (results / "runs" / "tinycnn_s7" / "metrics.json").unlink()
    problems = A.check_artifacts(L.load_runs(results))
    assert problems == [f"tinycnn_s7: missing metrics.json in {results / 'runs' / 'tinycnn_s7'}"]
    (results / "report.md").write_text("previous report\n")
    with pytest.raises(NotebookError) as err:
        R.report_results(results, campaign="none")
    assert err.value.ename == "AssertionError"
    assert "tinycnn_s7" in err.value.evalue and "metrics.json" in err.value.evalue
    assert (results / "report.md").read_text() == "previous report\n"  # left untouched


# ----------------------------------------------------------------------------- pure helpers


def test_mixed_sources_are_announced_loudly():
    import pandas as pd

    assert L.source_line(pd.DataFrame({"source": ["A", "A"]})) == "A"
    line = L.source_line(pd.DataFrame({"source": ["A", "B"]}))
    assert line.startswith("MIXED DATA SOURCES (2)") and "A | B" in line


def test_pareto_front_and_gap_closed():
    mask = T.pareto_mask([1, 2, 3, 2, 1], [0.5, 0.7, 0.6, 0.7, 0.4])
    assert mask.tolist() == [True, True, False, True, False]
    assert T.gap_closed(0.8, 0.7, 0.9) == pytest.approx(0.5)
    assert math.isnan(T.gap_closed(0.8, 0.7, 0.65))  # teacher below the student: no gap


def test_locate_campaign(tmp_path, monkeypatch):
    monkeypatch.delenv(L.ENV_CAMPAIGN, raising=False)
    assert L.locate_campaign(tmp_path) is None
    old, new = tmp_path / "campaigns" / "old", tmp_path / "campaigns" / "new"
    old.mkdir(parents=True)
    new.mkdir()
    os.utime(old, (1, 1))
    assert L.locate_campaign(tmp_path) == new  # the most recently modified
    assert L.locate_campaign(tmp_path, "old") == old
    assert L.locate_campaign(tmp_path, "none") is None
    monkeypatch.setenv(L.ENV_CAMPAIGN, "old")
    assert L.locate_campaign(tmp_path) == old
    with pytest.raises(FileNotFoundError, match="known: \\['new', 'old'\\]"):
        L.locate_campaign(tmp_path, "missing")
