"""A torch network in eager mode: a registry name, a checkpoint, or an ``nn.Module`` with a cfg."""

from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np
import torch

from ..defaults import PRECISIONS
from .base import check_device

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` is fp16 on CUDA (its tensor cores), fp32 elsewhere; names are checked."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    return precision


class TorchModuleRuntime:
    """The fused (BatchNorm folded) network on ``device``, gradients off."""

    backend = "torch"

    def __init__(
        self,
        model: str | os.PathLike[str] | torch.nn.Module,
        device: str = "cpu",
        num_threads: int | None = None,
        precision: str = "auto",
    ) -> None:
        from .. import models

        if isinstance(model, torch.nn.Module):
            # A copy: fusing BatchNorm must not touch a model that is still training.
            net = copy.deepcopy(model)
            models.cfg_of(net)  # TypeError now, not at the first call, when it has no cfg
        else:
            net = models.create(model, pretrained=True)
        self.device = check_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.dtype = _DTYPES[self.precision]
        # Whether inputs of different sizes share a pass (run_padded): on a GPU a full
        # batch pays for its padding; on a CPU a batch gains little and padding is
        # pure extra work.
        self.pads = self.device.type != "cpu"
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        self.cfg: dict[str, Any] = models.cfg_of(net)
        # Folding BatchNorm once here removes a third of the eager ops per call.
        self.module: Any = models.fuse(net.eval()).to(self.device, self.dtype)
        for p in self.module.parameters():
            p.requires_grad_(False)
        if self.device.type == "cuda":
            # NHWC is the layout cuDNN's fp16/bf16 convolution kernels run in; cuDNN
            # then picks its fastest algorithm once per input shape
            self.module = self.module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            torch.backends.cudnn.benchmark = True

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        prob = self.module(self._to_device(batch))
        if isinstance(prob, dict):  # a module set back to training mode by its owner
            prob = prob["prob"]
        out: np.ndarray = prob[:, 0].float().cpu().numpy()
        return out

    def run_padded(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """One forward pass over (3, h, w) inputs of different sizes; each image's own map, cropped.

        Each input sits at the top-left of a zero canvas of the largest height and
        width, and the network treats the canvas outside it as its own pass treats
        the world outside the image (:mod:`dbdetect.models.padding`), so each map
        equals that of the image's own pass.
        """
        from ..models import padding

        sizes = [(int(x.shape[-2]), int(x.shape[-1])) for x in inputs]
        shape = (max(h for h, _ in sizes), max(w for _, w in sizes))
        batch = np.zeros((len(inputs), inputs[0].shape[0], *shape), dtype=inputs[0].dtype)
        for canvas, x, (h, w) in zip(batch, inputs, sizes):
            canvas[:, :h, :w] = x
        padding.install(self.module)  # a module assigned after construction gets its hooks here
        with padding.regions(sizes, shape):
            prob = self(batch)
        return [np.ascontiguousarray(prob[i, :h, :w]) for i, (h, w) in enumerate(sizes)]

    def _to_device(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(batch)
        if self.device.type == "cuda":
            # page-locked host memory lets the copy run without the CPU staging it;
            # the cast to fp16/bf16 happens on the GPU, after the copy
            x = x.pin_memory().to(self.device, non_blocking=True)
            return x.to(self.dtype, memory_format=torch.channels_last)
        return x.to(self.device, self.dtype)
