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


# ============================================================================= model + card pair


def _load_error(path: Path) -> str:
    from sleepsound.deploy.runtime import load_classifier

    with pytest.raises(ValueError) as info:
        load_classifier(path)
    return str(info.value)


def test_model_and_card_are_one_pair(runs, tmp_path):
    """A model.onnx that is not the one its card was written for (another run's export stopped
    after writing the model) is refused, naming the file; a card that is a JSON list, lacks
    keys or lists other classes than the model outputs is refused too; an older card without
    input_spec or sha256 still loads."""
    from sleepsound.deploy.runtime import load_classifier

    a = export_run(runs["tinycnn"], tmp_path / "a", progress=False, operating_points=["far=40/h"])
    b = export_run(runs["crnn"], tmp_path / "b", progress=False)
    assert load_classifier(a.onnx_path).classes == list(CLASSES)
    point = a.card["operating_points"]["far=40/h"]
    assert set(point["thresholds"]) == {"breathe", "snore"}
    assert all(v["far_per_h"] <= 40 for v in point["validation"].values())

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / CARD_NAME).write_bytes(a.card_path.read_bytes())
    (mixed / ONNX_NAME).write_bytes(b.onnx_path.read_bytes())
    message = _load_error(mixed / ONNX_NAME)
    assert "sha256" in message and "export again" in message and str(mixed) in message

    card = json.loads(a.card_path.read_text())
    legacy = {k: v for k, v in card.items() if k not in ("sha256", "input_spec")}
    spec = card["input_spec"]
    legacy.update(
        input_scaling={"offset": spec["offset"], "scale": spec["scale"]},
        frames=spec["frames"],
        bucket_frames=spec["bucket"],
        channels=spec["channels"],
    )
    (mixed / CARD_NAME).write_text(json.dumps(legacy))
    (mixed / ONNX_NAME).write_bytes(a.onnx_path.read_bytes())
    assert load_classifier(mixed / ONNX_NAME).spec.to_dict() == spec
    (mixed / ONNX_NAME).write_bytes(b"not an onnx model")
    assert "not a loadable ONNX model" in _load_error(mixed / ONNX_NAME)

    (mixed / ONNX_NAME).write_bytes(a.onnx_path.read_bytes())
    for bad, words in (
        ([1, 2], "JSON object"),
        ({"classes": list(CLASSES)}, "lacks"),
        ({**card, "classes": ["quiet", "snore"], "sha256": None}, "outputs 3"),
        ({**card, "classes": ["quiet", "snoring", "x"]}, "unknown classes"),
        ("{not json", "not a readable JSON"),
    ):
        text = bad if isinstance(bad, str) else json.dumps(bad)
        (mixed / CARD_NAME).write_text(text)
        message = _load_error(mixed / ONNX_NAME)
        assert words in message and CARD_NAME in message, (bad, message)


EXPORT_CHILD = """
import sys
from sleepsound.deploy.export import export_run
export_run(sys.argv[1], sys.argv[2], progress=False)
"""


def test_killed_export_leaves_a_refused_pair_or_the_old_one(runs, tmp_path):
    """kill -9 at random moments of an export into a folder holding another run's export: the
    folder never holds a tmpXXXX/ folder, and the model there either loads with its own card
    or is refused; the next export cleans up every temporary and loads."""
    import subprocess
    import sys
    import time

    from sleepsound.deploy.runtime import load_classifier

    out = tmp_path / "export"
    export_run(runs["tinycnn"], out, progress=False)
    rng = np.random.default_rng(0)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", EXPORT_CHILD, str(runs["crnn"]), str(out)])
        time.sleep(float(rng.uniform(1.0, 6.0)))
        proc.kill()
        proc.wait()
        assert not [p for p in out.iterdir() if p.is_dir()]
        try:
            clf = load_classifier(out / ONNX_NAME)
        except ValueError as err:
            assert "sha256" in str(err)
        else:
            assert clf.card["model"]["name"] in ("tinycnn", "crnn")
    (out / f".{ONNX_NAME}.left.tmp").write_bytes(b"partial")
    export_run(runs["crnn"], out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted([ONNX_NAME, CARD_NAME])
    assert load_classifier(out / ONNX_NAME).card["model"]["name"] == "crnn"


def test_cli_export_and_detect_bad_inputs_are_one_error_line(runs, tmp_path):
    from typer.testing import CliRunner

    from sleepsound.cli import app

    model = export_run(runs["tinycnn"], tmp_path / "e", progress=False).onnx_path
    bad_card = tmp_path / "listcard"
    bad_card.mkdir()
    (bad_card / ONNX_NAME).write_bytes(model.read_bytes())
    (bad_card / CARD_NAME).write_text("[1, 2, 3]")
    rec = tmp_path / "r.wav"
    import soundfile as sf

    sf.write(rec, np.zeros((16000 * 3, 2), np.float32) + 0.01, 16000)
    cases = [
        (["export", "--run", str(tmp_path / "runs" / "tinycnn_typo")], "tinycnn_typo"),
        (["export", "--run", str(runs["tinycnn"]), "--operating-point", "far=2"], "far=2"),
        (["detect", str(rec), "--model", str(bad_card / ONNX_NAME)], CARD_NAME),
        (["detect", str(rec), "--model", str(model), "--operating-point", "x=1"], "x=1"),
        (["detect", str(tmp_path / "missing.wav"), "--model", str(model)], "missing.wav"),
    ]
    for args, words in cases:
        result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o")])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2, (args, result.output)
        assert not isinstance(result.exception, Exception) or isinstance(
            result.exception, SystemExit
        ), (args, result.exception)
        assert any(line.startswith("error:") and words in line for line in lines), (args, lines)
