"""Campaigns: manifest validation, the plan, and real (tiny) campaigns end to end.

The cache is built from real WAV files with class-distinct signals (conftest's ``tone_cache``:
quiet = noise, breathe = modulated noise, snore = a pulse train), so models learn in one epoch.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sleepsound import runs as art
from sleepsound.campaign import (
    CampaignError,
    ManifestError,
    compare,
    load_manifest,
    plan,
    plan_counts,
    run_campaign,
    summarize,
    welch_test,
)
from sleepsound.campaign.runner import reuse_state
from sleepsound.config import TrainConfig
from sleepsound.runs.leaderboard import read_leaderboard

REPO = Path(__file__).resolve().parents[1]
FAST = {"epochs": 1, "batch_size": 32, "threads": 1}


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cache_dir(tone_cache) -> Path:
    """conftest's real-WAV cache (3 classes, 40 train clips per class, 0.4-1.6 s)."""
    return tone_cache


def write_manifest(path: Path, **fields) -> Path:
    path.write_text(json.dumps(fields, indent=1))
    return path


def read_status(campaign_dir: Path) -> dict[str, dict]:
    with open(campaign_dir / "status.csv", newline="") as f:
        return {row["run_name"]: row for row in csv.DictReader(f)}


# ----------------------------------------------------------------------------- manifests

VALID = {
    "name": "t",
    "seeds": [1],
    "phase1": [{"model": "tinycnn"}, {"model": "crnn"}],
    "teacher": {"model": "crnn"},
    "gate": {"min_margin": 0.03, "tuning_grid": {"lr": [0.002]}},
    "phase2": {"students": [{"model": "tinycnn"}], "alpha": [0.5], "tau": [2]},
}


def _with(**changes) -> dict:
    data = json.loads(json.dumps(VALID))
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = data
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        node[leaf] = value
    return data


@pytest.mark.parametrize(
    "data, expected",
    [
        (_with(epocs=3), ["epocs", "unknown key"]),
        (_with(phase1=[{"model": "resnet"}]), ["phase1[0].model", "unknown model 'resnet'"]),
        (
            _with(phase1=[{"model": "tinycnn", "model_kwargs": {"bogus": 1}}]),
            ["phase1[0]", "bogus"],
        ),
        (_with(phase1=[{"model": "tinycnn", "lr": 0.1}]), ["phase1[0].lr", "unknown key"]),
        (_with(seeds=[]), ["seeds", "at least one seed"]),
        (_with(phase2__alpha=[0.5, 1.5]), ["phase2.alpha", "[0, 1]"]),
        (_with(phase2__tau=[0]), ["phase2.tau", "> 0"]),
        (_with(phase2__students=[{"model": "mlp"}]), ["phase2.students[0].model", "'mlp'"]),
        (_with(train={"epochz": 3}), ["train", "epochz"]),
        (_with(train={"epochs": 0}), ["train", "epochs"]),
        (_with(train={"seed": 3}), ["train", "the campaign sets them"]),
        (_with(gate__tuning_grid={"lr": [-1.0]}), ["gate.tuning_grid", "lr"]),
        (_with(teacher={"model": "tinycnn_cbam"}), ["teacher", "matches no phase-1 run"]),
        (_with(phase1=[{"model": "crnn"}, {"model": "crnn"}]), ["duplicate run names"]),
        (_with(name="has space"), ["name"]),
        (_with(executor={"kind": "slurm"}), ["executor.kind", "'local' or 'ray'"]),
        (_with(executor={"kind": "ray", "gpus_per_run": 1.5}), ["executor.gpus_per_run"]),
        (_with(executor={"kind": "ray", "cpus_per_run": 0}), ["executor.cpus_per_run"]),
        (_with(train={"memory_limit": "12 parsecs"}), ["train", "memory_limit"]),
    ],
)
def test_bad_manifests_name_file_and_field(tmp_path, data, expected):
    path = write_manifest(tmp_path / "bad.json", **data)
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    message = str(err.value)
    assert str(path) in message
    for text in expected:
        assert text in message, message


def test_manifest_json_error_names_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "name": "x",\n  "seeds": [1,]\n}\n')
    with pytest.raises(ManifestError, match=r"broken\.json:3:\d+: invalid JSON"):
        load_manifest(path)


def test_student_outside_phase1_is_fine(tmp_path):
    data = _with(phase2__students=[{"model": "tinycnn_cbam", "model_kwargs": {"r": 4, "k": 7}}])
    manifest = load_manifest(write_manifest(tmp_path / "ok.json", **data))
    assert [s for s, *_ in manifest.phase2_runs()] == ["tinycnn_cbam_r4_k7_kd_a0.5_t2"]


def test_reference_plan_counts_and_names():
    manifest = load_manifest(REPO / "experiments" / "reference.json")
    steps = plan(manifest)
    counts = plan_counts(steps)
    assert counts["phase1"]["per_seed"] == 11 and not counts["phase1"]["conditional"]
    assert counts["tuning"]["per_seed"] == 18 and counts["tuning"]["conditional"]
    assert counts["phase2"]["per_seed"] == 18
    assert counts["gate"]["per_seed"] == 1
    names = {s.run_name for s in steps}
    for name in (
        "reference-p1_tinycnn_cbam_r8_k3_s42",
        "reference-tune_crnn_lr0.002_wd0.0001_gc0.5_s42",
        "reference-p2_tinycnn_kd_a0.6_t4_s42",
        "reference-p2_tinycnn_cbam_r8_k3_kd_a0.9_t3_s42",
    ):
        assert name in names
    # every config is the reference policy: TrainConfig's defaults, 50 epochs, patience 5
    p1 = [s.config for s in steps if s.phase == "phase1"]
    assert all(c.epochs == 50 and c.patience == 5 and c.lr == TrainConfig().lr for c in p1)
    kd = [s.config for s in steps if s.phase == "phase2"]
    assert all(c.teacher_run == Path("results/runs/reference-p1_crnn_s42") for c in kd)


def test_demo_manifest_validates_and_dry_run_writes_nothing(tmp_path, capsys):
    result = run_campaign(REPO / "experiments" / "demo.json", dry_run=True, results_dir=tmp_path)
    assert result.dry_run and not (tmp_path / "campaigns").exists()
    printed = capsys.readouterr().out
    assert "phase1" in printed and "phase2" in printed and "tuning" in printed
    assert "executor local" in printed  # where the runs would execute


def test_memory_limit_reaches_every_run_from_manifest_or_option(tmp_path):
    from sleepsound.campaign.runner import with_overrides

    path = write_manifest(tmp_path / "m.json", **_with(train={"memory_limit": "64MB"}))
    manifest = load_manifest(path)
    configs = [s.config for s in plan(manifest) if s.config is not None]
    assert len(configs) == 4 and {c.memory_limit for c in configs} == {64 * 10**6}
    smaller = with_overrides(manifest, path, memory_limit="40MiB")
    assert {s.config.memory_limit for s in plan(smaller) if s.config} == {40 * 2**20}
    with pytest.raises(ManifestError, match="--memory-limit 1KB"):
        with_overrides(manifest, path, memory_limit="1KB")  # below the data path's minimum


def test_ray_dry_run_shows_resources_without_importing_ray(tmp_path):
    """The plan with the resources each run asks for; Ray stays an optional import."""
    code = (
        "import sys; from sleepsound.campaign import run_campaign; "
        f"run_campaign({str(REPO / 'experiments' / 'demo.json')!r}, dry_run=True, "
        f"results_dir={str(tmp_path)!r}, executor={{'kind': 'ray', 'cpus_per_run': 0.5, "
        "'gpus_per_run': 0}); print('ray imported:', 'ray' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    printed = " ".join(proc.stdout.split())
    cpus = os.cpu_count() or 1
    assert "each run asks for 0.5 CPU(s) and 0 GPU(s)" in printed, printed
    assert f"({cpus} CPUs, " in printed and f"up to {cpus * 2} run(s) at once" in printed
    assert "ray imported: False" in printed
    assert not (tmp_path / "campaigns").exists()


# ----------------------------------------------------------------------------- statistics


def test_welch_test_and_single_seed():
    one = welch_test([0.8], [0.7])
    assert not one.significant and math.isnan(one.p_value) and "2 seeds" in one.reason
    close = welch_test([0.80, 0.82, 0.81], [0.81, 0.79, 0.80])
    assert not close.significant and close.intervals_overlap
    far = welch_test([0.90, 0.91, 0.92], [0.70, 0.71, 0.69])
    assert far.significant and far.p_value < 0.001 and not far.intervals_overlap


def test_summarize_rows_groups_by_configuration():
    base = {"kind": "baseline", "model": "tinycnn", "model_kwargs": "{}", "lr": 0.001}
    rows = [
        {**base, "run_name": "x-p1_tinycnn_s1", "seed": 1, "test_macro_f1": 0.70,
         "val_macro_f1": 0.72},
        {**base, "run_name": "x-p1_tinycnn_s2", "seed": 2, "test_macro_f1": 0.74,
         "val_macro_f1": 0.73},
        {**base, "lr": 0.002, "run_name": "x-t_s1", "seed": 1, "test_macro_f1": 0.5,
         "val_macro_f1": 0.5},
    ]  # fmt: skip
    df = summarize(rows)
    two = df[df["configuration"] == "x-p1_tinycnn"].iloc[0]
    assert two["n_seeds"] == 2 and two["test_macro_f1_mean"] == pytest.approx(0.72)
    assert two["test_macro_f1_std"] == pytest.approx(np.std([0.70, 0.74], ddof=1))
    half = 12.706204736 * two["test_macro_f1_std"] / math.sqrt(2)  # t(0.975, 1)
    assert two["test_macro_f1_ci_low"] == pytest.approx(0.72 - half)
    single = df[df["configuration"] == "x-t"].iloc[0]
    assert single["n_seeds"] == 1 and single["test_macro_f1_mean"] == 0.5
    assert math.isnan(single["test_macro_f1_ci_low"])
    assert compare(rows, "x-p1_tinycnn", "x-t").n_a == 2


# ----------------------------------------------------------------------------- campaigns


@pytest.fixture(scope="module")
def campaign(cache_dir, tmp_path_factory):
    """One real campaign: 2 phase-1 runs + one broken run, an always-failing gate with a
    2-point tuning grid (one point equals the teacher), one distillation run."""
    root = tmp_path_factory.mktemp("campaign")
    manifest = write_manifest(
        root / "tiny.json",
        name="tiny",
        cache_dir=str(cache_dir),
        results_dir=str(root / "results"),
        seeds=[1],
        train=FAST,
        phase1=[
            {"model": "tinycnn"},
            {"model": "crnn"},
            {"model": "tinycnn", "label": "broken", "overrides": {"cache_dir": str(root / "no")}},
        ],
        teacher={"model": "crnn"},
        gate={"min_margin": 1.0, "tuning_grid": {"lr": [0.003, 0.001]}},
        phase2={"students": [{"model": "tinycnn"}], "alpha": [0.5], "tau": [2]},
    )
    result = run_campaign(manifest, progress=False)
    return manifest, result


def test_campaign_end_to_end(campaign):
    manifest, result = campaign
    cdir = result.campaign_dir
    status = read_status(cdir)
    assert {k: v["state"] for k, v in status.items()} == {
        "tiny-p1_tinycnn_s1": "complete",
        "tiny-p1_crnn_s1": "complete",
        "tiny-p1_broken_s1": "failed",
        "tiny-tune_crnn_lr0.003_s1": "complete",
        "tiny-tune_crnn_lr0.001_s1": "skipped",  # identical to the phase-1 teacher
        "tiny-p2_tinycnn_kd_a0.5_t2_s1": "complete",
    }
    broken = status["tiny-p1_broken_s1"]
    assert "CacheError" in broken["error"] and "cache file not found" in broken["error"]
    assert "Traceback" in (cdir / "errors" / "tiny-p1_broken_s1.txt").read_text()
    assert json.loads((cdir / "manifest.json").read_text())["name"] == "tiny"

    gate = json.loads((cdir / "gate.json").read_text())["seeds"]["1"]
    assert gate["passed"] is False and gate["best_student_run"] == "tiny-p1_tinycnn_s1"
    assert gate["margin"] == pytest.approx(
        gate["teacher_val_macro_f1"] - gate["best_student_val_macro_f1"]
    )
    assert gate["tuning"]["tiny-tune_crnn_lr0.001_s1"]["state"] == "skipped"
    candidates = {"tiny-p1_crnn_s1": gate["teacher_val_macro_f1"],
                  "tiny-tune_crnn_lr0.003_s1": gate["tuning"]["tiny-tune_crnn_lr0.003_s1"]
                  ["val_macro_f1"]}  # fmt: skip
    assert gate["chosen_teacher_run"] == max(candidates, key=candidates.get)

    kd_dir = Path(status["tiny-p2_tinycnn_kd_a0.5_t2_s1"]["run_dir"])
    kd_cfg = art.read_json(kd_dir / "config.json")
    assert Path(kd_cfg["teacher_run"]).name == gate["chosen_teacher_run"]

    summary = pd.read_csv(cdir / "summary.csv")
    assert len(summary) == 4 and (summary["n_seeds"] == 1).all()
    board = read_leaderboard(
        Path(json.loads(manifest.read_text())["results_dir"]) / "leaderboard.csv"
    )
    assert {r["run_name"] for r in board} == {
        n for n, s in status.items() if s["state"] == "complete"
    }


def test_existing_campaign_needs_a_flag(campaign):
    manifest, _ = campaign
    with pytest.raises(CampaignError, match="--resume.*--fresh-start"):
        run_campaign(manifest, progress=False)


def test_resume_skips_finished_and_redoes_incomplete(campaign, monkeypatch):
    """Runs last among the users of ``campaign``: it changes that campaign's runs."""
    import sleepsound.training.train as train_module

    manifest, first = campaign
    calls = []
    real = train_module.train_run

    def spy(cfg, resume=False, progress=True):
        calls.append((cfg.run_name, resume))
        return real(cfg, resume=resume, progress=progress)

    monkeypatch.setattr(train_module, "train_run", spy)
    runs = {n: Path(r.run_dir) for n, r in first.records.items() if r.state == "complete"}
    mtimes = {n: (d / "metrics.json").stat().st_mtime_ns for n, d in runs.items()}

    # 1. nothing changed: only the failed run is tried again
    result = run_campaign(manifest, resume=True, progress=False)
    assert calls == [("tiny-p1_broken_s1", False)]
    assert {n: (d / "metrics.json").stat().st_mtime_ns for n, d in runs.items()} == mtimes
    status = read_status(result.campaign_dir)
    assert all("reused" in status[n]["note"] for n in runs)

    # 2. a killed run (status running, no metrics) is continued from its checkpoint, alone
    student = runs["tiny-p1_tinycnn_s1"]
    art.set_status(student, "running")
    (student / "metrics.json").unlink()
    calls.clear()
    result = run_campaign(manifest, resume=True, progress=False)
    assert calls == [("tiny-p1_tinycnn_s1", True), ("tiny-p1_broken_s1", False)]
    assert art.run_status(student) == "complete"
    assert read_status(result.campaign_dir)["tiny-p1_tinycnn_s1"]["state"] == "complete"

    # 3. a changed manifest re-runs exactly the changed run
    data = json.loads(manifest.read_text())
    data["phase2"]["students"][0]["overrides"] = {"weight_decay": 1e-4}
    manifest.write_text(json.dumps(data))
    kd = "tiny-p2_tinycnn_kd_a0.5_t2_s1"
    cfg = next(s.config for s in plan(load_manifest(manifest)) if s.run_name == kd)
    assert reuse_state(runs[kd], cfg) == "stale"
    calls.clear()
    run_campaign(manifest, resume=True, progress=False)
    assert calls == [("tiny-p1_broken_s1", False), (kd, False)]
    assert art.read_json(runs[kd] / "config.json")["weight_decay"] == 1e-4


def test_failed_teacher_skips_phase2_and_fresh_start(tmp_path, capsys):
    manifest = write_manifest(
        tmp_path / "m.json",
        name="nocache",
        cache_dir=str(tmp_path / "missing"),
        results_dir=str(tmp_path / "results"),
        seeds=[1],
        phase1=[{"model": "tinycnn"}, {"model": "crnn"}],
        teacher={"model": "crnn"},
        gate={"min_margin": 0.03, "tuning_grid": {"lr": [0.002]}},
        phase2={"students": [{"model": "tinycnn"}], "alpha": [0.5], "tau": [2]},
    )
    result = run_campaign(manifest, progress=False)
    status = read_status(result.campaign_dir)
    assert [s["state"] for s in status.values()] == ["failed", "failed", "skipped", "skipped"]
    assert "no teacher for seed 1" in status["nocache-p2_tinycnn_kd_a0.5_t2_s1"]["note"]
    gate = json.loads((result.campaign_dir / "gate.json").read_text())["seeds"]["1"]
    assert gate["chosen_teacher_run"] is None and "failed" in gate["reason"]
    assert (result.campaign_dir / "summary.csv").is_file()

    capsys.readouterr()
    run_campaign(manifest, fresh_start=True, progress=False)
    assert f"removing {result.campaign_dir}" in capsys.readouterr().err.replace("\n", "")
    with pytest.raises(CampaignError, match="exclude"):
        run_campaign(manifest, resume=True, fresh_start=True)


def test_interrupt_marks_the_run_and_propagates(tmp_path, monkeypatch):
    import sleepsound.training.train as train_module

    def interrupted(cfg, resume=False, progress=True):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train_run", interrupted)
    manifest = write_manifest(
        tmp_path / "m.json", name="ki", results_dir=str(tmp_path / "r"), phase1=[{"model": "crnn"}]
    )
    with pytest.raises(KeyboardInterrupt):
        run_campaign(manifest, progress=False)
    row = read_status(tmp_path / "r" / "campaigns" / "ki")["ki-p1_crnn_s42"]
    assert row["state"] == "failed" and "interrupted" in row["error"]


def test_two_seeds_give_an_interval_and_a_passing_gate(cache_dir, tmp_path):
    """The "teacher" is a second, identical TinyCNN: margin exactly 0 >= min_margin 0, so the
    gate passes deterministically and the tuning grid is skipped."""
    manifest = write_manifest(
        tmp_path / "seeds.json",
        name="seeds",
        cache_dir=str(cache_dir),
        results_dir=str(tmp_path / "results"),
        seeds=[1, 2],
        train=FAST,
        phase1=[{"model": "tinycnn"}, {"model": "tinycnn", "label": "twin"}],
        teacher={"model": "tinycnn", "label": "twin"},
        gate={"min_margin": 0.0, "tuning_grid": {"lr": [0.002]}},
    )
    result = run_campaign(manifest, progress=False)
    for seed in ("1", "2"):
        gate = json.loads((result.campaign_dir / "gate.json").read_text())["seeds"][seed]
        assert gate["passed"] and gate["margin"] == 0.0
        assert gate["chosen_teacher_run"] == f"seeds-p1_twin_s{seed}"
    status = read_status(result.campaign_dir)
    assert status["seeds-tune_twin_lr0.002_s1"]["state"] == "skipped"
    assert "gate passed" in status["seeds-tune_twin_lr0.002_s2"]["note"]

    row = result.summary.iloc[0]  # both TinyCNN configs are one configuration
    assert len(result.summary) == 1 and row["n_seeds"] == 2 and row["seeds"] == "1,2"
    assert math.isfinite(row["test_macro_f1_ci_low"]) and math.isfinite(row["test_macro_f1_std"])
    assert row["test_macro_f1_ci_low"] <= row["test_macro_f1_mean"] <= row["test_macro_f1_ci_high"]
    on_disk = pd.read_csv(result.campaign_dir / "summary.csv")
    assert on_disk.loc[0, "n_seeds"] == 2
