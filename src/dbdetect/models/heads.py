"""The DB head: probability and threshold branches, differentiable binarization in training."""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import fold_bn_into


class DBBranch(nn.Module):
    """conv3x3 -> BN -> ReLU -> deconv 2x -> BN -> ReLU -> deconv 2x -> sigmoid (stride 4 -> 1)."""

    def __init__(self, in_ch: int):
        super().__init__()
        mid = in_ch // 4
        self.conv = nn.Conv2d(in_ch, mid, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.relu1 = nn.ReLU(inplace=True)
        self.up1 = nn.ConvTranspose2d(mid, mid, 2, 2, bias=True)
        self.bn2 = nn.BatchNorm2d(mid)
        self.relu2 = nn.ReLU(inplace=True)
        self.up2 = nn.ConvTranspose2d(mid, 1, 2, 2, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv(x)))
        x = self.relu2(self.bn2(self.up1(x)))
        return torch.sigmoid(self.up2(x))

    def fuse_(self) -> None:
        for conv, bn in (("conv", "bn1"), ("up1", "bn2")):
            if isinstance(getattr(self, bn), nn.BatchNorm2d):
                fold_bn_into(getattr(self, conv), getattr(self, bn))
                setattr(self, bn, nn.Identity())


class DBHead(nn.Module):
    """DBNet head.

    Args:
        in_channels: channels of the neck output (stride 4).
        k: binarization steepness, binary = sigmoid(k * (prob - thresh)).

    In eval mode ``forward`` returns only the probability map (N, 1, H, W); the threshold
    branch is not run. In train mode it returns dict(prob, thresh, binary).
    """

    def __init__(self, in_channels: int, k: float = 50.0):
        super().__init__()
        self.k = k
        self.binarize = DBBranch(in_channels)
        self.thresh = DBBranch(in_channels)

    @torch.no_grad()
    def reset_threshold_output(self, value: float = 0.3) -> None:
        """Start the threshold branch at a constant, unsaturated map T = ``value``.

        The inference-only PP-OCR models have no threshold branch; we start it
        from a copy of the probability branch, but a copied last layer gives
        T = P, saturated at 0 and 1 where the sigmoid has no gradient: in a
        fine-tuning run on ICDAR 2015 the branch then collapsed to T = 0 and
        the binary map never learned. A zero last layer with bias logit(value)
        keeps the copied features and gives every pixel a useful gradient.
        """
        last = self.thresh.up2
        last.weight.zero_()
        last.bias.fill_(math.log(value / (1.0 - value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        prob = self.binarize(x)
        if not self.training:
            return prob
        thresh = self.thresh(x)
        binary = torch.sigmoid(self.k * (prob - thresh))
        return dict(prob=prob, thresh=thresh, binary=binary)
