"""Training-loop speed of this checkout against an earlier revision, side by side in one run.

Each measurement is one real ``train_run`` (the demo policy: TinyCNN and CRNN, batch 64, a few
epochs) in a fresh subprocess, alternating between the two trees so machine load hits both
alike. Reported per model: median epoch samples/s (wall clock, as the run logs it) and samples
per CPU-second of the process (robust when other work shares the cores), and the test
macro-F1 of each tree (a data-path change may change the batches, hence the metrics).

    python benchmarks/train_speed.py --cache-dir results/cache/spectrograms --against 263c77f
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import csv, json, resource, sys, time
from sleepsound.config import TrainConfig
from sleepsound.training.train import train_run
model, batch, epochs, cache, out = sys.argv[1:6]
cfg = TrainConfig(cache_dir=cache, results_dir=out, model=model, epochs=int(epochs),
                  batch_size=int(batch), patience=100, run_name="speed")
run = train_run(cfg, progress=False)
rows = list(csv.DictReader(open(run / "epochs.csv")))
metrics = json.loads((run / "metrics.json").read_text())
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"rates": [float(r["samples_per_s"]) for r in rows],
                  "train_s": sum(float(r["seconds"]) for r in rows),
                  "samples": metrics["train_samples_per_s"] * metrics["train_seconds"],
                  "cpu_s": usage.ru_utime + usage.ru_stime,
                  "test_f1": metrics["test"]["macro_f1"]}))
"""


def measure(src: Path, model: str, args, out: Path) -> dict:
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-c", CHILD, model, str(args.batch_size), str(args.epochs)]
    cmd += [str(args.cache_dir), str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"error: run in {src} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default="results/cache/spectrograms", type=Path)
    parser.add_argument("--against", default="263c77f", help="git revision to compare with")
    parser.add_argument("--models", default="tinycnn,crnn")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    args.cache_dir = args.cache_dir.resolve()
    with tempfile.TemporaryDirectory(prefix="sleepsound-speed-") as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-f", "--detach", str(old),
                        args.against], check=True, capture_output=True)  # fmt: skip
        try:
            trees = {"this checkout": REPO / "src", f"rev {args.against}": old / "src"}
            results = {(m, t): [] for m in args.models.split(",") for t in trees}
            for k in range(args.repeats):
                for model in args.models.split(","):
                    for label, src in trees.items():  # alternate: load hits both alike
                        out = Path(tmp) / f"{model}-{k}-{label.replace(' ', '_')}"
                        results[model, label].append(measure(src, model, args, out))
                        r = results[model, label][-1]
                        print(f"  {model:8s} {label:16s} epochs {[round(x) for x in r['rates']]}"
                              f" samples/s, {r['samples'] / r['cpu_s']:.0f} samples/CPU-s",
                              flush=True)  # fmt: skip
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)],
                           check=False, capture_output=True)  # fmt: skip
    print(f"\ncache {args.cache_dir}, batch {args.batch_size}, {args.epochs} epochs x "
          f"{args.repeats} runs per tree\n")  # fmt: skip
    print(f"{'model':8s} {'tree':16s} {'samples/s':>10s} {'samples/CPU-s':>14s} {'test F1':>8s}")
    for model in args.models.split(","):
        figures = []
        for label in trees:
            rs = results[model, label]
            wall = statistics.median(x for r in rs for x in r["rates"])
            cpu = statistics.median(r["samples"] / r["cpu_s"] for r in rs)
            f1 = statistics.mean(r["test_f1"] for r in rs)
            figures.append((wall, cpu))
            print(f"{model:8s} {label:16s} {wall:10.0f} {cpu:14.0f} {f1:8.3f}")
        (w_new, c_new), (w_old, c_old) = figures
        print(f"{model:8s} speed-up of this checkout: {w_new / w_old:.2f}x samples/s, "
              f"{c_new / c_old:.2f}x samples/CPU-s")  # fmt: skip


if __name__ == "__main__":
    main()
