"""Training: learns, is deterministic, resumes exactly, writes complete artifacts."""

from __future__ import annotations

import csv
import json
import math
import multiprocessing as mp
import shutil
import subprocess
import sys

import crashrun
import h5py
import numpy as np
import pytest
from conftest import write_dataset

from sleepsound.config import PreprocessConfig, TrainConfig
from sleepsound.features.cache import CacheError, preprocess
from sleepsound.runs.leaderboard import COLUMNS, read_leaderboard, upsert_row
from sleepsound.taxonomy import LABELS
from sleepsound.training.metrics import classification_metrics, convergence
from sleepsound.training.train import epoch_lr, evaluate_run, train_run

FAST = dict(epochs=3, batch_size=16, patience=3, threads=1)


def config(cache, results, **kw):
    return TrainConfig(cache_dir=cache, results_dir=results, **{**FAST, **kw})


def test_tinycnn_learns_the_tone_task(tone_cache, tmp_path):
    """Chance macro-F1 on 3 balanced classes is ~0.33. The three textures are separable, and in
    our measurements a working loop reaches 0.95-1.0 within 75 steps (5 epochs of batch 8);
    0.8 leaves room for thread-count noise while a broken loss, label mapping or input
    scaling stays near chance."""
    run = train_run(
        config(
            tone_cache,
            tmp_path,
            model="tinycnn",
            epochs=5,
            batch_size=8,
            class_weights="none",
            patience=5,
        ),
        progress=False,
    )
    m = json.loads((run / "metrics.json").read_text())
    assert m["test"]["macro_f1"] >= 0.8, m["test"]
    assert not m["collapsed"]["validation"]
    assert m["best_epoch"] <= m["epochs_ran"] <= 5


def test_same_seed_same_metrics(tone_cache, tmp_path):
    a = train_run(
        config(tone_cache, tmp_path / "a", model="tinycnn_cbam", epochs=2), progress=False
    )
    b = train_run(
        config(tone_cache, tmp_path / "b", model="tinycnn_cbam", epochs=2), progress=False
    )
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (a, b))
    assert ma["test"] == mb["test"] and ma["validation"] == mb["validation"]
    ea, eb = ((r / "epochs.csv").read_text().splitlines() for r in (a, b))
    strip = [line.rsplit(",", 2)[0] for line in ea], [line.rsplit(",", 2)[0] for line in eb]
    assert strip[0] == strip[1]  # identical losses/metrics per epoch (timings differ)
    c = train_run(
        config(tone_cache, tmp_path / "c", model="tinycnn_cbam", epochs=2, seed=7), progress=False
    )
    assert json.loads((c / "metrics.json").read_text())["test"]["loss"] != ma["test"]["loss"]


def test_resume_equals_uninterrupted(tone_cache, tmp_path):
    """With the cosine schedule: the resumed run must take up the learning rate of its epoch."""
    full = train_run(
        config(tone_cache, tmp_path / "full", model="crnn", epochs=3, schedule="cosine"),
        progress=False,
    )
    results = tmp_path / "cut"
    code = (
        "from sleepsound.config import TrainConfig; from sleepsound.training.train import "
        f"train_run; train_run(TrainConfig(cache_dir={str(tone_cache)!r}, "
        f"results_dir={str(results)!r}, model='crnn', epochs=3, batch_size=16, patience=3, "
        "threads=1, schedule='cosine'), resume=True, progress=False)"
    )
    crash = crashrun.command("train.epoch_saved", 1, "-c", code)
    proc = subprocess.run(crash, capture_output=True, text=True)
    assert proc.returncode == 137, proc.stderr
    run = results / "runs" / full.name
    assert json.loads((run / "status.json").read_text())["state"] == "running"
    assert not (run / "metrics.json").exists()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "resuming after epoch 1" in proc.stdout + proc.stderr
    m_full = json.loads((full / "metrics.json").read_text())
    m_cut = json.loads((run / "metrics.json").read_text())
    assert m_cut["test"] == m_full["test"] and m_cut["best_epoch"] == m_full["best_epoch"]
    lrs = [float(r["lr"]) for r in csv.DictReader(open(run / "epochs.csv"))]
    assert lrs == pytest.approx([1e-3, 0.75e-3, 0.25e-3])  # cos(0), cos(pi/3), cos(2pi/3)


def test_learning_rate_schedules():
    constant = TrainConfig(lr=0.01, epochs=4)
    assert [epoch_lr(constant, e) for e in (1, 2, 3, 4)] == [0.01] * 4
    cosine = TrainConfig(lr=0.01, epochs=4, schedule="cosine")
    lrs = [epoch_lr(cosine, e) for e in (1, 2, 3, 4)]
    assert lrs[0] == 0.01 and all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[-1] == pytest.approx(0.01 * (1 - math.cos(math.pi / 4)) / 2)


@pytest.mark.parametrize(
    "f1, stopped, expected",
    [
        ([0.5, 0.6, 0.7, 0.8], True, "early stop"),
        ([0.5, 0.7, 0.705, 0.7, 0.71], False, "plateau"),  # mean of last 2: 0.705 vs best 0.705
        ([0.5, 0.7, 0.69, 0.75, 0.73], False, "improving"),  # 0.74 vs 0.7
        ([0.5, 0.6], False, "improving"),  # nothing before the window to compare with
        # 12 epochs, windows of 3: a dip in epoch 9 does not make the flat end look rising
        ([0.5] * 6 + [0.79, 0.8, 0.76, 0.81, 0.8, 0.8], False, "plateau"),
        ([0.5] * 6 + [0.69, 0.69, 0.71, 0.73, 0.74, 0.75], False, "improving"),
    ],
)
def test_convergence(f1, stopped, expected):
    history = [{"val_macro_f1": v} for v in f1]
    assert convergence(history, stopped) == expected


def test_artifacts_and_leaderboard(tone_cache, tmp_path):
    run = train_run(config(tone_cache, tmp_path, model="tinycnn", epochs=1), progress=False)
    for name in (
        "config.json",
        "env.json",
        "metrics.json",
        "epochs.csv",
        "test_metrics.csv",
        "per_class.csv",
        "confusion.csv",
        "checkpoints/best.pt",
        "checkpoints/last.pt",
    ):
        assert (run / name).is_file(), name
    assert json.loads((run / "status.json").read_text())["state"] == "complete"
    m = json.loads((run / "metrics.json").read_text())
    for key in ("loss", "acc", "balanced_acc", "macro_f1", "macro_precision", "macro_recall"):
        assert 0 <= m["test"][key] and (key == "loss" or m["test"][key] <= 1)
    assert set(m["test"]["per_class"]) == {"quiet", "breathe", "snore"}
    dep = m["deployment"]
    assert dep["params"] == 23_491 and dep["fp32_bytes"] >= 23_491 * 4
    assert dep["macs"] > 7e7 and 0 < dep["latency_median_ms"] <= dep["latency_p90_ms"]
    with open(run / "confusion.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == ["quiet", "breathe", "snore"]
    assert [r[0] for r in rows[1:]] == ["quiet", "breathe", "snore"]
    cm = np.array([[int(v) for v in r[1:]] for r in rows[1:]])
    assert cm.sum() == m["test"]["n"] and np.trace(cm) / cm.sum() == pytest.approx(m["test"]["acc"])
    board = read_leaderboard(tmp_path / "leaderboard.csv")
    assert len(board) == 1 and list(board[0]) == COLUMNS
    assert float(board[0]["test_macro_f1"]) == pytest.approx(m["test"]["macro_f1"])
    assert "fingerprint" in board[0]["data_source"]  # provenance: a user folder
    # a re-run replaces its row, never duplicates it
    train_run(config(tone_cache, tmp_path, model="tinycnn", epochs=1), progress=False)
    assert len(read_leaderboard(tmp_path / "leaderboard.csv")) == 1
    # evaluate re-computes the same test metrics from the saved run
    again = evaluate_run(run)
    assert again["macro_f1"] == pytest.approx(m["test"]["macro_f1"])


def _append_rows(args):
    path, worker = args
    for k in range(10):
        upsert_row(path, {"run_name": f"w{worker}_{k}", "run_dir": f"/runs/w{worker}_{k}"})


def test_concurrent_leaderboard_appends_lose_no_row(tmp_path):
    path = tmp_path / "leaderboard.csv"
    with mp.get_context("spawn").Pool(4) as pool:
        pool.map(_append_rows, [(path, w) for w in range(8)])
    rows = read_leaderboard(path)
    assert len(rows) == 80 and len({r["run_dir"] for r in rows}) == 80


def test_corrupt_or_mismatched_cache_is_a_clear_error(tone_cache, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tone_cache, bad)
    (bad / "train.h5").write_bytes(b"not hdf5")
    with pytest.raises(CacheError, match=r"train\.h5.*not a readable HDF5"):
        train_run(config(bad, tmp_path, model="tinycnn"), progress=False)
    mixed = tmp_path / "mixed"
    shutil.copytree(tone_cache, mixed)
    with h5py.File(mixed / "validation.h5", "a") as h5:
        h5.attrs["classes"] = json.dumps(["quiet", "snore", "breathe"])
    with pytest.raises(CacheError, match="validation.h5.*differ"):
        train_run(config(mixed, tmp_path, model="tinycnn"), progress=False)


def test_metrics_and_collapse_flag():
    m, cm = classification_metrics(
        np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), ["a", "b", "c"]
    )
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["acc"] == pytest.approx(3 / 5)
    # precision a=1/2, b=2/3, c=0 ; recall a=1/2, b=1, c=0
    assert m["macro_precision"] == pytest.approx((0.5 + 2 / 3) / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8) / 3)
    assert m["balanced_acc"] == pytest.approx(0.5)
    assert not m["collapsed"]
    m1, _ = classification_metrics(np.array([0, 1, 2]), np.array([0, 0, 0]), ["a", "b", "c"])
    assert m1["collapsed"]


def test_nine_classes_and_two_channels_end_to_end(tmp_path):
    data = write_dataset(tmp_path / "d", per_class=6, labels=LABELS)
    for channels, classes in (("mean", ",".join(LABELS)), ("both", "quiet,breathe,snore")):
        cache = tmp_path / f"c_{channels}"
        preprocess(
            PreprocessConfig(
                data_dir=data, cache_dir=cache, workers=1, classes=classes, channels=channels
            )
        )
        run = train_run(
            config(cache, tmp_path / channels, model="tinycnn", epochs=1, class_weights="balanced"),
            progress=False,
        )
        m = json.loads((run / "metrics.json").read_text())
        cfg = json.loads((run / "config.json").read_text())
        assert list(m["test"]["per_class"]) == classes.split(",")
        assert len(cfg["class_weight_values"]) == len(classes.split(","))
        assert m["deployment"]["params"] == (
            23_491 + 6 * 65 if channels == "mean" else 23_491 + 144
        )


def test_batches_cover_every_clip_once_with_its_cached_values(tone_cache):
    """Every clip comes exactly once per epoch, cropped to its bucket, and its input equals the
    cache's dB values (within the compact store's 0.00125 dB) under the run's scaling."""
    import h5py

    from sleepsound.training.data import SplitData

    split = SplitData(tone_cache / "train.h5", memory_limit=32 * 10**6)
    spec = split.fit_spec()
    with h5py.File(tone_cache / "train.h5") as h5:
        cached = h5["spectrograms"][:]
        n_frames = h5["n_frames"][:]
    assert np.array_equal(split.n_frames, n_frames)  # our caches' own real-frame counts
    seen = set()
    for batch in split.batches(8, spec, rng=np.random.default_rng(0)):
        for i, x in zip(batch.index, batch.x, strict=True):
            length = int(spec.lengths(n_frames[i]))
            assert x.shape[-1] == length
            want = spec.scale_db(cached[i][None, :, :length])
            assert np.abs(x.numpy() - want).max() * spec.scale < 0.01
            seen.add(int(i))
    assert seen == set(range(len(split)))


def test_nine_class_task_on_the_embedded_dataset(tmp_path):
    from sleepsound.data.synth import generate_dataset

    generate_dataset(tmp_path / "d", n_clips=400, seed=3, progress=False)
    preprocess(
        PreprocessConfig(
            data_dir=tmp_path / "d", cache_dir=tmp_path / "c", workers=1, classes=",".join(LABELS)
        )
    )
    run = train_run(
        config(tmp_path / "c", tmp_path, model="tinycnn_cbam", epochs=1, class_weights="balanced"),
        progress=False,
    )
    m = json.loads((run / "metrics.json").read_text())
    cfg = json.loads((run / "config.json").read_text())
    assert list(m["test"]["per_class"]) == list(LABELS)
    assert sum(c["support"] for c in m["test"]["per_class"].values()) == m["test"]["n"]
    assert cfg["data_source"]["kind"] == "synthetic" and cfg["data_source"]["seed"] == 3
