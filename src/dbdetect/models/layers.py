"""Building blocks shared by backbones, necks and heads.

Every block that can be folded for inference exposes ``fuse_()``; :func:`dbdetect.models.fuse`
calls it on all modules. Activations are single fused modules (nn.Hardswish, nn.ReLU, ...):
decomposed elementwise chains cost as much as the convolutions on a CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import padding


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` (MobileNet rule: never below 90% of v).

    Args:
        v: the unrounded channel count.
        divisor: the multiple to round to.
        min_value: lower bound (defaults to ``divisor``).

    Returns:
        The rounded channel count.
    """
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class PaddleHardsigmoid(nn.Module):
    """Paddle's hard-sigmoid: clamp(0.2 * x + 0.5, 0, 1).

    Paddle uses slope 0.2 where torch's nn.Hardsigmoid uses 1/6; hardsigmoid(1.2 * x) is the
    same function with torch's fused kernel (it only ever sees (N, C, 1, 1) SE vectors).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardsigmoid(x * 1.2)


def make_act(name: str | None, inplace: bool = True) -> nn.Module:
    """Activation module by name.

    Args:
        name: "relu", "hardswish", "hardsigmoid" (torch, slope 1/6), "paddle_hardsigmoid"
            (slope 0.2), "sigmoid" or None / "identity".
        inplace: use in-place kernels where torch has them.

    Returns:
        An nn.Module.
    """
    if name in (None, "identity", "none"):
        return nn.Identity()
    if name == "relu":
        return nn.ReLU(inplace=inplace)
    if name == "hardswish":
        return nn.Hardswish(inplace=inplace)
    if name == "hardsigmoid":
        return nn.Hardsigmoid(inplace=inplace)
    if name == "paddle_hardsigmoid":
        return PaddleHardsigmoid()
    if name == "sigmoid":
        return nn.Sigmoid()
    raise ValueError(f"unknown activation {name!r}")


@torch.no_grad()
def _fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d, out_dim: int):
    """Return (weight, bias) of a conv whose output went through ``bn`` (eval statistics)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shape = [1] * weight.dim()
    shape[out_dim] = -1
    new_w = weight * scale.reshape(shape)
    b = bias if bias is not None else torch.zeros_like(bn.running_mean)
    new_b = (b - bn.running_mean) * scale + bn.bias
    return new_w, new_b


def _set_conv(conv: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
    conv.weight = nn.Parameter(weight.detach().clone())
    conv.bias = nn.Parameter(bias.detach().clone())


def fold_bn_into(conv: nn.Module, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` into ``conv`` (Conv2d or ConvTranspose2d) in place."""
    out_dim = 1 if isinstance(conv, nn.ConvTranspose2d) else 0
    w, b = _fold_bn(conv.weight, conv.bias, bn, out_dim)
    _set_conv(conv, w, b)


class ConvBNAct(nn.Module):
    """conv -> [BatchNorm] -> activation. After ``fuse_()`` the BN is an identity.

    Args:
        in_ch, out_ch, kernel, stride, groups: the convolution.
        act: activation name (see :func:`make_act`).
        bn: put a BatchNorm after the conv.
        bias: conv bias (used where a ported model has BN already folded into the conv).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: str | None = "relu",
        bn: bool = True,
        bias: bool = False,
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(out_ch) if bn else nn.Identity()
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def fuse_(self) -> None:
        if isinstance(self.bn, nn.BatchNorm2d):
            fold_bn_into(self.conv, self.bn)
            self.bn = nn.Identity()


class SEModule(nn.Module):
    """Squeeze-and-excitation: x * gate(mean(x)). ``residual`` gives x + x * gate (RSE-FPN).

    Args:
        channels: input channels.
        reduction: squeeze ratio.
        gate: gate activation name ("paddle_hardsigmoid" for PaddleOCR models).
        residual: return x + x * gate instead of x * gate.
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 4,
        gate: str = "paddle_hardsigmoid",
        residual: bool = False,
        divisor: int | None = None,
    ):
        super().__init__()
        mid = channels // reduction if divisor is None else make_divisible(channels / reduction, divisor)
        self.conv1 = nn.Conv2d(channels, mid, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(mid, channels, 1, bias=True)
        self.gate = make_act(gate, inplace=True)
        self.residual = residual

    def squeeze(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, C, 1, 1) gate values for ``x`` (the mean over each image's own region in a padded batch)."""
        return self.gate(self.conv2(self.relu(self.conv1(padding.mean(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        if self.residual:
            # x + x * s == x * (1 + s): one pass over the big tensor instead of two.
            return x * (s + 1.0)
        return x * s


class LearnableAffine(nn.Module):
    """PP-LCNetV3's learnable affine block: scalar scale * x + scalar bias."""

    def __init__(self, scale: float = 1.0, bias: float = 0.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([scale]))
        self.bias = nn.Parameter(torch.tensor([bias]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and not x.requires_grad:
            # One in-place pass (not mul_ + add_); the input is a fresh activation nobody else holds.
            return torch.addcmul(self.bias, x, self.scale, out=x)
        return x * self.scale + self.bias
