"""The one interface every way of running a network offers to :class:`dbdetect.Detector`."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch


class Runtime(Protocol):
    """A network ready to run: probability maps for pre-processed batches.

    Attributes:
        backend: ``"torch"`` or ``"onnxruntime"``.
        device: where it runs.
        cfg: the model's settings (pre-processing, post-processing defaults, name).
    """

    backend: str
    device: torch.device
    cfg: dict[str, Any]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """float32 ``(N, H, W)`` probability maps of a float32 ``(N, 3, H, W)`` batch."""
        ...


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device; ValueError naming the problem when it is not one this torch can use."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested, but this torch build sees no CUDA GPU; use device='cpu'")
    return dev
