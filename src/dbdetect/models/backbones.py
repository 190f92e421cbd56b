"""Backbones: ResNet-18/50, MobileNetV3-large (PaddleOCR layout), PP-LCNetV3 (PP-OCRv4 det).

Each backbone returns a list of 4 feature maps at strides 4, 8, 16, 32 and describes them in
``feature_info`` (timm style: dicts with ``num_chs`` and ``reduction``) so necks size themselves.
No torchvision: the layouts are written out here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import ConvBNAct, LearnableAffine, SEModule, make_divisible


class Backbone(nn.Module):
    """Base class: subclasses fill ``self.feature_info``."""

    feature_info: list[dict]

    @property
    def out_channels(self) -> list[int]:
        """Channels of the 4 returned feature maps."""
        return [f["num_chs"] for f in self.feature_info]


# ----------------------------------------------------------------------------- ResNet
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = ConvBNAct(in_ch, ch, 3, stride, act="relu")
        self.conv2 = ConvBNAct(ch, ch, 3, 1, act=None)
        self.downsample = None
        if stride != 1 or in_ch != ch:
            self.downsample = ConvBNAct(in_ch, ch, 1, stride, act=None)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, ch: int, stride: int = 1):
        super().__init__()
        out = ch * self.expansion
        self.conv1 = ConvBNAct(in_ch, ch, 1, 1, act="relu")
        # Stride on the 3x3 conv (ResNet v1.5), as torchvision and MhLiao/DB do.
        self.conv2 = ConvBNAct(ch, ch, 3, stride, act="relu")
        self.conv3 = ConvBNAct(ch, out, 1, 1, act=None)
        self.downsample = None
        if stride != 1 or in_ch != out:
            self.downsample = ConvBNAct(in_ch, out, 1, stride, act=None)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


class ResNet(Backbone):
    """ResNet v1.5 without the classifier (DBNet's deformable convolutions are not used).

    Args:
        block: BasicBlock or Bottleneck.
        layers: blocks per stage.
        in_chans: input channels.
    """

    def __init__(self, block, layers: Sequence[int], in_chans: int = 3):
        super().__init__()
        self.stem = nn.Sequential(ConvBNAct(in_chans, 64, 7, 2, act="relu"), nn.MaxPool2d(3, 2, 1))
        in_ch = 64
        stages = []
        self.feature_info = []
        for i, n in enumerate(layers):
            ch = 64 * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(in_ch, ch, 2 if (j == 0 and i > 0) else 1))
                in_ch = ch * block.expansion
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=in_ch, reduction=4 * 2**i))
        self.stages = nn.ModuleList(stages)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


def resnet18(**kw) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], **kw)


def resnet50(**kw) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], **kw)


# ----------------------------------------------------------------------------- MobileNetV3
# kernel, expansion, out, se, activation, stride (MobileNetV3-large, as in PaddleOCR).
_MBV3_LARGE = [
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hardswish", 2),
    (3, 200, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 480, 112, True, "hardswish", 1),
    (3, 672, 112, True, "hardswish", 1),
    (5, 672, 160, True, "hardswish", 2),
    (5, 960, 160, True, "hardswish", 1),
    (5, 960, 160, True, "hardswish", 1),
]


class InvertedResidual(nn.Module):
    """MobileNetV3 block: expand 1x1 -> depthwise -> [SE] -> project 1x1 (+ identity)."""

    def __init__(self, in_ch: int, mid: int, out: int, kernel: int, stride: int, se: bool, act: str):
        super().__init__()
        # PaddleOCR keeps the expand conv even when mid == in_ch; so do we, for weight parity.
        self.expand = ConvBNAct(in_ch, mid, 1, 1, act=act)
        self.dw = ConvBNAct(mid, mid, kernel, stride, groups=mid, act=act)
        self.se = SEModule(mid, 4, gate="paddle_hardsigmoid") if se else None
        self.project = ConvBNAct(mid, out, 1, 1, act=None)
        self.use_res = stride == 1 and in_ch == out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(self.expand(x))
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.use_res else y


class MobileNetV3(Backbone):
    """MobileNetV3-large with a width multiplier, PaddleOCR's detection layout.

    Args:
        scale: width multiplier (0.5 for PP-OCRv3 det).
        disable_se: drop the SE blocks (PP-OCRv3 det does).
        in_chans: input channels.
    """

    def __init__(self, scale: float = 0.5, disable_se: bool = False, in_chans: int = 3):
        super().__init__()
        in_ch = make_divisible(16 * scale)
        self.stem = ConvBNAct(in_chans, in_ch, 3, 2, act="hardswish")
        stages, blocks = [], []
        self.feature_info = []
        reduction = 2
        for i, (k, e, c, se, act, s) in enumerate(_MBV3_LARGE):
            # A new stage starts at each downsampling block after the first two.
            if s == 2 and i > 2:
                stages.append(nn.Sequential(*blocks))
                self.feature_info.append(dict(num_chs=in_ch, reduction=reduction))
                blocks = []
            out = make_divisible(scale * c)
            blocks.append(InvertedResidual(in_ch, make_divisible(scale * e), out, k, s, se and not disable_se, act))
            in_ch = out
            reduction *= s
        last = make_divisible(scale * 960)
        blocks.append(ConvBNAct(in_ch, last, 1, 1, act="hardswish"))
        stages.append(nn.Sequential(*blocks))
        self.feature_info.append(dict(num_chs=last, reduction=reduction))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


# ----------------------------------------------------------------------------- PP-LCNetV3
class RepConvLAB(nn.Module):
    """PP-LCNetV3's re-parameterised layer in its inference form.

    conv(+bias: the training-time branches and BNs are already merged into it) -> affine
    -> [hardswish -> affine]. Stride-2 layers have no activation, as in PaddleOCR.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=True)
        self.lab = LearnableAffine()
        self.has_act = stride != 2
        self.act = nn.Hardswish(inplace=True) if self.has_act else nn.Identity()
        self.lab2 = LearnableAffine() if self.has_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lab2(self.act(self.lab(self.conv(x))))

    @torch.no_grad()
    def fuse_(self) -> None:
        if isinstance(self.lab, LearnableAffine):
            s, b = self.lab.scale, self.lab.bias
            self.conv.weight = nn.Parameter(self.conv.weight * s)
            self.conv.bias = nn.Parameter(self.conv.bias * s + b)
            self.lab = nn.Identity()


class LCNetV3Block(nn.Module):
    """Depthwise RepConvLAB -> [SE] -> pointwise RepConvLAB."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, se: bool):
        super().__init__()
        self.dw = RepConvLAB(in_ch, in_ch, kernel, stride, groups=in_ch)
        self.se = SEModule(in_ch, 4, gate="hardsigmoid") if se else None
        self.pw = RepConvLAB(in_ch, out_ch, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw(x)
        if self.se is not None:
            x = self.se(x)
        return self.pw(x)

    @torch.no_grad()
    def fuse_(self) -> None:
        self.dw.fuse_()
        # The affine after the depthwise activation feeds a 1x1 conv directly (no padding, no
        # SE in between), so it folds exactly into that conv's weights.
        if self.se is None and isinstance(self.dw.lab2, LearnableAffine):
            s, b = self.dw.lab2.scale, self.dw.lab2.bias
            w = self.pw.conv.weight
            self.pw.conv.bias = nn.Parameter(self.pw.conv.bias + b * w.sum(dim=(1, 2, 3)))
            self.pw.conv.weight = nn.Parameter(w * s)
            self.dw.lab2 = nn.Identity()
        self.pw.fuse_()


# kernel, in, out, stride, se per block (PP-LCNetV3 detection config, before scaling).
_LCNETV3_DET = [
    [(3, 16, 32, 1, False)],
    [(3, 32, 64, 2, False), (3, 64, 64, 1, False)],
    [(3, 64, 128, 2, False), (3, 128, 128, 1, False)],
    [(3, 128, 256, 2, False)] + [(5, 256, 256, 1, False)] * 4,
    [(5, 256, 512, 2, True), (5, 512, 512, 1, True), (5, 512, 512, 1, False), (5, 512, 512, 1, False)],
]


class PPLCNetV3(Backbone):
    """PP-LCNetV3 (detection variant, inference form), the PP-OCRv4 mobile det backbone.

    Args:
        scale: width multiplier (0.75 for PP-OCRv4 det).
        det_channels: per-level output channels before scaling (PaddleOCR: 16, 24, 56, 480).
        in_chans: input channels.
    """

    def __init__(self, scale: float = 0.75, det_channels: Sequence[int] = (16, 24, 56, 480), in_chans: int = 3):
        super().__init__()
        self.stem = ConvBNAct(in_chans, make_divisible(16 * scale, 16), 3, 2, act=None)
        stages = []
        for cfg in _LCNETV3_DET:
            stages.append(
                nn.Sequential(
                    *[
                        LCNetV3Block(make_divisible(i * scale, 16), make_divisible(o * scale, 16), k, s, se)
                        for k, i, o, s, se in cfg
                    ]
                )
            )
        self.stages = nn.ModuleList(stages)
        # Stages 2..5 feed the neck through 1x1 projections (with bias) to det_channels * scale.
        stage_out = [make_divisible(cfg[-1][2] * scale, 16) for cfg in _LCNETV3_DET[1:]]
        outs = [int(c * scale) for c in det_channels]
        self.proj = nn.ModuleList(nn.Conv2d(i, o, 1, bias=True) for i, o in zip(stage_out, outs))
        self.feature_info = [dict(num_chs=o, reduction=4 * 2**i) for i, o in enumerate(outs)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        x = self.stages[0](x)
        feats = []
        for stage in self.stages[1:]:
            x = stage(x)
            feats.append(x)
        return [p(f) for p, f in zip(self.proj, feats)]
