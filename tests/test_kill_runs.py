"""kill -9 at random points of ``train``, ``distill`` and ``campaign``, then the same command
with ``--resume``: the results equal an uninterrupted run's, nothing partial passes for
complete, nothing is left behind (issue 13).

Each trial kills a real ``sleepsound`` process with SIGKILL: either after a random delay
(drawn from a seeded generator, within the uninterrupted command's wall time) or, for one
trial per command, at a randomly chosen milestone (the crash is injected by
``tests/crashrun.py``; production code only announces milestones).
"""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import time
from pathlib import Path

import crashrun
import pytest
from badinput import tiny_cache

from sleepsound import runs

MILESTONES = ("train.epoch_saved", "train.metrics_written", "train.status_complete")
TRIALS = {"train": 3, "distill": 2, "campaign": 2}
EPOCH_COLUMNS = ("epoch", "train_loss", "val_loss", "val_acc", "val_macro_f1")  # not timings


def _env() -> dict:
    # one thread: the same arithmetic in every process, so results can be compared exactly
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _run(args: list[str], milestone: str = "never", count: int = 1) -> subprocess.CompletedProcess:
    return subprocess.run(
        crashrun.command(milestone, count, *args), capture_output=True, text=True, env=_env()
    )


def _kill_after(args: list[str], delay: float) -> int:
    """Start the command, SIGKILL its process group after ``delay`` s; returns the exit code
    (-9 when killed, 0 when it finished first)."""
    proc = subprocess.Popen(
        crashrun.command("never", 1, *args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
        start_new_session=True,
    )
    return crashrun.kill_group_after(proc, delay)


def _outcome(run_dir: Path) -> dict:
    """What must not depend on interruptions: metrics and the per-epoch log (no timings)."""
    m = runs.read_metrics(run_dir)
    with open(runs.epochs_path(run_dir), newline="") as f:
        epochs = [[r[c] for c in EPOCH_COLUMNS] for r in csv.DictReader(f)]
    return {
        "validation": m["validation"],
        "test": m["test"],
        "best_epoch": m["best_epoch"],
        "epochs_ran": m["epochs_ran"],
        "epochs": epochs,
    }


def _board(results: Path) -> dict[str, dict]:
    rows = runs.read_leaderboard(runs.leaderboard_file(results))
    names = [r["run_name"] for r in rows]
    assert len(names) == len(set(names)), f"duplicate leaderboard rows: {names}"
    return {r["run_name"]: r for r in rows}


def _leftovers(results: Path) -> list[Path]:
    return [
        p
        for p in results.rglob("*")
        if p.is_file() and (".tmp" in p.name or p.name.endswith(".partial"))
    ]


def _nothing_partial(results: Path, reference: dict[str, dict]) -> None:
    """Right after a kill: whatever says complete is whole and equals the reference."""
    for name, row in _board(results).items():
        run = Path(row["run_dir"])
        assert runs.run_status(run) == "complete", f"leaderboard row of unfinished {name}"
        assert float(row["test_macro_f1"]) == reference[name]["test"]["macro_f1"]
    folder = runs.runs_dir(results)
    for run in folder.iterdir() if folder.is_dir() else []:
        if runs.run_status(run) == "complete":
            assert runs.best_checkpoint(run).is_file()
            assert _outcome(run) == reference[run.name], f"{run.name} complete but different"


def _check_resumed(results: Path, reference: dict[str, dict]) -> None:
    board = _board(results)
    assert set(board) == set(reference), (set(board), set(reference))
    for name, expected in reference.items():
        run = runs.run_dir(results, name)
        assert runs.run_status(run) == "complete"
        assert _outcome(run) == expected, name
        assert float(board[name]["test_macro_f1"]) == expected["test"]["macro_f1"]
    assert not _leftovers(results), _leftovers(results)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("kill")
    cache = tiny_cache(root, per_class=10, eval_per_class=4)
    teacher_results = root / "teacher"
    proc = _run(_train(cache, teacher_results, "crnn", "teacher"))
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "cache": cache, "teacher": runs.run_dir(teacher_results, "teacher")}


def _train(cache: Path, results: Path, model: str = "tinycnn", name: str = "t") -> list[str]:
    return ["train", "--model", model, "--cache-dir", str(cache), "--results-dir",
            str(results), "--epochs", "3", "--batch-size", "8", "--patience", "3",
            "--run-name", name]  # fmt: skip


def _distill(world: dict, results: Path) -> list[str]:
    return ["distill", "--teacher-run", str(world["teacher"]), "--student", "tinycnn",
            "--alpha", "0.5", "--tau", "2", "--cache-dir", str(world["cache"]),
            "--results-dir", str(results), "--epochs", "2", "--batch-size", "8",
            "--run-name", "d"]  # fmt: skip


def _campaign(world: dict, results: Path) -> list[str]:
    manifest = world["root"] / "campaign.json"
    if not manifest.exists():
        manifest.write_text(json.dumps({
            "name": "kc", "cache_dir": str(world["cache"]), "seeds": [3],
            "train": {"epochs": 1, "batch_size": 8},
            "phase1": [{"model": "tinycnn"}, {"model": "crnn"}],
            "teacher": {"model": "crnn"},
            "phase2": {"students": [{"model": "tinycnn"}], "alpha": [0.5], "tau": [2]},
        }))  # fmt: skip
    return ["campaign", "--manifest", str(manifest), "--results-dir", str(results)]


COMMANDS = {
    "train": lambda w, results: _train(w["cache"], results),
    "distill": _distill,
    "campaign": _campaign,
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_kill_then_resume_gives_the_uninterrupted_result(command, world):
    rng = random.Random(f"sleepsound-kill-{command}")
    make = COMMANDS[command]
    ref_results = world["root"] / f"{command}-reference"
    t0 = time.perf_counter()
    proc = _run(make(world, ref_results))
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    reference = {r.name: _outcome(r) for r in runs.runs_dir(ref_results).iterdir()}
    for trial in range(TRIALS[command]):
        results = world["root"] / f"{command}-trial{trial}"
        args = make(world, results)
        if trial == 0:
            milestone = rng.choice(MILESTONES)
            count = rng.randint(1, 2 if milestone == "train.epoch_saved" else 1)
            code = _run(args, milestone, count).returncode
            assert code == 137, f"{milestone} #{count} never reached"
        else:
            code = _kill_after(args, rng.uniform(0.3, 0.95) * wall)
        _nothing_partial(results, reference)
        resume = _run([*args, "--resume"])
        assert resume.returncode == 0, f"trial {trial} (exit {code}): {resume.stderr}"
        _check_resumed(results, reference)
