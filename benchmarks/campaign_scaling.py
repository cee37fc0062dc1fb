"""Campaign wall time: local executor vs a local worker pool vs Ray with 1 and 2 run slots, side
by side, in one run;
then a PROJECTION of the reference campaign (experiments/reference.json) on 1, 4 and 8 GPUs.

    python benchmarks/campaign_scaling.py --cache-dir results/cache/spectrograms
    python benchmarks/campaign_scaling.py --epochs 1 --clips 600     # short: builds its own cache

Measured part: the demo manifest (``--manifest``, optionally with fewer epochs / seeds) runs
three times into fresh results folders under ``--out``:

  local     one run after another in this process (torch uses every core),
  pool x2   the local executor with ``workers`` = CPUs: as many one-thread runs at once,
  ray x1    a local Ray instance, each run asking for all CPUs: one run at a time,
  ray x2    the same instance, each run asking for half the CPUs: two runs at a time
            (``--no-ray`` leaves both out).

The manifest's ``threads`` and ``executor`` are dropped: each variant sets its own.

For each: wall time, the sum of the run times, and whether every run's validation and test
metrics equal the local executor's (thread counts differ between the variants, so small
floating-point differences are possible; the tests check equality at equal thread counts).

Projected part: NO GPU WAS MEASURED. The per-epoch time of each model family measured above
(TinyCNN, CRNN, TinyCNN-CBAM, their distillation runs) gives each reference run's share of the
work; the shares are scaled so that the 29 reference runs one after another take the reported
64 h on one laptop GPU. Runs are then placed on k GPUs, one run per GPU, phase by phase (the
gate waits for phase 1), longest first. It assumes runs on separate GPUs do not slow each other
(shared storage and data loading can), and the same early-stopping epoch counts for all runs.
"""

from __future__ import annotations

import argparse
import csv
import heapq
import json
import os
import shutil
import sys
import time
from pathlib import Path

from sleepsound import runs
from sleepsound.campaign import load_manifest, plan, run_campaign
from sleepsound.config import DEFAULT_CACHE_DIR, PreprocessConfig

REPO = Path(__file__).resolve().parents[1]
REFERENCE_HOURS_ONE_GPU = 64.0  # the reference campaign, 29 runs one after another (issue 10)
GPU_COUNTS = (1, 4, 8)


def build_cache(out: Path, clips: int) -> Path:
    """A synthetic cache of ``clips`` clips under ``out`` (reused when already there)."""
    from sleepsound.data import synth
    from sleepsound.features.cache import preprocess

    cache = out / "cache"
    if (cache / "test.h5").is_file():
        return cache
    synth.generate_dataset(out / "data", n_clips=clips, seed=0)
    preprocess(PreprocessConfig(data_dir=out / "data", cache_dir=cache, workers=os.cpu_count()))
    return cache


def bench_manifest(
    src: Path, out: Path, epochs: int | None, seeds: int | None, reference: Path
) -> Path:
    """The manifest with fewer epochs / seeds (a copy under ``out``), plus one phase-1 run of
    each reference phase-1 model it lacks (the projection needs every model's epoch time)."""
    data = json.loads(src.read_text())
    have = {run["model"] for run in data["phase1"]}
    for run in json.loads(reference.read_text())["phase1"]:
        if run["model"] not in have:
            data["phase1"].append({"model": run["model"]})
            have.add(run["model"])
    if epochs is not None:
        data.setdefault("train", {})["epochs"] = epochs
    if seeds is not None:
        data["seeds"] = data.get("seeds", [42])[:seeds]
    data.pop("executor", None)
    data.get("train", {}).pop("threads", None)
    path = out / src.name
    path.write_text(json.dumps(data, indent=1))
    return path


def status_rows(campaign_dir: Path) -> list[dict]:
    with open(campaign_dir / "status.csv", newline="") as f:
        return list(csv.DictReader(f))


def scores(run_dir: Path) -> dict:
    metrics = runs.read_metrics(run_dir)
    return {"validation": metrics["validation"], "test": metrics["test"]}


def run_variant(name: str, manifest: Path, cache: Path, out: Path, executor: dict) -> dict:
    results = out / name.replace(" ", "_")
    shutil.rmtree(results, ignore_errors=True)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    result = run_campaign(
        manifest, cache_dir=cache, results_dir=results, executor=executor, progress=False
    )
    wall = time.perf_counter() - t0
    rows = [r for r in status_rows(result.campaign_dir) if r["state"] == "complete"]
    return {
        "name": name,
        "wall": wall,
        "runs_sum": result.run_seconds,
        "complete": len(rows),
        "failed": len(result.failed_runs()),
        "rows": rows,
        "load": (load_before + os.getloadavg()[0]) / 2,  # 1-min load average, start/end mean
    }


# ----------------------------------------------------------------------------- projection


def family(row: dict, config: dict) -> str:
    kd = "_kd" if config.get("teacher_run") else ""
    return f"{config['model']}{kd}"


def per_epoch_seconds(rows: list[dict]) -> dict[str, float]:
    """Median seconds per epoch of each model family (model, plus _kd for distillation)."""
    times: dict[str, list[float]] = {}
    for row in rows:
        run_dir = Path(row["run_dir"])
        config = runs.read_config(run_dir)
        epochs = runs.read_metrics(run_dir).get("epochs_ran") or config["epochs"]
        times.setdefault(family(row, config), []).append(float(row["seconds"]) / float(epochs))
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


def makespan(durations: list[float], slots: int) -> float:
    """Longest-first list scheduling of ``durations`` on ``slots`` identical workers."""
    loads = [0.0] * slots
    for d in sorted(durations, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + d)
    return max(loads)


def fill_in(per_epoch: dict[str, float], needed: set[str]) -> dict[str, str]:
    """Families the reference needs but the demo did not run: a distillation run of a measured
    model is estimated from that model's time and the distillation/plain ratio measured on
    another model. Returns {family: how it was estimated}; SystemExit when impossible."""
    ratios = [per_epoch[k] / per_epoch[k[:-3]] for k in per_epoch
              if k.endswith("_kd") and k[:-3] in per_epoch]  # fmt: skip
    estimated = {}
    for key in sorted(needed - set(per_epoch)):
        base = key.removesuffix("_kd")
        if key.endswith("_kd") and base in per_epoch and ratios:
            ratio = sorted(ratios)[len(ratios) // 2]
            per_epoch[key] = per_epoch[base] * ratio
            estimated[key] = f"{base} x {ratio:.2f} (measured distillation/plain ratio)"
        else:
            raise SystemExit(f"no measured run of {key}: the demo manifest lacks it")
    return estimated


def reference_family(step) -> str:
    return f"{step.config.model}{'_kd' if step.phase == 'phase2' else ''}"


def projection(per_epoch: dict[str, float], reference: Path) -> list[tuple]:
    steps = [s for s in plan(load_manifest(reference)) if s.config is not None]
    for key, how in fill_in(per_epoch, {reference_family(s) for s in steps}).items():
        print(f"estimated, not measured: {key} per epoch = {how}")
    phases: dict[str, list[float]] = {}
    for s in steps:
        phases.setdefault(s.phase, []).append(per_epoch[reference_family(s)] * s.config.epochs)
    always = phases["phase1"] + phases.get("phase2", [])
    scale = REFERENCE_HOURS_ONE_GPU / sum(always)  # hours per measured second
    rows = []
    for k in GPU_COUNTS:
        passed = sum(makespan(phases[p], k) for p in ("phase1", "phase2") if p in phases)
        failed = passed + makespan(phases.get("tuning", [0.0]), k)
        rows.append((k, passed * scale, failed * scale))
    return rows


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, default=REPO / "experiments" / "demo.json")
    ap.add_argument("--reference", type=Path, default=REPO / "experiments" / "reference.json")
    ap.add_argument("--cache-dir", type=Path, default=None, help=f"default {DEFAULT_CACHE_DIR}")
    ap.add_argument("--clips", type=int, default=600, help="build a cache this size if none")
    ap.add_argument("--epochs", type=int, default=None, help="override the manifest's epochs")
    ap.add_argument("--seeds", type=int, default=None, help="use the first N seeds only")
    ap.add_argument("--no-ray", action="store_true", help="measure local and pool only")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "campaign_scaling")
    args = ap.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.cache_dir or DEFAULT_CACHE_DIR
    if not (Path(cache) / "test.h5").is_file():
        print(f"{cache}: no cache; building a synthetic one of {args.clips} clips", flush=True)
        cache = build_cache(args.out, args.clips)
    manifest = bench_manifest(args.manifest, args.out, args.epochs, args.seeds, args.reference)
    cpus = os.cpu_count() or 1
    half = max(cpus // 2, 1)
    variants = [
        ("local", {"kind": "local"}),
        (f"pool x{cpus}", {"kind": "local", "workers": cpus}),
        ("ray x1", {"kind": "ray", "cpus_per_run": cpus, "gpus_per_run": 0}),
        (f"ray x{cpus // half}", {"kind": "ray", "cpus_per_run": half, "gpus_per_run": 0}),
    ]
    if args.no_ray:
        variants = variants[:2]
    measured = []
    for name, executor in variants:
        print(f"--- {name}", flush=True)
        measured.append(run_variant(name, manifest, cache, args.out, executor))

    base = measured[0]
    local_scores = {r["run_name"]: scores(Path(r["run_dir"])) for r in base["rows"]}
    n_runs = len(plan(load_manifest(manifest)))
    print(f"\n{args.manifest.name} ({n_runs} plan steps), cache {cache}, {cpus} CPU cores, no GPU")
    print(f"{'executor':<9} {'wall s':>8} {'sum of runs s':>14} {'speed-up':>9} "
          f"{'complete':>9} {'failed':>7} {'load':>5}  metrics = local")  # fmt: skip
    for m in measured:
        same = sum(local_scores.get(r["run_name"]) == scores(Path(r["run_dir"])) for r in m["rows"])
        print(
            f"{m['name']:<9} {m['wall']:>8.1f} {m['runs_sum']:>14.1f} "
            f"{base['wall'] / m['wall']:>8.2f}x {m['complete']:>9} {m['failed']:>7} "
            f"{m['load']:>5.1f}  "
            f"{same}/{len(m['rows'])}"
        )

    per_epoch = per_epoch_seconds(base["rows"])
    print("\nmeasured seconds per epoch (local executor, CPU): " + ", ".join(
        f"{k} {v:.2f}" for k, v in sorted(per_epoch.items())
    ))  # fmt: skip
    print(
        "\nPROJECTION (not measured: no GPU here) of the reference campaign, one run per GPU, "
        f"scaled to {REFERENCE_HOURS_ONE_GPU:.0f} h for its 29 runs on 1 GPU:"
    )
    print(f"{'GPUs':>5} {'gate passes (29 runs) h':>24} {'gate fails (+18 tuning) h':>26}")
    for k, passed, failed in projection(per_epoch, args.reference):
        print(f"{k:>5} {passed:>24.1f} {failed:>26.1f}")
    print(
        "load: the machine's 1-min load average during the variant; other processes sharing the "
        f"{cpus} cores skew the comparison when it differs between variants"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
