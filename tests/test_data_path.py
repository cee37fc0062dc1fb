"""The training data path at scale: storage order, memory limit, compact storage, reference caches.

The cache here is written in the REFERENCE tool's layout (no n_frames, paths or fingerprint),
label-sorted as real caches are, and big enough (1,500 training clips) that the smallest
``--memory-limit`` (32 MB) cannot hold its model-ready form: the memory-mapped path runs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency

from sleepsound import runs
from sleepsound.config import TrainConfig
from sleepsound.data.fetch import DREAMCATCHER_REVISION
from sleepsound.features.cache import CacheError
from sleepsound.features.compact import Q_PER_DB
from sleepsound.features.reference import texture_rows, write_reference_cache
from sleepsound.reports.results import report_results
from sleepsound.training.data import SplitData, batch_plan
from sleepsound.training.train import evaluate_run, train_run

SMALL = 32 * 10**6  # the smallest memory limit: forces the memory-mapped path here
SIZES = {"train": 1500, "validation": 240, "test": 240}


def _labels_sorted(n: int, rng) -> np.ndarray:
    counts = np.round(n * np.array([0.5, 0.35, 0.15])).astype(int)
    counts[0] += n - counts.sum()
    return np.repeat(np.arange(3), counts)  # label-sorted, as folder order writes them


def write_split(path: Path, n: int, seed: int, commit: str = DREAMCATCHER_REVISION):
    rng = np.random.default_rng(seed)
    labels = _labels_sorted(n, rng)
    lengths = rng.integers(40, 220, size=n)  # 0.4-2.2 s of content, independent of class

    def blocks():
        for s in range(0, n, 256):
            lab, ln = labels[s : s + 256], lengths[s : s + 256]
            yield texture_rows(lab, ln, rng), lab

    write_reference_cache(path, blocks(), n, path.stem, dataset_commit=commit)
    return labels, lengths


@pytest.fixture(scope="module")
def ref_cache(tmp_path_factory) -> tuple[Path, dict]:
    cache = tmp_path_factory.mktemp("refcache") / "cache"
    truth = {}
    for k, (split, n) in enumerate(SIZES.items()):
        truth[split] = write_split(cache / f"{split}.h5", n, seed=10 + k)
    return cache, truth


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_reference_cache_frames_recovered_and_file_untouched(ref_cache, tmp_path):
    cache, truth = ref_cache
    path = cache / "train.h5"
    before = (_sha(path), path.stat().st_mtime_ns)
    split = SplitData(path, store_root=tmp_path / "stores")
    labels, lengths = truth["train"]
    assert np.array_equal(split.n_frames, lengths)
    assert np.array_equal(split.labels, labels)
    assert split.classes == ("quiet", "breathe", "snore")
    assert split.fingerprint.startswith("content:")
    assert split.info.source["kind"] == "dreamcatcher"
    assert split.info.source["revision"] == DREAMCATCHER_REVISION
    assert (_sha(path), path.stat().st_mtime_ns) == before  # never modified in place
    again = SplitData(path, store_root=tmp_path / "stores")  # reused, same fingerprint
    assert again.fingerprint == split.fingerprint
    assert again.store.path == split.store.path


def test_compact_store_roundtrips_within_001_db(ref_cache, tmp_path):
    cache, _ = ref_cache
    split = SplitData(cache / "validation.h5", store_root=tmp_path)
    assert split.store.quantized
    with h5py.File(cache / "validation.h5") as h5:
        rows = h5["spectrograms"][:50]
    err = max(
        float(np.abs(split.store.clip_db(i, rows.shape[-1])[0] - rows[i]).max())
        for i in range(len(rows))
    )
    assert err <= 0.5 / Q_PER_DB + 1e-5 < 0.01
    # padding is not stored: the store holds the content frames only
    assert split.store.frames.shape[0] == int(split.store.stored.sum()) < 0.7 * 240 * 501


def test_scaling_is_fitted_on_the_whole_split(ref_cache, tmp_path):
    cache, truth = ref_cache
    _, lengths = truth["train"]
    split = SplitData(cache / "train.h5", memory_limit=SMALL, store_root=tmp_path)
    with h5py.File(cache / "train.h5") as h5:
        specs = h5["spectrograms"][:]
    values = np.concatenate([specs[i, :, : lengths[i]].ravel() for i in range(len(specs))])
    spec = split.fit_spec()
    assert spec.offset == pytest.approx(-values.astype(np.float64).mean(), rel=1e-9)
    assert spec.scale == pytest.approx(values.astype(np.float64).std(), rel=1e-9)


def test_mapped_and_prepared_give_identical_batches(ref_cache, tmp_path):
    cache, _ = ref_cache
    small = SplitData(cache / "train.h5", memory_limit=SMALL, store_root=tmp_path)
    big = SplitData(cache / "train.h5", store_root=tmp_path)
    spec = big.fit_spec()
    assert small.hold(spec) == "mapped" and big.hold(spec) == "prepared"
    n = 0
    for a, b in zip(
        small.batches(64, spec, np.random.default_rng(3)),
        big.batches(64, spec, np.random.default_rng(3)),
        strict=True,
    ):
        assert np.array_equal(a.index, b.index)
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
        n += len(a.index)
    assert n == len(big)


def test_batches_follow_the_split_class_mix_on_a_label_sorted_cache(ref_cache, tmp_path):
    """Chi-square homogeneity of class counts across full batches (p > 0.001). Block reads of a
    label-sorted cache (the old data path) give single-class batches and p ~ 0."""
    cache, _ = ref_cache
    split = SplitData(cache / "train.h5", memory_limit=SMALL, store_root=tmp_path)
    spec = split.fit_spec()
    table = []
    seen = []
    for batch in split.batches(64, spec, np.random.default_rng(0)):
        seen.append(batch.index)
        if len(batch.index) >= 32:
            table.append(np.bincount(batch.y.numpy(), minlength=3))
    table = np.array(table)
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(len(split)))  # each once
    assert (table > 0).sum(axis=1).min() >= 2  # no single-class batch
    assert chi2_contingency(table).pvalue > 1e-3
    # the statistic is sensitive: contiguous row blocks (storage order) fail it
    sorted_table = [np.bincount(split.labels[s : s + 64], minlength=3) for s in range(0, 1472, 64)]
    assert chi2_contingency(np.array(sorted_table) + 1).pvalue < 1e-6


def test_batch_plan_is_a_global_shuffle_grouped_by_length():
    lengths = np.repeat([50, 100], 500)
    plan = batch_plan(lengths, 64, np.random.default_rng(1))
    assert all(len(set(lengths[b])) == 1 for b in plan)
    assert sum(len(b) < 64 for b in plan) <= 2  # at most one partial batch per length
    first_rows = [b[0] for b in plan[:6]]
    assert len(set(lengths[first_rows])) == 2  # lengths interleave across the epoch


def test_same_seed_same_metrics_in_and_out_of_memory(ref_cache, tmp_path):
    cache, _ = ref_cache
    out = {}
    for name, limit in (("whole", None), ("mapped", "32MB")):
        cfg = TrainConfig(
            cache_dir=cache,
            results_dir=tmp_path / name,
            model="tinycnn",
            epochs=1,
            memory_limit=limit,
            run_name="t",
        )
        run = train_run(cfg, progress=False)
        out[name] = (runs.read_metrics(run), (run / "epochs.csv").read_text())
    (m1, e1), (m2, e2) = out["whole"], out["mapped"]
    assert m1["validation"] == m2["validation"]
    assert m1["test"] == m2["test"]
    assert [r.split(",")[:6] for r in e1.splitlines()] == [
        r.split(",")[:6] for r in e2.splitlines()
    ]
    assert m1["test"]["macro_f1"] > 0.5  # it learns from the texture: a real run, not noise


def test_a_new_memory_limit_reuses_a_complete_run(ref_cache, tmp_path):
    """The limit cannot change a result, so `--resume` with another one keeps the run."""
    cache = tmp_path / "cache"
    for k, split in enumerate(SIZES):
        write_split(cache / f"{split}.h5", 60, seed=30 + k)
    cfg = TrainConfig(cache_dir=cache, results_dir=tmp_path, model="tinycnn", epochs=1)
    run = train_run(cfg, progress=False)
    before = (run / "metrics.json").read_bytes()
    limited = cfg.model_copy(update={"memory_limit": SMALL})
    assert train_run(limited, resume=True, progress=False) == run
    assert (run / "metrics.json").read_bytes() == before  # reused, not retrained
    changed = cfg.model_copy(update={"lr": 0.002})
    with pytest.raises(ValueError, match="cannot resume.*lr"):
        train_run(changed, resume=True, progress=False)


def test_reference_cache_run_is_labelled_dreamcatcher(tmp_path):
    cache = tmp_path / "cache"
    for k, split in enumerate(SIZES):
        write_split(cache / f"{split}.h5", 90, seed=20 + k)
    cfg = TrainConfig(cache_dir=cache, results_dir=tmp_path, model="tinycnn", epochs=1)
    run = train_run(cfg, progress=False)
    config = runs.read_config(run)
    assert config["data_source"]["kind"] == "dreamcatcher"
    assert config["cache_fingerprints"]["train"].startswith("content:")
    metrics = runs.read_metrics(run)
    assert evaluate_run(run, "test")["macro_f1"] == metrics["test"]["macro_f1"]  # `evaluate`
    rows = runs.read_leaderboard(runs.leaderboard_file(tmp_path))
    assert "dreamcatcher" in json.dumps(rows).lower()
    report = report_results(tmp_path, out_md=tmp_path / "report" / "report.md").read_text()
    assert f"DreamCatcher (THU-PI-Sensing/DreamCatcher@{DREAMCATCHER_REVISION[:12]})" in report
    assert "SYNTHETIC" not in report


def test_reference_cache_without_commit_is_not_called_dreamcatcher(tmp_path):
    write_split(tmp_path / "train.h5", 40, seed=1, commit="")
    split = SplitData(tmp_path / "train.h5")
    assert split.info.source["kind"] == "unknown"


def test_non_finite_cache_values_name_the_file(tmp_path):
    path = tmp_path / "train.h5"
    write_split(path, 40, seed=2)
    with h5py.File(path, "r+") as h5:
        h5["spectrograms"][7, 3, 5] = np.nan
    with pytest.raises(
        CacheError, match=r"train\.h5: .*row 7.*non-finite|train\.h5: .*non-finite.*row 7"
    ):
        SplitData(path)
    assert not list((tmp_path / "compact").glob("train-*/meta.json"))  # nothing half-built


def test_reference_cache_missing_attribute_is_refused(tmp_path):
    path = tmp_path / "train.h5"
    write_split(path, 10, seed=3)
    with h5py.File(path, "r+") as h5:
        del h5.attrs["classes"]
    with pytest.raises(CacheError, match=r"train\.h5.*classes"):
        SplitData(path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_gpu_holds_the_split_on_the_device(ref_cache, tmp_path):
    cache, _ = ref_cache
    split = SplitData(cache / "train.h5", store_root=tmp_path)
    spec = split.fit_spec()
    assert split.hold(spec, "cuda") == "prepared"
    batch = next(split.batches(64, spec, np.random.default_rng(0), "cuda"))
    assert batch.x.is_cuda and batch.y.is_cuda
    cpu = next(split.batches(64, spec, np.random.default_rng(0)))
    assert torch.allclose(batch.x.cpu(), cpu.x)


def test_a_cache_row_that_differs_from_its_checksum_is_refused_before_training(
    tone_cache, tmp_path
):
    """Finite but altered bytes (bit rot, a bad copy): the store build checks every row against
    the cache's recorded checksums, names the file and row, and builds nothing."""
    import shutil

    path = tmp_path / "train.h5"
    shutil.copy(tone_cache / "train.h5", path)
    with h5py.File(path, "r+") as h5:
        h5["spectrograms"][5, 10, 3] = -12.5
    with pytest.raises(CacheError, match=r"train\.h5.*row 5"):
        SplitData(path)
    assert not list((tmp_path / "compact").glob("train-*/meta.json"))
