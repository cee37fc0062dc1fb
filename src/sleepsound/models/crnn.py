"""CRNN: the shared conv stack followed by a GRU over time.

``[B, C_in, 64, T]`` -> conv stack ``[B, 64, 16, T']`` (``T' = ceil(T/4)``) -> mean over the
mel axis ``[B, T', 64]`` -> GRU (``hidden``, ``layers``, batch_first) -> linear on the last
time step.

Parameters: conv stack 23,296 (+144 per extra input channel) + GRU
``3*(in*h + h*h + 2h)`` per layer (``in = 64`` for the first layer, ``h`` after) + head
``h*n_classes + n_classes``. At 3 classes, ``hidden=64, layers=2``: 73,411.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_model
from .tinycnn import CONV_WIDTHS, conv_stack

__all__ = ["CRNN", "crnn"]


class CRNN(nn.Module):
    """Conv stack -> mel-mean -> GRU -> linear on the last step."""

    def __init__(
        self, n_classes: int, in_channels: int = 1, hidden: int = 64, layers: int = 2
    ) -> None:
        super().__init__()
        if hidden < 1 or layers < 1:
            raise ValueError(
                f"hidden and layers must be >= 1, got hidden={hidden}, layers={layers}"
            )
        self.features = conv_stack(in_channels)
        self.gru = nn.GRU(CONV_WIDTHS[-1], hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, 64, T]`` -> logits ``[B, n_classes]``."""
        x = self.features(x).mean(dim=2)  # [B, 64, T']
        out, _ = self.gru(x.transpose(1, 2))  # [B, T', hidden]
        return self.head(out[:, -1])


@register_model
def crnn(n_classes: int, in_channels: int = 1, hidden: int = 64, layers: int = 2) -> CRNN:
    """CRNN: 73,411 parameters at 3 classes with ``hidden=64, layers=2``."""
    return CRNN(n_classes, in_channels, hidden=hidden, layers=layers)
