"""kill -9 at random points of ``preprocess``, then the same command: the cache equals an
uninterrupted run's, nothing partial passes for complete, nothing is left behind (issue 13).

Trials kill a real ``sleepsound preprocess`` process group with SIGKILL a random time after it
began work (seeded, within an uninterrupted run's work time) or, via ``tests/crashrun.py``, at a
random milestone (a chunk written; a split's file closed but not yet renamed into place).
"""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

import crashrun
import h5py
import numpy as np
import pytest
from conftest import write_dataset
from test_cache import write_bad_files

from sleepsound.features.cache import verify_cache

SPLITS = ("train", "test")
DELAY_TRIALS = 2
LOCK = ".preprocess.lock"
MILESTONES = (("cache.chunk_written", 4), ("cache.split_finished", 2))


def _args(data: Path, cache: Path) -> list[str]:
    return ["preprocess", "--data", str(data), "--cache-dir", str(cache),
            "--splits", ",".join(SPLITS), "--workers", "1"]  # fmt: skip


def _content(cache: Path, split: str) -> dict:
    with h5py.File(cache / f"{split}.h5") as h5:
        out = {name: h5[name][:] for name in ("spectrograms", "labels", "n_frames", "checksums")}
        out["paths"] = list(h5["paths"].asstr()[:])
        out["checksum"] = h5.attrs["checksum"]
        out["n_invalid"] = int(h5.attrs["n_invalid"])
    out["invalid.csv"] = (cache / f"{split}.invalid.csv").read_text()
    return out


def _same(a: dict, b: dict) -> bool:
    return all(
        np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k] for k in a
    )


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if "partial" in p.name or p.name.endswith(".tmp"))


def _start(args: list[str], cache: Path) -> tuple[subprocess.Popen, float]:
    """Start the command; returns it and the seconds until it began work on the cache (its
    lock file appeared: imports are done)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        crashrun.command("never", 1, *args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    while not (cache / LOCK).exists() and proc.poll() is None:
        time.sleep(0.02)
    return proc, time.perf_counter() - t0


def _kill_after(args: list[str], cache: Path, delay: float) -> int:
    """SIGKILL the command's process group ``delay`` s after it began work."""
    proc, _ = _start(args, cache)
    return crashrun.kill_group_after(proc, delay)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("killpre")
    data = write_dataset(root / "data", per_class=40, splits=("train",))  # 120 clips
    write_dataset(root / "data", per_class=20, splits=("test",), seed=1)
    write_bad_files(data / "train" / "breathe")  # invalid rows to list
    ref = root / "reference"
    t0 = time.perf_counter()
    proc, startup = _start(_args(data, ref), ref)
    _, err = proc.communicate()
    assert proc.returncode == 0, err
    work = time.perf_counter() - t0 - startup
    return {"root": root, "data": data, "work": work, "ref": {s: _content(ref, s) for s in SPLITS}}


def _trials() -> list[tuple[str, object]]:
    rng = random.Random("sleepsound-kill-preprocess")
    trials: list[tuple[str, object]] = [(name, rng.randint(1, most)) for name, most in MILESTONES]
    trials += [("delay", rng.uniform(0.0, 1.0)) for _ in range(DELAY_TRIALS)]
    return trials


@pytest.mark.parametrize("trial", range(len(_trials())))
def test_kill_then_rerun_gives_the_uninterrupted_cache(trial, world):
    kind, value = _trials()[trial]
    cache = world["root"] / f"trial{trial}"
    args = _args(world["data"], cache)
    if kind == "delay":
        _kill_after(args, cache, value * world["work"])
    else:
        proc = subprocess.run(crashrun.command(kind, value, *args), capture_output=True)
        assert proc.returncode == 137, f"{kind} #{value} never reached"
    # right after the kill: a cache under its final name is whole and right
    for split in SPLITS:
        if (cache / f"{split}.h5").exists():
            assert verify_cache(cache / f"{split}.h5")
            assert _same(_content(cache, split), world["ref"][split]), split
    proc = subprocess.run(crashrun.command("never", 1, *args), capture_output=True, text=True)
    assert proc.returncode == 0, f"{kind} {value}: {proc.stderr}"
    assert "Traceback" not in proc.stderr
    for split in SPLITS:
        assert verify_cache(cache / f"{split}.h5")
        assert _same(_content(cache, split), world["ref"][split]), split
    assert not _leftovers(cache), _leftovers(cache)
