"""The local pool executor (``"executor": {"kind": "local", "workers": N}``): real worker
processes on this machine, the same runs as the in-process executor.

A dead worker is made by ``tests/ray_faults/sitecustomize.py`` (put first on PYTHONPATH, which
the fork server inherits when the test starts it, and passes to every worker): it calls
``os._exit(137)`` at a run's first saved epoch.
"""

from __future__ import annotations

import csv
import json
import multiprocessing.forkserver
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sleepsound import runs as art
from sleepsound.campaign import run_campaign
from sleepsound.campaign.pool_executor import threads_per_worker

HERE = Path(__file__).resolve().parent
FAULTS_DIR = HERE / "ray_faults"
TRAIN = {"epochs": 2, "batch_size": 32, "threads": 1}


def write_manifest(path: Path, results: Path, cache: Path, workers: int) -> Path:
    path.write_text(
        json.dumps(
            {
                "name": "pool",
                "cache_dir": str(cache),
                "results_dir": str(results),
                "seeds": [1, 2],
                "train": TRAIN,
                "phase1": [{"model": "tinycnn"}],
                "executor": {"kind": "local", "workers": workers},
            }
        )
    )
    return path


def status(result) -> dict[str, dict]:
    with open(result.campaign_dir / "status.csv", newline="") as f:
        return {row["run_name"]: row for row in csv.DictReader(f)}


def scores(run_dir: str) -> dict:
    metrics = art.read_metrics(Path(run_dir))
    return {"validation": metrics["validation"], "test": metrics["test"]}


def test_threads_per_worker():
    assert threads_per_worker(2, cpus=2) == 1
    assert threads_per_worker(3, cpus=16) == 5
    assert threads_per_worker(4, cpus=2) == 1  # never 0


def test_pool_runs_match_in_process_and_a_dead_worker_is_recovered(
    tone_cache, tmp_path, monkeypatch
):
    one = run_campaign(
        write_manifest(tmp_path / "one.json", tmp_path / "one", tone_cache, 1), progress=False
    )
    # the pool: run pool-p1_tinycnn_s2's worker dies at its first saved epoch
    marker = tmp_path / "killed"
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"kill_once": {"pool-p1_tinycnn_s2": str(marker)}}))
    monkeypatch.setenv("SLEEPSOUND_FAULTS", str(faults))
    monkeypatch.setenv("PYTHONPATH", f"{FAULTS_DIR}:{Path(art.__file__).parents[2]}")
    # the workers fork from a server started with the environment of its first use: stop one
    # an earlier test in this process may have started, so that the faults reach them
    multiprocessing.forkserver._forkserver._stop()
    manifest = write_manifest(tmp_path / "pool.json", tmp_path / "pool", tone_cache, 2)
    pool = run_campaign(manifest, progress=False)

    rows = status(pool)
    assert marker.exists(), "the fault was not injected: the worker did not die"
    dead = rows["pool-p1_tinycnn_s2"]
    assert dead["state"] == "failed" and "worker process died" in dead["error"]
    assert pool.failed_runs() == ["pool-p1_tinycnn_s2"]
    others = {n: r["state"] for n, r in rows.items() if n != "pool-p1_tinycnn_s2"}
    assert set(others.values()) == {"complete"} and len(others) == 1

    resumed = run_campaign(manifest, resume=True, progress=False)  # continues from last.pt
    assert resumed.failed_runs() == []
    rows, reference = status(resumed), status(one)
    assert set(rows) == set(reference)
    for name in reference:
        assert rows[name]["state"] == "complete"
        assert scores(rows[name]["run_dir"]) == scores(reference[name]["run_dir"]), name


def test_a_seed_distils_as_soon_as_its_own_phase_1_has_ended(tone_cache, tmp_path):
    """Two workers, per seed a short TinyCNN and a long CRNN teacher. Seed 1's phase 2 starts
    when its teacher ends, while seed 2's teacher is still training (before: only after all
    of phase 1); the runs' metrics equal the in-process executor's, one run at a time."""
    timing = {}
    for workers in (1, 2):
        manifest = write_manifest(tmp_path / f"w{workers}.json", tmp_path / f"w{workers}",
                                  tone_cache, workers)  # fmt: skip
        data = json.loads(manifest.read_text())
        data["phase1"].append({"model": "crnn", "overrides": {"epochs": 8}})
        data["teacher"] = {"model": "crnn"}
        data["phase2"] = {"students": [{"model": "tinycnn"}], "alpha": [0.5], "tau": [2]}
        manifest.write_text(json.dumps(data))
        timing[workers] = status(run_campaign(manifest, progress=False))
    sequential, pooled = timing[1], timing[2]
    assert {r["state"] for r in pooled.values()} == {"complete"} and len(pooled) == 6
    kd_s1, teacher_s2 = pooled["pool-p2_tinycnn_kd_a0.5_t2_s1"], pooled["pool-p1_crnn_s2"]
    assert kd_s1["started"] < teacher_s2["finished"], (kd_s1, teacher_s2)
    # one run at a time the order is unchanged: phase 1 of both seeds, then phase 2
    last_p1 = max(r["finished"] for r in sequential.values() if r["phase"] == "phase1")
    assert min(r["started"] for r in sequential.values() if r["phase"] == "phase2") >= last_p1
    for name, row in sequential.items():
        assert scores(pooled[name]["run_dir"]) == scores(row["run_dir"]), name


def test_ctrl_c_marks_running_runs_interrupted_and_leaves_no_worker(tone_cache, tmp_path):
    """SIGINT to the command's process group (what Ctrl-C in a terminal does): exit 130, the
    runs in flight failed as interrupted, the rest still planned, no worker process left."""
    manifest = write_manifest(tmp_path / "c.json", tmp_path / "r", tone_cache, 2)
    data = json.loads(manifest.read_text())
    data["train"]["epochs"] = 200  # still running when interrupted
    data["phase1"].append({"model": "tinycnn", "label": "later"})
    manifest.write_text(json.dumps(data))
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "campaign", "--manifest", str(manifest)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    runs_dir = tmp_path / "r" / "runs"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(runs_dir.glob("*/epochs.csv"))) < 2:
        time.sleep(0.2)
    assert proc.poll() is None, "the campaign ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    rows = _status_file(tmp_path / "r" / "campaigns" / "pool")
    failed = [r for r in rows.values() if r["state"] == "failed"]
    assert len(failed) == 2 and all("interrupted" in r["error"] for r in failed), rows
    assert sorted(r["state"] for r in rows.values()) == ["failed", "failed", "planned", "planned"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _group_alive(proc.pid):
        time.sleep(0.2)
    assert not _group_alive(proc.pid), "worker processes outlived the campaign"


CLI = "import sys; from sleepsound.cli import app; app(sys.argv[1:], prog_name='sleepsound')"


def _status_file(campaign_dir: Path) -> dict[str, dict]:
    with open(campaign_dir / "status.csv", newline="") as f:
        return {row["run_name"]: row for row in csv.DictReader(f)}


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
