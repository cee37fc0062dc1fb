"""The model card: what a consumer needs to feed an exported model, checked before use.

A card (``model_card.json``, beside ``model.onnx``) holds the classes, the feature parameters,
the model-input contract (``input_spec``: :meth:`~sleepsound.models.inputs.InputSpec.to_dict`),
the model config, and the **sha256 of every model file it describes** (``sha256``). Model and
card are one pair: :func:`check_model_file` refuses a model whose bytes are not the ones the card
was written for (e.g. an export killed after writing a new ``model.onnx`` beside an older card).
Cards written before ``input_spec`` existed (loose ``input_scaling``/``frames``/``bucket_frames``/
``channels``/``in_channels`` keys) are still read.
"""

from __future__ import annotations

import json
from pathlib import Path

from sleepsound.data.audio import check_policy
from sleepsound.features.logmel import FEATURE_PARAMS
from sleepsound.models.inputs import InputSpec, legacy_input_spec
from sleepsound.runs import file_sha256
from sleepsound.taxonomy import LABEL_TO_ID

CARD_NAME = "model_card.json"
REQUIRED_KEYS = ("classes", "model")
LEGACY_SPEC_KEYS = ("input_scaling",)


class CardError(ValueError):
    """A model card that cannot be used; the message names the file and the reason."""


def spec_from_checkpoint(ckpt: dict, where: str) -> InputSpec:
    """The input contract of a checkpoint (``input_spec``, or the older loose keys)."""
    from sleepsound.training.checkpoint import input_spec_of  # torch: only when exporting

    return input_spec_of(ckpt, where)


def checkpoint_card(ckpt: dict, where: str = "checkpoint") -> dict:
    """The part of a card that comes from a checkpoint: classes, features, input spec, model."""
    spec = spec_from_checkpoint(ckpt, where)
    return {
        "classes": list(ckpt["classes"]),
        "feature_params": dict(ckpt.get("feature_params", FEATURE_PARAMS)),
        "input_spec": spec.to_dict(),
        "model": ckpt["model"],
    }


def card_spec(card: dict, where: str = "model card") -> InputSpec:
    """The card's :class:`InputSpec` (new ``input_spec`` or the older loose keys)."""
    if "input_spec" in card:
        try:
            return InputSpec.from_dict(card["input_spec"], where)
        except ValueError as exc:
            raise CardError(str(exc)) from exc
    model = card.get("model") if isinstance(card.get("model"), dict) else {}
    try:
        n_channels = int(card.get("in_channels", model.get("in_channels", 1)))
        return legacy_input_spec(card, where, n_channels)
    except (TypeError, ValueError) as exc:
        raise CardError(str(exc)) from exc


def check_card(card, where: str) -> dict:
    """Validate a card's structure, classes, features and input spec; returns the card."""
    if not isinstance(card, dict):
        raise CardError(f"{where}: a model card is a JSON object, got {type(card).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in card]
    if "input_spec" not in card and not any(k in card for k in LEGACY_SPEC_KEYS):
        missing.append("input_spec")
    if missing:
        raise CardError(f"{where}: model card lacks {missing}")
    check_classes(card["classes"], where)
    spec = card_spec(card, where)
    try:
        check_policy(spec.channels)
    except ValueError as exc:
        raise CardError(f"{where}: {exc}") from exc
    params = card.get("feature_params", FEATURE_PARAMS)
    if not isinstance(params, dict):
        raise CardError(f"{where}: feature_params must be a mapping")
    diff = {k: (params.get(k), v) for k, v in FEATURE_PARAMS.items() if params.get(k) != v}
    if diff:
        raise CardError(f"{where}: model expects other features than log_mel computes: {diff}")
    return card


def check_classes(classes, where: str) -> list[str]:
    """A non-empty list of distinct DreamCatcher labels."""
    if not isinstance(classes, list) or not classes:
        raise CardError(f"{where}: classes must be a non-empty list, got {classes!r}"[:300])
    unknown = [c for c in classes if not isinstance(c, str) or c not in LABEL_TO_ID]
    if unknown:
        raise CardError(f"{where}: unknown classes {unknown[:5]}")
    if len(set(classes)) != len(classes):
        raise CardError(f"{where}: repeated classes in {classes}")
    return classes


def read_card(path: Path | str) -> dict:
    """Read and validate a card file; CardError names the file and says what is wrong."""
    path = Path(path)
    try:
        card = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CardError(f"{path}: model card not found") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CardError(f"{path}: not a readable JSON model card ({exc})") from exc
    return check_card(card, str(path))


def check_model_file(card: dict, model_path: Path, card_path: Path) -> str:
    """Refuse a model file whose sha256 is not the card's; returns the sha256.

    A card without ``sha256`` (written before cards carried it) is accepted as it is.
    """
    digest = file_sha256(model_path)
    hashes = card.get("sha256")
    if hashes is None:
        return digest
    expected = hashes.get(model_path.name) if isinstance(hashes, dict) else None
    if expected is None:
        raise CardError(f"{card_path}: describes no {model_path.name} (has {sorted(hashes)})")
    if expected != digest:
        raise CardError(
            f"{model_path}: sha256 {digest[:12]}... is not the {expected[:12]}... that "
            f"{card_path.name} was written for (an interrupted or mixed export?): export again"
        )
    return digest
