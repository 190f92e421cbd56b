"""A torch network in eager mode: a registry name, a checkpoint, or an ``nn.Module`` with a cfg."""

from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np
import torch

from .base import check_device


class TorchModuleRuntime:
    """The fused (BatchNorm folded) network on ``device``, gradients off."""

    backend = "torch"

    def __init__(
        self, model: str | os.PathLike[str] | torch.nn.Module, device: str = "cpu", num_threads: int | None = None
    ) -> None:
        from .. import models

        if isinstance(model, torch.nn.Module):
            # A copy: fusing BatchNorm must not touch a model that is still training.
            net = copy.deepcopy(model)
            models.cfg_of(net)  # TypeError now, not at the first call, when it has no cfg
        else:
            net = models.create(model, pretrained=True)
        self.device = check_device(device)
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        self.cfg: dict[str, Any] = models.cfg_of(net)
        # Folding BatchNorm once here removes a third of the eager ops per call.
        self.module: Any = models.fuse(net.eval()).to(self.device)
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        prob = self.module(torch.from_numpy(batch).to(self.device))
        if isinstance(prob, dict):  # a module set back to training mode by its owner
            prob = prob["prob"]
        out: np.ndarray = prob[:, 0].float().cpu().numpy()
        return out
