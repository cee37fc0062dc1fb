"""Knowledge distillation: the loss, the teacher-logit store, the teacher outside the loop."""

from __future__ import annotations

import json
import math
import shutil

import h5py
import pytest
import torch

from sleepsound.config import TrainConfig
from sleepsound.runs.leaderboard import read_leaderboard
from sleepsound.training import distill
from sleepsound.training.distill import kd_loss
from sleepsound.training.train import train_run

FAST = dict(epochs=1, batch_size=16, patience=3, threads=1)


def test_kd_loss_against_hand_computation():
    s = torch.tensor([[1.0, 0.0, -1.0]])
    t = torch.tensor([[0.0, 2.0, 0.0]])
    y = torch.tensor([1])
    w = torch.tensor([1.0, 1.5, 5.5])
    alpha, tau = 0.6, 4.0

    def softmax(v):
        e = [math.exp(x / tau) for x in v]
        return [x / sum(e) for x in e]

    ps, pt = softmax([1.0, 0.0, -1.0]), softmax([0.0, 2.0, 0.0])
    kl = sum(q * math.log(q / p) for p, q in zip(ps, pt, strict=True))
    e = [math.exp(x) for x in (1.0, 0.0, -1.0)]
    ce = -math.log(e[1] / sum(e))  # weighted CE of one sample: the weight cancels in the mean
    expected = alpha * tau**2 * kl + (1 - alpha) * ce
    assert kd_loss(s, t, y, alpha, tau, w).item() == pytest.approx(expected, rel=1e-6)
    assert kd_loss(s, t, y, 0.0, tau, w).item() == pytest.approx(ce, rel=1e-6)


@pytest.fixture(scope="module")
def teacher(tone_cache, tmp_path_factory):
    results = tmp_path_factory.mktemp("kd")
    run = train_run(
        TrainConfig(cache_dir=tone_cache, results_dir=results, model="crnn", **FAST), progress=False
    )
    return results, run


def count_teacher_forwards(monkeypatch) -> dict:
    """Spy on the real teacher: count forward calls of every model distill.load_model builds."""
    calls = {"loads": 0, "forwards": 0}
    real = distill.load_model

    def spying_load(path):
        model, ckpt = real(path)
        calls["loads"] += 1
        model.register_forward_hook(lambda *_: calls.__setitem__("forwards", calls["forwards"] + 1))
        return model, ckpt

    monkeypatch.setattr(distill, "load_model", spying_load)
    return calls


def test_teacher_logits_computed_once_and_reused(teacher, tone_cache, monkeypatch):
    results, teacher_run = teacher
    calls = count_teacher_forwards(monkeypatch)
    kd = dict(
        cache_dir=tone_cache,
        results_dir=results,
        model="tinycnn",
        teacher_run=teacher_run,
        alpha=0.6,
        tau=4.0,
        **FAST,
    )
    run = train_run(TrainConfig(**{**kd, "epochs": 2}), progress=False)
    n_train = h5py.File(tone_cache / "train.h5")["labels"].shape[0]
    one_pass = calls["forwards"]
    assert calls["loads"] == 1 and 1 <= one_pass <= n_train  # one pass over train, not per epoch
    store = list((results / "cache" / "teacher_logits").glob("*.npy"))
    assert len(store) == 1
    # another student reuses the stored logits: the teacher does not run at all
    train_run(TrainConfig(**{**kd, "tau": 3.0}), progress=False)
    assert calls["loads"] == 1 and calls["forwards"] == one_pass
    m = json.loads((run / "metrics.json").read_text())
    assert m["teacher"]["alpha"] == 0.6 and m["teacher"]["tau"] == 4.0
    assert m["teacher"]["params"] == 73_411
    assert m["teacher"]["compression_ratio"] == pytest.approx(73_411 / 23_491)
    row = next(
        r for r in read_leaderboard(results / "leaderboard.csv") if r["run_name"] == run.name
    )
    assert row["kind"] == "kd" and row["teacher_run"] == str(teacher_run)
    assert float(row["alpha"]) == 0.6 and int(row["teacher_params"]) == 73_411


def test_teacher_logits_invalidated_by_new_teacher_or_cache(
    teacher, tone_cache, tmp_path, monkeypatch
):
    results, teacher_run = teacher
    kd = dict(results_dir=results, model="tinycnn", alpha=0.9, tau=3.0, **FAST)
    train_run(TrainConfig(cache_dir=tone_cache, teacher_run=teacher_run, **kd), progress=False)
    calls = count_teacher_forwards(monkeypatch)
    # a retrained teacher (different checkpoint bytes) gets its own logits
    new_teacher = train_run(
        TrainConfig(
            cache_dir=tone_cache, results_dir=tmp_path, model="crnn", **{**FAST, "seed": 3}
        ),
        progress=False,
    )
    train_run(TrainConfig(cache_dir=tone_cache, teacher_run=new_teacher, **kd), progress=False)
    assert calls["loads"] == 1
    # a changed cache (other fingerprint) too
    other = tmp_path / "cache2"
    shutil.copytree(tone_cache, other)
    for split in ("train", "validation", "test"):
        with h5py.File(other / f"{split}.h5", "a") as h5:
            h5.attrs["fingerprint"] = "f" * 64
    train_run(TrainConfig(cache_dir=other, teacher_run=new_teacher, **kd), progress=False)
    assert calls["loads"] == 2
    assert len(list((results / "cache" / "teacher_logits").glob("*.npy"))) == 3


def test_teacher_with_other_classes_is_rejected(teacher, tmp_path):
    from conftest import write_dataset

    from sleepsound.config import PreprocessConfig
    from sleepsound.features.cache import preprocess

    results, teacher_run = teacher
    data = write_dataset(tmp_path / "d", per_class=4, labels=("quiet", "snore"))
    preprocess(
        PreprocessConfig(data_dir=data, cache_dir=tmp_path / "c", workers=1, classes="quiet,snore")
    )
    with pytest.raises(ValueError, match="classes"):
        train_run(
            TrainConfig(
                cache_dir=tmp_path / "c",
                results_dir=tmp_path,
                model="tinycnn",
                teacher_run=teacher_run,
                alpha=0.5,
                tau=2.0,
                **FAST,
            ),
            progress=False,
        )
