"""TinyCNN with a CBAM attention block (Woo et al., 2018) after the second conv block.

CBAM refines the 32-channel feature map after conv2 + ReLU + pool:

* channel attention: a shared MLP ``C -> C//r -> C`` (Linear layers WITH bias, ReLU between)
  applied to the spatially avg- and max-pooled descriptors; the two outputs are summed and
  passed through a sigmoid to scale each channel.
* spatial attention: a ``k x k`` conv WITHOUT bias (padding ``k//2``) over the channel-wise
  mean and max maps (2 -> 1 channels), sigmoid, scaling each time-frequency position.

Extra parameters over TinyCNN at ``C = 32``: MLP ``2*C*(C//r) + C//r + C`` plus ``2*k*k``
spatial weights. For ``r=8``: MLP = 256 + 4 + 32 = 292, so at 3 classes ``r=8, k=3`` has
23,491 + 292 + 18 = 23,801 and ``r=8, k=7`` has 23,491 + 292 + 98 = 23,881 parameters (the
reference counts imply the bias in the MLP). ``channel=False`` / ``spatial=False`` drop the
corresponding branch; with both off the model equals TinyCNN. An extra input channel adds
144 parameters as for TinyCNN.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_model
from .tinycnn import CONV_WIDTHS, TinyCNN

__all__ = ["CBAM", "ChannelAttention", "SpatialAttention", "tinycnn_cbam"]


class ChannelAttention(nn.Module):
    """Sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))) per channel; MLP ``C -> C//r -> C``."""

    def __init__(self, channels: int, r: int = 8) -> None:
        super().__init__()
        if r < 1:
            raise ValueError(f"reduction r must be >= 1, got {r}")
        hidden = max(1, channels // r)
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        desc = torch.stack([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)  # [B, 2, C]
        scale = torch.sigmoid(self.mlp(desc).sum(dim=1))  # one MLP call for both descriptors
        return x * scale[:, :, None, None]


class SpatialAttention(nn.Module):
    """Sigmoid(conv_kxk([mean_c(x), max_c(x)])) per position; conv has no bias."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        if k < 1 or k % 2 == 0:
            raise ValueError(f"spatial kernel k must be a positive odd integer, got {k}")
        self.conv = nn.Conv2d(2, 1, k, padding=k // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        desc = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(desc))


class CBAM(nn.Module):
    """Channel attention followed by spatial attention; either can be switched off."""

    def __init__(
        self, channels: int, r: int = 8, k: int = 3, channel: bool = True, spatial: bool = True
    ) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, r) if channel else nn.Identity()
        self.spatial = SpatialAttention(k) if spatial else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))


@register_model
def tinycnn_cbam(
    n_classes: int,
    in_channels: int = 1,
    r: int = 8,
    k: int = 3,
    channel: bool = True,
    spatial: bool = True,
) -> TinyCNN:
    """TinyCNN + CBAM after block 2: 23,801 params (r=8, k=3) / 23,881 (r=8, k=7) at 3 classes."""
    attn = CBAM(CONV_WIDTHS[1], r=r, k=k, channel=channel, spatial=spatial)
    return TinyCNN(n_classes, in_channels, after_block2=attn)
