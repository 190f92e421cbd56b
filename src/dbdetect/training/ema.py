"""Exponential moving average of a model's weights, for ``dbdetect train --ema``.

After each optimiser step every floating-point entry of the state dict
(weights and BatchNorm statistics) moves toward the trained model's:
``ema = d * ema + (1 - d) * current``. The decay ramps up as
``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates (TensorFlow's
``num_updates`` rule), so a short fine-tuning run is not dominated by the
starting weights. Integer entries (BatchNorm's step counter) are copied.

>>> import torch
>>> net = torch.nn.Linear(2, 1)
>>> ema = EMA(net, decay=0.9)
>>> ema.update(net); ema.updates
1
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A moving-average copy of a model.

    Args:
        model: the model being trained (unwrapped, not DDP).
        decay: the long-run decay, in (0, 1); e.g. 0.999.

    Attributes:
        module: the averaged model, in eval mode, without gradients.
        updates: number of :meth:`update` calls so far.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"--ema decay must be in (0, 1), e.g. 0.999; got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update uses."""
        n = self.updates + 1
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average toward ``model``'s current weights."""
        d = self.current_decay()
        current = model.state_dict()
        for k, v in self.module.state_dict().items():
            src = current[k].detach()
            if v.is_floating_point():
                v.lerp_(src.to(v.dtype), 1.0 - d)
            else:
                v.copy_(src)
        self.updates += 1

    def state_dict(self) -> dict:
        """Decay, update count and averaged weights (CPU tensors), for checkpoints."""
        return {
            "decay": self.decay,
            "updates": self.updates,
            "model": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (resume)."""
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])
