"""Training-time augmentation as policy options (all off by default: the reference has none).

Applied to a batch of model input (scaled log-mel, [B, C, 64, T]) inside the training loop only;
evaluation never augments. Each draw comes from a generator seeded by (seed, epoch), separate
from the batch order, so turning augmentation on changes the inputs but not which clips form a
batch, and a resumed run draws the same masks.

- SpecAugment: ``time_masks`` masks of up to ``time_mask_frames`` frames and ``freq_masks``
  masks of up to ``freq_mask_bins`` mel bins per clip, filled with 0 (the training split's mean
  dB after scaling), as in Park et al. 2019 on the cached log-mel.
- gain: each clip's dB values shifted by one uniform draw in [-gain_db, +gain_db] dB.
- mixup (Zhang et al. 2018): clips mixed with a shuffled copy of the batch, weight
  lam ~ Beta(alpha, alpha); the loss mixes the two targets with the same weight, and in
  distillation the teacher's soft targets are mixed too (see :func:`mixed_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sleepsound.config import AugmentConfig


@dataclass
class Mix:
    """How a batch was mixed: target i is lam * y[i] + (1 - lam) * y[perm[i]]."""

    lam: float
    perm: torch.Tensor


def augment_batch(
    x: torch.Tensor, cfg: AugmentConfig, scale_db: float, rng: np.random.Generator
) -> tuple[torch.Tensor, Mix | None]:
    """Augmented copy of ``x`` (or ``x`` itself when nothing is on) and the mixup, if any.
    ``scale_db`` is the input spec's scale (dB per unit of model input)."""
    if not cfg.active:
        return x, None
    x = x.clone()
    b, _, n_mels, t = x.shape
    if cfg.gain_db:
        gain = rng.uniform(-cfg.gain_db, cfg.gain_db, size=b) / scale_db
        x += torch.as_tensor(gain, dtype=x.dtype, device=x.device)[:, None, None, None]
    for count, width, axis, size in (
        (cfg.time_masks, cfg.time_mask_frames, 3, t),
        (cfg.freq_masks, cfg.freq_mask_bins, 2, n_mels),
    ):
        for _ in range(count):
            widths = rng.integers(0, min(width, size) + 1, size=b)
            starts = rng.integers(0, size - widths + 1)
            pos = torch.arange(size, device=x.device)
            lo = torch.as_tensor(starts, device=x.device)[:, None]
            hi = torch.as_tensor(starts + widths, device=x.device)[:, None]
            mask = (pos[None, :] >= lo) & (pos[None, :] < hi)  # [B, size]
            shape = (b, 1, 1, size) if axis == 3 else (b, 1, size, 1)
            x = x.masked_fill(mask.view(shape), 0.0)
    mix = None
    if cfg.mixup_alpha > 0 and b > 1:
        lam = float(rng.beta(cfg.mixup_alpha, cfg.mixup_alpha))
        perm = torch.as_tensor(rng.permutation(b), device=x.device)
        x = lam * x + (1 - lam) * x[perm]
        mix = Mix(lam, perm)
    return x, mix


def mixed_loss(
    logits: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor,
    mix: Mix | None,
    teacher: torch.Tensor | None = None,
    alpha: float | None = None,
    tau: float | None = None,
) -> torch.Tensor:
    """Class-weighted cross-entropy (or the distillation loss) for a batch, honouring mixup:
    both hard targets weighted by lam / 1 - lam, and the teacher's soft targets mixed as
    lam * p_t[i] + (1 - lam) * p_t[perm[i]]. Without mixup this is exactly F.cross_entropy /
    kd_loss."""

    def ce(target):
        return F.cross_entropy(logits, target, weight=weight)

    hard = ce(y) if mix is None else mix.lam * ce(y) + (1 - mix.lam) * ce(y[mix.perm])
    if teacher is None:
        return hard
    p_t = F.softmax(teacher / tau, dim=-1)
    if mix is not None:
        p_t = mix.lam * p_t + (1 - mix.lam) * p_t[mix.perm]
    soft = F.kl_div(F.log_softmax(logits / tau, dim=-1), p_t, reduction="batchmean")
    return alpha * tau**2 * soft + (1 - alpha) * hard
