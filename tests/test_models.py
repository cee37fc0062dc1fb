"""Tests for sleepsound.models: registry, exact parameter counts, shapes, MACs, latency."""

from __future__ import annotations

import math

import pytest
import torch

from sleepsound.models import create_model, create_model_from_config, list_models
from sleepsound.models.profile import (
    count_macs,
    count_parameters,
    deployment_figures,
    measure_latency,
    model_size_bytes,
)

MODELS = ["tinycnn", "crnn", "tinycnn_cbam"]
CBAM_GRID = [(r, k) for r in (4, 8, 16) for k in (3, 7, 11)]


def test_registry_lists_models():
    assert set(MODELS) <= set(list_models())
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize(
    "name, kwargs, expected",
    [
        ("tinycnn", {}, 23_491),
        ("crnn", {"hidden": 64, "layers": 2}, 73_411),
        ("tinycnn_cbam", {"r": 8, "k": 3}, 23_801),
        ("tinycnn_cbam", {"r": 8, "k": 7}, 23_881),
    ],
)
def test_reference_parameter_counts(name, kwargs, expected):
    model = create_model(name, n_classes=3, **kwargs)
    assert count_parameters(model) == expected
    assert model_size_bytes(model) == 4 * expected  # no buffers


@pytest.mark.parametrize("r, k", CBAM_GRID)
def test_cbam_grid_builds_and_runs(r, k):
    model = create_model("tinycnn_cbam", n_classes=3, r=r, k=k)
    hidden = 32 // r
    mlp = 2 * 32 * hidden + hidden + 32  # Linear(32, h) + Linear(h, 32), both with bias
    assert count_parameters(model) == 23_491 + mlp + 2 * k * k
    assert model(torch.randn(2, 1, 64, 13)).shape == (2, 3)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("batch, n_frames", [(1, 1), (3, 2), (2, 7), (2, 8), (4, 101), (1, 501)])
def test_output_shapes(name, batch, n_frames):
    model = create_model(name, n_classes=5).eval()
    with torch.no_grad():
        out = model(torch.randn(batch, 1, 64, n_frames))
    assert out.shape == (batch, 5)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_two_input_channels_adds_144(name):
    one = create_model(name, n_classes=3)
    two = create_model(name, n_classes=3, in_channels=2)
    assert count_parameters(two) - count_parameters(one) == 16 * 9 == 144
    assert two(torch.randn(2, 2, 64, 9)).shape == (2, 3)


def test_cbam_switches():
    base = 23_491
    counts = {
        (c, s): count_parameters(create_model("tinycnn_cbam", 3, channel=c, spatial=s))
        for c in (True, False)
        for s in (True, False)
    }
    assert counts[(True, True)] == base + 292 + 18
    assert counts[(True, False)] == base + 292
    assert counts[(False, True)] == base + 18
    assert counts[(False, False)] == base


def test_crnn_configurable():
    model = create_model("crnn", n_classes=3, hidden=32, layers=1)
    gru = 3 * (64 * 32 + 32 * 32 + 2 * 32)
    assert count_parameters(model) == 23_296 + gru + 32 * 3 + 3


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match="available models:.*tinycnn"):
        create_model("resnet9000", n_classes=3)


def test_bad_kwargs_lists_accepted():
    with pytest.raises(TypeError, match="accepted kwargs: hidden, layers"):
        create_model("crnn", n_classes=3, hiden=32)
    with pytest.raises(ValueError, match="odd"):
        create_model("tinycnn_cbam", n_classes=3, k=4)


@pytest.mark.parametrize("name", MODELS)
def test_config_roundtrip_and_deterministic_init(name):
    torch.manual_seed(0)
    a = create_model(name, n_classes=4, in_channels=2)
    torch.manual_seed(0)
    b = create_model_from_config(a.config)
    assert a.config == b.config
    assert a.config["in_channels"] == 2 and a.config["n_classes"] == 4
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    torch.manual_seed(1)
    c = create_model(name, n_classes=4, in_channels=2)
    assert not torch.equal(sa["features.0.0.weight"], c.state_dict()["features.0.0.weight"])


def _conv_stack_macs(n_frames: int, in_ch: int = 1) -> int:
    """Hand count of the three 3x3 convs; pools use ceil mode."""
    t1, t2 = math.ceil(n_frames / 2), math.ceil(n_frames / 4)
    conv1 = 64 * n_frames * 16 * in_ch * 9
    conv2 = 32 * t1 * 32 * 16 * 9
    conv3 = 16 * t2 * 64 * 32 * 9
    return conv1 + conv2 + conv3


def test_macs_tinycnn_hand_computed():
    model = create_model("tinycnn", n_classes=3)
    expected = _conv_stack_macs(501) + 64 * 3
    # 64*501*16*9 + 32*251*32*16*9 + 16*126*64*32*9 + 64*3
    assert expected == 4_617_216 + 37_011_456 + 37_158_912 + 192
    assert count_macs(model, (1, 1, 64, 501)) == expected
    two = create_model("tinycnn", n_classes=3, in_channels=2)
    assert count_macs(two, (1, 2, 64, 501)) == expected + 64 * 501 * 16 * 9


def test_macs_crnn_and_cbam():
    t = math.ceil(501 / 4)
    gru = t * 2 * 3 * (64 * 64 + 64 * 64)
    crnn = create_model("crnn", n_classes=3)
    assert count_macs(crnn, (1, 1, 64, 501)) == _conv_stack_macs(501) + gru + 64 * 3

    cbam = create_model("tinycnn_cbam", n_classes=3, r=8, k=3)
    mlp = 2 * (32 * 4 + 4 * 32)  # shared MLP on avg and max descriptors
    spatial = 16 * t * 2 * 9  # after block 2: 16 mel x ceil(501/4) frames
    assert count_macs(cbam, (1, 1, 64, 501)) == _conv_stack_macs(501) + 64 * 3 + mlp + spatial


def test_measure_latency_and_restores_state():
    model = create_model("tinycnn", n_classes=3).train()
    threads = torch.get_num_threads()
    lat = measure_latency(model, (1, 1, 64, 101), n_warmup=1, n_runs=7)
    assert lat["n_runs"] == 7
    assert 0 < lat["median_ms"] <= lat["p90_ms"] < 10_000
    assert lat["mean_ms"] > 0
    assert torch.get_num_threads() == threads
    assert model.training


def test_deployment_figures():
    model = create_model("tinycnn_cbam", n_classes=3, in_channels=2)
    figs = deployment_figures(model, n_frames=64, n_runs=3)
    assert figs["params"] == 23_801 + 144
    assert figs["fp32_bytes"] == 4 * figs["params"]
    assert figs["macs"] == count_macs(model, (1, 2, 64, 64))
    assert 0 < figs["latency_median_ms"] <= figs["latency_p90_ms"]


def _padded_log_mel(seconds: float = 0.83, seed: int = 0) -> tuple[torch.Tensor, int]:
    """A real cached-style input: a synthetic snore clip through the log-mel front end,
    zero-padded to 5 s (the padding sits at the dB floor), standardised -> [1, 1, 64, 501]."""
    import numpy as np

    from sleepsound.data.synth import draw_subject, render_clip
    from sleepsound.features.logmel import clip_log_mel

    rng = np.random.default_rng(seed)
    audio = render_clip("snore", draw_subject(rng, "s0"), seconds, rng).mean(axis=1)
    specs, n_frames = clip_log_mel([audio])
    x = torch.from_numpy(specs[0]).float()[None, None]
    return (x + 40.0) / 20.0, int(n_frames[0])


def test_crnn_readout_ignores_padding():
    """The default readout gives the same logits whether a clip is cropped to its bucket or
    carries more padding frames (up to all 501); the reference's last-step readout does not."""
    from sleepsound.models.crnn import real_steps

    x, n = _padded_log_mel()
    assert 50 < n < 100
    torch.manual_seed(0)
    model = create_model("crnn", n_classes=3).eval()
    reference = create_model("crnn", n_classes=3, readout="last").eval()
    reference.load_state_dict(model.state_dict())
    assert count_parameters(model) == count_parameters(reference) == 73_411
    varies = (x[0, 0].amax(dim=0) > x[0, 0].amin(dim=0)).nonzero()
    last_real = int(varies.max()) + 1  # n_frames, or one more: a centred frame overlapping the end
    assert n <= last_real <= n + 2
    assert real_steps(x[..., :100]).item() == math.ceil(last_real / 4)
    with torch.no_grad():
        crops = [x[..., :t] for t in (100, 150, 300, 501)]
        fixed = [model(c) for c in crops]
        last = [reference(c) for c in crops]
    for out in fixed[1:]:
        torch.testing.assert_close(out, fixed[0], atol=1e-5, rtol=1e-5)
    assert max((out - last[0]).abs().max().item() for out in last[1:]) > 1e-4
    # the same scaled values, in a batch with another clip: still the same logits per clip
    other, _ = _padded_log_mel(2.4, seed=1)
    with torch.no_grad():
        batch = model(torch.cat([x[..., :300], other[..., :300]]))
    torch.testing.assert_close(batch[:1], fixed[0], atol=1e-5, rtol=1e-5)


def test_crnn_readout_without_padding_is_last_step():
    """Input with no padding (a whole-night window): both readouts read the last step."""
    torch.manual_seed(1)
    x = torch.randn(2, 1, 64, 37)
    model = create_model("crnn", n_classes=3).eval()
    reference = create_model("crnn", n_classes=3, readout="last").eval()
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
    with pytest.raises(ValueError, match="readout must be one of"):
        create_model("crnn", n_classes=3, readout="mean")
