"""Optimiser set-up: the learning-rate schedule, per-part learning rates, and backbone freezing."""

from __future__ import annotations

import math


def lr_lambda_factory(total_steps: int, warmup_steps: int, min_ratio: float = 0.0):
    """LR multiplier: linear warm-up to 1, then cosine down to ``min_ratio`` at ``total_steps``."""

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))

    return f


def param_groups(model, lr: float, backbone_lr_scale: float = 1.0) -> list:
    """Optimizer groups: the backbone at ``lr * backbone_lr_scale``, the neck and head at ``lr``."""
    if not backbone_lr_scale > 0:
        raise ValueError(f"--backbone-lr-scale must be > 0, got {backbone_lr_scale}")
    backbone = list(model.backbone.parameters())
    ids = {id(p) for p in backbone}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": backbone, "lr": lr * backbone_lr_scale}, {"params": rest, "lr": lr}]


def set_backbone_frozen(model, frozen: bool) -> None:
    """Freeze/unfreeze the backbone's weights (BatchNorm handled by :func:`apply_bn_mode`)."""
    for p in model.backbone.parameters():
        p.requires_grad_(not frozen)


def apply_bn_mode(model, backbone_frozen: bool, bn: str) -> None:
    """After ``model.train()``: put frozen parts' BatchNorm (or all, ``bn="frozen"``) in eval mode.

    A frozen backbone must not drift its running statistics either, or the
    pretrained features change under the head without any gradient.
    """
    from torch import nn

    if backbone_frozen:
        model.backbone.eval()
    if bn == "frozen":
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
