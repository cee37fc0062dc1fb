"""Preprocess memory at scale: peak RSS of ``sleepsound preprocess`` at 2,000 and 20,000 files.

Writes N tiny synthetic WAVs (0.3 s, mono, 16-bit; written fast with the standard library) in
the DreamCatcher layout (one ``train`` split, three labels), runs the real command in a
subprocess and samples the resident memory of it and its workers every 50 ms. Memory must stay
bounded in the number of clips beyond per-clip metadata (a few hundred bytes a clip): features
are written chunk by chunk, and at most a few chunks are in flight.

    nice python benchmarks/preprocess_memory.py [--sizes 2000,20000] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import psutil

LABELS = ("quiet", "breathe", "snore")
SECONDS = 0.3
RATE = 16_000
POLL_S = 0.05
CLI = "from sleepsound.cli import app; app(prog_name='sleepsound')"  # the `sleepsound` command


def write_wavs(root: Path, n: int, seed: int = 0) -> None:
    """``n`` short noise WAVs under ``root/train/{label}/`` (a few distinct contents, so the
    files are cheap to write but not all the same bytes)."""
    rng = np.random.default_rng(seed)
    frames = [
        (rng.normal(0, 0.1, int(SECONDS * RATE)) * 32767).clip(-32768, 32767).astype("<i2")
        for _ in range(16)
    ]
    for label in LABELS:
        (root / "train" / label).mkdir(parents=True, exist_ok=True)
    for k in range(n):
        path = root / "train" / LABELS[k % 3] / f"clip_{k:06d}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(frames[k % 16].tobytes() + k.to_bytes(4, "little"))


def peak_rss(cmd: list[str]) -> tuple[float, float, float]:
    """Run ``cmd``; returns (seconds, peak RSS of the main process, peak summed RSS of it and
    its children), in bytes."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    main = psutil.Process(proc.pid)
    peak_main = peak_tree = 0
    while proc.poll() is None:
        try:
            rss = main.memory_info().rss
            kids = sum(c.memory_info().rss for c in main.children(recursive=True))
        except psutil.Error:
            continue
        peak_main, peak_tree = max(peak_main, rss), max(peak_tree, rss + kids)
        time.sleep(POLL_S)
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode != 0:
        sys.exit(f"preprocess failed ({proc.returncode}):\n{err[-2000:]}")
    return time.perf_counter() - t0, peak_main, peak_tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,20000", help="Comma list of file counts.")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="sleepsound-mem-") as tmp:
            tmp = Path(tmp)
            t0 = time.perf_counter()
            write_wavs(tmp / "data", n)
            t_write = time.perf_counter() - t0
            cmd = [sys.executable, "-c", CLI, "preprocess", "--data", str(tmp / "data"),
                   "--cache-dir", str(tmp / "cache"), "--splits", "train",
                   "--workers", str(args.workers)]  # fmt: skip
            seconds, main_peak, tree_peak = peak_rss(cmd)
            size = (tmp / "cache" / "train.h5").stat().st_size
        rows.append((n, seconds, main_peak, tree_peak))
        print(
            f"{n:>6} files (written in {t_write:.1f} s): preprocess {seconds:6.1f} s "
            f"({n / seconds:5.0f} clips/s), peak RSS main {main_peak / 2**20:6.0f} MiB, "
            f"main + {args.workers} workers {tree_peak / 2**20:6.0f} MiB, "
            f"cache {size / 2**20:.0f} MiB",
            flush=True,
        )
    if len(rows) > 1:
        (n0, _, m0, t0_), (n1, _, m1, t1) = rows[0], rows[-1]
        print(
            f"growth {n0} -> {n1} files: main {(m1 - m0) / 2**20:+.0f} MiB "
            f"({(m1 - m0) / (n1 - n0):.0f} bytes/file), "
            f"with workers {(t1 - t0_) / 2**20:+.0f} MiB"
        )


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
