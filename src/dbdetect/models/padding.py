"""Padded batches whose results equal each image's own forward pass.

Images of different sizes share a forward pass only if they are padded to one
shape, and padding alone changes what the network sees: a 3x3 convolution at
an image's border reads the padding's activations (non-zero after the first
layer) where the image's own pass reads zeros, and a squeeze-and-excitation
block averages over the padding too. PP-OCRv4 has SE blocks in its backbone
and its neck, and 32 zero rows under a 960x544 ICDAR 2015 input moved 17 of 41
boxes below IoU 0.95.

Inside :func:`regions`, every layer that reads neighbouring cells sees the
padding as zeros (its input is multiplied by a 0/1 mask of each image's
region at that layer's scale) and :func:`mean` averages over each image's
region only. Every input side is a multiple of the network's stride (32), so
each region covers whole cells at every level and the padded pass computes,
inside each region, what the image's own pass computes (up to float rounding).
Outside :func:`regions` the hooks return at once and :func:`mean` is the
plain global average, so tracing, export and quantisation see the network as
it was.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["install", "installed", "regions", "mean"]

_local = threading.local()  # a region set by one stream thread must not mask another's pass
_install_lock = threading.Lock()
_FLAG = "_dbdetect_padding_hooks"


class _Regions:
    """Each image's (height, width) at input resolution inside a padded (H, W) batch."""

    def __init__(self, sizes: Sequence[tuple[int, int]], shape: tuple[int, int]):
        self.sizes = [(int(h), int(w)) for h, w in sizes]
        self.shape = (int(shape[0]), int(shape[1]))
        self._masks: dict[tuple, torch.Tensor] = {}

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, 1, h, w) 0/1 mask of the regions at ``x``'s scale, in ``x``'s dtype and device."""
        h, w = x.shape[-2:]
        key = (h, w, x.dtype, x.device)
        m = self._masks.get(key)
        if m is None:
            m = torch.zeros((len(self.sizes), 1, h, w), dtype=x.dtype, device=x.device)
            for i, (rh, rw) in enumerate(self.sizes):
                # ceil: a map at a scale the region does not divide still keeps every cell it touches
                m[i, :, : -(-rh * h // self.shape[0]), : -(-rw * w // self.shape[1])] = 1
            self._masks[key] = m
        return m


def _current() -> _Regions | None:
    return getattr(_local, "regions", None)


@contextmanager
def regions(sizes: Sequence[tuple[int, int]], shape: tuple[int, int]) -> Iterator[None]:
    """Run forward passes in this thread as a padded batch of images of ``sizes`` in a ``shape`` canvas.

    Args:
        sizes: each image's (height, width) at the network's input resolution,
            in batch order, each placed at the top-left corner.
        shape: the padded batch's (height, width).

    The module must have had :func:`install` called on it.
    """
    if any(h > shape[0] or w > shape[1] or h < 1 or w < 1 for h, w in sizes):
        raise ValueError(f"every size must lie within the padded shape {tuple(shape)}, got {list(sizes)}")
    previous = _current()
    _local.regions = _Regions(sizes, shape)
    try:
        yield
    finally:
        _local.regions = previous


def mean(x: torch.Tensor) -> torch.Tensor:
    """``adaptive_avg_pool2d(x, 1)``, over each image's own region inside :func:`regions`."""
    r = _current()
    if r is None or x.shape[0] != len(r.sizes):
        return F.adaptive_avg_pool2d(x, 1)
    m = r.mask(x)
    return (x * m).sum(dim=(2, 3), keepdim=True) / m.sum(dim=(2, 3), keepdim=True)


def _reads_neighbours(m: nn.Module) -> bool:
    def above_one(v) -> bool:
        return any(k > 1 for k in (v if isinstance(v, tuple) else (v,)))

    if isinstance(m, nn.ConvTranspose2d):
        # kernel == stride, no padding: each output block comes from one input cell
        return m.kernel_size != m.stride or any(p != 0 for p in m.padding)
    if isinstance(m, nn.Conv2d):
        return above_one(m.kernel_size)
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        return above_one(m.kernel_size)
    return False


def _zero_padding(module: nn.Module, args: tuple) -> tuple | None:
    r = _current()
    if r is None or not args or args[0].shape[0] != len(r.sizes):
        return None
    return (args[0] * r.mask(args[0]), *args[1:])


def install(module: nn.Module) -> nn.Module:
    """Give every layer of ``module`` that reads neighbouring cells the padding mask (once; idempotent)."""
    with _install_lock:
        if not installed(module):
            for m in module.modules():
                if _reads_neighbours(m):
                    m.register_forward_pre_hook(_zero_padding)
            setattr(module, _FLAG, True)
    return module


def installed(module: nn.Module) -> bool:
    """Whether :func:`install` has run on ``module``."""
    return bool(getattr(module, _FLAG, False))
