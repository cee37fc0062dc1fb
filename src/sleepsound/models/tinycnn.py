"""TinyCNN, and the conv stack shared by every compact model in this package.

Input is a log-mel tensor ``[B, C_in, 64, T]`` for any ``T >= 1``. The stack is three
3x3 conv layers ``C_in -> 16 -> 32 -> 64`` (padding 1, ReLU) with a 2x2 max-pool after the
first two. Pools use ``ceil_mode=True`` so no trailing frame is dropped and ``T = 1`` still
works (time length ``T -> ceil(T/2) -> ceil(T/4)``; mel ``64 -> 32 -> 16``).

Parameter count of the conv stack: ``16*9*C_in + 16 + 4,640 + 18,496``, i.e. each extra
input channel adds ``16*9 = 144`` weights (only the first conv changes). TinyCNN adds global
average pooling and a linear head ``64 -> n_classes``: 23,491 parameters at 3 classes and
one input channel.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_model

__all__ = ["CONV_WIDTHS", "TinyCNN", "conv_block", "conv_stack", "tinycnn"]

CONV_WIDTHS = (16, 32, 64)


def conv_block(in_ch: int, out_ch: int, pool: bool) -> nn.Sequential:
    """3x3 conv (padding 1) + ReLU, with an optional 2x2 max-pool. The pool runs before the
    ReLU: max and ReLU commute, so values and gradients are the reference order's (conv ->
    ReLU -> pool; tests/test_speed.py), with a quarter of the elements to rectify. The
    modules without parameters move; checkpoints (``features.i.0.weight``) do not change."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 3, padding=1)]
    if pool:
        layers.append(nn.MaxPool2d(2, ceil_mode=True))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def conv_stack(in_channels: int = 1, after_block2: nn.Module | None = None) -> nn.Sequential:
    """The shared conv feature extractor: ``[B, C_in, 64, T] -> [B, 64, 16, ceil(T/4)]``.

    Args:
        in_channels: input channels.
        after_block2: optional module inserted after the second block (conv2 + ReLU + pool),
            e.g. a CBAM attention block over 32 channels.
    """
    c1, c2, c3 = CONV_WIDTHS
    blocks: list[nn.Module] = [
        conv_block(in_channels, c1, pool=True),
        conv_block(c1, c2, pool=True),
    ]
    if after_block2 is not None:
        blocks.append(after_block2)
    blocks.append(conv_block(c2, c3, pool=False))
    return nn.Sequential(*blocks)


class TinyCNN(nn.Module):
    """Conv stack -> global average pool -> linear classifier."""

    def __init__(
        self, n_classes: int, in_channels: int = 1, after_block2: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.features = conv_stack(in_channels, after_block2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(CONV_WIDTHS[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, 64, T]`` -> logits ``[B, n_classes]``."""
        x = self.pool(self.features(x)).flatten(1)
        return self.head(x)


@register_model
def tinycnn(n_classes: int, in_channels: int = 1) -> TinyCNN:
    """TinyCNN: 23,491 parameters at 3 classes, 1 input channel (+144 per extra channel)."""
    return TinyCNN(n_classes, in_channels)
