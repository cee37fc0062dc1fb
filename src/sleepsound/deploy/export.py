"""ONNX export of a training run, checked against PyTorch on real cache inputs, optionally int8.

``export_run(run_dir)`` writes, into ``run_dir/export`` by default:

* ``model.onnx``: input ``logmel_scaled`` ``[B, C, 64, T]`` (batch and time dynamic), output
  ``logits`` ``[B, n_classes]``, made with the TorchScript exporter (``dynamo=False``; the
  dynamo exporter is the fallback);
* ``model.int8.onnx`` (``int8=True``): the smaller of the int8 candidates that work (see
  :func:`quantize_int8`);
* ``model_card.json``: everything a consumer needs to feed the model (classes, feature
  parameters, the ``input_spec``), the sha256 of each model file (model and card are one pair,
  checked on load: :mod:`.card`), where it came from, file sizes, parity figures, operating
  points (:mod:`.operating`), opset and library versions.

Parity is measured on the run's cache test split (up to ``PARITY_CLIPS`` clips spread over it),
at each clip's input length under the run's frames policy and at the full 501 frames.
Candidates are built in a private temporary folder outside the export folder (a killed export
leaves nothing there); every file is written to a temporary name and renamed into place, the
card last, and stale temporaries of a killed earlier export are removed.

``compare_variants`` measures single-thread batch-1 latency and test macro-F1 of PyTorch fp32,
ONNX Runtime fp32 and ONNX Runtime int8.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from sleepsound import __version__
from sleepsound.atomic import atomic_write_bytes
from sleepsound.deploy import operating
from sleepsound.deploy.card import CARD_NAME, card_spec, checkpoint_card
from sleepsound.deploy.runtime import (
    CHECKPOINT,
    INPUT_NAME,
    OUTPUT_NAME,
    Predictor,
    ort_predictor,
    ort_session,
    softmax,
    torch_predictor,
)
from sleepsound.deploy.staging import clean_stale
from sleepsound.features.cache import validate_cache
from sleepsound.features.logmel import N_FRAMES, N_MELS
from sleepsound.models.inputs import InputSpec
from sleepsound.models.profile import measure_latency, model_size_bytes
from sleepsound.progress import say
from sleepsound.runs import CONFIG_FILE, file_sha256, write_json
from sleepsound.training.checkpoint import load_model
from sleepsound.training.data import SplitData
from sleepsound.training.metrics import classification_metrics

__all__ = [
    "CARD_NAME",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "ExportError",
    "ExportResult",
    "compare_variants",
    "export_run",
    "onnx_bytes",
    "ort_session",
    "softmax",
]

ONNX_NAME = "model.onnx"
INT8_NAME = "model.int8.onnx"
EXPORT_SUBDIR = "export"
RUN_CONFIG = CONFIG_FILE
DEFAULT_OPSET = 17
TRACE_FRAMES = 100  # time length of the dummy input the exporter traces (the axis is dynamic)
TEST_SPLIT = "test"
PARITY_CLIPS = 256  # clips of the test split used for the parity check
FP32_PARITY_TOL = 1e-4  # max |logit diff| expected between ONNX Runtime fp32 and PyTorch
EVAL_BATCH = 64
CALIBRATION_SPLIT = "validation"
CALIBRATION_CLIPS = 256  # clips fed to static int8 calibration
INT8_MAX_F1_DROP = 0.05  # an int8 candidate losing more macro-F1 than this does not "work"
INT8_MAX_SLOWDOWN = 2.0  # nor does one this many times slower than fp32
LATENCY_WARMUP = 10
CANDIDATE_RUNS = 20  # latency calls per int8 candidate (the full comparison is compare_variants)
DEFAULT_LATENCY_RUNS = 100


class ExportError(ValueError):
    """A run that cannot be exported (missing files, exporter failure, broken model)."""


@dataclass
class ExportResult:
    out_dir: Path
    onnx_path: Path
    card_path: Path
    card: dict
    int8_path: Path | None = None


# ============================================================================= runs and caches


def load_run(run_dir: Path | str) -> tuple[nn.Module, dict, dict]:
    """(model in eval mode, checkpoint dict, run config) of a run directory."""
    run_dir = Path(run_dir)
    ckpt_path = run_dir / CHECKPOINT
    if not ckpt_path.is_file():
        raise ExportError(f"{run_dir}: no {CHECKPOINT} (is this a training run directory?)")
    model, ckpt = load_model(ckpt_path)
    config_path = run_dir / RUN_CONFIG
    config = {}
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ExportError(f"{config_path}: not readable JSON ({exc})") from exc
        if not isinstance(config, dict):
            raise ExportError(f"{config_path}: a run config is a JSON object")
    return model, ckpt, config


def split_cache_path(run_dir: Path, config: dict, cache_dir: Path | str | None) -> Path:
    """The run's test split cache (``cache_dir`` overrides the run config's)."""
    base = cache_dir if cache_dir is not None else config.get("cache_dir")
    if base is None:
        raise ExportError(f"{run_dir}: {RUN_CONFIG} names no cache_dir; pass cache_dir")
    return Path(base) / f"{TEST_SPLIT}.h5"


@dataclass
class CacheInputs:
    """Spectrograms (dB, ``[N, C, 64, 501]``), labels and real frame counts of some clips."""

    specs: np.ndarray
    labels: np.ndarray
    n_frames: np.ndarray


def read_cache(path: Path, indices: np.ndarray | None = None) -> CacheInputs:
    """Read clips of a cache file (all, or sorted ``indices``), with a channel axis."""
    validate_cache(path)
    with h5py.File(path, "r") as h5:
        sel = slice(None) if indices is None else np.sort(indices)
        specs = h5["spectrograms"][sel]
        labels, n_frames = h5["labels"][sel], h5["n_frames"][sel]
    if specs.ndim == 3:
        specs = specs[:, None]
    return CacheInputs(specs, labels, n_frames)


def spread_indices(n: int, k: int) -> np.ndarray:
    """Up to ``k`` indices spread evenly over ``range(n)`` (covers every part of a split)."""
    return np.unique(np.linspace(0, n - 1, num=min(n, k)).round().astype(int))


def length_groups(n_frames: np.ndarray, spec: InputSpec) -> Iterator[tuple[np.ndarray, int]]:
    """(clip indices, input length) groups under the spec's length policy, as training crops."""
    lengths = spec.lengths(n_frames)
    for t in np.unique(lengths):
        yield np.flatnonzero(lengths == t), int(t)


def model_input(specs: np.ndarray, t: int, spec: InputSpec) -> np.ndarray:
    """Cached dB spectrograms ``[B, C, 64, 501]`` -> scaled model input cropped to ``t`` frames."""
    return np.ascontiguousarray(spec.scale_db(specs[..., :t]), dtype=np.float32)


# ============================================================================= predictions


def predict_logits(
    predict: Predictor, inputs: CacheInputs, card: dict, full: bool = False
) -> np.ndarray:
    """Logits of every clip at its policy length (or all ``N_FRAMES`` frames when ``full``)."""
    spec = card_spec(card)
    policy = InputSpec(**{**spec.to_dict(), "frames": "full"}) if full else spec
    out = np.zeros((len(inputs.labels), len(card["classes"])), dtype=np.float32)
    for idx, t in length_groups(inputs.n_frames, policy):
        for start in range(0, len(idx), EVAL_BATCH):
            batch = idx[start : start + EVAL_BATCH]
            out[batch] = predict(model_input(inputs.specs[batch], t, spec))
    return out


def evaluate(predict: Predictor, cache_path: Path, card: dict) -> dict:
    """Test metrics of a predictor over a whole cache split, batched as training evaluates
    (:class:`~sleepsound.training.data.SplitData`), scored by
    :func:`~sleepsound.training.metrics.classification_metrics`."""
    split = SplitData(cache_path)
    if list(split.classes) != list(card["classes"]):
        raise ExportError(f"{cache_path}: classes {split.classes} differ from {card['classes']}")
    logits = np.zeros((len(split), len(card["classes"])), dtype=np.float32)
    for batch in split.batches(EVAL_BATCH, card_spec(card)):
        logits[batch.index] = predict(np.ascontiguousarray(batch.x.numpy(), dtype=np.float32))
    metrics, _ = classification_metrics(split.labels, logits.argmax(1), split.classes)
    return {
        "macro_f1": metrics["macro_f1"],
        "accuracy": metrics["acc"],
        "balanced_accuracy": metrics["balanced_acc"],
        "per_class_f1": {c: v["f1"] for c, v in metrics["per_class"].items()},
        "n_clips": metrics["n"],
    }


# ============================================================================= export


def onnx_bytes(model: nn.Module, in_channels: int, opset: int = DEFAULT_OPSET) -> tuple[bytes, str]:
    """Serialised ONNX of ``model`` with dynamic batch and time axes; (bytes, exporter name).

    The TorchScript exporter (``dynamo=False``) handles every registered model, the CRNN's GRU
    included; the dynamo exporter is tried only if it fails.
    """
    model = model.eval()
    dummy = torch.zeros(2, in_channels, N_MELS, TRACE_FRAMES)
    try:
        return _export(model, dummy, opset, dynamo=False), "torchscript"
    except Exception as first:  # fall back to the other exporter, then report both
        try:
            return _export(model, dummy, opset, dynamo=True), "dynamo"
        except Exception as second:
            raise ExportError(
                f"ONNX export failed: TorchScript exporter: {first}; dynamo exporter: {second}"
            ) from second


def _export(model: nn.Module, dummy: torch.Tensor, opset: int, dynamo: bool) -> bytes:
    buf = io.BytesIO()
    kwargs: dict = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME]}
    if dynamo:
        batch, time_ = torch.export.Dim("batch"), torch.export.Dim("time")
        kwargs["dynamic_shapes"] = {"x": {0: batch, 3: time_}}
    else:
        kwargs["dynamic_axes"] = {INPUT_NAME: {0: "batch", 3: "time"}, OUTPUT_NAME: {0: "batch"}}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        with torch.no_grad():
            result = torch.onnx.export(
                model, (dummy,), buf, opset_version=opset, dynamo=dynamo, **kwargs
            )
    if dynamo and buf.tell() == 0 and result is not None:  # some versions return a program
        result.save(buf)
    data = buf.getvalue()
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    return data


def fp32_parity(session: ort.InferenceSession, model: nn.Module, inputs: CacheInputs, card: dict):
    """Max |logit diff| ONNX Runtime vs PyTorch at policy lengths and at full length."""
    out = {}
    for name, full in (("policy_lengths", False), ("full_length", True)):
        ref = predict_logits(torch_predictor(model), inputs, card, full)
        got = predict_logits(ort_predictor(session), inputs, card, full)
        out[name] = _parity_figures(ref, got, inputs.n_frames, card, full)
    return out


def _parity_figures(ref, got, n_frames, card, full) -> dict:
    spec = card_spec(card)
    lengths = np.full_like(n_frames, spec.max_time) if full else spec.lengths(n_frames)
    return {
        "max_abs_logit_diff": float(np.max(np.abs(ref - got))),
        "top1_agreement": float(np.mean(ref.argmax(1) == got.argmax(1))),
        "n_clips": int(len(ref)),
        "lengths": sorted({int(t) for t in lengths}),
    }


def export_run(
    run_dir: Path | str,
    out_dir: Path | str | None = None,
    int8: bool = False,
    cache_dir: Path | str | None = None,
    opset: int = DEFAULT_OPSET,
    progress: bool = True,
    operating_points: Sequence[str] = (),
) -> ExportResult:
    """Export a run's best checkpoint to ONNX (see the module docstring); returns the paths
    and the model card.

    ``operating_points``: specs such as ``far=2/h`` or ``recall=0.9``; for each, per-class
    thresholds are chosen on the run's validation split and stored in the card (see
    :mod:`.operating`). Model files are made in a private temporary folder outside ``out_dir``,
    then renamed into place one by one, the card (with every model file's sha256) last.
    """
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / EXPORT_SUBDIR
    model, ckpt, config = load_run(run_dir)
    card = checkpoint_card(ckpt, str(run_dir / CHECKPOINT))
    spec = card_spec(card)
    points = {p: operating.for_run(run_dir, p, card["classes"]) for p in operating_points}
    cache_path = split_cache_path(run_dir, config, cache_dir)
    data, exporter = onnx_bytes(model, spec.n_channels, opset)
    session = ort_session(data)
    n_test = validate_cache(cache_path).n_samples
    inputs = read_cache(cache_path, spread_indices(n_test, PARITY_CLIPS))
    parity = {"fp32": fp32_parity(session, model, inputs, card)}
    contents = {ONNX_NAME: data}
    int8_info = None
    with tempfile.TemporaryDirectory(prefix="sleepsound-export-") as tmp:
        if int8:
            staged = Path(tmp) / ONNX_NAME
            staged.write_bytes(data)
            int8_path, int8_info = quantize_int8(staged, Path(tmp) / INT8_NAME, cache_path, card)
            contents[INT8_NAME] = int8_path.read_bytes()
            parity["int8"] = int8_parity(int8_path, model, inputs, card)
    card.update(
        {
            "format": "onnx",
            "input": {"name": INPUT_NAME, "shape": ["batch", spec.n_channels, N_MELS, "time"]},
            "output": {"name": OUTPUT_NAME, "shape": ["batch", len(card["classes"])]},
            "source_run": _source(run_dir, ckpt, cache_path),
            "files": {name: len(blob) for name, blob in contents.items()},
            "sha256": {name: _sha256(blob) for name, blob in contents.items()},
            "parity": parity,
            "parity_tolerance_fp32": FP32_PARITY_TOL,
            "int8": int8_info,
            "operating_points": points,
            "opset": opset,
            "exporter": exporter,
            "versions": _versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )
    _install(out, contents, card)
    onnx_path, card_path = out / ONNX_NAME, out / CARD_NAME
    if progress:
        _report(card, onnx_path)
    int8_out = out / INT8_NAME if int8 else None
    return ExportResult(out, onnx_path, card_path, card, int8_out)


def _sha256(blob: bytes) -> str:
    import hashlib

    return hashlib.sha256(blob).hexdigest()


def _install(out: Path, contents: dict[str, bytes], card: dict) -> None:
    """Put the model files in place, then the card that names their sha256 (so a model file
    never passes for another card's: see :func:`~sleepsound.deploy.card.check_model_file`).
    A model file of an earlier export that this one does not have is removed first."""
    out.mkdir(parents=True, exist_ok=True)
    clean_stale(out, (ONNX_NAME, INT8_NAME, CARD_NAME))
    for name in (ONNX_NAME, INT8_NAME):
        if name not in contents:
            (out / name).unlink(missing_ok=True)
    for name, blob in contents.items():
        atomic_write_bytes(out / name, blob)
    write_json(out / CARD_NAME, card)


def _source(run_dir: Path, ckpt: dict, cache_path: Path) -> dict:
    ckpt_path = run_dir / CHECKPOINT
    return {
        "run_dir": str(run_dir.resolve()),
        "checkpoint": str(ckpt_path.resolve()),
        "checkpoint_sha256": file_sha256(ckpt_path),
        "epoch": ckpt.get("epoch"),
        "test_cache": str(cache_path.resolve()),
    }


def _versions() -> dict:
    return {
        "sleepsound": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
    }


def _report(card: dict, onnx_path: Path) -> None:
    fp32 = card["parity"]["fp32"]
    diff = max(v["max_abs_logit_diff"] for v in fp32.values())
    say(
        f"exported {onnx_path} ({card['files'][ONNX_NAME]:,} bytes, {card['exporter']} exporter, "
        f"opset {card['opset']}): max |logit diff| vs PyTorch {diff:.2e} on "
        f"{fp32['policy_lengths']['n_clips']} test clips"
    )
    if card["int8"]:
        chosen = card["int8"]["chosen"]
        info = card["int8"]["candidates"][chosen]
        say(
            f"int8 ({chosen}): {info['size_bytes']:,} bytes, macro-F1 {info['macro_f1']:.4f} "
            f"(fp32 {card['int8']['fp32_macro_f1']:.4f}), int8 weights in "
            f"{', '.join(info['quantized']['int8_weights'])}"
        )


# ============================================================================= int8


def quantize_int8(fp32_path: Path, out_path: Path, cache_path: Path, card: dict):
    """Quantise to int8 two ways, measure both, keep the smaller one that works.

    * ``dynamic``: ``quantize_dynamic`` (weights int8, activations quantised on the fly):
      MatMul/Gemm become MatMulInteger and Conv becomes ConvInteger;
    * ``static``: QDQ ``quantize_static`` with per-channel weights, activations calibrated
      (MinMax) on validation-split inputs at their policy lengths; covers Conv, MatMul and Gemm
      except the first layer: quantising the input spectrogram itself to 8 bits cost a trained
      TinyCNN 0.14 test macro-F1, keeping its 160-weight first conv in fp32 cost nothing.

    The GRU of a CRNN stays fp32 either way (ONNX Runtime quantises no GRU).

    A candidate *works* when it runs, loses at most ``INT8_MAX_F1_DROP`` test macro-F1 and is
    at most ``INT8_MAX_SLOWDOWN`` times slower than fp32 (batch 1, one thread): ConvInteger,
    what dynamic quantisation makes of Conv, runs ~5x slower than fp32 Conv on CPUs without
    int8 dot-product instructions. The smallest working candidate is kept (when none works,
    the fastest one within the F1 budget, and failing that the best macro-F1).
    Returns (path, info for the model card).
    """
    fp32_session = ort_session(fp32_path)
    fp32_eval = evaluate(ort_predictor(fp32_session), cache_path, card)
    shape = (1, card_spec(card).n_channels, N_MELS, N_FRAMES)
    fp32_ms = ort_latency(fp32_session, shape, n_runs=CANDIDATE_RUNS)["median_ms"]
    candidates, paths = {}, {}
    with tempfile.TemporaryDirectory(prefix="sleepsound-int8-") as tmp:
        prepared = _prepare(fp32_path, Path(tmp) / "prepared.onnx")
        for method, build in (("dynamic", _quantize_dynamic), ("static", _quantize_static)):
            path = Path(tmp) / f"{method}.onnx"
            try:
                build(prepared, path, cache_path, card)
                session = ort_session(path)
                scores = evaluate(ort_predictor(session), cache_path, card)
            except Exception as exc:  # a failed candidate is reported, not fatal
                candidates[method] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                continue
            drop = fp32_eval["macro_f1"] - scores["macro_f1"]
            latency = ort_latency(session, shape, n_runs=CANDIDATE_RUNS)["median_ms"]
            candidates[method] = {
                "size_bytes": path.stat().st_size,
                **scores,
                "macro_f1_drop": drop,
                "latency_median_ms": latency,
                "works": drop <= INT8_MAX_F1_DROP and latency <= INT8_MAX_SLOWDOWN * fp32_ms,
                "quantized": quantized_ops(path),
            }
            paths[method] = path
        if not paths:
            raise ExportError(f"int8 quantisation failed: {candidates}")
        chosen = _choose(candidates, paths)
        out_path.write_bytes(paths[chosen].read_bytes())
    info = {
        "chosen": chosen,
        "candidates": candidates,
        "fp32_macro_f1": fp32_eval["macro_f1"],
        "fp32_latency_median_ms": fp32_ms,
        "max_f1_drop": INT8_MAX_F1_DROP,
        "max_slowdown": INT8_MAX_SLOWDOWN,
        "calibration": str(calibration_cache(cache_path).resolve()),
        "rule": "smallest candidate with macro-F1 drop <= max_f1_drop and latency <= "
        "max_slowdown x fp32 (batch 1, one thread), else the fastest within max_f1_drop, "
        "else the best macro-F1",
    }
    return out_path, info


def _choose(candidates: dict, paths: dict) -> str:
    working = [m for m in paths if candidates[m]["works"]]
    if working:
        return min(working, key=lambda m: candidates[m]["size_bytes"])
    accurate = [m for m in paths if candidates[m]["macro_f1_drop"] <= INT8_MAX_F1_DROP]
    if accurate:  # all too slow: the fastest of those that keep their accuracy
        return min(accurate, key=lambda m: candidates[m]["latency_median_ms"])
    return max(paths, key=lambda m: candidates[m]["macro_f1"])


def _prepare(fp32_path: Path, out: Path) -> Path:
    """ONNX Runtime's recommended pre-processing (shape inference, graph optimisation); the
    plain model if it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(fp32_path), str(out), skip_symbolic_shape=True)
        return out
    except Exception:  # pre-processing is an optimisation, quantisation works without it
        return fp32_path


def _quantize_dynamic(fp32_path: Path, out: Path, cache_path: Path, card: dict) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32_path), str(out), weight_type=QuantType.QInt8)


def calibration_cache(cache_path: Path) -> Path:
    """The validation split beside the test cache (the test split only if there is none), so
    that test clips are not used to fit activation ranges."""
    validation = cache_path.with_name(CALIBRATION_SPLIT + ".h5")
    return validation if validation.is_file() else cache_path


class CacheCalibration:
    """Calibration batches from a cache split: clips at their policy input lengths."""

    def __init__(self, cache_path: Path, card: dict, n_clips: int = CALIBRATION_CLIPS):
        n = validate_cache(cache_path).n_samples
        inputs = read_cache(cache_path, spread_indices(n, n_clips))
        spec = card_spec(card)
        self._batches = [
            model_input(inputs.specs[idx[s : s + EVAL_BATCH]], t, spec)
            for idx, t in length_groups(inputs.n_frames, spec)
            for s in range(0, len(idx), EVAL_BATCH)
        ]

    def get_next(self) -> dict | None:
        return {INPUT_NAME: self._batches.pop()} if self._batches else None

    def rewind(self) -> None:  # part of the CalibrationDataReader protocol; one pass suffices
        pass


def _quantize_static(fp32_path: Path, out: Path, cache_path: Path, card: dict) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CacheCalibration, CalibrationDataReader):
        pass

    first = [n.name for n in onnx.load(str(fp32_path)).graph.node if INPUT_NAME in n.input]
    quantize_static(
        str(fp32_path),
        str(out),
        Reader(calibration_cache(cache_path), card),
        nodes_to_exclude=first,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )


INT8_TYPES = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
Q_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")


def quantized_ops(path: Path) -> dict[str, list[str]]:
    """What an int8 model quantised: op types with int8 weights, and op types that take int8
    activations (through QDQ pairs, or integer ops quantising their input on the fly)."""
    graph = onnx.load(str(path)).graph
    int8_init = {t.name for t in graph.initializer if t.data_type in INT8_TYPES}
    dq = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    weight_dq = {o for n in dq if n.input[0] in int8_init for o in n.output}
    act_dq = {o for n in dq if n.input[0] not in int8_init for o in n.output}
    weights, activations = set(), set()
    for node in graph.node:
        if node.op_type in Q_OPS:
            continue
        if any(i in int8_init or i in weight_dq for i in node.input):
            weights.add(node.op_type)
        if node.op_type.endswith("Integer") or any(i in act_dq for i in node.input):
            activations.add(node.op_type)
    return {"int8_weights": sorted(weights), "int8_activations": sorted(activations)}


def int8_parity(int8_path: Path, model: nn.Module, inputs: CacheInputs, card: dict) -> dict:
    """How far int8 logits are from PyTorch fp32 (not expected to be tiny) and top-1 agreement."""
    ref = predict_logits(torch_predictor(model), inputs, card)
    got = predict_logits(ort_predictor(ort_session(int8_path)), inputs, card)
    return {"policy_lengths": _parity_figures(ref, got, inputs.n_frames, card, False)}


# ============================================================================= comparison


def ort_latency(
    session: ort.InferenceSession,
    shape: Sequence[int],
    n_warmup: int = LATENCY_WARMUP,
    n_runs: int = DEFAULT_LATENCY_RUNS,
) -> dict:
    """Median / p90 wall-clock latency of ``session.run`` on a fixed random input."""
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(n_warmup):
        session.run([OUTPUT_NAME], {INPUT_NAME: x})
    times = []
    for _ in range(n_runs):
        t0 = time.perf_counter()
        session.run([OUTPUT_NAME], {INPUT_NAME: x})
        times.append((time.perf_counter() - t0) * 1e3)
    return {
        "median_ms": float(np.median(times)),
        "p90_ms": float(np.percentile(times, 90)),
        "n_runs": n_runs,
    }


def compare_variants(
    run_dir: Path | str,
    export_result: ExportResult,
    cache_dir: Path | str | None = None,
    n_runs: int = DEFAULT_LATENCY_RUNS,
) -> list[dict]:
    """Latency (batch 1, one 5 s clip ``[1, C, 64, 501]``, one thread, warm-up then ``n_runs``
    timed calls) and test macro-F1 of PyTorch fp32, ONNX Runtime fp32 and (if exported) int8."""
    if n_runs < 1:
        raise ValueError(f"n_runs must be >= 1, got {n_runs}")
    run_dir = Path(run_dir)
    model, _, config = load_run(run_dir)
    card = export_result.card
    cache_path = split_cache_path(run_dir, config, cache_dir)
    shape = (1, card_spec(card).n_channels, N_MELS, N_FRAMES)
    rows = [
        _row(
            "pytorch_fp32",
            str(run_dir / CHECKPOINT),
            model_size_bytes(model),
            measure_latency(model, shape, n_warmup=LATENCY_WARMUP, n_runs=n_runs, threads=1),
            evaluate(torch_predictor(model), cache_path, card),
        )
    ]
    variants = [("onnxruntime_fp32", export_result.onnx_path)]
    if export_result.int8_path is not None:
        variants.append(("onnxruntime_int8", export_result.int8_path))
    for name, path in variants:
        session = ort_session(path, threads=1)
        latency = ort_latency(session, shape, n_runs=n_runs)
        scores = evaluate(ort_predictor(session), cache_path, card)
        rows.append(_row(name, str(path), path.stat().st_size, latency, scores))
    return rows


def _row(variant: str, file: str, size: int, latency: dict, scores: dict) -> dict:
    return {
        "variant": variant,
        "file": file,
        "size_bytes": int(size),
        "latency_median_ms": latency["median_ms"],
        "latency_p90_ms": latency["p90_ms"],
        "latency_runs": latency["n_runs"],
        "macro_f1": scores["macro_f1"],
        "accuracy": scores["accuracy"],
        "n_test_clips": scores["n_clips"],
    }
