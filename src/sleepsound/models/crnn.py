"""CRNN: the shared conv stack followed by a GRU over time.

``[B, C_in, 64, T]`` -> conv stack ``[B, 64, 16, T']`` (``T' = ceil(T/4)``) -> mean over the
mel axis ``[B, T', 64]`` -> GRU (``hidden``, ``layers``, batch_first) -> readout -> linear.

Readout (``readout``, no parameters either way):

* ``"last_real"`` (default): the GRU output at the last time step that holds real audio.
  Cached clips are padded at the dB floor, which makes a padding frame one constant value in
  every mel bin (after any affine input scaling too); a real frame never is. The model finds
  the last non-constant input frame ``L`` itself and reads step ``ceil(L/4) - 1``. A GRU step
  depends only on earlier steps, so the logits do not change when padding frames are appended
  (up to the conv stack's 2-frame edge, which sees padding in both cases). Input without
  padding (whole-night windows) reads the last step, as ``"last"``.
* ``"last"``: the reference: the output at the last step, after any padding. With clips cropped
  to their real frames rounded up to 50 frames, 0-12 of the GRU's steps are padding, a
  different number per clip, and the state the head reads has decayed through them.

Parameters: conv stack 23,296 (+144 per extra input channel) + GRU
``3*(in*h + h*h + 2h)`` per layer (``in = 64`` for the first layer, ``h`` after) + head
``h*n_classes + n_classes``. At 3 classes, ``hidden=64, layers=2``: 73,411 (both readouts).
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_model
from .tinycnn import CONV_WIDTHS, conv_stack

__all__ = ["CRNN", "READOUTS", "crnn", "real_steps"]

READOUTS = ("last_real", "last")
TIME_STRIDE = 4  # two 2x2 max-pools in the conv stack: T' = ceil(T / 4)


def real_steps(x: torch.Tensor, stride: int = TIME_STRIDE) -> torch.Tensor:
    """Per clip, how many GRU steps hold real audio: ``ceil(L / stride)``, ``L`` = index of the
    last input frame that is not constant over the mel axis (and every channel) + 1; at least 1.

    ``x``: ``[B, C, 64, T]`` -> ``[B]`` int64 in ``[1, ceil(T / stride)]``.
    """
    varies = (x.amax(dim=2) > x.amin(dim=2)).any(dim=1)  # [B, T]: a real frame
    t = x.shape[-1]
    positions = torch.arange(1, t + 1, device=x.device).expand_as(varies)
    last = torch.where(varies, positions, torch.zeros_like(positions)).amax(dim=1)  # 0: none
    last = torch.where(last > 0, last, torch.full_like(last, t))  # all constant: keep them all
    return torch.div(last + stride - 1, stride, rounding_mode="floor")


class CRNN(nn.Module):
    """Conv stack -> mel-mean -> GRU -> linear on the last (real) step."""

    def __init__(
        self,
        n_classes: int,
        in_channels: int = 1,
        hidden: int = 64,
        layers: int = 2,
        readout: str = "last_real",
    ) -> None:
        super().__init__()
        if hidden < 1 or layers < 1:
            raise ValueError(
                f"hidden and layers must be >= 1, got hidden={hidden}, layers={layers}"
            )
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        self.readout = readout
        self.features = conv_stack(in_channels)
        self.gru = nn.GRU(CONV_WIDTHS[-1], hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, 64, T]`` -> logits ``[B, n_classes]``."""
        feats = self.features(x).mean(dim=2)  # [B, 64, T']
        out, _ = self.gru(feats.transpose(1, 2))  # [B, T', hidden]
        if self.readout == "last":
            return self.head(out[:, -1])
        steps = real_steps(x).clamp(max=out.shape[1]) - 1  # [B]
        picked = out.gather(1, steps[:, None, None].expand(-1, 1, out.shape[2]))
        return self.head(picked[:, 0])


@register_model
def crnn(
    n_classes: int,
    in_channels: int = 1,
    hidden: int = 64,
    layers: int = 2,
    readout: str = "last_real",
) -> CRNN:
    """CRNN: 73,411 parameters at 3 classes with ``hidden=64, layers=2`` (either readout)."""
    return CRNN(n_classes, in_channels, hidden=hidden, layers=layers, readout=readout)
