"""How cached log-mel spectrograms become model input: the one place this is defined.

Scaling has no learned parameters: ``(x + offset) / scale`` with ``offset = -mean`` and
``scale = std`` of the whole training split's dB values over real (non-padding) frames (see
``SplitData.fit_spec``), computed once per run and stored with it (config, checkpoint, model
card) as an :class:`InputSpec`, so evaluation, export and detection apply the same.
Zero-centred inputs matter: in our measurements [0, 1]-scaled or raw dB input left TinyCNN
predicting one class for several epochs under the 1.0/1.5/5.5 class weights (the reference's
collapsed CBAM runs fed raw dB), while standardised input trained at once.

Length: a clip is cropped to its real frames rounded up to a multiple of ``bucket`` frames
(``frames="bucket"``), or kept at all 501 frames (``frames="full"``, the reference). The crop
depends only on the clip, so a clip gets the same input in training, evaluation and export.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from sleepsound.config import DEFAULT_BUCKET_FRAMES
from sleepsound.features.logmel import N_FRAMES

FRAMES_POLICIES = ("bucket", "full")


def scale_db(x: torch.Tensor | np.ndarray, scaling: dict):
    """Map dB spectrograms to model input with a run's stored scaling."""
    return (x + scaling["offset"]) / scaling["scale"]


def input_frames(
    n_frames: np.ndarray | int,
    frames: str = "bucket",
    bucket: int = DEFAULT_BUCKET_FRAMES,
    max_time: int = N_FRAMES,
) -> np.ndarray:
    """Input length per clip under the length policy."""
    n = np.asarray(n_frames)
    if frames == "full":
        return np.full_like(n, max_time)
    return np.minimum(max_time, -(-n // bucket) * bucket)


@dataclass(frozen=True)
class InputSpec:
    """The whole model-input contract, passed whole: saved in every checkpoint (key
    ``input_spec``) and model card, so training, evaluation, export and detection feed a model
    exactly the input it was trained on.

    ``(db + offset) / scale`` maps cached dB values to model input; ``frames``/``bucket`` give a
    clip's input length (:func:`input_frames`); ``channels`` names how the cache mixed the
    microphones (``mean``, ``in_ear``, ``outer``, ``both``) and ``n_channels`` the model's
    input channels; ``max_time`` is the cache's frame count (501 for 5 s clips).
    """

    offset: float
    scale: float
    frames: str = "bucket"
    bucket: int = DEFAULT_BUCKET_FRAMES
    channels: str = "mean"
    n_channels: int = 1
    max_time: int = N_FRAMES

    def __post_init__(self):
        if not (math.isfinite(self.offset) and math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"input scaling must be finite with scale > 0, got {self}")
        if self.frames not in FRAMES_POLICIES:
            raise ValueError(f"frames must be one of {FRAMES_POLICIES}, got {self.frames!r}")
        if self.bucket < 1 or self.n_channels < 1 or self.max_time < 1:
            raise ValueError(f"bucket, n_channels and max_time must be >= 1, got {self}")

    def lengths(self, n_frames: np.ndarray | int) -> np.ndarray:
        """Input length of each clip under this spec's length policy."""
        return input_frames(n_frames, self.frames, self.bucket, self.max_time)

    def scale_db(self, x):
        """dB spectrograms (tensor or array) -> model input."""
        return (x + self.offset) / self.scale

    @property
    def scaling(self) -> dict:
        """The scaling in the older dict form (``kind``/``offset``/``scale``)."""
        return {"kind": "train_standardize", "offset": self.offset, "scale": self.scale}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "input spec") -> InputSpec:
        """Rebuild from :meth:`to_dict` output; a missing or unknown key is a ValueError
        naming ``where`` (e.g. the checkpoint or card path)."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: input spec must be a mapping, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        missing = sorted(n for n in ("offset", "scale") if n not in data)
        if unknown or missing:
            raise ValueError(f"{where}: input spec has unknown keys {unknown} / lacks {missing}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: bad input spec ({exc})") from exc


# keys of the loose form, before ``input_spec``: loose key -> InputSpec field
_LEGACY_FIELDS = {"frames": "frames", "bucket_frames": "bucket", "channels": "channels",
                  "n_channels": "n_channels"}  # fmt: skip


def legacy_input_spec(data: dict, where: str, n_channels: int | None = None) -> InputSpec:
    """The :class:`InputSpec` of a checkpoint or model card written before ``input_spec``
    existed: ``input_scaling`` (with ``offset`` and ``scale``) plus whichever of ``frames``,
    ``bucket_frames``, ``channels``, ``n_channels`` it has (the InputSpec defaults for the
    rest; ``n_channels``, when given, wins). ValueError naming ``where`` otherwise."""
    scaling = data.get("input_scaling")
    if not isinstance(scaling, dict) or not {"offset", "scale"} <= set(scaling):
        raise ValueError(f"{where}: no input_spec and no input_scaling with offset and scale")
    spec = {"offset": scaling["offset"], "scale": scaling["scale"]}
    spec.update({name: data[key] for key, name in _LEGACY_FIELDS.items() if key in data})
    if n_channels is not None:
        spec["n_channels"] = n_channels
    return InputSpec.from_dict(spec, where)
