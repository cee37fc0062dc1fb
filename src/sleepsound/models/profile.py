"""Deployment figures: parameters, fp32 size, multiply-accumulates and CPU latency.

MAC counting uses forward hooks on the leaf layers that do the arithmetic:

* ``nn.Conv2d``: ``out.numel() * (C_in / groups) * kh * kw`` (bias adds ignored),
* ``nn.Linear``: ``out.numel() * in_features`` (so the CBAM shared MLP, applied to both the
  avg and max descriptors in one call, is counted twice as it is computed twice),
* ``nn.GRU``: per time step, per layer and direction ``3 * (in * hidden + hidden * hidden)``
  (the three gate matmuls; ``in`` is the input size for layer 0 and ``hidden * dirs`` after).

Elementwise work (ReLU, pooling, sigmoids, attention scaling, GRU gate nonlinearities and
biases, means over axes) is ignored: it is small next to the matmuls and not a MAC. The CBAM
spatial conv is an ``nn.Conv2d`` and the channel MLP is ``nn.Linear``, so both are counted.

Counts are for the whole ``input_shape`` passed (use batch 1 for per-clip figures).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = [
    "count_macs",
    "count_parameters",
    "deployment_figures",
    "measure_latency",
    "model_size_bytes",
]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_size_bytes(model: nn.Module) -> int:
    """Size of parameters + buffers stored as fp32 (4 bytes per element)."""
    n = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    return 4 * n


def _conv_macs(m: nn.Conv2d, out: torch.Tensor) -> int:
    kh, kw = m.kernel_size
    return out.numel() * (m.in_channels // m.groups) * kh * kw


def _linear_macs(m: nn.Linear, out: torch.Tensor) -> int:
    return out.numel() * m.in_features


def _gru_macs(m: nn.GRU, x: torch.Tensor | nn.utils.rnn.PackedSequence) -> int:
    if isinstance(x, nn.utils.rnn.PackedSequence):
        steps = x.data.shape[0]  # total (batch, time) steps actually computed
    elif x.dim() == 2:
        steps = x.shape[0]  # unbatched [T, in]
    else:
        steps = x.shape[0] * x.shape[1]  # [B, T, in] or [T, B, in]
    dirs = 2 if m.bidirectional else 1
    h = m.hidden_size
    per_step = 0
    for layer in range(m.num_layers):
        in_size = m.input_size if layer == 0 else h * dirs
        per_step += dirs * 3 * (in_size * h + h * h)
    return steps * per_step


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass on a zero tensor of ``input_shape``.

    Counts Conv2d, Linear and GRU layers (see module docstring); elementwise ops are ignored.
    The model is run in eval mode under ``torch.inference_mode``; its mode is restored.
    """
    total = 0

    def hook(m: nn.Module, args: tuple, out: torch.Tensor | tuple) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += _conv_macs(m, out)
        elif isinstance(m, nn.Linear):
            total += _linear_macs(m, out)
        elif isinstance(m, nn.GRU):
            total += _gru_macs(m, args[0])

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.GRU))
    ]
    was_training = model.training
    try:
        model.eval()
        p = next(model.parameters(), None)
        x = torch.zeros(
            tuple(input_shape),
            dtype=p.dtype if p is not None else torch.float32,
            device=p.device if p is not None else None,
        )
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total)


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    n_warmup: int = 10,
    n_runs: int = 100,
    threads: int = 1,
) -> dict[str, float | int]:
    """Wall-clock forward latency on CPU with ``threads`` intra-op threads (default 1).

    Runs ``n_warmup`` untimed then ``n_runs`` timed forwards on a fixed random input under
    ``torch.inference_mode`` in eval mode. The thread count and model mode are restored.

    Returns:
        ``{"median_ms", "p90_ms", "mean_ms", "n_runs"}``.
    """
    if n_runs < 1:
        raise ValueError(f"n_runs must be >= 1, got {n_runs}")
    prev_threads = torch.get_num_threads()
    was_training = model.training
    p = next(model.parameters(), None)
    x = torch.randn(
        tuple(input_shape),
        generator=torch.Generator().manual_seed(0),
        dtype=p.dtype if p is not None else torch.float32,
    )
    if p is not None:
        x = x.to(p.device)
    times_ms: list[float] = []
    try:
        torch.set_num_threads(threads)
        model.eval()
        with torch.inference_mode():
            for _ in range(n_warmup):
                model(x)
            for _ in range(n_runs):
                t0 = time.perf_counter()
                model(x)
                times_ms.append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(prev_threads)
        model.train(was_training)
    return {
        "median_ms": float(statistics.median(times_ms)),
        "p90_ms": float(np.percentile(times_ms, 90)),
        "mean_ms": float(statistics.fmean(times_ms)),
        "n_runs": len(times_ms),
    }


def deployment_figures(
    model: nn.Module, n_frames: int = 501, in_channels: int | None = None, n_runs: int = 100
) -> dict[str, float | int]:
    """Parameters, fp32 bytes, MACs and single-thread latency for one clip ``[1, C, 64, n_frames]``.

    ``n_frames=501`` is one 5 s clip at a 10 ms hop. ``in_channels`` defaults to
    ``model.config["in_channels"]`` when the model came from ``create_model``, else 1.
    """
    if in_channels is None:
        in_channels = int(getattr(model, "config", {}).get("in_channels", 1))
    shape = (1, in_channels, 64, n_frames)
    lat = measure_latency(model, shape, n_runs=n_runs, threads=1)
    return {
        "params": count_parameters(model),
        "fp32_bytes": model_size_bytes(model),
        "macs": count_macs(model, shape),
        "latency_median_ms": lat["median_ms"],
        "latency_p90_ms": lat["p90_ms"],
    }
