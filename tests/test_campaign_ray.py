"""Campaigns on a real Ray cluster: a head and a second node process on this machine.

The cluster is started with ``ray start`` (1 CPU per node, so two runs go at a time, one per
node) and stopped with ``ray stop --force`` whatever happens. Faults are injected from the
outside: ``tests/ray_faults/sitecustomize.py`` is on the cluster's PYTHONPATH and registers a
:mod:`sleepsound.milestones` listener that raises, or kills its worker, at a named milestone of
a named run (nothing in sleepsound knows about it).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sleepsound import runs as art
from sleepsound.campaign import run_campaign
from sleepsound.runs.leaderboard import read_leaderboard

ray = pytest.importorskip("ray")

HERE = Path(__file__).resolve().parent
FAULTS_DIR = HERE / "ray_faults"
RAY = Path(sys.executable).with_name("ray")
FAST = {"epochs": 1, "batch_size": 32, "threads": 1}
START_TIMEOUT_S = 120
CAMPAIGN_TIMEOUT_S = 240


# ----------------------------------------------------------------------------- helpers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_status(campaign_dir: Path) -> dict[str, dict]:
    with open(campaign_dir / "status.csv", newline="") as f:
        return {row["run_name"]: row for row in csv.DictReader(f)}


def scores(run_dir: Path) -> dict:
    """Every validation and test metric of a run (timings excluded)."""
    metrics = art.read_metrics(run_dir)
    return {"validation": metrics["validation"], "test": metrics["test"]}


def cli(*args: str, env: dict | None = None, timeout: float = CAMPAIGN_TIMEOUT_S):
    code = "import sys; from sleepsound.cli import app; app(sys.argv[1:], prog_name='sleepsound')"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
        env=env,
    )  # fmt: skip


def write_manifest(path: Path, **fields) -> Path:
    path.write_text(json.dumps(fields, indent=1))
    return path


# ----------------------------------------------------------------------------- the cluster


def _ray_start(args: list[str], env: dict) -> None:
    proc = subprocess.run(
        [str(RAY), "start", *args], env=env, capture_output=True, text=True,
        timeout=START_TIMEOUT_S,
    )  # fmt: skip
    assert proc.returncode == 0, f"ray start {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head + one more node (1 CPU each) on 127.0.0.1; yields address, env and faults file."""
    root = tmp_path_factory.mktemp("raycluster")
    faults = root / "faults.json"
    faults.write_text("{}")
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(FAULTS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        "SLEEPSOUND_FAULTS": str(faults),
        "RAY_USAGE_STATS_ENABLED": "0",
        # a loopback-only test cluster: no token, whatever ~/.ray/auth_token an earlier local
        # instance left (with it the second node would need the head's token)
        "RAY_AUTH_MODE": "disabled",
    }
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus=1", "--num-gpus=0", "--node-ip-address=127.0.0.1",
              "--disable-usage-stats"]  # fmt: skip
    try:
        _ray_start(["--head", f"--port={port}", f"--temp-dir={temp_dir}",
                    "--include-dashboard=false", *common], env)  # fmt: skip
        _ray_start([f"--address={address}", *common], env)
        yield {"address": address, "env": env, "faults": faults}
    finally:
        subprocess.run([str(RAY), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp_dir, ignore_errors=True)


# ----------------------------------------------------------------------------- one campaign


def tiny_manifest(path: Path, cache: Path, results: Path, **extra) -> Path:
    """2 phase-1 runs (+ one whose cache is elsewhere), a gate that always fails with one
    tuning run, 2 distillation runs; 1 epoch each."""
    return write_manifest(
        path,
        name="rt",
        cache_dir=str(cache),
        results_dir=str(results),
        seeds=[1],
        train=FAST,
        phase1=[
            {"model": "tinycnn"},
            {"model": "crnn"},
            {
                "model": "tinycnn",
                "label": "elsewhere",
                "overrides": {"cache_dir": str(path.parent / "not-mounted")},
            },
        ],  # fmt: skip
        teacher={"model": "crnn"},
        gate={"min_margin": 1.0, "tuning_grid": {"lr": [0.003]}},
        phase2={"students": [{"model": "tinycnn"}], "alpha": [0.5, 0.9], "tau": [2]},
        **extra,
    )


RAISES = "rt-p2_tinycnn_kd_a0.9_t2_s1"  # raises at every attempt
KILLED = "rt-p1_tinycnn_s1"  # its worker is killed once, after its first epoch
ELSEWHERE = "rt-p1_elsewhere_s1"  # its cache folder does not exist on any node


@pytest.fixture(scope="module")
def campaigns(cluster, tone_cache, tmp_path_factory):
    """The same manifest with the local executor (in-process) and on the Ray cluster through
    the CLI, the latter with one run that always raises and one worker killed mid-run."""
    root = tmp_path_factory.mktemp("raycampaign")
    local = run_campaign(
        tiny_manifest(root / "local.json", tone_cache, root / "local"), progress=False
    )
    marker = root / "killed.marker"
    cluster["faults"].write_text(
        json.dumps({"raise": {RAISES: "train.metrics_written"}, "kill_once": {KILLED: str(marker)}})
    )
    manifest = tiny_manifest(root / "ray.json", tone_cache, root / "ray")
    t0 = time.perf_counter()
    try:
        proc = cli(
            "campaign", "--manifest", str(manifest), "--executor", "ray",
            "--address", cluster["address"], "--retries", "1", env=cluster["env"],
        )  # fmt: skip
    finally:
        cluster["faults"].write_text("{}")
    return {
        "local": local.campaign_dir,
        "ray": root / "ray" / "campaigns" / "rt",
        "proc": proc,
        "marker": marker,
        "seconds": time.perf_counter() - t0,
    }


def test_ray_metrics_equal_local_and_runs_use_both_nodes(campaigns):
    proc = campaigns["proc"]
    local, remote = read_status(campaigns["local"]), read_status(campaigns["ray"])
    assert set(local) == set(remote)
    compared = 0
    for name, row in remote.items():
        if row["state"] == "complete":
            assert local[name]["state"] == "complete", name
            assert scores(Path(row["run_dir"])) == scores(Path(local[name]["run_dir"])), name
            compared += 1
    assert compared == 4, remote  # 2 phase 1, 1 tuning, 1 distillation
    gate_local = json.loads((campaigns["local"] / "gate.json").read_text())["seeds"]["1"]
    gate_ray = json.loads((campaigns["ray"] / "gate.json").read_text())["seeds"]["1"]
    assert gate_ray["chosen_teacher_run"] == gate_local["chosen_teacher_run"]
    assert gate_ray["margin"] == gate_local["margin"]
    # every attempt's node is in the notes: the first two phase-1 runs start together, one per
    # 1-CPU node, so both nodes must appear
    nodes = {n for r in remote.values() for n in re.findall(r"/([0-9a-f]{8}) pid", r["note"])}
    assert len(nodes) == 2, [r["note"] for r in remote.values()]
    assert "sum of run times" in proc.stdout and "wall time" in proc.stdout


def test_raising_run_is_retried_then_failed_and_the_command_says_so(campaigns):
    proc, remote = campaigns["proc"], read_status(campaigns["ray"])
    row = remote[RAISES]
    assert row["state"] == "failed"
    assert "injected failure" in row["error"] and "(2 attempts)" in row["error"], row
    assert "attempt 2/2" in row["note"], row
    assert "Traceback" in (campaigns["ray"] / "errors" / f"{RAISES}.txt").read_text()
    assert art.run_status(Path(row["run_dir"])) == "failed"
    assert proc.returncode == 1, proc.stderr
    assert "2 run(s) failed" in proc.stderr and RAISES in proc.stderr
    # the leaderboard has every complete run once, and no failed run
    board = read_leaderboard(Path(row["run_dir"]).parents[1] / "leaderboard.csv")
    names = [r["run_name"] for r in board]
    assert sorted(names) == sorted(n for n, r in remote.items() if r["state"] == "complete")


def test_killed_worker_is_recovered_with_the_same_result(campaigns):
    remote, local = read_status(campaigns["ray"]), read_status(campaigns["local"])
    assert campaigns["marker"].is_file()  # the worker really was killed
    row = remote[KILLED]
    assert row["state"] == "complete", row
    assert "attempt 2/2" in row["note"] and "died" in row["note"].lower(), row["note"]
    assert scores(Path(row["run_dir"])) == scores(Path(local[KILLED]["run_dir"]))


def test_node_without_the_cache_fails_the_run_naming_path_and_node(campaigns):
    row = read_status(campaigns["ray"])[ELSEWHERE]
    assert row["state"] == "failed"
    assert "StorageError" in row["error"] and "not-mounted" in row["error"]
    assert f"not visible on node {socket.gethostname()}/" in row["error"], row["error"]


def test_resume_after_the_driver_is_killed_skips_complete_runs(cluster, tone_cache, tmp_path):
    manifest = write_manifest(
        tmp_path / "k.json", name="rk", cache_dir=str(tone_cache),
        results_dir=str(tmp_path / "results"), seeds=[1], train=FAST,
        phase1=[{"model": "tinycnn"}, {"model": "crnn"}],
        teacher={"model": "crnn"},
        phase2={"students": [{"model": "tinycnn"}], "alpha": [0.5], "tau": [2]},
    )  # fmt: skip
    cdir = tmp_path / "results" / "campaigns" / "rk"
    args = ["campaign", "--manifest", str(manifest), "--executor", "ray",
            "--address", cluster["address"]]  # fmt: skip
    code = "import sys; from sleepsound.cli import app; app(sys.argv[1:], prog_name='sleepsound')"
    driver = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env=cluster["env"],
    )  # fmt: skip
    deadline = time.monotonic() + CAMPAIGN_TIMEOUT_S
    complete: dict[str, dict] = {}
    while time.monotonic() < deadline and driver.poll() is None:
        if (cdir / "status.csv").is_file():
            status = read_status(cdir)
            complete = {n: r for n, r in status.items() if r["state"] == "complete"}
            if complete:
                break
        time.sleep(0.2)
    assert driver.poll() is None, "the campaign ended before any run completed and was killed"
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    mtimes = {
        n: (Path(r["run_dir"]) / art.METRICS_FILE).stat().st_mtime_ns for n, r in complete.items()
    }
    time.sleep(2)  # the cluster kills the dead driver's workers

    proc = cli(*args, "--resume", env=cluster["env"])
    assert proc.returncode == 0, proc.stderr
    status = read_status(cdir)
    assert all(r["state"] == "complete" for r in status.values()), status
    for name in complete:
        assert "already complete: reused" in status[name]["note"], status[name]
        path = Path(status[name]["run_dir"]) / art.METRICS_FILE
        assert path.stat().st_mtime_ns == mtimes[name]
    board = [r["run_name"] for r in read_leaderboard(tmp_path / "results" / "leaderboard.csv")]
    assert sorted(board) == sorted(status)  # every run once, none lost, none twice
