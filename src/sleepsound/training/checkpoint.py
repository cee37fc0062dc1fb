"""Checkpoints: plain dicts of tensors and JSON-like values, loaded with weights_only=True.

A checkpoint holds everything needed to use the model on new audio: the model config (to
rebuild it through the registry), the class list, the feature parameters, the input scaling and
length policy, and the channel count.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from sleepsound.features.logmel import FEATURE_PARAMS
from sleepsound.models import create_model_from_config


class CheckpointError(ValueError):
    pass


def checkpoint_payload(
    model: nn.Module, classes, scaling: dict, frames: str, bucket: int, **extra
) -> dict:
    return {
        "state_dict": model.state_dict(),
        "model": model.config,
        "classes": list(classes),
        "feature_params": dict(FEATURE_PARAMS),
        "input_scaling": dict(scaling),
        "frames": frames,
        "bucket_frames": bucket,
        **extra,
    }


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write atomically: a reader never sees a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path | str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc


def load_model(path: Path | str) -> tuple[nn.Module, dict]:
    """Rebuild the model of a checkpoint in eval mode; returns (model, checkpoint dict)."""
    ckpt = load_checkpoint(path)
    for key in ("state_dict", "model", "classes"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    model = create_model_from_config(ckpt["model"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt
