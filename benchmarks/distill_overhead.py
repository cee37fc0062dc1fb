"""Distillation epoch time vs plain student epoch time on the same cache (target <= 1.15x).

Trains the teacher (CRNN) briefly if no teacher run is given, then the same student twice in
one process: plain and distilled (teacher logits computed once, before the first epoch, and
reported separately). Epoch times are training time only (epochs.csv 'seconds').

    python benchmarks/distill_overhead.py --cache-dir results/cache/spectrograms [--epochs 3]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

from sleepsound.config import DEFAULT_CACHE_DIR, TrainConfig
from sleepsound.training.train import train_run


def epoch_seconds(run: Path) -> list[float]:
    with open(run / "epochs.csv") as f:
        return [float(r["seconds"]) for r in csv.DictReader(f)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR))
    parser.add_argument("--teacher-run", default=None)
    parser.add_argument("--student", default="tinycnn")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        common = dict(
            cache_dir=args.cache_dir, results_dir=tmp, epochs=args.epochs, patience=args.epochs
        )
        teacher = args.teacher_run or train_run(
            TrainConfig(model="crnn", **{**common, "epochs": 1}), progress=False
        )
        plain = train_run(TrainConfig(model=args.student, **common), progress=False)
        t0 = time.perf_counter()
        kd = train_run(
            TrainConfig(model=args.student, teacher_run=teacher, alpha=0.6, tau=4.0, **common),
            progress=False,
        )
        kd_total = time.perf_counter() - t0
        e_plain, e_kd = epoch_seconds(plain), epoch_seconds(kd)
        logits = next((Path(tmp) / "cache" / "teacher_logits").glob("*.npy"))
    mean_plain, mean_kd = sum(e_plain) / len(e_plain), sum(e_kd) / len(e_kd)
    print(f"\nstudent {args.student}, {args.epochs} epochs each, cache {args.cache_dir}")
    print(f"plain epoch     : {mean_plain:7.2f} s  ({', '.join(f'{s:.2f}' for s in e_plain)})")
    print(f"distilled epoch : {mean_kd:7.2f} s  ({', '.join(f'{s:.2f}' for s in e_kd)})")
    print(f"ratio           : {mean_kd / mean_plain:7.3f}x   (target <= 1.15x)")
    print(f"teacher logits  : computed once ({logits.name}); KD run total {kd_total:.1f} s")


if __name__ == "__main__":
    main()
