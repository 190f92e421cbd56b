"""Necks: the DBNet FPN and PaddleOCR's RSE-FPN (PP-OCRv3/v4).

Both take the 4 backbone maps (strides 4..32), build a top-down pyramid on ``out_channels``
channels, smooth each level to ``out_channels // 4``, upsample all to stride 4 and concatenate,
so the head sees ``out_channels`` channels at stride 4.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import SEModule


def _up_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    # Nearest upsampling to the reference size; for the 2/4/8x integer ratios of a
    # stride-32-aligned input this equals Paddle's nearest_interp (asymmetric, floor).
    return F.interpolate(x, size=ref.shape[-2:], mode="nearest")


class RSELayer(nn.Module):
    """conv (no bias) followed by a residual SE: y = c + c * gate(c), c = conv(x)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False)
        self.se = SEModule(out_ch, 4, gate="paddle_hardsigmoid", residual=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.conv(x))


class FPN(nn.Module):
    """DBNet feature pyramid (Liao et al. 2020), optionally with RSE layers (PP-OCRv3/v4).

    Args:
        in_channels: channels of the 4 backbone maps (strides 4, 8, 16, 32).
        out_channels: pyramid width; the concatenated output has this many channels.
        rse: use residual-SE conv layers (RSE-FPN) instead of plain convs.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256, rse: bool = False):
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"FPN needs 4 input levels, got {len(in_channels)}")
        if out_channels % 4:
            raise ValueError(f"out_channels must be a multiple of 4, got {out_channels}")
        self.out_channels = out_channels
        if rse:
            self.ins = nn.ModuleList(RSELayer(c, out_channels, 1) for c in in_channels)
            self.inp = nn.ModuleList(RSELayer(out_channels, out_channels // 4, 3) for _ in in_channels)
        else:
            self.ins = nn.ModuleList(nn.Conv2d(c, out_channels, 1, bias=False) for c in in_channels)
            self.inp = nn.ModuleList(
                nn.Conv2d(out_channels, out_channels // 4, 3, padding=1, bias=False) for _ in in_channels
            )

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        c2, c3, c4, c5 = feats
        # Coarsest first, as PaddleOCR orders it (the weight converter relies on this order).
        in5 = self.ins[3](c5)
        in4 = self.ins[2](c4)
        in3 = self.ins[1](c3)
        in2 = self.ins[0](c2)
        out4 = in4 + _up_to(in5, in4)
        out3 = in3 + _up_to(out4, in3)
        out2 = in2 + _up_to(out3, in2)
        p5 = self.inp[3](in5)
        p4 = self.inp[2](out4)
        p3 = self.inp[1](out3)
        p2 = self.inp[0](out2)
        return torch.cat([_up_to(p5, p2), _up_to(p4, p2), _up_to(p3, p2), p2], dim=1)
