"""Running a model: PyTorch and ONNX Runtime predictors, and loading a classifier with its card.

A *predictor* maps scaled model input ``[B, C, 64, T]`` float32 to logits ``[B, K]``. A
:class:`Classifier` is a predictor turned into class probabilities, with its model card and
:class:`~sleepsound.models.inputs.InputSpec`. :func:`load_classifier` takes a run directory
(its best checkpoint; exported to ONNX in memory, or run in PyTorch) or an exported ``.onnx``
with its card beside it (checked: the card's sha256 must be the model file's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from sleepsound.deploy.card import (
    CARD_NAME,
    CardError,
    card_spec,
    check_card,
    check_model_file,
    checkpoint_card,
    read_card,
)
from sleepsound.models.inputs import InputSpec
from sleepsound.runs import BEST_CHECKPOINT

INPUT_NAME = "logmel_scaled"
OUTPUT_NAME = "logits"
BACKENDS = ("auto", "onnx", "torch")
CHECKPOINT = Path(BEST_CHECKPOINT)  # inside a run directory

Predictor = Callable[[np.ndarray], np.ndarray]  # [B, C, 64, T] float32 -> logits [B, K]


class ModelFileError(ValueError):
    """A model file that cannot be loaded; the message names it."""


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def torch_predictor(model: nn.Module) -> Predictor:
    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return predict


def ort_session(model: Path | bytes, threads: int = 1) -> ort.InferenceSession:
    """A CPU session with ``threads`` intra-op threads and one inter-op thread; a file that is
    not a loadable ONNX model is a ModelFileError naming it."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    source = str(model) if isinstance(model, Path) else model
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        where = model if isinstance(model, Path) else "ONNX model bytes"
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ModelFileError(f"{where}: not a loadable ONNX model ({first})") from exc


def ort_predictor(session: ort.InferenceSession) -> Predictor:
    def predict(x: np.ndarray) -> np.ndarray:
        return session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]

    return predict


@dataclass
class Classifier:
    """A model with its input contract: ``predict`` maps scaled input ``[B, C, 64, T]`` to
    class probabilities ``[B, K]``."""

    predict: Callable[[np.ndarray], np.ndarray]
    card: dict
    identity: dict

    @property
    def classes(self) -> list[str]:
        return list(self.card["classes"])

    @property
    def spec(self) -> InputSpec:
        return card_spec(self.card)

    @property
    def channels(self) -> str:
        return self.spec.channels


def _probabilities(logits_fn: Predictor):
    return lambda x: softmax(np.asarray(logits_fn(x), dtype=np.float64))


def load_classifier(model: Path | str, backend: str = "auto") -> Classifier:
    """A run directory (its best checkpoint) or an exported ``.onnx`` with its model card.

    backend (run directories): ``onnx`` exports the checkpoint in memory and runs it with ONNX
    Runtime (several times faster on CPU than PyTorch for these models; parity < 1e-4, see
    tests/test_export.py); ``torch`` runs PyTorch; ``auto`` is ``onnx``, falling back to
    ``torch`` if the export fails. An ``.onnx`` file always runs with ONNX Runtime.
    """
    from sleepsound.deploy.export import onnx_bytes
    from sleepsound.training.checkpoint import load_model

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    path = Path(model)
    if path.suffix == ".onnx":
        return _onnx_classifier(path)
    ckpt_path = path / CHECKPOINT if path.is_dir() else path
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"{path}: neither a run directory with {CHECKPOINT} nor .onnx")
    net, ckpt = load_model(ckpt_path)
    card = check_card(checkpoint_card(ckpt, str(ckpt_path)), str(ckpt_path))
    identity = {
        "kind": "run",
        "path": str(path.resolve()),
        "checkpoint": str(ckpt_path.resolve()),
        "model": card["model"],
        "run_dir": str((path if path.is_dir() else ckpt_path.parent.parent).resolve()),
    }
    if backend in ("auto", "onnx"):
        try:
            data, _ = onnx_bytes(net, card_spec(card).n_channels)
            predict = _probabilities(ort_predictor(ort_session(data, threads=1)))
            return Classifier(predict, card, {**identity, "backend": "onnxruntime"})
        except Exception:
            if backend == "onnx":
                raise
    return Classifier(_probabilities(torch_predictor(net)), card, {**identity, "backend": "torch"})


def _onnx_classifier(path: Path) -> Classifier:
    card_path = path.with_name(CARD_NAME)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    if not card_path.is_file():
        raise FileNotFoundError(f"{path}: needs its {CARD_NAME} beside it")
    card = read_card(card_path)
    digest = check_model_file(card, path, card_path)
    session = ort_session(path, threads=1)
    outputs = session.get_outputs()
    dims = outputs[0].shape if outputs else []
    if len(dims) == 2 and isinstance(dims[1], int) and dims[1] != len(card["classes"]):
        raise CardError(
            f"{card_path}: lists {len(card['classes'])} classes but {path.name} outputs {dims[1]}"
        )
    identity = {
        "kind": "onnx",
        "path": str(path.resolve()),
        "sha256": digest,
        "model": card.get("model"),
        "source_run": card.get("source_run"),
        "run_dir": (card.get("source_run") or {}).get("run_dir"),
        "backend": "onnxruntime",
    }
    return Classifier(_probabilities(ort_predictor(session)), card, identity)
