"""How cached log-mel spectrograms become model input: the one place this is defined.

Scaling has no learned parameters: ``(x + offset) / scale`` with ``offset = -mean`` and
``scale = std`` of the training split's dB values over real (non-padding) frames, computed once
per run and stored with it (config and checkpoint), so export and detection apply the same.
Zero-centred inputs matter: in our measurements [0, 1]-scaled or raw dB input left TinyCNN
predicting one class for several epochs under the 1.0/1.5/5.5 class weights (the reference's
collapsed CBAM runs fed raw dB), while standardised input trained at once.

Length: a clip is cropped to its real frames rounded up to a multiple of ``bucket`` frames
(``frames="bucket"``), or kept at all 501 frames (``frames="full"``, the reference). The crop
depends only on the clip, so a clip gets the same input in training, evaluation and export.
"""

from __future__ import annotations

import numpy as np
import torch

from sleepsound.features.logmel import N_FRAMES

STATS_CLIPS = 4000  # clips sampled (evenly) to estimate the training split's mean and std


def fit_scaling(specs: np.ndarray, n_frames: np.ndarray) -> dict:
    """Mean and std of dB values over real frames. specs [N, C, 64, T] (or [N, 64, T])."""
    pick = np.linspace(0, len(specs) - 1, min(len(specs), STATS_CLIPS)).astype(int)
    values = np.concatenate([specs[i][..., : max(1, int(n_frames[i]))].ravel() for i in pick])
    mean, std = float(values.mean()), float(values.std())
    return {"kind": "train_standardize", "offset": -mean, "scale": max(std, 1e-3)}


def scale_db(x: torch.Tensor | np.ndarray, scaling: dict):
    """Map dB spectrograms to model input with a run's stored scaling."""
    return (x + scaling["offset"]) / scaling["scale"]


def input_frames(
    n_frames: np.ndarray | int, frames: str = "bucket", bucket: int = 50, max_time: int = N_FRAMES
) -> np.ndarray:
    """Input length per clip under the length policy."""
    n = np.asarray(n_frames)
    if frames == "full":
        return np.full_like(n, max_time)
    return np.minimum(max_time, -(-n // bucket) * bucket)
