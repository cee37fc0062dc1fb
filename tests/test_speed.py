"""The training speed-ups keep the math: channels-last placement and the compact data path give
the same updates as the default layout within float tolerance (stated: 1e-4 on logits and
weights after 5 Adam steps)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sleepsound.models import create_model
from sleepsound.training.checkpoint import place
from sleepsound.training.data import SplitData

TOL = 1e-4


@pytest.mark.parametrize("name", ["tinycnn", "crnn", "tinycnn_cbam"])
def test_channels_last_training_matches_the_default_layout(tone_cache, name):
    split = SplitData(tone_cache / "train.h5")
    spec = split.fit_spec()
    batches = list(split.batches(16, spec, np.random.default_rng(0)))[:5]
    models = []
    for fast in (False, True):
        torch.manual_seed(0)
        model = create_model(name, 3)
        if fast:
            place(model, torch.device("cpu"))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for b in batches:
            x = b.x if fast else b.x.contiguous()
            loss = F.cross_entropy(model(x), b.y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        models.append(model)
    slow, fast = models
    assert any(p.is_contiguous(memory_format=torch.channels_last) and p.dim() == 4
               and not p.is_contiguous() for p in fast.parameters())  # fmt: skip
    for p, q in zip(slow.parameters(), fast.parameters(), strict=True):
        assert torch.allclose(p, q, atol=TOL, rtol=0)
    x = batches[0].x
    with torch.no_grad():
        assert torch.allclose(slow(x.contiguous()), fast(x), atol=TOL, rtol=0)


def test_pool_before_relu_gives_the_reference_block_values_and_gradients():
    """conv_block pools before its ReLU (a quarter of the elements to rectify); the reference
    order conv -> ReLU -> pool gives the same output and the same weight gradients."""
    from torch import nn

    from sleepsound.models.tinycnn import conv_block

    torch.manual_seed(0)
    block = conv_block(4, 8, pool=True)
    assert [type(m) for m in block] == [nn.Conv2d, nn.MaxPool2d, nn.ReLU]
    reference = nn.Sequential(block[0], nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True))
    x = torch.randn(3, 4, 16, 21)  # odd time length: the ceil-mode pool's partial window
    grads = []
    for net in (block, reference):
        block[0].zero_grad()
        y = net(x)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        grads.append((y.detach(), block[0].weight.grad.clone(), block[0].bias.grad.clone()))
    for ours, ref in zip(*grads, strict=True):
        torch.testing.assert_close(ours, ref, rtol=0, atol=0)
