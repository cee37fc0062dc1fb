"""Checkpoints: plain dicts of tensors and JSON-like values, loaded with weights_only=True.

A checkpoint holds everything needed to use the model on new audio: the model config (to
rebuild it through the registry), the class list, the feature parameters, and the whole
model-input contract as one :class:`~sleepsound.models.inputs.InputSpec` (``input_spec``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from sleepsound.features.logmel import FEATURE_PARAMS
from sleepsound.models import create_model_from_config
from sleepsound.models.inputs import InputSpec, legacy_input_spec


class CheckpointError(ValueError):
    pass


# What every consumer (evaluate, distill, export, detect) reads from a checkpoint (plus the
# input spec: ``input_spec``, or the older loose keys, see input_spec_of).
REQUIRED_KEYS = ("state_dict", "model", "classes")


def checkpoint_payload(model: nn.Module, classes, spec: InputSpec, **extra) -> dict:
    return {
        "state_dict": model.state_dict(),
        "model": model.config,
        "classes": list(classes),
        "feature_params": dict(FEATURE_PARAMS),
        "input_spec": spec.to_dict(),
        **extra,
    }


def input_spec_of(ckpt: dict, where: Path | str = "checkpoint") -> InputSpec:
    """The model-input contract of a checkpoint: its ``input_spec``, or one rebuilt from the
    loose keys of older checkpoints (:func:`~sleepsound.models.inputs.legacy_input_spec`).
    CheckpointError naming ``where`` otherwise."""
    try:
        if "input_spec" in ckpt:
            return InputSpec.from_dict(ckpt["input_spec"], str(where))
        return legacy_input_spec(ckpt, str(where))
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None


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
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: a checkpoint is a dict, got {type(ckpt).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    try:
        ckpt["input_spec"] = input_spec_of(ckpt, path).to_dict()
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    try:
        model = create_model_from_config(ckpt["model"])
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CheckpointError(
            f"{path}: cannot rebuild its model {ckpt['model']!r} ({exc})"
        ) from None
    problem = state_dict_mismatch(model, ckpt["state_dict"])
    if problem:
        raise CheckpointError(f"{path}: weights do not fit the model {ckpt['model']}: {problem}")
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt


def state_dict_mismatch(model: nn.Module, state_dict) -> str:
    """'' when ``state_dict`` fits ``model`` exactly, else one line: missing/unexpected keys
    and the first shape mismatches."""
    if not isinstance(state_dict, dict):
        return f"state_dict is a {type(state_dict).__name__}, not a dict"
    want = model.state_dict()
    missing = [k for k in want if k not in state_dict]
    extra = [k for k in state_dict if k not in want]
    shapes = [
        f"{k} {tuple(getattr(state_dict[k], 'shape', ()))} != {tuple(v.shape)}"
        for k, v in want.items()
        if k in state_dict and tuple(getattr(state_dict[k], "shape", ())) != tuple(v.shape)
    ]
    parts = []
    if missing:
        parts.append(f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    if extra:
        parts.append(f"unexpected {extra[:3]}{' ...' if len(extra) > 3 else ''}")
    if shapes:
        parts.append(f"shape {'; '.join(shapes[:3])}{' ...' if len(shapes) > 3 else ''}")
    return ", ".join(parts)


def place(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move a model to ``device`` with channels-last convolution weights, the layout its
    convolutions run fastest in on CPU (same math within 1e-4: tests/test_speed.py; the
    training speed-up is measured by benchmarks/train_speed.py)."""
    return model.to(device=device, memory_format=torch.channels_last)
