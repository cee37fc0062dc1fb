"""DreamCatcher scale: the training data path on 250,050 / 63,056 / 67,256 clips (issue 9).

Writes DreamCatcher-size caches in the reference tool's layout (label-sorted, the real class mix
54/36/10 % quiet/breathe/snore, clip lengths mostly 0.5-3 s), then, for each training size and
with and without ``--memory-limit 1GB``, each in a FRESH subprocess (so peak RSS figures do not
contaminate each other): cache size on disk, first open (compact store build) and reuse,
preparing the split, peak RSS, TinyCNN and CRNN training samples/s, inference samples/s, a
projected full-epoch time, and the class mix of batch windows against the split's. Ends with
the targets (PASS/FAIL) and a CPU projection of the 29-run reference campaign (unmeasured).

    nice -n 10 python benchmarks/scale.py [--sizes 10000,50000,250050] [--out DIR] [--quick]

Rows are synthetic (``texture_rows``: class-dependent texture, real dB range and padding floor):
these are figures about the data path and model cost, never DreamCatcher results. To write
~380,000 rows quickly, a pool of rows is written once with ``write_reference_cache`` and each
cache row is a raw copy of a compressed pool chunk (same dataset layout, filters and
attributes as the writer's output). Caches and stores are deleted at the end (``--keep``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
from rich.console import Console
from rich.table import Table

from sleepsound.data.fetch import DREAMCATCHER_REVISION
from sleepsound.features.logmel import N_FRAMES
from sleepsound.features.reference import REFERENCE_CLASSES, texture_rows, write_reference_cache
from sleepsound.progress import progress_bar

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path("/tmp/sleepsound-scale")
DREAMCATCHER = {"train": 250_050, "validation": 63_056, "test": 67_256}  # the reference's log
# Class shares of the real 3-class test split (36,212 / 24,403 / 6,641 clips).
CLASS_SHARES = np.array([36_212, 24_403, 6_641]) / 67_256
LENGTH_MEDIAN = 120  # content frames (1.2 s at 10 ms hop); log-normal around it
LENGTH_SIGMA = 0.5  # 95 % of clips within 0.45-3.3 s
LENGTH_RANGE = (20, N_FRAMES)
ONE_GB = 10**9
WINDOW = 16  # batches per class-mix window
RSS_TARGET = 6 * 10**9  # bytes, training on 250k rows
FLAT_TARGET = 0.10  # samples/s at the largest size within 10 % of the smallest
MODELS = ("tinycnn", "crnn")
CBAM = ("tinycnn_cbam", {"r": 8, "k": 3})
EVAL_BATCH = 256
# The reference campaign (experiments/reference.json): runs per model, and the epochs its
# published runs took (CRNN 15, TinyCNN 8); CBAM and KD runs: ASSUMED 15 (not published).
CAMPAIGN = [  # (label, model used for the rate, runs, reference epochs)
    ("phase 1: TinyCNN", "tinycnn", 1, 8),
    ("phase 1: CRNN (teacher)", "crnn", 1, 15),
    ("phase 1: TinyCNN_CBAM x9", "tinycnn_cbam", 9, 15),
    ("KD: TinyCNN students x9", "tinycnn", 9, 15),
    ("KD: TinyCNN_CBAM students x9", "tinycnn_cbam", 9, 15),
]
TUNING = ("gate failed: CRNN tuning grid x18", "crnn", 18, 15)
MAX_EPOCHS = 50

console = Console(record=True, width=120)


# ----------------------------------------------------------------------------- the caches


def split_labels(n: int) -> np.ndarray:
    """Label-sorted labels of an n-row split with the real class mix (folder order)."""
    counts = np.floor(n * CLASS_SHARES).astype(int)
    counts[0] += n - counts.sum()
    return np.repeat(np.arange(len(counts)), counts)


def clip_lengths(n: int, rng: np.random.Generator) -> np.ndarray:
    """Content frames per clip: log-normal, median 1.2 s, mostly 0.5-3 s, independent of class."""
    x = np.exp(rng.normal(np.log(LENGTH_MEDIAN), LENGTH_SIGMA, n))
    return np.clip(np.rint(x), *LENGTH_RANGE).astype(int)


def write_pool(path: Path, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """A small cache written by ``write_reference_cache`` (``per_class`` rows of each class,
    the same lengths in every class); returns its labels."""
    labels = np.repeat(np.arange(len(REFERENCE_CLASSES)), per_class)
    # every class gets the same lengths: length independent of class (no bucket/class coupling)
    lengths = np.tile(clip_lengths(per_class, rng), len(REFERENCE_CLASSES))
    block = 250

    def blocks():
        for s in range(0, len(labels), block):
            yield (
                texture_rows(labels[s : s + block], lengths[s : s + block], rng),
                labels[s : s + block],
            )

    write_reference_cache(path, blocks(), len(labels), "pool", dataset_commit=DREAMCATCHER_REVISION)
    return labels


def clone_rows(pool: Path, path: Path, n: int, split: str, rng: np.random.Generator) -> None:
    """An n-row label-sorted cache whose rows are raw copies of random pool rows of the same
    class: the pool's dataset layout, filters and attributes; written to a temporary name and
    renamed when complete."""
    labels = split_labels(n)
    with h5py.File(pool, "r") as src:
        spec = src["spectrograms"]
        pool_labels = src["labels"][:]
        chunks = [spec.id.read_direct_chunk((i, 0, 0)) for i in range(spec.shape[0])]
        attrs = dict(src.attrs)
        layout = {
            "dtype": spec.dtype,
            "chunks": spec.chunks,
            "compression": spec.compression,
            "compression_opts": spec.compression_opts,
        }
        label_dtype = src["labels"].dtype
    by_class = [np.flatnonzero(pool_labels == k) for k in range(len(REFERENCE_CLASSES))]
    pick = np.empty(n, dtype=np.int64)
    for k, rows in enumerate(by_class):
        mask = labels == k
        pick[mask] = rng.choice(rows, size=int(mask.sum()))
    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as h5:
        out = h5.create_dataset("spectrograms", (n, *spec.shape[1:]), **layout)
        h5.create_dataset("labels", data=labels.astype(label_dtype))
        with progress_bar(f"write {path.name}", n, unit="rows") as advance:
            for i, j in enumerate(pick):
                mask, data = chunks[j]
                out.id.write_direct_chunk((i, 0, 0), data, mask)
                if i % 4096 == 4095:
                    advance(4096)
            advance(n % 4096)
        h5.attrs.update({**attrs, "n_samples": n, "next_index": n, "split": split})
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- measuring (child)


def peak_rss() -> int:
    """Peak resident set of this process, bytes (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_now() -> dict:
    """Current anonymous / file-backed resident memory, bytes (Linux /proc)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def mix_stats(plan: list[np.ndarray], labels: np.ndarray, window: int = WINDOW) -> dict:
    """Class mix of batch windows vs the split: max |window share - split share| over every
    window of ``window`` consecutive batches and every class; single-class batches and windows,
    with what chance gives (each batch a random draw of its size from the split)."""
    k = int(labels.max()) + 1
    share = np.bincount(labels, minlength=k) / len(labels)
    counts = np.stack([np.bincount(labels[rows], minlength=k) for rows in plan])  # [B, K]
    sizes = counts.sum(axis=1)
    cum = np.vstack([np.zeros(k), np.cumsum(counts, axis=0)])
    win = cum[window:] - cum[:-window] if len(plan) >= window else cum[-1:] - cum[:1]
    dev = np.abs(win / win.sum(axis=1, keepdims=True) - share)
    single = (counts > 0).sum(axis=1) == 1
    p_single = (share[None, :] ** sizes[:, None]).sum(axis=1)  # with-replacement approx.
    return {
        "batches": len(plan),
        "max_window_dev": float(dev.max()),
        "single_class_batches": int(single.sum()),
        "single_class_expected": float(p_single.sum()),
        "single_class_sd": float(np.sqrt((p_single * (1 - p_single)).sum())),
        "single_class_windows": int(((win > 0).sum(axis=1) == 1).sum()),
        "full_batches": int((sizes == sizes.max()).sum()),
    }


def chance_dev(plan: list[np.ndarray], labels: np.ndarray, rng, repeats: int = 20) -> float:
    """95th percentile of the max window deviation when batches of the plan's sizes are filled
    from a random permutation of the labels (what chance gives)."""
    sizes = np.cumsum([0] + [len(r) for r in plan])
    same_sizes = [np.arange(sizes[i], sizes[i + 1]) for i in range(len(plan))]
    devs = [mix_stats(same_sizes, rng.permutation(labels)) for _ in range(repeats)]
    return float(np.percentile([d["max_window_dev"] for d in devs], 95))


def child_build(job: dict) -> dict:
    """First open: builds the compact store of the cache (fresh process)."""
    from sleepsound.training.data import SplitData

    t0, c0 = time.perf_counter(), time.process_time()
    split = SplitData(
        job["path"], memory_limit=job["limit"], store_root=job["stores"], progress=True
    )
    seconds = time.perf_counter() - t0
    meta = split.store.meta
    return {
        "seconds": seconds,
        "cpu_s": time.process_time() - c0,
        "peak_rss": peak_rss(),
        "store_bytes": sum(f.stat().st_size for f in split.store.path.iterdir()),
        "frames_bytes": split.store.nbytes,
        "total_frames": meta["total_frames"],
        "dtype": meta["dtype"],
        "prepared_bytes": split.prepared_bytes(),
        "loadavg": os.getloadavg()[0],
    }


def timed_training(split, spec, model_name: str, kwargs: dict, job: dict) -> dict:
    """Training samples/s over ``job['batches']`` batches after ``job['warmup']``, as the loop in
    ``train.py`` (Adam, class-weighted CE); data time counted apart."""
    import torch
    import torch.nn.functional as F

    from sleepsound.config import TrainConfig
    from sleepsound.models import create_model
    from sleepsound.taxonomy import default_class_weights

    cfg = TrainConfig()
    torch.manual_seed(0)
    model = create_model(model_name, len(split.classes), **kwargs)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    weight = torch.tensor(default_class_weights(split.classes), dtype=torch.float32)
    model.train()
    it = split.batches(cfg.batch_size, spec, np.random.default_rng([job["seed"], 1]))
    lengths = spec.lengths(split.n_frames)
    samples = frames = 0
    data_s = 0.0
    t0 = c0 = None
    for k in range(job["warmup"] + job["batches"]):
        if k == job["warmup"]:
            t0, c0, samples, frames, data_s = time.perf_counter(), time.process_time(), 0, 0, 0.0
        td = time.perf_counter()
        batch = next(it)
        data_s += time.perf_counter() - td
        if not np.array_equal(batch.y.numpy(), split.labels[batch.index]):
            raise AssertionError("batch labels differ from the split's labels")
        loss = F.cross_entropy(model(batch.x), batch.y, weight=weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        samples += len(batch.index)
        frames += int(lengths[batch.index].sum())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "samples_per_s": samples / wall,
        "frames_per_s": frames / wall,
        "samples_per_cpu_s": samples / cpu,
        "frames_per_cpu_s": frames / cpu,
        "data_share": data_s / wall,
        "mean_frames": frames / samples,
    }


def timed_inference(split, spec, model_name: str, kwargs: dict, job: dict) -> dict:
    """Inference (evaluation) frames/s at batch EVAL_BATCH over random length-grouped batches."""
    import torch

    from sleepsound.models import create_model

    model = create_model(model_name, len(split.classes), **kwargs).eval()
    lengths = spec.lengths(split.n_frames)
    it = split.batches(EVAL_BATCH, spec, np.random.default_rng([job["seed"], 2]))
    frames, t0, c0 = 0, None, None
    with torch.inference_mode():
        for k in range(1 + job["eval_batches"]):
            if k == 1:
                t0, c0, frames = time.perf_counter(), time.process_time(), 0
            batch = next(it)
            model(batch.x)
            frames += int(lengths[batch.index].sum())
    return {
        "frames_per_s": frames / (time.perf_counter() - t0),
        "frames_per_cpu_s": frames / (time.process_time() - c0),
    }


def child_train(job: dict) -> dict:
    """Reuse open, prepare, train/infer timing, class mix (fresh process)."""
    import torch

    from sleepsound.training.data import SplitData, batch_plan

    t0 = time.perf_counter()
    split = SplitData(job["path"], memory_limit=job["limit"], store_root=job["stores"])
    open_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    spec = split.fit_spec()
    mode = split.hold(spec)
    hold_s = time.perf_counter() - t0
    lengths = spec.lengths(split.n_frames)
    out = {
        "open_s": open_s,
        "hold_s": hold_s,
        "mode": mode,
        "store_mapped": isinstance(split.store.frames, np.memmap),
        "memory_limit": split.memory_limit,
        "threads": torch.get_num_threads(),
        "epoch_frames": int(lengths.sum()),
        "n": len(split),
        "train": {},
        "infer": {},
    }
    models = [(m, {}) for m in MODELS] + ([CBAM] if job["cbam"] else [])
    for name, kwargs in models:
        out["train"][name] = timed_training(split, spec, name, kwargs, job)
        out["infer"][name] = timed_inference(split, spec, name, kwargs, job)
    rng = np.random.default_rng([job["seed"], 1])  # epoch 1's plan: what batches() iterated
    plan = batch_plan(lengths, 64, rng)
    out["mix"] = mix_stats(plan, split.labels)
    out["mix"]["chance_dev95"] = chance_dev(plan, split.labels, np.random.default_rng(7))
    stored = [np.arange(s, min(s + 64, len(split))) for s in range(0, len(split), 64)]
    out["mix_storage_order"] = mix_stats(stored, split.labels)
    out["peak_rss"] = peak_rss()
    out["rss_end"] = rss_now()
    out["loadavg"] = os.getloadavg()[0]
    return out


def child_interleave(job: dict) -> dict:
    """Cost per clip, small vs large split, in ONE process: rounds of ``job['batches']``
    training batches alternate between the splits (order flipped each round), so load on the
    machine hits both alike. Round 0 is warm-up. Returns frames/s per split and the large/small
    ratio per round (its spread is the noise)."""
    import torch
    import torch.nn.functional as F

    from sleepsound.config import TrainConfig
    from sleepsound.models import create_model
    from sleepsound.taxonomy import default_class_weights
    from sleepsound.training.data import SplitData

    cfg = TrainConfig()
    splits = [
        SplitData(p, memory_limit=job["limit"], store_root=job["stores"]) for p in job["paths"]
    ]
    specs = [s.fit_spec() for s in splits]
    weight = torch.tensor(default_class_weights(splits[0].classes), dtype=torch.float32)
    out = {"modes": [s.hold(spec) for s, spec in zip(splits, specs, strict=True)]}
    for name in MODELS:
        runs = []
        for s, spec in zip(splits, specs, strict=True):
            torch.manual_seed(0)
            model = create_model(name, len(s.classes)).train()
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            it = s.batches(cfg.batch_size, spec, np.random.default_rng([job["seed"], 1]))
            runs.append((model, opt, it, spec.lengths(s.n_frames)))
        totals = np.zeros((len(splits), 2))  # frames, seconds
        ratios = []
        for r in range(job["rounds"] + 1):
            rate = {}
            order = list(range(len(splits)))
            for i in order if r % 2 == 0 else order[::-1]:
                model, opt, it, lengths = runs[i]
                t0, frames = time.perf_counter(), 0
                for _ in range(job["batches"]):
                    batch = next(it)
                    loss = F.cross_entropy(model(batch.x), batch.y, weight=weight)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    frames += int(lengths[batch.index].sum())
                dt = time.perf_counter() - t0
                rate[i] = frames / dt
                if r > 0:
                    totals[i] += (frames, dt)
            if r > 0:
                ratios.append(rate[len(splits) - 1] / rate[0])
        out[name] = {
            "frames_per_s": [float(f / t) for f, t in totals],
            "ratio": float((totals[-1, 0] / totals[-1, 1]) / (totals[0, 0] / totals[0, 1])),
            "round_ratios": [float(x) for x in ratios],
        }
    return out


def child(job_json: str) -> None:
    job = json.loads(job_json)
    kinds = {"build": child_build, "train": child_train, "interleave": child_interleave}
    result = kinds[job["kind"]](job)
    print("RESULT " + json.dumps(result))


# ----------------------------------------------------------------------------- orchestration


def run_child(job: dict) -> dict:
    """Run one measurement in a fresh interpreter; its progress goes to our stderr."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(job)],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"error: measurement {job['kind']} of {job['path']} failed")
    return json.loads(lines[-1][len("RESULT ") :])


def gb(n: float) -> str:
    return f"{n / 1e9:,.2f} GB"


def dur(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:,.1f} h"
    return f"{s / 60:,.1f} min" if s >= 120 else f"{s:,.1f} s"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="work folder (not in the repo)")
    p.add_argument("--sizes", default="10000,50000,250050", help="training rows, comma list")
    p.add_argument("--batches", type=int, default=60, help="timed training batches of 64")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--eval-batches", type=int, default=8, help="timed inference batches of 256")
    p.add_argument("--pool", type=int, default=1000, help="distinct pool rows per class")
    p.add_argument("--eval-rows", default="63056,67256", help="validation,test rows")
    p.add_argument("--limit", default="1GB", help="the constrained --memory-limit")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--nice", type=int, default=10, help="niceness of this run")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke preset: 2000,6000 rows, 8 batches (overrides sizes/batches)",
    )
    p.add_argument("--keep", action="store_true", help="keep caches and stores")
    p.add_argument("--rounds", type=int, default=6, help="interleaved rounds (after 1 warm-up)")
    p.add_argument("--interleave-batches", type=int, default=4, help="batches per split a round")
    p.add_argument(
        "--interleave-only",
        action="store_true",
        help="only the interleaved small-vs-large cost-per-clip measurement",
    )
    p.add_argument(
        "--skip-eval-build", action="store_true", help="do not build the validation store"
    )
    p.add_argument("--report", type=Path, default=None, help="also save the printed text here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.eval_rows, args.pool = "2000,6000", "3000,3000", 100
        args.batches, args.warmup, args.eval_batches = 8, 2, 2
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        return child(args.child)
    from sleepsound.config import parse_size

    out = args.out.resolve()
    if out == REPO or REPO in out.parents:
        raise SystemExit(f"error: --out {out} is inside the repository; give a folder outside it")
    sizes = [int(s) for s in args.sizes.split(",")]
    eval_rows = dict(zip(("validation", "test"), map(int, args.eval_rows.split(",")), strict=True))
    limit = parse_size(args.limit)
    os.nice(args.nice)
    out.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out).free
    started = time.perf_counter()
    console.print(
        f"[bold]sleepsound scale benchmark[/] {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        f" on {platform.node()}: {os.cpu_count()} CPUs, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1e9:.1f} GB RAM, "
        f"{free / 1e9:.0f} GB free in {out}, load average {os.getloadavg()[0]:.1f} at start, "
        f"nice {args.nice}{' (QUICK smoke run)' if args.quick else ''}"
    )
    console.print(
        "SYNTHETIC rows (texture_rows) in the reference cache layout, label-sorted, class mix "
        f"{'/'.join(f'{s:.1%}' for s in CLASS_SHARES)}, content frames log-normal median "
        f"{LENGTH_MEDIAN} (clipped to {LENGTH_RANGE}): figures about the data path, not "
        "DreamCatcher results."
    )
    try:
        results = measure(args, out, sizes, eval_rows, limit)
        report(args, results, sizes, eval_rows, limit, time.perf_counter() - started)
        if args.report:
            raw = {
                **results,
                "train": {f"{n}/{lab}": v for (n, lab), v in results["train"].items()},
            }
            args.report.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str))
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    if args.report:
        args.report.write_text(console.export_text())


def measure(args, out: Path, sizes, eval_rows, limit) -> dict:
    rng = np.random.default_rng(args.seed)
    pool = out / "pool.h5"
    t0 = time.perf_counter()
    write_pool(pool, args.pool, rng)
    res = {"pool_s": time.perf_counter() - t0, "files": {}, "build": {}, "train": {}}
    for name, n in [(f"train-{n}", n) for n in sizes] + list(eval_rows.items()):
        path = out / "cache" / f"{name}.h5"
        path.parent.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        clone_rows(pool, path, n, name.split("-")[0], rng)
        res["files"][name] = {
            "n": n,
            "bytes": path.stat().st_size,
            "write_s": time.perf_counter() - t0,
        }
    base = {"seed": args.seed, "batches": args.batches, "warmup": args.warmup}
    base["eval_batches"] = args.eval_batches
    for n in sizes:
        path = str(out / "cache" / f"train-{n}.h5")
        job = {**base, "path": path, "stores": str(out / "stores")}
        console.print(f"[bold]train-{n}[/]: first open (compact store build, default limit)")
        res["build"][n] = run_child({**job, "kind": "build", "limit": None})
        if args.interleave_only:
            continue
        for label, lim in (("default", None), (args.limit, limit)):
            console.print(f"[bold]train-{n}[/], memory limit {label}: open, prepare, train")
            cbam = n == sizes[-1] and lim is None
            job_n = {**job, "kind": "train", "limit": lim, "cbam": cbam}
            res["train"][(n, label)] = run_child(job_n)
    paths = [str(out / "cache" / f"train-{n}.h5") for n in (sizes[0], sizes[-1])]
    console.print(f"[bold]interleaved[/] {sizes[0]:,} vs {sizes[-1]:,} rows, one process")
    res["interleave"] = run_child(
        {
            **base,
            "kind": "interleave",
            "paths": paths,
            "stores": str(out / "stores"),
            "limit": None,
            "batches": args.interleave_batches,
            "rounds": args.rounds,
        }
    )
    if args.skip_eval_build or args.interleave_only:
        return res
    name = "validation"
    path = str(out / "cache" / f"{name}.h5")
    console.print(f"[bold]{name}[/] ({eval_rows[name]:,} rows): first open (store build)")
    res["build"][name] = run_child(
        {**base, "kind": "build", "path": path, "stores": str(out / "stores"), "limit": None}
    )
    return res


# ----------------------------------------------------------------------------- the report


def interleave_report(res: dict, sizes) -> None:
    r = res["interleave"]
    table = Table(
        title=f"Cost per clip, {sizes[0]:,} vs {sizes[-1]:,} rows, interleaved in one process "
        f"(default limit; modes {' / '.join(r['modes'])})"
    )
    for col in ("model", "frames/s small", "frames/s large", "large / small", "rounds", "verdict"):
        table.add_column(col, justify="right")
    for m in MODELS:
        x = r[m]
        rounds = np.array(x["round_ratios"])
        ok = abs(x["ratio"] - 1) <= FLAT_TARGET
        table.add_row(
            m,
            f"{x['frames_per_s'][0]:,.0f}",
            f"{x['frames_per_s'][1]:,.0f}",
            f"{x['ratio']:.3f}",
            f"{len(rounds)}: {rounds.min():.2f}-{rounds.max():.2f}",
            "[green]PASS" if ok else "[red]FAIL",
        )
    console.print(table)
    console.print(
        "Both splits' batches alternate (order flipped each round) so load on the machine hits "
        "both alike; frames/s normalises for the random input lengths of the batches timed. "
        "Target: large within 10 % of small."
    )


def report(args, res: dict, sizes, eval_rows, limit, total_s: float) -> None:
    interleave_report(res, sizes)
    if args.interleave_only:
        console.print(f"total benchmark wall time {dur(total_s)}")
        return
    labels = ["default", args.limit]
    table = Table(title="Caches on disk (reference layout, lzf) and their compact stores")
    for col in ("file", "rows", "cache on disk", "float32 uncompressed", "written in"):
        table.add_column(col, justify="right")
    table.add_column("compact store (int16)", justify="right")
    table.add_column("first open (build)", justify="right")
    table.add_column("build peak RSS", justify="right")
    for name, f in res["files"].items():
        key = f["n"] if name.startswith("train") else name
        b = res["build"].get(key)
        table.add_row(
            name,
            f"{f['n']:,}",
            gb(f["bytes"]),
            gb(f["n"] * 64 * N_FRAMES * 4),
            dur(f["write_s"]),
            gb(b["store_bytes"]) if b else "-",
            f"{dur(b['seconds'])} ({f['n'] / b['seconds']:,.0f} clips/s)" if b else "-",
            gb(b["peak_rss"]) if b else "-",
        )
    console.print(table)

    table = Table(title="Training split: open, prepare, train (each row a fresh process)")
    cols = ["rows", "--memory-limit", "mode", "reopen", "prepare", "peak RSS"]
    cols += [f"{m} samples/s" for m in MODELS] + ["data share", "epoch (proj.)", "load"]
    for col in cols:
        table.add_column(col, justify="right")
    for n in sizes:
        for label in labels:
            r = res["train"][(n, label)]
            mode = r["mode"] + (" (store mmap)" if r["store_mapped"] else "")
            rates = [r["train"][m] for m in MODELS]
            epochs = [r["epoch_frames"] / x["frames_per_s"] for x in rates]
            table.add_row(
                f"{n:,}",
                f"{label} ({gb(r['memory_limit'])})" if label == "default" else label,
                mode,
                dur(r["open_s"]),
                dur(r["hold_s"]),
                gb(r["peak_rss"]),
                *[
                    f"{x['samples_per_s']:,.0f} ({x['samples_per_cpu_s']:,.0f}/cpu-s)"
                    for x in rates
                ],  # noqa: E501
                "/".join(f"{x['data_share']:.0%}" for x in rates),
                " / ".join(dur(e) for e in epochs),
                f"{r['loadavg']:.1f}",
            )
    console.print(table)
    console.print(
        f"samples/s over {args.batches} batches of 64 after {args.warmup} warm-up batches, "
        "Adam + class-weighted CE as train.py, data time included (data share = time in "
        "SplitData.batches); '/cpu-s' = per CPU-second of the process (less sensitive to other "
        "load on the machine). Epoch = PROJECTED: the split's input frames / measured frames/s "
        "(TinyCNN / CRNN). load = 1-min load average when the measurement ended (2 cores)."
    )

    table = Table(title=f"Class mix of batches (epoch 1's plan, batch 64, windows of {WINDOW})")
    mix_cols = ["rows", "batches", "max |window - split| share", "chance (p95)"]
    mix_cols += ["single-class batches (chance)", "single-class windows"]
    for col in [*mix_cols, "storage order: dev / single"]:
        table.add_column(col, justify="right")
    for n in sizes:
        r = res["train"][(n, "default")]
        m, s = r["mix"], r["mix_storage_order"]
        table.add_row(
            f"{n:,}",
            f"{m['batches']:,}",
            f"{m['max_window_dev']:.3f}",
            f"{m['chance_dev95']:.3f}",
            f"{m['single_class_batches']} ({m['single_class_expected']:.1f} ± "
            f"{m['single_class_sd']:.1f})",
            str(m["single_class_windows"]),
            f"{s['max_window_dev']:.3f} / {s['single_class_batches']:,} of {s['batches']:,}",
        )
    console.print(table)
    console.print(
        "The plan does not depend on --memory-limit (same seed -> same batches; tested in "
        "tests/test_data_path.py). Storage order = contiguous 64-row blocks of the label-sorted "
        "file (what block reads gave before)."
    )

    targets(args, res, sizes, labels)
    campaign(res, sizes)
    console.print(f"total benchmark wall time {dur(total_s)}")


def targets(args, res, sizes, labels) -> None:
    table = Table(title="Targets (issue 9, 2 cores)")
    for col in ("target", "measured", "verdict"):
        table.add_column(col)
    big, small = sizes[-1], sizes[0]
    for label in labels:
        r = res["train"][(big, label)]
        ok = r["peak_rss"] <= RSS_TARGET
        table.add_row(
            f"peak RSS training on {big:,} rows <= 6 GB ({label})",
            gb(r["peak_rss"]),
            "[green]PASS" if ok else "[red]FAIL",
        )
    noise = flat_noise(res, small, labels)
    for label in labels:
        for m in MODELS:
            a = res["train"][(small, label)]["train"][m]
            b = res["train"][(big, label)]["train"][m]
            for unit in ("samples_per_s", "frames_per_s", "samples_per_cpu_s"):
                ratio = b[unit] / a[unit]
                ok = abs(ratio - 1) <= FLAT_TARGET
                verdict = "[green]PASS" if ok else "[red]FAIL"
                if noise.get((m, unit), 0.0) > FLAT_TARGET:
                    verdict = f"[yellow]INCONCLUSIVE (noise {noise[(m, unit)]:.0%})"
                table.add_row(
                    f"{m} {unit.replace('_', ' ')} at {big:,} within 10 % of {small:,} ({label})",
                    f"{b[unit]:,.0f} vs {a[unit]:,.0f} ({ratio - 1:+.1%})",
                    verdict,
                )
    for n in sizes:
        m = res["train"][(n, "default")]["mix"]
        extra = m["single_class_batches"] - m["single_class_expected"]
        ok = m["single_class_windows"] == 0 and extra <= 3 * m["single_class_sd"] + 1
        ok = ok and m["max_window_dev"] <= 1.25 * m["chance_dev95"]
        table.add_row(
            f"{n:,} rows: no single-class batches/windows beyond chance",
            f"{m['single_class_batches']} single-class batches "
            f"(chance {m['single_class_expected']:.1f}), {m['single_class_windows']} windows, "
            f"max dev {m['max_window_dev']:.3f} "
            f"(chance p95 {m['chance_dev95']:.3f})",
            "[green]PASS" if ok else "[red]FAIL",
        )
    console.print(table)


def flat_noise(res: dict, small: int, labels: list[str]) -> dict:
    """The measurement's own noise: at the smallest size both memory limits give the same mode
    (prepared), so their rates differ by noise only; {(model, unit): |relative difference|}."""
    a, b = (res["train"][(small, label)] for label in labels)
    if a["mode"] != b["mode"] or a["store_mapped"] != b["store_mapped"]:
        return {}
    units = ("samples_per_s", "frames_per_s", "samples_per_cpu_s")
    return {(m, u): abs(b["train"][m][u] / a["train"][m][u] - 1) for m in MODELS for u in units}


def campaign(res: dict, sizes) -> None:
    """Projected CPU time of the reference campaign on a DreamCatcher-size split, at the measured
    wall rates and at the per-CPU-second rates times the cores (an idle-machine estimate)."""
    big = sizes[-1]
    r = res["train"][(big, "default")]
    mean_frames = r["epoch_frames"] / r["n"]
    train_frames = mean_frames * DREAMCATCHER["train"]
    val_frames = mean_frames * DREAMCATCHER["validation"]
    eval_frames = mean_frames * (DREAMCATCHER["validation"] + DREAMCATCHER["test"])
    cores = min(os.cpu_count() or 1, r["threads"])

    def rate(kind: str, model: str, idle: bool) -> float:
        x = r[kind][model]
        return x["frames_per_cpu_s"] * cores if idle else x["frames_per_s"]

    def run_s(model: str, epochs: int, idle: bool) -> float:
        t, i = rate("train", model, idle), rate("infer", model, idle)
        return epochs * (train_frames / t + val_frames / i) + eval_frames / i

    title = "PROJECTION (unmeasured): the reference campaign on DreamCatcher-size data, this CPU"
    table = Table(title=title)
    for col in ("runs", "count", "epochs", "per run (wall rate)", "total (wall rate)"):
        table.add_column(col, justify="right")
    table.add_column("total (idle estimate)", justify="right")
    table.add_column(f"idle, {MAX_EPOCHS} epochs", justify="right")
    totals = {"wall": 0.0, "idle": 0.0, "idle_max": 0.0}
    for label, model, count, epochs in CAMPAIGN:
        per = run_s(model, epochs, False)
        idle, idle_max = run_s(model, epochs, True), run_s(model, MAX_EPOCHS, True)
        totals["wall"] += count * per
        totals["idle"] += count * idle
        totals["idle_max"] += count * idle_max
        row = [dur(per), dur(count * per), dur(count * idle), dur(count * idle_max)]
        table.add_row(label, str(count), str(epochs), *row)
    teacher = {
        idle: DREAMCATCHER["train"] * mean_frames / rate("infer", "crnn", idle)
        for idle in (False, True)
    }
    totals = {k: v + teacher[k != "wall"] for k, v in totals.items()}
    row = [dur(teacher[False])] * 2 + [dur(teacher[True])] * 2
    table.add_row("teacher logits (once, cached)", "1", "-", *row)
    console.print(table)
    tuning = TUNING[2] * run_s(TUNING[1], TUNING[3], True)
    console.print(
        f"29 runs, sequential: [bold]{dur(totals['wall'])}[/] at the wall rates measured under "
        f"load {r['loadavg']:.1f}; [bold]{dur(totals['idle'])}[/] idle estimate (per-CPU-second "
        f"rates x {cores} cores: optimistic), {dur(totals['idle_max'])} if every run went "
        f"{MAX_EPOCHS} epochs; + {dur(tuning)} (idle) if the teacher gate fails (18 tuning runs). "
        f"Epochs: CRNN 15 and TinyCNN 8 as the reference's published runs; CBAM and KD runs "
        f"ASSUMED 15. Rates: the {big:,}-row split at the default memory limit; each epoch "
        "includes a validation pass, each run a final validation + test pass; KD costs as plain "
        "training (teacher logits cached once; benchmarks/distill_overhead.py measured 0.92x). "
        "NOT measured: no GPU in this session. Reference: ~64 h on an Apple M3 Pro GPU."
    )


if __name__ == "__main__":
    main()
