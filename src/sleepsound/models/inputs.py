"""How cached log-mel spectrograms become model input: the one place this is defined.

Scaling has no learned parameters: dB in [-80, 0] maps linearly to [0, 1] (``(x + 80) / 80``),
so the padding floor is 0 and no input is large. The reference fed raw dB values (-80..0) to
models without normalisation and 4 of its 9 CBAM runs collapsed to one class.

Length: a clip is cropped to its real frames rounded up to a multiple of ``bucket`` frames
(``frames="bucket"``), or kept at all 501 frames (``frames="full"``, the reference). The crop
depends only on the clip, so a clip gets the same input in training, evaluation and export.
"""

from __future__ import annotations

import numpy as np
import torch

from sleepsound.features.logmel import N_FRAMES, TOP_DB

INPUT_SCALING = {"kind": "db_range", "offset": TOP_DB, "scale": TOP_DB}


def scale_db(x: torch.Tensor | np.ndarray, scaling: dict = INPUT_SCALING):
    """Map dB spectrograms to model input."""
    return (x + scaling["offset"]) / scaling["scale"]


def input_frames(
    n_frames: np.ndarray | int, frames: str = "bucket", bucket: int = 50, max_time: int = N_FRAMES
) -> np.ndarray:
    """Input length per clip under the length policy."""
    n = np.asarray(n_frames)
    if frames == "full":
        return np.full_like(n, max_time)
    return np.minimum(max_time, -(-n // bucket) * bucket)
