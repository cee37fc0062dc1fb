"""The run directory's owner (sleepsound.runs): safe run names, one resume decision, the
leaderboard rebuilt from run folders, finite numbers only, umask-honouring writes (issue 13)."""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import subprocess

import crashrun
import numpy as np
import pytest
from badinput import assert_refused, run_cli, tiny_cache

from sleepsound import runs
from sleepsound.atomic import atomic_write
from sleepsound.campaign.manifest import ManifestError, parse_manifest
from sleepsound.config import TrainConfig, check_run_name
from sleepsound.training.distill import check_logits
from sleepsound.training.train import train_run

FAST = dict(epochs=1, batch_size=16, threads=1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tiny_cache(tmp_path_factory.mktemp("runs"))


def config(cache, results, **kw) -> TrainConfig:
    return TrainConfig(cache_dir=cache, results_dir=results, **{"model": "tinycnn", **FAST, **kw})


def scores(run_dir) -> dict:
    m = runs.read_metrics(run_dir)
    return {"validation": m["validation"], "test": m["test"], "best_epoch": m["best_epoch"]}


# ----------------------------------------------------------------------------- run names


@pytest.mark.parametrize("name", ["..", ".", "../x", "/tmp/x", "a/b", "", "-x", "a b", "x" * 201])
def test_unsafe_run_names_are_refused(name):
    with pytest.raises(ValueError, match="run name"):
        check_run_name(name)
    with pytest.raises(ValueError, match="folder name"):
        TrainConfig(run_name=name)


def test_run_name_dotdot_leaves_the_results_folder_alone(cache, tmp_path):
    """Before the fix, ``--run-name ..`` made <results>/runs/.. = <results> the run folder,
    and starting the run deleted it: cache, leaderboard and every run."""
    results = tmp_path / "results"
    (results / "runs" / "keep").mkdir(parents=True)
    (results / "leaderboard.csv").write_text("precious\n")
    for name in ("..", "../..", "."):
        args = ["train", "--model", "tinycnn", "--cache-dir", str(cache), "--results-dir",
                str(results), "--epochs", "1", "--run-name", name]  # fmt: skip
        assert_refused(run_cli(args), ["--run-name", "folder name"])
    assert (results / "leaderboard.csv").read_text() == "precious\n"
    assert (results / "runs" / "keep").is_dir()


def test_manifest_values_cannot_lead_a_run_out_of_results():
    base = {"name": "m", "phase1": [{"model": "tinycnn"}], "teacher": {"model": "tinycnn"}}
    bad_grid = {"min_margin": 0.1, "tuning_grid": {"cache_dir": ["../../../elsewhere"]}}
    with pytest.raises(ManifestError, match="gate.tuning_grid.*folder name"):
        parse_manifest({**base, "gate": bad_grid})
    parse_manifest({**base, "gate": {"min_margin": 0.1, "tuning_grid": {"lr": [0.01]}}})


# ----------------------------------------------------------------------------- resume


def test_one_resume_decision(cache, tmp_path):
    cfg = config(cache, tmp_path, run_name="r")
    run = train_run(cfg, progress=False)

    def decide(c: TrainConfig):
        return runs.resume_decision(run, c.model_dump(mode="json"))

    assert decide(cfg).state == "complete"
    for change in ({"epochs": 2}, {"lr": 0.01}, {"model": "crnn"}, {"seed": 1}):
        d = decide(cfg.model_copy(update=change))
        assert d.state == "changed" and d.differences == tuple(change), (change, d)
    assert runs.resume_decision(run, cfg.model_dump(mode="json"), {"train": "other"}).state == (
        "changed"
    )
    # a run saved before a config field existed (schedule) trained at that field's default
    saved = json.loads(runs.config_path(run).read_text())
    del saved["schedule"]
    runs.config_path(run).write_text(json.dumps(saved))
    assert decide(cfg).state == "complete"
    assert decide(cfg.model_copy(update={"schedule": "cosine"})).differences == ("schedule",)
    runs.metrics_path(run).unlink()
    assert decide(cfg).state == "resumable"
    runs.best_checkpoint(run).unlink()
    assert decide(cfg).state == "restart"
    shutil.rmtree(run)
    assert decide(cfg).state == "missing"


def test_resume_of_a_changed_complete_run_is_refused(cache, tmp_path):
    """Before the fix: 'already complete' although the asked epochs/lr/model differ."""
    train_run(config(cache, tmp_path, run_name="r"), progress=False)
    base = ["train", "--cache-dir", str(cache), "--results-dir", str(tmp_path), "--run-name",
            "r", "--batch-size", "16", "--resume"]  # fmt: skip
    for change in (["--model", "tinycnn", "--epochs", "2"], ["--model", "tinycnn", "--epochs",
                   "1", "--lr", "0.01"], ["--model", "crnn", "--epochs", "1"]):  # fmt: skip
        line = assert_refused(run_cli(base + change), ["cannot resume", "differs"])
        assert "already complete" not in line


def test_resume_with_lost_artifacts_rebuilds_them(cache, tmp_path):
    """Before the fix: metrics.json and best.pt gone, yet 'already complete'."""
    cfg = config(cache, tmp_path, run_name="r")
    run = train_run(cfg, progress=False)
    before = scores(run)
    runs.metrics_path(run).unlink()  # finish lost: continued from last.pt
    train_run(cfg, resume=True, progress=False)
    assert runs.run_status(run) == "complete" and scores(run) == before
    runs.metrics_path(run).unlink()
    runs.best_checkpoint(run).unlink()  # nothing to continue from: trained again
    train_run(cfg, resume=True, progress=False)
    assert runs.best_checkpoint(run).is_file() and scores(run) == before


# ----------------------------------------------------------------------------- leaderboard


def _env():
    return {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}


def test_row_lost_to_a_kill_comes_back(cache, tmp_path):
    """Killed after status 'complete' and before the leaderboard row: before the fix the row
    never came back (train --resume said 'already complete', campaign --resume reused it)."""
    args = ["train", "--model", "tinycnn", "--cache-dir", str(cache), "--results-dir",
            str(tmp_path), "--epochs", "1", "--batch-size", "16", "--run-name", "r"]  # fmt: skip
    proc = subprocess.run(
        crashrun.command("train.status_complete", 1, *args), capture_output=True, env=_env()
    )
    assert proc.returncode == 137, proc.stderr
    run = runs.run_dir(tmp_path, "r")
    assert runs.run_status(run) == "complete"
    assert runs.read_leaderboard(runs.leaderboard_file(tmp_path)) == []
    assert run_cli([*args, "--resume"]).exit_code == 0
    [row] = runs.read_leaderboard(runs.leaderboard_file(tmp_path))
    assert row["run_name"] == "r"
    assert float(row["test_macro_f1"]) == runs.read_metrics(run)["test"]["macro_f1"]
    # and a reader rebuilds a deleted leaderboard from the run folders
    runs.leaderboard_file(tmp_path).unlink()
    result = run_cli(["leaderboard", "--results-dir", str(tmp_path)])
    assert result.exit_code == 0 and "r" in result.stdout
    assert len(runs.read_leaderboard(runs.leaderboard_file(tmp_path))) == 1
    # a moved results folder keeps one row per run (rows are matched by run name too)
    moved = tmp_path.parent / f"{tmp_path.name}-moved"
    shutil.copytree(tmp_path, moved)
    assert run_cli(["leaderboard", "--results-dir", str(moved)]).exit_code == 0
    assert [r["run_name"] for r in runs.read_leaderboard(runs.leaderboard_file(moved))] == ["r"]
    shutil.rmtree(moved)


def test_campaign_resume_restores_a_lost_row(cache, tmp_path):
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({
        "name": "k", "cache_dir": str(cache), "results_dir": str(tmp_path / "res"),
        "seeds": [1], "train": {"epochs": 1, "batch_size": 16, "threads": 1},
        "phase1": [{"model": "tinycnn"}],
    }))  # fmt: skip
    proc = subprocess.run(
        crashrun.command("train.status_complete", 1, "campaign", "--manifest", str(manifest)),
        capture_output=True,
        env=_env(),
    )
    assert proc.returncode == 137, proc.stderr
    board = runs.leaderboard_file(tmp_path / "res")
    assert not runs.read_leaderboard(board)
    result = run_cli(["campaign", "--manifest", str(manifest), "--resume"])
    assert result.exit_code == 0, result.stderr
    assert [r["run_name"] for r in runs.read_leaderboard(board)] == ["k-p1_tinycnn_s1"]


# ----------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "field", [{"lr": math.inf}, {"lr": math.nan}, {"weight_decay": math.inf},
              {"grad_clip": math.nan}, {"class_weights": "nan,1,1"},
              {"class_weights": "1,inf,1"}],
)  # fmt: skip
def test_non_finite_numbers_are_refused(field):
    with pytest.raises(ValueError, match="finite"):
        TrainConfig(**field)
    with pytest.raises(ValueError, match="finite"):
        TrainConfig(teacher_run="t", alpha=0.5, tau=math.inf)


def test_teacher_logits_checked():
    good = np.zeros((4, 3), np.float32)
    assert check_logits(good, 4, ("a", "b", "c"), "t") is good
    with pytest.raises(ValueError, match=r"shape \(4, 5\).*3 classes"):
        check_logits(np.zeros((4, 5), np.float32), 4, ("a", "b", "c"), "t")
    bad = good.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="not finite.*1 clip"):
        check_logits(bad, 4, ("a", "b", "c"), "t")


# ----------------------------------------------------------------------------- files


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mode):
    """Before the fix every output was 0600 (the temporary file's mode) whatever the umask."""
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "out.txt", "x")
        runs.write_json(tmp_path / "out.json", {"a": 1})
    finally:
        os.umask(old)
    for name in ("out.txt", "out.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode


def test_runs_is_importable_without_torch():
    code = "import sys, sleepsound.runs; assert 'torch' not in sys.modules"
    subprocess.run([crashrun.sys.executable, "-c", code], check=True, env=_env())
