"""Augmentation options: identity when off, each one changes the batch as specified, mixup mixes
the hard targets and the teacher's soft targets with the same weight, and runs stay seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sleepsound import runs
from sleepsound.config import AugmentConfig, TrainConfig
from sleepsound.training.augment import augment_batch, mixed_loss
from sleepsound.training.distill import kd_loss
from sleepsound.training.train import train_run


def _batch(seed=0, b=8, t=60):
    return torch.randn(b, 1, 64, t, generator=torch.Generator().manual_seed(seed))


def test_off_is_identity():
    x = _batch()
    out, mix = augment_batch(x, AugmentConfig(), 10.0, np.random.default_rng(0))
    assert out is x and mix is None


def test_time_and_frequency_masks_zero_whole_stripes():
    x = _batch() + 5.0  # no zeros before masking
    cfg = AugmentConfig(time_masks=1, time_mask_frames=10, freq_masks=1, freq_mask_bins=6)
    out, mix = augment_batch(x, cfg, 10.0, np.random.default_rng(1))
    assert mix is None and not torch.equal(out, x)
    zero = out == 0
    for clip in zero[:, 0]:  # [64, T]
        cols = clip.all(dim=0).sum().item()  # frames masked over every mel bin
        rows = clip.all(dim=1).sum().item()  # mel bins masked over every frame
        assert cols <= 10 and rows <= 6
        assert clip.sum().item() == cols * 64 + rows * clip.shape[1] - cols * rows
    assert zero.any()
    untouched = ~zero
    assert torch.equal(out[untouched], x[untouched])


def test_gain_shifts_each_clip_uniformly_within_range():
    x = _batch()
    out, _ = augment_batch(x, AugmentConfig(gain_db=6.0), 12.0, np.random.default_rng(2))
    shift = (out - x).flatten(1)
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-6)  # one shift per clip
    assert shift[:, 0].abs().max() <= 6.0 / 12.0 + 1e-6 and shift[:, 0].std() > 0


def test_mixup_mixes_inputs_and_both_kinds_of_target():
    x = _batch()
    out, mix = augment_batch(x, AugmentConfig(mixup_alpha=0.4), 10.0, np.random.default_rng(3))
    assert torch.allclose(out, mix.lam * x + (1 - mix.lam) * x[mix.perm])
    logits, teacher = torch.randn(8, 3), torch.randn(8, 3)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    w = torch.tensor([1.0, 1.5, 5.5])
    hard = mix.lam * F.cross_entropy(logits, y, weight=w) + (1 - mix.lam) * F.cross_entropy(
        logits, y[mix.perm], weight=w
    )
    assert torch.allclose(mixed_loss(logits, y, w, mix), hard)
    p = F.softmax(teacher / 4, dim=-1)
    p = mix.lam * p + (1 - mix.lam) * p[mix.perm]
    soft = F.kl_div(F.log_softmax(logits / 4, dim=-1), p, reduction="batchmean")
    want = 0.6 * 16 * soft + 0.4 * hard
    assert torch.allclose(mixed_loss(logits, y, w, mix, teacher, 0.6, 4.0), want)
    # without mixup the distillation loss is exactly the reference one
    assert torch.equal(
        mixed_loss(logits, y, w, None, teacher, 0.6, 4.0), kd_loss(logits, teacher, y, 0.6, 4.0, w)
    )


def test_same_draws_for_the_same_seed():
    cfg = AugmentConfig(time_masks=2, freq_masks=2, gain_db=3.0, mixup_alpha=0.2)
    a, _ = augment_batch(_batch(), cfg, 10.0, np.random.default_rng([5, 1, 1]))
    b, _ = augment_batch(_batch(), cfg, 10.0, np.random.default_rng([5, 1, 1]))
    assert torch.equal(a, b)


@pytest.mark.parametrize("augment", [{}, {"time_masks": 2, "freq_masks": 2, "mixup_alpha": 0.3}])
def test_runs_are_reproducible_and_augmentation_changes_training(tone_cache, tmp_path, augment):
    losses = []
    for name in ("a", "b", "plain"):
        cfg = TrainConfig(
            cache_dir=tone_cache,
            results_dir=tmp_path / name,
            model="tinycnn",
            epochs=1,
            augment={} if name == "plain" else augment,
            run_name="r",
        )
        run = train_run(cfg, progress=False)
        losses.append(runs.read_metrics(run)["validation"]["loss"])
        if name != "plain":
            assert runs.read_config(run)["augment"]["time_masks"] == augment.get("time_masks", 0)
    assert losses[0] == losses[1]  # same seed, same result
    assert (losses[0] != losses[2]) == bool(augment)  # on changes training, off is identity


def test_augmented_and_plain_runs_are_separate_configurations(tone_cache, tmp_path):
    """The leaderboard records the augmentation, so the campaign's seed summary never merges an
    augmented run into the plain configuration of the same model and seed."""
    from sleepsound.campaign.summary import summarize

    dirs = []
    for name, augment in (("plain", {}), ("masked", {"time_masks": 2})):
        cfg = TrainConfig(
            cache_dir=tone_cache, results_dir=tmp_path, model="tinycnn", epochs=1,
            augment=augment, run_name=f"{name}_s42",
        )  # fmt: skip
        dirs.append(train_run(cfg, progress=False))
    rows = runs.read_leaderboard(runs.leaderboard_file(tmp_path))
    assert sorted(r["augment"] for r in rows) == ["", "time_masks=2"]
    table = summarize(rows)
    assert len(table) == 2 and sorted(table["augment"]) == ["", "time_masks=2"]
