"""ONNX export (sleepsound.deploy.export): parity with PyTorch, int8, model card, comparison.

Real synthetic clips -> real HDF5 cache -> a TinyCNN trained with ``train_run``; TinyCNN+CBAM and
CRNN runs share its cache and input scaling (untrained weights: parity does not need training).
Real ONNX Runtime throughout, no mocks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from sleepsound.deploy.export import (
    CARD_NAME,
    FP32_PARITY_TOL,
    INPUT_NAME,
    INT8_NAME,
    ONNX_NAME,
    OUTPUT_NAME,
    ExportError,
    compare_variants,
    export_run,
    ort_session,
)
from sleepsound.features.logmel import FEATURE_PARAMS, N_FRAMES, N_MELS
from sleepsound.models import create_model
from sleepsound.runs import file_sha256
from sleepsound.training.checkpoint import (
    checkpoint_payload,
    input_spec_of,
    load_model,
    save_checkpoint,
)

CLASSES = ("quiet", "breathe", "snore")
N_CLIPS = 300  # synthetic clips over the three splits (45 test clips)
TIME_LENGTHS = (1, 7, 50, 123, N_FRAMES)  # dynamic time axis: odd, short and full lengths
MODELS = ("tinycnn", "tinycnn_cbam", "crnn")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    from sleepsound.data.synth import generate_dataset
    from sleepsound.features.cache import build_split

    base = tmp_path_factory.mktemp("export_cache")
    generate_dataset(base / "data", n_clips=N_CLIPS, seed=0, labels=CLASSES, progress=False)
    for split in ("train", "validation", "test"):
        build_split(base / "data", base / "cache", split, CLASSES, progress=False)
    return base / "cache"


@pytest.fixture(scope="module")
def runs(cache_dir, tmp_path_factory) -> dict[str, Path]:
    """model name -> run directory. TinyCNN is trained (2 epochs) so that F1 means something."""
    from sleepsound.config import TrainConfig
    from sleepsound.training.train import train_run

    results = tmp_path_factory.mktemp("export_results")
    cfg = TrainConfig(
        cache_dir=cache_dir, results_dir=results, model="tinycnn", epochs=2, threads=1
    )
    out = {"tinycnn": train_run(cfg, progress=False)}
    _, ckpt = load_model(out["tinycnn"] / "checkpoints" / "best.pt")
    spec = input_spec_of(ckpt)
    torch.manual_seed(0)
    for name in MODELS[1:]:
        run = results / "runs" / name
        model = create_model(name, len(CLASSES))
        payload = checkpoint_payload(model, CLASSES, spec)
        save_checkpoint(run / "checkpoints" / "best.pt", payload)
        config = {"cache_dir": str(cache_dir), "model": name, "classes": list(CLASSES)}
        (run / "config.json").write_text(json.dumps(config))
        out[name] = run
    return out


@pytest.fixture(scope="module")
def int8_export(runs, tmp_path_factory):
    return export_run(runs["tinycnn"], tmp_path_factory.mktemp("int8"), int8=True, progress=False)


def max_diff_random_inputs(model: torch.nn.Module, session: ort.InferenceSession) -> float:
    """Max |logit diff| over batch sizes 1 and 3 and every length in TIME_LENGTHS."""
    rng = np.random.default_rng(0)
    worst = 0.0
    for batch in (1, 3):
        for t in TIME_LENGTHS:
            x = rng.standard_normal((batch, 1, N_MELS, t)).astype(np.float32)
            with torch.inference_mode():
                ref = model(torch.from_numpy(x)).numpy()
            got = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
            assert got.shape == (batch, len(CLASSES))
            worst = max(worst, float(np.abs(ref - got).max()))
    return worst


@pytest.mark.parametrize("name", MODELS)
def test_fp32_parity_with_dynamic_batch_and_time(name, runs, tmp_path):
    result = export_run(runs[name], tmp_path / "export", progress=False)
    assert result.onnx_path == tmp_path / "export" / ONNX_NAME
    graph = onnx.load(str(result.onnx_path)).graph
    assert [i.name for i in graph.input] == [INPUT_NAME]
    assert [o.name for o in graph.output] == [OUTPUT_NAME]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[3].dim_param  # batch and time are symbolic
    assert [d.dim_value for d in dims[1:3]] == [1, N_MELS]

    # parity on real cache inputs, measured by export_run itself
    parity = result.card["parity"]["fp32"]
    assert parity["policy_lengths"]["max_abs_logit_diff"] < FP32_PARITY_TOL
    assert parity["full_length"]["max_abs_logit_diff"] < FP32_PARITY_TOL
    assert parity["full_length"]["lengths"] == [N_FRAMES]
    assert len(parity["policy_lengths"]["lengths"]) >= 3  # several bucketed lengths
    assert parity["policy_lengths"]["top1_agreement"] == 1.0

    model, _ = load_model(runs[name] / "checkpoints" / "best.pt")
    assert max_diff_random_inputs(model, ort_session(result.onnx_path)) < FP32_PARITY_TOL
    assert not [p.name for p in result.out_dir.iterdir() if p.name.startswith(".")]


def test_int8_model_runs_is_smaller_and_f1_is_measured(int8_export):
    card = int8_export.card
    out = int8_export.out_dir
    fp32_size, int8_size = ((out / n).stat().st_size for n in (ONNX_NAME, INT8_NAME))
    assert int8_export.int8_path == int8_export.out_dir / INT8_NAME
    assert int8_size < 0.6 * fp32_size
    assert card["files"] == {ONNX_NAME: fp32_size, INT8_NAME: int8_size}

    info = card["int8"]
    chosen = info["candidates"][info["chosen"]]
    assert chosen["size_bytes"] == int8_size
    assert 0.0 <= chosen["macro_f1"] <= 1.0
    assert chosen["macro_f1_drop"] == pytest.approx(info["fp32_macro_f1"] - chosen["macro_f1"])
    assert set(info["candidates"]) == {"dynamic", "static"}
    # both methods quantise the convolutions' weights (the conv stack is most of the model)
    assert "Conv" in info["candidates"]["static"]["quantized"]["int8_weights"]
    assert "ConvInteger" in info["candidates"]["dynamic"]["quantized"]["int8_weights"]
    assert Path(info["calibration"]).name == "validation.h5"

    session = ort_session(int8_export.int8_path)
    for t in (13, N_FRAMES):
        x = np.random.default_rng(t).standard_normal((2, 1, N_MELS, t)).astype(np.float32)
        out = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        assert out.shape == (2, len(CLASSES)) and np.isfinite(out).all()
    assert card["parity"]["int8"]["policy_lengths"]["top1_agreement"] >= 0.8


def test_model_card_contents(int8_export, runs):
    card = json.loads((int8_export.out_dir / CARD_NAME).read_text())
    assert card == json.loads(json.dumps(int8_export.card))
    _, ckpt = load_model(runs["tinycnn"] / "checkpoints" / "best.pt")
    assert card["classes"] == list(CLASSES)
    assert card["feature_params"] == FEATURE_PARAMS
    spec = input_spec_of(ckpt)
    assert card["input_spec"] == spec.to_dict()
    assert (spec.frames, spec.bucket, spec.channels, spec.n_channels) == ("bucket", 50, "mean", 1)
    assert card["model"]["name"] == "tinycnn"
    out = int8_export.out_dir
    assert card["sha256"] == {n: file_sha256(out / n) for n in (ONNX_NAME, INT8_NAME)}
    assert card["input"]["name"] == INPUT_NAME and card["output"]["name"] == OUTPUT_NAME
    source = card["source_run"]
    assert Path(source["run_dir"]) == runs["tinycnn"].resolve()
    assert len(source["checkpoint_sha256"]) == 64
    assert card["opset"] == 17 and card["exporter"] == "torchscript"
    assert card["versions"]["onnxruntime"] == ort.__version__
    assert card["parity_tolerance_fp32"] == FP32_PARITY_TOL


def test_compare_variants_latency_and_f1(int8_export, runs):
    rows = compare_variants(runs["tinycnn"], int8_export, n_runs=100)
    by_name = {r["variant"]: r for r in rows}
    assert list(by_name) == ["pytorch_fp32", "onnxruntime_fp32", "onnxruntime_int8"]
    for row in rows:
        assert row["latency_runs"] == 100
        assert 0 < row["latency_median_ms"] <= row["latency_p90_ms"]
        assert row["n_test_clips"] == 45 and row["size_bytes"] > 0
    # the same predictions give the same F1, and PyTorch matches training's own evaluation
    assert by_name["onnxruntime_fp32"]["macro_f1"] == by_name["pytorch_fp32"]["macro_f1"]
    metrics = json.loads((runs["tinycnn"] / "metrics.json").read_text())
    assert by_name["pytorch_fp32"]["macro_f1"] == pytest.approx(metrics["test"]["macro_f1"])
    chosen = int8_export.card["int8"]["candidates"][int8_export.card["int8"]["chosen"]]
    assert by_name["onnxruntime_int8"]["macro_f1"] == pytest.approx(chosen["macro_f1"])
    assert by_name["onnxruntime_int8"]["size_bytes"] < by_name["onnxruntime_fp32"]["size_bytes"]


def test_export_errors_name_the_problem(runs, tmp_path):
    with pytest.raises(ExportError, match="no checkpoints/best.pt"):
        export_run(tmp_path)
    with pytest.raises(ExportError, match="names no cache_dir"):
        run = tmp_path / "run"
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "best.pt").write_bytes(
            (runs["crnn"] / "checkpoints" / "best.pt").read_bytes()
        )
        export_run(run)
